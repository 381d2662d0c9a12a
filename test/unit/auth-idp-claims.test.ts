/**
 * Claims as Keycloak, Okta and Azure AD put them, read into a Principal by configuration alone:
 * scopes from `scope` or `scp`, scopeless tokens, several roles claims, the role map, and the patient
 * context from configurable claims (`patient`, `patient_id`, `fhirUser`).
 */
import { describe, expect, it } from 'vitest';
import { type ClaimRules, principalFromClaims } from '../../src/auth/claims.js';
import { TokenRefusal } from '../../src/auth/refusal.js';
import { parseSmartScopes } from '../../src/auth/scopes.js';

const base = { iss: 'https://idp', sub: 'u1', aud: 'phi-gateway', exp: 2_000_000_000 };

function refused(fn: () => unknown, detail: RegExp): TokenRefusal {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TokenRefusal);
    const r = e as TokenRefusal;
    expect(r.code).toBe('invalid-token');
    expect(r.reason).toBe('claims');
    expect(r.detail).toMatch(detail);
    return r;
  }
  throw new Error('expected a refusal');
}

const scopeNames = (rules: ClaimRules, claims: Record<string, unknown>) =>
  principalFromClaims({ ...base, ...claims }, rules).scopes?.map((s) => `${s.context}/${s.resourceType}.${[...s.permissions].join('')}`);

describe('scopes from scope or scp', () => {
  const rules: ClaimRules = { rolesClaim: 'roles' };
  it.each<[string, Record<string, unknown>, string[] | undefined]>([
    ['Okta scp array', { scp: ['openid', 'patient/Observation.rs'] }, ['patient/Observation.rs']],
    ['Azure scp string', { scp: 'user_impersonation user/Condition.rs' }, ['user/Condition.rs']],
    ['Keycloak scope string', { scope: 'openid profile patient/Patient.r' }, ['patient/Patient.r']],
    ['a scope array', { scope: ['patient/Patient.r', 'openid'] }, ['patient/Patient.r']],
    ['Entra dotted spelling', { scp: 'launch.patient patient.Observation.read user.all.read' }, ['patient/Observation.rs', 'user/*.rs']],
    ['no scope claim at all', {}, undefined],
  ])('%s', (_name, claims, expected) => {
    expect(scopeNames(rules, claims)).toEqual(expected);
  });

  it('an scp claim is never ignored: limited to Observation, nothing else is granted', () => {
    const p = principalFromClaims({ ...base, scp: ['patient/Observation.rs'] }, rules);
    expect(p.scopes).toHaveLength(1);
    expect(p.scopes?.[0]?.resourceType).toBe('Observation');
  });

  it('both claims naming the same SMART scopes: read once', () => {
    expect(scopeNames(rules, { scope: 'openid patient/Observation.rs', scp: ['patient/Observation.rs', 'profile'] })).toEqual(['patient/Observation.rs']);
  });

  it.each<[string, Record<string, unknown>]>([
    ['different scopes', { scope: 'patient/*.rs', scp: ['patient/Observation.rs'] }],
    ['SMART scopes in one only', { scope: 'openid profile', scp: ['patient/Observation.rs'] }],
    ['a malformed scp next to a scope', { scope: 'patient/Observation.rs', scp: 42 }],
  ])('both claims, %s: refused', (_name, claims) => {
    refused(() => principalFromClaims({ ...base, ...claims }, rules), /scope and scp/);
  });

  it('a malformed scope claim limits to nothing', () => {
    expect(scopeNames(rules, { scp: 7 })).toEqual([]);
    expect(scopeNames(rules, { scp: ['patient/Observation.rs', 7] })).toEqual([]);
  });
});

