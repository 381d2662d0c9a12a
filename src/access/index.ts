/**
 * Builds the access-request service from the gateway config. Requests live in Redis when the audit
 * sink is Redis (every replica sees a decision, revocation or expiry at once), otherwise in a
 * JSON-lines file next to the audit directory (`<audit dir>/../access-requests/`). Alerts go to the
 * break-glass targets through their own outbox (namespace `access-alerts`).
 */
import { besideAuditDir } from '../audit/files.js';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AuditSink } from '../audit/record.js';
import { connectFailFast } from '../audit/redis-options.js';
import { type OpenBreakGlassOptions, openAlertChannel } from '../breakglass/index.js';
import type { GatewayConfig } from '../config/types.js';
import type { CompiledPolicy } from '../policy/plan.js';
import { FileAccessStore } from './file-store.js';
import { RedisAccessStore } from './redis-store.js';
import { createAccessService } from './service.js';
import type { AccessEvent, AccessService, AccessStore } from './types.js';

export type { AccessServiceOptions } from './service.js';
export { createAccessService } from './service.js';
export type {
  AccessEvent,
  AccessGate,
  AccessRequestRecord,
  AccessScope,
  AccessService,
  AccessStats,
  AccessStatus,
  AccessStore,
  CallContext,
  DecideInput,
  GrantUse,
  RequestInput,
} from './types.js';
export { isAccessService, isActive } from './types.js';

export interface OpenAccessOptions {
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly policy: () => CompiledPolicy;
  readonly now?: () => Date;
  /** Alert retry pacing (tests shorten it). */
  readonly alerts?: OpenBreakGlassOptions['alerts'];
  readonly sweepMs?: number;
  /** Overrides where the embedded store and its alert outbox live (default: beside the audit directory). */
  readonly dir?: string;
  /** Called for every allowed or refused step (metrics). */
  readonly onEvent?: (e: AccessEvent) => void;
}

/**
 * Where the embedded store lives for a file audit sink: `data/audit` -> `data/access-requests`; any
 * other audit directory name X -> sibling `X.access-requests`, so two gateways whose audit
 * directories share a parent (temp dirs) never share requests.
 */
export function accessDir(config: Pick<GatewayConfig, 'audit'>): string | undefined {
  return config.audit.sink === 'file' ? besideAuditDir(config.audit.path, 'access-requests') : undefined;
}

/** Grant checks wait on these commands: a stalled Redis refuses them within the audit command timeout. */
function redisClient(audit: Extract<GatewayConfig['audit'], { sink: 'redis' }>): Promise<Redis> {
  return connectFailFast(audit.url, audit.commandTimeoutMs);
}

/** The store alone (the CLI reads it without an alerter). */
export async function openAccessStore(config: Pick<GatewayConfig, 'audit'>, opts: { logger?: Logger; dir?: string } = {}): Promise<AccessStore> {
  if (config.audit.sink === 'redis' && opts.dir === undefined) {
    return new RedisAccessStore(await redisClient(config.audit), 'phi-gateway:access:', true);
  }
  return FileAccessStore.open(opts.dir ?? accessDir(config)!, opts.logger);
}

export async function openAccess(config: GatewayConfig, opts: OpenAccessOptions): Promise<AccessService> {
  const store = await openAccessStore(config, { logger: opts.logger, dir: opts.dir });
  const now = opts.now ?? (() => new Date());
  let alerter: Awaited<ReturnType<typeof openAlertChannel>>;
  try {
    alerter = await openAlertChannel(config, {
      namespace: 'access-alerts',
      audit: opts.audit,
      logger: opts.logger,
      policyVersion: () => opts.policy().version,
      now,
      dir: opts.dir,
      alerts: opts.alerts,
    });
  } catch (e) {
    await store.close();
    throw e;
  }
  return createAccessService({
    store,
    alerter,
    audit: opts.audit,
    logger: opts.logger,
    policy: opts.policy,
    publicBaseUrl: config.publicBaseUrl,
    now,
    sweepMs: opts.sweepMs,
    onEvent: opts.onEvent,
  });
}
