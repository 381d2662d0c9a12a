// The access-request service over the embedded store and a real file audit sink: request, decide
// (separation of duties, narrower approvals), revoke, use (the pipeline's gate), expiry, alerts in
// the outbox, visibility, and audit-first: nothing is stored when its record cannot be written.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileAccessStore } from '../../../src/access/file-store.js';
import { createAccessService } from '../../../src/access/service.js';
import type { AccessEvent, AccessRequestRecord, AccessService, CallContext } from '../../../src/access/types.js';
import { openAuditSource } from '../../../src/audit/index.js';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import type { AuditRecord, AuditSink, ChainedRecord } from '../../../src/audit/record.js';
import type { Principal } from '../../../src/auth/principal.js';
import { Alerter } from '../../../src/breakglass/alerts.js';
import { FileOutbox, type OutboxItem } from '../../../src/breakglass/outbox.js';
import { GatewayError } from '../../../src/errors.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import { Clock, capturingLogger, principal, request as classified, shippedPolicy } from '../breakglass/helpers.js';

const JUSTIFICATION = 'Payer asked for the discharge summary as a claim attachment';

/** The real file sink, with a switch that makes writes fail (an audit outage). */
class SwitchableSink implements AuditSink {
  failing = false;
  constructor(private readonly inner: FileAuditSink) {}
  write(r: AuditRecord): Promise<void> {
    return this.failing ? Promise.reject(new Error('audit down')) : this.inner.write(r);
  }
  ready(): Promise<boolean> {
    return this.inner.ready();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

let dir: string;
let clock: Clock;
let sink: SwitchableSink;
let store: FileAccessStore;
let svc: AccessService;
let events: AccessEvent[];
let policy: CompiledPolicy;

const bill1 = principal('bill-1', ['billing']);
const bill2 = principal('bill-2', ['billing']);
const po1 = principal('po-1', ['privacy-officer']);
const aud1 = principal('aud-1', ['auditor']);

function ctx(over: Partial<CallContext> = {}): CallContext {
  return { auditId: randomUUID(), via: 'http', client: { address: '10.0.0.7', userAgent: 'test' }, method: 'POST', path: '/access-requests', purpose: 'HCOMPL', ...over };
}

const body = (over: Record<string, unknown> = {}) => ({ dataSet: 'claim-attachment', patients: ['p1'], justification: JUSTIFICATION, minutes: 60, ...over });

const ask = (p: Principal = bill1, over: Record<string, unknown> = {}, c = ctx()) => svc.request(p, 'HPAYMT', body(over), c);
const approve = (p: Principal, id: string, over: Record<string, unknown> = {}, c = ctx()) => svc.decide(p, id, { outcome: 'approved', ...over }, c);
const use = (p: Principal, id: string | string[] | undefined, url = '/DocumentReference?patient=p1', purpose = 'HPAYMT') =>
  svc.use({ principal: p, purpose, request: classified(url), header: id, requestId: randomUUID() });

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
  return 'no error';
}

async function records(): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  for await (const item of openAuditSource(`file:${join(dir, 'audit')}`)) if ('record' in item) out.push(item.record);
  return out;
}

async function recordOf(auditId: string): Promise<ChainedRecord | undefined> {
  return (await records()).find((r) => r.id === auditId);
}

/** The alerts in the outbox (the webhook is unreachable, so they stay there). */
function outbox(): OutboxItem['payload'][] {
  const items = new Map<string, OutboxItem>();
  let text = '';
  try {
    text = readFileSync(join(dir, 'alerts', 'outbox.jsonl'), 'utf8');
  } catch {
    return [];
  }
  for (const line of text.split('\n').filter(Boolean)) {
    const e = JSON.parse(line) as { t: string; item?: OutboxItem; id?: string };
    if (e.t === 'put' && e.item) items.set(e.item.id, e.item);
    else if (e.t === 'done' && e.id) items.delete(e.id);
  }
  return [...items.values()].map((i) => i.payload);
}

