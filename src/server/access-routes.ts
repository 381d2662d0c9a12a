/**
 * Elevated access on request over HTTP, on the proxy port beside /fhir:
 *   POST /access-requests                      a new request (RequestInput JSON; X-Role picks the role) -> 201 + Location
 *   GET  /access-requests[?status=S]           the caller's own requests and those they may decide
 *                                              (S: pending, approved, denied or active)
 *   GET  /access-requests/:id                  one request (the alert's decide link)
 *   POST /access-requests/:id/approve          {minutes?, patients?, encounters?, types?, period?, note?}: narrower is allowed
 *   POST /access-requests/:id/deny             {note}
 *   POST /access-requests/:id/revoke           {note?}
 * For tokens the FHIR API's verifier accepts, with a declared X-Purpose-Of-Use (a token that limits
 * purposes must allow it). The service (src/access/service.ts) judges roles, separation of duties
 * and the body, and audits every call it receives (kind `access-request`) before it answers; a call
 * refused before it gets there (token, purpose, parameters, an unreadable or oversized body) is
 * audited here, with the same kind and action. Answers are JSON (`cache-control: no-store`);
 * refusals are OperationOutcomes. No CORS: these are not browser routes (as /break-glass).
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type AccessRequestRecord, type AccessStatus, type CallContext, isAccessService, isActive } from '../access/types.js';
import type { AuditRecord } from '../audit/record.js';
import { authorizationFromRawHeaders } from '../auth/header.js';
import type { Principal } from '../auth/principal.js';
import { bearerChallenge } from '../auth/refusal.js';
import { type ErrorCode, GatewayError, isGatewayError, operationOutcome } from '../errors.js';
import { isCoveredBy } from '../policy/purpose.js';
import { declaredPurpose, type PipelineDeps } from '../proxy/pipeline.js';
import { parseStrictJson } from '../proxy/strict-json.js';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';
const STATUSES: readonly (AccessStatus | 'active')[] = ['pending', 'approved', 'denied', 'active'];

type Action = 'request' | 'approve' | 'deny' | 'revoke' | 'list' | 'get';

/** What is known of a call before the service sees it (for the record of a call refused here). */
interface CallState {
  readonly action: Action;
  principal?: Principal;
  purpose?: string;
  /** The request id the route names. */
  id?: string;
}

/** The answer of a call the service took. */
interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly location?: string | undefined;
}

/** A request as the API shows it: the stored record, whether its grant is in force, and its link. */
export function requestView(r: AccessRequestRecord, now: Date, url: string) {
  return { ...r, active: isActive(r, now), url };
}

