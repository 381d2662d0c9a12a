/**
 * The anomaly windows' Redis cost, in-process: `RedisWindowStore.add` (src/monitor/window.ts,
 * transpiled on the fly, no build needed) against a private redis-server, 10,000 adds issued in
 * bursts of 32 (what 32 concurrent connections produce: one bulk-access update per released
 * response, one patient each, 32 actors). Reports this process's CPU (process.cpuUsage, user +
 * system) per add, the Redis server's CPU per add (INFO cpu) and the wall time of the 10,000.
 *
 *   node bench/window-micro.mjs                 the working tree's window.ts
 *   node bench/window-micro.mjs --base HEAD~1   and that revision's, rounds alternated, side by side
 *
 * Options: --rounds N (default 5 per variant; median reported), --adds N (10000), --burst N (32).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { redisAvailable, startRedis } from './lib/procs.mjs';
import { median } from './lib/timing.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = 'src/monitor/window.ts';
const { values: opt } = parseArgs({
  options: { base: { type: 'string' }, rounds: { type: 'string', default: '5' }, adds: { type: 'string', default: '10000' }, burst: { type: 'string', default: '32' } },
});
const rounds = Number(opt.rounds);
const adds = Number(opt.adds);
const burst = Number(opt.burst);

if (!redisAvailable()) {
  console.error('redis-server not found');
  process.exit(1);
}

const ts = createRequire(import.meta.url)('typescript');
const tmp = mkdtempSync(join(tmpdir(), 'window-micro-'));
/** window.ts as an ES module in the temp dir (its only import is a type). */
async function load(label, source) {
  const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } });
  const file = join(tmp, `${label}.mjs`);
  writeFileSync(file, outputText);
  return { label, ...(await import(pathToFileURL(file).href)) };
}

const variants = [];
if (opt.base) variants.push(await load(`base(${opt.base})`, execFileSync('git', ['show', `${opt.base}:${SOURCE}`], { cwd: root, encoding: 'utf8' })));
variants.push(await load('working tree', readFileSync(join(root, SOURCE), 'utf8')));

const server = await startRedis(tmp);
const admin = new Redis(server.url);
async function redisCpuUs() {
  const info = await admin.info('cpu');
  const f = (k) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return (f('used_cpu_user') + f('used_cpu_sys')) * 1e6;
}

/** One round: `adds` adds in bursts of `burst` (each burst issued in one turn, awaited before the next). */
async function round(v, n) {
  const c = new Redis(server.url);
  const store = new v.RedisWindowStore(c, `bench-${n}-${v.label}:`);
  await store.add('warm', ['x'], 0, 600_000); // loads the script on this connection
  const t0 = 1_700_000_000_000;
  const rCpu0 = await redisCpuUs();
  const cpu0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  for (let i = 0; i < adds; i += burst) {
    const calls = [];
    for (let j = i; j < Math.min(adds, i + burst); j++) calls.push(store.add(`bulk:rule:actor${j % burst}`, [`pat-${(j * 7919) % 500}`], t0 + j, 600_000));
    await Promise.all(calls);
  }
  const wallMs = Number(process.hrtime.bigint() - w0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const redisUs = (await redisCpuUs()) - rCpu0;
  await store.close();
  c.disconnect();
  return { cpuUsPerAdd: (cpu.user + cpu.system) / adds, redisUsPerAdd: redisUs / adds, wallMs };
}

try {
  for (const v of variants) await round(v, 'warmup');
  const results = new Map(variants.map((v) => [v.label, []]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) results.get(v.label).push(await round(v, r));
  }
  console.log(`${adds} RedisWindowStore.add in bursts of ${burst}, median of ${rounds} rounds (redis-server ${server.url})\n`);
  console.log('| variant | gateway CPU µs/add | redis-server CPU µs/add | wall ms |');
  console.log('|---|---:|---:|---:|');
  for (const [label, rs] of results) {
    const m = (k) => median(rs.map((x) => x[k]));
    console.log(`| ${label} | ${m('cpuUsPerAdd').toFixed(1)} | ${m('redisUsPerAdd').toFixed(1)} | ${m('wallMs').toFixed(0)} |`);
  }
} finally {
  admin.disconnect();
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
}