async function start(): Promise<void> {
  policy = shippedPolicy();
  const { logger } = capturingLogger();
  const alerter = new Alerter({
    outbox: await FileOutbox.open(join(dir, 'alerts')),
    audit: sink,
    logger,
    // Nothing listens there: alerts stay in the outbox, where the tests read them.
    webhook: 'http://127.0.0.1:9/alerts',
    policyVersion: () => policy.version,
    now: clock.now,
    newId: randomUUID,
    baseDelayMs: 3_600_000,
    pollMs: 3_600_000,
  });
  store = await FileAccessStore.open(join(dir, 'access-requests'));
  svc = createAccessService({
    store,
    alerter,
    audit: sink,
    logger,
    policy: () => policy,
    publicBaseUrl: 'https://gw.example/fhir/',
    now: clock.now,
    sweepMs: 0,
    onEvent: (e) => {
      events.push(e);
      // A failing listener never breaks a call.
      throw new Error('listener failure');
    },
  });
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'access-svc-'));
  clock = new Clock();
  events = [];
  sink = new SwitchableSink(await FileAuditSink.open({ dir: join(dir, 'audit'), rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'access-test' }));
  await start();
});
afterEach(async () => {
  await svc.close();
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('request, approve, use, expire', () => {
  it('runs the whole life of a grant, audited at every step', async () => {
    const c1 = ctx();
    const r = await ask(bill1, {}, c1);
    expect(r).toMatchObject({ status: 'pending', requester: { sub: 'bill-1' }, role: 'billing', dataSet: 'claim-attachment', purpose: 'HPAYMT', scope: { patients: ['p1'] }, minutes: 60, requestId: c1.auditId, uses: 0 });
    expect(await recordOf(c1.auditId)).toMatchObject({
      kind: 'access-request',
      actor: { iss: 'https://idp.test', sub: 'bill-1', roles: ['billing'] },
      purpose: 'HPAYMT',
      role: 'billing',
      client: { address: '10.0.0.7', userAgent: 'test' },
      request: { method: 'POST', path: '/access-requests' },
      decision: 'allow',
      rule: 'accessRequests.dataSets.claim-attachment: requested',
      disclosed: { patients: ['p1'] },
      status: 201,
      details: { action: 'request', request: r.id, dataSet: 'claim-attachment', purpose: 'HPAYMT', scope: { patients: ['p1'] }, minutes: 60 },
    });
    // The justification is in the trail (the auditor reads why access was asked for), as given.
    expect((await recordOf(c1.auditId))?.details?.justification).toBe(JUSTIFICATION);
    expect(outbox()).toMatchObject([
      {
        type: 'access-request',
        actor: { sub: 'bill-1' },
        patient: 'p1',
        access: { request: r.id, dataSet: 'claim-attachment', purpose: 'HPAYMT', patients: 1, minutes: 60, decideUrl: `https://gw.example/access-requests/${r.id}` },
      },
    ]);
    expect(await svc.refreshStats()).toEqual({ pending: 1, active: 0, oldestPendingAgeSec: 0 });
    expect(await code(use(bill1, r.id))).toBe('grant-inactive');

    clock.advance(90_000);
    const c2 = ctx({ path: `/access-requests/${r.id}/approve` });
    const approved = await approve(po1, r.id, { note: 'ok for the appeal' }, c2);
    const expiresAt = new Date(clock.t + 60 * 60_000).toISOString();
    expect(approved).toMatchObject({ status: 'approved', decision: { by: { sub: 'po-1' }, outcome: 'approved', narrowed: false, auditId: c2.auditId, note: 'ok for the appeal' }, granted: { scope: { patients: ['p1'] }, expiresAt } });
    expect(await recordOf(c2.auditId)).toMatchObject({
      actor: { sub: 'po-1' },
      purpose: 'HCOMPL',
      role: 'privacy-officer',
      decision: 'allow',
      rule: 'accessRequests.dataSets.claim-attachment: approved',
      status: 200,
      disclosed: { patients: ['p1'] },
      details: { action: 'approve', request: r.id, requester: 'bill-1', minutes: 60, expiresAt, narrowed: false, decideSeconds: 90, note: 'ok for the appeal' },
    });
    expect(svc.stats()).toMatchObject({ pending: 0 });

    const g = await use(bill1, r.id);
    expect(g).toEqual({ id: r.id, dataSet: 'claim-attachment', patient: 'p1', approvedBy: 'po-1', expiresAt, scope: { patients: ['p1'] } });
    // A request naming no patient is limited to the grant's only patient.
    expect((await use(bill1, r.id, '/DocumentReference')).patient).toBe('p1');
    expect((await store.get(r.id))?.uses).toBe(2);
    expect(await svc.refreshStats()).toEqual({ pending: 0, active: 1, oldestPendingAgeSec: 0 });

    clock.advance(60 * 60_000 - 1);
    expect((await use(bill1, r.id)).id).toBe(r.id);
    clock.advance(1);
    expect(await code(use(bill1, r.id))).toBe('grant-inactive');
    await svc.sweep();
    await svc.sweep();
    const expired = (await records()).filter((x) => x.kind === 'access-grant-expired');
    expect(expired).toHaveLength(1);
    expect(expired[0]).toMatchObject({
      actor: { sub: 'bill-1' },
      purpose: 'HPAYMT',
      rule: 'accessRequests.dataSets.claim-attachment: expired',
      disclosed: { patients: ['p1'] },
      details: { request: r.id, dataSet: 'claim-attachment', expiresAt, uses: 3 },
    });
    expect(svc.stats()).toEqual({ pending: 0, active: 0, oldestPendingAgeSec: 0 });
    expect(events).toEqual([
      { action: 'request', outcome: 'allowed' },
      { action: 'use', outcome: 'inactive' },
      { action: 'approve', outcome: 'allowed', decideSeconds: 90 },
      { action: 'use', outcome: 'allowed' },
      { action: 'use', outcome: 'allowed' },
      { action: 'use', outcome: 'allowed' },
      { action: 'use', outcome: 'inactive' },
      { action: 'expire', outcome: 'allowed' },
    ]);
  });

  it('retries an expiry whose record could not be written, and writes it once', async () => {
    const r = await ask();
    await approve(po1, r.id, { minutes: 1 });
    clock.advance(60_000);
    sink.failing = true;
    await svc.sweep();
    sink.failing = false;
    expect((await records()).filter((x) => x.kind === 'access-grant-expired')).toHaveLength(0);
    await svc.sweep();
    await svc.sweep();
    expect((await records()).filter((x) => x.kind === 'access-grant-expired')).toHaveLength(1);
  });

  it('gives the decide link from publicBaseUrl without /fhir', () => {
    expect(svc.requestUrl('a b')).toBe('https://gw.example/access-requests/a%20b');
  });
});

describe('the request', () => {
  it('refuses a duration beyond the data set cap (told, not cut), and other malformed bodies; each refusal audited', async () => {
    const c = ctx();
    const e = await svc.request(bill1, 'HPAYMT', body({ minutes: 481 }), c).catch((x) => x);
    expect(e).toBeInstanceOf(GatewayError);
    expect(e).toMatchObject({ code: 'access-request-invalid', detail: 'minutes: at most 480' });
    expect(await recordOf(c.auditId)).toMatchObject({ decision: 'deny', rule: 'access-request-invalid', status: 400, details: { action: 'request', why: 'minutes: at most 480' } });
    for (const bad of [
      body({ extra: 1 }),
      body({ patients: [] }),
      body({ patients: ['p1', 'p1'] }),
      body({ patients: ['Patient/p1'] }),
      body({ patients: Array.from({ length: 21 }, (_, i) => `p${i}`) }),
      body({ types: ['Observation'] }),
      body({ types: [] }),
      body({ encounters: [] }),
      body({ period: { start: '2024-12-31', end: '2024-01-01' } }),
      body({ period: {} }),
      body({ period: { start: '2024-13-01' } }),
      body({ justification: 'too short' }),
      body({ justification: `${JUSTIFICATION}\u0007` }),
      body({ minutes: 0 }),
      body({ minutes: 1.5 }),
      body({ minutes: '60' }),
      body({ dataSet: 'billing' }),
      body({ role: 7 }),
      [],
      null,
      'x',
    ]) {
      expect(await code(svc.request(bill1, 'HPAYMT', bad, ctx()))).toBe('access-request-invalid');
    }
    expect(await store.list()).toEqual([]);
    expect(events.every((x) => x.action === 'request' && x.outcome === 'refused')).toBe(true);
  });

  it('keeps a narrower period, types and encounters as asked', async () => {
    const r = await ask(bill1, { patients: ['p1', 'p2'], types: ['DocumentReference'], encounters: ['e1'], period: { start: '2024-01-01', end: '2024-06-30T12:00:00Z' } });
    expect(r.scope).toEqual({ patients: ['p1', 'p2'], encounters: ['e1'], types: ['DocumentReference'], period: { start: '2024-01-01', end: '2024-06-30T12:00:00Z' } });
  });

  it('lets only a requester role ask, for a purpose of the data set, within the pending limit', async () => {
    expect(await code(svc.request(aud1, 'HCOMPL', body(), ctx()))).toBe('access-request-not-permitted');
    expect(await code(svc.request(bill1, 'HCOMPL', body(), ctx()))).toBe('access-request-not-permitted');
    expect(await code(ask(bill1, { role: 'privacy-officer' }))).toBe('access-request-not-permitted');
    expect(await code(ask(principal('bill-9', ['billing', 'privacy-officer']), { role: 'auditor' }))).toBe('access-request-not-permitted');
    await expect(svc.request(aud1, 'HCOMPL', body({ dataSet: 'compliance-chart', minutes: 1440 }), ctx())).resolves.toMatchObject({ role: 'auditor', minutes: 1440 });
    for (let i = 0; i < 5; i++) await ask(bill1, { patients: [`p${i}`] });
    const c = ctx();
    expect(await code(ask(bill1, {}, c))).toBe('access-request-not-permitted');
    expect(await recordOf(c.auditId)).toMatchObject({ decision: 'deny', status: 403, details: { why: '5 undecided requests (at most 5)' } });
    // Another requester is not held to bill-1's limit.
    await expect(ask(bill2)).resolves.toMatchObject({ status: 'pending' });
    expect(await store.list()).toHaveLength(7);
  });

  it('generated bodies are either a stored request or access-request-invalid, with nothing stored', async () => {
    const fhirIds = fc.uniqueArray(fc.stringMatching(/^[A-Za-z0-9\-.]{1,64}$/), { minLength: 1, maxLength: 3 });
    const notString = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.integer()), fc.object());
    const ABSENT = Symbol('absent');
    // Mostly the valid value (or, when optional, none), sometimes anything else.
    const field = (valid: fc.Arbitrary<unknown>, junk: fc.Arbitrary<unknown>, optional = true) =>
      fc.oneof({ arbitrary: valid, weight: 4 }, { arbitrary: optional ? fc.constant(ABSENT) : valid, weight: 2 }, { arbitrary: junk, weight: 1 });
    const gen = fc.oneof(
      {
        weight: 9,
        arbitrary: fc
          .record({
            dataSet: field(fc.constant('claim-attachment'), fc.oneof(fc.string().filter((s) => s !== 'compliance-chart'), notString), false),
            patients: field(fhirIds, fc.oneof(fc.array(fc.string()), fc.anything()), false),
            encounters: field(fhirIds, fc.oneof(fc.array(fc.string(), { maxLength: 3 }), fc.anything())),
            types: field(fc.subarray(['DocumentReference', 'DiagnosticReport'], { minLength: 1 }), fc.oneof(fc.array(fc.string()), fc.anything())),
            period: field(
              fc.record({ start: fc.constantFrom('2024-01-01', '2024-02', '2024-01-01T00:00:00Z'), end: fc.constantFrom('2024-12-31', '2025') }, { requiredKeys: ['start'] }),
              fc.oneof(fc.record({ start: fc.string(), end: fc.anything() }, { requiredKeys: [] }), fc.anything()),
            ),
            justification: field(fc.constant(JUSTIFICATION), fc.oneof(fc.string(), fc.anything()), false),
            minutes: field(fc.integer({ min: 1, max: 480 }), fc.oneof(fc.integer({ min: -5, max: 600 }), fc.double(), fc.anything()), false),
            role: field(fc.constant('billing'), notString),
            extra: fc.oneof({ arbitrary: fc.constant(ABSENT), weight: 6 }, { arbitrary: fc.anything(), weight: 1 }),
          })
          .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== ABSENT))),
      },
      { weight: 1, arbitrary: fc.anything() },
    );
    let stored = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(gen, async (input) => {
        const who = principal(`gen-${randomUUID()}`, ['billing']);
        const before = (await store.list()).length;
        try {
          const r = await svc.request(who, 'HPAYMT', input, ctx());
          stored++;
          expect((await store.list()).length).toBe(before + 1);
          expect(await store.get(r.id)).toMatchObject({ requester: { sub: who.sub } });
        } catch (e) {
          refused++;
          expect(e).toBeInstanceOf(GatewayError);
          expect((e as GatewayError).code).toBe('access-request-invalid');
          expect((await store.list()).length).toBe(before);
        }
      }),
      { numRuns: 150 },
    );
    // Both sides come up: the property is not vacuous.
    expect(refused).toBeGreaterThan(0);
    expect(stored).toBeGreaterThan(0);
    expect(stored + refused).toBe(150);
  });
});

