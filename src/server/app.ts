/**
 * App assembly: buildApp() wires the pipeline into Fastify without listening, so tests inject or
 * listen on a free port. The admin listener (health, metrics) is a separate instance.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { Pool } from 'undici';
import { GatewayError } from '../errors.js';
import type { GatewayConfig } from '../config/types.js';
import { createPipeline, type PipelineDeps } from '../proxy/pipeline.js';
import { registerAuditRoutes } from './audit-routes.js';
import { registerBreakGlassRoutes } from './breakglass-routes.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

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
  const app = Fastify({
    ...(https ? { https } : {}),
    loggerInstance: deps.logger,
    // Fastify's own request lines carry the URL (patient ids, search values): never logged.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    bodyLimit: config.limits.requestBodyBytes,
    return503OnClosing: true,
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
  app.addHook('onClose', async () => {
    await pool.destroy();
  });
  const pipeline = createPipeline(deps, pool);

  // Bodies stay raw bytes: the classifier parses and validates them (strict JSON, form bodies).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  // server.close() waits for every open connection, and fastify closes only the connections idle at
  // that instant: one still answering a request stays keep-alive afterwards and holds close() for
  // keepAliveTimeout (72 s). Sweep connections as they turn idle until the server has closed.
  app.addHook('preClose', (done) => {
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

  for (const url of ['/fhir', '/fhir/*']) {
    app.route({ method: [...METHODS], url, exposeHeadRoute: false, handler: (req, reply) => pipeline.handle(req, reply) });
  }

  registerAuditRoutes(app as unknown as FastifyInstance, deps, pipeline, config.audit);

  registerBreakGlassRoutes(app as unknown as FastifyInstance, deps);

  app.setNotFoundHandler((request, reply) => pipeline.reject(request, reply, new GatewayError('route-not-found')));
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
    return pipeline.reject(request, reply, gw);
  });
  return app as unknown as FastifyInstance;
}