describe('scopelessTokens', () => {
  const keycloak = { scope: 'openid profile email' };
  it('refuse (the default): a scope claim without SMART scopes allows nothing', () => {
    expect(scopeNames({ rolesClaim: 'roles' }, keycloak)).toEqual([]);
    expect(scopeNames({ rolesClaim: 'roles', scopelessTokens: 'refuse' }, keycloak)).toEqual([]);
  });
  it('roles-only: such a claim is treated as absent', () => {
    expect(scopeNames({ rolesClaim: 'roles', scopelessTokens: 'roles-only' }, keycloak)).toBeUndefined();
    expect(scopeNames({ rolesClaim: 'roles', scopelessTokens: 'roles-only' }, { scp: 'user_impersonation' })).toBeUndefined();
  });
  it.each([
    ['a SMART scope whose restriction cannot be read', 'openid patient/Observation.rs?code'],
    ['a SMART-looking scope in the wrong case', 'openid Patient/Observation.rs'],
    ['a SMART scope granting nothing', 'openid patient/Observation.'],
    ['a dotted SMART-looking scope', 'openid user.Observation.Read'],
  ])('roles-only never widens %s into roles alone', (_name, scope) => {
    expect(scopeNames({ rolesClaim: 'roles', scopelessTokens: 'roles-only' }, { scope })).toEqual([]);
  });
  it('roles-only never widens a malformed scope claim', () => {
    expect(scopeNames({ rolesClaim: 'roles', scopelessTokens: 'roles-only' }, { scp: { x: 1 } })).toEqual([]);
  });
  it('a two-part dotted scope (Graph-style User.Read) is not a SMART scope', () => {
    expect(parseSmartScopes('User.Read')).toEqual([]);
    expect(scopeNames({ rolesClaim: 'roles', scopelessTokens: 'roles-only' }, { scp: 'User.Read' })).toBeUndefined();
  });
});

describe('roles claims and the role map', () => {
  const keycloak = {
    realm_access: { roles: ['offline_access', 'uma_authorization', 'default-roles-clinical'] },
    resource_access: { 'phi-gateway': { roles: ['billing'] }, account: { roles: ['manage-account'] } },
    groups: ['/clinician', '/hospital/coder'],
  };

  it('unites the roles of several claims', () => {
    const p = principalFromClaims({ ...base, ...keycloak }, { rolesClaim: ['realm_access.roles', 'groups', 'resource_access.phi-gateway.roles'] });
    expect(p.roles).toEqual(['offline_access', 'uma_authorization', 'default-roles-clinical', '/clinician', '/hospital/coder', 'billing']);
  });

  it('maps group paths to policy roles, and drops every unmapped name', () => {
    const roleMap = new Map<string, readonly string[]>([
      ['/clinician', ['clinician']],
      ['/hospital/coder', ['coder', 'billing']],
    ]);
    const p = principalFromClaims({ ...base, ...keycloak }, { rolesClaim: ['realm_access.roles', 'groups', 'resource_access.phi-gateway.roles'], roleMap });
    // `billing` from resource_access is a policy role name, but not mapped: only the map's target counts.
    expect(p.roles).toEqual(['clinician', 'coder', 'billing']);
    const q = principalFromClaims({ ...base, resource_access: keycloak.resource_access }, { rolesClaim: 'resource_access.phi-gateway.roles', roleMap });
    expect(q.roles).toEqual([]);
  });

  it('a policy role name passes only when mapped to itself', () => {
    const roleMap = new Map<string, readonly string[]>([['billing', ['billing']]]);
    expect(principalFromClaims({ ...base, roles: ['billing', 'clinician'] }, { rolesClaim: 'roles', roleMap }).roles).toEqual(['billing']);
  });

  it('maps Azure dotted app roles', () => {
    const roleMap = new Map<string, readonly string[]>([
      ['Clinician.ReadWrite', ['clinician']],
      ['Billing.Read', ['billing']],
    ]);
    const p = principalFromClaims({ ...base, roles: ['Clinician.ReadWrite', 'Task.Admin'] }, { rolesClaim: 'roles', roleMap });
    expect(p.roles).toEqual(['clinician']);
  });

  it('a map key spelled like an object property is only that key', () => {
    const roleMap = new Map<string, readonly string[]>([['/clinician', ['clinician']]]);
    expect(principalFromClaims({ ...base, roles: ['constructor', '__proto__', 'toString'] }, { rolesClaim: 'roles', roleMap }).roles).toEqual([]);
  });
});

