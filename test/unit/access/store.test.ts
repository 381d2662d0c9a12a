// The access-request store contract, run against both stores: the embedded JSON-lines store (two
// instances on one directory, and the directory reopened) and the Redis store (two replicas on one
// real redis-server). Limits, decisions, revocations and expiry claims are atomic across them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileAccessStore } from '../../../src/access/file-store.js';
import { RedisAccessStore } from '../../../src/access/redis-store.js';
import type { AccessDecision, AccessRequestRecord, AccessRevocation, AccessStore } from '../../../src/access/types.js';
import { type RedisHandle, startRedis } from '../../helpers/redis.js';

const T0 = Date.parse('2025-03-01T10:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString();
let n = 0;

function record(over: Partial<AccessRequestRecord> = {}): AccessRequestRecord {
  n++;
  return {
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    requester: { iss: 'https://idp.test', sub: 'bill-1', clientId: 'ehr-app', roles: ['billing'] },
    role: 'billing',
    dataSet: 'claim-attachment',
    purpose: 'HPAYMT',
    scope: { patients: ['p1', 'p2'], types: ['DocumentReference'], period: { start: '2024-01-01', end: '2024-12-31' } },
    justification: 'Payer asked for the discharge summary as a claim attachment',
    justificationCode: undefined,
    minutes: 60,
    requestedAt: iso(T0 + n),
    requestId: `req-${n}`,
    status: 'pending',
    uses: 0,
    ...over,
  };
}

function decision(auditId: string, outcome: AccessDecision['outcome'] = 'approved', sub = 'po-1'): AccessDecision {
  return { by: { iss: 'https://idp.test', sub, roles: ['privacy-officer'] }, outcome, note: undefined, at: iso(T0 + 1000), narrowed: false, auditId, via: 'http' };
}

function grant(minutes = 60, patients = ['p1']): AccessRequestRecord['granted'] {
  return { scope: { patients }, expiresAt: iso(T0 + 1000 + minutes * 60_000) };
}

function revocation(auditId: string): AccessRevocation {
  return { by: { iss: 'https://idp.test', sub: 'po-1', roles: ['privacy-officer'] }, note: 'done', at: iso(T0 + 2000), auditId, via: 'cli' };
}

interface Harness {
  /** A new store instance on the shared state (another replica, or the file reopened). */
  replica(): Promise<AccessStore>;
  cleanup(): Promise<void>;
}

const redis: RedisHandle | undefined = await startRedis();
afterAll(async () => {
  await redis?.dispose();
});

const harnesses: Array<[string, (() => Promise<Harness>) | undefined]> = [
  [
    'file',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'access-store-'));
      const open: AccessStore[] = [];
      return {
        async replica() {
          const s = await FileAccessStore.open(dir);
          open.push(s);
          return s;
        },
        async cleanup() {
          for (const s of open) await s.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  ],
  [
    'redis',
    redis === undefined
      ? undefined
      : async () => {
          const prefix = `t${++n}:access:`;
          const clients: Redis[] = [];
          return {
            async replica() {
              const c = new Redis(redis.url);
              clients.push(c);
              return new RedisAccessStore(c, prefix);
            },
            async cleanup() {
              for (const c of clients) c.disconnect();
            },
          };
        },
  ],
];

for (const [name, make] of harnesses) {
  const suite = make ? describe : describe.skip;
  suite(`access store (${name})`, () => {
    let h: Harness;
    let a: AccessStore;
    let b: AccessStore;
    beforeEach(async () => {
      h = await make!();
      a = await h.replica();
      b = await h.replica();
    });
    afterEach(async () => {
      await h.cleanup();
    });

    it('stores a request as given and lists requests oldest first', async () => {
      const r1 = record();
      const r2 = record({ requester: { iss: 'https://idp.test', sub: 'aud-1', roles: ['auditor'] }, dataSet: 'compliance-chart', scope: { patients: ['p9'] } });
      expect(await a.create(r2, 5)).toEqual({ ok: true });
      expect(await a.create(r1, 5)).toEqual({ ok: true });
      expect(await b.get(r1.id)).toEqual(r1);
      expect(await b.get('00000000-0000-4000-8000-ffffffffffff')).toBeUndefined();
      // r1 was asked for first, though stored second.
      expect((await b.list()).map((r) => r.id)).toEqual([r1.id, r2.id]);
    });

    it('holds a requester to its pending limit, atomically across instances; a decision frees a place', async () => {
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).create(record(), 3)));
      expect(results.filter((r) => r.ok)).toHaveLength(3);
      expect(results.filter((r) => !r.ok)).toEqual(Array(5).fill({ ok: false, pending: 3 }));
      expect(await a.list()).toHaveLength(3);
      // Another requester is not affected.
      expect(await a.create(record({ requester: { iss: 'https://idp.test', sub: 'bill-2', roles: ['billing'] } }), 3)).toEqual({ ok: true });
      // The same sub from another issuer is another requester.
      expect(await a.create(record({ requester: { iss: 'https://other.test', sub: 'bill-1', roles: ['billing'] } }), 3)).toEqual({ ok: true });
      const first = (await a.list())[0];
      expect((await b.decide(first.id, decision('d1', 'denied'), undefined)).ok).toBe(true);
      expect(await a.create(record(), 3)).toEqual({ ok: true });
      expect(await b.create(record(), 3)).toEqual({ ok: false, pending: 3 });
    });

    it('decides a request only once: of two concurrent decisions exactly one wins', async () => {
      const r = record();
      await a.create(r, 5);
      const [x, y] = await Promise.all([a.decide(r.id, decision('dx', 'approved', 'po-1'), grant()), b.decide(r.id, decision('dy', 'denied', 'po-2'), undefined)]);
      expect([x.ok, y.ok].filter(Boolean)).toHaveLength(1);
      const loser = x.ok ? y : x;
      expect(loser).toEqual({ ok: false, why: 'not-pending' });
      const winner = x.ok ? x : y;
      const stored = await a.get(r.id);
      expect(stored).toEqual(winner.ok ? winner.record : undefined);
      if (x.ok) expect(stored).toMatchObject({ status: 'approved', decision: { auditId: 'dx' }, granted: grant() });
      else expect(stored).toMatchObject({ status: 'denied', decision: { auditId: 'dy' }, granted: undefined });
      expect(await b.decide(r.id, decision('dz'), grant())).toEqual({ ok: false, why: 'not-pending' });
      expect(await b.decide('00000000-0000-4000-8000-ffffffffffff', decision('dz'), grant())).toEqual({ ok: false, why: 'not-found' });
    });

    it('revokes only an active grant, once', async () => {
      const pending = record();
      const denied = record();
      const approved = record();
      for (const r of [pending, denied, approved]) await a.create(r, 5);
      await a.decide(denied.id, decision('d1', 'denied'), undefined);
      await a.decide(approved.id, decision('d2'), grant(60));
      const at = new Date(T0 + 5000);
      expect(await b.revoke(pending.id, revocation('r1'), at)).toEqual({ ok: false, why: 'not-active' });
      expect(await b.revoke(denied.id, revocation('r2'), at)).toEqual({ ok: false, why: 'not-active' });
      // Past its expiry it is no longer active.
      expect(await b.revoke(approved.id, revocation('r3'), new Date(T0 + 1000 + 60 * 60_000))).toEqual({ ok: false, why: 'not-active' });
      const [x, y] = await Promise.all([a.revoke(approved.id, revocation('r4'), at), b.revoke(approved.id, revocation('r5'), at)]);
      expect([x.ok, y.ok].filter(Boolean)).toHaveLength(1);
      expect((await a.get(approved.id))?.revoked?.auditId).toBe(x.ok ? 'r4' : 'r5');
      expect(await b.revoke('00000000-0000-4000-8000-ffffffffffff', revocation('r6'), at)).toEqual({ ok: false, why: 'not-found' });
    });

    it('counts uses: first use once, last use each time', async () => {
      const r = record();
      await a.create(r, 5);
      await a.decide(r.id, decision('d1'), grant());
      await Promise.all([a.noteUse(r.id, iso(T0 + 10_000)), b.noteUse(r.id, iso(T0 + 10_000))]);
      await b.noteUse(r.id, iso(T0 + 20_000));
      await b.noteUse('00000000-0000-4000-8000-ffffffffffff', iso(T0 + 20_000));
      expect(await a.get(r.id)).toMatchObject({ uses: 3, firstUsedAt: iso(T0 + 10_000), lastUsedAt: iso(T0 + 20_000) });
      expect(await a.get('00000000-0000-4000-8000-ffffffffffff')).toBeUndefined();
    });

    it('hands each expired grant to exactly one instance, once; unend hands it back', async () => {
      const g1 = record();
      const g2 = record();
      const revoked = record();
      const denied = record();
      const pending = record();
      for (const r of [g1, g2, revoked, denied, pending]) await a.create(r, 10);
      await a.decide(g1.id, decision('d1'), grant(10));
      await a.decide(g2.id, decision('d2'), grant(20));
      await a.decide(revoked.id, decision('d3'), grant(10));
      await a.decide(denied.id, decision('d4', 'denied'), undefined);
      await a.revoke(revoked.id, revocation('r1'), new Date(T0 + 5000));
      expect(await a.endExpired(new Date(T0 + 1000 + 10 * 60_000 - 1))).toEqual([]);
      const at = new Date(T0 + 1000 + 10 * 60_000);
      const [ea, eb] = await Promise.all([a.endExpired(at), b.endExpired(at)]);
      expect([...ea, ...eb].map((r) => r.id)).toEqual([g1.id]);
      expect([...ea, ...eb][0]).toMatchObject({ expiredAt: at.toISOString(), status: 'approved' });
      // Reopened (or another replica later): never again.
      const c = await h.replica();
      expect(await c.endExpired(new Date(T0 + 3600_000))).toEqual([expect.objectContaining({ id: g2.id })]);
      expect(await a.endExpired(new Date(T0 + 7200_000))).toEqual([]);
      expect(await b.endExpired(new Date(T0 + 7200_000))).toEqual([]);
      // An expiry that could not be audited is handed out again.
      await b.unend(g1.id);
      expect((await a.get(g1.id))?.expiredAt).toBeUndefined();
      expect((await c.endExpired(new Date(T0 + 7200_000))).map((r) => r.id)).toEqual([g1.id]);
      const d = await h.replica();
      expect(await d.endExpired(new Date(T0 + 9000_000))).toEqual([]);
      expect((await d.get(g1.id))?.expiredAt).toBe(new Date(T0 + 7200_000).toISOString());
    });
  });
}

describe('access store (file)', () => {
  it('survives a restart: everything is replayed from the log', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'access-store-'));
    try {
      const a = await FileAccessStore.open(dir);
      const r = record();
      await a.create(r, 5);
      await a.decide(r.id, decision('d1'), grant());
      await a.noteUse(r.id, iso(T0 + 3000));
      await a.close();
      const b = await FileAccessStore.open(dir);
      expect(await b.get(r.id)).toMatchObject({ status: 'approved', granted: grant(), uses: 1, firstUsedAt: iso(T0 + 3000) });
      await b.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(redis === undefined)('access store (redis)', () => {
  it('keys never spell out user or patient ids', async () => {
    const c = new Redis(redis!.url);
    try {
      const s = new RedisAccessStore(c, 'keys:access:');
      const r = record();
      await s.create(r, 5);
      await s.decide(r.id, decision('d1'), grant());
      const keys = await c.keys('keys:access:*');
      expect(keys.length).toBeGreaterThan(0);
      expect(keys.some((k) => k.includes('bill-1') || k.includes('p1') || k.includes('idp.test'))).toBe(false);
    } finally {
      c.disconnect();
    }
  });
});
