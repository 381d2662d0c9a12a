/**
 * The SIEM forwarder's own logic against a real file sink's trail and a real Redis stream: the
 * persisted cursor (atomic, per file, across rotation and command-line writers' files), the
 * filter, the backoff, a delivery that fails (the same batch again, cursor kept), a write rolled
 * back under the cursor, the lock between two processes, and Redis pending entries delivered again
 * after a crash between delivery and acknowledgement. The target here is a small recording one;
 * the real targets are tested against real receivers in test/integration/siem-delivery.test.ts.
 */
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import { listAuditFiles } from '../../../src/audit/files.js';
import type { AuditRecord, ChainedRecord } from '../../../src/audit/record.js';
import { RedisAuditSink } from '../../../src/audit/redis-sink.js';
import type { AuditConfig } from '../../../src/config/types.js';
import { CursorLockedError, defaultStateDir, lockCursor } from '../../../src/siem/cursor.js';
import { cursorPath, FileTrailSource, loadFileCursor } from '../../../src/siem/cursor-file.js';
import { groupName, RedisTrailSource } from '../../../src/siem/cursor-redis.js';
import { matchesFilter } from '../../../src/siem/filter.js';
import { backoffDelay, SiemForwarder } from '../../../src/siem/forwarder.js';
import type { SiemConfig, Target, TargetConfig } from '../../../src/siem/types.js';
import { startRedis } from '../../helpers/redis.js';
import { sampleRecord } from '../audit/fixtures.js';

const logger = pino({ level: 'silent' });

/** A target that records what it is given, and fails while `down` is set. */
class RecordingTarget implements Target {
  readonly type = 'syslog' as const;
  readonly batches: string[][] = [];
  down = false;
  constructor(readonly name: string) {}
  get ids(): string[] {
    return this.batches.flat();
  }
  async deliver(records: readonly ChainedRecord[]): Promise<void> {
    if (this.down) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6514'), { code: 'ECONNREFUSED' });
    this.batches.push(records.map((r) => r.id));
  }
  async close(): Promise<void> {}
}

const syslogTarget = (name: string, filter?: TargetConfig['filter']): TargetConfig => ({ name, type: 'syslog', url: 'tls://127.0.0.1:6514', format: 'record', ...(filter ? { filter } : {}) });

describe('backoff', () => {
  it('doubles from the base up to the maximum, with jitter between half and all of it', () => {
    expect(backoffDelay(1, 1000, 300_000, () => 1)).toBe(1000);
    expect(backoffDelay(2, 1000, 300_000, () => 1)).toBe(2000);
    expect(backoffDelay(5, 1000, 300_000, () => 1)).toBe(16_000);
    expect(backoffDelay(40, 1000, 300_000, () => 1)).toBe(300_000);
    expect(backoffDelay(3, 1000, 300_000, () => 0)).toBe(2000);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(4, 1000, 300_000);
      expect(d).toBeGreaterThanOrEqual(4000);
      expect(d).toBeLessThanOrEqual(8000);
    }
  });
});

describe('filter', () => {
  const r = (over: Partial<AuditRecord>) => sampleRecord(1, over);
  it('passes everything without a filter, and needs every given field to match', () => {
    expect(matchesFilter(r({}), undefined)).toBe(true);
    expect(matchesFilter(r({ kind: 'fhir' }), { kinds: ['fhir', 'export'] })).toBe(true);
    expect(matchesFilter(r({ kind: 'anomaly' }), { kinds: ['fhir'] })).toBe(false);
    expect(matchesFilter(r({ decision: 'deny' }), { decisions: ['deny', 'error'] })).toBe(true);
    expect(matchesFilter(r({ decision: 'allow' }), { decisions: ['deny'] })).toBe(false);
    expect(matchesFilter(r({ decision: 'deny', kind: 'anomaly' }), { kinds: ['fhir'], decisions: ['deny'] })).toBe(false);
  });
  it('breakGlassOnly: a breakGlass member, or a break-glass kind', () => {
    expect(matchesFilter(r({}), { breakGlassOnly: true })).toBe(false);
    expect(matchesFilter(r({ breakGlass: { session: 's', reason: 'ED' } }), { breakGlassOnly: true })).toBe(true);
    expect(matchesFilter(r({ kind: 'break-glass-start' }), { breakGlassOnly: true })).toBe(true);
    expect(matchesFilter(r({ kind: 'break-glass-review' }), { breakGlassOnly: true })).toBe(true);
  });
});

