/**
 * A stalled Redis (the process stopped with SIGSTOP: its port open, connections accepted by the
 * kernel, nothing answered) under load. With `audit.commandTimeoutMs: 500`:
 *   - every answer during the stall is a 503 within 1.5 s (the stated bound: one command timeout
 *     for the batch in flight, plus generous room for a 2-core CI), and once the first batch has
 *     timed out the refusals are immediate instead of one timeout each;
 *   - /readyz answers 503 with its reasons within 1 s, also at the very start of the stall;
 *   - a block rule's check and a break-glass open (their own Redis clients) are bounded too;
 *   - after SIGCONT the same gateway serves again (no restart); every 200 has its record, and the
 *     stream verifies: the writer that timed out is retired (unsealed, a warning), its chain
 *     intact whether or not its last batch ran when Redis resumed; the current writer is sealed.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisAuditSink } from '../../src/audit/redis-sink.js';
import { verifyChains } from '../../src/audit/verify.js';
import { DEMO } from '../../src/demo/data.js';
import { ConfigError, loadGatewayConfig } from '../../src/config/load.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { readAll, readStream, recordsOf } from '../helpers/audit.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

const redis: RedisHandle | undefined = await startRedis({ appendfsync: 'always' });

const COMMAND_TIMEOUT_MS = 500;
/** The stated bound on any answer while Redis is stalled. */
const STALL_BOUND_MS = 1_500;
/** The bound on /readyz (its own deadline is 500 ms). */
const READY_BOUND_MS = 1_000;

const PATHS = [`/Patient/${DEMO.patients.alice}`, `/Patient/${DEMO.patients.brian}`, `/Observation?patient=${DEMO.patients.alice}`];
const PHI: string[] = [...Object.values(DEMO.ssn), ...Object.values(DEMO.names), ...DEMO.families, ...Object.values(DEMO.mrn)];

interface Timed {
  readonly path: string;
  readonly status: number;
  readonly id: string;
  readonly text: string;
  readonly start: number;
  readonly ms: number;
}

function code(text: string): string | undefined {
  try {
    const oo = JSON.parse(text) as { resourceType?: string; issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
    return oo.resourceType === 'OperationOutcome' ? oo.issue?.[0]?.details?.coding?.find((c) => c.system === ERROR_SYSTEM)?.code : undefined;
  } catch {
    return undefined;
  }
}

async function timedFetch(url: string, init: RequestInit & { path: string }): Promise<Timed> {
  const start = Date.now();
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  return { path: init.path, status: res.status, id: res.headers.get('x-request-id') ?? '', text, start, ms: Date.now() - start };
}

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

describe('audit.commandTimeoutMs in gateway.yaml', () => {
  const load = (audit: string): ReturnType<typeof loadGatewayConfig> => {
    const dir = mkdtempSync(join(tmpdir(), 'phi-gw-config-'));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `upstream:\n  url: http://127.0.0.1:8103/fhir/\nauth:\n  issuer: https://idp.example.org\n  audience: phi-gateway\n  jwksUri: https://idp.example.org/jwks\naudit:\n${audit}`,
    );
    return loadGatewayConfig(file, {});
  };
  const problems = (audit: string): string => {
    try {
      load(audit);
    } catch (e) {
      if (e instanceof ConfigError) return e.problems.join('\n');
      throw e;
    }
    return '';
  };

  it('is read for the Redis sink, with a default of 1000 ms', () => {
    expect(load('  sink: redis\n  url: redis://127.0.0.1:6379\n  commandTimeoutMs: 250\n').audit).toMatchObject({ sink: 'redis', commandTimeoutMs: 250 });
    expect(load('  sink: redis\n  url: redis://127.0.0.1:6379\n').audit).toMatchObject({ sink: 'redis', commandTimeoutMs: 1000 });
  });

  it('is refused out of range or for the file sink', () => {
    expect(problems('  sink: redis\n  url: redis://127.0.0.1:6379\n  commandTimeoutMs: 10\n')).toMatch(/audit\.commandTimeoutMs/);
    expect(problems('  sink: file\n  commandTimeoutMs: 500\n')).toMatch(/'commandTimeoutMs' does not apply to the file audit sink/);
  });
});

/** How long `p` takes to settle, and whether it was fulfilled. */
async function settle(p: Promise<unknown>): Promise<{ ok: boolean; ms: number }> {
  const t = Date.now();
  const ok = await p.then(
    () => true,
    () => false,
  );
  return { ok, ms: Date.now() - t };
}

