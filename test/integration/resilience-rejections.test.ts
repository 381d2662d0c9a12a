/**
 * Every answer the proxy port gives is an audited OperationOutcome with an X-Request-Id, including
 * the ones Node's HTTP parser and Fastify's router used to give on their own: oversized headers
 * (431), an invalid method or header (400), a malformed percent-escape in the path (400, which
 * Fastify echoed back), and a request that arrives on an open connection while the gateway drains
 * (503 with Retry-After, instead of Fastify's unaudited JSON). Requests are written byte for byte
 * on raw sockets (node:net), since fetch would refuse or normalize them; planted marker strings
 * must appear neither in the answer nor in the audit record.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { open, parseAnswer, type RawAnswer, raw, readAll, UUID } from '../helpers/raw-http.js';

const MARKER = 'PHI-MARKER-4711';

let stack: Stack;
let port: number;

beforeAll(async () => {
  stack = await startStack();
  port = Number(new URL(stack.url).port);
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

/** The answer is an OperationOutcome with `code`, an X-Request-Id, and none of the request's bytes. */
function expectOutcome(a: RawAnswer, status: number, code: string): string {
  expect(a.status, a.raw).toBe(status);
  expect(a.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
  expect(a.headers['x-request-id']).toMatch(UUID);
  const oo = JSON.parse(a.body) as { resourceType: string; issue: Array<{ details: { coding: Array<{ code: string }> } }> };
  expect(oo.resourceType).toBe('OperationOutcome');
  expect(oo.issue[0].details.coding[0].code).toBe(code);
  expect(a.raw).not.toContain(MARKER);
  return a.headers['x-request-id'];
}

async function recordOf(id: string): Promise<ChainedRecord> {
  const r = (await stack.auditRecords()).find((x) => x.id === id);
  expect(r, `no audit record for ${id}`).toBeDefined();
  return r!;
}

describe("Node's parser rejections", () => {
  it('oversized headers: 431 OperationOutcome, audited with the address and the reason code only', async () => {
    const big = `${MARKER}-${'x'.repeat(20_000)}`;
    const a = await raw(port, `GET /fhir/Patient/${MARKER} HTTP/1.1\r\nHost: gw\r\nX-Big: ${big}\r\n\r\n`);
    const id = expectOutcome(a, 431, 'request-header-too-large');
    expect(a.headers.connection).toBe('close');
    const r = await recordOf(id);
    expect(r).toMatchObject({
      kind: 'fhir',
      decision: 'deny',
      status: 431,
      rule: 'request-header-too-large',
      client: { address: '127.0.0.1' },
      request: { method: '', path: '' },
      details: { reason: 'HPE_HEADER_OVERFLOW' },
    });
    expect(JSON.stringify(r)).not.toContain(MARKER);
  });

  it('an invalid method: 400, audited, the method not echoed or recorded', async () => {
    const a = await raw(port, `${MARKER.replace(/-/g, '_')}\u0001 /fhir/Patient HTTP/1.1\r\nHost: gw\r\n\r\n`);
    const id = expectOutcome(a, 400, 'bad-request');
    expect(a.raw).not.toContain('PHI_MARKER');
    const r = await recordOf(id);
    expect(r).toMatchObject({ decision: 'deny', status: 400, rule: 'bad-request', request: { method: '', path: '' } });
    expect(r.details?.reason).toMatch(/^HPE_/);
    expect(JSON.stringify(r)).not.toContain('PHI_MARKER');
  });

  it('an invalid header name: 400, audited', async () => {
    const a = await raw(port, `GET /fhir/Patient HTTP/1.1\r\nHost: gw\r\nBad Header${MARKER}: 1\r\n\r\n`);
    const id = expectOutcome(a, 400, 'bad-request');
    const r = await recordOf(id);
    expect(r).toMatchObject({ status: 400, rule: 'bad-request', details: { reason: 'HPE_INVALID_HEADER_TOKEN' } });
  });

  it('a request line that is not HTTP at all: 400, audited', async () => {
    const a = await raw(port, `\u0016\u0003\u0001${MARKER}\r\n\r\n`);
    const id = expectOutcome(a, 400, 'bad-request');
    expect((await recordOf(id)).status).toBe(400);
  });

  it('a connection reset before the request ends is not an answer: no record', async () => {
    const before = (await stack.auditRecords()).length;
    const s = await open(port);
    s.write('GET /fhir/Patient HTTP/1.1\r\nHost: g');
    await new Promise((r) => setTimeout(r, 50));
    s.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 200));
    expect((await stack.auditRecords()).length).toBe(before);
  });
});

describe("the router's rejections", () => {
  it.each([
    ['%zz', `/fhir/Patient/${MARKER}%zz`],
    ['a truncated UTF-8 escape', `/fhir/Patient/${MARKER}%E0%A4%A`],
  ])('a malformed percent-escape (%s): 400 OperationOutcome through the pipeline, the path not echoed', async (_name, path) => {
    const a = await raw(port, `GET ${path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`);
    const id = expectOutcome(a, 400, 'bad-request');
    expect(a.raw).not.toContain('%zz');
    expect(a.raw).not.toContain('%E0');
    const r = await recordOf(id);
    expect(r).toMatchObject({ kind: 'fhir', decision: 'deny', status: 400, rule: 'bad-request', client: { address: '127.0.0.1' } });
  });
});

describe('a request arriving while the gateway drains', () => {
  it('is refused with 503 gateway-draining, Retry-After and Connection: close, and audited', async () => {
    // A connection whose request has begun is not idle, so close() does not cut it: the rest of
    // the request arrives after shutdown began.
    const s = await open(port);
    const answer = readAll(s);
    s.write('GET /fhir/metadata HTTP/1.1\r\nHost: gw\r\n');
    await new Promise((r) => setTimeout(r, 100));
    const closing = stack.gateway.close();
    expect(stack.gateway.draining).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    s.write('Accept: application/fhir+json\r\n\r\n');
    const a = parseAnswer(await answer);
    await closing;
    const id = expectOutcome(a, 503, 'gateway-draining');
    expect(a.headers['retry-after']).toMatch(/^\d+$/);
    expect(a.headers.connection).toBe('close');
    const records = await stack.auditRecords();
    const r = records.find((x) => x.id === id);
    expect(r).toMatchObject({ decision: 'deny', status: 503, rule: 'gateway-draining', request: { method: 'GET', path: '/metadata' } });
    // Recorded before the chain was sealed: the seal is still the last record.
    expect(records.at(-1)?.kind).toBe('writer-seal');
  });
});
