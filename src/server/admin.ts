/**
 * The admin listener (default 127.0.0.1:9090): liveness, readiness (upstream and audit sink
 * reachable, configuration loaded, not shutting down) and Prometheus metrics. It carries no PHI and
 * no tokens, but it is not authenticated: keep it off the public network.
 *
 * /readyz answers within its own deadline (READY_TIMEOUT_MS): a check that has not finished by
 * then counts as failed and is named in `reasons`. A probe that waits on a stalled Redis or a slow
 * upstream would otherwise take as long as they do, and the orchestrator's probe would time out
 * instead of reading an answer.
 *
 * Its own refusals (an unknown route, a malformed URL, a request refused by Node's parser, a
 * request arriving while it closes) are OperationOutcomes with an X-Request-Id and catalogue text
 * only, like the proxy port's, never Fastify's or Node's bodies (which echo the method and path).
 * They are not audited: nothing here reaches PHI.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, LogController } from 'fastify';
import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import type { AuditSink } from '../audit/record.js';
import type { ConsentResolverStats } from '../consent/resolver.js';
import type { SiemTargetStatus } from '../siem/forwarder.js';
import { type ErrorCode, ERRORS, operationOutcome } from '../errors.js';
import { jsonBytes } from '../utf8.js';
import { answerOnSocket, clientErrorCode } from './client-error.js';
import type { GatewayMetrics } from './metrics.js';

/** How long /readyz waits for its checks (they run in parallel) before answering without them. */
export const READY_TIMEOUT_MS = 500;

/** Retry-After (seconds) while the admin listener closes. */
const CLOSING_RETRY_AFTER_S = '2';

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
  /** /readyz deadline (default READY_TIMEOUT_MS). */
  readonly readyTimeoutMs?: number | undefined;
  /**
   * Consent lookups (src/consent), shown in /readyz while consent is enforced (undefined: not
   * shown). A patient's unevaluable consent withholds that patient's data; it does not make the
   * gateway unready.
   */
  consents?: (() => ConsentResolverStats | undefined) | undefined;
  /**
   * SIEM delivery per target (src/siem), shown in /readyz when targets are configured. A receiver
   * that is down makes the lag grow; it never makes the gateway unready (no request waits on it).
   */
  siem?: (() => readonly SiemTargetStatus[] | undefined) | undefined;
}

/** A readiness check's verdict; `reason` (fixed text, nothing from a request) when it failed. */
interface Check {
  readonly ok: boolean;
  readonly reason?: string;
}

async function upstreamReachable(url: string, dispatcher: Dispatcher | undefined, signal: AbortSignal): Promise<Check> {
  try {
    const res = await request(`${url.replace(/\/+$/, '')}/metadata`, {
      method: 'GET',
      headers: { accept: 'application/fhir+json' },
      signal,
      ...(dispatcher ? { dispatcher } : {}),
    });
    await res.body.dump();
    // Any HTTP answer (even 401 from a server that wants credentials) means it is reachable.
    return res.statusCode < 500 ? { ok: true } : { ok: false, reason: `upstream answered ${res.statusCode}` };
  } catch {
    return { ok: false, reason: signal.aborted ? 'upstream: no answer in time' : 'upstream not reachable' };
  }
}

async function auditReady(audit: AuditSink, signal: AbortSignal): Promise<Check> {
  // The sink's own check is bounded by its command timeout; the deadline here is /readyz's.
  const timedOut = new Promise<Check>((resolve) => signal.addEventListener('abort', () => resolve({ ok: false, reason: 'audit sink: no answer in time' }), { once: true }));
  const checked = audit.ready().then(
    (ok): Check => (ok ? { ok } : { ok, reason: 'audit sink not ready' }),
    (): Check => ({ ok: false, reason: 'audit sink not ready' }),
  );
  return Promise.race([checked, timedOut]);
}

/** An admin refusal: catalogue text, the request id, never anything the request carried. */
function refuse(reply: FastifyReply, code: ErrorCode): FastifyReply {
  return reply
    .code(ERRORS[code].status)
    .header('content-type', 'application/fhir+json; charset=utf-8')
    .header('cache-control', 'no-store')
    .header('x-request-id', reply.request.id)
    .send(jsonBytes(operationOutcome(code)));
}

