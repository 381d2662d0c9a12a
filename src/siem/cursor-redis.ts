/**
 * A Redis sink's trail read through a consumer group: one group per target on the audit stream,
 * `phi-gateway-siem:<target>`, created at the stream's start (`0`) the first time, so a new target
 * receives the whole trail. Each round reads, in this order:
 *   1. this consumer's own pending entries (read before, never acknowledged: a crash between
 *      delivery and XACK, or a delivery that failed): delivered again, so that crash gives a
 *      duplicate, never a loss;
 *   2. entries pending for another consumer of the group that has been silent for `claimIdleMs`
 *      (XAUTOCLAIM: a replica that went away for good);
 *   3. new entries (XREADGROUP `>`).
 * and acknowledges them (XACK) once delivered. The group's position and pending list live in Redis,
 * so there is no cursor file and no lock: several consumers in one group (gateway replicas, or
 * `audit ship` beside them) share the work, each entry handed to one of them.
 */
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errInfo } from '../audit/file-sink.js';
import type { ChainedRecord } from '../audit/record.js';
import { DEFAULT_REDIS_CONNECT_WAIT_MS, failFastRedisOptions, waitUntilReady } from '../audit/redis-options.js';
import type { ReadBatch, TrailSource } from './cursor.js';

/** Entries pending this long on a silent consumer are taken over (default 5 min). */
export const DEFAULT_CLAIM_IDLE_MS = 5 * 60_000;

export function groupName(target: string): string {
  return `phi-gateway-siem:${target}`;
}

/** This process's consumer name: the host's (a replica's pod name), `-ship` for `audit ship`. */
export function defaultConsumer(role: 'serve' | 'ship' = 'serve'): string {
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 60) || 'host';
  return role === 'ship' ? `${host}-ship` : host;
}

export interface RedisSourceOptions {
  readonly url: string;
  readonly stream: string;
  readonly target: string;
  readonly consumer: string;
  readonly logger?: Logger | undefined;
  readonly commandTimeoutMs?: number | undefined;
  readonly claimIdleMs?: number | undefined;
  /** A client to use instead of one of its own (tests); not closed by close(). */
  readonly client?: Redis | undefined;
}

type Entry = [id: string, fields: string[] | null];

export class RedisTrailSource implements TrailSource {
  readonly description: string;
  private readonly client: Redis;
  private readonly own: boolean;
  private readonly group: string;
  private groupReady = false;
  private claimCursor = '0-0';
  private lastErrorLog = 0;

  constructor(private readonly opts: RedisSourceOptions) {
    this.group = groupName(opts.target);
    const u = new URL(opts.url);
    this.description = `${u.protocol}//${u.host}${u.pathname} stream ${opts.stream} group ${this.group}`;
    this.own = opts.client === undefined;
    this.client = opts.client ?? new Redis(opts.url, failFastRedisOptions(opts.commandTimeoutMs ?? 5000));
    if (this.own) {
      this.client.on('error', (e: unknown) => {
        // Reconnect failures repeat; one line per minute. Never the URL (password).
        const t = Date.now();
        if (t - this.lastErrorLog > 60_000) {
          this.lastErrorLog = t;
          opts.logger?.warn({ err: errInfo(e), siem: { target: opts.target } }, 'SIEM forwarder: redis connection error');
        }
      });
    }
  }

  /** A source whose own connection had its first chance to come up (not ready: reads fail and are retried). */
  static async open(opts: RedisSourceOptions): Promise<RedisTrailSource> {
    const source = new RedisTrailSource(opts);
    await waitUntilReady(source.client, DEFAULT_REDIS_CONNECT_WAIT_MS, { untilRefused: true });
    return source;
  }

  private async ensureGroup(): Promise<void> {
    if (this.groupReady) return;
    try {
      await this.client.xgroup('CREATE', this.opts.stream, this.group, '0', 'MKSTREAM');
    } catch (e) {
      if (!/^BUSYGROUP/.test((e as Error).message)) throw e;
    }
    this.groupReady = true;
  }

  async read(max: number): Promise<ReadBatch> {
    await this.ensureGroup();
    const { stream, consumer } = this.opts;
    let entries = await this.readGroup('0', max);
    if (entries.length === 0) {
      const claimed = (await this.client.call('XAUTOCLAIM', stream, this.group, consumer, String(this.opts.claimIdleMs ?? DEFAULT_CLAIM_IDLE_MS), this.claimCursor, 'COUNT', String(max))) as [string, Entry[], ...unknown[]];
      this.claimCursor = claimed[0];
      entries = claimed[1] ?? [];
    }
    if (entries.length === 0) entries = await this.readGroup('>', max);
    const records: ChainedRecord[] = [];
    let skipped = 0;
    for (const [id, fields] of entries) {
      let value: string | undefined;
      for (let i = 0; fields && i + 1 < fields.length; i += 2) if (fields[i] === 'r') value = fields[i + 1];
      const rec = value === undefined ? undefined : parse(value);
      if (rec) records.push(rec);
      else {
        skipped++;
        this.opts.logger?.warn({ siem: { target: this.opts.target, position: `${stream}@${id}` } }, 'SIEM forwarder: unparsable audit entry skipped (run audit verify)');
      }
    }
    const ids = entries.map(([id]) => id);
    return {
      records,
      skipped,
      commit: async () => {
        if (ids.length > 0) await this.client.xack(stream, this.group, ...ids);
      },
    };
  }

  private async readGroup(from: '0' | '>', max: number): Promise<Entry[]> {
    const reply = (await this.client.xreadgroup('GROUP', this.group, this.opts.consumer, 'COUNT', max, 'STREAMS', this.opts.stream, from)) as Array<[string, Entry[]]> | null;
    return reply?.[0]?.[1] ?? [];
  }

  /** Entries not yet read by the group plus those read and not acknowledged (XINFO GROUPS). */
  async lag(): Promise<number> {
    await this.ensureGroup();
    const groups = (await this.client.xinfo('GROUPS', this.opts.stream)) as unknown[][];
    for (const g of groups) {
      const info = new Map<string, unknown>();
      for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
      if (info.get('name') !== this.group) continue;
      const pending = Number(info.get('pending') ?? 0);
      let lag = info.get('lag');
      if (lag === null || lag === undefined) {
        // Redis cannot tell (before 7.0, or after deletions): count from the entries the group has read.
        const read = info.get('entries-read');
        lag = typeof read === 'number' ? Math.max(0, (await this.client.xlen(this.opts.stream)) - read) : 0;
      }
      return pending + Number(lag);
    }
    return 0;
  }

  async close(): Promise<void> {
    if (!this.own) return;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

function parse(text: string): ChainedRecord | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as ChainedRecord) : undefined;
  } catch {
    return undefined;
  }
}
