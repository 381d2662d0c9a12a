/**
 * Audit records as IHE BALP-shaped FHIR R4 AuditEvents (pure). One AuditEvent per patient touched
 * (BALP: one per patient for multi-patient searches), or one without a patient entity.
 *
 * - type `audit-event-type#rest` + subtype `restful-interaction#<interaction>` for FHIR requests;
 *   DCM 110106 Export for audit exports; DCM 110113 Security Alert for break-glass start/end
 *   (subtype 110127 / 110138), reviews, alerts and anomalies.
 * - action R (read, vread), C, U (update, patch), D, E (everything else: search, history,
 *   operations, batch, export, alerts).
 * - outcome 0 success, 4 on a 4xx, 8 on a 5xx, with the error code / rule in outcomeDesc.
 * - agents: the user (IRCP, requestor, who.identifier = iss|sub, policy = jti, roles,
 *   purposeOfUse), the client app and the server with DCM 110153 (source) / 110152
 *   (destination): for a read the data flows server -> client (client 110152), for a query or a
 *   write client -> server (client 110153).
 * - entities: the patient (type 1, role 1), the query for searches (role 24, base64 of the
 *   request path and query), the resources read/written (role 4), the X-Request-Id (BALP
 *   XrequestId), and for break-glass the session with its reason.
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

function action(r: ChainedRecord): Action {
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
      return { type: { system: DCM, code: '110106', display: 'Export' }, subtype: undefined };
    case 'fhir': {
      const i = r.request?.interaction;
      return { type: { system: EVENT_TYPE, code: 'rest', display: 'Restful Operation' }, subtype: i ? [{ system: INTERACTION, code: SUBTYPE[i] }] : undefined };
    }
    default:
      return { type: { system: DCM, code: '110113', display: 'Security Alert' }, subtype: undefined };
  }
}

/** `[A-Za-z0-9\-.]{1,64}` or undefined (FHIR id rules). */
function fhirId(s: string): string | undefined {
  return /^[A-Za-z0-9\-.]{1,64}$/.test(s) ? s : undefined;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

export function toAuditEvents(r: ChainedRecord): AuditEvent[] {
  const { type, subtype } = eventType(r);
  const act = action(r);
  const interaction = r.request?.interaction;
  const readLike = act === 'R';
  const roles = r.actor?.roles ?? [];
  const address = nonEmpty(r.client?.address);
  const network = address ? { address, type: (address.includes(':') || /^[\d.]+$/.test(address) ? '2' : '1') as '1' | '2' } : undefined;
  const purposes = new Set<string>();
  if (r.purpose) purposes.add(r.purpose);
  if (r.breakGlass) purposes.add('BTG');

  const user: AuditEventAgent = {
    type: { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] },
    who: r.actor?.sub ? { identifier: { system: nonEmpty(r.actor.iss), value: r.actor.sub } } : { display: 'unauthenticated' },
    requestor: true,
    role: roles.length ? roles.map((code) => ({ coding: [{ system: ROLE_SYSTEM, code }] })) : undefined,
    policy: nonEmpty(r.actor?.jti) ? [r.actor.jti!] : undefined,
    purposeOfUse: purposes.size ? [...purposes].map(purposeConcept) : undefined,
  };
  const client: AuditEventAgent = {
    type: { coding: [readLike ? { system: DCM, code: '110152', display: 'Destination Role ID' } : { system: DCM, code: '110153', display: 'Source Role ID' }] },
    who: r.actor?.clientId ? { identifier: { value: r.actor.clientId } } : { display: r.client?.userAgent || 'client' },
    requestor: false,
    network,
  };
  const server: AuditEventAgent = {
    type: { coding: [readLike ? { system: DCM, code: '110153', display: 'Source Role ID' } : { system: DCM, code: '110152', display: 'Destination Role ID' }] },
    who: { display: 'FHIR server (via phi-gateway)' },
    requestor: false,
  };

  const common: AuditEventEntity[] = [];
  if (r.kind === 'fhir' && isSearch(interaction) && r.request?.path) {
    common.push({
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '24', display: 'Query' },
      query: Buffer.from(r.request.path, 'utf8').toString('base64'),
    });
  } else if (r.kind === 'fhir') {
    for (const ref of r.disclosed?.resources ?? []) {
      common.push({ what: { reference: ref }, type: { system: ENTITY_TYPE, code: '2', display: 'System Object' }, role: { system: OBJECT_ROLE, code: '4', display: 'Domain Resource' } });
    }
  }
  if (r.breakGlass) {
    common.push({
      what: { identifier: { system: SESSION_SYSTEM, value: r.breakGlass.session } },
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '13', display: 'Security Resource' },
      description: r.breakGlass.reason,
    });
  }
  common.push({ what: { identifier: { value: r.id } }, type: { system: BALP_ENTITY, code: 'XrequestId', display: 'X-Request-Id' } });

  const base = (suffix: string, patient: string | undefined): AuditEvent => {
    const id = fhirId(suffix ? `${r.id}-${suffix}` : r.id);
    const entity: AuditEventEntity[] = patient
      ? [{ what: { reference: `Patient/${patient}` }, type: { system: ENTITY_TYPE, code: '1', display: 'Person' }, role: { system: OBJECT_ROLE, code: '1', display: 'Patient' } }, ...common]
      : common;
    const ev: AuditEvent = {
      resourceType: 'AuditEvent',
      id,
      type,
      subtype,
      action: act,
      recorded: r.time,
      outcome: outcome(r.status),
      outcomeDesc: r.status >= 400 || r.decision !== 'allow' ? r.rule : undefined,
      purposeOfEvent: purposes.size ? [...purposes].map(purposeConcept) : undefined,
      agent: [user, client, server],
      source: {
        observer: { display: `phi-gateway ${r.chain?.writer ?? ''}`.trim() },
        type: [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }],
      },
      entity,
    };
    return dropUndefined(ev);
  };

  const patients = r.disclosed?.patients ?? [];
  if (patients.length <= 1) return [base('', patients[0])];
  return patients.map((p, i) => base(String(i + 1), p));
}

/** JSON-clean copy: FHIR forbids empty or null properties. */
function dropUndefined<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}