(redis ? describe : describe.skip)('the Redis audit sink on a stalled connection', () => {
  it('fails the batch in flight after one command timeout, refuses the next ones at once without consuming seqs, and resumes under a new writer', async () => {
    const stream = 'stall-sink';
    let n = 0;
    const sink = await RedisAuditSink.open({ url: redis!.url, stream, writerId: 'before', newWriterId: () => `after-${++n}`, commandTimeoutMs: 300 });
    try {
      for (let i = 1; i <= 5; i++) await sink.write(sampleRecord(i));
      redis!.pause();
      let first: { ok: boolean; ms: number };
      let stale: Array<{ ok: boolean; ms: number }>;
      let ready: { ok: boolean; ms: number; value: boolean };
      try {
        // Sent, then no answer: may or may not run when Redis resumes.
        first = await settle(sink.write(sampleRecord(6)));
        // Never sent: refused on the spot.
        stale = await Promise.all([7, 8, 9].map((i) => settle(sink.write(sampleRecord(i)))));
        const t = Date.now();
        const value = await sink.ready();
        ready = { ok: true, ms: Date.now() - t, value };
      } finally {
        redis!.resume();
      }
      expect(first.ok).toBe(false);
      expect(first.ms).toBeGreaterThanOrEqual(250);
      expect(first.ms).toBeLessThan(1_000);
      expect(sink.writerId).toBe('after-1');
      for (const r of stale) {
        expect(r.ok).toBe(false);
        expect(r.ms).toBeLessThan(100);
      }
      expect(ready).toMatchObject({ value: false });
      expect(ready.ms).toBeLessThan(100);
      // Back without a restart: the probe's answer ends the stale state.
      const deadline = Date.now() + 3_000;
      let i = 10;
      for (;;) {
        const r = await settle(sink.write(sampleRecord(i++)));
        if (r.ok) break;
        if (Date.now() > deadline) throw new Error('the sink did not resume after SIGCONT');
        await new Promise((res) => setTimeout(res, 50));
      }
      expect(sink.writerId).toBe('after-1');
      expect(await sink.ready()).toBe(true);
    } finally {
      await sink.close();
    }
    const items = await readStream(redis!.url, stream);
    const got = recordsOf(items);
    const before = got.filter((r) => r.chain.writer === 'before');
    // The timed-out batch is there or not (both are a whole chain); the refused ones never are.
    expect(before.map((r) => r.id).slice(0, 5)).toEqual(['req-1', 'req-2', 'req-3', 'req-4', 'req-5']);
    expect(before.length === 5 || (before.length === 6 && before[5].id === 'req-6')).toBe(true);
    expect(got.filter((r) => ['req-7', 'req-8', 'req-9'].includes(r.id))).toEqual([]);
    const after = got.filter((r) => r.chain.writer === 'after-1');
    expect(after[0].chain.seq).toBe(1);
    // 'before' was retired; 'after-1' opened with its end and sealed at close: nothing unsealed.
    expect(after[0].kind).toBe('writer-retired');
    const report = await verifyChains(items, { requireSeal: true });
    expect(report.problems).toEqual([]);
    expect(report.warnings).toEqual([]);
  }, 30_000);
});

