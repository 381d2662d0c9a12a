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
import type { AuditSink, RelationshipEvidence } from '../audit/record.js';
import { authorizationFromRawHeaders } from '../auth/header.js';
import { bearerChallenge, type TokenFailure, tokenFailureOf } from '../auth/refusal.js';
import type { Principal } from '../auth/principal.js';
import type { GatewayConfig } from '../config/types.js';
import { consentApplies, consentEvidence, createConsentJudge, mergeConsentStats } from '../consent/judge.js';
import type { ConsentResolver } from '../consent/resolver.js';
import type { ConsentAccess, ConsentJudge } from '../consent/types.js';
import { ERRORS, type ErrorCode, GatewayError, isGatewayError, operationOutcome } from '../errors.js';
import { deidentifyOf, type PseudonymContext } from '../policy/deid-request.js';
import { withMetaElements } from '../policy/narrow.js';
import type { AccessPlan, CompiledPolicy, CompiledRelationships, RelationshipRequirement, RequestableDataSet } from '../policy/plan.js';
import { judgeRelationship, patientsNamed } from '../policy/relationship.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { FilterResult, RedactContext, ResponseContext } from '../redact/types.js';
import { createStoredGuard, isStoredRefusal } from './stored-guard.js';
import { readsAsParsed } from './strict-json.js';
import { type Exchange, elapsedMs, toAuditRecord } from './record.js';

export type { Exchange } from './record.js';
import { elevatePlan, grantScopeOf } from '../access/scope.js';
import type { AccessGate, GrantUse } from '../access/types.js';
import { BufferBudget, type BufferLease, decodeUpstreamBody } from './upstream-body.js';
import { dispatchUpstream, type UpstreamAnswer, UpstreamScope } from './upstream-dispatch.js';
import { buildUpstreamCall, type UpstreamCall } from './upstream-request.js';
import { jsonBytes } from '../utf8.js';
import { tailTypeId } from '../fhir/reference.js';
import { pseudonymize } from '../redact/pseudonym.js';
import { Filter, patientsIn, scrubOperationOutcome, withheldCode } from '../redact/response.js';
import { gatewayEtag, ifNoneMatchHits, upstreamVersionTag, versionShown } from './etag.js';
import { headersOnlyStats, returnPreference, writeOutcome } from './prefer.js';
import { encodeParams, parseForm, pathSegments, splitTarget } from '../policy/classify/url.js';
import { announceEntry, collectPage, includeSpecs, type PageStart } from './paging.js';
import { createPageTokens, type PageBinding, type PageState } from './page-token.js';

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
   * Elevated access on request (src/access): checks the grant a request names in X-Access-Grant.
   * Absent: a request naming one is refused (503 grant-unavailable).
   */
  readonly access?: AccessGate | undefined;
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
  /** CORS (src/server/cors.ts): the headers of an allowed preflight's answer. Absent: every preflight refused. */
  readonly cors?: { preflight(origin: string | string[] | undefined): Headers | undefined } | undefined;
  /** The gateway's own discovery documents (src/server/discovery.ts). Absent: both answer discovery-unavailable. */
  readonly discovery?: DiscoveryGate | undefined;
  /**
   * The caller's care relationships (src/relationships), for plans that require or record them.
   * Absent while a plan requires one: such requests are refused (503 relationship-unavailable).
   */
  readonly relationships?: RelationshipLookup | undefined;
  /**
   * Patients' consent directives (src/consent), for policies with a `consent` section. Absent while
   * the policy has one: answers that name a patient are refused (503 consent-unavailable).
   */
  readonly consents?: ConsentResolver | undefined;
  /** Handed, once, what the pipeline holds right now (for gauges read at scrape time). */
  readonly reportLoad?: ((read: () => PipelineLoad) => void) | undefined;
}

/** Looks up a caller's relationships; throws GatewayError('relationship-unavailable') when it cannot. */
export interface RelationshipLookup {
  lookup(
    caller: string,
    config: CompiledRelationships,
    signal?: AbortSignal,
  ): Looked | Promise<Looked>;
}

/** A caller's relationships as looked up: patient id -> every relationship found, per source. */
export interface Looked {
  readonly patients: ReadonlyMap<string, ReadonlyArray<{ readonly source: string; readonly resource: string }>>;
}

/** Requests holding an in-flight slot, and upstream bytes their buffer shares hold. */
export interface PipelineLoad {
  readonly requests: number;
  readonly bufferBytes: number;
}

/** The gateway's CapabilityStatement and SMART configuration, answered without asking the upstream. */
export interface DiscoveryGate {
  smartConfiguration(): Promise<unknown>;
  /** `caller` absent: no token came with the request. Refusals are those decide() gives for the same headers. */
  capabilityStatement(
    policy: CompiledPolicy,
    caller: { principal: Principal; purpose?: string | undefined; role?: string | undefined } | undefined,
  ): Promise<{ ok: true; body: unknown; rule: string } | { ok: false; code: ErrorCode }>;
}

export interface PolicyRuntime {
  readonly policy: CompiledPolicy;
  readonly redact: RedactContext;
}

/** The pure steps, injected so the pipeline depends on their contracts only. */
export interface PipelineSteps {
  parsePurpose(raw: string | string[] | undefined, policy: CompiledPolicy): { ok: true; code: string } | { ok: false; code: ErrorCode };
  classify(raw: { method: string; url: string; headers: FastifyRequest['headers']; body: Buffer | undefined }): ClassifiedRequest;
  decide(input: {
    policy: CompiledPolicy;
    principal: Principal;
    purpose: string;
    requestedRole?: string | undefined;
    request: ClassifiedRequest;
    pseudonyms?: PseudonymContext | undefined;
  }):
    | { allow: true; plan: AccessPlan; rule: string; request?: ClassifiedRequest | undefined }
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
  // Memory bound: requests at once, and upstream bytes they may hold together
  // (defaults when the gateway file leaves them unset: 256 requests, 64 MiB). Each buffered byte
  // costs several bytes of heap while its response is built (parse, filter, serialize), so 64 MiB
  // keeps RSS near 1 GB in the 64 x 5 MB bench; 256 MiB did not bound it.
  const maxInflight = config.limits.maxInflightRequests ?? 256;
  const budget = new BufferBudget(config.limits.bufferBytes ?? 64 * 1024 * 1024);
  const leases = new WeakMap<FastifyReply, BufferLease>();
  const scopes = new WeakMap<FastifyReply, UpstreamScope>();
  let inflight = 0;
  deps.reportLoad?.(() => ({ requests: inflight, bufferBytes: budget.inUse }));
  const guardStored = createStoredGuard(deps);
  const paging = config.paging;
  const tokens = createPageTokens({ secret: paging.key, ttlSeconds: paging.tokenTtlSeconds, now: deps.now && (() => deps.now!().getTime()) });
  if (paging.key === undefined) {
    logger.warn('paging.key is not set: continuation tokens use a random per-process key (they end with the process and do not work across replicas)');
  }

  // The bases the upstream may name itself by: its URL, then the public addresses it writes in links
  // (upstream.linkBases: HAPI's server_address, Azure's host name). Anything under one of them is the
  // upstream's; anything else is not followed and not released.
  const selfBases = [upstreamBase, ...(config.upstream.linkBases ?? [])].map((b) => b.replace(/\/+$/, ''));
  const linkBases = selfBases.map((b) => {
    const u = new URL(b);
    return { origin: u.origin, path: u.pathname.replace(/\/+$/, '') };
  });

  /**
   * An upstream paging link as path + query on the upstream origin: under upstream.url as it is,
   * under a link base moved onto upstream.url's base path. A link anywhere else is refused: an
   * upstream that could make the gateway fetch another host would reach whatever that host serves.
   */
  function upstreamLink(link: string): string {
    let u: URL;
    try {
      u = new URL(link, `${upstreamBase}/`);
    } catch {
      throw new GatewayError('upstream-bad-response', 'unparseable paging link');
    }
    for (const b of linkBases) {
      if (u.origin !== b.origin) continue;
      if (u.pathname !== b.path && !u.pathname.startsWith(`${b.path}/`)) continue;
      return upstreamBasePath + u.pathname.slice(b.path.length) + u.search;
    }
    throw new GatewayError('upstream-bad-response', 'paging link outside the configured upstream');
  }

