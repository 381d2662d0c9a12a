/**
 * Prometheus metrics for the admin listener (SPEC 6). One Registry per gateway (tests and several
 * gateways in one process never share series). Label values are bounded: decisions and statuses
 * are small enums, roles and purposes are checked against the policy in force (anything else is
 * counted as `other`), and no id, path or query ever becomes a label.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AccessEvent, AccessStats } from '../access/types.js';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { BreakGlassStats } from '../breakglass/types.js';
import type { ConsentResolverStats } from '../consent/resolver.js';
import type { CompiledPolicy } from '../policy/plan.js';
import type { Exchange } from '../proxy/record.js';
import type { LookupCounts } from '../proxy/upstream-lookup.js';
import type { RelationshipStats } from '../relationships/resolver.js';
import type { TargetStatus } from '../siem/types.js';

export type Decision = 'allow' | 'deny' | 'error';
export type UpstreamErrorKind = 'unavailable' | 'timeout' | 'bad-response' | 'too-large' | 'error';
export type ReloadResult = 'success' | 'failure';

/** Label value for a role or purpose that is not (or no longer) in the policy. */
export const OTHER = 'other';
/** Label value when the request never got that far (no token, no purpose). */
export const NONE = 'none';

const UPSTREAM_CODES: Readonly<Record<string, UpstreamErrorKind>> = {
  'upstream-unavailable': 'unavailable',
  'upstream-timeout': 'timeout',
  'upstream-bad-response': 'bad-response',
  'upstream-too-large': 'too-large',
  'upstream-error': 'error',
};

/** The upstream failure a rule string ends with (`... : upstream-timeout` or `upstream-timeout`), if any. */
export function upstreamErrorKind(rule: string): UpstreamErrorKind | undefined {
  const m = /(?:^|: )(upstream-[a-z-]+)$/.exec(rule);
  return m ? UPSTREAM_CODES[m[1]] : undefined;
}

export interface MetricsOptions {
  /** The policy in force (roles and purposes are the only label values accepted verbatim). */
  policy(): CompiledPolicy;
  /** Break-glass counts, read at scrape time; undefined when no service is running. */
  breakGlass?: (() => BreakGlassStats | undefined) | undefined;
  /** Care-relationship lookups (src/relationships), read at scrape time; undefined when no resolver is running. */
  relationships?: (() => RelationshipStats | undefined) | undefined;
  /** Consent lookups (src/consent), read at scrape time; undefined when no resolver is running. */
  consents?: (() => ConsentResolverStats | undefined) | undefined;
  /** Access-request counts (src/access), read at scrape time; undefined when no service is running. */
  access?: (() => AccessStats | undefined) | undefined;
  /** SIEM delivery per target (src/siem), read at scrape time; undefined when no forwarder is running. */
  siem?: (() => readonly TargetStatus[] | undefined) | undefined;
  /** Node process metrics (CPU, memory, event loop lag). Default true. */
  readonly processMetrics?: boolean;
  /** Metric name prefix (default `phi_gateway_`). */
  readonly prefix?: string;
}

export interface GatewayMetrics {
  readonly registry: Registry;
  /** The pipeline observer: one call per released response. Never throws. */
  observe(ex: Readonly<Exchange>, outcome: Readonly<{ status: number; decision: Decision; rule: string }>): void;
  /** Wraps an audit sink so each write is timed and each failed write counted; the rest is delegated. */
  timeAudit<S extends AuditSink>(sink: S): S;
  /** A configuration reload was applied (`success`) or refused (`failure`). */
  reloaded(result: ReloadResult, policyVersion: string): void;
  /** One step of the access-request service (its onEvent): counted by action and outcome only. Never throws. */
  accessEvent(e: AccessEvent): void;
  /** What the proxy pipeline holds (in-flight slots, buffered upstream bytes), read at each scrape. */
  trackLoad(read: () => { readonly requests: number; readonly bufferBytes: number }): void;
  /** Prometheus text exposition. */
  render(): Promise<string>;
  readonly contentType: string;
}

/** Label values of the alert failure counter (src/breakglass/outbox.ts AlertTarget). */
const ALERT_TARGETS: readonly string[] = ['webhook', 'redis'];

