/**
 * Fault injection: the Redis audit sink goes away under load, twice, while the built gateway (a
 * child process, configured as shipped) keeps serving 8 clients: first Redis is stopped (SIGTERM,
 * a clean goodbye), then killed (SIGKILL, connections cut mid-command); each time it comes back on
 * the same port from its AOF. Every answer is data with its record or a 503 `audit-unavailable`
 * without data, traced to the gateway's log line for it; after each restart the SAME process
 * serves data again without any operator action; SIGTERM at the end seals and exits 0; `audit
 * verify` accepts the trail, the CLI's default refusing it only for writer chains the outages
 * retired unsealed (a batch whose fate was unknown), which `--allow-unsealed` reports as warnings.
 * (audit-outage.test.ts is the in-process version of the first outage; audit-crash.test.ts kills
 * the gateway itself.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { readAll, recordsOf } from '../helpers/audit.js';
import { logLines, outcomeCode, PHI_STRINGS, until, untraced } from '../helpers/fault.js';
import { type GatewayProcess, type Load, runCli, spawnGateway, startLoad } from '../helpers/gateway-process.js';
import { type Idp, startIdp } from '../helpers/idp.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const PATHS = [`/Patient/${DEMO.patients.alice}`, `/Condition/${DEMO.hypertension}`, `/Observation?patient=${DEMO.patients.alice}`, `/Patient/${DEMO.patients.brian}`];
/** Refusals to see per outage, and answers with data to see after each restart. */
const REFUSALS = 8;
const SERVED_AGAIN = 10;

const redis: RedisHandle | undefined = await startRedis({ appendfsync: 'always' });

(redis ? describe : describe.skip)('Redis audit sink stopped and killed under load (child process)', () => {
  let upstream: RunningUpstream;
  let idp: Idp;
  let token: string;
  let running: GatewayProcess | undefined;

  beforeAll(async () => {
    upstream = await startFhirUpstream({ seed: true });
    idp = await startIdp();
    token = await idp.tokenFor('clinician');
  }, 60_000);

  afterAll(async () => {
    // A run that failed before its own stop leaves the process up: not past this file.
    await running?.kill('SIGKILL');
    await idp?.close();
    await upstream?.close();
    await redis?.dispose();
  });

  /** One outage: take Redis away, see refusals and /readyz 503, bring it back, see data again. */
  async function outage(gw: GatewayProcess, load: Load, takeAway: () => Promise<void>): Promise<{ downAt: number; upAt: number; readyWhileDown: number }> {
    await takeAway();
    const downAt = load.received.length;
    await until(`${REFUSALS} refusals while Redis is down`, () => load.received.slice(downAt).filter((r) => r.status === 503).length >= REFUSALS, 20_000);
    const readyWhileDown = (await fetch(`${gw.adminUrl}/readyz`, { signal: AbortSignal.timeout(10_000) })).status;
    await redis!.restart();
    const upAt = load.received.length;
    await until(`${SERVED_AGAIN} answers with data after Redis came back`, () => load.received.slice(upAt).filter((r) => r.status === 200).length >= SERVED_AGAIN, 20_000);
    return { downAt, upAt, readyWhileDown };
  }

  it('answers data with its record or 503 without data, serves again after each restart, loses nothing; the trail verifies', async () => {
    const gw = await spawnGateway({ upstream: upstream.url, issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri, audit: redis!.url });
    running = gw;
    const load = startLoad({
      base: gw.url,
      paths: PATHS,
      headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' },
      concurrency: 8,
      maxMs: 50_000,
    });
    const outages: Array<Awaited<ReturnType<typeof outage>>> = [];
    try {
      await load.waitFor(40, 10_000);
      outages.push(await outage(gw, load, () => redis!.stop()));
      outages.push(await outage(gw, load, () => redis!.kill()));
    } finally {
      load.stop();
      await load.done;
    }
    const exit = await gw.kill('SIGTERM', 20_000);
    expect(exit, gw.output.slice(-10).join('\n')).toEqual({ code: 0, signal: null });
    await until("the gateway's last log line", () => gw.output.some((l) => l.includes('"msg":"phi-gateway stopped"')), 3_000);

    const got = load.received;
    const refused = got.filter((r) => r.status === 503);
    expect(got.filter((r) => r.status !== 200 && r.status !== 503).map((r) => `${r.status} ${r.text.slice(0, 120)}`)).toEqual([]);
    expect(refused.length).toBeGreaterThanOrEqual(2 * REFUSALS);
    for (const r of refused) {
      expect(outcomeCode(r.text), r.text).toBe('audit-unavailable');
      expect(r.contentType).toMatch(/^application\/fhir\+json/);
      for (const s of PHI_STRINGS) expect(r.text, `503 body leaked ${s}`).not.toContain(s);
    }
    expect(got.find((r) => r.status === 200 && r.path === PATHS[0])?.text).toContain(DEMO.ssn.alice);
    // The process did not restart: data before the first outage, after each restart, one pid throughout.
    expect(got.slice(0, outages[0].downAt).some((r) => r.status === 200)).toBe(true);
    for (const o of outages) {
      expect(o.readyWhileDown).toBe(503);
      expect(got.slice(o.upAt).filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(SERVED_AGAIN);
    }

    // Every answer traced: each 200 to its record in the stream (Redis was itself killed once, so
    // this also proves appendfsync always kept what was acknowledged), each refusal to its log line.
    const stored = recordsOf(await readAll(redis!.url));
    const byId = new Map<string, ChainedRecord>(stored.map((r) => [r.id, r]));
    const logs = logLines(gw.output);
    expect(untraced(got, byId, logs, { refusalsAbsent: false })).toEqual([]);
    expect(logs.find((l) => l.msg === 'phi-gateway stopped')?.sealed).toBe(true);
    // The log accounts for every refusal, collapsed or not (a line with `repeated: n` stands for n).
    const withheld = logs.filter((l) => l.msg === 'audit write failed: response withheld (503)');
    expect(withheld.reduce((n, l) => n + (l.repeated ?? 1), 0)).toBe(refused.length);
    expect(stored.at(-1)?.kind).toBe('writer-seal');

    // The trail verifies with the CLI's default, which demands that every writer chain be closed:
    // an outage that cut a batch mid-command retires its writer, and the successor's chain records
    // where the retired one ends, so no writer is left unsealed.
    const writers = new Set(stored.map((r) => r.chain.writer));
    const retiredNotes = stored.filter((r) => r.kind === 'writer-retired');
    expect(new Set(retiredNotes.map((r) => (r.details as { retired: string }).retired)).size).toBe(writers.size - 1);
    const strict = await runCli(['audit', 'verify', '--source', redis!.url]);
    expect(strict.code, strict.stdout + strict.stderr).toBe(0);
    expect(strict.stdout).toMatch(new RegExp(`audit verify: intact: ${stored.length} records, ${writers.size} writer chain`));
    expect(strict.stdout).not.toMatch(/without a seal/);
  }, 60_000);
});