  /** An upstream URL (fullUrl, Location, a reference) under one of its bases, moved to the public base. */
  function rewriteUrl(url: string): string | undefined {
    for (const base of selfBases) {
      if (url === base) return publicBase;
      if (url.startsWith(base)) {
        const next = url.charAt(base.length);
        if (next === '/' || next === '?') return publicBase + url.slice(base.length);
      }
    }
    return undefined;
  }

  /** What decide() resolves a de-identified caller's pseudonyms with: the current key, then previous ones. */
  function pseudonymsOf(rt: PolicyRuntime): PseudonymContext {
    const { pseudonymKey, pseudonymPreviousKeys = [] } = rt.redact;
    return { keys: pseudonymKey === undefined ? pseudonymPreviousKeys : [pseudonymKey, ...pseudonymPreviousKeys], publicBase };
  }

  /**
   * A Location for a de-identified caller: the public URL of the pseudonym of its `Type/id` (no
   * version: versions are not released to it), or undefined (the header is dropped).
   */
  function pseudonymLocation(url: string, key: Uint8Array | undefined): string | undefined {
    const t = key === undefined ? undefined : tailTypeId(url);
    if (t === undefined || t.prefix !== `${publicBase}/`) return undefined;
    const p = pseudonymize(key!, t.type, t.id);
    return p === undefined ? undefined : `${publicBase}/${t.type}/${p}`;
  }

