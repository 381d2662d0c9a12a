import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { pseudonymId } from '../../../src/redact/transforms.js';

const enc = (s: string) => new TextEncoder().encode(s);

describe('pseudonymId', () => {
  it('is base64url(HMAC-SHA256(key, "Type/id")) cut to 22 characters, as documented (an independent computation)', () => {
    const key = enc('pseudonym-key-for-tests-0123456789abcdef');
    const expected = createHmac('sha256', Buffer.from('pseudonym-key-for-tests-0123456789abcdef')).update('Patient/pat-1').digest('base64url').slice(0, 22);
    expect(pseudonymId(key, 'Patient', 'pat-1')).toBe(expected);
    expect(pseudonymId(key, 'Patient', 'pat-1')).toHaveLength(22);
  });

  it('keeps keys apart (the per-key cache never answers with another key) and equal key bytes agree', () => {
    const a = enc('first-key-0123456789abcdefghijklmnopqrstu');
    const b = enc('second-key-0123456789abcdefghijklmnopqrst');
    const pa = pseudonymId(a, 'Patient', 'x');
    const pb = pseudonymId(b, 'Patient', 'x');
    expect(pa).not.toBe(pb);
    // Interleaved calls: each key keeps its own answer.
    expect(pseudonymId(a, 'Patient', 'x')).toBe(pa);
    expect(pseudonymId(b, 'Patient', 'x')).toBe(pb);
    // A reload brings a new array with the same bytes: same pseudonyms.
    expect(pseudonymId(enc('first-key-0123456789abcdefghijklmnopqrstu'), 'Patient', 'x')).toBe(pa);
    // Type and id are both in the input.
    expect(pseudonymId(a, 'Observation', 'x')).not.toBe(pa);
    expect(pseudonymId(a, 'Patient', 'y')).not.toBe(pa);
  });
});
