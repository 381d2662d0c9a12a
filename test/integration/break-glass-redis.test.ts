// Two gateway replicas sharing one Redis honour the same break-glass session and daily limit, and
// the alert is PUBLISHed on the configured channel.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { createLogger } from '../../src/server/logger.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const redis: RedisHandle | undefined = await startRedis();
const suite = redis ? describe : describe.skip;
const REASON = 'Unconscious patient in the ED, restricted chart needed';
const VIP = DEMO.patients.vip;

suite('break-glass across replicas (Redis)', () => {
  let stack: Stack;
  let second: RunningGateway;
  let sub: Redis;
  const published: string[] = [];

  beforeAll(async () => {
    sub = new Redis(redis!.url);
    await sub.subscribe('phi-gateway:alerts');
    sub.on('message', (_c, m) => published.push(m));
    stack = await startStack({
      env: { PHI_GATEWAY_AUDIT: redis!.url },
      configure: (c) => ({ ...c, alerts: { ...c.alerts, redisChannel: 'phi-gateway:alerts' } }),
    });
    second = await startGateway({ ...stack.config, listen: { host: '127.0.0.1', port: 0 } }, { admin: false, logger: createLogger('silent') });
  }, 60_000);
  afterAll(async () => {
    await second?.close();
    await stack?.close();
    sub?.disconnect();
    await redis?.dispose();
  });

  async function btg(base: string, path: string, sub = 'dr-redis'): Promise<Response> {
    const token = await stack.token('clinician', { sub });
    return fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'BTG', 'x-break-glass-reason': REASON } });
  }

  it('a session opened on one replica is the session on the other', async () => {
    const a = await btg(stack.url, `/Patient/${VIP}`);
    expect(a.status).toBe(200);
    const session = a.headers.get('x-break-glass-session');
    expect(session).toBeTruthy();
    const b = await btg(second.url, `/Observation?patient=${VIP}`);
    expect(b.status).toBe(200);
    expect(b.headers.get('x-break-glass-session')).toBe(session);

    await expect.poll(() => published.length, { timeout: 10_000 }).toBe(1);
    expect(JSON.parse(published[0])).toMatchObject({ type: 'break-glass-start', session, patient: VIP, actor: { sub: 'dr-redis' } });

    const records: ChainedRecord[] = [];
    const source = openAuditSource(redis!.url);
    for await (const item of source) if ('record' in item) records.push(item.record as ChainedRecord);
    await source.close();
    expect(records.filter((r) => r.kind === 'break-glass-start').map((r) => r.breakGlass?.session)).toEqual([session]);
    // Both replicas marked their records with the same session.
    const marked = records.filter((r) => r.kind === 'fhir' && r.breakGlass?.session === session);
    expect(new Set(marked.map((r) => r.chain.writer)).size).toBe(2);
  });

  it('the daily limit counts sessions opened on every replica', async () => {
    const gateways = [stack.url, second.url];
    const statuses: number[] = [];
    // The shipped policy allows 5 sessions per actor per day; patients differ so none is reused.
    const patients = Object.values(DEMO.patients);
    for (let i = 0; i < 6; i++) statuses.push((await btg(gateways[i % 2], `/Patient/${patients[i]}`, 'dr-limit')).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    await expect.poll(() => published.map((m) => JSON.parse(m).type), { timeout: 10_000 }).toContain('break-glass-limit');
  });
});
