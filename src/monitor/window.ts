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

/**
 * Window updates as a script that Redis keeps out of its AOF and replication stream
 * (`set_repl(REPL_NONE)`). The audit stream lives in the same Redis under `appendfsync always`:
 * a replicated window update made Redis fsync once more per request, and the next audit records
 * queued behind that fsync (measured: p99 of an audited read at 400 req/s 16.6 ms -> 6.1 ms).
 * Window counts are short-lived and approximate by nature; after a Redis restart or failover they
 * start again from zero, which only delays an anomaly alert by at most one window.
 *
 * One call updates a batch of windows, in order: KEYS[i] is the i-th window key, and ARGV holds for
 * each in turn `now`, the cutoff (older members are dropped), the key's TTL in ms, the number of
 * members, then the members. Returns each window's count after its own update, so two updates of
 * one key in a batch count as they would one after the other.
 */
const WINDOW_ADD_SCRIPT = `redis.set_repl(redis.REPL_NONE)
local out = {}
local a = 1
for k = 1, #KEYS do
  local key, now = KEYS[k], ARGV[a]
  local first = a + 4
  local last = a + 3 + tonumber(ARGV[a + 3])
  for i = first, last do redis.call('ZADD', key, now, ARGV[i]) end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[a + 1])
  out[k] = redis.call('ZCARD', key)
  redis.call('PEXPIRE', key, ARGV[a + 2])
  a = last + 1
end
return out`;

interface WindowScript {
  /** `numkeys`, the keys, then the ARGV above, as one flat array (ioredis flattens it). */
  phiWindowAddBatch?(args: (string | number)[]): Promise<number[]>;
}

/** A caller's `add`, waiting for its batch. */
interface PendingAdd {
  readonly key: string;
  readonly members: readonly string[];
  readonly now: number;
  readonly windowMs: number;
  readonly resolve: (n: number) => void;
  readonly reject: (e: unknown) => void;
}

/** A batch is sent at the end of the event-loop turn, or earlier once it holds this many updates... */
const BATCH_ADDS = 256;
/** ...or this many members: one script call should not hold Redis (single-threaded) for long. */
const BATCH_MEMBERS = 4096;

/** Redis refused scripting for this user (an ACL without `@scripting`), rather than the update failing. */
function scriptingRefused(e: unknown): boolean {
  return /^(NOPERM|ERR unknown command)/.test(String((e as Error | undefined)?.message ?? ''));
}

/**
 * Shared store: one sorted set per window key, markers as keys with an expiry.
 *
 * `add`s made within one event-loop turn (every request whose response was released in that turn)
 * go to Redis together as ONE script call (EVALSHA), in the order they were made; each caller gets
 * the count its own update produced. The per-command cost (ioredis Command, arguments, reply, and
 * Redis's own dispatch) is paid once per batch instead of once per request. If the batch fails
 * (connection lost, a key of another type), every `add` in it rejects with that error.
 */
export class RedisWindowStore implements WindowStore {
  /** False once Redis refused the script (an ACL without scripting): plain MULTI from then on. */
  private scripted = true;
  private queue: PendingAdd[] = [];
  private queuedMembers = 0;
  private scheduled = false;

  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'phi-gateway:anomaly:',
  ) {
    // EVALSHA, with ioredis loading the script (EVAL) when Redis does not have it cached.
    if (typeof (redis as unknown as WindowScript).phiWindowAddBatch !== 'function') {
      redis.defineCommand('phiWindowAddBatch', { lua: WINDOW_ADD_SCRIPT });
    }
  }

  add(key: string, members: readonly string[], now: number, windowMs: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ key: this.prefix + key, members, now, windowMs, resolve, reject });
      this.queuedMembers += members.length;
      if (this.queue.length >= BATCH_ADDS || this.queuedMembers >= BATCH_MEMBERS) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flushScheduled);
      }
    });
  }

  private readonly flushScheduled = (): void => {
    this.scheduled = false;
    this.flush();
  };

  /** Sends what is queued (commands on one connection run in the order sent: batches stay in order). */
  private flush(): void {
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    this.queuedMembers = 0;
    // send() settles every add itself; this only catches what it did not foresee (a settled promise ignores it).
    this.send(batch).catch((e: unknown) => {
      for (const a of batch) a.reject(e);
    });
  }

  private async send(batch: readonly PendingAdd[]): Promise<void> {
    if (this.scripted) {
      let counts: number[];
      try {
        counts = await this.viaScript(batch);
      } catch (e) {
        if (!scriptingRefused(e)) {
          for (const a of batch) a.reject(e);
          return;
        }
        this.scripted = false;
        return this.viaMulti(batch);
      }
      for (let i = 0; i < batch.length; i++) batch[i]!.resolve(Number(counts[i]));
      return;
    }
    return this.viaMulti(batch);
  }

  private async viaScript(batch: readonly PendingAdd[]): Promise<number[]> {
    const n = batch.length;
    const args: (string | number)[] = [n];
    for (const a of batch) args.push(a.key);
    for (const a of batch) {
      // Kept a little beyond the window: idle keys vanish by themselves.
      args.push(a.now, a.now - a.windowMs, a.windowMs * 2, a.members.length);
      for (const m of a.members) args.push(m);
    }
    const counts = await (this.redis as unknown as Required<WindowScript>).phiWindowAddBatch(args);
    if (!Array.isArray(counts) || counts.length !== n) throw new Error('window update: unexpected reply');
    return counts;
  }

  /**
   * The batch as one MULTI. Each command reports on its own there, so an `add` whose commands all
   * succeeded resolves with its count even when another one's failed; exec failing rejects them all.
   */
  private async viaMulti(batch: readonly PendingAdd[]): Promise<void> {
    const m = this.redis.multi();
    /** Index in the exec reply of each add's first command; its ZCARD is the one before the last. */
    const at: number[] = [];
    let i = 0;
    for (const a of batch) {
      at.push(i);
      if (a.members.length > 0) {
        m.zadd(a.key, ...a.members.flatMap((x) => [a.now, x]));
        i++;
      }
      m.zremrangebyscore(a.key, '-inf', a.now - a.windowMs);
      m.zcard(a.key);
      m.pexpire(a.key, a.windowMs * 2);
      i += 3;
    }
    let res: [Error | null, unknown][] | null;
    try {
      res = await m.exec();
      if (!res) throw new Error('window update aborted');
    } catch (e) {
      for (const a of batch) a.reject(e);
      return;
    }
    for (let j = 0; j < batch.length; j++) {
      const end = j + 1 < batch.length ? at[j + 1]! : res.length;
      const failed = res.slice(at[j], end).find(([err]) => err)?.[0];
      if (failed) batch[j]!.reject(failed);
      else batch[j]!.resolve(Number(res[end - 2]![1]));
    }
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
