// A scripted day on the demo stack, under a controlled clock, for the monitoring tests (anomaly
// alerts, reports): a normal day plus a bulk pull, an off-hours access, a probing actor, a
// family-name lookup and a broad search. Each anomaly is committed by its own actor, so a test can
// say exactly which alert must fire for whom.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

export const P = DEMO.patients;

/** Test thresholds: small enough for the eight demo patients. */
export const TEST_ANOMALIES = {
  timeZone: 'America/New_York',
  rules: [
    { name: 'bulk-access', kind: 'bulk-access', threshold: 5, windowMinutes: 60 },
    { name: 'off-hours', kind: 'off-hours', hours: { start: '07:00', end: '19:00' }, days: ['mon', 'tue', 'wed', 'thu', 'fri'], roles: ['billing', 'coder', 'front-desk'] },
    { name: 'probing', kind: 'denial-burst', threshold: 4, windowMinutes: 5 },
    { name: 'family-lookup', kind: 'family-name' },
    { name: 'broad-search', kind: 'broad-search', threshold: 3 },
  ],
};

/**
 * The shipped policy with the test's anomaly rules, written to a temp file. Without its
 * care-relationship requirements and its consent section, as test stacks run it by default (the
 * scripted day's tokens name no `fhirUser`, and the demo consents would withhold some of its reads).
 */
export function testPolicyFile(mutate?: (policy: Record<string, unknown>) => void): string {
  const policy = parse(readFileSync(new URL('../../config/policy.yaml', import.meta.url), 'utf8')) as Record<string, unknown>;
  policy.anomalies = TEST_ANOMALIES;
  for (const ds of Object.values(policy.dataSets as Record<string, Record<string, unknown>>)) delete ds.relationship;
  delete policy.consent;
  mutate?.(policy);
  const file = join(tmpdir(), `phi-policy-${process.pid}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(policy));
  return file;
}

export interface Receiver {
  readonly url: string;
  readonly got: Record<string, unknown>[];
  close(): Promise<void>;
}

export async function receiver(): Promise<Receiver> {
  const got: Record<string, unknown>[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/hooks/privacy`, got, close: () => new Promise((ok) => server.close(() => ok())) };
}

export class Clock {
  t = 0;
  readonly now = () => new Date(this.t);
  /** Local time in New York (EDT in June: UTC-4). */
  set(iso: string): void {
    this.t = Date.parse(iso);
  }
}

export interface WorkloadStack {
  readonly stack: Stack;
  readonly rx: Receiver;
  readonly clock: Clock;
  readonly policyFile: string;
  close(): Promise<void>;
}

export async function startWorkloadStack(o: { mutate?: (policy: Record<string, unknown>) => void } = {}): Promise<WorkloadStack> {
  const rx = await receiver();
  const clock = new Clock();
  clock.set('2024-06-03T08:00:00-04:00');
  const policyFile = testPolicyFile(o.mutate);
  const stack = await startStack({ env: { PHI_GATEWAY_ALERT_WEBHOOK: rx.url, PHI_GATEWAY_POLICY: policyFile }, now: clock.now });
  return {
    stack,
    rx,
    clock,
    policyFile,
    async close() {
      await stack.close();
      await rx.close();
      rmSync(policyFile, { force: true });
      rmSync(`${stack.auditDir}.anomaly`, { recursive: true, force: true });
      rmSync(`${stack.auditDir}.break-glass`, { recursive: true, force: true });
    },
  };
}

/** Who does what; `expected` is the one anomaly (if any) each actor must cause. */
export const ACTORS = {
  clinician: { role: 'clinician', sub: 'dr-normal' },
  billing: { role: 'billing', sub: 'billing-normal' },
  frontDesk: { role: 'front-desk', sub: 'fd-normal' },
  bulk: { role: 'coder', sub: 'coder-bulk' },
  night: { role: 'billing', sub: 'billing-night' },
  prober: { role: 'front-desk', sub: 'fd-probe' },
  relative: { role: 'clinician', sub: 'dr-relative', family_name: 'Baker' },
  broad: { role: 'billing', sub: 'billing-broad' },
} as const;

export const EXPECTED_ANOMALIES: ReadonlyArray<readonly [rule: string, sub: string]> = [
  ['bulk-access', 'coder-bulk'],
  ['off-hours', 'billing-night'],
  ['probing', 'fd-probe'],
  ['family-lookup', 'dr-relative'],
  ['broad-search', 'billing-broad'],
];

