/**
 * The SIEM forwarder: per target, a loop on its own timers that reads the committed trail after
 * the target's cursor (cursor-file.ts, cursor-redis.ts), keeps the records the target's filter
 * wants, hands them to the target, and only then moves the cursor; records the filter leaves out
 * move it too. A delivery that fails keeps the cursor where it was and is retried after a backoff
 * (baseDelayMs doubled per consecutive failure up to maxDelayMs, with jitter), the same batch
 * again: nothing is dropped. Nothing here is on a request's path: a receiver that is down only
 * makes the lag grow.
 *
 * At least once: a record reaches a target again only when a process stopped between the
 * delivery and the cursor's move (a crash, or a stop that outwaited its bound), or when a
 * delivery failed after part of its batch got through. Every message carries the record id, by
 * which a receiver tells such a repeat apart.
 *
 * status(): per target, records delivered and failed rounds since start, the lag (records after
 * the cursor, measured each round) and the age of the oldest record not yet delivered.
 */
import type { Logger } from 'pino';
import { errInfo } from '../audit/file-sink.js';
import type { ChainedRecord } from '../audit/record.js';
import type { AuditConfig } from '../config/types.js';
import { CursorLockedError, defaultStateDir, type ReadBatch, type TrailSource } from './cursor.js';
import { FileTrailSource } from './cursor-file.js';
import { defaultConsumer, RedisTrailSource } from './cursor-redis.js';
import { matchesFilter } from './filter.js';
import type { SiemConfig, Target, TargetConfig, TargetStatus } from './types.js';

export const DEFAULT_BATCH_SIZE = 200;
export const DEFAULT_BASE_DELAY_MS = 1000;
export const DEFAULT_MAX_DELAY_MS = 5 * 60_000;
export const DEFAULT_POLL_MS = 1000;
/** How long stop() waits for a batch in flight before leaving it to be delivered again next time. */
export const DEFAULT_STOP_WAIT_MS = 5000;

/** TargetStatus with what /readyz adds: whether the last round failed, and how many in a row. */
export interface SiemTargetStatus extends TargetStatus {
  readonly failing: boolean;
  readonly consecutiveFailures: number;
}

/**
 * The wait before retry number `attempt` (1 = after the first failure): base doubled per attempt,
 * capped at max, then between half and all of it (jitter, so targets and replicas that failed
 * together do not retry together).
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const full = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
  return Math.round(full / 2 + (random() * full) / 2);
}

export interface ForwarderOptions {
  readonly siem: SiemConfig;
  /** Where the trail is: a file sink's directory or a Redis stream. */
  readonly audit: AuditConfig;
  readonly logger: Logger;
  /** Builds a target's client (src/siem/targets.ts createTarget). */
  readonly createTarget: (config: TargetConfig) => Target;
  /** Redis consumer name (default: the host name; `audit ship` adds `-ship`). */
  readonly consumer?: string | undefined;
  readonly now?: (() => number) | undefined;
  readonly random?: (() => number) | undefined;
  /** Opens the trail source of a target (tests); default from `audit`. */
  readonly openSource?: ((target: TargetConfig) => Promise<TrailSource>) | undefined;
}

/** Result of one round. */
type Step = 'idle' | 'more' | 'failed';

class TargetRunner {
  private source: TrailSource | undefined;
  private held: ReadBatch | undefined;
  /** Records of the held batch handed to the target, once delivered (undefined: not yet): only its commit is owed. */
  private heldDelivered: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private delivered = 0;
  private failures = 0;
  private consecutive = 0;
  private lag = 0;
  private oldestMs: number | undefined;
  private lastError: string | undefined;
  private lastDeliveredAt: string | undefined;
  private lockedLogged = false;

  constructor(
    readonly config: TargetConfig,
    private readonly target: Target,
    private readonly o: Required<Pick<ForwarderOptions, 'logger'>> & {
      readonly batchSize: number;
      readonly baseDelayMs: number;
      readonly maxDelayMs: number;
      readonly pollMs: number;
      readonly now: () => number;
      readonly random: () => number;
      readonly openSource: (t: TargetConfig) => Promise<TrailSource>;
    },
  ) {}

