/**
 * One rung of the cost ladder (bench/ladder.mjs): a Fastify server built from the gateway's own
 * modules in dist/ that does the gateway's work up to LADDER_STEP and answers at once, so the CPU
 * each stage adds per request can be measured under the same load as the gateway. Never a
 * gateway: a rung below `audit` releases data without an audit record. Bench only.
 *
 *   1 plumbing   Fastify route, the gateway's undici dispatch to the upstream, upstream bytes sent back
 *   2 policy     + token verification (cached), purpose, classify, decide
 *   3 parse      + decode and strict JSON parse of the answer
 *   4 filter     + filterResponse with the role's plan
 *   5 serialize  + JSON.stringify of the filtered body (sent instead of the upstream bytes)
 *   6 audit      + the audit record, chained and made durable by the file sink before the answer
 *
 * The real gateway (bench/servers/gateway.mjs) adds to rung 6: the request log line, metrics and
 * anomaly observers and gate, the in-flight limit and buffer budget, response headers, errors.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Fastify from 'fastify';
import { Pool } from 'undici';

const root = process.env.BENCH_ROOT;
const step = Number(process.env.LADDER_STEP);
const dist = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const { loadGatewayConfig } = await dist('config/load.js');
const { defaultSteps, policyRuntime } = await dist('server/runtime.js');
const { createTokenVerifier } = await dist('auth/verify.js');
const { authorizationFromRawHeaders } = await dist('auth/header.js');
const { dispatchUpstream } = await dist('proxy/upstream-dispatch.js');
const { buildUpstreamCall } = await dist('proxy/upstream-request.js');
const { decodeUpstreamBody } = await dist('proxy/upstream-body.js');
const { toAuditRecord } = await dist('proxy/record.js');
const { createAuditSink } = await dist('audit/index.js');

let config = loadGatewayConfig(join(root, 'config', 'gateway.yaml'), process.env);
config = { ...config, auth: { ...config.auth, jwksUri: undefined, jwksFile: process.env.BENCH_JWKS_FILE } };
const rt = policyRuntime(config);
const steps = defaultSteps(config.limits.requestBodyBytes);
const verifier = createTokenVerifier(config.auth);
const upstreamUrl = new URL(config.upstream.url);
const basePath = upstreamUrl.pathname.replace(/\/+$/, '');
const pool = new Pool(upstreamUrl.origin, { connections: config.upstream.connections, pipelining: 1 });
const audit = step >= 6 ? await createAuditSink(config.audit) : undefined;
const upstreamBase = config.upstream.url.replace(/\/+$/, '');
const publicBase = config.publicBaseUrl.replace(/\/+$/, '');
const rewriteUrl = (u) => (u.startsWith(upstreamBase) ? publicBase + u.slice(upstreamBase.length) : undefined);
const CT = 'application/fhir+json; charset=utf-8';

const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
app.get('/fhir/*', async (request, reply) => {
  const started = process.hrtime.bigint();
  const url = request.url.slice('/fhir'.length);
  let req = { interaction: 'read', upstreamPath: url.split('?')[0], upstreamQuery: url.split('?')[1] ?? '', method: 'GET', body: undefined };
  let principal;
  let purpose;
  let plan;
  if (step >= 2) {
    principal = await verifier.verify(authorizationFromRawHeaders(request.raw.rawHeaders));
    const p = steps.parsePurpose(request.headers['x-purpose-of-use'], rt.policy);
    if (!p.ok) throw new Error(p.code);
    purpose = p.code;
    req = steps.classify({ method: request.method, url, headers: request.headers, body: undefined });
    const d = steps.decide({ policy: rt.policy, principal, purpose, requestedRole: request.headers['x-role'], request: req });
    if (!d.allow) throw new Error(d.code);
    plan = d.plan;
  }
  const call = buildUpstreamCall(req, request.headers, { basePath, requestId: request.id, authorization: undefined });
  const up = await dispatchUpstream(pool, call, { limit: config.limits.responseBodyBytes });
  let payload = up.body;
  let stats;
  if (step >= 3) {
    const body = decodeUpstreamBody(up.body, up.headers, config.limits);
    if (step >= 4) {
      const result = steps.filterResponse(body.value, {
        ...rt.redact,
        planFor: (t) => plan.types.get(t),
        withheldMode: 'hide',
        rewriteUrl,
        patientCompartment: principal.patient,
      });
      stats = result.stats;
      if (step >= 5) payload = Buffer.from(JSON.stringify(result.body));
    }
  }
  if (step >= 6) {
    const ex = {
      id: request.id,
      time: new Date(),
      started,
      method: request.method,
      url,
      clientAddress: request.ip,
      userAgent: undefined,
      policyVersion: rt.policy.version,
      principal,
      purpose,
      role: plan.role,
      request: req,
      rule: 'ladder',
      upstreamStatus: up.statusCode,
      upstreamMs: 0,
      stats,
    };
    await audit.write(toAuditRecord(ex, { status: 200, decision: 'allow', rule: 'ladder' }));
  }
  reply.code(up.statusCode).header('content-type', CT);
  return payload;
});
await app.listen({ host: '127.0.0.1', port: Number(process.env.BENCH_PORT) });
process.send?.({ ready: true });
async function stop() {
  await app.close();
  await pool.close();
  await audit?.close();
  process.exit(0);
}
process.on('message', (m) => {
  if (m === 'stop') void stop();
});
process.on('disconnect', () => void stop());
