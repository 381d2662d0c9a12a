/**
 * BYPASSES 7 and 14, end to end through the gateway and the real upstream: lower-case types,
 * encoded traversal, double slashes, matrix parameters, duplicate and encoded parameters,
 * POST `_search` aliasing, HEAD and OPTIONS. Anything unclassifiable is denied (never forwarded).
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { errorCode, expectAbsent, receive } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const secrets = [DEMO.ssn.alice, DEMO.phones.alice, DEMO.notes.psy, 'Observation'];

describe('path spellings that other parsers normalize are refused', () => {
  it.each([
    '/patient/pat-alice',
    '/PATIENT/pat-alice',
    '/Patient//pat-alice',
    '/Patient/pat-alice/',
    '/Patient/%2E%2E/Observation',
    '/Patient/%2e%2e/Observation/obs-alice-bp',
    '/Patient/pat-alice/..%2FObservation',
    '/Patient/pat-alice%2F..%2F..%2FObservation',
    '/Patient;jsessionid=1/pat-alice',
    '/Patient/pat-alice;x=y',
    '/Patient/pat-alice%00',
    '/Patient/pat-alice%252F',
    '/Patient/pat%2Dalice/../../Observation',
    '/Obs%65rvation/obs-alice-bp',
    '/_history',
    '/?_type=Observation',
    '/_search?_type=Observation',
  ])('%s', async (path) => {
    const r = await receive(await stack.get(path, billing));
    expect(r.status, r.text).toBeGreaterThanOrEqual(400);
    expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    expectAbsent(r, secrets);
  });
});

describe('spellings fetch would normalize, sent verbatim', () => {
  // WHATWG URL parsing (fetch) folds these before sending; node:http sends the path as written.
  it.each(['/Patient/./pat-alice', '/Patient/../Observation/obs-alice-bp', '/Patient\\pat-alice', '/Patient/pat-alice/.', '//Patient/pat-alice'])('%s', async (path) => {
    const token = await stack.token('billing');
    const u = new URL(stack.url);
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(
        { host: u.hostname, port: u.port, path: `${u.pathname}${path}`, headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'HPAYMT' } },
        (res) => {
          let b = '';
          res.on('data', (c) => (b += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBeGreaterThanOrEqual(400);
    for (const s of secrets) expect(body).not.toContain(s);
  });
});

describe('methods and aliases', () => {
  it('POST _search is judged like GET (form params merged; hidden type refused)', async () => {
    const r = await receive(await stack.request('/Observation/_search', { ...billing, method: 'POST', body: 'code=1234', contentType: 'application/x-www-form-urlencoded' }));
    expect(errorCode(r.json)).toBe('type-denied');
  });

  it('POST /_history/_search and POST /_search are never widened into a read', async () => {
    for (const p of ['/_history/_search', '/_search']) {
      const r = await receive(await stack.request(p, { ...billing, method: 'POST', body: '_type=Observation', contentType: 'application/x-www-form-urlencoded' }));
      expect(r.status).toBeGreaterThanOrEqual(400);
      expectAbsent(r, secrets);
    }
  });

  it('HEAD answers the same status as GET and no body', async () => {
    const get = await stack.get(`/Patient/${DEMO.patients.alice}`, billing);
    const head = await stack.request(`/Patient/${DEMO.patients.alice}`, { ...billing, method: 'HEAD' });
    expect(head.status).toBe(get.status);
    expect(await head.text()).toBe('');
  });

  it.each(['OPTIONS', 'TRACE', 'CONNECT', 'PROPFIND'])('%s is refused', async (method) => {
    let status = 0;
    try {
      const r = await stack.request(`/Patient/${DEMO.patients.alice}`, { ...billing, method });
      status = r.status;
      expectAbsent(await receive(r), secrets);
    } catch {
      status = 400; // fetch refuses to send some methods at all: nothing reached the gateway
    }
    expect(status).toBeGreaterThanOrEqual(400);
  });

  it('duplicate parameters are all judged (a hidden one cannot hide behind a kept one)', async () => {
    const r = await receive(await stack.get(`/Patient?name=Anderson&name=x&identifier=${DEMO.ssn.alice}`, billing));
    expect(errorCode(r.json)).toBe('search-param-denied');
  });

  it('_format=xml is refused (406), never answered as XML; _format=json and _pretty are dropped: filtered JSON', async () => {
    const xml = await receive(await stack.get(`/Patient/${DEMO.patients.alice}?_format=xml&_pretty=true`, billing));
    expect({ status: xml.status, code: errorCode(xml.json) }).toEqual({ status: 406, code: 'not-acceptable' });
    const r = await receive(await stack.get(`/Patient/${DEMO.patients.alice}?_format=json&_pretty=true`, billing));
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    expectAbsent(r, [DEMO.ssn.alice, DEMO.phones.alice]);
  });
});
