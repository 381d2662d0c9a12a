/**
 * Starting, reloading and stopping a whole gateway from a GatewayConfig: policy, token verifier,
 * audit sink, the proxy app, the admin listener (health, metrics), the config file watcher and the
 * graceful shutdown. Used by `serve`, `demo` and the integration tests.
 */
import type { Server as TlsServer } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Agent } from 'undici';
import { createAuditSink } from '../audit/index.js';
import type { ChainHead } from '../audit/chain.js';
import type { AuditSink } from '../audit/record.js';
import { createTokenVerifier, type TokenVerifier } from '../auth/verify.js';
import { type AccessService, openAccess } from '../access/index.js';
import { isBreakGlassService, openBreakGlass } from '../breakglass/index.js';
import { ConfigError, loadPolicy } from '../config/load.js';
import type { GatewayConfig } from '../config/types.js';
import { type ConfigWatcher, watchConfigFiles } from '../config/watch.js';
import { type ConsentResolver, openConsentResolver } from '../consent/resolver.js';
import { isR4ResourceType } from '../fhir/resource-types.js';
import { classify } from '../policy/classify.js';
import { decide } from '../policy/decide.js';
import { parsePurposeHeader } from '../policy/purpose.js';
import type { BreakGlassGate, PipelineDeps, PipelineSteps, PolicyRuntime } from '../proxy/pipeline.js';
import { createUpstreamAuthorization, type UpstreamAuthorization } from '../proxy/upstream-auth.js';
import { openMonitor, type RunningMonitor } from '../monitor/index.js';
import { openRelationshipResolver, type RelationshipResolver } from '../relationships/resolver.js';
import { filterResponse } from '../redact/response.js';
import { openSiem, type SiemForwarder } from '../siem/index.js';
import { buildAdminApp } from './admin.js';
import { buildApp, listenerTls, upstreamTlsOptions } from './app.js';
import { createLogger, flushLogger, LOG_FLUSH_MS } from './logger.js';
import { createMetrics, type GatewayMetrics } from './metrics.js';

export function defaultSteps(maxBodyBytes: number, maxBundleEntries?: number): PipelineSteps {
  return {
    parsePurpose: (raw, policy) => parsePurposeHeader(raw, policy.purposes),
    classify: (raw) => classify(raw, { isResourceType: isR4ResourceType, maxBodyBytes, maxBundleEntries }),
    decide,
    filterResponse,
  };
}

export function policyRuntime(config: GatewayConfig, now: () => Date = () => new Date()): PolicyRuntime {
  const loaded = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey, pseudonymPreviousKeys: config.pseudonymPreviousKeys, now });
  return { policy: loaded.policy, redact: loaded.context };
}

export interface RunningGateway {
  readonly app: FastifyInstance;
  readonly admin: FastifyInstance | undefined;
  /** Base URL of the FHIR API, e.g. http://127.0.0.1:8080/fhir */
  readonly url: string;
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** The break-glass gate in use (the full service unless the caller injected another): stats, sweep. */
  readonly breakGlass: BreakGlassGate | undefined;
  /** Elevated access on request (src/access): stats, sweep. */
  readonly access: AccessService | undefined;
  readonly metrics: GatewayMetrics;
  /** Anomaly rules and shadow policy (src/monitor); `idle()` lets tests wait for their verdicts. */
  readonly monitor: RunningMonitor;
  /** Delivery of the trail to SIEM targets (gateway.yaml `siem`); undefined when none is configured. */
  readonly siem: SiemForwarder | undefined;
  /** Reloads (see reloadWithReport) and returns the policy version in force. */
  reload(): string;
  /**
   * Re-reads the gateway file (when `reloadConfig` was given) and the policy file, applies what can
   * change live, atomically between requests, and reports the rest as needing a restart. An invalid
   * file keeps everything running as it was: logged with every file:line:col problem, counted in
   * metrics, and thrown as a ConfigError.
   */
  reloadWithReport(trigger?: string): ReloadReport;
  /** True once close() began (readiness answers 503). */
  readonly draining: boolean;
  /**
   * Graceful stop: readiness goes 503, the listener stops accepting, in-flight requests get
   * `shutdownGraceMs` to finish (then their connections are cut), the audit sink is flushed and closed.
   */
  close(): Promise<void>;
}

