import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, type TokenVerifier, type VerifierOptions } from '../../../src/auth/verify.js';
import type { AuthConfig } from '../../../src/config/types.js';
import { GatewayError } from '../../../src/errors.js';
import {
  hmacToken,
  type JwksServer,
  makeKeyPair,
  signToken,
  startJwksServer,
  swapPayload,
  type TestKeyPair,
  unsecuredToken,
} from '../../helpers/keys.js';

const ISS = 'https://idp.example.org/realms/hospital';
const AUD = 'phi-gateway';
// A fixed clock (epoch ms) so expiry tests do not depend on wall time.
const T0 = 1_750_000_000_000;
const NOW_S = T0 / 1000;

let rsa: TestKeyPair;
let ec: TestKeyPair;
let stranger: TestKeyPair;
let jwks: JwksServer;

beforeAll(async () => {
  rsa = await makeKeyPair('RS256');
  ec = await makeKeyPair('ES256');
  stranger = await makeKeyPair('RS256');
  jwks = await startJwksServer([rsa.publicJwk, ec.publicJwk]);
});
afterAll(async () => {
  await jwks.close();
});

function config(over: Partial<AuthConfig> = {}): AuthConfig {
  return {
    issuer: ISS,
    audience: AUD,
    jwksUri: jwks.uri,
    jwksFile: undefined,
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    rolesClaim: 'roles',
    clockToleranceSec: 30,
    tokenCacheSize: 100,
    requiredTyp: undefined,
    ...over,
  };
}

function claims(over: JWTPayload = {}): JWTPayload {
  return { iss: ISS, aud: AUD, sub: 'user-1', iat: NOW_S - 10, exp: NOW_S + 3600, roles: ['billing'], ...over };
}

function verifier(over: Partial<AuthConfig> = {}, opts: VerifierOptions = {}): TokenVerifier & { clock: { t: number } } {
  const clock = { t: T0 };
  const v = createTokenVerifier(config(over), { now: () => clock.t, ...opts });
  return Object.assign(v, { clock });
}

