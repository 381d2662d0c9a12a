/**
 * BYPASSES 15: an exception in response filtering or an audit write that fails never releases the
 * unfiltered (or unaudited) response. The audit sink here fails on demand; the filter is made to
 * throw by an upstream answer whose shape the engine refuses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord, AuditSink } from '../../src/audit/record.js';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectAbsent, expectError, receive } from './support.js';

const SECRET = 'FAIL-OPEN-SECRET-3301';

class FlakySink implements AuditSink {
  failing = false;
  readonly written: AuditRecord[] = [];
  async write(record: AuditRecord): Promise<void> {
    if (this.failing) throw new Error('disk full');
    this.written.push(record);
  }
  async ready(): Promise<boolean> {
    return !this.failing;
  }
  async close(): Promise<void> {}
}

let up: FaultyUpstream;
let stack: Stack;
const sink = new FlakySink();

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Patient/p1': fhirJson({ resourceType: 'Patient', id: 'p1', gender: 'male', telecom: [{ value: SECRET }] }),
    // A Bundle nested beyond the engine's depth bound: filtering throws.
    '/Patient': fhirJson(
      Array.from({ length: 12 }).reduce<unknown>(
        (inner) => ({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: inner }] }),
        { resourceType: 'Patient', id: 'deep', telecom: [{ value: SECRET }] },
      ),
    ),
    '/Patient/odd': fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: { not: 'an array', value: SECRET } }),
  });
  stack = await startStack({ upstreamUrl: up.url, audit: sink });
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;

describe('the audit trail fails closed', () => {
  it('a failing audit write turns a would-be 200 into 503 with no data', async () => {
    sink.failing = true;
    try {
      const r = await receive(await stack.get('/Patient/p1', { role: 'clinician', purpose: 'TREAT' }));
      expectError(r, 503, 'audit-unavailable');
      expectAbsent(r, [SECRET, 'p1']);
    } finally {
      sink.failing = false;
    }
  });

  it('denials are refused the same way when they cannot be audited', async () => {
    sink.failing = true;
    try {
      const r = await receive(await stack.get('/Patient/p1', { role: 'billing', purpose: 'TREAT' }));
      expectError(r, 503, 'audit-unavailable');
    } finally {
      sink.failing = false;
    }
  });
});

describe('the response filter fails closed', () => {
  it.each(['/Patient', '/Patient/odd'])('%s: an engine refusal is an error, not the raw body', async (path) => {
    const before = sink.written.length;
    const r = await receive(await stack.get(path, billing));
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect((r.json as { resourceType?: string }).resourceType).toBe('OperationOutcome');
    expectAbsent(r, [SECRET]);
    const mine = sink.written.slice(before).filter((x) => x.id === r.requestId);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.decision).toBe('error');
  });
});
