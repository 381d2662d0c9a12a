/**
 * One upstream TLS configuration for every call the gateway makes: besides the proxied requests,
 * the compartment write check (the stored resource is read first) and the family-name anomaly
 * lookup must reach an mTLS upstream with the configured CA and client certificate. Before, both
 * used the system CAs and no client certificate, so against such an upstream every compartment
 * write failed and the family-name rule could never fire. Certificates are generated per run with
 * openssl (skipped loudly when it is missing).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { loadGatewayConfig } from '../../src/config/load.js';
import { createUpstreamFamilyLookup } from '../../src/monitor/names.js';
import { upstreamTlsOptions } from '../../src/server/app.js';
import { createLogger } from '../../src/server/logger.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { freePort, testPolicyFile } from '../helpers/gateway.js';
import { createTestPki, HAS_OPENSSL } from '../helpers/pki.js';
import { type Idp, startIdp } from '../helpers/idp.js';

const OPENSSL = HAS_OPENSSL;
if (!OPENSSL) console.warn('\n*** openssl not found: upstream TLS monitor tests SKIPPED ***\n');

// The shipped policy without its care-relationship requirements: these tokens name no fhirUser.
const TEST_POLICY = testPolicyFile();
afterAll(() => TEST_POLICY.remove());
const POLICY = TEST_POLICY.file;
let dir: string;
let upstream: Server;
let upstreamUrl: string;
let idp: Idp;
/** Every request the upstream answered: method, path and the client certificate's CN ('' = none). */
const seen: Array<{ method: string; path: string; cn: string }> = [];
let gw: RunningGateway;
let auditDir: string;

const RESOURCES: Record<string, unknown> = {
  '/fhir/Patient/tls-baker': { resourceType: 'Patient', id: 'tls-baker', name: [{ family: 'Baker', given: ['Brian'] }], gender: 'male' },
  '/fhir/Observation/o1': {
    resourceType: 'Observation',
    id: 'o1',
    meta: { versionId: '1' },
    status: 'final',
    code: { text: 'BP' },
    subject: { reference: 'Patient/tls-pat' },
  },
};

function send(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

beforeAll(async () => {
  if (!OPENSSL) return;
  dir = mkdtempSync(join(tmpdir(), 'phi-monitor-tls-'));
  createTestPki(dir, [
    { name: 'upstream', cn: 'fhir-upstream', san: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth' },
    { name: 'client', cn: 'phi-gateway-client', san: 'DNS:phi-gateway', usage: 'clientAuth' },
  ]);
  // Accepts only clients holding a certificate from the test CA.
  upstream = createServer(
    {
      key: readFileSync(join(dir, 'upstream-key.pem')),
      cert: readFileSync(join(dir, 'upstream.pem')),
      ca: readFileSync(join(dir, 'ca.pem')),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      const path = (req.url ?? '').split('?')[0];
      seen.push({ method: req.method ?? '', path, cn: String((req.socket as TLSSocket).getPeerCertificate()?.subject?.CN ?? '') });
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (req.method === 'PUT') return send(res, 200, JSON.parse(body));
        const r = RESOURCES[path];
        if (r) return send(res, 200, r);
        send(res, 404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] });
      });
    },
  );
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}/fhir`;
  idp = await startIdp();
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `version: 1
policy: ${POLICY}
upstream:
  url: ${upstreamUrl}
  tls: { ca: ./ca.pem, cert: ./client.pem, key: ./client-key.pem }
auth: { issuer: placeholder, audience: placeholder, jwksUri: https://idp.invalid/jwks }
`,
  );
  auditDir = join(dir, 'audit');
  const config = loadGatewayConfig(file, {
    PHI_GATEWAY_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_ISSUER: idp.issuer,
    PHI_GATEWAY_AUDIENCE: idp.audience,
    PHI_GATEWAY_JWKS_URI: idp.jwksUri,
    PHI_GATEWAY_AUDIT: `file:${auditDir}`,
  });
  gw = await startGateway(config, { logger: createLogger('silent') });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await idp?.close();
  if (upstream) await new Promise((r) => upstream.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function auditRecords(): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  for await (const item of openAuditSource({ sink: 'file', path: auditDir, failOpen: false, rotateBytes: 0, groupCommitMs: 0 })) {
    if ('record' in item) out.push(item.record as ChainedRecord);
  }
  return out;
}

describe.skipIf(!OPENSSL)('the gateway’s own upstream calls use the upstream TLS configuration', () => {
  it('compartment write check: the stored resource is read over mTLS, then the write is forwarded', async () => {
    const token = await idp.tokenFor('clinician', { sub: 'dr-tls', patient: 'tls-pat' });
    const before = seen.length;
    const res = await fetch(`${gw.url}/Observation/o1`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT', 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...(RESOURCES['/fhir/Observation/o1'] as object), meta: undefined, status: 'amended' }),
    });
    expect(res.status).toBe(200);
    // The check's read, then the write: both presented the configured client certificate.
    expect(seen.slice(before).map((s) => `${s.method} ${s.path} ${s.cn}`)).toEqual([
      'GET /fhir/Observation/o1 phi-gateway-client',
      'PUT /fhir/Observation/o1 phi-gateway-client',
    ]);
  });

  it('family-name lookup: the anomaly fires because the lookup reached the mTLS upstream', async () => {
    const token = await idp.tokenFor('clinician', { sub: 'dr-baker', family_name: 'Baker' });
    const before = seen.length;
    const res = await fetch(`${gw.url}/Patient/tls-baker`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'TREAT' } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    await gw.monitor.idle();
    // The proxied read and the lookup's own read, each with the client certificate.
    const reads = seen.slice(before);
    expect(reads.map((s) => `${s.method} ${s.path}`)).toEqual(['GET /fhir/Patient/tls-baker', 'GET /fhir/Patient/tls-baker']);
    expect(reads.every((s) => s.cn === 'phi-gateway-client')).toBe(true);
    const anomalies = (await auditRecords()).filter((r) => r.kind === 'anomaly' && r.actor.sub === 'dr-baker');
    expect(anomalies).toHaveLength(1);
    expect(anomalies[0].disclosed.patients).toEqual(['tls-baker']);
  });

  it('the lookup fails closed without the dispatcher (system CAs, no client certificate) and matches with it', async () => {
    const tls = upstreamTlsOptions({ url: upstreamUrl, tls: { ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client-key.pem') } } as Parameters<
      typeof upstreamTlsOptions
    >[0]);
    const agent = new Agent({ connect: tls });
    try {
      const without = createUpstreamFamilyLookup({ url: upstreamUrl, authorization: async () => undefined });
      await expect(without.matches('tls-baker', 'Baker')).rejects.toThrow();
      const withIt = createUpstreamFamilyLookup({ url: upstreamUrl, authorization: async () => undefined, dispatcher: agent });
      expect(await withIt.matches('tls-baker', 'baker ')).toBe(true);
      expect(await withIt.matches('tls-baker', 'Smith')).toBe(false);
    } finally {
      await agent.close();
    }
  });
});
