/**
 * Header smuggling (BYPASSES list after 15, class 7): duplicate and comma-joined Authorization,
 * folded headers, a second purpose header, repeated X-Role, method-override headers and `_method`,
 * conflicting framing (Content-Length + Transfer-Encoding), forwarded-host games. The raw requests
 * are written on a socket so that nothing (fetch, undici) merges or normalizes them first.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { errorCode, expectError, receive } from './support.js';

interface RawAnswer {
  status: number;
  head: string;
  body: string;
}

/** Sends `lines` (the request head, without the final blank line) plus `body`, reads to close. */
function rawRequest(base: string, lines: string[], body = ''): Promise<RawAnswer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', reject);
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const sep = text.indexOf('\r\n\r\n');
      const head = sep < 0 ? text : text.slice(0, sep);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body: sep < 0 ? '' : text.slice(sep + 4) });
    });
    sock.write(`${[...lines, `Host: ${u.host}`, 'Connection: close'].join('\r\n')}\r\n\r\n${body}`);
  });
}

let up: FaultyUpstream;
let stack: Stack;
let clin: string;
let bill: string;
const SECRET = 'SMUGGLED-SECRET-5521';

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Patient/p1': fhirJson({ resourceType: 'Patient', id: 'p1', gender: 'female', telecom: [{ value: SECRET }] }),
  });
  stack = await startStack({ upstreamUrl: up.url });
  clin = await stack.token('clinician');
  bill = await stack.token('billing');
  up.set(
    '/Patient',
    fhirJson({
      resourceType: 'Bundle',
      type: 'searchset',
      link: [{ relation: 'self', url: `${up.url}/Patient?gender=female` }, { relation: 'next', url: `${up.url}/Patient?page=2` }],
      entry: [],
    }),
  );
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

const path = () => `${new URL(stack.url).pathname}/Patient/p1`;

describe('Authorization smuggling', () => {
  it('two Authorization headers (billing first, clinician second) are refused, not merged or picked', async () => {
    const before = up.requests.length;
    const a = await rawRequest(stack.url, [`GET ${path()} HTTP/1.1`, `Authorization: Bearer ${bill}`, `Authorization: Bearer ${clin}`, 'X-Purpose-Of-Use: TREAT']);
    expect(a.status).toBe(401);
    expect(errorCode(JSON.parse(a.body))).toBe('invalid-token');
    expect(a.body).not.toContain(SECRET);
    expect(up.requests.length).toBe(before);
  });

  it('a comma-joined pair in one header is refused', async () => {
    const r = await receive(await stack.get('/Patient/p1', { purpose: 'TREAT', headers: { authorization: `Bearer ${bill}, Bearer ${clin}` } }));
    expectError(r, 401, 'invalid-token');
  });

  it('an obs-folded Authorization header never authenticates', async () => {
    const [h, p, s] = clin.split('.');
    const a = await rawRequest(stack.url, [`GET ${path()} HTTP/1.1`, `Authorization: Bearer ${h}.${p}`, ` .${s}`, 'X-Purpose-Of-Use: TREAT']);
    expect([400, 401]).toContain(a.status);
    expect(a.body).not.toContain(SECRET);
  });
});