export interface ReloadReport {
  readonly policyVersion: string;
  /** The policy (or the redaction context: pseudonym key) in force changed. */
  readonly policyChanged: boolean;
  /** gateway.yaml settings that changed and were applied live. */
  readonly applied: readonly string[];
  /** gateway.yaml settings that differ from the running ones and take effect only after a restart. */
  readonly restartRequired: readonly string[];
}

export interface StartOptions {
  readonly logger?: Logger;
  readonly audit?: AuditSink;
  readonly breakGlass?: BreakGlassGate;
  readonly now?: () => Date;
  /** Listen on the admin port too (default true). */
  readonly admin?: boolean;
  /** Extra per-request gates / observers (tests, embedding). Added to the built-in ones. */
  readonly gates?: readonly Gate[];
  readonly observers?: readonly Observer[];
  /**
   * How a reload re-reads the gateway file (serve: the same file and environment it started with).
   * Without it a reload re-reads the policy file only: callers that adjusted the config in code
   * (demo, tests) keep their adjustments.
   */
  readonly reloadConfig?: () => GatewayConfig;
  /** Reload when the gateway or policy file changes on disk (serve turns this on). */
  readonly watch?: boolean | { readonly debounceMs?: number };
}

export type Gate = NonNullable<PipelineDeps['gate']>;
export type Observer = NonNullable<PipelineDeps['observe']>;

/** Runs gates in order (the first refusal wins) and every observer (one failing does not stop the rest). */
function composeHooks(gates: readonly Gate[], observers: readonly Observer[], logger: Logger): Pick<PipelineDeps, 'gate' | 'observe'> {
  return {
    gate:
      gates.length === 0
        ? undefined
        : async (ex) => {
            for (const g of gates) await g(ex);
          },
    observe:
      observers.length === 0
        ? undefined
        : (ex, outcome) => {
            for (const o of observers) {
              try {
                o(ex, outcome);
              } catch (e) {
                logger.error({ reqId: ex.id, err: e }, 'observer failed');
              }
            }
          },
  };
}

/** Settings that take effect only when the gateway restarts (sockets, sinks and clients built once). */
const RESTART_SECTIONS = ['listen', 'admin', 'publicBaseUrl', 'audit', 'alerts', 'limits', 'upstream', 'trustedProxies', 'cors', 'smart', 'siem'] as const;

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** The upstream settings other than its credentials (which reload live). */
function upstreamTransport(u: GatewayConfig['upstream']): unknown {
  const { auth: _auth, ...rest } = u;
  return rest;
}

/**
 * Which gateway settings differ between the running and the new configuration. Live: the policy
 * file path, the pseudonym key (applied with the policy, so pseudonyms change at one request
 * boundary), token verification (`auth`: issuer, audience, JWKS, algorithms), the upstream's
 * credentials, the log level, the shutdown grace period, and the proxy certificate (re-read on
 * every reload for rotation). Restart: listeners, public base URL, upstream URL/timeouts/pool/TLS,
 * audit sink, alert targets, body limits, and turning listener TLS on or off.
 */
export function diffConfig(started: GatewayConfig, live: GatewayConfig, next: GatewayConfig): { applied: string[]; restartRequired: string[] } {
  const applied: string[] = [];
  const restartRequired: string[] = [];
  for (const k of RESTART_SECTIONS) {
    const a = k === 'upstream' ? upstreamTransport(started.upstream) : started[k];
    const b = k === 'upstream' ? upstreamTransport(next.upstream) : next[k];
    if (!same(a, b)) restartRequired.push(k);
  }
  if ((started.tls === undefined) !== (next.tls === undefined)) restartRequired.push('tls');
  if (live.policyFile !== next.policyFile) applied.push('policy');
  if (live.pseudonymKey !== next.pseudonymKey || !same(live.pseudonymPreviousKeys, next.pseudonymPreviousKeys)) applied.push('pseudonymKey');
  if (!same(live.auth, next.auth)) applied.push('auth');
  if (!same(live.upstream.auth, next.upstream.auth)) applied.push('upstream.auth');
  if (live.logLevel !== next.logLevel) applied.push('logLevel');
  if (live.shutdownGraceMs !== next.shutdownGraceMs) applied.push('shutdownGraceMs');
  if (started.tls && next.tls && !same(live.tls, next.tls)) applied.push('tls');
  return { applied, restartRequired };
}