  /**
   * Writes the audit record, then releases the response. Called exactly once per request.
   * Serializes synchronously before anything waits: while the audit write waits for its fsync only
   * the payload bytes are held, not the parsed body (on a 400 KB searchset that object graph is
   * several MB per request; kept across the wait it survived young-generation GC and was promoted).
   */
  function finish(ex: Exchange, reply: FastifyReply, out: Outcome): Promise<void> {
    const rel = relationshipStates.get(ex);
    if (rel !== undefined) {
      try {
        ex.relationship = relationshipEvidence(rel, ex.stats?.patients, ex.stats?.unrelated);
      } catch (e) {
        // Never a reason to answer without a record: the record then says only whose rule applied.
        logger.error({ reqId: ex.id, err: e }, 'relationship evidence could not be built');
        ex.relationship = { related: [], required: rel.requirement.required, rule: rel.requirement.rule, unrelated: [] };
      }
    }
    if (ex.stats?.consent !== undefined) ex.consent = consentEvidence(ex.stats.consent);
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
    if (status === 200 && decision === 'allow' && (ex.method === 'GET' || ex.method === 'HEAD')) {
      // The gateway's own ETag over the bytes released, never the upstream's (src/proxy/etag.ts).
      // A matching If-None-Match is answered 304 without a body, decided before the audit write so
      // the record says 304: it still names the request, but no element or resource was released.
      const etag = gatewayEtag(payload);
      headers = { ...headers, etag };
      if (ifNoneMatchHits(reply.request.headers['if-none-match'], etag)) {
        status = 304;
        payload = EMPTY;
        rule = `${rule}: not modified`;
        if (ex.stats) ex.stats = { elementsRemoved: 0, resourcesWithheld: 0, resources: [], patients: ex.stats.patients };
      }
    }
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
        // Why it was refused (the error code, and for a token which check failed): never token contents.
        code: refusals.get(ex)?.code,
        reason: refusals.get(ex)?.reason,
        ms: elapsedMs(ex.started),
      },
      'request completed',
    );
    const h: Headers = headers ?? {};
    if (status === 304) delete h['content-type'];
    else h['content-type'] ??= FHIR_JSON;
    h['cache-control'] = 'no-store';
    h['x-request-id'] = ex.id;
    reply.code(status).headers(h);
    // For HEAD, Node sends the headers (Content-Length included) and drops the body itself, so a
    // HEAD answer is byte-for-byte the GET answer's head: no oracle in which one lacks a length.
    // Compression (@fastify/compress, src/server/app.ts) runs inside send(), after the audit record
    // was written from these very bytes; a 304 sends no payload at all (and no Content-Length).
    if (status === 304) reply.send();
    else reply.send(payload);
    if (deps.observe) {
      try {
        deps.observe(ex, { status, decision, rule });
      } catch (e) {
        logger.error({ reqId: ex.id, err: e }, 'observer failed');
      }
    }
  }

  /** What fail() refused a request with, for its "request completed" log line. */
  const refusals = new WeakMap<Exchange, { code: ErrorCode; reason: TokenFailure | undefined }>();

  function fail(ex: Exchange, reply: FastifyReply, e: unknown, decision: 'deny' | 'error'): Promise<void> {
    const { code, status } = errorOutcome(e);
    if (!isGatewayError(e)) logger.error({ reqId: ex.id, err: e }, 'unexpected error');
    else if (e.detail) logger.debug({ reqId: ex.id, code, detail: e.detail }, 'request refused');
    refusals.set(ex, { code, reason: tokenFailureOf(e) });
    const headers: Headers = {};
    // Names the failed check (expired, audience...) in fixed words; no credentials at all: a bare challenge.
    if (code === 'invalid-token') headers['www-authenticate'] = bearerChallenge(e);
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

  /**
   * A preflight (204 with the CORS headers for an allowed origin, `cors-origin-denied` without any
   * for another), the SMART configuration, or the CapabilityStatement: for the policy as a whole
   * without a token; with one, verified, for what that caller may do (purpose and X-Role optional).
   * Audited like every answer; the upstream is never asked.
   */
  async function answerOwn(target: OwnTarget, ex: Exchange, request: FastifyRequest, reply: FastifyReply, rt: PolicyRuntime): Promise<void> {
    let out: Outcome;
    try {
      if (target === 'preflight') {
        ex.rule = 'cors.origins';
        ex.details = { origin: headerValue(request.headers.origin)?.slice(0, 200), requestMethod: headerValue(request.headers['access-control-request-method'])?.slice(0, 20) };
        const headers = deps.cors?.preflight(request.headers.origin);
        if (headers === undefined) throw new GatewayError('cors-origin-denied', 'origin not in cors.origins');
        out = { status: 204, body: undefined, headers, decision: 'allow', rule: 'cors.origins: preflight' };
      } else {
        ex.rule = `discovery: ${target}`;
        if (request.method !== 'GET' && request.method !== 'HEAD') throw new GatewayError('method-not-allowed', `${target} is read-only`);
        if (deps.discovery === undefined) throw new GatewayError('discovery-unavailable', 'no discovery configured');
        if (target === 'smart-configuration') {
          const body = await deps.discovery.smartConfiguration();
          out = { status: 200, body, headers: { 'content-type': 'application/json; charset=utf-8' }, decision: 'allow', rule: ex.rule };
        } else {
          ex.request = deps.steps.classify({ method: request.method, url: ex.url, headers: request.headers, body: undefined });
          for (const [name, value] of ex.request.params) {
            if (name !== 'mode') throw new GatewayError('search-param-denied', `metadata parameter ${name}`);
            if (value !== 'full' && value !== 'normative') throw new GatewayError('bad-request', 'metadata mode');
          }
          let caller: Parameters<DiscoveryGate['capabilityStatement']>[1];
          const authorization = authorizationFromRawHeaders(request.raw.rawHeaders);
          if (authorization !== undefined) {
            ex.principal = await deps.verifier.verify(authorization);
            let purpose: string | undefined;
            if (request.headers['x-purpose-of-use'] !== undefined) {
              const p = deps.steps.parsePurpose(request.headers['x-purpose-of-use'], rt.policy);
              if (!p.ok) throw new GatewayError(p.code);
              purpose = ex.purpose = p.code;
            }
            const role = request.headers['x-role'];
            if (Array.isArray(role)) throw new GatewayError('role-not-held', 'repeated X-Role');
            ex.role = role;
            caller = { principal: ex.principal, purpose, role };
          }
          const r = await deps.discovery.capabilityStatement(rt.policy, caller);
          if (!r.ok) throw new GatewayError(r.code);
          out = { status: 200, body: r.body, decision: 'allow', rule: r.rule };
        }
      }
    } catch (e) {
      return fail(ex, reply, e, isGatewayError(e) && e.status < 500 ? 'deny' : 'error');
    }
    return finish(ex, reply, out);
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
    const scope = new UpstreamScope(config.upstream.totalTimeoutMs);
    let held = true;
    const free = (reason?: GatewayError): void => {
      if (!held) return;
      held = false;
      inflight--;
      lease.release(reason);
    };
    // The client gone before its answer was sent: the upstream call is cancelled and the slot and
    // buffer share freed now, not when the upstream finishes (a dripping upstream would otherwise
    // hold them to its deadline while new clients are refused). The pipeline still ends in fail(),
    // which audits the request as client-closed.
    const closed = (): void => {
      if (reply.raw.writableFinished) return;
      scope.clientClosed();
      free(scope.reason);
    };
    reply.raw.once('close', closed);
    leases.set(reply, lease);
    scopes.set(reply, scope);
    try {
      if (request.raw.socket?.destroyed) closed();
      await admitted(request, reply);
    } finally {
      reply.raw.off('close', closed);
      scope.dispose();
      free();
      leases.delete(reply);
      scopes.delete(reply);
    }
  }

  async function admitted(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const rt = deps.policy();
    const ex = exchange(request, rt);
    const url = ex.url;
    // CORS preflights and the discovery documents: the gateway's own answers, given without a token.
    const own = ownTarget(request.method, request.headers, url);
    if (own !== undefined) return answerOwn(own, ex, request, reply, rt);
    let plan: AccessPlan;
    let decided: ClassifiedRequest;
    let page: PageState | undefined;
    try {
      // Node keeps only the first of repeated Authorization headers; the raw list lets the verifier refuse them.
      ex.principal = await deps.verifier.verify(authorizationFromRawHeaders(request.raw.rawHeaders));
      const purpose = deps.steps.parsePurpose(declaredPurpose(request.headers['x-purpose-of-use'], ex.principal), rt.policy);
      if (!purpose.ok) throw new GatewayError(purpose.code);
      ex.purpose = purpose.code;
      const grantHeader = request.headers['x-access-grant'];
      const cursor = cursorOf(url);
      if (cursor !== undefined) {
        // A gateway continuation: the search it continues is re-classified and re-decided for this
        // caller, and the token must have been issued to exactly this caller, purpose and policy
        // (and grant: a search made under a grant continues under that grant alone, re-checked below).
        if (request.method !== 'GET' && request.method !== 'HEAD') throw new GatewayError('method-not-allowed', 'paging link with a body method');
        page = tokens.open(cursor.token, bindingOf(ex.principal, ex.purpose, rt.policy.version, grantKey(grantHeader)));
        if (cursor.count !== undefined && cursor.count !== String(page.n)) throw new GatewayError('paging-token-invalid', '_count differs from the page size of the link');
      }
      decided = deps.steps.classify({
        method: request.method,
        url: page?.q ?? url,
        headers: request.headers,
        body: page === undefined && Buffer.isBuffer(request.body) ? request.body : undefined,
      });
      if (page !== undefined && !isPageable(decided)) throw new GatewayError('paging-token-invalid', 'continues a request that does not page');
      ex.request = decided;
      const requestedRole = request.headers['x-role'];
      if (Array.isArray(requestedRole)) throw new GatewayError('role-not-held', 'repeated X-Role');
      let policy = rt.policy;
      let granted: RequestableDataSet | undefined;
      if (grantHeader !== undefined) {
        // An access grant (src/access): checked on every request (revocation and expiry act at
        // once), then the caller's own plan for its purpose widened by exactly what it names.
        if (ex.purpose === 'BTG') throw new GatewayError('grant-out-of-scope', 'break-glass does not use access grants');
        // The grant asked for, in the record whether or not it is honoured (a well-formed id only).
        if (typeof grantHeader === 'string' && GRANT_ID.test(grantHeader)) ex.details = { ...ex.details, accessGrant: grantHeader };
        if (deps.access === undefined) throw new GatewayError('grant-unavailable', 'no access-request service configured');
        ex.grant = await deps.access.use({ principal: ex.principal, purpose: ex.purpose, request: decided, header: grantHeader, requestId: ex.id });
        granted = rt.policy.accessRequests?.dataSets.get(ex.grant.dataSet);
        if (granted === undefined) throw new GatewayError('grant-inactive', 'data set no longer requestable');
        policy = elevatedPolicy(rt.policy, ex.principal, ex.purpose, granted, ex.grant);
      }
      const d = deps.steps.decide({ policy, principal: ex.principal, purpose: ex.purpose, requestedRole, request: decided, pseudonyms: pseudonymsOf(rt) });
      ex.rule = d.rule;
      if (!d.allow) throw new GatewayError(d.code);
      plan = d.plan;
      if (ex.grant !== undefined && granted !== undefined) {
        const scope = grantScopeOf(granted, ex.grant.scope, rt.policy.accessRequests?.timeZone);
        if (scope !== undefined) grantScopes.set(plan, scope);
      }
      ex.role = plan.role;
      // The decision may narrow what is sent (a patient context's compartment, includes the role can
      // see); ex.request keeps the client's request for the audit and for paging continuations.
      if (d.request !== undefined) decided = d.request;
      const withMeta = withMetaElements(decided);
      if (withMeta === undefined) throw new GatewayError('request-unclassified', 'Bundle body does not match its entries');
      decided = withMeta;
      if (ex.purpose !== 'BTG' && plan.relationship !== undefined) {
        const looked = lookupRelationships(ex, rt, plan.relationship, scopes.get(reply)?.signal);
        decided = relationshipGate(ex, rt, plan.relationship, decided, looked instanceof Promise ? await looked : looked);
      }
      if (ex.purpose === 'BTG') {
        if (!deps.breakGlass) throw new GatewayError('break-glass-not-eligible', 'no break-glass service configured');
        ex.breakGlass = await deps.breakGlass.open({
          principal: ex.principal,
          request: decided,
          reason: request.headers['x-break-glass-reason'],
          requestId: ex.id,
        });
      }
      if (ex.breakGlass !== undefined) await recordBreakGlassRelationship(ex, rt, scopes.get(reply)?.signal);
      if (deps.gate) await deps.gate(ex);
    } catch (e) {
      return fail(ex, reply, e, isGatewayError(e) && e.status >= 500 ? 'error' : 'deny');
    }
    let ifMatch: string | undefined;
    try {
      // What the request reaches beyond its bytes (stored versions, labels), judged for every caller
      // with the context its answer will be filtered with (src/proxy/stored-guard.ts).
      const eligible = announces(ex, rt);
      consentFor(ex, rt, plan, scopes.get(reply)?.signal);
      const filter = responseContext(rt, plan, eligible, compartmentOf(ex), relatedSet(ex), consentJudges.get(ex));
      ({ req: decided, ifMatch } = await guardStored({
        ex,
        req: decided,
        plan,
        filter,
        breakGlass: ex.breakGlass !== undefined,
        clientIfMatch: request.headers['if-match'],
        signal: scopes.get(reply)?.signal,
      }));
    } catch (e) {
      return fail(ex, reply, e, isStoredRefusal(e) ? 'deny' : 'error');
    }
    return forward(ex, reply, rt, plan, decided, request, ifMatch, page);
  }

  async function forward(
    ex: Exchange,
    reply: FastifyReply,
    rt: PolicyRuntime,
    plan: AccessPlan,
    req: ClassifiedRequest,
    request: FastifyRequest,
    ifMatch: string | undefined,
    page: PageState | undefined,
  ): Promise<void> {
    let call: UpstreamCall;
    let start: PagedStart | undefined;
    let batchStarts = new Map<number, PagedStart>();
    try {
      // The version the compartment check read wins over the client's: the write must hit exactly it.
      const headers = ifMatch === undefined ? request.headers : { ...request.headers, 'if-match': ifMatch };
      let sent = req;
      // A role that may break the glass is told when results were withheld (the suppressed entry),
      // so its searches must still see them; for every other caller the upstream leaves them out.
      const mayAnnounce = announces(ex, rt);
      const exclude = mayAnnounce ? undefined : plan;
      if ((req.interaction === 'batch' || req.interaction === 'transaction') && page === undefined) {
        ({ req: sent, starts: batchStarts } = pagedEntries(req, ex.request!, upstreamBasePath, paging, exclude));
      } else if (isPageable(req)) {
        const count = pageSizeWith(req.params, paging.defaultCount, paging.maxCount);
        // One more than the page (at least minUpstreamCount): when nothing is withheld, one upstream page tells whether a next one exists.
        if (page === undefined) sent = withCount(req, upstreamCountWith(count, paging.minUpstreamCount), exclude);
        const q = page?.q ?? canonicalUrl(ex.request!);
        start = page === undefined ? { at: '', index: 0, released: 0, count, q } : { at: page.u, index: page.i, released: page.r, count: page.n, q, f: page.f };
      }
      call = buildUpstreamCall(sent, headers, {
        basePath: upstreamBasePath,
        requestId: ex.id,
        authorization: await deps.upstreamAuthorization(),
      });
      if (start !== undefined) {
        if (page !== undefined) call = atUpstream(call, page.u);
        else start = { ...start, at: call.query === '' ? call.path : `${call.path}?${call.query}` };
      }
    } catch (e) {
      return fail(ex, reply, e, 'error');
    }
    const sentAt = process.hrtime.bigint();
    let answer: UpstreamAnswer;
    try {
      answer = emptySearches.has(ex)
        ? EMPTY_SEARCHSET
        : await dispatchUpstream(upstream, call, { limit: config.limits.responseBodyBytes, lease: leases.get(reply), signal: scopes.get(reply)?.signal });
    } catch (e) {
      return fail(ex, reply, e, 'error');
    } finally {
      if (!emptySearches.has(ex)) ex.upstreamMs = elapsedMs(sentAt);
    }
    // Answered, but the client has gone meanwhile: nothing to filter for anyone.
    const gone = scopes.get(reply)?.reason;
    if (gone?.code === 'client-closed') return fail(ex, reply, gone, 'error');
    const eligible = announces(ex, rt);
    const compartment = compartmentOf(ex);
    try {
      if (start !== undefined && answer.statusCode === 200) await respondPaged(ex, reply, rt, plan, req, call, answer, eligible, compartment, start, page !== undefined);
      else if (start !== undefined && page !== undefined && (answer.statusCode === 404 || answer.statusCode === 410)) {
        // The upstream forgot the position (HAPI's cached pages expire): the search must be repeated.
        throw new GatewayError('paging-token-invalid', `upstream page ${answer.statusCode}`);
      } else await respond(ex, reply, rt, plan, req, answer, eligible, compartment, call, batchStarts);
    } catch (e) {
      await fail(ex, reply, e, 'error');
    }
  }

  function responseContext(
    rt: PolicyRuntime,
    plan: AccessPlan,
    eligible: boolean,
    compartment: string | undefined,
    related?: ReadonlySet<string>,
    consent?: ConsentJudge,
  ): ResponseContext {
    return {
      ...rt.redact,
      planFor: (t) => plan.types.get(t),
      withheldMode: eligible ? 'announce' : 'hide',
      rewriteUrl,
      patientCompartment: compartment,
      ...(related === undefined ? {} : { relatedPatients: related }),
      deidentify: deidentifyOf(plan),
      ...(consent === undefined ? {} : { consent }),
      ...(grantScopes.has(plan) ? { grantScope: grantScopes.get(plan) } : {}),
    };
  }

  /** Per request using an access grant that names encounters or a period: the limit on its types' resources. */
  const grantScopes = new WeakMap<AccessPlan, NonNullable<ResponseContext['grantScope']>>();

  /** Per request where patients' consents apply: the judge its answers are filtered with. */
  const consentJudges = new WeakMap<Exchange, ConsentJudge>();

  /**
   * Makes the request's consent judge where the policy enforces consent for its purpose (the
   * patient's own access is exempt). Without a resolver while the policy enforces consent, every
   * answer naming a patient fails closed (503 consent-unavailable) when it is loaded.
   */
  function consentFor(ex: Exchange, rt: PolicyRuntime, plan: AccessPlan, signal: AbortSignal | undefined): void {
    const policy = rt.policy.consent;
    const purpose = ex.purpose ?? '';
    if (!consentApplies(policy, purpose)) return;
    const purposes = purposeLine(rt.policy, purpose);
    const fhirUser = ex.principal?.fhirUser;
    const caller = fhirUser === undefined ? undefined : tailTypeId(fhirUser);
    const access: ConsentAccess = {
      purpose,
      purposes,
      actors: caller === undefined ? [] : [`${caller.type}/${caller.id}`],
      now: (deps.now?.() ?? new Date()).getTime(),
      breakGlass: ex.breakGlass !== undefined,
      authorizationRequired: plan.authorization !== undefined,
    };
    const resolver = deps.consents ?? UNAVAILABLE_CONSENTS;
    consentJudges.set(ex, createConsentJudge(resolver, policy, access, signal));
  }

  /** Per request whose plan requires or records care relationships: what they were and did. */
  const relationshipStates = new WeakMap<Exchange, RelationshipState>();
  /** Searches answered by the gateway itself with an empty page (nothing related to search). */
  const emptySearches = new WeakSet<Exchange>();

  /** The patients the response filter limits a request to: set only where a relationship is enforced. */
  function relatedSet(ex: Exchange): ReadonlySet<string> | undefined {
    const rel = relationshipStates.get(ex);
    return rel?.requirement.required ? rel.set : undefined;
  }

  /** The caller's relationships from the sources `requirement` counts (first one found per patient). */
  function lookupRelationships(ex: Exchange, rt: PolicyRuntime, requirement: RelationshipRequirement, signal: AbortSignal | undefined): RelationshipState | Promise<RelationshipState> {
    const config = rt.policy.relationships;
    const caller = ex.principal?.fhirUser;
    if (caller === undefined) return { requirement, caller, related: NOTHING_RELATED, set: NOTHING_RELATED_SET, named: [], unrelated: [] };
    if (config === undefined || deps.relationships === undefined) throw new GatewayError('relationship-unavailable', 'no relationship resolver');
    const state = (found: Looked): RelationshipState => {
      const { related, set } = countedRelationships(found, requirement.sources);
      return { requirement, caller, related, set, named: [], unrelated: [] };
    };
    // A cached set comes back synchronously: no promise turn on the hot path.
    const found = deps.relationships.lookup(caller, config, signal);
    return found instanceof Promise ? found.then(state) : state(found);
  }

  /**
   * The relationship requirement applied to an allowed request (src/policy/relationship.ts): the
   * request to forward (narrowed), or a refusal. A role that may break the glass is told there is
   * no relationship (403); any other is answered as if the patient did not exist: not found, or an
   * empty searchset the gateway answers itself. `required: false` only records.
   */
  function relationshipGate(ex: Exchange, rt: PolicyRuntime, requirement: RelationshipRequirement, req: ClassifiedRequest, state: RelationshipState): ClassifiedRequest {
    relationshipStates.set(ex, state);
    const verdict = judgeRelationship(req, state.set, {
      searchPatients: rt.policy.relationships?.searchPatients ?? 100,
      sourceWriteTypes: requirement.writeProtected,
    });
    if (verdict.kind === 'allow') {
      state.named = verdict.named;
      if (requirement.required) state.narrowed = verdict.narrowed;
    } else if (verdict.kind === 'unrelated') {
      state.unrelated = verdict.patients;
    }
    if (!requirement.required) {
      // Recorded only: the patients it names, related or not, go in the record; nothing changes.
      if (verdict.kind !== 'unrelated' && req.resourceType !== undefined) {
        const named = req.interaction === 'search-type' ? patientsNamed(req.resourceType, req.params).ids : [];
        state.unrelated = named.filter((p) => !state.set.has(p));
      }
      return req;
    }
    if (verdict.kind === 'allow') return verdict.request;
    if (verdict.kind === 'source-write') {
      ex.rule = `${ex.rule} -> ${requirement.rule}: ${verdict.type} is a relationship source`;
      throw new GatewayError('interaction-denied', 'write of a relationship source');
    }
    if (verdict.kind === 'too-broad') {
      ex.rule = `${ex.rule} -> ${requirement.rule}: search too broad`;
      throw new GatewayError('relationship-search-too-broad', 'search names no patient');
    }
    if (verdict.kind === 'empty') {
      // Nothing related to search: the answer a search matching nothing gets, for every caller.
      ex.rule = `${ex.rule} -> ${requirement.rule}: no related patient`;
      emptySearches.add(ex);
      return req;
    }
    ex.rule = `${ex.rule} -> ${requirement.rule}: no relationship`;
    if (announces(ex, rt)) throw new GatewayError('relationship-required', 'no relationship');
    const search = req.interaction === 'search-type' || req.interaction === 'search-compartment';
    if (!search) throw new GatewayError('not-found', 'no relationship');
    // Answered as a search about a patient with no data would be, without asking the upstream.
    emptySearches.add(ex);
    return req;
  }

  /**
   * A break-glass request by a caller with a FHIR user, where the policy has relationships: whether
   * the patient was related (was break-glass needed for lack of a relationship?), recorded only. A
   * failed lookup never stands in the way of an emergency: the record then says nothing of it.
   */
  async function recordBreakGlassRelationship(ex: Exchange, rt: PolicyRuntime, signal: AbortSignal | undefined): Promise<void> {
    const config = rt.policy.relationships;
    if (config === undefined || ex.principal?.fhirUser === undefined || ex.breakGlass === undefined) return;
    try {
      const requirement = config.breakGlassRecord ?? { required: false, sources: [...config.sources.keys()], rule: 'breakGlass' };
      const looked = lookupRelationships(ex, rt, requirement, signal);
      const state = looked instanceof Promise ? await looked : looked;
      state.named = [ex.breakGlass.patient];
      relationshipStates.set(ex, state);
    } catch (e) {
      logger.warn({ reqId: ex.id, err: e }, 'break-glass: relationships could not be looked up for the record');
    }
  }

  /**
   * A search or history answer: the page is assembled by the gateway from as many upstream pages
   * as it takes (src/proxy/paging.ts), with the gateway's own links and `total`.
   */
  async function respondPaged(
    ex: Exchange,
    reply: FastifyReply,
    rt: PolicyRuntime,
    plan: AccessPlan,
    req: ClassifiedRequest,
    call: UpstreamCall,
    up: UpstreamAnswer,
    eligible: boolean,
    compartment: string | undefined,
    start: PagedStart,
    continued: boolean,
  ): Promise<void> {
    // The gateway's own empty page (no related patient to search) was never the upstream's answer.
    ex.upstreamStatus = up === EMPTY_SEARCHSET ? undefined : up.statusCode;
    const first = decodeUpstreamBody(up.body, up.headers, config.limits, leases.get(reply));
    if (first.kind !== 'json') throw new GatewayError('upstream-bad-response', 'search answered without a body');
    const filter = new Filter(responseContext(rt, plan, eligible, compartment, relatedSet(ex), consentJudges.get(ex)));
    await filter.ctx.consent?.load(patientsIn(first.value));
    const self = continued ? `${publicBase}${ex.url}` : `${publicBase}${start.q}`;
    const body = await assemblePage(ex, reply, rt, req, call, first.value as Obj, filter, eligible, start, self);
    ex.stats = filter.stats;
    const headers: Headers = {};
    if (ex.breakGlass) headers['x-break-glass-session'] = ex.breakGlass.session;
    if (ex.grant) headers['x-access-grant'] = ex.grant.id;
    return finish(ex, reply, { status: 200, body, headers, decision: 'allow', rule: ex.rule ?? '' });
  }

  /** One client page, from the first upstream page already read (`first`) onwards. */
  async function assemblePage(
    ex: Exchange,
    reply: FastifyReply,
    rt: PolicyRuntime,
    req: ClassifiedRequest,
    call: UpstreamCall,
    first: Obj,
    filter: Filter,
    eligible: boolean,
    start: PagedStart,
    self: string,
  ): Promise<Obj> {
    const lease = leases.get(reply);
    const scope = scopes.get(reply);
    const fetchPage = async (at: string): Promise<Obj> => {
      const sentAt = process.hrtime.bigint();
      let a: UpstreamAnswer;
      try {
        // Within the request's one deadline: each page is not given a fresh one.
        a = await dispatchUpstream(upstream, atUpstream(call, at), { limit: config.limits.responseBodyBytes, lease, signal: scope?.signal });
      } finally {
        ex.upstreamMs = (ex.upstreamMs ?? 0) + elapsedMs(sentAt);
      }
      if (a.statusCode !== 200) throw new GatewayError(a.statusCode >= 500 ? 'upstream-error' : 'upstream-bad-response', `upstream page ${a.statusCode}`);
      const b = decodeUpstreamBody(a.body, a.headers, config.limits, lease);
      if (b.kind !== 'json') throw new GatewayError('upstream-bad-response', 'page without a body');
      // Every page's patients' consents are held before the pager judges its entries.
      await filter.ctx.consent?.load(patientsIn(b.value));
      return b.value as Obj;
    };
    let collected: Awaited<ReturnType<typeof collectPage>>;
    try {
      collected = await collectPage({
        first,
        start,
        filter,
        fetchPage,
        resolveLink: upstreamLink,
        maxUpstreamPages: paging.maxUpstreamPages,
        typeHistory: req.interaction === 'history-type',
        includes: includeSpecs(req.params),
      });
    } catch (e) {
      throw isGatewayError(e) ? e : new GatewayError('filter-failed', 'paging failed', { cause: e });
    }
    const entry = collected.entries;
    if (eligible && collected.type === 'searchset' && filter.labelsWithheld > 0) entry.push(announceEntry());
    const link: Array<{ relation: string; url: string }> = [{ relation: 'self', url: self }];
    if (collected.next !== undefined) {
      const token = tokens.seal(
        { q: start.q, u: collected.next.at, i: collected.next.index, r: collected.next.released, n: start.count, f: start.f ?? Buffer.byteLength(start.at, 'utf8') },
        bindingOf(ex.principal!, ex.purpose!, rt.policy.version, ex.grant?.id),
      );
      link.push({ relation: 'next', url: `${publicBase}${start.q.split('?', 1)[0]}?_cursor=${token}&_count=${start.count}` });
    }
    const body: Obj = { resourceType: 'Bundle', type: collected.type };
    if (collected.total !== undefined) body.total = collected.total;
    body.link = link;
    if (entry.length > 0) body.entry = entry;
    return body;
  }

  /**
   * Searches inside a batch or transaction page like top-level ones: each nested searchset is
   * assembled by the gateway (its own Filter, stats merged afterwards), and the rest of the
   * response filtered as before with a placeholder where each assembled page goes.
   */
  async function pageBatchSearches(
    ex: Exchange,
    reply: FastifyReply,
    rt: PolicyRuntime,
    req: ClassifiedRequest,
    call: UpstreamCall,
    value: Obj,
    ctx: ResponseContext,
    eligible: boolean,
    starts: ReadonlyMap<number, PagedStart>,
  ): Promise<{ value: Obj; pages: Map<number, { body: Obj; filter: Filter }> }> {
    const pages = new Map<number, { body: Obj; filter: Filter }>();
    const entries = value.entry;
    if (starts.size === 0 || !Array.isArray(entries) || entries.length !== req.entries?.length) return { value, pages };
    const copy = [...entries];
    for (const [k, start] of starts) {
      const e = copy[k] as Obj | undefined;
      const nested = e?.resource as Obj | undefined;
      if (!isPlainObj(e) || !isPlainObj(nested) || nested.resourceType !== 'Bundle' || (nested.type !== 'searchset' && nested.type !== 'history')) continue;
      const filter = new Filter(ctx);
      const body = await assemblePage(ex, reply, rt, req.entries![k], call, nested, filter, eligible, start, `${publicBase}${start.q}`);
      pages.set(k, { body, filter });
      copy[k] = { ...e, resource: { resourceType: 'Bundle', type: nested.type } };
    }
    return { value: { ...value, entry: copy }, pages };
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
    call: UpstreamCall,
    batchStarts: ReadonlyMap<number, PagedStart>,
  ): Promise<void> {
    ex.upstreamStatus = up.statusCode;
    const body = decodeUpstreamBody(up.body, up.headers, config.limits, leases.get(reply));
    const status = up.statusCode;
    const headers: Headers = {};
    if (ex.breakGlass) headers['x-break-glass-session'] = ex.breakGlass.session;
    if (ex.grant) headers['x-access-grant'] = ex.grant.id;

    if (status === 404 || status === 410) throw new GatewayError('not-found', `upstream ${status}`);
    if (status >= 500) throw new GatewayError('upstream-error', `upstream ${status}`);
    if (status < 200 || (status >= 300 && status < 400)) throw new GatewayError('upstream-bad-response', `upstream ${status}`);

    const writeAnswer = (req.interaction === 'create' || req.interaction === 'update' || req.interaction === 'patch') && status < 300;
    // A conditional create (criteria in its params) that matched: 200 with the match, which the
    // caller may only learn about if it may see it (src/proxy/stored-guard.ts).
    const matched = req.interaction === 'create' && req.params.length > 0 && status === 200;
    if (body.kind === 'empty') {
      // A match without a body cannot be judged (the upstream was asked for the representation).
      if (matched) throw new GatewayError('upstream-bad-response', 'conditional create matched without a body');
      // 204 / 200 without body (delete, an upstream answering a write minimally): nothing to filter.
      if (writeAnswer) writeHeaders(headers, up, rt, plan, req, compartment);
      const shaped = writeAnswer ? preferred(req, reply, undefined) : undefined;
      return finish(ex, reply, { status, body: shaped?.body, headers, decision: status < 400 ? 'allow' : 'deny', rule: `${ex.rule ?? ''}${shaped?.rule ?? ''}` });
    }
    const value = body.value as { resourceType?: unknown };
    // Released unchanged (the filter returns its input when it changed nothing, and never mutates
    // it) and provably read the same by any parser: the upstream's bytes go out as they came.
    const asIs = (released: unknown) => (released === value && readsAsParsed(body.raw, value) ? body.raw : undefined);
    if (status >= 400 && value.resourceType !== 'OperationOutcome') throw new GatewayError('upstream-error', `upstream ${status} without OperationOutcome`);
    if (status >= 400) {
      // The upstream's reason for a 4xx (a failed patch, a stale If-Match, a conflict) reaches the
      // client as codes only; its free text only when upstream.errorText allows (it may echo PHI).
      const oo = scrubOperationOutcome(value as Obj, config.upstream.errorText === true);
      return finish(ex, reply, { status, body: oo, headers, decision: 'deny', rule: `${ex.rule ?? ''}: upstream ${status}` });
    }
    // /metadata is the gateway's own (answerOwn); the upstream's statement is never released.
    if (req.interaction === 'capabilities') throw new GatewayError('internal', 'metadata reached the upstream path');

    const ctx = responseContext(rt, plan, eligible, compartment, relatedSet(ex), consentJudges.get(ex));
    // The consents of every patient the answer names, held before anything of it is judged.
    await ctx.consent?.load(patientsIn(value));
    let result: FilterResult;
    try {
      const batch = await pageBatchSearches(ex, reply, rt, req, call, value as Obj, ctx, eligible, batchStarts);
      result = deps.steps.filterResponse(batch.value, ctx);
      if (batch.pages.size > 0) result = withBatchPages(result, batch.pages);
    } catch (e) {
      // Whatever went wrong, the unfiltered body stays here.
      throw isGatewayError(e) ? e : new GatewayError('filter-failed', 'response filter threw', { cause: e });
    }
    ex.stats = result.stats;
    const write = req.interaction === 'create' || req.interaction === 'update' || req.interaction === 'patch' || req.interaction === 'delete';
    // A withheld match of a conditional create: nothing was written, and it falls to the branch
    // below (answered as a read of it would be; see src/proxy/stored-guard.ts for why).
    if (result.kind === 'withheld' && write && status < 300 && !matched) {
      // The upstream executed the write; only its answer is not the caller's to see. The client is
      // told the write happened (status, no body) and the record says so: never audited as denied.
      return finish(ex, reply, { status, body: undefined, headers, decision: 'allow', rule: `${ex.rule ?? ''}: executed; answer withheld (${result.reason})` });
    }
    if (result.kind === 'withheld') {
      const code: ErrorCode = withheldCode(result.reason, eligible ? 'announce' : 'hide');
      const oo = operationOutcome(code);
      return finish(ex, reply, { status: ERRORS[code].status, body: oo, decision: 'deny', rule: `${ex.rule ?? ''}: withheld (${result.reason})` });
    }
    writeHeaders(headers, up, rt, plan, req, compartment, writeAnswer);
    const shaped = writeAnswer ? preferred(req, reply, ex.stats) : undefined;
    if (shaped !== undefined) {
      ex.stats = shaped.stats;
      return finish(ex, reply, { status, body: shaped.body, headers, decision: 'allow', rule: `${ex.rule ?? ''}${shaped.rule}` });
    }
    return finish(ex, reply, { status, body: result.body, asIs: asIs(result.body), headers, decision: status < 400 ? 'allow' : 'deny', rule: ex.rule ?? '' });
  }

  /**
   * Location and Content-Location (rewritten to the gateway; pseudonyms for a de-identified caller,
   * who sees neither versions nor modification times) and Last-Modified of a 2xx answer; and, for
   * a write's answer only, the upstream's `W/"version"` when the caller is shown versions. Reads
   * and searches get the gateway's own ETag over the bytes it releases (release(), src/proxy/etag.ts).
   */
  function writeHeaders(headers: Headers, up: UpstreamAnswer, rt: PolicyRuntime, plan: AccessPlan, req: ClassifiedRequest, compartment: string | undefined, versioned = true): void {
    if (up.statusCode >= 300) return;
    const deid = deidentifyOf(plan) !== undefined;
    for (const name of ['location', 'content-location'] as const) {
      const v = headerValue(up.headers[name]);
      let rewritten = v === undefined ? undefined : rewriteUrl(v);
      if (deid && rewritten !== undefined) rewritten = pseudonymLocation(rewritten, rt.redact.pseudonymKey);
      if (rewritten !== undefined) headers[name] = rewritten;
    }
    const typePlan = req.resourceType === undefined ? undefined : plan.types.get(req.resourceType);
    const etag = upstreamVersionTag(headerValue(up.headers.etag));
    if (versioned && etag && versionShown(typePlan, responseContext(rt, plan, false, compartment))) headers.etag = etag;
    const lastModified = headerValue(up.headers['last-modified']);
    if (lastModified && !deid) headers['last-modified'] = lastModified;
  }

  /**
   * What a create, update or patch releases under the client's `Prefer: return=` (src/proxy/prefer.ts):
   * undefined for the representation (the filtered resource, the default), else the body (none, or
   * the gateway's OperationOutcome), the audit statistics of what that releases, and a rule suffix.
   */
  function preferred(req: ClassifiedRequest, reply: FastifyReply, stats: FilterResult['stats'] | undefined) {
    const pref = returnPreference(reply.request.headers.prefer);
    if (pref !== 'minimal' && pref !== 'OperationOutcome') return undefined;
    return {
      body: pref === 'minimal' ? undefined : writeOutcome(req.interaction),
      stats: stats && headersOnlyStats(stats),
      rule: `: return=${pref}`,
    };
  }

  return { handle, reject, exchange, fail, finish };
}

