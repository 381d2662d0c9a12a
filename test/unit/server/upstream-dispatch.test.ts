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