export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

export async function startGateway(config: GatewayConfig, opts: StartOptions = {}): Promise<RunningGateway> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  // A logger of our own buffers lines into blocks (logger.ts): push them out at least this often.
  const logFlush = opts.logger ? undefined : setInterval(() => logger.flush(), LOG_FLUSH_MS).unref();
  const now = opts.now ?? (() => new Date());
  // `live` is the configuration whose live-reloadable parts are in force; `config` stays the one
  // the sockets, sinks and clients were built from.
  let live = config;
  let runtime = policyRuntime(config, now);
  let verifier: TokenVerifier = createTokenVerifier(config.auth);
  let upstreamAuth: UpstreamAuthorization = createUpstreamAuthorization(config.upstream.auth);
  let breakGlass: BreakGlassGate | undefined;
  let access: AccessService | undefined;
  let relationships: RelationshipResolver | undefined;
  let consents: ConsentResolver | undefined;
  let siem: SiemForwarder | undefined;
  const metrics = createMetrics({
    policy: () => runtime.policy,
    breakGlass: () => (isBreakGlassService(breakGlass) ? breakGlass.stats() : undefined),
    access: () => access?.stats(),
    relationships: () => relationships?.stats(),
    consents: () => consents?.stats(),
    siem: () => siem?.status(),
  });
  // Every write (requests, break-glass, exports) is timed; failures are counted.
  const sink: AuditSink = opts.audit ?? (await createAuditSink(config.audit, { logger, warnUnsigned: true }));
  const audit = metrics.timeAudit(sink);
  // On its own timers, reading what the sink committed: a receiver that is down never holds a request.
  siem = openSiem(config, { logger });
  // Built from the config unless the caller brings its own; closed with the gateway only if built here.
  breakGlass = opts.breakGlass ?? (await openBreakGlass(config, { audit, logger, policy: () => runtime.policy, now }));
  // Always running (it costs nothing until asked), so a reloaded policy that adds the section finds it.
  access = await openAccess(config, { audit, logger, policy: () => runtime.policy, now, onEvent: (e) => metrics.accessEvent(e) });
  // Every call the gateway itself makes to the upstream (readiness probe, compartment write check,
  // family-name lookup) goes the way the proxy does: its CA, client certificate and timeouts.
  const upstreamDispatcher = new Agent({
    connect: { ...upstreamTlsOptions(config.upstream), timeout: config.upstream.connectTimeoutMs },
    headersTimeout: config.upstream.headersTimeoutMs,
    bodyTimeout: config.upstream.bodyTimeoutMs,
  });
  // Care relationships are looked up with the gateway's own upstream credentials, as the proxy calls
  // it; always running, so a reloaded policy that adds a requirement finds it.
  relationships = await openRelationshipResolver(config, { logger, dispatcher: upstreamDispatcher, upstreamAuthorization: () => upstreamAuth(), now: () => now().getTime() });
  // Patients' consents likewise; always running (it costs nothing until asked), so a reloaded
  // policy that adds a consent section finds it.
  consents = await openConsentResolver(config, { logger, dispatcher: upstreamDispatcher, upstreamAuthorization: () => upstreamAuth(), now: () => now().getTime() });
  // Built-in hooks (metrics, monitoring) register here, each from its own module.
  const monitor = await openMonitor(config, { audit, logger, now, shadowPolicy: config.shadowPolicy, upstreamDispatcher });
  const gates: Gate[] = [(ex) => monitor.gate(ex), ...(opts.gates ?? [])];
  const observers: Observer[] = [(ex, outcome) => metrics.observe(ex, outcome), (ex, outcome) => monitor.observe(ex, outcome), ...(opts.observers ?? [])];
  const app = await buildApp({
    ...composeHooks(gates, observers, logger),
    config,
    policy: () => runtime,
    // Indirections so a reload swaps them between requests.
    verifier: { verify: (authorization) => verifier.verify(authorization) },
    audit,
    logger,
    steps: defaultSteps(config.limits.requestBodyBytes, config.limits.bundleEntries),
    breakGlass,
    access,
    relationships,
    consents,
    upstreamAuthorization: () => upstreamAuth(),
    upstreamDispatcher,
    now,
    reportLoad: (read) => metrics.trackLoad(read),
  });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  let draining = false;
  let admin: FastifyInstance | undefined;
  if (opts.admin !== false) {
    admin = await buildAdminApp({
      logger,
      audit,
      upstreamUrl: config.upstream.url,
      policyVersion: () => runtime.policy.version,
      metrics,
      upstreamDispatcher,
      draining: () => draining,
      // Shown while the policy in force enforces consent.
      consents: () => (runtime.policy.consent === undefined ? undefined : consents?.stats()),
      siem: () => siem?.status(),
    });
    await admin.listen({ host: config.admin.host, port: config.admin.port });
  }
  logger.info({ port, tls: config.tls !== undefined, policyVersion: runtime.policy.version }, 'phi-gateway listening');
  logger.flush(); // operators and supervisors wait for this line: not a second later

  const watchedFiles = (c: GatewayConfig): string[] => (opts.reloadConfig && c.file ? [c.file, c.policyFile] : [c.policyFile]);

  function reloadWithReport(trigger = 'api'): ReloadReport {
    const previous = runtime.policy.version;
    try {
      // Everything is read, validated and built first; nothing is swapped unless all of it succeeded.
      const next = opts.reloadConfig ? opts.reloadConfig() : live;
      const diff = diffConfig(config, live, next);
      const nextRuntime = policyRuntime(next, now);
      const nextVerifier = diff.applied.includes('auth') ? buildOrExplain('auth', () => createTokenVerifier(next.auth)) : verifier;
      const nextUpstreamAuth = diff.applied.includes('upstream.auth') ? createUpstreamAuthorization(next.upstream.auth) : upstreamAuth;
      const cert = config.tls && next.tls ? buildOrExplain('tls', () => listenerTls(next)) : undefined;
      // Commit: synchronous, so no request sees half of it.
      if (cert) (app.server as unknown as TlsServer).setSecureContext(cert);
      runtime = nextRuntime;
      verifier = nextVerifier;
      upstreamAuth = nextUpstreamAuth;
      if (next.logLevel !== live.logLevel) logger.level = next.logLevel;
      live = next;
      watcher?.setFiles(watchedFiles(next));
      const report: ReloadReport = {
        policyVersion: runtime.policy.version,
        policyChanged: previous !== runtime.policy.version || diff.applied.includes('pseudonymKey'),
        applied: diff.applied,
        restartRequired: diff.restartRequired,
      };
      metrics.reloaded('success', report.policyVersion);
      logger.info({ trigger, policyVersion: report.policyVersion, previousPolicyVersion: previous, applied: report.applied }, 'configuration reloaded');
      if (diff.applied.includes('pseudonymKey')) logger.warn({ trigger }, 'pseudonym key changed: pseudonymized ids differ from those released before this reload');
      if (report.restartRequired.length > 0) {
        logger.warn({ trigger, settings: report.restartRequired }, 'changed settings take effect only after a restart; the running values stay in force');
      }
      return report;
    } catch (e) {
      metrics.reloaded('failure', previous);
      const problems = e instanceof ConfigError ? e.problems : [String((e as Error)?.message ?? e)];
      logger.error({ trigger, policyVersion: previous, problems }, 'configuration reload refused; the running configuration stays in force');
      throw e instanceof ConfigError ? e : new ConfigError(problems);
    }
  }

  let watcher: ConfigWatcher | undefined;
  if (opts.watch) {
    const debounceMs = typeof opts.watch === 'object' ? opts.watch.debounceMs : undefined;
    watcher = watchConfigFiles(
      watchedFiles(config),
      () => {
        try {
          reloadWithReport('file-change');
        } catch {
          // logged and counted by reloadWithReport
        }
      },
      { debounceMs, onError: (e) => logger.warn({ err: e }, 'config file watch error; SIGHUP still reloads') },
    );
  }

  let closing: Promise<void> | undefined;
  async function shutdown(): Promise<void> {
    draining = true;
    watcher?.close();
    const graceMs = live.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
    // Stops accepting; idle keep-alive connections close now, busy ones after their response.
    const closed = app.close();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      closed.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      logger.warn({ graceMs }, 'in-flight requests outlived the shutdown grace period: closing their connections');
      app.server.closeAllConnections();
      await closed;
    }
    if (breakGlass !== opts.breakGlass) await (breakGlass as { close?: () => Promise<void> }).close?.();
    await access?.close();
    await monitor.close();
    await relationships?.close();
    await consents?.close();
    // The batch in flight finishes (bounded) and its cursor is kept; the rest waits for the next start.
    await siem?.stop();
    // Flushes pending group commits; records of every answered request are durable after this.
    // The sinks log a seal they could not write and carry on closing: the head tells whether it was.
    const before = chainHeadOf(sink);
    let sealError: unknown;
    try {
      await audit.close();
    } catch (e) {
      sealError = e;
    }
    const sealed = sealError === undefined && chainSealed(before, chainHeadOf(sink));
    await admin?.close();
    await upstreamDispatcher.close();
    if (!sealed) logger.error({ err: sealError, audit: before && { writer: before.writer, seq: before.seq } }, 'audit chain could not be sealed: the trail ends unsealed');
    logger.info({ forced: timedOut, sealed }, 'phi-gateway stopped');
    clearInterval(logFlush);
    await flushLogger(logger);
    if (!sealed) throw new AuditSealError(sealError);
  }

  return {
    app,
    admin,
    url: `${config.tls ? 'https' : 'http'}://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${port}/fhir`,
    audit,
    logger,
    breakGlass,
    access,
    metrics,
    monitor,
    siem,
    get draining() {
      return draining;
    },
    close() {
      closing ??= shutdown();
      return closing;
    },
    reload() {
      return reloadWithReport().policyVersion;
    },
    reloadWithReport,
  };
}

