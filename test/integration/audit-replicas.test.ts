/**
 * Issue 3, replicas: two built gateway processes append to one Redis stream at the same time.
 * No record is lost (every 2xx X-Request-Id either replica answered is in the stream), the two
 * writer chains interleave in the stream, and `phi-gateway audit verify` passes with two writers,
 * both sealed by their graceful SIGTERM shutdown.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { type GatewayProcess, runCli, spawnGateway, startLoad } from '../helpers/gateway-process.js';
import { type Idp, startIdp } from '../helpers/idp.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const redis: RedisHandle | undefined = await startRedis({ appendfsync: 'always' });

const PATHS = [`/Patient/${DEMO.patients.alice}`, `/Observation?patient=${DEMO.patients.alice}`, `/Patient/${DEMO.patients.brian}`];

(redis ? describe : describe.skip)('two gateway processes sharing one Redis stream', () => {
  let upstream: RunningUpstream | undefined;
  let idp: Idp | undefined;
  const gateways: GatewayProcess[] = [];

  afterAll(async () => {
    for (const g of gateways) await g.kill('SIGKILL');
    await idp?.close();
    await upstream?.close();
    await redis?.dispose();
  });

  it('loses no record under concurrent load, and verify passes with two sealed writer chains', async () => {
    upstream = await startFhirUpstream({ seed: true });
    idp = await startIdp();
    const backends = { upstream: upstream.url, issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri, audit: redis!.url };
    const [a, b] = await Promise.all([spawnGateway(backends), spawnGateway(backends)]);
    gateways.push(a, b);
    const headers = { authorization: `Bearer ${await idp.tokenFor('clinician')}`, 'x-purpose-of-use': 'TREAT' };
    const loads = [a, b].map((g) => startLoad({ base: g.url, paths: PATHS, headers, concurrency: 8, maxMs: 15_000 }));
    await Promise.all(loads.map((l) => l.waitFor(120, 8_000)));
    for (const l of loads) l.stop();
    await Promise.all(loads.map((l) => l.done));
    // Graceful stop: in-flight requests finish, each writer seals its chain.
    const exits = await Promise.all([a.kill('SIGTERM'), b.kill('SIGTERM')]);
    expect(exits).toEqual([
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);

    for (const l of loads) {
      expect(l.errors()).toBe(0);
      expect(l.received.length).toBeGreaterThanOrEqual(40);
      expect(l.received.filter((r) => r.status !== 200).map((r) => r.status)).toEqual([]);
    }

    const src = openAuditSource(redis!.url);
    const stream: ChainedRecord[] = [];
    try {
      for await (const item of src) if ('record' in item) stream.push(item.record);
    } finally {
      await src.close();
    }
    const byId = new Map(stream.map((r) => [r.id, r]));
    const writerOf: string[] = [];
    for (const l of loads) {
      const missing = l.received.filter((r) => !byId.has(r.id)).map((r) => r.id);
      expect(missing, `${missing.length} of ${l.received.length} 200 responses have no record`).toEqual([]);
      // Each replica's answers are all in that replica's own chain.
      const writers = new Set(l.received.map((r) => byId.get(r.id)!.chain.writer));
      expect(writers.size).toBe(1);
      writerOf.push([...writers][0]);
    }
    expect(writerOf[0]).not.toBe(writerOf[1]);
    expect(new Set(stream.map((r) => r.chain.writer))).toEqual(new Set(writerOf));

    // The replicas really wrote at the same time: their chains interleave in the one stream.
    let switches = 0;
    for (let i = 1; i < stream.length; i++) if (stream[i].chain.writer !== stream[i - 1].chain.writer) switches++;
    expect(switches).toBeGreaterThanOrEqual(5);

    const verify = await runCli(['audit', 'verify', '--source', redis!.url]);
    expect(verify.stdout, verify.stderr).toContain(`audit verify: intact: ${stream.length} records, 2 writer chain(s)`);
    expect(verify.stdout).not.toMatch(/^warning:/m);
    expect(verify.code).toBe(0);
  }, 60_000);
});
