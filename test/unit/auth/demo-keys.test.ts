import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEMO_AUDIENCE, DEMO_ISSUER, ensureDemoKeys, mintDemoToken } from '../../../src/auth/demo-keys.js';
import { createTokenVerifier } from '../../../src/auth/verify.js';
import { parseTtl, run } from '../../../src/cli/token.js';
import type { AuthConfig } from '../../../src/config/types.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phi-demo-keys-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function demoAuth(jwksFile: string): AuthConfig {
  return {
    issuer: DEMO_ISSUER,
    audience: DEMO_AUDIENCE,
    jwksUri: undefined,
    jwksFile,
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    rolesClaim: 'roles',
    clockToleranceSec: 30,
    tokenCacheSize: 10,
    requiredTyp: 'at+jwt',
  };
}

const posix = process.platform !== 'win32';

describe('ensureDemoKeys', () => {
  it('generates an ES256 key once, private file 0600, public JWKS without private parts', async () => {
    const k = await ensureDemoKeys(dir);
    expect(k.issuer).toBe(DEMO_ISSUER);
    expect(k.audience).toBe(DEMO_AUDIENCE);
    expect(k.privateJwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', kid: k.kid });
    expect(typeof k.privateJwk.d).toBe('string');
    if (posix) expect((await stat(join(dir, 'demo-signing-key.json'))).mode & 0o777).toBe(0o600);
    const jwks = JSON.parse(await readFile(k.jwksFile, 'utf8')) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0].kid).toBe(k.kid);
    expect(jwks.keys[0].d).toBeUndefined();
  });
  it('reuses the key on the next call', async () => {
    const a = await ensureDemoKeys(dir);
    const b = await ensureDemoKeys(dir);
    expect(b.kid).toBe(a.kid);
    expect(b.privateJwk.d).toBe(a.privateJwk.d);
  });
  it('agrees on one key when started concurrently', async () => {
    const keys = await Promise.all([ensureDemoKeys(dir), ensureDemoKeys(dir), ensureDemoKeys(dir)]);
    expect(new Set(keys.map((k) => k.kid)).size).toBe(1);
  });
  it('rewrites a JWKS that no longer matches the signing key', async () => {
    const k = await ensureDemoKeys(dir);
    await writeFile(k.jwksFile, JSON.stringify({ keys: [] }));
    await ensureDemoKeys(dir);
    const jwks = JSON.parse(await readFile(k.jwksFile, 'utf8')) as { keys: Array<{ kid: string }> };
    expect(jwks.keys.map((x) => x.kid)).toEqual([k.kid]);
  });
  it.skipIf(!posix)('refuses a signing key other users can read', async () => {
    await ensureDemoKeys(dir);
    await chmod(join(dir, 'demo-signing-key.json'), 0o644);
    await expect(ensureDemoKeys(dir)).rejects.toThrow(/readable by other users/);
  });
  it('refuses a signing key file that is not an ES256 private JWK', async () => {
    await writeFile(join(dir, 'demo-signing-key.json'), JSON.stringify({ kty: 'RSA', n: 'x', e: 'AQAB' }), { mode: 0o600 });
    await expect(ensureDemoKeys(dir)).rejects.toThrow(/not an ES256 private JWK/);
  });
});

