/**
 * JSON hazards (BYPASSES list after 15): `__proto__` / `constructor` keys, duplicate keys (two
 * parsers, two resources), hostile nesting — in upstream answers and in request bodies. The client
 * receives either a filtered, re-serialized resource whose every key was judged, or a clean error;
 * and every request leaves exactly one audit record.
 */
import { isUtf8 } from 'node:buffer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultyUpstream, fhirJson, raw, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, receive } from './support.js';

const SECRET = 'JSON-HAZARD-SECRET-9931';
const PSY = '{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}';

const head = (id: string) => `{"resourceType":"Patient","id":"${id}","name":[{"family":"Hazard"}],"gender":"female"`;
const deep = (n: number) => `${'{"extension":['.repeat(n)}{}${']}'.repeat(n)}`;

// Indented, with escapes JSON.stringify would not write: released verbatim only when unchanged.
const AS_IS =
  '{\n  "resourceType": "Patient",\n  "id": "as-is",\n  "name": [ { "family": "Escap\\u0065d", "given": [ "A \\"quoted\\" \\\\ name" ] } ],\n  "telecom": [ { "system": "phone", "value": "555-0100" } ],\n  "birthDate": "1970-01-01"\n}\n';
// An overlong encoding of '"' (C0 A2) inside a string: the gateway's decoder reads U+FFFD twice,
// a lenient one a quote that ends the string early; relaying the bytes would let the two disagree.
const BAD_UTF8 = Buffer.concat([Buffer.from(`${head('bad-utf8')},"address":[{"city":"Ab`), Buffer.from([0xc0, 0xa2]), Buffer.from('c"}]}')]);

let up: FaultyUpstream;
let stack: Stack;

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Patient/proto': fhirJson(`${head('proto')},"__proto__":{"telecom":[{"value":"${SECRET}"}]}}`),
    '/Patient/proto-nested': fhirJson(`${head('proto-nested')},"address":[{"__proto__":{"city":"${SECRET}"}}]}`),
    '/Patient/proto-escaped': fhirJson(`${head('proto-escaped')},"\\u005f_proto__":{"polluted":"${SECRET}"}}`),
    '/Patient/ctor': fhirJson(`${head('ctor')},"constructor":{"prototype":{"x":"${SECRET}"}},"prototype":"${SECRET}"}`),
    '/Patient/dup-telecom': fhirJson(`${head('dup-telecom')},"telecom":[{"value":"${SECRET}"}],"telecom":[]}`),
    '/Patient/dup-meta-hide': fhirJson(`${head('dup-meta-hide')},"meta":{"security":[${PSY}]},"meta":{}}`),
    '/Patient/dup-meta-show': fhirJson(`${head('dup-meta-show')},"meta":{},"meta":{"security":[${PSY}]}}`),
    '/Patient/dup-type': fhirJson(`{"resourceType":"Patient","id":"dup-type","resourceType":"Observation","status":"final","code":{"text":"${SECRET}"},"subject":{"reference":"Patient/x"}}`),
    '/Patient/deep': fhirJson(`${head('deep')},"extension":[${deep(20_000)}]}`),
    '/Patient/as-is': fhirJson(AS_IS),
    '/Patient/bad-utf8': raw(200, { 'content-type': 'application/fhir+json' }, BAD_UTF8),
  });
  stack = await startStack({ upstreamUrl: up.url });
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const clinician = { role: 'clinician', purpose: 'TREAT' } as const;

