/**
 * Canonical JSON for hashing: object keys sorted (UTF-16 code unit order), no whitespace, and
 * otherwise exactly what JSON.stringify writes (`toJSON` honoured, `undefined`/functions/symbols
 * omitted from objects and `null` in arrays, NaN/Infinity -> null, boxed primitives unwrapped).
 * So canonicalJson(x) === canonicalJson(JSON.parse(JSON.stringify(x))) for any x JSON.stringify
 * accepts: the chain hashes what a reader of the stored line gets back, in one pass, without
 * first making a plain copy. Throws (TypeError, RangeError) where JSON.stringify would, or on
 * nesting too deep for the stack.
 */
export function canonicalJson(value: unknown): string {
  return write(value, '') ?? 'null';
}

/**
 * The canonical JSON of `obj` with one member, `key`, supplied by the caller as already
 * serialized JSON text (and any own `key` of `obj` ignored), returned as the text before and
 * after that member's value. Lets the chain hash `before + unsealed + after` and store
 * `before + sealed + after` without serializing the record twice.
 */
export function canonicalSplit(obj: object, key: string): { before: string; after: string } {
  const src = obj as Record<string, unknown>;
  const keys = Object.keys(src);
  if (!keys.includes(key)) keys.push(key);
  keys.sort();
  let before = '{';
  let after = '';
  let seen = false;
  let first = true;
  for (const k of keys) {
    if (k === key) {
      before += (first ? '' : ',') + JSON.stringify(k) + ':';
      seen = true;
      first = false;
      continue;
    }
    const v = write(src[k], k);
    if (v === undefined) continue;
    const member = (first ? '' : ',') + JSON.stringify(k) + ':' + v;
    first = false;
    if (seen) after += member;
    else before += member;
  }
  return { before, after: after + '}' };
}

/** Serialized value, or undefined where JSON.stringify would omit the member. */
function write(input: unknown, key: string): string | undefined {
  let value = input;
  if (value !== null && (typeof value === 'object' || typeof value === 'bigint')) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = toJSON.call(value, key);
  }
  if (value === null || typeof value !== 'object') {
    // Primitives (and undefined/functions/symbols -> undefined): JSON.stringify's own rules.
    return JSON.stringify(value);
  }
  if (value instanceof Number || value instanceof String || value instanceof Boolean) return JSON.stringify(value);
  if (Array.isArray(value)) {
    // Ids and references: an array of plain strings/numbers has no keys to sort, so the native
    // serializer writes its canonical form in one call.
    if (isFlat(value)) return JSON.stringify(value);
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += write(value[i], String(i)) ?? 'null';
    }
    return out + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = write(obj[k], k);
    if (v === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += JSON.stringify(k) + ':' + v;
  }
  return out + '}';
}

function isFlat(arr: readonly unknown[]): boolean {
  for (let i = 0; i < arr.length; i++) {
    const t = typeof arr[i];
    if (t !== 'string' && t !== 'number' && t !== 'boolean') return false;
  }
  return true;
}

/**
 * A deep, plain-JSON copy: what a reader gets back after JSON.stringify + JSON.parse. (The chain no
 * longer needs it; kept for callers that want a detached copy.)
 */
export function toPlainJson<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
