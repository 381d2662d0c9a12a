/**
 * The Redis audit sink: XADD to one stream (field `r` = the ChainedRecord as JSON), never XTRIM,
 * never XDEL. Several gateway replicas share the stream; each is its own writer chain.
 *
 * Writes are group-committed like the file sink: one batch in flight, everything that arrives
 * meanwhile goes into the next, sent as ONE command: EVALSHA of a fixed script that XADDs each line
 * (APPEND_SCRIPT). A script runs atomically, and every XADD in it is the same command on the same
 * key under the same server state, so the first one failing means none ran and none failing means
 * all ran: a batch lands entirely or not at all, like MULTI/EXEC, which it replaces because
 * MULTI + N x XADD + EXEC costs the gateway N + 2 command objects, timers and replies (measured
 * ~3x the main-thread time per record). Redis 7 writes a script's effects to the AOF and to
 * replicas as one MULTI/EXEC, fsynced (`appendfsync always`) before the reply, as before.
 * Where scripting is refused (an ACL granting only XADD, scripting disabled), the sink falls back
 * to MULTI/EXEC for good, retrying that batch at once (the refusal applied nothing).
 * Chain fields are assigned in-process and the head advances only when the batch is known to be
 * stored, so a failure never leaves a hole:
 *   - not connected (no offline queue), EXECABORT, or an error Redis returns before running the
 *     script (OOM, NOPERM, READONLY, LOADING, MISCONF, BUSY, NOSCRIPT): nothing was applied; the
 *     head stays, the next batch reuses those seqs;
 *   - anything else after sending (timeout, connection lost mid-reply): the batch may or may not
 *     have been applied (a timed-out command can still run later). Reusing its seqs could then
 *     duplicate them, so the writer is RETIRED and a fresh writer id starts at genesis. The retired
 *     chain is intact either way (with or without the atomic batch); verify shows it as unsealed.
 * Every write of a failed batch rejects (-> 503).
 *
 * A stalled Redis (process stopped, disk hung) answers nothing: the batch in flight fails after
 * `commandTimeoutMs` (redis-options.ts), and from then on the connection is STALE: every batch is
 * refused at once (nothing sent) while a PING probes it. A later batch would only queue behind
 * the stalled one and wait out its own timeout. The probe's answer (any reply: Redis has worked
 * through what was queued, the timed-out batch included) or a new connection's ready check ends
 * it, and writing resumes under the new writer without a restart. No write waits more than about
 * one command timeout: the batch ahead of it, then an immediate refusal. A connection silent for
 * several command timeouts (staleSocketMs) is taken for dead (a network black hole, not a busy
 * server) and replaced.
 *
 * Durability is Redis's: run it with `appendonly yes` and `appendfsync always` (the gateway
 * cannot check this from a replica-safe client), and for HA replicas + `waitReplicas`, which
 * issues `WAIT n timeout` after each batch and rejects the batch's writes when fewer replicas
 * acknowledged (the records stay in the chain: they are on the primary). Sentinel or Cluster:
 * pass ioredis options through `redisOptions`.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Redis, type RedisOptions, ReplyError } from 'ioredis';
import type { Logger } from 'pino';
import { type ChainHead, chainLine, genesisHead, retirementRecord, sealRecord } from './chain.js';
import { CHECKPOINT_TICK, type CheckpointOptions, Checkpointer, type PendingCheckpoint } from './checkpoint.js';
import { errInfo } from './file-sink.js';
import { DEFAULT_STREAM } from './read.js';
import { GroupCommitQueue, type Pending } from './group-commit.js';
import type { AuditRecord, AuditSink } from './record.js';
import { warnIfRedisNotDurable } from './redis-durability.js';
import { DEFAULT_REDIS_COMMAND_TIMEOUT_MS, failFastRedisOptions, waitUntilReady } from './redis-options.js';

type Applied = 'yes' | 'no' | 'unknown';

/**
 * Appends ARGV[1..n] to the stream KEYS[1] as entries `r` = line; returns n. No shebang, so it
 * also runs on Redis 6; Redis then checks OOM at the first XADD (nothing written yet) and lets
 * the rest of a started script finish, which keeps a batch whole.
 */
export const APPEND_SCRIPT = "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'r', ARGV[i]) end\nreturn #ARGV";
const APPEND_SCRIPT_SHA = createHash('sha1').update(APPEND_SCRIPT).digest('hex');
/**
 * Errors Redis gives before a script (or its first XADD, the same as all the others) ran:
 * nothing was applied. Not-connected errors come from ioredis without sending anything.
 */
