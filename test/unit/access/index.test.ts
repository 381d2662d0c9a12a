// openAccess from the gateway config: the embedded store beside the audit directory, or Redis when
// the audit sink is Redis, where two gateways see each other's decisions and revocations at once.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { accessDir, type CallContext, isAccessService, openAccess, openAccessStore } from '../../../src/access/index.js';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import { loadGatewayConfig } from '../../../src/config/gateway.js';
import { GatewayError } from '../../../src/errors.js';
import { type RedisHandle, startRedis } from '../../helpers/redis.js';
import { capturingLogger, principal, request as classified, shippedPolicy } from '../breakglass/helpers.js';

const JUSTIFICATION = 'Payer asked for the discharge summary as a claim attachment';
const ctx = (): CallContext => ({ auditId: randomUUID(), via: 'http', client: { address: '127.0.0.1' }, method: 'POST', path: '/access-requests', purpose: 'HCOMPL' });
const bill1 = principal('bill-1', ['billing']);
const po1 = principal('po-1', ['privacy-officer']);

let dir: string;
let sink: FileAuditSink;
beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'access-index-'));
  sink = await FileAuditSink.open({ dir: join(dir, 'audit'), rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'access-index' });
});
afterEach(async () => {
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
  return 'no error';
}

describe('accessDir', () => {
  it('puts the embedded store beside the audit directory', () => {
    expect(accessDir({ audit: { sink: 'file', path: '/var/lib/gw/audit' } } as never)).toBe('/var/lib/gw/access-requests');
    expect(accessDir({ audit: { sink: 'file', path: '/tmp/x/trail' } } as never)).toBe('/tmp/x/trail.access-requests');
    expect(accessDir({ audit: { sink: 'redis', url: 'redis://h' } } as never)).toBeUndefined();
  });
});

describe('openAccess (file audit sink)', () => {
  it('keeps requests and their alerts in files beside the audit directory', async () => {
    const config = loadGatewayConfig('config/gateway.yaml', { PHI_GATEWAY_AUDIT: `file:${join(dir, 'audit')}`, PHI_GATEWAY_ALERT_WEBHOOK: 'http://127.0.0.1:9/hook' });
    const { logger } = capturingLogger();
    const svc = await openAccess(config, { audit: sink, logger, policy: () => shippedPolicy(), sweepMs: 0, alerts: { baseDelayMs: 3_600_000, pollMs: 3_600_000 } });
    try {
      expect(isAccessService(svc)).toBe(true);
      const r = await svc.request(bill1, 'HPAYMT', { dataSet: 'claim-attachment', patients: ['p1'], justification: JUSTIFICATION, minutes: 30 }, ctx());
      expect(readFileSync(join(dir, 'access-requests', 'requests.jsonl'), 'utf8')).toContain(r.id);
      expect(readFileSync(join(dir, 'access-alerts', 'outbox.jsonl'), 'utf8')).toContain(r.id);
      expect(svc.requestUrl(r.id)).toMatch(new RegExp(`/access-requests/${r.id}$`));
    } finally {
      await svc.close();
    }
    // The CLI reads the same store.
    const store = await openAccessStore(config);
    expect((await store.list()).map((r) => r.status)).toEqual(['pending']);
    await store.close();
    expect(existsSync(join(dir, 'break-glass'))).toBe(false);
  });
});

const redis: RedisHandle | undefined = await startRedis();
afterAll(async () => {
  await redis?.dispose();
});

describe.skipIf(redis === undefined)('openAccess (Redis audit sink)', () => {
  it('two gateways share requests: approved on one, used on the other, revoked on either takes effect on both', async () => {
    const config = loadGatewayConfig('config/gateway.yaml', { PHI_GATEWAY_AUDIT: redis!.url });
    const { logger } = capturingLogger();
    const open = () => openAccess(config, { audit: sink, logger, policy: () => shippedPolicy(), sweepMs: 0 });
    const a = await open();
    const b = await open();
    const use = (svc: typeof a, id: string) =>
      svc.use({ principal: bill1, purpose: 'HPAYMT', request: classified('/DocumentReference?patient=p1'), header: id, requestId: randomUUID() });
    try {
      const r = await a.request(bill1, 'HPAYMT', { dataSet: 'claim-attachment', patients: ['p1'], justification: JUSTIFICATION, minutes: 30 }, ctx());
      await b.decide(po1, r.id, { outcome: 'approved' }, ctx());
      expect((await use(a, r.id)).id).toBe(r.id);
      expect((await use(b, r.id)).id).toBe(r.id);
      await b.revoke(po1, r.id, {}, ctx());
      expect(await code(use(a, r.id))).toBe('grant-inactive');
      expect(await code(use(b, r.id))).toBe('grant-inactive');
      expect((await a.get(bill1, r.id, ctx())).uses).toBe(2);
      const c = new Redis(redis!.url);
      expect((await c.keys('phi-gateway:access:*')).length).toBeGreaterThan(0);
      c.disconnect();
    } finally {
      await a.close();
      await b.close();
    }
    expect(existsSync(join(dir, 'access-requests'))).toBe(false);
  });
});
