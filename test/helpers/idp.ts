/**
 * A real OpenID provider (panva/oidc-provider v9) for integration tests, on 127.0.0.1 at a free port.
 * One client-credentials client per role; access tokens are RFC 9068 JWTs (`typ: at+jwt`) with
 * `aud` = the gateway audience, `roles: [role]`, `client_id`, `jti`, and `sub` = the client id.
 *
 *   const idp = await startIdp();                 // { issuer, jwksUri, audience, tokenFor, close }
 *   const t = await idp.tokenFor('billing');      // default demo roles are pre-registered
 *   const t2 = await idp.tokenFor('clinician', { sub: 'dr-who', purpose_of_use: ['TREAT'], patient: '123' });
 *   await idp.close();
 *
 * `extra` claims are merged last into the access token payload, so they may also replace `sub`,
 * `roles`, `scope` or even `aud` / `exp` (to build hostile tokens signed by the real IdP).
 * Configure the gateway with PHI_GATEWAY_ISSUER = issuer, PHI_GATEWAY_AUDIENCE = audience,
 * PHI_GATEWAY_JWKS_URI = jwksUri.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';

export const DEMO_ROLES = ['clinician', 'billing', 'coder', 'researcher', 'front-desk', 'auditor', 'privacy-officer'] as const;

export interface Idp {
  /** `http://127.0.0.1:PORT` — the `iss` of every token. */
  readonly issuer: string;
  /** The provider's JWKS endpoint (its public signing keys). */
  readonly jwksUri: string;
  /** `aud` of every access token (default `phi-gateway`). */
  readonly audience: string;
  /** A fresh access token from the token endpoint (client-credentials grant) for the role's client. */
  tokenFor(role: string, extra?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

export interface IdpOptions {
  /** Roles to register a client for (default: the demo roles). */
  readonly roles?: readonly string[];
  /** Access-token audience (default `phi-gateway`). */
  readonly audience?: string;
  /** Access-token signing algorithm (default RS256). */
  readonly alg?: 'RS256' | 'ES256';
  /** Access-token lifetime in seconds (default 600). */
  readonly ttlSec?: number;
}

// oidc-provider ships no type declarations: the few members used here, typed by hand. The module
// is imported through a variable so TypeScript does not look for its (absent) declarations.
interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
type ProviderCtor = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;
interface JwtFormat {
  payload: Record<string, unknown>;
}
interface Ctx {
  oidc?: { client?: { clientId: string } };
}
interface AccessToken {
  resourceServer?: { identifier(): string };
}

// The token endpoint accepts no custom parameters, so per-request extra claims travel as a suffix
// of the resource indicator: `urn:phi-gateway:fhir:<ref>`.
const RESOURCE = 'urn:phi-gateway:fhir';

/** Per-provider in-memory storage (the built-in one is process-wide and warns on every start). */
class MemoryAdapter {
  readonly #items = new Map<string, Record<string, unknown>>();
  async upsert(id: string, payload: Record<string, unknown>): Promise<void> {
    this.#items.set(id, payload);
  }
  async find(id: string): Promise<Record<string, unknown> | undefined> {
    return this.#items.get(id);
  }
  async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
    return [...this.#items.values()].find((p) => p.uid === uid);
  }
  async findByUserCode(code: string): Promise<Record<string, unknown> | undefined> {
    return [...this.#items.values()].find((p) => p.userCode === code);
  }
  async consume(id: string): Promise<void> {
    const p = this.#items.get(id);
    if (p) p.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id: string): Promise<void> {
    this.#items.delete(id);
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    for (const [id, p] of this.#items) if (p.grantId === grantId) this.#items.delete(id);
  }
}

export async function startIdp(opts: IdpOptions = {}): Promise<Idp> {
  const roles = opts.roles ?? DEMO_ROLES;
  const audience = opts.audience ?? 'phi-gateway';
  const alg = opts.alg ?? 'RS256';
  const moduleName = 'oidc-provider';
  const { default: Provider } = (await import(moduleName)) as { default: ProviderCtor };

  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const signingJwk = { ...(await exportJWK(privateKey)), kid: `idp-${alg.toLowerCase()}-${randomUUID()}`, alg, use: 'sig' };
  const secret = randomBytes(24).toString('base64url');
  const clientId = (role: string): string => `${role}-app`;
  const roleOf = new Map(roles.map((r) => [clientId(r), r]));
  // Per-request extra claims by reference (tests may request tokens concurrently).
  const pending = new Map<string, Record<string, unknown>>();

  const provider = new Provider(issuer, {
    clients: roles.map((r) => ({
      client_id: clientId(r),
      client_secret: secret,
      id_token_signed_response_alg: alg,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    jwks: { keys: [signingJwk] },
    adapter: MemoryAdapter,
    ttl: { ClientCredentials: opts.ttlSec ?? 600 },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: '',
          audience,
          accessTokenTTL: opts.ttlSec ?? 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        }),
      },
    },
    formats: {
      customizers: {
        jwt(ctx: Ctx, token: AccessToken, jwt: JwtFormat) {
          const client = ctx.oidc?.client?.clientId;
          const role = client === undefined ? undefined : roleOf.get(client);
          if (role !== undefined) jwt.payload.roles = [role];
          const ref = token.resourceServer?.identifier().slice(RESOURCE.length + 1);
          if (ref && pending.has(ref)) Object.assign(jwt.payload, pending.get(ref));
        },
      },
    },
  });
  server.on('request', provider.callback());

  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    audience,
    async tokenFor(role, extra) {
      if (!roleOf.has(clientId(role))) throw new Error(`startIdp: no client for role ${role} (pass it in IdpOptions.roles)`);
      const ref = randomUUID();
      const body = new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId(role), client_secret: secret });
      if (extra !== undefined) {
        pending.set(ref, extra);
        body.set('resource', `${RESOURCE}:${ref}`);
      }
      try {
        const res = await fetch(`${issuer}/token`, { method: 'POST', body });
        const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
        if (!res.ok || typeof json.access_token !== 'string') {
          throw new Error(`startIdp: token request failed (${res.status} ${json.error ?? ''} ${json.error_description ?? ''})`);
        }
        return json.access_token;
      } finally {
        pending.delete(ref);
      }
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