/** Shutdown completed, but the audit sink could not append its seal (disk full, Redis gone). */
export class AuditSealError extends Error {
  constructor(cause?: unknown) {
    super('the audit chain could not be sealed', { cause });
    this.name = 'AuditSealError';
  }
}

type Head = Pick<ChainHead, 'writer' | 'seq'>;

/** The committed chain head of a chained sink (file, Redis); undefined for others (test doubles). */
function chainHeadOf(sink: AuditSink): Head | undefined {
  const head = (sink as { chainHead?: unknown }).chainHead;
  if (head === null || typeof head !== 'object') return undefined;
  const { writer, seq } = head as Partial<Head>;
  return typeof writer === 'string' && typeof seq === 'number' ? { writer, seq } : undefined;
}

/**
 * Whether close() appended the seal: by then every request had its answer and its record, so
 * what a writer with records commits during close() is its seal (and whatever the sink writes with
 * it). A writer without records has nothing to seal; a sink without a chain head cannot tell.
 */
export function chainSealed(before: Head | undefined, after: Head | undefined): boolean {
  if (before === undefined || after === undefined) return true;
  if (before.seq === 0) return true;
  return after.writer === before.writer && after.seq > before.seq;
}

/** Builds a reloaded component, turning a plain Error (unreadable file, bad option) into a located problem. */
function buildOrExplain<T>(section: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError([`${section}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`]);
  }
}
