/**
 * The request pipeline. A request flows one way:
 *   authenticate -> purpose -> classify -> decide -> (break-glass) -> forward -> read + filter
 *   the answer -> audit -> release.
 * Every path ends in `finish()`, which writes the audit record and only then sends. Any exception
 * after the upstream answered becomes an error response; the unfiltered body is never sent.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { AuditSink } from '../audit/record.js';
import { authorizationFromRawHeaders } from '../auth/header.js';
import type { Principal } from '../auth/principal.js';
import type { GatewayConfig } from '../config/types.js';
import { ERRORS, type ErrorCode, GatewayError, isGatewayError, operationOutcome } from '../errors.js';
import type { AccessPlan, CompiledPolicy } from '../policy/plan.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { FilterResult, RedactContext, ResponseContext } from '../redact/types.js';
import { createCompartmentWriteCheck } from './compartment-writes.js';
import { readsAsParsed } from './strict-json.js';
import { type Exchange, elapsedMs, toAuditRecord } from './record.js';

export type { Exchange } from './record.js';
import { BufferBudget, type BufferLease, decodeUpstreamBody } from './upstream-body.js';
import { dispatchUpstream, type UpstreamAnswer } from './upstream-dispatch.js';
import { buildUpstreamCall, type UpstreamCall } from './upstream-request.js';
import { jsonBytes } from '../utf8.js';

/** The pieces of the gateway the pipeline calls. Each is replaceable (hot reload, tests). */
export interface PipelineDeps {
  readonly config: GatewayConfig;
  /** The policy in force right now (hot reload swaps what this returns, atomically per request). */
  policy(): PolicyRuntime;
  readonly verifier: { verify(authorization: string | string[] | undefined): Promise<Principal> };
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly steps: PipelineSteps;
  readonly breakGlass?: BreakGlassGate | undefined;
  /**
   * Runs after the decision allowed a request, before it is forwarded (anomaly rules that are
   * configured to block, rate limits). Throwing a GatewayError refuses the request (audited).
   */
  readonly gate?: ((ex: Readonly<Exchange>) => Promise<void>) | undefined;
  /**
   * Called once per request after its audit record was written and the response released
   * (metrics, anomaly detection, shadow policy evaluation). Must not throw; errors are logged.
   */
  readonly observe?: ((ex: Readonly<Exchange>, outcome: Readonly<{ status: number; decision: 'allow' | 'deny' | 'error'; rule: string }>) => void) | undefined;
  /** Upstream's own credentials (static bearer or OAuth client credentials). */
  upstreamAuthorization(): Promise<string | undefined>;
  /**
   * For the gateway's own calls to the upstream (the compartment write check): built with the
   * proxy's TLS options (upstream CA, client certificate) and timeouts, owned and closed by the caller.
   */
  readonly upstreamDispatcher?: Dispatcher | undefined;
  readonly now?: () => Date;
}

export interface PolicyRuntime {
  readonly policy: CompiledPolicy;
  readonly redact: RedactContext;
}

/** The pure steps, injected so the pipeline depends on their contracts only. */
export interface PipelineSteps {
  parsePurpose(raw: string | string[] | undefined, policy: CompiledPolicy): { ok: true; code: string } | { ok: false; code: ErrorCode };
  classify(raw: { method: string; url: string; headers: FastifyRequest['headers']; body: Buffer | undefined }): ClassifiedRequest;
  decide(input: { policy: CompiledPolicy; principal: Principal; purpose: string; requestedRole?: string | undefined; request: ClassifiedRequest }):
    | { allow: true; plan: AccessPlan; rule: string }
    | { allow: false; code: ErrorCode; rule: string };
  filterResponse(body: unknown, ctx: ResponseContext): FilterResult;
}

/** Break-glass seam (SPEC 3.3): opens or reuses the session for (actor, patient) and alerts. */
export interface BreakGlassGate {
  open(input: {
    principal: Principal;
    request: ClassifiedRequest;
    reason: string | string[] | undefined;
    requestId: string;
  }): Promise<{ session: string; reason: string; patient: string }>;
}

type Headers = Record<string, string>;

