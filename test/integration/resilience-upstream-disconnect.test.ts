/**
 * A client that goes away takes its upstream call with it. 300 requests to an upstream that drips
 * one byte every 200 ms fill the in-flight limit (256 admitted, the rest refused 503 gateway-busy);
 * their clients then disconnect. With the default limits and a total deadline far away (60 s), only
 * the disconnects can free the gateway: the upstream sees every connection the gateway opened to it
 * closed, the in-flight and buffer gauges return to 0, a well-behaved request on another path is
 * answered 200 at once (not 503), and every one of the 300 requests has its audit record (the
 * disconnected ones as client-closed, status 499).
 */
import { type ClientRequest, request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drip, type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, errorCode, expectError, receive } from '../security/support.js';

const SLOW = 300;
const MAX_INFLIGHT = 256;
/** Stated bound for the well-behaved answer once the slow clients have gone (2-core CI). */
const FAST_BOUND_MS = 1_000;

const dripping = { dripping: 0 };
let up: FaultyUpstream;
let stack: Stack;

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Patient/drip': drip(200, dripping),
    '/Patient/ok': fhirJson({ resourceType: 'Patient', id: 'ok', name: [{ family: 'Fast' }] }),
  });
  // The shipped defaults (64 upstream connections, 256 in flight, idle timeouts of 30 s, a total
  // deadline of 60 s), stated so the test does not depend on them changing.
  stack = await startStack({
    upstreamUrl: up.url,
    configure: (c) => ({
      ...c,
      upstream: { ...c.upstream, connections: 64, headersTimeoutMs: 30_000, bodyTimeoutMs: 30_000, totalTimeoutMs: 60_000 },
      limits: { ...c.limits, maxInflightRequests: MAX_INFLIGHT },
    }),
  });
}, 60_000);

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

async function until(what: string, ok: () => boolean | Promise<boolean>, withinMs: number): Promise<void> {
  const end = Date.now() + withinMs;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function gauge(name: string): Promise<number> {
  const m = new RegExp(`^phi_gateway_${name} (\\S+)$`, 'm').exec(await stack.gateway.metrics.render());
  if (!m) throw new Error(`no gauge ${name}`);
  return Number(m[1]);
}

interface Slow {
  readonly req: ClientRequest;
  /** The status, if the gateway answered before the client left (the refused ones). */
  status?: number;
  body?: string;
}

/** A request on its own connection, left open until the test destroys it. */
function slowRequest(base: URL, token: string): Slow {
  const req = httpRequest({
    host: base.hostname,
    port: base.port,
    path: `${base.pathname}/Patient/drip`,
    agent: false,
    headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' },
  });
  const s: Slow = { req };
  req.on('response', (res) => {
    s.status = res.statusCode;
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      s.body = Buffer.concat(chunks).toString('utf8');
    });
    res.on('error', () => {});
  });
  req.on('error', () => {}); // ECONNRESET from our own destroy()
  req.end();
  return s;
}

describe('clients that disconnect free the gateway at once', () => {
  it(`${SLOW} slow requests whose clients go away: upstream sockets closed, slots and budget freed, the next request answered`, async () => {
    const base = new URL(stack.url);
    const token = await stack.token('clinician');
    const slow = Array.from({ length: SLOW }, () => slowRequest(base, token));
    const refused = () => slow.filter((s) => s.status !== undefined).length;

    // The limit is full: 256 admitted (64 on upstream connections, dripping; the rest queued for
    // one), everything beyond refused at once.
    await until('the in-flight limit is full', async () => refused() + (await gauge('inflight_requests')) === SLOW, 20_000);
    expect(await gauge('inflight_requests')).toBe(MAX_INFLIGHT);
    await until('the upstream holds a full pool', () => dripping.dripping === 64, 10_000);
    for (const s of slow.filter((x) => x.status !== undefined)) expect(s.status).toBe(503);
    // What the fault-injection run saw, here before the clients leave: everyone is refused.
    const busy = await receive(await stack.get('/Patient/ok', { role: 'clinician', purpose: 'TREAT' }));
    expectError(busy, 503, 'gateway-busy');
    expect(busy.headers.get('retry-after')).toBe('1');
    const admitted = SLOW - refused();
    const opened = up.sockets.opened;

    for (const s of slow) s.req.destroy();

    // The gateway cancels each upstream call: the dripping stops and every connection it opened
    // to the upstream (the 64 in use, and any opened for a cancelled call that was still queued)
    // is closed; none of this waits for the 60 s deadline.
    await until('the upstream saw every connection closed', () => dripping.dripping === 0 && up.sockets.open === 0, 5_000);
    expect(up.sockets.closed).toBe(up.sockets.opened);
    expect(up.sockets.closed).toBeGreaterThanOrEqual(opened);
    await until('the in-flight gauge is back to 0', async () => (await gauge('inflight_requests')) === 0, 2_000);
    expect(await gauge('buffer_bytes_in_use')).toBe(0);

    // A well-behaved request on another path: 200, at once.
    const t0 = performance.now();
    const ok = await receive(await stack.get('/Patient/ok', { role: 'clinician', purpose: 'TREAT' }));
    const ms = performance.now() - t0;
    expect(errorCode(ok.json)).not.toBe('gateway-busy');
    expect(ok.status).toBe(200);
    expect(ms).toBeLessThan(FAST_BOUND_MS);
    expect((await auditFor(stack, ok.requestId)).status).toBe(200);

    // Every one of the 300 has its record: refused ones 503, the others client-closed.
    let drips: Awaited<ReturnType<Stack['auditRecords']>> = [];
    await until(
      'a record for every slow request',
      async () => {
        drips = (await stack.auditRecords()).filter((r) => r.request.path === '/Patient/drip');
        return drips.length === SLOW;
      },
      5_000,
    );
    const closed = drips.filter((r) => r.status === 499);
    expect(closed).toHaveLength(admitted);
    for (const r of closed) {
      expect(r.decision).toBe('error');
      expect(r.rule).toMatch(/client-closed$/);
      expect(r.disclosed.resources).toEqual([]);
    }
    const busyRecords = drips.filter((r) => r.status === 503);
    expect(busyRecords).toHaveLength(SLOW - admitted);
    for (const r of busyRecords) expect(r.rule).toBe('gateway-busy');
  }, 60_000);
});
