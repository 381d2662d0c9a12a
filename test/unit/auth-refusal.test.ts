/**
 * Every token refusal says which check failed (a TokenRefusal `reason`, and a fixed sentence in the
 * Bearer challenge), and the challenge never carries anything from the token.
 */
import type { JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearerChallenge, type TokenFailure, TokenRefusal } from '../../src/auth/refusal.js';
import { createTokenVerifier } from '../../src/auth/verify.js';
import type { AuthConfig } from '../../src/config/types.js';
import { GatewayError } from '../../src/errors.js';
import { hmacToken, type JwksServer, makeKeyPair, signToken, startJwksServer, type TestKeyPair } from '../helpers/keys.js';

const ISS = 'https://idp.example.org/realms/clinical';
const AUD = 'phi-gateway';
const T0 = 1_750_000_000_000;
const NOW_S = T0 / 1000;

let rsa: TestKeyPair;
let stranger: TestKeyPair;
let jwks: JwksServer;
let down: JwksServer;

beforeAll(async () => {
  rsa = await makeKeyPair('RS256');
  stranger = await makeKeyPair('RS256');
  jwks = await startJwksServer([rsa.publicJwk]);
  down = await startJwksServer([rsa.publicJwk]);
  down.setFailure(503);
});
afterAll(async () => {
  await jwks.close();
  await down.close();
});

function config(over: Partial<AuthConfig> = {}): AuthConfig {
  return {
    issuer: ISS,
    audience: AUD,
    jwksUri: jwks.uri,
    jwksFile: undefined,
    algorithms: ['RS256', 'ES256'],
    rolesClaim: 'roles',
    clockToleranceSec: 30,
    tokenCacheSize: 0,
    requiredTyp: undefined,
    ...over,
  };
}

const claims = (over: JWTPayload = {}): JWTPayload => ({ iss: ISS, aud: AUD, sub: 'user-1', iat: NOW_S - 10, exp: NOW_S + 600, roles: ['billing'], ...over });

async function refusal(header: string | string[] | undefined, over: Partial<AuthConfig> = {}): Promise<TokenRefusal> {
  const v = createTokenVerifier(config(over), { now: () => T0 });
  const e = await v.verify(header).then(
    () => {
      throw new Error('expected a refusal');
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(TokenRefusal);
  expect((e as GatewayError).code).toBe('invalid-token');
  return e as TokenRefusal;
}

const bearer = (t: string) => `Bearer ${t}`;

describe('which check refused the token', () => {
  // The third element: config changes, read when the case runs (the servers start in beforeAll).
  const cases: Array<[TokenFailure, () => Promise<string | string[] | undefined>, (() => Partial<AuthConfig>)?]> = [
    ['missing', async () => undefined],
    ['missing', async () => 'Basic dXNlcjpwYXNz'],
    ['malformed', async () => 'Bearer abc'],
    ['malformed', async () => [bearer(await signToken(rsa, claims())), bearer(await signToken(rsa, claims()))]],
    // A protected header that is not JSON (checked before any key is looked up).
    ['malformed', async () => bearer('bm90IGpzb24.e30.c2lnbmF0dXJl')],
    ['expired', async () => bearer(await signToken(rsa, claims({ exp: NOW_S - 3600 })))],
    ['not-yet-valid', async () => bearer(await signToken(rsa, claims({ nbf: NOW_S + 3600 })))],
    ['audience', async () => bearer(await signToken(rsa, claims({ aud: 'another-api' })))],
    ['issuer', async () => bearer(await signToken(rsa, claims({ iss: 'https://evil.example' })))],
    ['signature', async () => bearer(await signToken(stranger, claims(), { header: { kid: rsa.kid } }))],
    ['unknown-key', async () => bearer(await signToken(stranger, claims()))],
    ['algorithm', async () => bearer(hmacToken(rsa.publicPem, claims(), { kid: rsa.kid }))],
    ['keys-unavailable', async () => bearer(await signToken(rsa, claims())), () => ({ jwksUri: down.uri })],
    ['not-access-token', async () => bearer(await signToken(rsa, claims({ nonce: 'n', typ: 'ID' })))],
    ['not-access-token', async () => bearer(await signToken(rsa, claims(), { header: { typ: 'logout+jwt' } }))],
    ['claims', async () => bearer(await signToken(rsa, claims({ sub: undefined })))],
    ['claims', async () => bearer(await signToken(rsa, claims({ patient: 'a/b' })))],
    ['claims', async () => bearer(await signToken(rsa, claims({ scope: 'patient/*.rs', scp: 'patient/Observation.rs' })))],
  ];

  it.each(cases)('%s', async (reason, make, over) => {
    const header = await make();
    const e = await refusal(header, over?.());
    expect(e.reason).toBe(reason);
    const challenge = bearerChallenge(e);
    expect(challenge.startsWith('Bearer realm="phi-gateway"')).toBe(true);
    // RFC 6750 3: quoted values hold no quote or backslash, and the whole header is printable ASCII.
    expect(challenge).toMatch(/^[\x20-\x7e]+$/);
    const description = /error_description="([^"]*)"/.exec(challenge)?.[1];
    if (reason === 'missing') {
      expect(challenge).toBe('Bearer realm="phi-gateway"');
    } else {
      expect(challenge).toMatch(/^Bearer realm="phi-gateway", error="invalid_token", error_description="[^"\\]+"$/);
      expect(description).toBeDefined();
    }
    // Nothing of the credential reaches the challenge or the log detail.
    const sent = Array.isArray(header) ? header.join(' ') : (header ?? '');
    for (const part of sent.replace(/Bearer /gi, '').split(/[.\s]/).filter((s) => s.length >= 6)) {
      expect(challenge).not.toContain(part);
      expect(e.detail ?? '').not.toContain(part);
    }
  });

  it('each reason has its own sentence', () => {
    const reasons: TokenFailure[] = ['malformed', 'expired', 'not-yet-valid', 'audience', 'issuer', 'signature', 'unknown-key', 'algorithm', 'keys-unavailable', 'not-access-token', 'claims'];
    const sentences = reasons.map((r) => bearerChallenge(new TokenRefusal(r)));
    expect(new Set(sentences).size).toBe(reasons.length);
    expect(bearerChallenge(new TokenRefusal('expired'))).toBe('Bearer realm="phi-gateway", error="invalid_token", error_description="The access token expired"');
  });

  it('an invalid-token error from elsewhere gets the plain invalid_token challenge', () => {
    expect(bearerChallenge(new GatewayError('invalid-token', 'x'))).toBe('Bearer realm="phi-gateway", error="invalid_token"');
  });

  it('a genuine token still verifies (the refusals fail for the right reason)', async () => {
    const v = createTokenVerifier(config(), { now: () => T0 });
    await expect(v.verify(bearer(await signToken(rsa, claims())))).resolves.toMatchObject({ sub: 'user-1', roles: ['billing'] });
  });
});
