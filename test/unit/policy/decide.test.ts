import { describe, expect, it } from 'vitest';
import type { Principal, SmartScope } from '../../../src/auth/principal.js';
import { compilePolicy, type ElementCompiler } from '../../../src/policy/compile.js';
import { decide } from '../../../src/policy/decide.js';
import type { PolicyFile } from '../../../src/policy/model.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import type { ClassifiedRequest, Interaction } from '../../../src/policy/request.js';

// Element plans are the redaction engine's business; here they only need keepsAll and a few
// derived search parameters per type.
const DERIVED: Record<string, string[]> = {
  Patient: ['name', 'gender', 'birthdate'],
  Observation: ['code', 'subject', 'patient', 'date'],
  Claim: ['patient', 'status'],
};
const fakeCompiler: ElementCompiler = {
  compileElementPlan: (_type, rule) => ({ keepsAll: (rule.elements ?? ['*']).includes('*') && !rule.remove, describe: () => [] }),
  derivedSearchParams: (type) => DERIVED[type] ?? [],
};

const POLICY: PolicyFile = {
  version: 1,
  purposes: {
    TREAT: { display: 'treatment' },
    COC: { display: 'coordination of care', parent: 'TREAT' },
    BTG: { display: 'break the glass', parent: 'TREAT' },
    HPAYMT: { display: 'payment' },
    CLMATTCH: { display: 'claim attachment', parent: 'HPAYMT' },
    HOPERAT: { display: 'operations' },
    HCOMPL: { display: 'compliance', parent: 'HOPERAT' },
  },
  dataSets: {
    clinical: {
      withhold: ['R', 'V'],
      rules: [
        // This compiler derives no parameters: includes follow only references granted for search.
        { types: ['Patient'], interactions: ['read', 'search', 'history'], operations: ['$everything'], search: ['link'] },
        { types: ['Observation'], interactions: ['read', 'search', 'create', 'update'], search: ['subject.name', 'subject'] },
      ],
    },
    billing: { rules: [{ types: ['Patient'], elements: ['name'] }, { types: ['Claim'] }] },
    coding: { rules: [{ types: ['Claim'] }] },
    portal: { rules: [{ types: ['Patient', 'Observation'] }] },
    none: { rules: [] },
    emergency: { rules: [{ types: ['Patient', 'Observation'] }] },
  },
  roles: {
    clinician: { purposes: { TREAT: 'clinical' }, breakGlass: true },
    billing: { purposes: { HPAYMT: 'billing' } },
    'billing-lead': { purposes: { HPAYMT: 'billing' } },
    coder: { purposes: { HPAYMT: 'coding' } },
    'patient-app': { purposes: { TREAT: 'portal' }, compartment: 'patient' },
    auditor: { purposes: { HCOMPL: 'none' }, capabilities: ['audit-export'] },
  },
  breakGlass: { dataSet: 'emergency' },
};

