/**
 * Canonical JSON for hashing: object keys sorted (UTF-16 code unit order), no whitespace, and
 * otherwise exactly what JSON.stringify writes (`toJSON` honoured, `undefined`/functions/symbols
 * omitted from objects and `null` in arrays, NaN/Infinity -> null, boxed primitives unwrapped).
 * So canonicalJson(x) === canonicalJson(JSON.parse(JSON.stringify(x))) for any x JSON.stringify
 * accepts: the chain hashes what a reader of the stored line gets back, in one pass, without
 * first making a plain copy. Throws (TypeError, RangeError) where JSON.stringify would, or on
 * nesting too deep for the stack.
 *
 * Fast path: a value that is already in canonical shape (see `nativeCanonical`) is handed to the
 * native JSON.stringify whole, which is several times faster than writing it member by member.
 * Anything else goes through `write`, which is correct for any input. The fast path reads each
 * property twice (check, then stringify): a getter that answers differently on each read is
 * outside what this module can make canonical (audit records are plain data).
 */
export function canonicalJson(value: unknown): string {
  try {
    if (nativeCanonical(value)) return JSON.stringify(value) ?? 'null';
  } catch (err) {
    // Too deep (or cyclic) for the check or the native writer: the general writer decides.
    if (!(err instanceof RangeError)) throw err;
  }
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
  try {
    const split = nativeSplit(src, key);
    if (split !== undefined) return split;
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
  }
  return writeSplit(src, key);
}

/**
 * canonicalSplit when `obj` is in canonical shape and has no own `key`: one native
 * JSON.stringify of the whole object, cut where `key` belongs. The cut is found by writing only
 * the members that sort before `key` (for an audit record and `chain`: actor, breakGlass) and
 * checking they are the text's prefix. undefined = not applicable, use the general writer.
 */
function nativeSplit(src: Record<string, unknown>, key: string): { before: string; after: string } | undefined {
  if (Object.hasOwn(src, key) || !nativeCanonical(src)) return undefined;
  const text = JSON.stringify(src);
  let head = '{';
  for (const k of Object.keys(src)) {
    if (k > key) break;
    const v = JSON.stringify(src[k]);
    if (v !== undefined) head += `${head.length > 1 ? ',' : ''}${quoteKey(k)}:${v}`;
  }
  // Both came from the same data; a mismatch means a getter answered differently: do it the slow way.
  if (!text.startsWith(head)) return undefined;
  const rest = text.slice(head.length); // "}" or the members after `key` (with their leading comma when head has members) and "}"
  const before = `${head}${head.length > 1 ? ',' : ''}${quoteKey(key)}:`;
  if (rest === '}' || head.length > 1) return { before, after: rest };
  return { before, after: `,${rest}` };
}

/**
 * The text canonicalSplit writes for the value of `obj[key]`, or undefined where it omits the
 * member: what the general writer below does per member, and (as the oracle tests prove) what
 * the native route's text holds for it. For writers of a known record shape whose free-form
 * members (`details`) must come out exactly as canonicalSplit writes them. Throws where
 * canonicalSplit would.
 */
export function canonicalMember(value: unknown, key: string): string | undefined {
  return nativeCanonical(value) ? JSON.stringify(value) : write(value, key);
}

/** canonicalSplit for any input: member by member, each member's value by the fastest correct route. */
function writeSplit(src: Record<string, unknown>, key: string): { before: string; after: string } {
  const keys = Object.keys(src);
  if (!isSorted(keys)) keys.sort();
  let before = '{';
  let after = '';
  let placed = false;
  let first = true;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    if (k === key) continue;
    if (!placed && k > key) {
      before += `${first ? '' : ','}${quoteKey(key)}:`;
      placed = true;
      first = false;
    }
    const v = canonicalMember(src[k], k);
    if (v === undefined) continue;
    const member = `${first ? '' : ','}${quoteKey(k)}:${v}`;
    first = false;
    if (placed) after += member;
    else before += member;
  }
  if (!placed) before += `${first ? '' : ','}${quoteKey(key)}:`;
  return { before, after: `${after}}` };
}

/**
 * True when JSON.stringify(value) is already its canonical JSON: primitives, and plain objects
 * (prototype Object.prototype or null) whose own enumerable keys are in sorted order, and arrays,
 * all the way down, with no toJSON anywhere (so no user code runs and Dates, boxed primitives,
 * bigints and class instances go to the general writer). Object.keys lists keys in the order
 * JSON.stringify writes them, so "Object.keys is sorted" is exactly "the native output is sorted".
 * undefined, NaN and Infinity need no special case: the native rules for them are the canonical ones.
 */
function nativeCanonical(value: unknown): boolean {
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'undefined':
      return true;
    case 'object':
      break;
    default:
      // bigint (toJSON may be patched in, else a TypeError), function, symbol: the general writer.
      return false;
  }
  if (value === null) return true;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return false;
  if (Array.isArray(value)) {
    // Ids and references: runs of strings, skipped in a tight loop without a call per element.
    for (let i = skipStrings(value, 0); i < value.length; i = skipStrings(value, i + 1)) {
      if (!nativeCanonical(value[i])) return false;
    }
    return true;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  for (let i = 0; i < keys.length; i++) {
    if (i > 0 && !(keys[i - 1] < keys[i])) return false;
    if (!nativeCanonical(obj[keys[i]])) return false;
  }
  return true;
}

/** Index of the first non-string element of `arr` at or after `from` (arr.length if none). */
function skipStrings(arr: readonly unknown[], from: number): number {
  let i = from;
  while (i < arr.length && typeof arr[i] === 'string') i++;
  return i;
}

function isSorted(keys: readonly string[]): boolean {
  for (let i = 1; i < keys.length; i++) {
    if (!(keys[i - 1] < keys[i])) return false;
  }
  return true;
}

// Record keys repeat on every request: quote each once.
const quoted = new Map<string, string>();
function quoteKey(k: string): string {
  let q = quoted.get(k);
  if (q === undefined) {
    q = JSON.stringify(k);
    if (quoted.size < 1024) quoted.set(k, q);
  }
  return q;
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
