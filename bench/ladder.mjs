#!/usr/bin/env node
/**
 * The cost ladder: where a gateway request's CPU goes, stage by stage, under the bench's load.
 *
 * Runs the bare @fastify/http-proxy, the parse-only proxy, the rungs of bench/servers/ladder.mjs
 * (the gateway's own modules up to one stage each) and the real gateway (file sink), each in its
 * own process against the same fixed-response upstream, 32 connections, alternated rounds. For
 * each it reports req/s and the CPU time the server process spent per request (user + system from
 * /proc, all threads): the column that stays meaningful when the load generator, the upstream and
 * the server share 2 cores. The difference between consecutive rungs is what that stage costs.
 * The policy is a copy of the shipped one without care-relationship requirements (lib/policy.mjs):
 * the token names no fhirUser, and the rungs stop before the relationship check.
 *
 * Usage: npm run build && node bench/ladder.mjs [--role clinician|billing|researcher] [--path /fhir/Patient/pat-00001]
 *        [--duration S (4)] [--rounds N (2)] [--out FILE (bench/results/ladder.md)]
 * Linux only (reads /proc/<pid>/stat).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { probe, runLoad } from './lib/load.mjs';
import { writePolicyWithoutRelationships } from './lib/policy.mjs';
import { cpuSeconds, freePort, startChild } from './lib/procs.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    root: { type: 'string', default: join(here, '..') },
    role: { type: 'string', default: 'clinician' },
    path: { type: 'string', default: '/fhir/Patient/pat-00001' },
    duration: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    out: { type: 'string', default: join(here, 'results', 'ladder.md') },
  },
});
const root = resolve(args.root);
const PURPOSES = { clinician: 'TREAT', billing: 'HPAYMT', researcher: 'HRESCH' };
if (!PURPOSES[args.role]) throw new Error(`--role must be one of ${Object.keys(PURPOSES).join(', ')}`);
const duration = Number(args.duration);
const rounds = Number(args.rounds);
const connections = Number(args.connections);

const log = (m) => process.stderr.write(`[ladder] ${m}\n`);
const demo = await import(pathToFileURL(join(root, 'dist', 'auth', 'demo-keys.js')).href);
const tmp = mkdtempSync(join(tmpdir(), 'phi-ladder-'));
const children = [];
try {
  const keys = await demo.ensureDemoKeys(join(tmp, 'keys'));
  const token = await demo.mintDemoToken(keys, { role: args.role, ttlSec: 3600 });
  const policy = join(tmp, 'policy-without-relationships.yaml');
  writePolicyWithoutRelationships(join(root, 'config', 'policy.yaml'), policy);
  const auth = { authorization: `Bearer ${token}`, 'x-purpose-of-use': PURPOSES[args.role], accept: 'application/fhir+json' };
  const start = async (script, env, label) => {
    const port = await freePort();
    const c = await startChild(join(here, 'servers', `${script}.mjs`), { env: { BENCH_PORT: String(port), ...env }, label });
    children.push(c);
    return { ...c, base: `http://127.0.0.1:${port}` };
  };
  const upstream = await start('upstream', {}, 'upstream');
  const gatewayEnv = async (name) => ({
    BENCH_ROOT: root,
    BENCH_JWKS_FILE: keys.jwksFile,
    PHI_GATEWAY_UPSTREAM: `${upstream.base}/fhir`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_AUDIT: `file:${join(tmp, `audit-${name}`)}`,
    PHI_GATEWAY_ISSUER: keys.issuer,
    PHI_GATEWAY_AUDIENCE: keys.audience,
    PHI_GATEWAY_PSEUDONYM_KEY: 'bench-pseudonym-key-0123456789abcdef0123',
    PHI_GATEWAY_POLICY: policy,
    LOG_LEVEL: 'info',
  });
  const rungs = [
    ['plumbing', 'Fastify route + undici dispatch, upstream bytes sent back'],
    ['policy', '+ token verification (cached), purpose, classify, decide'],
    ['parse', '+ decode + strict JSON parse of the answer'],
    ['filter', '+ filterResponse with the role plan'],
    ['serialize', '+ JSON.stringify of the filtered body (sent instead)'],
    ['audit', '+ audit record chained and made durable (file sink) before the answer'],
  ];
  const targets = [
    { id: 'bare', label: 'bare @fastify/http-proxy', server: await start('bare-proxy', { BENCH_UPSTREAM: upstream.base }, 'bare'), headers: {} },
    { id: 'parse-only', label: 'parse + re-serialize proxy', server: await start('parse-proxy', { BENCH_UPSTREAM: upstream.base }, 'parse'), headers: {} },
  ];
  for (const [i, [id, label]] of rungs.entries()) {
    const port = await freePort();
    const env = { ...(await gatewayEnv(id)), LADDER_STEP: String(i + 1), PHI_GATEWAY_LISTEN: `127.0.0.1:${port}` };
    const c = await startChild(join(here, 'servers', 'ladder.mjs'), { env: { ...env, BENCH_PORT: String(port) }, label: id });
    children.push(c);
    targets.push({ id: `${i + 1} ${id}`, label, server: { ...c, base: `http://127.0.0.1:${port}` }, headers: auth });
  }
  {
    const port = await freePort();
    const c = await startChild(join(here, 'servers', 'gateway.mjs'), { env: { ...(await gatewayEnv('gateway')), PHI_GATEWAY_LISTEN: `127.0.0.1:${port}` }, label: 'gateway' });
    children.push(c);
    targets.push({ id: 'gateway', label: 'the gateway (+ log line, metrics, anomaly monitor, limits, headers)', server: { ...c, base: `http://127.0.0.1:${port}` }, headers: auth });
  }
  for (const t of targets) {
    const p = await probe(t.server.base + args.path, t.headers);
    if (p.status !== 200) throw new Error(`${t.id}: probe answered ${p.status} ${p.code ?? ''}`);
    await runLoad(t.server.base + args.path, t.headers, { connections, duration: 1 });
  }
  const results = new Map(targets.map((t) => [t.id, []]));
  const loadStart = loadavg()[0];
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      const before = cpuSeconds(t.server.pid);
      const x = await runLoad(t.server.base + args.path, t.headers, { connections, duration });
      const cpu = cpuSeconds(t.server.pid) - before;
      results.get(t.id).push({ rps: x.ok / x.seconds, usPerReq: (cpu * 1e6) / Math.max(1, x.ok), cores: cpu / x.seconds, bad: x.non2xx + x.errors });
      log(`${t.id}: ${(x.ok / x.seconds).toFixed(0)} req/s`);
    }
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const rows = targets.map((t) => {
    const rs = results.get(t.id);
    return { ...t, rps: mean(rs.map((x) => x.rps)), us: mean(rs.map((x) => x.usPerReq)), cores: mean(rs.map((x) => x.cores)), bad: rs.reduce((a, x) => a + x.bad, 0) };
  });
  const bare = rows[0];
  let prev;
  const lines = [
    '# Cost ladder',
    '',
    `- ${new Date().toISOString()}, ${cpus()[0]?.model ?? 'cpu'} x ${cpus().length}, Node ${process.version}; load average at start ${loadStart.toFixed(2)}`,
    `- \`node bench/ladder.mjs --role ${args.role} --path ${args.path}\`: ${connections} connections, ${duration} s x ${rounds} alternated rounds`,
    '- CPU µs/req = CPU time of the server process (all threads) per answered request; the increment is what that stage adds',
    '',
    '| server | what it does | req/s | x bare | server CPU µs/req | + µs vs previous row | CPU x bare | non-2xx / errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const inc = prev && r.id !== 'parse-only' && prev.id !== 'bare' ? (r.us - prev.us).toFixed(0) : '';
    lines.push(`| ${r.id} | ${r.label} | ${r.rps.toFixed(0)} | ${(r.rps / bare.rps).toFixed(2)} | ${r.us.toFixed(0)} | ${inc} | ${(r.us / bare.us).toFixed(2)} | ${r.bad} |`);
    if (r.id !== 'parse-only') prev = r;
  }
  const text = `${lines.join('\n')}\n`;
  mkdirSync(dirname(args.out), { recursive: true });
  writeFileSync(args.out, text);
  process.stdout.write(text);
} finally {
  await Promise.allSettled(children.map((c) => c.stop()));
  rmSync(tmp, { recursive: true, force: true });
}
