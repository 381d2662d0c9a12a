/**
 * Builds compliance monitoring for a running gateway: anomaly rules from the policy file (windows
 * in Redis when the audit sink is Redis, so replicas share counts; in memory otherwise), their
 * alert channel, the family-name lookup, and shadow evaluation of a candidate policy.
 */
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { AuditSink } from '../audit/record.js';
import { failFastRedisOptions, waitUntilReady } from '../audit/redis-options.js';
import { openAlertChannel } from '../breakglass/index.js';
import type { Alerter } from '../breakglass/alerts.js';
import { readPolicy } from '../config/load.js';
import type { GatewayConfig } from '../config/types.js';
import type { CompiledPolicy } from '../policy/plan.js';
import type { Exchange } from '../proxy/record.js';
import { createUpstreamAuthorization } from '../proxy/upstream-auth.js';
import { createMonitor, type Outcome } from './monitor.js';
import { createUpstreamFamilyLookup, type FamilyNameLookup } from './names.js';
import { type CompiledAnomalyRule, compileAnomalies } from './rules.js';
import { createShadowObserver } from './shadow.js';
import { MemoryWindowStore, RedisWindowStore, type WindowStore } from './window.js';

export { BLOCK_CODE, createMonitor, type Monitor, type MonitorOptions } from './monitor.js';
export { createShadowObserver } from './shadow.js';

export interface OpenMonitorOptions {
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly now?: () => Date;
  /** A candidate policy file to evaluate in shadow mode (gateway config `shadowPolicy`). */
  readonly shadowPolicy?: string | undefined;
  /** Replaces the upstream family-name lookup (tests). */
  readonly families?: FamilyNameLookup;
  /** The gateway's upstream dispatcher (proxy CA, client certificate, timeouts), for the family-name lookup. */
  readonly upstreamDispatcher: Dispatcher;
  /** Alert retry pacing (tests shorten it). */
  readonly alerts?: { readonly baseDelayMs?: number; readonly maxDelayMs?: number; readonly timeoutMs?: number; readonly pollMs?: number };
}

export interface RunningMonitor {
  gate(ex: Readonly<Exchange>): Promise<void>;
  observe(ex: Readonly<Exchange>, outcome: Outcome): void;
  /** Every evaluation started so far has finished and its alerts were handed to the channel. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The policy file as of a request's policy version. Re-read when a request shows a version not seen
 * before (a reload happened); an unreadable or invalid file keeps what was in force, as the gateway does.
 */
class PolicySnapshots {
  private seen: string;
  private policy: CompiledPolicy;
  private rules: readonly CompiledAnomalyRule[];

  constructor(
    private readonly file: string,
    private readonly logger: Logger,
  ) {
    const r = readPolicy(file);
    if (!r.loaded) throw new Error(`monitor: policy file invalid:\n${r.problems.join('\n')}`);
    this.policy = r.loaded.policy;
    // At start an anomaly section the schema cannot judge (time zone, duplicate) is fatal: fail loudly.
    this.rules = compileAnomalies(r.loaded.raw.anomalies);
    this.seen = this.policy.version;
  }

  private refresh(version: string): void {
    if (version === this.seen) return;
    this.seen = version;
    const r = readPolicy(this.file);
    if (!r.loaded) {
      this.logger.error({ problems: r.problems.length }, 'monitor: policy file invalid; anomaly rules unchanged');
      return;
    }
    try {
      this.rules = compileAnomalies(r.loaded.raw.anomalies);
      this.policy = r.loaded.policy;
    } catch (e) {
      this.logger.error({ err: e }, 'monitor: anomaly rules invalid; previous rules stay in force');
    }
  }

  /** The version of the newest policy read. */
  version(): string {
    return this.policy.version;
  }

  rulesFor(version: string): readonly CompiledAnomalyRule[] {
    this.refresh(version);
    return this.rules;
  }

  policyFor(version: string): CompiledPolicy | undefined {
    this.refresh(version);
    return this.policy.version === version ? this.policy : undefined;
  }
}

export async function openMonitor(config: GatewayConfig, o: OpenMonitorOptions): Promise<RunningMonitor> {
  const snapshots = new PolicySnapshots(config.policyFile, o.logger);
  let candidate: CompiledPolicy | undefined;
  if (o.shadowPolicy !== undefined) {
    const r = readPolicy(o.shadowPolicy);
    if (!r.loaded) throw new Error(`shadowPolicy is invalid:\n${r.problems.join('\n')}`);
    candidate = r.loaded.policy;
    o.logger.info({ candidateVersion: candidate.version }, 'shadow policy loaded: evaluated on live traffic, not enforced');
  }
  let redis: Redis | undefined;
  let store: WindowStore;
  if (config.audit.sink === 'redis') {
    // A block rule's check is on the request path: a stalled Redis refuses it within the command timeout.
    redis = new Redis(config.audit.url, failFastRedisOptions(config.audit.commandTimeoutMs));
    redis.on('error', () => {}); // failures surface as rejected commands, logged per request
    await waitUntilReady(redis, undefined, { untilRefused: true });
    store = new RedisWindowStore(redis);
  } else {
    store = new MemoryWindowStore();
  }
  let alerter: Alerter | undefined;
  try {
    alerter = await openAlertChannel(config, { namespace: 'anomaly', audit: o.audit, logger: o.logger, policyVersion: () => snapshots.version(), now: o.now, alerts: o.alerts });
  } catch (e) {
    redis?.disconnect();
    throw e;
  }
  const monitor = createMonitor({
    audit: o.audit,
    logger: o.logger,
    alerter,
    store,
    rules: (v) => snapshots.rulesFor(v),
    families:
      o.families ??
      createUpstreamFamilyLookup({
        url: config.upstream.url,
        authorization: createUpstreamAuthorization(config.upstream.auth),
        timeoutMs: config.upstream.headersTimeoutMs,
        dispatcher: o.upstreamDispatcher,
      }),
  });
  const shadow = candidate
    ? createShadowObserver({ audit: o.audit, logger: o.logger, current: (v) => snapshots.policyFor(v), candidate, candidateFile: o.shadowPolicy! })
    : undefined;
  return {
    gate: (ex) => monitor.gate(ex),
    observe(ex, outcome) {
      monitor.observe(ex, outcome);
      shadow?.observe(ex, outcome);
    },
    async idle() {
      await Promise.all([monitor.idle(), shadow?.idle()]);
      await alerter.deliverDue();
    },
    async close() {
      await Promise.all([monitor.idle(), shadow?.idle()]);
      await alerter.close();
      await store.close();
      redis?.disconnect();
    },
  };
}