describe('patient context claims', () => {
  const rules = (patientClaims: readonly string[]): ClaimRules => ({ rolesClaim: 'roles', patientClaims });

  it('defaults to `patient` only', () => {
    expect(principalFromClaims({ ...base, patient: 'pat-alice' }, 'roles').patient).toBe('pat-alice');
    expect(principalFromClaims({ ...base, patient_id: 'pat-alice' }, 'roles').patient).toBeUndefined();
  });

  it.each<[string, readonly string[], Record<string, unknown>, string | undefined]>([
    ['patient_id', ['patient_id'], { patient_id: 'pat-alice' }, 'pat-alice'],
    ['Okta launch_response_patient', ['launch_response_patient'], { launch_response_patient: 'pat-alice' }, 'pat-alice'],
    ['relative fhirUser', ['fhirUser'], { fhirUser: 'Patient/pat-alice' }, 'pat-alice'],
    ['absolute fhirUser', ['fhirUser'], { fhirUser: 'https://ehr.example.org/fhir/Patient/pat-alice' }, 'pat-alice'],
    ['fhirUser naming a Practitioner', ['fhirUser'], { fhirUser: 'https://ehr.example.org/fhir/Practitioner/prac-reyes' }, undefined],
    ['two claims naming the same patient', ['patient', 'fhirUser'], { patient: 'pat-alice', fhirUser: 'Patient/pat-alice' }, 'pat-alice'],
    ['a Practitioner fhirUser beside a patient claim', ['patient', 'fhirUser'], { patient: 'pat-alice', fhirUser: 'Practitioner/prac-reyes' }, 'pat-alice'],
    ['an unlisted claim is not read', ['patient'], { fhirUser: 'Patient/pat-brian' }, undefined],
  ])('%s', (_name, claims, extra, expected) => {
    expect(principalFromClaims({ ...base, ...extra }, rules(claims)).patient).toBe(expected);
  });

  it('two listed claims naming different patients: refused', () => {
    refused(() => principalFromClaims({ ...base, patient: 'pat-alice', fhirUser: 'Patient/pat-brian' }, rules(['patient', 'fhirUser'])), /different patients/);
    refused(() => principalFromClaims({ ...base, patient: 'pat-alice', patient_id: 'pat-brian' }, rules(['patient', 'patient_id'])), /different patients/);
  });

  it.each<[string, string, unknown]>([
    ['patient_id a number', 'patient_id', 42],
    ['patient_id with a slash', 'patient_id', 'a/b'],
    ['fhirUser empty', 'fhirUser', ''],
    ['fhirUser a bare id', 'fhirUser', 'pat-alice'],
    ['fhirUser with a query', 'fhirUser', 'https://ehr/fhir/Patient/pat-alice?x=1'],
    ['fhirUser not http(s)', 'fhirUser', 'urn:uuid:Patient/pat-alice'],
    ['fhirUser lower-case type', 'fhirUser', 'patient/pat-alice'],
    ['fhirUser an object', 'fhirUser', { reference: 'Patient/pat-alice' }],
    ['fhirUser null', 'fhirUser', null],
  ])('a listed claim present but unusable is refused: %s', (_name, claim, value) => {
    refused(() => principalFromClaims({ ...base, [claim]: value }, rules([claim])), /claim is not/);
  });
});

describe('client and token ids', () => {
  it('reads the client from client_id, azp (Keycloak, Azure v2), cid (Okta) or appid (Azure v1)', () => {
    expect(principalFromClaims({ ...base, cid: '0oa1okta' }, 'roles').clientId).toBe('0oa1okta');
    expect(principalFromClaims({ ...base, azp: 'kc-app', cid: 'x' }, 'roles').clientId).toBe('kc-app');
    expect(principalFromClaims({ ...base, appid: 'azure-v1' }, 'roles').clientId).toBe('azure-v1');
  });
  it('takes Azure `uti` as the token id when there is no jti', () => {
    expect(principalFromClaims({ ...base, uti: 'AbCd' }, 'roles').jti).toBe('AbCd');
    expect(principalFromClaims({ ...base, uti: 'AbCd', jti: 'j1' }, 'roles').jti).toBe('j1');
  });
});
