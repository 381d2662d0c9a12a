/**
 * The gateway's own discovery documents: its CapabilityStatement (`/fhir/metadata`) and its SMART
 * configuration (`/fhir/.well-known/smart-configuration`). Both are answered by the gateway, never
 * by the upstream: a client learns what the gateway enforces (its software, its public base, the
 * types, interactions and search parameters the loaded policy grants), not what the server behind
 * it can do, nor where that server lives or which product and version it runs.
 *
 * The statement is a pure function of the compiled policy and, when a token came with the request,
 * of the caller: narrowed to the roles it holds (or the one it names in X-Role), the purposes it may
 * declare (or the one it declares), its patient context and its SMART scopes, with the same rules
 * decide() applies. The SMART configuration comes from the `smart` block of gateway.yaml, field by
 * field, the rest from the issuer's OpenID discovery document, fetched and cached here.
 */
import { readFileSync } from 'node:fs';
import type { CapabilityStatement, CapabilityStatementRestResource } from 'fhir/r4.js';
import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import type { Principal, SmartScope } from '../auth/principal.js';
import { parseHttpUrl } from '../config/env.js';
import type { GatewayConfig, SmartConfig } from '../config/types.js';
import { type ErrorCode, GatewayError } from '../errors.js';
import { searchParam } from '../fhir/tables.js';
import { isCompartmentType } from '../policy/compartment.js';
import { BREAK_GLASS_PURPOSE } from '../policy/compile.js';
import { idHidden } from '../policy/decide.js';
import type { PolicyInteraction } from '../policy/model.js';
import type { AccessPlan, CompiledPolicy } from '../policy/plan.js';
import { isCoveredBy } from '../policy/purpose.js';

export const SOFTWARE_NAME = 'phi-gateway';

/** The gateway's own version, from its package.json (next to src/ and dist/ alike). */
export const SOFTWARE_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();

const OAUTH_URIS = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';
const SECURITY_SERVICE = 'http://terminology.hl7.org/CodeSystem/restful-security-service';

/** Who asks for the statement: absent for a request without a token. */
export interface StatementCaller {
  readonly principal: Principal;
  /** The purpose the caller declared (X-Purpose-Of-Use), if any. */
  readonly purpose?: string | undefined;
  /** X-Role, if any. */
  readonly role?: string | undefined;
}

export type PlanSelection = { readonly ok: true; readonly plans: readonly AccessPlan[] } | { readonly ok: false; readonly code: ErrorCode };

/**
 * The access plans a caller may act under. Without a caller: every plan of the policy, break-glass
 * included (what the gateway can enforce at all). With one: for each role it holds (or the one in
 * X-Role), the plan of each purpose it may declare (the declared one, else every purpose its token
 * allows), break-glass for an eligible role when BTG is among them; a patient-compartment plan only
 * with a patient context. Refusals are those decide() gives for the same header values.
 */
export function selectPlans(policy: CompiledPolicy, caller: StatementCaller | undefined): PlanSelection {
  if (caller === undefined) {
    const plans: AccessPlan[] = [];
    for (const role of policy.roles.values()) plans.push(...role.plans.values());
    if (policy.breakGlass !== undefined) plans.push(policy.breakGlass.plan);
    return { ok: true, plans };
  }
  const { principal, purpose, role } = caller;
  if (role !== undefined && !principal.roles.includes(role)) return { ok: false, code: 'role-not-held' };
  const tokenAllows = (p: string) => principal.tokenPurposes === undefined || principal.tokenPurposes.some((tp) => isCoveredBy(p, tp, policy.purposes));
  let purposes: string[];
  if (purpose !== undefined) {
    if (!policy.purposes.has(purpose)) return { ok: false, code: 'purpose-unknown' };
    if (!tokenAllows(purpose)) return { ok: false, code: 'purpose-not-in-token' };
    purposes = [purpose];
  } else {
    purposes = [...policy.purposes.keys()].filter(tokenAllows);
  }
  const held = [...new Set(principal.roles)].filter((r) => role === undefined || r === role).map((r) => policy.roles.get(r));
  const plans: AccessPlan[] = [];
  for (const r of held) {
    if (r === undefined) continue;
    for (const p of purposes) {
      const plan = p === BREAK_GLASS_PURPOSE ? (r.breakGlass ? policy.breakGlass?.plan : undefined) : r.plans.get(p);
      if (plan === undefined) continue;
      // decide() refuses a compartment role everything without a patient claim.
      if (plan.compartment === 'patient' && principal.patient === undefined) continue;
      plans.push(plan);
    }
  }
  if (purpose !== undefined && plans.length === 0) {
    return { ok: false, code: purpose === BREAK_GLASS_PURPOSE ? 'break-glass-not-eligible' : 'purpose-not-permitted' };
  }
  return { ok: true, plans };
}