type Obj = Record<string, unknown>;

interface RelationshipState {
  readonly requirement: RelationshipRequirement;
  readonly caller: string | undefined;
  /** Related patient -> the relationship that counts (first found among the requirement's sources). */
  readonly related: ReadonlyMap<string, { readonly source: string; readonly resource: string }>;
  readonly set: ReadonlySet<string>;
  named: readonly string[];
  unrelated: readonly string[];
  narrowed?: number | undefined;
}

const EVIDENCE_MAX = 50;

const NOTHING_RELATED: ReadonlyMap<string, { source: string; resource: string }> = new Map();
const NOTHING_RELATED_SET: ReadonlySet<string> = new Set();

type Counted = { related: ReadonlyMap<string, { source: string; resource: string }>; set: ReadonlySet<string> };
/**
 * Per looked-up set (the resolver hands out the same object while it is cached) and list of
 * sources (a compiled requirement's own frozen array, so its identity is the key).
 */
const countedCache = new WeakMap<Looked, WeakMap<readonly string[], Counted>>();

/** The patients related through `sources` (the first relationship found among them for each). */
function countedRelationships(found: Looked, sources: readonly string[]): Counted {
  let bySources = countedCache.get(found);
  const hit = bySources?.get(sources);
  if (hit !== undefined) return hit;
  const counted = new Set(sources);
  const related = new Map<string, { source: string; resource: string }>();
  for (const [patient, rels] of found.patients) {
    const r = rels.find((x) => counted.has(x.source));
    if (r !== undefined) related.set(patient, { source: r.source, resource: r.resource });
  }
  const out = { related, set: new Set(related.keys()) };
  if (bySources === undefined) {
    bySources = new WeakMap();
    countedCache.set(found, bySources);
  }
  bySources.set(sources, out);
  return out;
}

