/**
 * Answers Node's HTTP server used to give on its own, with no X-Request-Id and no record (found by
 * a red-team session): HTTP/1.1 without Host (400), an Expect other than 100-continue (417). And a
 * batch too large to be worth the event loop: one client's 17,000-search batch kept the gateway
 * busy for seconds after the client hung up. Raw sockets, as in resilience-rejections.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RawAnswer, raw, UUID } from '../helpers/raw-http.js';

const MARKER = 'PHI-MARKER-0815';

let stack: Stack;
let port: number;
beforeAll(async () => {
  stack = await startStack();
  port = Number(new URL(stack.url).port);
}, 60_000);
afterAll(async () => {
  await stack?.close();
});

function expectOutcome(a: RawAnswer, status: number, code: string): string {
  expect(a.status, a.raw).toBe(status);
  expect(a.headers['x-request-id']).toMatch(UUID);
  const oo = JSON.parse(a.body) as { resourceType: string; issue: Array<{ details: { coding: Array<{ code: string }> } }> };
  expect(oo.issue[0].details.coding[0].code).toBe(code);
  expect(a.raw).not.toContain(MARKER);
  return a.headers['x-request-id'];
}

async function recordOf(id: string): Promise<ChainedRecord> {
  const r = (await stack.auditRecords()).find((x) => x.id === id);
  expect(r, `no audit record for ${id}`).toBeDefined();
  return r!;
}

describe('answers Node used to give on its own, and oversized batches', () => {
  it('HTTP/1.1 without a Host header: 400 through the audited path', async () => {
    const token = await stack.token('billing');
    const a = await raw(port, `GET /fhir/Patient/pat-alice HTTP/1.1\r\nAuthorization: Bearer ${token}\r\nX-Purpose-Of-Use: HPAYMT\r\nConnection: close\r\n\r\n`);
    const id = expectOutcome(a, 400, 'bad-request');
    expect(a.raw).not.toContain('Alice');
    expect(await recordOf(id)).toMatchObject({ decision: 'deny', status: 400, rule: 'bad-request' });
  });

  it('an Expect other than 100-continue: 417 expectation-failed, audited; 100-continue still works', async () => {
    const a = await raw(port, `GET /fhir/metadata HTTP/1.1\r\nHost: gw\r\nExpect: ${MARKER}\r\nConnection: close\r\n\r\n`);
    const id = expectOutcome(a, 417, 'expectation-failed');
    expect(await recordOf(id)).toMatchObject({ decision: 'deny', status: 417, rule: 'expectation-failed' });
    const ok = await raw(port, 'GET /fhir/metadata HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    expect(ok.raw).toMatch(/HTTP\/1\.1 200 OK/);
  });

  it('a batch with more entries than limits.bundleEntries: 413 before anything is sent upstream', async () => {
    const batch = (n: number) =>
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'batch',
        entry: Array.from({ length: n }, () => ({ request: { method: 'GET', url: 'Patient?_count=1' } })),
      });
    const big = await stack.request('/', { role: 'clinician', purpose: 'TREAT', method: 'POST', body: batch(101), contentType: 'application/fhir+json' });
    expect(big.status).toBe(413);
    const oo = (await big.json()) as { issue: Array<{ details: { coding: Array<{ code: string }> } }> };
    expect(oo.issue[0].details.coding[0].code).toBe('bundle-too-large');
    const record = await recordOf(big.headers.get('x-request-id')!);
    expect(record).toMatchObject({ status: 413, rule: 'bundle-too-large' });
    // Refused before the upstream was asked.
    expect(record.upstreamStatus).toBeUndefined();
    const fits = await stack.request('/', { role: 'clinician', purpose: 'TREAT', method: 'POST', body: batch(100), contentType: 'application/fhir+json' });
    expect(fits.status).toBe(200);
  });
});
