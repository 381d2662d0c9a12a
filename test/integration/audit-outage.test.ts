/**
 * Issue 3, fail closed: Redis (the audit sink) is stopped while clients are reading PHI through
 * the gateway. Every answer during the outage is 503 `audit-unavailable` with no PHI in it;
 * Redis comes back on the same port and the same gateway (no restart) serves again; every 200 a
 * client received has its record in the stream, and the writer chain(s) verify.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChains } from '../../src/audit/verify.js';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { readAll } from '../helpers/audit.js';
import { startLoad } from '../helpers/gateway-process.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const redis: RedisHandle | undefined = await startRedis({ appendfsync: 'always' });

/** Strings that identify a demo patient: none may reach a client that got no data. */
const PHI: string[] = [
  ...Object.values(DEMO.ssn),
  ...Object.values(DEMO.names),
  ...DEMO.families,
  ...Object.values(DEMO.mrn),
  ...Object.values(DEMO.phones),
  ...Object.values(DEMO.patients),
];

const PATHS = [`/Patient/${DEMO.patients.alice}`, `/Patient/${DEMO.patients.brian}`, `/Observation?patient=${DEMO.patients.alice}`];

function code(text: string): string | undefined {
  try {
    const oo = JSON.parse(text) as { resourceType?: string; issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
    if (oo.resourceType !== 'OperationOutcome') return undefined;
    return oo.issue?.[0]?.details?.coding?.find((c) => c.system === ERROR_SYSTEM)?.code;
  } catch {
    return undefined;
  }
}

const readStream = readAll;

async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

(redis ? describe : describe.skip)('Redis audit sink stopped mid-run', () => {
  let stack: Stack;
  let closed = false;

  beforeAll(async () => {
    stack = await startStack({ env: { PHI_GATEWAY_AUDIT: redis!.url } });
  });

  afterAll(async () => {
    if (!closed) await stack?.close();
    await redis?.dispose();
  });

  it('answers 503 audit-unavailable without PHI while Redis is down, then resumes without a restart; the chain verifies', async () => {
    expect(stack.config.audit.sink).toBe('redis');
    const token = await stack.token('clinician');
    const admin = `http://${stack.config.admin.host}:${stack.config.admin.port}`;
    const load = startLoad({
      base: stack.url,
      paths: PATHS,
      headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' },
      concurrency: 4,
      maxMs: 20_000,
    });
    let stoppedAt = -1;
    let restartedAt = -1;
    try {
      await load.waitFor(20, 8_000);
      await redis!.stop();
      stoppedAt = load.received.length;
      // Several refusals while it is down (each one a full answer the client received).
      await until(() => load.received.slice(stoppedAt).filter((r) => r.status === 503).length >= 10, 8_000, '503s during the outage');
      const ready = await fetch(`${admin}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { audit: boolean }).audit).toBe(false);

      await redis!.restart();
      restartedAt = load.received.length;
      await until(() => load.received.slice(restartedAt).filter((r) => r.status === 200).length >= 10, 10_000, '200s after Redis came back');
    } finally {
      load.stop();
      await load.done;
    }
    await stack.close();
    closed = true;

    const got = load.received;
    const ok = got.filter((r) => r.status === 200);
    const refused = got.filter((r) => r.status === 503);
    // Only two kinds of answer exist: data with its record, or no data.
    expect(got.filter((r) => r.status !== 200 && r.status !== 503).map((r) => r.status)).toEqual([]);
    expect(refused.length).toBeGreaterThanOrEqual(10);

    for (const r of refused) {
      expect(code(r.text)).toBe('audit-unavailable');
      expect(r.contentType).toMatch(/^application\/fhir\+json/);
      expect(r.id).not.toBe('');
      for (const s of PHI) expect(r.text, `503 body leaked ${s}`).not.toContain(s);
    }
    // The same requests do carry PHI when allowed, so the absence above means something.
    const alice = ok.find((r) => r.path === `/Patient/${DEMO.patients.alice}`);
    expect(alice?.text).toContain(DEMO.ssn.alice);

    const items = await readStream(redis!.url);
    const ids = new Set(items.flatMap((i) => ('record' in i ? [i.record.id] : [])));
    const missing = ok.filter((r) => !ids.has(r.id)).map((r) => r.id);
    expect(missing, `${missing.length} of ${ok.length} 200 responses have no audit record`).toEqual([]);
    // Served before, refused during, served again after, by the same gateway instance.
    expect(got.slice(0, stoppedAt).some((r) => r.status === 200)).toBe(true);
    expect(got.slice(restartedAt).filter((r) => r.status === 200 && ids.has(r.id)).length).toBeGreaterThanOrEqual(10);

    const report = await verifyChains(items);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.warnings.every((w) => w.kind === 'unsealed')).toBe(true);
    // The gateway closed cleanly at the end: its current writer chain is sealed.
    expect(report.writers - report.warnings.length).toBeGreaterThanOrEqual(1);
  }, 60_000);
});

