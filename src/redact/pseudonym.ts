/**
 * Pseudonyms the gateway can resolve: deterministic authenticated encryption of a resource id,
 * SIV-style (the synthetic IV is a MAC of the type and the id, and is the IV of the encryption).
 *
 *   pseudonym = kid || enc64( tag || (format || id || padding) XOR keystream )
 *   tag       = HMAC-SHA256(macKey, "Type" 0x00 format || id || padding)[0..12)
 *   keystream = HMAC-SHA512(encKey, tag || uint32 block) for block = 0, 1, ...
 *
 * - Deterministic: the same `Type/id` always gets the same pseudonym under one key, so references
 *   a caller is given line up with the resources they point to.
 * - Reversible only with the key, and unforgeable without it: a value that was not issued by this
 *   gateway (a real id, a guessed or edited pseudonym, one of another type) does not decode.
 * - `kid` (one character derived from the key) lets a previous key still resolve after rotation.
 * - The alphabet is FHIR's id alphabet (`A-Za-z0-9-.`), so a pseudonym is a valid id; every id up
 *   to 32 bytes (and every lowercase UUID) gives a pseudonym of exactly 61 characters, so that the
 *   length says nothing about the real id (longer ids: longer pseudonyms, in 16-byte steps).
 */
import { createHmac, createSecretKey, hkdfSync, type KeyObject, timingSafeEqual } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.';
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

const TAG_BYTES = 12;
const FORMAT_RAW = 0;
const FORMAT_UUID = 1;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Keys {
  readonly kid: string;
  readonly mac: KeyObject;
  readonly enc: KeyObject;
}

const derived = new WeakMap<Uint8Array, Keys>();

function keysOf(key: Uint8Array): Keys {
  let k = derived.get(key);
  if (k === undefined) {
    const salt = Buffer.from('phi-gateway pseudonym v1');
    const mac = Buffer.from(hkdfSync('sha256', key, salt, 'mac', 32));
    const enc = Buffer.from(hkdfSync('sha256', key, salt, 'enc', 32));
    const kidByte = Buffer.from(hkdfSync('sha256', key, salt, 'kid', 1))[0]!;
    k = { kid: ALPHABET[kidByte & 63]!, mac: createSecretKey(mac), enc: createSecretKey(enc) };
    derived.set(key, k);
  }
  return k;
}

/** base64 over the FHIR id alphabet, no padding. */
function enc64(b: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = (b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = b.length - i;
  if (rest === 1) {
    const n = b[i]! << 16;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = (b[i]! << 16) | (b[i + 1]! << 8);
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]!;
  }
  return out;
}

function dec64(s: string, from: number): Buffer | undefined {
  const len = s.length - from;
  if (len % 4 === 1) return undefined;
  const out = Buffer.alloc(Math.floor((len * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? DECODE[c]! : -1;
    if (v < 0) return undefined;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // Non-canonical encodings (leftover bits set) are refused: one pseudonym per id.
  if ((acc & ((1 << bits) - 1)) !== 0) return undefined;
  return out;
}

function tagOf(k: Keys, type: string, plain: Uint8Array): Buffer {
  return createHmac('sha256', k.mac).update(type).update('\0').update(plain).digest().subarray(0, TAG_BYTES);
}

/**
 * XOR with a keystream made by HMAC-SHA512(encKey, tag || counter) blocks: counter mode over a PRF,
 * as AES-CTR would be, but ~6x cheaper per id in Node than setting up a cipher (measured: 29 µs vs
 * 4.5 µs a pseudonym), and pseudonyms are made for every id and reference a caller receives.
 */
function xorStream(k: Keys, tag: Buffer, data: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length);
  const counter = Buffer.alloc(4);
  for (let block = 0; block * 64 < data.length; block++) {
    counter.writeUInt32BE(block);
    const ks = createHmac('sha512', k.enc).update(tag).update(counter).digest();
    const end = Math.min(data.length, (block + 1) * 64);
    for (let i = block * 64; i < end; i++) out[i] = data[i]! ^ ks[i - block * 64]!;
  }
  return out;
}

/** The plaintext: a format byte, the id (a lowercase UUID as its 16 bytes), zero padding. */
function plaintextOf(id: string): Buffer | undefined {
  if (id.length === 0 || id.includes('\0')) return undefined;
  let body: Buffer;
  let format: number;
  if (UUID.test(id)) {
    body = Buffer.from(id.replace(/-/g, ''), 'hex');
    format = FORMAT_UUID;
  } else {
    body = Buffer.from(id, 'utf8');
    format = FORMAT_RAW;
  }
  // One length for every id up to 32 bytes: the length of a pseudonym must not tell ids apart.
  const size = body.length <= 32 ? 33 : 1 + Math.ceil(body.length / 16) * 16;
  const p = Buffer.alloc(size);
  p[0] = format;
  body.copy(p, 1);
  return p;
}

function idOf(p: Buffer): string | undefined {
  if (p.length < 33) return undefined;
  if (p[0] === FORMAT_UUID) {
    if (p.subarray(17).some((b) => b !== 0)) return undefined;
    const h = p.subarray(1, 17).toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  if (p[0] !== FORMAT_RAW) return undefined;
  let end = p.length;
  while (end > 1 && p[end - 1] === 0) end--;
  if (end === 1) return undefined;
  return p.subarray(1, end).toString('utf8');
}

/**
 * The pseudonym of `type/id` under `key`, or undefined for an id that cannot be one (empty, or
 * holding a NUL): the caller removes the element rather than pass the real id.
 */
export function pseudonymize(key: Uint8Array, type: string, id: string): string | undefined {
  // A searchset names the same patient, encounter and practitioner over and over: remembered.
  let memo = memos.get(key);
  if (memo === undefined) {
    memo = new Map();
    memos.set(key, memo);
  }
  const at = `${type}/${id}`;
  const hit = memo.get(at);
  if (hit !== undefined) return hit;
  const p = compute(key, type, id);
  if (p !== undefined) {
    if (memo.size >= MEMO_SIZE) memo.clear();
    memo.set(at, p);
  }
  return p;
}

/** Per key (a reload brings a new key array, and the old one's memo goes with it). */
const memos = new WeakMap<Uint8Array, Map<string, string>>();
const MEMO_SIZE = 20_000;

function compute(key: Uint8Array, type: string, id: string): string | undefined {
  const plain = plaintextOf(id);
  if (plain === undefined) return undefined;
  const k = keysOf(key);
  const tag = tagOf(k, type, plain);
  return k.kid + enc64(Buffer.concat([tag, xorStream(k, tag, plain)]));
}

/**
 * The real id behind a pseudonym of `type` issued under one of `keys` (the current key first, then
 * previous ones), or undefined when `value` is not such a pseudonym: a real id, another type's
 * pseudonym, an edited or forged value.
 */
export function resolvePseudonym(keys: readonly Uint8Array[], type: string, value: string): string | undefined {
  if (value.length < 2 || value.length > 200) return undefined;
  const raw = dec64(value, 1);
  if (raw === undefined || raw.length < TAG_BYTES + 33) return undefined;
  const tag = raw.subarray(0, TAG_BYTES);
  const ct = raw.subarray(TAG_BYTES);
  for (const key of keys) {
    const k = keysOf(key);
    if (k.kid !== value[0]) continue;
    const plain = xorStream(k, Buffer.from(tag), ct);
    if (!timingSafeEqual(tagOf(k, type, plain), tag)) continue;
    const id = idOf(plain);
    // Canonical only: the id must encode back to exactly this plaintext.
    if (id !== undefined && plaintextOf(id)?.equals(plain)) return id;
  }
  return undefined;
}
