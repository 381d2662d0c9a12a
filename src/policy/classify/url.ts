/**
 * URL canonicalization for classify(): split a request target into decoded path segments and
 * decoded query parameters, rejecting every spelling that two parsers could read differently
 * (BYPASSES 7, 12, 14). Pure. Errors never echo request data (ids and search values are PHI).
 */
import { GatewayError } from '../../errors.js';

export type Param = readonly [string, string];

function unclassified(detail: string): GatewayError {
  return new GatewayError('request-unclassified', detail);
}

/** C0 controls or DEL. Checked on decoded text: `%00` must not reach the upstream either. */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * Characters a request target may carry unencoded: printable ASCII except space and `#`.
 * Non-ASCII, controls and whitespace mean a client or intermediary that does not encode, and
 * each parser downstream would guess differently.
 */
const RAW_TARGET = /^[\u0021-\u0022\u0024-\u007e]*$/;

/** Decode `%XX` exactly once; malformed escapes and invalid UTF-8 are refused, never passed. */
function percentDecode(s: string, what: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    throw unclassified(`${what}: malformed percent-encoding`);
  }
}

export interface SplitTarget {
  /** Raw path after the one leading `/` was removed ('' for the root). */
  readonly path: string;
  /** Raw query without `?` ('' when absent). */
  readonly query: string;
}

/**
 * Splits `path?query`. `leadingSlash`: 'required' for the HTTP request target (relative to the
 * FHIR base, e.g. `/Patient/1`; `''` or `?q` also mean the root), 'optional' for Bundle entry urls
 * (FHIR writes them `Patient/1`). Absolute URLs are refused: the gateway cannot know a foreign
 * base is its own, and a request must not be steered elsewhere.
 */
export function splitTarget(url: string, leadingSlash: 'required' | 'optional'): SplitTarget {
  if (typeof url !== 'string') throw unclassified('url is not a string');
  if (!RAW_TARGET.test(url)) throw unclassified('url contains a fragment, whitespace, control or non-ASCII character');
  const q = url.indexOf('?');
  let path = q === -1 ? url : url.slice(0, q);
  const query = q === -1 ? '' : url.slice(q + 1);
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(path)) throw unclassified('absolute URL');
  if (path.startsWith('/')) path = path.slice(1);
  else if (leadingSlash === 'required' && path !== '') throw unclassified('path does not start with /');
  return { path, query };
}

/**
 * Splits a raw path into segments, each decoded exactly once. Refuses what servers normalize
 * differently: empty segments (`//`, trailing `/`), dot segments (also `%2E%2E`), matrix
 * parameters (`;`), backslashes, encoded slashes, decoded `%` (double encoding) and controls.
 */
export function pathSegments(path: string): string[] {
  if (path === '') return [];
  const raw = path.split('/');
  const out: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const seg = raw[i]!;
    if (seg === '') throw segmentError(i, 'empty');
    if (seg.includes(';')) throw segmentError(i, 'matrix parameter');
    if (seg.includes('\\')) throw segmentError(i, 'backslash');
    // Without an escape a segment is its own decoding: no delimiter can appear (split on `/`, `;` and backslash refused).
    const escaped = seg.includes('%');
    const d = escaped ? percentDecode(seg, `path segment ${i + 1}`) : seg;
    if (d === '.' || d === '..') throw segmentError(i, 'dot segment');
    if (escaped && /[/\\;%]/.test(d)) throw segmentError(i, 'encoded delimiter');
    if (hasControl(d)) throw segmentError(i, 'control character');
    out.push(d);
  }
  return out;
}

/** The message names the segment by position only (its text may be an id, which is PHI). */
function segmentError(i: number, why: string): GatewayError {
  return unclassified(`path segment ${i + 1}: ${why}`);
}

/** Parameter names that no FHIR search or operation uses and that poison object-keyed code. */
const FORBIDDEN_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Parses application/x-www-form-urlencoded text (a URL query or a form body): `+` is a space,
 * `%XX` decoded once, duplicates kept in order, empty pieces (`a=1&&b=2`) skipped. Refuses
 * malformed escapes, invalid UTF-8, empty names, controls after decoding, and `_method`
 * (frameworks honour it as a method override; the gateway never does, silently or otherwise).
 */
export function parseForm(text: string, what: string): Param[] {
  if (!RAW_TARGET.test(text)) throw unclassified(`${what}: whitespace, control or non-ASCII character`);
  const out: Param[] = [];
  if (text === '') return out;
  for (const piece of text.split('&')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const rawName = eq === -1 ? piece : piece.slice(0, eq);
    const rawValue = eq === -1 ? '' : piece.slice(eq + 1);
    const name = percentDecode(rawName.replaceAll('+', ' '), what);
    const value = percentDecode(rawValue.replaceAll('+', ' '), what);
    if (name === '') throw unclassified(`${what}: parameter without a name`);
    if (hasControl(name) || hasControl(value)) throw unclassified(`${what}: control character`);
    if (FORBIDDEN_NAMES.has(name)) throw unclassified(`${what}: forbidden parameter name`);
    if (name === '_method') throw unclassified(`${what}: _method override`);
    out.push([name, value]);
  }
  return out;
}

/** Formatting-only parameters the gateway drops: it forces JSON and pretty-printing is cosmetic. */
const DROPPED = new Set(['_format', '_pretty']);

/** Drops `_format` / `_pretty` (any case: some servers fold case, and they only shape output). */
export function dropFormatting(params: readonly Param[]): Param[] {
  return params.filter(([name]) => !DROPPED.has(name.toLowerCase()));
}

/** The canonical query string: every name and value through encodeURIComponent, `&`-joined. */
export function encodeParams(params: readonly Param[]): string {
  return params.map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`).join('&');
}