describe('default state directory', () => {
  it('is beside the audit directory', () => {
    expect(defaultStateDir('/srv/data/audit')).toBe('/srv/data/siem');
    expect(defaultStateDir('/srv/data/audit/')).toBe('/srv/data/siem');
    expect(defaultStateDir('/var/lib/trail')).toBe('/var/lib/trail.siem');
  });
});

describe('file trail', () => {
  let root: string;
  let dir: string;
  let stateDir: string;
  const audit = (): AuditConfig => ({ sink: 'file', path: dir, failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 });
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'phi-siem-'));
    dir = join(root, 'audit');
    stateDir = join(root, 'siem');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  async function writeRecords(from: number, n: number, opts: { rotateBytes?: number; sidecar?: string } = {}): Promise<string[]> {
    const sink = await FileAuditSink.open({ dir, rotateBytes: opts.rotateBytes ?? 1 << 20, groupCommitMs: 0, writerId: `w${from}${opts.sidecar ?? ''}`, sidecar: opts.sidecar });
    const ids: string[] = [];
    for (let i = from; i < from + n; i++) {
      await sink.write(sampleRecord(i));
      ids.push(`req-${i}`);
    }
    await sink.close();
    return ids;
  }

  function forwarder(targets: RecordingTarget[], siem: Partial<SiemConfig> = {}, configs?: TargetConfig[]) {
    const byName = new Map(targets.map((t) => [t.name, t]));
    return new SiemForwarder({
      siem: { targets: configs ?? targets.map((t) => syslogTarget(t.name)), stateDir, batchSize: 7, baseDelayMs: 10, maxDelayMs: 40, pollMs: 20, ...siem },
      audit: audit(),
      logger,
      createTarget: (c) => byName.get(c.name)!,
    });
  }

  const withoutSeals = (ids: string[], all: string[]) => ids.filter((id) => all.includes(id));

  it('delivers every record once, persists the cursor atomically, and resumes from it in a new instance', async () => {
    const first = await writeRecords(0, 30);
    const t = new RecordingTarget('soc');
    const f = forwarder([t]);
    expect(await f.drain()).toBe(true);
    await f.stop();
    expect(withoutSeals(t.ids, first)).toEqual(first);
    // Batches of batchSize; the writer's seal is delivered too (no filter: every record).
    expect(t.ids).toHaveLength(31);
    expect(t.batches.every((b) => b.length <= 7)).toBe(true);
    const cursor = await loadFileCursor(stateDir, 'soc');
    const [file] = await listAuditFiles(dir);
    expect(cursor.files[file.name].offset).toBe(readFileSync(join(dir, file.name)).length);
    // Replaced atomically: no temporary file left behind, no lock after stop.
    expect(readdirSync(stateDir).sort()).toEqual(['soc.cursor.json']);

    const second = await writeRecords(100, 5);
    const t2 = new RecordingTarget('soc');
    const f2 = forwarder([t2]);
    expect(await f2.drain()).toBe(true);
    await f2.stop();
    expect(withoutSeals(t2.ids, second)).toEqual(second);
    expect(t2.ids.some((id) => first.includes(id))).toBe(false);
    expect(f2.status()[0]).toMatchObject({ name: 'soc', delivered: 6, failures: 0, lag: 0, oldestUndeliveredAgeSec: 0 });
  });

  it('follows rotation into new segments and reads a command-line writer file that appears later', async () => {
    const a = await writeRecords(0, 40, { rotateBytes: 4096 });
    expect((await listAuditFiles(dir)).length).toBeGreaterThan(3);
    const t = new RecordingTarget('soc');
    const f = forwarder([t]);
    expect(await f.drain()).toBe(true);
    // A command-line writer's own file sorts before the gateway's later segments of the day.
    const cli = await writeRecords(500, 3, { sidecar: 'cliabc' });
    const b = await writeRecords(600, 4, { rotateBytes: 4096 });
    expect(await f.drain()).toBe(true);
    await f.stop();
    const all = [...a, ...cli, ...b];
    expect(withoutSeals(t.ids, all).sort()).toEqual(all.sort());
    expect(new Set(t.ids).size).toBe(t.ids.length);
  });

  it('keeps the cursor through failed deliveries and delivers the same batch when the receiver is back', async () => {
    const ids = await writeRecords(0, 10);
    const t = new RecordingTarget('soc');
    t.down = true;
    const f = forwarder([t]);
    f.start();
    await expect.poll(() => f.status()[0].failures).toBeGreaterThanOrEqual(3);
    const s = f.status()[0];
    expect(s).toMatchObject({ delivered: 0, lastError: 'ECONNREFUSED', failing: true });
    expect(s.lag).toBe(11);
    expect(s.oldestUndeliveredAgeSec).toBeGreaterThan(0);
    expect(existsSync(cursorPath(stateDir, 'soc'))).toBe(false);
    t.down = false;
    await expect.poll(() => f.status()[0].lag).toBe(0);
    await f.stop();
    expect(withoutSeals(t.ids, ids)).toEqual(ids);
    expect(t.ids).toHaveLength(11);
    expect(f.status()[0]).toMatchObject({ delivered: 11, failing: false, oldestUndeliveredAgeSec: 0 });
  });

  it('moves the cursor past records the filter leaves out, per target', async () => {
    const sink = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'w' });
    for (let i = 0; i < 12; i++) await sink.write(sampleRecord(i, { decision: i % 3 === 0 ? 'deny' : 'allow', breakGlass: i === 4 ? { session: 's1', reason: 'ED' } : undefined }));
    await sink.close();
    const all = new RecordingTarget('all');
    const denials = new RecordingTarget('denials');
    const btg = new RecordingTarget('btg');
    const f = forwarder([all, denials, btg], {}, [syslogTarget('all'), syslogTarget('denials', { decisions: ['deny'] }), syslogTarget('btg', { breakGlassOnly: true })]);
    expect(await f.drain()).toBe(true);
    await f.stop();
    expect(all.ids).toHaveLength(13);
    expect(denials.ids).toEqual(['req-0', 'req-3', 'req-6', 'req-9']);
    expect(btg.ids).toEqual(['req-4']);
    // Every cursor is at the end: nothing filtered out is pending.
    const [file] = await listAuditFiles(dir);
    const size = readFileSync(join(dir, file.name)).length;
    for (const n of ['all', 'denials', 'btg']) expect((await loadFileCursor(stateDir, n)).files[file.name].offset).toBe(size);
  });

  it('goes back when a write under the cursor was rolled back, and delivers what took its place', async () => {
    await writeRecords(0, 3);
    const [file] = await listAuditFiles(dir);
    const path = join(dir, file.name);
    const before = readFileSync(path).length;
    // A line made visible and then truncated away by the sink (its write failed).
    appendFileSync(path, `${JSON.stringify({ ...sampleRecord(50), chain: { writer: 'x', seq: 1, prev: '0', hash: '0' } })}\n`);
    const t = new RecordingTarget('soc');
    const f = forwarder([t]);
    expect(await f.drain()).toBe(true);
    expect(t.ids).toContain('req-50');
    truncateSync(path, before);
    appendFileSync(path, `${JSON.stringify({ ...sampleRecord(51), chain: { writer: 'y', seq: 1, prev: '0', hash: '0' } })}\n`);
    expect(await f.drain()).toBe(true);
    await f.stop();
    expect(t.ids.at(-1)).toBe('req-51');
  });

  it('skips an unparsable line and moves on', async () => {
    await writeRecords(0, 2);
    const [file] = await listAuditFiles(dir);
    appendFileSync(join(dir, file.name), 'not json\n');
    await writeRecords(10, 1);
    const t = new RecordingTarget('soc');
    const f = forwarder([t]);
    expect(await f.drain()).toBe(true);
    await f.stop();
    expect(t.ids.filter((id) => id.startsWith('req-'))).toEqual(['req-0', 'req-1', 'req-10']);
  });

  it('refuses a cursor another live process holds, and takes over one whose process is gone', async () => {
    await writeRecords(0, 2);
    const held = await FileTrailSource.open({ dir, stateDir, target: 'soc' });
    await expect(FileTrailSource.open({ dir, stateDir, target: 'soc' })).rejects.toBeInstanceOf(CursorLockedError);
    // In a forwarder the target waits (not a delivery failure to count), and the others go on.
    const t = new RecordingTarget('soc');
    const other = new RecordingTarget('other');
    const f = forwarder([t, other]);
    f.start();
    await expect.poll(() => f.status()[0].lastError).toBe('cursor-locked');
    await expect.poll(() => f.status()[1].delivered).toBe(3);
    await held.close();
    await expect.poll(() => f.status()[0].delivered).toBe(3);
    await f.stop();
    // A lock file left by a process that no longer runs.
    writeFileSync(join(stateDir, 'stale.lock'), `999999999 ${(await import('node:os')).hostname()}\n`);
    const lock = await lockCursor(stateDir, 'stale');
    await lock.release();
    expect(existsSync(join(stateDir, 'stale.lock'))).toBe(false);
  });
});

