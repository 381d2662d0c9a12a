/**
 * Tokens shaped exactly as Keycloak, Okta and Azure AD (Entra ID, v2.0 access tokens) issue them,
 * each mapped to policy roles by gateway.yaml alone, driving a real in-process gateway in front of
 * the seeded demo FHIR server. Claim sets follow the providers' documentation: Keycloak's access
 * token (realm_access, resource_access, groups with full paths, azp, typ Bearer, session_state,
 * allowed-origins, `scope: openid profile email`, and the Alvearie SMART extension's `patient_id`),
 * Okta's custom authorization server (ver 1, `AT.` jti, cid, uid, `scp` array, groups, the SMART
 * template's `launch_response_patient`), and Entra ID v2.0 (aud = the API's client id, tenant issuer
 * ending in /v2.0, azp, azpacr, oid, tid, uti, rh, `roles` with dotted app roles, `scp` string, ver 2.0,
 * `fhirUser` as Azure Health Data Services requires).
 *
 * Also here: the Bearer challenge names the failed check (never token contents) and the request
 * log line carries the denial code; the purpose comes from the token when the header is absent and
 * the token names exactly one; X-Forwarded-For is believed only from a trusted proxy.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { loadGatewayConfig } from '../../src/config/load.js';
import { DEMO } from '../../src/demo/data.js';
import { createLogger } from '../../src/server/logger.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { readAll, recordsOf } from '../helpers/audit.js';
import { testPolicyFile } from '../helpers/gateway.js';
import { hmacToken, type JwksServer, makeKeyPair, signToken, startJwksServer, type TestKeyPair } from '../helpers/keys.js';
import { type TestUpstream, withUpstream } from '../helpers/upstream.js';

const ALICE = DEMO.patients.alice;
const ALICE_PHONE = DEMO.phones.alice;
const HTN_NOTE = DEMO.notes.hypertension;
const NOW = () => Math.floor(Date.now() / 1000);
// The shipped policy without its care-relationship requirements: these tokens name no fhirUser.
const TEST_POLICY = testPolicyFile();
afterAll(() => TEST_POLICY.remove());

interface Gw {
  readonly gateway: RunningGateway;
  readonly url: string;
  readonly auditDir: string;
  readonly logs: string[];
  readonly dir: string;
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly body: Record<string, unknown>;
  readonly requestId: string;
}

let up: TestUpstream;
const started: Gw[] = [];

/** A gateway started from a gateway.yaml written here: what is being tested is that file alone. */
async function startFromYaml(authYaml: string, topYaml = ''): Promise<Gw> {
  const dir = mkdtempSync(join(tmpdir(), 'phi-idp-'));
  const auditDir = join(dir, 'audit');
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `version: 1
listen: 127.0.0.1:0
adminListen: 127.0.0.1:0
policy: ${TEST_POLICY.file}
upstream:
  url: ${up.url}
auth:
${authYaml}
audit:
  sink: file
  path: ${auditDir}
logLevel: info
${topYaml}`,
  );
  const config = loadGatewayConfig(file, {});
  const logs: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void logs.push(line) });
  const gateway = await startGateway(config, { logger, admin: false });
  const gw = { gateway, url: gateway.url, auditDir, logs, dir };
  started.push(gw);
  return gw;
}

async function call(gw: Gw, path: string, opts: { token?: string; purpose?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.purpose !== undefined) headers['x-purpose-of-use'] = opts.purpose;
  const res = await fetch(`${gw.url}${path}`, { headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: JSON.parse(text) as Record<string, unknown>, requestId: res.headers.get('x-request-id') ?? '' };
}

function errorCode(a: Answer): string | undefined {
  const issue = (a.body.issue as Array<{ details?: { coding?: Array<{ code?: string }> } }> | undefined)?.[0];
  return issue?.details?.coding?.[0]?.code;
}

function ids(a: Answer): string[] {
  return ((a.body.entry as Array<{ resource: { resourceType: string; id: string } }> | undefined) ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`);
}

async function auditRecord(gw: Gw, requestId: string): Promise<ChainedRecord> {
  for (let i = 0; i < 50; i++) {
    const rec = recordsOf(await readAll(`file:${gw.auditDir}`)).find((r) => r.id === requestId);
    if (rec !== undefined) return rec;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no audit record for ${requestId}`);
}

function completedLine(gw: Gw, requestId: string): Record<string, unknown> {
  const line = gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === requestId && l.msg === 'request completed');
  if (line === undefined) throw new Error(`no request log line for ${requestId}`);
  return line;
}

