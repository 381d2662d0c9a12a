// Container HEALTHCHECK: GET /healthz on the admin listener (PHI_GATEWAY_ADMIN_LISTEN's port, from
// inside the container). Exit 0 healthy, 1 not. No curl/wget in the slim image: Node's fetch does it.
const listen = process.env.PHI_GATEWAY_ADMIN_LISTEN || '127.0.0.1:9090';
const port = listen.slice(listen.lastIndexOf(':') + 1);
try {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2500) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