const redis = await startRedis();
const redisSuite = redis ? describe : describe.skip;

redisSuite('redis trail (consumer group)', () => {
  const STREAM = 'siem-unit:audit';
  let admin: Redis;
  afterAll(async () => {
    admin?.disconnect();
    await redis?.dispose();
  });

  it('delivers from the stream start, and a crash between delivery and XACK delivers again: a duplicate, never a loss', async () => {
    admin = new Redis(redis!.url);
    const sink = await RedisAuditSink.open({ url: redis!.url, stream: STREAM, writerId: 'w1', newWriterId: () => 'w2' });
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      await sink.write(sampleRecord(i));
      ids.push(`req-${i}`);
    }
    const audit: AuditConfig = { sink: 'redis', url: redis!.url, stream: STREAM, failOpen: false };
    // "Crash": a source reads and the target gets the batch, but the process dies before XACK.
    const crashed = await RedisTrailSource.open({ url: redis!.url, stream: STREAM, target: 'soc', consumer: 'host-a' });
    const batch = await crashed.read(5);
    expect(batch.records.map((r) => r.id)).toEqual(ids.slice(0, 5));
    await crashed.close();
    expect((await admin.xpending(STREAM, groupName('soc')))[0]).toBe(5);

    const t = new RecordingTarget('soc');
    const f = new SiemForwarder({ siem: { targets: [syslogTarget('soc')], batchSize: 4, baseDelayMs: 10, maxDelayMs: 40, pollMs: 20 }, audit, logger, consumer: 'host-a', createTarget: () => t });
    expect(await f.drain()).toBe(true);
    // The pending five first (again), then the rest; every one exactly once in this instance.
    expect(t.ids).toEqual(ids);
    expect(f.status()[0]).toMatchObject({ delivered: 12, lag: 0 });
    expect((await admin.xpending(STREAM, groupName('soc')))[0]).toBe(0);

    // Receiver down: nothing acknowledged, lag visible; back up: delivered once.
    for (let i = 20; i < 23; i++) await sink.write(sampleRecord(i));
    t.down = true;
    expect(await f.drain()).toBe(false);
    expect(f.status()[0]).toMatchObject({ lag: 3, failing: true, lastError: 'ECONNREFUSED' });
    t.down = false;
    expect(await f.drain()).toBe(true);
    await f.stop();
    expect(t.ids.slice(12)).toEqual(['req-20', 'req-21', 'req-22']);
    await sink.close();
  });

  it('takes over entries left pending by a consumer that went away', async () => {
    const stream = 'siem-unit:claim';
    const sink = await RedisAuditSink.open({ url: redis!.url, stream, writerId: 'c1', newWriterId: () => 'c2' });
    for (let i = 0; i < 3; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const gone = await RedisTrailSource.open({ url: redis!.url, stream, target: 'soc', consumer: 'old-pod' });
    await gone.read(10);
    await gone.close();
    const t = new RecordingTarget('soc');
    const audit: AuditConfig = { sink: 'redis', url: redis!.url, stream, failOpen: false };
    const source = await RedisTrailSource.open({ url: redis!.url, stream, target: 'soc', consumer: 'new-pod', claimIdleMs: 1 });
    const f = new SiemForwarder({ siem: { targets: [syslogTarget('soc')] }, audit, logger, createTarget: () => t, openSource: async () => source });
    await new Promise((r) => setTimeout(r, 20));
    expect(await f.drain()).toBe(true);
    await f.stop();
    expect(t.ids.filter((id) => id.startsWith('req-'))).toEqual(['req-0', 'req-1', 'req-2']);
  });
});