type Letter = 'c' | 'r' | 'u' | 'd' | 's';

/** CapabilityStatement interaction codes each policy interaction allows, with the SMART permission each needs (as decide.ts). */
const TYPE_INTERACTIONS: ReadonlyArray<{ readonly code: NonNullable<CapabilityStatementRestResource['interaction']>[number]['code']; readonly needs: PolicyInteraction; readonly letter: Letter }> = [
  { code: 'read', needs: 'read', letter: 'r' },
  { code: 'vread', needs: 'read', letter: 'r' },
  { code: 'update', needs: 'update', letter: 'u' },
  { code: 'patch', needs: 'patch', letter: 'u' },
  { code: 'delete', needs: 'delete', letter: 'd' },
  { code: 'history-instance', needs: 'history', letter: 'r' },
  { code: 'history-type', needs: 'history', letter: 's' },
  { code: 'create', needs: 'create', letter: 'c' },
  { code: 'search-type', needs: 'search', letter: 's' },
];

/** Parameters that shape a search rather than search on a value: not search parameters of a statement. */
const SHAPING = new Set(['_count', '_sort', '_include', '_revinclude', '_elements', '_summary', '_total']);

/** Whether the caller's scopes (if its token has any) give permission `letter` on `type` (as decide.ts). */
function scopeAllows(p: Principal | undefined, type: string, letter: Letter, wildcardOnly = false): boolean {
  if (p?.scopes === undefined) return true;
  const usable = p.scopes.filter((s: SmartScope) => s.context !== 'patient' || p.patient !== undefined);
  return usable.some((s) => {
    if (wildcardOnly) return s.resourceType === '*' && s.params.length === 0 && s.permissions.has('r') && s.permissions.has('s');
    if (s.resourceType !== '*' && s.resourceType !== type) return false;
    if (!s.permissions.has(letter)) return false;
    // A scope limited by parameters covers only searches carrying them.
    return s.params.length === 0 || letter === 's';
  });
}

interface TypeGrant {
  readonly interactions: Set<string>;
  readonly operations: Set<string>;
  readonly params: Set<string>;
}

function grantsOf(plans: readonly AccessPlan[], p: Principal | undefined): Map<string, TypeGrant> {
  const out = new Map<string, TypeGrant>();
  for (const plan of plans) {
    for (const [type, t] of plan.types) {
      let g = out.get(type);
      if (g === undefined) {
        g = { interactions: new Set(), operations: new Set(), params: new Set() };
        out.set(type, g);
      }
      for (const i of TYPE_INTERACTIONS) {
        if (!t.interactions.has(i.needs) || !scopeAllows(p, type, i.letter)) continue;
        // Under a patient context decide() refuses type history of compartment types.
        if (i.code === 'history-type' && p?.patient !== undefined && isCompartmentType(type)) continue;
        // A de-identified caller sees no versions: vread and history are refused (src/policy/deid-request.ts).
        if (t.deidentify !== undefined && (i.code === 'vread' || i.code.startsWith('history'))) continue;
        g.interactions.add(i.code);
      }
      for (const op of t.operations) {
        if (scopeAllows(p, type, 'r', op === '$everything')) g.operations.add(op);
      }
      if (t.interactions.has('search') && scopeAllows(p, type, 's')) {
        // As decide.ts: `_id` is refused where the id is removed or pseudonymized, except for a
        // de-identified plan (it searches `_id` by pseudonym).
        const hideId = t.deidentify === undefined && idHidden(t);
        for (const name of t.searchParams) {
          if (SHAPING.has(name) || name.includes('.') || name.includes(':') || name.startsWith('_has')) continue;
          if (name === '_id' && hideId) continue;
          g.params.add(name);
        }
      }
    }
  }
  for (const [type, g] of out) if (g.interactions.size === 0 && g.operations.size === 0) out.delete(type);
  return out;
}

export interface OAuthUris {
  readonly authorize: string;
  readonly token: string;
  readonly register?: string | undefined;
  readonly manage?: string | undefined;
  readonly introspect?: string | undefined;
  readonly revoke?: string | undefined;
}

