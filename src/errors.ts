// Every error the gateway can answer with, in one place. Each code is stable (clients and
// auditors key on it), used for exactly one situation, and documented by
// test/unit/errors.test.ts. Bodies are OperationOutcomes with no PHI and no upstream internals.
import type { OperationOutcome } from 'fhir/r4.js';

export const ERROR_SYSTEM = 'https://phi-gateway.dev/CodeSystem/error';

interface ErrorSpec {
  readonly status: number;
  /** FHIR issue-type code (http://hl7.org/fhir/issue-type). */
  readonly issue: string;
  /** Client-safe text; never interpolated with request data. */
  readonly text: string;
}

export const ERRORS = {
  'invalid-token': { status: 401, issue: 'login', text: 'The access token is missing, malformed, expired or not trusted.' },
  'purpose-missing': { status: 400, issue: 'required', text: 'The X-Purpose-Of-Use header is required.' },
  'purpose-repeated': { status: 400, issue: 'invalid', text: 'Exactly one X-Purpose-Of-Use header is allowed.' },
  'purpose-unknown': { status: 400, issue: 'code-invalid', text: 'The declared purpose of use is not a known code.' },
  'purpose-not-permitted': { status: 403, issue: 'forbidden', text: 'None of your roles may act for the declared purpose of use.' },
  'purpose-not-in-token': { status: 403, issue: 'forbidden', text: 'The declared purpose of use is not among the purposes your token allows.' },
  'role-ambiguous': { status: 403, issue: 'forbidden', text: 'Several of your roles grant this purpose with different data sets; choose one with X-Role.' },
  'role-not-held': { status: 403, issue: 'forbidden', text: 'The role named in X-Role is not one of your roles.' },
  'interaction-denied': { status: 403, issue: 'forbidden', text: 'Your role may not perform this interaction for the declared purpose.' },
  'type-denied': { status: 403, issue: 'forbidden', text: 'Your role may not access this resource type for the declared purpose.' },
  'search-param-denied': { status: 403, issue: 'forbidden', text: 'Your role may not search on this parameter.' },
  'compartment-denied': { status: 403, issue: 'forbidden', text: 'The request reaches outside the patient compartment your token is limited to.' },
  'scope-denied': { status: 403, issue: 'forbidden', text: 'Your token scopes do not permit this request.' },
  'pseudonym-required': { status: 403, issue: 'forbidden', text: 'Your role sees de-identified data: name resources by the pseudonyms the gateway gave you.' },
  'label-change-denied': { status: 403, issue: 'forbidden', text: 'Adding, changing or removing security labels needs a relabel grant for this resource type, or break-glass.' },
  'label-denied': { status: 403, issue: 'forbidden', text: 'The resource would carry a security label your role may not see, so the gateway does not write it.' },
  'break-glass-available': { status: 403, issue: 'suppressed', text: 'This resource is restricted. Break-glass access (purpose BTG with a reason) can reveal it; that access is alerted and reviewed.' },
  'relationship-required': { status: 403, issue: 'forbidden', text: 'You have no care relationship or assignment with this patient. Break-glass access (purpose BTG with a reason) can reveal the record; that access is alerted and reviewed.' },
  'relationship-search-too-broad': { status: 400, issue: 'too-costly', text: 'This search names no patient and you are related to too many patients to search them all; name a patient.' },
  'consent-unavailable': { status: 503, issue: 'transient', text: "The patients' consent directives could not be read, so nothing was released. Try again shortly." },
  'relationship-unavailable': { status: 503, issue: 'transient', text: 'Your care relationships could not be looked up, so the request was not forwarded. Try again shortly.' },
  'break-glass-not-eligible': { status: 403, issue: 'forbidden', text: 'None of your roles may break the glass.' },
  'break-glass-reason-required': { status: 400, issue: 'required', text: 'Break-glass requires an X-Break-Glass-Reason of sufficient length.' },
  'break-glass-no-patient': { status: 400, issue: 'invalid', text: 'Break-glass requests must name exactly one patient.' },
  'anomaly-blocked': { status: 403, issue: 'forbidden', text: 'Access is temporarily suspended by an anomaly rule; the privacy office has been alerted.' },
  'break-glass-limit': { status: 429, issue: 'throttled', text: 'Break-glass session limit reached; the privacy office has been alerted.' },
  'grant-invalid': { status: 403, issue: 'forbidden', text: 'The access grant named in X-Access-Grant is not one of yours.' },
  'grant-inactive': { status: 403, issue: 'expired', text: 'The access grant named in X-Access-Grant is not in force: it is awaiting approval, was denied or revoked, or has expired.' },
  'grant-out-of-scope': { status: 403, issue: 'forbidden', text: 'This request reaches outside the access grant it names (another purpose, patient or resource type); the privacy office has been alerted.' },
  'grant-unavailable': { status: 503, issue: 'transient', text: 'Access grants could not be read, so the request was not forwarded. Try again shortly.' },
  'access-request-invalid': { status: 400, issue: 'invalid', text: 'The access request is malformed: see the documentation for its fields.' },
  'access-request-not-permitted': { status: 403, issue: 'forbidden', text: 'None of your roles may request this data set for the declared purpose, or you hold too many undecided requests.' },
  'approval-not-permitted': { status: 403, issue: 'forbidden', text: 'You may not decide or revoke this access request: it is your own, none of your roles approves its data set, or you hold a request for the same data set.' },
  'access-request-not-found': { status: 404, issue: 'not-found', text: 'No such access request.' },
  'access-request-decided': { status: 409, issue: 'conflict', text: 'The access request is no longer in a state that allows this (already decided, revoked or expired).' },
  'request-unclassified': { status: 400, issue: 'not-supported', text: 'The gateway cannot classify this request, so it is not forwarded.' },
  'method-not-allowed': { status: 405, issue: 'not-supported', text: 'This method is not supported on this path.' },
  'request-body-invalid': { status: 400, issue: 'structure', text: 'The request body is not valid FHIR JSON.' },
  'request-too-large': { status: 413, issue: 'too-costly', text: 'The request body exceeds the configured limit.' },
  'expectation-failed': { status: 417, issue: 'not-supported', text: 'The Expect header asks for something the gateway does not do; only 100-continue is supported.' },
  'bundle-too-large': { status: 413, issue: 'too-costly', text: 'The batch or transaction holds more entries than the gateway accepts.' },
  'unsupported-media-type': { status: 415, issue: 'not-supported', text: 'Only FHIR JSON request bodies are accepted.' },
  'precondition-failed': { status: 412, issue: 'conflict', text: 'The If-Match header names another version than the current one; read the resource again.' },
  'not-acceptable': { status: 406, issue: 'not-supported', text: 'The gateway answers in FHIR JSON only (application/fhir+json); the Accept header or _format asks for something else.' },
  'not-found': { status: 404, issue: 'not-found', text: 'The resource was not found.' },
  'route-not-found': { status: 404, issue: 'not-found', text: 'No such route.' },
  'cors-origin-denied': { status: 403, issue: 'forbidden', text: 'This browser origin is not allowed to call the FHIR API.' },
  'upstream-unavailable': { status: 502, issue: 'transient', text: 'The FHIR server could not be reached.' },
  'upstream-timeout': { status: 504, issue: 'timeout', text: 'The FHIR server did not answer in time.' },
  // Recorded, never received: the client had gone (499, as nginx records it); nothing was released.
  'client-closed': { status: 499, issue: 'incomplete', text: 'The client closed the connection before the answer was ready; nothing was released.' },
  'upstream-bad-response': { status: 502, issue: 'exception', text: 'The FHIR server answered with a body the gateway cannot safely filter.' },
  'upstream-too-large': { status: 502, issue: 'too-costly', text: 'The FHIR server answer exceeds the configured size limit.' },
  'upstream-error': { status: 502, issue: 'exception', text: 'The FHIR server reported an error.' },
  'filter-failed': { status: 500, issue: 'exception', text: 'The response could not be filtered, so it was not released.' },
  'discovery-unavailable': { status: 503, issue: 'transient', text: 'The SMART configuration is not available: the identity provider could not be asked for its endpoints.' },
  'audit-unavailable': { status: 503, issue: 'transient', text: 'The audit trail cannot be written, so no data is released.' },
  'gateway-busy': { status: 503, issue: 'transient', text: 'The gateway is at capacity. Retry after the interval in Retry-After.' },
  'gateway-draining': { status: 503, issue: 'transient', text: 'The gateway is shutting down. Retry after the interval in Retry-After; another instance may answer.' },
  'export-denied': { status: 403, issue: 'forbidden', text: 'Only auditors and privacy officers acting for HCOMPL may export the audit trail.' },
  'paging-token-invalid': { status: 400, issue: 'invalid', text: 'The paging link is invalid, has expired, or was issued to another user, purpose or policy version. Repeat the search.' },
  'bad-request': { status: 400, issue: 'invalid', text: 'The request is malformed.' },
  'request-header-too-large': { status: 431, issue: 'too-long', text: 'The request line or headers exceed the size the gateway accepts.' },
  'request-timeout': { status: 408, issue: 'timeout', text: 'The request was not received in full in time.' },
  'internal': { status: 500, issue: 'exception', text: 'Internal gateway error.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** A typed, client-safe failure. `detail` is for logs only (no PHI, no tokens) and never sent. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: string | undefined;
  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    super(ERRORS[code].text, options);
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.detail = detail;
  }
}

export function isGatewayError(e: unknown): e is GatewayError {
  return e instanceof GatewayError;
}

/** The only way an error body is built: the catalogue text, the code, nothing from the request. */
export function operationOutcome(code: ErrorCode, severity: 'error' | 'information' = 'error'): OperationOutcome {
  const spec: ErrorSpec = ERRORS[code];
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity,
        code: spec.issue as 'invalid',
        details: { coding: [{ system: ERROR_SYSTEM, code }], text: spec.text },
      },
    ],
  };
}
