/**
 * Access requests in Redis, so that every replica sees the same decision at once: a revoked or
 * expired grant is refused on the next request whichever replica answers it. Each change that
 * depends on a state (create under the pending limit, decide if pending, revoke if active, claim an
 * expiry) is one Lua script, atomic across replicas. Expiry is judged against the gateway's clock
 * (injectable), not Redis TTLs.
 *
 * Keys (prefix P, default `phi-gateway:access:`):
 *   P r:ID      hash: `base` (the request as asked, JSON), `owner`, `status`, `decision`, `granted`,
 *               `exp` (grant expiry ms), `revoked`, `expiredAt`, `uses`, `firstUsedAt`, `lastUsedAt`
 *   P all       zset id -> requested ms                P p:OWNER   set of the requester's pending ids
 *   P exp       zset id -> expiry ms, approved grants whose expiry is not yet audited
 * OWNER is a hash of the requester's issuer and subject: keys never spell out user ids.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { AccessDecision, AccessRequestRecord, AccessRevocation, AccessStore, StoreDecision } from './types.js';

// KEYS: 1 record, 2 requester's pending set, 3 all. ARGV: 1 JSON, 2 max pending, 3 requested ms,
// 4 id, 5 owner.
const CREATE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', '0'} end
local held = redis.call('SCARD', KEYS[2])
if held >= tonumber(ARGV[2]) then return {'limited', tostring(held)} end
redis.call('HSET', KEYS[1], 'base', ARGV[1], 'owner', ARGV[5], 'status', 'pending', 'uses', '0')
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return {'ok', tostring(held + 1)}
`;

// KEYS: 1 record, 2 exp. ARGV: 1 id, 2 outcome, 3 decision JSON, 4 granted JSON or '', 5 expiry ms,
// 6 key prefix.
const DECIDE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not-found' end
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 'not-pending' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'decision', ARGV[3])
redis.call('SREM', ARGV[6] .. 'p:' .. redis.call('HGET', KEYS[1], 'owner'), ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'granted', ARGV[4], 'exp', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
end
return 'ok'
`;

// KEYS: 1 record, 2 exp. ARGV: 1 id, 2 revocation JSON, 3 now ms.
const REVOKE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not-found' end
local f = redis.call('HMGET', KEYS[1], 'status', 'revoked', 'exp')
if f[1] ~= 'approved' or f[2] or not f[3] or tonumber(f[3]) <= tonumber(ARGV[3]) then return 'not-active' end
redis.call('HSET', KEYS[1], 'revoked', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return 'ok'
`;

// KEYS: 1 record. ARGV: 1 ISO time.
const USE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'uses', 1)
redis.call('HSETNX', KEYS[1], 'firstUsedAt', ARGV[1])
redis.call('HSET', KEYS[1], 'lastUsedAt', ARGV[1])
return 1
`;

// KEYS: 1 exp. ARGV: 1 now ms, 2 ISO now, 3 key prefix, 4 batch size. Each id leaves the zset in
// exactly one call: the replica that ran it audits the expiry. Returns how many it took, then the
// ids it marked.
const END_SCRIPT = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {tostring(#ids)}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local k = ARGV[3] .. 'r:' .. id
  local f = redis.call('HMGET', k, 'status', 'revoked', 'expiredAt')
  if f[1] == 'approved' and not f[2] and not f[3] then
    redis.call('HSET', k, 'expiredAt', ARGV[2])
    table.insert(out, id)
  end
end
return out
`;

// KEYS: 1 record, 2 exp. ARGV: 1 id.
const UNEND_SCRIPT = `
local f = redis.call('HMGET', KEYS[1], 'expiredAt', 'exp')
if not f[1] then return 0 end
redis.call('HDEL', KEYS[1], 'expiredAt')
redis.call('ZADD', KEYS[2], f[2], ARGV[1])
return 1
`;

/** Expired grants claimed per script run (a long backlog is taken over several runs of one sweep). */
const END_BATCH = 100;

function ownerHash(r: AccessRequestRecord): string {
  return createHash('sha256')
    .update(JSON.stringify([r.requester.iss ?? '', r.requester.sub]))
    .digest('hex')
    .slice(0, 32);
}

function parse<T>(s: string | undefined): T | undefined {
  return s === undefined || s === '' ? undefined : (JSON.parse(s) as T);
}