/** The audit record's relationship evidence: every patient named or released, related or not. */
function relationshipEvidence(state: RelationshipState, released: ReadonlySet<string> | undefined, withheld: ReadonlySet<string> | undefined): RelationshipEvidence {
  // On every request of a data set with a requirement: small arrays, no spreads (a profile of the
  // Patient read found the first version, with Sets and spreads, costing several microseconds).
  const related: Array<{ patient: string; resource: string; source: string }> = [];
  const unrelated: string[] = [];
  const unrelatedOnce = (p: string): void => {
    if (unrelated.length < EVIDENCE_MAX && !unrelated.includes(p)) unrelated.push(p);
  };
  for (const p of state.unrelated) unrelatedOnce(p);
  if (withheld !== undefined) for (const p of withheld) unrelatedOnce(p);
  const note = (p: string): void => {
    const r = state.related.get(p);
    if (r === undefined) unrelatedOnce(p);
    else if (related.length < EVIDENCE_MAX && !related.some((x) => x.patient === p)) related.push({ patient: p, resource: r.resource, source: r.source });
  };
  for (const p of state.named) note(p);
  if (released !== undefined) for (const p of released) note(p);
  const out: { -readonly [K in keyof RelationshipEvidence]: RelationshipEvidence[K] } = {} as RelationshipEvidence;
  if (state.caller !== undefined) out.caller = state.caller;
  if (state.narrowed !== undefined) out.narrowed = state.narrowed;
  out.related = related;
  out.required = state.requirement.required;
  out.rule = state.requirement.rule;
  out.unrelated = unrelated;
  return out;
}