describe('deciding', () => {
  it('generated decisions are either recorded or access-request-invalid, with the request left pending', async () => {
    const ABSENT = Symbol('absent');
    const field = (valid: fc.Arbitrary<unknown>, junk: fc.Arbitrary<unknown>) =>
      fc.oneof({ arbitrary: fc.constant(ABSENT), weight: 4 }, { arbitrary: valid, weight: 2 }, { arbitrary: junk, weight: 1 });
    const gen = fc
      .record({
        outcome: fc.oneof({ arbitrary: fc.constantFrom('approved', 'denied'), weight: 6 }, { arbitrary: fc.anything(), weight: 1 }),
        note: field(fc.string({ maxLength: 50 }), fc.oneof(fc.string({ minLength: 2001, maxLength: 2100 }), fc.anything())),
        minutes: field(fc.integer({ min: 1, max: 120 }), fc.oneof(fc.integer({ min: -5, max: 600 }), fc.double(), fc.anything())),
        patients: field(fc.subarray(['p1', 'p2'], { minLength: 1 }), fc.oneof(fc.array(fc.string()), fc.anything())),
        encounters: field(fc.uniqueArray(fc.constantFrom('e1', 'e2', 'e3'), { minLength: 1 }), fc.anything()),
        types: field(fc.subarray(['DocumentReference', 'DiagnosticReport'], { minLength: 1 }), fc.oneof(fc.array(fc.string()), fc.anything())),
        period: field(
          fc.record({ start: fc.constantFrom('2024-01-01', '2024-03', '2024-06-01T00:00:00Z'), end: fc.constantFrom('2024-12-31', '2024-07') }, { requiredKeys: ['start'] }),
          fc.oneof(fc.record({ start: fc.constantFrom('2023-01-01', 'x'), end: fc.anything() }, { requiredKeys: [] }), fc.anything()),
        ),
        extra: fc.oneof({ arbitrary: fc.constant(ABSENT), weight: 6 }, { arbitrary: fc.anything(), weight: 1 }),
      })
      .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== ABSENT)));
    let decided = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(gen, async (input) => {
        const r = await ask(principal(`gen-${randomUUID()}`, ['billing']), { patients: ['p1', 'p2'], minutes: 120, period: { start: '2024-01-01', end: '2024-12-31' } });
        try {
          const d = await svc.decide(po1, r.id, input, ctx());
          decided++;
          expect(d.status).toBe(input.outcome);
          if (d.granted) expect(d.granted.scope.patients.every((x) => r.scope.patients.includes(x))).toBe(true);
        } catch (e) {
          refused++;
          expect(e).toBeInstanceOf(GatewayError);
          expect((e as GatewayError).code).toBe('access-request-invalid');
          expect((await store.get(r.id))?.status).toBe('pending');
        }
      }),
      { numRuns: 100 },
    );
    expect(decided).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
  });

  it('refuses self-approval, whatever issuer vouches for the approver', async () => {
    const both = principal('bill-1', ['billing', 'privacy-officer']);
    const r = await ask(both);
    const c = ctx();
    expect(await code(approve(both, r.id, {}, c))).toBe('approval-not-permitted');
    expect(await recordOf(c.auditId)).toMatchObject({ decision: 'deny', rule: 'approval-not-permitted', status: 403, details: { action: 'approve', request: r.id, why: 'own request' } });
    expect(await code(approve(principal('bill-1', ['privacy-officer'], { iss: 'https://other-idp.test' }), r.id))).toBe('approval-not-permitted');
    expect(await code(svc.decide(both, r.id, { outcome: 'denied', note: 'not for this payer' }, ctx()))).toBe('approval-not-permitted');
    expect((await store.get(r.id))?.status).toBe('pending');
  });

  it('refuses an approver without an approver role for the data set', async () => {
    const r = await ask();
    // Neither may see the request: told nothing of it, as for an unknown id.
    expect(await code(approve(bill2, r.id))).toBe('access-request-not-found');
    expect(await code(approve(aud1, r.id))).toBe('access-request-not-found');
    expect((await store.get(r.id))?.status).toBe('pending');
    expect(events.filter((e) => e.action === 'approve')).toEqual([
      { action: 'approve', outcome: 'refused' },
      { action: 'approve', outcome: 'refused' },
    ]);
  });

  it('refuses an approver who holds a pending or active request for the same data set', async () => {
    const po2 = principal('po-2', ['privacy-officer', 'billing']);
    const r = await ask();
    const own = await ask(po2);
    const c = ctx();
    expect(await code(approve(po2, r.id, {}, c))).toBe('approval-not-permitted');
    expect((await recordOf(c.auditId))?.details).toMatchObject({ why: 'approver holds a request for the same data set' });
    await approve(po1, own.id);
    // Active now: still refused.
    expect(await code(approve(po2, r.id))).toBe('approval-not-permitted');
    await svc.revoke(po2, own.id, {}, ctx());
    await expect(approve(po2, r.id)).resolves.toMatchObject({ status: 'approved', decision: { by: { sub: 'po-2' } } });
  });

  it('approves narrower, and refuses anything wider', async () => {
    const r = await ask(bill1, { patients: ['p1', 'p2'], minutes: 120, period: { start: '2024-01-01', end: '2024-12-31' } });
    for (const wider of [
      { patients: ['p1', 'p3'] },
      { minutes: 121 },
      { period: { start: '2023-12-31' } },
      { period: { start: '2024-01-01' } },
      { period: { end: '2025-01-01' } },
      { types: ['Observation'] },
      { types: ['DocumentReference', 'DocumentReference'] },
      { patients: [] },
      { unknown: true },
      { note: 'a\u0007bell' },
      { note: 'x'.repeat(2001) },
    ]) {
      expect(await code(approve(po1, r.id, wider))).toBe('access-request-invalid');
    }
    expect(await code(svc.decide(po1, r.id, { outcome: 'maybe' }, ctx()))).toBe('access-request-invalid');
    expect(await code(svc.decide(po1, r.id, { outcome: 'denied', minutes: 5 }, ctx()))).toBe('access-request-invalid');
    expect((await store.get(r.id))?.status).toBe('pending');
    const c = ctx();
    const g = await approve(po1, r.id, { patients: ['p2'], types: ['DocumentReference'], encounters: ['e7'], period: { start: '2024-03-01', end: '2024-06-30' }, minutes: 30 }, c);
    const granted = { patients: ['p2'], encounters: ['e7'], types: ['DocumentReference'], period: { start: '2024-03-01', end: '2024-06-30' } };
    expect(g).toMatchObject({ status: 'approved', decision: { narrowed: true }, granted: { scope: granted, expiresAt: new Date(clock.t + 30 * 60_000).toISOString() } });
    // The asked scope is kept beside the granted one.
    expect(g.scope).toEqual({ patients: ['p1', 'p2'], period: { start: '2024-01-01', end: '2024-12-31' } });
    expect(await recordOf(c.auditId)).toMatchObject({ disclosed: { patients: ['p2'] }, details: { scope: granted, minutes: 30, narrowed: true } });
    expect(await code(use(bill1, g.id))).toBe('grant-out-of-scope');
    expect(await use(bill1, g.id, '/DocumentReference?patient=p2')).toMatchObject({ patient: 'p2', scope: granted });
  });

  it('refuses encounters outside those asked, and the same period given again is not narrower', async () => {
    const r = await ask(bill1, { encounters: ['e1', 'e2'], period: { start: '2024-01-01' } });
    expect(await code(approve(po1, r.id, { encounters: ['e3'] }))).toBe('access-request-invalid');
    await expect(approve(po1, r.id, { encounters: ['e1', 'e2'], period: { start: '2024-01-01' } })).resolves.toMatchObject({ decision: { narrowed: false } });
  });

  it('denies: no grant, and a decided request cannot be decided again', async () => {
    const r = await ask();
    const c = ctx();
    const d = await svc.decide(po1, r.id, { outcome: 'denied', note: 'not for this payer' }, c);
    expect(d).toMatchObject({ status: 'denied', decision: { outcome: 'denied', note: 'not for this payer' }, granted: undefined });
    expect(await recordOf(c.auditId)).toMatchObject({ decision: 'allow', rule: 'accessRequests.dataSets.claim-attachment: denied', details: { action: 'deny', note: 'not for this payer' } });
    expect(await code(use(bill1, r.id))).toBe('grant-inactive');
    const again = ctx();
    expect(await code(approve(po1, r.id, {}, again))).toBe('access-request-decided');
    expect(await recordOf(again.auditId)).toMatchObject({ status: 409, decision: 'deny' });
    expect(await code(approve(po1, randomUUID()))).toBe('access-request-not-found');
  });
});

