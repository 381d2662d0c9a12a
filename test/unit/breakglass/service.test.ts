// The break-glass service over the embedded store: sessions, limits, expiry, review, audit, alerts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Alerter } from '../../../src/breakglass/alerts.js';
import { FileSessionStore } from '../../../src/breakglass/file-store.js';
import { FileOutbox } from '../../../src/breakglass/outbox.js';
import { type BreakGlassService, createBreakGlassService } from '../../../src/breakglass/service.js';
import { GatewayError } from '../../../src/errors.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import { Clock, capturingLogger, MemorySink, principal, request, shippedPolicy } from './helpers.js';

const REASON = 'Unconscious patient in the ED, chart restricted';

let dir: string;
let clock: Clock;
let audit: MemorySink;
let svc: BreakGlassService;
let logs: string[];
let policy: CompiledPolicy;
let published: string[];

async function start(over: Parameters<typeof shippedPolicy>[0] = {}): Promise<BreakGlassService> {
  policy = shippedPolicy(over);
  const { logger, lines } = capturingLogger();
  logs = lines;
  const alerter = new Alerter({
    outbox: await FileOutbox.open(dir),
    audit,
    logger,
    webhook: undefined,
    redis: { channel: 'alerts', publish: async (_c, m) => void published.push(m) },
    policyVersion: () => policy.version,
    now: clock.now,
    newId: () => crypto.randomUUID(),
    pollMs: 20,
  });
  return createBreakGlassService({
    store: await FileSessionStore.open(dir),
    alerter,
    audit,
    logger,
    policy: () => policy,
    publicBaseUrl: 'https://gw.example/fhir',
    now: clock.now,
    sweepMs: 0,
  });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
  return 'no error';
}