/** What an upstream answers a search matching nothing; the gateway builds its page from it. */
const EMPTY_SEARCHSET: UpstreamAnswer = Object.freeze({
  statusCode: 200,
  headers: Object.freeze({ 'content-type': 'application/fhir+json' }),
  body: Buffer.from('{"resourceType":"Bundle","type":"searchset","total":0}'),
});

/** `f`: bytes of the first upstream request, once `at` is no longer it (a continuation). */
type PagedStart = PageStart & { readonly q: string; readonly f?: number };

function isPlainObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A batch or transaction whose search entries ask the upstream for one more than their page (as a
 * top-level search does), and where each of their pages starts. `client` is the Bundle as the client
 * sent it: each page's links repeat its entry (the decided one may hold real ids behind pseudonyms).
 */
function pagedEntries(
  req: ClassifiedRequest,
  client: ClassifiedRequest,
  basePath: string,
  paging: { defaultCount: number; maxCount: number; minUpstreamCount: number },
  plan: AccessPlan | undefined,
): { req: ClassifiedRequest; starts: Map<number, PagedStart> } {
  const starts = new Map<number, PagedStart>();
  const entries = req.entries ?? [];
  const asSent = client.entries ?? [];
  if (asSent.length !== entries.length) throw new GatewayError('internal', 'decided batch entries differ from the client entries');
  const body = req.body as { entry?: Obj[] } | undefined;
  if (!Array.isArray(body?.entry) || body.entry.length !== entries.length) return { req, starts };
  const rebuilt = body.entry.map((e, k) => {
    const c = entries[k];
    if (!isPageable(c)) return e;
    const count = pageSizeWith(c.params, paging.defaultCount, paging.maxCount);
    const sent = withCount(c, upstreamCountWith(count, paging.minUpstreamCount), plan);
    const url = canonicalUrl(sent).slice(1);
    starts.set(k, { at: `${basePath}/${url}`, index: 0, released: 0, count, q: canonicalUrl(asSent[k]!) });
    return { ...e, request: { ...(e.request as Obj), url } };
  });
  if (starts.size === 0) return { req, starts };
  return { req: { ...req, body: { ...body, entry: rebuilt } }, starts };
}

