/**
 * The audit trail's entry points: `createAuditSink` (what the request pipeline writes to) and
 * `openAuditSource` (what verify, export and tests read from).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AuditConfig } from '../config/types.js';
import {
  type CheckpointOptions,
  createSigner,
  DEFAULT_CHECKPOINT_RECORDS,
  DEFAULT_CHECKPOINT_SECONDS,
  loadSigningKey,
  NO_CHECKPOINT_KEY_WARNING,
} from './checkpoint.js';
import { FileAuditSink } from './file-sink.js';
import { newSidecarName } from './files.js';
import { DEFAULT_STREAM, type ReadItem, readFileRecords, readRedisRecords } from './read.js';
import type { AuditSink } from './record.js';
import { RedisAuditSink, type RedisSinkOptions } from './redis-sink.js';

export type { ReadItem } from './read.js';
export type { AuditRecord, AuditSink, ChainedRecord } from './record.js';

/**
 * A fresh writer id: hostname and pid for humans, 64 random bits so two processes (or a restart
 * reusing a pid) never share a chain. Only `[A-Za-z0-9._-]`.
 */
export function newWriterId(): string {
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 40) || 'host';
  return `${host}-${process.pid}-${randomBytes(8).toString('hex')}`;
}

export interface CreateSinkOptions {
  readonly writerId?: string;
  readonly logger?: Logger;
  /** Redis-only tuning (WAIT, Sentinel/TLS options, timeouts). */
  readonly redis?: Partial<Omit<RedisSinkOptions, 'url' | 'stream' | 'writerId' | 'logger'>>;
  /** Warn (once, at start) when no signing key is configured: what `serve` does. */
  readonly warnUnsigned?: boolean;
  /**
   * For a sink configured by hand (a CLI writing into a trail named by --source): when `cfg` has no
   * checkpoint section, PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE from here signs its chain.
   */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * A command-line writer: on a file sink it appends to a file of its own (files.ts) instead of
   * the running gateway's. Ignored for Redis (a stream takes any number of writers).
   */
  readonly cli?: boolean;
}

/** The signing key of `audit.checkpoint` (or of the environment), loaded. */
function checkpointOptions(cfg: AuditConfig, env: NodeJS.ProcessEnv | undefined): CheckpointOptions | undefined {
  const envKey = env?.PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE?.trim();
  const c = cfg.checkpoint ?? (envKey ? { keyFile: envKey, everyRecords: DEFAULT_CHECKPOINT_RECORDS, everySeconds: DEFAULT_CHECKPOINT_SECONDS } : undefined);
  if (!c) return undefined;
  return { signer: createSigner(loadSigningKey(c.keyFile)), everyRecords: c.everyRecords, everySeconds: c.everySeconds };
}

export async function createAuditSink(cfg: AuditConfig, opts: CreateSinkOptions = {}): Promise<AuditSink & { readonly writerId: string }> {
  const writerId = opts.writerId ?? newWriterId();
  const checkpoint = checkpointOptions(cfg, opts.env);
  if (!checkpoint && opts.warnUnsigned) opts.logger?.warn(NO_CHECKPOINT_KEY_WARNING);
  if (cfg.sink === 'file') {
    return FileAuditSink.open({
      dir: cfg.path,
      rotateBytes: cfg.rotateBytes,
      groupCommitMs: cfg.groupCommitMs,
      writerId,
      logger: opts.logger,
      checkpoint,
      sidecar: opts.cli ? newSidecarName() : undefined,
    });
  }
  if (cfg.sink === 'redis') {
    return RedisAuditSink.open({
      newWriterId,
      commandTimeoutMs: cfg.commandTimeoutMs,
      ...opts.redis,
      url: cfg.url,
      stream: cfg.stream || DEFAULT_STREAM,
      writerId,
      logger: opts.logger,
      checkpoint,
    });
  }
  throw new Error('unknown audit sink');
}

/** A readable audit store: records in stored order, and a close for its connection. */
export interface AuditSource extends AsyncIterable<ReadItem> {
  /** e.g. `file:/var/lib/phi-gateway/audit` or `redis://host:6379 stream phi-gateway:audit` (no password). */
  readonly description: string;
  close(): Promise<void>;
}

/**
 * Opens a source from `file:DIR`, a bare directory path, `redis://...` / `rediss://...` (stream from
 * `?stream=NAME`, default `phi-gateway:audit`), or an AuditConfig.
 */
/** Where a source names: `file:DIR`, a bare directory, `redis://...?stream=NAME`, or an AuditConfig. */
export type AuditLocation = { readonly kind: 'file'; readonly dir: string } | { readonly kind: 'redis'; readonly url: string; readonly stream: string };

export function auditLocation(source: string | AuditConfig): AuditLocation {
  if (typeof source !== 'string') {
    return source.sink === 'file' ? { kind: 'file', dir: source.path } : { kind: 'redis', url: source.url, stream: source.stream || DEFAULT_STREAM };
  }
  if (/^rediss?:\/\//i.test(source)) {
    const u = new URL(source);
    const stream = u.searchParams.get('stream') || DEFAULT_STREAM;
    u.searchParams.delete('stream');
    return { kind: 'redis', url: u.toString(), stream };
  }
  return { kind: 'file', dir: source.startsWith('file:') ? source.slice(5) : source };
}

export function openAuditSource(source: string | AuditConfig): AuditSource {
  const spec = auditLocation(source);
  if (spec.kind === 'file') {
    const dir = spec.dir;
    return {
      description: `file:${dir}`,
      [Symbol.asyncIterator]: () => readFileRecords(dir),
      close: async () => {},
    };
  }
  const { url, stream } = spec;
  const u = new URL(url);
  let client: Redis | undefined;
  return {
    description: `${u.protocol}//${u.host}${u.pathname} stream ${stream}`,
    [Symbol.asyncIterator]: () => {
      if (!client) {
        client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1 });
        // Failures surface as rejected XRANGE calls; the event would only duplicate them.
        client.on('error', () => {});
      }
      return readRedisRecords(client, stream);
    },
    close: async () => {
      if (client) {
        try {
          await client.quit();
        } catch {
          client.disconnect();
        }
      }
    },
  };
}
