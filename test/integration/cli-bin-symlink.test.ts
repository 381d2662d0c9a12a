/**
 * The CLI runs however it is installed. Through an installed bin (npx, `npm link`, a global
 * install) `process.argv[1]` is a symlink, and every verb used to print nothing and exit 0, so a
 * scheduled `phi-gateway audit verify || alert` could never fire. Runs the built CLI (dist/)
 * through a symlink the way npm lays one out (`node_modules/.bin/phi-gateway` -> the package's
 * `dist/cli/main.js`), and through a symlinked directory.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMainModule } from '../../src/cli/main-module.js';

const main = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const distDir = new URL('../../dist', import.meta.url).pathname;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'phi-bin-'));
  mkdirSync(join(dir, 'node_modules', '.bin'), { recursive: true });
  symlinkSync(main, join(dir, 'node_modules', '.bin', 'phi-gateway'));
  symlinkSync(distDir, join(dir, 'linked-dist'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function run(bin: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, PHI_GATEWAY_CONFIG: undefined } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the bin through a symlink', () => {
  it('prints the usage for help, as the direct path does', () => {
    const direct = run(main, ['help']);
    expect(direct.stdout).toContain('usage: phi-gateway');
    for (const bin of [join(dir, 'node_modules', '.bin', 'phi-gateway'), join(dir, 'linked-dist', 'cli', 'main.js')]) {
      const r = run(bin, ['help']);
      expect(r.status, bin).toBe(0);
      expect(r.stdout, bin).toBe(direct.stdout);
    }
  });

  it('fails with a non-zero exit for an unknown verb and for a broken config, so `|| alert` fires', () => {
    const bin = join(dir, 'node_modules', '.bin', 'phi-gateway');
    expect(run(bin, ['no-such-verb']).status).not.toBe(0);
    const bad = join(dir, 'gateway.yaml');
    writeFileSync(bad, 'listen: [not, a, host]\n');
    const r = run(bin, ['check-config', '--config', bad]);
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toContain('gateway.yaml');
  });

  it('isMainModule: the same file through a link is the main module; another file is not', () => {
    const link = join(dir, 'node_modules', '.bin', 'phi-gateway');
    const url = new URL('../../dist/cli/main.js', import.meta.url).href;
    expect(isMainModule(url, link)).toBe(true);
    expect(isMainModule(url, main)).toBe(true);
    expect(isMainModule(url, new URL('../../dist/cli/seed.js', import.meta.url).pathname)).toBe(false);
    expect(isMainModule(url, undefined)).toBe(false);
    expect(isMainModule(url, join(dir, 'missing'))).toBe(false);
    // The check the CLI used to make: the link's URL is not the module's.
    expect(url === new URL(`file://${link}`).href).toBe(false);
  });
});
