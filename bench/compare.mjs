#!/usr/bin/env node
/**
 * Base vs branch: runs this checkout's benchmark harness (bench/run.mjs) against two git
 * revisions, each checked out with `git worktree add` under the temp dir, installed with `npm ci`
 * and built, in ONE run whose gateway scenarios alternate between the two revisions (so machine
 * drift hits both alike), then prints the ratios between them and the full report. The harness, the baselines
 * (bare and parse-only proxies) and the payloads are the same for both sides; only the gateway
 * code differs.
 *
 * Usage: node bench/compare.mjs BASE [HEAD] [-- run.mjs options, e.g. --duration 3 --only read,search]
 *   BASE, HEAD: anything `git rev-parse` accepts (HEAD defaults to HEAD). With both sides in one
 *   run, the default run takes about 7 minutes; `-- --only read,search` skips memory and micro.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareMarkdown, splitSide } from './lib/report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..');
const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const revs = dash >= 0 ? argv.slice(0, dash) : argv;
const passthrough = dash >= 0 ? argv.slice(dash + 1) : [];
if (revs.length < 1 || revs.length > 2 || revs.some((r) => r.startsWith('-'))) {
  process.stderr.write('usage: node bench/compare.mjs BASE [HEAD] [-- bench/run.mjs options]\n');
  process.exit(2);
}
const git = (...a) => execFileSync('git', ['-C', repo, ...a], { encoding: 'utf8' }).trim();
const targets = [revs[0], revs[1] ?? 'HEAD'].map((rev) => ({ rev, sha: git('rev-parse', '--verify', `${rev}^{commit}`) }));
const work = mkdtempSync(join(tmpdir(), 'phi-bench-compare-'));
const log = (m) => process.stderr.write(`[compare] ${m}\n`);

function sh(cmd, args, cwd, { allowFail = false } = {}) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 2, 'inherit'], env: { ...process.env, CI: '' } });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd} (exit ${r.status})`);
  return r.status === 0;
}

const names = targets[0].rev === targets[1].rev ? ['base', 'head'] : targets.map((t) => t.rev);
const dirs = [];
try {
  for (const t of targets) {
    const dir = join(work, t.sha.slice(0, 12) + (dirs.length ? '-b' : ''));
    log(`${t.rev} (${t.sha.slice(0, 12)}): worktree at ${dir}`);
    git('worktree', 'add', '--detach', dir, t.sha);
    dirs.push(dir);
    if (!sh('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], dir, { allowFail: true })) {
      // A lockfile out of sync with package.json at that revision: measure it anyway, but say so.
      log(`${t.rev}: npm ci FAILED (lockfile out of sync?); falling back to npm install in the worktree`);
      sh('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], dir);
    }
    if (!sh('npm', ['run', 'build', '--silent'], dir, { allowFail: true })) {
      // Type errors elsewhere still leave most of dist/ emitted; measure it if the gateway is there.
      log(`${t.rev}: build reported errors; trying the emitted dist/`);
      sh('node', ['scripts/copy-assets.mjs'], dir, { allowFail: true });
      if (!existsSync(join(dir, 'dist', 'server', 'runtime.js'))) throw new Error(`${t.rev}: no dist/server/runtime.js after build`);
    }
  }
  // One run for both: their gateway scenarios alternate within the same rounds, so load from
  // anything else on the machine falls on both sides alike.
  const out = join(work, 'both.md');
  const runArgs = ['--root', dirs[0], '--root-b', dirs[1], '--name-a', names[0], '--name-b', names[1], '--out', out, ...passthrough];
  sh('node', [join(here, 'run.mjs'), ...runArgs], repo, { allowFail: true });
  const json = out.replace(/\.md$/, '.json');
  if (!existsSync(json)) throw new Error('the benchmark wrote no report');
  const report = JSON.parse(readFileSync(json, 'utf8'));
  const [a, b] = targets;
  const md = [
    `# ${names[0]} (${a.sha.slice(0, 12)}) vs ${names[1]} (${b.sha.slice(0, 12)})`,
    '',
    compareMarkdown(splitSide(report, names[0]), splitSide(report, names[1]), names[0], names[1]),
    '',
    readFileSync(out, 'utf8').replace(/^# .*\n/, '## Full report\n'),
  ].join('\n');
  const file = join(here, 'results', 'compare.md');
  writeFileSync(file, md);
  process.stdout.write(`${md}\n`);
  log(`written to ${file}`);
} finally {
  for (const dir of dirs) {
    try {
      git('worktree', 'remove', '--force', dir);
    } catch {}
  }
  git('worktree', 'prune');
  rmSync(work, { recursive: true, force: true });
}