/** The filtered batch response with each assembled search page in its entry, stats merged. */
/** Per policy and purpose: the purpose and its ancestors (what consent provisions' purposes cover). */
const purposeLines = new WeakMap<CompiledPolicy, Map<string, ReadonlySet<string>>>();

function purposeLine(policy: CompiledPolicy, purpose: string): ReadonlySet<string> {
  let byPurpose = purposeLines.get(policy);
  if (byPurpose === undefined) {
    byPurpose = new Map();
    purposeLines.set(policy, byPurpose);
  }
  let line = byPurpose.get(purpose);
  if (line === undefined) {
    const s = new Set<string>();
    for (let c: string | undefined = purpose; c !== undefined && !s.has(c); c = policy.purposes.get(c)?.parent) s.add(c);
    line = s;
    // Declared purposes only (parsePurpose refuses others), so the map stays as small as the policy.
    byPurpose.set(purpose, line);
  }
  return line;
}

/** Where the policy enforces consent and no resolver runs: every lookup fails closed. */
const UNAVAILABLE_CONSENTS: ConsentResolver = {
  lookup() {
    throw new GatewayError('consent-unavailable', 'no consent resolver');
  },
  stats() {
    return { patients: 0, hits: 0, misses: 0, refreshes: 0, failures: 0, requests: 0, refused: 0, unevaluablePatients: 0, unevaluable: [] };
  },
  close: async () => {},
};

function withBatchPages(result: FilterResult, pages: ReadonlyMap<number, { body: Obj; filter: Filter }>): FilterResult {
  if (result.kind !== 'ok') return result;
  const out = result.body as Obj;
  const entries = out.entry;
  if (!Array.isArray(entries)) throw new GatewayError('filter-failed', 'batch response lost its entries');
  const copy = [...entries] as Obj[];
  const stats = result.stats;
  for (const [k, p] of pages) {
    const e = copy[k];
    // Entries keep their positions in batch responses; anything else and the pages cannot be placed.
    if (!isPlainObj(e) || !isPlainObj(e.resource) || e.resource.resourceType !== 'Bundle') throw new GatewayError('filter-failed', 'batch entry moved');
    copy[k] = { ...e, resource: p.body };
    const s = p.filter.stats;
    stats.elementsRemoved += s.elementsRemoved;
    stats.resourcesWithheld += s.resourcesWithheld;
    stats.resources.push(...s.resources);
    for (const x of s.patients) stats.patients.add(x);
    if (s.unrelated !== undefined) {
      stats.unrelated ??= new Set();
      for (const x of s.unrelated) stats.unrelated.add(x);
    }
    mergeConsentStats(stats, s.consent);
    if (stats.elements && s.elements) {
      for (const [t, names] of s.elements) {
        const into = stats.elements.get(t);
        if (into === undefined) stats.elements.set(t, new Set(names));
        else for (const n of names) into.add(n);
      }
    }
  }
  return { ...result, body: { ...out, entry: copy } };
}