describe('revoking', () => {
  it('by an approver or by the requester; by nobody else; once', async () => {
    const a = await ask(bill1, { patients: ['p1'] });
    const b = await ask(bill1, { patients: ['p2'] });
    await approve(po1, a.id);
    await approve(po1, b.id);
    expect(await code(svc.revoke(bill2, a.id, {}, ctx()))).toBe('access-request-not-found');
    expect(await code(svc.revoke(po1, a.id, { reason: 'x' }, ctx()))).toBe('access-request-invalid');
    const c1 = ctx();
    clock.advance(10 * 60_000);
    expect(await svc.revoke(po1, a.id, { note: 'appeal settled' }, c1)).toMatchObject({ revoked: { by: { sub: 'po-1' }, note: 'appeal settled', auditId: c1.auditId } });
    expect(await recordOf(c1.auditId)).toMatchObject({ role: 'privacy-officer', rule: 'accessRequests.dataSets.claim-attachment: revoked', details: { action: 'revoke', by: 'approver', note: 'appeal settled' } });
    expect(await code(use(bill1, a.id))).toBe('grant-inactive');
    const c2 = ctx();
    await expect(svc.revoke(bill1, b.id, {}, c2)).resolves.toMatchObject({ revoked: { by: { sub: 'bill-1' } } });
    expect(await recordOf(c2.auditId)).toMatchObject({ role: 'billing', details: { by: 'requester' } });
    expect(await code(use(bill1, b.id, '/DocumentReference?patient=p2'))).toBe('grant-inactive');
    expect(await code(svc.revoke(po1, a.id, {}, ctx()))).toBe('access-request-decided');
    // A pending request is not a grant to revoke.
    const p = await ask(bill1, { patients: ['p3'] });
    expect(await code(svc.revoke(bill1, p.id, {}, ctx()))).toBe('access-request-decided');
    // Revoked grants are not expired later.
    clock.advance(24 * 3600_000);
    await svc.sweep();
    expect((await records()).filter((x) => x.kind === 'access-grant-expired')).toHaveLength(0);
  });
});