/** Registers the routes when the pipeline's access gate is the full service; otherwise nothing. */
export function registerAccessRoutes(app: FastifyInstance, deps: PipelineDeps): void {
  const service = deps.access;
  if (!isAccessService(service)) return;
  const now = deps.now ?? (() => new Date());

  /** The verified caller and declared purpose; refused here (and audited here) when either fails. */
  async function authorize(request: FastifyRequest, st: CallState): Promise<{ principal: Principal; purpose: string }> {
    const rt = deps.policy();
    // Node keeps only the first of repeated Authorization headers; the raw list lets the verifier refuse them.
    const principal = await deps.verifier.verify(authorizationFromRawHeaders(request.raw.rawHeaders));
    st.principal = principal;
    const parsed = deps.steps.parsePurpose(declaredPurpose(request.headers['x-purpose-of-use'], principal), rt.policy);
    if (!parsed.ok) throw new GatewayError(parsed.code);
    st.purpose = parsed.code;
    const tokenPurposes = principal.tokenPurposes;
    if (tokenPurposes !== undefined && !tokenPurposes.some((tp) => isCoveredBy(parsed.code, tp, rt.policy.purposes))) {
      throw new GatewayError('purpose-not-in-token');
    }
    return { principal, purpose: parsed.code };
  }

  function context(request: FastifyRequest, purpose: string): CallContext {
    return {
      auditId: request.id,
      via: 'http',
      client: { address: request.ip, userAgent: userAgent(request) },
      method: request.method,
      path: pathOf(request),
      purpose,
    };
  }

  /**
   * A call refused before the service saw it: recorded as the service records its own refusals
   * (kind `access-request`, the route's action, the error code as the rule), then answered. No
   * record, no answer: 503 audit-unavailable.
   */
  async function refuse(request: FastifyRequest, reply: FastifyReply, st: CallState, e: unknown, started: bigint): Promise<FastifyReply> {
    if (!isGatewayError(e)) deps.logger.error({ reqId: request.id, err: e }, 'access request call failed');
    const gw = isGatewayError(e) ? e : new GatewayError('internal');
    const p = st.principal;
    const record: AuditRecord = {
      id: request.id,
      time: now().toISOString(),
      kind: 'access-request',
      actor: { iss: p?.iss, sub: p?.sub, clientId: p?.clientId, jti: p?.jti, roles: p?.roles ?? [] },
      purpose: st.purpose,
      client: { address: request.ip, userAgent: userAgent(request) },
      request: { method: request.method, path: pathOf(request), interaction: undefined, resourceType: undefined },
      decision: gw.status >= 500 ? 'error' : 'deny',
      rule: gw.code,
      disclosed: { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 },
      status: gw.status,
      upstreamStatus: undefined,
      durations: { totalMs: Number((process.hrtime.bigint() - started) / 1000n) / 1000 },
      policyVersion: deps.policy().policy.version,
      details: st.id === undefined ? { action: st.action } : { action: st.action, request: st.id },
    };
    let status = gw.status;
    let code: ErrorCode = gw.code;
    try {
      await deps.audit.write(record);
    } catch (err) {
      // As the service's own records: an access-request call is never answered unrecorded, fail-open or not.
      deps.logger.error({ reqId: request.id, err }, 'audit write failed: access request answer withheld (503)');
      status = 503;
      code = 'audit-unavailable';
    }
    // The same challenge as the FHIR routes: which check failed, in fixed words.
    if (status === 401) reply.header('www-authenticate', bearerChallenge(e));
    deps.logger.info({ reqId: request.id, status, action: st.action, decision: record.decision }, 'access request call');
    return send(reply, request, status, operationOutcome(code), FHIR_JSON);
  }

  function send(reply: FastifyReply, request: FastifyRequest, status: number, body: unknown, type: string): FastifyReply {
    return reply.code(status).headers({ 'content-type': type, 'cache-control': 'no-store', 'x-request-id': request.id }).send(JSON.stringify(body));
  }

  /**
   * `prepare` runs the checks of this route (parameters, body) after the caller's token and
   * purpose; anything it throws is refused and audited here. `call` is the service's: it audits
   * itself, allowed or refused, so its refusals are only answered.
   */
  function handler<T>(
    action: Action,
    prepare: (request: FastifyRequest, st: CallState) => T,
    call: (caller: { principal: Principal; purpose: string }, prepared: T, ctx: CallContext, st: CallState) => Promise<Answer>,
  ) {
    return async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      const started = process.hrtime.bigint();
      const st: CallState = { action };
      const id = (request.params as { id?: unknown } | undefined)?.id;
      if (typeof id === 'string') st.id = id.slice(0, 200);
      let caller: { principal: Principal; purpose: string };
      let prepared: T;
      try {
        caller = await authorize(request, st);
        prepared = prepare(request, st);
      } catch (e) {
        return refuse(request, reply, st, e, started);
      }
      let answer: Answer;
      try {
        answer = await call(caller, prepared, context(request, caller.purpose), st);
      } catch (e) {
        // Refused (or failed) inside the service, which has recorded it.
        if (!isGatewayError(e)) deps.logger.error({ reqId: request.id, err: e }, 'access request service failed');
        const gw = isGatewayError(e) ? e : new GatewayError('internal');
        deps.logger.info({ reqId: request.id, status: gw.status, action, decision: gw.status >= 500 ? 'error' : 'deny' }, 'access request call');
        return send(reply, request, gw.status, operationOutcome(gw.code), FHIR_JSON);
      }
      deps.logger.info({ reqId: request.id, status: answer.status, action, decision: 'allow' }, 'access request call');
      if (answer.location !== undefined) reply.header('location', answer.location);
      return send(reply, request, answer.status, answer.body, JSON_TYPE);
    };
  }

  const view = (r: AccessRequestRecord) => requestView(r, now(), service.requestUrl(r.id));
  // Framework refusals inside these routes (an oversized body, a bad Content-Length) are the
  // routes' own calls: audited as access requests, not as FHIR requests.
  const errorHandler = (action: Action) => (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const started = process.hrtime.bigint();
    const id = (request.params as { id?: unknown } | undefined)?.id;
    const st: CallState = typeof id === 'string' ? { action, id: id.slice(0, 200) } : { action };
    const gw =
      error.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? new GatewayError('request-too-large')
        : error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? new GatewayError('unsupported-media-type')
          : isGatewayError(error)
            ? error
            : new GatewayError('bad-request', error.code);
    return refuse(request, reply, st, gw, started);
  };

  app.post(
    '/access-requests',
    { errorHandler: errorHandler('request') },
    handler(
      'request',
      (request) => {
        onlyParams(request, []);
        const input = jsonBody(request);
        const role = request.headers['x-role'];
        if (Array.isArray(role)) throw new GatewayError('role-not-held', 'repeated X-Role');
        return role === undefined ? input : { ...input, role };
      },
      async ({ principal, purpose }, input, ctx) => {
        const r = await service.request(principal, purpose, input, ctx);
        const url = service.requestUrl(r.id);
        return { status: 201, body: requestView(r, now(), url), location: url };
      },
    ),
  );

  app.get(
    '/access-requests',
    { errorHandler: errorHandler('list') },
    handler(
      'list',
      (request) => {
        const status = onlyParams(request, ['status']).get('status');
        if (status !== null && !STATUSES.includes(status as AccessStatus)) throw new GatewayError('bad-request', 'status must be pending, approved, denied or active');
        return { status: (status ?? undefined) as AccessStatus | 'active' | undefined };
      },
      async ({ principal }, filter, ctx) => ({ status: 200, body: { requests: (await service.list(principal, filter, ctx)).map(view) } }),
    ),
  );

  app.get<{ Params: { id: string } }>(
    '/access-requests/:id',
    { errorHandler: errorHandler('get') },
    handler(
      'get',
      (request) => onlyParams(request, []),
      async ({ principal }, _, ctx, st) => ({ status: 200, body: view(await service.get(principal, st.id ?? '', ctx)) }),
    ),
  );

  for (const verb of ['approve', 'deny', 'revoke'] as const) {
    app.post<{ Params: { id: string } }>(
      `/access-requests/:id/${verb}`,
      { errorHandler: errorHandler(verb) },
      handler(
        verb,
        (request) => {
          onlyParams(request, []);
          return jsonBody(request);
        },
        async ({ principal }, body, ctx, st) => {
          const id = st.id ?? '';
          const r =
            verb === 'revoke'
              ? await service.revoke(principal, id, body, ctx)
              : await service.decide(principal, id, { ...body, outcome: verb === 'approve' ? 'approved' : 'denied' }, ctx);
          return { status: 200, body: view(r) };
        },
      ),
    );
  }
}

