#!/usr/bin/env node
/**
 * Where the gateway's time goes: runs the gateway (file sink) with the same load as bench/run.mjs,
 * one process per scenario, CPU-profiles it (V8 inspector) for the measured window after a warm-up, and prints the top self-time functions
 * and modules. Writes bench/results/profile.md and keeps the .cpuprofile files under
 * bench/results/profiles/ (open them in Chrome DevTools or speedscope).
 *
 * Usage: npm run build && node bench/profile.mjs [--root DIR] [--duration S (8)] [--connections N (32)]
 *          [--sink file|redis (file; redis starts redis-server with appendfsync always, as run.mjs does)]
 *          [--only NAME,NAME (scenario names below)]
 * The policy is a copy of the shipped one without care-relationship requirements (lib/policy.mjs),
 * as in run.mjs: the tokens name no fhirUser; patient-read-clinician-related runs the shipped one.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { runLoad } from './lib/load.mjs';
import { BENCH_PRACTITIONER, RELATED_PATIENT } from './lib/payloads.mjs';
import { writePolicyWithoutRelationships } from './lib/policy.mjs';
import { freePort, startChild, startRedis } from './lib/procs.mjs';
import { profileMarkdown, summarizeProfile } from './lib/profile.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    root: { type: 'string', default: join(here, '..') },
    duration: { type: 'string', default: '8' },
    connections: { type: 'string', default: '32' },
    top: { type: 'string', default: '25' },
    sink: { type: 'string', default: 'file' },
    only: { type: 'string' },
  },
});
const root = resolve(args.root);
const demo = await import(pathToFileURL(join(root, 'dist', 'auth', 'demo-keys.js')).href);
const tmp = mkdtempSync(join(tmpdir(), 'phi-bench-prof-'));
const outDir = join(here, 'results', 'profiles');
mkdirSync(outDir, { recursive: true });
const keys = await demo.ensureDemoKeys(join(tmp, 'keys'));
const policy = join(tmp, 'policy-without-relationships.yaml');
writePolicyWithoutRelationships(join(root, 'config', 'policy.yaml'), policy);

const upPort = await freePort();
const upstream = await startChild(join(here, 'servers', 'upstream.mjs'), { env: { BENCH_PORT: String(upPort) } });
const scenarios = [
  { name: 'patient-read-clinician', role: 'clinician', purpose: 'TREAT', path: '/fhir/Patient/pat-00001' },
  // The shipped policy's care-relationship requirement, by a caller the upstream's CareTeam relates
  // to the patient (relationships looked up by the warm-up, cached while profiled).
  { name: 'patient-read-clinician-related', role: 'clinician', purpose: 'TREAT', path: `/fhir/Patient/${RELATED_PATIENT}`, fhirUser: BENCH_PRACTITIONER, shippedPolicy: true },
  { name: 'patient-read-billing', role: 'billing', purpose: 'HPAYMT', path: '/fhir/Patient/pat-00001' },
  { name: 'searchset-clinician', role: 'clinician', purpose: 'TREAT', path: '/fhir/Patient?_count=100' },
  { name: 'searchset-billing', role: 'billing', purpose: 'HPAYMT', path: '/fhir/Patient?_count=100' },
].filter((s) => !args.only || args.only.split(',').includes(s.name));
if (args.sink !== 'file' && args.sink !== 'redis') throw new Error('--sink must be file or redis');
if (args.sink === 'redis') mkdirSync(join(tmp, 'redis'));
const redis = args.sink === 'redis' ? await startRedis(join(tmp, 'redis')) : undefined;
const suffix = redis ? '-redis' : '';
const sections = ['# Where the gateway spends its time', '', `CPU profiles of the gateway process (${args.sink} audit sink) under ${args.connections} connections for ${args.duration} s per scenario, ${new Date().toISOString()}.`, ''];
try {
  for (const s of scenarios) {
    const port = await freePort();
    const gw = await startChild(join(here, 'servers', 'gateway.mjs'), {
      env: {
        BENCH_ROOT: root,
        BENCH_JWKS_FILE: keys.jwksFile,
        PHI_GATEWAY_UPSTREAM: `http://127.0.0.1:${upPort}/fhir`,
        PHI_GATEWAY_LISTEN: `127.0.0.1:${port}`,
        PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
        PHI_GATEWAY_AUDIT: redis ? redis.url : `file:${join(tmp, `audit-${s.name}`)}`,
        PHI_GATEWAY_ISSUER: keys.issuer,
        PHI_GATEWAY_AUDIENCE: keys.audience,
        PHI_GATEWAY_PSEUDONYM_KEY: 'bench-pseudonym-key-0123456789abcdef0123',
        PHI_GATEWAY_POLICY: s.shippedPolicy ? join(root, 'config', 'policy.yaml') : policy,
      },
      label: `gateway ${s.name}`,
    });
    const token = await demo.mintDemoToken(keys, { role: s.role, ...(s.fhirUser ? { fhirUser: s.fhirUser } : {}) });
    const headers = { authorization: `Bearer ${token}`, 'x-purpose-of-use': s.purpose, accept: 'application/fhir+json' };
    const url = `http://127.0.0.1:${port}${s.path}`;
    const load = { connections: Number(args.connections), duration: Number(args.duration) };
    await runLoad(url, headers, { ...load, duration: 2 }); // warm-up, not profiled
    await gw.ask({ profile: 'start' });
    const r = await runLoad(url, headers, load);
    const file = join(outDir, `${s.name}${suffix}.cpuprofile`);
    await gw.ask({ profile: 'stop', file });
    await gw.stop(30_000);
    const raw = readFileSync(file, 'utf8');
    const summary = summarizeProfile(JSON.parse(raw), Number(args.top));
    sections.push(profileMarkdown(`${s.name}${suffix}: ${(r.ok / r.seconds).toFixed(0)} req/s, ${r.non2xx} non-2xx`, summary), '');
    process.stderr.write(`[profile] ${s.name} done\n`);
  }
} finally {
  await upstream.stop();
  await redis?.stop();
  rmSync(tmp, { recursive: true, force: true });
}
const md = sections.join('\n');
writeFileSync(join(here, 'results', `profile${suffix}.md`), md);
process.stdout.write(`${md}\n`);
