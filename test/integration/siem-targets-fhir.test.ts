// The FHIR target against the demo FHIR server (medplum's fhir-router) as the Audit Record
// Repository, behind a bearer-token check: the records' BALP AuditEvents created in batches and
// searchable by their tag, a batch sent again creates nothing twice (conditional create), the
// target's own credentials (a bearer token; client credentials from a token endpoint) are what
// reach the repository, and a refusal or an unreachable repository fails the delivery by code.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import type { AuditEvent, Bundle } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainRecords, genesisHead } from '../../src/audit/chain.js';
import { toAuditEvents } from '../../src/audit/fhir.js';
import type { AuditRecord, ChainedRecord } from '../../src/audit/record.js';
import { buildFhirUpstream, DemoRepository } from '../../src/demo/upstream.js';
import { AUDIT_EVENT_TAG_SYSTEM, createTarget, deliveryErrorCode } from '../../src/siem/targets.js';
import type { FhirTargetConfig, Target } from '../../src/siem/types.js';
import { createTestPki, HAS_OPENSSL } from '../helpers/pki.js';
import { capturingLogger } from '../unit/breakglass/helpers.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

const TOKEN = 'arr-token-7f3a9c';
const CC_TOKEN = 'cc-issued-token-51d2';
const CLIENT_ID = 'phi-gateway-audit';
const CLIENT_SECRET = 'cc-secret-9e8d';

let seq = 0;
function records(n: number, over: (i: number) => Partial<AuditRecord> = () => ({})): ChainedRecord[] {
  const recs = Array.from({ length: n }, () => {
    seq += 1;
    return sampleRecord(seq, { id: `8d0c6e1a-0000-4000-8000-${String(seq).padStart(12, '0')}`, ...over(seq) });
  });
  return chainRecords(genesisHead('w-1'), recs).chained;
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return deliveryErrorCode(e);
  }
  throw new Error('the delivery succeeded');
}

