import { Redis } from 'ioredis';
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
