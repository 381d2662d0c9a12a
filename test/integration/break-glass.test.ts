// Break-glass end to end on the demo data: the real FHIR upstream, the real IdP, the gateway with
// the shipped policy, the embedded session store and a real webhook receiver.
import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Bundle, Patient } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BreakGlassService, breakGlassDir, isBreakGlassService } from '../../src/breakglass/index.js';
import { DEMO } from '../../src/demo/data.js';
import { freePort, type Stack, startStack } from '../helpers/gateway.js';

const REASON = 'Unconscious patient in the ED, restricted chart needed';
const VIP = DEMO.patients.vip;
const ALICE = DEMO.patients.alice;

interface Receiver {
  readonly url: string;
  readonly port: number;
  readonly got: Record<string, unknown>[];
  close(): Promise<void>;
}

async function receiver(port = 0): Promise<Receiver> {
  const got: Record<string, unknown>[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((ok) => server.listen(port, '127.0.0.1', ok));
  const p = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${p}/hooks/break-glass`, port: p, got, close: () => new Promise((ok) => server.close(() => ok())) };
}

class Clock {
  t = Date.now();
  readonly now = () => new Date(this.t);
}

async function code(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { issue?: { details?: { coding?: { code?: string }[] } }[] };
  return body.issue?.[0]?.details?.coding?.[0]?.code;
}

function service(stack: Stack): BreakGlassService {
  const s = stack.gateway.breakGlass;
  if (!isBreakGlassService(s)) throw new Error('the gateway did not build the break-glass service');
  return s;
}

const house = { sub: 'dr-house' };
const btg = (reason = REASON) => ({ role: 'clinician', purpose: 'BTG', tokenClaims: house, headers: { 'x-break-glass-reason': reason } });

describe('break-glass on the demo data', () => {
  let stack: Stack;
  let rx: Receiver;
  const clock = new Clock();

  beforeAll(async () => {
    rx = await receiver();
    stack = await startStack({ env: { PHI_GATEWAY_ALERT_WEBHOOK: rx.url }, now: clock.now });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    await rx?.close();
    if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
  });

  let session = '';
  let reviewer: string;

  it('refuses the VIP chart for treatment, saying break-glass can reveal it', async () => {
    const res = await stack.get(`/Patient/${VIP}`, { role: 'clinician', purpose: 'TREAT', tokenClaims: house });
    expect(res.status).toBe(403);
    expect(await code(res)).toBe('break-glass-available');
  });

  it('refuses break-glass without a reason, for non-eligible roles, and without one patient', async () => {
    const noReason = await stack.get(`/Patient/${VIP}`, { role: 'clinician', purpose: 'BTG', tokenClaims: house });
    expect([noReason.status, await code(noReason)]).toEqual([400, 'break-glass-reason-required']);
    const billing = await stack.get(`/Patient/${VIP}`, { role: 'billing', purpose: 'BTG', headers: { 'x-break-glass-reason': REASON } });
    expect([billing.status, await code(billing)]).toEqual([403, 'break-glass-not-eligible']);
    const noPatient = await stack.get('/Observation?code=8867-4', btg());
    expect([noPatient.status, await code(noPatient)]).toEqual([400, 'break-glass-no-patient']);
    expect(await service(stack).list()).toHaveLength(0);
    const records = await stack.auditRecords();
    expect(records.filter((r) => r.kind === 'fhir' && r.purpose === 'BTG' && r.decision === 'deny')).toHaveLength(3);
  });

  it('breaks the glass: the record, a session header, an alert, marked audit records', async () => {
    const res = await stack.get(`/Patient/${VIP}`, btg());
    expect(res.status).toBe(200);
    const patient = (await res.json()) as Patient;
    expect(patient.id).toBe(VIP);
    session = res.headers.get('x-break-glass-session') ?? '';
    expect(session).toMatch(/^[0-9a-f-]{36}$/);
    const requestId = res.headers.get('x-request-id');

    await expect.poll(() => rx.got.length, { timeout: 10_000 }).toBe(1);
    const base = stack.url.replace(/\/fhir$/, '');
    expect(rx.got[0]).toMatchObject({
      type: 'break-glass-start',
      session,
      patient: VIP,
      reason: REASON,
      actor: { sub: 'dr-house', roles: ['clinician'] },
      reviewUrl: `${base}/break-glass/sessions/${session}`,
    });

    const records = await stack.auditRecords();
    const start = records.find((r) => r.kind === 'break-glass-start');
    expect(start).toMatchObject({ breakGlass: { session, reason: REASON }, actor: { sub: 'dr-house' }, disclosed: { patients: [VIP] }, details: { requestId } });
    const read = records.find((r) => r.id === requestId);
    expect(read).toMatchObject({ kind: 'fhir', decision: 'allow', purpose: 'BTG', breakGlass: { session, reason: REASON }, disclosed: { patients: [VIP] } });
    // Logs carry ids, never the reason.
    expect(stack.logs.join('')).toContain(session);
    expect(stack.logs.join('')).not.toContain('Unconscious');
  });

  it('reuses the session for the same patient and limits it to that patient', async () => {
    const search = await stack.get(`/Observation?patient=${VIP}`, btg());
    expect(search.status).toBe(200);
    expect(search.headers.get('x-break-glass-session')).toBe(session);
    const bundle = (await search.json()) as Bundle;
    expect(bundle.entry?.length).toBeGreaterThan(0);
    expect(JSON.stringify(bundle)).not.toContain(ALICE);

    // The session does not carry over to a non-BTG request...
    const treat = await stack.get(`/Patient/${VIP}`, { role: 'clinician', purpose: 'TREAT', tokenClaims: house });
    expect(treat.status).toBe(403);
    // ...nor to another patient: that is a new session, with its own alert.
    const other = await stack.get(`/Patient/${ALICE}`, btg());
    expect(other.status).toBe(200);
    const otherSession = other.headers.get('x-break-glass-session');
    expect(otherSession).not.toBe(session);
    await expect.poll(() => rx.got.map((g) => g.session), { timeout: 10_000 }).toEqual([session, otherSession]);
    // Another VIP request (subject=Patient/ID form) still resolves to the VIP session.
    const vipAgain = await stack.get(`/Condition?subject=Patient/${VIP}`, btg());
    expect([vipAgain.status, vipAgain.status === 200 ? '' : await code(vipAgain)]).toEqual([200, '']);
    expect(vipAgain.headers.get('x-break-glass-session')).toBe(session);
  });

  it('never releases another patient through the session (compartment limit)', async () => {
    // Encounters of the VIP, with their patients included: only the VIP may come back.
    const res = await stack.get(`/Encounter?patient=${VIP}&_include=Encounter:subject`, btg());
    expect(res.status).toBe(200);
    const bundle = (await res.json()) as Bundle;
    const patients = (bundle.entry ?? []).filter((e) => e.resource?.resourceType === 'Patient').map((e) => e.resource?.id);
    expect(patients).toEqual([VIP]);
    const records = await stack.auditRecords();
    const rec = records.find((r) => r.id === res.headers.get('x-request-id'));
    expect(rec?.disclosed.patients).toEqual([VIP]);
  });

  it('a privacy officer lists and reviews over HTTP; the actor cannot review their own session', async () => {
    const base = stack.url.replace(/\/fhir$/, '');
    const po = await stack.token('privacy-officer', { sub: 'po-1' });
    const h = { authorization: `Bearer ${po}`, 'x-purpose-of-use': 'HCOMPL' };
    const list = await fetch(`${base}/break-glass/sessions?unreviewed=true`, { headers: h });
    expect(list.status).toBe(200);
    const listed = (await list.json()) as { sessions: { id: string; patient: string; reason: string; reviewed: boolean }[] };
    expect(listed.sessions.map((s) => s.id)).toContain(session);
    expect(listed.sessions.find((s) => s.id === session)).toMatchObject({ patient: VIP, reason: REASON, reviewed: false });

    // Wrong purpose, wrong role: refused and audited.
    const wrongPurpose = await fetch(`${base}/break-glass/sessions`, { headers: { ...h, 'x-purpose-of-use': 'TREAT' } });
    expect(wrongPurpose.status).toBe(403);
    const clinicianToken = await stack.token('clinician', house);
    const wrongRole = await fetch(`${base}/break-glass/sessions`, { headers: { authorization: `Bearer ${clinicianToken}`, 'x-purpose-of-use': 'HCOMPL' } });
    expect(wrongRole.status).toBe(403);
    const noToken = await fetch(`${base}/break-glass/sessions`, { headers: { 'x-purpose-of-use': 'HCOMPL' } });
    expect(noToken.status).toBe(401);

    // The same person, also holding privacy-officer, may not review their own emergency access.
    const self = await stack.token('privacy-officer', { sub: 'dr-house', roles: ['clinician', 'privacy-officer'] });
    const own = await fetch(`${base}/break-glass/sessions/${session}/review`, {
      method: 'POST',
      headers: { authorization: `Bearer ${self}`, 'x-purpose-of-use': 'HCOMPL', 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'justified' }),
    });
    expect(own.status).toBe(403);

    const bad = await fetch(`${base}/break-glass/sessions/${session}/review`, {
      method: 'POST',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'fine' }),
    });
    expect(bad.status).toBe(400);

    const review = await fetch(`${base}/break-glass/sessions/${session}/review`, {
      method: 'POST',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'justified', note: 'Trauma call confirmed with ED roster' }),
    });
    expect(review.status).toBe(200);
    reviewer = review.headers.get('x-request-id') ?? '';
    expect(await review.json()).toMatchObject({ id: session, reviewed: true, reviews: [{ reviewer: { sub: 'po-1' }, outcome: 'justified' }] });

    const after = (await (await fetch(`${base}/break-glass/sessions?unreviewed=true`, { headers: h })).json()) as { sessions: { id: string }[] };
    expect(after.sessions.map((s) => s.id)).not.toContain(session);

    const records = await stack.auditRecords();
    const reviews = records.filter((r) => r.kind === 'break-glass-review');
    // 2 lists, 2 refused lists, 1 unauthenticated, 1 own, 1 bad body, 1 review.
    expect(reviews).toHaveLength(8);
    expect(reviews.find((r) => r.id === reviewer)).toMatchObject({
      decision: 'allow',
      actor: { sub: 'po-1' },
      purpose: 'HCOMPL',
      details: { action: 'review', session, outcome: 'justified', sessionActor: 'dr-house' },
    });
    expect(reviews.filter((r) => r.decision === 'deny').map((r) => r.status).sort()).toEqual([400, 401, 403, 403, 403]);
    expect(reviews.some((r) => r.rule.includes('separation of duties'))).toBe(true);
  });

  it('expires on time: a new session afterwards, and an end Security Alert', async () => {
    clock.t += 60 * 60_000 - 1;
    const still = await stack.get(`/Patient/${VIP}`, btg());
    expect(still.headers.get('x-break-glass-session')).toBe(session);
    clock.t += 1;
    const next = await stack.get(`/Patient/${VIP}`, btg());
    expect(next.status).toBe(200);
    expect(next.headers.get('x-break-glass-session')).not.toBe(session);
    await service(stack).sweep();
    const ends = (await stack.auditRecords()).filter((r) => r.kind === 'break-glass-end');
    expect(ends.map((r) => r.breakGlass?.session)).toContain(session);
    const stats = await service(stack).refreshStats();
    expect(stats.open).toBe(1);
    expect(stats.awaitingReview).toBe(2);
  });
});

describe('break-glass with the webhook receiver down', () => {
  let stack: Stack;
  let rx: Receiver | undefined;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    stack = await startStack({ env: { PHI_GATEWAY_ALERT_WEBHOOK: `http://127.0.0.1:${port}/hooks/break-glass` } });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    await rx?.close();
    if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
  });

  it('still gives the clinician the record, audits the failure, and delivers when the receiver is back', async () => {
    const res = await stack.get(`/Patient/${VIP}`, btg());
    expect(res.status).toBe(200);
    const session = res.headers.get('x-break-glass-session');
    await expect.poll(async () => (await stack.auditRecords()).some((r) => r.kind === 'alert' && r.details?.result === 'failed'), { timeout: 10_000 }).toBe(true);
    rx = await receiver(port);
    await expect.poll(() => rx!.got.map((g) => g.session), { timeout: 15_000 }).toEqual([session]);
    await expect.poll(async () => (await stack.auditRecords()).some((r) => r.kind === 'alert' && r.details?.result === 'delivered'), { timeout: 5000 }).toBe(true);
  }, 30_000);
});
