// The `no-relationship` anomaly rule: access to a patient without a care relationship, as the
// request's relationship evidence shows it (refused for lack of one, break-glass opened for lack of
// one, or only recorded under `required: false`): once per actor per window, distinct patients
// counted against the threshold, alerts naming no patient the response did not release.
import { describe, expect, it } from 'vitest';
import type { AuditRecord, RelationshipEvidence } from '../../../src/audit/record.js';
import type { Principal } from '../../../src/auth/principal.js';
import type { AlertPayload } from '../../../src/breakglass/outbox.js';
import { readPolicySource } from '../../../src/config/policy-file.js';
import { GatewayError } from '../../../src/errors.js';
import { createMonitor } from '../../../src/monitor/monitor.js';
import { compileAnomalies, relationshipRefusal, withoutRelationship } from '../../../src/monitor/rules.js';
import { MemoryWindowStore } from '../../../src/monitor/window.js';
import type { Exchange } from '../../../src/proxy/record.js';
import { principal, request } from '../breakglass/helpers.js';
import { evidence } from './relationship-fixtures.js';

const silent = { warn() {}, error() {}, info() {}, debug() {} } as never;
const T0 = Date.parse('2024-06-03T15:00:00Z');
const MIN = 60_000;
const allow = { status: 200, decision: 'allow', rule: 'r' } as const;
const deny = { status: 404, decision: 'deny', rule: 'r -> dataSets.clinical.relationship: no relationship' } as const;
let seq = 0;

function exchange(p: Principal, o: { at?: number; url?: string; relationship?: RelationshipEvidence; released?: string[]; breakGlass?: Exchange['breakGlass'] } = {}): Exchange {
  seq++;
  const released = o.released ?? [];
  const url = o.url ?? '/Patient/pat-9';
  return {
    id: `req-${seq}`,
    time: new Date(o.at ?? T0),
    started: 0n,
    method: 'GET',
    url,
    clientAddress: '127.0.0.1',
    userAgent: undefined,
    policyVersion: 'v1',
    principal: p,
    purpose: o.breakGlass ? 'BTG' : 'TREAT',
    role: 'clinician',
    request: request(url),
    relationship: o.relationship,
    breakGlass: o.breakGlass,
    stats: { elementsRemoved: 0, resourcesWithheld: 0, resources: released.map((x) => `Patient/${x}`), patients: new Set(released) },
  };
}

function setup(rule: Record<string, unknown> = {}) {
  const records: AuditRecord[] = [];
  const alerts: AlertPayload[] = [];
  const monitor = createMonitor({
    audit: { write: async (r: AuditRecord) => void records.push(r) } as never,
    logger: silent,
    alerter: { raise: async (a: AlertPayload) => void alerts.push(a) },
    store: new MemoryWindowStore(),
    rules: () => compileAnomalies({ rules: [{ name: 'access-without-relationship', kind: 'no-relationship', ...rule }] }),
  });
  return { monitor, records, alerts };
}

