/**
 * The break-glass service: the pipeline's BreakGlassGate (open or reuse a session, alert, audit the
 * Security Alert), the review queue (list, review with separation of duties) and metrics.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { Principal } from '../auth/principal.js';
import { GatewayError } from '../errors.js';
import type { CompiledPolicy } from '../policy/plan.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { BreakGlassGate } from '../proxy/pipeline.js';
import type { Alerter } from './alerts.js';
import { resolvePatient } from './patient.js';
import { parseReason } from './reason.js';
import { type BreakGlassSession, type BreakGlassStats, isOpen, type ReviewOutcome, type SessionActor, type SessionStore } from './types.js';

export const REVIEW_OUTCOMES: readonly ReviewOutcome[] = ['justified', 'unjustified'];
export const MAX_NOTE_LENGTH = 2000;

export interface ReviewInput {
  readonly id: string;
  readonly reviewer: { readonly iss: string | undefined; readonly sub: string; readonly clientId?: string | undefined; readonly roles: readonly string[] };
  readonly outcome: ReviewOutcome;
  readonly note?: string | undefined;
  readonly via: 'http' | 'cli';
  /** The review's audit record id (the X-Request-Id over HTTP). */
  readonly auditId: string;
}

export type ReviewResult =
  | { readonly ok: true; readonly session: BreakGlassSession }
  | { readonly ok: false; readonly why: 'not-found' | 'own-session' };

export interface BreakGlassService extends BreakGlassGate {
  get(id: string): Promise<BreakGlassSession | undefined>;
  list(filter?: { readonly unreviewed?: boolean }): Promise<BreakGlassSession[]>;
  /** Appends a review. The caller audits it (it knows the request); the store keeps it. */
  review(input: ReviewInput): Promise<ReviewResult>;
  /** Last computed counts (refreshed by sweep() and by every change made here); synchronous for metrics. */
  stats(): BreakGlassStats;
  refreshStats(): Promise<BreakGlassStats>;
  /** Audits the end of expired sessions and refreshes stats. Runs on a timer; tests call it directly. */
  sweep(): Promise<void>;
  /** Review link for a session, from publicBaseUrl minus `/fhir`. */
  reviewUrl(id: string): string;
  close(): Promise<void>;
}

export interface BreakGlassServiceOptions {
  readonly store: SessionStore;
  readonly alerter: Alerter;
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** The policy in force (hot reload): break-glass settings are read per request. */
  readonly policy: () => CompiledPolicy;
  readonly publicBaseUrl: string;
  readonly now?: () => Date;
  readonly newId?: () => string;
  /** Sweep interval (default 15 s); 0 disables the timer. */
  readonly sweepMs?: number;
}

function actorOf(p: Principal): SessionActor {
  return { iss: p.iss, sub: p.sub, clientId: p.clientId, roles: [...p.roles] };
}

/** Separation of duties: nobody reviews their own emergency access, whatever issuer vouches for them. */
export function reviewRefusal(s: BreakGlassSession, reviewerSub: string): 'own-session' | undefined {
  return s.actor.sub === reviewerSub ? 'own-session' : undefined;
}

export function reviewBase(publicBaseUrl: string): string {
  return publicBaseUrl.replace(/\/+$/, '').replace(/\/fhir$/, '');
}

