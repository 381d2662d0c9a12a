/**
 * The stored-resource guard (BYPASSES 11, 17, 18): what a request reaches beyond its own bytes.
 * decide() judges the request; this judges what is stored behind it, for every caller, after the
 * decision allowed the request and before it is forwarded. It reads the current version of the
 * addressed resource with the gateway's own credentials, limits and strict JSON, and passes it
 * through the same response filter (and filter context) the answer would go through:
 *
 * - vread and instance history: a current version the caller could not read withholds every
 *   version, answered exactly as a read of it (404 `not-found`, or 403 `break-glass-available`
 *   for a label when the caller is told about break-glass). A version other than the current one
 *   needs the `history` interaction.
 * - update, patch, delete: nothing stored (404/410) is `not-found` for all three; an update never
 *   creates, since 201 vs 200 would tell whether a withheld resource exists. A stored resource the
 *   caller could not read is answered as a read of it. Otherwise the write goes with
 *   `If-Match: W/"<stored versionId>"`, so the upstream refuses it if the resource changed in
 *   between; a stored resource without a usable versionId is refused (fail closed). A client's own
 *   If-Match naming another version is refused (412 `precondition-failed`, see ifMatchSent()).
 * - Security labels: adding, changing or removing `meta.security` on update or patch needs the
 *   type's `relabel` interaction or an active break-glass session (`label-change-denied`); a create
 *   or update whose body carries a label the caller's plan withholds is never sent (`label-denied`):
 *   the caller could not read back what it wrote.
 * - Conditional update, patch and delete (by criteria, no id) are refused: what they replace cannot
 *   be read first.
 * - Conditional create (If-None-Exist; decide() judged its criteria as a search): the upstream
 *   answers 201 when nothing matches, 200 with the match when one does, 412 for several. For a
 *   caller not told of withholding, the criteria get `_security:not` for every label its plan
 *   withholds from the type (as its searches do), so a withheld resource never matches: the answer
 *   is then the one the caller would get if the withheld resource did not exist (created, 201; or
 *   the visible match alone decides 200 vs 412). A caller told of withholding (it may break the
 *   glass) searches without them, and a withheld match is answered as a read of it would be
 *   (403 `break-glass-available`), as its search would announce it. If a withheld match comes back
 *   all the same (an upstream that ignores `_security:not`, a label in a legacy spelling), it is
 *   never released: the pipeline answers as a read of it (404 or 403), audited as refused; nothing
 *   was written. Under a patient compartment the criteria cannot be bounded to it: refused.
 *
 * - Type history is refused where resources of the type can be withheld (labels or a patient
 *   context): each past version would have to be judged by its resource's current version.
 *
 * - A read inside a transaction, and the target of an instance operation (`$everything`), are read
 *   first too: the upstream fails a transaction on a missing read but not on a withheld one, and
 *   answers an operation on a missing resource 404 but on a withheld one 200 before filtering.
 *
 * Batch and transaction: every entry is judged the same way, and the first refused entry refuses
 * the whole Bundle (a missing target included, so a withheld one looks the same).
 */
import type { Coding } from 'fhir/r4.js';
import { Agent, type Dispatcher, request as undiciRequest } from 'undici';
import type { GatewayConfig } from '../config/types.js';
import { type ErrorCode, GatewayError, isGatewayError } from '../errors.js';
import { compartmentViolation } from '../policy/compartment.js';
import { rebuild } from '../policy/narrow.js';
import type { AccessPlan, ResourcePlan } from '../policy/plan.js';
import { patientReferencePaths } from '../fhir/tables.js';
import type { ClassifiedRequest } from '../policy/request.js';
import { filterResponse as defaultFilterResponse, patientsIn, withheldCode } from '../redact/response.js';
import type { FilterResult, ResponseContext } from '../redact/types.js';
import { type Exchange, elapsedMs } from './record.js';
import { versionShown } from './etag.js';
import { readUpstreamBody } from './upstream-body.js';
import { buildUpstreamCall } from './upstream-request.js';

