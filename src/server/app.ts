/**
 * App assembly: buildApp() wires the pipeline into Fastify without listening, so tests inject or
 * listen on a free port. The admin listener (health, metrics) is a separate instance.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { constants as zlibConstants } from 'node:zlib';
import compress, { type FastifyCompressOptions } from '@fastify/compress';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { Agent, Pool } from 'undici';
import { GatewayError } from '../errors.js';
import type { GatewayConfig } from '../config/types.js';
import { createPipeline, type PipelineDeps } from '../proxy/pipeline.js';
import { registerAccessRoutes } from './access-routes.js';
import { registerAuditRoutes } from './audit-routes.js';
import { registerBreakGlassRoutes } from './breakglass-routes.js';
import { createClientErrorHandler } from './client-error.js';
import { createCors } from './cors.js';
import { createDiscovery } from './discovery.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** Retry-After (seconds) on requests refused while draining: long enough for a load balancer to notice. */
const DRAIN_RETRY_AFTER_S = '2';

/** Response compression of the FHIR routes (see buildApp for the measurement behind the levels). */
const COMPRESSION: FastifyCompressOptions = {
  encodings: ['br', 'gzip'],
  threshold: 1024,
  zlibOptions: { level: 1 },
  brotliOptions: { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 1 } },
};

/**
 * TLS options for connections to the upstream: certificate verification always on (stated, not
 * left to a library default), the configured CA, and the client certificate for mTLS.
 * Read at startup; rotating these files needs a restart.
 */
export function upstreamTlsOptions(upstream: GatewayConfig['upstream']): { rejectUnauthorized: true; ca?: Buffer; cert?: Buffer; key?: Buffer } {
  const t = upstream.tls;
  return {
    rejectUnauthorized: true,
    ...(t?.ca ? { ca: readFileSync(t.ca) } : {}),
    ...(t?.cert ? { cert: readFileSync(t.cert) } : {}),
    ...(t?.key ? { key: readFileSync(t.key) } : {}),
  };
}

/** The proxy listener's certificate and key (PEM), re-read on reload for rotation. */
export function listenerTls(config: Pick<GatewayConfig, 'tls'>): { cert: Buffer; key: Buffer } | undefined {
  return config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : undefined;
}

