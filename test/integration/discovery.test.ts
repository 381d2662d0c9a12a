/**
 * Discovery against the real gateway: `/fhir/metadata` is the gateway's own CapabilityStatement
 * (without a token: what the policy lets it enforce; with one: what that caller may do), never the
 * upstream's; `/fhir/.well-known/smart-configuration` comes from the real OpenID provider's
 * discovery document (oidc-provider) or the `smart` block, and answers 503 when neither has the
 * endpoints. Every answer is audited.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import type { CapabilityStatement } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type Stack, startStack } from '../helpers/gateway.js';

const SECRET_SOFTWARE = 'UpstreamVendorFHIR';
const SECRET_VERSION = '9.8.7-internal';
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** An upstream that records every request and would describe itself if asked. */
let upstream: Server;
let upstreamUrl: string;
const seen: string[] = [];

let stack: Stack;
let idpDoc: Record<string, unknown>;

beforeAll(async () => {
  upstream = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const body = req.url?.includes('metadata')
      ? { resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1', format: ['json'], software: { name: SECRET_SOFTWARE, version: SECRET_VERSION }, implementation: { description: 'x', url: upstreamUrl } }
      : { resourceType: 'Patient', id: 'p1' };
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(text) }).end(text);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/fhir`;
  stack = await startStack({ upstreamUrl });
  idpDoc = (await (await fetch(`${stack.idp.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
}, 60_000);

afterAll(async () => {
  await stack?.close();
  await new Promise((r) => upstream?.close(r));
});

async function recordOf(res: Response, s: Stack = stack) {
  const id = res.headers.get('x-request-id');
  const rec = (await s.auditRecords()).find((r) => r.id === id);
  expect(rec).toBeDefined();
  return rec!;
}

function types(cs: CapabilityStatement): string[] {
  return (cs.rest?.[0].resource ?? []).map((r) => r.type).sort();
}

function code(body: unknown): string | undefined {
  return (body as { issue?: Array<{ details?: { coding?: Array<{ code?: string }> } }> }).issue?.[0]?.details?.coding?.[0]?.code;
}

