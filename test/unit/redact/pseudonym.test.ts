import { createHmac, hkdfSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pseudonymize, resolvePseudonym } from '../../../src/redact/pseudonym.js';

const enc = (s: string) => new TextEncoder().encode(s);
const KEY = enc('pseudonym-key-for-tests-0123456789abcdef');
const OTHER = enc('another-key-for-tests-0123456789abcdefgh');
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The documented construction, computed independently of the module (raw ids up to 16 bytes). */
function expected(key: Uint8Array, type: string, id: string): string {
  const salt = Buffer.from('phi-gateway pseudonym v1');
  const mac = Buffer.from(hkdfSync('sha256', key, salt, 'mac', 32));
  const encKey = Buffer.from(hkdfSync('sha256', key, salt, 'enc', 32));
  const kid = Buffer.from(hkdfSync('sha256', key, salt, 'kid', 1))[0]! & 63;
  const plain = Buffer.alloc(33);
  plain[0] = 0;
  Buffer.from(id).copy(plain, 1);
  const tag = createHmac('sha256', mac).update(`${type}\0`).update(plain).digest().subarray(0, 12);
  const ks = createHmac('sha512', encKey).update(Buffer.concat([tag, Buffer.alloc(4)])).digest();
  const ct = Buffer.from(plain.map((b, i) => b ^ ks[i]!));
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.';
  const b64 = Buffer.concat([tag, ct]).toString('base64').replace(/=+$/, '');
  const mapped = [...b64].map((ch) => (ch === '+' ? '-' : ch === '/' ? '.' : ch)).join('');
  return alphabet[kid] + mapped;
}

describe('pseudonyms', () => {
  it('are the documented SIV-style construction (an independent computation)', () => {
    expect(pseudonymize(KEY, 'Patient', 'pat-1')).toBe(expected(KEY, 'Patient', 'pat-1'));
    expect(pseudonymize(KEY, 'Patient', 'pat-1')).toHaveLength(61);
  });

  it('resolve back to the id only with the key and the type they were issued for', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 64 }).filter((s) => !s.includes('\0')), fc.constantFrom('Patient', 'Observation', 'Encounter'), (id, type) => {
        const p = pseudonymize(KEY, type, id)!;
        expect(resolvePseudonym([KEY], type, p)).toBe(id);
        // Deterministic: references line up with the resources they point to.
        expect(pseudonymize(KEY, type, id)).toBe(p);
        expect(resolvePseudonym([OTHER], type, p)).toBeUndefined();
        expect(resolvePseudonym([KEY], type === 'Patient' ? 'Observation' : 'Patient', p)).toBeUndefined();
      }),
      { numRuns: 300 },
    );
  });

  it('are FHIR ids, of one length for every id up to 32 bytes and every UUID (the length tells nothing)', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9\-.]{1,32}$/), (id) => {
        const p = pseudonymize(KEY, 'Patient', id)!;
        expect(p).toMatch(FHIR_ID);
        expect(p.length).toBe(61);
      }),
    );
    fc.assert(
      fc.property(fc.uuid(), (u) => {
        const p = pseudonymize(KEY, 'Patient', u)!;
        expect(p).toHaveLength(61);
        expect(resolvePseudonym([KEY], 'Patient', p)).toBe(u);
      }),
    );
  });

  it('refuse every edit: a changed, cut or extended pseudonym does not resolve', () => {
    const p = pseudonymize(KEY, 'Patient', 'pat-alice')!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.';
    fc.assert(
      fc.property(fc.nat({ max: p.length - 1 }), fc.constantFrom(...alphabet), (i, ch) => {
        fc.pre(p[i] !== ch);
        const q = p.slice(0, i) + ch + p.slice(i + 1);
        expect(resolvePseudonym([KEY], 'Patient', q)).toBeUndefined();
      }),
      { numRuns: 500 },
    );
    expect(resolvePseudonym([KEY], 'Patient', p.slice(0, -1))).toBeUndefined();
    expect(resolvePseudonym([KEY], 'Patient', `${p}A`)).toBeUndefined();
  });

  it('never resolve a real id or random text', () => {
    for (const v of ['pat-alice', '1', '123456', 'Patient', 'a'.repeat(40), 'A'.repeat(61), '']) expect(resolvePseudonym([KEY], 'Patient', v)).toBeUndefined();
    fc.assert(fc.property(fc.stringMatching(/^[A-Za-z0-9\-.]{1,80}$/), (v) => {
          expect(resolvePseudonym([KEY], 'Patient', v)).toBeUndefined();
        }), { numRuns: 500 });
  });

  it('issued under a previous key still resolve while that key is listed', () => {
    const old = pseudonymize(OTHER, 'Patient', 'pat-bob')!;
    expect(resolvePseudonym([KEY, OTHER], 'Patient', old)).toBe('pat-bob');
    expect(resolvePseudonym([KEY], 'Patient', old)).toBeUndefined();
    // The kid character keeps keys apart; a reload with the same key bytes agrees.
    expect(pseudonymize(enc('pseudonym-key-for-tests-0123456789abcdef'), 'Patient', 'pat-bob')).toBe(pseudonymize(KEY, 'Patient', 'pat-bob'));
  });

  it('cannot be made for an empty id or one holding NUL (the element is removed instead)', () => {
    expect(pseudonymize(KEY, 'Patient', '')).toBeUndefined();
    expect(pseudonymize(KEY, 'Patient', 'a\0b')).toBeUndefined();
  });
});
