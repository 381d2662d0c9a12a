// `report breach` on a trail the real gateway wrote (demo FHIR upstream): the records of released
// Patients carry the state their released body showed (disclosed.states, through the one-pass
// writer, and the chains still verify), and the report names exactly the patients the suspect
// actor received, with that state and the break-glass reason, and nothing another actor received.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { readFileRecords } from '../../src/audit/read.js';
import { verifyChains } from '../../src/audit/verify.js';
import { run as reportCli } from '../../src/cli/report.js';
import { P, startWorkloadStack, type WorkloadStack } from './monitor-workload.js';

const FROM = '2024-06-03T00:00:00-04:00';
const TO = '2024-06-04T00:00:00-04:00';
const REASON = 'Unresponsive patient in the ED and history needed now';

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return {
    stream: new Writable({
      write(chunk, _enc, cb) {
        buf += chunk.toString();
        cb();
      },
    }),
    text: () => buf,
  };
}

describe('report breach on a trail the gateway wrote', () => {
  let w: WorkloadStack;
  let records: ChainedRecord[];

  beforeAll(async () => {
    w = await startWorkloadStack();
    w.clock.set('2024-06-03T10:00:00-04:00');
    const suspect = { role: 'clinician', purpose: 'TREAT', tokenClaims: { sub: 'dr-suspect' } };
    expect((await w.stack.get(`/Patient/${P.alice}`, suspect)).status).toBe(200);
    w.clock.set('2024-06-03T11:00:00-04:00');
    const btg = { role: 'clinician', purpose: 'BTG', tokenClaims: { sub: 'dr-suspect' }, headers: { 'x-break-glass-reason': REASON } };
    expect((await w.stack.get(`/Patient/${P.vip}`, btg)).status).toBe(200);
    // Someone else's access: not in the report.
    w.clock.set('2024-06-03T12:00:00-04:00');
    expect((await w.stack.get(`/Patient/${P.brian}`, { role: 'clinician', purpose: 'BTG', tokenClaims: { sub: 'dr-other' }, headers: { 'x-break-glass-reason': REASON } })).status).toBe(200);
    await w.stack.gateway.monitor.idle();
    records = await w.stack.auditRecords();
  }, 120_000);
  afterAll(async () => {
    await w?.close();
  });

  it('the records of released Patients carry their state, and the chains verify', async () => {
    const reads = records.filter((r) => r.kind === 'fhir' && r.request.resourceType === 'Patient' && r.decision === 'allow');
    const byPatient = Object.fromEntries(reads.map((r) => [r.disclosed.patients[0], r.disclosed.states]));
    expect(byPatient[P.alice]).toEqual({ [P.alice]: 'MA' });
    expect(byPatient[P.vip]).toEqual({ [P.vip]: 'CA' });
    expect(byPatient[P.brian]).toEqual({ [P.brian]: 'NH' });
    // Records that released no Patient have no member at all.
    for (const r of records) if (!r.disclosed.resources.some((x) => x.startsWith('Patient/'))) expect(Object.hasOwn(r.disclosed, 'states'), r.id).toBe(false);
    const items = [];
    for await (const it of readFileRecords(w.stack.auditDir)) items.push(it);
    const v = await verifyChains(items);
    expect(v.problems ?? [], JSON.stringify(v).slice(0, 500)).toEqual([]);
  });

  it('names the patients the actor received, their states, the session and its reason', async () => {
    const o = sink();
    const e = sink();
    const code = await reportCli(['breach', '--actor', 'dr-suspect', '--from', FROM, '--to', TO, '--discovered', '2024-06-10T00:00:00Z', '--format', 'csv'], {
      stdout: o.stream,
      stderr: e.stream,
      env: { PHI_GATEWAY_AUDIT: `file:${w.stack.auditDir}` },
    });
    expect(code, e.text()).toBe(0);
    const [header, ...rows] = o.text().trimEnd().split('\r\n');
    const cols = (header as string).split(',');
    const got = Object.fromEntries(
      rows.map((l) => {
        const cells = l.split(',');
        return [cells[0], { state: cells[cols.indexOf('state')], bg: cells[cols.indexOf('break-glass (session: reason)')], types: cells[cols.indexOf('resource types')] }];
      }),
    );
    expect(Object.keys(got).sort()).toEqual([P.alice, P.vip].sort());
    expect(got[P.alice]).toMatchObject({ state: 'MA', bg: '', types: 'Patient' });
    expect(got[P.vip]?.state).toBe('CA');
    expect(got[P.vip]?.bg).toMatch(new RegExp(`^[0-9a-f-]+: ${REASON}$`));

    // The run is itself in the trail, naming the actors asked about.
    const after: ChainedRecord[] = await w.stack.auditRecords();
    const own = after.filter((r) => r.kind === 'audit-export' && r.details?.command === 'report breach');
    expect(own).toHaveLength(1);
    expect(own[0]?.details).toMatchObject({ actors: ['dr-suspect'], patientsAffected: 2 });
  });
});
