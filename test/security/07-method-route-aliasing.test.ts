/**
 * BYPASSES 7: method and route aliasing. `POST _search` is judged on exactly the parameters a GET
 * would carry (URL and form body merged); `_history/_search`, `GET _search`, `POST` on an instance,
 * a criteria-less `PUT`, `HEAD`, `X-HTTP-Method-Override` and `_method` are each refused or judged
 * exactly like their canonical form, and nothing undecided reaches the upstream (the audit record of
 * every refusal has no upstream status).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, comparableHeaders, errorCode, expectAbsent, type Received, receive, refs } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const FORM = 'application/x-www-form-urlencoded';
// Billing may not search Patients by identifier: it would reveal the removed SSN.
const SSN = DEMO.ssn.alice;
const billingNever = [DEMO.ssn.alice, DEMO.phones.alice, DEMO.names.vip, '<div'];

async function send(path: string, method: string, opts: RequestOpts & { body?: string; contentType?: string } = billing): Promise<Received> {
  return receive(await stack.request(path, { ...billing, ...opts, method }));
}

/** A gateway refusal that never reached the upstream. */
async function expectRefused(r: Received, status: number, code: string): Promise<void> {
  expect({ status: r.status, code: errorCode(r.json) }, r.text).toEqual({ status, code });
  const rec = await auditFor(stack, r.requestId);
  expect(rec.decision).not.toBe('allow');
  expect(rec.upstreamStatus).toBeUndefined();
  expectAbsent(r, billingNever);
}

describe('POST _search is judged like the GET search it stands for', () => {
  it.each<[string, string, string, string | undefined]>([
    ['GET with the parameter in the URL', 'GET', `/Patient?identifier=${SSN}`, undefined],
    ['POST _search with it in the form body', 'POST', '/Patient/_search', `identifier=${SSN}`],
    ['POST _search with it in the URL', 'POST', `/Patient/_search?identifier=${SSN}`, ''],
    ['POST _search with an allowed URL parameter and the forbidden one in the body', 'POST', '/Patient/_search?name=Anderson', `identifier=${SSN}`],
    ['POST _search with a modifier on the forbidden parameter', 'POST', '/Patient/_search', `identifier:exact=${SSN}`],
    ['POST _search with a percent-encoded parameter name', 'POST', '/Patient/_search', `%69dentifier=${SSN}`],
  ])('%s: 403 search-param-denied, never forwarded', async (_n, method, path, body) => {
    const r = await send(path, method, body === undefined ? billing : { ...billing, body, contentType: FORM });
    await expectRefused(r, 403, 'search-param-denied');
  });

  it('an allowed search answers the same entries by GET and by POST _search', async () => {
    const get = await send('/Patient?name=Anderson', 'GET');
    const post = await send('/Patient/_search', 'POST', { ...billing, body: 'name=Anderson', contentType: FORM });
    expect([get.status, post.status]).toEqual([200, 200]);
    expect(refs(post.json)).toEqual(refs(get.json));
    expect(refs(get.json)).toContain(`Patient/${DEMO.patients.alice}`);
    expectAbsent(post, billingNever);
  });

  it('POST system _search naming the type is refused (system search is not granted), never forwarded', async () => {
    const r = await send('/_search', 'POST', { ...billing, body: `_type=Patient&identifier=${SSN}`, contentType: FORM });
    await expectRefused(r, 403, 'interaction-denied');
  });

  it('POST _search for a type the role may not see is refused like the GET', async () => {
    const get = await send('/Observation', 'GET');
    const post = await send('/Observation/_search', 'POST', { ...billing, body: '', contentType: FORM });
    await expectRefused(get, 403, 'type-denied');
    await expectRefused(post, 403, 'type-denied');
  });
});