/** Searches, history and `$everything` answer in pages the gateway assembles (src/proxy/paging.ts). */
function isPageable(req: ClassifiedRequest): boolean {
  const i = req.interaction;
  const pages =
    i === 'search-type' ||
    i === 'search-compartment' ||
    i === 'history-instance' ||
    i === 'history-type' ||
    (i === 'operation' && req.operation === '$everything' && req.body === undefined);
  if (!pages) return false;
  // A bare count (allowed only where nothing can be withheld) has no entries to page.
  for (const [name, value] of req.params) {
    if (name === '_summary' && value === 'count') return false;
    if (name === '_count' && /^0+$/.test(value.trim())) return false;
  }
  return true;
}

/** The requested page size, within the configured bounds. */
function pageSizeWith(params: ClassifiedRequest['params'], defaultCount: number, maxCount: number): number {
  const counts = params.filter(([n]) => n === '_count');
  if (counts.length === 0) return defaultCount;
  if (counts.length > 1) throw new GatewayError('bad-request', 'repeated _count');
  const v = counts[0][1].trim();
  if (!/^\d{1,9}$/.test(v)) throw new GatewayError('bad-request', 'malformed _count');
  return Math.min(Math.max(Number(v), 1), maxCount);
}

/**
 * Upstream page size: one more than the client's page (one upstream page then tells whether a next
 * one exists), and never fewer than paging.minUpstreamCount, so the bound of maxUpstreamPages pages
 * (the one place where a run of withheld matches can shape a page) lies hundreds of matches away
 * even for `_count=1`.
 */
/** Whether the caller is told when results were withheld: it may break the glass and has not. */
function announces(ex: Exchange, rt: PolicyRuntime): boolean {
  return !ex.breakGlass && (ex.principal?.roles.some((r) => rt.policy.roles.get(r)?.breakGlass === true) ?? false);
}

function upstreamCountWith(count: number, min: number): number {
  return Math.max(count + 1, min);
}

/**
 * The request with its `_count` replaced (the first page asks the upstream for one more than the
 * client) and, for a search under `plan` (a caller not told of withholding), `_security:not` for
 * each label the plan withholds from its type: the
 * upstream then never matches a withheld resource, so neither the time it takes nor the pages it
 * reads depend on them (a red-team session timed searches, amplified by includes, to learn which
 * withheld codes exist and whose they are). The filter still withholds whatever comes back.
 */
function withCount(req: ClassifiedRequest, count: number, plan: AccessPlan | undefined): ClassifiedRequest {
  const params: Array<readonly [string, string]> = [...req.params.filter(([n]) => n !== '_count'), ['_count', String(count)] as const];
  const searched = req.interaction === 'search-type' || req.interaction === 'search-compartment';
  const exclusions = plan !== undefined && searched && req.resourceType !== undefined ? (plan.types.get(req.resourceType)?.withhold.upstream ?? []) : [];
  for (const value of exclusions) params.push(['_security:not', value]);
  return { ...req, params, upstreamQuery: encodeParams(params) };
}

/** The client's request in the canonical GET form a continuation re-classifies. */
function canonicalUrl(req: ClassifiedRequest): string {
  return req.upstreamQuery === '' ? req.upstreamPath : `${req.upstreamPath}?${req.upstreamQuery}`;
}

/** The same upstream call, aimed at another page (path + query on the upstream origin). */
function atUpstream(call: UpstreamCall, at: string): UpstreamCall {
  const q = at.indexOf('?');
  const { 'content-type': _, ...headers } = call.headers;
  return { ...call, method: 'GET', body: undefined, headers, path: q < 0 ? at : at.slice(0, q), query: q < 0 ? '' : at.slice(q + 1) };
}

function bindingOf(p: Principal, purpose: string, policyVersion: string, grant: string | undefined): PageBinding {
  return { iss: p.iss, sub: p.sub, roles: p.roles, purpose, patient: p.patient, policyVersion, fhirUser: p.fhirUser, grant };
}

/** What an access grant id looks like (the service issues UUIDs). */
const GRANT_ID = /^[A-Za-z0-9-]{1,64}$/;

/** The X-Access-Grant a continuation is opened with (repeated headers: a value no token was bound to). */
function grantKey(header: string | string[] | undefined): string | undefined {
  return header === undefined ? undefined : Array.isArray(header) ? header.join(',') : header;
}

/**
 * The patient a request's answer is limited to: the patient an access grant or break-glass session
 * was used for, else the token's patient context.
 */
function compartmentOf(ex: Exchange): string | undefined {
  return ex.grant?.patient ?? ex.breakGlass?.patient ?? ex.principal?.patient;
}

/**
 * The policy as decide() sees it for a request using an access grant: each of the caller's roles
 * that may request the data set has its plan for the grant's purpose widened (src/access/scope.ts);
 * everything else is the policy in force.
 */
function elevatedPolicy(policy: CompiledPolicy, principal: Principal, purpose: string, ds: RequestableDataSet, grant: GrantUse): CompiledPolicy {
  const roles = new Map(policy.roles);
  for (const name of principal.roles) {
    const role = policy.roles.get(name);
    const base = role?.plans.get(purpose);
    if (role === undefined || base === undefined || !ds.requesters.has(name) || !ds.purposes.has(purpose)) continue;
    const plans = new Map(role.plans);
    plans.set(purpose, elevatePlan(base, ds, grant.scope, grant.id));
    roles.set(name, { ...role, plans });
  }
  return { ...policy, roles };
}

/**
 * The continuation token when the query is a gateway paging link, else undefined: `_cursor`, and
 * `_count` as the gateway's own link repeats it (clients such as MedplumClient rebuild the next
 * request from the link's query and add `_count` when it is missing). Anything else next to a
 * token is refused, and so is a `_count` other than the page size sealed in it (checked on open).
 */
function cursorOf(url: string): { token: string; count: string | undefined } | undefined {
  const q = url.indexOf('?');
  if (q < 0 || !url.includes('_cursor', q)) return undefined;
  const params = parseForm(splitTarget(url, 'required').query, 'query');
  const cursors = params.filter(([n]) => n === '_cursor');
  if (cursors.length === 0) return undefined;
  const counts = params.filter(([n]) => n === '_count');
  if (cursors.length !== 1 || counts.length > 1 || params.length !== 1 + counts.length) {
    throw new GatewayError('paging-token-invalid', '_cursor with other parameters');
  }
  return { token: cursors[0][1], count: counts[0]?.[1] };
}

type OwnTarget = 'preflight' | 'metadata' | 'smart-configuration';

/**
 * Which of the gateway's own answers a request asks for: a CORS preflight (OPTIONS with Origin and
 * Access-Control-Request-Method, on any path), or a discovery document, its path read exactly as
 * classify() reads it (so `/%6Detadata` is /metadata too, and never reaches the upstream).
 */
function ownTarget(method: string, headers: FastifyRequest['headers'], url: string): OwnTarget | undefined {
  if (method === 'OPTIONS' && headers.origin !== undefined && headers['access-control-request-method'] !== undefined) return 'preflight';
  const q = url.indexOf('?');
  const raw = q < 0 ? url : url.slice(0, q);
  // Cheap test first: every spelling of these paths has the name or an escape in it.
  if (!raw.includes('metadata') && !raw.includes('smart-configuration') && !raw.includes('%')) return undefined;
  let segs: string[];
  try {
    segs = pathSegments(splitTarget(url, 'required').path);
  } catch {
    return undefined; // classify() refuses it the same way, after authentication
  }
  if (segs.length === 1 && segs[0] === 'metadata') return 'metadata';
  if (segs.length === 2 && segs[0] === '.well-known' && segs[1] === 'smart-configuration') return 'smart-configuration';
  return undefined;
}

/**
 * The purpose a request declares: its `X-Purpose-Of-Use` header, or, without one, the token's own
 * purpose when the token names exactly one (clients such as fhirclient's pager cannot add a header
 * to every request). Zero or several: nothing is declared, and the request is refused as before.
 */
export function declaredPurpose(header: string | string[] | undefined, principal: Principal): string | string[] | undefined {
  if (header !== undefined) return header;
  const own = principal.tokenPurposes;
  return own?.length === 1 ? own[0] : undefined;
}
