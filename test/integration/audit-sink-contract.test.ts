/**
 * The contract every audit sink keeps, run against the file sink and the Redis sink (real
 * redis-server): ordering, concurrency, durability, chain integrity, close flushes, failures reject
 * without leaving a hole in the chain.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppendHandle, FileAuditSink, type FileIo, nodeFileIo } from '../../src/audit/file-sink.js';
import { createAuditSink, openAuditSource } from '../../src/audit/index.js';
import type { ReadItem } from '../../src/audit/read.js';
import type { AuditSink, ChainedRecord } from '../../src/audit/record.js';
import { verifyChains } from '../../src/audit/verify.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

interface Harness {
  /** A sink on the shared store; `faulty` sinks fail every write while `fault.on` is set. */
  open(writerId: string): Promise<AuditSink & { writerId: string }>;
  /** Makes writes fail (disk error / Redis down) and heals it again. */
  breakStore(): Promise<void>;
  healStore(): Promise<void>;
  read(): Promise<ReadItem[]>;
  /** Number of stored records (all writers). */
  reset(): Promise<void>;
}

async function collect(source: AsyncIterable<ReadItem>): Promise<ReadItem[]> {
  const out: ReadItem[] = [];
  for await (const i of source) out.push(i);
  return out;
}

function recordsOf(items: ReadItem[]): ChainedRecord[] {
  return items.flatMap((i) => ('record' in i ? [i.record] : []));
}

function contract(name: string, makeHarness: () => Promise<Harness | undefined>): void {
  let h: Harness | undefined;
  let n = 0;
  const wid = (): string => `${name}-w${++n}`;
  beforeAll(async () => {
    h = await makeHarness();
  });

  describe(name, () => {
    it('keeps the order of sequential writes and numbers them from 1', async () => {
      await h!.reset();
      const sink = await h!.open(wid());
      for (let i = 0; i < 20; i++) await sink.write(sampleRecord(i));
      const recs = recordsOf(await h!.read()).filter((r) => r.chain.writer === sink.writerId);
      expect(recs.map((r) => r.id)).toEqual(Array.from({ length: 20 }, (_, i) => `req-${i}`));
      expect(recs.map((r) => r.chain.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      await sink.close();
    });

    it('stores 1000 parallel writes exactly once each, in one verifiable chain', async () => {
      await h!.reset();
      const sink = await h!.open(wid());
      await Promise.all(Array.from({ length: 1000 }, (_, i) => sink.write(sampleRecord(i))));
      const recs = recordsOf(await h!.read());
      expect(recs).toHaveLength(1000);
      expect(new Set(recs.map((r) => r.id)).size).toBe(1000);
      expect(recs.map((r) => r.chain.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
      const report = await verifyChains(await h!.read());
      expect(report.ok).toBe(true);
      await sink.close();
    });

    it('a resolved write is readable by a fresh reader at once', async () => {
      await h!.reset();
      const sink = await h!.open(wid());
      for (let i = 0; i < 5; i++) {
        await sink.write(sampleRecord(i, { id: `durable-${i}` }));
        const ids = recordsOf(await h!.read()).map((r) => r.id);
        expect(ids).toContain(`durable-${i}`);
      }
      await sink.close();
    });

    it('interleaved writers on one store verify, and close() seals each chain', async () => {
      await h!.reset();
      const a = await h!.open(wid());
      const b = await h!.open(wid());
      await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).write(sampleRecord(i))));
      await Promise.all([a.close(), b.close()]);
      const report = await verifyChains(await h!.read());
      expect(report).toMatchObject({ ok: true, writers: 2, records: 202 });
      expect(report.warnings).toEqual([]);
    });

    it('close() flushes writes still queued, then seals', async () => {
      await h!.reset();
      const sink = await h!.open(wid());
      const writes = Array.from({ length: 100 }, (_, i) => sink.write(sampleRecord(i)));
      const closing = sink.close();
      await expect(Promise.all(writes)).resolves.toBeDefined();
      await closing;
      const recs = recordsOf(await h!.read());
      expect(recs).toHaveLength(101);
      expect(recs[100]).toMatchObject({ kind: 'writer-seal', details: { records: 100 } });
      await expect(sink.write(sampleRecord(1))).rejects.toThrow(/closed/);
    });

    it('rejects writes while the store fails, without consuming sequence numbers', async () => {
      await h!.reset();
      const sink = await h!.open(wid());
      await sink.write(sampleRecord(1));
      await h!.breakStore();
      const started = Date.now();
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => sink.write(sampleRecord(100 + i))));
      expect(results.every((r) => r.status === 'rejected')).toBe(true);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await sink.ready()).toBe(false);
      await h!.healStore();
      await expect(sink.write(sampleRecord(2))).resolves.toBeUndefined();
      expect(await sink.ready()).toBe(true);
      await sink.close();
      const report = await verifyChains(await h!.read());
      expect(report.ok).toBe(true);
      const ids = recordsOf(await h!.read()).map((r) => r.id);
      expect(ids).toContain('req-1');
      expect(ids).toContain('req-2');
    });
  });
}

