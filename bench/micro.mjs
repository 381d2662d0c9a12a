/**
 * Micro-benchmarks of the gateway's pure parts, in-process, against the built dist/ of BENCH_ROOT
 * (default: this checkout): token verification cold vs cached, request classification, the policy
 * decision, redaction of the 100-entry searchset against JSON.parse + JSON.stringify of the same
 * bytes, and audit record hashing. Run by bench/run.mjs in a child process (results over IPC);
 * run alone (`node bench/micro.mjs`) it prints its own table.
 *
 * Options (environment): BENCH_QUICK=1 (fewer, shorter rounds); BENCH_GROUPS=audit,redact (only
 * those groups: auth, policy, redact, audit); BENCH_ROOT=DIR (measure another checkout's dist/).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildPayloads } from './lib/payloads.mjs';
import { microTable } from './lib/report.mjs';
import { measure } from './lib/timing.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(process.env.BENCH_ROOT ?? join(here, '..'));
const dist = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const quick = process.env.BENCH_QUICK === '1';
const opts = quick ? { rounds: 5, roundMs: 30 } : { rounds: 11, roundMs: 80 };
const groups = process.env.BENCH_GROUPS ? new Set(process.env.BENCH_GROUPS.split(',').map((g) => g.trim())) : undefined;
const wanted = (group) => groups === undefined || groups.has(group);

const [{ loadGatewayConfig, loadPolicy }, { createTokenVerifier }, demo, { classify }, { decide }, { filterResponse }, chain, rec, types, fileSink] =
  await Promise.all([
    dist('config/load.js'),
    dist('auth/verify.js'),
    dist('auth/demo-keys.js'),
    dist('policy/classify.js'),
    dist('policy/decide.js'),
    dist('redact/response.js'),
    dist('audit/chain.js'),
    dist('proxy/record.js'),
    dist('fhir/resource-types.js'),
    dist('audit/file-sink.js'),
  ]);

const ownKeys = process.env.BENCH_KEYS_DIR === undefined;
const keysDir = process.env.BENCH_KEYS_DIR ?? mkdtempSync(join(tmpdir(), 'phi-bench-keys-'));
const keys = await demo.ensureDemoKeys(keysDir);
const pseudonymKey = process.env.PHI_GATEWAY_PSEUDONYM_KEY ?? 'bench-pseudonym-key-0123456789abcdef0123';
const config = loadGatewayConfig(join(root, 'config', 'gateway.yaml'), {
  PHI_GATEWAY_ISSUER: keys.issuer,
  PHI_GATEWAY_AUDIENCE: keys.audience,
  PHI_GATEWAY_PSEUDONYM_KEY: pseudonymKey,
});
const auth = { ...config.auth, jwksUri: undefined, jwksFile: keys.jwksFile };
const cold = createTokenVerifier({ ...auth, tokenCacheSize: 0 });
const warm = createTokenVerifier({ ...auth, tokenCacheSize: 1000 });
const loaded = loadPolicy(config.policyFile, { pseudonymKey });
const policy = loaded.policy;

const upstreamBase = 'http://127.0.0.1:8103/fhir';
const publicBase = 'http://127.0.0.1:8080/fhir';
// As the pipeline rewrites: only URLs under the upstream base.
const rewriteUrl = (url) => {
  if (url === upstreamBase) return publicBase;
  if (url.startsWith(upstreamBase) && (url[upstreamBase.length] === '/' || url[upstreamBase.length] === '?')) {
    return publicBase + url.slice(upstreamBase.length);
  }
  return undefined;
};
const payloads = buildPayloads(upstreamBase);
const searchText = payloads.searchset.toString('utf8');
const searchValue = JSON.parse(searchText);
const patientValue = JSON.parse(payloads.patient.toString('utf8'));

const classifyOpts = { isResourceType: types.isR4ResourceType, maxBodyBytes: config.limits.requestBodyBytes };
const readRaw = { method: 'GET', url: '/Patient/pat-00001', headers: { accept: 'application/fhir+json' }, body: undefined };
const searchRaw = { method: 'GET', url: '/Patient?_count=100', headers: { accept: 'application/fhir+json' }, body: undefined };
const readReq = classify(readRaw, classifyOpts);
const searchReq = classify(searchRaw, classifyOpts);

const ROLES = { clinician: 'TREAT', billing: 'HPAYMT', researcher: 'HRESCH' };
const principals = {};
const tokens = {};
for (const role of Object.keys(ROLES)) {
  tokens[role] = `Bearer ${await demo.mintDemoToken(keys, { role })}`;
  principals[role] = await warm.verify(tokens[role]);
}

function contextFor(role, request) {
  const d = decide({ policy, principal: principals[role], purpose: ROLES[role], request });
  if (!d.allow) throw new Error(`policy denies ${role} ${request.interaction}: ${d.code} (${d.rule})`);
  const eligible = principals[role].roles.some((r) => policy.roles.get(r)?.breakGlass === true);
  return {
    ...loaded.context,
    planFor: (t) => d.plan.types.get(t),
    withheldMode: eligible ? 'announce' : 'hide',
    rewriteUrl,
    patientCompartment: undefined,
  };
}

const results = [];
const add = async (group, name, fn, o = {}) => {
  if (!wanted(group)) return undefined;
  const r = await measure(name, fn, { ...opts, ...o });
  results.push({ group, ...r });
  return r;
};

// Tokens: cold = full ES256 signature + claims checks; cached = sha256 of the token + LRU hit.
await add('auth', 'verify token, cold (no cache, ES256)', () => cold.verify(tokens.billing), { async: true });
await add('auth', 'verify token, cached', () => warm.verify(tokens.billing), { async: true });

await add('policy', 'classify GET /Patient/id', () => classify(readRaw, classifyOpts));
await add('policy', 'classify GET /Patient?_count=100', () => classify(searchRaw, classifyOpts));
for (const role of Object.keys(ROLES)) {
  await add('policy', `decide ${role} search`, () => decide({ policy, principal: principals[role], purpose: ROLES[role], request: searchReq }));
}

// Redaction of the searchset vs the floor any JSON-rewriting proxy pays: parse + stringify.
const parseStringify = await add('redact', 'JSON.parse + JSON.stringify searchset (baseline)', () => JSON.stringify(JSON.parse(searchText)));
const redaction = {};
for (const role of wanted('redact') ? Object.keys(ROLES) : []) {
  const ctx = contextFor(role, searchReq);
  const check = filterResponse(searchValue, ctx);
  if (check.kind !== 'ok') throw new Error(`filterResponse withheld the searchset for ${role}`);
  const filterOnly = await add('redact', `filterResponse searchset, ${role}`, () => filterResponse(searchValue, ctx).body);
  const full = await add('redact', `parse + filterResponse + stringify searchset, ${role}`, () =>
    JSON.stringify(filterResponse(JSON.parse(searchText), ctx).body),
  );
  redaction[role] = {
    filterVsParseStringify: parseStringify.nsPerOp / filterOnly.nsPerOp,
    fullVsParseStringify: parseStringify.nsPerOp / full.nsPerOp,
    outBytes: Buffer.byteLength(JSON.stringify(check.body)),
    elementsRemoved: check.stats.elementsRemoved,
  };
}
const readCtx = contextFor('billing', readReq);
await add('redact', 'filterResponse Patient read, billing', () => filterResponse(patientValue, readCtx).body);

// Audit: the record the pipeline builds for a billing search (100 disclosed ids) and a read.
function exchange(role, request, body, id) {
  const ctx = contextFor(role, request);
  const r = filterResponse(body, ctx);
  return {
    id,
    time: new Date('2024-05-01T12:00:00Z'),
    started: process.hrtime.bigint(),
    method: 'GET',
    url: request.interaction === 'read' ? readRaw.url : searchRaw.url,
    clientAddress: '127.0.0.1',
    userAgent: 'bench',
    policyVersion: policy.version,
    principal: principals[role],
    purpose: ROLES[role],
    role,
    request,
    rule: `roles.${role}.purposes.${ROLES[role]} -> dataSets.${role}.rules[0]`,
    upstreamStatus: 200,
    upstreamMs: 1.2,
    stats: r.stats,
  };
}
const outcomeFor = (role) => ({ status: 200, decision: 'allow', rule: `roles.${role}.purposes.${ROLES[role]} -> dataSets.${role}.rules[0]` });
const auditRecord = (role, request, body, id) => rec.toAuditRecord(exchange(role, request, body, id), outcomeFor(role));
const readRecord = auditRecord('billing', readReq, patientValue, 'req-read');
const searchRecord = auditRecord('billing', searchReq, searchValue, 'req-search');
const head = chain.genesisHead('bench-writer');
await add('audit', 'chain + hash audit record (read)', () => chain.chainRecords(head, [readRecord]).next.hash);
await add('audit', 'chain + hash audit record (search, 100 ids)', () => chain.chainRecords(head, [searchRecord]).next.hash);
// What the sinks run per request: the stored line and its hash, no parsed copy.
await add('audit', 'chainLine audit record (read)', () => chain.chainLine(head, readRecord).line);
await add('audit', 'chainLine audit record (search, 100 ids)', () => chain.chainLine(head, searchRecord).line);
// The profiled case: a clinician Patient read, record built and chained as the pipeline does.
const clinicianRead = exchange('clinician', readReq, patientValue, '0f0e8a52-6d1c-4f55-9b8e-3c2d1a0b9f7e');
await add('audit', 'toAuditRecord clinician read', () => rec.toAuditRecord(clinicianRead, outcomeFor('clinician')));
await add('audit', 'toAuditRecord + chainLine clinician read', () => chain.chainLine(head, rec.toAuditRecord(clinicianRead, outcomeFor('clinician'))).line);
// A record whose `details` and breakGlass are set (export / break-glass kinds).
const detailed = { ...readRecord, breakGlass: { reason: 'ED: unresponsive patient \u2014 "urgent"', session: 'bg-1' }, details: { format: 'ndjson', from: '2024-01-01', n: 3 } };
await add('audit', 'chainLine record with breakGlass + details', () => chain.chainLine(head, detailed).line);
// The file sink's whole commit of a batch (chain + encode), I/O replaced by no-ops.
if (wanted('audit')) {
  const dir = mkdtempSync(join(tmpdir(), 'phi-bench-audit-'));
  const noIo = {
    async openAppend(path) {
      writeFileSync(path, '');
      return { async append() {}, async datasync() {}, async truncate() {}, async close() {} };
    },
    async syncDir() {},
  };
  const sink = await fileSink.FileAuditSink.open({ dir, rotateBytes: 2 ** 40, groupCommitMs: 0, writerId: 'bench-writer', io: noIo, checkpointEvery: 2 ** 40 });
  const batch = Array.from({ length: 16 }, () => rec.toAuditRecord(clinicianRead, outcomeFor('clinician')));
  const r = await add('audit', 'file sink: 16 clinician-read records written, per batch (no-op I/O)', () => Promise.all(batch.map((x) => sink.write(x))), { async: true });
  results.push({ group: 'audit', name: '  … per record', nsPerOp: r.nsPerOp / 16, opsPerSec: r.opsPerSec * 16, iterations: r.iterations, rounds: r.rounds, spread: r.spread });
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
}

const out = {
  payloadBytes: { patient: payloads.patient.length, searchset: payloads.searchset.length },
  results,
  redaction,
};
if (ownKeys) rmSync(keysDir, { recursive: true, force: true });
if (process.send) {
  process.send({ micro: out }, () => process.exit(0));
} else {
  process.stdout.write(`${microTable(out)}\n`);
}
