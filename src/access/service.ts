/**
 * The access-request service: requests, decisions (with separation of duties), revocations and
 * listings, each audited (kind `access-request`) before it answers and committed to the store only
 * once its audit record is durable; the pipeline's AccessGate (is this grant the caller's, in force,
 * for this purpose and patient); the sweep that audits expired grants once; alerts and metrics.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { Principal } from '../auth/principal.js';
import type { Alerter } from '../breakglass/alerts.js';
import type { AlertPayload } from '../breakglass/outbox.js';
import { parseReason } from '../breakglass/reason.js';
import { reviewBase } from '../breakglass/service.js';
import { type ErrorCode, GatewayError, isGatewayError } from '../errors.js';
import type { CompiledAccessRequests, CompiledPolicy, RequestableDataSet } from '../policy/plan.js';
import { dateRange, requestPatients, validPeriod } from './scope.js';
import {
  type AccessActor,
  type AccessDecision,
  type AccessEvent,
  type AccessRequestRecord,
  type AccessRevocation,
  type AccessScope,
  type AccessService,
  type AccessStats,
  type AccessStatus,
  type AccessStore,
  type CallContext,
  type GrantUse,
  isActive,
} from './types.js';

export const MAX_NOTE_LENGTH = 2000;
/** Encounters one request may name. */
export const MAX_ENCOUNTERS = 100;
export const REQUEST_FIELDS: readonly string[] = ['dataSet', 'patients', 'encounters', 'types', 'period', 'justification', 'minutes', 'role'];
export const DECIDE_FIELDS: readonly string[] = ['outcome', 'note', 'minutes', 'patients', 'encounters', 'types', 'period'];
export const REVOKE_FIELDS: readonly string[] = ['note'];
export const LIST_STATUSES: readonly (AccessStatus | 'active')[] = ['pending', 'approved', 'denied', 'active'];

export interface AccessServiceOptions {
  readonly store: AccessStore;
  readonly alerter: Alerter;
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** The policy in force (hot reload): `accessRequests` is read per call. */
  readonly policy: () => CompiledPolicy;
  readonly publicBaseUrl: string;
  readonly now?: () => Date;
  readonly newId?: () => string;
  /** Sweep interval (default 15 s); 0 disables the timer. */
  readonly sweepMs?: number;
  /** Called for every allowed or refused step (metrics). Its errors are logged and ignored. */
  readonly onEvent?: (e: AccessEvent) => void;
}

/** FHIR id syntax (patients, encounters). */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** Grant ids are UUIDs: anything else in X-Access-Grant is refused before the store is asked. */
const GRANT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** FHIR date, dateTime or instant (a time needs seconds and a zone). */
const FHIR_DATE = /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$/;
// The same characters a break-glass reason may not hold: they would forge lines in a report.
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to match control characters
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/;

type Body = Readonly<Record<string, unknown>>;
type Period = NonNullable<AccessScope['period']>;

const invalid = (detail: string) => new GatewayError('access-request-invalid', detail);

/** A plain JSON object holding only `allowed` fields (details never echo what was sent). */
function fields(input: unknown, allowed: readonly string[]): Body {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw invalid('body is not an object');
  const proto = Object.getPrototypeOf(input);
  if (proto !== Object.prototype && proto !== null) throw invalid('body is not an object');
  for (const k of Object.keys(input)) if (!allowed.includes(k)) throw invalid('unknown field');
  return input as Body;
}

function idList(v: unknown, what: string, max: number): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > max) throw invalid(`${what}: 1 to ${max} ids`);
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== 'string' || !FHIR_ID.test(v[i])) throw invalid(`${what}: not a FHIR id`);
  if (new Set(v).size !== v.length) throw invalid(`${what}: repeated id`);
  return [...(v as string[])];
}

function typeList(v: unknown, ds: RequestableDataSet): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > ds.types.size) throw invalid('types: a non-empty subset of the data set types');
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== 'string' || !ds.types.has(v[i])) throw invalid('types: not a type of the data set');
  if (new Set(v).size !== v.length) throw invalid('types: repeated type');
  return [...(v as string[])];
}