// ---- file sink -------------------------------------------------------------------------------

let fileRoot: string;
let fileDir: string;
const fault = { on: false };
const faultyIo: FileIo = {
  syncDir: (d) => nodeFileIo.syncDir(d),
  async openAppend(path) {
    const real = await nodeFileIo.openAppend(path);
    const enospc = () => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    // Like nodeFileIo: small batches through appendSync, larger ones through append.
    const h: AppendHandle = {
      durableWrites: real.durableWrites,
      append: (b) => (fault.on ? Promise.reject(enospc()) : real.append(b)),
      appendSync: (b) => {
        if (fault.on) throw enospc();
        real.appendSync!(b);
      },
      datasync: () => real.datasync(),
      truncate: (l) => real.truncate(l),
      close: () => real.close(),
    };
    return h;
  },
};

describe('audit sink contract', () => {
  afterAll(async () => {
    if (fileRoot) await rm(fileRoot, { recursive: true, force: true });
  });

  contract('file', async () => {
    fileRoot = await mkdtemp(join(tmpdir(), 'phi-audit-contract-'));
    let gen = 0;
    return {
      async reset() {
        fileDir = join(fileRoot, `store-${++gen}`);
      },
      async open(writerId) {
        return FileAuditSink.open({ dir: fileDir, rotateBytes: 64 * 1024, groupCommitMs: 0, writerId, io: faultyIo });
      },
      async breakStore() {
        fault.on = true;
      },
      async healStore() {
        fault.on = false;
      },
      read: () => collect(openAuditSource(`file:${fileDir}`)),
    };
  });
});

let redis: RedisHandle | undefined;
const redisServer = await startRedis();

(redisServer ? describe : describe.skip)('audit sink contract (redis)', () => {
  let stream = 'contract:0';
  let gen = 0;
  beforeAll(() => {
    redis = redisServer;
  });
  afterAll(async () => {
    await redis?.dispose();
  });

  contract('redis', async () => ({
    async reset() {
      stream = `contract:${++gen}`;
    },
    async open(writerId) {
      return createAuditSink({ sink: 'redis', url: redis!.url, stream, failOpen: false }, { writerId, redis: { commandTimeoutMs: 1000 } });
    },
    async breakStore() {
      await redis!.kill();
    },
    async healStore() {
      await redis!.restart();
      // Let ioredis notice and reconnect on its own (no sink restart).
      await new Promise((r) => setTimeout(r, 1500));
    },
    async read() {
      const src = openAuditSource(`${redis!.url}?stream=${encodeURIComponent(stream)}`);
      try {
        return await collect(src);
      } finally {
        await src.close();
      }
    },
  }));
});