// ---- Keycloak -------------------------------------------------------------------------------

const KC_ISSUER = 'https://sso.example-hospital.org/realms/clinical';
let kcKey: TestKeyPair;
let kcJwks: JwksServer;

/** A Keycloak 24 access token for a user of the `smart-app` client with a `phi-gateway` audience mapper. */
function keycloakClaims(over: JWTPayload = {}): JWTPayload {
  const t = NOW();
  const session = randomUUID();
  return {
    exp: t + 300,
    iat: t,
    auth_time: t - 60,
    jti: randomUUID(),
    iss: KC_ISSUER,
    aud: ['phi-gateway', 'account'],
    sub: 'f1c4a2e0-3b7d-4e59-9a61-2d8c0b7e5f13',
    typ: 'Bearer',
    azp: 'smart-app',
    session_state: session,
    acr: '1',
    'allowed-origins': ['https://apps.example-hospital.org'],
    realm_access: { roles: ['offline_access', 'uma_authorization', 'default-roles-clinical'] },
    resource_access: { account: { roles: ['manage-account', 'manage-account-links', 'view-profile'] } },
    scope: 'openid profile email',
    sid: session,
    email_verified: true,
    name: 'Maria Reyes',
    groups: ['/clinician'],
    preferred_username: 'mreyes',
    given_name: 'Maria',
    family_name: 'Reyes',
    email: 'maria.reyes@example-hospital.org',
    ...over,
  };
}

const keycloak = (over: JWTPayload = {}) => signToken(kcKey, keycloakClaims(over), { header: { typ: 'JWT' } });

const keycloakAuth = (scopeless: 'refuse' | 'roles-only') => `  issuer: ${KC_ISSUER}
  audience: phi-gateway
  jwksUri: ${kcJwks.uri}
  rolesClaim: [realm_access.roles, groups]
  roleMap:
    /clinician: clinician
    /hospital/billing-office: billing
  patientClaims: [patient_id]
  scopelessTokens: ${scopeless}
  clockToleranceSec: 5`;

// ---- Okta -----------------------------------------------------------------------------------

const OKTA_ISSUER = 'https://dev-31415926.okta.com/oauth2/aus1smartfhir';
let oktaKey: TestKeyPair;
let oktaJwks: JwksServer;

/** An Okta custom authorization server access token (the SMART-on-FHIR template's claims). */
function oktaClaims(over: JWTPayload = {}): JWTPayload {
  const t = NOW();
  return {
    ver: 1,
    jti: `AT.${randomUUID().replace(/-/g, '')}`,
    iss: OKTA_ISSUER,
    aud: 'api://phi-gateway',
    iat: t,
    exp: t + 3600,
    cid: '0oa9smartapp4Q2bX5d7',
    uid: '00u7reyes1Vh3Kq0x5d7',
    scp: ['openid', 'fhirUser', 'launch/patient', 'patient/Observation.rs'],
    auth_time: t - 30,
    sub: 'maria.reyes@example-hospital.org',
    groups: ['Everyone', 'Clinicians'],
    launch_response_patient: ALICE,
    ...over,
  };
}

// Okta access tokens carry no `typ` header.
const okta = (over: JWTPayload = {}) => signToken(oktaKey, oktaClaims(over));

// ---- Azure AD (Entra ID) v2.0 ---------------------------------------------------------------

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const AZ_ISSUER = `https://login.microsoftonline.com/${TENANT}/v2.0`;
const AZ_API = '6e74172b-be56-4843-9ff4-e66a39bb12e3';
let azKey: TestKeyPair;
let azJwks: JwksServer;

function azureClaims(over: JWTPayload = {}): JWTPayload {
  const t = NOW();
  return {
    aud: AZ_API,
    iss: AZ_ISSUER,
    iat: t,
    nbf: t,
    exp: t + 4199,
    aio: 'AWQAm/8WAAAAnq1mE3vAIbXaUm4zRl6JUX2cOC5aFLPq4YQ5w6kF3ZyXrD9mE4fB0uS7jH2tN8p',
    azp: 'a1b2c3d4-0000-4bbb-8ccc-0123456789ab',
    azpacr: '0',
    name: 'Maria Reyes',
    oid: '2f3e1d4c-5b6a-4978-8a9b-0c1d2e3f4a5b',
    preferred_username: 'maria.reyes@example-hospital.org',
    rh: '0.AXEAv4j5cvGGr0GRqy180BHbR2kXdG5W6QNIn_TmajmbEuMBAAA.',
    roles: ['Clinician.ReadWrite'],
    scp: 'user_impersonation',
    sub: 'b5Vg9Lz2yKQ0mX8pR3tW7nC1dF6hJ4sA2eU0iO9kYqM',
    tid: TENANT,
    uti: 'Xy3kP9rTQ0aVb5nC7mD2AA',
    ver: '2.0',
    fhirUser: `https://fhir.example-hospital.org/fhir/Practitioner/${DEMO.practitioners.reyes}`,
    ...over,
  };
}