function period(v: unknown): Period {
  const p = fields(v, ['start', 'end']);
  const out: { start?: string; end?: string } = {};
  for (const k of ['start', 'end'] as const) {
    const x = p[k];
    if (x === undefined) continue;
    if (typeof x !== 'string' || !FHIR_DATE.test(x)) throw invalid(`period.${k}: not a FHIR date or dateTime`);
    out[k] = x;
  }
  if (!validPeriod(out)) throw invalid('period: needs a start or an end, the start not after the end');
  return out;
}

/** A period as epoch ms bounds (each end inclusive; a bare date covers its whole day, as in scope.ts). */
function bounds(p: Period | undefined): [number, number] {
  const from = p?.start === undefined ? Number.NEGATIVE_INFINITY : dateRange(p.start)![0];
  const to = p?.end === undefined ? Number.POSITIVE_INFINITY : dateRange(p.end)![1];
  return [from, to];
}

function minutesOf(v: unknown, cap: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalid('minutes: a whole number, at least 1');
  if (v > cap) throw invalid(`minutes: at most ${cap}`);
  return v;
}

function noteOf(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid('note: not a string');
  const note = v.trim().replace(/\s+/g, ' ');
  if (note.length > MAX_NOTE_LENGTH) throw invalid(`note: at most ${MAX_NOTE_LENGTH} characters`);
  if (CONTROL.test(note)) throw invalid('note: control characters');
  return note === '' ? undefined : note;
}

/** A scope with only its present members (stored and compared as JSON). */
function scopeOf(patients: string[], encounters: string[] | undefined, types: string[] | undefined, p: Period | undefined): AccessScope {
  return {
    patients,
    ...(encounters === undefined ? {} : { encounters }),
    ...(types === undefined ? {} : { types }),
    ...(p === undefined ? {} : { period: p }),
  };
}

function capMinutes(ds: RequestableDataSet): number {
  return Math.floor(ds.maxMs / 60_000);
}

function actorOf(p: Principal): AccessActor {
  return { iss: p.iss, sub: p.sub, clientId: p.clientId, roles: [...p.roles] };
}

/**
 * The caller is the requester: the same issuer and subject, still holding the role the request was
 * made under (the same person under a de-identified role neither sees nor uses it).
 */
function isRequester(r: AccessRequestRecord, p: Principal): boolean {
  return r.requester.iss === p.iss && r.requester.sub === p.sub && p.roles.includes(r.role);
}

/** The caller's first role that approves the data set. */
function approverRole(p: Principal, ds: RequestableDataSet | undefined): string | undefined {
  return ds === undefined ? undefined : p.roles.find((r) => ds.approvers.has(r));
}

/** What an approval grants: each member at most what was asked (wider is refused), and whether it is less. */
export function narrowScope(
  asked: AccessScope,
  body: Body,
  ds: RequestableDataSet,
  ar: CompiledAccessRequests,
): { scope: AccessScope; narrowed: boolean } {
  let narrowed = false;
  let patients = [...asked.patients];
  if (body.patients !== undefined) {
    patients = idList(body.patients, 'patients', ar.maxPatients);
    if (!patients.every((x) => asked.patients.includes(x))) throw invalid('patients: wider than asked');
    narrowed ||= patients.length < asked.patients.length;
  }
  let encounters = asked.encounters === undefined ? undefined : [...asked.encounters];
  if (body.encounters !== undefined) {
    encounters = idList(body.encounters, 'encounters', MAX_ENCOUNTERS);
    if (asked.encounters !== undefined && asked.encounters.length > 0) {
      const a = asked.encounters;
      if (!encounters.every((x) => a.includes(x))) throw invalid('encounters: wider than asked');
      narrowed ||= encounters.length < a.length;
    } else narrowed = true;
  }
  let types = asked.types === undefined ? undefined : [...asked.types];
  if (body.types !== undefined) {
    types = typeList(body.types, ds);
    const allowed = asked.types ?? [...ds.types.keys()];
    if (!types.every((x) => allowed.includes(x))) throw invalid('types: wider than asked');
    narrowed ||= types.length < allowed.length;
  }
  let p = asked.period;
  if (body.period !== undefined) {
    p = period(body.period);
    const [askedFrom, askedTo] = bounds(asked.period);
    const [from, to] = bounds(p);
    if (from < askedFrom || to > askedTo) throw invalid('period: wider than asked');
    narrowed ||= from > askedFrom || to < askedTo;
  }
  return { scope: scopeOf(patients, encounters, types, p), narrowed };
}

