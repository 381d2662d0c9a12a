import { GatewayError } from '../errors.js';

/**
 * Which check refused a token. Stable names: they go into the request log line and, as a fixed
 * sentence, into the `WWW-Authenticate` challenge, so a client developer can tell an expired token
 * from a wrong audience without the gateway ever echoing token contents.
 */
export type TokenFailure =
  | 'missing'
  | 'malformed'
  | 'expired'
  | 'not-yet-valid'
  | 'audience'
  | 'issuer'
  | 'signature'
  | 'unknown-key'
  | 'algorithm'
  | 'keys-unavailable'
  | 'not-access-token'
  | 'claims';

// Fixed client-facing sentences. RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E,
// so no quotes or backslashes, and never anything taken from the request.
const DESCRIPTIONS: Readonly<Record<Exclude<TokenFailure, 'missing'>, string>> = {
  malformed: 'The access token or Authorization header is malformed',
  expired: 'The access token expired',
  'not-yet-valid': 'The access token is not yet valid',
  audience: 'The access token is for another audience',
  issuer: 'The access token is from an untrusted issuer',
  signature: 'The access token signature is invalid',
  'unknown-key': 'The access token is signed with an unknown key',
  algorithm: 'The access token signing algorithm is not accepted',
  'keys-unavailable': 'The signing keys could not be retrieved',
  'not-access-token': 'The token is not an access token',
  claims: 'A required access token claim is missing, malformed or contradictory',
};

const REALM = 'Bearer realm="phi-gateway"';

/** An `invalid-token` refusal that says which check failed. `detail` stays log-only, as for every GatewayError. */
export class TokenRefusal extends GatewayError {
  readonly reason: TokenFailure;
  constructor(reason: TokenFailure, detail?: string) {
    super('invalid-token', detail);
    this.name = 'TokenRefusal';
    this.reason = reason;
  }
}

/** The token failure behind `e`, if it is one. */
export function tokenFailureOf(e: unknown): TokenFailure | undefined {
  return e instanceof TokenRefusal ? e.reason : undefined;
}

/**
 * The `WWW-Authenticate` value for an `invalid-token` answer. No credentials at all (or a scheme
 * other than Bearer) gets the bare challenge, without an error code (RFC 6750 3.1); every other
 * refusal names `invalid_token` and the failed check.
 */
export function bearerChallenge(e: unknown): string {
  const reason = tokenFailureOf(e);
  if (reason === 'missing') return REALM;
  if (reason === undefined) return `${REALM}, error="invalid_token"`;
  return `${REALM}, error="invalid_token", error_description="${DESCRIPTIONS[reason]}"`;
}
