/**
 * SMART scopes narrow what a role grants on every type an answer can carry, not only the searched
 * one. Found from outside: a token limited to `patient/Observation.rs` pulled the whole Patient
 * (SSN, phone, address, narrative) into an Observation search with `_include=Observation:subject`,
 * and a billing token limited to `user/Claim.rs` pulled Patient, Encounter and ExplanationOfBenefit
 * into Claim searches; in a batch entry and a POST `_search` as well. The bytes that reach the
 * client are checked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectAbsent, expectError, receive, refs } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
}, 60_000);
afterAll(async () => {
  await stack?.close();
});

const aliceApp = { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: DEMO.patients.alice, scope: 'patient/Observation.rs' } };
const claimApp = { role: 'billing', purpose: 'HPAYMT', tokenClaims: { scope: 'user/Claim.rs' } };
const aliceSecrets = [DEMO.ssn.alice, DEMO.phones.alice, DEMO.names.alice];

describe('an include is a read of the type it reaches: the scopes must cover it', () => {
  it.each([
    ['/Observation?_include=Observation:subject&_count=1'],
    ['/Observation?_include=Observation:subject:Patient'],
    ['/Observation?_include=Observation:encounter'],
    ['/Observation?_include=Observation:performer'],
    ['/Observation?_revinclude=DiagnosticReport:result'],
    ['/Observation?_include=Observation:subject&_include:iterate=Patient:organization'],
  ])('patient/Observation.rs: %s is 403 scope-denied, nothing of the Patient released', async (path) => {
    const r = await receive(await stack.get(path, aliceApp));
    expectError(r, 403, 'scope-denied');
    expectAbsent(r, aliceSecrets);
  });

  it('the same search without the include is answered (the scope covers Observation)', async () => {
    const r = await receive(await stack.get('/Observation?_count=5', aliceApp));
    expect(r.status).toBe(200);
    expect(refs(r.json).length).toBeGreaterThan(0);
    expect(refs(r.json).every((x) => x.startsWith('Observation/'))).toBe(true);
    // (An Observation's subject.display may name her: the role sees it there.)
    expectAbsent(r, [DEMO.ssn.alice, DEMO.phones.alice]);
  });

  it('a scope that covers the included type lets the include through (the check can pass)', async () => {
    const both = { ...aliceApp, tokenClaims: { ...aliceApp.tokenClaims, scope: 'patient/Observation.rs patient/Patient.rs' } };
    const r = await receive(await stack.get('/Observation?_include=Observation:subject:Patient', both));
    expect(r.status).toBe(200);
    expect(refs(r.json)).toContain(`Patient/${DEMO.patients.alice}`);
  });

  it('a target-less include is narrowed to the covered targets, not refused', async () => {
    const both = { ...aliceApp, tokenClaims: { ...aliceApp.tokenClaims, scope: 'patient/Observation.rs patient/Patient.rs' } };
    const r = await receive(await stack.get('/Observation?_include=Observation:subject', both));
    expect(r.status).toBe(200);
    for (const ref of refs(r.json)) expect(['Observation', 'Patient', 'OperationOutcome']).toContain(ref.split('/')[0]);
  });

  it.each([
    ['/Claim?_include=Claim:patient'],
    ['/Claim?_include=Claim:insurer'],
    ['/Claim?_revinclude=ExplanationOfBenefit:claim'],
    ['/Claim?_include=Claim:encounter'],
  ])('user/Claim.rs on billing: %s is 403 scope-denied', async (path) => {
    const r = await receive(await stack.get(path, claimApp));
    expectError(r, 403, 'scope-denied');
    expectAbsent(r, aliceSecrets);
  });

  it('POST _search with the include in the body: refused the same way', async () => {
    const r = await receive(
      await stack.request('/Observation/_search', { ...aliceApp, method: 'POST', body: '_include=Observation:subject', contentType: 'application/x-www-form-urlencoded' }),
    );
    expectError(r, 403, 'scope-denied');
    expectAbsent(r, aliceSecrets);
  });

  it('a batch entry with the include: that entry refused, nothing of the Patient released', async () => {
    const bundle = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?_include=Observation:subject' } }] };
    const r = await receive(await stack.request('', { ...aliceApp, method: 'POST', body: JSON.stringify(bundle), contentType: 'application/fhir+json' }));
    expect(r.status === 200 || r.status === 403).toBe(true);
    expect(r.text).toContain('scope-denied');
    expectAbsent(r, aliceSecrets);
  });
});