  start(): void {
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.step().then(
        (r) => {
          this.running = undefined;
          this.schedule(r === 'more' ? 0 : r === 'idle' ? this.o.pollMs : backoffDelay(this.consecutive, this.o.baseDelayMs, this.o.maxDelayMs, this.o.random));
        },
        () => {
          this.running = undefined;
          this.schedule(this.o.maxDelayMs);
        },
      );
    }, ms);
    this.timer.unref();
  }

  /** One round: open the source if needed, read (or keep) a batch, deliver what the filter wants, move the cursor. */
  async step(): Promise<Step> {
    if (!this.source) {
      try {
        this.source = await this.o.openSource(this.config);
        this.lockedLogged = false;
      } catch (e) {
        if (e instanceof CursorLockedError) {
          // Another process delivers this target meanwhile: nothing failed, nothing is lost.
          this.lastError = 'cursor-locked';
          if (!this.lockedLogged) this.o.logger.warn({ siem: { target: this.config.name } }, 'SIEM target cursor held by another process (audit ship?); retrying');
          this.lockedLogged = true;
          return 'failed';
        }
        return this.fail('trail', e);
      }
    }
    const source = this.source;
    if (!this.held) {
      try {
        this.held = await source.read(this.o.batchSize);
        this.heldDelivered = undefined;
      } catch (e) {
        return this.fail('trail', e);
      }
    }
    const batch = this.held;
    const size = batch.records.length + batch.skipped;
    try {
      this.lag = Math.max(await source.lag(), size);
    } catch {
      // The lag is a measurement; the last one stands.
    }
    const first: ChainedRecord | undefined = batch.records[0];
    const firstMs = first ? Date.parse(first.time) : Number.NaN;
    this.oldestMs = size === 0 ? undefined : Number.isFinite(firstMs) ? firstMs : this.oldestMs;
    if (size === 0) {
      this.held = undefined;
      this.lag = 0;
      this.consecutive = 0;
      return 'idle';
    }
    if (this.heldDelivered === undefined) {
      const wanted = batch.records.filter((r) => matchesFilter(r, this.config.filter));
      if (wanted.length > 0) {
        try {
          await this.target.deliver(wanted);
        } catch (e) {
          return this.fail('deliver', e);
        }
      }
      this.heldDelivered = wanted.length;
    }
    try {
      await batch.commit();
    } catch (e) {
      // Delivered, not yet recorded as such: the commit alone is retried (a crash now: a duplicate).
      return this.fail('cursor', e);
    }
    const n = this.heldDelivered;
    this.delivered += n;
    if (n > 0) this.lastDeliveredAt = new Date(this.o.now()).toISOString();
    this.held = undefined;
    this.heldDelivered = undefined;
    this.consecutive = 0;
    this.lag = Math.max(0, this.lag - size);
    if (this.lag === 0) this.oldestMs = undefined;
    // Idle only once a read finds nothing: a short batch may be the end of the pending entries, not of the trail.
    return 'more';
  }

  private fail(stage: 'trail' | 'deliver' | 'cursor', e: unknown): Step {
    this.failures++;
    this.consecutive++;
    const code = errorCode(e);
    this.lastError = stage === 'deliver' ? code : `${stage}: ${code}`;
    // Fixed words only: a receiver's or Redis's message could echo a URL or a credential.
    const level = this.consecutive === 1 || this.consecutive % 10 === 0 ? 'warn' : 'debug';
    this.o.logger[level]({ siem: { target: this.config.name, stage, code, consecutiveFailures: this.consecutive } }, 'SIEM delivery round failed; retrying with backoff');
    return 'failed';
  }

  status(): SiemTargetStatus {
    const age = this.oldestMs === undefined ? 0 : Math.max(0, (this.o.now() - this.oldestMs) / 1000);
    return {
      name: this.config.name,
      type: this.config.type,
      delivered: this.delivered,
      failures: this.failures,
      lag: this.lag,
      oldestUndeliveredAgeSec: age,
      lastError: this.lastError,
      lastDeliveredAt: this.lastDeliveredAt,
      failing: this.consecutive > 0 || this.lastError === 'cursor-locked',
      consecutiveFailures: this.consecutive,
    };
  }

  /** Rounds until caught up or a failure (`audit ship --once`). */
  async drain(): Promise<boolean> {
    for (;;) {
      const r = await this.step();
      if (r === 'idle') return true;
      if (r === 'failed') return false;
    }
  }

  /** Stops the timers, lets a round in flight finish (at most `waitMs`), closes the source and the target. */
  async stop(waitMs: number): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.running) {
      let t: NodeJS.Timeout | undefined;
      const finished = await Promise.race([this.running.then(() => true), new Promise<boolean>((r) => (t = setTimeout(() => r(false), waitMs)))]);
      clearTimeout(t);
      if (!finished) this.o.logger.warn({ siem: { target: this.config.name } }, 'SIEM batch in flight outlived the stop; it is delivered again at the next start');
    }
    await Promise.allSettled([this.source?.close(), this.target.close()]);
    this.source = undefined;
  }
}

