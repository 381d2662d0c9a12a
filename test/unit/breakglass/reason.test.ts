import { describe, expect, it } from 'vitest';
import { MAX_REASON_LENGTH, parseReason } from '../../../src/breakglass/reason.js';

const plain = { minReasonLength: 20, reasons: undefined };
const coded = { minReasonLength: 10, reasons: ['EMERG', 'CONSULT'] as const };

describe('parseReason', () => {
  it('accepts a long enough free-text reason, whitespace normalized', () => {
    expect(parseReason('  Patient unconscious in ED,   no consent possible ', plain)).toEqual({
      ok: true,
      reason: 'Patient unconscious in ED, no consent possible',
      code: undefined,
    });
  });

  it('measures the minimum length after trimming, in characters', () => {
    expect(parseReason(`${' '.repeat(30)}short`, plain).ok).toBe(false);
    expect(parseReason('x'.repeat(19), plain).ok).toBe(false);
    expect(parseReason('x'.repeat(20), plain).ok).toBe(true);
    // 20 astral characters are 40 UTF-16 units but 20 characters.
    expect(parseReason('😀'.repeat(19), plain).ok).toBe(false);
    expect(parseReason('😀'.repeat(20), plain).ok).toBe(true);
  });

  it('refuses a missing, repeated, overlong or control-laden reason', () => {
    expect(parseReason(undefined, plain)).toMatchObject({ ok: false, why: 'missing' });
    expect(parseReason(['a long enough reason here', 'another long reason here'], plain)).toMatchObject({ ok: false, why: 'repeated header' });
    expect(parseReason('y'.repeat(MAX_REASON_LENGTH + 1), plain)).toMatchObject({ ok: false, why: 'too long' });
    expect(parseReason(`a long enough reason\u0000with a NUL`, plain)).toMatchObject({ ok: false, why: 'control characters' });
    expect(parseReason(`a long enough reason\u001b[31m red`, plain)).toMatchObject({ ok: false, why: 'control characters' });
  });

  it('with reason codes: requires a listed code, normalizes its case, measures the text', () => {
    expect(parseReason('emerg: cardiac arrest in ward 3', coded)).toEqual({ ok: true, reason: 'EMERG: cardiac arrest in ward 3', code: 'EMERG' });
    expect(parseReason('CONSULT:second opinion', coded)).toEqual({ ok: true, reason: 'CONSULT: second opinion', code: 'CONSULT' });
    expect(parseReason('OTHER: cardiac arrest in ward 3', coded)).toMatchObject({ ok: false, why: 'no listed reason code' });
    expect(parseReason('cardiac arrest in ward 3, no code', coded)).toMatchObject({ ok: false, why: 'no listed reason code' });
    expect(parseReason('EMERG: too short', coded)).toMatchObject({ ok: false, why: 'too short' });
  });
});
