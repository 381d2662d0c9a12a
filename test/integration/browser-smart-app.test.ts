/**
 * A browser SMART app on another origin (test/fixtures/smart-app, served on its own port) in
 * headless Chromium: it discovers the gateway without a token (SMART configuration and
 * CapabilityStatement), then reads a Patient and searches with Authorization and X-Purpose-Of-Use,
 * which the browser only sends after a CORS preflight. Checked from the page (what its script got
 * back) and from the audit trail (the preflight has its own record). A page from an origin not in
 * `cors.origins` gets nothing: the browser blocks the read, and the audit shows the preflight denied.
 *
 * Needs /usr/bin/chromium; skipped without it only outside CI.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import type { Bundle, CapabilityStatement, Patient } from 'fhir/r4.js';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const CHROMIUM = '/usr/bin/chromium';
const APP_DIR = new URL('../fixtures/smart-app/', import.meta.url).pathname;
const OAUTH_URIS = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';

interface Step {
  ok: boolean;
  status?: number;
  requestId?: string | null;
  contentType?: string | null;
  body?: unknown;
  error?: string;
}
interface AppResult {
  smartConfiguration: Step;
  metadata: Step;
  read: Step;
  search: Step;
}

/** Serves the app's files on 127.0.0.1 at a free port: an origin of its own. */
async function serveApp(): Promise<{ origin: string; server: Server }> {
  const types: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };
  const server = createServer((req, res) => {
    const name = (req.url ?? '/').split('?')[0].replace(/^\/+/, '') || 'index.html';
    if (!/^[a-z-]+\.(html|js)$/.test(name) || !existsSync(join(APP_DIR, name))) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(name)] }).end(readFileSync(join(APP_DIR, name)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const runnable = existsSync(CHROMIUM) || inCi;

describe.skipIf(!runnable)('a browser SMART app on another origin', () => {
  let stack: Stack;
  let allowed: { origin: string; server: Server };
  let foreign: { origin: string; server: Server };
  let browser: Browser;
  let oidc: Record<string, unknown>;

  beforeAll(async () => {
    allowed = await serveApp();
    foreign = await serveApp();
    stack = await startStack({ env: { PHI_GATEWAY_CORS_ORIGINS: allowed.origin } });
    oidc = (await (await fetch(`${stack.idp.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    for (const s of [allowed, foreign]) if (s) await new Promise<void>((resolve) => s.server.close(() => resolve()));
  });

  async function runApp(origin: string): Promise<AppResult> {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${origin}/index.html`);
      await page.waitForFunction("document.getElementById('status')?.textContent === 'ready'");
      const args = {
        fhirBase: stack.url,
        token: await stack.token('billing'),
        purpose: 'HPAYMT',
        patientId: DEMO.patients.alice,
        search: `Patient?name=${DEMO.families[0]}`,
      };
      return await page.evaluate((o) => (globalThis as unknown as { smartApp: { run(x: typeof o): Promise<AppResult> } }).smartApp.run(o), args);
    } finally {
      await context.close();
    }
  }

  /** Audit records written after `before` records, for requests on `path` (relative to /fhir). */
  function recordsFor(records: ChainedRecord[], path: string): ChainedRecord[] {
    return records.filter((r) => r.kind === 'fhir' && r.request.path.replace(/^\/fhir/, '') === path);
  }

  it('discovers the gateway, then reads and searches through a preflight; each preflight is audited', async () => {
    const before = (await stack.auditRecords()).length;
    const out = await runApp(allowed.origin);

    // Discovery, without a token: the gateway's own documents, readable by the page.
    expect(out.smartConfiguration).toMatchObject({ ok: true, status: 200 });
    const smart = out.smartConfiguration.body as Record<string, unknown>;
    expect(smart.token_endpoint).toBe(oidc.token_endpoint);
    expect(smart.authorization_endpoint).toBe(oidc.authorization_endpoint);
    expect(Array.isArray(smart.capabilities)).toBe(true);

    expect(out.metadata).toMatchObject({ ok: true, status: 200 });
    const cs = out.metadata.body as CapabilityStatement;
    expect(cs.resourceType).toBe('CapabilityStatement');
    const oauth = cs.rest?.[0]?.security?.extension?.find((e) => e.url === OAUTH_URIS);
    expect(oauth?.extension?.find((e) => e.url === 'token')?.valueUri).toBe(oidc.token_endpoint);
    expect(JSON.stringify(cs)).not.toContain(stack.upstreamUrl);

    // The read and the search, as the page sees them: allowed, redacted for billing.
    expect(out.read).toMatchObject({ ok: true, status: 200 });
    const alice = out.read.body as Patient;
    expect(alice.id).toBe(DEMO.patients.alice);
    expect(alice.name?.[0]?.family).toBe(DEMO.families[0]);
    expect(alice.telecom).toBeUndefined();
    expect(JSON.stringify(out.read.body)).not.toContain(DEMO.ssn.alice);
    expect(out.search).toMatchObject({ ok: true, status: 200 });
    const bundle = out.search.body as Bundle;
    expect(bundle.entry?.map((e) => e.resource?.id)).toContain(DEMO.patients.alice);
    expect(JSON.stringify(bundle)).not.toContain(DEMO.ssn.alice);
    // X-Request-Id is exposed to the page: it names the audit record of each request.
    expect(out.read.requestId).toMatch(/\S/);
    expect(out.search.requestId).toMatch(/\S/);

    const records = (await stack.auditRecords()).slice(before);
    const readPath = `/Patient/${DEMO.patients.alice}`;
    const preflights = recordsFor(records, readPath).filter((r) => r.request.method === 'OPTIONS');
    expect(preflights).toHaveLength(1);
    expect(preflights[0].decision).toBe('allow');
    expect(preflights[0].status).toBeLessThan(300);
    expect(preflights[0].actor.sub).toBeUndefined();
    const read = recordsFor(records, readPath).filter((r) => r.request.method === 'GET');
    expect(read.map((r) => r.id)).toEqual([out.read.requestId]);
    expect(read[0]).toMatchObject({ decision: 'allow', purpose: 'HPAYMT', status: 200 });
    expect(read[0].actor.roles).toEqual(['billing']);
    expect(preflights[0].id).not.toBe(read[0].id);
    // The search had its own preflight, before the search itself.
    const searchRecords = records.filter((r) => r.request.path.includes('/Patient?'));
    expect(searchRecords.map((r) => r.request.method)).toEqual(['OPTIONS', 'GET']);
    expect(searchRecords[1].id).toBe(out.search.requestId);
  });

  it('an origin not configured: the browser blocks the read, and the audit shows the preflight denied', async () => {
    const before = (await stack.auditRecords()).length;
    const out = await runApp(foreign.origin);

    expect(out.read.ok).toBe(false);
    expect(out.read.error).toMatch(/TypeError/);
    expect(out.search.ok).toBe(false);
    expect(JSON.stringify(out)).not.toContain(DEMO.names.alice.split(' ')[0]);

    const records = (await stack.auditRecords()).slice(before);
    const readPath = `/Patient/${DEMO.patients.alice}`;
    const forRead = recordsFor(records, readPath);
    expect(forRead.map((r) => [r.request.method, r.decision])).toEqual([['OPTIONS', 'deny']]);
    // Denied for its origin (not, say, for the token a preflight never carries).
    expect(forRead[0].rule).toMatch(/cors/i);
    expect(forRead[0].status).toBeGreaterThanOrEqual(400);
    // The browser never sent the read itself, nor the search.
    expect(records.filter((r) => r.request.method === 'GET' && r.request.path.includes('/Patient'))).toEqual([]);
  });
});