/** Asserts an `invalid-token` refusal whose message, detail and serialized form never contain the token. */
async function expectRefused(p: Promise<unknown>, token: string, detailPattern?: RegExp): Promise<GatewayError> {
  const err = await p.then(
    () => {
      throw new Error('expected the token to be refused');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  const ge = err as GatewayError;
  expect(ge.code).toBe('invalid-token');
  expect(ge.status).toBe(401);
  const everything = `${ge.message} ${ge.detail ?? ''} ${JSON.stringify(ge)} ${String(ge.stack)}`;
  for (const segment of token.split('.').filter((s) => s.length > 8)) expect(everything).not.toContain(segment);
  expect(ge.cause).toBeUndefined();
  if (detailPattern) expect(ge.detail).toMatch(detailPattern);
  return ge;
}

describe('createTokenVerifier: configuration', () => {
  it.each([[['HS256']], [['RS256', 'HS512']], [['none']], [[]]])('refuses to construct with algorithms %j', (algorithms) => {
    expect(() => createTokenVerifier(config({ algorithms }))).toThrow(/algorithm/);
  });
  it('needs exactly one key source', () => {
    expect(() => createTokenVerifier(config({ jwksUri: undefined }))).toThrow(/exactly one/);
    expect(() => createTokenVerifier(config({ jwksFile: '/tmp/x.json' }))).toThrow(/exactly one/);
  });
  it('refuses a plain-http JWKS URI that is not loopback', () => {
    expect(() => createTokenVerifier(config({ jwksUri: 'http://idp.example.org/jwks' }))).toThrow(/https/);
    expect(() => createTokenVerifier(config({ jwksUri: 'https://idp.example.org/jwks' }))).not.toThrow();
  });
  it('refuses a cache size that is not a non-negative integer (it would be unbounded)', () => {
    for (const tokenCacheSize of [Number.NaN, -1, 1.5, undefined as unknown as number]) {
      expect(() => createTokenVerifier(config({ tokenCacheSize }))).toThrow(/tokenCacheSize/);
    }
  });
  it('needs an issuer and an audience', () => {
    expect(() => createTokenVerifier(config({ issuer: '' }))).toThrow(/issuer/);
    expect(() => createTokenVerifier(config({ audience: '' }))).toThrow(/audience/);
  });
});

describe('verify: a valid token', () => {
  it('returns the principal built from the claims', async () => {
    const v = verifier();
    const token = await signToken(rsa, claims({ jti: 'j-1', client_id: 'billing-app', family_name: 'Doe' }));
    const p = await v.verify(`Bearer ${token}`);
    expect(p).toMatchObject({ iss: ISS, sub: 'user-1', roles: ['billing'], clientId: 'billing-app', jti: 'j-1', familyName: 'Doe', exp: NOW_S + 3600 });
    expect(p.tokenPurposes).toBeUndefined();
    expect(p.scopes).toBeUndefined();
    expect(p.patient).toBeUndefined();
    expect(Object.isFrozen(p)).toBe(true);
    expect(JSON.stringify(p)).not.toContain(token.split('.')[2]);
  });
  it('accepts ES256 and an audience array that contains the gateway', async () => {
    const token = await signToken(ec, claims({ aud: ['other-api', AUD] }));
    await expect(verifier().verify(`Bearer ${token}`)).resolves.toMatchObject({ sub: 'user-1' });
  });
  it('accepts the scheme in any case and a single-element header array', async () => {
    const token = await signToken(rsa, claims());
    await expect(verifier().verify(`bearer ${token}`)).resolves.toMatchObject({ sub: 'user-1' });
    await expect(verifier().verify([`Bearer ${token}`])).resolves.toMatchObject({ sub: 'user-1' });
  });
  it('uses azp as the client id when client_id is absent', async () => {
    const token = await signToken(rsa, claims({ azp: 'spa' }));
    await expect(verifier().verify(`Bearer ${token}`)).resolves.toMatchObject({ clientId: 'spa' });
  });
});

describe('verify: algorithm attacks', () => {
  it('refuses alg none', async () => {
    const token = unsecuredToken(claims());
    await expectRefused(verifier().verify(`Bearer ${token}`), token);
    // Even with a (garbage) signature segment appended, so the header check is what refuses it.
    const padded = `${token}AAAA`;
    await expectRefused(verifier().verify(`Bearer ${padded}`), padded, /ALG_NOT_ALLOWED/);
  });
  it('refuses HS256 signed with the RSA public key (key confusion)', async () => {
    for (const secret of [rsa.publicPem, JSON.stringify(rsa.publicJwk)]) {
      const token = hmacToken(secret, claims(), { kid: rsa.kid });
      await expectRefused(verifier().verify(`Bearer ${token}`), token, /ALG_NOT_ALLOWED/);
    }
  });
  it('refuses an algorithm outside the configured allow-list', async () => {
    const token = await signToken(ec, claims());
    await expectRefused(verifier({ algorithms: ['RS256'] }).verify(`Bearer ${token}`), token, /ALG_NOT_ALLOWED/);
  });
  it('refuses a forged payload under a valid signature', async () => {
    const token = swapPayload(await signToken(rsa, claims()), claims({ roles: ['clinician'] }));
    await expectRefused(verifier().verify(`Bearer ${token}`), token, /SIGNATURE/);
  });
  it('refuses a token signed by a key the JWKS does not hold (unknown kid)', async () => {
    const token = await signToken(stranger, claims());
    await expectRefused(verifier().verify(`Bearer ${token}`), token, /NO_MATCHING_KEY/);
  });
  it('refuses a stranger key that claims a trusted kid', async () => {
    const token = await signToken(stranger, claims(), { header: { kid: rsa.kid } });
    await expectRefused(verifier().verify(`Bearer ${token}`), token, /SIGNATURE/);
  });
});

describe('verify: claims', () => {
  const cases: Array<[string, JWTPayload, RegExp]> = [
    ['expired beyond the tolerance', claims({ exp: NOW_S - 31 }), /EXPIRED/],
    ['not yet valid beyond the tolerance', claims({ nbf: NOW_S + 31 }), /nbf/],
    ['wrong issuer', claims({ iss: 'https://evil.example.org' }), /iss/],
    ['wrong audience', claims({ aud: 'another-api' }), /aud/],
    ['missing aud', claims({ aud: undefined }), /aud/],
    ['missing exp', claims({ exp: undefined }), /exp/],
    ['missing sub', claims({ sub: undefined }), /sub/],
    ['empty sub', claims({ sub: '' }), /sub/],
    ['blank sub', claims({ sub: '   ' }), /sub/],
    ['sub with a control character', claims({ sub: 'a\nb' }), /sub/],
    ['malformed patient claim', claims({ patient: 'Observation/1' }), /patient/],
    ['numeric patient claim', claims({ patient: 123 as unknown as string }), /patient/],
  ];
  it.each(cases)('refuses a token with %s', async (_name, payload, detail) => {
    const token = await signToken(rsa, payload);
    await expectRefused(verifier().verify(`Bearer ${token}`), token, detail);
  });
  it('accepts exp and nbf within the clock tolerance', async () => {
    const token = await signToken(rsa, claims({ exp: NOW_S - 20, nbf: NOW_S + 20 }));
    await expect(verifier().verify(`Bearer ${token}`)).resolves.toMatchObject({ sub: 'user-1' });
    await expectRefused(verifier({ clockToleranceSec: 0 }).verify(`Bearer ${token}`), token, /EXPIRED|nbf/);
  });
  it('normalizes a Patient/123 launch context to 123', async () => {
    const token = await signToken(rsa, claims({ patient: 'Patient/123' }));
    await expect(verifier().verify(`Bearer ${token}`)).resolves.toMatchObject({ patient: '123' });
  });
});

describe('verify: the Authorization header', () => {
  let good: string;
  beforeAll(async () => {
    good = await signToken(rsa, claims());
  });
  it('refuses a missing header', async () => {
    await expectRefused(verifier().verify(undefined), 'x', /no Authorization/);
  });
  it('refuses several Authorization headers, even when each is valid', async () => {
    await expectRefused(verifier().verify([`Bearer ${good}`, `Bearer ${good}`]), good, /expected one/);
    await expectRefused(verifier().verify([]), good, /expected one/);
  });
  it('refuses values joined with a comma by an intermediary', async () => {
    await expectRefused(verifier().verify(`Bearer ${good}, Bearer ${good}`), good, /malformed/);
  });
  it.each(['Basic dXNlcjpwYXNz', 'Token abc.def.ghi', 'DPoP '])('refuses the non-Bearer value %s', async (value) => {
    await expectRefused(verifier().verify(value), good, /unsupported scheme/);
  });
  it('names a registered non-Bearer scheme without echoing its credential', async () => {
    const err = await expectRefused(verifier().verify(`Basic ${good}`), good, /unsupported scheme basic/);
    expect(err.detail).not.toContain(good.slice(0, 20));
  });
  it('never logs an unknown first word: it may be a bare secret', async () => {
    const secret = 'sk_live_0123456789abcdef';
    const err = await expectRefused(verifier().verify(secret), good, /^malformed Bearer credential$/);
    expect(err.detail).not.toContain(secret);
    expect((await expectRefused(verifier().verify(`${secret} x`), good)).detail).not.toContain(secret);
  });
  // Built inside the test: `good` only exists once beforeAll has run.
  const malformed: Array<[string, (t: string) => string]> = [
    ['scheme alone', () => 'Bearer'],
    ['scheme and a space', () => 'Bearer '],
    ['no space after the scheme', (t) => `Bearer${t}`],
    ['not a JWT', () => 'Bearer not-a-jwt'],
    ['four segments', (t) => `Bearer ${t}.extra`],
    ['a tab separator', (t) => `Bearer\t${t}`],
    ['the token alone', (t) => t],
  ];
  it.each(malformed)('refuses a malformed value: %s', async (_name, make) => {
    await expectRefused(verifier().verify(make(good)), good, /^malformed Bearer credential$/);
  });
});

describe('verify: ID, refresh and other non-access tokens (BYPASSES 5)', () => {
  it.each<[string, JWTPayload, Record<string, unknown>]>([
    ['typ JWT with a nonce (ID token)', claims({ nonce: 'n-1' }), { typ: 'JWT' }],
    ['no typ with a nonce (ID token)', claims({ nonce: 'n-1' }), {}],
    ['token_use id (Cognito)', claims({ token_use: 'id' }), {}],
    ['token_use refresh', claims({ token_use: 'refresh' }), {}],
    ['payload typ ID (Keycloak)', claims({ typ: 'ID' }), { typ: 'JWT' }],
    ['payload typ Refresh (Keycloak)', claims({ typ: 'Refresh' }), { typ: 'JWT' }],
    ['a logout token', claims({ events: {} }), { typ: 'logout+jwt' }],
    ['a DPoP proof', claims(), { typ: 'dpop+jwt' }],
  ])('refuses %s', async (_name, payload, header) => {
    const token = await signToken(rsa, payload, { header });
    await expectRefused(verifier().verify(`Bearer ${token}`), token, /not an access token/);
  });
  it('accepts a Keycloak access token (payload typ Bearer) even with a nonce', async () => {
    const token = await signToken(rsa, claims({ typ: 'Bearer', nonce: 'n-1' }), { header: { typ: 'JWT' } });
    await expect(verifier().verify(`Bearer ${token}`)).resolves.toMatchObject({ sub: 'user-1' });
  });
  it('enforces requiredTyp when configured (at+jwt, media-type form too)', async () => {
    const v = verifier({ requiredTyp: 'at+jwt' });
    const plain = await signToken(rsa, claims(), { header: { typ: 'JWT' } });
    await expectRefused(v.verify(`Bearer ${plain}`), plain, /typ/);
    const at = await signToken(rsa, claims(), { header: { typ: 'at+jwt' } });
    await expect(v.verify(`Bearer ${at}`)).resolves.toMatchObject({ sub: 'user-1' });
    const media = await signToken(rsa, claims(), { header: { typ: 'application/at+jwt' } });
    await expect(v.verify(`Bearer ${media}`)).resolves.toMatchObject({ sub: 'user-1' });
  });
});

describe('verify: claims mapped to the principal', () => {
  it('reads roles from a dotted claim path', async () => {
    const token = await signToken(rsa, claims({ roles: undefined, realm_access: { roles: ['coder', 'researcher'] } }));
    const p = await verifier({ rolesClaim: 'realm_access.roles' }).verify(`Bearer ${token}`);
    expect(p.roles).toEqual(['coder', 'researcher']);
    // The same token under the default claim has no roles.
    expect((await verifier().verify(`Bearer ${token}`)).roles).toEqual([]);
  });
  it('takes purpose_of_use in all three forms, ignoring foreign code systems', async () => {
    const token = await signToken(
      rsa,
      claims({
        purpose_of_use: ['TREAT', 'http://terminology.hl7.org/CodeSystem/v3-ActReason|HPAYMT', 'http://loinc.org|12345-6'],
        extensions: {
          ihe_iua: { purpose_of_use: [{ system: 'urn:oid:2.16.840.1.113883.5.8', code: 'HOPERAT' }, { system: 'http://example.org/x', code: 'SNEAKY' }] },
          'hl7-b2b': { purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#PUBHLTH'] },
        },
      }),
    );
    const p = await verifier().verify(`Bearer ${token}`);
    expect([...(p.tokenPurposes ?? [])].sort()).toEqual(['HOPERAT', 'HPAYMT', 'PUBHLTH', 'TREAT']);
  });
  it('treats a purpose claim with nothing recognisable as "no purpose allowed", not "unlimited"', async () => {
    const token = await signToken(rsa, claims({ purpose_of_use: ['http://example.org|TREAT'] }));
    expect((await verifier().verify(`Bearer ${token}`)).tokenPurposes).toEqual([]);
  });
  it('parses SMART scopes, v1 and v2, ignoring non-SMART scopes', async () => {
    const token = await signToken(rsa, claims({ scope: 'openid fhirUser patient/Observation.rs user/*.read launch/patient' }));
    const p = await verifier().verify(`Bearer ${token}`);
    expect(p.scopes?.map((s) => [s.context, s.resourceType, [...s.permissions].join('')])).toEqual([
      ['patient', 'Observation', 'rs'],
      ['user', '*', 'rs'],
    ]);
  });
});

describe('verify: key rotation through a JWKS server', () => {
  it('picks up a key published after the verifier was created, once the cooldown allows a refetch', async () => {
    const k1 = await makeKeyPair('RS256');
    const k2 = await makeKeyPair('ES256');
    const server = await startJwksServer([k1.publicJwk]);
    try {
      const v = verifier({ jwksUri: server.uri }, { jwksCooldownMs: 1500 });
      await expect(v.verify(`Bearer ${await signToken(k1, claims())}`)).resolves.toMatchObject({ sub: 'user-1' });
      expect(server.requests).toBe(1);

      server.setKeys([k1.publicJwk, k2.publicJwk]);
      const t2 = await signToken(k2, claims({ sub: 'user-2' }));
      // Within the cooldown the unknown kid is refused (fail closed) without hammering the IdP.
      await expectRefused(v.verify(`Bearer ${t2}`), t2, /NO_MATCHING_KEY/);
      expect(server.requests).toBe(1);

      await new Promise((r) => setTimeout(r, 1600));
      await expect(v.verify(`Bearer ${t2}`)).resolves.toMatchObject({ sub: 'user-2' });
      expect(server.requests).toBe(2);
    } finally {
      await server.close();
    }
  });
  it('fails closed when the JWKS cannot be fetched', async () => {
    const server = await startJwksServer([rsa.publicJwk]);
    server.setFailure(503);
    try {
      const token = await signToken(rsa, claims());
      await expectRefused(verifier({ jwksUri: server.uri }).verify(`Bearer ${token}`), token);
    } finally {
      await server.close();
    }
  });
  it('uses the injected fetch implementation', async () => {
    let calls = 0;
    const fetchImpl: VerifierOptions['fetchImpl'] = async () => {
      calls += 1;
      return new Response(JSON.stringify({ keys: [rsa.publicJwk] }), { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const v = verifier({ jwksUri: 'https://idp.invalid/jwks' }, { fetchImpl });
    await expect(v.verify(`Bearer ${await signToken(rsa, claims())}`)).resolves.toMatchObject({ sub: 'user-1' });
    expect(calls).toBe(1);
  });
});

describe('verify: local JWKS file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'phi-jwks-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  it('verifies against the keys in the file, read once at construction', async () => {
    const file = join(dir, 'jwks.json');
    await writeFile(file, JSON.stringify({ keys: [ec.publicJwk] }));
    const v = verifier({ jwksUri: undefined, jwksFile: file });
    // Changing the file afterwards has no effect: reload means building a new verifier.
    await writeFile(file, JSON.stringify({ keys: [rsa.publicJwk] }));
    await expect(v.verify(`Bearer ${await signToken(ec, claims())}`)).resolves.toMatchObject({ sub: 'user-1' });
    const rsaToken = await signToken(rsa, claims());
    await expectRefused(v.verify(`Bearer ${rsaToken}`), rsaToken, /NO_MATCHING_KEY/);
  });
  it('refuses a JWKS file holding private or symmetric keys', async () => {
    const file = join(dir, 'private.json');
    await writeFile(file, JSON.stringify({ keys: [{ ...rsa.publicJwk, d: 'AAAA' }] }));
    expect(() => createTokenVerifier(config({ jwksUri: undefined, jwksFile: file }))).toThrow(/private/);
    await writeFile(file, JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }));
    expect(() => createTokenVerifier(config({ jwksUri: undefined, jwksFile: file }))).toThrow(/symmetric/);
  });
  it('refuses a missing or empty file at construction', async () => {
    expect(() => createTokenVerifier(config({ jwksUri: undefined, jwksFile: join(dir, 'nope.json') }))).toThrow(/cannot read/);
    const file = join(dir, 'empty.json');
    await writeFile(file, JSON.stringify({ keys: [] }));
    expect(() => createTokenVerifier(config({ jwksUri: undefined, jwksFile: file }))).toThrow(/at least one key/);
  });
});

describe('verify: the principal cache', () => {
  it('returns the cached principal for the same token', async () => {
    const v = verifier();
    const token = await signToken(rsa, claims());
    const p1 = await v.verify(`Bearer ${token}`);
    expect(await v.verify(`Bearer ${token}`)).toBe(p1);
    // Disabled cache: every call verifies and builds a new principal.
    const nc = verifier({ tokenCacheSize: 0 });
    const q1 = await nc.verify(`Bearer ${token}`);
    const q2 = await nc.verify(`Bearer ${token}`);
    expect(q2).not.toBe(q1);
    expect(q2).toEqual(q1);
  });
  it('refuses a cached token once it has expired', async () => {
    const v = verifier({ clockToleranceSec: 0 });
    const token = await signToken(rsa, claims({ exp: NOW_S + 60 }));
    await v.verify(`Bearer ${token}`);
    v.clock.t = T0 + 61_000;
    await expectRefused(v.verify(`Bearer ${token}`), token, /EXPIRED/);
  });
  it('re-verifies after five minutes even when the token lives longer', async () => {
    const v = verifier();
    const token = await signToken(rsa, claims());
    const p1 = await v.verify(`Bearer ${token}`);
    v.clock.t = T0 + 4 * 60_000;
    expect(await v.verify(`Bearer ${token}`)).toBe(p1);
    v.clock.t = T0 + 5 * 60_000 + 1;
    const p3 = await v.verify(`Bearer ${token}`);
    expect(p3).not.toBe(p1);
    expect(p3).toEqual(p1);
  });
  it('evicts the least recently used entry when full', async () => {
    const v = verifier({ tokenCacheSize: 2 });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((sub) => signToken(rsa, claims({ sub }))));
    const pa = await v.verify(`Bearer ${a}`);
    const pb = await v.verify(`Bearer ${b}`);
    expect(await v.verify(`Bearer ${a}`)).toBe(pa); // a is now the most recent
    await v.verify(`Bearer ${c}`); // evicts b
    expect(await v.verify(`Bearer ${a}`)).toBe(pa);
    expect(await v.verify(`Bearer ${b}`)).not.toBe(pb);
  });
  it('does not let a cached token bypass the header checks', async () => {
    const v = verifier();
    const token = await signToken(rsa, claims());
    await v.verify(`Bearer ${token}`);
    await expectRefused(v.verify([`Bearer ${token}`, `Bearer ${token}`]), token, /expected one/);
  });
  it('answers every failure as a rejected promise, never a synchronous throw, and fails closed', async () => {
    const v = verifier();
    const token = await signToken(rsa, claims());
    let call: Promise<unknown> | undefined;
    expect(() => {
      call = v.verify('Basic dXNlcjpwYXNz');
    }).not.toThrow();
    await expectRefused(call!, token, /unsupported scheme basic/);
    // A failing clock on the cached path is an unexpected error: refused without its message.
    let broken = false;
    const c = verifier({}, { now: () => (broken ? (undefined as unknown as { x: number }).x : T0) });
    await c.verify(`Bearer ${token}`);
    broken = true;
    const ge = await expectRefused(c.verify(`Bearer ${token}`), token);
    expect(ge.detail).toBe('unexpected TypeError');
  });
});
