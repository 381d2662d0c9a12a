#!/usr/bin/env node
/**
 * `npm run bench`: the end-to-end benchmark of SPEC 7, one table.
 *
 * Starts, each in its own process on loopback: a fixed-response upstream, a bare
 * @fastify/http-proxy, a parse-and-re-serialize proxy, and the gateway (built dist/) with the file
 * audit sink and, when redis-server is installed, the Redis sink. Drives every scenario with the
 * same autocannon load (fixed connections and duration, a warm-up, alternated rounds), then runs
 * the memory test and the in-process micro-benchmarks, and writes the report to stdout and
 * bench/results/latest.md (+ latest.json for bench/compare.mjs). The gateways run a copy of the
 * policy without its care-relationship requirements (lib/policy.mjs) and without its `consent`
 * section, except in the `relationship` group, which measures the shipped policy's requirement
 * against that copy, and the `consent` group, which measures the consent section against it.
 *
 * Options: --root DIR (the checkout whose dist/ and config/ are measured; default: this one)
 *          --duration S (4) --rounds N (2) --warmup S (1) --connections N (32)
 *          (defaults sized so the whole run, build included, takes about 6 minutes on 2 cores)
 *          --only read,search,withheld,latency,relationship,consent,slow,memory,micro   --quick (1 s runs, for trying it out)
 *          --targets PREFIX,... (only the rows whose target id starts with one of these, e.g.
 *            `file-clinician` for the clinician gateway rows and their variants; default: all)
 *          --root-b DIR --name-a A --name-b B: measure a second checkout in the same run, its
 *            gateway rows interleaved with the first's (bench/compare.mjs uses this)
 *          --out FILE (bench/results/latest.md)   --pin auto|on|off (CPU pinning; auto = from 4 cores)
 */
import { execFileSync } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { isMap, parseDocument } from 'yaml';
import { probe, runLoad, runPaced } from './lib/load.mjs';
import { BENCH_PRACTITIONER, CONFIDENTIALITY, CONSENTS_PER_PATIENT, patientId, RELATED_PATIENT } from './lib/payloads.mjs';
import { writePolicyWithoutRelationships } from './lib/policy.mjs';
import { cpuSeconds, freePort, pin, redisAvailable, sampleRss, startChild, startRedis } from './lib/procs.mjs';
import { aggregate, alternation, histogramBuckets, histogramLine, histogramSummary, pairedRounds, renderReport } from './lib/report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    root: { type: 'string', default: join(here, '..') },
    'root-b': { type: 'string' },
    'name-a': { type: 'string', default: 'A' },
    'name-b': { type: 'string', default: 'B' },
    duration: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    only: { type: 'string', default: 'read,search,withheld,latency,relationship,consent,slow,memory,micro' },
    targets: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string', default: join(here, 'results', 'latest.md') },
    pin: { type: 'string', default: 'auto' },
  },
});
const root = resolve(args.root);
// One side normally; two when comparing revisions, so their runs alternate within one session.
const sides = args['root-b']
  ? [
      { name: args['name-a'], root, suffix: ` @${args['name-a']}` },
      { name: args['name-b'], root: resolve(args['root-b']), suffix: ` @${args['name-b']}` },
    ]
  : [{ name: undefined, root, suffix: '' }];
const duration = args.quick ? 1 : Number(args.duration);
const rounds = Number(args.rounds);
const warmup = args.quick ? 1 : Number(args.warmup);
const connections = Number(args.connections);
const only = new Set(args.only.split(','));
const targetPrefixes = args.targets?.split(',').filter((x) => x !== '');
/** The Origin of the CORS row: configured on the file-sink gateways, sent by that row alone. */
const BENCH_ORIGIN = 'https://smart-app.bench.example';
/**
 * Rows that measure one HTTP feature on the same gateway process as a plain row (`variantOf`):
 * their req/s is reported as a ratio of that row's, from the same run (target: >= 0.95).
 */
const variants = [
  { suffix: 'gzip', of: 'clinician', groups: ['search'], label: 'Accept-Encoding: gzip', headers: { 'accept-encoding': 'gzip' } },
  {
    suffix: 'cors-etag',
    of: 'clinician',
    groups: ['read'],
    label: 'CORS Origin and If-None-Match handling on (a tag that does not match: the full answer)',
    headers: { origin: BENCH_ORIGIN, 'if-none-match': '"not-the-current-tag"' },
  },
];
// The slow-upstream group: a well-behaved client's Patient read at a fixed rate, alone and while
// SLOW_REQUESTS requests to an upstream that drips one byte every 200 ms are in flight (their
// clients wait, then disconnect). The gateway is given room for them (SLOW_ENV): each slow exchange
// holds an in-flight slot and an upstream connection, and with the defaults (256, 64) a well-behaved
// request would be refused or queue for a connection, which is capacity, not what this measures.
const SLOW_REQUESTS = 300;
const SLOW_RATE = 200;
const SLOW_ENV = { BENCH_MAX_INFLIGHT: '1024', BENCH_UPSTREAM_CONNECTIONS: '512' };
const MEMORY_CLIENTS = 64;
const memoryRequestsPerClient = 1;
const LATENCY_RATE = 400;
const SMALL_LIMIT = 1024 * 1024;
// The in-flight budget row: limits.bufferBytes at 32 MiB. Each buffered upstream byte costs the
// gateway a few bytes of heap (Buffer, string, parsed tree, serialized answer) and V8 collects them
// late (a serial run of 5 MB answers alone grows RSS by hundreds of MB), so the stated bound
// on peak - before is BUDGET_FACTOR x the budget plus a fixed allowance; over it the run fails.
const BUDGET_BYTES = 32 * 1024 * 1024;
const BUDGET_FACTOR = 16;
const BUDGET_BOUND = BUDGET_FACTOR * BUDGET_BYTES + 128 * 1024 * 1024;
const started = Date.now();
const log = (msg) => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${msg}\n`);
const notes = [];

// CPU pinning: the proxy under test gets the last core to itself; the load generator (this
// process), the upstream and Redis share the others. Unpinned, a proxy that burns more CPU also
// slows the load generator, which hides part of its cost in the ratios.
const ncpu = cpus().length;
// 'auto' pins only from 4 cores: on 2, one core cannot generate the load a proxy core serves,
// and the load generator becomes the bottleneck (measured: bare proxy halved).
const wantPin = args.pin === 'on' ? ncpu >= 2 : args.pin === 'auto' ? ncpu >= 4 : false;
const pinning = !wantPin ? undefined : { proxy: String(ncpu - 1), load: ncpu === 2 ? '0' : `0-${ncpu - 2}` };
if (pinning && !pin(process.pid, pinning.load)) {
  notes.push('taskset unavailable: processes are not pinned to CPUs');
}
const pinProxy = (pid) => pinning && pin(pid, pinning.proxy);
const pinLoad = (pid) => pinning && pin(pid, pinning.load);

const dist = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const demo = await dist('auth/demo-keys.js').catch((e) => {
  throw new Error(`cannot load ${root}/dist (run \`npm run build\` first): ${e.message}`);
});

const tmp = mkdtempSync(join(tmpdir(), 'phi-bench-'));
// A RAM-backed directory (tmpfs: O_DSYNC writes return without touching a disk) for the
// diagnostic row that separates the gateway's own latency from the disk's flush latency.
const TMPFS_MAGIC = 0x01021994;
const ramDir = (() => {
  try {
    return statfsSync('/dev/shm').type === TMPFS_MAGIC ? mkdtempSync('/dev/shm/phi-bench-') : undefined;
  } catch {
    return undefined;
  }
})();
const children = [];
let redis;
async function cleanup() {
  await Promise.allSettled(children.map((c) => c.stop()));
  await redis?.stop().catch(() => {});
  rmSync(tmp, { recursive: true, force: true });
  if (ramDir) rmSync(ramDir, { recursive: true, force: true });
}
process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));