/**
 * A resolver's lookups counter (by result: hit, miss, refresh, failure) and its cache-size gauge,
 * both copied from `read()` at each scrape; nothing is set while it answers undefined.
 */
function lookupMetrics<S extends LookupCounts>(
  registry: Registry,
  read: (() => S | undefined) | undefined,
  m: { readonly lookups: string; readonly lookupsHelp: string; readonly cached: string; readonly cachedHelp: string; size(s: S): number },
): void {
  new Counter({
    name: m.lookups,
    help: m.lookupsHelp,
    labelNames: ['result'] as const,
    registers: [registry],
    collect() {
      const s = read?.();
      if (!s) return;
      this.reset();
      this.inc({ result: 'hit' }, s.hits);
      this.inc({ result: 'miss' }, s.misses);
      this.inc({ result: 'refresh' }, s.refreshes);
      this.inc({ result: 'failure' }, s.failures);
    },
  });
  new Gauge({
    name: m.cached,
    help: m.cachedHelp,
    registers: [registry],
    collect() {
      const s = read?.();
      if (s) this.set(m.size(s));
    },
  });
}

/**
 * SIEM delivery, one series per configured target (names come from gateway.yaml, a bounded set),
 * copied from the forwarder's status at each scrape.
 */
function siemMetrics(registry: Registry, p: string, read: (() => readonly TargetStatus[] | undefined) | undefined): void {
  const each = (set: (s: TargetStatus) => void): void => {
    for (const s of read?.() ?? []) set(s);
  };
  new Counter({
    name: `${p}siem_delivered_total`,
    help: 'Audit records delivered to each SIEM target since start',
    labelNames: ['target'] as const,
    registers: [registry],
    collect() {
      this.reset();
      each((s) => this.inc({ target: s.name }, s.delivered));
    },
  });
  new Counter({
    name: `${p}siem_failures_total`,
    help: 'Delivery rounds to each SIEM target that failed (receiver, TLS, or the trail unreadable) and will be retried',
    labelNames: ['target'] as const,
    registers: [registry],
    collect() {
      this.reset();
      each((s) => this.inc({ target: s.name }, s.failures));
    },
  });
  new Gauge({
    name: `${p}siem_lag_records`,
    help: 'Audit records committed to the trail and not yet delivered to each SIEM target (as last measured)',
    labelNames: ['target'] as const,
    registers: [registry],
    collect() {
      this.reset();
      each((s) => this.set({ target: s.name }, s.lag));
    },
  });
  new Gauge({
    name: `${p}siem_oldest_undelivered_age_seconds`,
    help: 'Age of the oldest audit record not yet delivered to each SIEM target (0 when caught up)',
    labelNames: ['target'] as const,
    registers: [registry],
    collect() {
      this.reset();
      each((s) => this.set({ target: s.name }, s.oldestUndeliveredAgeSec));
    },
  });
}

/** Label values of the access-request counters (src/access/types.ts AccessEvent): nothing else is counted. */
const ACCESS_ACTIONS: readonly string[] = ['request', 'approve', 'deny', 'revoke'];
const ACCESS_OUTCOMES: readonly string[] = ['allowed', 'refused'];
const GRANT_USE_OUTCOMES: readonly string[] = ['allowed', 'invalid', 'inactive', 'out-of-scope', 'unavailable'];

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const AUDIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
/** Time to decide an access request: a minute to a week. */
const DECISION_BUCKETS = [60, 300, 900, 1800, 3600, 7200, 14_400, 28_800, 86_400, 259_200, 604_800];

