/**
 * Hot reload (issue 7): a policy change takes effect atomically between requests under load, every
 * request is answered, each audit record names the policy version it was decided under; an invalid
 * file is refused (file:line:col, metric) and the running policy keeps serving; the file watcher
 * follows editors that replace files; gateway.yaml changes are split into live and restart-required.
 */
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { ConfigError, loadGatewayConfig } from '../../src/config/load.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { createLogger } from '../../src/server/logger.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { freePort } from '../helpers/gateway.js';
import { startLoad } from '../helpers/gateway-process.js';
import { type Idp, startIdp } from '../helpers/idp.js';

const SHIPPED_POLICY = readFileSync(new URL('../../config/policy.yaml', import.meta.url), 'utf8');
const BILLING_PATIENT = '        elements: [identifier, name, gender, birthDate, address]';
// The same data set without `address`: the change the load must see take effect.
const NARROWED_PATIENT = '        elements: [identifier, name, gender, birthDate]';
const NARROWED = SHIPPED_POLICY.replace(BILLING_PATIENT, NARROWED_PATIENT);

let dir: string;
let auditDir: string;
let gatewayFile: string;
let policyFile: string;
let env: Record<string, string>;
let upstream: RunningUpstream;
let idp: Idp;
let gw: RunningGateway;
const logs: string[] = [];
let billing: Record<string, string>;

async function records(): Promise<Map<string, ChainedRecord>> {
  const out = new Map<string, ChainedRecord>();
  for await (const item of openAuditSource(`file:${auditDir}`)) {
    if ('record' in item) out.set(item.record.id, item.record as ChainedRecord);
  }
  return out;
}