const open = (sub: string, url: string, reason: string | string[] | undefined = REASON, over = {}) =>
  svc.open({ principal: principal(sub, ['clinician'], over), request: request(url), reason, requestId: `req-${Math.random()}` });

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bg-svc-'));
  clock = new Clock();
  audit = new MemorySink();
  published = [];
  svc = await start();
});
afterEach(async () => {
  await svc.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('opening a session', () => {
  it('opens one session per actor and patient, reuses it, and audits the start once', async () => {
    const a = await open('dr-a', '/Patient/vip');
    expect(a.patient).toBe('vip');
    expect(a.reason).toBe(REASON);
    const again = await open('dr-a', '/Patient/vip/Observation');
    expect(again.session).toBe(a.session);
    const starts = audit.records.filter((r) => r.kind === 'break-glass-start');
    expect(starts).toHaveLength(1);
    expect(starts[0]).toMatchObject({
      purpose: 'BTG',
      actor: { sub: 'dr-a', iss: 'https://idp.test' },
      breakGlass: { session: a.session, reason: REASON },
      disclosed: { patients: ['vip'] },
      details: { startedAt: clock.now().toISOString(), expiresAt: new Date(clock.t + 60 * 60_000).toISOString() },
    });
  });

  it('keeps sessions apart by actor and by patient', async () => {
    const a = await open('dr-a', '/Patient/p1');
    const b = await open('dr-a', '/Patient/p2');
    const c = await open('dr-b', '/Patient/p1');
    expect(new Set([a.session, b.session, c.session]).size).toBe(3);
    expect(b.patient).toBe('p2');
  });

  it('refuses a missing or short reason, and a request that names no single patient', async () => {
    const noReason = svc.open({ principal: principal('dr-a'), request: request('/Patient/p1'), reason: undefined, requestId: 'r0' });
    expect(await code(noReason)).toBe('break-glass-reason-required');
    expect(await code(open('dr-a', '/Patient/p1', 'too short'))).toBe('break-glass-reason-required');
    expect(await code(open('dr-a', '/Observation'))).toBe('break-glass-no-patient');
    expect(await code(open('dr-a', '/Observation?patient=p1&subject=p2'))).toBe('break-glass-no-patient');
    expect(audit.records).toHaveLength(0);
    expect(await svc.list()).toHaveLength(0);
  });

  it('never lets a patient-limited token break into another patient', async () => {
    expect(await code(open('dr-a', '/Observation?patient=p2', REASON, { patient: 'p1' }))).toBe('compartment-denied');
    await expect(open('dr-a', '/Observation?patient=p1', REASON, { patient: 'p1' })).resolves.toMatchObject({ patient: 'p1' });
  });

  it('takes the session length from the policy, and expires on time', async () => {
    await svc.close();
    svc = await start({ sessionMs: 10 * 60_000 });
    const first = await open('dr-a', '/Patient/p1');
    clock.advance(10 * 60_000 - 1);
    expect((await open('dr-a', '/Patient/p1')).session).toBe(first.session);
    clock.advance(1);
    const second = await open('dr-a', '/Patient/p1');
    expect(second.session).not.toBe(first.session);
  });

  it('limits sessions per actor in any 24 hours: 429, alerted, nothing opened', async () => {
    await svc.close();
    svc = await start({ maxSessionsPerDay: 2 });
    await open('dr-a', '/Patient/p1');
    await open('dr-a', '/Patient/p2');
    // Reusing an open session is not a new one.
    await open('dr-a', '/Patient/p2');
    expect(await code(open('dr-a', '/Patient/p3'))).toBe('break-glass-limit');
    expect(await svc.list()).toHaveLength(2);
    await expect.poll(() => published.map((m) => JSON.parse(m).type)).toContain('break-glass-limit');
    const limit = published.map((m) => JSON.parse(m)).find((m) => m.type === 'break-glass-limit');
    expect(limit).toMatchObject({ actor: { sub: 'dr-a' }, patient: 'p3', sessionsInLast24h: 2 });
    // Another clinician is not affected.
    await expect(open('dr-b', '/Patient/p3')).resolves.toBeDefined();
    // The window rolls: 24 h after the first session, one more is allowed.
    clock.advance(24 * 3600_000);
    await expect(open('dr-a', '/Patient/p3')).resolves.toBeDefined();
  });

  it('fails closed when the start cannot be audited', async () => {
    audit.failing = true;
    await expect(open('dr-a', '/Patient/p1')).rejects.toThrow('audit down');
  });

  it('alerts with a review link, and logs without the reason text', async () => {
    const s = await open('dr-a', '/Patient/vip');
    await expect.poll(() => published.length).toBe(1);
    expect(JSON.parse(published[0])).toMatchObject({
      type: 'break-glass-start',
      session: s.session,
      patient: 'vip',
      reason: REASON,
      actor: { sub: 'dr-a' },
      reviewUrl: `https://gw.example/break-glass/sessions/${s.session}`,
    });
    const text = logs.join('');
    expect(text).toContain('BREAK-GLASS session opened');
    expect(text).toContain(s.session);
    expect(text).not.toContain('Unconscious');
  });
});

describe('expiry and restart', () => {
  it('audits the end once, after expiry', async () => {
    const s = await open('dr-a', '/Patient/p1');
    await svc.sweep();
    expect(audit.kinds()).not.toContain('break-glass-end');
    clock.advance(60 * 60_000);
    await svc.sweep();
    await svc.sweep();
    const ends = audit.records.filter((r) => r.kind === 'break-glass-end');
    expect(ends).toHaveLength(1);
    expect(ends[0]).toMatchObject({ breakGlass: { session: s.session }, disclosed: { patients: ['p1'] } });
    expect((await svc.get(s.session))?.endedAt).toBe(clock.now().toISOString());
  });

  it('retries an end record that could not be written', async () => {
    await open('dr-a', '/Patient/p1');
    clock.advance(60 * 60_000);
    audit.failing = true;
    await svc.sweep();
    audit.failing = false;
    await svc.sweep();
    expect(audit.records.filter((r) => r.kind === 'break-glass-end')).toHaveLength(1);
  });

  it('keeps sessions and reviews across a restart', async () => {
    const s = await open('dr-a', '/Patient/p1');
    await svc.close();
    svc = await start();
    expect((await open('dr-a', '/Patient/p1')).session).toBe(s.session);
    expect(audit.records.filter((r) => r.kind === 'break-glass-start')).toHaveLength(1);
  });
});

describe('review', () => {
  it('queues every session until reviewed, and keeps each review', async () => {
    const s1 = await open('dr-a', '/Patient/p1');
    clock.advance(5000);
    const s2 = await open('dr-b', '/Patient/p2');
    expect((await svc.list({ unreviewed: true })).map((s) => s.id)).toEqual([s1.session, s2.session]);
    expect(await svc.refreshStats()).toEqual({ open: 2, awaitingReview: 2, oldestUnreviewedAgeSec: 5 });

    const r = await svc.review({ id: s1.session, reviewer: { iss: 'https://idp.test', sub: 'po-1', roles: ['privacy-officer'] }, outcome: 'justified', note: 'ok', via: 'http', auditId: 'rq1' });
    expect(r.ok).toBe(true);
    expect((await svc.list({ unreviewed: true })).map((s) => s.id)).toEqual([s2.session]);
    await svc.review({ id: s1.session, reviewer: { iss: 'https://idp.test', sub: 'po-2', roles: ['privacy-officer'] }, outcome: 'unjustified', via: 'cli', auditId: 'rq2' });
    const reviews = (await svc.get(s1.session))?.reviews ?? [];
    expect(reviews.map((x) => [x.reviewer.sub, x.outcome])).toEqual([
      ['po-1', 'justified'],
      ['po-2', 'unjustified'],
    ]);
    clock.advance(60 * 60_000);
    expect(await svc.refreshStats()).toEqual({ open: 0, awaitingReview: 1, oldestUnreviewedAgeSec: 3600 });
    expect(svc.stats()).toEqual({ open: 0, awaitingReview: 1, oldestUnreviewedAgeSec: 3600 });
  });

  it('refuses the actor reviewing their own session (whatever the issuer), and unknown sessions', async () => {
    const s = await open('dr-a', '/Patient/p1');
    const own = await svc.review({ id: s.session, reviewer: { iss: 'https://other-idp', sub: 'dr-a', roles: ['privacy-officer'] }, outcome: 'justified', via: 'http', auditId: 'x' });
    expect(own).toEqual({ ok: false, why: 'own-session' });
    const none = await svc.review({ id: 'nope', reviewer: { iss: undefined, sub: 'po', roles: [] }, outcome: 'justified', via: 'cli', auditId: 'y' });
    expect(none).toEqual({ ok: false, why: 'not-found' });
    expect((await svc.get(s.session))?.reviews).toEqual([]);
  });
});
