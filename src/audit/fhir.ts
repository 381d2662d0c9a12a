/**
 * Audit records as IHE BALP-shaped FHIR R4 AuditEvents (pure). One AuditEvent per patient touched
 * (BALP: one per patient for multi-patient searches), or one without a patient entity.
 *
 * - type `audit-event-type#rest` + subtype `restful-interaction#<interaction>` for FHIR requests;
 *   DCM 110106 Export for audit exports; DCM 110113 Security Alert for break-glass start/end
 *   (subtype 110127 / 110138), reviews, alerts and anomalies.
 * - access requests (src/access): DCM 110113 Security Alert as well, the only event type the
 *   standards we follow give for access-control events. Subtypes: DCM 110137 "User security
 *   Attributes Changed" where a grant took effect or ended (approve, revoke, expiry: what the
 *   requester may see changed), and always the step in the gateway's own code system
 *   (request, approve, deny, revoke, get, list, expire): the R4 subtype binding is extensible and
 *   no DCM code names a request, a denial or a listing.
 * - action R (read, vread), C, U (update, patch), D, E (everything else: search, history,
 *   operations, batch, export, alerts). Access requests: C request, U approve, deny, revoke and
 *   expiry, R get, E list.
 * - outcome 0 success, 4 on a 4xx, 8 on a 5xx, with the error code / rule in outcomeDesc.
 * - agents: the user (IRCP, requestor, who.identifier = iss|sub, policy = jti, roles,
 *   purposeOfUse), the client app and the server with DCM 110153 (source) / 110152
 *   (destination): for a read the data flows server -> client (client 110152), for a query or a
 *   write client -> server (client 110153).
 * - entities: the patient (type 1, role 1), the query for searches (role 24, base64 of the
 *   request path and query), the resources read/written (role 4), the X-Request-Id (BALP
 *   XrequestId), for break-glass the session with its reason, and for access requests and for
 *   FHIR requests that used a grant the request (the grant's id is its request's id) as a security
 *   resource (role 13) with its data set and the other ids as details; never the justification
 *   text or a decision's note.
 */
import type { AuditEvent, AuditEventAgent, AuditEventEntity, CodeableConcept, Coding } from 'fhir/r4.js';
import type { Interaction } from '../policy/request.js';
import type { ChainedRecord } from './record.js';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const INTERACTION = 'http://hl7.org/fhir/restful-interaction';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const BALP_ENTITY = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType';
const SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
const ROLE_SYSTEM = 'https://phi-gateway.dev/CodeSystem/role';
const SESSION_SYSTEM = 'https://phi-gateway.dev/break-glass-session';
/** Access requests and the grants approved from them share ids (src/access). */
const ACCESS_REQUEST_SYSTEM = 'https://phi-gateway.dev/access-request';
const ACCESS_STEP_SYSTEM = 'https://phi-gateway.dev/CodeSystem/access-request-step';

const SUBTYPE: Record<Interaction, string> = {
  capabilities: 'capabilities',
  read: 'read',
  vread: 'vread',
  'search-type': 'search-type',
  'search-system': 'search-system',
  'search-compartment': 'search',
  'history-instance': 'history-instance',
  'history-type': 'history-type',
  'history-system': 'history-system',
  create: 'create',
  update: 'update',
  patch: 'patch',
  delete: 'delete',
  batch: 'batch',
  transaction: 'transaction',
  operation: 'operation',
};

type Action = NonNullable<AuditEvent['action']>;

/** The step an access-request record is about: `details.action`, or `expire` for an expiry. */
function accessStep(r: ChainedRecord): string | undefined {
  if (r.kind === 'access-grant-expired') return 'expire';
  if (r.kind !== 'access-request') return undefined;
  const a = r.details?.action;
  return typeof a === 'string' && ACCESS_STEPS.has(a) ? a : undefined;
}

const ACCESS_ACTION: Readonly<Record<string, Action>> = { request: 'C', approve: 'U', deny: 'U', revoke: 'U', expire: 'U', get: 'R', list: 'E' };

function action(r: ChainedRecord): Action {
  const step = accessStep(r);
  if (step !== undefined) return ACCESS_ACTION[step];
  const i = r.request?.interaction;
  if (r.kind === 'fhir') {
    if (i === 'read' || i === 'vread') return 'R';
    if (i === 'create') return 'C';
    if (i === 'update' || i === 'patch') return 'U';
    if (i === 'delete') return 'D';
    if (i === undefined) {
      // Unclassified (denied) request: the method is all we know.
      const m = r.request?.method;
      if (m === 'POST') return 'C';
      if (m === 'PUT' || m === 'PATCH') return 'U';
      if (m === 'DELETE') return 'D';
      if (m === 'GET' || m === 'HEAD') return 'R';
    }
  }
  return 'E';
}

function outcome(status: number): '0' | '4' | '8' {
  if (status >= 500) return '8';
  if (status >= 400) return '4';
  return '0';
}

