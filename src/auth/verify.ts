import { hash } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { AuthConfig } from '../config/types.js';
import { isGatewayError } from '../errors.js';
import { PrincipalCache } from './cache.js';
import { type ClaimRules, principalFromClaims } from './claims.js';
import { bearerToken } from './header.js';
import { createKeySet, type KeySetOptions } from './jwks.js';
import type { Principal } from './principal.js';
import { type TokenFailure, TokenRefusal } from './refusal.js';

export { parseSmartScopes } from './scopes.js';
export { authorizationFromRawHeaders } from './header.js';
export { bearerChallenge, type TokenFailure, TokenRefusal, tokenFailureOf } from './refusal.js';

/** Signature algorithms the gateway can be configured to accept: asymmetric only (SPEC 3.1). */
export const ASYMMETRIC_ALGORITHMS: ReadonlySet<string> = new Set([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
]);

export interface TokenVerifier {
  /**
   * Verifies the request's Authorization header value(s) and returns who is asking. Pass every
   * value the client sent (see `authorizationFromRawHeaders`). Rejects with a `TokenRefusal`
   * (`invalid-token`, with the failed check as `reason`) on any failure; its `detail` never contains
   * token bytes or claims.
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
  const rules = claimRules(cfg);
  const tolerance = cfg.clockToleranceSec;
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance > 300) throw new Error('auth: clockToleranceSec must be 0..300');

  if (!Number.isInteger(cfg.tokenCacheSize) || cfg.tokenCacheSize < 0) throw new Error('auth: tokenCacheSize must be a non-negative integer');

  const keySet: JWTVerifyGetKey = createKeySet(cfg, opts);
  const now = opts.now ?? Date.now;
  const cache = new PrincipalCache(cfg.tokenCacheSize);

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
      throw new TokenRefusal(joseFailure(e), describeJoseError(e));
    }
    refuseNonAccessTokens(header, payload);
    const principal = principalFromClaims(payload as Record<string, unknown>, rules);
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
function failClosed(e: unknown): TokenRefusal {
  if (e instanceof TokenRefusal) return e;
  if (isGatewayError(e)) return new TokenRefusal('malformed', e.detail);
  return new TokenRefusal('malformed', `unexpected ${(e as Error)?.name ?? 'error'}`);
}

/** The claim rules of an AuthConfig, checked and compiled once per verifier. */
function claimRules(cfg: AuthConfig): ClaimRules {
  const rolesClaim = cfg.rolesClaim;
  const claims = typeof rolesClaim === 'string' ? [rolesClaim] : rolesClaim;
  if (!Array.isArray(claims) || claims.length === 0 || claims.some((c) => typeof c !== 'string' || c === '')) {
    throw new Error('auth: rolesClaim is required (a claim name or a non-empty list of them)');
  }
  let roleMap: Map<string, readonly string[]> | undefined;
  if (cfg.roleMap !== undefined) {
    roleMap = new Map();
    for (const [name, target] of Object.entries(cfg.roleMap)) {
      const roles = typeof target === 'string' ? [target] : target;
      if (!Array.isArray(roles) || roles.some((r) => typeof r !== 'string' || r === '')) throw new Error(`auth: roleMap entry ${name} must map to a role or a list of roles`);
      roleMap.set(name, Object.freeze([...roles]));
    }
  }
  const patientClaims = cfg.patientClaims ?? ['patient'];
  if (patientClaims.some((c) => typeof c !== 'string' || c === '')) throw new Error('auth: patientClaims must list claim names');
  const scopelessTokens = cfg.scopelessTokens ?? 'refuse';
  if (scopelessTokens !== 'refuse' && scopelessTokens !== 'roles-only') throw new Error('auth: scopelessTokens must be refuse or roles-only');
  const fhirUserClaim = cfg.fhirUserClaim ?? 'fhirUser';
  return Object.freeze({ rolesClaim: Object.freeze([...claims]), roleMap, patientClaims: Object.freeze([...patientClaims]), scopelessTokens, fhirUserClaim });
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
  if (typ !== undefined && typ !== 'jwt' && typ !== 'at+jwt') throw new TokenRefusal('not-access-token', `not an access token (typ ${typ})`);
  const tokenUse = payload.token_use;
  if (tokenUse === 'id' || tokenUse === 'refresh') throw new TokenRefusal('not-access-token', `not an access token (token_use ${tokenUse})`);
  const payloadTyp = typeof payload.typ === 'string' ? payload.typ.toLowerCase() : undefined;
  if (payloadTyp === 'id' || payloadTyp === 'refresh' || payloadTyp === 'logout' || payloadTyp === 'offline') {
    throw new TokenRefusal('not-access-token', `not an access token (payload typ ${payloadTyp})`);
  }
  if (payload.nonce !== undefined && typ !== 'at+jwt' && payloadTyp !== 'bearer') {
    throw new TokenRefusal('not-access-token', 'not an access token (ID token: nonce present)');
  }
}

/** Which check a jose error reports (jose verifies the signature first, then iss, aud, exp, nbf, typ). */
function joseFailure(e: unknown): TokenFailure {
  if (e instanceof joseErrors.JWTExpired) return e.claim === 'exp' ? 'expired' : 'not-yet-valid';
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'iss') return 'issuer';
    if (e.claim === 'aud') return 'audience';
    if (e.claim === 'typ') return 'not-access-token';
    if ((e.claim === 'nbf' || e.claim === 'iat') && e.reason === 'check_failed') return 'not-yet-valid';
    return 'claims';
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'signature';
  if (e instanceof joseErrors.JWKSNoMatchingKey || e instanceof joseErrors.JWKSMultipleMatchingKeys) return 'unknown-key';
  if (e instanceof joseErrors.JOSEAlgNotAllowed || e instanceof joseErrors.JOSENotSupported) return 'algorithm';
  if (e instanceof joseErrors.JWKSTimeout || e instanceof joseErrors.JWKSInvalid || e instanceof joseErrors.JWKInvalid) return 'keys-unavailable';
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid) return 'malformed';
  // jose's generic error comes from the remote key set (an HTTP status other than 200, not JSON),
  // and an error not jose's own from fetching it (network).
  if (!(e instanceof joseErrors.JOSEError) || e.code === 'ERR_JOSE_GENERIC') return 'keys-unavailable';
  return 'malformed';
}

/** A log-safe reason: jose's error code and, for claim failures, the claim name. */
function describeJoseError(e: unknown): string {
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `${e.code} ${e.claim} (${e.reason})`;
  if (e instanceof joseErrors.JOSEError) return e.code;
  return `key set unavailable (${(e as Error)?.name ?? 'error'})`;
}