(redis ? describe : describe.skip)('Redis stalled (SIGSTOP) under load, then resumed (SIGCONT)', () => {
  let stack: Stack;
  let closed = false;

  beforeAll(async () => {
    stack = await startStack({
      env: { PHI_GATEWAY_AUDIT: redis!.url },
      configure: (c) => ({ ...c, audit: { ...c.audit, commandTimeoutMs: COMMAND_TIMEOUT_MS } }),
      // A block rule puts the anomaly window's Redis client on every clinician request (it never fires).
      policy: (p) => {
        const anomalies = p.anomalies as { rules: unknown[] };
        anomalies.rules.push({ name: 'stall-block', kind: 'denial-burst', threshold: 100_000, windowMinutes: 5, block: true });
      },
    });
  }, 60_000);

  afterAll(async () => {
    redis?.resume();
    if (!closed) await stack?.close().catch(() => {});
    await redis?.dispose();
  });

  it('answers 503 within the bound while stalled, /readyz within its deadline, serves again after SIGCONT; the stream verifies', async () => {
    expect(stack.config.audit).toMatchObject({ sink: 'redis', commandTimeoutMs: COMMAND_TIMEOUT_MS });
    const token = await stack.token('clinician');
    const headers = { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' };
    const admin = `http://${stack.config.admin.host}:${stack.config.admin.port}`;
    const got: Timed[] = [];
    let stopped = false;
    const loops = Array.from({ length: 6 }, async (_, i) => {
      for (let k = i; !stopped; k++) {
        const path = PATHS[k % PATHS.length];
        got.push(await timedFetch(`${stack.url}${path}`, { path, headers }));
      }
    });
    const readyz: Array<{ status: number; ms: number; body: { audit?: boolean; reasons?: string[] } }> = [];
    const probe = async (): Promise<void> => {
      const t = Date.now();
      const res = await fetch(`${admin}/readyz`, { signal: AbortSignal.timeout(10_000) });
      readyz.push({ status: res.status, ms: Date.now() - t, body: (await res.json()) as { audit?: boolean; reasons?: string[] } });
    };
    let pausedAt = 0;
    let resumedAt = 0;
    let btg: Timed | undefined;
    try {
      await until(() => got.filter((r) => r.status === 200).length >= 20, 15_000, '200s before the stall');
      expect((await fetch(`${admin}/readyz`)).status).toBe(200);

      redis!.pause();
      pausedAt = Date.now();
      // At once: the audit check's PING is stuck behind nothing yet, and must not hold /readyz.
      await probe();
      // A break-glass open needs its session store (Redis) before the audit record.
      btg = await timedFetch(`${stack.url}/Patient/${DEMO.patients.alice}`, {
        path: 'btg',
        headers: { ...headers, 'x-purpose-of-use': 'BTG', 'x-break-glass-reason': 'unconscious patient in the emergency department, no chart access' },
      });
      await new Promise((r) => setTimeout(r, 1_500));
      await probe();
      await new Promise((r) => setTimeout(r, 1_500));
      await probe();
      redis!.resume();
      resumedAt = Date.now();
      await until(() => got.some((r) => r.start > resumedAt && r.status === 200), 10_000, 'a 200 after SIGCONT');
      await until(() => got.filter((r) => r.start > resumedAt && r.status === 200).length >= 20, 10_000, '200s after SIGCONT');
      // Ready again without a restart.
      const readyBy = Date.now() + 5_000;
      let readyStatus = 0;
      while (readyStatus !== 200 && Date.now() < readyBy) {
        readyStatus = (await fetch(`${admin}/readyz`)).status;
        if (readyStatus !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(readyStatus).toBe(200);
    } finally {
      stopped = true;
      redis!.resume();
      await Promise.all(loops);
    }
    await stack.close();
    closed = true;

    // While stalled (requests begun after SIGSTOP and before SIGCONT): only refusals, never data, each within the bound.
    const during = got.filter((r) => r.start >= pausedAt && r.start + r.ms < resumedAt);
    expect(during.length).toBeGreaterThanOrEqual(20);
    for (const r of during) {
      expect(r.status, r.text).toBe(503);
      expect(code(r.text)).toBe('audit-unavailable');
      expect(r.id).not.toBe('');
      for (const s of PHI) expect(r.text).not.toContain(s);
    }
    const overlapping = got.filter((r) => r.start >= pausedAt && r.start < resumedAt);
    const slowest = Math.max(...overlapping.map((r) => r.ms));
    expect(slowest, `slowest answer during the stall: ${slowest} ms`).toBeLessThan(STALL_BOUND_MS);
    // Once the batch in flight has timed out, refusals do not each wait out a command timeout.
    const later = during.filter((r) => r.start > pausedAt + 2 * COMMAND_TIMEOUT_MS);
    expect(later.length).toBeGreaterThanOrEqual(10);
    expect(median(later.map((r) => r.ms))).toBeLessThan(COMMAND_TIMEOUT_MS / 2);

    expect(btg!.status).toBeGreaterThanOrEqual(500);
    expect(btg!.ms).toBeLessThan(STALL_BOUND_MS);
    for (const s of PHI) expect(btg!.text).not.toContain(s);

    expect(readyz.length).toBe(3);
    for (const p of readyz) {
      expect(p.status).toBe(503);
      expect(p.ms, `/readyz took ${p.ms} ms`).toBeLessThan(READY_BOUND_MS);
      expect(p.body.audit).toBe(false);
      expect(p.body.reasons?.some((x) => x.startsWith('audit sink'))).toBe(true);
    }

    // Every 200 has its record; the chains verify.
    const items = await readAll(redis!.url);
    const ids = new Set(recordsOf(items).map((r) => r.id));
    const ok = got.filter((r) => r.status === 200);
    expect(ok.filter((r) => !ids.has(r.id)).map((r) => r.id)).toEqual([]);
    const report = await verifyChains(items);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    // The writers that timed out were retired, each closed by a note in its successor's chain; the
    // one that served after SIGCONT sealed at close. Nothing is unsealed, even with seals required.
    expect(report.warnings).toEqual([]);
    expect(recordsOf(items).filter((r) => r.kind === 'writer-retired').length).toBeGreaterThanOrEqual(1);
    const sealed = report.writerSummaries.filter((w) => w.sealed);
    const last = recordsOf(items).filter((r) => r.chain.writer === recordsOf(items).at(-1)!.chain.writer);
    expect(last.at(-1)?.kind).toBe('writer-seal');
    expect(last.some((r) => ok.some((o) => o.id === r.id && o.start > resumedAt))).toBe(true);
    expect(sealed.length).toBe(report.writers);
    const strict = await verifyChains(items, { requireSeal: true });
    expect(strict.problems).toEqual([]);
  }, 90_000);
});