export interface StoredGuardDeps {
  readonly config: GatewayConfig;
  upstreamAuthorization(): Promise<string | undefined>;
  /** The proxy's upstream dispatcher (CA, client certificate, timeouts); else one of the guard's own. */
  readonly upstreamDispatcher?: Dispatcher | undefined;
  /** The pipeline's response filter (the same one its answers go through); default src/redact/response.ts. */
  readonly steps?: { filterResponse(body: unknown, ctx: ResponseContext): FilterResult } | undefined;
}

export interface StoredGuardInput {
  readonly ex: Exchange;
  /** The request decide() allowed. */
  readonly req: ClassifiedRequest;
  readonly plan: AccessPlan;
  /** The context the answer will be filtered with (plans, withheld mode, patient compartment). */
  readonly filter: ResponseContext;
  /** A break-glass session is active: label changes need no `relabel` grant. */
  readonly breakGlass: boolean;
  /** The client's own If-Match, if any (a batch entry's is in its `request.ifMatch`). */
  readonly clientIfMatch?: string | string[] | undefined;
  /** The request's UpstreamScope signal: the reads count within its total deadline, and end when the client goes. */
  readonly signal?: AbortSignal | undefined;
}

export interface GuardedRequest {
  /** The request to forward (a batch/transaction body copy carries each write entry's ifMatch). */
  readonly req: ClassifiedRequest;
  /** The If-Match for a single write (replaces the client's). */
  readonly ifMatch: string | undefined;
}

export type StoredGuard = (input: StoredGuardInput) => Promise<GuardedRequest>;

/** A guard failure that refuses the request (audited `deny`), as opposed to an upstream or gateway failure (`error`). */
export function isStoredRefusal(e: unknown): boolean {
  return isGatewayError(e) && e.status < 500;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const VERSION_ID = /^[A-Za-z0-9\-.]{1,64}$/;

function usableVersion(resource: Obj): string | undefined {
  const v = isObj(resource.meta) ? resource.meta.versionId : undefined;
  return typeof v === 'string' && VERSION_ID.test(v) ? v : undefined;
}

/**
 * The labels of a request body as `system|code` keys (order and display ignored). A `meta` or
 * `meta.security` of the wrong shape is refused: its labels could not be judged.
 */
function bodyLabels(body: unknown): { keys: Set<string>; codings: Coding[] } {
  const meta = isObj(body) ? body.meta : undefined;
  if (meta === undefined) return { keys: new Set(), codings: [] };
  if (!isObj(meta)) throw new GatewayError('request-body-invalid', 'meta is not an object');
  const security = meta.security;
  if (security === undefined) return { keys: new Set(), codings: [] };
  if (!Array.isArray(security) || !security.every(isObj)) throw new GatewayError('request-body-invalid', 'meta.security is not a list of Codings');
  return { keys: labelKeys(security), codings: security as Coding[] };
}

function labelKeys(security: readonly Obj[]): Set<string> {
  const keys = new Set<string>();
  for (const c of security) keys.add(`${typeof c.system === 'string' ? c.system : ''}|${typeof c.code === 'string' ? c.code : ''}`);
  return keys;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const k of a) if (!b.has(k)) return false;
  return true;
}

