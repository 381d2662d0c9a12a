/**
 * The admin listener (default 127.0.0.1:9090): liveness, readiness (upstream and audit sink
 * reachable, configuration loaded, not shutting down) and Prometheus metrics. It carries no PHI and
 * no tokens, but it is not authenticated: keep it off the public network.
 */
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import type { AuditSink } from '../audit/record.js';
import type { GatewayMetrics } from './metrics.js';

export interface AdminDeps {
  readonly logger: Logger;
  readonly audit: AuditSink;
  readonly upstreamUrl: string;
  policyVersion(): string;
  /** Prometheus metrics; /metrics answers 404 without them. */
  readonly metrics?: GatewayMetrics | undefined;
  /** Carries the upstream TLS settings (custom CA, client certificate) for the readiness probe. */
  readonly upstreamDispatcher?: Dispatcher | undefined;
  /** True once shutdown began: /readyz answers 503 so load balancers stop sending traffic. */
  draining?: (() => boolean) | undefined;
}

async function upstreamReachable(url: string, dispatcher: Dispatcher | undefined): Promise<boolean> {
  try {
    const res = await request(`${url.replace(/\/+$/, '')}/metadata`, {
      method: 'GET',
      headers: { accept: 'application/fhir+json' },
      headersTimeout: 2000,
      bodyTimeout: 2000,
      ...(dispatcher ? { dispatcher } : {}),
    });
    await res.body.dump();
    // Any HTTP answer (even 401 from a server that wants credentials) means it is reachable.
    return res.statusCode < 500;
  } catch {
    return false;
  }
}

export async function buildAdminApp(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({ loggerInstance: deps.logger, logController: new LogController({ disableRequestLogging: true }) });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const draining = deps.draining?.() ?? false;
    const [upstream, audit] = await Promise.all([upstreamReachable(deps.upstreamUrl, deps.upstreamDispatcher), deps.audit.ready().catch(() => false)]);
    // A running gateway always holds a validated configuration (an invalid reload keeps the old one).
    const policyVersion = deps.policyVersion();
    const config = policyVersion !== '';
    const ok = upstream && audit && config && !draining;
    reply.code(ok ? 200 : 503);
    return { status: draining ? 'draining' : ok ? 'ready' : 'not-ready', upstream, audit, config, policyVersion };
  });
  const metrics = deps.metrics;
  if (metrics) {
    app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', metrics.contentType);
      return metrics.render();
    });
  }
  return app as unknown as FastifyInstance;
}