export interface StatementInput {
  readonly policy: CompiledPolicy;
  readonly publicBaseUrl: string;
  /** When the statement was last changed (the gateway's start). */
  readonly date: string;
  readonly cors: boolean;
  /** The SMART endpoints, when known (the oauth-uris extension is left out otherwise). */
  readonly oauth?: OAuthUris | undefined;
  readonly plans: readonly AccessPlan[];
  readonly principal?: Principal | undefined;
}

/** The gateway's CapabilityStatement for a plan selection (see selectPlans). */
export function capabilityStatement(input: StatementInput): CapabilityStatement {
  const grants = grantsOf(input.plans, input.principal);
  const resource: CapabilityStatementRestResource[] = [];
  let patch = false;
  for (const type of [...grants.keys()].sort()) {
    const g = grants.get(type)!;
    const r: CapabilityStatementRestResource = { type: type as CapabilityStatementRestResource['type'] };
    const interaction = TYPE_INTERACTIONS.filter((i) => g.interactions.has(i.code)).map((i) => ({ code: i.code }));
    if (interaction.length > 0) r.interaction = interaction;
    if (g.interactions.has('patch')) patch = true;
    if (g.interactions.has('history-instance')) r.readHistory = true;
    if (g.interactions.has('update')) r.updateCreate = false;
    const params = [...g.params]
      .sort()
      .map((name) => ({ name, type: searchParam(type, name)?.type }))
      .filter((s): s is { name: string; type: NonNullable<NonNullable<CapabilityStatementRestResource['searchParam']>[number]['type']> } => s.type !== undefined);
    if (params.length > 0) r.searchParam = params;
    if (g.operations.size > 0) {
      r.operation = [...g.operations].sort().map((op) => ({ name: op.slice(1), definition: `http://hl7.org/fhir/OperationDefinition/${type}-${op.slice(1)}` }));
    }
    resource.push(r);
  }
  const security: NonNullable<CapabilityStatement['rest']>[number]['security'] = {
    cors: input.cors,
    service: [{ coding: [{ system: SECURITY_SERVICE, code: 'SMART-on-FHIR', display: 'SMART-on-FHIR' }], text: 'OAuth2 bearer tokens (SMART App Launch)' }],
    description: 'Bearer access tokens from the identity provider named here; every data request declares its purpose of use (X-Purpose-Of-Use).',
  };
  if (input.oauth !== undefined) {
    const o = input.oauth;
    const ext = (['authorize', 'token', 'register', 'manage', 'introspect', 'revoke'] as const)
      .filter((k) => o[k] !== undefined)
      .map((k) => ({ url: k, valueUri: o[k] as string }));
    security.extension = [{ url: OAUTH_URIS, extension: ext }];
  }
  const rest: NonNullable<CapabilityStatement['rest']>[number] = { mode: 'server', security, resource };
  // Batch and transaction Bundles are judged entry by entry: possible wherever any type is granted.
  if (resource.length > 0) rest.interaction = [{ code: 'transaction' }, { code: 'batch' }];
  const cs: CapabilityStatement = {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: input.date,
    publisher: SOFTWARE_NAME,
    kind: 'instance',
    software: { name: SOFTWARE_NAME, version: SOFTWARE_VERSION },
    implementation: { description: 'phi-gateway: HIPAA minimum-necessary FHIR gateway', url: input.publicBaseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [rest],
  };
  if (patch) cs.patchFormat = ['application/json-patch+json', 'application/fhir+json'];
  return cs;
}

/** The SMART configuration document (SMART App Launch 2.x, "Conformance"). */
export interface SmartConfiguration {
  readonly issuer: string;
  readonly jwks_uri?: string;
  readonly authorization_endpoint: string;
  readonly token_endpoint: string;
  readonly token_endpoint_auth_methods_supported?: readonly string[];
  readonly grant_types_supported: readonly string[];
  readonly registration_endpoint?: string;
  readonly management_endpoint?: string;
  readonly introspection_endpoint?: string;
  readonly revocation_endpoint?: string;
  readonly scopes_supported?: readonly string[];
  readonly response_types_supported: readonly string[];
  readonly code_challenge_methods_supported: readonly string[];
  readonly capabilities: readonly string[];
}

/**
 * What the gateway itself enforces: standalone launch with a patient context (the `patient` claim
 * becomes a compartment), patient and user scopes in v1 and v2 syntax; public and confidential
 * clients alike (client authentication is the identity provider's business).
 */
export const DEFAULT_CAPABILITIES: readonly string[] = Object.freeze([
  'launch-standalone',
  'client-public',
  'client-confidential-symmetric',
  'context-standalone-patient',
  'permission-patient',
  'permission-user',
  'permission-v1',
  'permission-v2',
]);

/** The OpenID provider metadata fields used here (OpenID Connect Discovery 1.0 / RFC 8414). */
export interface OidcMetadata {
  readonly jwks_uri?: string;
  readonly authorization_endpoint?: string;
  readonly token_endpoint?: string;
  readonly registration_endpoint?: string;
  readonly introspection_endpoint?: string;
  readonly revocation_endpoint?: string;
  readonly scopes_supported?: readonly string[];
  readonly grant_types_supported?: readonly string[];
  readonly token_endpoint_auth_methods_supported?: readonly string[];
}

/** Endpoints must be http(s) URLs without credentials, https unless on loopback; anything else is dropped. */
function endpoint(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const u = parseHttpUrl(v, { httpsUnlessLoopback: true });
  return u.ok ? v : undefined;
}

function strings(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? [...(v as string[])] : undefined;
}

/** Only the fields used, each checked: a hostile or broken document contributes nothing it should not. */
export function readOidcMetadata(doc: unknown): OidcMetadata {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return {};
  const d = doc as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of ['jwks_uri', 'authorization_endpoint', 'token_endpoint', 'registration_endpoint', 'introspection_endpoint', 'revocation_endpoint'] as const) {
    const e = endpoint(d[k]);
    if (e !== undefined) out[k] = e;
  }
  for (const k of ['scopes_supported', 'grant_types_supported', 'token_endpoint_auth_methods_supported'] as const) {
    const s = strings(d[k]);
    if (s !== undefined) out[k] = s;
  }
  return out as OidcMetadata;
}

