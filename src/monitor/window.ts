/**
 * Sliding-window counters for the anomaly rules. In Redis (sorted sets scored by time, shared by
 * every replica) when the gateway has Redis; in memory otherwise. Times are the requests' own
 * (the gateway clock), so tests drive the windows with a controlled clock.
 */
import type { Redis } from 'ioredis';

export interface WindowStore {
  /**
   * Records `members` at `now` in the window `key` (a member seen again moves to `now`), drops
   * what is older than `windowMs`, and returns how many distinct members remain.
   */
  add(key: string, members: readonly string[], now: number, windowMs: number): Promise<number>;
  /** True exactly once per `key` per `ms` (the first caller, across replicas), measured from `now`. */
  once(key: string, now: number, ms: number): Promise<boolean>;
  /** Sets a marker that `isSet` sees until `now + ms`. */
  mark(key: string, now: number, ms: number): Promise<void>;
  isSet(key: string, now: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Per-process store. Bounded: idle keys are swept as the clock moves. */
export class MemoryWindowStore implements WindowStore {
  private readonly sets = new Map<string, { members: Map<string, number>; windowMs: number }>();
  private readonly until = new Map<string, number>();
  private lastSweep = 0;

  async add(key: string, members: readonly string[], now: number, windowMs: number): Promise<number> {
    this.sweep(now);
    let s = this.sets.get(key);
    if (!s) {
      s = { members: new Map(), windowMs };
      this.sets.set(key, s);
    }
    s.windowMs = windowMs;
    for (const m of members) {
      s.members.delete(m); // re-insert: Map order stays oldest-first
      s.members.set(m, now);
    }
    prune(s.members, now - windowMs);
    return s.members.size;
  }

  async once(key: string, now: number, ms: number): Promise<boolean> {
    const u = this.until.get(key);
    if (u !== undefined && u > now) return false;
    this.until.set(key, now + ms);
    return true;
  }

  async mark(key: string, now: number, ms: number): Promise<void> {
    this.until.set(key, Math.max(this.until.get(key) ?? 0, now + ms));
  }

  async isSet(key: string, now: number): Promise<boolean> {
    return (this.until.get(key) ?? 0) > now;
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [k, s] of this.sets) {
      prune(s.members, now - s.windowMs);
      if (s.members.size === 0) this.sets.delete(k);
    }
    for (const [k, u] of this.until) if (u <= now) this.until.delete(k);
  }

  async close(): Promise<void> {}
}

function prune(members: Map<string, number>, before: number): void {
  // Insertion order is time order (a member seen again is re-inserted), so stop at the first live one.
  for (const [m, t] of members) {
    if (t > before) break;
    members.delete(m);
  }
}

/** Shared store: one sorted set per window key, markers as keys with an expiry. */
export class RedisWindowStore implements WindowStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'phi-gateway:anomaly:',
  ) {}

  async add(key: string, members: readonly string[], now: number, windowMs: number): Promise<number> {
    const k = this.prefix + key;
    const m = this.redis.multi();
    if (members.length > 0) m.zadd(k, ...members.flatMap((x) => [now, x]));
    m.zremrangebyscore(k, '-inf', now - windowMs);
    m.zcard(k);
    // Kept a little beyond the window: idle keys vanish by themselves.
    m.pexpire(k, windowMs * 2);
    const res = await m.exec();
    if (!res) throw new Error('window update aborted');
    for (const [err] of res) if (err) throw err;
    return Number(res[res.length - 2][1]);
  }

  async once(key: string, now: number, ms: number): Promise<boolean> {
    // The value is the expiry in gateway time: an alert fired under a test clock does not depend on Redis time.
    const k = `${this.prefix}once:${key}`;
    const script = `local v = redis.call('GET', KEYS[1])
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`;
    const r = await this.redis.eval(script, 1, k, String(now), String(now + ms), String(Math.max(1, ms * 2)));
    return r === 1;
  }

  async mark(key: string, now: number, ms: number): Promise<void> {
    await this.redis.set(`${this.prefix}mark:${key}`, String(now + ms), 'PX', Math.max(1, ms * 2));
  }

  async isSet(key: string, now: number): Promise<boolean> {
    const v = await this.redis.get(`${this.prefix}mark:${key}`);
    return v !== null && Number(v) > now;
  }

  async close(): Promise<void> {}
}
