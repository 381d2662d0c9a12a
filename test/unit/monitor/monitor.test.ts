import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../../src/audit/record.js';
import type { Principal } from '../../../src/auth/principal.js';
import { createMonitor } from '../../../src/monitor/monitor.js';
import type { FamilyNameLookup } from '../../../src/monitor/names.js';
import { compileAnomalies } from '../../../src/monitor/rules.js';
import { MemoryWindowStore, RedisWindowStore, type WindowStore } from '../../../src/monitor/window.js';
import type { Exchange } from '../../../src/proxy/record.js';
import { type RedisHandle, startRedis } from '../../helpers/redis.js';
import { principal, request } from '../breakglass/helpers.js';

const silent = { warn() {}, error() {}, info() {}, debug() {} } as never;
const allow = { status: 200, decision: 'allow', rule: 'r' } as const;
let seq = 0;

function exchange(p: Principal, patients: string[], at = Date.parse('2024-06-03T15:00:00Z')): Exchange {
  seq++;
  return {
    id: `req-${seq}`,
    time: new Date(at + seq),
    started: 0n,
    method: 'GET',
    url: '/Patient',
    clientAddress: '127.0.0.1',
    userAgent: undefined,
    policyVersion: 'v1',
    principal: p,
    purpose: 'TREAT',
    role: 'clinician',
    request: request('/Patient'),
    stats: { elementsRemoved: 0, resourcesWithheld: 0, resources: patients.map((x) => `Patient/${x}`), patients: new Set(patients) },
  };
}

function setup(rules: Parameters<typeof compileAnomalies>[0], families?: FamilyNameLookup, store: WindowStore = new MemoryWindowStore()) {
  const records: AuditRecord[] = [];
  const monitor = createMonitor({
    audit: { write: async (r: AuditRecord) => void records.push(r) } as never,
    logger: silent,
    alerter: { raise: async () => {} },
    store,
    rules: () => compileAnomalies(rules),
    families,
  });
  return { monitor, records };
}

describe('anomaly monitor', () => {
  it('counts one actor across tokens: two principals with the same issuer and subject share a window', async () => {
    const { monitor, records } = setup({ rules: [{ name: 'bulk', kind: 'bulk-access', threshold: 3 }] });
    const first = principal('dr-a');
    const renewed = principal('dr-a', ['clinician'], { jti: 'jti-renewed' });
    monitor.observe(exchange(first, ['p1', 'p2']), allow);
    monitor.observe(exchange(principal('dr-b'), ['p3', 'p4', 'p5']), allow);
    await monitor.idle();
    expect(records).toHaveLength(0);
    monitor.observe(exchange(renewed, ['p3', 'p4']), allow);
    await monitor.idle();
    expect(records.map((r) => [r.actor.sub, r.details?.count])).toEqual([['dr-a', 4]]);
  });

  it('family-name: one matcher per verified principal, a hit per matching patient', async () => {
    const built: string[] = [];
    const families: FamilyNameLookup = {
      matches: async () => {
        throw new Error('matcher expected');
      },
      matcher(family) {
        built.push(family);
        return async (id) => id === 'cousin' && family === 'Doe';
      },
    };
    const { monitor, records } = setup({ rules: [{ name: 'fam', kind: 'family-name' }] }, families);
    const doe = principal('dr-doe', ['clinician'], { familyName: 'Doe' });
    monitor.observe(exchange(doe, ['p1', 'cousin']), allow);
    monitor.observe(exchange(doe, ['p2']), allow);
    monitor.observe(exchange(principal('dr-roe', ['clinician'], { familyName: 'Roe' }), ['cousin']), allow);
    await monitor.idle();
    expect(built).toEqual(['Doe', 'Roe']);
    expect(records.map((r) => [r.actor.sub, r.disclosed.patients])).toEqual([['dr-doe', ['cousin']]]);
  });

  it('family-name: a lookup without matcher is asked per patient', async () => {
    const asked: string[] = [];
    const families: FamilyNameLookup = {
      async matches(id, family) {
        asked.push(`${id}:${family}`);
        return id === 'p2';
      },
    };
    const { monitor, records } = setup({ rules: [{ name: 'fam', kind: 'family-name' }] }, families);
    monitor.observe(exchange(principal('dr-x', ['clinician'], { familyName: 'Poe' }), ['p1', 'p2']), allow);
    await monitor.idle();
    expect(asked).toEqual(['p1:Poe', 'p2:Poe']);
    expect(records).toHaveLength(1);
  });
});

// The monitor on Redis windows, as the gateway runs it with the Redis audit sink: responses released
// in one event-loop turn update their windows in one batch (RedisWindowStore), and the counts, hence
// the alerts, are the ones the in-memory store gives.
const redis: RedisHandle | undefined = await startRedis();
const clients: Redis[] = [];
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis?.dispose();
});

describe.skipIf(!redis)('anomaly monitor on Redis windows', () => {
  /** 30 responses released in one turn: dr-0 reads 10 distinct charts, dr-1 the same 2 again and again, dr-2 4. */
  async function burst(store: WindowStore): Promise<string[]> {
    const { monitor, records } = setup({ rules: [{ name: 'bulk', kind: 'bulk-access', threshold: 3 }] }, undefined, store);
    const actors = [principal('dr-0'), principal('dr-1'), principal('dr-2')];
    for (let i = 0; i < 30; i++) {
      const a = i % 3;
      monitor.observe(exchange(actors[a]!, [a === 0 ? `a${i}` : a === 1 ? `b${i % 2}` : `c${i % 4}`]), allow);
    }
    await monitor.idle();
    return records.map((r) => `${r.actor.sub}:${r.details?.count}:${r.disclosed.patients.join(',')}`).sort();
  }

  it('fires on the same counts as the in-memory store when a burst of responses is batched', async () => {
    const expected = await burst(new MemoryWindowStore());
    // dr-0 crosses at its 4th distinct chart (a9), dr-2 at its 4th (c3, request 11); dr-1 never.
    expect(expected).toEqual(['dr-0:4:a9', 'dr-2:4:c3']);
    const c = new Redis(redis!.url);
    clients.push(c);
    expect(await burst(new RedisWindowStore(c, `mon-${Math.random()}:`))).toEqual(expected);
  });
});
