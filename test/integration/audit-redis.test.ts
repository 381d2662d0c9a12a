/** Redis sink behaviour beyond the shared contract: ambiguous failures, outages at start, WAIT. */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { chainRecords } from '../../src/audit/chain.js';
import { createAuditSink } from '../../src/audit/index.js';
import { RedisAuditSink } from '../../src/audit/redis-sink.js';
import { verifyChains } from '../../src/audit/verify.js';
import { recordsOf, readStream } from '../helpers/audit.js';
import { startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

const redis = await startRedis();

const read = readStream;
const recs = recordsOf;

(redis ? describe : describe.skip)('redis audit sink', () => {
  afterAll(async () => {
    await redis?.dispose();
  });

  it('a batch whose outcome is unknown (timed out, applied later) retires the writer: no duplicate seq, no hole', async () => {
    const stream = 'ambiguous';
    let n = 0;
    const sink = await RedisAuditSink.open({ url: redis!.url, stream, writerId: 'first', newWriterId: () => `next-${++n}`, commandTimeoutMs: 300 });
    await sink.write(sampleRecord(1));
    const admin = new Redis(redis!.url);
    // Writes are held by the server past the client's timeout, then executed: the classic
    // "did it or did it not" failure.
    await admin.call('CLIENT', 'PAUSE', '1000', 'WRITE');
    await expect(sink.write(sampleRecord(2))).rejects.toThrow();
    expect(sink.writerId).toBe('next-1');
    await new Promise((r) => setTimeout(r, 1200));
    await sink.write(sampleRecord(3));
    await sink.close();
    await admin.quit();
    const items = await read(redis!.url, stream);
    const got = recs(items);
    // The paused batch did land (under the retired writer), and the new writer starts at genesis.
    expect(got.filter((r) => r.chain.writer === 'first').map((r) => [r.id, r.chain.seq])).toEqual([
      ['req-1', 1],
      ['req-2', 2],
    ]);
    // The new writer's chain opens with the retired writer's end (seq 1), then req-3 and its seal.
    const next = got.filter((r) => r.chain.writer === 'next-1');
    expect(next.map((r) => [r.kind, r.chain.seq])).toEqual([
      ['writer-retired', 1],
      ['fhir', 2],
      ['writer-seal', 3],
    ]);
    expect(next[0].details).toMatchObject({ retired: 'first', confirmedSeq: 1, pendingSeq: 2 });
    // Closed where its successor said it would be: nothing unsealed, even with seals required.
    const report = await verifyChains(items, { requireSeal: true });
    expect(report.problems).toEqual([]);
    expect(report.warnings).toEqual([]);
    // A record added to the retired chain (properly chained, no key) contradicts the note.
    const firstHead = got.filter((r) => r.chain.writer === 'first').at(-1)!.chain;
    const { chained } = chainRecords({ writer: 'first', seq: firstHead.seq, hash: firstHead.hash }, [sampleRecord(9)]);
    const broken = await verifyChains([...items, ...chained], { requireSeal: true });
    expect(broken.problems.map((p) => p.message).join('\n')).toMatch(/retired by next-1 at seq 1 or 2 but ends at seq 3/);
  });

  it('starts while Redis is down, fails closed, then recovers without a restart', async () => {
    await redis!.stop();
    const sink = await createAuditSink(
      { sink: 'redis', url: redis!.url, stream: 'late', failOpen: false },
      { writerId: 'late-w', redis: { connectTimeoutMs: 200, commandTimeoutMs: 500 } },
    );
    expect(await sink.ready()).toBe(false);
    await expect(sink.write(sampleRecord(1))).rejects.toThrow(/not connected/);
    await redis!.restart();
    const deadline = Date.now() + 5000;
    while (!(await sink.ready()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await sink.write(sampleRecord(2));
    await sink.close();
    const got = recs(await read(redis!.url, 'late'));
    // The rejected write consumed no seq: the first stored record is seq 1, then the seal.
    expect(got.map((r) => [r.kind, r.id === 'req-2' || r.kind === 'writer-seal', r.chain.seq])).toEqual([
      ['fhir', true, 1],
      ['writer-seal', true, 2],
    ]);
  });

  it('survives a Redis restart from its AOF: everything acknowledged is still there', async () => {
    const sink = await createAuditSink({ sink: 'redis', url: redis!.url, stream: 'aof', failOpen: false }, { writerId: 'aof-w' });
    await Promise.all(Array.from({ length: 50 }, (_, i) => sink.write(sampleRecord(i))));
    await redis!.kill();
    await redis!.restart();
    expect(recs(await read(redis!.url, 'aof'))).toHaveLength(50);
    await sink.close();
  });

  it('with waitReplicas and no replica, writes reject (not enough copies) but the chain stays whole', async () => {
    const sink = await createAuditSink(
      { sink: 'redis', url: redis!.url, stream: 'wait', failOpen: false },
      { writerId: 'wait-w', redis: { waitReplicas: 1, waitTimeoutMs: 50 } },
    );
    await expect(sink.write(sampleRecord(1))).rejects.toThrow(/replicas acknowledged/);
    await expect(sink.write(sampleRecord(2))).rejects.toThrow(/replicas acknowledged/);
    await sink.close();
    const items = await read(redis!.url, 'wait');
    expect(recs(items).map((r) => r.chain.seq)).toEqual([1, 2, 3]);
    expect((await verifyChains(items)).ok).toBe(true);
  });
});
