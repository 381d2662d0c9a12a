import { describe, expect, it } from 'vitest';
import type { PurposeInfo } from '../../../src/policy/plan.js';
import { isCoveredBy, isDescendant, parsePurposeHeader } from '../../../src/policy/purpose.js';

const P = (code: string, parent?: string): [string, PurposeInfo] => [code, { code, display: code, parent, minimumNecessary: true }];
const purposes = new Map([P('TREAT'), P('ETREAT', 'TREAT'), P('BTG', 'TREAT'), P('HPAYMT'), P('COVERAGE', 'HPAYMT'), P('ELIGVER', 'COVERAGE'), P('HCOMPL')]);

describe('parsePurposeHeader', () => {
  it.each([
    ['plain code', 'TREAT', { ok: true, code: 'TREAT' }],
    ['surrounding whitespace', '  HPAYMT ', { ok: true, code: 'HPAYMT' }],
    ['v3-ActReason system|code', 'http://terminology.hl7.org/CodeSystem/v3-ActReason|ELIGVER', { ok: true, code: 'ELIGVER' }],
    ['OID system|code', 'urn:oid:2.16.840.1.113883.5.8|BTG', { ok: true, code: 'BTG' }],
    ['single-element array', ['HCOMPL'], { ok: true, code: 'HCOMPL' }],
    ['missing', undefined, { ok: false, code: 'purpose-missing' }],
    ['empty', '', { ok: false, code: 'purpose-missing' }],
    ['blank', '   ', { ok: false, code: 'purpose-missing' }],
    ['empty array', [], { ok: false, code: 'purpose-missing' }],
    ['repeated header', ['TREAT', 'TREAT'], { ok: false, code: 'purpose-repeated' }],
    ['comma list (Node joins repeats)', 'TREAT, HPAYMT', { ok: false, code: 'purpose-repeated' }],
    ['comma list of the same code', 'TREAT,TREAT', { ok: false, code: 'purpose-repeated' }],
    ['unknown code', 'SHOPPING', { ok: false, code: 'purpose-unknown' }],
    ['codes are case-sensitive', 'treat', { ok: false, code: 'purpose-unknown' }],
    ['the v3-PurposeOfUse system is not ActReason', 'http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse|TREAT', { ok: false, code: 'purpose-unknown' }],
    ['UDAP # form is for tokens only', 'urn:oid:2.16.840.1.113883.5.8#TREAT', { ok: false, code: 'purpose-unknown' }],
    ['empty code after the system', 'http://terminology.hl7.org/CodeSystem/v3-ActReason|', { ok: false, code: 'purpose-unknown' }],
    ['two codes with spaces', 'TREAT HPAYMT', { ok: false, code: 'purpose-unknown' }],
    ['prototype keys are not purposes', '__proto__', { ok: false, code: 'purpose-unknown' }],
  ] as Array<[string, string | string[] | undefined, unknown]>)('%s', (_n, raw, expected) => {
    expect(parsePurposeHeader(raw, purposes)).toEqual(expected);
  });
});

describe('purpose hierarchy', () => {
  it('isDescendant is strict and transitive', () => {
    expect(isDescendant('ELIGVER', 'HPAYMT', purposes)).toBe(true);
    expect(isDescendant('COVERAGE', 'HPAYMT', purposes)).toBe(true);
    expect(isDescendant('HPAYMT', 'HPAYMT', purposes)).toBe(false);
    expect(isDescendant('HPAYMT', 'ELIGVER', purposes)).toBe(false);
    expect(isDescendant('ETREAT', 'HPAYMT', purposes)).toBe(false);
    expect(isDescendant('NOPE', 'TREAT', purposes)).toBe(false);
  });

  it('isCoveredBy includes the code itself', () => {
    expect(isCoveredBy('TREAT', 'TREAT', purposes)).toBe(true);
    expect(isCoveredBy('BTG', 'TREAT', purposes)).toBe(true);
    expect(isCoveredBy('TREAT', 'BTG', purposes)).toBe(false);
  });

  it('terminates on a cyclic hand-built map', () => {
    const cyclic = new Map([P('A', 'B'), P('B', 'A')]);
    expect(isDescendant('A', 'C', cyclic)).toBe(false);
  });
});
