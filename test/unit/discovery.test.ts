// The gateway's own CapabilityStatement (what the policy lets it enforce, narrowed per caller) and
// SMART configuration (the `smart` block over the issuer's OpenID metadata, fetched and cached).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CapabilityStatement, CapabilityStatementRestResource } from 'fhir/r4.js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal, SmartScope } from '../../src/auth/principal.js';
import { parseSmartScopes } from '../../src/auth/scopes.js';
import { loadPolicy } from '../../src/config/load.js';
import type { GatewayConfig } from '../../src/config/types.js';
import type { CompiledPolicy } from '../../src/policy/plan.js';
import {
  capabilityStatement,
  createDiscovery,
  readOidcMetadata,
  SOFTWARE_VERSION,
  type StatementCaller,
  selectPlans,
  smartConfiguration,
} from '../../src/server/discovery.js';

const { policy } = loadPolicy('config/policy.yaml');
const BASE = 'https://gw.example/fhir';
const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };

function principal(roles: string[], extra: Partial<Principal> = {}): Principal {
  return { iss: 'https://idp.example', sub: 'u1', clientId: 'app', jti: undefined, roles, tokenPurposes: undefined, patient: undefined, scopes: undefined, familyName: undefined, exp: 0, ...extra };
}

function statementFor(p: CompiledPolicy, caller?: StatementCaller): CapabilityStatement {
  const sel = selectPlans(p, caller);
  if (!sel.ok) throw new Error(`refused: ${sel.code}`);
  return capabilityStatement({ policy: p, publicBaseUrl: BASE, date: '2025-01-01T00:00:00.000Z', cors: false, plans: sel.plans, principal: caller?.principal });
}

function resources(cs: CapabilityStatement): Map<string, CapabilityStatementRestResource> {
  return new Map((cs.rest?.[0].resource ?? []).map((r) => [r.type, r]));
}

function interactions(r: CapabilityStatementRestResource | undefined): string[] {
  return (r?.interaction ?? []).map((i) => i.code);
}

function params(r: CapabilityStatementRestResource | undefined): string[] {
  return (r?.searchParam ?? []).map((s) => s.name);
}

/** The policy file as text: a type it never names cannot be granted. */
const policyText = readFileSync('config/policy.yaml', 'utf8');

describe('CapabilityStatement without a token: what the policy lets the gateway enforce', () => {
  const cs = statementFor(policy);
  const byType = resources(cs);

  it('names the gateway, its version and its public base, never another server', () => {
    expect(cs.software).toEqual({ name: 'phi-gateway', version: pkg.version });
    expect(SOFTWARE_VERSION).toBe(pkg.version);
    expect(cs.implementation?.url).toBe(BASE);
    expect(cs.fhirVersion).toBe('4.0.1');
    expect(cs.kind).toBe('instance');
    expect(cs.status).toBe('active');
    expect(cs.format.every((f) => f.includes('json'))).toBe(true);
    expect(cs.rest?.[0].security?.service?.[0].coding?.[0]).toMatchObject({ code: 'SMART-on-FHIR' });
  });

  it('lists the union of every data set the roles and break-glass reach, and nothing else', () => {
    // Billing-only, clinical-only, research and front-desk types all appear.
    for (const t of ['Claim', 'ExplanationOfBenefit', 'Coverage', 'Observation', 'Goal', 'Appointment', 'Specimen']) expect(byType.has(t)).toBe(true);
    // Types no data set names never appear (the upstream serves all of them).
    for (const t of ['Binary', 'Group', 'AuditEvent', 'Consent', 'Questionnaire']) {
      expect(policyText.includes(t)).toBe(false);
      expect(byType.has(t)).toBe(false);
    }
    // The shipped policy grants no patch or delete anywhere.
    const all = [...byType.values()].flatMap(interactions);
    expect(all).not.toContain('patch');
    expect(all).not.toContain('delete');
    expect(cs.patchFormat).toBeUndefined();
    expect(interactions(byType.get('Patient'))).toEqual(['read', 'vread', 'update', 'history-instance', 'history-type', 'create', 'search-type']);
    expect(byType.get('Patient')?.operation).toEqual([{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }]);
    expect(interactions(byType.get('Claim'))).toEqual(['read', 'vread', 'search-type']);
  });

  it('lists search parameters with their types, never shaping parameters or chains', () => {
    const patient = byType.get('Patient');
    expect(params(patient)).toContain('name');
    expect(params(patient)).toContain('birthdate');
    for (const p of params(patient)) expect(p).not.toMatch(/^_(count|sort|include|revinclude|elements|summary|total)$|[.:]/);
    expect(patient?.searchParam?.find((s) => s.name === 'birthdate')?.type).toBe('date');
  });
});

