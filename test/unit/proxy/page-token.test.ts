import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { createPageTokens, type PageBinding, type PageState } from '../../../src/proxy/page-token.js';

const binding: PageBinding = { iss: 'https://idp', sub: 'dr-a', roles: ['clinician'], purpose: 'TREAT', patient: undefined, policyVersion: 'v1' };
const state: PageState = { q: '/Observation?code=x&_count=2', u: '/fhir/Observation?_count=3&_offset=3', i: 1, r: 2, n: 2, f: 40 };
const SECRET = 'a-paging-secret-of-at-least-32-characters!';

function refusal(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(GatewayError);
    return (e as GatewayError).code;
  }
}

describe('page tokens', () => {
  it('open what they sealed, for the same binding', () => {
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    expect(t.open(t.seal(state, binding), binding)).toEqual(state);
  });

  it('are opaque: neither the search nor the upstream position can be read from them', () => {
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    const token = t.seal(state, binding);
    const decoded = Buffer.from(token, 'base64url').toString('latin1');
    for (const s of ['Observation', '_offset', 'code=x', 'dr-a', 'TREAT']) expect(decoded).not.toContain(s);
    // A fresh IV each time: two tokens for the same position are unrelated.
    expect(t.seal(state, binding)).not.toBe(token);
  });

  it('have a length that depends only on the search, never on how far the gateway read upstream (property)', () => {
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    const q = '/Condition?patient=pat-elder%2Cpat-henry&_count=1';
    const lengths = new Set<number>();
    fc.assert(
      fc.property(fc.nat({ max: 5000 }), fc.nat({ max: 1_000_000 }), fc.nat({ max: 1_000_000 }), fc.string({ maxLength: 60 }), (offset, i, r, extra) => {
        const u = `/fhir/Condition?patient=pat-elder%2Cpat-henry&_count=2&_offset=${offset}${encodeURIComponent(extra)}`;
        lengths.add(t.seal({ q, u, i, r, n: 1, f: 90 }, binding).length);
      }),
      { numRuns: 300 },
    );
    expect(lengths.size).toBe(1);
  });

  it('have the same length on the first upstream page and on a later one, however short its link (property)', () => {
    // A HAPI-style later page is `?_getpages=<id>&_getpagesoffset=N` (~130 bytes), the first one the
    // query with the gateway's `_count` and `_security:not` labels (over 1 KB for billing): which one
    // the position is on depends on how many withheld results were skipped.
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    const q = '/Condition?patient=pat-alice&_count=5';
    const first = `/fhir/Condition?patient=pat-alice&_count=50${'&_security%3Anot=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fv3-ActCode%7CPSY'.repeat(16)}`;
    const f = Buffer.byteLength(first);
    const lengths = new Set<number>([t.seal({ q, u: first, i: 3, r: 0, n: 5, f }, binding).length]);
    fc.assert(
      fc.property(fc.nat({ max: f - 80 }), fc.nat({ max: 1000 }), (pad, offset) => {
        const u = `/fhir?_getpages=${'a'.repeat(pad)}&_getpagesoffset=${offset}&_count=50&_bundletype=searchset`.slice(0, f);
        lengths.add(t.seal({ q, u, i: 0, r: 5, n: 5, f }, binding).length);
      }),
      { numRuns: 200 },
    );
    expect(lengths.size).toBe(1);
  });

  it.each([
    ['another subject', { ...binding, sub: 'dr-b' }],
    ['another issuer', { ...binding, iss: 'https://other-idp' }],
    ['another role set', { ...binding, roles: ['billing'] }],
    ['an added role', { ...binding, roles: ['clinician', 'billing'] }],
    ['another purpose', { ...binding, purpose: 'COC' }],
    ['a patient context', { ...binding, patient: 'pat-1' }],
    ['another policy version', { ...binding, policyVersion: 'v2' }],
  ])('refuse %s', (_name, other) => {
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    expect(refusal(() => t.open(t.seal(state, binding), other))).toBe('paging-token-invalid');
  });

  it('bind roles as a set (order and repeats do not matter)', () => {
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    const token = t.seal(state, { ...binding, roles: ['clinician', 'coder'] });
    expect(t.open(token, { ...binding, roles: ['coder', 'clinician', 'coder'] })).toEqual(state);
  });

  it('expire', () => {
    let now = 1_000_000_000_000;
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60, now: () => now });
    const token = t.seal(state, binding);
    now += 59_000;
    expect(t.open(token, binding)).toEqual(state);
    now += 2_000;
    expect(refusal(() => t.open(token, binding))).toBe('paging-token-invalid');
  });

  it('do not open under another key, nor across processes without a configured key', () => {
    const a = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    const b = createPageTokens({ secret: `${SECRET}x`, ttlSeconds: 60 });
    expect(refusal(() => b.open(a.seal(state, binding), binding))).toBe('paging-token-invalid');
    const r1 = createPageTokens({ secret: undefined, ttlSeconds: 60 });
    const r2 = createPageTokens({ secret: undefined, ttlSeconds: 60 });
    expect(refusal(() => r2.open(r1.seal(state, binding), binding))).toBe('paging-token-invalid');
    // Replicas sharing the key open each other's tokens.
    const c = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    expect(c.open(a.seal(state, binding), binding)).toEqual(state);
  });

  it('refuse every altered token with the one code (property)', () => {
    const t = createPageTokens({ secret: SECRET, ttlSeconds: 60 });
    const token = t.seal(state, binding);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    fc.assert(
      fc.property(fc.nat({ max: token.length - 1 }), fc.constantFrom(...alphabet), (i, c) => {
        fc.pre(token[i] !== c);
        const altered = token.slice(0, i) + c + token.slice(i + 1);
        // The last character may carry padding bits only; an alteration there can decode to the same bytes.
        if (Buffer.from(altered, 'base64url').equals(Buffer.from(token, 'base64url'))) return;
        expect(refusal(() => t.open(altered, binding))).toBe('paging-token-invalid');
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        expect(refusal(() => t.open(s, binding))).toBe('paging-token-invalid');
      }),
      { numRuns: 300 },
    );
  });
});