describe('no-relationship anomaly rule', () => {
  it('the schema takes it without a threshold; defaults: threshold 1, one-hour window, not blocking', () => {
    const yaml = `version: 1
purposes: { TREAT: { display: treatment } }
dataSets: { clinical: { rules: [{ types: [Patient] }] } }
roles: { clinician: { purposes: { TREAT: clinical } } }
anomalies: { rules: [{ name: norel, kind: no-relationship }] }
`;
    const r = readPolicySource('p.yaml', Buffer.from(yaml));
    expect(r.problems).toEqual([]);
    const [rule] = compileAnomalies(r.loaded!.raw.anomalies);
    expect([rule!.kind, rule!.threshold, rule!.windowMs, rule!.block]).toEqual(['no-relationship', 1, 60 * MIN, false]);
  });

  it('reads a relationship refusal from the rule as the pipeline writes it', () => {
    const g = 'roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0] -> dataSets.clinical.relationship';
    expect(relationshipRefusal(`${g}: no relationship: relationship-required`)).toBe('no-relationship');
    expect(relationshipRefusal(`${g}: no relationship: not-found`)).toBe('no-relationship');
    expect(relationshipRefusal(`${g}: no relationship`)).toBe('no-relationship');
    expect(relationshipRefusal('roles.coder.purposes.HOPERAT -> dataSets.coding.rules[0]: withheld (relationship)')).toBe('no-relationship');
    expect(relationshipRefusal(`${g}: search too broad: relationship-search-too-broad`)).toBe('too-broad');
    expect(relationshipRefusal('roles.coder.purposes.HOPERAT -> dataSets.coding.rules[0]: withheld (label)')).toBeUndefined();
    expect(relationshipRefusal('relationship-unavailable')).toBeUndefined();
    expect(relationshipRefusal(undefined)).toBeUndefined();
  });

  it('classifies the access: refused, break-glass, recorded only; none without unrelated patients', () => {
    expect(withoutRelationship(evidence({ required: true, unrelated: ['p'] }), false)).toEqual({ patients: ['p'], access: 'refused' });
    expect(withoutRelationship(evidence({ unrelated: ['p'] }), true)).toEqual({ patients: ['p'], access: 'break-glass' });
    expect(withoutRelationship(evidence({ unrelated: ['p'] }), false)).toEqual({ patients: ['p'], access: 'recorded-only' });
    expect(withoutRelationship(evidence({ required: true }), false)).toBeUndefined();
    expect(withoutRelationship(undefined, false)).toBeUndefined();
    // A refusal the rule tells of, naming no patient (a resource withheld as an unrelated patient's).
    expect(withoutRelationship(evidence({ required: true }), false, 'g -> r: withheld (relationship)')).toEqual({ patients: [], access: 'refused' });
    expect(withoutRelationship(evidence({ required: true }), false, 'g -> r: search too broad')).toBeUndefined();
  });

  it('a refusal for lack of a relationship fires once per actor per window; the alert names no patient', async () => {
    const { monitor, records, alerts } = setup();
    const a = principal('dr-a');
    const refused = evidence({ required: true, unrelated: ['pat-9'] });
    monitor.observe(exchange(a, { relationship: refused }), deny);
    monitor.observe(exchange(a, { at: T0 + 10 * MIN, relationship: evidence({ required: true, unrelated: ['pat-8'] }) }), deny);
    monitor.observe(exchange(principal('dr-b'), { at: T0 + 20 * MIN, relationship: refused }), deny);
    // Related, or no evidence at all: nothing.
    monitor.observe(exchange(principal('dr-c'), { relationship: evidence({ required: true, related: [{ patient: 'p1', resource: 'CareTeam/1', source: 'care-team' }] }), released: ['p1'] }), allow);
    monitor.observe(exchange(principal('dr-d'), { released: ['p1'] }), allow);
    await monitor.idle();
    expect(records.map((r) => [r.actor.sub, r.kind, r.decision, r.rule, r.details?.count, r.details?.access, r.disclosed.patients])).toEqual([
      ['dr-a', 'anomaly', 'deny', 'anomalies.rules[0] (access-without-relationship): no-relationship', 1, 'refused', []],
      ['dr-b', 'anomaly', 'deny', 'anomalies.rules[0] (access-without-relationship): no-relationship', 1, 'refused', []],
    ]);
    expect(alerts).toHaveLength(2);
    expect(alerts[0]).toMatchObject({ type: 'anomaly', patient: '', actor: { sub: 'dr-a' }, anomaly: { kind: 'no-relationship', count: 1, threshold: 1, patients: 0, access: 'refused' } });
    expect(JSON.stringify(alerts)).not.toContain('pat-');
    // The next window fires again.
    monitor.observe(exchange(a, { at: T0 + 61 * MIN, relationship: refused }), deny);
    await monitor.idle();
    expect(records.map((r) => r.actor.sub)).toEqual(['dr-a', 'dr-b', 'dr-a']);
  });

  it('break-glass opened for lack of a relationship, and a recorded-only search: the released unrelated patients only', async () => {
    const { monitor, records, alerts } = setup();
    monitor.observe(exchange(principal('dr-er'), { relationship: evidence({ unrelated: ['pat-9'] }), released: ['pat-9'], breakGlass: { session: 's1', reason: 'r', patient: 'pat-9' } }), allow);
    const related = [{ patient: 'pat-1', resource: 'CareTeam/1', source: 'care-team' }];
    monitor.observe(exchange(principal('dr-a'), { url: '/Observation?code=1', relationship: evidence({ related, unrelated: ['pat-7'] }), released: ['pat-1', 'pat-7'] }), allow);
    await monitor.idle();
    expect(records.map((r) => [r.actor.sub, r.details?.access, r.disclosed.patients])).toEqual([
      ['dr-er', 'break-glass', ['pat-9']],
      ['dr-a', 'recorded-only', ['pat-7']],
    ]);
    // One released patient: named in the alert as the other rules name it.
    expect(alerts.map((x) => [x.patient, x.anomaly?.access])).toEqual([
      ['pat-9', 'break-glass'],
      ['pat-7', 'recorded-only'],
    ]);
  });

  it('a resource withheld as an unrelated patient\'s (the rule says so, no patient named) fires too, counted by the resource', async () => {
    const { monitor, records } = setup({ threshold: 2 });
    const a = principal('dr-a');
    const withheld = { status: 404, decision: 'deny', rule: 'g -> dataSets.clinical.rules[0]: withheld (relationship)' } as const;
    monitor.observe(exchange(a, { url: '/Observation/o-1', relationship: evidence({ required: true }) }), withheld);
    monitor.observe(exchange(a, { url: '/Observation/o-1', relationship: evidence({ required: true }) }), withheld);
    await monitor.idle();
    expect(records).toHaveLength(0);
    monitor.observe(exchange(a, { url: '/Observation/o-2', relationship: evidence({ required: true }) }), withheld);
    // Too broad is not about an unrelated patient.
    monitor.observe(exchange(a, { url: '/Observation?code=1', relationship: evidence({ required: true }) }), { status: 400, decision: 'deny', rule: 'g -> r: search too broad' });
    await monitor.idle();
    expect(records.map((r) => [r.details?.count, r.details?.access, r.disclosed.patients])).toEqual([[2, 'refused', []]]);
  });

  it('a threshold counts distinct patients without a relationship within the window', async () => {
    const { monitor, records } = setup({ threshold: 3, windowMinutes: 30 });
    const a = principal('dr-a');
    const refused = (p: string, at: number) => exchange(a, { at, relationship: evidence({ required: true, unrelated: [p] }) });
    monitor.observe(refused('p1', T0), deny);
    monitor.observe(refused('p1', T0 + MIN), deny); // the same patient again
    monitor.observe(refused('p2', T0 + 2 * MIN), deny);
    await monitor.idle();
    expect(records).toHaveLength(0);
    monitor.observe(refused('p3', T0 + 3 * MIN), deny);
    await monitor.idle();
    expect(records.map((r) => r.details?.count)).toEqual([3]);
    // p1 and p2 left the 30-minute window: two distinct again, below the threshold.
    const { monitor: m2, records: r2 } = setup({ threshold: 3, windowMinutes: 30 });
    m2.observe(refused('p1', T0), deny);
    m2.observe(refused('p2', T0 + MIN), deny);
    m2.observe(refused('p3', T0 + 40 * MIN), deny);
    await m2.idle();
    expect(r2).toHaveLength(0);
  });

  it('block: true refuses the actor for the rest of the window once it fired', async () => {
    const { monitor } = setup({ block: true });
    const a = principal('dr-a');
    await monitor.gate(exchange(a));
    monitor.observe(exchange(a, { relationship: evidence({ required: true, unrelated: ['pat-9'] }) }), deny);
    await monitor.idle();
    await expect(monitor.gate(exchange(a, { at: T0 + 59 * MIN }))).rejects.toBeInstanceOf(GatewayError);
    await expect(monitor.gate(exchange(a, { at: T0 + 61 * MIN }))).resolves.toBeUndefined();
    await expect(monitor.gate(exchange(principal('dr-b'), { at: T0 + MIN }))).resolves.toBeUndefined();
  });
});
