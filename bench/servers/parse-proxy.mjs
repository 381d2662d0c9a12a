/**
 * The second baseline: a proxy that only parses and re-serializes the JSON (Fastify + undici
 * request + JSON.parse/JSON.stringify). The gateway cannot be cheaper than this on a body it must
 * filter, so "gateway / parse-only" isolates the cost of auth, policy, redaction and audit.
 */
import Fastify from 'fastify';
import { Pool } from 'undici';

const port = Number(process.env.BENCH_PORT);
const upstream = process.env.BENCH_UPSTREAM; // origin
const pool = new Pool(upstream, { connections: 64 });

const app = Fastify({ logger: false });
app.get('/fhir/*', async (request, reply) => {
  const res = await pool.request({ method: 'GET', path: request.url, headers: { accept: 'application/fhir+json' } });
  const value = JSON.parse(await res.body.text());
  reply.code(res.statusCode).header('content-type', 'application/fhir+json; charset=utf-8');
  return JSON.stringify(value);
});
await app.listen({ host: '127.0.0.1', port });
process.send?.({ ready: true, port });
process.on('message', (m) => {
  if (m === 'stop') app.close().then(() => pool.close()).then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
