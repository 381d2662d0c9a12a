// The npm registry reachable here serves Biome's linux binaries only, so `npm install` writes a
// lockfile without Biome's other platform packages, and `npm ci` then refuses it as "not in sync".
// This adds those optional, platform-specific entries (never installed on Linux) so `npm ci` works.
// Run after any `npm install` that rewrites package-lock.json: `node scripts/lockfile-platforms.mjs`.
import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const pkgs = lock.packages;
const biome = pkgs['node_modules/@biomejs/biome'];
if (!biome) throw new Error('no @biomejs/biome in the lockfile');
const platforms = {
  'android-arm64': ['android', 'arm64'],
  'android-x64': ['android', 'x64'],
  'darwin-arm64': ['darwin', 'arm64'],
  'darwin-x64': ['darwin', 'x64'],
  'linux-arm64-musl': ['linux', 'arm64', 'musl'],
  'linux-x64-musl': ['linux', 'x64', 'musl'],
  'win32-arm64': ['win32', 'arm64'],
  'win32-x64': ['win32', 'x64'],
};
let added = 0;
for (const [name, [os, cpu, libc]] of Object.entries(platforms)) {
  const key = `node_modules/@biomejs/cli-${name}`;
  if (pkgs[key]) continue;
  pkgs[key] = { version: biome.version, cpu: [cpu], dev: true, license: 'MIT OR Apache-2.0', optional: true, os: [os], ...(libc ? { libc: [libc] } : {}), engines: { node: '>=14.21.3' } };
  added++;
}
const { '': root, ...rest } = pkgs;
lock.packages = { '': root, ...Object.fromEntries(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lockfile: ${added} platform entries added`);
