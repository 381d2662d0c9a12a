// The Redis session store against a real redis-server: replicas share sessions and the daily
// limit atomically, and each session's end is handed to exactly one replica.
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisOutbox } from '../../../src/breakglass/outbox.js';
import { RedisSessionStore } from '../../../src/breakglass/redis-store.js';
import type { OpenRequest } from '../../../src/breakglass/types.js';
import { type RedisHandle, startRedis } from '../../helpers/redis.js';

const redis: RedisHandle | undefined = await startRedis();
const suite = redis ? describe : describe.skip;

suite('RedisSessionStore', () => {
  const clients: Redis[] = [];
  let n = 0;
  const replica = (prefix: string) => {
    const c = new Redis(redis!.url);
    clients.push(c);
    return new RedisSessionStore(c, prefix);
  };
  const req = (over: Partial<OpenRequest> = {}): OpenRequest => ({
    id: `s-${++n}`,
    actor: { iss: 'https://idp.test', sub: 'dr-a', roles: ['clinician'] },
    patient: 'p1',
    reason: 'Unconscious patient in the ED, chart restricted',
    reasonCode: undefined,
    requestId: `r-${n}`,
    now: new Date('2025-03-01T10:00:00Z'),
    sessionMs: 3600_000,
    maxSessionsPerDay: 3,
    ...over,
  });

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis?.dispose();
  });

  it('two replicas honour the same session; expiry follows the gateway clock', async () => {
    const a = replica('t1:');
    const b = replica('t1:');
    const opened = await a.open(req());
    expect(opened.kind).toBe('opened');
    const reused = await b.open(req({ now: new Date('2025-03-01T10:59:59.999Z') }));
    expect(reused).toMatchObject({ kind: 'reused', session: { id: opened.kind !== 'limited' ? opened.session.id : '' } });
    const after = await b.open(req({ now: new Date('2025-03-01T11:00:00Z') }));
    expect(after.kind).toBe('opened');
    // Keys do not spell out actor or patient ids.
    const keys = await clients[0].keys('t1:*');
    expect(keys.some((k) => k.includes('dr-a') || k.includes('p1'))).toBe(false);
  });

  it('enforces the daily limit atomically across concurrent replicas', async () => {
    const stores = [replica('t2:'), replica('t2:'), replica('t2:')];
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => stores[i % 3].open(req({ patient: `p${i}` }))));
    expect(results.filter((r) => r.kind === 'opened')).toHaveLength(3);
    expect(results.filter((r) => r.kind === 'limited')).toHaveLength(9);
    // 24 h later the window has rolled.
    expect((await stores[0].open(req({ patient: 'px', now: new Date('2025-03-02T10:00:00.001Z') }))).kind).toBe('opened');
  });

  it('hands each expired session to exactly one replica, and takes it back on unend', async () => {
    const a = replica('t3:');
    const b = replica('t3:');
    const o = await a.open(req());
    const id = o.kind === 'limited' ? '' : o.session.id;
    const later = new Date('2025-03-01T11:00:00Z');
    expect(await a.endExpired(new Date('2025-03-01T10:30:00Z'))).toEqual([]);
    const [ea, eb] = await Promise.all([a.endExpired(later), b.endExpired(later)]);
    expect([...ea, ...eb].map((s) => s.id)).toEqual([id]);
    expect((await b.get(id))?.endedAt).toBe(later.toISOString());
    await a.unend(id);
    expect((await b.get(id))?.endedAt).toBeUndefined();
    expect((await b.endExpired(later)).map((s) => s.id)).toEqual([id]);
  });

  it('appends reviews and lists sessions oldest first', async () => {
    const a = replica('t4:');
    const s1 = await a.open(req({ patient: 'q1' }));
    const s2 = await a.open(req({ patient: 'q2', now: new Date('2025-03-01T10:00:01Z') }));
    const id1 = s1.kind === 'limited' ? '' : s1.session.id;
    const review = { reviewer: { iss: 'x', sub: 'po' }, outcome: 'justified' as const, note: undefined, at: 'now', via: 'cli' as const, auditId: 'a1' };
    expect(await a.addReview('missing', review)).toBeUndefined();
    expect((await a.addReview(id1, review))?.reviews).toHaveLength(1);
    expect((await replica('t4:').list()).map((s) => [s.patient, s.reviews.length])).toEqual([
      ['q1', 1],
      ['q2', 0],
    ]);
    expect(s2.kind).toBe('opened');
  });

  it('RedisOutbox leases an item to one replica at a time', async () => {
    const c = new Redis(redis!.url);
    clients.push(c);
    const box = new RedisOutbox(c, 't5:');
    expect(await box.claim('al', 500)).toBe(true);
    expect(await box.claim('al', 500)).toBe(false);
  });
});