describe('purpose and role smuggling', () => {
  it('a second X-Purpose-Of-Use header is refused (400 purpose-repeated)', async () => {
    const a = await rawRequest(stack.url, [`GET ${path()} HTTP/1.1`, `Authorization: Bearer ${clin}`, 'X-Purpose-Of-Use: TREAT', 'X-Purpose-Of-Use: HPAYMT']);
    expect(a.status).toBe(400);
    expect(errorCode(JSON.parse(a.body))).toBe('purpose-repeated');
  });

  it.each(['TREAT, HPAYMT', 'TREAT,TREAT', 'HPAYMT;TREAT', 'treat', 'http://evil.example|TREAT', 'urn:oid:2.16.840.1.113883.5.8|BOGUS'])(
    'purpose %j is refused',
    async (purpose) => {
      const r = await receive(await stack.get('/Patient/p1', { role: 'clinician', purpose }));
      expect(r.status).toBe(400);
      expect(['purpose-repeated', 'purpose-unknown']).toContain(errorCode(r.json));
    },
  );

  it('a purpose spelled with underscores is not read as the purpose header', async () => {
    const a = await rawRequest(stack.url, [`GET ${path()} HTTP/1.1`, `Authorization: Bearer ${clin}`, 'X_Purpose_Of_Use: TREAT']);
    expect(a.status).toBe(400);
    expect(errorCode(JSON.parse(a.body))).toBe('purpose-missing');
  });

  it('the declared purpose must be one of the role\'s (billing cannot claim TREAT)', async () => {
    const r = await receive(await stack.get('/Patient/p1', { token: bill, purpose: 'TREAT' }));
    expectError(r, 403, 'purpose-not-permitted');
    expect(r.text).not.toContain(SECRET);
  });

  it('the token limits the purposes a header may declare', async () => {
    const r = await receive(await stack.get('/Patient/p1', { role: 'clinician', purpose: 'TREAT', tokenClaims: { purpose_of_use: ['COC'] } }));
    expectError(r, 403, 'purpose-not-in-token');
  });

  it('a repeated X-Role header is refused', async () => {
    const a = await rawRequest(stack.url, [`GET ${path()} HTTP/1.1`, `Authorization: Bearer ${clin}`, 'X-Purpose-Of-Use: TREAT', 'X-Role: clinician', 'X-Role: billing']);
    expect(a.status).toBe(403);
    expect(errorCode(JSON.parse(a.body))).toBe('role-not-held');
  });

  it('X-Role naming a role the token does not hold is refused', async () => {
    const r = await receive(await stack.get('/Patient/p1', { token: bill, purpose: 'HPAYMT', headers: { 'x-role': 'clinician' } }));
    expectError(r, 403, 'role-not-held');
  });
});

describe('method overrides are refused, never honoured or ignored', () => {
  it.each(['x-http-method-override', 'x-http-method', 'x-method-override'])('%s: DELETE on a GET', async (h) => {
    const before = up.requests.length;
    const r = await receive(await stack.get('/Patient/p1', { token: clin, purpose: 'TREAT', headers: { [h]: 'DELETE' } }));
    expectError(r, 400, 'request-unclassified');
    expect(up.requests.length).toBe(before);
  });

  it('a _method parameter in the query or a POST _search form body', async () => {
    const q = await receive(await stack.get('/Patient/p1?_method=DELETE', { token: clin, purpose: 'TREAT' }));
    expectError(q, 400, 'request-unclassified');
    const f = await receive(
      await stack.request('/Patient/_search', { token: clin, purpose: 'TREAT', method: 'POST', body: '_method=DELETE&gender=female', contentType: 'application/x-www-form-urlencoded' }),
    );
    expectError(f, 400, 'request-unclassified');
  });
});

describe('framing and forwarding games', () => {
  it('Content-Length together with Transfer-Encoding is refused before the pipeline', async () => {
    const before = up.requests.length;
    const body = '0\r\n\r\nGET /fhir/Patient/p1 HTTP/1.1\r\nHost: x\r\n\r\n';
    const a = await rawRequest(
      stack.url,
      [`POST ${new URL(stack.url).pathname}/Patient/_search HTTP/1.1`, `Authorization: Bearer ${clin}`, 'X-Purpose-Of-Use: TREAT', 'Content-Type: application/x-www-form-urlencoded', `Content-Length: ${body.length}`, 'Transfer-Encoding: chunked'],
      body,
    );
    expect(a.status).toBe(400);
    expect(a.body).not.toContain(SECRET);
    expect(up.requests.length).toBe(before);
  });

  it('X-Forwarded-Host does not steer link rewriting; links never point upstream', async () => {
    const r = await receive(await stack.get('/Patient?gender=female', { token: clin, purpose: 'TREAT', headers: { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' } }));
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('evil.example');
    expect(r.text).not.toContain(new URL(up.url).host);
    const links = (r.json as { link?: Array<{ url: string }> }).link ?? [];
    expect(links.length).toBeGreaterThan(0);
    for (const l of links) expect(l.url.startsWith(stack.config.publicBaseUrl)).toBe(true);
    expect(up.requests.at(-1)?.headers['x-forwarded-host']).toBeUndefined();
  });
});