function errorCode(e: unknown): string {
  if (e instanceof CursorLockedError) return e.code;
  const code = (e as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && /^[A-Za-z0-9_.:-]{1,64}$/.test(code)) return code;
  // Redis replies: their first word (NOPERM, BUSYGROUP...), never the rest.
  const m = /^([A-Z][A-Z_]{2,30})\b/.exec(errInfo(e).message);
  return m ? m[1] : 'error';
}

export class SiemForwarder {
  private readonly runners: TargetRunner[];
  private started = false;

  constructor(opts: ForwarderOptions) {
    const siem = opts.siem;
    const now = opts.now ?? Date.now;
    const openSource = opts.openSource ?? ((t: TargetConfig) => openTrailSource(opts.audit, siem, t, opts.logger, opts.consumer));
    const settings = {
      logger: opts.logger,
      batchSize: siem.batchSize ?? DEFAULT_BATCH_SIZE,
      baseDelayMs: siem.baseDelayMs ?? DEFAULT_BASE_DELAY_MS,
      maxDelayMs: siem.maxDelayMs ?? DEFAULT_MAX_DELAY_MS,
      pollMs: siem.pollMs ?? DEFAULT_POLL_MS,
      now,
      random: opts.random ?? Math.random,
      openSource,
    };
    this.runners = siem.targets.map((t) => new TargetRunner(t, opts.createTarget(t), settings));
  }

  /** Starts every target's loop (idempotent). */
  start(): void {
    if (this.started) return;
    this.started = true;
    for (const r of this.runners) r.start();
  }

  status(): SiemTargetStatus[] {
    return this.runners.map((r) => r.status());
  }

  /** Every target until caught up or failing, once each; true when all caught up. */
  async drain(): Promise<boolean> {
    const results = await Promise.all(this.runners.map((r) => r.drain()));
    return results.every(Boolean);
  }

  async stop(waitMs: number = DEFAULT_STOP_WAIT_MS): Promise<void> {
    await Promise.all(this.runners.map((r) => r.stop(waitMs)));
  }
}

/** The trail source of one target: the file sink's directory with a cursor file, or the Redis stream with a consumer group. */
export async function openTrailSource(audit: AuditConfig, siem: SiemConfig, target: TargetConfig, logger: Logger, consumer?: string): Promise<TrailSource> {
  if (audit.sink === 'file') {
    return FileTrailSource.open({ dir: audit.path, stateDir: siem.stateDir ?? defaultStateDir(audit.path), target: target.name, logger });
  }
  return RedisTrailSource.open({
    url: audit.url,
    stream: audit.stream,
    target: target.name,
    consumer: consumer ?? defaultConsumer('serve'),
    logger,
    commandTimeoutMs: Math.max(audit.commandTimeoutMs ?? 0, 5000),
  });
}