describe('using a grant', () => {
  let grant: AccessRequestRecord;
  beforeEach(async () => {
    grant = await approve(po1, (await ask(bill1, { patients: ['p1'] })).id);
  });

  it("refuses another caller's grant and alerts", async () => {
    expect(await code(use(bill2, grant.id))).toBe('grant-invalid');
    // The same sub from another issuer is another caller.
    expect(await code(use(principal('bill-1', ['billing'], { iss: 'https://other-idp.test' }), grant.id))).toBe('grant-invalid');
    const misuse = outbox().filter((a) => a.type === 'grant-misuse');
    expect(misuse).toHaveLength(2);
    expect(misuse[0]).toMatchObject({ actor: { sub: 'bill-2' }, patient: 'p1', access: { grant: grant.id, why: 'not-requester', dataSet: 'claim-attachment' } });
    expect((await store.get(grant.id))?.uses).toBe(0);
  });

  it('refuses a grant used for another patient, and alerts', async () => {
    expect(await code(use(bill1, grant.id, '/DocumentReference?patient=p3'))).toBe('grant-out-of-scope');
    expect(await code(use(bill1, grant.id, '/Patient/p3'))).toBe('grant-out-of-scope');
    expect(outbox().filter((a) => a.type === 'grant-misuse')).toMatchObject([
      { actor: { sub: 'bill-1' }, patient: 'p3', access: { grant: grant.id, why: 'patient' } },
      { actor: { sub: 'bill-1' }, patient: 'p3', access: { grant: grant.id, why: 'patient' } },
    ]);
    expect(events.filter((e) => e.action === 'use')).toEqual([
      { action: 'use', outcome: 'out-of-scope' },
      { action: 'use', outcome: 'out-of-scope' },
    ]);
  });

  it('refuses another purpose, a token limited to another patient, and several granted patients with none named', async () => {
    expect(await code(use(bill1, grant.id, '/DocumentReference?patient=p1', 'HOPERAT'))).toBe('grant-out-of-scope');
    expect(await code(use(principal('bill-1', ['billing'], { patient: 'p9' }), grant.id))).toBe('grant-out-of-scope');
    const two = await approve(po1, (await ask(bill1, { patients: ['p1', 'p2'] })).id);
    expect(await code(use(bill1, two.id, '/DocumentReference'))).toBe('grant-out-of-scope');
    expect((await use(bill1, two.id, '/Patient/p2/DocumentReference')).patient).toBe('p2');
  });

  it('refuses malformed, repeated and unknown grant ids without alerting', async () => {
    expect(await code(use(bill1, 'not-a-grant'))).toBe('grant-invalid');
    expect(await code(use(bill1, [grant.id, grant.id]))).toBe('grant-invalid');
    expect(await code(use(bill1, undefined))).toBe('grant-invalid');
    expect(await code(use(bill1, randomUUID()))).toBe('grant-invalid');
    expect(outbox().filter((a) => a.type === 'grant-misuse')).toEqual([]);
  });

  it('refuses a grant whose data set left the policy', async () => {
    const base = shippedPolicy();
    const dataSets = new Map(base.accessRequests!.dataSets);
    dataSets.delete('claim-attachment');
    policy = { ...base, accessRequests: { ...base.accessRequests!, dataSets } };
    expect(await code(use(bill1, grant.id))).toBe('grant-inactive');
  });

  it('answers grant-unavailable when the store cannot be read or the use counted', async () => {
    const orig = store.get.bind(store);
    store.get = async () => {
      throw new Error('disk gone');
    };
    expect(await code(use(bill1, grant.id))).toBe('grant-unavailable');
    store.get = orig;
    store.noteUse = async () => {
      throw new Error('disk full');
    };
    expect(await code(use(bill1, grant.id))).toBe('grant-unavailable');
  });
});

