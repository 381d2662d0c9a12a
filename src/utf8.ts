/**
 * UTF-8 between bytes and JS strings on the response path and in the audit sink (shared, hence
 * beside errors.ts rather than under proxy/ or audit/), with the same result as
 * `buf.toString('utf8')` and `Buffer.from(text, 'utf8')`, byte for byte and code unit for code
 * unit (property-tested against them), only faster for what FHIR servers mostly send: ASCII.
 *
 * On Node 20 decoding 400 KB of ASCII JSON with `toString('utf8')` takes ~1.3 ms and
 * `Buffer.from(string)` ~0.5 ms, more than JSON.parse or JSON.stringify themselves take on
 * the same searchset; Latin-1 is a straight copy into or out of V8's one-byte strings, ~20 µs.
 * For bytes below 0x80 the two encodings are the same, so the fast path is taken only when that
 * holds, and is checked, not assumed.
 */
import { isAscii } from 'node:buffer';

/** The bytes as text, as `bytes.toString('utf8')` decodes them (invalid sequences become U+FFFD). */
export function utf8Text(bytes: Buffer): string {
  return isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8');
}

/** The UTF-8 encoding of `text`, as `Buffer.from(text, 'utf8')` writes it (lone surrogates become U+FFFD). */
export function utf8Bytes(text: string): Buffer {
  return encodeAll([text]);
}

/**
 * The UTF-8 encoding of the concatenated `parts`, measured and then written into one buffer of
 * exactly that size (about half of Buffer.from's time on a large non-ASCII string). Every code
 * unit from U+0080 up takes two or more bytes (a surrogate pair four, a lone surrogate three), so a
 * part whose byte length equals its length is ASCII, where Latin-1 writes the same bytes. The
 * buffer is uninitialized memory: it leaves here only when the writes filled every byte; anything
 * else takes the plain route.
 */
function encodeAll(parts: readonly string[]): Buffer {
  const lengths = new Array<number>(parts.length);
  let total = 0;
  for (let i = 0; i < parts.length; i++) {
    lengths[i] = Buffer.byteLength(parts[i], 'utf8');
    total += lengths[i];
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (let i = 0; i < parts.length; i++) at += out.write(parts[i], at, lengths[i] === parts[i].length ? 'latin1' : 'utf8');
  return at === total ? out : Buffer.from(parts.join(''), 'utf8');
}

/** Below this many entries a Bundle is serialized whole (no large strings to avoid). */
const PIECEWISE_ENTRIES = 8;

/**
 * `utf8Bytes(JSON.stringify(value))`, byte for byte (property-tested), with large Bundles written
 * entry by entry. V8 returns a big JSON.stringify result as a string of many parts; encoding it
 * first copies it into one flat string, a fresh large-object allocation whose pages the kernel
 * must fault in (on this project's VMs ~1.2 ms for a 400 KB searchset, more than the stringify
 * itself), and the flat string is dropped right after. Entries serialized one at a time stay small
 * young-generation strings, and are written straight into the answer's buffer.
 *
 * Only for plain data (what the filter releases): a value or entry with a `toJSON` method, whose
 * output could depend on the key it is called with, takes the whole-value route.
 */
export function jsonBytes(value: unknown): Buffer {
  const parts = piecewise(value);
  if (parts !== undefined) return encodeAll(parts);
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('value has no JSON form');
  return encodeAll([text]);
}

type Plain = Record<string, unknown>;

const hasToJson = (v: unknown): boolean => typeof v === 'object' && v !== null && typeof (v as { toJSON?: unknown }).toJSON === 'function';

/** JSON.stringify(value) as a list of pieces, or undefined when it is not a large plain Bundle-like object. */
function piecewise(value: unknown): string[] | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || hasToJson(value)) return undefined;
  const entry = (value as Plain).entry;
  if (!Array.isArray(entry) || entry.length < PIECEWISE_ENTRIES || hasToJson(entry)) return undefined;
  for (const e of entry) if (hasToJson(e)) return undefined;
  const parts: string[] = ['{'];
  let first = true;
  for (const k of Object.keys(value)) {
    const comma = first ? '' : ',';
    if (k === 'entry') {
      parts.push(`${comma}"entry":[`);
      // As JSON.stringify writes array members: undefined, functions and symbols become null.
      for (let i = 0; i < entry.length; i++) parts.push((i === 0 ? '' : ',') + (JSON.stringify(entry[i]) ?? 'null'));
      parts.push(']');
      first = false;
      continue;
    }
    const member = JSON.stringify((value as Plain)[k]);
    if (member === undefined) continue; // omitted from objects, as JSON.stringify omits it
    parts.push(`${comma}${JSON.stringify(k)}:${member}`);
    first = false;
  }
  parts.push('}');
  return parts;
}