// The shipped policy requires a care relationship for the clinician's treatment reads, and the
// role tokens below name no fhirUser (whose relationships they would be): every gateway process
// but the `relationship` group's shipped-policy one runs a copy of the policy without
// `dataSets.*.relationship` (lib/policy.mjs), so the other rows measure what they did before.
for (const [i, side] of sides.entries()) {
  side.policy = join(side.root, 'config', 'policy.yaml');
  side.plainPolicy = join(tmp, `policy-without-relationships-${i}.yaml`);
  side.relationshipsRemoved = writePolicyWithoutRelationships(side.policy, side.plainPolicy);
}
const removedFrom = [...new Set(sides.flatMap((x) => x.relationshipsRemoved))];

/** The `consent` group's policy: the consent section's cache holds for the whole run (warm). */
const CONSENT_CACHE_SECONDS = 3600;
/**
 * Splits the policy copy at `plainFile` (already without relationship requirements) in two: the
 * copy itself loses the `consent` section and the data sets' consent requirements (every row but
 * the consent group's runs it), and `consentFile` keeps them, with the section's cache held for the
 * whole run. Returns whether the policy had a consent section.
 */
function splitConsent(plainFile, consentFile) {
  const doc = parseDocument(readFileSync(plainFile, 'utf8'));
  if (!doc.has('consent')) return false;
  const out = () => doc.toString({ lineWidth: 0, flowCollectionPadding: false });
  doc.setIn(['consent', 'cacheSeconds'], CONSENT_CACHE_SECONDS);
  writeFileSync(consentFile, out());
  doc.delete('consent');
  const dataSets = doc.get('dataSets');
  if (isMap(dataSets)) for (const item of dataSets.items) if (isMap(item.value)) item.value.delete('consent');
  writeFileSync(plainFile, out());
  return true;
}
for (const [i, side] of sides.entries()) {
  side.consentPolicy = join(tmp, `policy-with-consent-${i}.yaml`);
  side.hasConsent = splitConsent(side.plainPolicy, side.consentPolicy);
}
if (sides.some((x) => x.hasConsent) && [...only].some((g) => g !== 'micro')) {
  notes.push(
    `policy: every gateway row except the consent group's "consent section" rows runs the policy copy without its consent section; the bench upstream holds ${CONSENTS_PER_PATIENT} consents for every patient (lib/payloads.mjs makeConsents), which the consent group measures`,
  );
}
if (removedFrom.length > 0 && [...only].some((g) => g !== 'micro')) {
  notes.push(
    `policy: every gateway row except the relationship group's "care relationship required" row runs a copy of config/policy.yaml without dataSets.*.relationship (removed from: ${removedFrom.join(', ')}); with the shipped requirement the clinician's reads by these tokens, which carry no fhirUser claim, would all be refused (403 relationship-required)`,
  );
}

const keys = await demo.ensureDemoKeys(join(tmp, 'keys'));
const pseudonymKey = 'bench-pseudonym-key-0123456789abcdef0123';
const { pseudonymize } = await dist('redact/pseudonym.js');
const researcherPatient = pseudonymize(new TextEncoder().encode(pseudonymKey), 'Patient', 'pat-00001');
const ROLES = { clinician: 'TREAT', billing: 'HPAYMT', researcher: 'HRESCH' };
const tokens = {};
for (const role of Object.keys(ROLES)) tokens[role] = await demo.mintDemoToken(keys, { role, ttlSec: 3 * 3600 });
// The relationship group's caller: a clinician whose fhirUser the bench upstream's CareTeam names.
tokens.related = await demo.mintDemoToken(keys, { role: 'clinician', fhirUser: BENCH_PRACTITIONER, ttlSec: 3 * 3600 });
const roleHeaders = (role) => ({ authorization: `Bearer ${tokens[role]}`, 'x-purpose-of-use': ROLES[role], accept: 'application/fhir+json' });
const plainHeaders = { accept: 'application/fhir+json' };

const serverScript = (name) => join(here, 'servers', `${name}.mjs`);
async function start(name, env, opts = {}) {
  const port = await freePort();
  const child = await startChild(serverScript(name), { env: { BENCH_PORT: String(port), ...env }, label: opts.label ?? name, ...opts });
  children.push(child);
  if (opts.role === 'load') pinLoad(child.pid);
  else pinProxy(child.pid);
  return { ...child, base: `http://127.0.0.1:${port}` };
}
async function stopChild(c) {
  await c.stop();
  children.splice(children.indexOf(c), 1);
}

async function startGatewayProcess(label, upstreamOrigin, audit, extraEnv = {}, side = sides[0]) {
  const port = await freePort();
  const admin = `127.0.0.1:${await freePort()}`;
  const env = {
    BENCH_ROOT: side.root,
    BENCH_JWKS_FILE: keys.jwksFile,
    PHI_GATEWAY_UPSTREAM: `${upstreamOrigin}/fhir`,
    PHI_GATEWAY_LISTEN: `127.0.0.1:${port}`,
    PHI_GATEWAY_ADMIN_LISTEN: admin,
    PHI_GATEWAY_AUDIT: audit,
    PHI_GATEWAY_ISSUER: keys.issuer,
    PHI_GATEWAY_AUDIENCE: keys.audience,
    PHI_GATEWAY_PSEUDONYM_KEY: pseudonymKey,
    PHI_GATEWAY_POLICY: side.plainPolicy,
    LOG_LEVEL: 'info',
    ...extraEnv,
  };
  const child = await startChild(serverScript('gateway'), { env, label: `${label}${side.suffix}` });
  children.push(child);
  pinProxy(child.pid);
  return { ...child, base: `http://127.0.0.1:${port}`, admin: `http://${admin}` };
}

const AUDIT_HISTOGRAM = 'phi_gateway_audit_write_duration_seconds';
/** The gateway's own histogram of the wait until an audit record was durable (admin /metrics). */
async function auditHistogram(gw) {
  try {
    const res = await fetch(`${gw.admin}/metrics`);
    return histogramBuckets(await res.text(), AUDIT_HISTOGRAM);
  } catch {
    return undefined;
  }
}

