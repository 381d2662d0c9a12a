import { describe, expect, it } from 'vitest';
import { ACT_CODE, CONFIDENTIALITY, compileLabelSet, expandLabel, isValidLabel, labelVocabulary, unknownLabel } from '../../../src/policy/labels.js';

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
    for (const ok of ['R', 'V', 'PSY', 'PSYTHPN', 'SUD', 'HIV', 'ETH', 'SDV', `${CONFIDENTIALITY}|R`, `${ACT_CODE}|PSY`]) {
      expect(unknownLabel(ok), ok).toBeUndefined();
    }
  });

  it('an HL7 system|code names a code of that system', () => {
    // R is a confidentiality level, not an ActCode: `v3-ActCode|R` would match no real label.
    expect(unknownLabel(`${ACT_CODE}|R`)).toMatch(/not a v3-ActCode sensitivity code/);
    expect(unknownLabel(`${CONFIDENTIALITY}|SUD`)).toMatch(/not a v3-Confidentiality code/);
    // Retired confidentiality codes still found in data are fine.
    expect(unknownLabel(`${CONFIDENTIALITY}|PSY`)).toBeUndefined();
  });
});

describe('codes a slip of one key away from another', () => {
  it('a rarely withheld HL7 code one letter from a known code is accepted only as system|code', () => {
    // PSY -> PHY, R -> B: both real codes, so only the spelling can tell a slip from intent.
    expect(unknownLabel('PHY')).toMatch(/'PHY' is one letter from 'PSY'?.*write it as http:\/\/terminology\.hl7\.org\/CodeSystem\/v3-ActCode\|PHY/);
    expect(unknownLabel('B')).toMatch(/'B' is one letter from/);
    expect(unknownLabel(`${ACT_CODE}|PHY`)).toBeUndefined();
    expect(unknownLabel(`${ACT_CODE}|B`)).toBeUndefined();
    // The common categories stay plain, near misses or not (SUD/STD: see the policy-wide check).
    for (const ok of ['STD', 'SUD', 'MH', 'BH', 'EMP', 'CEL', 'VIP']) expect(unknownLabel(ok), ok).toBeUndefined();
  });
});

describe("the policy's own labels (labels:)", () => {
  const vocabulary = labelVocabulary([
    { code: 'ETHUD-LOCAL', system: 'https://hospital.example/labels', display: 'alcohol use, local' },
    { code: 'VIP', system: 'https://hospital.example/labels' },
  ]);

  it('a label of another system must be declared; a misspelt system or code is a problem with the close one', () => {
    expect(unknownLabel('https://hospital.example/labels|ETHUD-LOCAL', vocabulary)).toBeUndefined();
    expect(unknownLabel('ETHUD-LOCAL', vocabulary)).toBeUndefined();
    expect(unknownLabel('https://hospital.example/label|ETHUD-LOCAL', vocabulary)).toMatch(
      /not declared under labels:.*did you mean 'https:\/\/hospital\.example\/labels\|ETHUD-LOCAL'\?/,
    );
    expect(unknownLabel('ETHUD-LOCL', vocabulary)).toMatch(/did you mean 'ETHUD-LOCAL'\?/);
    expect(unknownLabel('http://example.org/tags|ANYTHING')).toMatch(/not declared under labels:/);
  });

  it('a declared code withholds its own system, codings without a system, and nothing of other systems', () => {
    const set = compileLabelSet(['ETHUD-LOCAL'], vocabulary);
    expect(set.labels).toEqual(['https://hospital.example/labels|ETHUD-LOCAL']);
    expect(set.match([{ system: 'https://hospital.example/labels', code: 'ETHUD-LOCAL' }])).toBe('https://hospital.example/labels|ETHUD-LOCAL');
    expect(set.match([{ code: 'ETHUD-LOCAL' }])).toBe('|ETHUD-LOCAL');
    expect(set.match([{ system: 'https://other.example/labels', code: 'ETHUD-LOCAL' }])).toBeUndefined();
  });

  it('an HL7 code also declared under another system withholds both', () => {
    expect(expandLabel('VIP', vocabulary)).toEqual([`${ACT_CODE}|VIP`, `${CONFIDENTIALITY}|VIP`, 'https://hospital.example/labels|VIP']);
    expect(compileLabelSet(['VIP'], vocabulary).match([{ system: 'https://hospital.example/labels', code: 'VIP' }])).toBeDefined();
  });
});
