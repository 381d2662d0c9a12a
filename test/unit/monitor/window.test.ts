import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryWindowStore, RedisWindowStore, type WindowStore } from '../../../src/monitor/window.js';
import { type RedisHandle, startRedis } from '../../helpers/redis.js';

const MIN = 60_000;

function contract(name: string, make: () => WindowStore) {
  describe(`${name} window store`, () => {
    it('counts distinct members in a sliding window; a member seen again moves forward', async () => {
      const s = make();
      const k = `k-${Math.random()}`;
      expect(await s.add(k, ['a', 'b'], 0, 10 * MIN)).toBe(2);
      expect(await s.add(k, ['a'], 5 * MIN, 10 * MIN)).toBe(2);
      expect(await s.add(k, ['c'], 9 * MIN, 10 * MIN)).toBe(3);
      // b (seen at 0) has left the window; a (seen at 5) has not.
      expect(await s.add(k, [], 10 * MIN, 10 * MIN)).toBe(2);
      expect(await s.add(k, [], 16 * MIN, 10 * MIN)).toBe(1);
      expect(await s.add(k, [], 30 * MIN, 10 * MIN)).toBe(0);
    });

    it('once: true for the first caller per window, again after it', async () => {
      const s = make();
      const k = `o-${Math.random()}`;
      expect(await s.once(k, 0, MIN)).toBe(true);
      expect(await s.once(k, 30_000, MIN)).toBe(false);
      expect(await s.once(k, MIN, MIN)).toBe(true);
    });

    it('mark / isSet follow the gateway clock', async () => {
      const s = make();
      const k = `m-${Math.random()}`;
      expect(await s.isSet(k, 0)).toBe(false);
      await s.mark(k, 0, MIN);
      expect(await s.isSet(k, MIN - 1)).toBe(true);
      expect(await s.isSet(k, MIN)).toBe(false);
    });
  });
}

contract('memory', () => new MemoryWindowStore());

// Redis: the same contract, plus what replicas rely on (shared windows, one alert between them).
const redis: RedisHandle | undefined = await startRedis();
const clients: Redis[] = [];
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis?.dispose();
});
function redisStore(): WindowStore {
  const c = new Redis(redis!.url);
  clients.push(c);
  return new RedisWindowStore(c, `test-${Math.random()}:`);
}

if (redis) contract('redis', redisStore);

describe.skipIf(!redis)('redis window store across replicas', () => {
  it('shares windows and lets exactly one replica fire', async () => {
    const prefix = `shared-${Math.random()}:`;
    const a = new RedisWindowStore(clients[clients.push(new Redis(redis!.url)) - 1], prefix);
    const b = new RedisWindowStore(clients[clients.push(new Redis(redis!.url)) - 1], prefix);
    expect(await a.add('w', ['p1', 'p2'], 0, MIN)).toBe(2);
    expect(await b.add('w', ['p2', 'p3'], 1000, MIN)).toBe(3);
    const fired = await Promise.all([a.once('fire', 0, MIN), b.once('fire', 0, MIN), a.once('fire', 5, MIN), b.once('fire', 5, MIN)]);
    expect(fired.filter(Boolean)).toHaveLength(1);
  });
});

describe.skipIf(!redis)('redis window store and the audit stream', () => {
  const aofSize = async (c: Redis): Promise<number> => {
    const info = await c.info('persistence');
    return Number(/aof_current_size:(\d+)/.exec(info)?.[1] ?? Number.NaN);
  };

  it('keeps window updates out of the AOF (no extra fsync the audit writes would queue behind), yet counts them', async () => {
    const c = new Redis(redis!.url);
    clients.push(c);
    const store = new RedisWindowStore(c, `aof-${Math.random()}:`);
    await store.add('warm', ['x'], 0, MIN); // loads the script (SCRIPT LOAD is not a data write)
    const before = await aofSize(c);
    expect(Number.isFinite(before)).toBe(true);
    let n = 0;
    for (let i = 0; i < 50; i++) n = await store.add('w', [`p${i}`], i, MIN);
    expect(n).toBe(50);
    expect(await aofSize(c)).toBe(before);
    // The same Redis still writes what must be durable: a plain write grows the AOF.
    await c.set(`durable-${Math.random()}`, 'x');
    expect(await aofSize(c)).toBeGreaterThan(before);
  });

  it('falls back to MULTI when scripting is refused (ACL) and keeps counting', async () => {
    const admin = new Redis(redis!.url);
    clients.push(admin);
    const user = `noscript${Math.floor(Math.random() * 1e9)}`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '+@all', '-@scripting');
    const c = new Redis(redis!.url, { username: user, password: 'pw' });
    clients.push(c);
    const store = new RedisWindowStore(c, `acl-${Math.random()}:`);
    expect(await store.add('w', ['a', 'b'], 0, MIN)).toBe(2);
    expect(await store.add('w', ['c'], 10, MIN)).toBe(3);
  });
});

