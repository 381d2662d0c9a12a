import { describe, expect, it } from 'vitest';
import { ACT_CODE, CONFIDENTIALITY, compileLabelSet, expandLabel, isValidLabel, unknownLabel } from '../../../src/policy/labels.js';

describe('security label sets', () => {
  const set = compileLabelSet(['R', 'PSY', 'http://example.org/tags|VIP']);

  it('expands plain confidentiality codes to v3-Confidentiality only', () => {
    expect(expandLabel('R')).toEqual([`${CONFIDENTIALITY}|R`]);
  });

  it('expands other plain codes to ActCode and the retired confidentiality code', () => {
    expect(expandLabel('PSY')).toEqual([`${ACT_CODE}|PSY`, `${CONFIDENTIALITY}|PSY`]);
  });

  it.each([
    ['confidentiality R', [{ system: CONFIDENTIALITY, code: 'R' }], `${CONFIDENTIALITY}|R`],
    ['ActCode PSY', [{ system: ACT_CODE, code: 'PSY' }], `${ACT_CODE}|PSY`],
    ['retired confidentiality PSY', [{ system: CONFIDENTIALITY, code: 'PSY' }], `${CONFIDENTIALITY}|PSY`],
    ['legacy system URI', [{ system: 'http://hl7.org/fhir/v3/Confidentiality', code: 'R' }], `${CONFIDENTIALITY}|R`],
    ['OID system', [{ system: 'urn:oid:2.16.840.1.113883.5.4', code: 'PSY' }], `${ACT_CODE}|PSY`],
    ['system|code label', [{ system: 'http://example.org/tags', code: 'VIP' }], 'http://example.org/tags|VIP'],
    ['coding without system matches by code (fail safe)', [{ code: 'R' }], '|R'],
    ['second coding matches', [{ system: CONFIDENTIALITY, code: 'N' }, { system: ACT_CODE, code: 'PSY' }], `${ACT_CODE}|PSY`],
  ])('withholds %s', (_n, security, expected) => {
    expect(set.match(security)).toBe(expected);
  });

  it.each([
    ['normal confidentiality', [{ system: CONFIDENTIALITY, code: 'N' }]],
    ['R in ActCode is not confidentiality R', [{ system: ACT_CODE, code: 'R' }]],
    ['same code in another system', [{ system: 'http://example.org/other', code: 'PSY' }]],
    ['VIP in ActCode is not the custom VIP', [{ system: ACT_CODE, code: 'VIP' }]],
    ['no labels', undefined],
    ['odd shapes', [null, 'R', { system: CONFIDENTIALITY }]],
  ])('releases %s', (_n, security) => {
    expect(set.match(security as never)).toBeUndefined();
  });

  it('an empty set matches nothing and lists nothing', () => {
    const empty = compileLabelSet([]);
    expect(empty.labels).toEqual([]);
    expect(empty.match([{ system: CONFIDENTIALITY, code: 'V' }])).toBeUndefined();
  });

  it('validates label syntax', () => {
    expect(['R', 'PSYTHPN', 'http://x.org/cs|A-1'].every(isValidLabel)).toBe(true);
    expect(['', 'bad label', '|R', 'sys|', 'a|b|c'].some(isValidLabel)).toBe(false);
  });

  it('a label naming no known code is a problem, with the close one it may have meant', () => {
    // A typo used to pass check-config and withhold nothing: the VIP chart went out with 200.
    expect(unknownLabel('psythpn')).toContain("did you mean 'PSYTHPN'");
    expect(unknownLabel('SUDX')).toContain("did you mean 'SUD'");
    expect(unknownLabel('r')).toContain("did you mean 'R'");
    expect(unknownLabel(`${ACT_CODE}|PSYCH`)).toContain("did you mean 'PSY'");
    expect(unknownLabel('http://hl7.org/fhir/v3/Confidentiality|Q')).toMatch(/unknown security label code 'Q'/);
    for (const ok of ['R', 'V', 'PSY', 'PSYTHPN', 'SUD', 'HIV', 'ETH', 'SDV', `${CONFIDENTIALITY}|R`, 'http://example.org/tags|ANYTHING']) {
      expect(unknownLabel(ok), ok).toBeUndefined();
    }
  });
});
