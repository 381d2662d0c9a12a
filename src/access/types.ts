/**
 * Elevated access on request: what is stored, and the seams the pipeline and the HTTP routes use.
 *
 * A requester asks for a requestable data set (policy `accessRequests.dataSets`) for named
 * patients, one purpose, optionally some encounters, some of the data set's types and a period of
 * the records' dates, with a justification and a wanted duration. Someone else, holding an
 * approver role for that data set, approves it (possibly narrower: fewer patients, types, a shorter
 * period or time), denies it, or later revokes it. An approved, unexpired grant is used by sending
 * `X-Access-Grant: <id>` with FHIR requests: it widens exactly the granted types for the granted
 * patients, for its requester and purpose, until it expires or is revoked.
 */
import type { Principal } from '../auth/principal.js';
import type { ClassifiedRequest } from '../policy/request.js';

export interface AccessActor {
  readonly iss: string | undefined;
  readonly sub: string;
  readonly clientId?: string | undefined;
  readonly roles: readonly string[];
}

/** What a grant reaches. `types` and `encounters` absent: every type of the data set, any encounter. */
export interface AccessScope {
  /** Patient ids (FHIR id syntax), at least one, at most `accessRequests.maxPatients`. */
  readonly patients: readonly string[];
  /** Encounter ids: only records of these encounters (of the granted types). */
  readonly encounters?: readonly string[] | undefined;
  /** A subset of the data set's types. */
  readonly types?: readonly string[] | undefined;
  /** Records whose clinical date falls in this period (dates `YYYY-MM-DD` or full ISO 8601; each end optional, inclusive). */
  readonly period?: { readonly start?: string | undefined; readonly end?: string | undefined } | undefined;
}

export type AccessStatus = 'pending' | 'approved' | 'denied';

export type DecisionOutcome = 'approved' | 'denied';

export interface AccessDecision {
  readonly by: AccessActor;
  readonly outcome: DecisionOutcome;
  readonly note: string | undefined;
  /** ISO 8601. */
  readonly at: string;
  /** The approval names less than was asked (patients, types, period, encounters or time). */
  readonly narrowed: boolean;
  /** X-Request-Id (http) or audit record id (cli) of the decision. */
  readonly auditId: string;
  readonly via: 'http' | 'cli';
}

export interface AccessRevocation {
  readonly by: AccessActor;
  readonly note: string | undefined;
  readonly at: string;
  readonly auditId: string;
  readonly via: 'http' | 'cli';
}

export interface AccessRequestRecord {
  readonly id: string;
  readonly requester: AccessActor;
  /** The requester role the data set was asked for (the role whose own data set it widens). */
  readonly role: string;
  readonly dataSet: string;
  /** The purpose it was asked for: a grant is used with exactly this X-Purpose-Of-Use. */
  readonly purpose: string;
  /** As asked. */
  readonly scope: AccessScope;
  readonly justification: string;
  /** The coded part (`CODE: text`) when the policy lists justification codes. */
  readonly justificationCode: string | undefined;
  /** Wanted duration, minutes (capped by the policy when asked). */
  readonly minutes: number;
  /** ISO 8601. */
  readonly requestedAt: string;
  /** X-Request-Id (http) or audit record id (cli) of the request. */
  readonly requestId: string;
  readonly status: AccessStatus;
  readonly decision?: AccessDecision | undefined;
  /** Set on approval: what was granted (at most what was asked) and until when. */
  readonly granted?: { readonly scope: AccessScope; readonly expiresAt: string } | undefined;
  readonly revoked?: AccessRevocation | undefined;
  /** Set once by the sweep when an approved grant's expiry was audited (kind `access-grant-expired`). */
  readonly expiredAt?: string | undefined;
  /** Uses of the grant (requests that carried it and were allowed to use it). */
  readonly uses: number;
  readonly firstUsedAt?: string | undefined;
  readonly lastUsedAt?: string | undefined;
}

/** Approved, not revoked, not past its expiry. */
export function isActive(r: AccessRequestRecord, now: Date): boolean {
  return r.status === 'approved' && r.revoked === undefined && r.granted !== undefined && Date.parse(r.granted.expiresAt) > now.getTime();
}

export interface AccessStats {
  readonly pending: number;
  readonly active: number;
  /** Age of the oldest undecided request, seconds (0 when none). */
  readonly oldestPendingAgeSec: number;
}

export type StoreDecision =
  | { readonly ok: true; readonly record: AccessRequestRecord }
  | { readonly ok: false; readonly why: 'not-found' | 'not-pending' | 'not-active' };

/** Where requests live: Redis (shared by replicas) or an embedded JSON-lines file. */
export interface AccessStore {
  /**
   * Atomically: stores a new pending request unless the requester (iss + sub) already holds
   * `maxPending` undecided ones; returns how many it holds when refused.
   */
  create(record: AccessRequestRecord, maxPending: number): Promise<{ ok: true } | { ok: false; pending: number }>;
  get(id: string): Promise<AccessRequestRecord | undefined>;
  /** Every request, oldest first. */
  list(): Promise<AccessRequestRecord[]>;
  /** Atomically: records the decision (and the grant, when approved) only if the request is still pending. */
  decide(id: string, decision: AccessDecision, granted: AccessRequestRecord['granted']): Promise<StoreDecision>;
  /** Atomically: records the revocation only if the grant is approved, not revoked and unexpired at `now`. */
  revoke(id: string, revocation: AccessRevocation, now: Date): Promise<StoreDecision>;
  /** Counts one use (uses, firstUsedAt once, lastUsedAt). */
  noteUse(id: string, at: string): Promise<void>;
  /**
   * Marks as expired the approved, unrevoked grants past their expiry at `now` and not yet marked,
   * and returns them. Across replicas each grant is returned by exactly one call (audited once).
   */
  endExpired(now: Date): Promise<AccessRequestRecord[]>;
  /** Undoes endExpired for one grant whose expiry record could not be written (retried later). */
  unend(id: string): Promise<void>;
  close(): Promise<void>;
}

