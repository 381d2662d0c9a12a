/**
 * The upstream for the benchmarks: a fixed-response node:http server returning prebuilt bytes, so
 * the numbers measure the proxies, not a FHIR server. Routes:
 *   GET /fhir/Patient/<id>            ~4 KB Patient
 *   GET /fhir/Patient?name=bigbundle  ~5 MB searchset (memory test)
 *   GET /fhir/Patient?...             100-entry searchset (~400 KB)
 *   GET /fhir/metadata                a minimal CapabilityStatement
 * Started by bench/run.mjs as a child process; reports { ready, port } over IPC.
 */
import { createServer } from 'node:http';
import { buildPayloads } from '../lib/payloads.mjs';

const port = Number(process.env.BENCH_PORT);
const base = `http://127.0.0.1:${port}/fhir`;
const payloads = buildPayloads(base);
const metadata = Buffer.from(
  JSON.stringify({ resourceType: 'CapabilityStatement', status: 'active', date: '2024-01-01', kind: 'instance', fhirVersion: '4.0.1', format: ['json'] }),
);
const notFound = Buffer.from(
  JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }),
);

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/fhir+json; charset=utf-8', 'content-length': body.length });
  res.end(body);
}

const server = createServer((req, res) => {
  const url = req.url ?? '/';
  if (url.startsWith('/fhir/Patient/')) return send(res, 200, payloads.patient);
  if (url.startsWith('/fhir/Patient?') || url === '/fhir/Patient') {
    return send(res, 200, url.includes('name=bigbundle') ? payloads.big : payloads.searchset);
  }
  if (url.startsWith('/fhir/metadata')) return send(res, 200, metadata);
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
