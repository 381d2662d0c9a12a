/**
 * BYPASSES 5: audience and token-type confusion. Tokens that are validly signed by the trusted IdP
 * but are not access tokens for this gateway (ID tokens, refresh tokens, logout tokens, tokens with
 * no `aud`, another `aud`, an `aud` list without the gateway, tokens minted for another resource
 * server) answer 401 invalid_token with a Bearer challenge and are never forwarded.
 *
 * The real IdP only issues access tokens (`typ: at+jwt`). To sign ID-token-shaped JWTs (`typ: JWT`
 * header, `nonce`) the gateway's JWKS URI points at a small server publishing the IdP's keys plus one
 * more key held by this test: a second signing key of the same IdP, as IdPs that sign ID and access
 * tokens with different keys publish.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, receive } from './support.js';

const PATH = `/Patient/${DEMO.patients.alice}`;

let stack: Stack;
let jwksServer: Server;
let idpJwksUri = '';
let signingKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
const kid = `second-key-${randomUUID()}`;

beforeAll(async () => {
  const pair = await generateKeyPair('RS256', { extractable: true });
  signingKey = pair.privateKey;
  const extra = { ...(await exportJWK(pair.publicKey)), kid, alg: 'RS256', use: 'sig' };
  jwksServer = createServer((_req, res) => {
    fetch(idpJwksUri)
      .then((r) => r.json() as Promise<{ keys: unknown[] }>)
      .then((jwks) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [...jwks.keys, extra] }));
      })
      .catch(() => res.writeHead(502).end());
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  const merged = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
  stack = await startStack({
    configure: (c) => {
      idpJwksUri = c.auth.jwksUri ?? '';
      return { ...c, auth: { ...c.auth, jwksUri: merged } };
    },
  });
});

afterAll(async () => {
  await stack?.close();
  await new Promise<void>((resolve) => (jwksServer ? jwksServer.close(() => resolve()) : resolve()));
});

/** Claims of a genuine clinician access token from this IdP, changed by `extra` (undefined removes). */
function claims(extra: Record<string, unknown> = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  const base: Record<string, unknown> = {
    iss: stack.idp.issuer,
    aud: stack.idp.audience,
    sub: 'clinician-app',
    client_id: 'clinician-app',
    roles: ['clinician'],
    jti: randomUUID(),
    iat: now,
    exp: now + 600,
    ...extra,
  };
  for (const k of Object.keys(base)) if (base[k] === undefined) delete base[k];
  return base as JWTPayload;
}

async function signed(header: Record<string, unknown>, payload: JWTPayload): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid, ...header }).sign(signingKey);
}

const clinician = { purpose: 'TREAT' } as const;

async function expectRejected(token: string): Promise<void> {
  const r = await receive(await stack.get(PATH, { ...clinician, token }));
  expectError(r, 401, 'invalid-token');
  expect(r.headers.get('www-authenticate')).toMatch(/^Bearer\b.*\berror="invalid_token"/);
  // Neither the chart nor the token (or its claims) comes back.
  expectAbsent(r, [DEMO.names.alice, DEMO.ssn.alice, ...token.split('.').filter((s) => s.length > 8)]);
  const rec = await auditFor(stack, r.requestId);
  expect(rec.decision).toBe('deny');
  expect(rec.status).toBe(401);
  expect(rec.upstreamStatus).toBeUndefined();
  expect(rec.disclosed.resources).toEqual([]);
}

describe('the controls are accepted (the refusals below are for the right reason)', () => {
  it('an access token from the IdP itself', async () => {
    const r = await receive(await stack.get(PATH, { ...clinician, role: 'clinician' }));
    expect(r.status, r.text).toBe(200);
    expect((await auditFor(stack, r.requestId)).upstreamStatus).toBe(200);
  });

  it('an at+jwt access token signed with the second key', async () => {
    const r = await receive(await stack.get(PATH, { ...clinician, token: await signed({ typ: 'at+jwt' }, claims()) }));
    expect(r.status, r.text).toBe(200);
  });

  it('an aud array that contains the gateway', async () => {
    const r = await receive(await stack.get(PATH, { ...clinician, token: await stack.token('clinician', { aud: ['other-api', stack.idp.audience] }) }));
    expect(r.status, r.text).toBe(200);
  });
});