/** A grant in use for one request, as the pipeline applies it. */
export interface GrantUse {
  readonly id: string;
  readonly dataSet: string;
  /** The granted patient this request is about (the response is limited to their compartment). */
  readonly patient: string;
  /** The approver's sub (audit). */
  readonly approvedBy: string;
  readonly expiresAt: string;
  /** The granted scope (types, encounters, period) the response is limited to for the granted types. */
  readonly scope: AccessScope;
}

/**
 * The pipeline's seam: checks that the `X-Access-Grant` a request carries is the caller's, active,
 * for its purpose and for a patient the request names; counts the use. Throws GatewayError:
 * `grant-invalid` (unknown, another's: alerted), `grant-inactive` (pending, denied, revoked,
 * expired), `grant-out-of-scope` (another purpose, patient or type: alerted),
 * `grant-unavailable` (the store cannot be read).
 */
export interface AccessGate {
  use(input: {
    readonly principal: Principal;
    readonly purpose: string;
    readonly request: ClassifiedRequest;
    readonly header: string | string[] | undefined;
    readonly requestId: string;
  }): Promise<GrantUse>;
}

/** Where a call came from: its audit record's id, channel and client. */
export interface CallContext {
  /** The audit record id (the X-Request-Id over HTTP; a fresh UUID from the CLI). */
  readonly auditId: string;
  readonly via: 'http' | 'cli';
  readonly client: { readonly address: string; readonly userAgent?: string | undefined };
  /** `METHOD path` recorded as the audit record's request (HTTP: the route; CLI: `CLI access <verb>`). */
  readonly method: string;
  readonly path: string;
  /**
   * The declared X-Purpose-Of-Use of a decide, revoke, get or list call (parsed by the route or
   * the CLI), recorded in its audit record. `request()` takes the purpose as an argument instead.
   */
  readonly purpose?: string | undefined;
}

/** A new request as the requester sends it (validated by the service: anything else is `access-request-invalid`). */
export interface RequestInput {
  readonly dataSet: string;
  readonly patients: readonly string[];
  readonly encounters?: readonly string[] | undefined;
  readonly types?: readonly string[] | undefined;
  readonly period?: { readonly start?: string | undefined; readonly end?: string | undefined } | undefined;
  readonly justification: string;
  readonly minutes: number;
  /** X-Role, when the requester holds several roles that may ask for the data set. */
  readonly role?: string | undefined;
}

/** An approval or denial; an approval may narrow (each field at most what was asked). */
export interface DecideInput {
  readonly outcome: DecisionOutcome;
  readonly note?: string | undefined;
  readonly minutes?: number | undefined;
  readonly patients?: readonly string[] | undefined;
  readonly encounters?: readonly string[] | undefined;
  readonly types?: readonly string[] | undefined;
  readonly period?: { readonly start?: string | undefined; readonly end?: string | undefined } | undefined;
}

/** What compliance counts (metrics): one event per allowed or refused step. */
export type AccessEvent =
  | { readonly action: 'request' | 'approve' | 'deny' | 'revoke'; readonly outcome: 'allowed' | 'refused'; readonly decideSeconds?: number | undefined }
  | { readonly action: 'use'; readonly outcome: 'allowed' | 'invalid' | 'inactive' | 'out-of-scope' | 'unavailable' }
  | { readonly action: 'expire'; readonly outcome: 'allowed' };

/**
 * The access-request service (src/access/service.ts). Every method audits its call (kind
 * `access-request`, `details.action`), allowed or refused, before it answers; a change is
 * committed to the store only after its audit record is durable. Refusals throw GatewayError
 * (`access-request-invalid`, `access-request-not-permitted`, `approval-not-permitted`,
 * `access-request-not-found`, `access-request-decided`, `purpose-*`, `audit-unavailable`).
 */
export interface AccessService extends AccessGate {
  /** A new pending request by `principal` for `purpose` (the declared X-Purpose-Of-Use); alerts the approvers' targets. */
  request(principal: Principal, purpose: string, input: unknown, ctx: CallContext): Promise<AccessRequestRecord>;
  decide(principal: Principal, id: string, input: unknown, ctx: CallContext): Promise<AccessRequestRecord>;
  revoke(principal: Principal, id: string, input: unknown, ctx: CallContext): Promise<AccessRequestRecord>;
  /** One request: to its requester and to the approvers of its data set; others get not-found. */
  get(principal: Principal, id: string, ctx: CallContext): Promise<AccessRequestRecord>;
  /** The caller's own requests and those it may decide, oldest first. */
  list(principal: Principal, filter: { readonly status?: AccessStatus | 'active' | undefined }, ctx: CallContext): Promise<AccessRequestRecord[]>;
  /** Last computed counts (refreshed by sweep() and every change); synchronous for metrics. */
  stats(): AccessStats;
  refreshStats(): Promise<AccessStats>;
  /** Audits expired grants once (kind `access-grant-expired`) and refreshes stats. Runs on a timer; tests call it. */
  sweep(): Promise<void>;
  /** The decide link for a request, from publicBaseUrl minus `/fhir`. */
  requestUrl(id: string): string;
  close(): Promise<void>;
}

export function isAccessService(g: AccessGate | undefined): g is AccessService {
  const s = g as Partial<AccessService> | undefined;
  return typeof s?.use === 'function' && typeof s.request === 'function' && typeof s.decide === 'function' && typeof s.list === 'function';
}
