import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { BufferBudget } from '../../../src/proxy/upstream-body.js';
import { dispatchUpstream } from '../../../src/proxy/upstream-dispatch.js';
import type { UpstreamCall } from '../../../src/proxy/upstream-request.js';

// A hand-written upstream: these are transport faults (resets, stalls, oversized bodies) a real
// FHIR server does not produce on demand.
const SIZED = 256 * 1024;
let server: Server;
let pool: Pool;
const seen: Array<{ method: string; url: string; headers: Record<string, unknown>; body: string }> = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers }, body });
      const path = (req.url ?? '').split('?')[0];
      if (path === '/ok') {
        res.writeHead(201, { 'content-type': 'application/fhir+json', etag: 'W/"2"', 'x-dup': ['a', 'b'] });
        // Several chunks: the answer must come back whole, in order.
        res.write('{"resourceType":');
        setTimeout(() => res.end('"Patient","id":"p1"}'), 5);
      } else if (path === '/big') {
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        const chunk = Buffer.alloc(16 * 1024, 0x20);
        let n = 0;
        const more = (): void => {
          // Keeps sending until the client gives up: a limit must abort, not wait for the end.
          if (n++ > 1000 || res.destroyed) return void res.end();
          res.write(chunk, () => setImmediate(more));
        };
        more();
      } else if (path === '/sized') {
        // Declares its length, then sends it in 16 KiB pieces, one per turn of the event loop, so
        // answers sent together interleave.
        res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': String(SIZED) });
        const chunk = Buffer.alloc(16 * 1024, 0x20);
        let left = SIZED;
        const more = (): void => {
          if (res.destroyed) return;
          const n = Math.min(left, chunk.length);
          left -= n;
          if (left === 0) return void res.end(chunk.subarray(0, n));
          res.write(chunk.subarray(0, n), () => setImmediate(more));
        };
        more();
      } else if (path === '/reset') {
        res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': '100' });
        res.write('{"resourceType":"Pat');
        setTimeout(() => res.socket?.destroy(), 5);
      } else if (path === '/stall') {
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.write('{');
      } else {
        res.writeHead(404).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  pool = new Pool(`http://127.0.0.1:${port}`, { connections: 4, bodyTimeout: 200, headersTimeout: 1000 });
});

afterAll(async () => {
  await pool.destroy();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

const call = (path: string, extra: Partial<UpstreamCall> = {}): UpstreamCall => ({
  method: 'GET',
  path,
  query: '',
  headers: { accept: 'application/fhir+json', 'x-request-id': 'r1' },
  body: undefined,
  ...extra,
});

async function refusal(p: Promise<unknown>): Promise<GatewayError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(GatewayError);
  return e as GatewayError;
}

describe('dispatchUpstream', () => {
  it('sends exactly the call (method, path + query, headers, body) and returns status, headers and the whole body', async () => {
    const a = await dispatchUpstream(pool, call('/ok', { method: 'POST', query: 'a=1&b=2', body: '{"x":1}', headers: { 'content-type': 'application/fhir+json', 'x-request-id': 'r2' } }), {
      limit: 1024,
    });
    expect(a.statusCode).toBe(201);
    expect(a.headers.etag).toBe('W/"2"');
    expect(a.headers['x-dup']).toEqual(['a', 'b']);
    expect(JSON.parse(a.body.toString('utf8'))).toEqual({ resourceType: 'Patient', id: 'p1' });
    const got = seen.at(-1)!;
    expect(got).toMatchObject({ method: 'POST', url: '/ok?a=1&b=2', body: '{"x":1}' });
    expect(got.headers['x-request-id']).toBe('r2');
    expect(got.headers['content-length']).toBe('7');
  });

  it('aborts a body over the limit at once (upstream-too-large) and gives the budget back when the lease is released', async () => {
    const budget = new BufferBudget(10 * 1024 * 1024);
    const lease = budget.lease();
    const e = await refusal(dispatchUpstream(pool, call('/big'), { limit: 100 * 1024, lease }));
    expect(e.code).toBe('upstream-too-large');
    // Only what arrived up to the limit was accounted, not the megabytes the upstream kept sending.
    expect(budget.inUse).toBeLessThanOrEqual(100 * 1024);
    lease.release();
    expect(budget.inUse).toBe(0);
  });

  it('refuses with gateway-busy when the shared budget is spent', async () => {
    const budget = new BufferBudget(32 * 1024);
    const e = await refusal(dispatchUpstream(pool, call('/big'), { limit: 10 * 1024 * 1024, lease: budget.lease() }));
    expect(e.code).toBe('gateway-busy');
  });

  it('reserves a declared Content-Length when the head arrives: of 8 answers at once, the 2 that fit the budget are answered whole, the rest refused', async () => {
    // Taken only as bytes arrived, the 4 concurrent transfers (the pool's connections) would each
    // hold a share of the budget part-way and all be refused.
    const budget = new BufferBudget(2.5 * SIZED);
    const leases = Array.from({ length: 8 }, () => budget.lease());
    const results = await Promise.allSettled(leases.map((lease) => dispatchUpstream(pool, call('/sized'), { limit: 10 * SIZED, lease })));
    const answered = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.body.length] : []));
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as GatewayError).code] : []));
    expect(answered).toEqual([SIZED, SIZED]);
    expect(refused).toEqual(Array(6).fill('gateway-busy'));
    expect(budget.inUse).toBe(2 * SIZED);
    for (const l of leases) l.release();
    expect(budget.inUse).toBe(0);
  });

  it('refuses a declared Content-Length over the limit before accounting any of the body', async () => {
    const budget = new BufferBudget(10 * SIZED);
    const e = await refusal(dispatchUpstream(pool, call('/sized'), { limit: SIZED - 1, lease: budget.lease() }));
    expect(e.code).toBe('upstream-too-large');
    expect(budget.inUse).toBe(0);
  });

  it('BufferBudget: take spends a reservation first and charges only beyond it; a refused reservation charges nothing', () => {
    const budget = new BufferBudget(1000);
    const a = budget.lease();
    a.reserve(600);
    expect(budget.inUse).toBe(600);
    a.take(400);
    a.take(200);
    expect(budget.inUse).toBe(600);
    a.take(100); // past the reservation (a body longer than declared, or a decompressed copy)
    expect(budget.inUse).toBe(700);
    const b = budget.lease();
    expect(() => b.reserve(301)).toThrow(expect.objectContaining({ code: 'gateway-busy' }));
    expect(budget.inUse).toBe(700);
    b.reserve(300);
    a.release();
    a.release(); // idempotent
    expect(budget.inUse).toBe(300);
    b.release();
    expect(budget.inUse).toBe(0);
  });

  it('maps a reset mid-body to upstream-unavailable and a stalled body to upstream-timeout', async () => {
    expect((await refusal(dispatchUpstream(pool, call('/reset'), { limit: 1024 }))).code).toBe('upstream-unavailable');
    expect((await refusal(dispatchUpstream(pool, call('/stall'), { limit: 1024 }))).code).toBe('upstream-timeout');
  });

  it('maps a refused connection to upstream-unavailable', async () => {
    const dead = new Pool('http://127.0.0.1:9', { connect: { timeout: 500 } });
    try {
      expect((await refusal(dispatchUpstream(dead, call('/ok'), { limit: 1024 }))).code).toBe('upstream-unavailable');
    } finally {
      await dead.destroy();
    }
  });
});
