/**
 * The alert outbox: alerts are persisted before delivery is attempted, so an alert raised just
 * before a crash or restart is still delivered afterwards. File (embedded) or Redis (replicas).
 */
import { randomUUID } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { JsonLinesLog, serialQueue } from './jsonl.js';
import type { SessionActor } from './types.js';

export type AlertTarget = 'webhook' | 'redis';

/** What the privacy office receives. Ids and the attested reason; no clinical content. */
export interface AlertPayload {
  /** `anomaly`: an anomaly rule fired (src/monitor); `patient` is '' when it concerns no single patient. */
  readonly type: 'break-glass-start' | 'break-glass-limit' | 'anomaly' | 'access-request' | 'grant-misuse';
  readonly alertId: string;
  /** ISO 8601, when the event happened. */
  readonly time: string;
  readonly actor: SessionActor;
  readonly patient: string;
  readonly session?: string | undefined;
  readonly reason?: string | undefined;
  readonly reasonCode?: string | undefined;
  readonly startedAt?: string | undefined;
  readonly expiresAt?: string | undefined;
  readonly reviewUrl?: string | undefined;
  /** break-glass-limit: sessions the actor started in the last 24 h. */
  readonly sessionsInLast24h?: number | undefined;
  /** anomaly: which rule fired and why (counts and ids only, never names). */
  readonly anomaly?: Readonly<Record<string, unknown>> | undefined;
  /**
   * access-request: a request was made (id, data set, purpose, patients count, minutes, decide URL);
   * grant-misuse: a grant was used outside its scope or by someone else (id, why). Ids and codes only.
   */
  readonly access?: Readonly<Record<string, unknown>> | undefined;
}

export interface OutboxItem {
  readonly id: string;
  readonly payload: AlertPayload;
  /** Targets not yet delivered. */
  readonly targets: readonly AlertTarget[];
  readonly attempts: number;
  /** Epoch ms of the next attempt (real time: retry pacing is not policy time). */
  readonly nextAt: number;
}

export interface Outbox {
  add(item: OutboxItem): Promise<void>;
  pending(): Promise<OutboxItem[]>;
  /** Replaces the item (remaining targets, attempts, next attempt). */
  update(item: OutboxItem): Promise<void>;
  done(id: string): Promise<void>;
  /** A lease for one delivery attempt, so replicas sharing the outbox do not all send it. */
  claim(id: string, ms: number): Promise<boolean>;
  close(): Promise<void>;
}

type Event = { readonly t: 'put'; readonly item: OutboxItem } | { readonly t: 'done'; readonly id: string };

export class FileOutbox implements Outbox {
  private readonly items = new Map<string, OutboxItem>();
  private readonly serial = serialQueue();
  private constructor(private readonly log: JsonLinesLog) {}

  /** `dir/outbox.jsonl`; compacted at open to the items still pending. */
  static async open(dir: string, logger?: Logger): Promise<FileOutbox> {
    const path = join(dir, 'outbox.jsonl');
    const first = await JsonLinesLog.open(path, logger);
    const pending = new Map<string, OutboxItem>();
    for (const e of (await first.readNew()) as Event[]) {
      if (e?.t === 'put' && typeof e.item?.id === 'string') pending.set(e.item.id, e.item);
      else if (e?.t === 'done') pending.delete(e.id);
    }
    // Rewrite (write + rename: atomic) so the file does not grow with every retry forever.
    const text = [...pending.values()].map((item) => `${JSON.stringify({ t: 'put', item } satisfies Event)}\n`).join('');
    const current = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw e;
    });
    if (text !== current) {
      const tmp = `${path}.${randomUUID()}.tmp`;
      await writeFile(tmp, text, { mode: 0o600, flush: true });
      await rename(tmp, path);
    }
    const box = new FileOutbox(await JsonLinesLog.open(path, logger));
    for (const e of (await box.log.readNew()) as Event[]) if (e?.t === 'put') box.items.set(e.item.id, e.item);
    return box;
  }


  add(item: OutboxItem): Promise<void> {
    return this.update(item);
  }

  async pending(): Promise<OutboxItem[]> {
    return [...this.items.values()];
  }

  update(item: OutboxItem): Promise<void> {
    return this.serial(async () => {
      await this.log.append({ t: 'put', item } satisfies Event);
      this.items.set(item.id, item);
    });
  }

  done(id: string): Promise<void> {
    return this.serial(async () => {
      await this.log.append({ t: 'done', id } satisfies Event);
      this.items.delete(id);
    });
  }

  async claim(): Promise<boolean> {
    return true; // one process owns the embedded outbox
  }

  async close(): Promise<void> {
    // Once every operation already queued has run.
    await this.serial(async () => {});
  }
}

export class RedisOutbox implements Outbox {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'phi-gateway:bg:',
  ) {}

  async add(item: OutboxItem): Promise<void> {
    await this.redis.hset(`${this.prefix}outbox`, item.id, JSON.stringify(item));
  }

  async pending(): Promise<OutboxItem[]> {
    const all = await this.redis.hvals(`${this.prefix}outbox`);
    return all.map((v) => JSON.parse(v) as OutboxItem);
  }

  async update(item: OutboxItem): Promise<void> {
    // Only while still pending: another replica may have finished it meanwhile.
    if (await this.redis.hexists(`${this.prefix}outbox`, item.id)) await this.add(item);
  }

  async done(id: string): Promise<void> {
    await this.redis.hdel(`${this.prefix}outbox`, id);
  }

  async claim(id: string, ms: number): Promise<boolean> {
    return (await this.redis.set(`${this.prefix}lease:${id}`, '1', 'PX', ms, 'NX')) === 'OK';
  }

  async close(): Promise<void> {}
}
