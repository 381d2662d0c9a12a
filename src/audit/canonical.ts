/**
 * Canonical JSON for hashing: object keys sorted (UTF-16 code unit order), no whitespace,
 * `undefined` members omitted, everything else as JSON.stringify writes it. The input must already
 * be plain JSON data (see `toPlainJson`): the chain hashes exactly what is stored and re-read.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    // Primitives: JSON.stringify's own rules (NaN/Infinity -> null, strings escaped).
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const v = value[i];
      out += v === undefined ? 'null' : canonicalJson(v);
    }
    return out + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue;
    if (!first) out += ',';
    first = false;
    out += JSON.stringify(k) + ':' + canonicalJson(v);
  }
  return out + '}';
}

/**
 * A deep, plain-JSON copy: what a reader gets back after JSON.stringify + JSON.parse. Hashing this
 * copy (not the caller's object) guarantees the stored hash verifies after a round trip, and the
 * copy is ours, so a caller mutating its record after write() cannot change what is stored.
 */
export function toPlainJson<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
