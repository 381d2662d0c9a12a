/**
 * Micro-benchmarks of the gateway's pure parts, in-process, against the built dist/ of BENCH_ROOT
 * (default: this checkout): token verification cold vs cached, request classification, the policy
 * decision, redaction of the 100-entry searchset against JSON.parse + JSON.stringify of the same
 * bytes, and audit record hashing. Run by bench/run.mjs in a child process (results over IPC);
 * run alone (`node bench/micro.mjs`) it prints its own table.
 */
import { mkdtempSync, rmSync } from 'node:fs';
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

const [{ loadGatewayConfig, loadPolicy }, { createTokenVerifier }, demo, { classify }, { decide }, { filterResponse }, chain, rec, types] =
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
for (const role of Object.keys(ROLES)) {
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
function auditRecord(role, request, body, id) {
  const ctx = contextFor(role, request);
  const r = filterResponse(body, ctx);
  return rec.toAuditRecord(
    {
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
      rule: 'roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]',
      upstreamStatus: 200,
      upstreamMs: 1.2,
      stats: r.stats,
    },
    { status: 200, decision: 'allow', rule: 'roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]' },
  );
}
const readRecord = auditRecord('billing', readReq, patientValue, 'req-read');
const searchRecord = auditRecord('billing', searchReq, searchValue, 'req-search');
const head = chain.genesisHead('bench-writer');
await add('audit', 'chain + hash audit record (read)', () => chain.chainRecords(head, [readRecord]).next.hash);
await add('audit', 'chain + hash audit record (search, 100 ids)', () => chain.chainRecords(head, [searchRecord]).next.hash);
// What the sinks run per request: the stored line and its hash, no parsed copy.
await add('audit', 'chainLine audit record (read)', () => chain.chainLine(head, readRecord).line);
await add('audit', 'chainLine audit record (search, 100 ids)', () => chain.chainLine(head, searchRecord).line);

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