type Action = 'request' | 'approve' | 'deny' | 'revoke' | 'get' | 'list';

/** One call being served: what its audit record will say. */
interface Call {
  action: Action;
  readonly principal: Principal;
  readonly purpose: string | undefined;
  role: string | undefined;
  readonly ctx: CallContext;
  readonly at: Date;
  readonly started: bigint;
  patients: readonly string[];
  details: Record<string, unknown>;
}

export function createAccessService(o: AccessServiceOptions): AccessService {
  const now = o.now ?? (() => new Date());
  const newId = o.newId ?? randomUUID;
  const base = reviewBase(o.publicBaseUrl);
  let snapshot: AccessStats = { pending: 0, active: 0, oldestPendingAgeSec: 0 };
  let timer: NodeJS.Timeout | undefined;

  const requestUrl = (id: string) => `${base}/access-requests/${encodeURIComponent(id)}`;

  function emit(e: AccessEvent): void {
    if (!o.onEvent) return;
    try {
      o.onEvent(e);
    } catch (err) {
      o.logger.error({ err }, 'access event listener failed');
    }
  }

  function call(action: Action, principal: Principal, purpose: string | undefined, ctx: CallContext): Call {
    return { action, principal, purpose, role: undefined, ctx, at: now(), started: process.hrtime.bigint(), patients: [], details: {} };
  }

  function recordOf(c: Call, decision: AuditRecord['decision'], rule: string, status: number): AuditRecord {
    const p = c.principal;
    return {
      id: c.ctx.auditId,
      time: c.at.toISOString(),
      kind: 'access-request',
      actor: { iss: p.iss, sub: p.sub, clientId: p.clientId, jti: p.jti, roles: [...p.roles] },
      purpose: c.purpose,
      role: c.role,
      client: c.ctx.client,
      request: { method: c.ctx.method, path: c.ctx.path, interaction: undefined, resourceType: undefined },
      decision,
      rule,
      // Asking for, granting or reading a request concerns these patients' charts (BALP patient entities).
      disclosed: { resources: [], patients: [...new Set(c.patients)], elementsRemoved: 0, resourcesWithheld: 0 },
      status,
      upstreamStatus: undefined,
      durations: { totalMs: Number((process.hrtime.bigint() - c.started) / 1000n) / 1000 },
      policyVersion: o.policy().version,
      details: { action: c.action, ...c.details },
    };
  }

  /** Writes the call's record; a failure refuses the call (nothing is stored). */
  async function audit(c: Call, decision: AuditRecord['decision'], rule: string, status: number): Promise<void> {
    try {
      await o.audit.write(recordOf(c, decision, rule, status));
    } catch (e) {
      o.logger.error({ reqId: c.ctx.auditId, access: { action: c.action }, err: e }, 'access request audit write failed: call refused (503)');
      throw new GatewayError('audit-unavailable', 'access request audit write failed', { cause: e });
    }
  }

  function changeEvent(c: Call, outcome: 'allowed' | 'refused', decideSeconds?: number): void {
    if (c.action === 'request' || c.action === 'approve' || c.action === 'deny' || c.action === 'revoke') {
      emit({ action: c.action, outcome, ...(decideSeconds === undefined ? {} : { decideSeconds }) });
    }
  }

  /** Audits a refusal, then throws it (or audit-unavailable when it cannot be recorded). */
  async function refuse(c: Call, e: unknown): Promise<never> {
    if (!isGatewayError(e)) o.logger.error({ reqId: c.ctx.auditId, access: { action: c.action }, err: e }, 'access request call failed');
    const gw = isGatewayError(e) ? e : new GatewayError('internal', 'access request call failed', { cause: e });
    if (gw.detail !== undefined) c.details.why = gw.detail;
    changeEvent(c, 'refused');
    await audit(c, gw.status >= 500 ? 'error' : 'deny', gw.code, gw.status);
    throw gw;
  }

  /**
   * The change was audited as allowed but the store refused it (another replica decided first, or
   * the store failed): a second record, naming the first, says it did not happen.
   */
  async function supersede(c: Call, code: ErrorCode, detail: string, cause?: unknown): Promise<never> {
    const gw = new GatewayError(code, detail, { cause });
    const record = recordOf(c, gw.status >= 500 ? 'error' : 'deny', code, gw.status);
    try {
      await o.audit.write({ ...record, id: newId(), details: { ...record.details, why: detail, supersedes: c.ctx.auditId } });
    } catch (e) {
      o.logger.error({ reqId: c.ctx.auditId, access: { action: c.action }, err: e }, 'access request: the record superseding an allowed call could not be written');
    }
    changeEvent(c, 'refused');
    throw gw;
  }

  async function refreshStats(): Promise<AccessStats> {
    const all = await o.store.list();
    const t = now();
    let pending = 0;
    let active = 0;
    let oldest: number | undefined;
    for (const r of all) {
      if (isActive(r, t)) active++;
      if (r.status === 'pending') {
        pending++;
        const at = Date.parse(r.requestedAt);
        if (oldest === undefined || at < oldest) oldest = at;
      }
    }
    snapshot = { pending, active, oldestPendingAgeSec: oldest === undefined ? 0 : Math.max(0, Math.floor((t.getTime() - oldest) / 1000)) };
    return snapshot;
  }

  const refreshLater = () => void refreshStats().catch(() => {});

  function policyOf(): { policy: CompiledPolicy; ar: CompiledAccessRequests | undefined } {
    const policy = o.policy();
    return { policy, ar: policy.accessRequests };
  }

  /** The requester role the data set is asked for (X-Role picks among several). */
  function requesterRole(policy: CompiledPolicy, ds: RequestableDataSet, p: Principal, purpose: string, wanted: string | undefined): string {
    if (!ds.purposes.has(purpose)) throw new GatewayError('access-request-not-permitted', `${ds.name} is not requested for ${purpose}`);
    const candidates = [...new Set(p.roles)].filter((r) => ds.requesters.has(r) && policy.roles.get(r)?.plans.has(purpose));
    if (wanted !== undefined) {
      if (!p.roles.includes(wanted)) throw new GatewayError('access-request-not-permitted', 'X-Role is not held');
      if (!candidates.includes(wanted)) throw new GatewayError('access-request-not-permitted', 'X-Role may not request the data set for the purpose');
      return wanted;
    }
    if (candidates.length === 0) throw new GatewayError('access-request-not-permitted', 'no role may request the data set for the purpose');
    const sets = new Set(candidates.map((r) => policy.roles.get(r)!.plans.get(purpose)!.dataSet));
    if (sets.size > 1) throw new GatewayError('role-ambiguous', 'several requester roles with different data sets');
    return candidates[0];
  }

  async function request(principal: Principal, purpose: string, input: unknown, ctx: CallContext): Promise<AccessRequestRecord> {
    const c = call('request', principal, purpose, ctx);
    let record: AccessRequestRecord;
    let maxPending: number;
    try {
      const { policy, ar } = policyOf();
      const body = fields(input, REQUEST_FIELDS);
      if (typeof body.dataSet !== 'string') throw invalid('dataSet: not a string');
      if (ar === undefined) throw new GatewayError('access-request-not-permitted', 'the policy has no accessRequests section');
      const ds = ar.dataSets.get(body.dataSet);
      if (ds === undefined) throw invalid('dataSet: not a requestable data set');
      c.details.dataSet = ds.name;
      c.details.purpose = purpose;
      const patients = idList(body.patients, 'patients', ar.maxPatients);
      const encounters = body.encounters === undefined ? undefined : idList(body.encounters, 'encounters', MAX_ENCOUNTERS);
      const types = body.types === undefined ? undefined : typeList(body.types, ds);
      const p = body.period === undefined ? undefined : period(body.period);
      if (typeof body.justification !== 'string') throw invalid('justification: not a string');
      const j = parseReason(body.justification, { minReasonLength: ar.minJustificationLength, reasons: ar.reasons });
      if (!j.ok) throw invalid(`justification ${j.why}`);
      const minutes = minutesOf(body.minutes, capMinutes(ds));
      if (body.role !== undefined && typeof body.role !== 'string') throw invalid('role: not a string');
      const scope = scopeOf(patients, encounters, types, p);
      c.patients = patients;
      // A token limited to one patient asks for that patient only (it could never use more).
      if (principal.patient !== undefined && patients.some((x) => x !== principal.patient)) {
        throw new GatewayError('access-request-not-permitted', 'a patient outside the token patient');
      }
      // In the trail, as a break-glass reason is: months later the auditor reads why it was asked.
      c.details = { ...c.details, scope, minutes, justification: j.reason, justificationCode: j.code };
      c.role = requesterRole(policy, ds, principal, purpose, body.role as string | undefined);
      maxPending = ar.maxPending;
      const held = (await o.store.list()).filter((r) => r.status === 'pending' && isRequester(r, principal)).length;
      if (held >= maxPending) throw new GatewayError('access-request-not-permitted', `${held} undecided requests (at most ${maxPending})`);
      record = {
        id: newId(),
        requester: actorOf(principal),
        role: c.role,
        dataSet: ds.name,
        purpose,
        scope,
        justification: j.reason,
        justificationCode: j.code,
        minutes,
        requestedAt: c.at.toISOString(),
        requestId: ctx.auditId,
        status: 'pending',
        uses: 0,
      };
      c.details = { request: record.id, ...c.details };
    } catch (e) {
      return refuse(c, e);
    }
    await audit(c, 'allow', `accessRequests.dataSets.${record.dataSet}: requested`, 201);
    let res: Awaited<ReturnType<AccessStore['create']>>;
    try {
      res = await o.store.create(record, maxPending);
    } catch (e) {
      o.logger.error({ reqId: ctx.auditId, err: e }, 'access request audited but could not be stored');
      return supersede(c, 'internal', 'the store failed', e);
    }
    if (!res.ok) return supersede(c, 'access-request-not-permitted', `${res.pending} undecided requests (at most ${maxPending})`);
    changeEvent(c, 'allowed');
    o.logger.info({ reqId: ctx.auditId, access: { request: record.id, action: 'request', dataSet: record.dataSet, actor: principal.sub } }, 'access request made');
    await o.alerter.raise({
      type: 'access-request',
      alertId: newId(),
      time: record.requestedAt,
      actor: { iss: principal.iss, sub: principal.sub, clientId: principal.clientId, roles: [...principal.roles] },
      patient: record.scope.patients[0],
      access: { request: record.id, dataSet: record.dataSet, purpose, patients: record.scope.patients.length, minutes: record.minutes, decideUrl: requestUrl(record.id) },
    });
    refreshLater();
    return (await o.store.get(record.id).catch(() => undefined)) ?? record;
  }

  /** Details common to the records of calls about one stored request. */
  function about(c: Call, r: AccessRequestRecord): void {
    c.patients = r.granted?.scope.patients ?? r.scope.patients;
    c.details = {
      request: r.id,
      dataSet: r.dataSet,
      purpose: r.purpose,
      requester: r.requester.sub,
      scope: r.granted?.scope ?? r.scope,
      minutes: r.minutes,
      expiresAt: r.granted?.expiresAt,
      justificationCode: r.justificationCode,
    };
  }

  async function decide(principal: Principal, id: string, input: unknown, ctx: CallContext): Promise<AccessRequestRecord> {
    const denying = input !== null && typeof input === 'object' && (input as Body).outcome === 'denied';
    const c = call(denying ? 'deny' : 'approve', principal, ctx.purpose, ctx);
    c.details.request = id;
    let decision: AccessDecision;
    let granted: AccessRequestRecord['granted'];
    try {
      const { ar } = policyOf();
      const body = fields(input, DECIDE_FIELDS);
      if (body.outcome !== 'approved' && body.outcome !== 'denied') throw invalid('outcome: approved or denied');
      const note = noteOf(body.note);
      // A denial says why: the requester and the report read it.
      if (body.outcome === 'denied' && note === undefined) throw invalid('a denial needs a note');
      if (body.outcome === 'denied' && DECIDE_FIELDS.some((f) => f !== 'outcome' && f !== 'note' && body[f] !== undefined)) {
        throw invalid('a denial names nothing but a note');
      }
      const r = await o.store.get(id);
      // Whoever may not see a request is told nothing of it, here as on GET: not that it exists.
      if (r === undefined || viewerRole(r, principal, ar) === undefined) throw new GatewayError('access-request-not-found');
      about(c, r);
      const ds = ar?.dataSets.get(r.dataSet);
      // Separation of duties: never one's own request, whatever issuer vouches for the approver.
      if (r.requester.sub === principal.sub) throw new GatewayError('approval-not-permitted', 'own request');
      c.role = approverRole(principal, ds);
      if (c.role === undefined) throw new GatewayError('approval-not-permitted', ds === undefined ? 'data set no longer requestable' : 'no approver role');
      const holds = (await o.store.list()).some((x) => x.requester.sub === principal.sub && x.dataSet === r.dataSet && (x.status === 'pending' || isActive(x, c.at)));
      if (holds) throw new GatewayError('approval-not-permitted', 'approver holds a request for the same data set');
      if (r.status !== 'pending') throw new GatewayError('access-request-decided', `already ${r.status}`);
      let narrowed = false;
      if (body.outcome === 'approved') {
        const n = narrowScope(r.scope, body, ds!, ar!);
        // A policy cap lowered since the request shortens the grant to it.
        const cap = Math.min(r.minutes, capMinutes(ds!));
        const minutes = body.minutes === undefined ? cap : minutesOf(body.minutes, Number.MAX_SAFE_INTEGER);
        if (minutes > r.minutes) throw invalid('minutes: longer than asked');
        if (minutes > cap) throw invalid(`minutes: at most ${cap}`);
        narrowed = n.narrowed || minutes < r.minutes;
        granted = { scope: n.scope, expiresAt: new Date(c.at.getTime() + minutes * 60_000).toISOString() };
        c.patients = n.scope.patients;
        c.details = { ...c.details, scope: n.scope, minutes, expiresAt: granted.expiresAt };
      }
      decision = { by: actorOf(principal), outcome: body.outcome, note, at: c.at.toISOString(), narrowed, auditId: ctx.auditId, via: ctx.via };
      c.details = { ...c.details, narrowed, decideSeconds: (c.at.getTime() - Date.parse(r.requestedAt)) / 1000, note };
    } catch (e) {
      return refuse(c, e);
    }
    await audit(c, 'allow', `accessRequests.dataSets.${c.details.dataSet}: ${decision.outcome}`, 200);
    let res: Awaited<ReturnType<AccessStore['decide']>>;
    try {
      res = await o.store.decide(id, decision, granted);
    } catch (e) {
      o.logger.error({ reqId: ctx.auditId, err: e }, 'access decision audited but could not be stored');
      return supersede(c, 'internal', 'the store failed', e);
    }
    if (!res.ok) return supersede(c, res.why === 'not-found' ? 'access-request-not-found' : 'access-request-decided', 'decided concurrently');
    changeEvent(c, 'allowed', c.details.decideSeconds as number);
    o.logger.info({ reqId: ctx.auditId, access: { request: id, action: c.action, actor: principal.sub } }, `access request ${decision.outcome}`);
    refreshLater();
    return res.record;
  }

  async function revoke(principal: Principal, id: string, input: unknown, ctx: CallContext): Promise<AccessRequestRecord> {
    const c = call('revoke', principal, ctx.purpose, ctx);
    c.details.request = id;
    let revocation: AccessRevocation;
    try {
      const { ar } = policyOf();
      const body = fields(input, REVOKE_FIELDS);
      const note = noteOf(body.note);
      const r = await o.store.get(id);
      if (r === undefined || viewerRole(r, principal, ar) === undefined) throw new GatewayError('access-request-not-found');
      about(c, r);
      if (isRequester(r, principal)) {
        // Giving one's own grant up early.
        c.role = r.role;
      } else {
        if (r.requester.sub === principal.sub) throw new GatewayError('approval-not-permitted', 'own request under another issuer');
        c.role = approverRole(principal, ar?.dataSets.get(r.dataSet));
        if (c.role === undefined) throw new GatewayError('approval-not-permitted', 'no approver role');
      }
      if (!isActive(r, c.at)) throw new GatewayError('access-request-decided', 'not an active grant');
      revocation = { by: actorOf(principal), note, at: c.at.toISOString(), auditId: ctx.auditId, via: ctx.via };
      c.details = { ...c.details, note, by: isRequester(r, principal) ? 'requester' : 'approver' };
    } catch (e) {
      return refuse(c, e);
    }
    await audit(c, 'allow', `accessRequests.dataSets.${c.details.dataSet}: revoked`, 200);
    let res: Awaited<ReturnType<AccessStore['revoke']>>;
    try {
      res = await o.store.revoke(id, revocation, c.at);
    } catch (e) {
      o.logger.error({ reqId: ctx.auditId, err: e }, 'access revocation audited but could not be stored');
      return supersede(c, 'internal', 'the store failed', e);
    }
    if (!res.ok) return supersede(c, res.why === 'not-found' ? 'access-request-not-found' : 'access-request-decided', 'ended concurrently');
    changeEvent(c, 'allowed');
    o.logger.info({ reqId: ctx.auditId, access: { request: id, action: 'revoke', actor: principal.sub } }, 'access grant revoked');
    refreshLater();
    return res.record;
  }

  /** The role under which the caller sees a request, or undefined when it may not. */
  function viewerRole(r: AccessRequestRecord, p: Principal, ar: CompiledAccessRequests | undefined): string | undefined {
    if (isRequester(r, p)) return r.role;
    return approverRole(p, ar?.dataSets.get(r.dataSet));
  }

  async function get(principal: Principal, id: string, ctx: CallContext): Promise<AccessRequestRecord> {
    const c = call('get', principal, ctx.purpose, ctx);
    c.details.request = id;
    let r: AccessRequestRecord | undefined;
    try {
      r = await o.store.get(id);
      // Others are told nothing, not even that it exists.
      const role = r === undefined ? undefined : viewerRole(r, principal, policyOf().ar);
      if (r === undefined || role === undefined) throw new GatewayError('access-request-not-found');
      about(c, r);
      c.role = role;
    } catch (e) {
      return refuse(c, e);
    }
    await audit(c, 'allow', `accessRequests.dataSets.${r.dataSet}: read`, 200);
    return r;
  }

  async function list(principal: Principal, filter: { readonly status?: AccessStatus | 'active' | undefined }, ctx: CallContext): Promise<AccessRequestRecord[]> {
    const c = call('list', principal, ctx.purpose, ctx);
    let out: AccessRequestRecord[];
    try {
      const status = filter?.status;
      if (status !== undefined && !LIST_STATUSES.includes(status)) throw invalid('status: pending, approved, denied or active');
      const { ar } = policyOf();
      const t = c.at;
      out = (await o.store.list()).filter(
        (r) => viewerRole(r, principal, ar) !== undefined && (status === undefined || (status === 'active' ? isActive(r, t) : r.status === status)),
      );
      c.patients = out.flatMap((r) => r.granted?.scope.patients ?? r.scope.patients);
      c.details = { status, count: out.length };
    } catch (e) {
      return refuse(c, e);
    }
    await audit(c, 'allow', 'accessRequests: list', 200);
    return out;
  }

  async function use(input: Parameters<AccessService['use']>[0]): Promise<GrantUse> {
    const { principal, purpose, request: req, header } = input;
    const t = now();
    const fail = async (
      code: 'grant-invalid' | 'grant-inactive' | 'grant-out-of-scope' | 'grant-unavailable',
      detail: string,
      misuse?: { r: AccessRequestRecord; why: string; patient: string | undefined },
    ): Promise<never> => {
      const outcome = ({ 'grant-invalid': 'invalid', 'grant-inactive': 'inactive', 'grant-out-of-scope': 'out-of-scope', 'grant-unavailable': 'unavailable' } as const)[code];
      emit({ action: 'use', outcome });
      if (misuse) {
        const alert: AlertPayload = {
          type: 'grant-misuse',
          alertId: newId(),
          time: t.toISOString(),
          actor: { iss: principal.iss, sub: principal.sub, clientId: principal.clientId, roles: [...principal.roles] },
          patient: misuse.patient ?? '',
          access: { grant: misuse.r.id, why: misuse.why, dataSet: misuse.r.dataSet },
        };
        await o.alerter.raise(alert);
      }
      throw new GatewayError(code, detail);
    };
    if (typeof header !== 'string' || !GRANT_ID.test(header)) return fail('grant-invalid', typeof header === 'string' ? 'not a grant id' : 'repeated X-Access-Grant');
    let r: AccessRequestRecord | undefined;
    try {
      r = await o.store.get(header);
    } catch (e) {
      o.logger.error({ reqId: input.requestId, err: e }, 'access grants unreadable');
      return fail('grant-unavailable', 'store unreadable');
    }
    const asked = requestPatients(req);
    const named = asked.ids.size === 1 ? [...asked.ids][0] : undefined;
    if (r === undefined) return fail('grant-invalid', 'no such grant');
    if (!isRequester(r, principal)) return fail('grant-invalid', "another requester's grant", { r, why: 'not-requester', patient: named });
    if (!isActive(r, t) || r.granted === undefined || r.decision === undefined) return fail('grant-inactive', `grant ${r.status}${r.revoked ? ', revoked' : ''}`);
    if (policyOf().ar?.dataSets.get(r.dataSet) === undefined) return fail('grant-inactive', 'data set no longer requestable');
    if (purpose !== r.purpose) return fail('grant-out-of-scope', 'another purpose', { r, why: 'purpose', patient: named });
    const granted = r.granted.scope;
    // Every patient the request names must be granted (a list, a second parameter, a search body
    // naming another one: refused and alerted, never quietly answered empty); what cannot be read
    // as patient ids (a batch, an identifier) is refused rather than guessed at.
    const outside = [...asked.ids].find((p) => !granted.patients.includes(p));
    if (outside !== undefined) return fail('grant-out-of-scope', 'patient not granted', { r, why: 'patient', patient: outside });
    if (asked.opaque) return fail('grant-out-of-scope', 'patients not named by id', { r, why: 'unresolvable', patient: undefined });
    if (asked.ids.size > 1) return fail('grant-out-of-scope', 'several patients named', { r, why: 'several-patients', patient: undefined });
    let patient = named;
    if (patient === undefined) {
      // A request naming no patient is limited by the pipeline to the grant's only patient.
      if (granted.patients.length !== 1) return fail('grant-out-of-scope', 'no single granted patient named', { r, why: 'no-patient', patient: undefined });
      patient = granted.patients[0]!;
    }
    if (principal.patient !== undefined && principal.patient !== patient) return fail('grant-out-of-scope', 'outside the token patient', { r, why: 'token-patient', patient });
    try {
      await o.store.noteUse(r.id, t.toISOString());
    } catch (e) {
      o.logger.error({ reqId: input.requestId, err: e }, 'access grant use could not be counted');
      return fail('grant-unavailable', 'use not counted');
    }
    emit({ action: 'use', outcome: 'allowed' });
    return { id: r.id, dataSet: r.dataSet, patient, approvedBy: r.decision.by.sub, expiresAt: r.granted.expiresAt, scope: granted };
  }

  function expiredRecord(r: AccessRequestRecord): AuditRecord {
    return {
      id: newId(),
      time: now().toISOString(),
      kind: 'access-grant-expired',
      actor: { iss: r.requester.iss, sub: r.requester.sub, clientId: r.requester.clientId, roles: r.requester.roles },
      purpose: r.purpose,
      role: r.role,
      client: { address: '' },
      request: { method: '-', path: `access-requests/${r.id}`, interaction: undefined, resourceType: undefined },
      decision: 'allow',
      rule: `accessRequests.dataSets.${r.dataSet}: expired`,
      disclosed: { resources: [], patients: [...(r.granted?.scope.patients ?? r.scope.patients)], elementsRemoved: 0, resourcesWithheld: 0 },
      status: 200,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion: o.policy().version,
      details: { request: r.id, dataSet: r.dataSet, expiresAt: r.granted?.expiresAt, uses: r.uses },
    };
  }

  async function sweep(): Promise<void> {
    for (const r of await o.store.endExpired(now())) {
      try {
        await o.audit.write(expiredRecord(r));
        emit({ action: 'expire', outcome: 'allowed' });
        o.logger.info({ access: { request: r.id, action: 'expire', actor: r.requester.sub } }, 'access grant expired');
      } catch (e) {
        o.logger.error({ access: { request: r.id }, err: e }, 'access grant expiry could not be audited; will retry');
        await o.store.unend(r.id).catch(() => {});
      }
    }
    await refreshStats();
  }

  if ((o.sweepMs ?? 15_000) > 0) {
    timer = setInterval(() => void sweep().catch((e) => o.logger.error({ err: e }, 'access grant sweep failed')), o.sweepMs ?? 15_000);
    timer.unref();
  }
  refreshLater();

  return {
    use,
    request,
    decide,
    revoke,
    get,
    list,
    stats: () => snapshot,
    refreshStats,
    sweep,
    requestUrl,
    async close() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await o.alerter.close();
      await o.store.close();
    },
  };
}