const azure = (over: JWTPayload = {}) => signToken(azKey, azureClaims(over), { header: { typ: 'JWT' } });

// ---------------------------------------------------------------------------------------------

let kcRefuse: Gw;
let kcRolesOnly: Gw;
let oktaGw: Gw;
let azureGw: Gw;

beforeAll(async () => {
  up = await withUpstream();
  [kcKey, oktaKey, azKey] = await Promise.all([makeKeyPair('RS256'), makeKeyPair('RS256'), makeKeyPair('RS256')]);
  [kcJwks, oktaJwks, azJwks] = await Promise.all([startJwksServer([kcKey.publicJwk]), startJwksServer([oktaKey.publicJwk]), startJwksServer([azKey.publicJwk])]);
  // The gateway's own peer is 127.0.0.1: trusted by the first Keycloak gateway only.
  kcRefuse = await startFromYaml(keycloakAuth('refuse'), 'trustedProxies: [127.0.0.1]\n');
  kcRolesOnly = await startFromYaml(keycloakAuth('roles-only'), 'trustedProxies: [192.0.2.10, 198.51.100.0/24]\n');
  oktaGw = await startFromYaml(`  issuer: ${OKTA_ISSUER}
  audience: api://phi-gateway
  jwksUri: ${oktaJwks.uri}
  rolesClaim: groups
  roleMap:
    Clinicians: clinician
    Billing Office: billing
  patientClaims: [launch_response_patient]`);
  azureGw = await startFromYaml(`  issuer: ${AZ_ISSUER}
  audience: ${AZ_API}
  jwksUri: ${azJwks.uri}
  rolesClaim: roles
  roleMap:
    Clinician.ReadWrite: clinician
    Billing.Read: billing
  patientClaims: [fhirUser]
  scopelessTokens: roles-only`);
}, 60_000);

afterAll(async () => {
  for (const gw of started) {
    await gw.gateway.close();
    rmSync(gw.dir, { recursive: true, force: true });
  }
  await Promise.all([kcJwks?.close(), oktaJwks?.close(), azJwks?.close()]);
  await up?.close();
});

describe('Keycloak', () => {
  it('scopelessTokens: refuse: `openid profile email` is refused everything', async () => {
    const token = await keycloak();
    const a = await call(kcRefuse, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(403);
    expect(errorCode(a)).toBe('scope-denied');
    expect(a.text).not.toContain(DEMO.families[0]);
    expect(completedLine(kcRefuse, a.requestId)).toMatchObject({ status: 403, decision: 'deny', code: 'scope-denied' });
    // Mapped to clinician (the refusal is the scope's, not a missing role).
    expect((await auditRecord(kcRefuse, a.requestId)).actor.roles).toEqual(['clinician']);
  });

  it('scopelessTokens: roles-only: the group path /clinician alone decides', async () => {
    const token = await keycloak();
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ resourceType: 'Patient', id: ALICE });
    // The clinical data set: the whole chart, telecom included.
    expect(a.text).toContain(ALICE_PHONE);
    const rec = await auditRecord(kcRolesOnly, a.requestId);
    expect(rec).toMatchObject({ decision: 'allow', role: 'clinician', actor: { clientId: 'smart-app', roles: ['clinician'] } });
  });

  it('realm roles and unmapped groups grant nothing, even spelled like a policy role', async () => {
    for (const over of [{ groups: [] }, { groups: ['/clinicians'], realm_access: { roles: ['clinician'] } }, { groups: ['clinician'] }]) {
      const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token: await keycloak(over), purpose: 'TREAT' });
      expect(a.status).toBe(403);
      expect(errorCode(a)).toBe('purpose-not-permitted');
      expect(a.text).not.toContain(ALICE_PHONE);
    }
  });

  it('a nested group path maps to its own role', async () => {
    const token = await keycloak({ groups: ['/hospital/billing-office'] });
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token, purpose: 'HPAYMT' });
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ resourceType: 'Patient', id: ALICE });
    // The billing data set: no contact details.
    expect(a.text).not.toContain(ALICE_PHONE);
  });

  it('SMART scopes in `scope` with the patient_id launch context narrow even under roles-only', async () => {
    const token = await keycloak({ scope: 'openid profile launch/patient patient/Observation.rs', patient_id: ALICE });
    const obs = await call(kcRolesOnly, `/Observation?patient=${ALICE}`, { token, purpose: 'TREAT' });
    expect(obs.status).toBe(200);
    expect(ids(obs)).toContain('Observation/obs-alice-bp');
    const cond = await call(kcRolesOnly, `/Condition?patient=${ALICE}`, { token, purpose: 'TREAT' });
    expect(cond.status).toBe(403);
    expect(errorCode(cond)).toBe('scope-denied');
    expect(cond.text).not.toContain(HTN_NOTE);
  });
});

