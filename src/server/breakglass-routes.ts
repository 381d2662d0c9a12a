/**
 * Retrospective review over HTTP, on the proxy port (SPEC 5):
 *   GET  /break-glass/sessions[?unreviewed=true]     the queue
 *   GET  /break-glass/sessions/:id                   one session (the alert's review link)
 *   POST /break-glass/sessions/:id/review            {"outcome": "justified"|"unjustified", "note"?: "..."}
 * For tokens (same verifier as the FHIR API) holding a role with capability `break-glass-review`
 * that grants purpose HCOMPL, declared as X-Purpose-Of-Use: HCOMPL. Nobody reviews their own
 * session. Every call, allowed or not, is audited (kind `break-glass-review`) before the answer.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditRecord } from '../audit/record.js';
import { authorizationFromRawHeaders } from '../auth/header.js';
import type { Principal } from '../auth/principal.js';
import { type BreakGlassSession, isBreakGlassService } from '../breakglass/index.js';
import { isOpen } from '../breakglass/types.js';
import { MAX_NOTE_LENGTH, REVIEW_OUTCOMES, reviewRefusal } from '../breakglass/service.js';
import { type ErrorCode, GatewayError, isGatewayError, operationOutcome } from '../errors.js';
import { isCoveredBy } from '../policy/purpose.js';
import { declaredPurpose, type PipelineDeps } from '../proxy/pipeline.js';
import { bearerChallenge } from '../auth/refusal.js';
import { parseStrictJson } from '../proxy/strict-json.js';
import type { ReviewOutcome } from '../breakglass/types.js';

const REVIEW_PURPOSE = 'HCOMPL';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

interface CallState {
  principal?: Principal;
  purpose?: string;
  role?: string;
  action: 'list' | 'get' | 'review';
  patients: string[];
  details: Record<string, unknown>;
}

function sessionView(s: BreakGlassSession, now: Date) {
  return {
    id: s.id,
    actor: s.actor,
    patient: s.patient,
    reason: s.reason,
    reasonCode: s.reasonCode,
    startedAt: s.startedAt,
    expiresAt: s.expiresAt,
    open: isOpen(s, now),
    endedAt: s.endedAt,
    reviewed: s.reviews.length > 0,
    reviews: s.reviews,
  };
}

/** Registers the routes when the pipeline's break-glass gate is the full service; otherwise nothing. */
export function registerBreakGlassRoutes(app: FastifyInstance, deps: PipelineDeps): void {
  const service = deps.breakGlass;
  if (!isBreakGlassService(service)) return;
  const now = deps.now ?? (() => new Date());

  async function authorize(request: FastifyRequest, st: CallState): Promise<void> {
    const rt = deps.policy();
    st.principal = await deps.verifier.verify(authorizationFromRawHeaders(request.raw.rawHeaders));
    const purpose = deps.steps.parsePurpose(declaredPurpose(request.headers['x-purpose-of-use'], st.principal), rt.policy);
    if (!purpose.ok) throw new GatewayError(purpose.code);
    st.purpose = purpose.code;
    if (purpose.code !== REVIEW_PURPOSE) throw new GatewayError('purpose-not-permitted', 'break-glass review requires HCOMPL');
    const tokenPurposes = st.principal.tokenPurposes;
    if (tokenPurposes !== undefined && !tokenPurposes.some((tp) => isCoveredBy(REVIEW_PURPOSE, tp, rt.policy.purposes))) {
      throw new GatewayError('purpose-not-in-token');
    }
    const role = st.principal.roles
      .map((r) => rt.policy.roles.get(r))
      .find((r) => r?.capabilities.has('break-glass-review') && r.plans.has(REVIEW_PURPOSE));
    if (!role) throw new GatewayError('interaction-denied', 'no role with capability break-glass-review for HCOMPL');
    st.role = role.name;
  }

  interface Out {
    status: number;
    body: unknown;
    json: boolean;
    rule: string;
    decision: AuditRecord['decision'];
    /** Runs only once the audit record is durable (a review is recorded in the trail first); returns the body. */
    commit?: () => Promise<unknown>;
  }

  async function finish(request: FastifyRequest, reply: FastifyReply, st: CallState, out: Out, started: bigint) {
    const p = st.principal;
    const record: AuditRecord = {
      id: request.id,
      time: now().toISOString(),
      kind: 'break-glass-review',
      actor: { iss: p?.iss, sub: p?.sub, clientId: p?.clientId, jti: p?.jti, roles: p?.roles ?? [] },
      purpose: st.purpose,
      role: st.role,
      client: { address: request.ip, userAgent: typeof request.headers['user-agent'] === 'string' ? request.headers['user-agent'].slice(0, 200) : undefined },
      request: { method: request.method, path: request.url.split('?')[0], interaction: undefined, resourceType: undefined },
      decision: out.decision,
      rule: out.rule,
      // Reading the queue discloses which patients had their chart opened, and why.
      disclosed: { resources: [], patients: [...new Set(st.patients)], elementsRemoved: 0, resourcesWithheld: 0 },
      status: out.status,
      upstreamStatus: undefined,
      durations: { totalMs: Number((process.hrtime.bigint() - started) / 1000n) / 1000 },
      policyVersion: deps.policy().policy.version,
      details: { action: st.action, ...st.details },
    };
    let { status, body, json } = out;
    let audited = false;
    try {
      await deps.audit.write(record);
      audited = true;
    } catch (e) {
      if (deps.config.audit.failOpen) {
        deps.logger.error({ reqId: request.id, err: e }, 'AUDIT WRITE FAILED: releasing break-glass review answer WITHOUT an audit record (audit.failOpen is on)');
      } else {
        deps.logger.error({ reqId: request.id, err: e }, 'audit write failed: break-glass review answer withheld (503)');
        status = 503;
        body = operationOutcome('audit-unavailable');
        json = false;
      }
    }
    if (out.commit && (audited || deps.config.audit.failOpen)) {
      try {
        body = await out.commit();
      } catch (e) {
        deps.logger.error({ reqId: request.id, err: e }, 'break-glass review audited but could not be stored');
        status = 500;
        body = operationOutcome('internal');
        json = false;
      }
    }
    deps.logger.info({ reqId: request.id, status, action: st.action, decision: out.decision }, 'break-glass review call');
    reply
      .code(status)
      .headers({ 'content-type': json ? 'application/json; charset=utf-8' : FHIR_JSON, 'cache-control': 'no-store', 'x-request-id': request.id })
      .send(JSON.stringify(body));
  }

  function failure(e: unknown): Out {
    const code: ErrorCode = isGatewayError(e) ? e.code : 'internal';
    const gw = isGatewayError(e) ? e : new GatewayError('internal');
    const rule = gw.detail ? `break-glass review: ${code} (${gw.detail})` : `break-glass review: ${code}`;
    return { status: gw.status, body: operationOutcome(code), json: false, rule, decision: gw.status >= 500 ? 'error' : 'deny' };
  }

  function handler(
    action: CallState['action'],
    run: (request: FastifyRequest, st: CallState) => Promise<{ status: number; body: unknown; rule: string; commit?: () => Promise<unknown> }>,
  ) {
    return async (request: FastifyRequest, reply: FastifyReply) => {
      const started = process.hrtime.bigint();
      const st: CallState = { action, patients: [], details: {} };
      let out: Out;
      let refused: unknown;
      try {
        await authorize(request, st);
        const r = await run(request, st);
        out = { ...r, json: true, decision: 'allow' };
      } catch (e) {
        if (!isGatewayError(e)) deps.logger.error({ reqId: request.id, err: e }, 'break-glass review call failed');
        refused = e;
        out = failure(e);
      }
      // The same challenge as the FHIR routes: which check failed, in fixed words.
      if (out.status === 401) reply.header('www-authenticate', bearerChallenge(refused));
      return finish(request, reply, st, out, started);
    };
  }

  function onlyParams(request: FastifyRequest, allowed: readonly string[]): URLSearchParams {
    const q = request.url.indexOf('?');
    const params = new URLSearchParams(q < 0 ? '' : request.url.slice(q + 1));
    for (const name of params.keys()) if (!allowed.includes(name)) throw new GatewayError('bad-request', `unknown parameter`);
    for (const name of allowed) if (params.getAll(name).length > 1) throw new GatewayError('bad-request', `repeated parameter`);
    return params;
  }

  app.get('/break-glass/sessions', handler('list', async (request, st) => {
    const u = onlyParams(request, ['unreviewed']).get('unreviewed');
    if (u !== null && u !== 'true' && u !== 'false') throw new GatewayError('bad-request', 'unreviewed must be true or false');
    const sessions = await service.list({ unreviewed: u === 'true' });
    st.patients = sessions.map((s) => s.patient);
    st.details = { unreviewed: u === 'true', count: sessions.length };
    const t = now();
    return { status: 200, body: { sessions: sessions.map((s) => sessionView(s, t)) }, rule: `roles.${st.role}.capabilities.break-glass-review: list` };
  }));

  app.get<{ Params: { id: string } }>('/break-glass/sessions/:id', handler('get', async (request, st) => {
    onlyParams(request, []);
    const { id } = request.params as { id: string };
    const s = await service.get(id);
    st.details = { session: id };
    if (!s) throw new GatewayError('not-found', 'no such break-glass session');
    st.patients = [s.patient];
    return { status: 200, body: sessionView(s, now()), rule: `roles.${st.role}.capabilities.break-glass-review: read` };
  }));

  app.post<{ Params: { id: string } }>('/break-glass/sessions/:id/review', handler('review', async (request, st) => {
    onlyParams(request, []);
    const { id } = request.params as { id: string };
    st.details = { session: id };
    const type = String(request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/json') throw new GatewayError('unsupported-media-type');
    if (!Buffer.isBuffer(request.body)) throw new GatewayError('bad-request', 'no body');
    const body = parseStrictJson(request.body, 'bad-request') as Record<string, unknown>;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new GatewayError('bad-request', 'body is not an object');
    for (const k of Object.keys(body)) if (k !== 'outcome' && k !== 'note') throw new GatewayError('bad-request', 'unknown body field');
    const outcome = body.outcome;
    if (typeof outcome !== 'string' || !REVIEW_OUTCOMES.includes(outcome as ReviewOutcome)) throw new GatewayError('bad-request', 'outcome');
    const note = body.note;
    if (note !== undefined && (typeof note !== 'string' || note.length > MAX_NOTE_LENGTH)) throw new GatewayError('bad-request', 'note');
    const p = st.principal!;
    const session = await service.get(id);
    if (!session) throw new GatewayError('not-found', 'no such break-glass session');
    if (reviewRefusal(session, p.sub)) throw new GatewayError('interaction-denied', 'reviewer is the session actor (separation of duties)');
    st.patients = [session.patient];
    st.details = { session: id, outcome, note, sessionActor: session.actor.sub, patient: session.patient };
    return {
      status: 200,
      body: undefined,
      rule: `roles.${st.role}.capabilities.break-glass-review: review ${outcome}`,
      commit: async () => {
        const res = await service.review({
          id,
          reviewer: { iss: p.iss, sub: p.sub, clientId: p.clientId, roles: p.roles },
          outcome: outcome as ReviewOutcome,
          note,
          via: 'http',
          auditId: request.id,
        });
        if (!res.ok) throw new Error(`review refused after audit: ${res.why}`);
        return sessionView(res.session, now());
      },
    };
  }));
}