describe('visibility', () => {
  it('shows a request to its requester and its approvers only; every read audited', async () => {
    const r = await ask();
    await svc.request(aud1, 'HCOMPL', body({ dataSet: 'compliance-chart', patients: ['p5'] }), ctx());
    const c = ctx({ method: 'GET', path: `/access-requests/${r.id}`, purpose: 'HPAYMT' });
    await expect(svc.get(bill1, r.id, c)).resolves.toMatchObject({ id: r.id });
    expect(await recordOf(c.auditId)).toMatchObject({ decision: 'allow', status: 200, purpose: 'HPAYMT', role: 'billing', disclosed: { patients: ['p1'] }, details: { action: 'get', request: r.id } });
    await expect(svc.get(po1, r.id, ctx())).resolves.toMatchObject({ id: r.id });
    const other = ctx();
    expect(await code(svc.get(bill2, r.id, other))).toBe('access-request-not-found');
    expect(await recordOf(other.auditId)).toMatchObject({ decision: 'deny', status: 404, disclosed: { patients: [] } });
    expect(await code(svc.get(aud1, r.id, ctx()))).toBe('access-request-not-found');

    expect((await svc.list(bill1, {}, ctx())).map((x) => x.id)).toEqual([r.id]);
    expect(await svc.list(bill2, {}, ctx())).toEqual([]);
    const l = ctx();
    expect((await svc.list(po1, { status: 'pending' }, l)).map((x) => x.dataSet)).toEqual(['claim-attachment', 'compliance-chart']);
    expect(await recordOf(l.auditId)).toMatchObject({ disclosed: { patients: ['p1', 'p5'] }, details: { action: 'list', status: 'pending', count: 2 } });
    expect(await svc.list(po1, { status: 'active' }, ctx())).toEqual([]);
    await approve(po1, r.id);
    expect((await svc.list(bill1, { status: 'active' }, ctx())).map((x) => x.id)).toEqual([r.id]);
    expect(await code(svc.list(po1, { status: 'expired' as never }, ctx()))).toBe('access-request-invalid');
  });
});

