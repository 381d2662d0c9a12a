/**
 * The canonical text of an audit record of the one shape `toAuditRecord` (src/proxy/record.ts)
 * builds, written in a single pass: the same `{before, after}` as `canonicalSplit(record, 'chain')`,
 * byte for byte, without the generic route's shape walk, second native serialization and prefix
 * check. The hash chain runs this for every request; `canonicalSplit` stays the definition (the
 * property tests hold this writer to it) and the route for every other record.
 *
 * "That shape" is checked, not assumed: a plain object whose own enumerable keys are exactly
 * toAuditRecord's, in its (sorted) order, with plain nested objects of exactly its keys, strings,
 * finite-or-not numbers and arrays of strings where it puts them, and `undefined` only where it
 * may leave a field unset. Anything else (another producer's key order, a boxed string, a toJSON,
 * a sparse array, a class instance) answers `undefined` and the caller takes the generic route,
 * which throws where a record cannot be serialized (fail closed). The two members of free-form
 * content, `breakGlass` and `details`, are written by the generic member writer
 * (`canonicalMember`), exactly as the generic route writes them. Like canonical.ts, this assumes
 * plain data: each value is read once, and a getter or toJSON that changes the record while it
 * is written is outside what either route can make canonical.
 */
import { canonicalMember } from './canonical.js';
import type { AuditRecord } from './record.js';

export interface RecordSplit {
  /** Canonical text up to and including `"chain":`. */
  readonly before: string;
  /** Canonical text after the chain member's value, through the closing `}`. */
  readonly after: string;
}

// toAuditRecord's keys, in the order it lists them (sorted, UTF-16 code units).
const TOP = [
  'actor',
  'breakGlass',
  'client',
  'consent',
  'decision',
  'details',
  'disclosed',
  'durations',
  'grant',
  'id',
  'kind',
  'policyVersion',
  'purpose',
  'relationship',
  'request',
  'role',
  'rule',
  'status',
  'time',
  'upstreamStatus',
] as const;
const ACTOR = ['clientId', 'iss', 'jti', 'roles', 'sub'] as const;
const CLIENT = ['address', 'userAgent'] as const;
const DISCLOSED = ['elements', 'elementsRemoved', 'patients', 'resources', 'resourcesWithheld', 'states'] as const;
const DURATIONS = ['totalMs', 'upstreamMs'] as const;
const REQUEST = ['interaction', 'method', 'path', 'resourceType'] as const;

/**
 * Matches any character that keeps a string from being written as `"` + itself + `"`: all but
 * printable ASCII other than `"` and `\`. (JSON.stringify escapes quotes, backslashes, control
 * characters and lone surrogates; such strings, and any non-ASCII, go to JSON.stringify itself,
 * so the rule only has to be conservative, not complete.)
 */
const NEEDS_WORK = /[^\x20\x21\x23-\x5b\x5d-\x7e]/;

// State of the split in progress: false = not the known shape. Only user code inside a generic
// member (a toJSON) can re-enter; `generic` restores it.
let ok = true;

function quote(s: string): string {
  return NEEDS_WORK.test(s) ? JSON.stringify(s) : `"${s}"`;
}

function str(v: unknown): string {
  if (typeof v === 'string') return quote(v);
  ok = false;
  return '';
}

/** `,"key":value` for an optional string member, '' when it is undefined (omitted). */
function optStr(member: string, v: unknown): string {
  return v === undefined ? '' : member + str(v);
}

function num(v: unknown): string {
  // JSON.stringify(n) for a number is ToString(n) when finite (-0 -> "0"), else null.
  if (typeof v === 'number') return Number.isFinite(v) ? `${v}` : 'null';
  ok = false;
  return '';
}

function optNum(member: string, v: unknown): string {
  return v === undefined ? '' : member + num(v);
}

/** An array of strings, holes and anything else refused (the generic route decides those). */
function strArray(v: unknown): string {
  if (!Array.isArray(v) || typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    ok = false;
    return '';
  }
  const arr = v as readonly unknown[];
  const n = arr.length;
  if (n === 0) return '[]';
  let plain = true;
  for (let i = 0; i < n; i++) {
    const s = arr[i];
    if (typeof s !== 'string') {
      ok = false;
      return '';
    }
    if (plain && NEEDS_WORK.test(s)) plain = false;
  }
  // The common case: one native join instead of a concatenation per element.
  if (plain) return `["${arr.join('","')}"]`;
  let out = '[';
  for (let i = 0; i < n; i++) out += (i > 0 ? ',' : '') + quote(arr[i] as string);
  return `${out}]`;
}

/** A plain object (Object.prototype, no toJSON): what JSON.stringify writes member by member. */
function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype && typeof (v as { toJSON?: unknown }).toJSON !== 'function';
}

/** True when `v` is a plain object whose own enumerable keys are exactly `keys` in order. */
function exactly(v: unknown, keys: readonly string[]): v is Record<string, unknown> {
  if (!isPlainObject(v)) return false;
  const own = Object.keys(v);
  if (own.length !== keys.length) return false;
  for (let i = 0; i < own.length; i++) if (own[i] !== keys[i]) return false;
  return true;
}

/**
 * A map member of `disclosed` (`elements`: type -> names; `states`: patient id -> state): a plain
 * object, keys in canonical order, each value written by `value` (which clears `ok` on a wrong type).
 */
function sortedMap(v: unknown, value: (x: unknown) => string): string {
  if (!isPlainObject(v)) {
    ok = false;
    return '';
  }
  const keys = Object.keys(v);
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    // Integer-like keys (`10`, `9`) enumerate first whatever their insertion order: not canonical, generic route.
    if (i > 0 && !((keys[i - 1] as string) < k)) {
      ok = false;
      return '';
    }
    out += `${i > 0 ? ',' : ''}${quote(k)}:${value(v[k])}`;
  }
  return `${out}}`;
}