export function createMetrics(opts: MetricsOptions): GatewayMetrics {
  const registry = new Registry();
  const p = opts.prefix ?? 'phi_gateway_';
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: p });

  // Per-request counts are summed here per label tuple and handed to prom-client when a scrape
  // reads the counter: a Map lookup per request instead of prom-client's label hashing and checks.
  const requestCells = new Map<string, PendingCell<RequestLabels>>();
  new Counter({
    name: `${p}requests_total`,
    help: 'Requests answered, by decision, role whose data set applied, declared purpose of use and HTTP status',
    labelNames: ['decision', 'role', 'purpose', 'status'] as const,
    registers: [registry],
    collect() {
      flush(this, requestCells);
    },
  });
  const duration = new Histogram({
    name: `${p}request_duration_seconds`,
    help: 'Time from request arrival to response release (audit write included), by decision',
    labelNames: ['decision'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const upstreamDuration = new Histogram({
    name: `${p}upstream_duration_seconds`,
    help: 'Time from forwarding a request to the FHIR server until its answer was read, by interaction',
    labelNames: ['interaction'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  // No count of elements redacted or resources withheld: the admin port needs no token, and the
  // difference across one request would tell whoever reads it what that request's caller may not
  // see (how many withheld records matched a search). The audit trail records both, per request.
  const upstreamErrors = new Counter({
    name: `${p}upstream_errors_total`,
    help: 'Requests that failed because of the FHIR server, by kind',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const auditLatency = new Histogram({
    name: `${p}audit_write_duration_seconds`,
    help: 'Time until an audit record was durable (or the write failed)',
    buckets: AUDIT_BUCKETS,
    registers: [registry],
  });
  const auditFailures = new Counter({
    name: `${p}audit_write_failures_total`,
    help: 'Audit records that could not be made durable (fail closed: the response was withheld unless failOpen)',
    registers: [registry],
  });
  // Counted from the `alert` audit record every failed attempt writes (src/breakglass/alerts.ts), as
  // the write is handed to the sink: one place sees every alert channel, whether the write succeeds.
  const alertFailures = new Counter({
    name: `${p}alert_deliveries_failed_total`,
    help: 'Alert delivery attempts (webhook POST, Redis PUBLISH) that failed and will be retried, by target',
    labelNames: ['target'] as const,
    registers: [registry],
  });
  for (const target of ALERT_TARGETS) alertFailures.inc({ target }, 0);
  siemMetrics(registry, p, opts.siem);
  const reloads = new Counter({
    name: `${p}config_reloads_total`,
    help: 'Configuration reloads, by result (failure = refused, the running configuration stays in force)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const lastReload = new Gauge({
    name: `${p}config_last_reload_success_timestamp_seconds`,
    help: 'When the configuration in force was loaded (start or last successful reload)',
    registers: [registry],
  });
  lastReload.setToCurrentTime();
  const lastReloadOk = new Gauge({
    name: `${p}config_last_reload_successful`,
    help: '1 if the last reload attempt was applied, 0 if it was refused',
    registers: [registry],
  });
  lastReloadOk.set(1);
  // One series at a time: the previous version's series is removed on reload.
  const policyInfo = new Gauge({
    name: `${p}policy_info`,
    help: 'The policy version (hash) in force',
    labelNames: ['version'] as const,
    registers: [registry],
  });
  policyInfo.set({ version: opts.policy().version }, 1);

  const bg = opts.breakGlass;
  const bgGauge = (name: string, help: string, pick: (s: BreakGlassStats) => number) =>
    new Gauge({
      name: `${p}${name}`,
      help,
      registers: [registry],
      collect() {
        const s = bg?.();
        if (s) this.set(pick(s));
      },
    });
  bgGauge('break_glass_sessions_open', 'Break-glass sessions not yet expired', (s) => s.open);
  bgGauge('break_glass_sessions_awaiting_review', 'Break-glass sessions without a retrospective review', (s) => s.awaitingReview);
  bgGauge('break_glass_oldest_unreviewed_age_seconds', 'Age of the oldest unreviewed break-glass session (0 when none)', (s) => s.oldestUnreviewedAgeSec);

  // The resolver counts since it started; each scrape copies its counts (a restart reads as a counter reset).
  lookupMetrics(registry, opts.relationships, {
    lookups: `${p}relationship_lookups_total`,
    lookupsHelp:
      'Care-relationship lookups, by result: hit (answered from the cache, this replica\'s or Redis), miss (waited for the upstream), refresh (a background refresh of an entry past half its TTL), failure (the upstream could not answer: refused, or a refresh failed)',
    cached: `${p}relationship_callers_cached`,
    cachedHelp: 'Callers whose care relationships are cached (relationships.maxCallers at most)',
    size: (s) => s.callers,
  });

  // Per request, never per patient: which patients' consents a request loads (hits, misses, the
  // cache's size) depends on every patient its upstream answer names, withheld ones included, and a
  // caller reading /metrics around its own request would learn that a withheld record matched (a
  // red-team session did). No patient id or consent id becomes a label: /readyz lists the
  // unevaluable consents.
  const con = opts.consents;
  new Counter({
    name: `${p}consent_requests_total`,
    help: "Requests whose answers were judged against patients' consents, by result: judged, refused (the consents could not be read: 503 consent-unavailable)",
    labelNames: ['result'] as const,
    registers: [registry],
    collect() {
      const s = con?.();
      if (!s) return;
      this.reset();
      this.inc({ result: 'judged' }, s.requests);
      this.inc({ result: 'refused' }, s.refused);
    },
  });
  new Gauge({
    name: `${p}consent_unevaluable_patients`,
    help: 'Cached patients with a consent the gateway cannot evaluate: their data is withheld from every caller but break-glass (/readyz lists the consents)',
    registers: [registry],
    collect() {
      const s = con?.();
      if (s) this.set(s.unevaluablePatients);
    },
  });

  // Elevated access on request (src/access): the service's counts at scrape time, and one count per
  // step it reports (its onEvent). Labels are the step and its outcome only, never a patient, user
  // or grant: the admin port needs no token.
  const acc = opts.access;
  const accessGauge = (name: string, help: string, pick: (s: AccessStats) => number) =>
    new Gauge({
      name: `${p}${name}`,
      help,
      registers: [registry],
      collect() {
        const s = acc?.();
        if (s) this.set(pick(s));
      },
    });
  accessGauge('access_requests_pending', 'Access requests awaiting a decision', (s) => s.pending);
  accessGauge('access_grants_active', 'Approved access grants neither revoked nor expired', (s) => s.active);
  accessGauge('access_requests_oldest_pending_age_seconds', 'Age of the oldest access request awaiting a decision (0 when none)', (s) => s.oldestPendingAgeSec);
  const accessSteps = new Counter({
    name: `${p}access_requests_total`,
    help: 'Access-request steps (request, approve, deny, revoke), by outcome: allowed, or refused (invalid, not permitted, separation of duties, already decided)',
    labelNames: ['action', 'outcome'] as const,
    registers: [registry],
  });
  for (const action of ACCESS_ACTIONS) for (const outcome of ACCESS_OUTCOMES) accessSteps.inc({ action, outcome }, 0);
  const grantUses = new Counter({
    name: `${p}access_grant_uses_total`,
    help: 'Requests that named an access grant (X-Access-Grant), by outcome: allowed, invalid (unknown or another caller\'s), inactive (pending, denied, revoked, expired), out-of-scope (another purpose or patient), unavailable (the store could not be read)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  for (const outcome of GRANT_USE_OUTCOMES) grantUses.inc({ outcome }, 0);
  const grantsExpired = new Counter({
    name: `${p}access_grants_expired_total`,
    help: 'Access grants that reached their expiry (audited once, by whichever replica saw it first)',
    registers: [registry],
  });
  const decisionTime = new Histogram({
    name: `${p}access_decision_seconds`,
    help: 'Time from an access request to its approval or denial, by action',
    labelNames: ['action'] as const,
    buckets: DECISION_BUCKETS,
    registers: [registry],
  });

  // The pipeline's own capacity (limits.maxInflightRequests, limits.bufferBytes): what is taken now.
  let load: (() => { readonly requests: number; readonly bufferBytes: number }) | undefined;
  new Gauge({
    name: `${p}inflight_requests`,
    help: 'Requests holding an in-flight slot (limits.maxInflightRequests); a client that disconnects gives its slot back at once',
    registers: [registry],
    collect() {
      this.set(load?.().requests ?? 0);
    },
  });
  new Gauge({
    name: `${p}buffer_bytes_in_use`,
    help: 'Upstream bytes held by requests in flight (limits.bufferBytes)',
    registers: [registry],
    collect() {
      this.set(load?.().bufferBytes ?? 0);
    },
  });

  const roleLabel = (role: string | undefined): string => {
    if (role === undefined) return NONE;
    return opts.policy().roles.has(role) ? role : OTHER;
  };
  const purposeLabel = (purpose: string | undefined): string => {
    if (purpose === undefined) return NONE;
    return opts.policy().purposes.has(purpose) ? purpose : OTHER;
  };
  // One prom-client child per label value (decisions, interactions: small enums), made once.
  const durationChildren = new Map<string, HistogramChild>();
  const upstreamChildren = new Map<string, HistogramChild>();
  const statusLabel = (status: number): string => (Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : OTHER);

  return {
    registry,
    contentType: registry.contentType,
    observe(ex, outcome) {
      const role = roleLabel(ex.role);
      // A 404 is one decision whatever its cause: a withheld record (deny) and a missing one (the
      // upstream's 404, error) must not be told apart here when their answers cannot be.
      const decision = outcome.status === 404 ? 'deny' : outcome.decision;
      const purpose = purposeLabel(ex.purpose);
      const status = statusLabel(outcome.status);
      // Unambiguous whatever the names hold: decision and status have no spaces, role has its length.
      const key = `${decision} ${status} ${role.length} ${role}${purpose}`;
      let cell = requestCells.get(key);
      if (cell === undefined) {
        cell = { labels: { decision, role, purpose, status }, n: 0 };
        requestCells.set(key, cell);
      }
      cell.n += 1;
      childOf(durationChildren, duration, decision).observe(Number(process.hrtime.bigint() - ex.started) / 1e9);
      if (ex.upstreamMs !== undefined) childOf(upstreamChildren, upstreamDuration, ex.request?.interaction ?? NONE).observe(ex.upstreamMs / 1000);
      const kind = upstreamErrorKind(outcome.rule);
      if (kind) upstreamErrors.inc({ kind });
    },
    timeAudit<S extends AuditSink>(sink: S): S {
      const write = async (record: AuditRecord): Promise<void> => {
        if (record.kind === 'alert' && record.details?.result === 'failed') {
          const target = record.details.target;
          alertFailures.inc({ target: typeof target === 'string' && ALERT_TARGETS.includes(target) ? target : OTHER });
        }
        const end = auditLatency.startTimer();
        try {
          await sink.write(record);
        } catch (e) {
          auditFailures.inc();
          throw e;
        } finally {
          end();
        }
      };
      // A proxy keeps the sink's other members (writerId, test hooks) reachable without copying them.
      return new Proxy(sink, {
        get(target, prop, receiver) {
          if (prop === 'write') return write;
          const v = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    },
    reloaded(result, policyVersion) {
      reloads.inc({ result });
      lastReloadOk.set(result === 'success' ? 1 : 0);
      if (result === 'success') {
        lastReload.setToCurrentTime();
        policyInfo.reset();
        policyInfo.set({ version: policyVersion }, 1);
      }
    },
    accessEvent(e) {
      try {
        if (e.action === 'use') {
          if (GRANT_USE_OUTCOMES.includes(e.outcome)) grantUses.inc({ outcome: e.outcome });
        } else if (e.action === 'expire') {
          grantsExpired.inc();
        } else if (ACCESS_ACTIONS.includes(e.action) && ACCESS_OUTCOMES.includes(e.outcome)) {
          accessSteps.inc({ action: e.action, outcome: e.outcome });
          const s = e.decideSeconds;
          if (e.outcome === 'allowed' && (e.action === 'approve' || e.action === 'deny') && typeof s === 'number' && Number.isFinite(s) && s >= 0) {
            decisionTime.observe({ action: e.action }, s);
          }
        }
      } catch {
        // A metric must never fail the step it counts.
      }
    },
    trackLoad(read) {
      load = read;
    },
    render: () => registry.metrics(),
  };
}

type RequestLabels = { decision: string; role: string; purpose: string; status: string };
type HistogramChild = ReturnType<Histogram<string>['labels']>;

/** Increments not yet handed to prom-client, for one label tuple. */
interface PendingCell<L> {
  readonly labels: L;
  n: number;
}

/** Moves pending increments into the counter (called by prom-client before every read of it). */
function flush<L extends Record<string, string>>(counter: Counter<string>, cells: Map<string, PendingCell<L>>): void {
  for (const cell of cells.values()) {
    if (cell.n === 0) continue;
    counter.inc(cell.labels, cell.n);
    cell.n = 0;
  }
}

function childOf(children: Map<string, HistogramChild>, histogram: Histogram<string>, value: string): HistogramChild {
  let child = children.get(value);
  if (child === undefined) {
    child = histogram.labels(value);
    children.set(value, child);
  }
  return child;
}
