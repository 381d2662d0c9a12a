/**
 * The Redis sink appends each batch with one EVALSHA (src/audit/redis-sink.ts): what that must not
 * change (whole batches, no holes, no needless writer retirement) and how it falls back.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisAuditSink } from '../../src/audit/redis-sink.js';
import { verifyChains } from '../../src/audit/verify.js';
import { recordsOf, readStream } from '../helpers/audit.js';
import { startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

const redis = await startRedis();

const read = (stream: string) => readStream(redis!.url, stream);
const recs = recordsOf;

/** Calls per command since the last CONFIG RESETSTAT, from INFO commandstats. */
async function calls(admin: Redis): Promise<Record<string, number>> {
  const info = (await admin.info('commandstats')) as string;
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

function open(stream: string, writerId: string, url = redis!.url): Promise<RedisAuditSink> {
  let n = 0;
  return RedisAuditSink.open({ url, stream, writerId, newWriterId: () => `${writerId}-next-${++n}`, commandTimeoutMs: 1000 });
}

(redis ? describe : describe.skip)('redis audit sink: one script call per batch', () => {
  const admin = redis ? new Redis(redis.url) : undefined;
  afterAll(async () => {
    await admin?.quit();
    await redis?.dispose();
  });

  it('a concurrent burst is stored whole and in chain order, without MULTI/EXEC', async () => {
    const sink = await open('burst', 'burst-w');
    await admin!.config('RESETSTAT');
    await Promise.all(Array.from({ length: 200 }, (_, i) => sink.write(sampleRecord(i))));
    const c = await calls(admin!);
    await sink.close();
    // Fewer script calls than records: batches formed, and no transaction was used.
    expect((c.evalsha ?? 0) + (c.eval ?? 0)).toBeGreaterThan(0);
    expect((c.evalsha ?? 0) + (c.eval ?? 0)).toBeLessThan(200);
    expect(c.exec ?? 0).toBe(0);
    const items = await read('burst');
    const got = recs(items);
    expect(got.map((r) => r.chain.seq)).toEqual(Array.from({ length: 201 }, (_, i) => i + 1));
    expect(got.slice(0, 200).map((r) => r.id)).toEqual(Array.from({ length: 200 }, (_, i) => `req-${i}`));
    expect((await verifyChains(items)).ok).toBe(true);
  });

  it('an emptied script cache (restart, SCRIPT FLUSH) costs nothing: same writer, no gap', async () => {
    const sink = await open('flushed', 'flush-w');
    await sink.write(sampleRecord(1));
    await admin!.script('FLUSH');
    await sink.write(sampleRecord(2));
    expect(sink.writerId).toBe('flush-w');
    await sink.close();
    const got = recs(await read('flushed'));
    expect(got.map((r) => [r.chain.writer, r.chain.seq])).toEqual([
      ['flush-w', 1],
      ['flush-w', 2],
      ['flush-w', 3],
    ]);
  });

  it('out of memory is refused before anything runs: the batch rejects, the writer is kept, no hole', async () => {
    const sink = await open('oom', 'oom-w');
    await sink.write(sampleRecord(1));
    await admin!.config('SET', 'maxmemory-policy', 'noeviction');
    await admin!.config('SET', 'maxmemory', '1');
    try {
      await expect(sink.write(sampleRecord(2))).rejects.toThrow(/OOM/);
    } finally {
      await admin!.config('SET', 'maxmemory', '0');
    }
    // A refusal that applied nothing is not ambiguous: the chain continues under the same writer.
    expect(sink.writerId).toBe('oom-w');
    await sink.write(sampleRecord(3));
    await sink.close();
    const items = await read('oom');
    expect(recs(items).map((r) => [r.id, r.chain.seq])).toEqual([
      ['req-1', 1],
      ['req-3', 2],
      [expect.any(String), 3],
    ]);
    expect((await verifyChains(items)).ok).toBe(true);
  });

  it('an ACL without scripting falls back to MULTI/EXEC at once: no rejected write, same writer', async () => {
    await admin!.call('ACL', 'SETUSER', 'xaddonly', 'on', '>pw-xaddonly', '~*', '+@all', '-@scripting');
    const u = new URL(redis!.url);
    u.username = 'xaddonly';
    u.password = 'pw-xaddonly';
    const sink = await open('acl', 'acl-w', u.toString());
    await admin!.config('RESETSTAT');
    await sink.write(sampleRecord(1));
    await Promise.all([sink.write(sampleRecord(2)), sink.write(sampleRecord(3))]);
    expect(sink.writerId).toBe('acl-w');
    const c = await calls(admin!);
    expect(c.exec ?? 0).toBeGreaterThan(0);
    // Refused once, then never tried again.
    expect(c.evalsha ?? 0).toBe(0);
    await sink.close();
    const items = await read('acl');
    expect(recs(items).map((r) => [r.id, r.chain.seq])).toEqual([
      ['req-1', 1],
      ['req-2', 2],
      ['req-3', 3],
      [expect.any(String), 4],
    ]);
    expect((await verifyChains(items)).ok).toBe(true);
  });
});
