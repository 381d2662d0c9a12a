/**
 * Builds the break-glass service from the gateway config. Sessions and the alert outbox live in
 * Redis when the audit sink is Redis (every replica honours them), otherwise in JSON-lines files
 * next to the audit directory (`<audit dir>/../break-glass/`), which survive restarts.
 */
import { randomUUID } from 'node:crypto';
import { besideAuditDir } from '../audit/files.js';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AuditSink } from '../audit/record.js';
import { connectFailFast } from '../audit/redis-options.js';
import { UNSIGNED_WEBHOOK_WARNING } from '../config/gateway.js';
import type { GatewayConfig } from '../config/types.js';
import type { CompiledPolicy } from '../policy/plan.js';
import { Alerter } from './alerts.js';
import { FileSessionStore } from './file-store.js';
import { FileOutbox, type Outbox, RedisOutbox } from './outbox.js';
import { RedisSessionStore } from './redis-store.js';
import { type BreakGlassService, createBreakGlassService } from './service.js';
import type { SessionStore } from './types.js';

export type { BreakGlassService, ReviewInput, ReviewResult } from './service.js';
export { createBreakGlassService, isBreakGlassService } from './service.js';
export type { BreakGlassReview, BreakGlassSession, BreakGlassStats } from './types.js';

export interface OpenBreakGlassOptions {
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly policy: () => CompiledPolicy;
  readonly now?: () => Date;
  /** Alert retry pacing (tests shorten it). */
  readonly alerts?: { readonly baseDelayMs?: number; readonly maxDelayMs?: number; readonly timeoutMs?: number; readonly pollMs?: number };
  readonly sweepMs?: number;
  /** Overrides where the embedded store lives (default: `break-glass/` beside the audit directory). */
  readonly dir?: string;
}

/**
 * Where the embedded store lives for a file audit sink: `data/audit` -> `data/break-glass`; any
 * other audit directory name X -> sibling `X.break-glass`, so two gateways whose audit directories
 * share a parent (temp dirs) never share sessions.
 */
export function breakGlassDir(config: Pick<GatewayConfig, 'audit'>): string | undefined {
  return config.audit.sink === 'file' ? besideAuditDir(config.audit.path, 'break-glass') : undefined;
}

/**
 * Break-glass opens and alerts wait on these commands: a stalled Redis must refuse them within the
 * audit command timeout (redis-options.ts), and a session write that timed out is never resent.
 */
function redisClient(audit: Extract<GatewayConfig['audit'], { sink: 'redis' }>): Promise<Redis> {
  return connectFailFast(audit.url, audit.commandTimeoutMs);
}

/** The stores alone (the CLI needs no alerter). */
export async function openSessionStore(config: Pick<GatewayConfig, 'audit'>, opts: { logger?: Logger; dir?: string } = {}): Promise<{ store: SessionStore; redis: Redis | undefined }> {
  if (config.audit.sink === 'redis' && opts.dir === undefined) {
    const redis = await redisClient(config.audit);
    return { store: new RedisSessionStore(redis, 'phi-gateway:bg:', true), redis };
  }
  const dir = opts.dir ?? breakGlassDir(config)!;
  return { store: await FileSessionStore.open(dir, opts.logger), redis: undefined };
}

export async function openBreakGlass(config: GatewayConfig, opts: OpenBreakGlassOptions): Promise<BreakGlassService> {
  const { store, redis } = await openSessionStore(config, { logger: opts.logger, dir: opts.dir });
  let outbox: Outbox;
  if (redis) outbox = new RedisOutbox(redis);
  else outbox = await FileOutbox.open(opts.dir ?? breakGlassDir(config)!, opts.logger);
  const channel = config.alerts.redisChannel;
  if (channel !== undefined && !redis) {
    opts.logger.warn('alerts.redisChannel is set but the audit sink is not Redis: break-glass alerts go to the webhook and the log only');
  }
  if (config.alerts.webhook === undefined && (channel === undefined || !redis)) {
    opts.logger.warn('no break-glass alert target (alerts.webhook / alerts.redisChannel): break-glass alerts go to the log only');
  }
  if (config.alerts.webhook !== undefined && config.alerts.webhookSecret === undefined) opts.logger.warn(UNSIGNED_WEBHOOK_WARNING);
  const now = opts.now ?? (() => new Date());
  const alerter = new Alerter({
    outbox,
    audit: opts.audit,
    logger: opts.logger,
    webhook: config.alerts.webhook,
    webhookSecret: config.alerts.webhookSecret,
    redis: channel !== undefined && redis ? { channel, publish: (c, m) => redis.publish(c, m) } : undefined,
    policyVersion: () => opts.policy().version,
    now,
    newId: randomUUID,
    ...opts.alerts,
  });
  alerter.start();
  return createBreakGlassService({
    store,
    alerter,
    audit: opts.audit,
    logger: opts.logger,
    policy: opts.policy,
    publicBaseUrl: config.publicBaseUrl,
    now,
    sweepMs: opts.sweepMs,
  });
}

/**
 * A second alert channel on the same targets (webhook, Redis PUBLISH, warn log) with its own outbox
 * (Redis prefix / directory `namespace`), for alerts that are not about break-glass sessions
 * (src/monitor anomaly rules). The caller closes it.
 */
export async function openAlertChannel(
  config: GatewayConfig,
  opts: { readonly namespace: string; readonly audit: AuditSink; readonly logger: Logger; readonly policyVersion: () => string; readonly now?: () => Date; readonly dir?: string } & Pick<OpenBreakGlassOptions, 'alerts'>,
): Promise<Alerter> {
  let outbox: Outbox;
  let redis: Redis | undefined;
  if (config.audit.sink === 'redis' && opts.dir === undefined) {
    redis = await redisClient(config.audit);
    outbox = new RedisOutbox(redis, `phi-gateway:${opts.namespace}:`);
  } else {
    // Beside the audit directory, like the break-glass store: `data/audit` -> `data/<namespace>`.
    let dir = opts.dir;
    if (dir === undefined && config.audit.sink === 'file') dir = besideAuditDir(config.audit.path, opts.namespace);
    outbox = await FileOutbox.open(dir!, opts.logger);
  }
  const channel = config.alerts.redisChannel;
  const alerter = new Alerter({
    outbox,
    audit: opts.audit,
    logger: opts.logger,
    webhook: config.alerts.webhook,
    webhookSecret: config.alerts.webhookSecret,
    redis: channel !== undefined && redis ? { channel, publish: (c, m) => redis.publish(c, m) } : undefined,
    policyVersion: opts.policyVersion,
    now: opts.now ?? (() => new Date()),
    newId: randomUUID,
    ...opts.alerts,
  });
  alerter.start();
  if (redis) {
    const close = alerter.close.bind(alerter);
    alerter.close = async () => {
      await close();
      redis.disconnect();
    };
  }
  return alerter;
}
