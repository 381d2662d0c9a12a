/**
 * The gateway under test, from the built dist/ of BENCH_ROOT (so bench/compare can point it at
 * another revision). Config: BENCH_ROOT/config/gateway.yaml through loadGatewayConfig with the
 * PHI_GATEWAY_* environment overrides the parent sets (PHI_GATEWAY_POLICY: the shipped policy, or
 * the copy without care-relationship requirements of lib/policy.mjs), then the two settings that have no
 * environment variable: auth.jwksFile (the demo key's JWKS) and, for the memory test,
 * limits.responseBodyBytes (BENCH_RESPONSE_LIMIT); for the slow-upstream group,
 * limits.maxInflightRequests (BENCH_MAX_INFLIGHT) and upstream.connections (BENCH_UPSTREAM_CONNECTIONS). Reports { ready, port } over IPC; on 'stop'
 * closes gracefully (flushes audit) and exits, which also writes a --cpu-prof profile.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = process.env.BENCH_ROOT;
const dist = (p) => pathToFileURL(join(root, 'dist', p)).href;
const { loadGatewayConfig } = await import(dist('config/load.js'));
const { startGateway } = await import(dist('server/runtime.js'));

let config = loadGatewayConfig(join(root, 'config', 'gateway.yaml'), process.env);
config = { ...config, auth: { ...config.auth, jwksUri: undefined, jwksFile: process.env.BENCH_JWKS_FILE } };
const limit = Number(process.env.BENCH_RESPONSE_LIMIT ?? 0);
if (limit > 0) {
  config = { ...config, limits: { ...config.limits, responseBodyBytes: limit, decompressedBytes: Math.max(limit, config.limits.decompressedBytes) } };
}

// Memory test of the in-flight budget (limits.bufferBytes), also without an environment variable.
const bufferBytes = Number(process.env.BENCH_BUFFER_BYTES ?? 0);
if (bufferBytes > 0) config = { ...config, limits: { ...config.limits, bufferBytes, responseBodyBytes: Math.min(config.limits.responseBodyBytes, bufferBytes) } };

// The slow-upstream group holds 300 dripping exchanges in flight next to its well-behaved client:
// room for them in the in-flight limit and the upstream pool.
const maxInflight = Number(process.env.BENCH_MAX_INFLIGHT ?? 0);
if (maxInflight > 0) config = { ...config, limits: { ...config.limits, maxInflightRequests: maxInflight } };
const upstreamConnections = Number(process.env.BENCH_UPSTREAM_CONNECTIONS ?? 0);
if (upstreamConnections > 0) config = { ...config, upstream: { ...config.upstream, connections: upstreamConnections } };

const gw = await startGateway(config);
process.send?.({ ready: true, port: config.listen.port, url: gw.url });

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await gw.close();
  } finally {
    process.exit(0);
  }
}
// CPU profile of a window chosen by the parent (bench/profile.mjs), so start-up (module loading,
// schema and policy compilation) and warm-up stay out of it.
let session;
async function profile(m) {
  const inspector = await import('node:inspector/promises');
  if (m.profile === 'start') {
    session = new inspector.Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
    process.send?.({ profiling: true });
  } else if (m.profile === 'stop' && session) {
    const { profile: data } = await session.post('Profiler.stop');
    session.disconnect();
    session = undefined;
    const { writeFileSync } = await import('node:fs');
    writeFileSync(m.file, JSON.stringify(data));
    process.send?.({ profiled: m.file });
  }
}
process.on('message', (m) => {
  if (m === 'stop') void stop();
  else if (m && typeof m === 'object' && 'profile' in m) void profile(m);
});
process.on('disconnect', () => void stop());
