/**
 * An audit trail that could not be sealed at shutdown is an error, not a clean stop: `serve` exits
 * non-zero (a supervisor or a `phi-gateway serve || alert` wrapper notices), and the log says why.
 * Two outages: the file sink's directory removed mid-run (the seal needs a new file, which cannot
 * be created: the same as a full or read-only disk), and Redis out of memory (every write refused
 * with OOM). The outage also shows the log collapsing: one line per repeated error and window,
 * with a count, instead of one per refused request.
 */
import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { AuditSealError } from '../../src/server/runtime.js';
import { readAll, recordsOf } from '../helpers/audit.js';
import { startStack } from '../helpers/gateway.js';
import { spawnGateway } from '../helpers/gateway-process.js';
import { type Idp, startIdp } from '../helpers/idp.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const PATIENT = `/Patient/${DEMO.patients.alice}`;

describe('file sink whose directory disappears (in process)', () => {
  it('refuses requests with 503, logs the repeated failure once per window with a count, and close() reports the unsealed chain', async () => {
    const stack = await startStack({ configure: (c) => ({ ...c, audit: { ...c.audit, rotateBytes: 1 } }) });
    try {
      const ok = await stack.get(PATIENT, { role: 'clinician', purpose: 'TREAT' });
      expect(ok.status).toBe(200);
      expect((await stack.auditRecords()).some((r) => r.id === ok.headers.get('x-request-id'))).toBe(true);

      // Every batch goes to a new file (rotateBytes 1), and the directory is gone.
      rmSync(stack.auditDir, { recursive: true, force: true });
      const statuses: number[] = [];
      for (let i = 0; i < 40; i++) statuses.push((await stack.get(PATIENT, { role: 'clinician', purpose: 'TREAT' })).status);
      expect(new Set(statuses)).toEqual(new Set([503]));

      await expect(stack.gateway.close()).rejects.toBeInstanceOf(AuditSealError);
      const lines = stack.logs.map((l) => JSON.parse(l) as { msg: string; repeated?: number; sealed?: boolean; err?: { code?: string; syscall?: string } });
      // 40 refusals: the first line as it happened, the other 39 counted in one line (written by the flush at shutdown).
      const withheld = lines.filter((l) => l.msg === 'audit write failed: response withheld (503)');
      expect(withheld.map((l) => l.repeated)).toEqual([undefined, 39]);
      expect(withheld[0].err).toMatchObject({ code: 'ENOENT', syscall: 'open' });
      expect(lines.some((l) => l.msg === 'audit chain could not be sealed: the trail ends unsealed')).toBe(true);
      expect(lines.find((l) => l.msg === 'phi-gateway stopped')?.sealed).toBe(false);
    } finally {
      await stack.close().catch(() => {});
    }
  }, 60_000);
});

const redis: RedisHandle | undefined = await startRedis();

(redis ? describe : describe.skip)('serve with a Redis sink that runs out of memory (child process)', () => {
  let upstream: RunningUpstream;
  let idp: Idp;
  let token: string;

  beforeAll(async () => {
    upstream = await startFhirUpstream({ seed: true });
    idp = await startIdp();
    token = await idp.tokenFor('clinician');
  }, 60_000);

  afterAll(async () => {
    await idp?.close();
    await upstream?.close();
    await redis?.dispose();
  });

  async function run(db: number, outage: boolean) {
    const gw = await spawnGateway({
      upstream: upstream.url,
      issuer: idp.issuer,
      audience: idp.audience,
      jwksUri: idp.jwksUri,
      audit: `${redis!.url}/${db}`,
    });
    const res = await fetch(`${gw.url}${PATIENT}`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const admin = new Redis(redis!.url);
    try {
      if (outage) {
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');
      }
      const exit = await gw.kill('SIGTERM', 20_000);
      return { exit, output: gw.output, records: recordsOf(await readAll(`${redis!.url}/${db}`)) };
    } finally {
      await admin.config('SET', 'maxmemory', '0');
      admin.disconnect();
    }
  }

  it('exits 0 with a sealed chain when Redis takes the seal', async () => {
    const { exit, output, records } = await run(1, false);
    expect(exit, output.slice(-5).join('\n')).toEqual({ code: 0, signal: null });
    expect(records.at(-1)?.kind).toBe('writer-seal');
  }, 60_000);

  it('exits non-zero, and logs why, when the seal is refused', async () => {
    const { exit, output, records } = await run(2, true);
    expect(exit, output.slice(-5).join('\n')).toEqual({ code: 1, signal: null });
    expect(records.length).toBeGreaterThan(0);
    expect(records.at(-1)?.kind).not.toBe('writer-seal');
    const logged = output.join('\n');
    expect(logged).toContain('audit chain could not be sealed');
    // The sink's own line names the cause: Redis's OOM reply, not an empty `err`.
    const seal = output.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string; err?: { message?: string } }).find((l) => l.msg === 'audit seal could not be written');
    expect(seal?.err?.message).toMatch(/^OOM /);
    expect(output.some((l) => l.includes('the audit chain could not be sealed (see the log)'))).toBe(true);
  }, 60_000);
});