function isSearch(i: Interaction | undefined): boolean {
  return i === 'search-type' || i === 'search-system' || i === 'search-compartment' || i?.startsWith('history') === true;
}

function purposeConcept(code: string): CodeableConcept {
  return { coding: [{ system: ACT_REASON, code }] };
}

function eventType(r: ChainedRecord): { type: Coding; subtype: Coding[] | undefined } {
  switch (r.kind) {
    case 'break-glass-start':
      return { type: { system: DCM, code: '110113', display: 'Security Alert' }, subtype: [{ system: DCM, code: '110127', display: 'Emergency Override Started' }] };
    case 'break-glass-end':
      return { type: { system: DCM, code: '110113', display: 'Security Alert' }, subtype: [{ system: DCM, code: '110138', display: 'Emergency Override Stopped' }] };
    case 'export':
    case 'audit-export':
      return { type: { system: DCM, code: '110106', display: 'Export' }, subtype: undefined };
    case 'fhir': {
      const i = r.request?.interaction;
      return { type: { system: EVENT_TYPE, code: 'rest', display: 'Restful Operation' }, subtype: i ? [{ system: INTERACTION, code: SUBTYPE[i] }] : undefined };
    }
    case 'access-request':
    case 'access-grant-expired': {
      const step = accessStep(r);
      if (step === undefined) return { type: SECURITY_ALERT, subtype: undefined };
      const own: Coding = ACCESS_STEP_CODINGS[step];
      return { type: SECURITY_ALERT, subtype: CHANGES_ACCESS.has(step) ? [USER_SECURITY_CHANGED, own] : [own] };
    }
    default:
      return { type: { system: DCM, code: '110113', display: 'Security Alert' }, subtype: undefined };
  }
}

// Constant codings, built once (an export converts millions of records).
const SECURITY_ALERT: Coding = { system: DCM, code: '110113', display: 'Security Alert' };
const USER_SECURITY_CHANGED: Coding = { system: DCM, code: '110137', display: 'User security Attributes Changed' };
const ACCESS_STEP_DISPLAY: Readonly<Record<string, string>> = {
  request: 'Access requested',
  approve: 'Access request approved',
  deny: 'Access request denied',
  revoke: 'Access grant revoked',
  expire: 'Access grant expired',
  get: 'Access request read',
  list: 'Access requests listed',
};
const ACCESS_STEPS: ReadonlySet<string> = new Set(Object.keys(ACCESS_STEP_DISPLAY));
const ACCESS_STEP_CODINGS: Readonly<Record<string, Coding>> = Object.fromEntries(
  Object.entries(ACCESS_STEP_DISPLAY).map(([code, display]) => [code, { system: ACCESS_STEP_SYSTEM, code, display }]),
);
/** Steps after which the requester may see more (approve) or less (revoke, expiry) than before. */
const CHANGES_ACCESS: ReadonlySet<string> = new Set(['approve', 'revoke', 'expire']);
const IRCP: CodeableConcept = { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] };
const SOURCE_ROLE: CodeableConcept = { coding: [{ system: DCM, code: '110153', display: 'Source Role ID' }] };
const DEST_ROLE: CodeableConcept = { coding: [{ system: DCM, code: '110152', display: 'Destination Role ID' }] };
const SYSTEM_OBJECT: Coding = { system: ENTITY_TYPE, code: '2', display: 'System Object' };
const PERSON: Coding = { system: ENTITY_TYPE, code: '1', display: 'Person' };
const ROLE_PATIENT: Coding = { system: OBJECT_ROLE, code: '1', display: 'Patient' };
const ROLE_QUERY: Coding = { system: OBJECT_ROLE, code: '24', display: 'Query' };
const ROLE_DOMAIN: Coding = { system: OBJECT_ROLE, code: '4', display: 'Domain Resource' };
const ROLE_SECURITY: Coding = { system: OBJECT_ROLE, code: '13', display: 'Security Resource' };
const XREQUESTID: Coding = { system: BALP_ENTITY, code: 'XrequestId', display: 'X-Request-Id' };
const APP_SERVER: Coding[] = [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }];
const SERVER_WHO = { display: 'FHIR server (via phi-gateway)' };
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * The AuditEvents for one record. Objects are built with only the members that have values
 * (FHIR forbids empty properties) and may share constant codings: serialize, do not mutate.
 */