describe('audit first', () => {
  it('stores nothing when the audit record cannot be written', async () => {
    sink.failing = true;
    expect(await code(ask())).toBe('audit-unavailable');
    expect(await store.list()).toEqual([]);
    sink.failing = false;
    const r = await ask();
    sink.failing = true;
    expect(await code(approve(po1, r.id))).toBe('audit-unavailable');
    expect((await store.get(r.id))?.status).toBe('pending');
    // A refusal that cannot be recorded is not answered either.
    expect(await code(approve(bill2, r.id))).toBe('audit-unavailable');
    expect(await code(svc.get(bill1, r.id, ctx()))).toBe('audit-unavailable');
    sink.failing = false;
    await approve(po1, r.id);
    sink.failing = true;
    expect(await code(svc.revoke(po1, r.id, {}, ctx()))).toBe('audit-unavailable');
    expect((await store.get(r.id))?.revoked).toBeUndefined();
    sink.failing = false;
    expect((await records()).filter((x) => x.kind === 'access-request').map((x) => x.details?.action)).toEqual(['request', 'approve']);
  });

  it('writes a superseding record when a change audited as allowed loses a race in the store', async () => {
    const r = await ask();
    // Another process decides between this call's checks and its commit.
    const other = await FileAccessStore.open(join(dir, 'access-requests'));
    const decide = store.decide.bind(store);
    store.decide = async (id, d, g) => {
      await other.decide(id, { ...d, auditId: 'elsewhere', outcome: 'denied' }, undefined);
      return decide(id, d, g);
    };
    const c = ctx();
    expect(await code(approve(po1, r.id, {}, c))).toBe('access-request-decided');
    await other.close();
    const mine = (await records()).filter((x) => x.details?.request === r.id && x.details?.action === 'approve');
    expect(mine).toMatchObject([
      { id: c.auditId, decision: 'allow' },
      { decision: 'deny', status: 409, rule: 'access-request-decided', details: { supersedes: c.auditId } },
    ]);
    expect((await store.get(r.id))?.decision?.auditId).toBe('elsewhere');
  });
});
