/**
 * decide() on the requests that reach furthest: writes under a patient compartment (BYPASSES 11)
 * and bulk `$export` (BYPASSES 10), from raw requests through the real classifier, with a policy
 * that grants every write and `$export` on Patient, so only the compartment and all-of rules can
 * refuse.
 */
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/auth/principal.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify } from '../../../src/policy/classify.js';
import { compilePolicy, type ElementCompiler } from '../../../src/policy/compile.js';
import { compartmentViolation } from '../../../src/policy/compartment.js';
import { decide } from '../../../src/policy/decide.js';
import type { PolicyFile } from '../../../src/policy/model.js';

const fakeCompiler: ElementCompiler = {
  compileElementPlan: () => ({ keepsAll: true, describe: () => [] }),
  derivedSearchParams: () => [],
};
const ALL = ['read', 'search', 'history', 'create', 'update', 'patch', 'delete'] as const;
const RAW: PolicyFile = {
  version: 1,
  purposes: { TREAT: { display: 'treatment' } },
  dataSets: {
    everything: {
      rules: [
        { types: ['Patient'], interactions: [...ALL], operations: ['$export', '$everything'] },
        { types: ['Observation', 'Group', 'Practitioner'], interactions: [...ALL], operations: ['$export'] },
      ],
    },
  },
  roles: { app: { purposes: { TREAT: 'everything' } } },
};
const compiled = compilePolicy(RAW, JSON.stringify(RAW), fakeCompiler);
if (!compiled.ok) throw new Error('test policy does not compile');
const policy = compiled.policy;

const ME = 'pat-1';
function who(patient: string | undefined): Principal {
  return { iss: 'i', sub: 's', clientId: undefined, jti: undefined, roles: ['app'], tokenPurposes: undefined, patient, scopes: undefined, familyName: undefined, exp: 2e9 };
}
function decideRaw(method: string, url: string, body?: unknown, contentType = 'application/fhir+json', patient: string | null = ME) {
  const request = classify(
    { method, url, headers: body === undefined ? {} : { 'content-type': contentType }, body: body === undefined ? undefined : Buffer.from(JSON.stringify(body)) },
    { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 },
  );
  return decide({ policy, principal: who(patient ?? undefined), purpose: 'TREAT', request });
}
const code = (d: ReturnType<typeof decide>) => (d.allow ? 'allow' : d.code);
const obs = (subject: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: subject } });

describe('writes under a patient compartment', () => {
  it('delete and JSON Patch by id pass the decision (the pipeline reads the stored resource); conditional ones do not', () => {
    expect(code(decideRaw('DELETE', '/Observation/o1'))).toBe('allow');
    expect(code(decideRaw('PATCH', '/Observation/o1', [{ op: 'replace', path: '/status', value: 'amended' }], 'application/json-patch+json'))).toBe('allow');
    expect(code(decideRaw('DELETE', '/Observation?_id=o1'))).toBe('compartment-denied');
    expect(code(decideRaw('PATCH', '/Observation?_id=o1', [{ op: 'replace', path: '/status', value: 'amended' }], 'application/json-patch+json'))).toBe('compartment-denied');
    expect(code(decideRaw('PUT', `/Observation?_id=o1`, obs(`Patient/${ME}`)))).toBe('compartment-denied');
  });

  it.each([
    ['replace subject', [{ op: 'replace', path: '/subject', value: { reference: 'Patient/pat-12' } }]],
    ['replace subject.reference', [{ op: 'replace', path: '/subject/reference', value: 'Patient/pat-12' }]],
    ['add a performer', [{ op: 'add', path: '/performer/-', value: { reference: 'Patient/pat-12' } }]],
    ['remove subject', [{ op: 'remove', path: '/subject' }]],
    ['move onto subject', [{ op: 'move', from: '/focus', path: '/subject' }]],
    ['copy from subject', [{ op: 'copy', from: '/subject', path: '/focus' }]],
    ['escaped pointer token', [{ op: 'replace', path: '/sub~0ject', value: {} }, { op: 'replace', path: '/subject', value: {} }]],
    ['the whole document', [{ op: 'replace', path: '', value: obs('Patient/pat-12') }]],
    ['re-id', [{ op: 'replace', path: '/id', value: 'o12' }]],
  ])('a JSON Patch that could move the resource (%s) is refused', (_name, patch) => {
    expect(code(decideRaw('PATCH', '/Observation/o1', patch, 'application/json-patch+json'))).toBe('compartment-denied');
  });

  it('FHIRPath Patch (paths are expressions) is refused under a compartment, allowed without one', () => {
    const fp = { resourceType: 'Parameters', parameter: [{ name: 'operation', part: [{ name: 'type', valueCode: 'replace' }, { name: 'path', valueString: 'Observation.status' }, { name: 'value', valueCode: 'amended' }] }] };
    expect(code(decideRaw('PATCH', '/Observation/o1', fp))).toBe('compartment-denied');
    expect(code(decideRaw('PATCH', '/Observation/o1', fp, 'application/fhir+json', null))).toBe('allow');
  });

  it('the token patient may patch or delete their own Patient but not re-id or re-link it; not another', () => {
    expect(code(decideRaw('PATCH', `/Patient/${ME}`, [{ op: 'replace', path: '/gender', value: 'other' }], 'application/json-patch+json'))).toBe('allow');
    expect(code(decideRaw('PATCH', `/Patient/${ME}`, [{ op: 'add', path: '/link/-', value: { other: { reference: 'Patient/pat-12' }, type: 'seealso' } }], 'application/json-patch+json'))).toBe('compartment-denied');
    expect(code(decideRaw('DELETE', `/Patient/${ME}`))).toBe('allow');
    expect(code(decideRaw('DELETE', '/Patient/pat-12'))).toBe('compartment-denied');
  });

  it('types outside every patient compartment are not limited', () => {
    expect(code(decideRaw('DELETE', '/Practitioner/pr1'))).toBe('allow');
  });
});

