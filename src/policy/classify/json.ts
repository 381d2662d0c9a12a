/**
 * Strict JSON for request bodies. JSON.parse keeps the last of two duplicate keys, while other
 * parsers (the upstream's among them) may keep the first: the gateway would decide on one
 * resource and the server store another. So a validation pass runs first, over the text, and
 * refuses duplicate keys (compared after unescaping: `"a"` and `"\u0061"` are the same key),
 * `__proto__` / `constructor` / `prototype` keys anywhere, nesting deeper than `maxDepth`, and
 * anything that is not RFC 8259 JSON. It is iterative, so hostile nesting cannot overflow the
 * stack. Only then does JSON.parse build the value. Pure; errors carry offsets, never content.
 */
import { GatewayError } from '../../errors.js';

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

function invalid(detail: string, at: number): GatewayError {
  return new GatewayError('request-body-invalid', `${detail} at offset ${at}`);
}

function skipWs(s: string, i: number): number {
  for (;;) {
    const c = s.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
    else return i;
  }
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** Scans the string starting at the `"` at `i`; returns the index after the closing quote. */
function scanString(s: string, i: number): { end: number; escaped: boolean } {
  let escaped = false;
  let j = i + 1;
  for (;;) {
    const c = s.charCodeAt(j);
    if (Number.isNaN(c)) throw invalid('unterminated string', i);
    if (c === 0x22) return { end: j + 1, escaped };
    if (c < 0x20) throw invalid('control character in string', j);
    if (c === 0x5c) {
      escaped = true;
      const e = s.charCodeAt(j + 1);
      if (e === 0x75) {
        for (let k = 2; k < 6; k++) if (!isHex(s.charCodeAt(j + k))) throw invalid('bad \\u escape', j);
        j += 6;
      } else if (e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
        j += 2;
      } else {
        throw invalid('bad escape', j);
      }
    } else {
      j++;
    }
  }
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

function scanScalar(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c === 0x22) return scanString(s, i).end;
  if (s.startsWith('true', i)) return i + 4;
  if (s.startsWith('false', i)) return i + 5;
  if (s.startsWith('null', i)) return i + 4;
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
    NUMBER.lastIndex = i;
    if (NUMBER.test(s)) return NUMBER.lastIndex;
  }
  throw invalid('unexpected character', i);
}

/** Reads `"key"` `:` at `i` into `keys`; returns the index of the value that follows. */
function readKey(s: string, i: number, keys: Set<string>): number {
  if (s.charCodeAt(i) !== 0x22) throw invalid('expected a key', i);
  const { end, escaped } = scanString(s, i);
  // The string was validated above, so JSON.parse of it cannot throw.
  const key = escaped ? (JSON.parse(s.slice(i, end)) as string) : s.slice(i + 1, end - 1);
  if (FORBIDDEN_KEYS.has(key)) throw invalid('forbidden key', i);
  if (keys.has(key)) throw invalid('duplicate key', i);
  keys.add(key);
  const colon = skipWs(s, end);
  if (s.charCodeAt(colon) !== 0x3a) throw invalid('expected :', colon);
  return skipWs(s, colon + 1);
}

/** Throws `request-body-invalid` unless `text` is strict JSON as described above. */
export function validateStrictJson(text: string, maxDepth: number): void {
  // One entry per open container: the keys seen for an object, null for an array.
  const stack: Array<Set<string> | null> = [];
  let i = skipWs(text, 0);
  for (;;) {
    // Parse one value at i.
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      if (stack.length >= maxDepth) throw invalid('nesting too deep', i);
      const close = c === 0x7b ? 0x7d : 0x5d;
      const next = skipWs(text, i + 1);
      if (text.charCodeAt(next) === close) {
        i = next + 1;
      } else if (c === 0x7b) {
        const keys = new Set<string>();
        stack.push(keys);
        i = readKey(text, next, keys);
        continue;
      } else {
        stack.push(null);
        i = next;
        continue;
      }
    } else {
      i = scanScalar(text, i);
    }
    // A value ended: close containers, or move past a comma to the next value.
    for (;;) {
      i = skipWs(text, i);
      if (stack.length === 0) {
        if (i !== text.length) throw invalid('trailing characters', i);
        return;
      }
      const top = stack[stack.length - 1]!;
      const d = text.charCodeAt(i);
      if (d === 0x2c) {
        i = skipWs(text, i + 1);
        if (top !== null) i = readKey(text, i, top);
        break;
      }
      if ((top !== null && d === 0x7d) || (top === null && d === 0x5d)) {
        stack.pop();
        i++;
        continue;
      }
      throw invalid('expected , or a closing bracket', i);
    }
  }
}

/** Validates strictly, then parses. */
export function parseStrictJson(text: string, maxDepth: number): unknown {
  validateStrictJson(text, maxDepth);
  try {
    return JSON.parse(text);
  } catch (e) {
    // Unreachable when the validator is right; kept so a validator bug still fails closed.
    throw new GatewayError('request-body-invalid', 'JSON.parse rejected validated text', { cause: e });
  }
}
