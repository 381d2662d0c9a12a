/**
 * Date searches, as every client sends them (`Observation?patient=X&date=ge2024-01-01`): the R4
 * parameters whose expression names a choice element without its type (`Observation.effective`),
 * tests an element (`Patient.deceased.exists() and ...`) or is a composite were refused for every
 * role once. They are enforceable now by the element paths they reach, and still refused for a
 * role that does not see one of those elements (a search on a removed value is an oracle on it).
 */
import type { Bundle, Observation, Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPolicy } from '../../src/config/load.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

async function search(path: string, role: string, purpose: string): Promise<{ status: number; body: Bundle & { issue?: Array<{ code: string }> } }> {
  const res = await stack.get(path, { role, purpose });
  return { status: res.status, body: (await res.json()) as Bundle };
}

function ids(b: Bundle): string[] {
  return (b.entry ?? []).map((e) => e.resource as Resource).filter((r) => r.resourceType !== 'OperationOutcome').map((r) => r.id!).sort();
}

describe('date searches reach the upstream', () => {
  it('clinician: Observation?patient=&date=ge answers exactly the observations from that date on', async () => {
    const all = await search(`/Observation?patient=${DEMO.patients.alice}&_count=100`, 'clinician', 'TREAT');
    expect(all.status).toBe(200);
    const obs = (all.body.entry ?? []).map((e) => e.resource as Observation);
    const dates = obs.map((o) => o.effectiveDateTime).filter((d): d is string => d !== undefined).sort();
    expect(dates.length).toBeGreaterThan(2);
    // A cut between the first and the last date, so the filter must keep some and drop some.
    const cut = dates[Math.floor(dates.length / 2)].slice(0, 10);
    const expected = obs.filter((o) => (o.effectiveDateTime ?? '') >= cut).map((o) => o.id!).sort();
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.length).toBeLessThan(obs.length);

    const got = await search(`/Observation?patient=${DEMO.patients.alice}&date=ge${cut}&_count=100`, 'clinician', 'TREAT');
    expect(got.status).toBe(200);
    expect(ids(got.body)).toEqual(expected);
  });

  it.each([
    ['/Procedure?date=ge2000-01-01'],
    ['/DiagnosticReport?date=ge2000-01-01'],
    ['/Immunization?date=ge2000-01-01'],
    ['/MedicationStatement?effective=ge2000-01-01'],
    ['/ServiceRequest?occurrence=ge2000-01-01'],
    ['/Specimen?collected=ge2000-01-01'],
    ['/CarePlan?activity-date=ge2000-01-01'],
    ['/Patient?deceased=false'],
    ['/Encounter?date=ge2000-01-01'],
  ])('clinician: %s is allowed and answered by the upstream', async (path) => {
    const got = await search(path, 'clinician', 'TREAT');
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.resourceType).toBe('Bundle');
  });

  it('billing may search Procedure by date (it sees performed[x]) but not Condition by onset (it does not)', async () => {
    const proc = await search('/Procedure?date=ge2000-01-01', 'billing', 'HPAYMT');
    expect(proc.status).toBe(200);
    const onset = await search('/Condition?onset-date=ge2000-01-01', 'billing', 'HPAYMT');
    expect(onset.status).toBe(403);
    expect(onset.body.issue?.[0]?.code).toBe('forbidden');
    expect(JSON.stringify(onset.body)).toContain('search');
  });
});

describe('what the shipped policy lets each role search on', () => {
  const policy = loadPolicy(new URL('../../config/policy.yaml', import.meta.url).pathname).policy;
  const clinical = policy.roles.get('clinician')!.plans.get('TREAT')!;

  it.each([
    ['Observation', 'date'],
    ['Observation', 'code-value-quantity'],
    ['Observation', 'code-value-concept'],
    ['Procedure', 'date'],
    ['DiagnosticReport', 'date'],
    ['Immunization', 'date'],
    ['MedicationStatement', 'effective'],
    ['ServiceRequest', 'occurrence'],
    ['Specimen', 'collected'],
    ['CarePlan', 'activity-date'],
    ['Patient', 'deceased'],
  ])('clinical data set: %s?%s is enforceable', (type, param) => {
    expect(clinical.types.get(type)?.searchParams.has(param)).toBe(true);
  });

  it('no data set grants a parameter that searches no element (_content, _text)', () => {
    for (const [, role] of policy.roles) {
      for (const [, plan] of [...role.plans.values()].flatMap((p) => [...p.types])) {
        expect(plan.searchParams.has('_content')).toBe(false);
        expect(plan.searchParams.has('_text')).toBe(false);
      }
    }
  });
});
