// Shadow mode: a candidate policy (billing loses Patient.address, gains Observation) runs on live
// traffic without being enforced; each request it would treat differently gets a 'shadow-diff' record.
import type { Patient } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/gateway.js';
import { P, testPolicyFile } from './monitor-workload.js';
import { rmSync } from 'node:fs';

describe('shadow policy on live traffic', () => {
  let stack: Stack;
  let candidate: string;

  beforeAll(async () => {
    candidate = testPolicyFile((policy) => {
      const rules = (policy.dataSets as Record<string, { rules: Array<{ types: string[]; elements?: string[] }> }>).billing.rules;
      const patient = rules.find((x) => x.types.includes('Patient'))!;
      patient.elements = patient.elements!.filter((e) => e !== 'address');
      rules.push({ types: ['Observation'] });
    });
    stack = await startStack({ configure: (c) => ({ ...c, shadowPolicy: candidate }) });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    rmSync(candidate, { force: true });
  });

  it('enforces the running policy and records what the candidate would change', async () => {
    const read = await stack.get(`/Patient/${P.alice}`, { role: 'billing', purpose: 'HPAYMT' });
    expect(read.status).toBe(200);
    // Not enforced: the address is still released.
    expect(((await read.json()) as Patient).address?.length).toBeGreaterThan(0);
    const obs = await stack.get(`/Observation?patient=${P.alice}`, { role: 'billing', purpose: 'HPAYMT' });
    expect(obs.status).toBe(403);
    await obs.text();
    const claim = await stack.get(`/Claim?patient=${P.alice}`, { role: 'billing', purpose: 'HPAYMT' });
    expect(claim.status).toBe(200);
    await claim.text();
    const clin = await stack.get(`/Patient/${P.alice}`, { role: 'clinician', purpose: 'TREAT' });
    await clin.text();
    await stack.gateway.monitor.idle();

    const diffs = (await stack.auditRecords()).filter((r) => r.kind === 'shadow-diff');
    const byRequest = new Map(diffs.map((d) => [d.details?.requestId, d]));
    expect(diffs).toHaveLength(2);
    expect(byRequest.get(read.headers.get('x-request-id'))?.details).toMatchObject({ hidden: ['Patient.address'] });
    expect(byRequest.get(obs.headers.get('x-request-id'))).toMatchObject({ decision: 'allow', details: { decision: 'newly-allowed', was: 'type-denied' } });
    expect(diffs.every((d) => d.actor.sub !== undefined && d.disclosed.patients.length === 0)).toBe(true);
  });
});
