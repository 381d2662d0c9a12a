/**
 * The admin listener (default 127.0.0.1:9090): liveness, readiness (upstream and audit sink
 * reachable, policy loaded). Metrics join it with the operations work.
 */
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { request } from 'undici';
import type { AuditSink } from '../audit/record.js';

export interface AdminDeps {
  readonly logger: Logger;
  readonly audit: AuditSink;
  readonly upstreamUrl: string;
  policyVersion(): string;
}

async function upstreamReachable(url: string): Promise<boolean> {
  try {
    const res = await request(`${url.replace(/\/+$/, '')}/metadata`, {
      method: 'GET',
      headers: { accept: 'application/fhir+json' },
      headersTimeout: 2000,
      bodyTimeout: 2000,
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
    const [upstream, audit] = await Promise.all([upstreamReachable(deps.upstreamUrl), deps.audit.ready().catch(() => false)]);
    const ok = upstream && audit;
    reply.code(ok ? 200 : 503);
    return { status: ok ? 'ready' : 'not-ready', upstream, audit, policyVersion: deps.policyVersion() };
  });
  return app as unknown as FastifyInstance;
}
