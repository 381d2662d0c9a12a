/**
 * App assembly: buildApp() wires the pipeline into Fastify without listening, so tests inject or
 * listen on a free port. The admin listener (health, metrics) is a separate instance.
 */
import { randomUUID } from 'node:crypto';
import replyFrom from '@fastify/reply-from';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { GatewayError } from '../errors.js';
import { createPipeline, type PipelineDeps } from '../proxy/pipeline.js';
import { registerAuditRoutes } from './audit-routes.js';
import { registerBreakGlassRoutes } from './breakglass-routes.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export async function buildApp(deps: PipelineDeps): Promise<FastifyInstance> {
  // Fastify's instance type is generic over the logger; the app is used through the base type.
  const { config } = deps;
  const app = Fastify({
    loggerInstance: deps.logger,
    // Fastify's own request lines carry the URL (patient ids, search values): never logged.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    bodyLimit: config.limits.requestBodyBytes,
    return503OnClosing: true,
    // Duplicate slashes and trailing slashes are the classifier's business, not the router's.
    routerOptions: { ignoreDuplicateSlashes: false, ignoreTrailingSlash: false },
  });
  const pipeline = createPipeline(deps);

  // Bodies stay raw bytes: the classifier parses and validates them (strict JSON, form bodies).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  const upstream = new URL(config.upstream.url);
  await app.register(replyFrom, {
    base: upstream.origin,
    disableRequestLogging: true,
    undici: {
      connections: config.upstream.connections,
      pipelining: 1,
      connect: { timeout: config.upstream.connectTimeoutMs },
      headersTimeout: config.upstream.headersTimeoutMs,
      bodyTimeout: config.upstream.bodyTimeoutMs,
    },
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
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
