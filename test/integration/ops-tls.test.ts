/**
 * TLS (issue 7): the gateway reaches an upstream that requires client certificates (mTLS) with a
 * custom CA, refuses upstreams it cannot verify (the @fastify/reply-from it once used turned verification off by default:
 * regression), and serves its own listener over TLS. Certificates are generated per run with
 * openssl (skipped loudly when it is missing).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadGatewayConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/server/logger.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { freePort, testPolicyFile } from '../helpers/gateway.js';
import { createTestPki, HAS_OPENSSL, issueCert } from '../helpers/pki.js';
import { type Idp, startIdp } from '../helpers/idp.js';

const OPENSSL = HAS_OPENSSL;
if (!OPENSSL) console.warn('\n*** openssl not found: TLS tests SKIPPED ***\n');

// The shipped policy without its care-relationship requirements: these tokens name no fhirUser.
const TEST_POLICY = testPolicyFile();
afterAll(() => TEST_POLICY.remove());
const POLICY = TEST_POLICY.file;
let dir: string;
let upstream: Server;
let upstreamUrl: string;
/** Subject CN of the client certificate of each request the upstream answered ('' = none). */
const seenClients: string[] = [];
let idp: Idp;
let clinician: Record<string, string>;
const running: RunningGateway[] = [];

/** The subject CN of the certificate a TLS listener presents. */
function peerCn(url: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u.hostname, port: Number(u.port), ca: readFileSync(join(dir, 'ca.pem')) }, () => {
      const cn = String(socket.getPeerCertificate().subject.CN);
      socket.end();
      resolve(cn);
    });
    socket.once('error', reject);
  });
}

async function gateway(yaml: string): Promise<{ gw: RunningGateway; admin: string }> {
  const file = join(dir, `gateway-${running.length}.yaml`);
  writeFileSync(file, yaml);
  const env = {
    PHI_GATEWAY_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_ISSUER: idp.issuer,
    PHI_GATEWAY_AUDIENCE: idp.audience,
    PHI_GATEWAY_JWKS_URI: idp.jwksUri,
    PHI_GATEWAY_AUDIT: `file:${join(dir, `audit-${running.length}`)}`,
  };
  const config = loadGatewayConfig(file, env);
  const gw = await startGateway(config, { logger: createLogger('silent') });
  running.push(gw);
  return { gw, admin: `http://${config.admin.host}:${config.admin.port}` };
}

const base = (tls: string, listenerTls = '') => `version: 1
policy: ${POLICY}
upstream:
  url: ${upstreamUrl}
${tls}
auth: { issuer: placeholder, audience: placeholder, jwksUri: https://idp.invalid/jwks }
${listenerTls}
`;

beforeAll(async () => {
  if (!OPENSSL) return;
  dir = mkdtempSync(join(tmpdir(), 'phi-ops-tls-'));
  createTestPki(dir, [
    { name: 'upstream', cn: 'fhir-upstream', san: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth' },
    { name: 'client', cn: 'phi-gateway-client', san: 'DNS:phi-gateway', usage: 'clientAuth' },
    { name: 'listener', cn: 'phi-gateway', san: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth' },
  ]);
  // An upstream that accepts only clients with a certificate from the test CA.
  upstream = createServer(
    {
      key: readFileSync(join(dir, 'upstream-key.pem')),
      cert: readFileSync(join(dir, 'upstream.pem')),
      ca: readFileSync(join(dir, 'ca.pem')),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      seenClients.push(String((req.socket as TLSSocket).getPeerCertificate()?.subject?.CN ?? ''));
      const body = req.url?.endsWith('/metadata')
        ? JSON.stringify({ resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1', format: ['json'] })
        : JSON.stringify({ resourceType: 'Patient', id: 'tls-1', gender: 'female' });
      res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    },
  );
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}/fhir`;
  idp = await startIdp();
  clinician = { authorization: `Bearer ${await idp.tokenFor('clinician')}`, 'x-purpose-of-use': 'TREAT' };
}, 60_000);

afterAll(async () => {
  for (const gw of running) await gw.close();
  await idp?.close();
  if (upstream) await new Promise((r) => upstream.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!OPENSSL)('upstream TLS', () => {
  it('reaches an mTLS upstream with the configured CA and client certificate', async () => {
    const { gw, admin } = await gateway(base('  tls: { ca: ./ca.pem, cert: ./client.pem, key: ./client-key.pem }'));
    const before = seenClients.length;
    const res = await fetch(`${gw.url}/Patient/tls-1`, { headers: clinician });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ resourceType: 'Patient', id: 'tls-1' });
    expect(seenClients.slice(before)).toContain('phi-gateway-client');
    // Readiness probes the upstream with the same TLS settings.
    const ready = await fetch(`${admin}/readyz`);
    expect(await ready.json()).toMatchObject({ upstream: true });
  });

  it('fails closed (502) when the upstream wants a client certificate and none is configured', async () => {
    const { gw, admin } = await gateway(base('  tls: { ca: ./ca.pem }'));
    const res = await fetch(`${gw.url}/Patient/tls-1`, { headers: clinician });
    expect(res.status).toBe(502);
    const body = (await res.json()) as { issue: Array<{ details: { coding: Array<{ code: string }> } }> };
    expect(body.issue[0].details.coding[0].code).toBe('upstream-unavailable');
    expect(await (await fetch(`${admin}/readyz`)).json()).toMatchObject({ upstream: false });
  });

  it('regression: verifies the upstream certificate (@fastify/reply-from, used before, disabled verification unless told)', async () => {
    // Client certificate present, but no CA: the upstream's certificate cannot be verified.
    const { gw } = await gateway(base('  tls: { cert: ./client.pem, key: ./client-key.pem }'));
    const before = seenClients.length;
    const res = await fetch(`${gw.url}/Patient/tls-1`, { headers: clinician });
    expect(res.status).toBe(502);
    expect(seenClients.length).toBe(before);
  });
});

describe.skipIf(!OPENSSL)('listener TLS', () => {
  it('serves the FHIR API over TLS with the configured certificate, and rotates it on reload', async () => {
    const { gw } = await gateway(
      base('  tls: { ca: ./ca.pem, cert: ./client.pem, key: ./client-key.pem }', 'tls: { cert: ./listener.pem, key: ./listener-key.pem }'),
    );
    expect(gw.url.startsWith('https://127.0.0.1:')).toBe(true);
    const trusting = new Agent({ connect: { ca: readFileSync(join(dir, 'ca.pem')) } });
    const res = await undiciFetch(`${gw.url}/Patient/tls-1`, { headers: clinician, dispatcher: trusting });
    expect(res.status).toBe(200);
    // Not trusted without the CA, and no plain-HTTP fallback on the same port.
    await expect(fetch(`${gw.url}/Patient/tls-1`, { headers: clinician })).rejects.toThrow();
    await expect(fetch(`${gw.url.replace('https:', 'http:')}/Patient/tls-1`, { headers: clinician })).rejects.toThrow();
    await trusting.close();

    // Rotation: new files in place, a reload, and new connections get the new certificate.
    expect(await peerCn(gw.url)).toBe('phi-gateway');
    issueCert(dir, { name: 'rotated', cn: 'phi-gateway-rotated', san: 'IP:127.0.0.1', usage: 'serverAuth' });
    copyFileSync(join(dir, 'rotated.pem'), join(dir, 'listener.pem'));
    copyFileSync(join(dir, 'rotated-key.pem'), join(dir, 'listener-key.pem'));
    gw.reloadWithReport('test');
    expect(await peerCn(gw.url)).toBe('phi-gateway-rotated');
  });
});
