/**
 * The request side of de-identification (pure). A caller whose data set de-identifies
 * (`ResourcePlan.deidentify`) is given every id and reference as a pseudonym (src/redact/pseudonym.ts),
 * so it must name resources by those pseudonyms, and it may filter, sort and shape answers only on
 * what it receives unchanged. Each pseudonym is resolved here and the request that goes upstream
 * carries the real id; anything else is refused before the upstream is asked, so the answer never
 * depends on whether a real id exists.
 *
 * - Ids (read, vread, history, instance operations, writes, the compartment of a compartment search)
 *   must be pseudonyms of their type: else `pseudonym-required`.
 * - `_id` and granted reference parameters whose paths the profile pseudonymizes: every value must
 *   resolve (`Type/<p>`, `<p>`, `<public base>/Type/<p>`); modifier `:Type` only.
 * - vread and history are refused: versions are not released.
 * - Any other parameter, and every `_sort` key: granted by the plan and left unchanged by the
 *   profile (`keep`). Chains and `_has` are refused even when granted verbatim: they search
 *   other resources by values the profile may hide.
 * - `_elements`: only elements the profile keeps or pseudonymizes.
 */
import type { ErrorCode } from '../errors.js';
import { isResourceType, searchParam } from '../fhir/tables.js';
import { type Fate, isTerminologyUri, pathFate, pathType } from '../redact/deidentify.js';
import { resolvePseudonym } from '../redact/pseudonym.js';
import type { Param } from './classify/url.js';
import type { DeidProfile } from './model.js';
import { isPathSafeId, rebuild } from './narrow.js';
import type { AccessPlan, ResourcePlan } from './plan.js';
import type { ClassifiedRequest } from './request.js';

export interface PseudonymContext {
  /** The current key first, then previous ones; empty without a key (then nothing resolves). */
  readonly keys: readonly Uint8Array[];
  /** The gateway's public FHIR base, no trailing slash: absolute references under it are accepted. */
  readonly publicBase: string;
}

export type DeidOutcome =
  | { readonly ok: true; readonly request: ClassifiedRequest }
  | { readonly ok: false; readonly code: ErrorCode; readonly why: string };

/** The de-identification profile of a data set (set on every type plan of it), or undefined. */
export function deidentifyOf(plan: AccessPlan): DeidProfile | undefined {
  for (const t of plan.types.values()) if (t.deidentify !== undefined) return t.deidentify;
  return undefined;
}

/** Parameters passed through as they are: they shape the answer, not filter it (judged in decide). */
const SHAPING: ReadonlySet<string> = new Set(['_count', '_include', '_revinclude', '_summary', '_total']);

class Refusal {
  constructor(
    readonly code: ErrorCode,
    readonly why: string,
  ) {}
}

const CODED: ReadonlySet<string> = new Set(['CodeableConcept', 'Coding']);

const refuse = (why: string) => new Refusal('search-param-denied', why);
const unresolved = (why: string) => new Refusal('pseudonym-required', why);

/**
 * `req` (a request on a type whose plan de-identifies, already allowed so far) with pseudonyms
 * replaced by real ids, or why it is refused. `types` are the data set's type plans.
 */