interface Outcome {
  status: number;
  body: unknown;
  /**
   * The upstream's own bytes for `body`, when the filter released the upstream value unchanged
   * and `readsAsParsed` proved every parser reads those bytes as that value: sent as they are,
   * saving the serialization.
   */
  asIs?: Buffer;
  headers?: Headers;
  decision: 'allow' | 'deny' | 'error';
  rule: string;
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const EMPTY = Buffer.alloc(0);

function errorOutcome(e: unknown): { code: ErrorCode; status: number } {
  if (isGatewayError(e)) return { code: e.code, status: e.status };
  return { code: 'internal', status: 500 };
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? undefined : v;
}

/**
 * `upstream` is the connection pool to the FHIR server (the caller owns and closes it; built with
 * the upstream's TLS options and timeouts, see buildApp).
 */
export function createPipeline(deps: PipelineDeps, upstream: Dispatcher) {
  const { config, logger } = deps;
  const upstreamUrl = new URL(config.upstream.url);
  const upstreamBase = config.upstream.url.replace(/\/+$/, '');
  const upstreamBasePath = upstreamUrl.pathname.replace(/\/+$/, '');
  const publicBase = config.publicBaseUrl.replace(/\/+$/, '');
  // Memory bound (issue 6): requests at once, and upstream bytes they may hold together
  // (defaults when the gateway file leaves them unset: 256 requests, 64 MiB). Each buffered byte
  // costs several bytes of heap while its response is built (parse, filter, serialize), so 64 MiB
  // keeps RSS near 1 GB in the 64 x 5 MB bench; 256 MiB did not bound it.
  const maxInflight = config.limits.maxInflightRequests ?? 256;
  const budget = new BufferBudget(config.limits.bufferBytes ?? 64 * 1024 * 1024);
  const leases = new WeakMap<FastifyReply, BufferLease>();
  let inflight = 0;
  const storedInCompartment = createCompartmentWriteCheck(deps);

  function rewriteUrl(url: string): string | undefined {
    if (url === upstreamBase) return publicBase;
    if (url.startsWith(upstreamBase)) {
      const next = url.charAt(upstreamBase.length);
      if (next === '/' || next === '?') return publicBase + url.slice(upstreamBase.length);
    }
    return undefined;
  }

  /**
   * Writes the audit record, then releases the response. Called exactly once per request.
   * Serializes synchronously before anything waits: while the audit write waits for its fsync only
   * the payload bytes are held, not the parsed body (on a 400 KB searchset that object graph is
   * several MB per request; kept across the wait it survived young-generation GC and was promoted).
   */
  function finish(ex: Exchange, reply: FastifyReply, out: Outcome): Promise<void> {
    // Serialize first: the record must describe what is actually released, and a body that cannot
    // be serialized (hostile nesting) is released as nothing at all.
    let payload: Buffer;
    try {
      // As bytes, made now: a Buffer lives outside the JS heap, so what waits for the audit fsync is
      // not a string the young-generation collector must copy (or promote) meanwhile; and Fastify
      // would otherwise measure the string's UTF-8 length and Node encode it again while writing.
      payload = out.asIs ?? (out.body === undefined ? EMPTY : jsonBytes(out.body));
    } catch (e) {
      logger.error({ reqId: ex.id, err: e }, 'response could not be serialized: withheld');
      ex.stats = undefined;
      return release(ex, reply, 500, undefined, 'error', `${out.rule}: filter-failed`, jsonBytes(operationOutcome('filter-failed')));
    }
    // A copy: `finish` is exported, and its caller's headers object is not ours to complete.
    return release(ex, reply, out.status, out.headers && { ...out.headers }, out.decision, out.rule, payload);
  }

  /** `headers` is finish's own copy, so it is completed in place. */
  async function release(
    ex: Exchange,
    reply: FastifyReply,
    status: number,
    headers: Headers | undefined,
    decision: Outcome['decision'],
    rule: string,
    payload: Buffer,
  ): Promise<void> {
    try {
      await deps.audit.write(toAuditRecord(ex, { status, decision, rule }));
    } catch (e) {
      if (config.audit.failOpen) {
        logger.error({ reqId: ex.id, err: e }, 'AUDIT WRITE FAILED: releasing response WITHOUT an audit record (audit.failOpen is on)');
      } else {
        logger.error({ reqId: ex.id, err: e }, 'audit write failed: response withheld (503)');
        status = 503;
        payload = jsonBytes(operationOutcome('audit-unavailable'));
        headers = undefined;
      }
    }
    logger.info(
      {
        reqId: ex.id,
        status,
        decision,
        interaction: ex.request?.interaction,
        resourceType: ex.request?.resourceType,
        role: ex.role,
        purpose: ex.purpose,
        ms: elapsedMs(ex.started),
      },
      'request completed',
    );
    const h: Headers = headers ?? {};
    h['content-type'] = FHIR_JSON;
    h['cache-control'] = 'no-store';
    h['x-request-id'] = ex.id;
    reply.code(status).headers(h);
    // For HEAD, Node sends the headers (Content-Length included) and drops the body itself, so a
    // HEAD answer is byte-for-byte the GET answer's head: no oracle in which one lacks a length.
    reply.send(payload);
    if (deps.observe) {
      try {
        deps.observe(ex, { status, decision, rule });
      } catch (e) {
        logger.error({ reqId: ex.id, err: e }, 'observer failed');
      }
    }
  }

  function fail(ex: Exchange, reply: FastifyReply, e: unknown, decision: 'deny' | 'error'): Promise<void> {
    const { code, status } = errorOutcome(e);
    if (!isGatewayError(e)) logger.error({ reqId: ex.id, err: e }, 'unexpected error');
    else if (e.detail) logger.debug({ reqId: ex.id, code, detail: e.detail }, 'request refused');
    const headers: Headers = {};
    if (code === 'invalid-token') headers['www-authenticate'] = 'Bearer realm="phi-gateway", error="invalid_token"';
    if (code === 'gateway-busy') headers['retry-after'] = '1';
    return finish(ex, reply, { status, body: operationOutcome(code), headers, decision, rule: ex.rule ? `${ex.rule}: ${code}` : code });
  }

  function exchange(request: FastifyRequest, rt: PolicyRuntime): Exchange {
    return {
      id: request.id,
      time: deps.now?.() ?? new Date(),
      started: process.hrtime.bigint(),
      method: request.method,
      url: request.url.startsWith('/fhir') ? request.url.slice('/fhir'.length) || '/' : request.url,
      clientAddress: request.ip,
      userAgent: headerValue(request.headers['user-agent'])?.slice(0, 200),
      policyVersion: rt.policy.version,
    };
  }

  /** For failures before the pipeline runs (body too large, unknown route): still audited. */
  function reject(request: FastifyRequest, reply: FastifyReply, e: unknown): Promise<void> {
    return fail(exchange(request, deps.policy()), reply, e, 'deny');
  }

  async function handle(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    // Refused before any work (token, upstream): the answer is cheap and the heap does not grow.
    if (inflight >= maxInflight) return fail(exchange(request, deps.policy()), reply, new GatewayError('gateway-busy', 'in-flight limit'), 'error');
    inflight++;
    const lease = budget.lease();
    leases.set(reply, lease);
    try {
      await admitted(request, reply);
    } finally {
      inflight--;
      lease.release();
      leases.delete(reply);
    }
  }

  async function admitted(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const rt = deps.policy();
    const ex = exchange(request, rt);
    const url = ex.url;
    let plan: AccessPlan;
    let decided: ClassifiedRequest;
    try {
      // Node keeps only the first of repeated Authorization headers; the raw list lets the verifier refuse them.
      ex.principal = await deps.verifier.verify(authorizationFromRawHeaders(request.raw.rawHeaders));
      const purpose = deps.steps.parsePurpose(request.headers['x-purpose-of-use'], rt.policy);
      if (!purpose.ok) throw new GatewayError(purpose.code);
      ex.purpose = purpose.code;
      decided = deps.steps.classify({
        method: request.method,
        url,
        headers: request.headers,
        body: Buffer.isBuffer(request.body) ? request.body : undefined,
      });
      ex.request = decided;
      const requestedRole = request.headers['x-role'];
      if (Array.isArray(requestedRole)) throw new GatewayError('role-not-held', 'repeated X-Role');
      const d = deps.steps.decide({ policy: rt.policy, principal: ex.principal, purpose: ex.purpose, requestedRole, request: decided });
      ex.rule = d.rule;
      if (!d.allow) throw new GatewayError(d.code);
      plan = d.plan;
      ex.role = plan.role;
      if (ex.purpose === 'BTG') {
        if (!deps.breakGlass) throw new GatewayError('break-glass-not-eligible', 'no break-glass service configured');
        ex.breakGlass = await deps.breakGlass.open({
          principal: ex.principal,
          request: decided,
          reason: request.headers['x-break-glass-reason'],
          requestId: ex.id,
        });
      }
      if (deps.gate) await deps.gate(ex);
    } catch (e) {
      return fail(ex, reply, e, 'deny');
    }
    let ifMatch: string | undefined;
    const patient = ex.principal.patient;
    if (patient !== undefined) {
      try {
        ({ req: decided, ifMatch } = await storedInCompartment(ex, decided, patient));
      } catch (e) {
        return fail(ex, reply, e, isGatewayError(e) && e.code === 'compartment-denied' ? 'deny' : 'error');
      }
    }
    return forward(ex, reply, rt, plan, decided, request, ifMatch);
  }

  async function forward(
    ex: Exchange,
    reply: FastifyReply,
    rt: PolicyRuntime,
    plan: AccessPlan,
    req: ClassifiedRequest,
    request: FastifyRequest,
    ifMatch: string | undefined,
  ): Promise<void> {
    let call: UpstreamCall;
    try {
      // The version the compartment check read wins over the client's: the write must hit exactly it.
      const headers = ifMatch === undefined ? request.headers : { ...request.headers, 'if-match': ifMatch };
      call = buildUpstreamCall(req, headers, {
        basePath: upstreamBasePath,
        requestId: ex.id,
        authorization: await deps.upstreamAuthorization(),
      });
    } catch (e) {
      return fail(ex, reply, e, 'error');
    }
    const sentAt = process.hrtime.bigint();
    let answer: UpstreamAnswer;
    try {
      answer = await dispatchUpstream(upstream, call, { limit: config.limits.responseBodyBytes, lease: leases.get(reply) });
    } catch (e) {
      return fail(ex, reply, e, 'error');
    } finally {
      ex.upstreamMs = elapsedMs(sentAt);
    }
    const principal = ex.principal!;
    const eligible = !ex.breakGlass && principal.roles.some((r) => rt.policy.roles.get(r)?.breakGlass === true);
    const compartment = ex.breakGlass?.patient ?? principal.patient;
    try {
      await respond(ex, reply, rt, plan, req, answer, eligible, compartment);
    } catch (e) {
      await fail(ex, reply, e, 'error');
    }
  }

  async function respond(
    ex: Exchange,
    reply: FastifyReply,
    rt: PolicyRuntime,
    plan: AccessPlan,
    req: ClassifiedRequest,
    up: UpstreamAnswer,
    eligible: boolean,
    compartment: string | undefined,
  ): Promise<void> {
    ex.upstreamStatus = up.statusCode;
    const body = decodeUpstreamBody(up.body, up.headers, config.limits, leases.get(reply));
    const status = up.statusCode;
    const headers: Headers = {};
    if (ex.breakGlass) headers['x-break-glass-session'] = ex.breakGlass.session;

    if (status === 404 || status === 410) throw new GatewayError('not-found', `upstream ${status}`);
    if (status >= 500) throw new GatewayError('upstream-error', `upstream ${status}`);
    if (status < 200 || (status >= 300 && status < 400)) throw new GatewayError('upstream-bad-response', `upstream ${status}`);

    if (body.kind === 'empty') {
      // 204 / 200 without body (delete, some updates): nothing to filter.
      return finish(ex, reply, { status, body: undefined, headers, decision: status < 400 ? 'allow' : 'deny', rule: ex.rule ?? '' });
    }
    const value = body.value as { resourceType?: unknown };
    // Released unchanged (the filter returns its input when it changed nothing, and never mutates
    // it) and provably read the same by any parser: the upstream's bytes go out as they came.
    const asIs = (released: unknown) => (released === value && readsAsParsed(body.raw, value) ? body.raw : undefined);
    if (status >= 400 && value.resourceType !== 'OperationOutcome') throw new GatewayError('upstream-error', `upstream ${status} without OperationOutcome`);
    if (req.interaction === 'capabilities') {
      if (value.resourceType !== 'CapabilityStatement') throw new GatewayError('upstream-bad-response', 'metadata is not a CapabilityStatement');
      return finish(ex, reply, { status, body: value, asIs: asIs(value), headers, decision: 'allow', rule: ex.rule ?? '' });
    }

    const ctx: ResponseContext = {
      ...rt.redact,
      planFor: (t) => plan.types.get(t),
      withheldMode: eligible ? 'announce' : 'hide',
      rewriteUrl,
      patientCompartment: compartment,
    };
    let result: FilterResult;
    try {
      result = deps.steps.filterResponse(value, ctx);
    } catch (e) {
      // Whatever went wrong, the unfiltered body stays here.
      throw isGatewayError(e) ? e : new GatewayError('filter-failed', 'response filter threw', { cause: e });
    }
    ex.stats = result.stats;
    if (result.kind === 'withheld') {
      const code: ErrorCode = eligible && result.reason === 'label' ? 'break-glass-available' : 'not-found';
      const oo = operationOutcome(code);
      return finish(ex, reply, { status: ERRORS[code].status, body: oo, decision: 'deny', rule: `${ex.rule ?? ''}: withheld (${result.reason})` });
    }
    for (const name of ['location', 'content-location'] as const) {
      const v = headerValue(up.headers[name]);
      const rewritten = v === undefined ? undefined : rewriteUrl(v);
      if (rewritten !== undefined) headers[name] = rewritten;
    }
    const etag = headerValue(up.headers.etag);
    if (etag && status < 300) headers.etag = etag;
    const lastModified = headerValue(up.headers['last-modified']);
    if (lastModified && status < 300) headers['last-modified'] = lastModified;
    return finish(ex, reply, { status, body: result.body, asIs: asIs(result.body), headers, decision: status < 400 ? 'allow' : 'deny', rule: ex.rule ?? '' });
  }

  return { handle, reject, exchange, fail, finish };
}
