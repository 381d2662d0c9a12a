/**
 * The upstream for the benchmarks: a node:http server returning prebuilt bytes, so the numbers
 * measure the proxies, not a FHIR server. It pages like a FHIR server over a fixed result set of
 * 1,000 synthetic Patients (bench/lib/payloads.mjs createPagedSearch), so a proxy asking for one
 * more entry than its client (the gateway, to learn whether a next page exists) gets one upstream
 * page, as from a real server. Routes:
 *   GET /fhir/Patient/slow                    a dripping answer: 200 at once, then one byte of a
 *                                             Patient every 200 ms, never finishing (the `slow`
 *                                             group: only the client's going away or the
 *                                             gateway's total deadline ends it)
 *   GET /fhir/Patient/<id>                    ~4 KB Patient
 *   GET /fhir/Patient?name=bigbundle          ~5 MB searchset (memory test), whatever the paging
 *   GET /fhir/Patient?name=halfwithheld&...   paged result set, every other Patient labelled R
 *   GET /fhir/Patient?...                     paged result set: `_count` (default 100, at most
 *                                             1000) entries from `_offset`, `total` 1000, `next`
 *                                             link only while more remain (~400 KB a page of 100)
 *   GET /fhir/CareTeam?participant=...        the care relationships the gateway looks up
 *       (and Encounter, EpisodeOfCare,        (the `relationship` group): one active CareTeam,
 *       PractitionerRole, Task searches)      Practitioner/bench-prac on it, about pat-00001;
 *                                             every other relationship search is an empty
 *                                             searchset (lib/payloads.mjs relationshipSearch)
 *   GET /fhir/Consent?patient=...             patients' consents (the `consent` group): three
 *                                             active Consents for every patient named
 *                                             (lib/payloads.mjs consentSearch)
 *   GET /fhir/metadata                        a minimal CapabilityStatement
 *   GET /_bench/requests                      { fhir: requests under /fhir so far, dripping:
 *                                             slow answers still being dripped, relationships:
 *                                             relationship searches so far, by type, consents:
 *                                             Consent searches so far } (probes count the
 *                                             upstream requests one answer took)
 * Pages are built on first use and cached as Buffers (bounded). Started by bench/run.mjs as a
 * child process; reports { ready, port, sizes } over IPC.
 */
import { createServer } from 'node:http';
import { buildPayloads, consentSearch, createPagedSearch, RELATIONSHIP_TYPES, relationshipSearch } from '../lib/payloads.mjs';

const port = Number(process.env.BENCH_PORT);
const base = `http://127.0.0.1:${port}/fhir`;
const payloads = buildPayloads(base);
const search = createPagedSearch(base);
const metadata = Buffer.from(
  JSON.stringify({ resourceType: 'CapabilityStatement', status: 'active', date: '2024-01-01', kind: 'instance', fhirVersion: '4.0.1', format: ['json'] }),
);
const notFound = Buffer.from(
  JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }),
);
let fhirRequests = 0;
const relationshipSearches = Object.fromEntries(RELATIONSHIP_TYPES.map((t) => [t, 0]));
let consentSearches = 0;
let dripping = 0;
const DRIP_EVERY_MS = 200;
const DRIP_HEAD = '{"resourceType":"Patient","id":"slow"';

/** Headers at once, then a byte every DRIP_EVERY_MS (JSON whitespace after the head) until the connection closes. */
function drip(res) {
  res.writeHead(200, { 'content-type': 'application/fhir+json; charset=utf-8' });
  dripping++;
  let i = 0;
  const timer = setInterval(() => {
    res.write(i < DRIP_HEAD.length ? DRIP_HEAD[i] : ' ');
    i++;
  }, DRIP_EVERY_MS);
  res.on('close', () => {
    clearInterval(timer);
    dripping--;
  });
}

function send(res, status, body, type = 'application/fhir+json; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'content-length': body.length });
  res.end(body);
}

const server = createServer((req, res) => {
  const url = req.url ?? '/';
  if (url.startsWith('/fhir/')) fhirRequests++;
  if (url === '/fhir/Patient/slow') return drip(res);
  if (url.startsWith('/fhir/Patient/')) return send(res, 200, payloads.patient);
  if (url.startsWith('/fhir/Patient?') || url === '/fhir/Patient') {
    const query = new URLSearchParams(url.slice('/fhir/Patient?'.length));
    if (query.get('name') === 'bigbundle') return send(res, 200, payloads.big);
    const { status, body } = search.page(query);
    return send(res, status, body);
  }
  if (url.startsWith('/fhir/metadata')) return send(res, 200, metadata);
  if (url.startsWith('/fhir/Consent?')) {
    consentSearches++;
    return send(res, 200, consentSearch(base, new URLSearchParams(url.slice('/fhir/Consent?'.length))));
  }
  const q = url.indexOf('?');
  const type = url.startsWith('/fhir/') ? url.slice('/fhir/'.length, q < 0 ? undefined : q) : '';
  if (Object.hasOwn(relationshipSearches, type)) {
    relationshipSearches[type]++;
    return send(res, 200, relationshipSearch(base, type, new URLSearchParams(q < 0 ? '' : url.slice(q + 1))));
  }
  if (url === '/_bench/requests') {
    const counts = { fhir: fhirRequests, dripping, relationships: relationshipSearches, consents: consentSearches, pages: search.stats, cached: search.cached() };
    return send(res, 200, Buffer.from(JSON.stringify(counts)), 'application/json');
  }
  return send(res, 404, notFound);
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  process.send?.({ ready: true, port, sizes: { patient: payloads.patient.length, searchset: payloads.searchset.length, big: payloads.big.length } });
});
process.on('message', (m) => {
  if (m === 'stop') server.close(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
