/**
 * The CLI as an administrator gets it: `npm pack`, the tarball installed into an empty directory
 * (`npm init -y`, `npm install <tgz> --omit=dev`), and every command run through the bin npm lays
 * out, `node_modules/.bin/phi-gateway` (a symlink; npx and global installs run the same link). The
 * bin once printed nothing and exited 0 through that link, so `phi-gateway audit verify || alert`
 * never alerted. Every verb's and sub-verb's --help, check-config on the shipped and on a broken
 * config, and audit verify on an intact and a tampered trail. The working directory holds no
 * config: help must not need one. Needs `npm run build` and the npm cache or registry.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditSink } from '../../src/audit/index.js';
import { USAGE, VERBS } from '../../src/cli/main.js';
import { REPO_ROOT } from '../helpers/gateway-process.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

const exec = promisify(execFile);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
let dir: string;
let app: string;
let bin: string;
let installed: string;

beforeAll(async () => {
  if (!existsSync(join(REPO_ROOT, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  dir = mkdtempSync(join(tmpdir(), 'phi-cli-installed-'));
  await exec(npm, ['pack', '--pack-destination', dir, '--silent'], { cwd: REPO_ROOT, timeout: 60_000 });
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error('npm pack wrote no tarball');
  app = join(dir, 'app');
  mkdirSync(app);
  await exec(npm, ['init', '-y'], { cwd: app, timeout: 30_000 });
  await exec(npm, ['install', join(dir, tgz), '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, timeout: 150_000 });
  bin = join(app, 'node_modules', '.bin', 'phi-gateway');
  installed = join(app, 'node_modules', 'phi-gateway');
}, 240_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs the bin itself (its `#!/usr/bin/env node` line), as a shell or cron job would. */
function phiGateway(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      cwd: app,
      // No PHI_GATEWAY_* from the test's environment; this node first on PATH for the shebang.
      env: { PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, HOME: process.env.HOME },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const SUB_VERBS: ReadonlyArray<readonly [string, string]> = [
  ['audit', 'export'],
  ['audit', 'verify'],
  ['audit', 'keygen'],
  ['break-glass', 'list'],
  ['break-glass', 'review'],
  ['report', 'usage'],
  ['report', 'access'],
  ['report', 'break-glass'],
  ['policy', 'diff'],
];

describe('the installed package', () => {
  it('has the bin as a symlink into the package, and no config in the working directory', () => {
    expect(lstatSync(bin).isSymbolicLink()).toBe(true);
    expect(readlinkSync(bin)).toMatch(/phi-gateway[/\\]dist[/\\]cli[/\\]main\.js$/);
    expect(existsSync(join(installed, 'config', 'gateway.yaml'))).toBe(true);
    expect(existsSync(join(app, 'config'))).toBe(false);
    for (const dev of ['typescript', 'vitest', 'tsx']) expect(existsSync(join(app, 'node_modules', dev)), dev).toBe(false);
  });

  it('prints the overview for --help and help (exit 0), and fails an unknown verb with the overview on stderr', async () => {
    for (const args of [['--help'], ['help']]) {
      const r = await phiGateway(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toBe(USAGE);
    }
    const none = await phiGateway([]);
    expect(none.status).toBe(1);
    expect(none.stderr).toBe(USAGE);
    const unknown = await phiGateway(['verify-audit']);
    expect(unknown.status).toBe(1);
    expect(unknown.stdout).toBe('');
    expect(unknown.stderr).toContain('unknown verb "verify-audit"');
    expect(unknown.stderr).toContain(USAGE);
  });

  it.each(Object.keys(VERBS))('%s --help prints its usage (exit 0)', async (verb) => {
    const r = await phiGateway([verb, '--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`phi-gateway ${verb}`);
    // The installed build prints what the source declares (a stale dist fails here).
    expect(r.stdout).toBe((await VERBS[verb]()).USAGE);
    expect(r.stderr).toBe('');
  });

  it('-h and help <verb> print the same usage (exit 0)', async () => {
    for (const verb of ['audit', 'check-config']) {
      const usage = (await VERBS[verb]()).USAGE;
      for (const args of [[verb, '-h'], ['help', verb]]) {
        const r = await phiGateway(args);
        expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
        expect(r.stdout, args.join(' ')).toBe(usage);
      }
    }
  });

  it.each(SUB_VERBS)('%s %s --help prints the usage (exit 0)', async (verb, sub) => {
    const r = await phiGateway([verb, sub, '--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`phi-gateway ${verb}`);
    expect(r.stdout).toContain(sub);
  });

  it('check-config accepts the shipped config/gateway.yaml (exit 0)', async () => {
    const r = await phiGateway(['check-config', '--config', join(installed, 'config', 'gateway.yaml')]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ok: .*gateway\.yaml, .*policy\.yaml \(policy version [0-9a-f]+\)$/m);
  });

  it('check-config refuses a broken copy of it with file:line:col on stderr (exit non-zero)', async () => {
    const broken = join(dir, 'broken');
    mkdirSync(broken, { recursive: true });
    copyFileSync(join(installed, 'config', 'policy.yaml'), join(broken, 'policy.yaml'));
    const lines = readFileSync(join(installed, 'config', 'gateway.yaml'), 'utf8').split('\n');
    const at = lines.findIndex((l) => /^listen: /.test(l));
    expect(at).toBeGreaterThanOrEqual(0);
    lines[at] = 'listen: [not, a, host]';
    const file = join(broken, 'gateway.yaml');
    writeFileSync(file, lines.join('\n'));
    const r = await phiGateway(['check-config', '--config', file]);
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('ok:');
    // `listen: [` : the value starts in column 9 of that line (1-based).
    expect(r.stderr).toContain(`${file}:${at + 1}:9 `);
    expect(r.stderr).toMatch(/listen/);
  });

  it('audit verify exits 0 on an intact trail and non-zero on a tampered one, so `|| alert` fires', async () => {
    const trail = join(dir, 'audit');
    const sink = await createAuditSink({ sink: 'file', path: trail, failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 });
    for (let i = 0; i < 5; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const ok = await phiGateway(['audit', 'verify', '--source', `file:${trail}`]);
    expect(ok.status, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toContain('intact');

    const file = join(trail, readdirSync(trail).find((f) => f.endsWith('.ndjson')) ?? readdirSync(trail)[0]);
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('"decision":"allow"');
    writeFileSync(file, text.replace('"decision":"allow"', '"decision":"deny"'));
    const bad = await phiGateway(['audit', 'verify', '--source', `file:${trail}`]);
    expect(bad.status).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/BROKEN/);
  });
});