/**
 * The SMART configuration from the `smart` block (each field it sets wins) and the issuer's OpenID
 * metadata; undefined when neither gives both an authorization and a token endpoint.
 */
export function smartConfiguration(input: {
  readonly issuer: string;
  readonly jwksUri: string | undefined;
  readonly smart: SmartConfig | undefined;
  readonly oidc: OidcMetadata | undefined;
}): SmartConfiguration | undefined {
  const s = input.smart ?? {};
  const o = input.oidc ?? {};
  const authorization = s.authorizationEndpoint ?? o.authorization_endpoint;
  const token = s.tokenEndpoint ?? o.token_endpoint;
  if (authorization === undefined || token === undefined) return undefined;
  // SMART names two grants: authorization_code (app launch) and client_credentials (backend services).
  const grants = (o.grant_types_supported ?? ['authorization_code']).filter((g) => g === 'authorization_code' || g === 'client_credentials');
  const jwks = o.jwks_uri ?? input.jwksUri;
  const registration = s.registrationEndpoint ?? o.registration_endpoint;
  const introspection = s.introspectionEndpoint ?? o.introspection_endpoint;
  const revocation = s.revocationEndpoint ?? o.revocation_endpoint;
  const scopes = s.scopesSupported ?? o.scopes_supported;
  return {
    issuer: input.issuer,
    ...(jwks !== undefined ? { jwks_uri: jwks } : {}),
    authorization_endpoint: authorization,
    token_endpoint: token,
    ...(o.token_endpoint_auth_methods_supported !== undefined ? { token_endpoint_auth_methods_supported: o.token_endpoint_auth_methods_supported } : {}),
    grant_types_supported: grants.length > 0 ? grants : ['authorization_code'],
    ...(registration !== undefined ? { registration_endpoint: registration } : {}),
    ...(s.managementEndpoint !== undefined ? { management_endpoint: s.managementEndpoint } : {}),
    ...(introspection !== undefined ? { introspection_endpoint: introspection } : {}),
    ...(revocation !== undefined ? { revocation_endpoint: revocation } : {}),
    ...(scopes !== undefined ? { scopes_supported: scopes } : {}),
    response_types_supported: ['code'],
    // SMART 2: S256 required, plain forbidden.
    code_challenge_methods_supported: ['S256'],
    capabilities: s.capabilities ?? DEFAULT_CAPABILITIES,
  };
}

export interface DiscoveryOptions {
  readonly config: GatewayConfig;
  readonly logger: Logger;
  /** For the OpenID discovery request (the caller owns and closes it); undici's global one otherwise. */
  readonly dispatcher?: Dispatcher | undefined;
  /** How long a fetched document is used (default 1 h) and a failure remembered (default 30 s). */
  readonly ttlMs?: number;
  readonly failureTtlMs?: number;
  readonly timeoutMs?: number;
  readonly now?: () => number;
}