const elements = (v: unknown): string => sortedMap(v, strArray);
const states = (v: unknown): string => sortedMap(v, str);

/** A free-form member (`breakGlass`, `details`) as the generic route writes it: `,"key":text` or ''. */
function generic(member: string, key: string, v: unknown): string {
  if (v === undefined || !ok) return '';
  const text = canonicalMember(v, key);
  // A toJSON in there may have chained another record (re-entering this module): we were ok.
  ok = true;
  return text === undefined ? '' : member + text;
}

const RELATED = ['patient', 'resource', 'source'] as const;

/**
 * `relationship` (RelationshipEvidence) written in one pass when it has exactly its shape (the
 * optional `caller` and `narrowed` omitted when absent); anything else through the generic route.
 */
function relationshipMember(v: unknown): string {
  if (v === undefined || !ok) return '';
  if (!isPlainObject(v)) return generic(',"relationship":', 'relationship', v);
  const keys = Object.keys(v);
  // caller? narrowed? related required rule unrelated, in that order.
  let j = 0;
  if (keys[j] === 'caller') j++;
  if (keys[j] === 'narrowed') j++;
  const related = v.related;
  if (keys.length !== j + 4 || keys[j] !== 'related' || keys[j + 1] !== 'required' || keys[j + 2] !== 'rule' || keys[j + 3] !== 'unrelated' || typeof v.required !== 'boolean' || !Array.isArray(related) || typeof (related as { toJSON?: unknown }).toJSON === 'function') {
    return generic(',"relationship":', 'relationship', v);
  }
  let items = '';
  for (let i = 0; i < related.length; i++) {
    const r = related[i];
    if (!exactly(r, RELATED) || typeof r.patient !== 'string' || typeof r.resource !== 'string' || typeof r.source !== 'string') {
      return generic(',"relationship":', 'relationship', v);
    }
    items += `${i > 0 ? ',' : ''}{"patient":${quote(r.patient)},"resource":${quote(r.resource)},"source":${quote(r.source)}}`;
  }
  return (
    `,"relationship":{${v.caller === undefined ? '' : `"caller":${str(v.caller)},`}${v.narrowed === undefined ? '' : `"narrowed":${num(v.narrowed)},`}` +
    `"related":[${items}],"required":${v.required},"rule":${str(v.rule)},"unrelated":${strArray(v.unrelated)}}`
  );
}

/**
 * canonicalSplit(record, 'chain') for a record of toAuditRecord's shape; undefined for any
 * other record. Throws only where the generic route throws too (a `details` or `breakGlass`
 * that cannot be serialized).
 */
export function splitKnownRecord(record: AuditRecord): RecordSplit | undefined {
  const r = record as unknown as Record<string, unknown>;
  if (!exactly(r, TOP)) return undefined;
  const { actor, client, disclosed: d, durations: t, request: q } = r;
  if (!exactly(actor, ACTOR) || !exactly(client, CLIENT) || !exactly(d, DISCLOSED) || !exactly(t, DURATIONS) || !exactly(q, REQUEST)) return undefined;
  ok = true;

  // actor: roles is always there, so it carries the commas of the optional members around it.
  const clientId = actor.clientId === undefined ? '' : `"clientId":${str(actor.clientId)},`;
  const iss = actor.iss === undefined ? '' : `"iss":${str(actor.iss)},`;
  const jti = actor.jti === undefined ? '' : `"jti":${str(actor.jti)},`;
  const before = `{"actor":{${clientId}${iss}${jti}"roles":${strArray(actor.roles)}${optStr(',"sub":', actor.sub)}}${generic(',"breakGlass":', 'breakGlass', r.breakGlass)},"chain":`;

  const el = d.elements === undefined ? '' : `"elements":${elements(d.elements)},`;
  const interaction = q.interaction === undefined ? '' : `"interaction":${str(q.interaction)},`;
  const after =
    `,"client":{"address":${str(client.address)}${optStr(',"userAgent":', client.userAgent)}}${generic(',"consent":', 'consent', r.consent)}` +
    `,"decision":${str(r.decision)}${generic(',"details":', 'details', r.details)}` +
    `,"disclosed":{${el}"elementsRemoved":${num(d.elementsRemoved)},"patients":${strArray(d.patients)},"resources":${strArray(d.resources)},"resourcesWithheld":${num(d.resourcesWithheld)}${d.states === undefined ? '' : `,"states":${states(d.states)}`}}` +
    `,"durations":{"totalMs":${num(t.totalMs)}${optNum(',"upstreamMs":', t.upstreamMs)}}${generic(',"grant":', 'grant', r.grant)}` +
    `,"id":${str(r.id)},"kind":${str(r.kind)},"policyVersion":${str(r.policyVersion)}${optStr(',"purpose":', r.purpose)}${relationshipMember(r.relationship)}` +
    `,"request":{${interaction}"method":${str(q.method)},"path":${str(q.path)}${optStr(',"resourceType":', q.resourceType)}}` +
    `${optStr(',"role":', r.role)},"rule":${str(r.rule)},"status":${num(r.status)},"time":${str(r.time)}${optNum(',"upstreamStatus":', r.upstreamStatus)}}`;
  return ok ? { before, after } : undefined;
}

/** JSON.stringify(s) for a string (a chain's `prev` hash, hex: nearly always the short route). */
export const quoteString: (s: string) => string = quote;
