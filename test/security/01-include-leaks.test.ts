/**
 * BYPASSES 1: `_include`, `_revinclude`, `:iterate` and `*` results are enforced entry by entry
 * (type, labels, patient compartment) against the real FHIR upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectAbsent, receive, refs } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const BILLING_TYPES = new Set(['Patient', 'Coverage', 'Claim', 'ExplanationOfBenefit', 'Encounter', 'Procedure', 'Condition', 'Practitioner', 'Organization']);
const billingNever = [DEMO.ssn.alice, DEMO.phones.alice, DEMO.notes.psy, DEMO.notes.hiv, DEMO.names.vip, DEMO.psyCondition, DEMO.hivCondition, DEMO.vip.patient, '<div'];

describe('included resources are filtered like any other', () => {
  it.each([
    '/Encounter?_include=Encounter:subject',
    '/Encounter?_include=*',
    '/Condition?_include=Condition:subject&_include=Condition:encounter',
    '/Patient?_revinclude=Observation:subject',
    '/Patient?_revinclude=*',
    '/Patient?_revinclude=Condition:subject&_revinclude=Encounter:subject',
    '/Encounter?_include=Encounter:subject&_include:iterate=Patient:general-practitioner',
    '/Condition?_include:iterate=*',
    '/Claim?_include=*&_revinclude=*',
  ])('billing %s', async (path) => {
    const r = await receive(await stack.get(path, billing));
    if (r.status !== 200) {
      // An include the upstream refuses is a clean error, never a leak.
      expect(r.status).toBeGreaterThanOrEqual(400);
    }
    expectAbsent(r, billingNever);
    for (const ref of refs(r.json)) {
      const type = ref.split('/')[0]!;
      if (type !== 'OperationOutcome') expect(BILLING_TYPES.has(type), ref).toBe(true);
    }
  });

  it('a labelled Encounter pulled in by _revinclude is withheld; total counts the one visible match', async () => {
    const r = await receive(await stack.get(`/Patient?_id=${DEMO.patients.paula}&_revinclude=Encounter:subject&_revinclude=Condition:subject`, billing));
    expect(r.status).toBe(200);
    expect(refs(r.json)).not.toContain('Encounter/enc-paula-1');
    expect(refs(r.json)).not.toContain(`Condition/${DEMO.psyCondition}`);
    expect((r.json as { total?: number }).total).toBe(1);
  });

  it('_include of another patient from a compartment-limited token is withheld', async () => {
    const who = { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: DEMO.patients.alice } };
    const r = await receive(await stack.get('/Encounter?_include=Encounter:subject&_revinclude=Observation:encounter', who));
    expect(r.status).toBe(200);
    for (const other of ['brian', 'paula', 'henry', 'elder', 'grace', 'david'] as const) {
      expectAbsent(r, [DEMO.patients[other], DEMO.names[other], DEMO.ssn[other]]);
    }
    expect(refs(r.json).length).toBeGreaterThan(0);
  });

  it('the clinician never receives R-labelled records through includes (without break-glass)', async () => {
    const r = await receive(await stack.get('/Encounter?_include=Encounter:subject&_revinclude=Observation:encounter', { role: 'clinician', purpose: 'TREAT' }));
    expect(r.status).toBe(200);
    expectAbsent(r, [DEMO.vip.patient, DEMO.vip.encounter, DEMO.vip.observation, DEMO.names.vip]);
    // Announced as one suppressed outcome, not as a count.
    expect(refs(r.json).filter((x) => x.startsWith('OperationOutcome/'))).toHaveLength(1);
  });
});
