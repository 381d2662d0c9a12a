import { TokenRefusal } from './refusal.js';

/** Longest token accepted; bigger values are refused before hashing or parsing. */
export const MAX_TOKEN_LENGTH = 16_384;

// `Bearer` is case-insensitive (RFC 7235 auth-scheme); the credential must look like a JWS compact
// serialization with three non-empty segments (an empty signature is an unsecured `alg: none` token).
const BEARER_RE = /^bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+) *$/i;

// IANA HTTP authentication scheme registry (lower-cased), minus Bearer.
const KNOWN_SCHEMES: ReadonlySet<string> = new Set([
  'basic', 'concealed', 'digest', 'dpop', 'gnap', 'hoba', 'mutual', 'negotiate', 'ntlm', 'oauth', 'privatetoken',
  'scram-sha-1', 'scram-sha-256', 'vapid', 'token', 'apikey',
]);

/**
 * The JWT from exactly one `Authorization: Bearer <jwt>` value. Several values (an array, or values
 * joined with a comma by an intermediary), other schemes and malformed credentials are refused.
 */
export function bearerToken(header: string | readonly string[] | undefined): string {
  if (header === undefined) throw new TokenRefusal('missing', 'no Authorization header');
  let value: string;
  if (typeof header === 'string') value = header;
  else if (header.length === 1) value = header[0];
  else throw new TokenRefusal('malformed', `expected one Authorization header, got ${header.length}`);
  if (value.length > MAX_TOKEN_LENGTH + 32) throw new TokenRefusal('malformed', 'Authorization header too long');
  const m = BEARER_RE.exec(value);
  if (m === null) {
    // Only a registered scheme name is logged: an unknown first word could be a bare secret.
    const scheme = /^([A-Za-z][A-Za-z0-9-]*)(?: |$)/.exec(value)?.[1].toLowerCase();
    // Another registered scheme is "no Bearer credentials" (RFC 6750 3.1: challenge without an error code).
    if (scheme !== undefined && KNOWN_SCHEMES.has(scheme)) throw new TokenRefusal('missing', `unsupported scheme ${scheme}`);
    throw new TokenRefusal('malformed', 'malformed Bearer credential');
  }
  return m[1];
}

/**
 * All Authorization values from Node's `rawHeaders` (request.raw.rawHeaders). Node's parsed
 * `headers.authorization` silently keeps only the first of duplicated headers, which would hide
 * header smuggling; pass this to `TokenVerifier.verify` instead.
 */
export function authorizationFromRawHeaders(rawHeaders: readonly string[]): string | string[] | undefined {
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === 'authorization') values.push(rawHeaders[i + 1]);
  }
  if (values.length === 0) return undefined;
  return values.length === 1 ? values[0] : values;
}