describe('CapabilityStatement with a token: what this caller may do', () => {
  it('billing sees its own data set only, without the parameters on removed elements', () => {
    const byType = resources(statementFor(policy, { principal: principal(['billing']) }));
    expect([...byType.keys()].sort()).toEqual(['Claim', 'Condition', 'Coverage', 'Encounter', 'ExplanationOfBenefit', 'Organization', 'Patient', 'Practitioner', 'Procedure']);
    expect(interactions(byType.get('Patient'))).toEqual(['read', 'vread', 'search-type']);
    expect(params(byType.get('Patient'))).toContain('name');
    // The SSN is removed from identifier, telecom altogether: searching on them would be an oracle.
    expect(params(byType.get('Patient'))).not.toContain('identifier');
    expect(params(byType.get('Patient'))).not.toContain('telecom');
    expect(params(byType.get('Patient'))).not.toContain('phone');
  });

  it('the declared purpose selects the plan; BTG adds the break-glass data set only for an eligible role', () => {
    const treat = resources(statementFor(policy, { principal: principal(['clinician', 'billing']), purpose: 'TREAT' }));
    expect(treat.has('Observation')).toBe(true);
    expect(treat.has('Claim')).toBe(false);
    const btg = resources(statementFor(policy, { principal: principal(['clinician']), purpose: 'BTG' }));
    expect(interactions(btg.get('Patient'))).toEqual(['read', 'vread', 'history-instance', 'history-type', 'search-type']);
    expect(selectPlans(policy, { principal: principal(['billing']), purpose: 'BTG' })).toEqual({ ok: false, code: 'break-glass-not-eligible' });
  });

  it('X-Role narrows to one held role and refuses one not held', () => {
    const both = principal(['clinician', 'billing']);
    const billing = resources(statementFor(policy, { principal: both, role: 'billing' }));
    expect(billing.has('Claim')).toBe(true);
    expect(billing.has('Observation')).toBe(false);
    expect(selectPlans(policy, { principal: both, role: 'coder' })).toEqual({ ok: false, code: 'role-not-held' });
  });

  it('refuses as decide() does: a purpose outside the token, a purpose no role grants', () => {
    expect(selectPlans(policy, { principal: principal(['clinician'], { tokenPurposes: ['HPAYMT'] }), purpose: 'TREAT' })).toEqual({ ok: false, code: 'purpose-not-in-token' });
    expect(selectPlans(policy, { principal: principal(['billing']), purpose: 'TREAT' })).toEqual({ ok: false, code: 'purpose-not-permitted' });
    expect(selectPlans(policy, { principal: principal(['billing']), purpose: 'NOPE' })).toEqual({ ok: false, code: 'purpose-unknown' });
  });

  it("without a declared purpose, the token's purposes bound what is listed", () => {
    const p = principal(['clinician', 'researcher'], { tokenPurposes: ['HRESCH'] });
    const byType = resources(statementFor(policy, { principal: p }));
    expect([...byType.keys()].sort()).toEqual(['Condition', 'Encounter', 'Observation', 'Patient', 'Procedure']);
    // De-identified: no versions, so neither vread nor history (both are refused to it).
    expect(interactions(byType.get('Patient'))).toEqual(['read', 'search-type']);
    expect(byType.get('Patient')?.readHistory).toBeUndefined();
  });

  it('SMART scopes narrow types and interactions; patient scopes need a patient context', () => {
    const scopes: SmartScope[] = parseSmartScopes('patient/Observation.rs user/Patient.r');
    const withPatient = resources(statementFor(policy, { principal: principal(['clinician'], { scopes, patient: 'pat-1' }), purpose: 'TREAT' }));
    expect([...withPatient.keys()].sort()).toEqual(['Observation', 'Patient']);
    // history-type of a compartment type is refused under a patient context.
    expect(interactions(withPatient.get('Observation'))).toEqual(['read', 'vread', 'history-instance', 'search-type']);
    expect(interactions(withPatient.get('Patient'))).toEqual(['read', 'vread', 'history-instance']);
    expect(withPatient.get('Patient')?.searchParam).toBeUndefined();
    expect(withPatient.get('Patient')?.operation).toBeUndefined();
    const noPatient = resources(statementFor(policy, { principal: principal(['clinician'], { scopes }), purpose: 'TREAT' }));
    expect([...noPatient.keys()]).toEqual(['Patient']);
    const everything = resources(statementFor(policy, { principal: principal(['clinician'], { scopes: parseSmartScopes('user/*.rs') }), purpose: 'TREAT' }));
    expect(everything.get('Patient')?.operation?.map((o) => o.name)).toEqual(['everything']);
    expect(interactions(everything.get('Patient'))).not.toContain('create');
  });

  it('a patient-compartment role is listed only with a patient context', () => {
    const dir = mkdtempSync(join(tmpdir(), 'phi-disc-'));
    try {
      writeFileSync(
        join(dir, 'policy.yaml'),
        `version: 1
purposes: { PATRQT: { display: patient requested } }
dataSets:
  mine:
    rules:
      - types: [Observation, Patient]
roles:
  patient-app: { purposes: { PATRQT: mine }, compartment: patient }
`,
      );
      const p = loadPolicy(join(dir, 'policy.yaml')).policy;
      expect(resources(statementFor(p, { principal: principal(['patient-app']) })).size).toBe(0);
      expect(resources(statementFor(p, { principal: principal(['patient-app'], { patient: 'pat-1' }) })).size).toBe(2);
      expect(resources(statementFor(p)).size).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SMART configuration document', () => {
  const oidc = readOidcMetadata({
    issuer: 'https://idp.example',
    authorization_endpoint: 'https://idp.example/auth',
    token_endpoint: 'https://idp.example/token',
    jwks_uri: 'https://idp.example/jwks',
    revocation_endpoint: 'http://idp.example/revoke', // cleartext off loopback: dropped
    introspection_endpoint: 42,
    grant_types_supported: ['authorization_code', 'implicit', 'client_credentials', 'refresh_token'],
    scopes_supported: ['openid', 'fhirUser'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 7],
  });

  it('reads only well-formed fields of the OpenID metadata', () => {
    expect(oidc).toEqual({
      authorization_endpoint: 'https://idp.example/auth',
      token_endpoint: 'https://idp.example/token',
      jwks_uri: 'https://idp.example/jwks',
      grant_types_supported: ['authorization_code', 'implicit', 'client_credentials', 'refresh_token'],
      scopes_supported: ['openid', 'fhirUser'],
    });
    expect(readOidcMetadata(['x'])).toEqual({});
    expect(readOidcMetadata({ authorization_endpoint: 'javascript:alert(1)' })).toEqual({});
  });

  it('derives from the OpenID metadata: S256 only, SMART grants only, the gateway capabilities', () => {
    const doc = smartConfiguration({ issuer: 'https://idp.example', jwksUri: undefined, smart: undefined, oidc });
    expect(doc).toMatchObject({
      issuer: 'https://idp.example',
      jwks_uri: 'https://idp.example/jwks',
      authorization_endpoint: 'https://idp.example/auth',
      token_endpoint: 'https://idp.example/token',
      grant_types_supported: ['authorization_code', 'client_credentials'],
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      scopes_supported: ['openid', 'fhirUser'],
    });
    expect(doc?.capabilities).toContain('permission-v2');
    expect(doc?.capabilities).toContain('context-standalone-patient');
    expect(doc).not.toHaveProperty('revocation_endpoint');
  });

  it('the smart block wins field by field', () => {
    const doc = smartConfiguration({
      issuer: 'https://idp.example',
      jwksUri: 'https://idp.example/certs',
      smart: { tokenEndpoint: 'https://gw-auth.example/token', capabilities: ['launch-standalone'], managementEndpoint: 'https://idp.example/manage' },
      oidc,
    });
    expect(doc?.token_endpoint).toBe('https://gw-auth.example/token');
    expect(doc?.authorization_endpoint).toBe('https://idp.example/auth');
    expect(doc?.capabilities).toEqual(['launch-standalone']);
    expect(doc?.management_endpoint).toBe('https://idp.example/manage');
    expect(doc?.jwks_uri).toBe('https://idp.example/jwks');
  });

  it('is undefined without both an authorization and a token endpoint', () => {
    expect(smartConfiguration({ issuer: 'x', jwksUri: undefined, smart: undefined, oidc: undefined })).toBeUndefined();
    expect(smartConfiguration({ issuer: 'x', jwksUri: undefined, smart: { tokenEndpoint: 'https://t.example' }, oidc: {} })).toBeUndefined();
    expect(smartConfiguration({ issuer: 'x', jwksUri: undefined, smart: { authorizationEndpoint: 'https://a.example', tokenEndpoint: 'https://t.example' }, oidc: undefined })).toMatchObject({
      grant_types_supported: ['authorization_code'],
    });
  });
});

describe('OpenID discovery document: fetched from the issuer, cached', () => {
  let server: Server;
  let issuer: string;
  let hits = 0;
  let answer: { status: number; body: string; delayMs?: number } = { status: 200, body: '{}' };

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url !== '/realm/.well-known/openid-configuration') {
        res.writeHead(404).end();
        return;
      }
      hits++;
      setTimeout(() => res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body), answer.delayMs ?? 0);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}/realm`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  function discovery(clock: { t: number }, smart?: GatewayConfig['smart']) {
    const config = {
      auth: { issuer, jwksUri: undefined },
      publicBaseUrl: BASE,
      cors: { origins: [] },
      ...(smart ? { smart } : {}),
    } as unknown as GatewayConfig;
    return createDiscovery({ config, logger: pino({ level: 'silent' }), now: () => clock.t, ttlMs: 60_000, failureTtlMs: 5_000 });
  }

  it('one request for concurrent callers, reused until the TTL ends', async () => {
    hits = 0;
    answer = { status: 200, body: JSON.stringify({ authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token` }), delayMs: 30 };
    const clock = { t: 1_000_000 };
    const d = discovery(clock);
    const [a, b] = await Promise.all([d.smartConfiguration(), d.smartConfiguration()]);
    expect(a.authorization_endpoint).toBe(`${issuer}/auth`);
    expect(b.token_endpoint).toBe(`${issuer}/token`);
    expect(hits).toBe(1);
    clock.t += 59_000;
    await d.smartConfiguration();
    expect(hits).toBe(1);
    clock.t += 2_000;
    await d.smartConfiguration();
    expect(hits).toBe(2);
  });

  it('a failure answers discovery-unavailable and is remembered briefly', async () => {
    hits = 0;
    answer = { status: 500, body: 'oops' };
    const clock = { t: 1_000_000 };
    const d = discovery(clock);
    await expect(d.smartConfiguration()).rejects.toMatchObject({ code: 'discovery-unavailable' });
    await expect(d.smartConfiguration()).rejects.toMatchObject({ code: 'discovery-unavailable' });
    expect(hits).toBe(1);
    answer = { status: 200, body: JSON.stringify({ authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token` }) };
    clock.t += 6_000;
    await expect(d.smartConfiguration()).resolves.toMatchObject({ token_endpoint: `${issuer}/token` });
    expect(hits).toBe(2);
  });

  it('a document that is not JSON, or lacks the endpoints, yields nothing', async () => {
    answer = { status: 200, body: '<html>' };
    await expect(discovery({ t: 0 }).smartConfiguration()).rejects.toMatchObject({ code: 'discovery-unavailable' });
    answer = { status: 200, body: JSON.stringify({ token_endpoint: `${issuer}/token` }) };
    await expect(discovery({ t: 0 }).smartConfiguration()).rejects.toMatchObject({ code: 'discovery-unavailable' });
  });

  it('the CapabilityStatement carries the endpoints in the oauth-uris extension, and answers without them', async () => {
    answer = { status: 200, body: JSON.stringify({ authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token`, revocation_endpoint: `${issuer}/revoke` }) };
    const r = await discovery({ t: 0 }).capabilityStatement(policy, undefined);
    if (!r.ok) throw new Error(r.code);
    const ext = (r.body as CapabilityStatement).rest?.[0].security?.extension?.[0];
    expect(ext?.url).toBe('http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
    expect(ext?.extension).toEqual([
      { url: 'authorize', valueUri: `${issuer}/auth` },
      { url: 'token', valueUri: `${issuer}/token` },
      { url: 'revoke', valueUri: `${issuer}/revoke` },
    ]);
    answer = { status: 503, body: '' };
    const down = await discovery({ t: 0 }).capabilityStatement(policy, undefined);
    if (!down.ok) throw new Error(down.code);
    expect((down.body as CapabilityStatement).rest?.[0].security?.extension).toBeUndefined();
    expect((down.body as CapabilityStatement).rest?.[0].resource?.length).toBeGreaterThan(0);
  });

  it('a smart block with every field needs no request to the issuer', async () => {
    hits = 0;
    const d = createDiscovery({
      config: {
        auth: { issuer, jwksUri: `${issuer}/jwks` },
        publicBaseUrl: BASE,
        smart: { authorizationEndpoint: 'https://a.example/auth', tokenEndpoint: 'https://a.example/token', scopesSupported: ['openid'] },
      } as unknown as GatewayConfig,
      logger: pino({ level: 'silent' }),
    });
    await expect(d.smartConfiguration()).resolves.toMatchObject({ authorization_endpoint: 'https://a.example/auth', jwks_uri: `${issuer}/jwks` });
    expect(hits).toBe(0);
  });
});
