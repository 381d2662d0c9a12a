import { describe, expect, it } from 'vitest';
import { claimAt, principalFromClaims, purposesFrom } from '../../../src/auth/claims.js';
import { GatewayError } from '../../../src/errors.js';

const base = { iss: 'https://idp', sub: 'u1', aud: 'phi-gateway', exp: 2_000_000_000 };
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

function refused(fn: () => unknown, detail: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(GatewayError);
    expect((e as GatewayError).code).toBe('invalid-token');
    expect((e as GatewayError).detail).toMatch(detail);
    return;
  }
  throw new Error('expected a refusal');
}

describe('roles', () => {
  it.each<[string, unknown, string[]]>([
    ['a string array', ['billing', 'coder'], ['billing', 'coder']],
    ['duplicates and empty strings dropped', ['billing', '', 'billing'], ['billing']],
    ['a single string as one role', 'clinician', ['clinician']],
    ['an empty string', '', []],
    ['a number', 42, []],
    ['an object', { billing: true }, []],
    ['a mixed array (malformed claim)', ['billing', 7], []],
    ['absent', undefined, []],
  ])('%s', (_name, roles, expected) => {
    expect(principalFromClaims({ ...base, roles }, 'roles').roles).toEqual(expected);
  });
  it('follows a dotted path, and prefers a claim whose own name contains dots', () => {
    const claims = { ...base, realm_access: { roles: ['coder'] }, 'https://example.org/roles': ['auditor'] };
    expect(principalFromClaims(claims, 'realm_access.roles').roles).toEqual(['coder']);
    expect(principalFromClaims(claims, 'https://example.org/roles').roles).toEqual(['auditor']);
    expect(principalFromClaims(claims, 'realm_access.missing').roles).toEqual([]);
  });
  it('never walks the prototype chain', () => {
    const claims = JSON.parse('{"sub":"u1","iss":"i","exp":1,"__proto__":{"roles":["clinician"]}}') as Record<string, unknown>;
    expect(principalFromClaims(claims, 'roles').roles).toEqual([]);
    expect(claimAt({}, 'constructor.name')).toBeUndefined();
    expect(claimAt({ a: {} }, 'a.toString')).toBeUndefined();
    expect(principalFromClaims(claims, '__proto__.roles').roles).toEqual([]);
  });
});