describe('Okta', () => {
  it('reads what `scp: [patient/Observation.rs]` grants, in the launch patient compartment', async () => {
    const token = await okta();
    const a = await call(oktaGw, `/Observation?patient=${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(200);
    expect(ids(a)).toEqual(expect.arrayContaining(['Observation/obs-alice-bp', 'Observation/obs-alice-weight']));
    expect(ids(a).every((id) => id.startsWith('Observation/obs-alice'))).toBe(true);
    const one = await call(oktaGw, '/Observation/obs-alice-bp', { token, purpose: 'TREAT' });
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ resourceType: 'Observation', id: 'obs-alice-bp' });
    const rec = await auditRecord(oktaGw, one.requestId);
    expect(rec.actor).toMatchObject({ clientId: '0oa9smartapp4Q2bX5d7', sub: 'maria.reyes@example-hospital.org', roles: ['clinician'] });
  });

  it('the same token cannot read Conditions or the Patient (scp is never ignored)', async () => {
    const token = await okta();
    for (const path of [`/Condition?patient=${ALICE}`, `/Condition/${DEMO.hypertension}`, `/Patient/${ALICE}`]) {
      const a = await call(oktaGw, path, { token, purpose: 'TREAT' });
      expect(a.status, path).toBe(403);
      expect(errorCode(a)).toBe('scope-denied');
      expect(a.text).not.toContain(HTN_NOTE);
      expect(a.text).not.toContain(ALICE_PHONE);
    }
  });

  it('a wider scp reads them (the refusals above come from the scope)', async () => {
    const token = await okta({ scp: ['openid', 'launch/patient', 'patient/*.rs'] });
    const a = await call(oktaGw, `/Condition/${DEMO.hypertension}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(200);
    expect(a.text).toContain(HTN_NOTE);
  });

  it('a patient scope without the launch context claim is refused, never widened', async () => {
    const token = await okta({ launch_response_patient: undefined });
    const a = await call(oktaGw, `/Observation?patient=${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(403);
    expect(errorCode(a)).toBe('scope-denied');
  });

  it('groups that are not mapped grant nothing', async () => {
    const a = await call(oktaGw, '/Observation/obs-alice-bp', { token: await okta({ groups: ['Everyone', 'clinician'] }), purpose: 'TREAT' });
    expect(a.status).toBe(403);
    expect(errorCode(a)).toBe('purpose-not-permitted');
  });
});

describe('Azure AD (Entra ID v2.0)', () => {
  it('the app role Clinician.ReadWrite reads the chart (scp user_impersonation, roles-only)', async () => {
    const token = await azure();
    const a = await call(azureGw, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(200);
    expect(a.text).toContain(ALICE_PHONE);
    const c = await call(azureGw, `/Condition?patient=${ALICE}`, { token, purpose: 'TREAT' });
    expect(c.status).toBe(200);
    expect(ids(c)).toContain(`Condition/${DEMO.hypertension}`);
    const rec = await auditRecord(azureGw, a.requestId);
    // azp as the client, uti as the token id; the practitioner fhirUser sets no patient context.
    expect(rec.actor).toMatchObject({ clientId: 'a1b2c3d4-0000-4bbb-8ccc-0123456789ab', jti: 'Xy3kP9rTQ0aVb5nC7mD2AA', roles: ['clinician'] });
  });

  it('Billing.Read maps to billing and gets the billing data set', async () => {
    const token = await azure({ roles: ['Billing.Read'] });
    const a = await call(azureGw, `/Patient/${ALICE}`, { token, purpose: 'HPAYMT' });
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ resourceType: 'Patient', id: ALICE });
    expect(a.text).not.toContain(ALICE_PHONE);
    const treat = await call(azureGw, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(treat.status).toBe(403);
    expect(errorCode(treat)).toBe('purpose-not-permitted');
  });

  it('an scp string with Entra-spelled SMART scopes narrows the app role', async () => {
    const token = await azure({ scp: 'user.Observation.read' });
    const obs = await call(azureGw, `/Observation?patient=${ALICE}`, { token, purpose: 'TREAT' });
    expect(obs.status).toBe(200);
    expect(ids(obs)).toContain('Observation/obs-alice-bp');
    const cond = await call(azureGw, `/Condition/${DEMO.hypertension}`, { token, purpose: 'TREAT' });
    expect(cond.status).toBe(403);
    expect(errorCode(cond)).toBe('scope-denied');
    expect(cond.text).not.toContain(HTN_NOTE);
  });

  it('a fhirUser naming a Patient confines the token to that patient', async () => {
    const token = await azure({ fhirUser: `https://fhir.example-hospital.org/fhir/Patient/${ALICE}` });
    const own = await call(azureGw, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(own.status).toBe(200);
    const other = await call(azureGw, `/Patient/${DEMO.patients.brian}`, { token, purpose: 'TREAT' });
    expect(other.status).toBe(403);
    expect(errorCode(other)).toBe('compartment-denied');
    expect(other.text).not.toContain(DEMO.phones.brian);
  });

  it('a fhirUser that is not a reference is refused as an invalid token', async () => {
    const token = await azure({ fhirUser: 'maria.reyes' });
    const a = await call(azureGw, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(401);
    expect(a.headers.get('www-authenticate')).toBe(
      'Bearer realm="phi-gateway", error="invalid_token", error_description="A required access token claim is missing, malformed or contradictory"',
    );
  });
});

describe('why a token was refused', () => {
  const cases: Array<[string, string, () => Promise<string | undefined>]> = [
    ['expired', 'The access token expired', () => keycloak({ iat: NOW() - 3600, exp: NOW() - 600 })],
    ['not-yet-valid', 'The access token is not yet valid', () => keycloak({ nbf: NOW() + 600 })],
    ['audience', 'The access token is for another audience', () => keycloak({ aud: ['account'] })],
    ['issuer', 'The access token is from an untrusted issuer', () => keycloak({ iss: 'https://sso.example-hospital.org/realms/master' })],
    ['signature', 'The access token signature is invalid', () => signToken(oktaKey, keycloakClaims(), { header: { typ: 'JWT', kid: kcKey.kid } })],
    ['unknown-key', 'The access token is signed with an unknown key', () => signToken(oktaKey, keycloakClaims(), { header: { typ: 'JWT' } })],
    ['algorithm', 'The access token signing algorithm is not accepted', async () => hmacToken(kcKey.publicPem, keycloakClaims(), { typ: 'JWT', kid: kcKey.kid })],
    ['malformed', 'The access token or Authorization header is malformed', async () => 'not-a-jwt'],
    ['not-access-token', 'The token is not an access token', () => keycloak({ typ: 'ID', nonce: 'n-0S6_WzA2Mj' })],
  ];

  it.each(cases)('%s', async (reason, description, make) => {
    const token = await make();
    const a = await call(kcRefuse, `/Patient/${ALICE}`, { token, purpose: 'TREAT' });
    expect(a.status).toBe(401);
    expect(errorCode(a)).toBe('invalid-token');
    const challenge = a.headers.get('www-authenticate') ?? '';
    expect(challenge).toBe(`Bearer realm="phi-gateway", error="invalid_token", error_description="${description}"`);
    expect(a.text).not.toContain(ALICE_PHONE);
    // No fragment of the token in the header, the body or the log line.
    const line = completedLine(kcRefuse, a.requestId);
    expect(line).toMatchObject({ status: 401, decision: 'deny', code: 'invalid-token', reason });
    for (const part of (token ?? '').split('.').filter((s) => s.length >= 8)) {
      for (const chunk of [part.slice(0, 8), part.slice(-8)]) {
        expect(challenge).not.toContain(chunk);
        expect(a.text).not.toContain(chunk);
        expect(kcRefuse.logs.join('\n')).not.toContain(part);
      }
    }
    const rec = await auditRecord(kcRefuse, a.requestId);
    expect(rec).toMatchObject({ decision: 'deny', status: 401 });
  });

  it('no token at all: a bare challenge without an error code (RFC 6750 3.1)', async () => {
    for (const headers of [{}, { authorization: 'Basic bWFyaWE6c2VjcmV0' }] as Array<Record<string, string>>) {
      const a = await call(kcRefuse, `/Patient/${ALICE}`, { purpose: 'TREAT', headers });
      expect(a.status).toBe(401);
      expect(errorCode(a)).toBe('invalid-token');
      expect(a.headers.get('www-authenticate')).toBe('Bearer realm="phi-gateway"');
      expect(completedLine(kcRefuse, a.requestId)).toMatchObject({ code: 'invalid-token', reason: 'missing' });
    }
  });

  it('an allowed request logs no denial code', async () => {
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token: await keycloak(), purpose: 'TREAT' });
    expect(a.status).toBe(200);
    const line = completedLine(kcRolesOnly, a.requestId);
    expect(line.code).toBeUndefined();
    expect(line.reason).toBeUndefined();
  });
});

describe('purpose from the token', () => {
  it('no header and exactly one token purpose: that purpose is declared', async () => {
    const token = await keycloak({ purpose_of_use: ['TREAT'] });
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token });
    expect(a.status).toBe(200);
    expect(a.text).toContain(ALICE_PHONE);
    expect(await auditRecord(kcRolesOnly, a.requestId)).toMatchObject({ purpose: 'TREAT', decision: 'allow' });
  });

  it('an IHE IUA Coding counts as one purpose too', async () => {
    const token = await keycloak({
      extensions: { ihe_iua: { purpose_of_use: [{ system: 'urn:oid:2.16.840.1.113883.5.8', code: 'COC' }] } },
    });
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token });
    expect(a.status).toBe(200);
    expect(await auditRecord(kcRolesOnly, a.requestId)).toMatchObject({ purpose: 'COC' });
  });

  it.each<[string, JWTPayload]>([
    ['two token purposes', { purpose_of_use: ['TREAT', 'COC'] }],
    ['an empty purpose claim', { purpose_of_use: [] }],
    ['no purpose claim', {}],
  ])('no header and %s: refused as before', async (_name, over) => {
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token: await keycloak(over) });
    expect(a.status).toBe(400);
    expect(errorCode(a)).toBe('purpose-missing');
    expect(a.text).not.toContain(ALICE_PHONE);
  });

  it('a header still wins, and must lie within the token purposes', async () => {
    const token = await keycloak({ purpose_of_use: ['TREAT'], groups: ['/clinician', '/hospital/billing-office'] });
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token, purpose: 'HPAYMT' });
    expect(a.status).toBe(403);
    expect(errorCode(a)).toBe('purpose-not-in-token');
  });

  it('a single token purpose the policy does not know is refused', async () => {
    const a = await call(kcRolesOnly, `/Patient/${ALICE}`, { token: await keycloak({ purpose_of_use: ['NOSUCH'] }) });
    expect(a.status).toBe(400);
    expect(errorCode(a)).toBe('purpose-unknown');
  });
});

