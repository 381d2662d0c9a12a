import { appendFile, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AppendHandle, dropTornTail, FileAuditSink, type FileIo, nodeFileIo } from '../../../src/audit/file-sink.js';
import { openAuditSource } from '../../../src/audit/index.js';
import { type ReadItem, readFileRecords } from '../../../src/audit/read.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { verifyChains } from '../../../src/audit/verify.js';
import { sampleRecord } from './fixtures.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phi-audit-file-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function items(d = dir): Promise<ReadItem[]> {
  const out: ReadItem[] = [];
  for await (const i of readFileRecords(d)) out.push(i);
  return out;
}
const records = (xs: ReadItem[]): ChainedRecord[] => xs.flatMap((i) => ('record' in i ? [i.record] : []));

/** nodeFileIo with each opened handle replaced by `make(real)` (to count, delay or fail its calls). */
function wrappedIo(make: (real: AppendHandle) => AppendHandle): FileIo {
  return { syncDir: nodeFileIo.syncDir, openAppend: async (p) => make(await nodeFileIo.openAppend(p)) };
}

function open(over: Partial<Parameters<typeof FileAuditSink.open>[0]> = {}): Promise<FileAuditSink> {
  return FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'w1', ...over });
}

describe('FileAuditSink', () => {
  it('writes one JSON line per record, newline-terminated, in files of mode 0600', async () => {
    const sink = await open();
    await sink.write(sampleRecord(1));
    await sink.write(sampleRecord(2));
    const [name] = await readdir(dir);
    expect(name).toMatch(/^audit-\d{4}-\d{2}-\d{2}-001\.ndjson$/);
    const text = await readFile(join(dir, name), 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(text.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as ChainedRecord).id)).toEqual(['req-1', 'req-2']);
    const { stat } = await import('node:fs/promises');
    expect((await stat(join(dir, name))).mode & 0o777).toBe(0o600);
    await sink.close();
  });

  it('a handle whose appends are durable (O_DSYNC) needs no datasync; any other gets one per batch', async () => {
    for (const durableWrites of [true, false]) {
      let syncs = 0;
      let appends = 0;
      const io: FileIo = wrappedIo((real) => ({
        durableWrites,
        append: async (b) => {
          appends++;
          await real.append(b);
        },
        datasync: async () => {
          syncs++;
          await real.datasync();
        },
        truncate: real.truncate,
        close: real.close,
      }));
      await rm(dir, { recursive: true, force: true });
      const sink = await open({ io });
      for (let i = 0; i < 5; i++) await sink.write(sampleRecord(i));
      await sink.close();
      expect(appends).toBe(6); // five records and the seal, one batch each
      expect(syncs).toBe(durableWrites ? 0 : 6);
    }
  });

  it('writes small batches on the event loop (appendSync), larger ones through the pool; inlineBatchMax 0 and non-durable handles never inline', async () => {
    const calls: string[] = [];
    const counting = (durableWrites: boolean): FileIo =>
      wrappedIo((real) => ({
        durableWrites,
        append: async (b) => {
          calls.push('pool');
          await real.append(b);
        },
        appendSync: (b) => {
          calls.push('inline');
          real.appendSync!(b);
        },
        datasync: async () => {
          calls.push('datasync');
          await real.datasync();
        },
        truncate: real.truncate,
        close: real.close,
      }));
    const sink = await open({ io: counting(true), inlineBatchMax: 4 });
    await sink.write(sampleRecord(0));
    await Promise.all([1, 2, 3, 4].map((i) => sink.write(sampleRecord(i)))); // one batch of 4
    await Promise.all(Array.from({ length: 5 }, (_, i) => sink.write(sampleRecord(10 + i)))); // one batch of 5
    expect(calls).toEqual(['inline', 'inline', 'pool']);
    await sink.close();
    const ids = records(await items()).map((r) => r.id);
    expect(ids.slice(0, 10)).toEqual(['req-0', 'req-1', 'req-2', 'req-3', 'req-4', 'req-10', 'req-11', 'req-12', 'req-13', 'req-14']);
    expect((await verifyChains(await items())).ok).toBe(true);

    for (const [over, durable] of [[{ inlineBatchMax: 0 }, true] as const, [{}, false] as const]) {
      await rm(dir, { recursive: true, force: true });
      calls.length = 0;
      const s2 = await open({ io: counting(durable), ...over });
      await s2.write(sampleRecord(1));
      await s2.close();
      expect(calls.filter((c) => c !== 'datasync')).toEqual(['pool', 'pool']); // the record, the seal
    }
  });

  it('an inline write that fails part-way is rolled back and the next batch continues the chain', async () => {
    let fail = false;
    const io: FileIo = wrappedIo((real) => ({
      durableWrites: true,
      append: real.append,
      appendSync: (b) => {
        if (!fail) return real.appendSync!(b);
        real.appendSync!(b.subarray(0, b.length >> 1)); // half a line reached the file
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      },
      datasync: real.datasync,
      truncate: real.truncate,
      close: real.close,
    }));
    const sink = await open({ io });
    await sink.write(sampleRecord(1));
    fail = true;
    await expect(sink.write(sampleRecord(2))).rejects.toMatchObject({ code: 'ENOSPC' });
    fail = false;
    await sink.write(sampleRecord(3));
    await sink.close();
    const got = await items();
    expect(got.every((i) => 'record' in i)).toBe(true); // no torn or corrupt line left behind
    expect(records(got).map((r) => r.id)).toEqual(['req-1', 'req-3', expect.any(String)]);
    expect((await verifyChains(got)).ok).toBe(true);
  });

  it('group-commits: concurrent writes share fsyncs and each resolves only after its own', async () => {
    let syncs = 0;
    let synced = 0; // bytes covered by a completed datasync
    let written = 0;
    const io: FileIo = wrappedIo((real) => ({
      append: async (b) => {
        await real.append(b);
        written += b.length;
      },
      datasync: async () => {
        await new Promise((r) => setTimeout(r, 5));
        await real.datasync();
        syncs++;
        synced = written;
      },
      truncate: real.truncate,
      close: real.close,
    }));
    const sink = await open({ io });
    const syncedAtResolve = new Map<string, number>();
    await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        sink.write(sampleRecord(i)).then(() => {
          syncedAtResolve.set(`req-${i}`, synced);
        }),
      ),
    );
    expect(syncs).toBeLessThan(300 / 2);
    // Each write resolved only once a datasync covered the end of its own line.
    const text = await readFile(join(dir, (await readdir(dir))[0]));
    let offset = 0;
    let lineCount = 0;
    for (const line of text.toString('utf8').split('\n').slice(0, -1)) {
      offset += Buffer.byteLength(line) + 1;
      lineCount++;
      const id = (JSON.parse(line) as ChainedRecord).id;
      expect(syncedAtResolve.get(id)).toBeGreaterThanOrEqual(offset);
    }
    expect(lineCount).toBe(300);
    await sink.close();
  });

  it('recovers from a torn final line: truncates it and starts a new writer chain', async () => {
    const a = await open({ writerId: 'a' });
    for (let i = 0; i < 3; i++) await a.write(sampleRecord(i));
    // Simulate a crash mid-write: half a line at the end, never acknowledged.
    const file = join(dir, (await readdir(dir))[0]);
    await appendFile(file, '{"id":"torn","kind":"fh');
    const b = await open({ writerId: 'b' });
    expect((await readFile(file, 'utf8')).includes('torn')).toBe(false);
    await b.write(sampleRecord(9));
    await b.close();
    const report = await verifyChains(await items());
    expect(report.ok).toBe(true);
    expect(report.writers).toBe(2);
    // a crashed (no seal), b closed cleanly.
    expect(report.warnings.map((w) => w.writer)).toEqual(['a']);
  });

  it('dropTornTail finds the last newline across read chunks', async () => {
    const p = join(dir, 'x');
    await writeFile(p, 'line1\n' + 'y'.repeat(200_000));
    expect(await dropTornTail(p)).toBe(200_000);
    expect(await readFile(p, 'utf8')).toBe('line1\n');
    await writeFile(p, 'z'.repeat(10));
    expect(await dropTornTail(p)).toBe(10);
    expect(await readFile(p, 'utf8')).toBe('');
    await writeFile(p, 'ok\n');
    expect(await dropTornTail(p)).toBe(0);
  });

  it('rotates by size without breaking the chain, and readers follow file order', async () => {
    const sink = await open({ rotateBytes: 4000 });
    for (let i = 0; i < 40; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const files = (await readdir(dir)).sort();
    expect(files.length).toBeGreaterThan(3);
    const recs = records(await items());
    expect(recs.map((r) => r.chain.seq)).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
    expect((await verifyChains(await items())).warnings).toEqual([]);
  });

  it('rotates by UTC day and never goes back to an earlier day when the clock does', async () => {
    let now = new Date('2025-03-01T23:59:59Z');
    const sink = await open({ now: () => now });
    await sink.write(sampleRecord(1));
    now = new Date('2025-03-02T00:00:01Z');
    await sink.write(sampleRecord(2));
    now = new Date('2025-03-01T12:00:00Z');
    await sink.write(sampleRecord(3));
    await sink.close();
    expect((await readdir(dir)).sort()).toEqual(['audit-2025-03-01-001.ndjson', 'audit-2025-03-02-001.ndjson']);
    const got = await items();
    expect(records(got).map((r) => r.kind === 'writer-seal' ? 'seal' : r.id)).toEqual(['req-1', 'req-2', 'req-3', 'seal']);
    // req-3 (written with the clock back on 03-01) went to the 03-02 file, after req-2.
    expect(got.map((i) => i.position.split(':')[0])).toEqual([
      'audit-2025-03-01-001.ndjson',
      'audit-2025-03-02-001.ndjson',
      'audit-2025-03-02-001.ndjson',
      'audit-2025-03-02-001.ndjson',
    ]);
    expect((await verifyChains(await items())).ok).toBe(true);
  });

  it('rolls the file back after a failed fsync so no partial batch stays behind', async () => {
    let failSync = false;
    const io: FileIo = wrappedIo((real) => ({
      append: real.append,
      datasync: () => (failSync ? Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) : real.datasync()),
      truncate: real.truncate,
      close: real.close,
    }));
    const sink = await open({ io });
    await sink.write(sampleRecord(1));
    failSync = true;
    // The rollback's own datasync fails too: the sink must poison itself (fail closed).
    await expect(sink.write(sampleRecord(2))).rejects.toThrow('EIO');
    failSync = false;
    await expect(sink.write(sampleRecord(3))).rejects.toThrow(/restart required/);
    expect(await sink.ready()).toBe(false);
    const recs = records(await items());
    expect(recs.map((r) => r.id)).toEqual(['req-1']);
    await sink.close();
  });

  it('a record that cannot be serialized fails alone and consumes no seq', async () => {
    const sink = await open();
    const cyclic = sampleRecord(1) as unknown as Record<string, unknown>;
    cyclic.details = { self: cyclic };
    const results = await Promise.allSettled([sink.write(sampleRecord(0)), sink.write(cyclic as never), sink.write(sampleRecord(2))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(records(await items()).map((r) => r.chain.seq)).toEqual([1, 2]);
    await sink.close();
  });

  it('openAuditSource reads a file: source like the reader does', async () => {
    const sink = await open();
    await sink.write(sampleRecord(1));
    await sink.close();
    const got: ReadItem[] = [];
    for await (const i of openAuditSource(`file:${dir}`)) got.push(i);
    expect(got).toEqual(await items());
    expect(got[0].position).toMatch(/^audit-.*\.ndjson:1$/);
  });

  it('reports a torn line in a file that is not the last as corrupt', async () => {
    const sink = await open({ rotateBytes: 1500 });
    for (let i = 0; i < 4; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const files = (await readdir(dir)).sort();
    expect(files.length).toBeGreaterThan(1);
    const first = join(dir, files[0]);
    const size = (await readFile(first)).length;
    await truncate(first, size - 1);
    const report = await verifyChains(await items());
    expect(report.ok).toBe(false);
    expect(report.first?.position).toBe(`${files[0]}:1`);
  });
});