describe('compartmentViolation: the rule the stored resource is judged by', () => {
  it.each([
    [obs(`Patient/${ME}`), undefined],
    [obs('Patient/pat-12'), 'references a patient outside'],
    [obs('Patient/pat-1x'), 'references a patient outside'],
    [obs('Patient/pat-'), 'references a patient outside'],
    [obs(`http://other.example/fhir/Patient/${ME}`), 'references a patient outside'],
    [obs('#contained'), 'references a patient outside'],
    [{ ...obs('Patient/pat-12'), performer: [{ reference: `Patient/${ME}` }] }, 'references a patient outside'],
    [{ ...obs(`Patient/${ME}`), performer: [{ reference: 'Practitioner/pr1' }] }, undefined],
    [{ resourceType: 'Observation', status: 'final', code: {} }, 'names no patient'],
    [{ resourceType: 'Observation', subject: { display: 'Someone' } }, 'references a patient outside'],
  ])('%j -> %s', (resource, why) => {
    const v = compartmentViolation(resource, 'Observation', ME);
    if (why === undefined) expect(v).toBeUndefined();
    else expect(v).toContain(why);
  });

  it('a Patient belongs by id only, whatever it links to', () => {
    expect(compartmentViolation({ resourceType: 'Patient', id: ME }, 'Patient', ME)).toBeUndefined();
    expect(compartmentViolation({ resourceType: 'Patient', id: 'pat-13', link: [{ other: { reference: `Patient/${ME}` } }] }, 'Patient', ME)).toBeDefined();
  });
});

describe('bulk $export is all-of: nothing outside the grant rides along', () => {
  it('system-level $export is never granted, even to a policy that grants $export on types', () => {
    for (const url of ['/$export', '/$export?_type=Patient', '/$export-poll-status?_jobId=1']) {
      expect(code(decideRaw('GET', url, undefined, undefined, null))).toBe('interaction-denied');
    }
  });

  it('_type (or any parameter that widens the export) is refused even where $export is granted', () => {
    for (const url of ['/Patient/$export?_type=Patient', '/Patient/$export?_type=Patient,Claim', '/Group/g1/$export?_type=Observation', '/Patient/$export?_typeFilter=Claim%3Fstatus%3Dactive', '/Patient/$export?_since=2020-01-01']) {
      expect(code(decideRaw('GET', url, undefined, undefined, null)), url).toBe('search-param-denied');
    }
  });

  it('a type that is not granted $export is refused before its parameters are looked at', () => {
    expect(code(decideRaw('GET', '/Claim/$export?_type=Patient', undefined, undefined, null))).toBe('type-denied');
  });
});
