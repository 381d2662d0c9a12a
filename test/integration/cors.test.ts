/**
 * CORS against the real gateway: preflights answered without a token and audited, only for the
 * configured origins (each its own exact value, never `*`, never credentials); every actual answer
 * to an allowed origin, errors and 401 included, readable by the page; nothing for anyone else.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGatewayConfig } from '../../src/config/gateway.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const APP = 'https://smart-app.example';
const LOCAL_APP = 'http://localhost:3000';
const OTHER = 'https://evil.example';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ env: { PHI_GATEWAY_CORS_ORIGINS: `${APP}, ${LOCAL_APP}` } });
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

function preflight(path: string, origin: string, method = 'GET', headers = 'authorization, x-purpose-of-use'): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers },
  });
}

function accessControl(res: Response): string[] {
  return [...res.headers.keys()].filter((k) => k.startsWith('access-control-'));
}

async function recordOf(res: Response) {
  const id = res.headers.get('x-request-id');
  expect(id).toBeTruthy();
  const rec = (await stack.auditRecords()).find((r) => r.id === id);
  expect(rec).toBeDefined();
  return rec!;
}

describe('preflight', () => {
  it('an allowed origin gets 204 with its own origin, the methods, the headers the gateway reads, max-age; audited', async () => {
    const res = await preflight(`/Patient/${DEMO.patients.alice}`, APP, 'PUT', 'authorization, content-type, if-match');
    expect(res.status).toBe(204);
    expect(await res.text()).toBe('');
    expect(res.headers.get('access-control-allow-origin')).toBe(APP);
    expect(res.headers.get('access-control-allow-methods')?.split(', ')).toEqual(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
    const allowed = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(', ');
    for (const h of ['authorization', 'content-type', 'accept', 'x-purpose-of-use', 'x-role', 'x-break-glass-reason', 'if-match', 'if-none-match', 'if-none-exist', 'prefer']) {
      expect(allowed).toContain(h);
    }
    expect(Number(res.headers.get('access-control-max-age'))).toBeGreaterThan(0);
    expect(res.headers.get('vary')?.toLowerCase()).toContain('origin');
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
    const rec = await recordOf(res);
    expect(rec).toMatchObject({ status: 204, decision: 'allow', request: { method: 'OPTIONS' }, details: { origin: APP, requestMethod: 'PUT' } });
    expect(rec.actor.sub).toBeUndefined();
  });

  it('answers for every path under /fhir, even one the classifier refuses, and for the second origin', async () => {
    for (const path of ['', '/metadata', '/.well-known/smart-configuration', '/Observation?patient=x', '/no/such/%2Fthing']) {
      const res = await preflight(path, LOCAL_APP);
      expect(res.status).toBe(204);
      expect(res.headers.get('access-control-allow-origin')).toBe(LOCAL_APP);
    }
  });

  it('an origin not configured gets no Access-Control-* header at all, and is audited as denied', async () => {
    for (const origin of [OTHER, `${APP}/`, 'https://SMART-APP.example', `${APP}, ${OTHER}`, 'null']) {
      const res = await preflight(`/Patient/${DEMO.patients.alice}`, origin);
      expect(res.status).toBe(403);
      expect(accessControl(res)).toEqual([]);
      const body = (await res.json()) as { issue: Array<{ details: { coding: Array<{ code: string }> } }> };
      expect(body.issue[0].details.coding[0].code).toBe('cors-origin-denied');
      const rec = await recordOf(res);
      expect(rec).toMatchObject({ status: 403, decision: 'deny', rule: 'cors.origins: cors-origin-denied' });
    }
  });

  it('an OPTIONS that is not a preflight is an ordinary request (needs a token)', async () => {
    const res = await fetch(`${stack.url}/Patient`, { method: 'OPTIONS', headers: { origin: APP } });
    expect(res.status).toBe(401);
    expect(res.headers.get('access-control-allow-origin')).toBe(APP);
  });
});

describe('actual responses', () => {
  it('a read from an allowed origin is readable: origin, exposed headers, Vary', async () => {
    const res = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT', headers: { origin: APP } });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe(APP);
    const exposed = (res.headers.get('access-control-expose-headers') ?? '').toLowerCase().split(', ');
    for (const h of ['location', 'content-location', 'etag', 'last-modified', 'x-request-id', 'x-break-glass-session', 'www-authenticate', 'retry-after']) {
      expect(exposed).toContain(h);
    }
    expect(res.headers.get('vary')?.toLowerCase()).toContain('origin');
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('errors are readable too: 401 with WWW-Authenticate, 403, 404 route', async () => {
    const unauth = await stack.get(`/Patient/${DEMO.patients.alice}`, { headers: { origin: APP } });
    expect(unauth.status).toBe(401);
    expect(unauth.headers.get('access-control-allow-origin')).toBe(APP);
    expect(unauth.headers.get('www-authenticate')).toBeTruthy();
    const denied = await stack.get(`/Observation?patient=${DEMO.patients.alice}`, { role: 'billing', purpose: 'HPAYMT', headers: { origin: APP } });
    expect(denied.status).toBe(403);
    expect(denied.headers.get('access-control-allow-origin')).toBe(APP);
    const bad = await stack.get('/Patient//x', { role: 'billing', purpose: 'HPAYMT', headers: { origin: LOCAL_APP } });
    expect(bad.status).toBeGreaterThanOrEqual(400);
    expect(bad.headers.get('access-control-allow-origin')).toBe(LOCAL_APP);
  });

  it('a create exposes its Location to the page', async () => {
    const res = await stack.request('/Observation', {
      method: 'POST',
      role: 'clinician',
      purpose: 'TREAT',
      headers: { origin: APP },
      contentType: 'application/fhir+json',
      body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'cors' }, subject: { reference: `Patient/${DEMO.patients.alice}` } }),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toContain(stack.url);
    expect(res.headers.get('access-control-allow-origin')).toBe(APP);
    expect(res.headers.get('access-control-expose-headers')).toContain('Location');
  });

  it('another origin gets the answer without any Access-Control-* header (the browser withholds it), with Vary', async () => {
    const res = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT', headers: { origin: OTHER } });
    expect(res.status).toBe(200);
    expect(accessControl(res)).toEqual([]);
    expect(res.headers.get('vary')?.toLowerCase()).toContain('origin');
  });

  it('the CapabilityStatement says CORS is on, and a page may read it without a token', async () => {
    const res = await fetch(`${stack.url}/metadata`, { headers: { origin: APP } });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe(APP);
    const cs = (await res.json()) as { rest: Array<{ security: { cors: boolean } }> };
    expect(cs.rest[0].security.cors).toBe(true);
  });

  it('routes outside /fhir are not opened to browsers', async () => {
    const res = await fetch(`${stack.url.replace(/\/fhir$/, '')}/audit/export`, { headers: { origin: APP } });
    expect(accessControl(res)).toEqual([]);
  });
});

describe('cors.origins configuration', () => {
  const dir = mkdtempSync(join(tmpdir(), 'phi-cors-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function load(origins: string, env: Record<string, string> = {}) {
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, `upstream: { url: http://127.0.0.1:8103/fhir }\nauth: { issuer: https://idp.example, audience: a, jwksUri: https://idp.example/jwks }\npolicy: ${join(process.cwd(), 'config/policy.yaml')}\n${origins}\n`);
    return readGatewayConfig(file, env);
  }

  it('takes exact origins from the file, or the comma list from the environment instead', () => {
    expect(load(`cors: { origins: ['${APP}', 'http://127.0.0.1:5173'] }`).config?.cors?.origins).toEqual([APP, 'http://127.0.0.1:5173']);
    expect(load(`cors: { origins: ['${APP}'] }`, { PHI_GATEWAY_CORS_ORIGINS: ` ${LOCAL_APP} ,, ${OTHER}` }).config?.cors?.origins).toEqual([LOCAL_APP, OTHER]);
    expect(load('').config?.cors?.origins).toEqual([]);
  });

  it('refuses what a browser never sends as an Origin, located', () => {
    const r = load(`cors:\n  origins: ['*', '${APP}/', 'https://App.example', 'ftp://x.example', 'https://u:p@x.example']`);
    expect(r.config).toBeUndefined();
    expect(r.problems.join('\n')).toMatch(/gateway\.yaml:\d+:\d+ .*'\*' is not allowed/);
    expect(r.problems.join('\n')).toContain(`use '${APP}'`);
    expect(r.problems.join('\n')).toContain("use 'https://app.example'");
    expect(r.problems.join('\n')).toContain('http or https');
    expect(r.problems.join('\n')).not.toContain('u:p');
    const e = load('', { PHI_GATEWAY_CORS_ORIGINS: 'https://x.example/app' });
    expect(e.problems).toEqual(["PHI_GATEWAY_CORS_ORIGINS: 'https://x.example/app' is not written as browsers send it: use 'https://x.example'"]);
  });
});
