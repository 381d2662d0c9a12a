/**
 * Token attacks (BYPASSES 5 and the list after 15): alg none, HS/RS key confusion, unknown or
 * spoofed kid, embedded keys, expired and not-yet-valid tokens, wrong or missing audience,
 * ID tokens and other non-access JWTs. Every one is 401 invalid_token with a Bearer challenge,
 * audited as a denial, and the upstream is never called.
 */
import { createHmac, createPublicKey } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, receive } from './support.js';

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

let up: FaultyUpstream;
let stack: Stack;
let realKid: string;
let realPublicPem: string;

beforeAll(async () => {
  up = await startFaultyUpstream({ '/Patient/p1': fhirJson({ resourceType: 'Patient', id: 'p1', gender: 'female' }) });
  stack = await startStack({ upstreamUrl: up.url });
  const jwks = (await (await fetch(stack.idp.jwksUri)).json()) as { keys: Array<Record<string, string>> };
  const jwk = jwks.keys[0]!;
  realKid = jwk.kid!;
  realPublicPem = createPublicKey({ key: jwk as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

function claims(extra: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { iss: stack.idp.issuer, aud: stack.idp.audience, sub: 'mallory', roles: ['clinician'], iat: now, exp: now + 600, ...extra };
}

async function selfSigned(header: Record<string, unknown>, payload = claims()): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const h = { alg: 'RS256', ...header } as Record<string, unknown>;
  if (h.jwk === 'embed') h.jwk = jwk;
  return new SignJWT(payload).setProtectedHeader(h as never).sign(privateKey);
}

const attacks: Array<[string, () => Promise<string>]> = [
  ['alg none, empty signature', async () => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims())}.`],
  ['alg none with a junk signature', async () => `${b64({ alg: 'none', kid: realKid })}.${b64(claims())}.AAAA`],
  ['alg None (case variant)', async () => `${b64({ alg: 'None', kid: realKid })}.${b64(claims())}.AAAA`],
  [
    'HS256 signed with the RS public key (key confusion)',
    async () => {
      const head = `${b64({ alg: 'HS256', typ: 'JWT', kid: realKid })}.${b64(claims())}`;
      return `${head}.${createHmac('sha256', realPublicPem).update(head).digest('base64url')}`;
    },
  ],
  ['unknown kid', () => selfSigned({ kid: 'not-in-the-jwks' })],
  ['the real kid, another key', () => selfSigned({ kid: realKid })],
  ['embedded jwk header', () => selfSigned({ kid: realKid, jwk: 'embed' })],
  ['jku pointing elsewhere', () => selfSigned({ kid: realKid, jku: 'http://127.0.0.1:1/jwks' })],
  ['no kid at all', () => selfSigned({})],
  ['expired (beyond the clock tolerance)', () => stack.token('clinician', { exp: Math.floor(Date.now() / 1000) - 3600 })],
  ['not yet valid', () => stack.token('clinician', { nbf: Math.floor(Date.now() / 1000) + 3600 })],
  ['another audience', () => stack.token('clinician', { aud: 'some-other-api' })],
  ['audience list without the gateway', () => stack.token('clinician', { aud: ['a', 'b'] })],
  ['another issuer', () => stack.token('clinician', { iss: 'https://evil.example' })],
  ['no exp', () => stack.token('clinician', { exp: undefined })],
  ['no sub', () => stack.token('clinician', { sub: undefined })],
  ['ID token (nonce, payload typ ID)', () => stack.token('clinician', { nonce: 'n', typ: 'ID' })],
  ['refresh token (token_use)', () => stack.token('clinician', { token_use: 'refresh' })],
  ['tampered payload (roles swapped after signing)', async () => {
    const t = await stack.token('billing');
    const [h, p, s] = t.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    payload.roles = ['clinician'];
    return `${h}.${b64(payload)}.${s}`;
  }],
  ['signature stripped', async () => `${(await stack.token('clinician')).split('.').slice(0, 2).join('.')}.`],
  ['JWE-shaped (5 segments)', async () => 'a.b.c.d.e'],
];

describe('forged and unusable tokens', () => {
  it.each(attacks)('%s -> 401 invalid_token, never forwarded', async (_name, make) => {
    const token = await make();
    const before = up.requests.length;
    const r = await receive(await stack.get('/Patient/p1', { token, purpose: 'TREAT' }));
    expectError(r, 401, 'invalid-token');
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token"/);
    expect(up.requests.length).toBe(before);
    expectAbsent(r, [...token.split('.').filter((seg) => seg.length > 8), 'mallory']);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.decision).toBe('deny');
    expect(JSON.stringify(rec)).not.toContain(token);
  });

  it('the logs never hold a token', async () => {
    const token = await stack.token('clinician');
    await (await stack.get('/Patient/p1', { token, purpose: 'TREAT' })).arrayBuffer();
    await (await stack.get('/Patient/p1', { token: `${token}x`, purpose: 'TREAT' })).arrayBuffer();
    const signature = token.split('.')[2]!;
    expect(stack.logs.join('\n')).not.toContain(signature);
  });

  it('the same request with a genuine token goes through (the attacks fail for the right reason)', async () => {
    const r = await receive(await stack.get('/Patient/p1', { role: 'clinician', purpose: 'TREAT' }));
    expect(r.status).toBe(200);
  });
});

describe('missing or malformed credentials', () => {
  it.each([
    ['no Authorization', {}],
    ['Basic credentials', { authorization: 'Basic dXNlcjpwYXNz' }],
    ['Bearer without token', { authorization: 'Bearer ' }],
    ['token without scheme', { authorization: 'eyJhbGciOi.eyJzdWIi.sig' }],
  ])('%s -> 401', async (_name, headers) => {
    const r = await receive(await stack.get('/Patient/p1', { purpose: 'TREAT', headers: headers as Record<string, string> }));
    expectError(r, 401, 'invalid-token');
  });
});