describe('route aliases are refused, never rewritten into something undecided', () => {
  it.each<[string, string, string, string | undefined]>([
    ['POST /_history/_search', 'POST', '/_history/_search', `identifier=${SSN}`],
    ['POST /_history/_search without parameters', 'POST', '/_history/_search', ''],
    ['POST /Patient/_history/_search', 'POST', '/Patient/_history/_search', `identifier=${SSN}`],
    ['GET /Patient/_search', 'GET', `/Patient/_search?identifier=${SSN}`, undefined],
    ['POST /Patient/<id> (no such interaction)', 'POST', `/Patient/${DEMO.patients.alice}`, `identifier=${SSN}`],
    ['PUT /Patient without criteria', 'PUT', '/Patient', undefined],
    ['DELETE /Patient without criteria', 'DELETE', '/Patient', undefined],
  ])('%s: a 4xx from the gateway, never forwarded', async (_n, method, path, body) => {
    let opts: RequestOpts & { body?: string; contentType?: string } = billing;
    if (body !== undefined) opts = { ...billing, body, contentType: FORM };
    if (method === 'PUT') opts = { ...billing, body: JSON.stringify({ resourceType: 'Patient', id: 'x' }), contentType: 'application/fhir+json' };
    const r = await send(path, method, opts);
    expect(r.status, r.text).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.upstreamStatus).toBeUndefined();
    expectAbsent(r, billingNever);
  });

  it('GET /Patient/_search without parameters is judged as the search it names (same entries as GET /Patient)', async () => {
    const alias = await send('/Patient/_search', 'GET');
    const canonical = await send('/Patient', 'GET');
    expect([alias.status, canonical.status]).toEqual([200, 200]);
    expect(refs(alias.json)).toEqual(refs(canonical.json));
    expectAbsent(alias, billingNever);
  });

  it('system _history is denied for the clinician too, GET or POST', async () => {
    for (const [method, path] of [['GET', '/_history'], ['POST', '/_history/_search']] as const) {
      const r = await send(path, method, { role: 'clinician', purpose: 'TREAT', ...(method === 'POST' ? { body: '', contentType: FORM } : {}) });
      expect(r.status, `${method} ${path}: ${r.text}`).toBeGreaterThanOrEqual(400);
      expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
    }
  });
});

describe('HEAD is judged exactly like GET', () => {
  it.each([
    [`/Patient?identifier=${SSN}`, 403],
    ['/Observation', 403],
    [`/Condition/${DEMO.psyCondition}`, 404],
    [`/Patient/${DEMO.patients.alice}`, 200],
  ])('HEAD %s answers the GET status and headers', async (path, status) => {
    const get = await receive(await stack.get(path, billing));
    const head = await stack.request(path, { ...billing, method: 'HEAD' });
    expect(await head.text()).toBe('');
    expect([get.status, head.status]).toEqual([status, status]);
    // Transport headers (connection, keep-alive) differ between the two fetches; the answer's do not.
    const answer = (h: Headers) => comparableHeaders(h).filter(([k]) => ['content-type', 'content-length', 'cache-control', 'etag', 'last-modified', 'www-authenticate'].includes(k));
    expect(answer(head.headers)).toEqual(answer(get.headers));
    // Decided alike: same decision and rule, and a refusal before the upstream for both or neither.
    const [g, h] = [await auditFor(stack, get.requestId), await auditFor(stack, head.headers.get('x-request-id') ?? '')];
    expect({ decision: h.decision, rule: h.rule, upstream: h.upstreamStatus }).toEqual({ decision: g.decision, rule: g.rule, upstream: g.upstreamStatus });
    if (status === 403) expect(h.upstreamStatus).toBeUndefined();
  });
});

describe('method overrides are refused, never honoured', () => {
  it.each([
    ['x-http-method-override', 'GET'],
    ['x-http-method', 'GET'],
    ['x-method-override', 'GET'],
    ['X-HTTP-Method-Override', 'DELETE'],
  ])('%s: %s on POST _search -> 400 request-unclassified', async (name, value) => {
    const r = await send('/Patient/_search', 'POST', { ...billing, body: 'name=Anderson', contentType: FORM, headers: { [name]: value } });
    await expectRefused(r, 400, 'request-unclassified');
  });

  it('an override header on a GET is refused too (it would turn a read into a write downstream)', async () => {
    const r = await send(`/Patient/${DEMO.patients.alice}`, 'GET', { ...billing, headers: { 'x-http-method-override': 'DELETE' } });
    await expectRefused(r, 400, 'request-unclassified');
  });

  it.each<[string, string, string, string | undefined]>([
    ['_method=GET in the URL of a POST _search', 'POST', '/Patient/_search?_method=GET', 'name=Anderson'],
    ['_method=GET in the form body', 'POST', '/Patient/_search', `_method=GET&identifier=${SSN}`],
    ['_method=DELETE on a GET', 'GET', `/Patient/${DEMO.patients.alice}?_method=DELETE`, undefined],
    ['_method on a search', 'GET', '/Patient?name=Anderson&_method=GET', undefined],
  ])('%s -> 400 request-unclassified', async (_n, method, path, body) => {
    const r = await send(path, method, body === undefined ? billing : { ...billing, body, contentType: FORM });
    await expectRefused(r, 400, 'request-unclassified');
  });
});