/** Node's parser rejections on the admin port: the same catalogue answer, written on the socket. */
function adminClientError(logger: Logger): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    const code = clientErrorCode(err);
    const id = randomUUID();
    logger.info({ reqId: id, status: ERRORS[code].status, code }, 'admin request refused before routing');
    answerOnSocket(socket, code, id);
  };
}

export async function buildAdminApp(deps: AdminDeps): Promise<FastifyInstance> {
  let closing = false;
  const app = Fastify({
    loggerInstance: deps.logger,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    // Fastify's own 503 while closing is a JSON body of its own: answered by the hook below instead.
    return503OnClosing: false,
    // A malformed percent-escape and the like: Fastify would echo the path back.
    frameworkErrors: (error, _request, reply) => {
      deps.logger.info({ reqId: reply.request.id, code: (error as { code?: string }).code }, 'admin request refused by the router');
      refuse(reply, 'bad-request');
    },
    clientErrorHandler: adminClientError(deps.logger),
  });
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    if (!closing) return done();
    reply.header('retry-after', CLOSING_RETRY_AFTER_S).header('connection', 'close');
    refuse(reply, 'gateway-draining');
  });
  // Fastify's 404 names the method and path it was sent.
  app.setNotFoundHandler((_request, reply) => {
    refuse(reply, 'route-not-found');
  });
  app.setErrorHandler((error, request, reply) => {
    const status = (error as { statusCode?: number }).statusCode ?? 500;
    const code: ErrorCode = status === 413 ? 'request-too-large' : status === 415 ? 'unsupported-media-type' : status >= 400 && status < 500 ? 'bad-request' : 'internal';
    // The code only: an error's message may quote the request (a media type, a header).
    deps.logger[code === 'internal' ? 'error' : 'info']({ reqId: request.id, code: (error as { code?: string }).code }, 'admin request failed');
    refuse(reply, code);
  });
  const readyTimeoutMs = deps.readyTimeoutMs ?? READY_TIMEOUT_MS;
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const draining = deps.draining?.() ?? false;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), readyTimeoutMs);
    let checks: [Check, Check];
    try {
      checks = await Promise.all([upstreamReachable(deps.upstreamUrl, deps.upstreamDispatcher, deadline.signal), auditReady(deps.audit, deadline.signal)]);
    } finally {
      clearTimeout(timer);
      // Ends the upstream probe and releases the audit check's listener if they are still waiting.
      deadline.abort();
    }
    const [upstream, audit] = checks;
    // A running gateway always holds a validated configuration (an invalid reload keeps the old one).
    const policyVersion = deps.policyVersion();
    const config = policyVersion !== '';
    const ok = upstream.ok && audit.ok && config && !draining;
    const consent = deps.consents?.();
    const siem = deps.siem?.();
    reply.code(ok ? 200 : 503);
    const reasons = [
      ...(draining ? ['shutting down'] : []),
      ...(upstream.reason !== undefined ? [upstream.reason] : []),
      ...(audit.reason !== undefined ? [audit.reason] : []),
      ...(config ? [] : ['no configuration loaded']),
    ];
    return {
      status: draining ? 'draining' : ok ? 'ready' : 'not-ready',
      upstream: upstream.ok,
      audit: audit.ok,
      config,
      policyVersion,
      ...(reasons.length > 0 ? { reasons } : {}),
      ...(consent === undefined
        ? {}
        : {
            consent: {
              unevaluablePatients: consent.unevaluablePatients,
              unevaluable: consent.unevaluable.map((u) => ({ id: u.id, reason: u.reason })),
            },
          }),
      ...(siem === undefined || siem.length === 0
        ? {}
        : {
            siem: {
              note: 'delivery to SIEM targets never holds requests: a failing target does not make the gateway unready',
              targets: siem.map((t) => ({
                name: t.name,
                type: t.type,
                status: t.failing ? 'failing' : 'delivering',
                delivered: t.delivered,
                failures: t.failures,
                lag: t.lag,
                oldestUndeliveredAgeSec: Math.round(t.oldestUndeliveredAgeSec),
                ...(t.lastError !== undefined ? { lastError: t.lastError } : {}),
                ...(t.lastDeliveredAt !== undefined ? { lastDeliveredAt: t.lastDeliveredAt } : {}),
              })),
            },
          }),
    };
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