async function metric(series: string): Promise<number | undefined> {
  const text = await (await fetch(`${adminUrl()}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function adminUrl(): string {
  const a = gw.admin!.server.address();
  return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
}

/** Replaces a file the way many editors save: write a temp file, rename it over the original. */
function replaceFile(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

async function readAlice(): Promise<{ status: number; id: string; hasAddress: boolean }> {
  const res = await fetch(`${gw.url}/Patient/${DEMO.patients.alice}`, { headers: billing });
  const body = (await res.json()) as Record<string, unknown>;
  return { status: res.status, id: res.headers.get('x-request-id') ?? '', hasAddress: 'address' in body };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'phi-ops-reload-'));
  auditDir = join(dir, 'audit');
  gatewayFile = join(dir, 'gateway.yaml');
  policyFile = join(dir, 'policy.yaml');
  copyFileSync(new URL('../../config/gateway.yaml', import.meta.url), gatewayFile);
  writeFileSync(policyFile, SHIPPED_POLICY);
  upstream = await startFhirUpstream({ seed: true });
  idp = await startIdp();
  env = {
    PHI_GATEWAY_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_UPSTREAM: upstream.url,
    PHI_GATEWAY_ISSUER: idp.issuer,
    PHI_GATEWAY_AUDIENCE: idp.audience,
    PHI_GATEWAY_JWKS_URI: idp.jwksUri,
    PHI_GATEWAY_AUDIT: `file:${auditDir}`,
    PHI_GATEWAY_PSEUDONYM_KEY: 'ops-reload-test-pseudonym-key-0123456789abcdef',
  };
  const config = loadGatewayConfig(gatewayFile, env);
  const logger = createLogger('info', { write: (line: string) => void logs.push(line) });
  gw = await startGateway(config, { logger, reloadConfig: () => loadGatewayConfig(gatewayFile, env), watch: { debounceMs: 50 } });
  billing = { authorization: `Bearer ${await idp.tokenFor('billing')}`, 'x-purpose-of-use': 'HPAYMT' };
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await idp?.close();
  await upstream?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('hot reload', () => {
  it('a reload that narrows a role data set takes effect under load without dropping a request', async () => {
    const before = await readAlice();
    expect(before).toMatchObject({ status: 200, hasAddress: true });
    const oldVersion = gw.reloadWithReport('test').policyVersion;

    const load = startLoad({ base: gw.url, paths: [`/Patient/${DEMO.patients.alice}`], headers: billing, concurrency: 8, maxMs: 30_000 });
    await load.waitFor(60, 15_000);
    writeFileSync(policyFile, NARROWED);
    const report = gw.reloadWithReport('test');
    const reloadedAt = load.received.length;
    await load.waitFor(reloadedAt + 60, 15_000);
    load.stop();
    await load.done;

    expect(report.policyChanged).toBe(true);
    expect(report.policyVersion).not.toBe(oldVersion);
    expect(load.errors()).toBe(0);
    expect(load.received.length).toBeGreaterThanOrEqual(reloadedAt + 60);
    expect(load.received.every((r) => r.status === 200)).toBe(true);

    // Each answer matches the policy its audit record says it was decided under: never a mix.
    const stored = await records();
    let oldSeen = 0;
    let newSeen = 0;
    for (const r of load.received) {
      const rec = stored.get(r.id);
      expect(rec, `audit record for ${r.id}`).toBeDefined();
      const hasAddress = 'address' in (JSON.parse(r.text) as object);
      if (rec!.policyVersion === oldVersion) {
        oldSeen++;
        expect(hasAddress).toBe(true);
      } else {
        newSeen++;
        expect(rec!.policyVersion).toBe(report.policyVersion);
        expect(hasAddress).toBe(false);
      }
    }
    expect(oldSeen).toBeGreaterThanOrEqual(60);
    expect(newSeen).toBeGreaterThanOrEqual(60);
    // Requests started after the reload returned are all decided under the new policy.
    expect(load.received.slice(reloadedAt + 8).every((r) => stored.get(r.id)!.policyVersion === report.policyVersion)).toBe(true);
    const after = await readAlice();
    expect(after).toMatchObject({ status: 200, hasAddress: false });
    expect(stored.size).toBeGreaterThan(0);
  });

  it('an invalid policy is refused with file:line:col, counted, and the running policy keeps serving', async () => {
    const running = gw.reloadWithReport('test').policyVersion;
    const failuresBefore = (await metric('phi_gateway_config_reloads_total{result="failure"}')) ?? 0;
    // An unknown key inside billing's Patient rule, next to a change that must not half-apply.
    const broken = SHIPPED_POLICY.replace(BILLING_PATIENT, `${BILLING_PATIENT}\n        colour: blue`);
    expect(broken).not.toBe(SHIPPED_POLICY);
    replaceFile(policyFile, broken);
    let err: unknown;
    try {
      gw.reloadWithReport('test');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    const line = broken.split('\n').findIndex((l) => l.includes('colour: blue')) + 1;
    expect(problems.some((p) => new RegExp(`policy\\.yaml:${line}:9 .*colour`).test(p))).toBe(true);
    // Logged with every problem, counted, and nothing changed.
    const logged = logs.map((l) => JSON.parse(l) as { msg: string; problems?: string[] }).filter((l) => l.msg.startsWith('configuration reload refused'));
    expect(logged.at(-1)?.problems).toEqual(problems);
    // The watcher may also have seen the replace and refused it: at least this reload is counted.
    expect(await metric('phi_gateway_config_reloads_total{result="failure"}')).toBeGreaterThanOrEqual(failuresBefore + 1);
    expect(await metric('phi_gateway_config_last_reload_successful')).toBe(0);
    const still = await readAlice();
    expect(still).toMatchObject({ status: 200, hasAddress: false });
    expect((await records()).get(still.id)?.policyVersion).toBe(running);
    const ready = (await (await fetch(`${adminUrl()}/readyz`)).json()) as { policyVersion: string };
    expect(ready.policyVersion).toBe(running);
  });

  it('follows the policy file on disk (editor-style replace) without a signal', async () => {
    replaceFile(policyFile, SHIPPED_POLICY);
    const deadline = Date.now() + 10_000;
    let r = await readAlice();
    while (!r.hasAddress && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 50));
      r = await readAlice();
    }
    expect(r).toMatchObject({ status: 200, hasAddress: true });
    expect(logs.some((l) => l.includes('"trigger":"file-change"') && l.includes('configuration reloaded'))).toBe(true);
    expect(await metric('phi_gateway_config_last_reload_successful')).toBe(1);
  });

  it('applies live gateway settings and reports the others as needing a restart', async () => {
    const text = readFileSync(gatewayFile, 'utf8');
    const changed = text
      .replace('logLevel: info', 'logLevel: debug')
      .replace('requestBodyBytes: 1048576', 'requestBodyBytes: 2048');
    expect(changed).not.toBe(text);
    writeFileSync(gatewayFile, changed);
    const report = gw.reloadWithReport('test');
    expect(report.applied).toContain('logLevel');
    expect(report.restartRequired).toEqual(['limits']);
    expect(gw.logger.level).toBe('debug');
    const warned = logs.map((l) => JSON.parse(l) as { msg: string; settings?: string[] }).filter((l) => l.msg.startsWith('changed settings take effect only after a restart'));
    expect(warned.at(-1)?.settings).toEqual(['limits']);
    // The running limit (1 MiB) still applies: a 4 KiB body is not refused as too large.
    const res = await fetch(`${gw.url}/Patient/_search`, {
      method: 'POST',
      headers: { ...billing, 'content-type': 'application/x-www-form-urlencoded' },
      body: `name=${'x'.repeat(4096)}`,
    });
    await res.arrayBuffer();
    expect(res.status).not.toBe(413);
    writeFileSync(gatewayFile, text);
    gw.reloadWithReport('test');
    expect(gw.logger.level).toBe('info');
  });
});
