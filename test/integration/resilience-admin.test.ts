/**
 * The admin port (/healthz, /readyz, /metrics) under a hanging dependency and bad requests:
 *   - /readyz answers 503 within 1 s (its deadline is 500 ms) with a reason per check that did not
 *     finish, when the upstream accepts connections but never answers and the audit sink's check
 *     never settles; 200 with no reasons when both answer;
 *   - its own refusals are OperationOutcomes with an X-Request-Id and none of the request's bytes:
 *     an unknown route (Fastify's 404 names the path), a malformed percent-escape (Fastify echoes
 *     it), Node's parser rejections (431, 400), and a request arriving while it closes (503 with
 *     Retry-After instead of Fastify's own body). Requests are written on raw sockets.
 */
import { createServer as createHttpServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditSink } from '../../src/audit/record.js';
import { buildAdminApp } from '../../src/server/admin.js';
import { createLogger } from '../../src/server/logger.js';
import { open, parseAnswer, type RawAnswer, raw, readAll, UUID } from '../helpers/raw-http.js';

const MARKER = 'PHI-MARKER-9313';

function expectOutcome(a: RawAnswer, status: number, code: string): void {
  expect(a.status, a.raw).toBe(status);
  expect(a.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
  expect(a.headers['x-request-id']).toMatch(UUID);
  const oo = JSON.parse(a.body) as { resourceType: string; issue: Array<{ details: { coding: Array<{ code: string }> } }> };
  expect(oo.resourceType).toBe('OperationOutcome');
  expect(oo.issue[0].details.coding[0].code).toBe(code);
  expect(a.raw).not.toContain(MARKER);
}

/** What the fake sink's and upstream's checks do: answer, or hang. */
const behaviour = { auditHangs: true, upstreamHangs: true };

const audit: AuditSink = {
  write: async () => {},
  ready: () => (behaviour.auditHangs ? new Promise<boolean>(() => {}) : Promise.resolve(true)),
  close: async () => {},
};

let app: FastifyInstance;
let port: number;
let upstream: Server;
const held: Socket[] = [];
const logs: string[] = [];

beforeAll(async () => {
  // An upstream that accepts and reads, and answers only when told to.
  upstream = createHttpServer((req, res) => {
    if (behaviour.upstreamHangs) {
      held.push(req.socket);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"CapabilityStatement"}');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const up = upstream.address() as { port: number };
  app = await buildAdminApp({
    logger: createLogger('info', { write: (l: string) => void logs.push(l) }),
    audit,
    upstreamUrl: `http://127.0.0.1:${up.port}/fhir`,
    policyVersion: () => 'sha256:test',
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as { port: number }).port;
});

afterAll(async () => {
  for (const s of held) s.destroy();
  await app?.close().catch(() => {});
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

describe('/readyz with hanging checks', () => {
  it('answers 503 within its deadline, naming each check that did not finish', async () => {
    behaviour.auditHangs = true;
    behaviour.upstreamHangs = true;
    for (let i = 0; i < 3; i++) {
      const t = Date.now();
      const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(5_000) });
      const ms = Date.now() - t;
      expect(res.status).toBe(503);
      expect(ms, `/readyz took ${ms} ms`).toBeLessThan(1_000);
      expect(await res.json()).toEqual({
        status: 'not-ready',
        upstream: false,
        audit: false,
        config: true,
        policyVersion: 'sha256:test',
        reasons: ['upstream: no answer in time', 'audit sink: no answer in time'],
      });
    }
  });

  it('answers 200 without reasons when the checks answer', async () => {
    behaviour.auditHangs = false;
    behaviour.upstreamHangs = false;
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ready', upstream: true, audit: true, config: true, policyVersion: 'sha256:test' });
  });

  it('one hanging check is named alone', async () => {
    behaviour.auditHangs = true;
    behaviour.upstreamHangs = false;
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ upstream: true, audit: false, reasons: ['audit sink: no answer in time'] });
  });
});

describe('the admin port refuses with catalogue OperationOutcomes, never echoing the request', () => {
  it('an unknown route: 404 route-not-found (Fastify would name the path)', async () => {
    const a = await raw(port, `GET /${MARKER}?q=${MARKER} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n`);
    expectOutcome(a, 404, 'route-not-found');
  });

  it('an admin route with another method: 404 route-not-found', async () => {
    const a = await raw(port, `DELETE /healthz?${MARKER} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n`);
    expectOutcome(a, 404, 'route-not-found');
  });

  it.each([
    ['%zz', `/readyz/${MARKER}%zz`],
    ['a truncated UTF-8 escape', `/${MARKER}%E0%A4%A`],
  ])('a malformed percent-escape (%s): 400 bad-request, the path not echoed', async (_name, path) => {
    const a = await raw(port, `GET ${path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n`);
    expectOutcome(a, 400, 'bad-request');
    expect(a.raw).not.toContain('%zz');
    expect(a.raw).not.toContain('%E0');
  });

  it("oversized headers: 431 from Node's parser, as an OperationOutcome", async () => {
    const a = await raw(port, `GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Big: ${MARKER}-${'x'.repeat(20_000)}\r\n\r\n`);
    expectOutcome(a, 431, 'request-header-too-large');
  });

  it('an invalid header name: 400', async () => {
    const a = await raw(port, `GET /healthz HTTP/1.1\r\nHost: admin\r\nBad Header${MARKER}: 1\r\n\r\n`);
    expectOutcome(a, 400, 'bad-request');
  });

  it('the routes still answer as before', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toMatch(UUID);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('a request arriving while the port closes: 503 gateway-draining with Retry-After and Connection: close', async () => {
    // A connection whose request has begun is not idle, so close() does not cut it.
    const s = await open(port);
    const answer = readAll(s);
    s.write(`GET /healthz?${MARKER} HTTP/1.1\r\nHost: admin\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    const closing = app.close();
    await new Promise((r) => setTimeout(r, 100));
    s.write('Accept: application/json\r\n\r\n');
    const a = parseAnswer(await answer);
    await closing;
    expectOutcome(a, 503, 'gateway-draining');
    expect(a.headers['retry-after']).toMatch(/^\d+$/);
    expect(a.headers.connection).toBe('close');
    // Logged without the request's bytes.
    expect(logs.join('\n')).not.toContain(MARKER);
  });
});
