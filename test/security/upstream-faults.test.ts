/**
 * BYPASSES (beyond 1-15) / SPEC 3.6: whatever the upstream answers — XML, Turtle, an HTML error
 * page, compressed or bomb bodies, oversized or truncated JSON, resets, stalls, redirects — the
 * client gets a clean gateway OperationOutcome (502/504), an audit record exists, and not one
 * upstream byte or header reaches the client.
 */
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import {
  type Behaviour,
  type FaultyUpstream,
  fhirJson,
  raw,
  resetAfterHeaders,
  resetImmediately,
  stall,
  stallBody,
  startFaultyUpstream,
} from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, receive } from './support.js';

/** Appears in every faulty body: it must never reach the client. */
const SECRET = 'UPSTREAM-SECRET-4417';
const SSN = '999-12-3456';
const LIMIT = 64 * 1024;
const DECOMPRESSED = 256 * 1024;

const patient = (id: string) => ({
  resourceType: 'Patient',
  id,
  text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${SECRET} SSN ${SSN}</div>` },
  identifier: [{ system: 'http://hl7.org/fhir/sid/us-ssn', value: SSN }],
  telecom: [{ system: 'phone', value: SECRET }],
  name: [{ family: 'Faulty' }],
  gender: 'other',
});
const patientText = (id: string) => JSON.stringify(patient(id));
const html = `<html><body><h1>500 Internal Server Error</h1><pre>${SECRET} at com.example.Dao(SSN ${SSN})</pre></body></html>`;
const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024, 0x20)); // 8 MiB of spaces in ~8 KiB

const headersWithSecret = { 'x-upstream-secret': SECRET, 'set-cookie': `sid=${SECRET}`, server: `${SECRET}-server` };

const ROUTES: Record<string, Behaviour> = {
  '/Patient/xml': raw(200, { 'content-type': 'application/fhir+xml', ...headersWithSecret }, `<Patient xmlns="http://hl7.org/fhir"><id value="${SECRET}"/></Patient>`),
  '/Patient/turtle': raw(200, { 'content-type': 'text/turtle' }, `@prefix fhir: <http://hl7.org/fhir/> . [] fhir:id "${SECRET}" .`),
  '/Patient/html200': raw(200, { 'content-type': 'text/html' }, html),
  '/Patient/html500': raw(500, { 'content-type': 'text/html', ...headersWithSecret }, html),
  '/Patient/json500': fhirJson({ resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: SECRET }] }, 500),
  '/Patient/no-ct': raw(200, {}, patientText('no-ct')),
  '/Patient/latin1': raw(200, { 'content-type': 'application/fhir+json; charset=iso-8859-1' }, patientText('latin1')),
  '/Patient/truncated': raw(200, { 'content-type': 'application/fhir+json' }, patientText('truncated').slice(0, 80)),
  '/Patient/not-json': raw(200, { 'content-type': 'application/fhir+json' }, `{"resourceType":"Patient",'id':'${SECRET}'}`),
  '/Patient/array': fhirJson([patient('array')]),
  '/Patient/scalar': fhirJson(`"${SECRET}"`),
  '/Patient/unknown-type': fhirJson({ resourceType: 'Secretz', id: 'x', note: SECRET }),
  '/Patient/gzip': raw(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'gzip' }, gzipSync(patientText('gzip'))),
  '/Patient/deflate': raw(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'deflate' }, deflateSync(patientText('deflate'))),
  '/Patient/br': raw(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'br' }, brotliCompressSync(patientText('br'))),
  '/Patient/bomb': raw(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'gzip' }, bomb),
  '/Patient/bad-gzip': raw(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'gzip' }, `${SECRET} not gzip`),
  '/Patient/zstd': raw(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'zstd' }, patientText('zstd')),
  '/Patient/double-ct': raw(200, { 'content-type': ['application/fhir+json', 'text/html'] }, patientText('double-ct')),
  '/Patient/oversized': fhirJson({ ...patient('oversized'), extension: [{ url: 'http://x', valueString: 'x'.repeat(LIMIT) }] }),
  '/Patient/reset': resetImmediately,
  '/Patient/reset-mid-body': resetAfterHeaders(patientText('reset-mid-body').slice(0, 60)),
  '/Patient/stall': stall,
  '/Patient/stall-body': stallBody(patientText('stall-body').slice(0, 60)),
  '/Patient/redirect': raw(302, { location: `http://evil.example/fhir/Patient/${SECRET}`, 'content-type': 'text/html' }, html),
  '/Patient/redirect-json': raw(307, { location: 'http://evil.example/x', 'content-type': 'application/fhir+json' }, patientText('redirect-json')),
  '/Patient/info': raw(200, { 'content-type': 'application/fhir+json' }, ''),
  '/Patient/ok': fhirJson(patient('ok'), 200, { ...headersWithSecret, location: `http://evil.example/${SECRET}` }),
};

let up: FaultyUpstream;
let stack: Stack;