/** The route's path as recorded: never the query. */
function pathOf(request: FastifyRequest): string {
  return request.url.split('?')[0];
}

function userAgent(request: FastifyRequest): string | undefined {
  const ua = request.headers['user-agent'];
  return typeof ua === 'string' ? ua.slice(0, 200) : undefined;
}

function onlyParams(request: FastifyRequest, allowed: readonly string[]): URLSearchParams {
  const q = request.url.indexOf('?');
  const params = new URLSearchParams(q < 0 ? '' : request.url.slice(q + 1));
  for (const name of params.keys()) if (!allowed.includes(name)) throw new GatewayError('bad-request', 'unknown parameter');
  for (const name of allowed) if (params.getAll(name).length > 1) throw new GatewayError('bad-request', 'repeated parameter');
  return params;
}

/**
 * The body as a JSON object: strict JSON (no `__proto__` keys), `application/json`; no body at all
 * is `{}` (the service says which fields are missing). An `outcome` is the route's, never the body's.
 */
function jsonBody(request: FastifyRequest): Record<string, unknown> {
  const bytes = request.body;
  if (bytes === undefined || bytes === null || (Buffer.isBuffer(bytes) && bytes.length === 0)) return {};
  const type = String(request.headers['content-type'] ?? '')
    .split(';')[0]
    .trim()
    .toLowerCase();
  if (type !== 'application/json') throw new GatewayError('unsupported-media-type');
  if (!Buffer.isBuffer(bytes)) throw new GatewayError('bad-request', 'no body');
  const body = parseStrictJson(bytes, 'bad-request');
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new GatewayError('bad-request', 'body is not an object');
  if (Object.hasOwn(body, 'outcome')) throw new GatewayError('bad-request', 'outcome is given by the route');
  return body as Record<string, unknown>;
}