/** The gateway's discovery answers, as the pipeline calls them. */
export interface Discovery {
  /** Throws GatewayError `discovery-unavailable` when no authorization and token endpoints are known. */
  smartConfiguration(): Promise<SmartConfiguration>;
  /** The statement for a caller (undefined: no token), or the refusal decide() would give. */
  capabilityStatement(policy: CompiledPolicy, caller: StatementCaller | undefined): Promise<{ ok: true; body: CapabilityStatement; rule: string } | { ok: false; code: ErrorCode }>;
}

/** A discovery document is small: anything larger is not one. */
const MAX_DOCUMENT_BYTES = 256 * 1024;

export function createDiscovery(opts: DiscoveryOptions): Discovery {
  const { config, logger } = opts;
  const now = opts.now ?? Date.now;
  const ttlMs = opts.ttlMs ?? 3_600_000;
  const failureTtlMs = opts.failureTtlMs ?? 30_000;
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const started = new Date(now()).toISOString();
  const issuer = config.auth.issuer;
  const issuerUrl = parseHttpUrl(issuer);
  const wellKnown = issuerUrl.ok ? `${issuerUrl.value}/.well-known/openid-configuration` : undefined;
  let cached: { value: OidcMetadata | undefined; until: number } | undefined;
  let pending: Promise<OidcMetadata | undefined> | undefined;

  async function fetchMetadata(url: string): Promise<OidcMetadata | undefined> {
    try {
      const res = await request(url, {
        method: 'GET',
        headers: { accept: 'application/json' },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}),
      });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > MAX_DOCUMENT_BYTES) {
          res.body.destroy();
          throw new Error('document too large');
        }
        chunks.push(chunk);
      }
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      return readOidcMetadata(JSON.parse(Buffer.concat(chunks).toString('utf8')));
    } catch (e) {
      // The URL is the issuer's public discovery address: no secret in it.
      logger.warn({ url, err: (e as Error)?.message ?? String(e) }, 'OpenID discovery document unavailable');
      return undefined;
    }
  }

  /** The issuer's metadata, cached (a failure too, briefly); concurrent callers share one request. */
  function oidcMetadata(): Promise<OidcMetadata | undefined> {
    if (wellKnown === undefined) return Promise.resolve(undefined);
    if (cached !== undefined && cached.until > now()) return Promise.resolve(cached.value);
    pending ??= fetchMetadata(wellKnown).then((value) => {
      cached = { value, until: now() + (value === undefined ? failureTtlMs : ttlMs) };
      pending = undefined;
      return value;
    });
    return pending;
  }

  async function smart(): Promise<SmartConfiguration | undefined> {
    const s = config.smart;
    // Nothing to ask the issuer when the block sets every field the document takes from it.
    const complete = s?.authorizationEndpoint !== undefined && s.tokenEndpoint !== undefined && config.auth.jwksUri !== undefined && s.scopesSupported !== undefined;
    const oidc = complete ? undefined : await oidcMetadata();
    return smartConfiguration({ issuer, jwksUri: config.auth.jwksUri, smart: s, oidc });
  }

  return {
    async smartConfiguration() {
      const doc = await smart();
      if (doc === undefined) throw new GatewayError('discovery-unavailable', 'no authorization and token endpoints');
      return doc;
    },
    async capabilityStatement(policy, caller) {
      const selected = selectPlans(policy, caller);
      if (!selected.ok) return selected;
      const doc = await smart();
      const oauth: OAuthUris | undefined =
        doc === undefined
          ? undefined
          : {
              authorize: doc.authorization_endpoint,
              token: doc.token_endpoint,
              register: doc.registration_endpoint,
              manage: doc.management_endpoint,
              introspect: doc.introspection_endpoint,
              revoke: doc.revocation_endpoint,
            };
      const body = capabilityStatement({
        policy,
        publicBaseUrl: config.publicBaseUrl,
        date: started,
        cors: (config.cors?.origins.length ?? 0) > 0,
        oauth,
        plans: selected.plans,
        principal: caller?.principal,
      });
      const who = caller === undefined ? 'without a token' : `for ${describeCaller(caller)}`;
      return { ok: true, body, rule: `discovery: capabilities ${who}` };
    },
  };
}

function describeCaller(c: StatementCaller): string {
  const roles = c.role !== undefined ? c.role : c.principal.roles.join(',') || '(no roles)';
  return `${roles} / ${c.purpose ?? 'any purpose'}`;
}