describe('prototype keys in upstream answers', () => {
  it.each(['proto', 'proto-nested', 'proto-escaped'])('%s: refused with 502, nothing relayed', async (id) => {
    for (const who of [billing, clinician]) {
      const r = await receive(await stack.get(`/Patient/${id}`, who));
      expectError(r, 502, 'upstream-bad-response');
      expectAbsent(r, [SECRET, 'polluted']);
    }
    // And nothing was polluted on the way.
    expect(({} as Record<string, unknown>).telecom).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('constructor / prototype keys are unknown elements: removed for a redacting role', async () => {
    const r = await receive(await stack.get('/Patient/ctor', billing));
    expect(r.status).toBe(200);
    expectAbsent(r, [SECRET]);
    expect(r.json).toMatchObject({ resourceType: 'Patient', id: 'ctor', name: [{ family: 'Hazard' }] });
  });
});

describe('duplicate keys in upstream answers', () => {
  it('the released body is the one that was judged: one key, filtered', async () => {
    const r = await receive(await stack.get('/Patient/dup-telecom', billing));
    expect(r.status).toBe(200);
    expectAbsent(r, [SECRET]);
    expect(r.text.match(/"telecom"/g) ?? []).toHaveLength(0);
  });

  it('a label the gateway saw withholds the resource; the client never sees a second meta', async () => {
    const shown = await receive(await stack.get('/Patient/dup-meta-show', billing));
    expectError(shown, 404, 'not-found');
    const hidden = await receive(await stack.get('/Patient/dup-meta-hide', billing));
    // The gateway judged `meta: {}` (the last key) and releases exactly that: no PSY label reaches
    // the client in any form, and the body holds one meta.
    expect(hidden.status).toBe(200);
    expect(hidden.text).not.toContain('PSY');
    expect(hidden.text.match(/"meta"/g)?.length ?? 0).toBeLessThanOrEqual(1);
  });

  it('a duplicated resourceType is filtered as the type that was judged', async () => {
    // Parsed as Observation (last key): billing may not see Observations at all.
    const r = await receive(await stack.get('/Patient/dup-type', billing));
    expectError(r, 404, 'not-found');
    expectAbsent(r, [SECRET]);
  });
});

describe('unchanged answers released as the upstream wrote them', () => {
  const bytesOf = async (res: Response) => Buffer.from(await res.arrayBuffer());

  it('a role that keeps everything gets the upstream bytes; a redacting role the gateway serialization', async () => {
    const kept = await bytesOf(await stack.get('/Patient/as-is', clinician));
    expect(kept.toString('utf8')).toBe(AS_IS);
    const redacted = (await bytesOf(await stack.get('/Patient/as-is', billing))).toString('utf8');
    expect(redacted).not.toContain('555-0100');
    expect(redacted).not.toContain('\n');
    expect(redacted).toContain('"family":"Escaped"');
  });

  it('duplicate keys are never relayed: the client gets the one value that was judged', async () => {
    for (const who of [clinician, billing]) {
      const r = await receive(await stack.get('/Patient/dup-telecom', who));
      expect(r.status).toBe(200);
      expectAbsent(r, [SECRET]);
      expect(r.text.match(/"telecom"/g)?.length ?? 0).toBeLessThanOrEqual(1);
    }
    // Judged as an Observation (the last resourceType): a first-key parser must not read a Patient.
    const t = await receive(await stack.get('/Patient/dup-type', clinician));
    expect(t.text.match(/"resourceType"/g)?.length ?? 0).toBeLessThanOrEqual(1);
    expect(t.text).not.toContain('"Patient"');
  });

  it('bytes that are not valid UTF-8 are never relayed: the client gets valid UTF-8 of what was judged', async () => {
    const res = await stack.get('/Patient/bad-utf8', clinician);
    expect(res.status).toBe(200);
    const body = await bytesOf(res);
    expect(isUtf8(body)).toBe(true);
    expect(body.includes(Buffer.from([0xc0, 0xa2]))).toBe(false);
    const city = (JSON.parse(body.toString('utf8')) as { address: Array<{ city: string }> }).address[0].city;
    expect(city).toContain('\ufffd');
  });
});

describe('hostile nesting in upstream answers', () => {
  it('a redacting role gets the resource without the element that held the nesting', async () => {
    const r = await receive(await stack.get('/Patient/deep', billing));
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('"extension"');
  });

  // Regression: the clinician plan keeps everything, so the 20 000-deep value reaches
  // serialization; JSON.stringify throws after the audit record was written (200, allow), and the
  // error path writes a second record. Serialization must happen before the audit write.
  it('a role that keeps every element fails closed with exactly one audit record', async () => {
    const r = await receive(await stack.get('/Patient/deep', clinician));
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    expect((r.json as { resourceType?: string }).resourceType).toBe('OperationOutcome');
    expect(r.text).not.toContain('"extension"');
    const rec = await auditFor(stack, r.requestId);
    expect(rec.status).toBe(r.status);
    expect(rec.decision).toBe('error');
  });
});

describe('hazards in request bodies never reach the upstream', () => {
  const bodies: Array<[string, string]> = [
    ['duplicate id', '{"resourceType":"Patient","id":"a","id":"b"}'],
    ['duplicate resourceType', '{"resourceType":"Patient","resourceType":"Observation"}'],
    ['escaped duplicate', '{"resourceType":"Patient","gender":"male","\\u0067ender":"female"}'],
    ['__proto__', '{"resourceType":"Patient","__proto__":{"x":1}}'],
    ['constructor', '{"resourceType":"Patient","name":[{"constructor":{"prototype":{}}}]}'],
    ['deep', `{"resourceType":"Patient","extension":[${deep(500)}]}`],
    ['trailing garbage', '{"resourceType":"Patient"} {}'],
  ];
  it.each(bodies)('%s: 400 request-body-invalid, not forwarded', async (_name, body) => {
    const before = up.requests.length;
    const r = await receive(await stack.request('/Patient', { ...clinician, method: 'POST', body, contentType: 'application/fhir+json' }));
    expectError(r, 400, 'request-body-invalid');
    expect(up.requests.length).toBe(before);
  });
});