describe('ID tokens presented as access tokens', () => {
  it.each<[string, Record<string, unknown>, Record<string, unknown>]>([
    ['typ JWT header with a nonce (OIDC ID token whose client id is the gateway audience)', { typ: 'JWT' }, { nonce: 'n-0S6_WzA2Mj', auth_time: 1, at_hash: 'x' }],
    ['no typ header with a nonce', {}, { nonce: 'n-0S6_WzA2Mj' }],
    ['Keycloak ID token (payload typ ID)', { typ: 'JWT' }, { typ: 'ID', azp: 'clinician-app' }],
    ['Cognito ID token (token_use id)', { typ: 'JWT' }, { token_use: 'id' }],
    ['Keycloak ID token with a nonce (payload typ ID)', { typ: 'JWT' }, { typ: 'ID', nonce: 'n' }],
  ])('%s -> 401', async (_name, header, extra) => {
    await expectRejected(await signed(header, claims(extra)));
  });

  it('an ID-token-shaped token from the real IdP (payload typ ID, nonce) -> 401', async () => {
    await expectRejected(await stack.token('clinician', { typ: 'ID', nonce: 'n' }));
  });
});

describe('refresh and other non-access tokens', () => {
  it.each<[string, Record<string, unknown>, Record<string, unknown>]>([
    ['token_use refresh (Cognito)', { typ: 'JWT' }, { token_use: 'refresh' }],
    ['Keycloak refresh token (payload typ Refresh)', { typ: 'JWT' }, { typ: 'Refresh' }],
    ['Keycloak offline token (payload typ Offline)', { typ: 'JWT' }, { typ: 'Offline' }],
    ['Keycloak refresh token without a typ header', {}, { typ: 'Refresh' }],
    ['logout token (typ logout+jwt)', { typ: 'logout+jwt' }, { events: { 'http://schemas.openid.net/event/backchannel-logout': {} } }],
    ['DPoP proof (typ dpop+jwt)', { typ: 'dpop+jwt' }, { htm: 'GET', htu: 'x' }],
    ['security event token (typ secevent+jwt)', { typ: 'secevent+jwt' }, {}],
  ])('%s -> 401', async (_name, header, extra) => {
    await expectRejected(await signed(header, claims(extra)));
  });

  it.each<[string, Record<string, unknown>]>([
    ['token_use refresh', { token_use: 'refresh' }],
    ['payload typ Refresh', { typ: 'Refresh' }],
  ])('from the real IdP: %s -> 401', async (_name, extra) => {
    await expectRejected(await stack.token('clinician', extra));
  });
});

describe('audience confusion', () => {
  it.each<[string, Record<string, unknown>]>([
    ['another aud', { aud: 'https://billing-api.example-hospital.org' }],
    ['an empty aud array', { aud: [] }],
    ['an aud array without the gateway', { aud: ['https://billing-api.example-hospital.org', 'account'] }],
    ['aud differing only by case', { aud: 'PHI-GATEWAY' }],
    ['aud with a trailing slash', { aud: 'phi-gateway/' }],
    ['aud extending the gateway name', { aud: 'phi-gateway-admin' }],
    ['aud a prefix of the gateway name', { aud: 'phi-gate' }],
    ['aud as an object', { aud: { 0: 'phi-gateway' } }],
  ])('real IdP token with %s -> 401', async (_name, extra) => {
    await expectRejected(await stack.token('clinician', extra));
  });

  it('a token the same IdP minted for another resource server (its own aud, scopes and roles) -> 401', async () => {
    const token = await stack.token('clinician', {
      aud: 'https://lab-results.example-hospital.org/api',
      scope: 'user/*.rs',
      roles: ['clinician'],
      purpose_of_use: ['TREAT'],
    });
    await expectRejected(token);
  });

  // The real IdP refuses to mint these (its token endpoint errors), so the second key signs them.
  it.each<[string, Record<string, unknown>]>([
    ['no aud', { aud: undefined }],
    ['an empty aud', { aud: '' }],
    ['aud = the client id, as ID tokens carry', { aud: 'clinician-app' }],
    ['aud null', { aud: null }],
  ])('an at+jwt token signed with the second key with %s -> 401', async (_name, extra) => {
    await expectRejected(await signed({ typ: 'at+jwt' }, claims(extra)));
  });

  it('every refusal was audited as a denial and none reached the upstream', async () => {
    const denied = (await stack.auditRecords()).filter((r) => r.status === 401);
    expect(denied.length).toBeGreaterThanOrEqual(25);
    for (const r of denied) {
      expect(r.upstreamStatus).toBeUndefined();
      expect(r.disclosed.patients).toEqual([]);
    }
  });

  it('the logs never hold a rejected token', async () => {
    const token = await stack.token('clinician', { aud: 'https://billing-api.example-hospital.org' });
    await receive(await stack.get(PATH, { ...clinician, token }));
    const logs = stack.logs.join('\n');
    expect(logs).not.toContain(token.split('.')[2]!);
    expect(logs).not.toContain(token.split('.')[1]!);
  });
});
