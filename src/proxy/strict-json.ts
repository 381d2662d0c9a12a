/**
 * JSON parsing for bytes the gateway will filter. JSON.parse keeps a `__proto__` key as an own
 * property, which becomes a prototype write the moment any code copies it with `obj[key] = value`;
 * such bodies are refused. The check is a byte search, so the common case costs nothing extra.
 * Duplicate keys are harmless as long as the gateway releases its own serialization of the parsed
 * value; the upstream's bytes themselves are released only when `readsAsParsed` proves that no
 * parser can read them differently (no duplicate key, valid UTF-8).
 */
import { isUtf8 } from 'node:buffer';
import { type ErrorCode, GatewayError } from '../errors.js';
import { utf8Text } from '../utf8.js';

function hasProtoKey(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some(hasProtoKey);
  if (Object.hasOwn(value, '__proto__')) return true;
  for (const k in value) if (hasProtoKey((value as Record<string, unknown>)[k])) return true;
  return false;
}

/** `\u` escapes of the characters of `__proto__`: `_` 5f, `o` 6f, `p` 70, `r` 72, `t` 74 (any case). */
const PROTO_ESCAPE = /\\u00(?:5[fF]|6[fF]|7[024])/;

export function parseStrictJson(bytes: Buffer | string, code: ErrorCode): unknown {
  const text = typeof bytes === 'string' ? bytes : utf8Text(bytes);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new GatewayError(code, 'malformed JSON', { cause: e });
  }
  // A key may also be spelled with \u escapes of its letters (_ o p r t); then the walk runs too.
  // `includes('\\u00')` first: a substring search is ~20x cheaper than the regex on a 400 KB body.
  if ((text.includes('__proto__') || (text.includes('\\u00') && PROTO_ESCAPE.test(text))) && hasProtoKey(value)) throw new GatewayError(code, '__proto__ key in JSON');
  return value;
}

/** Deeper than any FHIR resource nests: bodies past it are never released as received. */
const MAX_AS_IS_DEPTH = 64;

/**
 * String tokens in valid JSON encoded as valid UTF-8: its unescaped `"` bytes, two per string.
 * Counted on the bytes (a typed-array loop is about twice as fast as searching the text): in valid
 * UTF-8 the bytes 0x22 and 0x5C occur only as the characters `"` and `\`.
 */
function quotesIn(bytes: Buffer): number {
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== 0x22) continue;
    // Inside a string a quote is escaped when an odd run of backslashes precedes it.
    let run = 0;
    while (run < i && bytes[i - 1 - run] === 0x5c) run++;
    if (run % 2 === 0) n++;
  }
  return n;
}

/** Object keys plus string values in a parsed value; -1 past MAX_AS_IS_DEPTH. */
function keysAndStrings(root: unknown): number {
  let n = 0;
  const stack: unknown[] = [root];
  const depths: number[] = [0];
  while (stack.length > 0) {
    const v = stack.pop();
    const d = depths.pop() as number;
    if (typeof v === 'string') n++;
    else if (v !== null && typeof v === 'object') {
      if (d >= MAX_AS_IS_DEPTH) return -1;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          stack.push(v[i]);
          depths.push(d + 1);
        }
      } else {
        for (const k in v) {
          n++;
          stack.push((v as Record<string, unknown>)[k]);
          depths.push(d + 1);
        }
      }
    }
  }
  return n;
}

/**
 * Whether `raw` — bytes that parseStrictJson decoded and parsed to `value` — can be released
 * as they are instead of as the gateway's own serialization of `value`: true only when every
 * conforming JSON parser must read them as `value`. Two things let parsers disagree on bytes that
 * JSON.parse accepted, and both are checked here:
 * - invalid UTF-8: decoders differ (U+FFFD, refusal, or an overlong sequence read as a quote);
 * - duplicate keys: JSON.parse keeps the last, other parsers the first, so a client could read a
 *   value the gateway never judged. Every key and every string value of valid JSON text is one
 *   string token with two unescaped quotes; a duplicate key is a token in the text that no longer
 *   exists in the parsed value, so equal counts mean no key was dropped.
 * (`__proto__` keys were already refused by parseStrictJson.) What remains is lexical only:
 * whitespace, string escapes and number spelling, which name the same value for every parser
 * (numbers keep the upstream's own digits, which FHIR's decimal precision prefers).
 */
export function readsAsParsed(raw: Buffer, value: unknown): boolean {
  if (!isUtf8(raw)) return false;
  const tokens = keysAndStrings(value);
  return tokens >= 0 && quotesIn(raw) === 2 * tokens;
}