export class RedisAccessStore implements AccessStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'phi-gateway:access:',
    private readonly ownsClient = false,
  ) {}

  private k(name: string): string {
    return this.prefix + name;
  }

  private recordOf(h: Record<string, string>): AccessRequestRecord | undefined {
    const base = parse<AccessRequestRecord>(h.base);
    if (base === undefined) return undefined;
    return {
      ...base,
      status: h.status as AccessRequestRecord['status'],
      decision: parse(h.decision),
      granted: parse(h.granted),
      revoked: parse(h.revoked),
      expiredAt: h.expiredAt,
      uses: Number(h.uses ?? 0),
      firstUsedAt: h.firstUsedAt,
      lastUsedAt: h.lastUsedAt,
    };
  }

  async create(record: AccessRequestRecord, maxPending: number): Promise<{ ok: true } | { ok: false; pending: number }> {
    const owner = ownerHash(record);
    const base: AccessRequestRecord = { ...record, status: 'pending', decision: undefined, granted: undefined, revoked: undefined, expiredAt: undefined, uses: 0 };
    const [kind, n] = (await this.redis.eval(
      CREATE_SCRIPT,
      3,
      this.k(`r:${record.id}`),
      this.k(`p:${owner}`),
      this.k('all'),
      JSON.stringify(base),
      String(maxPending),
      String(Date.parse(record.requestedAt)),
      record.id,
      owner,
    )) as [string, string];
    if (kind === 'ok') return { ok: true };
    if (kind === 'exists') throw new Error('access request id already stored');
    return { ok: false, pending: Number(n) };
  }

  async get(id: string): Promise<AccessRequestRecord | undefined> {
    return this.recordOf(await this.redis.hgetall(this.k(`r:${id}`)));
  }

  async list(): Promise<AccessRequestRecord[]> {
    const ids = await this.redis.zrange(this.k('all'), '0', '-1');
    if (ids.length === 0) return [];
    const pipe = this.redis.pipeline();
    for (const id of ids) pipe.hgetall(this.k(`r:${id}`));
    const out: AccessRequestRecord[] = [];
    for (const [err, h] of (await pipe.exec()) ?? []) {
      if (err) throw err;
      const r = this.recordOf(h as Record<string, string>);
      if (r) out.push(r);
    }
    return out;
  }

  private async after(id: string, res: string, refused: 'not-pending' | 'not-active'): Promise<StoreDecision> {
    if (res === 'not-found') return { ok: false, why: 'not-found' };
    if (res !== 'ok') return { ok: false, why: refused };
    const record = await this.get(id);
    return record ? { ok: true, record } : { ok: false, why: 'not-found' };
  }

  async decide(id: string, decision: AccessDecision, granted: AccessRequestRecord['granted']): Promise<StoreDecision> {
    const grant = decision.outcome === 'approved' ? granted : undefined;
    const res = (await this.redis.eval(
      DECIDE_SCRIPT,
      2,
      this.k(`r:${id}`),
      this.k('exp'),
      id,
      decision.outcome,
      JSON.stringify(decision),
      grant !== undefined ? JSON.stringify(grant) : '',
      grant !== undefined ? String(Date.parse(grant.expiresAt)) : '0',
      this.prefix,
    )) as string;
    return this.after(id, res, 'not-pending');
  }

  async revoke(id: string, revocation: AccessRevocation, now: Date): Promise<StoreDecision> {
    const res = (await this.redis.eval(REVOKE_SCRIPT, 2, this.k(`r:${id}`), this.k('exp'), id, JSON.stringify(revocation), String(now.getTime()))) as string;
    return this.after(id, res, 'not-active');
  }

  async noteUse(id: string, at: string): Promise<void> {
    await this.redis.eval(USE_SCRIPT, 1, this.k(`r:${id}`), at);
  }

  async endExpired(now: Date): Promise<AccessRequestRecord[]> {
    const out: AccessRequestRecord[] = [];
    for (;;) {
      const [taken, ...ids] = (await this.redis.eval(END_SCRIPT, 1, this.k('exp'), String(now.getTime()), now.toISOString(), this.prefix, String(END_BATCH))) as string[];
      for (const id of ids) {
        const r = await this.get(id);
        if (r) out.push(r);
      }
      if (Number(taken) < END_BATCH) return out;
    }
  }

  async unend(id: string): Promise<void> {
    await this.redis.eval(UNEND_SCRIPT, 2, this.k(`r:${id}`), this.k('exp'), id);
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return;
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