const PURPOSE: Record<string, string> = { clinician: 'TREAT', billing: 'HPAYMT', 'front-desk': 'HOPERAT', coder: 'HOPERAT' };

export interface Step {
  readonly at: string;
  readonly actor: keyof typeof ACTORS;
  readonly path: string;
  /** Expected HTTP status. */
  readonly status: number;
}

/** The scripted day, Monday 3 June 2024, New York time. */
export const WORKLOAD: readonly Step[] = [
  // A normal day: targeted reads and searches within each role's data set, office hours.
  { at: '2024-06-03T09:00:00-04:00', actor: 'clinician', path: `/Patient/${P.alice}`, status: 200 },
  { at: '2024-06-03T09:05:00-04:00', actor: 'clinician', path: `/Observation?patient=${P.alice}`, status: 200 },
  { at: '2024-06-03T09:20:00-04:00', actor: 'clinician', path: `/Patient/${P.brian}`, status: 200 },
  { at: '2024-06-03T10:00:00-04:00', actor: 'billing', path: `/Patient/${P.alice}`, status: 200 },
  { at: '2024-06-03T10:05:00-04:00', actor: 'billing', path: `/Claim?patient=${P.alice}`, status: 200 },
  { at: '2024-06-03T10:10:00-04:00', actor: 'billing', path: `/Encounter?patient=${P.alice}`, status: 200 },
  // One honest mistake is not probing.
  { at: '2024-06-03T10:15:00-04:00', actor: 'billing', path: `/Observation?patient=${P.alice}`, status: 403 },
  { at: '2024-06-03T10:30:00-04:00', actor: 'frontDesk', path: `/Patient/${P.alice}`, status: 200 },
  { at: '2024-06-03T10:35:00-04:00', actor: 'frontDesk', path: `/Appointment?patient=${P.alice}`, status: 200 },
  // A bulk pull: a coder reads seven charts in seven minutes (the sixth crosses 5 per hour).
  ...[P.alice, P.brian, P.elder, P.david, P.paula, P.henry, P.grace].map(
    (id, i): Step => ({ at: `2024-06-03T11:0${i}:00-04:00`, actor: 'bulk', path: `/Patient/${id}`, status: 200 }),
  ),
  // Probing: five refused reads of clinical data from the front desk within two minutes.
  ...[0, 1, 2, 3, 4].map((i): Step => ({ at: `2024-06-03T14:0${i}:30-04:00`, actor: 'prober', path: `/Observation?patient=${P.alice}`, status: 403 })),
  // The family-member lookup: Dr Baker (sub dr-relative) opens Brian Baker's chart (and an unrelated one).
  { at: '2024-06-03T15:00:00-04:00', actor: 'relative', path: `/Patient/${P.alice}`, status: 200 },
  { at: '2024-06-03T15:01:00-04:00', actor: 'relative', path: `/Patient/${P.brian}`, status: 200 },
  { at: '2024-06-03T15:02:00-04:00', actor: 'relative', path: `/Observation?patient=${P.brian}`, status: 200 },
  // A broad search: every male patient, no patient named.
  { at: '2024-06-03T16:00:00-04:00', actor: 'broad', path: '/Patient?gender=male', status: 200 },
  // Off-hours: billing at 23:30 and again at 23:40 (one alert).
  { at: '2024-06-03T23:30:00-04:00', actor: 'night', path: `/Claim?patient=${P.brian}`, status: 200 },
  { at: '2024-06-03T23:40:00-04:00', actor: 'night', path: `/Patient/${P.brian}`, status: 200 },
];

/** Runs the workload step by step (each request at its own clock time); returns each response's request id. */
export async function runWorkload(w: WorkloadStack, steps: readonly Step[] = WORKLOAD): Promise<string[]> {
  const ids: string[] = [];
  for (const s of steps) {
    w.clock.set(s.at);
    const { role, ...claims } = ACTORS[s.actor];
    const res = await w.stack.get(s.path, { role, purpose: PURPOSE[role], tokenClaims: claims });
    await res.arrayBuffer();
    if (res.status !== s.status) throw new Error(`${s.actor} ${s.path} at ${s.at}: status ${res.status}, expected ${s.status}`);
    ids.push(res.headers.get('x-request-id') ?? '');
    // Evaluations run after release; finish each before the clock moves on.
    await w.stack.gateway.monitor.idle();
  }
  return ids;
}