const NOT_APPLIED = /^(OOM|NOPERM|READONLY|LOADING|MISCONF|BUSY|NOSCRIPT|MASTERDOWN|CLUSTERDOWN)\b|isn't writeable|enableOfflineQueue/;
/** Scripting itself refused: fall back to MULTI/EXEC (XADD-only ACLs, scripting disabled). */
const SCRIPTING_REFUSED = /^NOPERM.*'(evalsha|eval)'|^ERR unknown command '(evalsha|eval)'/i;

/**
 * How long the sink's connection may answer nothing before it is replaced: several command
 * timeouts, so a server that is only slow (or paused for a moment) keeps the connection and runs
 * what it holds, and the stale state ends with its answer rather than with a reconnect.
 */
function staleSocketMs(commandTimeoutMs: number): number {
  return Math.max(5_000, 5 * commandTimeoutMs);
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

export interface RedisSinkOptions {
  readonly url: string;
  readonly stream?: string;
  readonly writerId: string;
  /** Makes the id of a replacement writer after an ambiguous failure. */
  readonly newWriterId: () => string;
  readonly logger?: Logger | undefined;
  /** Per-command timeout (`audit.commandTimeoutMs`); an outage must turn into a prompt 503. Default 1000 ms. */
  readonly commandTimeoutMs?: number;
  /** When > 0, `WAIT waitReplicas waitTimeoutMs` after each batch. */
  readonly waitReplicas?: number;
  readonly waitTimeoutMs?: number;
  /** Extra ioredis options (Sentinel, TLS, ...); the fail-fast options above always win. */
  readonly redisOptions?: RedisOptions;
  /** Wait this long for the first connection before returning the sink. Default 2000 ms. */
  readonly connectTimeoutMs?: number;
  readonly maxBatch?: number;
  /** Log the chain head every N records when nothing is signed. Default 10000. */
  readonly checkpointEvery?: number;
  /** Signed checkpoints (checkpoint.ts); absent: the chain is unkeyed, as before. */
  readonly checkpoint?: CheckpointOptions | undefined;
  readonly now?: () => Date;
}

export class RedisAuditSink implements AuditSink {
  readonly client: Redis;
  readonly stream: string;
  private head: ChainHead;
  private readonly opts: RedisSinkOptions;
  private readonly logger: Logger | undefined;
  private readonly queue: GroupCommitQueue;
  private readonly checkpointEvery: number;
  private readonly now: () => Date;
  private closed = false;
  private lastCheckpoint = 0;
  private readonly checkpoints: Checkpointer | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private lastErrorLog = 0;
  /** False once the server refused scripting: MULTI/EXEC from then on. */
  private scripting = true;
  /**
   * Set when a batch's outcome was unknown (a timeout, a connection lost mid-reply): batches are
   * refused until a probe on the connection is answered or a new connection is ready.
   */
  private stale = false;
  private probing = false;
  /** Ends of retired writers not yet stored in the current writer's chain (written first in the next batch). */
  private readonly retirements: AuditRecord[] = [];

  private constructor(opts: RedisSinkOptions) {
    this.opts = opts;
    this.logger = opts.logger;
    this.stream = opts.stream ?? DEFAULT_STREAM;
    this.queue = new GroupCommitQueue((batch) => this.commit(batch), { maxBatch: opts.maxBatch ?? 5000 });
    this.checkpointEvery = opts.checkpointEvery ?? 10_000;
    this.now = opts.now ?? (() => new Date());
    this.head = genesisHead(opts.writerId);
    if (opts.checkpoint) {
      const cps = new Checkpointer(opts.checkpoint, this.now, this.logger);
      this.checkpoints = cps;
      // Records written before a quiet spell still get signed within everySeconds.
      this.checkpointTimer = setInterval(() => {
        if (!this.closed && this.client.status === 'ready' && cps.owes(this.head)) this.queue.enqueue(CHECKPOINT_TICK).catch(() => {});
      }, cps.everySeconds * 1000).unref();
    }
    const commandTimeoutMs = opts.commandTimeoutMs ?? DEFAULT_REDIS_COMMAND_TIMEOUT_MS;
    const waiting = (opts.waitReplicas ?? 0) > 0;
    this.client = new Redis(opts.url, {
      ...opts.redisOptions,
      // Fail fast while Redis is away or stalled (redis-options.ts), reconnect forever. A WAIT
      // legitimately answers nothing for up to its own timeout: the socket is not dead then.
      ...failFastRedisOptions(commandTimeoutMs, { socketTimeoutMs: staleSocketMs(commandTimeoutMs) + (waiting ? (opts.waitTimeoutMs ?? 1000) : 0) }),
      // Every batch is one small write that a response waits for: never let Nagle hold it back.
      noDelay: true,
    });
    // A connection that passed its ready check answers again: writing may resume.
    this.client.on('ready', () => {
      this.stale = false;
    });
    this.client.on('error', (e: unknown) => {
      // ioredis re-emits every reconnect failure; one line per 10 s is enough. No URL (password).
      const t = Date.now();
      if (t - this.lastErrorLog > 10_000) {
        this.lastErrorLog = t;
        this.logger?.warn({ err: errInfo(e) }, 'audit redis connection error');
      }
    });
  }

  static async open(opts: RedisSinkOptions): Promise<RedisAuditSink> {
    const sink = new RedisAuditSink(opts);
    await waitUntilReady(sink.client, opts.connectTimeoutMs ?? 2000);
    // Not ready yet is not fatal: writes reject (503) and /readyz says so until Redis is back.
    if (sink.client.status !== 'ready') sink.logger?.warn('audit redis not reachable at start; writes fail closed until it is');
    // AOF off or lazy fsync loses acknowledged records in a crash: say so at start (redis-durability.ts).
    else await warnIfRedisNotDurable(sink.client, sink.logger);
    return sink;
  }

  get writerId(): string {
    return this.head.writer;
  }

  get chainHead(): ChainHead {
    return this.head;
  }

  write(record: AuditRecord): Promise<void> {
    if (this.closed) return Promise.reject(new Error('audit sink is closed'));
    return this.queue.enqueue(record);
  }

  async ready(): Promise<boolean> {
    if (this.closed || this.stale || this.client.status !== 'ready') return false;
    try {
      return (await this.client.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.checkpointTimer);
    await this.queue.idle();
    if (this.head.seq > 0 && this.client.status === 'ready') {
      const head = this.head;
      const time = this.now().toISOString();
      const seal = this.checkpoints ? this.checkpoints.seal(head, randomUUID(), time) : sealRecord(head, randomUUID(), time);
      await this.queue.enqueue(seal).then(
        () => this.checkpoints?.sealed(seal, head),
        (e: unknown) => this.logger?.error({ err: errInfo(e) }, 'audit seal could not be written'),
      );
      await this.queue.idle();
    }
    if (!this.checkpoints) this.logCheckpoint('audit chain closed');
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  private async commit(batch: Pending[]): Promise<void> {
    if (this.stale || this.client.status !== 'ready') {
      // Nothing sent: the head stays where it is, no seq consumed.
      const err = new Error(this.stale ? 'audit redis did not answer in time; refusing until it does' : 'audit redis is not connected');
      for (const p of batch) p.reject(err);
      return;
    }
    let next = this.head;
    const ok: Pending[] = [];
    const lines: string[] = [];
    const ticks: Pending[] = [];
    let sealing = false;
    // Retired writers' ends go first, in the same atomic batch as the records that follow them.
    const notes = this.retirements.slice();
    for (const n of notes) {
      const r = chainLine(next, n);
      lines.push(r.line);
      next = r.next;
    }
    for (const p of batch) {
      if (p.record === CHECKPOINT_TICK) {
        ticks.push(p);
        continue;
      }
      sealing ||= p.record.kind === 'writer-seal';
      try {
        // One canonical pass: the hashed text is the stored text (no parsed copy to re-serialize).
        const r = chainLine(next, p.record);
        lines.push(r.line);
        next = r.next;
        ok.push(p);
      } catch (e) {
        p.reject(new Error('audit record is not serializable', { cause: e }));
      }
    }
    // A due checkpoint joins this same atomic batch (a seal signs the head itself: nothing after it).
    let cp: PendingCheckpoint | undefined;
    if (this.checkpoints && !sealing) {
      cp = this.checkpoints.after(next, ticks.length > 0);
      if (cp) {
        lines.push(cp.line);
        next = cp.next;
      }
    }
    if (ok.length === 0 && !cp) {
      for (const t of ticks) t.resolve();
      return;
    }
    ok.push(...ticks);
    const sent = await this.send(lines);
    let failure = sent.failure;
    const applied = sent.applied;
    if (applied === 'yes') {
      this.head = next;
      this.retirements.splice(0, notes.length);
      // Stored on the primary: the checkpoint is in the chain whatever WAIT says below.
      if (cp) this.checkpoints!.committed(cp);
      if ((this.opts.waitReplicas ?? 0) > 0) {
        try {
          const acked = await this.client.wait(this.opts.waitReplicas!, this.opts.waitTimeoutMs ?? 1000);
          if (acked < this.opts.waitReplicas!) failure = new Error(`audit redis: ${acked} of ${this.opts.waitReplicas} replicas acknowledged`);
        } catch (e) {
          failure = e instanceof Error ? e : new Error(String(e));
        }
      }
    } else if (applied === 'unknown') {
      this.retire(next);
    }
    if (failure) {
      this.logger?.error({ err: errInfo(failure), audit: { writer: this.head.writer, applied } }, 'audit redis write failed; rejecting the batch');
      for (const p of ok) p.reject(failure);
      return;
    }
    for (const p of ok) p.resolve();
    if (!this.checkpoints && this.head.seq - this.lastCheckpoint >= this.checkpointEvery) this.logCheckpoint('audit chain head');
  }

  /** Sends one batch; says whether Redis applied it ('unknown' when it may or may not have). */
  private async send(lines: string[]): Promise<{ applied: Applied; failure?: Error }> {
    if (this.scripting) {
      const r = await this.sendScript(lines);
      if (!r.failure || !SCRIPTING_REFUSED.test(r.failure.message)) return r;
      // Refused before anything ran: this deployment does not allow scripts. Same batch, same seqs.
      this.scripting = false;
      this.logger?.warn({ err: errInfo(r.failure) }, 'audit redis: scripting refused; appending with MULTI/EXEC (more gateway CPU per record)');
    }
    return this.sendMulti(lines);
  }

  private async sendScript(lines: string[]): Promise<{ applied: Applied; failure?: Error }> {
    try {
      let n: unknown;
      try {
        n = await this.client.evalsha(APPEND_SCRIPT_SHA, 1, this.stream, ...lines);
      } catch (e) {
        // Script cache empty (restart, SCRIPT FLUSH): nothing ran; EVAL loads and runs it.
        if (!(e instanceof Error) || !/^NOSCRIPT/.test(e.message)) throw e;
        n = await this.client.eval(APPEND_SCRIPT, 1, this.stream, ...lines);
      }
      if (n === lines.length) return { applied: 'yes' };
      return { applied: 'unknown', failure: new Error(`audit redis: append script stored ${String(n)} of ${lines.length}`) };
    } catch (e) {
      const failure = asError(e);
      return { applied: NOT_APPLIED.test(failure.message) ? 'no' : 'unknown', failure };
    }
  }

  private async sendMulti(lines: string[]): Promise<{ applied: Applied; failure?: Error }> {
    const multi = this.client.multi();
    for (const line of lines) multi.xadd(this.stream, '*', 'r', line);
    try {
      const results = await multi.exec();
      if (results === null) return { applied: 'no', failure: new Error('audit redis transaction aborted') };
      const bad = results.find(([err]) => err);
      return bad ? { applied: 'unknown', failure: asError(bad[0]) } : { applied: 'yes' };
    } catch (e) {
      const failure = asError(e);
      // EXECABORT: Redis discarded the whole transaction. Not connected: never sent.
      return { applied: /EXECABORT|isn't writeable|enableOfflineQueue/i.test(failure.message) ? 'no' : 'unknown', failure };
    }
  }

  /**
   * After an ambiguous failure: leave the old chain as it is and continue under a new writer id,
   * once the connection answers again (the batch may still be waiting in it).
   */
  private retire(pending: ChainHead): void {
    const old = this.head;
    this.head = genesisHead(this.opts.newWriterId());
    // Any notes still unconfirmed stay queued: they may have been in the ambiguous batch or not.
    this.retirements.push(retirementRecord(old, pending, randomUUID(), this.now().toISOString()));
    this.lastCheckpoint = 0;
    this.checkpoints?.reset();
    if (!this.closed) {
      this.stale = true;
      void this.probe();
    }
    this.logger?.warn(
      { audit: { retiredWriter: old.writer, lastConfirmedSeq: old.seq, lastConfirmedHash: old.hash, writer: this.head.writer } },
      'audit redis batch outcome unknown; retired the writer chain and started a new one',
    );
  }

  /**
   * PINGs the stale connection until something answers. Each PING waits at most a command timeout;
   * one answered (even with an error reply) comes after everything sent before it. Not connected:
   * the next connection's 'ready' ends the stale state instead.
   */
  private async probe(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      while (this.stale && !this.closed && this.client.status === 'ready') {
        try {
          await this.client.ping();
          this.stale = false;
        } catch (e) {
          if (e instanceof ReplyError) this.stale = false;
          // Refused without waiting (not writable): do not spin before the status says so.
          else await new Promise((r) => setTimeout(r, 20));
        }
      }
    } finally {
      this.probing = false;
    }
  }

  private logCheckpoint(msg: string): void {
    this.lastCheckpoint = this.head.seq;
    if (this.head.seq > 0) this.logger?.info({ audit: { writer: this.head.writer, seq: this.head.seq, hash: this.head.hash } }, msg);
  }
}