/** Unescapes one JSON Pointer token (RFC 6901). */
function pointerToken(t: string): string {
  return t.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Whether a JSON Pointer is the whole document, `/meta`, or inside `/meta/security`. */
function pointerReachesLabels(ptr: string): boolean {
  if (ptr === '') return true;
  const tokens = ptr.split('/').slice(1).map(pointerToken);
  return tokens[0] === 'meta' && (tokens.length === 1 || tokens[1] === 'security');
}

/**
 * FHIRPath Patch paths are expressions: a path or name that mentions `meta`, uses an escape (a
 * delimited identifier can spell `meta` without its letters), or walks elements without naming
 * them (children(), descendants(), repeat()) may reach the labels.
 */
function fhirPathReachesLabels(s: string): boolean {
  return /meta/i.test(s) || s.includes('\\') || /\b(children|descendants|repeat)\s*\(/.test(s);
}

/** Every Coding-like object and bare string inside a patch value, as candidate labels. */
function valueCodings(v: unknown, out: Coding[], depth = 0): void {
  if (depth > 16) return;
  if (typeof v === 'string') out.push({ code: v });
  else if (Array.isArray(v)) for (const x of v) valueCodings(x, out, depth + 1);
  else if (isObj(v)) {
    if (typeof v.code === 'string') out.push(v as Coding);
    for (const x of Object.values(v)) if (typeof x === 'object') valueCodings(x, out, depth + 1);
  }
}

/** The `value[x]` strings of a Parameters parameter. */
function stringValues(p: Obj): string[] {
  return Object.entries(p)
    .filter(([k, v]) => k.startsWith('value') && typeof v === 'string')
    .map(([, v]) => v as string);
}

/** The `value[x]` of a Parameters parameter, whatever its type. */
function paramValues(p: Obj): unknown {
  return Object.entries(p)
    .filter(([k]) => k.startsWith('value'))
    .map(([, v]) => v);
}

interface PatchLabels {
  /** The patch may add, change or remove labels. */
  readonly touches: boolean;
  /** Labels the patch may write (values of the operations that reach the labels). */
  readonly written: Coding[];
}

/** A JSON Patch (array), a Binary holding one (batch entry), or a FHIRPath Patch (Parameters). */
function patchLabels(body: unknown): PatchLabels {
  let ops: unknown = body;
  if (isObj(body) && body.resourceType === 'Binary') {
    try {
      ops = JSON.parse(Buffer.from(String(body.data ?? ''), 'base64').toString('utf8'));
    } catch {
      throw new GatewayError('request-body-invalid', 'Binary patch is not JSON');
    }
  }
  const written: Coding[] = [];
  let touches = false;
  if (Array.isArray(ops)) {
    for (const op of ops) {
      if (!isObj(op)) throw new GatewayError('request-body-invalid', 'JSON Patch operation is not an object');
      if (op.op === 'test') continue; // changes nothing
      const hit = [op.path, op.from].some((p) => typeof p === 'string' && pointerReachesLabels(p));
      if (hit) {
        touches = true;
        valueCodings(op.value, written);
      }
    }
    return { touches, written };
  }
  if (isObj(ops) && ops.resourceType === 'Parameters') {
    const named = (q: Obj) => (q.name === 'path' || q.name === 'name') && stringValues(q).some(fhirPathReachesLabels);
    const walk = (list: unknown, depth: number): void => {
      if (!Array.isArray(list) || depth > 16) return;
      for (const p of list) {
        if (!isObj(p)) continue;
        if (named(p)) touches = true;
        if (!Array.isArray(p.part)) continue;
        const parts = p.part.filter(isObj);
        // An operation whose path or name reaches the labels: its value may be a label.
        if (parts.some(named)) for (const q of parts) if (q.name === 'value') valueCodings(paramValues(q), written);
        walk(p.part, depth + 1);
      }
    };
    walk(ops.parameter, 0);
    return { touches, written };
  }
  throw new GatewayError('request-body-invalid', 'patch body is neither JSON Patch nor FHIRPath Patch');
}

/**
 * The If-Match a write is sent with: always the stored version the guard judged, so the upstream
 * refuses the write if the resource changed since (never the client's tag: versions are often
 * sequential, and a client naming the next one could have its write land on a version nobody
 * checked, one that moved the resource out of its compartment or gained a label). A client's own
 * If-Match that names another version is an optimistic lock gone stale: refused here with 412
 * `precondition-failed`, nothing sent. `*` or the stored version itself passes. A caller who is not
 * shown versions (a de-identified caller, or a plan that removes meta.versionId) could only guess:
 * its If-Match is not compared (that would count the record's changes) and the stored one is sent.
 */
function ifMatchSent(stored: string, client: unknown, shown: boolean): string {
  const own = `W/"${stored}"`;
  if (!shown || typeof client !== 'string') return own;
  const tags = client.split(',').map((t) => t.trim());
  const hit = tags.some((tag) => tag === '*' || (tag.startsWith('W/') ? tag.slice(2) : tag) === `"${stored}"`);
  if (!hit) throw new GatewayError('precondition-failed', 'If-Match names another version than the stored one');
  return own;
}

export function createStoredGuard(deps: StoredGuardDeps): StoredGuard {
  const { config } = deps;
  const upstreamUrl = new URL(config.upstream.url);
  const upstreamBasePath = upstreamUrl.pathname.replace(/\/+$/, '');
  const filterResponse = deps.steps?.filterResponse ?? defaultFilterResponse;

  // The gateway's upstream dispatcher, else one of its own with those timeouts and the system CAs;
  // `reset` on every request so no keep-alive socket outlives the guard (it has no close hook).
  let ownAgent: Agent | undefined;
  const agent = (): Dispatcher => {
    if (deps.upstreamDispatcher !== undefined) return deps.upstreamDispatcher;
    ownAgent ??= new Agent({
      connect: { timeout: config.upstream.connectTimeoutMs },
      headersTimeout: config.upstream.headersTimeoutMs,
      bodyTimeout: config.upstream.bodyTimeoutMs,
    });
    return ownAgent;
  };

  /** Reads `Type/id` from the upstream with the gateway's credentials, limits and strict JSON. */
  async function readStored(ex: Exchange, type: string, id: string, signal: AbortSignal | undefined): Promise<{ status: number; value: unknown }> {
    const read: ClassifiedRequest = {
      method: 'GET',
      interaction: 'read',
      resourceType: type,
      id,
      versionId: undefined,
      operation: undefined,
      compartment: undefined,
      params: [],
      // type and id passed the classifier's grammars: nothing here needs encoding.
      upstreamPath: `/${type}/${id}`,
      upstreamQuery: '',
      body: undefined,
      entries: undefined,
    };
    const call = buildUpstreamCall(read, {}, { basePath: upstreamBasePath, requestId: ex.id, authorization: await deps.upstreamAuthorization() });
    const sentAt = process.hrtime.bigint();
    let res: Awaited<ReturnType<typeof undiciRequest>>;
    try {
      res = await undiciRequest(`${upstreamUrl.origin}${call.path}`, { method: 'GET', headers: call.headers, dispatcher: agent(), reset: true, signal });
    } catch (e) {
      if (isGatewayError(e)) throw e; // the signal's reason: the total deadline, or the client gone
      const code = String((e as { code?: unknown }).code ?? '');
      throw code.includes('TIMEOUT') ? new GatewayError('upstream-timeout', `stored read: ${code}`) : new GatewayError('upstream-unavailable', `stored read: ${code}`, { cause: e });
    } finally {
      ex.upstreamMs = (ex.upstreamMs ?? 0) + elapsedMs(sentAt);
    }
    try {
      const body = await readUpstreamBody(res.body, res.headers, config.limits);
      return { status: res.statusCode, value: body.kind === 'json' ? body.value : undefined };
    } catch (e) {
      res.body.destroy();
      throw e;
    }
  }

  /**
   * The current version of `Type/id`, if the caller could read it; otherwise the refusal a read
   * of it would get: `not-found` (missing, gone, or withheld), or `break-glass-available` (withheld
   * for a label, for a caller told about break-glass).
   */
  async function current(ex: Exchange, type: string, id: string, filter: ResponseContext, signal: AbortSignal | undefined): Promise<Obj> {
    const stored = await readStored(ex, type, id, signal);
    if (stored.status === 404 || stored.status === 410) throw new GatewayError('not-found', `stored read: upstream ${stored.status}`);
    if (stored.status >= 500) throw new GatewayError('upstream-error', `stored read: upstream ${stored.status}`);
    if (stored.status !== 200) throw new GatewayError('upstream-bad-response', `stored read: upstream ${stored.status}`);
    const value = stored.value;
    if (!isObj(value) || value.resourceType !== type || value.id !== id) throw new GatewayError('upstream-bad-response', 'stored read: not the resource asked for');
    // Its patients' consents are held before it is judged.
    await filter.consent?.load(patientsIn(value));
    let result: FilterResult;
    try {
      result = filterResponse(value, filter);
    } catch (e) {
      throw isGatewayError(e) ? e : new GatewayError('filter-failed', 'stored read: response filter threw', { cause: e });
    }
    if (result.kind === 'withheld') {
      const code: ErrorCode = withheldCode(result.reason, filter.withheldMode);
      throw new GatewayError(code, `stored ${type} withheld (${result.reason})`);
    }
    return value;
  }

  /** Judges one request (or batch entry); returns the stored version a write must match. */
  async function guardOne(ex: Exchange, t: ClassifiedRequest, input: StoredGuardInput, inTransaction = false): Promise<string | undefined> {
    const i = t.interaction;
    if ((i === 'read' && inTransaction) || (i === 'operation' && t.id !== undefined)) {
      // A transaction fails as a whole on a missing read but succeeds around a withheld one (whose
      // entry the filter then blanks); an instance operation ($everything) on a missing resource is
      // 404, on a withheld one an emptied 200: read first, so both answer as a read would.
      const type = t.resourceType;
      if (type === undefined || t.id === undefined || input.plan.types.get(type) === undefined) throw new GatewayError('type-denied', 'stored guard: read without a granted type');
      await current(ex, type, t.id, input.filter, input.signal);
      return undefined;
    }
    if (i === 'history-type') {
      // Type history holds past versions of every resource of the type, each of which would have to
      // be judged by its own current version (a now-labelled or now-moved resource's older, clean
      // version must not show). Where anything of the type can be withheld, it is refused outright.
      const plan = t.resourceType === undefined ? undefined : input.plan.types.get(t.resourceType);
      if (
        plan === undefined ||
        plan.withhold.labels.length > 0 ||
        input.filter.patientCompartment !== undefined ||
        input.filter.relatedPatients !== undefined ||
        (input.filter.consent !== undefined && isPatientData(t.resourceType))
      ) {
        throw new GatewayError('interaction-denied', `type history of ${t.resourceType ?? '(none)'} where resources can be withheld`);
      }
      return undefined;
    }
    if (i !== 'create' && i !== 'update' && i !== 'patch' && i !== 'delete' && i !== 'vread' && i !== 'history-instance') return undefined;
    const type = t.resourceType;
    const typePlan: ResourcePlan | undefined = type === undefined ? undefined : input.plan.types.get(type);
    // decide() allowed the request, so the type has a plan; defensive all the same.
    if (type === undefined || typePlan === undefined) throw new GatewayError('type-denied', `stored guard: ${i} without a granted type`);
    const mayRelabel = input.breakGlass || typePlan.interactions.has('relabel');

    // Checks on the request alone come first: their answer cannot depend on what is stored.
    if (i === 'create' || i === 'update') {
      const withheld = typePlan.withhold.match(bodyLabels(t.body).codings);
      if (withheld !== undefined) throw new GatewayError('label-denied', `${i} of ${type} carries withheld label ${withheld}`);
      if (i === 'create') return undefined;
    }
    if (i === 'patch') {
      const p = patchLabels(t.body);
      if (p.touches && !mayRelabel) throw new GatewayError('label-change-denied', `patch of ${type} reaches meta.security`);
      const withheld = typePlan.withhold.match(p.written);
      if (withheld !== undefined) throw new GatewayError('label-denied', `patch of ${type} may write withheld label ${withheld}`);
    }
    if (t.id === undefined) throw new GatewayError('interaction-denied', `conditional ${i} of ${type}: what it reaches cannot be read first`);

    const stored = await current(ex, type, t.id, input.filter, input.signal);
    if (i === 'vread') {
      if (t.versionId !== usableVersion(stored) && !typePlan.interactions.has('history')) {
        throw new GatewayError('interaction-denied', `vread of a past version of ${type} needs history`);
      }
      return undefined;
    }
    if (i === 'history-instance') return undefined;

    // A write under a patient compartment must replace a resource wholly inside it (readable is
    // not enough: an Observation about another patient that names this one as performer).
    const patient = input.filter.patientCompartment;
    if (patient !== undefined) {
      const why = compartmentViolation(stored, type, patient);
      if (why !== undefined) throw new GatewayError('compartment-denied', `stored ${why}`);
    }
    if (i === 'update' && !mayRelabel) {
      const before = labelKeys(((isObj(stored.meta) && Array.isArray(stored.meta.security) ? stored.meta.security : []) as unknown[]).filter(isObj));
      if (!sameSet(before, bodyLabels(t.body).keys)) throw new GatewayError('label-change-denied', `update of ${type} changes meta.security`);
    }
    const version = usableVersion(stored);
    if (version === undefined) throw new GatewayError('upstream-bad-response', `stored ${type} has no usable versionId`);
    return version;
  }

  /**
   * A conditional create's criteria as sent: with `_security:not` for each withheld label when the
   * caller is not told of withholding (see the module comment); other requests unchanged.
   */
  function criteriaSent(t: ClassifiedRequest, input: StoredGuardInput): ClassifiedRequest {
    if (t.interaction !== 'create' || t.params.length === 0) return t;
    if (input.filter.patientCompartment !== undefined) throw new GatewayError('compartment-denied', 'conditional create under a patient compartment');
    // Its criteria could match an unrelated patient's record, and 201 vs a withheld match would tell.
    if (input.filter.relatedPatients !== undefined) throw new GatewayError('interaction-denied', 'conditional create where a care relationship is required');
    // Likewise a match a patient's consent withholds: patient data is not created conditionally where consent applies.
    if (input.filter.consent !== undefined && isPatientData(t.resourceType)) throw new GatewayError('interaction-denied', "conditional create where patients' consents apply");
    if (input.filter.withheldMode === 'announce') return t;
    const exclusions = (t.resourceType === undefined ? undefined : input.plan.types.get(t.resourceType))?.withhold.upstream ?? [];
    const extra = exclusions.map((l) => ['_security:not', l] as const);
    return extra.length === 0 ? t : rebuild(t, { params: [...t.params, ...extra] });
  }

  return async function guardStored(input: StoredGuardInput): Promise<GuardedRequest> {
    const { ex } = input;
    let req = input.req;
    const nested = req.interaction === 'batch' || req.interaction === 'transaction';
    const targets = nested ? (req.entries ?? []) : [req];
    const versions: Array<string | undefined> = [];
    for (const t of targets) versions.push(await guardOne(ex, t, input, req.interaction === 'transaction'));
    const sent = targets.map((t) => criteriaSent(t, input));
    if (sent.some((t, k) => t !== targets[k])) req = nested ? { ...req, entries: sent } : sent[0]!;
    if (versions.every((v) => v === undefined)) return { req, ifMatch: undefined };
    const shown = (t: ClassifiedRequest) => input.filter.deidentify === undefined && versionShown(t.resourceType === undefined ? undefined : input.plan.types.get(t.resourceType), input.filter);
    if (!nested) return { req, ifMatch: ifMatchSent(versions[0]!, input.clientIfMatch, shown(targets[0]!)) };
    const body = req.body as { entry?: Array<{ request?: Record<string, unknown> }> };
    const entry = (body.entry ?? []).map((e, k) =>
      versions[k] === undefined ? e : { ...e, request: { ...e.request, ifMatch: ifMatchSent(versions[k]!, e.request?.ifMatch, shown(targets[k]!)) } },
    );
    return { req: { ...req, body: { ...body, entry } }, ifMatch: undefined };
  };
}

/** Patient data: a Patient, or a type with patient compartment references (what consents reach). */
function isPatientData(type: string | undefined): boolean {
  return type === 'Patient' || (type !== undefined && patientReferencePaths(type).length > 0);
}