// Batching: adds made within one event-loop turn go to Redis as one script call.
describe.skipIf(!redis)('redis window store batching', () => {
  function client(opts: RedisOptions = {}): Redis {
    const c = new Redis(redis!.url, opts);
    clients.push(c);
    return c;
  }
  /** Calls per command since the server started, from INFO commandstats (what Redis itself executed). */
  async function commandCalls(c: Redis): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [, cmd, calls] of (await c.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[cmd!] = Number(calls);
    return out;
  }

  /** A fixed interleaving over three keys and two windows: same key several times, members seen again, windows passing. */
  type Op = readonly [key: string, members: readonly string[], now: number, windowMs: number];
  const OPS: readonly Op[] = (() => {
    const ops: Op[] = [];
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 16) % n;
    };
    let t = 0;
    for (let i = 0; i < 120; i++) {
      t += rnd(3) * 20_000; // often the same instant, sometimes up to 40 s later
      const key = ['a', 'b', 'c'][rnd(3)]!;
      const members = Array.from({ length: rnd(4) }, () => `p${rnd(12)}`);
      ops.push([key, members, t, key === 'c' ? 2 * MIN : MIN]);
    }
    return ops;
  })();

  it('counts exactly as the same adds one at a time, across keys and for one key within a batch', async () => {
    const c = client();
    const alone = new RedisWindowStore(c, `alone-${Math.random()}:`);
    const expected: number[] = [];
    for (const [k, m, t, w] of OPS) expected.push(await alone.add(k, m, t, w));
    // The in-memory store agrees (times only move forward here), so the expectations mean something.
    const mem = new MemoryWindowStore();
    const memCounts: number[] = [];
    for (const [k, m, t, w] of OPS) memCounts.push(await mem.add(k, m, t, w));
    expect(memCounts).toEqual(expected);
    expect(new Set(expected).size, String(expected)).toBeGreaterThan(5);

    // All 120 in one turn: one batch (below the cap), same order.
    const together = new RedisWindowStore(c, `together-${Math.random()}:`);
    expect(await Promise.all(OPS.map(([k, m, t, w]) => together.add(k, m, t, w)))).toEqual(expected);

    // In bursts of 7 (several batches, each holding several adds to the same key).
    const bursts = new RedisWindowStore(c, `bursts-${Math.random()}:`);
    const got: number[] = [];
    for (let i = 0; i < OPS.length; i += 7) got.push(...(await Promise.all(OPS.slice(i, i + 7).map(([k, m, t, w]) => bursts.add(k, m, t, w)))));
    expect(got).toEqual(expected);
  });

  it('one key twice in a batch: the second add sees the first one members, and the window prunes between them', async () => {
    const s = new RedisWindowStore(client(), `same-${Math.random()}:`);
    expect(await Promise.all([s.add('k', ['a', 'b'], 0, MIN), s.add('k', ['b', 'c'], 2, MIN), s.add('k', ['d'], MIN + 1, MIN), s.add('other', ['a'], 0, MIN)])).toEqual([2, 3, 3, 1]);
    // At MIN + 1 a (seen at 0) had left, b and c (seen at 2) had not; at 2*MIN + 1 only d is left.
    expect(await s.add('k', [], 2 * MIN + 1, MIN)).toBe(0);
  });

  it('each window key expires twice its own window after its last update', async () => {
    const c = client();
    const prefix = `ttl-${Math.random()}:`;
    const s = new RedisWindowStore(c, prefix);
    await Promise.all([s.add('short', ['a'], 0, 1000), s.add('long', ['a'], 0, MIN), s.add('short', ['b'], 10, 1500)]);
    const [short, long] = await Promise.all([c.pttl(`${prefix}short`), c.pttl(`${prefix}long`)]);
    expect(short).toBeGreaterThan(2000);
    expect(short).toBeLessThanOrEqual(3000);
    expect(long).toBeGreaterThan(MIN);
    expect(long).toBeLessThanOrEqual(2 * MIN);
  });

  it('a burst of adds in one turn is ONE script call on the Redis server; bursts above the cap are split', async () => {
    const admin = client();
    const s = new RedisWindowStore(client(), `burst-${Math.random()}:`);
    await s.add('warm', ['x'], 0, MIN); // the connection's first use sends EVAL (loads the script), later ones EVALSHA
    const before = await commandCalls(admin);
    const counts = await Promise.all(Array.from({ length: 100 }, (_, i) => s.add(`actor${i % 10}`, [`p${i}`], i, MIN)));
    expect(counts).toEqual(Array.from({ length: 100 }, (_, i) => Math.floor(i / 10) + 1));
    const after = await commandCalls(admin);
    expect((after.evalsha ?? 0) - (before.evalsha ?? 0)).toBe(1);
    expect((after.eval ?? 0) - (before.eval ?? 0)).toBe(0);
    // The window commands ran inside the script: ZADD 100 times, ZCARD once per add.
    expect((after.zcard ?? 0) - (before.zcard ?? 0)).toBe(100);
    expect(after.multi ?? 0).toBe(before.multi ?? 0);

    // 600 adds in one turn: batches of at most 256 adds (3 calls), still each its own count.
    const many = await Promise.all(Array.from({ length: 600 }, (_, i) => s.add('big', [`m${i}`], 1000, MIN)));
    expect(many).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
    expect((await commandCalls(admin)).evalsha! - after.evalsha!).toBe(3);
  });

  it('reloads the script when Redis lost it (SCRIPT FLUSH)', async () => {
    const c = client();
    const s = new RedisWindowStore(c, `flush-${Math.random()}:`);
    expect(await s.add('k', ['a'], 0, MIN)).toBe(1);
    await c.script('FLUSH');
    expect(await Promise.all([s.add('k', ['b'], 1, MIN), s.add('k', ['c'], 2, MIN)])).toEqual([2, 3]);
  });

  it('a failed batch rejects every add in it; the next batch works', async () => {
    const c = client();
    const prefix = `fail-${Math.random()}:`;
    const s = new RedisWindowStore(c, prefix);
    await c.set(`${prefix}wrongtype`, 'not a sorted set');
    const settled = await Promise.allSettled([s.add('x', ['a'], 0, MIN), s.add('wrongtype', ['a'], 0, MIN), s.add('y', ['a'], 0, MIN)]);
    expect(settled.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const r of settled) expect(String((r as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    expect(await Promise.all([s.add('z', ['a'], 0, MIN), s.add('z', ['b'], 0, MIN)])).toEqual([1, 2]);

    // Connection gone: the whole batch rejects too.
    const gone = client({ maxRetriesPerRequest: 0, enableOfflineQueue: false, lazyConnect: true });
    const g = new RedisWindowStore(gone, prefix);
    const lost = await Promise.allSettled([g.add('x', ['a'], 0, MIN), g.add('y', ['a'], 0, MIN)]);
    expect(lost.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  });

  it('ACL without scripting: the refused batch and later ones go through MULTI, batched, with the same counts', async () => {
    const admin = client();
    const user = `noscriptb${Math.floor(Math.random() * 1e9)}`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '+@all', '-@scripting');
    const c = client({ username: user, password: 'pw' });
    const prefix = `aclb-${Math.random()}:`;
    const s = new RedisWindowStore(c, prefix);
    const expected: number[] = [];
    const alone = new RedisWindowStore(admin, `aclref-${Math.random()}:`);
    for (const [k, m, t, w] of OPS) expected.push(await alone.add(k, m, t, w));

    const before = await commandCalls(admin);
    // The first batch is refused as a script and retried as MULTI; the rest go straight to MULTI.
    const got: number[] = [];
    for (let i = 0; i < OPS.length; i += 40) got.push(...(await Promise.all(OPS.slice(i, i + 40).map(([k, m, t, w]) => s.add(k, m, t, w)))));
    expect(got).toEqual(expected);
    const after = await commandCalls(admin);
    expect(after.multi! - (before.multi ?? 0)).toBe(3); // one MULTI per batch of 40
    expect(after.exec! - (before.exec ?? 0)).toBe(3);

    // Within MULTI each add reports on its own: a key of another type fails only its own add.
    await admin.set(`${prefix}wrongtype`, 'x');
    const settled = await Promise.allSettled([s.add('p', ['a'], 0, MIN), s.add('wrongtype', ['a'], 0, MIN), s.add('p', ['b'], 0, MIN)]);
    expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : String(r.reason).slice(0, 15)))).toEqual([1, 'ReplyError: WRO', 2]);
  });
});