export function translateDeidRequest(
  req: ClassifiedRequest,
  typePlan: ResourcePlan,
  types: ReadonlyMap<string, ResourcePlan>,
  ctx: PseudonymContext | undefined,
): DeidOutcome {
  const profile = typePlan.deidentify;
  if (profile === undefined) return { ok: true, request: req };
  const keys = ctx?.keys ?? [];
  const resolve = (type: string, value: string): string | undefined => {
    const id = resolvePseudonym(keys, type, value);
    // A real id that could not be a path segment is never forwarded (fail closed).
    return id !== undefined && isPathSafeId(id) ? id : undefined;
  };
  const type = typePlan.resourceType;
  // Versions are not released (meta.versionId is removed): a vread that answers only for the
  // current version, or a history, would tell how often the record changed (found by a red team).
  const i = req.interaction;
  if (i === 'vread' || i === 'history-instance' || i === 'history-type') {
    return { ok: false, code: 'interaction-denied', why: `${i}: versions are not released to a de-identified caller` };
  }
  try {
    let { upstreamPath, body } = req;
    let id = req.id;
    let compartment = req.compartment;
    if (req.id !== undefined) {
      const real = resolve(type, req.id);
      if (real === undefined) throw unresolved(`id is not a ${type} pseudonym`);
      upstreamPath = swapId(upstreamPath, type, req.id, real);
      id = real;
      // classify made the body's id equal the path's: it moves with it.
      if (req.interaction === 'update' && isObj(body) && body.id === req.id) body = { ...body, id: real };
    }
    if (compartment !== undefined) {
      const real = resolve(compartment.type, compartment.id);
      if (real === undefined) throw unresolved(`compartment is not a ${compartment.type} pseudonym`);
      upstreamPath = swapId(upstreamPath, compartment.type, compartment.id, real);
      compartment = { type: compartment.type, id: real };
    }
    const judge: Judge = { req, typePlan, types, resolve, publicBase: ctx?.publicBase, fate: (path) => pathFate(profile, type, path) };
    const params = req.params.map((p) => judgeParam(p, judge));
    return { ok: true, request: rebuild(req, { params, upstreamPath, body, ...(id !== undefined && { id }), ...(compartment && { compartment }) }) };
  } catch (e) {
    if (e instanceof Refusal) return { ok: false, code: e.code, why: e.why };
    throw e;
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `path` with its leading `/Type/<pseudonym>` replaced by `/Type/<real>`. */
function swapId(path: string, type: string, pseudonym: string, real: string): string {
  const prefix = `/${type}/${pseudonym}`;
  if (path !== prefix && !path.startsWith(`${prefix}/`)) throw new Refusal('request-unclassified', 'upstream path does not start with the id');
  return `/${type}/${real}${path.slice(prefix.length)}`;
}

/** What judging one parameter needs. */
interface Judge {
  readonly req: ClassifiedRequest;
  readonly typePlan: ResourcePlan;
  readonly types: ReadonlyMap<string, ResourcePlan>;
  /** The real id behind a pseudonym of `type`, or undefined. */
  readonly resolve: (type: string, value: string) => string | undefined;
  readonly publicBase: string | undefined;
  readonly fate: (path: string) => Fate;
}

/** The parameter as forwarded (pseudonyms resolved), or throws a Refusal. */
function judgeParam([name, value]: Param, j: Judge): Param {
  const { req, typePlan, fate, resolve } = j;
  const type = typePlan.resourceType;
  const i = req.interaction;
  // Parameters of history and $everything (decide allows them there): the time filters are
  // searches on meta.lastUpdated; $everything's start/end filter on clinical dates of every type.
  const history = i === 'history-instance' || i === 'history-type';
  const everything = i === 'operation' && req.operation === '$everything';
  if (history || everything) {
    if (name === '_count' || (everything && name === '_type')) return [name, value];
    if (name === '_since' || (history && name === '_at')) {
      if (fate('meta.lastUpdated') !== 'keep') throw refuse(`${name}: meta.lastUpdated is not released unchanged`);
      return [name, value];
    }
    if (everything && (name === 'start' || name === 'end')) throw refuse(`${name} on $everything`);
  }
  if (name.includes('.') || name === '_has' || name.startsWith('_has:')) throw refuse(`${name}: chained search`);
  const colon = name.indexOf(':');
  const base = colon < 0 ? name : name.slice(0, colon);
  const modifier = colon < 0 ? undefined : name.slice(colon + 1);

  if (base === '_id') {
    if (modifier !== undefined || !typePlan.searchParams.has('_id')) throw refuse(name);
    return [name, value.split(',').map((v) => resolve(type, v) ?? fail(unresolved(`_id value is not a ${type} pseudonym`))).join(',')];
  }
  if (base === '_sort') {
    for (const raw of value.split(',')) {
      const key = raw.trim().replace(/^-/, '');
      // Ordering by a pseudonymized value orders by the real one behind it.
      // And by a code, by whichever coding the upstream picks: perhaps one the answer leaves out.
      if (key === '' || !keptParam(key, j) || coded(key, j)) throw refuse(`_sort=${key}`);
    }
    return [name, value];
  }
  if (base === '_elements') {
    for (const raw of value.split(',')) {
      const el = raw.trim().replace(new RegExp(`^${type}\\.`), '');
      const f = el === '' || el.includes('.') ? 'remove' : fate(el);
      if (f !== 'keep' && f !== 'pseudonym') throw refuse(`_elements=${el}`);
    }
    return [name, value];
  }
  if (SHAPING.has(base)) return [name, value];

  const info = searchParam(type, base);
  if (info?.type === 'reference') return [name, referenceParam(name, base, modifier, value, j)];
  if (modifier === 'text') throw refuse(name);
  if (!keptParam(base, j)) throw refuse(name);
  if (coded(base, j)) {
    // Codings under a system that is not a terminology are removed from the answer, so a code
    // alone could match one of them: each value must name its (terminology) system.
    if (modifier !== undefined) throw refuse(name);
    for (const alt of value.split(',')) {
      const bar = alt.indexOf('|');
      if (bar <= 0 || !isTerminologyUri(alt.slice(0, bar))) throw refuse(`${name}=${alt}: a code needs its terminology system (system|code)`);
    }
  }
  return [name, value];
}

/** A token parameter on codings (CodeableConcept or Coding paths). */
function coded(code: string, j: Judge): boolean {
  const type = j.typePlan.resourceType;
  const info = searchParam(type, code);
  return info?.type === 'token' && info.paths.some((p) => CODED.has(pathType(type, p) ?? ''));
}

function fail(r: Refusal): never {
  throw r;
}

/** Granted, a plain element search, and every element it reads released unchanged. */
function keptParam(code: string, j: Judge): boolean {
  if (!j.typePlan.searchParams.has(code)) return false;
  const info = searchParam(j.typePlan.resourceType, code);
  if (info === undefined || info.paths.length === 0) return false;
  return info.paths.every((p) => j.fate(p) === 'keep');
}

/** The translated value of a reference parameter, or a refusal. */
function referenceParam(name: string, base: string, modifier: string | undefined, value: string, j: Judge): string {
  const { typePlan, fate, resolve } = j;
  const info = searchParam(typePlan.resourceType, base)!;
  const targets = info.targets ?? [];
  // Granted too: a pseudonym the caller got elsewhere (an Encounter's participant) must not find
  // resources by an element the rules remove (a Patient's generalPractitioner).
  if (!typePlan.searchParams.has(base) || info.paths.length === 0 || !info.paths.every((p) => fate(p) === 'pseudonym')) throw refuse(name);
  // `:missing` is refused too: a reference the profile removes (to a contained resource the caller
  // may not see, a `urn:` or conditional one) is present upstream, so it would tell them apart.
  let typed: string | undefined;
  if (modifier !== undefined) {
    // `:identifier`, `:above`, `:below` search on what is not a pseudonym: refused like any other.
    if (!isResourceType(modifier) || !targets.includes(modifier)) throw refuse(name);
    typed = modifier;
  }
  return value
    .split(',')
    .map((alt) => {
      const ref = parseRef(alt, j.publicBase);
      if (ref === undefined) throw unresolved(`${name}: not a pseudonym reference`);
      if (ref.type !== undefined) {
        const real = (typed === undefined || ref.type === typed) && targets.includes(ref.type) ? resolve(ref.type, ref.id) : undefined;
        if (real === undefined) throw unresolved(`${name}: not a ${ref.type} pseudonym`);
        return `${ref.type}/${real}`;
      }
      if (typed !== undefined) return resolve(typed, ref.id) ?? fail(unresolved(`${name}: not a ${typed} pseudonym`));
      // A bare pseudonym: the target types the data set grants; the pseudonym itself names its type.
      for (const t of targets) {
        if (!j.types.has(t)) continue;
        const real = resolve(t, ref.id);
        if (real !== undefined) return `${t}/${real}`;
      }
      throw unresolved(`${name}: not a pseudonym of a granted target type`);
    })
    .join(',');
}

/** `<p>`, `Type/<p>` or `<publicBase>/Type/<p>`; undefined for any other shape. */
function parseRef(alt: string, publicBase: string | undefined): { type?: string; id: string } | undefined {
  let rest = alt;
  if (publicBase !== undefined && rest.startsWith(`${publicBase}/`)) rest = rest.slice(publicBase.length + 1);
  const parts = rest.split('/');
  if (parts.length === 1 && rest === alt) return { id: rest };
  if (parts.length === 2 && isResourceType(parts[0]!)) return { type: parts[0]!, id: parts[1]! };
  return undefined;
}
