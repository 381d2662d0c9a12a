// Anomaly rules end to end on the demo stack: a scripted day under a controlled clock; each anomaly
// raises exactly one alert (webhook) and one audit record, for the right actor, and nothing else fires.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { BLOCK_CODE } from '../../src/monitor/index.js';
import { EXPECTED_ANOMALIES, P, runWorkload, startWorkloadStack, type WorkloadStack } from './monitor-workload.js';

describe('anomaly rules on a scripted day', () => {
  let w: WorkloadStack;
  let records: ChainedRecord[];

  beforeAll(async () => {
    w = await startWorkloadStack();
    await runWorkload(w);
    await w.stack.gateway.monitor.idle();
    records = await w.stack.auditRecords();
  }, 120_000);
  afterAll(async () => {
    await w?.close();
  });

  it('records exactly one anomaly per scripted incident, for the actor who caused it', () => {
    const anomalies = records.filter((r) => r.kind === 'anomaly').map((r) => [r.details?.anomaly, r.actor.sub]);
    expect(anomalies.sort()).toEqual([...EXPECTED_ANOMALIES].map((x) => [...x]).sort());
  });

  it('alerts the privacy office once per incident on the webhook', async () => {
    await expect.poll(() => w.rx.got.length, { timeout: 10_000 }).toBe(EXPECTED_ANOMALIES.length);
    // Nothing late: give a straggler a moment to show up.
    await new Promise((r) => setTimeout(r, 300));
    const got = w.rx.got.map((g) => [(g.anomaly as { rule: string }).rule, (g.actor as { sub: string }).sub]);
    expect(w.rx.got.every((g) => g.type === 'anomaly')).toBe(true);
    expect(got.sort()).toEqual([...EXPECTED_ANOMALIES].map((x) => [...x]).sort());
  });

  it('says why: counts, thresholds, the triggering request and the patients involved', () => {
    const by = (name: string) => records.find((r) => r.kind === 'anomaly' && r.details?.anomaly === name)!;
    const bulk = by('bulk-access');
    expect(bulk.details).toMatchObject({ anomalyKind: 'bulk-access', count: 6, threshold: 5, windowMinutes: 60, block: false });
    // The sixth distinct chart (henry) crossed the line.
    expect(bulk.disclosed.patients).toEqual([P.henry]);
    const trigger = records.find((r) => r.id === bulk.details?.requestId)!;
    expect(trigger).toMatchObject({ kind: 'fhir', actor: { sub: 'coder-bulk' }, disclosed: { patients: [P.henry] } });

    expect(by('family-lookup').disclosed.patients).toEqual([P.brian]);
    expect(by('probing').details).toMatchObject({ count: 4, threshold: 4, windowMinutes: 5 });
    const broad = by('broad-search');
    expect(broad.details?.count).toBe(broad.disclosed.patients.length);
    expect(broad.disclosed.patients.length).toBeGreaterThanOrEqual(3);
    expect(by('off-hours').time).toBe(new Date('2024-06-03T23:30:00-04:00').toISOString());
  });

  it('logs the alert without names or patient ids', () => {
    const lines = w.stack.logs.filter((l) => l.includes('ANOMALY rule fired'));
    expect(lines).toHaveLength(EXPECTED_ANOMALIES.length);
    const text = lines.join('\n');
    for (const id of Object.values(P)) expect(text).not.toContain(id);
    expect(text).not.toMatch(/Baker/i);
  });
});

describe('blocking anomaly rules', () => {
  let w: WorkloadStack;
  const fd = { role: 'front-desk', purpose: 'HOPERAT', tokenClaims: { sub: 'fd-blocked' } };

  beforeAll(async () => {
    w = await startWorkloadStack({
      mutate: (policy) => {
        const a = policy.anomalies as { rules: Array<Record<string, unknown>> };
        for (const r of a.rules) if (r.name === 'probing' || r.name === 'off-hours') r.block = true;
      },
    });
  }, 60_000);
  afterAll(async () => {
    await w?.close();
  });

  async function code(res: Response): Promise<string | undefined> {
    const body = (await res.json()) as { issue?: { details?: { coding?: { code?: string }[] } }[] };
    return body.issue?.[0]?.details?.coding?.[0]?.code;
  }

  it('refuses a prober for the rest of the window once the burst is seen, then lets them back', async () => {
    w.clock.set('2024-06-04T10:00:00-04:00');
    expect((await w.stack.get(`/Patient/${P.alice}`, fd)).status).toBe(200);
    for (let i = 0; i < 4; i++) {
      const res = await w.stack.get(`/Observation?patient=${P.alice}`, fd);
      expect(res.status).toBe(403);
      await w.stack.gateway.monitor.idle();
    }
    const refused = await w.stack.get(`/Patient/${P.alice}`, fd);
    expect([refused.status, await code(refused)]).toEqual([403, BLOCK_CODE]);
    const records = await w.stack.auditRecords();
    expect(records.find((r) => r.id === refused.headers.get('x-request-id'))).toMatchObject({ decision: 'deny', rule: expect.stringContaining(BLOCK_CODE) });
    w.clock.set('2024-06-04T10:06:00-04:00');
    expect((await w.stack.get(`/Patient/${P.alice}`, fd)).status).toBe(200);
  });

  it('refuses off-hours access at once, alerting once', async () => {
    w.clock.set('2024-06-04T22:00:00-04:00');
    const first = await w.stack.get(`/Patient/${P.alice}`, { ...fd, tokenClaims: { sub: 'fd-late' } });
    expect([first.status, await code(first)]).toEqual([403, BLOCK_CODE]);
    const second = await w.stack.get(`/Patient/${P.brian}`, { ...fd, tokenClaims: { sub: 'fd-late' } });
    expect(second.status).toBe(403);
    await w.stack.gateway.monitor.idle();
    const anomalies = (await w.stack.auditRecords()).filter((r) => r.kind === 'anomaly' && r.actor.sub === 'fd-late');
    expect(anomalies.map((r) => [r.details?.anomaly, r.details?.block, r.decision])).toEqual([['off-hours', true, 'deny']]);
    // The upstream was never asked: nothing was disclosed.
    const reads = (await w.stack.auditRecords()).filter((r) => r.kind === 'fhir' && r.actor.sub === 'fd-late');
    expect(reads.every((r) => r.upstreamStatus === undefined && r.disclosed.patients.length === 0)).toBe(true);
  });
});
