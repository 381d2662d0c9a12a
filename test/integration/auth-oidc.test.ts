import { decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, type TokenVerifier } from '../../src/auth/verify.js';
import type { AuthConfig } from '../../src/config/types.js';
import { GatewayError } from '../../src/errors.js';
import { type Idp, startIdp } from '../helpers/idp.js';

function authConfig(idp: Idp, over: Partial<AuthConfig> = {}): AuthConfig {
  return {
    issuer: idp.issuer,
    audience: idp.audience,
    jwksUri: idp.jwksUri,
    jwksFile: undefined,
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    rolesClaim: 'roles',
    clockToleranceSec: 30,
    tokenCacheSize: 100,
    requiredTyp: 'at+jwt',
    ...over,
  };
}

async function refusal(p: Promise<unknown>): Promise<GatewayError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(GatewayError);
  expect((e as GatewayError).code).toBe('invalid-token');
  return e as GatewayError;
}

describe('tokens from a real OpenID provider (oidc-provider), verified through its JWKS URI', () => {
  let idp: Idp;
  let verifier: TokenVerifier;
  beforeAll(async () => {
    idp = await startIdp();
    verifier = createTokenVerifier(authConfig(idp));
  });
  afterAll(async () => {
    await idp.close();
  });

  it('issues RFC 9068 access tokens that the verifier accepts, with the role from the client', async () => {
    const token = await idp.tokenFor('billing');
    expect(decodeProtectedHeader(token).typ).toBe('at+jwt');
    const p = await verifier.verify(`Bearer ${token}`);
    expect(p.iss).toBe(idp.issuer);
    expect(p.roles).toEqual(['billing']);
    expect(p.sub).toBe('billing-app');
    expect(p.clientId).toBe('billing-app');
    expect(typeof p.jti).toBe('string');
    expect(p.exp).toBeGreaterThan(Date.now() / 1000);
  });

  it('carries extra claims into the principal (purpose, patient, scope, subject)', async () => {
    const token = await idp.tokenFor('clinician', {
      sub: 'dr-house',
      patient: 'Patient/pat-1',
      scope: 'patient/Observation.rs launch/patient',
      extensions: { ihe_iua: { purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }] } },
    });
    const p = await verifier.verify(`Bearer ${token}`);
    expect(p).toMatchObject({ sub: 'dr-house', roles: ['clinician'], patient: 'pat-1', tokenPurposes: ['TREAT'] });
    expect(p.scopes?.map((s) => `${s.context}/${s.resourceType}.${[...s.permissions].join('')}`)).toEqual(['patient/Observation.rs']);
  });

  it('refuses a real token for another audience or from another issuer', async () => {
    const other = await idp.tokenFor('billing', { aud: 'some-other-api' });
    expect((await refusal(verifier.verify(`Bearer ${other}`))).detail).toMatch(/aud/);
    const wrongIss = createTokenVerifier(authConfig(idp, { issuer: 'https://idp.example.org' }));
    expect((await refusal(wrongIss.verify(`Bearer ${await idp.tokenFor('billing')}`))).detail).toMatch(/iss/);
  });

  it("refuses a real token whose key another provider holds (another IdP's JWKS)", async () => {
    const other = await startIdp({ alg: 'ES256' });
    try {
      const token = await other.tokenFor('billing');
      // Same issuer string configured, so only the signature separates them.
      const v = createTokenVerifier(authConfig(idp, { issuer: other.issuer }));
      expect((await refusal(v.verify(`Bearer ${token}`))).detail).toMatch(/NO_MATCHING_KEY/);
      const good = createTokenVerifier(authConfig(other));
      await expect(good.verify(`Bearer ${token}`)).resolves.toMatchObject({ roles: ['billing'] });
    } finally {
      await other.close();
    }
  });

  it('refuses a real token once expired', async () => {
    const token = await idp.tokenFor('coder');
    const later = createTokenVerifier(authConfig(idp), { now: () => Date.now() + 3_600_000 });
    expect((await refusal(later.verify(`Bearer ${token}`))).detail).toMatch(/EXPIRED/);
  });
});
