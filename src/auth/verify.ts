import { hash } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { AuthConfig } from '../config/types.js';
import { GatewayError, isGatewayError } from '../errors.js';
import { PrincipalCache } from './cache.js';
import { principalFromClaims } from './claims.js';
import { bearerToken } from './header.js';
import { createKeySet, type KeySetOptions } from './jwks.js';
import type { Principal } from './principal.js';

export { parseSmartScopes } from './scopes.js';
export { authorizationFromRawHeaders } from './header.js';

/** Signature algorithms the gateway can be configured to accept: asymmetric only (SPEC 3.1). */
export const ASYMMETRIC_ALGORITHMS: ReadonlySet<string> = new Set([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
]);

export interface TokenVerifier {
  /**
   * Verifies the request's Authorization header value(s) and returns who is asking. Pass every
   * value the client sent (see `authorizationFromRawHeaders`). Rejects with
   * `GatewayError('invalid-token')` on any failure; its `detail` never contains token bytes or claims.
   */
  verify(authorizationHeader: string | string[] | undefined): Promise<Principal>;
}

export interface VerifierOptions extends KeySetOptions {
  /** Clock, epoch milliseconds (tests). Defaults to Date.now. */
  readonly now?: () => number;
}

/**
 * Builds a verifier for one AuthConfig. A local JWKS file is read here, once: to reload it, build a
 * new verifier. Throws a plain Error when the configuration is unsafe (symmetric or `none`
 * algorithms, no issuer or audience, no key source).
 */
export function createTokenVerifier(cfg: AuthConfig, opts: VerifierOptions = {}): TokenVerifier {
  const algorithms = checkAlgorithms(cfg.algorithms);
  if (!cfg.issuer) throw new Error('auth: issuer is required');
  if (!cfg.audience) throw new Error('auth: audience is required');
  if (!cfg.rolesClaim) throw new Error('auth: rolesClaim is required');
  const tolerance = cfg.clockToleranceSec;
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance > 300) throw new Error('auth: clockToleranceSec must be 0..300');

  if (!Number.isInteger(cfg.tokenCacheSize) || cfg.tokenCacheSize < 0) throw new Error('auth: tokenCacheSize must be a non-negative integer');

  const keySet: JWTVerifyGetKey = createKeySet(cfg, opts);
  const now = opts.now ?? Date.now;
  const cache = new PrincipalCache(cfg.tokenCacheSize);
  const rolesClaim = cfg.rolesClaim;

  /** The signature and claims path, for a token not in the cache. */
  async function verifyFresh(token: string, key: string): Promise<Principal> {
    let payload: JWTPayload;
    let header: JWTHeaderParameters;
    try {
      // Signature first, then iss / aud / exp / nbf / typ: jose's fixed order.
      ({ payload, protectedHeader: header } = await jwtVerify(token, keySet, {
        algorithms,
        issuer: cfg.issuer,
        audience: cfg.audience,
        clockTolerance: tolerance,
        requiredClaims: ['iss', 'aud', 'exp', 'sub'],
        currentDate: new Date(now()),
        ...(cfg.requiredTyp ? { typ: cfg.requiredTyp } : {}),
      }));
    } catch (e) {
      // No `cause`: jose claim errors carry the whole payload, which must not reach a log.
      throw new GatewayError('invalid-token', describeJoseError(e));
    }
    refuseNonAccessTokens(header, payload);
    const principal = principalFromClaims(payload as Record<string, unknown>, rolesClaim);
    cache.set(key, principal, now());
    return principal;
  }

  return {
    // Not async: a cache hit (nearly every request) settles without a chain of awaited promises.
    verify(h) {
      try {
        const token = bearerToken(h);
        const key = hash('sha256', token, 'base64url');
        const cached = cache.get(key, now());
        if (cached !== undefined) return Promise.resolve(cached);
        return verifyFresh(token, key).catch((e: unknown) => Promise.reject(failClosed(e)));
      } catch (e) {
        return Promise.reject(failClosed(e));
      }
    },
  };
}

/** Fail closed on anything unexpected, without echoing its message (it could quote input). */
function failClosed(e: unknown): GatewayError {
  if (isGatewayError(e)) return e;
  return new GatewayError('invalid-token', `unexpected ${(e as Error)?.name ?? 'error'}`);
}

function checkAlgorithms(algs: readonly string[]): string[] {
  if (!Array.isArray(algs) || algs.length === 0) throw new Error('auth: algorithms must list at least one algorithm');
  for (const alg of algs) {
    if (!ASYMMETRIC_ALGORITHMS.has(alg)) {
      throw new Error(`auth: algorithm ${String(alg)} is not allowed (asymmetric only: ${[...ASYMMETRIC_ALGORITHMS].join(' ')})`);
    }
  }
  return [...algs];
}

/**
 * Refuses ID, refresh and other non-access tokens presented as access tokens (BYPASSES 5):
 * - a `typ` header other than `JWT` / `at+jwt` names another kind of JWT (logout+jwt, dpop+jwt...);
 * - `token_use: id|refresh` (AWS Cognito) or a payload `typ` of ID / Refresh / Logout (Keycloak);
 * - `nonce` together with a `JWT` or absent `typ` header: only ID tokens carry a nonce, except
 *   Keycloak access tokens, which say so with payload `typ: Bearer`.
 * The audience check already refuses most ID tokens (their `aud` is the client id); this covers
 * IdPs where the client id and the gateway audience coincide.
 */
export function refuseNonAccessTokens(header: JWTHeaderParameters, payload: JWTPayload): void {
  const typ = typeof header.typ === 'string' ? header.typ.toLowerCase().replace(/^application\//, '') : undefined;
  if (typ !== undefined && typ !== 'jwt' && typ !== 'at+jwt') throw new GatewayError('invalid-token', `not an access token (typ ${typ})`);
  const tokenUse = payload.token_use;
  if (tokenUse === 'id' || tokenUse === 'refresh') throw new GatewayError('invalid-token', `not an access token (token_use ${tokenUse})`);
  const payloadTyp = typeof payload.typ === 'string' ? payload.typ.toLowerCase() : undefined;
  if (payloadTyp === 'id' || payloadTyp === 'refresh' || payloadTyp === 'logout' || payloadTyp === 'offline') {
    throw new GatewayError('invalid-token', `not an access token (payload typ ${payloadTyp})`);
  }
  if (payload.nonce !== undefined && typ !== 'at+jwt' && payloadTyp !== 'bearer') {
    throw new GatewayError('invalid-token', 'not an access token (ID token: nonce present)');
  }
}

/** A log-safe reason: jose's error code and, for claim failures, the claim name. */
function describeJoseError(e: unknown): string {
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `${e.code} ${e.claim} (${e.reason})`;
  if (e instanceof joseErrors.JOSEError) return e.code;
  return `key set unavailable (${(e as Error)?.name ?? 'error'})`;
}