export async function buildApp(deps: PipelineDeps): Promise<FastifyInstance> {
  // Fastify's instance type is generic over the logger; the app is used through the base type.
  const { config } = deps;
  const https = listenerTls(config);
  // Assigned once the upstream pool exists, before the app listens (frameworkErrors needs it).
  let pipeline: ReturnType<typeof createPipeline>;
  // Set when close() begins (preClose): from then on every request is refused as draining.
  let draining = false;
  const app = Fastify({
    // (https.createServer takes http.Server's options too: requireHostHeader as for plain HTTP below.)
    ...(https ? { https: { ...https, requireHostHeader: false } as typeof https } : {}),
    loggerInstance: deps.logger,
    // Fastify's own request lines carry the URL (patient ids, search values): never logged.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    bodyLimit: config.limits.requestBodyBytes,
    // Requests arriving while draining are refused by the onRequest hook below, audited, with
    // Retry-After; Fastify's own 503 would be neither audited nor an OperationOutcome.
    return503OnClosing: false,
    // Node answers a Host-less HTTP/1.1 request with its own bare 400 (no id, no record): the
    // onRequest hook below refuses it through the audited path instead.
    http: { requireHostHeader: false },
    // The router's own refusals (a malformed percent-escape in the path, which Fastify would echo
    // back in its body): through the pipeline's audited reject path, with catalogue text only.
    frameworkErrors: (error, request, reply) => {
      const code = (error as { code?: string }).code;
      return pipeline.reject(request, reply, new GatewayError('bad-request', code)).then(() => reply);
    },
    // Node's parser and timeout rejections (431, 400, 408) come before any request object exists.
    clientErrorHandler: createClientErrorHandler({
      audit: deps.audit,
      logger: deps.logger,
      failOpen: config.audit.failOpen,
      policyVersion: () => deps.policy().policy.version,
      now: deps.now,
    }),
    // Behind a load balancer, request.ip (the audited client address) comes from X-Forwarded-For,
    // read only when the connecting peer is one of these; anyone else's header is ignored. Fastify
    // does not read RFC 7239 `Forwarded`: the proxies must send X-Forwarded-For.
    ...(config.trustedProxies !== undefined && config.trustedProxies.length > 0 ? { trustProxy: [...config.trustedProxies] } : {}),
    // Duplicate slashes and trailing slashes are the classifier's business, not the router's.
    routerOptions: { ignoreDuplicateSlashes: false, ignoreTrailingSlash: false },
  });
  // The connection pool to the FHIR server, this app's own: closed with the app (its keep-alive
  // sockets must not outlive the gateway). Certificate verification always on, the configured CA,
  // the client certificate for mTLS; undici does not retry, so nothing is sent twice.
  const upstream = new URL(config.upstream.url);
  const pool = new Pool(upstream.origin, {
    connections: config.upstream.connections,
    pipelining: 1,
    connect: { ...upstreamTlsOptions(config.upstream), timeout: config.upstream.connectTimeoutMs },
    headersTimeout: config.upstream.headersTimeoutMs,
    bodyTimeout: config.upstream.bodyTimeoutMs,
  });
  // An Expect other than 100-continue: without a listener Node answers 417 itself, unaudited.
  app.server.on('checkExpectation', (req, res) => app.server.emit('request', req, res));
  app.addHook('onClose', async () => {
    await pool.destroy();
  });
  const cors = createCors(config.cors?.origins ?? []);
  // The issuer's OpenID discovery document comes over connections of its own: the upstream's CA and
  // client certificate are not the identity provider's.
  const idp = new Agent({ connect: { timeout: 5_000 }, headersTimeout: 5_000, bodyTimeout: 5_000 });
  app.addHook('onClose', async () => {
    await idp.destroy();
  });
  const discovery = deps.discovery ?? createDiscovery({ config, logger: deps.logger, dispatcher: idp });
  pipeline = createPipeline({ ...deps, cors: deps.cors ?? cors, discovery }, pool);
  if (cors.enabled) {
    // Every answer under /fhir, errors and 401s included, tells an allowed origin that it may read
    // it; set before anything can answer, so no path leaves it out. Preflights: the pipeline.
    app.addHook('onRequest', (request, reply, done) => {
      const url = request.url;
      if (url === '/fhir' || url.startsWith('/fhir/') || url.startsWith('/fhir?')) {
        const h = cors.responseHeaders(request.headers.origin);
        if (h !== undefined) reply.headers(h);
      }
      done();
    });
  }

  // Response compression when the client asks (Accept-Encoding), registered before the routes (it
  // hooks each route as it is added). It runs inside reply.send(), so after the audit record was
  // written from the uncompressed bytes, and the gateway's ETag is over those bytes too. Answers
  // under 1 KB (errors, 304, 204) are sent as they are; HEAD gets the same headers as GET. Levels
  // from a measurement on the bench's 400 KB searchset (one core, Node 24): gzip 1 takes 1.0 ms
  // for 30.7 KB (13x), gzip 6 2.3 ms for 22.3 KB (18x); brotli 1 0.65 ms for 23.6 KB, brotli 4
  // 1.3 ms for 20.2 KB. The gateway is CPU-bound and the wire is rarely the limit next to an EHR:
  // the fastest levels keep nearly all the gain. Brotli first when the client takes both.
  // Request bodies are never decompressed (globalDecompression off): an encoded body is refused
  // by the classifier (decompression bombs, a body the gateway did not read as sent).
  // A compression side channel (BREACH) needs requests an attacker can make with the victim's
  // credentials; bearer tokens are not sent by browsers on their own, so it does not apply.
  // Only the FHIR routes compress (their `compress` option below): a handler that resolves before
  // a compressed stream is written must resolve with the reply, which the pipeline's does.
  await app.register(compress, { ...COMPRESSION, global: false, globalDecompression: false });

  // Bodies stay raw bytes: the classifier parses and validates them (strict JSON, form bodies).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  // server.close() waits for every open connection, and fastify closes only the connections idle at
  // that instant: one still answering a request stays keep-alive afterwards and holds close() for
  // keepAliveTimeout (72 s). Sweep connections as they turn idle until the server has closed.
  app.addHook('preClose', (done) => {
    draining = true;
    const sweep = setInterval(() => app.server.closeIdleConnections(), 25).unref();
    app.server.once('close', () => clearInterval(sweep));
    done();
  });

  // Every route sets it on its answer too; this covers whatever else Fastify answers. A callback
  // hook: an async one costs a promise per request.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });

  // A request that arrives on an open connection while the gateway drains (server.close() only
  // stops new connections): refused at once, audited, and told when to retry; Fastify has already
  // marked the response `Connection: close`, so the client goes to another instance.
  // What Node's HTTP server would answer itself, unaudited and without an id (HTTP/1.1 without a
  // Host header: 400; an Expect other than 100-continue: 417), comes here instead (requireHostHeader
  // off, checkExpectation routed below) and is refused through the pipeline's audited path.
  app.addHook('onRequest', (request, reply, done) => {
    const expect = request.headers.expect;
    let refusal: GatewayError | undefined;
    if (expect !== undefined && expect.trim().toLowerCase() !== '100-continue') refusal = new GatewayError('expectation-failed', 'unsupported Expect');
    else if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) refusal = new GatewayError('bad-request', 'HTTP/1.1 request without Host');
    if (!refusal) return done();
    pipeline.reject(request, reply, refusal).catch(done);
  });

  app.addHook('onRequest', (request, reply, done) => {
    if (!draining) return done();
    reply.header('retry-after', DRAIN_RETRY_AFTER_S);
    pipeline.reject(request, reply, new GatewayError('gateway-draining', 'shutting down')).catch(done);
  });

  for (const url of ['/fhir', '/fhir/*']) {
    // Resolves with the reply: the pipeline has sent it, possibly as a compressed stream still being
    // written, and an async handler resolving undefined would make Fastify send it a second time, empty.
    app.route({ method: [...METHODS], url, exposeHeadRoute: false, compress: COMPRESSION, handler: (req, reply) => pipeline.handle(req, reply).then(() => reply) });
  }

  registerAuditRoutes(app as unknown as FastifyInstance, deps, pipeline, config.audit);

  registerBreakGlassRoutes(app as unknown as FastifyInstance, deps);

  registerAccessRoutes(app as unknown as FastifyInstance, deps);

  app.setNotFoundHandler((request, reply) => pipeline.reject(request, reply, new GatewayError('route-not-found')).then(() => reply));
  app.setErrorHandler((error, request, reply) => {
    const code = (error as { code?: string }).code;
    const gw =
      code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? new GatewayError('request-too-large')
        : code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? new GatewayError('unsupported-media-type')
          : error instanceof GatewayError
            ? error
            : new GatewayError('bad-request', code);
    return pipeline.reject(request, reply, gw).then(() => reply);
  });
  return app as unknown as FastifyInstance;
}
