import { readFileSync } from 'node:fs';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
} from 'jose';
import type { AuthConfig } from '../config/types.js';

export type { FetchImplementation } from 'jose';

export interface KeySetOptions {
  /** Replaces global fetch for the remote JWKS (tests, proxies). */
  readonly fetchImpl?: FetchImplementation;
  /** Minimum time between two JWKS fetches triggered by an unknown `kid` (default 30 s). */
  readonly jwksCooldownMs?: number;
  /** Age after which the remote JWKS is refetched even if every `kid` is known (default 10 min). */
  readonly jwksCacheMaxAgeMs?: number;
  /** Remote JWKS request timeout (default 5 s). */
  readonly jwksTimeoutMs?: number;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * The key resolver for `jwtVerify`: a remote JWKS (cached; an unknown `kid` triggers a refetch at
 * most once per cooldown, which is how a rotated key is picked up) or a local JWKS file read once,
 * here. Throws a plain Error on misconfiguration: this runs at start-up, not per request.
 */
export function createKeySet(cfg: AuthConfig, opts: KeySetOptions = {}): JWTVerifyGetKey {
  const hasUri = cfg.jwksUri !== undefined && cfg.jwksUri !== '';
  const hasFile = cfg.jwksFile !== undefined && cfg.jwksFile !== '';
  if (hasUri === hasFile) throw new Error('auth: configure exactly one of jwksUri and jwksFile');

  if (hasUri) {
    let url: URL;
    try {
      url = new URL(cfg.jwksUri as string);
    } catch {
      throw new Error('auth: jwksUri is not a valid URL');
    }
    // Keys fetched in clear text could be swapped by anyone on the path; loopback is for tests and sidecars.
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
      throw new Error('auth: jwksUri must use https (plain http is accepted only for loopback hosts)');
    }
    return createRemoteJWKSet(url, {
      cooldownDuration: opts.jwksCooldownMs ?? 30_000,
      cacheMaxAge: opts.jwksCacheMaxAgeMs ?? 600_000,
      timeoutDuration: opts.jwksTimeoutMs ?? 5_000,
      ...(opts.fetchImpl ? { [customFetch]: opts.fetchImpl } : {}),
    });
  }

  return createLocalJWKSet(readJwksFile(cfg.jwksFile as string));
}

/** Reads and checks a public JWKS file. Private or symmetric key material in it is refused. */
export function readJwksFile(file: string): JSONWebKeySet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`auth: cannot read JWKS file ${file}: ${(e as Error).message}`);
  }
  return checkJwks(parsed, file);
}

export function checkJwks(parsed: unknown, source: string): JSONWebKeySet {
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0) throw new Error(`auth: ${source} is not a JWKS with at least one key`);
  for (const k of keys) {
    if (k === null || typeof k !== 'object') throw new Error(`auth: ${source} holds a key that is not an object`);
    const jwk = k as Record<string, unknown>;
    // A verifier that can also sign (or a shared secret) must never sit in the gateway's trust store.
    if (jwk.kty === 'oct') throw new Error(`auth: ${source} holds a symmetric key; only public keys are accepted`);
    if ('d' in jwk || 'p' in jwk || 'q' in jwk) throw new Error(`auth: ${source} holds private key material; publish only public keys`);
  }
  return parsed as JSONWebKeySet;
}