/** A gauge's (or a counter's, `name{label="x"}`) value from the gateway's admin /metrics (NaN when absent or unreachable). */
async function gauge(gw, name) {
  try {
    const text = await (await fetch(`${gw.admin}/metrics`)).text();
    const m = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Polls `ok` every 50 ms; false when it did not hold within `ms`. */
async function waitFor(ok, ms) {
  const end = Date.now() + ms;
  for (;;) {
    if (await ok()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `n` GETs of `url`, each on its own connection, left waiting until `close()` disconnects them all. */
function openSlowRequests(url, headers, n) {
  const u = new URL(url);
  const reqs = [];
  for (let i = 0; i < n; i++) {
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, agent: false, headers });
    req.on('error', () => {}); // the disconnect below
    req.on('response', (res) => res.resume());
    req.end();
    reqs.push(req);
  }
  return {
    close: () => {
      for (const r of reqs) r.destroy();
    },
  };
}

function machineInfo() {
  const commitOf = (dir) => {
    try {
      let c = execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
      const dirty = execFileSync('git', ['-C', dir, 'status', '--porcelain', '--untracked-files=no', '--', 'src', 'config'], { encoding: 'utf8' }).trim();
      if (dirty) c += ' (+ uncommitted changes in src/config)';
      return c;
    } catch {
      return 'unknown';
    }
  };
  const commit = sides.map((x) => `${x.name ? `@${x.name} ` : ''}${commitOf(x.root)}`).join(', ');
  const acVersion = JSON.parse(readFileSync(join(here, '..', 'node_modules', 'autocannon', 'package.json'), 'utf8')).version;
  return {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memGb: (totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    platform: `${process.platform}/${process.arch}`,
    commit,
    autocannon: acVersion,
    connections,
    duration,
    rounds,
    warmup,
    loadavg: loadavg().map((x) => x.toFixed(2)).join(' '),
    pinning: pinning ? `proxy under test on CPU ${pinning.proxy}; load generator, upstream and Redis on CPU ${pinning.load}` : 'none',
  };
}

// Checks applied to one probe response before a scenario is timed: a scenario that does not do
// what its name says is reported as FAILED instead of producing a misleading number.
const expectations = {
  clinician: (t) => (t.includes('us-ssn') ? undefined : 'clinician response lacks the SSN identifier (redacted?)'),
  billing: (t) => (t.includes('us-ssn') || t.includes('"telecom"') ? 'billing response still has SSN or telecom' : undefined),
  researcher: (t) => (t.includes('"family"') || t.includes('us-ssn') ? 'researcher response still has names or SSN' : undefined),
};

async function checkTarget(url, headers, role) {
  return (await probeTarget(url, headers, role)).error;
}

let upstreamOrigin;
/** Requests the upstream has answered under /fhir so far (its /_bench/requests counter). */
async function upstreamRequests() {
  const res = await fetch(`${upstreamOrigin}/_bench/requests`);
  return (await res.json()).fhir;
}

/**
 * The upstream's counter once it has stopped moving (unchanged over 3 polls 200 ms apart, at most
 * ~15 s): requests a proxy still had queued from the previous load run must not count as the probe's.
 */
async function settledUpstreamRequests() {
  let last = await upstreamRequests();
  for (let stable = 0, polls = 0; stable < 3 && polls < 75; polls++) {
    await new Promise((r) => setTimeout(r, 200));
    const now = await upstreamRequests();
    stable = now === last ? stable + 1 : 0;
    last = now;
  }
  return last;
}

/**
 * One probe request: `{ error }` when the answer is not what the scenario's name says, else
 * `{ detail }` from `inspect(body, upstreamCalls)` (the parsed answer and how many upstream
 * requests it took: the probe runs alone once the upstream is quiet, so the counter's delta is its own).
 */
async function probeTarget(url, headers, role, inspect) {
  try {
    const before = inspect ? await settledUpstreamRequests() : 0;
    const p = await probe(url, headers);
    if (p.status !== 200) return { error: `HTTP ${p.status}${p.code ? ` ${p.code}` : ''}` };
    const error = role ? expectations[role](p.text) : undefined;
    if (error || !inspect) return { error };
    return inspect(JSON.parse(p.text), (await upstreamRequests()) - before);
  } catch (e) {
    return { error: `request failed: ${e.cause?.code ?? e.message}` };
  }
}

/** What a searchset answer holds: entries, how many labelled confidentiality R, its next link. */
function searchShape(body) {
  const entry = Array.isArray(body?.entry) ? body.entry : [];
  const labelled = entry.filter((e) => e?.resource?.meta?.security?.some?.((c) => c.system === CONFIDENTIALITY && c.code === 'R')).length;
  const next = Array.isArray(body?.link) ? body.link.find((l) => l?.relation === 'next')?.url : undefined;
  return { entries: entry.length, labelled, next };
}
const PAGE = 100;
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const shapeLine = (s, calls) => `${s.entries} entries, ${s.labelled} R, ${plural(calls, 'upstream request')}`;
/**
 * The probe checks of the searchset groups. Every target must answer a page of 100 with a next
 * link; the gateway's next link must be its own (`?_cursor=` on its base). `search`: nothing is
 * withheld, so every target takes one upstream request (the gateway asks for 101). `withheld`:
 * the proxies pass all 100 (50 R-labelled); the billing gateway answers 100, none R, from as many
 * upstream pages as it takes (2 of 101 here).
 */
function searchInspect(g, t) {
  return (body, calls) => {
    const s = searchShape(body);
    const line = shapeLine(s, calls);
    if (s.entries !== PAGE) return { error: `${line}: expected ${PAGE} entries` };
    if (s.next === undefined) return { error: `${line}: no next link` };
    if (t.kind === 'gateway' && !s.next.startsWith(`${t.base}/fhir/Patient?_cursor=`)) return { error: `${line}: next link not the gateway's own cursor link (${s.next.slice(0, 80)})` };
    if (g.key === 'search' && calls !== 1) return { error: `${line}: expected 1 upstream request for a page where nothing is withheld` };
    if (g.key === 'withheld') {
      if (t.kind === 'gateway' && s.labelled !== 0) return { error: `${line}: the billing gateway released R-labelled entries` };
      if (t.kind !== 'gateway' && (s.labelled !== PAGE / 2 || calls !== 1)) return { error: `${line}: expected ${PAGE / 2} R-labelled entries from 1 upstream request` };
    }
    return { detail: line };
  };
}

const report = { machine: machineInfo(), groups: [], micro: undefined, memory: undefined, notes };
let exitCode = 0;
try {
  log(`${sides.map((x) => `${x.name ? `@${x.name} = ` : ''}${x.root}`).join(', ')}; starting upstream and proxies`);
  const upstream = await start('upstream', {}, { role: 'load' });
  const up = upstream.base;
  upstreamOrigin = up;
  const sizes = upstream.info.sizes;
  notes.push(
    `payloads: Patient read ${(sizes.patient / 1024).toFixed(1)} KB, searchset 100 entries ${(sizes.searchset / 1024).toFixed(0)} KB (a page of a 1,000-Patient result the upstream pages by _count and _offset), memory-test Bundle ${(sizes.big / 1048576).toFixed(1)} MB (synthetic, bench/lib/payloads.mjs)`,
  );

  if (only.has('read') || only.has('search') || only.has('withheld') || only.has('latency')) {
    const [bare, parse, ...gwFiles] = await Promise.all([
      start('bare-proxy', { BENCH_UPSTREAM: up }),
      start('parse-proxy', { BENCH_UPSTREAM: up }),
      ...sides.map((side, i) => startGatewayProcess('gateway (file sink)', up, `file:${join(tmp, `audit-file-${i}`)}`, { PHI_GATEWAY_CORS_ORIGINS: BENCH_ORIGIN }, side)),
    ]);
    // Diagnostic (latency group only, not judged): the same gateway with its audit directory on
    // tmpfs, where a durable write costs no disk flush.
    const gwRams = ramDir ? await Promise.all(sides.map((side, i) => startGatewayProcess('gateway (file sink on tmpfs)', up, `file:${join(ramDir, `audit-${i}`)}`, {}, side))) : [];
    if (!ramDir) notes.push('/dev/shm is not tmpfs here: the diagnostic tmpfs row of the latency group was skipped');
    const gwRedises = [];
    if (redisAvailable()) {
      mkdirSync(join(tmp, 'redis'));
      redis = await startRedis(join(tmp, 'redis'));
      pinLoad(redis.pid);
      for (const side of sides) gwRedises.push(await startGatewayProcess('gateway (redis sink)', up, redis.url, {}, side));
    } else {
      notes.push('redis-server not found: the Redis audit sink rows were skipped (install redis-server to include them)');
    }

    const targets = [
      { id: 'bare', label: 'bare @fastify/http-proxy', kind: 'bare', base: bare.base, headers: plainHeaders },
      { id: 'parse', label: 'parse + re-serialize proxy', kind: 'parse', base: parse.base, headers: plainHeaders },
      ...['clinician', 'billing', 'researcher'].flatMap((role) =>
        sides.flatMap((side, i) => [
          { id: `file-${role}-${i}`, label: `gateway ${role}, file sink${side.suffix}`, suffix: side.suffix, kind: 'gateway', role, base: gwFiles[i].base, headers: roleHeaders(role) },
          // Next to the plain row, on the same process: what one HTTP feature costs.
          ...variants
            .filter((v) => v.of === role)
            .map((v) => ({
              id: `file-${role}-${v.suffix}-${i}`,
              variantOf: `file-${role}-${i}`,
              label: `gateway ${role}, file sink, ${v.label}${side.suffix}`,
              suffix: side.suffix,
              kind: 'gateway',
              role,
              base: gwFiles[i].base,
              headers: { ...roleHeaders(role), ...v.headers },
              groups: v.groups,
            })),
        ]),
      ),
      ...['clinician', 'billing'].flatMap((role) =>
        gwRedises.map((gw, i) => ({ id: `redis-${role}-${i}`, label: `gateway ${role}, redis sink${sides[i].suffix}`, suffix: sides[i].suffix, kind: 'gateway', role, base: gw.base, headers: roleHeaders(role) })),
      ),
      ...gwRams.map((gw, i) => ({
        id: `tmpfs-clinician-${i}`,
        label: `gateway clinician, file sink on tmpfs (diagnostic: no disk flush)${sides[i].suffix}`,
        kind: 'diagnostic',
        role: 'clinician',
        base: gw.base,
        headers: roleHeaders('clinician'),
        groups: ['latency'],
      })),
    ];
    // The processes whose audit-write histograms explain the latency group's p99.
    const auditProcesses = [
      ...gwFiles.map((gw, i) => ({ gw, label: `file sink (clinician and billing runs)${sides[i].suffix}` })),
      ...gwRedises.map((gw, i) => ({ gw, label: `redis sink (billing runs)${sides[i].suffix}` })),
      ...gwRams.map((gw, i) => ({ gw, label: `file sink on tmpfs${sides[i].suffix}` })),
    ];
    const groups = [
      // The researcher's data set is de-identified: it reads by the pseudonym it was given.
      { key: 'read', name: `Patient read (${(sizes.patient / 1024).toFixed(1)} KB)`, path: '/fhir/Patient/pat-00001', pathFor: (t) => (t.role === 'researcher' ? `/fhir/Patient/${researcherPatient}` : undefined) },
      { key: 'search', name: `searchset (100 entries, ${(sizes.searchset / 1024).toFixed(0)} KB)`, path: '/fhir/Patient?_count=100', inspect: true },
      // What the client asked for costs what: a page of 100 where every other upstream match is
      // labelled R. The proxies pass the upstream's 100 (50 R); the billing gateway withholds R
      // and refills the page from the next upstream page. Row labels carry what each answer held.
      {
        key: 'withheld',
        name: 'searchset _count=100, every other match labelled R (billing withholds R)',
        path: '/fhir/Patient?name=halfwithheld&_count=100',
        only: (t) => t.kind !== 'gateway' || t.role === 'billing',
        inspect: true,
        detailInLabel: true,
      },
      // Saturated closed-loop p99 is mostly queueing; at a fixed open-loop rate below every
      // target's capacity, p99 shows the latency each proxy adds to a request.
      {
        key: 'latency',
        name: `Patient read at a fixed ${LATENCY_RATE} req/s`,
        path: '/fhir/Patient/pat-00001',
        rate: LATENCY_RATE,
        only: (t) => t.kind !== 'gateway' || t.id.startsWith('file-clinician') || t.id.startsWith('file-billing') || t.id.startsWith('redis-billing'),
        // p99 of one short run moves by milliseconds with whatever else the machine does: at least
        // 3 alternated rounds, their latencies pooled (report.mjs aggregate), ~5,000 per target.
        duration: Math.min(duration, 4),
        rounds: Math.max(rounds, 3),
      },
    ].filter((g) => only.has(g.key));

    for (const g of groups) {
      const groupTargets = targets.filter(
        (t) => (!t.groups || t.groups.includes(g.key)) && (!g.only || g.only(t)) && (!targetPrefixes || targetPrefixes.some((p) => t.id.startsWith(p))),
      );
      const load = { connections, duration: g.duration ?? duration, ...(g.rate ? { rate: g.rate } : {}) };
      const urlOf = (t) => t.base + (g.pathFor?.(t) ?? g.path);
      const drive = (t, o) => (g.rate ? runPaced(urlOf(t), t.headers, o) : runLoad(urlOf(t), t.headers, o));
      const runs = new Map();
      const errors = new Map();
      const details = new Map();
      for (const t of groupTargets) {
        const { error, detail } = await probeTarget(urlOf(t), t.headers, t.role, g.inspect ? searchInspect(g, t) : undefined);
        if (error) {
          errors.set(t.id, error);
          log(`${g.key} ${t.label}: FAILED probe: ${error}`);
        } else runs.set(t.id, []);
        if (detail) details.set(t.id, detail);
      }
      if (details.size > 0 && !g.detailInLabel) {
        notes.push(`${g.key} group, one answer as probed: ${groupTargets.filter((t) => details.has(t.id)).map((t) => `${t.label}: ${details.get(t.id)}`).join('; ')}`);
      }
      // The detail goes before a side suffix (` @A`), which splitSide and compare.mjs match on.
      const labelOf = (t) => {
        const d = g.detailInLabel ? details.get(t.id) : undefined;
        if (!d) return t.label;
        const suffix = t.suffix && t.label.endsWith(t.suffix) ? t.suffix : '';
        return `${t.label.slice(0, t.label.length - suffix.length)} (${d})${suffix}`;
      };
      const live = groupTargets.filter((t) => runs.has(t.id));
      log(`${g.key}: warm-up ${warmup} s x ${live.length}`);
      for (const t of live) await drive(t, { ...load, duration: g.rate ? Math.min(warmup, 1) : warmup });
      const histogramsBefore = g.key === 'latency' ? await Promise.all(auditProcesses.map((a) => auditHistogram(a.gw))) : [];
      for (const id of alternation(live.map((t) => t.id), g.rounds ?? rounds)) {
        const t = live.find((x) => x.id === id);
        const r = await drive(t, load);
        runs.get(id).push(r);
        log(`${g.key} ${t.label}: ${(r.ok / r.seconds).toFixed(0)} req/s p99 ${r.p99} ms${r.non2xx ? ` non-2xx ${r.non2xx}` : ''}`);
      }
      if (g.key === 'latency') {
        const lines = [];
        for (const [i, a] of auditProcesses.entries()) {
          const after = await auditHistogram(a.gw);
          lines.push(after ? histogramLine(a.label, histogramSummary(histogramsBefore[i], after)) : `${a.label}: no histogram`);
        }
        notes.push(`latency group, wait until each audit record was durable (the gateways' own ${AUDIT_HISTOGRAM}, bucket bounds): ${lines.join('; ')}`);
      }
      for (const t of groupTargets.filter((x) => x.variantOf && runs.has(x.id) && runs.has(x.variantOf))) {
        const a = aggregate(runs.get(t.id));
        const b = aggregate(runs.get(t.variantOf));
        const ratio = b.rps > 0 ? a.rps / b.rps : Number.NaN;
        notes.push(
          `${g.key} group: "${t.label}" ${a.rps.toFixed(0)} req/s, p99 ${a.p99.toFixed(1)} ms = ${ratio.toFixed(3)}x the plain row's ${b.rps.toFixed(0)} req/s, p99 ${b.p99.toFixed(1)} ms (same process, same run; target >= 0.95): ${ratio >= 0.95 ? 'PASS' : 'BELOW'}`,
        );
      }
      report.groups.push({
        key: g.key,
        name: g.name,
        rows: groupTargets.map((t) => ({ label: labelOf(t), kind: t.kind, stats: runs.has(t.id) ? aggregate(runs.get(t.id)) : undefined, error: errors.get(t.id) })),
      });
    }
    if (groups.some((g) => g.key === 'search' || g.key === 'withheld')) {
      notes.push(
        'searchset paging: the bare and parse-only proxies forward the client\'s _count=100 and get 100 entries; the gateway asks the upstream for _count=101, one more than the page, so that one upstream page tells whether a next page exists (it then hands out its own _cursor link): 1% more upstream bytes to read and parse, part of what the gateway rows measure',
      );
    }
    await Promise.all([bare, parse, ...gwFiles, ...gwRedises, ...gwRams].map(stopChild));
    await redis?.stop();
    redis = undefined;
  }

  if (only.has('relationship')) {
    // What a care-relationship requirement costs a read it allows: the clinician's Patient read on
    // a gateway running the shipped policy (TREAT needs a relationship), by a caller the upstream
    // relates to the patient through a CareTeam, next to the same read with the same token on a
    // gateway running the policy without the requirement; alternated rounds, same run. The caller's
    // relationships are looked up once, by the first probe, before the warm-up: the timed rounds
    // take them from the gateway's cache, and the group fails if any lookup reached the upstream then.
    const group = { key: 'relationship', name: `Patient read (${(sizes.patient / 1024).toFixed(1)} KB), clinician, with and without a care-relationship requirement`, rows: [] };
    const headers = { authorization: `Bearer ${tokens.related}`, 'x-purpose-of-use': 'TREAT', accept: 'application/fhir+json' };
    const path = `/fhir/Patient/${RELATED_PATIENT}`;
    const LOOKUPS = 'phi_gateway_relationship_lookups_total';
    const lookups = async (gw) => ({ hit: await gauge(gw, `${LOOKUPS}{result="hit"}`), miss: await gauge(gw, `${LOOKUPS}{result="miss"}`) });
    /** The upstream's relationship searches so far, by resource type. */
    const searchCounts = async () => (await (await fetch(`${up}/_bench/requests`)).json()).relationships;
    const relationshipSearches = async () => Object.values(await searchCounts()).reduce((a, b) => a + b, 0);
    const searches = (n) => `${n} upstream relationship ${n === 1 ? 'search' : 'searches'}`;
    const pairs = [];
    for (const [i, side] of sides.entries()) {
      const [required, plain] = await Promise.all([
        startGatewayProcess('gateway (shipped policy)', up, `file:${join(tmp, `audit-rel-${i}`)}`, { PHI_GATEWAY_POLICY: side.policy }, side),
        startGatewayProcess('gateway (policy without relationship requirements)', up, `file:${join(tmp, `audit-norel-${i}`)}`, {}, side),
      ]);
      const pair = {
        side,
        required: { id: `rel-required-${i}`, gw: required, label: `gateway clinician, file sink, shipped policy: care relationship required, caller related through a CareTeam (warm cache)${side.suffix}` },
        plain: { id: `rel-plain-${i}`, gw: plain, label: `gateway clinician, file sink, policy copy without dataSets.*.relationship, same token${side.suffix}` },
      };
      // The first read looks the caller's relationships up (cold), the second finds them cached;
      // a read of a patient the caller is not related to must be refused, or the requirement is not in force.
      const url = required.base + path;
      const fhirUser = JSON.parse(Buffer.from(tokens.related.split('.')[1], 'base64url').toString()).fhirUser;
      if (fhirUser !== BENCH_PRACTITIONER) pair.error = `the demo token has no fhirUser claim (${root}/dist/auth/demo-keys.js mintDemoToken does not set it)`;
      const countsBefore = await searchCounts();
      const searchesBefore = await relationshipSearches();
      const t0 = performance.now();
      pair.error ??= await checkTarget(url, headers, 'clinician');
      pair.coldMs = performance.now() - t0;
      const countsAfter = await searchCounts();
      pair.coldSearches = (await relationshipSearches()) - searchesBefore;
      pair.coldTypes = Object.keys(countsAfter)
        .filter((t) => countsAfter[t] > countsBefore[t])
        .map((t) => `${t} ${countsAfter[t] - countsBefore[t]}`)
        .join(', ');
      if (!pair.error && pair.coldSearches === 0) pair.error = 'the first read did not look the relationships up on the upstream';
      if (!pair.error) {
        const t1 = performance.now();
        pair.error = await checkTarget(url, headers, 'clinician');
        pair.warmMs = performance.now() - t1;
      }
      if (!pair.error && (await relationshipSearches()) - searchesBefore !== pair.coldSearches) pair.error = 'the second read looked the relationships up again (not cached)';
      if (!pair.error) {
        const p = await probe(`${required.base}/fhir/Patient/${patientId(2)}`, headers);
        if (p.status !== 403 || p.code !== 'relationship-required') pair.error = `a read of an unrelated patient answered HTTP ${p.status} ${p.code ?? ''}, not 403 relationship-required: the requirement is not in force`;
      }
      // The other process's first read: as cold a process, without the lookup.
      const t2 = performance.now();
      pair.error ??= await checkTarget(plain.base + path, headers, 'clinician');
      pair.plainFirstMs = performance.now() - t2;
      if (pair.error) {
        log(`relationship${side.suffix}: FAILED probe: ${pair.error}`);
        exitCode = 1;
      }
      pairs.push(pair);
    }
    const live = pairs.filter((x) => !x.error).flatMap((x) => [x.required, x.plain]);
    const runs = new Map(live.map((t) => [t.id, []]));
    // At least 6 rounds (of at most 3 s; an even number, so each process runs first in a round as
    // often as the other): the ratio is judged on their median. Fresh processes, each warmed up for
    // at least 3 s: after 1 s the first timed round still paid for the JIT (measured: the process
    // timed first ran 0.5-0.6x the other in that round, using 1.5x its CPU per read).
    const load = { connections, duration: Math.min(duration, 3) };
    const warm = args.quick ? warmup : Math.max(warmup, 3);
    log(`relationship: warm-up ${warm} s x ${live.length}`);
    for (const t of live) await runLoad(t.gw.base + path, headers, { ...load, duration: warm });
    const before = new Map();
    for (const x of pairs.filter((y) => !y.error)) before.set(x.required.id, await lookups(x.required.gw));
    const searchesBefore = await relationshipSearches();
    for (const id of alternation(live.map((t) => t.id), Math.max(rounds, 6))) {
      const t = live.find((x) => x.id === id);
      // With the CPU time the gateway process spent meanwhile: on a machine shared with other work,
      // req/s moves with what the neighbours do, the CPU a request costs much less.
      const cpuBefore = cpuSeconds(t.gw.pid);
      const r = await runLoad(t.gw.base + path, headers, load);
      runs.get(id).push({ ...r, cpuSeconds: cpuSeconds(t.gw.pid) - cpuBefore });
      log(`relationship ${t.label}: ${(r.ok / r.seconds).toFixed(0)} req/s p99 ${r.p99} ms${r.non2xx ? ` non-2xx ${r.non2xx}` : ''}`);
    }
    const searchesDuring = (await relationshipSearches()) - searchesBefore;
    for (const x of pairs) {
      if (!x.error) {
        const b = before.get(x.required.id);
        const a = await lookups(x.required.gw);
        x.hits = a.hit - b.hit;
        x.misses = a.miss - b.miss;
        if (!(x.misses === 0 && searchesDuring === 0 && x.hits > 0)) {
          x.error = `the timed rounds were not all answered from the relationship cache (${x.hits} hits, ${x.misses} misses, ${searches(searchesDuring)})`;
          log(`relationship${x.side.suffix}: FAILED: ${x.error}`);
          exitCode = 1;
        }
      }
      const withReq = x.error ? undefined : aggregate(runs.get(x.required.id));
      const without = x.error ? undefined : aggregate(runs.get(x.plain.id));
      const ratio = withReq && without && without.rps > 0 ? withReq.rps / without.rps : Number.NaN;
      const paired = x.error ? undefined : pairedRounds(runs.get(x.required.id), runs.get(x.plain.id));
      group.rows.push(
        { label: x.required.label, kind: 'gateway', stats: withReq, error: x.error, vs: { ratio, of: 'of the read without the requirement', median: paired?.medianRpsRatio, rounds: paired?.rpsRatios.length } },
        { label: x.plain.label, kind: 'gateway', stats: without, error: x.error },
      );
      if (withReq && without && paired) {
        const list = (xs) => xs.map((v) => v.toFixed(2)).join(', ');
        const [usWith, usWithout] = paired.usPerRequest;
        const cpuLine =
          Number.isFinite(usWith) && Number.isFinite(usWithout)
            ? ` Gateway CPU per read (user + system, all threads): ${usWith.toFixed(0)} µs with the requirement, ${usWithout.toFixed(0)} µs without = ${paired.cpuRatio.toFixed(3)}x (by round ${list(paired.cpuRatios)}).`
            : '';
        const m = paired.medianRpsRatio;
        notes.push(
          `relationship group${x.side.suffix}: the clinician's Patient read with the care-relationship requirement (shipped policy, warm cache) against the same read without it (same token, two gateway processes, ${paired.rpsRatios.length} alternated rounds of ${load.duration} s): ${withReq.rps.toFixed(0)} vs ${without.rps.toFixed(0)} req/s = ${ratio.toFixed(3)}x over all rounds; by round ${list(paired.rpsRatios)}, median ${m.toFixed(3)}x: ${m >= 0.9 ? 'PASS' : 'BELOW'} (target: within 10%, judged on the median of the rounds' ratios, which one disturbed round does not move); p50 ${withReq.p50.toFixed(1)} vs ${without.p50.toFixed(1)} ms, p99 ${withReq.p99.toFixed(1)} vs ${without.p99.toFixed(1)} ms.${cpuLine} Cold lookup, before the warm-up: the first read took ${x.coldMs.toFixed(1)} ms and ${searches(x.coldSearches)} (${x.coldTypes}: every source of the policy's relationships section), the second ${x.warmMs.toFixed(1)} ms and none (the first read of the process without the requirement, as fresh a process: ${x.plainFirstMs.toFixed(1)} ms); timed rounds: ${x.hits} lookups answered from the cache, ${x.misses} misses, ${searches(searchesDuring)}. A read of an unrelated patient (${patientId(2)}) by the same caller: 403 relationship-required`,
        );
      }
      await Promise.all([stopChild(x.required.gw), stopChild(x.plain.gw)]);
    }
    report.groups.push(group);
  }

  if (only.has('consent')) {
    // What enforcing patients' consents costs the answers it releases: the clinician's Patient read
    // and a searchset of 100 Patients on a gateway running the policy with its consent section,
    // every patient holding CONSENTS_PER_PATIENT active consents upstream (nested provisions the
    // gateway evaluates for each Patient, none withholding it from treatment), next to the same
    // requests with the same token on a gateway running the policy without the section; alternated
    // rounds, same run. The patients' consents are looked up by the probes before the warm-up (the
    // section's cache holds for the whole run): the timed rounds take them from the gateway's cache,
    // and the group fails if a Consent search reached the upstream then.
    const group = { key: 'consent', name: `Patient read (${(sizes.patient / 1024).toFixed(1)} KB) and searchset (100 entries), clinician, patients with ${CONSENTS_PER_PATIENT} active consents each, with and without the consent section`, rows: [] };
    const headers = roleHeaders('clinician');
    const kinds = [
      { kind: 'read', what: `Patient read (${RELATED_PATIENT})`, path: `/fhir/Patient/${RELATED_PATIENT}`, patients: 1 },
      // The gateway asks the upstream for one more than the page: 101 patients' consents.
      { kind: 'search', what: 'searchset _count=100', path: '/fhir/Patient?_count=100', patients: PAGE + 1 },
    ];
    // The gateway exports no per-patient consent counts (they would follow withheld records): the
    // requests it judged come from /metrics, the upstream Consent searches from the bench upstream.
    const lookups = async (gw) => ({ judged: await gauge(gw, 'phi_gateway_consent_requests_total{result="judged"}') });
    const consentSearches = async () => (await (await fetch(`${up}/_bench/requests`)).json()).consents;
    const searches = (n) => `${n} upstream Consent ${n === 1 ? 'search' : 'searches'}`;
    /** A probe: the answer's status and, for a searchset, whether it is a full page. */
    const check = async (url, k) => {
      if (k.kind === 'read') return checkTarget(url, headers, 'clinician');
      const { error } = await probeTarget(url, headers, 'clinician', (body) => {
        const shape = searchShape(body);
        return shape.entries === PAGE && shape.next !== undefined ? { detail: '' } : { error: `${shape.entries} entries${shape.next ? '' : ', no next link'}: expected a page of ${PAGE}` };
      });
      return error;
    };
    const pairs = [];
    for (const [i, side] of sides.entries()) {
      const [withConsent, plain] = await Promise.all([
        startGatewayProcess('gateway (consent section)', up, `file:${join(tmp, `audit-consent-${i}`)}`, { PHI_GATEWAY_POLICY: side.consentPolicy }, side),
        startGatewayProcess('gateway (policy without the consent section)', up, `file:${join(tmp, `audit-noconsent-${i}`)}`, {}, side),
      ]);
      const pair = { side, withConsent, plain, cold: {}, targets: [] };
      if (!side.hasConsent) pair.error = `${side.policy} has no consent section`;
      for (const k of kinds) {
        pair.targets.push(
          { id: `consent-${k.kind}-with-${i}`, kind: k.kind, gw: withConsent, label: `gateway clinician, file sink, ${k.what}: consent section, ${CONSENTS_PER_PATIENT} active consents per patient (warm cache)${side.suffix}` },
          { id: `consent-${k.kind}-without-${i}`, kind: k.kind, gw: plain, label: `gateway clinician, file sink, ${k.what}: policy copy without the consent section, same token${side.suffix}` },
        );
        if (pair.error) continue;
        // The first request looks the patients' consents up (cold), the second finds them cached.
        const before = await consentSearches();
        const t0 = performance.now();
        pair.error = await check(withConsent.base + k.path, k);
        const coldMs = performance.now() - t0;
        const coldSearches = (await consentSearches()) - before;
        if (!pair.error && coldSearches === 0) pair.error = `the first ${k.kind} did not look the consents up on the upstream`;
        const t1 = performance.now();
        pair.error ??= await check(withConsent.base + k.path, k);
        const warmMs = performance.now() - t1;
        if (!pair.error && (await consentSearches()) - before !== coldSearches) pair.error = `the second ${k.kind} looked the consents up again (not cached)`;
        const t2 = performance.now();
        pair.error ??= await check(plain.base + k.path, k);
        const plainFirstMs = performance.now() - t2;
        pair.cold[k.kind] = { coldMs, coldSearches, warmMs, plainFirstMs };
      }
      if (!pair.error) {
        // The consents are in force: a purpose one of them denies (COC) is answered as if the Patient did not exist.
        const coc = { ...headers, 'x-purpose-of-use': 'COC' };
        const denied = await probe(`${withConsent.base}/fhir/Patient/${RELATED_PATIENT}`, coc);
        const allowed = await probe(`${plain.base}/fhir/Patient/${RELATED_PATIENT}`, coc);
        if (denied.status !== 404 || allowed.status !== 200) pair.error = `a COC read the patient's consent denies answered HTTP ${denied.status} ${denied.code ?? ''} (without the section: ${allowed.status}), not 404 and 200: the consents are not in force`;
      }
      if (pair.error) {
        log(`consent${side.suffix}: FAILED probe: ${pair.error}`);
        exitCode = 1;
      }
      pairs.push(pair);
    }
    const live = pairs.filter((x) => !x.error).flatMap((x) => x.targets);
    const runs = new Map(live.map((t) => [t.id, []]));
    // As in the relationship group: at least 6 rounds of at most 3 s, fresh processes warmed up 3 s.
    const load = { connections, duration: Math.min(duration, 3) };
    const warm = args.quick ? warmup : Math.max(warmup, 3);
    const urlOf = (t) => t.gw.base + kinds.find((k) => k.kind === t.kind).path;
    log(`consent: warm-up ${warm} s x ${live.length}`);
    for (const t of live) await runLoad(urlOf(t), headers, { ...load, duration: warm });
    const before = new Map();
    for (const x of pairs.filter((y) => !y.error)) before.set(x.side, await lookups(x.withConsent));
    const searchesBefore = await consentSearches();
    for (const k of kinds) {
      const ofKind = live.filter((t) => t.kind === k.kind);
      for (const id of alternation(ofKind.map((t) => t.id), Math.max(rounds, 6))) {
        const t = ofKind.find((x) => x.id === id);
        const cpuBefore = cpuSeconds(t.gw.pid);
        const r = await runLoad(urlOf(t), headers, load);
        runs.get(id).push({ ...r, cpuSeconds: cpuSeconds(t.gw.pid) - cpuBefore });
        log(`consent ${t.label}: ${(r.ok / r.seconds).toFixed(0)} req/s p99 ${r.p99} ms${r.non2xx ? ` non-2xx ${r.non2xx}` : ''}`);
      }
    }
    const searchesDuring = (await consentSearches()) - searchesBefore;
    for (const x of pairs) {
      if (!x.error) {
        const b = before.get(x.side);
        const a = await lookups(x.withConsent);
        x.judged = a.judged - b.judged;
        if (!(searchesDuring === 0 && x.judged > 0)) {
          x.error = `the timed rounds were not all answered from the consent cache (${x.judged} requests judged against consents, ${searches(searchesDuring)})`;
          log(`consent${x.side.suffix}: FAILED: ${x.error}`);
          exitCode = 1;
        }
      }
      const verdicts = [];
      for (const k of kinds) {
        const [withT, withoutT] = x.targets.filter((t) => t.kind === k.kind);
        const withS = x.error ? undefined : aggregate(runs.get(withT.id));
        const withoutS = x.error ? undefined : aggregate(runs.get(withoutT.id));
        const ratio = withS && withoutS && withoutS.rps > 0 ? withS.rps / withoutS.rps : Number.NaN;
        const paired = x.error ? undefined : pairedRounds(runs.get(withT.id), runs.get(withoutT.id));
        group.rows.push(
          { label: withT.label, kind: 'gateway', stats: withS, error: x.error, vs: { ratio, of: 'of the same request without the consent section', median: paired?.medianRpsRatio, rounds: paired?.rpsRatios.length } },
          { label: withoutT.label, kind: 'gateway', stats: withoutS, error: x.error },
        );
        if (!withS || !withoutS || !paired) continue;
        const list = (xs) => xs.map((v) => v.toFixed(2)).join(', ');
        const [usWith, usWithout] = paired.usPerRequest;
        const cpuLine =
          Number.isFinite(usWith) && Number.isFinite(usWithout)
            ? ` Gateway CPU per request (user + system, all threads): ${usWith.toFixed(0)} µs with the section, ${usWithout.toFixed(0)} µs without = ${paired.cpuRatio.toFixed(3)}x (by round ${list(paired.cpuRatios)}).`
            : '';
        const m = paired.medianRpsRatio;
        const c = x.cold[k.kind];
        verdicts.push(`${k.kind} ${m >= 0.9 ? 'PASS' : 'BELOW'}`);
        notes.push(
          `consent group${x.side.suffix}, ${k.what}: with the consent section (${CONSENTS_PER_PATIENT} active consents per patient, warm cache) against the same request without it (same token, two gateway processes, ${paired.rpsRatios.length} alternated rounds of ${load.duration} s): ${withS.rps.toFixed(0)} vs ${withoutS.rps.toFixed(0)} req/s = ${ratio.toFixed(3)}x over all rounds; by round ${list(paired.rpsRatios)}, median ${m.toFixed(3)}x: ${m >= 0.9 ? 'PASS' : 'BELOW'} (target: within 10%, judged on the median of the rounds' ratios); p50 ${withS.p50.toFixed(1)} vs ${withoutS.p50.toFixed(1)} ms, p99 ${withS.p99.toFixed(1)} vs ${withoutS.p99.toFixed(1)} ms.${cpuLine} Cold lookup, before the warm-up: the first request took ${c.coldMs.toFixed(1)} ms and ${searches(c.coldSearches)} (${k.patients} ${k.patients === 1 ? 'patient' : 'patients'} in the answer, up to 50 a search, those the read before had cached aside), the second ${c.warmMs.toFixed(1)} ms and none (the first of the process without the section: ${c.plainFirstMs.toFixed(1)} ms)`,
        );
      }
      if (!x.error) {
        notes.push(
          `consent group${x.side.suffix}: timed rounds ${x.judged} requests judged against consents, ${searches(searchesDuring)} (consent.cacheSeconds ${CONSENT_CACHE_SECONDS} in this group's policy copy); a COC read of the patient (a purpose one of the consents denies): 404 with the section, 200 without. ${verdicts.join(', ')}`,
        );
      }
      await Promise.all([stopChild(x.withConsent), stopChild(x.plain)]);
    }
    report.groups.push(group);
  }

  if (only.has('slow')) {
    // What 300 slow upstream exchanges cost a well-behaved client on the same gateway: its read at a
    // fixed rate (latency counted from when each request was due), alone and next to them, in
    // alternated rounds on one process; reported as the ratio of the two, same run.
    const group = {
      key: 'slow',
      name: `Patient read at a fixed ${SLOW_RATE} req/s, next to ${SLOW_REQUESTS} in-flight requests to an upstream that drips a byte every 200 ms (maxInflightRequests ${SLOW_ENV.BENCH_MAX_INFLIGHT}, upstream.connections ${SLOW_ENV.BENCH_UPSTREAM_CONNECTIONS})`,
      rows: [],
    };
    const dripping = async () => (await (await fetch(`${up}/_bench/requests`)).json()).dripping;
    for (const [i, side] of sides.entries()) {
      const gw = await startGatewayProcess('gateway (slow upstream)', up, `file:${join(tmp, `audit-slow-${i}`)}`, SLOW_ENV, side);
      const headers = roleHeaders('clinician');
      const readUrl = `${gw.base}/fhir/Patient/pat-00001`;
      const plainLabel = `gateway clinician, file sink, well-behaved read alone${side.suffix}`;
      const loadedLabel = `gateway clinician, file sink, well-behaved read next to ${SLOW_REQUESTS} slow-upstream requests${side.suffix}`;
      const error = await checkTarget(readUrl, headers, 'clinician');
      const runs = { plain: [], loaded: [] };
      let failure = error;
      if (!failure) {
        const load = { rate: SLOW_RATE, duration: Math.min(duration, 4), connections };
        await runPaced(readUrl, headers, { ...load, duration: Math.min(warmup, 1) });
        for (const kind of alternation(['plain', 'loaded'], Math.max(rounds, 3))) {
          if (kind === 'plain') {
            runs.plain.push(await runPaced(readUrl, headers, load));
            continue;
          }
          const slow = openSlowRequests(`${gw.base}/fhir/Patient/slow`, headers, SLOW_REQUESTS);
          try {
            const held = await waitFor(async () => (await dripping()) >= SLOW_REQUESTS && (await gauge(gw, 'phi_gateway_inflight_requests')) >= SLOW_REQUESTS, 30_000);
            if (!held) {
              failure = `the ${SLOW_REQUESTS} slow requests did not all reach the upstream within 30 s`;
              break;
            }
            const r = await runPaced(readUrl, headers, load);
            // Measured next to all of them: none ended during the run.
            if ((await dripping()) < SLOW_REQUESTS) {
              failure = 'slow requests ended during the measurement';
              break;
            }
            runs.loaded.push(r);
            log(`slow ${loadedLabel}: p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms`);
          } finally {
            slow.close();
          }
          // Their clients gone, the gateway cancels the upstream calls and frees their slots at once.
          const freed = await waitFor(async () => (await dripping()) === 0 && (await gauge(gw, 'phi_gateway_inflight_requests')) === 0, 10_000);
          if (!freed) {
            failure = 'after the slow clients disconnected, the gateway still held their slots or upstream calls 10 s later';
            break;
          }
        }
      }
      if (failure) {
        log(`slow${side.suffix}: FAILED: ${failure}`);
        exitCode = 1;
      }
      const plain = failure ? undefined : aggregate(runs.plain);
      const loaded = failure ? undefined : aggregate(runs.loaded);
      group.rows.push({ label: plainLabel, kind: 'gateway', stats: plain, error: failure }, { label: loadedLabel, kind: 'gateway', stats: loaded, error: failure });
      if (plain && loaded) {
        notes.push(
          `slow group${side.suffix}: a well-behaved client's read next to ${SLOW_REQUESTS} in-flight slow-upstream requests, p50 ${loaded.p50.toFixed(1)} ms, p99 ${loaded.p99.toFixed(1)} ms = ${(loaded.p50 / plain.p50).toFixed(2)}x (p50), ${(loaded.p99 / plain.p99).toFixed(2)}x (p99) the same run's plain read (p50 ${plain.p50.toFixed(1)} ms, p99 ${plain.p99.toFixed(1)} ms; same process, ${runs.loaded.length} alternated rounds each); after each round the slow clients disconnected and the gateway freed every slot and upstream call`,
        );
      }
      await stopChild(gw);
    }
    report.groups.push(group);
  }

  if (only.has('memory')) {
    const rows = [];
    const bigPath = '/fhir/Patient?name=bigbundle';
    // Fresh processes, so the peak belongs to this test alone.
    const measureRss = async (label, child, headers, limit) => {
      const before = child.rss().rss;
      const sampler = sampleRss(child.pid, 25);
      // One request per client, all at once: the peak is 64 bodies in flight together.
      const t0 = Date.now();
      const r = await runLoad(child.base + bigPath, headers, { connections: MEMORY_CLIENTS, amount: MEMORY_CLIENTS * memoryRequestsPerClient, timeout: 120 });
      const seconds = (Date.now() - t0) / 1000;
      const sampled = sampler.stop();
      const peak = Math.max(sampled, child.rss().peak || 0);
      rows.push({ label, limit, before, peak, ok: r.ok, non2xx: r.non2xx, errors: r.errors, seconds });
      log(`memory ${label}: RSS ${(before / 1048576).toFixed(0)} -> peak ${(peak / 1048576).toFixed(0)} MB, ${r.ok} ok, ${r.non2xx} non-2xx`);
    };
    const parse = await start('parse-proxy', { BENCH_UPSTREAM: up });
    await measureRss('parse + re-serialize proxy', parse, plainHeaders, undefined);
    await stopChild(parse);

    const defaultLimit = (await dist('config/gateway.js')).DEFAULTS?.responseBodyBytes;
    const overLimit = [];
    for (const [i, side] of sides.entries()) {
      const gw = await startGatewayProcess('gateway (memory)', up, `file:${join(tmp, `audit-mem-${i}`)}`, {}, side);
      const label = `gateway clinician, configured limit${side.suffix}`;
      const err = await checkTarget(gw.base + bigPath, roleHeaders('clinician'), 'clinician');
      if (err) rows.push({ label, error: err });
      else await measureRss(label, gw, roleHeaders('clinician'), defaultLimit);
      await stopChild(gw);

      const small = await startGatewayProcess('gateway (1 MiB limit)', up, `file:${join(tmp, `audit-small-${i}`)}`, { BENCH_RESPONSE_LIMIT: String(SMALL_LIMIT) }, side);
      const p = await probe(small.base + bigPath, roleHeaders('clinician')).catch((e) => ({ status: 0, code: e.message }));
      overLimit.push(
        p.status === 502
          ? `${side.name ? `@${side.name}: ` : ''}a ${(sizes.big / 1048576).toFixed(1)} MB upstream answer with responseBodyBytes = 1 MiB gets HTTP 502 (${p.code}), ${p.bytes} bytes, no PHI passed through.`
          : `${side.name ? `@${side.name}: ` : ''}FAILED: expected 502 for an upstream answer over responseBodyBytes, got HTTP ${p.status} ${p.code ?? ''}`,
      );
      if (p.status !== 502) exitCode = 1;
      await measureRss(`gateway clinician, responseBodyBytes 1 MiB (all 502)${side.suffix}`, small, roleHeaders('clinician'), SMALL_LIMIT);
      await stopChild(small);

      const budgeted = await startGatewayProcess('gateway (32 MiB budget)', up, `file:${join(tmp, `audit-budget-${i}`)}`, { BENCH_BUFFER_BYTES: String(BUDGET_BYTES) }, side);
      const label2 = `gateway clinician, bufferBytes 32 MiB (excess: 503 gateway-busy)${side.suffix}`;
      await measureRss(label2, budgeted, roleHeaders('clinician'), defaultLimit);
      await stopChild(budgeted);
      const row = rows[rows.length - 1];
      const grew = row.peak - row.before;
      const within = grew <= BUDGET_BOUND && row.errors === 0 && row.ok > 0;
      overLimit.push(
        `${side.name ? `@${side.name}: ` : ''}budget check (bufferBytes 32 MiB, bound ${(BUDGET_BOUND / 1048576).toFixed(0)} MB = ${BUDGET_FACTOR} x budget + 128 MB): RSS grew ${(grew / 1048576).toFixed(0)} MB, ${row.ok} answered, ${row.non2xx} refused: ${within ? 'PASS' : 'FAIL'}.`,
      );
      if (!within) exitCode = 1;
    }
    report.memory = { clients: MEMORY_CLIENTS, bigBytes: sizes.big, rows, overLimit: overLimit.join(' ') };
  }

  await stopChild(upstream);

  if (only.has('micro')) {
    for (const side of sides) {
      log(`micro-benchmarks${side.suffix}`);
      try {
        const micro = await startChild(join(here, 'micro.mjs'), {
          env: { BENCH_ROOT: side.root, BENCH_KEYS_DIR: join(tmp, 'keys'), PHI_GATEWAY_PSEUDONYM_KEY: pseudonymKey, BENCH_QUICK: args.quick ? '1' : '0' },
          timeoutMs: 240_000,
          label: 'micro.mjs',
        });
        if (side.name === undefined) report.micro = micro.info.micro;
        else report.microBySide = { ...report.microBySide, [side.name]: micro.info.micro };
        await micro.stop();
      } catch (e) {
        notes.push(`micro-benchmarks${side.suffix} FAILED: ${e.message.split('\n').slice(0, 6).join(' | ')}`);
        exitCode = 1;
      }
    }
  }
} catch (e) {
  notes.push(`benchmark aborted: ${e.message.split('\n').slice(0, 6).join(' | ')}`);
  exitCode = 1;
} finally {
  await cleanup();
}

report.machine.loadavgEnd = loadavg().map((x) => x.toFixed(2)).join(' ');
notes.push(`total runtime ${((Date.now() - started) / 1000).toFixed(0)} s`);
const markdown = renderReport(report);
process.stdout.write(`${markdown}\n`);
mkdirSync(dirname(resolve(args.out)), { recursive: true });
writeFileSync(resolve(args.out), markdown);
writeFileSync(resolve(args.out).replace(/\.md$/, '') + '.json', `${JSON.stringify(report, null, 2)}\n`);
process.exit(exitCode);