export function toAuditEvents(r: ChainedRecord): AuditEvent[] {
  const { type, subtype } = eventType(r);
  const act = action(r);
  const interaction = r.request?.interaction;
  const readLike = act === 'R';
  const roles = r.actor?.roles ?? [];
  const purposes: CodeableConcept[] = [];
  if (r.purpose) purposes.push(purposeConcept(r.purpose));
  if (r.breakGlass && r.purpose !== 'BTG') purposes.push(purposeConcept('BTG'));

  const user: AuditEventAgent = { type: IRCP, who: { display: 'unauthenticated' }, requestor: true };
  if (r.actor?.sub) user.who = r.actor.iss ? { identifier: { system: r.actor.iss, value: r.actor.sub } } : { identifier: { value: r.actor.sub } };
  if (roles.length) user.role = roles.map((code) => ({ coding: [{ system: ROLE_SYSTEM, code }] }));
  if (r.actor?.jti) user.policy = [r.actor.jti];
  if (purposes.length) user.purposeOfUse = purposes;

  const client: AuditEventAgent = {
    type: readLike ? DEST_ROLE : SOURCE_ROLE,
    who: r.actor?.clientId ? { identifier: { value: r.actor.clientId } } : { display: r.client?.userAgent || 'client' },
    requestor: false,
  };
  const address = r.client?.address;
  if (address) client.network = { address, type: address.includes(':') || /^[\d.]+$/.test(address) ? '2' : '1' };
  const server: AuditEventAgent = { type: readLike ? SOURCE_ROLE : DEST_ROLE, who: SERVER_WHO, requestor: false };

  const common: AuditEventEntity[] = [];
  if (r.kind === 'fhir' && isSearch(interaction) && r.request?.path) {
    common.push({ type: SYSTEM_OBJECT, role: ROLE_QUERY, query: Buffer.from(r.request.path, 'utf8').toString('base64') });
  } else if (r.kind === 'fhir') {
    for (const ref of r.disclosed?.resources ?? []) common.push({ what: { reference: ref }, type: SYSTEM_OBJECT, role: ROLE_DOMAIN });
  }
  if (r.breakGlass) {
    common.push({
      what: { identifier: { system: SESSION_SYSTEM, value: r.breakGlass.session } },
      type: SYSTEM_OBJECT,
      role: ROLE_SECURITY,
      description: r.breakGlass.reason,
    });
  }
  const access = accessEntity(r);
  if (access) common.push(access);
  common.push({ what: { identifier: { value: r.id } }, type: XREQUESTID });
  const source = { observer: { display: r.chain?.writer ? `phi-gateway ${r.chain.writer}` : 'phi-gateway' }, type: APP_SERVER };
  const status = typeof r.status === 'number' ? r.status : 0;

  const make = (id: string, patient: string | undefined): AuditEvent => {
    const ev: AuditEvent = { resourceType: 'AuditEvent', type, action: act, recorded: r.time, outcome: outcome(status), agent: [user, client, server], source, entity: common };
    if (FHIR_ID.test(id)) ev.id = id;
    if (subtype) ev.subtype = subtype;
    if (status >= 400 || r.decision !== 'allow') ev.outcomeDesc = r.rule;
    if (purposes.length) ev.purposeOfEvent = purposes;
    if (patient) ev.entity = [{ what: { reference: `Patient/${patient}` }, type: PERSON, role: ROLE_PATIENT }, ...common];
    return ev;
  };

  const patients = r.disclosed?.patients ?? [];
  if (patients.length <= 1) return [make(r.id, patients[0])];
  return patients.map((p, i) => make(`${r.id}-${i + 1}`, p));
}

/** A string detail of an entity, when the value is a non-empty string, a finite number or a boolean. */
function detail(type: string, v: unknown): NonNullable<AuditEventEntity['detail']>[number] | undefined {
  if (typeof v === 'string' && v !== '') return { type, valueString: v };
  if ((typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean') return { type, valueString: String(v) };
  return undefined;
}

/**
 * The access request a record is about (kinds `access-request`, `access-grant-expired`) or the grant
 * a FHIR request used (`grant`): ids, data set, codes and times only.
 */
function accessEntity(r: ChainedRecord): AuditEventEntity | undefined {
  let id: unknown;
  let details: Array<ReturnType<typeof detail>>;
  if (r.kind === 'fhir' && r.grant) {
    const g = r.grant;
    id = g.id;
    details = [detail('dataSet', g.dataSet), detail('approvedBy', g.approvedBy), detail('outOfScope', g.outOfScope)];
  } else if (r.kind === 'access-request' || r.kind === 'access-grant-expired') {
    const d = r.details ?? {};
    id = d.request;
    details = [
      detail('dataSet', d.dataSet),
      detail('action', accessStep(r)),
      detail('expiresAt', d.expiresAt),
      detail('minutes', d.minutes),
      detail('narrowed', d.narrowed),
      detail('justificationCode', d.justificationCode),
      detail('decideSeconds', d.decideSeconds),
      detail('uses', d.uses),
    ];
  } else {
    return undefined;
  }
  if (typeof id !== 'string' || id === '') return undefined;
  const e: AuditEventEntity = { what: { identifier: { system: ACCESS_REQUEST_SYSTEM, value: id } }, type: SYSTEM_OBJECT, role: ROLE_SECURITY };
  const present = details.filter((x) => x !== undefined);
  if (present.length) e.detail = present;
  return e;
}