function compiled(raw: PolicyFile = POLICY): CompiledPolicy {
  const r = compilePolicy(raw, JSON.stringify(raw), fakeCompiler);
  if (!r.ok) throw new Error(r.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
  return r.policy;
}
const policy = compiled();

function principal(p: Partial<Principal> = {}): Principal {
  return {
    iss: 'https://idp.test',
    sub: 'u1',
    clientId: undefined,
    jti: undefined,
    roles: ['clinician'],
    tokenPurposes: undefined,
    patient: undefined,
    scopes: undefined,
    familyName: undefined,
    exp: 2_000_000_000,
    ...p,
  };
}

function req(interaction: Interaction, p: Partial<ClassifiedRequest> = {}): ClassifiedRequest {
  return {
    method: 'GET',
    interaction,
    resourceType: undefined,
    id: undefined,
    versionId: undefined,
    operation: undefined,
    compartment: undefined,
    params: [],
    upstreamPath: '/',
    upstreamQuery: '',
    body: undefined,
    entries: undefined,
    ...p,
  };
}
const read = (type: string, id = '1') => req('read', { resourceType: type, id });
const search = (type: string, params: Array<[string, string]> = []) => req('search-type', { resourceType: type, params });
const scope = (s: string): SmartScope => {
  const m = /^(patient|user|system)\/([A-Za-z*]+)\.([cruds]+)(?:\?(.*))?$/.exec(s)!;
  return {
    context: m[1] as SmartScope['context'],
    resourceType: m[2],
    permissions: new Set(m[3].split('') as Array<'c' | 'r' | 'u' | 'd' | 's'>),
    params: m[4] ? m[4].split('&').map((kv) => kv.split('=') as [string, string]) : [],
  };
};

interface Case {
  name: string;
  principal?: Partial<Principal>;
  purpose?: string;
  role?: string;
  request: ClassifiedRequest;
  expect: string; // error code, or `allow <rule>`
}

const CASES: Case[] = [
  // 1. token purposes
  { name: 'token purposes cover the declared purpose', principal: { tokenPurposes: ['TREAT'] }, request: read('Patient'), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'a child of a token purpose is covered', principal: { tokenPurposes: ['TREAT'] }, purpose: 'COC', request: read('Patient'), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'purpose outside the token', principal: { tokenPurposes: ['HPAYMT'] }, request: read('Patient'), expect: 'purpose-not-in-token' },
  { name: 'a parent of the token purpose is not covered', principal: { tokenPurposes: ['COC'] }, request: read('Patient'), expect: 'purpose-not-in-token' },
  { name: 'an empty token purpose list covers nothing', principal: { tokenPurposes: [] }, request: read('Patient'), expect: 'purpose-not-in-token' },
  { name: 'unknown purpose in a hand-built call', purpose: 'NOPE', request: read('Patient'), expect: 'purpose-unknown' },
  // 2. role selection
  { name: 'no role grants the purpose', principal: { roles: ['billing'] }, request: read('Patient'), expect: 'purpose-not-permitted' },
  { name: 'unknown roles grant nothing', principal: { roles: ['superuser'] }, request: read('Patient'), expect: 'purpose-not-permitted' },
  { name: 'child purpose through the parent grant', principal: { roles: ['billing'] }, purpose: 'CLMATTCH', request: read('Claim'), expect: 'allow roles.billing.purposes.HPAYMT -> dataSets.billing.rules[1]' },
  { name: 'two roles, different data sets', principal: { roles: ['billing', 'coder'] }, purpose: 'HPAYMT', request: read('Claim'), expect: 'role-ambiguous' },
  { name: 'two roles, same data set', principal: { roles: ['billing', 'billing-lead'] }, purpose: 'HPAYMT', request: read('Claim'), expect: 'allow roles.billing.purposes.HPAYMT -> dataSets.billing.rules[1]' },
  { name: 'X-Role resolves the ambiguity', principal: { roles: ['billing', 'coder'] }, purpose: 'HPAYMT', role: 'coder', request: read('Claim'), expect: 'allow roles.coder.purposes.HPAYMT -> dataSets.coding.rules[0]' },
  { name: 'X-Role not held', principal: { roles: ['billing', 'coder'] }, purpose: 'HPAYMT', role: 'clinician', request: read('Claim'), expect: 'role-not-held' },
  { name: 'X-Role held but without the purpose', principal: { roles: ['billing', 'clinician'] }, purpose: 'HPAYMT', role: 'clinician', request: read('Claim'), expect: 'purpose-not-permitted' },
  // break-glass
  { name: 'BTG by an eligible role gets the emergency plan', purpose: 'BTG', request: read('Observation'), expect: 'allow roles.clinician.breakGlass -> breakGlass.dataSet emergency -> dataSets.emergency.rules[0]' },
  { name: 'BTG by a role that is not eligible', principal: { roles: ['billing'] }, purpose: 'BTG', request: read('Patient'), expect: 'break-glass-not-eligible' },
  { name: 'BTG is not inherited from TREAT by non-eligible roles', principal: { roles: ['patient-app'], patient: '1' }, purpose: 'BTG', request: read('Patient'), expect: 'break-glass-not-eligible' },
  { name: 'BTG outside the token purposes', principal: { tokenPurposes: ['HPAYMT'] }, purpose: 'BTG', request: read('Patient'), expect: 'purpose-not-in-token' },
  // 3. interaction and type
  { name: 'capabilities are always allowed', principal: { roles: ['auditor'] }, purpose: 'HCOMPL', request: req('capabilities'), expect: 'allow roles.auditor.purposes.HCOMPL -> capabilities' },
  { name: 'a data set without rules sees no type', principal: { roles: ['auditor'] }, purpose: 'HCOMPL', request: read('Patient'), expect: 'type-denied' },
  { name: 'type without a plan', request: read('Claim'), expect: 'type-denied' },
  { name: 'search-system is never granted', request: req('search-system'), expect: 'interaction-denied' },
  { name: 'history-system is never granted', request: req('history-system'), expect: 'interaction-denied' },
  { name: 'history-instance needs history', request: req('history-instance', { resourceType: 'Observation', id: '1' }), expect: 'interaction-denied' },
  { name: 'history-type with history', request: req('history-type', { resourceType: 'Patient', params: [['_since', '2020']] }), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'vread needs read', principal: { roles: ['billing'] }, purpose: 'HPAYMT', request: req('vread', { resourceType: 'Claim', id: '1', versionId: '2' }), expect: 'allow roles.billing.purposes.HPAYMT -> dataSets.billing.rules[1]' },
  { name: 'create granted', request: req('create', { method: 'POST', resourceType: 'Observation' }), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: 'create not granted', request: req('create', { method: 'POST', resourceType: 'Patient' }), expect: 'interaction-denied' },
  { name: 'patch is not update', request: req('patch', { method: 'PATCH', resourceType: 'Observation', id: '1' }), expect: 'interaction-denied' },
  { name: 'delete not granted', request: req('delete', { method: 'DELETE', resourceType: 'Observation', id: '1' }), expect: 'interaction-denied' },
  { name: 'granted operation', request: req('operation', { resourceType: 'Patient', id: '1', operation: '$everything', params: [['_count', '10']] }), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'operation not granted on the type', request: req('operation', { resourceType: 'Observation', operation: '$everything' }), expect: 'interaction-denied' },
  { name: '$graphql not granted', request: req('operation', { resourceType: 'Patient', operation: '$graphql' }), expect: 'interaction-denied' },
  { name: 'system-level operation', request: req('operation', { operation: '$export' }), expect: 'interaction-denied' },
  { name: 'compartment search needs search on the target', request: req('search-compartment', { resourceType: 'Observation', compartment: { type: 'Patient', id: '1' } }), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: 'compartment owner must be readable', principal: { roles: ['coder'] }, purpose: 'HPAYMT', request: req('search-compartment', { resourceType: 'Claim', compartment: { type: 'Patient', id: '1' } }), expect: 'type-denied' },
  { name: 'a read without a type is unclassified', request: req('read'), expect: 'request-unclassified' },
  // 4. search parameters
  { name: 'derived parameter', request: search('Observation', [['code', 'x'], ['date', 'ge2020']]), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: 'modifiers are stripped', request: search('Observation', [['code:text', 'x'], ['subject:Patient', '1']]), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  // _revinclude=* and an include into types outside the plan are refused since includes are judged (test/unit/policy/includes.test.ts).
  { name: 'control parameters', request: search('Patient', [['_count', '5'], ['_total', 'none'], ['_include', 'Patient:link:Patient'], ['_revinclude', 'Observation:subject']]), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'a wildcard revinclude', request: search('Patient', [['_revinclude', '*']]), expect: 'type-denied' },
  { name: 'an include reaching no granted type', request: search('Patient', [['_include', 'Patient:general-practitioner']]), expect: 'type-denied' },
  { name: 'an include along a reference not granted for search', request: search('Patient', [['_include', 'Patient:organization']]), expect: 'type-denied' },
  { name: '_offset is refused (the gateway pages)', request: search('Patient', [['_offset', '10']]), expect: 'search-param-denied' },
  { name: 'derived parameters of a redacted type', principal: { roles: ['billing'] }, purpose: 'HPAYMT', request: search('Patient', [['name', 'x'], ['birthdate', '1950']]), expect: 'allow roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]' },
  { name: 'unknown parameter', principal: { roles: ['billing'] }, purpose: 'HPAYMT', request: search('Claim', [['use', 'claim']]), expect: 'search-param-denied' },
  { name: 'chain listed verbatim', request: search('Observation', [['subject.name', 'x']]), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: 'chain not listed', request: search('Observation', [['patient.name', 'x']]), expect: 'search-param-denied' },
  { name: 'chain with a type modifier is another chain', request: search('Observation', [['subject:Patient.name', 'x']]), expect: 'search-param-denied' },
  { name: '_has is denied', request: search('Patient', [['_has:Observation:patient:code', '1234']]), expect: 'search-param-denied' },
  { name: '_sort on an allowed parameter', request: search('Observation', [['_sort', '-date,code']]), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: '_sort on another parameter is an oracle', request: search('Observation', [['_sort', 'value-quantity']]), expect: 'search-param-denied' },
  { name: '_summary=text on a redacted type', principal: { roles: ['billing'] }, purpose: 'HPAYMT', request: search('Patient', [['_summary', 'text']]), expect: 'search-param-denied' },
  { name: 'conditional update parameters are checked too', request: req('update', { method: 'PUT', resourceType: 'Observation', params: [['value-string', 'x']] }), expect: 'search-param-denied' },
  { name: 'parameters on a read are checked', request: req('read', { resourceType: 'Patient', id: '1', params: [['_elements', 'name']] }), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'unknown $everything parameter', request: req('operation', { resourceType: 'Patient', id: '1', operation: '$everything', params: [['_typeFilter', 'x']] }), expect: 'search-param-denied' },
  // 5. compartment
  { name: 'own patient', principal: { patient: '7' }, request: read('Patient', '7'), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'other patient', principal: { patient: '7' }, request: read('Patient', '8'), expect: 'compartment-denied' },
  { name: 'no substring match of ids', principal: { patient: '12' }, request: read('Patient', '123'), expect: 'compartment-denied' },
  { name: 'compartment search on another patient', principal: { patient: '7' }, request: req('search-compartment', { resourceType: 'Observation', compartment: { type: 'Patient', id: '8' } }), expect: 'compartment-denied' },
  { name: '$everything on another patient', principal: { patient: '7' }, request: req('operation', { resourceType: 'Patient', id: '8', operation: '$everything' }), expect: 'compartment-denied' },
  { name: 'compartment role without patient claim fails closed', principal: { roles: ['patient-app'] }, request: search('Observation'), expect: 'compartment-denied' },
  { name: 'compartment role with patient claim', principal: { roles: ['patient-app'], patient: '7' }, request: search('Observation'), expect: 'allow roles.patient-app.purposes.TREAT -> dataSets.portal.rules[0]' },
  // 6. SMART scopes
  { name: 'read scope covers a read', principal: { scopes: [scope('user/Patient.rs')] }, request: read('Patient'), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'read scope does not cover search', principal: { scopes: [scope('user/Patient.r')] }, request: search('Patient'), expect: 'scope-denied' },
  { name: 'scope on another type', principal: { scopes: [scope('user/Observation.rs')] }, request: read('Patient'), expect: 'scope-denied' },
  { name: 'wildcard scope', principal: { scopes: [scope('user/*.cruds')] }, request: req('create', { resourceType: 'Observation' }), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: 'create needs c', principal: { scopes: [scope('user/*.rs')] }, request: req('create', { resourceType: 'Observation' }), expect: 'scope-denied' },
  { name: 'patient scope without patient context', principal: { scopes: [scope('patient/*.rs')] }, request: read('Patient'), expect: 'scope-denied' },
  { name: 'patient scope with patient context', principal: { scopes: [scope('patient/*.rs')], patient: '1' }, request: read('Patient'), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0]' },
  { name: 'no scopes at all', principal: { scopes: [] }, request: read('Patient'), expect: 'scope-denied' },
  { name: 'scope with params covers only searches carrying them', principal: { scopes: [scope('user/Observation.rs?code=x')] }, request: search('Observation', [['code', 'x']]), expect: 'allow roles.clinician.purposes.TREAT -> dataSets.clinical.rules[1]' },
  { name: 'scope with params does not cover other searches', principal: { scopes: [scope('user/Observation.rs?code=x')] }, request: search('Observation', [['code', 'y']]), expect: 'scope-denied' },
  { name: '$everything needs a wildcard search scope', principal: { scopes: [scope('user/Patient.rs')] }, request: req('operation', { resourceType: 'Patient', id: '1', operation: '$everything' }), expect: 'scope-denied' },
  // batch / transaction
  {
    name: 'batch with every entry allowed',
    request: req('batch', { method: 'POST', entries: [read('Patient'), search('Observation', [['code', 'x']])] }),
    expect: 'allow roles.clinician.purposes.TREAT -> batch of 2 entries',
  },
  { name: 'one denied entry denies the batch', request: req('transaction', { method: 'POST', entries: [read('Patient'), read('Claim')] }), expect: 'type-denied' },
  { name: 'nested batch entries are refused', request: req('batch', { method: 'POST', entries: [req('batch', { entries: [] })] }), expect: 'interaction-denied' },
  { name: 'batch without classified entries fails closed', request: req('batch', { method: 'POST' }), expect: 'request-unclassified' },
];

describe('decide: one named fixture per branch', () => {
  it.each(CASES)('$name', (c) => {
    const d = decide({ policy, principal: principal(c.principal), purpose: c.purpose ?? 'TREAT', requestedRole: c.role, request: c.request });
    const got = d.allow ? `allow ${d.rule}` : d.code;
    expect(got).toBe(c.expect);
  });
});

describe('decide: check order', () => {
  // Each request below fails several checks; the earliest in the documented order must win.
  const everything = req('operation', { resourceType: 'Claim', id: '9', operation: '$graphql', params: [['_has:x', '1']] });
  it.each([
    ['token purpose before role', { tokenPurposes: ['HOPERAT'], roles: ['billing'] }, everything, 'purpose-not-in-token'],
    ['role before type', { roles: ['billing'] }, everything, 'purpose-not-permitted'],
    ['type before interaction', {}, everything, 'type-denied'],
    ['interaction before parameters', {}, req('operation', { resourceType: 'Patient', operation: '$graphql', params: [['_has:x', '1']] }), 'interaction-denied'],
    ['parameters before compartment', { patient: '1' }, req('read', { resourceType: 'Patient', id: '2', params: [['nope', '1']] }), 'search-param-denied'],
    ['compartment before scopes', { patient: '1', scopes: [] }, read('Patient', '2'), 'compartment-denied'],
  ] as Array<[string, Partial<Principal>, ClassifiedRequest, string]>)('%s', (_n, p, r, code) => {
    const d = decide({ policy, principal: principal(p), purpose: 'TREAT', request: r });
    expect(d.allow ? 'allow' : d.code).toBe(code);
  });

  it('the first denied batch entry names its index', () => {
    const d = decide({ policy, principal: principal(), purpose: 'TREAT', request: req('batch', { entries: [read('Patient'), read('Claim'), req('search-system')] }) });
    expect(d).toMatchObject({ allow: false, code: 'type-denied' });
    expect(d.rule).toMatch(/^batch\.entry\[1\]: /);
  });
});

describe('decide: results', () => {
  it('returns the access plan and the type plan that filter the response', () => {
    const d = decide({ policy, principal: principal({ roles: ['billing'] }), purpose: 'CLMATTCH', request: read('Patient') });
    if (!d.allow) throw new Error(d.code);
    expect(d.plan).toMatchObject({ role: 'billing', purpose: 'CLMATTCH', dataSet: 'billing', grantedBy: 'roles.billing.purposes.HPAYMT' });
    expect(d.typePlan?.resourceType).toBe('Patient');
    expect(d.typePlan?.elements.keepsAll).toBe(false);
  });

  it('break-glass returns the break-glass plan, not the role plan', () => {
    const d = decide({ policy, principal: principal(), purpose: 'BTG', request: read('Patient') });
    if (!d.allow) throw new Error(d.code);
    expect(d.plan).toBe(policy.breakGlass?.plan);
    expect(d.plan.types.get('Patient')?.withhold.labels).toEqual([]);
  });

  it('does not mutate its inputs', () => {
    const p = principal({ roles: ['billing', 'coder'] });
    const r = search('Observation', [['code', 'x']]);
    const before = JSON.stringify([p, r]);
    decide({ policy, principal: Object.freeze(p), purpose: 'TREAT', request: Object.freeze(r) });
    expect(JSON.stringify([p, r])).toBe(before);
  });
});
