// Shadow mode: a candidate policy (billing loses Patient.address, gains Observation) runs on live
// traffic without being enforced; each request it would treat differently gets a 'shadow-diff' record.
import type { Bundle, Patient } from 'fhir/r4.js';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as policyCli } from '../../src/cli/policy.js';
import { run as reportCli } from '../../src/cli/report.js';
import { startStack, type Stack, type TestPolicyFile, testPolicyFile as stackPolicyFile } from '../helpers/gateway.js';
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

async function runCli(run: typeof policyCli, argv: string[]): Promise<{ code: number; out: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', () => {});
  const code = await run(argv, { stdout, stderr, env: {} });
  return { code, out };
}

// The running policy with the shipped care-relationship requirements (clinical for TREAT, coding for
// HOPERAT), the candidate without them. The tokens name no fhirUser: no patient is related, so the
// running policy refuses (403 to the clinician, who may break the glass; an empty searchset to the
// coder), and the evidence in each record says so: the no-relationship anomaly rule fires,
// and shadow mode and policy diff both read that evidence: the candidate would allow.
describe('care relationships: shadow mode and policy diff on live traffic', () => {
  let stack: Stack;
  let candidate: TestPolicyFile;

  beforeAll(async () => {
    candidate = stackPolicyFile({ relationships: false });
    stack = await startStack({
      relationships: true,
      // The access-without-relationship anomaly rule, whether or not the shipped policy has it yet.
      policy: (p) => {
        const anomalies = p.anomalies as { rules: Array<{ name: string; kind: string }> };
        anomalies.rules = anomalies.rules.filter((r) => r.kind !== 'no-relationship');
        anomalies.rules.push({ name: 'access-without-relationship', kind: 'no-relationship' });
      },
      configure: (c) => ({ ...c, shadowPolicy: candidate.file }),
    });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    candidate?.remove();
  });

  it('refusals for lack of a relationship: recorded with their evidence, and "would be allowed" by both', async () => {
    const read = await stack.get(`/Patient/${P.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(read.status).toBe(403);
    await read.text();
    const search = await stack.get(`/Encounter?patient=${P.alice}`, { role: 'coder', purpose: 'HOPERAT' });
    expect(search.status).toBe(200);
    expect(((await search.json()) as Bundle).entry ?? []).toEqual([]);
    // An encounter of hers, read by id: withheld by the response filter, answered as not found.
    const encounter = await stack.get('/Encounter/enc-alice-1', { role: 'coder', purpose: 'HOPERAT' });
    expect(encounter.status).toBe(404);
    await encounter.text();
    const billing = await stack.get(`/Patient/${P.alice}`, { role: 'billing', purpose: 'HPAYMT' });
    expect(billing.status).toBe(200);
    await billing.text();
    await stack.gateway.monitor.idle();

    const records = await stack.auditRecords();
    const byId = (id: string | null) => records.find((r) => r.kind === 'fhir' && r.id === id);
    expect(byId(read.headers.get('x-request-id'))?.relationship).toMatchObject({ required: true, related: [], unrelated: [P.alice] });
    expect(byId(search.headers.get('x-request-id'))?.relationship).toMatchObject({ required: true, unrelated: [P.alice] });
    // The anomaly rule for access without a relationship: one alert per actor, no patient named.
    const anomalies = records.filter((r) => r.kind === 'anomaly' && r.details?.anomaly === 'access-without-relationship');
    expect(anomalies.map((r) => [r.role, r.details?.access, r.details?.count, r.disclosed.patients]).sort()).toEqual([
      ['clinician', 'refused', 1, []],
      ['coder', 'refused', 1, []],
    ]);
    const diffs = records.filter((r) => r.kind === 'shadow-diff');
    expect(diffs.map((d) => [d.details?.requestId, d.decision, d.details?.decision, d.details?.was]).sort()).toEqual(
      [
        [read.headers.get('x-request-id'), 'allow', 'relationship-allowed', 'no relationship'],
        [search.headers.get('x-request-id'), 'allow', 'relationship-allowed', 'no relationship'],
        [encounter.headers.get('x-request-id'), 'allow', 'relationship-allowed', 'no relationship'],
      ].sort(),
    );

    const { code, out } = await runCli(policyCli, ['diff', '--candidate', candidate.file, '--policy', stack.config.policyFile, '--source', `file:${stack.auditDir}`, '--format', 'csv']);
    expect(code).toBe(3);
    const lines = out.split('\r\n').filter((l) => /^[a-z-]+,[A-Z]+,/.test(l));
    expect(lines).toEqual([
      'clinician,TREAT,would be allowed,read Patient (was: no relationship),1',
      'coder,HOPERAT,would be allowed,read Encounter (was: no relationship),1',
      'coder,HOPERAT,would be allowed,search-type Encounter (was: no relationship),1',
    ]);

    // The access report's section over the same trail: three refusals, two patients named (the withheld encounter names none).
    const report = await runCli(reportCli as typeof policyCli, ['access', '--format', 'csv', '--source', `file:${stack.auditDir}`]);
    expect(report.code).toBe(0);
    const section = report.out.split('\r\n\r\n').find((b) => b.startsWith('# Access without relationship'))!;
    const subs = Object.fromEntries(records.filter((r) => r.kind === 'fhir').map((r) => [r.role, r.actor.sub]));
    expect(section.split('\r\n').slice(2).filter(Boolean).sort()).toEqual([`${subs.clinician},1,0,0,1`, `${subs.coder},2,0,0,1`].sort());
  });
});