describe('FHIR target against the demo FHIR server as the Audit Record Repository', () => {
  let arr: FastifyInstance;
  let base: string;
  let idp: FastifyInstance;
  let tokenUrl: string;
  let tokenRequests = 0;
  const seen: Array<{ method: string; url: string; authorization: string | undefined }> = [];

  beforeAll(async () => {
    // The real repository, behind a check of the bearer token (the ARR's own access control).
    const repo = new DemoRepository();
    arr = await buildFhirUpstream({ repo, seed: false });
    arr.addHook('onRequest', async (req, reply) => {
      seen.push({ method: req.method, url: req.url, authorization: req.headers.authorization });
      const auth = req.headers.authorization;
      if (req.method === 'POST' && auth !== `Bearer ${TOKEN}` && auth !== `Bearer ${CC_TOKEN}`) {
        await reply.code(401).type('application/fhir+json').send({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] });
      }
    });
    await arr.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(arr.server.address() as { port: number }).port}/fhir`;

    // A token endpoint for the client-credentials grant (HTTP Basic client authentication).
    idp = Fastify();
    idp.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    idp.post('/token', async (req, reply) => {
      tokenRequests += 1;
      const basic = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;
      const form = new URLSearchParams(req.body as string);
      if (req.headers.authorization !== basic || form.get('grant_type') !== 'client_credentials') return reply.code(401).send({ error: 'invalid_client' });
      return { access_token: CC_TOKEN, token_type: 'Bearer', expires_in: 3600 };
    });
    await idp.listen({ host: '127.0.0.1', port: 0 });
    tokenUrl = `http://127.0.0.1:${(idp.server.address() as { port: number }).port}/token`;
  });
  afterAll(async () => {
    await arr?.close();
    await idp?.close();
  });

  function target(over: Partial<FhirTargetConfig> = {}): { target: Target; lines: string[] } {
    const { logger, lines } = capturingLogger();
    const config: FhirTargetConfig = { name: 'arr', type: 'fhir', url: base, auth: { type: 'bearer', token: TOKEN }, batchSize: 2, ...over };
    return { target: createTarget(config, { logger }), lines };
  }

  async function search(query: string): Promise<Bundle> {
    const res = await fetch(`${base}/AuditEvent?${query}`);
    expect(res.status).toBe(200);
    return (await res.json()) as Bundle;
  }

  const tagged = (key: string) => `_tag=${encodeURIComponent(`${AUDIT_EVENT_TAG_SYSTEM}|${key}`)}`;

  it('creates the AuditEvents in batches, each searchable by its tag; a batch sent again creates nothing twice', async () => {
    const { target: t } = target();
    const recs = records(3, (i) => (i % 3 === 0 ? { disclosed: { resources: [], patients: ['pa', 'pb'], elementsRemoved: 0, resourcesWithheld: 0 } } : {}));
    const keys = recs.flatMap((r) => {
      const n = toAuditEvents(r).length;
      return n === 1 ? [r.id] : Array.from({ length: n }, (_, i) => `${r.id}-${i + 1}`);
    });
    expect(keys).toHaveLength(4);
    const posts = seen.length;
    await t.deliver(recs);
    // 4 AuditEvents, 2 per Bundle.
    expect(seen.slice(posts).filter((s) => s.method === 'POST')).toHaveLength(2);
    const before = (await search('_count=1000')).total;
    // The whole batch again (as after a failure that hid a success): nothing new.
    await t.deliver(recs);
    await t.deliver(recs.slice(1));
    expect((await search('_count=1000')).total).toBe(before);
    for (const key of keys) {
      const found = await search(tagged(key));
      expect(found.total).toBe(1);
      const ev = found.entry?.[0].resource as AuditEvent;
      const rec = recs.find((r) => key.startsWith(r.id))!;
      const events = toAuditEvents(rec);
      const expected = events[events.length === 1 ? 0 : Number(key.slice(rec.id.length + 1)) - 1];
      expect(ev.recorded).toBe(rec.time);
      expect(ev.type).toEqual(expected.type);
      expect(ev.entity).toEqual(JSON.parse(JSON.stringify(expected.entity)));
      expect(ev.entity?.at(-1)?.what?.identifier?.value).toBe(rec.id);
    }
    await t.close();
  });

  it('sends its own bearer token; a wrong one is refused (http-401) and nothing is created', async () => {
    const { target: good } = target();
    const recs = records(1);
    await good.deliver(recs);
    expect(seen.at(-1)).toMatchObject({ method: 'POST', authorization: `Bearer ${TOKEN}` });
    await good.close();

    const { target: bad, lines } = target({ auth: { type: 'bearer', token: 'wrong-token-xyz' } });
    const other = records(1);
    expect(await failure(bad.deliver(other))).toBe('http-401');
    expect((await search(tagged(other[0].id))).total).toBe(0);
    expect(lines.join('\n')).not.toContain('wrong-token-xyz');
    await bad.close();
  });

  it('client credentials: the token is fetched from the token endpoint once and sent', async () => {
    const { target: t } = target({ auth: { type: 'client-credentials', tokenUrl, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET } });
    const before = tokenRequests;
    const a = records(3);
    await t.deliver(a);
    await t.deliver(records(1));
    expect(tokenRequests - before).toBe(1);
    expect(seen.at(-1)).toMatchObject({ method: 'POST', authorization: `Bearer ${CC_TOKEN}` });
    expect((await search(tagged(a[2].id))).total).toBe(1);
    await t.close();

    const { target: wrong } = target({ auth: { type: 'client-credentials', tokenUrl, clientId: CLIENT_ID, clientSecret: 'not-the-secret' } });
    expect(await failure(wrong.deliver(records(1)))).toBe('auth-failed');
    await wrong.close();
  });

  it('an unreachable repository fails the delivery with the network code', async () => {
    const { target: t } = target({ url: 'http://127.0.0.1:1/fhir' });
    expect(await failure(t.deliver(records(1)))).toBe('ECONNREFUSED');
    await t.close();
  });

  it('one entry refused fails the whole delivery', async () => {
    // A repository that answers the batch with one entry refused (a validation failure, say).
    const refusing = Fastify();
    refusing.addContentTypeParser('application/fhir+json', { parseAs: 'string' }, (_req, body, done) => done(null, JSON.parse(body as string)));
    refusing.post('/fhir', async (req) => {
      const b = req.body as Bundle;
      return { resourceType: 'Bundle', type: 'batch-response', entry: (b.entry ?? []).map((_e, i) => ({ response: { status: i === 1 ? '422 Unprocessable Entity' : '201 Created' } })) };
    });
    await refusing.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(refusing.server.address() as { port: number }).port}/fhir`;
    const { target: t } = target({ url, auth: { type: 'none' } });
    await t.deliver(records(1));
    expect(await failure(t.deliver(records(2)))).toBe('entry-422');
    await t.close();
    await refusing.close();
  });

  it.skipIf(!HAS_OPENSSL)('over HTTPS with mutual TLS: the configured CA and client certificate are used', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phi-arr-pki-'));
    createTestPki(dir, [
      { name: 'server', cn: 'localhost', san: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth' },
      { name: 'client', cn: 'phi-gateway', san: 'DNS:phi-gateway', usage: 'clientAuth' },
    ]);
    const pem = (f: string) => readFileSync(join(dir, f));
    // The repository's TLS front: HTTPS requiring a client certificate, passing requests on to it.
    const front = Fastify({ https: { key: pem('server-key.pem'), cert: pem('server.pem'), ca: pem('ca.pem'), requestCert: true, rejectUnauthorized: true } });
    front.addContentTypeParser('application/fhir+json', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    front.post('/fhir', async (req, reply) => {
      const res = await arr.inject({ method: 'POST', url: '/fhir', headers: req.headers as Record<string, string>, payload: req.body as string });
      return reply.code(res.statusCode).type('application/fhir+json').send(res.body);
    });
    await front.listen({ host: '127.0.0.1', port: 0 });
    const url = `https://127.0.0.1:${(front.server.address() as { port: number }).port}/fhir`;
    try {
      const tls = { ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client-key.pem') };
      const { target: ok } = target({ url, tls });
      const recs = records(2);
      await ok.deliver(recs);
      expect((await search(tagged(recs[1].id))).total).toBe(1);
      await ok.close();

      const { target: noCa } = target({ url, tls: { cert: tls.cert, key: tls.key } });
      expect(await failure(noCa.deliver(records(1)))).toMatch(/CERT|SIGNATURE|ISSUER/);
      await noCa.close();

      const { target: noCert } = target({ url, tls: { ca: tls.ca } });
      // Refused by the server after the handshake (TLS 1.3): the socket closes under the request.
      expect(await failure(noCert.deliver(records(1)))).toMatch(/^(UND_ERR_SOCKET|ECONNRESET|ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED)$/);
      await noCert.close();
    } finally {
      await front.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
