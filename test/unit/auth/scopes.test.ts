import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseSmartScopes } from '../../../src/auth/scopes.js';

function summary(scope: string): string[] {
  return parseSmartScopes(scope).map(
    (s) => `${s.context}/${s.resourceType}.${[...s.permissions].sort((a, b) => 'cruds'.indexOf(a) - 'cruds'.indexOf(b)).join('')}${s.params.map(([k, v]) => `?${k}=${v}`).join('')}`,
  );
}

describe('parseSmartScopes', () => {
  it.each<[string, string[]]>([
    ['patient/Observation.rs', ['patient/Observation.rs']],
    ['user/*.cruds', ['user/*.cruds']],
    ['system/Patient.r', ['system/Patient.r']],
    ['patient/Observation.read', ['patient/Observation.rs']],
    ['patient/Observation.write', ['patient/Observation.cud']],
    ['user/*.*', ['user/*.cruds']],
    ['openid fhirUser launch launch/patient offline_access profile', []],
    ['  patient/Condition.s\tuser/Encounter.r  ', ['patient/Condition.s', 'user/Encounter.r']],
  ])('%s', (scope, expected) => {
    expect(summary(scope)).toEqual(expected);
  });

  it.each([
    'patient/Observation.sr', // v2 letters must be in c r u d s order
    'patient/Observation.rr',
    'patient/Observation.',
    'patient/Observation.x',
    'patient/Observation',
    'practitioner/Observation.r',
    'Patient/Observation.r',
    'patient/observation.r',
    'patient/Obs-ervation.r',
    'patient/*.READ',
  ])('ignores the malformed scope %s', (scope) => {
    expect(parseSmartScopes(scope)).toEqual([]);
  });

  it('parses ?param=value restrictions, decoding percent-escapes only', () => {
    const [s] = parseSmartScopes('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&code=a+b%20c');
    expect(s.params).toEqual([
      ['category', 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory'],
      ['code', 'a+b c'],
    ]);
  });

  it('drops a scope whose restriction cannot be read, instead of granting it unrestricted', () => {
    for (const bad of ['patient/Observation.rs?', 'patient/Observation.rs?category', 'patient/Observation.rs?=x', 'patient/Observation.rs?a=%E0%A4%A', 'patient/Observation.rs?a=1&']) {
      expect(parseSmartScopes(bad)).toEqual([]);
    }
  });

  it('never grants a permission letter that is not in the scope (property)', () => {
    const letters = fc.subarray(['c', 'r', 'u', 'd', 's'] as const, { minLength: 1 });
    fc.assert(
      fc.property(fc.constantFrom('patient', 'user', 'system'), fc.constantFrom('Patient', 'Observation', '*'), letters, (ctx, type, perms) => {
        const [s] = parseSmartScopes(`${ctx}/${type}.${perms.join('')}`);
        expect([...s.permissions].sort()).toEqual([...perms].sort());
        expect(s.context).toBe(ctx);
        expect(s.resourceType).toBe(type);
      }),
    );
  });

  it('never throws on arbitrary input', () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        expect(Array.isArray(parseSmartScopes(text))).toBe(true);
      }),
    );
  });
});