beforeAll(async () => {
  up = await startFaultyUpstream(ROUTES);
  stack = await startStack({
    upstreamUrl: up.url,
    configure: (c) => ({
      ...c,
      upstream: { ...c.upstream, headersTimeoutMs: 400, bodyTimeoutMs: 400, connectTimeoutMs: 400 },
      limits: { ...c.limits, responseBodyBytes: LIMIT, decompressedBytes: DECOMPRESSED },
    }),
  });
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const leaks = [SECRET, SSN, 'evil.example', 'com.example.Dao', '<html', '<Patient'];

const FAULTS: Array<[string, number, ErrorCode]> = [
  ['xml', 502, 'upstream-bad-response'],
  ['turtle', 502, 'upstream-bad-response'],
  ['html200', 502, 'upstream-bad-response'],
  ['html500', 502, 'upstream-bad-response'],
  ['json500', 502, 'upstream-error'],
  ['no-ct', 502, 'upstream-bad-response'],
  ['latin1', 502, 'upstream-bad-response'],
  ['truncated', 502, 'upstream-bad-response'],
  ['not-json', 502, 'upstream-bad-response'],
  ['array', 502, 'upstream-bad-response'],
  ['scalar', 502, 'upstream-bad-response'],
  ['unknown-type', 502, 'upstream-bad-response'],
  ['bomb', 502, 'upstream-too-large'],
  ['bad-gzip', 502, 'upstream-bad-response'],
  ['zstd', 502, 'upstream-bad-response'],
  ['double-ct', 502, 'upstream-bad-response'],
  ['oversized', 502, 'upstream-too-large'],
  ['reset', 502, 'upstream-unavailable'],
  ['reset-mid-body', 502, 'upstream-unavailable'],
  ['stall', 504, 'upstream-timeout'],
  ['stall-body', 504, 'upstream-timeout'],
  ['redirect', 502, 'upstream-bad-response'],
  ['redirect-json', 502, 'upstream-bad-response'],
];

describe('faulty upstream answers become clean, audited OperationOutcomes', () => {
  it.each(FAULTS)('%s -> %i %s', async (name, status, code) => {
    const r = await receive(await stack.get(`/Patient/${name}`, billing));
    expectError(r, status, code);
    expectAbsent(r, leaks);
    // Only the gateway's own headers: nothing the upstream set.
    expect(r.headers.get('x-upstream-secret')).toBeNull();
    expect(r.headers.get('set-cookie')).toBeNull();
    expect(r.headers.get('location')).toBeNull();
    const rec = await auditFor(stack, r.requestId);
    expect(rec.status).toBe(status);
    expect(rec.decision).toBe('error');
    expect(rec.disclosed.resources).toEqual([]);
  });

  it('a HEAD request to a faulty upstream gets the same status and no body', async () => {
    const r = await receive(await stack.request('/Patient/html500', { ...billing, method: 'HEAD' }));
    expect(r.status).toBe(502);
    expect(r.text).toBe('');
    expectAbsent(r, leaks);
  });
});

describe('well-formed but compressed upstream answers are decoded and then filtered', () => {
  it.each(['gzip', 'deflate', 'br'])('%s', async (name) => {
    const r = await receive(await stack.get(`/Patient/${name}`, billing));
    expect(r.status).toBe(200);
    const body = r.json as { id: string; name: unknown; telecom?: unknown; text?: unknown; identifier?: unknown };
    expect(body.id).toBe(name);
    expect(body.name).toEqual([{ family: 'Faulty' }]);
    // billing: no telecom, no SSN, no narrative (which repeated both)
    expectAbsent(r, [SECRET, SSN]);
    expect(r.headers.get('content-encoding')).toBeNull();
  });
});

describe('a normal answer still carries none of the upstream headers', () => {
  it('drops upstream headers and a Location that is not the upstream base', async () => {
    const r = await receive(await stack.get('/Patient/ok', billing));
    expect(r.status).toBe(200);
    expectAbsent(r, [SECRET, SSN, 'evil.example']);
    expect(r.headers.get('server')).toBeNull();
  });

  it('an empty 200 body for a read is not invented into a resource', async () => {
    const r = await receive(await stack.get('/Patient/info', billing));
    // Nothing to filter, nothing disclosed; the gateway does not fabricate content.
    expect(r.text).toBe('');
    const rec = await auditFor(stack, r.requestId);
    expect(rec.disclosed.resources).toEqual([]);
  });
});

describe('what the gateway sends upstream', () => {
  it('never forwards the client token, forwarded-for or override headers, and forces identity JSON', async () => {
    const before = up.requests.length;
    const token = await stack.token('billing');
    const res = await stack.get('/Patient/ok?_format=json', {
      token,
      purpose: 'HPAYMT',
      headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-host': 'evil.example', cookie: 'a=b', 'accept-encoding': 'gzip, br', accept: 'application/json' },
    });
    await res.arrayBuffer();
    const seen = up.requests.slice(before);
    expect(seen).toHaveLength(1);
    const h = seen[0]!.headers;
    expect(JSON.stringify(h)).not.toContain(token);
    expect(h['x-forwarded-for']).toBeUndefined();
    expect(h['x-forwarded-host']).toBeUndefined();
    expect(h.cookie).toBeUndefined();
    expect(h['accept-encoding']).toBe('identity');
    expect(h.accept).toBe('application/fhir+json');
    expect(seen[0]!.url).toBe('/Patient/ok');
  });
});
