/**
 * The baseline: a bare @fastify/http-proxy in front of the upstream, no auth, no parsing. Started
 * by bench/run.mjs as a child process; reports { ready, port } over IPC.
 */
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const port = Number(process.env.BENCH_PORT);
const upstream = process.env.BENCH_UPSTREAM; // origin, e.g. http://127.0.0.1:1234

const app = Fastify({ logger: false });
// Same upstream pool size as the gateway's default (upstream.connections: 64).
await app.register(proxy, { upstream, prefix: '/fhir', rewritePrefix: '/fhir', undici: { connections: 64 } });
await app.listen({ host: '127.0.0.1', port });
process.send?.({ ready: true, port });
process.on('message', (m) => {
  if (m === 'stop') app.close().then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
