/**
 * Graceful shutdown (issue 7). The built gateway as a child process under 16-client load gets
 * SIGTERM: it exits 0, every request it accepted was answered, every 2xx has its audit record, the
 * chain is sealed and verifies. In process: an in-flight request finishes within the grace period,
 * and one that outlives it is cut so shutdown still completes; readiness turns 503 while draining.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { loadGatewayConfig } from '../../src/config/load.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { createLogger } from '../../src/server/logger.js';
import { startGateway } from '../../src/server/runtime.js';
import { freePort, testPolicyFile } from '../helpers/gateway.js';
import { runCli, spawnGateway, startLoad } from '../helpers/gateway-process.js';
import { type Idp, startIdp } from '../helpers/idp.js';

const PATHS = [`/Patient/${DEMO.patients.alice}`, `/Observation?patient=${DEMO.patients.alice}`, `/Patient/${DEMO.patients.brian}`];

let upstream: RunningUpstream;
let idp: Idp;
let token: string;
const dirs: string[] = [];
const TEST_POLICY = testPolicyFile();
afterAll(() => TEST_POLICY.remove());

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'phi-ops-shutdown-'));
  dirs.push(d);
  return d;
}

async function records(dir: string): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  for await (const item of openAuditSource(`file:${dir}`)) if ('record' in item) out.push(item.record as ChainedRecord);
  return out;
}

beforeAll(async () => {
  upstream = await startFhirUpstream({ seed: true });
  idp = await startIdp();
  token = await idp.tokenFor('clinician');
}, 60_000);

afterAll(async () => {
  await idp?.close();
  await upstream?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('SIGTERM under load (child process)', () => {
  it('exits 0, answers every accepted request, and loses no audit record', async () => {
    const dir = tempDir();
    const gw = await spawnGateway({ upstream: upstream.url, issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri, audit: `file:${dir}` });
    const load = startLoad({
      base: gw.url,
      paths: PATHS,
      headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' },
      concurrency: 16,
      maxMs: 30_000,
    });
    await load.waitFor(150, 20_000);
    const exit = await gw.kill('SIGTERM', 20_000);
    load.stop();
    await load.done;

    expect(exit, gw.output.slice(-10).join('\n')).toEqual({ code: 0, signal: null });
    expect(load.received.length).toBeGreaterThanOrEqual(150);
    const stored = await records(dir);
    const fhir = stored.filter((r) => r.kind === 'fhir');
    const byId = new Map(fhir.map((r) => [r.id, r]));
    const answered = new Set(load.received.map((r) => r.id));
    const ok = load.received.filter((r) => r.status === 200);
    expect(ok.length).toBeGreaterThanOrEqual(150);
    // Every 2xx a client received has its record, describing that answer.
    for (const r of ok) expect(byId.get(r.id)?.status, r.id).toBe(200);
    // Every request the gateway accepted (and audited) was answered to its client: none was cut.
    for (const r of fhir) expect(answered.has(r.id), `audited but never answered: ${r.id}`).toBe(true);
    // Refusals while closing are 503s with no data; nothing else.
    for (const r of load.received) expect([200, 503]).toContain(r.status);
    // A clean close seals the writer's chain, and the whole trail verifies.
    expect(stored.at(-1)?.kind).toBe('writer-seal');
    const verify = await runCli(['audit', 'verify', '--source', `file:${dir}`]);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(gw.output.some((l) => l.includes('"msg":"phi-gateway stopped"'))).toBe(true);
  }, 90_000);
});

describe('shutdown grace period (in process)', () => {
  let slow: Server;
  let slowUrl: string;
  const pending = new Set<() => void>();

  beforeAll(async () => {
    // Answers /Patient/slow after 600 ms, /Patient/stuck never; everything else like a minimal FHIR server.
    slow = createServer((req, res) => {
      const send = () => {
        const body = JSON.stringify({ resourceType: 'Patient', id: 'slow' });
        res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      if (req.url?.includes('/Patient/stuck')) {
        pending.add(() => res.destroy());
        return;
      }
      if (req.url?.includes('/Patient/slow')) setTimeout(send, 600);
      else send();
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/fhir`;
  });

  afterAll(async () => {
    for (const p of pending) p();
    slow.closeAllConnections();
    await new Promise((r) => slow.close(r));
  });

  async function start(graceMs: number) {
    const dir = tempDir();
    const env = {
      PHI_GATEWAY_LISTEN: `127.0.0.1:${await freePort()}`,
      PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
      PHI_GATEWAY_UPSTREAM: slowUrl,
      PHI_GATEWAY_ISSUER: idp.issuer,
      PHI_GATEWAY_AUDIENCE: idp.audience,
      PHI_GATEWAY_JWKS_URI: idp.jwksUri,
      PHI_GATEWAY_AUDIT: `file:${dir}`,
      // The shipped policy without its care-relationship requirements: the token names no fhirUser.
      PHI_GATEWAY_POLICY: TEST_POLICY.file,
    };
    const config = { ...loadGatewayConfig(new URL('../../config/gateway.yaml', import.meta.url).pathname, env), shutdownGraceMs: graceMs };
    const gw = await startGateway(config, { logger: createLogger('silent') });
    return { gw, dir, admin: `http://${config.admin.host}:${config.admin.port}` };
  }

  const headers = () => ({ authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' });

  it('lets an in-flight request finish, reports draining, then refuses new connections', async () => {
    const { gw, dir, admin } = await start(5_000);
    const inflight = fetch(`${gw.url}/Patient/slow`, { headers: headers() });
    await new Promise((r) => setTimeout(r, 150));
    const t0 = Date.now();
    const closing = gw.close();
    expect(gw.draining).toBe(true);
    const ready = await fetch(`${admin}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ status: 'draining' });
    const res = await inflight;
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id');
    expect(((await res.json()) as { id: string }).id).toBe('slow');
    await closing;
    // It waited for the slow answer, not for the grace period.
    expect(Date.now() - t0).toBeLessThan(4_000);
    await expect(fetch(`${gw.url}/Patient/slow`, { headers: headers() })).rejects.toThrow();
    const stored = await records(dir);
    expect(stored.find((r) => r.id === id)?.status).toBe(200);
    expect(stored.at(-1)?.kind).toBe('writer-seal');
  });

  it('cuts a request that outlives the grace period and still flushes and closes the audit sink', async () => {
    const { gw, dir } = await start(300);
    const fast = await fetch(`${gw.url}/Patient/fast`, { headers: headers() });
    expect(fast.status).toBe(200);
    const stuck = fetch(`${gw.url}/Patient/stuck`, { headers: headers() }).then(
      (r) => r.status,
      () => 'cut',
    );
    await new Promise((r) => setTimeout(r, 150));
    const t0 = Date.now();
    await gw.close();
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(5_000);
    expect(await stuck).toBe('cut');
    const stored = await records(dir);
    expect(stored.find((r) => r.id === fast.headers.get('x-request-id'))?.status).toBe(200);
    expect(stored.at(-1)?.kind).toBe('writer-seal');
  });
});