export function createBreakGlassService(o: BreakGlassServiceOptions): BreakGlassService {
  const now = o.now ?? (() => new Date());
  const newId = o.newId ?? randomUUID;
  const base = reviewBase(o.publicBaseUrl);
  let snapshot: BreakGlassStats = { open: 0, awaitingReview: 0, oldestUnreviewedAgeSec: 0 };
  let timer: NodeJS.Timeout | undefined;

  const reviewUrl = (id: string) => `${base}/break-glass/sessions/${encodeURIComponent(id)}`;

  function eventRecord(kind: 'break-glass-start' | 'break-glass-end', s: BreakGlassSession, extra: { rule: string; request?: ClassifiedRequest; details: Record<string, unknown> }): AuditRecord {
    return {
      id: newId(),
      time: now().toISOString(),
      kind,
      actor: { iss: s.actor.iss, sub: s.actor.sub, clientId: s.actor.clientId, roles: s.actor.roles },
      purpose: 'BTG',
      breakGlass: { session: s.id, reason: s.reason },
      // The request's own record (details.requestId) has the client address.
      client: { address: '' },
      request: {
        method: extra.request?.method ?? '-',
        path: extra.request?.upstreamPath ?? `Patient/${s.patient}`,
        interaction: extra.request?.interaction,
        resourceType: extra.request?.resourceType,
      },
      decision: 'allow',
      rule: extra.rule,
      // The session opens this patient's chart: the Security Alert names them (BALP patient entity).
      disclosed: { resources: [], patients: [s.patient], elementsRemoved: 0, resourcesWithheld: 0 },
      status: 200,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion: o.policy().version,
      details: { startedAt: s.startedAt, expiresAt: s.expiresAt, reasonCode: s.reasonCode, ...extra.details },
    };
  }

  async function refreshStats(): Promise<BreakGlassStats> {
    const all = await o.store.list();
    const t = now();
    let open = 0;
    let awaiting = 0;
    let oldest: number | undefined;
    for (const s of all) {
      if (isOpen(s, t)) open++;
      if (s.reviews.length === 0) {
        awaiting++;
        const started = Date.parse(s.startedAt);
        if (oldest === undefined || started < oldest) oldest = started;
      }
    }
    snapshot = { open, awaitingReview: awaiting, oldestUnreviewedAgeSec: oldest === undefined ? 0 : Math.max(0, Math.floor((t.getTime() - oldest) / 1000)) };
    return snapshot;
  }

  async function sweep(): Promise<void> {
    for (const s of await o.store.endExpired(now())) {
      try {
        await o.audit.write(eventRecord('break-glass-end', s, { rule: 'breakGlass: session expired', details: { endedBy: 'expiry' } }));
        o.logger.warn({ breakGlass: { session: s.id, actor: s.actor.sub } }, 'BREAK-GLASS session ended');
      } catch (e) {
        o.logger.error({ breakGlass: { session: s.id }, err: e }, 'break-glass end could not be audited; will retry');
        await o.store.unend(s.id).catch(() => {});
      }
    }
    await refreshStats();
  }

  async function open(input: { principal: Principal; request: ClassifiedRequest; reason: string | string[] | undefined; requestId: string }) {
    const policy = o.policy();
    const bg = policy.breakGlass;
    if (bg === undefined) throw new GatewayError('break-glass-not-eligible', 'policy has no breakGlass section');
    const r = parseReason(input.reason, bg);
    if (!r.ok) throw new GatewayError('break-glass-reason-required', `reason ${r.why}`);
    const patient = resolvePatient(input.request);
    if (patient === undefined) throw new GatewayError('break-glass-no-patient');
    // A token limited to one patient (SMART launch) cannot break into another patient's chart.
    if (input.principal.patient !== undefined && input.principal.patient !== patient) {
      throw new GatewayError('compartment-denied', 'break-glass outside the token patient');
    }
    const actor = actorOf(input.principal);
    const res = await o.store.open({
      id: newId(),
      actor,
      patient,
      reason: r.reason,
      reasonCode: r.code,
      requestId: input.requestId,
      now: now(),
      sessionMs: bg.sessionMs,
      maxSessionsPerDay: bg.maxSessionsPerDay,
    });
    if (res.kind === 'limited') {
      await o.alerter.raise({ type: 'break-glass-limit', alertId: newId(), time: now().toISOString(), actor, patient, sessionsInLast24h: res.count });
      throw new GatewayError('break-glass-limit', `${res.count} sessions in 24 h`);
    }
    const s = res.session;
    if (res.kind === 'opened') {
      // Awaited: if the Security Alert cannot be recorded, the request's own record cannot either (fail closed).
      await o.audit.write(
        eventRecord('break-glass-start', s, { rule: `breakGlass: session opened (${input.principal.roles.join(',')})`, request: input.request, details: { requestId: input.requestId } }),
      );
      await o.alerter.raise({
        type: 'break-glass-start',
        alertId: newId(),
        time: s.startedAt,
        actor,
        patient,
        session: s.id,
        reason: s.reason,
        reasonCode: s.reasonCode,
        startedAt: s.startedAt,
        expiresAt: s.expiresAt,
        reviewUrl: reviewUrl(s.id),
      });
      void refreshStats().catch(() => {});
    }
    // The reason recorded with each request is the one given with it.
    return { session: s.id, reason: r.reason, patient: s.patient };
  }

  async function review(input: ReviewInput): Promise<ReviewResult> {
    const s = await o.store.get(input.id);
    if (!s) return { ok: false, why: 'not-found' };
    const refused = reviewRefusal(s, input.reviewer.sub);
    if (refused) return { ok: false, why: refused };
    const note = input.note?.slice(0, MAX_NOTE_LENGTH);
    const updated = await o.store.addReview(input.id, {
      reviewer: { iss: input.reviewer.iss, sub: input.reviewer.sub },
      outcome: input.outcome,
      note,
      at: now().toISOString(),
      via: input.via,
      auditId: input.auditId,
    });
    if (!updated) return { ok: false, why: 'not-found' };
    void refreshStats().catch(() => {});
    return { ok: true, session: updated };
  }

  if ((o.sweepMs ?? 15_000) > 0) {
    timer = setInterval(() => void sweep().catch((e) => o.logger.error({ err: e }, 'break-glass sweep failed')), o.sweepMs ?? 15_000);
    timer.unref();
  }
  void refreshStats().catch(() => {});

  return {
    open,
    get: (id) => o.store.get(id),
    async list(filter = {}) {
      const all = await o.store.list();
      return filter.unreviewed ? all.filter((s) => s.reviews.length === 0) : all;
    },
    review,
    stats: () => snapshot,
    refreshStats,
    sweep,
    reviewUrl,
    async close() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await o.alerter.close();
      await o.store.close();
    },
  };
}

export function isBreakGlassService(g: BreakGlassGate | undefined): g is BreakGlassService {
  const s = g as Partial<BreakGlassService> | undefined;
  return typeof s?.list === 'function' && typeof s.review === 'function' && typeof s.get === 'function';
}