describe('client address behind a load balancer', () => {
  const address = async (gw: Gw, headers: Record<string, string>) => {
    const a = await call(gw, `/Patient/${ALICE}`, { token: await keycloak(), purpose: 'TREAT', headers });
    return (await auditRecord(gw, a.requestId)).client.address;
  };

  it('X-Forwarded-For from a trusted proxy: the workstation address is audited', async () => {
    expect(await address(kcRefuse, { 'x-forwarded-for': '10.20.30.40' })).toBe('10.20.30.40');
  });

  it('a hop the client wrote itself, before the trusted proxy, is not believed', async () => {
    // The proxy appends the address it saw; whatever the client sent before that is its own claim.
    expect(await address(kcRefuse, { 'x-forwarded-for': '203.0.113.66, 10.20.30.40' })).toBe('10.20.30.40');
  });

  it('without X-Forwarded-For the peer itself is audited', async () => {
    expect(await address(kcRefuse, {})).toBe('127.0.0.1');
  });

  it('X-Forwarded-For from a peer that is not a trusted proxy is ignored', async () => {
    expect(await address(kcRolesOnly, { 'x-forwarded-for': '10.20.30.40' })).toBe('127.0.0.1');
    expect(await address(kcRolesOnly, { 'x-forwarded-for': '198.51.100.7, 192.0.2.10' })).toBe('127.0.0.1');
  });

  it('RFC 7239 Forwarded is not read (documented: proxies must send X-Forwarded-For)', async () => {
    expect(await address(kcRefuse, { forwarded: 'for=10.20.30.40;proto=https' })).toBe('127.0.0.1');
  });
});