describe('mintDemoToken', () => {
  it('mints an at+jwt access token the gateway verifier accepts with the demo JWKS', async () => {
    const k = await ensureDemoKeys(dir);
    const token = await mintDemoToken(k, { role: 'billing', purpose: ['HPAYMT'], patient: 'pat-1', scope: 'patient/Claim.rs', familyName: 'Doe', ttlSec: 120 });
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'ES256', typ: 'at+jwt', kid: k.kid });
    const claims = decodeJwt(token);
    expect((claims.exp as number) - (claims.iat as number)).toBe(120);
    const p = await createTokenVerifier(demoAuth(k.jwksFile)).verify(`Bearer ${token}`);
    expect(p).toMatchObject({
      iss: DEMO_ISSUER,
      sub: 'demo-billing',
      roles: ['billing'],
      tokenPurposes: ['HPAYMT'],
      patient: 'pat-1',
      familyName: 'Doe',
      clientId: 'phi-gateway-demo',
    });
    expect(p.scopes).toHaveLength(1);
  });
  it('omits purpose, patient and scope unless asked, so the token is not limited by them', async () => {
    const claims = decodeJwt(await mintDemoToken(await ensureDemoKeys(dir), { role: 'clinician', sub: 'dr-1' }));
    expect(claims.sub).toBe('dr-1');
    expect(claims).not.toHaveProperty('purpose_of_use');
    expect(claims).not.toHaveProperty('patient');
    expect(claims).not.toHaveProperty('scope');
  });
  it('refuses an empty role or a bad ttl', async () => {
    const k = await ensureDemoKeys(dir);
    await expect(mintDemoToken(k, { role: '' })).rejects.toThrow(/role/);
    await expect(mintDemoToken(k, { role: 'x', ttlSec: 0 })).rejects.toThrow(/ttl/);
    await expect(mintDemoToken(k, { role: 'x', ttlSec: 1.5 })).rejects.toThrow(/ttl/);
  });
});

function sink(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return { stream, text: () => chunks.join('') };
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = sink();
  const err = sink();
  const code = await run(argv, { stdout: out.stream, stderr: err.stream, env: {} });
  return { code, out: out.text(), err: err.text() };
}

describe('phi-gateway token', () => {
  it('prints only the JWT, verifiable with the demo JWKS', async () => {
    const r = await cli(['--role', 'coder', '--purpose', 'HPAYMT', '--purpose', 'HOPERAT', '--patient', 'Patient/9', '--ttl', '15m', '--keys', dir]);
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const token = r.out.trim();
    const claims = decodeJwt(token);
    expect((claims.exp as number) - (claims.iat as number)).toBe(900);
    const p = await createTokenVerifier(demoAuth(join(dir, 'demo-jwks.json'))).verify(`Bearer ${token}`);
    expect(p).toMatchObject({ roles: ['coder'], tokenPurposes: ['HPAYMT', 'HOPERAT'], patient: '9', sub: 'demo-coder' });
  });
  it('sets the fhirUser claim with --fhir-user, and refuses one that is not a reference', async () => {
    const r = await cli(['--role', 'clinician', '--sub', 'dr-reyes', '--fhir-user', 'Practitioner/prac-reyes', '--keys', dir]);
    expect(r.code).toBe(0);
    const token = r.out.trim();
    expect(decodeJwt(token).fhirUser).toBe('Practitioner/prac-reyes');
    const p = await createTokenVerifier(demoAuth(join(dir, 'demo-jwks.json'))).verify(`Bearer ${token}`);
    expect(p).toMatchObject({ roles: ['clinician'], sub: 'dr-reyes', fhirUser: 'Practitioner/prac-reyes' });
    expect(decodeJwt((await cli(['--role', 'clinician', '--keys', dir])).out.trim())).not.toHaveProperty('fhirUser');
    for (const bad of ['prac-reyes', 'Practitioner/', 'practitioner/prac-reyes', 'Practitioner/a b']) {
      const refused = await cli(['--role', 'clinician', '--fhir-user', bad, '--keys', dir]);
      expect(refused.code, bad).toBe(2);
      expect(refused.out).toBe('');
      expect(refused.err).toMatch(/--fhir-user/);
    }
  });
  it('requires --role', async () => {
    const r = await cli(['--keys', dir]);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/--role is required/);
  });
  it.each(['0s', '10', '1w', '2d', '-1h', '1.5h'])('refuses --ttl %s', async (ttl) => {
    const r = await cli(['--role', 'billing', '--ttl', ttl, '--keys', dir]);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
  });
  it('refuses unknown options and positionals', async () => {
    expect((await cli(['--role', 'billing', '--admin', '--keys', dir])).code).toBe(2);
    expect((await cli(['billing', '--keys', dir])).code).toBe(2);
  });
  it('parses ttl units', () => {
    expect([parseTtl('30s'), parseTtl('15m'), parseTtl('1h'), parseTtl('1d')]).toEqual([30, 900, 3600, 86_400]);
    expect(parseTtl('1H')).toBeUndefined();
  });
});
