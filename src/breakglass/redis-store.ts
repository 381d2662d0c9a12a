/**
 * Sessions in Redis, so that every replica honours the same session and the same daily limit.
 * The open-or-reuse-or-limit decision is one Lua script (atomic across replicas). Expiry is judged
 * against the gateway's clock (injectable), not Redis TTLs; TTLs only collect garbage.
 *
 * Keys (prefix P, default `phi-gateway:bg:`):
 *   P s:ID      session JSON (kept: the review queue needs it)     P r:ID    reviews (list of JSON)
 *   P e:ID      end time, set once                                  P all     zset id -> start ms
 *   P pend      zset id -> expiry ms, sessions whose end is not yet audited
 *   P o:HASH    `ID|expiryMs` of the actor's session for a patient  P d:HASH  zset id -> start ms (24 h window)
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { BreakGlassReview, BreakGlassSession, OpenRequest, OpenResult, SessionStore } from './types.js';

const DAY_MS = 86_400_000;

// KEYS: 1 open key, 2 day key, 3 all, 4 pend. ARGV: 1 now, 2 max/day, 3 id, 4 JSON, 5 expiry ms,
// 6 session key prefix, 7 open-key TTL ms.
const OPEN_SCRIPT = `
local now = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep then
    local id = string.sub(cur, 1, sep - 1)
    local exp = tonumber(string.sub(cur, sep + 1))
    if exp and exp > now then
      local s = redis.call('GET', ARGV[6] .. id)
      if s then return {'reused', s} end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ${DAY_MS})
local count = redis.call('ZCOUNT', KEYS[2], now - ${DAY_MS} + 1, now)
if count >= tonumber(ARGV[2]) then return {'limited', tostring(count)} end
redis.call('SET', ARGV[6] .. ARGV[3], ARGV[4])
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. ARGV[5], 'PX', ARGV[7])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('PEXPIRE', KEYS[2], ${DAY_MS * 2})
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
return {'opened', ARGV[4]}
`;

type StoredSession = Omit<BreakGlassSession, 'reviews' | 'endedAt'>;

function hash(...parts: string[]): string {
  // Keys must not spell out actor or patient ids (they show up in monitoring tools).
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}

export class RedisSessionStore implements SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'phi-gateway:bg:',
    private readonly ownsClient = false,
  ) {}

  private k(name: string): string {
    return this.prefix + name;
  }

  async open(req: OpenRequest): Promise<OpenResult> {
    const now = req.now.getTime();
    const expiry = now + req.sessionMs;
    const stored: StoredSession = {
      id: req.id,
      actor: req.actor,
      patient: req.patient,
      reason: req.reason,
      reasonCode: req.reasonCode,
      startedAt: req.now.toISOString(),
      expiresAt: new Date(expiry).toISOString(),
      openedBy: req.requestId,
    };
    const res = (await this.redis.eval(
      OPEN_SCRIPT,
      4,
      this.k(`o:${hash(req.actor.iss, req.actor.sub, req.patient)}`),
      this.k(`d:${hash(req.actor.iss, req.actor.sub)}`),
      this.k('all'),
      this.k('pend'),
      String(now),
      String(req.maxSessionsPerDay),
      req.id,
      JSON.stringify(stored),
      String(expiry),
      this.k('s:'),
      // Outlives the session by a day so a skewed clock never loses it early; expiry is checked above.
      String(req.sessionMs + DAY_MS),
    )) as [string, string];
    const [kind, value] = res;
    if (kind === 'limited') return { kind: 'limited', count: Number(value) };
    const base = JSON.parse(value) as StoredSession;
    if (kind === 'reused') return { kind: 'reused', session: (await this.get(base.id)) ?? { ...base, endedAt: undefined, reviews: [] } };
    return { kind: 'opened', session: { ...base, endedAt: undefined, reviews: [] } };
  }

  async get(id: string): Promise<BreakGlassSession | undefined> {
    const [[, s], [, reviews], [, ended]] = (await this.redis
      .multi()
      .get(this.k(`s:${id}`))
      .lrange(this.k(`r:${id}`), 0, -1)
      .get(this.k(`e:${id}`))
      .exec()) as [[unknown, string | null], [unknown, string[]], [unknown, string | null]];
    if (s === null) return undefined;
    return { ...(JSON.parse(s) as StoredSession), endedAt: ended ?? undefined, reviews: reviews.map((r) => JSON.parse(r) as BreakGlassReview) };
  }

  async list(): Promise<BreakGlassSession[]> {
    const ids = await this.redis.zrange(this.k('all'), '0', '-1');
    const out: BreakGlassSession[] = [];
    for (const id of ids) {
      const s = await this.get(id);
      if (s) out.push(s);
    }
    return out;
  }

  async addReview(id: string, review: BreakGlassReview): Promise<BreakGlassSession | undefined> {
    if (!(await this.redis.exists(this.k(`s:${id}`)))) return undefined;
    await this.redis.rpush(this.k(`r:${id}`), JSON.stringify(review));
    return this.get(id);
  }

  async endExpired(now: Date): Promise<BreakGlassSession[]> {
    const ids = await this.redis.zrangebyscore(this.k('pend'), '-inf', String(now.getTime()));
    const out: BreakGlassSession[] = [];
    for (const id of ids) {
      // ZREM answers 1 to exactly one replica: that one audits the end.
      if ((await this.redis.zrem(this.k('pend'), id)) !== 1) continue;
      await this.redis.set(this.k(`e:${id}`), now.toISOString(), 'NX');
      const s = await this.get(id);
      if (s) out.push(s);
    }
    return out;
  }

  async unend(id: string): Promise<void> {
    const s = await this.redis.get(this.k(`s:${id}`));
    if (s === null) return;
    await this.redis.multi().del(this.k(`e:${id}`)).zadd(this.k('pend'), Date.parse((JSON.parse(s) as StoredSession).expiresAt), id).exec();
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