describe('/fhir/metadata without a token', () => {
  it("is the gateway's own statement: its software and version, its public base, the SMART endpoints; audited", async () => {
    const before = seen.length;
    const res = await fetch(`${stack.url}/metadata`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/fhir+json');
    const text = await res.text();
    const cs = JSON.parse(text) as CapabilityStatement;
    expect(cs.resourceType).toBe('CapabilityStatement');
    expect(cs.software).toEqual({ name: 'phi-gateway', version: pkg.version });
    expect(cs.implementation?.url).toBe(stack.config.publicBaseUrl);
    expect(cs.fhirVersion).toBe('4.0.1');
    expect(cs.kind).toBe('instance');
    expect(cs.rest?.[0].security?.service?.[0].coding?.[0].code).toBe('SMART-on-FHIR');
    const oauth = cs.rest?.[0].security?.extension?.find((e) => e.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
    expect(oauth?.extension?.find((e) => e.url === 'authorize')?.valueUri).toBe(idpDoc.authorization_endpoint);
    expect(oauth?.extension?.find((e) => e.url === 'token')?.valueUri).toBe(idpDoc.token_endpoint);
    // Every role's data set, nothing the policy does not name.
    expect(types(cs)).toContain('Claim');
    expect(types(cs)).toContain('Observation');
    expect(types(cs)).not.toContain('Binary');
    // Nothing of the upstream: never asked, never named.
    expect(seen.length).toBe(before);
    for (const leak of [upstreamUrl, SECRET_SOFTWARE, SECRET_VERSION, new URL(upstreamUrl).host]) expect(text).not.toContain(leak);
    const rec = await recordOf(res);
    expect(rec).toMatchObject({ status: 200, decision: 'allow', request: { interaction: 'capabilities', method: 'GET', path: '/metadata' } });
    expect(rec.actor.sub).toBeUndefined();
  });

  it('HEAD answers as GET, without the body', async () => {
    // Uncompressed, so that Content-Length is there to compare.
    const identity = { 'accept-encoding': 'identity' };
    const get = await fetch(`${stack.url}/metadata`, { headers: identity });
    const len = (await get.arrayBuffer()).byteLength;
    const head = await fetch(`${stack.url}/metadata`, { method: 'HEAD', headers: identity });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBe(len);
    for (const h of ['content-type', 'etag']) expect(head.headers.get(h)).toBe(get.headers.get(h));
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    expect((await recordOf(head)).request.method).toBe('HEAD');
  });

  it('refuses other methods and parameters; mode=full is fine', async () => {
    const post = await fetch(`${stack.url}/metadata`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/fhir+json' } });
    expect(post.status).toBe(405);
    expect((await fetch(`${stack.url}/metadata?mode=full`)).status).toBe(200);
    const term = await fetch(`${stack.url}/metadata?mode=terminology`);
    expect(term.status).toBe(400);
    const other = await fetch(`${stack.url}/metadata?_id=x`);
    expect(other.status).toBe(403);
    expect(code(await other.json())).toBe('search-param-denied');
  });

  it('does not answer CORS headers when no origin is configured', async () => {
    const res = await fetch(`${stack.url}/metadata`, { headers: { origin: 'https://app.example' } });
    expect(res.status).toBe(200);
    expect([...res.headers.keys()].filter((k) => k.startsWith('access-control-'))).toEqual([]);
    expect(((await res.json()) as CapabilityStatement).rest?.[0].security?.cors).toBe(false);
  });
});

describe('/fhir/metadata with a token', () => {
  it('is narrowed to the caller: billing without a purpose sees its data set only; audited with the actor', async () => {
    const before = seen.length;
    const res = await stack.get('/metadata', { role: 'billing' });
    expect(res.status).toBe(200);
    const cs = (await res.json()) as CapabilityStatement;
    expect(types(cs)).toEqual(['Claim', 'Condition', 'Coverage', 'Encounter', 'ExplanationOfBenefit', 'Organization', 'Patient', 'Practitioner', 'Procedure']);
    expect(cs.software?.name).toBe('phi-gateway');
    expect(seen.length).toBe(before);
    const rec = await recordOf(res);
    expect(rec).toMatchObject({ status: 200, decision: 'allow', actor: { sub: 'billing-app', roles: ['billing'] }, request: { interaction: 'capabilities' } });
  });

  it('the declared purpose and the token scopes narrow it further', async () => {
    const treat = (await (await stack.get('/metadata', { role: 'clinician', purpose: 'TREAT' })).json()) as CapabilityStatement;
    const patient = treat.rest?.[0].resource?.find((r) => r.type === 'Patient');
    expect(patient?.interaction?.map((i) => i.code)).toContain('create');
    const scoped = await stack.get('/metadata', { role: 'clinician', purpose: 'TREAT', tokenClaims: { scope: 'patient/Observation.rs', patient: 'pat-1' } });
    const cs = (await scoped.json()) as CapabilityStatement;
    expect(types(cs)).toEqual(['Observation']);
    expect(cs.rest?.[0].resource?.[0].interaction?.map((i) => i.code)).toEqual(['read', 'vread', 'history-instance', 'search-type']);
  });

  it('any spelling of /metadata is answered by the gateway, never forwarded', async () => {
    const before = seen.length;
    const res = await stack.get('/%6Detadata', { role: 'clinician', purpose: 'TREAT' });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"phi-gateway"');
    expect(text).not.toContain(SECRET_SOFTWARE);
    expect(seen.length).toBe(before);
  });

  it('refuses what decide() refuses: a bad token, a role not held, an unknown purpose', async () => {
    const bad = await stack.get('/metadata', { token: 'aaa.bbb.ccc' });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toBeTruthy();
    const role = await stack.get('/metadata', { role: 'billing', headers: { 'x-role': 'clinician' } });
    expect(role.status).toBe(403);
    expect(code(await role.json())).toBe('role-not-held');
    const purpose = await stack.get('/metadata', { role: 'billing', purpose: 'NOPE' });
    expect(purpose.status).toBe(400);
    expect(code(await purpose.json())).toBe('purpose-unknown');
    expect((await recordOf(purpose)).decision).toBe('deny');
  });
});

describe('/fhir/.well-known/smart-configuration', () => {
  it("is derived from the issuer's OpenID discovery document, without a token; audited", async () => {
    const res = await fetch(`${stack.url}/.well-known/smart-configuration`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const doc = (await res.json()) as Record<string, unknown>;
    expect(doc.issuer).toBe(stack.idp.issuer);
    expect(doc.authorization_endpoint).toBe(idpDoc.authorization_endpoint);
    expect(doc.token_endpoint).toBe(idpDoc.token_endpoint);
    expect(doc.jwks_uri).toBe(idpDoc.jwks_uri);
    expect(doc.code_challenge_methods_supported).toEqual(['S256']);
    expect(doc.response_types_supported).toEqual(['code']);
    const grants = doc.grant_types_supported as string[];
    expect(grants.length).toBeGreaterThan(0);
    for (const g of grants) {
      expect(['authorization_code', 'client_credentials']).toContain(g);
      expect(idpDoc.grant_types_supported).toContain(g);
    }
    expect(doc.capabilities).toEqual(expect.arrayContaining(['launch-standalone', 'permission-v2', 'context-standalone-patient']));
    const rec = await recordOf(res);
    expect(rec).toMatchObject({ status: 200, decision: 'allow', rule: 'discovery: smart-configuration', request: { path: '/.well-known/smart-configuration' } });
  });

  it('is the same with a token (which is not even looked at)', async () => {
    const plain = await (await fetch(`${stack.url}/.well-known/smart-configuration`)).text();
    const withToken = await (await stack.get('/.well-known/smart-configuration', { token: 'aaa.bbb.ccc' })).text();
    expect(withToken).toBe(plain);
  });
});

describe('SMART configuration when the issuer cannot be asked', () => {
  let down: Stack;
  let configured: Stack;
  let deadIssuer: string;

  beforeAll(async () => {
    deadIssuer = `http://127.0.0.1:${await freePort()}/realms/clinical`;
    down = await startStack({ upstreamUrl, env: { PHI_GATEWAY_ISSUER: deadIssuer } });
    configured = await startStack({
      upstreamUrl,
      env: { PHI_GATEWAY_ISSUER: deadIssuer },
      configure: (c) => ({ ...c, smart: { authorizationEndpoint: 'https://login.example/authorize', tokenEndpoint: 'https://login.example/token', capabilities: ['launch-standalone', 'permission-v2'] } }),
    });
  }, 60_000);

  afterAll(async () => {
    await down?.close();
    await configured?.close();
  });

  it('answers 503 discovery-unavailable (audited as an error); /metadata still answers, without the endpoints', async () => {
    const res = await fetch(`${down.url}/.well-known/smart-configuration`);
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toContain('application/fhir+json');
    expect(code(await res.json())).toBe('discovery-unavailable');
    expect(await recordOf(res, down)).toMatchObject({ status: 503, decision: 'error' });
    const meta = await fetch(`${down.url}/metadata`);
    expect(meta.status).toBe(200);
    const cs = (await meta.json()) as CapabilityStatement;
    expect(cs.rest?.[0].security?.extension).toBeUndefined();
    expect(cs.rest?.[0].security?.service?.[0].coding?.[0].code).toBe('SMART-on-FHIR');
  });

  it('the smart block alone is enough', async () => {
    const res = await fetch(`${configured.url}/.well-known/smart-configuration`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as Record<string, unknown>;
    expect(doc).toMatchObject({
      issuer: deadIssuer,
      authorization_endpoint: 'https://login.example/authorize',
      token_endpoint: 'https://login.example/token',
      capabilities: ['launch-standalone', 'permission-v2'],
      code_challenge_methods_supported: ['S256'],
    });
    const cs = (await (await fetch(`${configured.url}/metadata`)).json()) as CapabilityStatement;
    expect(cs.rest?.[0].security?.extension?.[0].extension?.[0]).toEqual({ url: 'authorize', valueUri: 'https://login.example/authorize' });
  });
});