describe('purposes of use', () => {
  it('is undefined when the token carries no purpose claim', () => {
    expect(purposesFrom(base)).toBeUndefined();
    expect(purposesFrom({ ...base, extensions: { ihe_iua: { subject_name: 'x' } } })).toBeUndefined();
  });
  it.each<[string, unknown, string[]]>([
    ['a plain code', 'TREAT', ['TREAT']],
    ['plain codes', ['TREAT', 'COC'], ['TREAT', 'COC']],
    ['system|code (ActReason)', [`${ACT_REASON}|HPAYMT`], ['HPAYMT']],
    ['system|code (PurposeOfUse)', ['http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse|TREAT'], ['TREAT']],
    ['urn:oid#code', ['urn:oid:2.16.840.1.113883.5.8#HRESCH'], ['HRESCH']],
    ['a foreign system is ignored', ['http://loinc.org|TREAT', 'TREAT'], ['TREAT']],
    ['garbage codes are ignored', ['TRE AT', '', '|', 'x|', 12], []],
    ['a number is no purpose', 7, []],
  ])('purpose_of_use: %s', (_name, value, expected) => {
    expect(purposesFrom({ ...base, purpose_of_use: value })).toEqual(expected);
  });
  it('reads IHE IUA Codings, requiring a purpose-of-use system', () => {
    const claims = {
      ...base,
      extensions: {
        ihe_iua: {
          purpose_of_use: [
            { system: ACT_REASON, code: 'TREAT' },
            { system: 'urn:oid:2.16.840.1.113883.5.8', code: 'ETREAT' },
            { code: 'HPAYMT' },
            { system: 'http://snomed.info/sct', code: '1234' },
          ],
        },
      },
    };
    expect(purposesFrom(claims)).toEqual(['TREAT', 'ETREAT']);
    // A single Coding rather than an array is tolerated.
    expect(purposesFrom({ ...base, extensions: { ihe_iua: { purpose_of_use: { system: ACT_REASON, code: 'COC' } } } })).toEqual(['COC']);
  });
  it('reads UDAP / FAST hl7-b2b strings', () => {
    const claims = { ...base, extensions: { 'hl7-b2b': { purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT', 'urn:oid:1.2.3#TREAT'] } } };
    expect(purposesFrom(claims)).toEqual(['TREAT']);
  });
  it('unions every source and de-duplicates', () => {
    const claims = {
      ...base,
      purpose_of_use: ['TREAT'],
      extensions: { ihe_iua: { purpose_of_use: [{ system: ACT_REASON, code: 'TREAT' }] }, 'hl7-b2b': { purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#HPAYMT'] } },
    };
    expect(purposesFrom(claims)).toEqual(['TREAT', 'HPAYMT']);
  });
  it('gives [] (nothing allowed), never undefined (unlimited), for a present but useless claim', () => {
    expect(purposesFrom({ ...base, purpose_of_use: [] })).toEqual([]);
    expect(purposesFrom({ ...base, extensions: { ihe_iua: { purpose_of_use: [{ system: 'x', code: 'TREAT' }] } } })).toEqual([]);
    expect(purposesFrom({ ...base, purpose_of_use: null })).toEqual([]);
  });
});

describe('patient launch context', () => {
  it.each([
    ['123', '123'],
    ['Patient/123', '123'],
    ['a-b.c', 'a-b.c'],
  ])('%s -> %s', (value, expected) => {
    expect(principalFromClaims({ ...base, patient: value }, 'roles').patient).toBe(expected);
  });
  it.each([[''], ['Patient/'], ['Observation/1'], ['https://fhir/Patient/1'], ['1 OR 1=1'], ['x'.repeat(65)], [123], [['1']], [null]])(
    'refuses %j rather than dropping the restriction',
    (value) => {
      refused(() => principalFromClaims({ ...base, patient: value }, 'roles'), /patient/);
    },
  );
});

describe('other claims', () => {
  it('maps client id, jti, family name, exp; leaves absent ones undefined', () => {
    const p = principalFromClaims({ ...base, client_id: 'c1', azp: 'a1', jti: 'j', family_name: 'Doe' }, 'roles');
    expect(p).toMatchObject({ clientId: 'c1', jti: 'j', familyName: 'Doe', exp: base.exp, iss: 'https://idp', sub: 'u1' });
    const q = principalFromClaims({ ...base, jti: 5, family_name: ['x'] }, 'roles');
    expect(q.clientId).toBeUndefined();
    expect(q.jti).toBeUndefined();
    expect(q.familyName).toBeUndefined();
  });
  it('scope: absent -> undefined; present -> parsed; malformed -> no scopes', () => {
    expect(principalFromClaims(base, 'roles').scopes).toBeUndefined();
    expect(principalFromClaims({ ...base, scope: 'openid' }, 'roles').scopes).toEqual([]);
    expect(principalFromClaims({ ...base, scope: 42 }, 'roles').scopes).toEqual([]);
    expect(principalFromClaims({ ...base, scope: ['patient/Patient.r', 'openid'] }, 'roles').scopes).toHaveLength(1);
  });
  it('refuses a missing or unusable sub', () => {
    for (const sub of [undefined, '', ' ', 5, 'x'.repeat(1025), 'a\u0000b']) {
      refused(() => principalFromClaims({ ...base, sub }, 'roles'), /sub/);
    }
  });
  it('does not mutate the claims and returns a frozen principal', () => {
    const claims = { ...base, roles: ['billing'], purpose_of_use: ['TREAT'] };
    const snapshot = structuredClone(claims);
    const p = principalFromClaims(claims, 'roles');
    expect(claims).toEqual(snapshot);
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.roles)).toBe(true);
    expect(p.roles).not.toBe(claims.roles);
  });
});
