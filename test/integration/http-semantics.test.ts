/**
 * HTTP semantics clients rely on, through the whole stack (real medplum upstream, real IdP, file
 * audit): the upstream's coded reason for a 4xx, `Prefer: return=`, 406 for formats the gateway
 * does not produce, the DSTU2-era `application/json+fhir` body type, response compression, and the
 * gateway's own ETag with 304 answers. Raw answers are read with undici's request(), which does not
 * decompress, so the bytes on the wire are what is checked.
 */
import { gunzipSync, brotliDecompressSync } from 'node:zlib';
import { request as rawRequest } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, errorCode, expectError, type Received, receive } from '../security/support.js';

const clinician: RequestOpts = { role: 'clinician', purpose: 'TREAT' };
const billing: RequestOpts = { role: 'billing', purpose: 'HPAYMT' };

/** The shipped policy with patch granted to the clinical data set. */
function withPatch(p: Parameters<NonNullable<Parameters<typeof startStack>[0]>['policy'] & {}>[0]): void {
  for (const r of p.dataSets.clinical!.rules) r.interactions = [...(r.interactions ?? []), 'patch'];
}

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ policy: withPatch });
}, 60_000);
afterAll(async () => {
  await stack?.close();
});

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  bytes: Buffer;
}

/** One request as sent, the answer as received on the wire (no decompression). */
async function raw(method: 'GET' | 'HEAD' | 'POST', path: string, who: RequestOpts, headers: Record<string, string> = {}): Promise<Raw> {
  const token = await stack.token(who.role!, who.tokenClaims);
  const r = await rawRequest(`${stack.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': who.purpose!, ...headers },
  });
  const bytes = Buffer.from(await r.body.arrayBuffer());
  return { status: r.statusCode, headers: r.headers, bytes };
}

async function upstreamJson(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${stack.upstreamUrl}${path}`, {
    method,
    headers: { accept: 'application/fhir+json', ...(body === undefined ? {} : { 'content-type': Array.isArray(body) ? 'application/json-patch+json' : 'application/fhir+json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

type Issue = { severity?: string; code?: string; details?: { coding?: unknown[]; text?: string }; diagnostics?: string; expression?: unknown };

/** What a client may rely on in an OperationOutcome: per issue, severity, code and coded details. */
function coded(oo: unknown): unknown {
  return ((oo as { issue?: Issue[] }).issue ?? []).map((i) => ({ severity: i.severity, code: i.code, coding: i.details?.coding }));
}

function send(path: string, who: RequestOpts, method: string, body: unknown, contentType = 'application/fhir+json', headers: Record<string, string> = {}): Promise<Received> {
  return stack.request(path, { ...who, method, body: JSON.stringify(body), contentType, headers }).then(receive);
}

describe("the upstream's reason for a 4xx is kept, as codes", () => {
  it('a failed patch: the upstream status and issue codes, no free text, no expression', async () => {
    const patch = [{ op: 'test', path: '/status', value: 'not-the-status' }];
    const direct = await upstreamJson('PATCH', '/Encounter/enc-alice-1', patch);
    expect(direct.status).toBeGreaterThanOrEqual(400);
    const r = await send('/Encounter/enc-alice-1', clinician, 'PATCH', patch, 'application/json-patch+json');
    expect(r.status).toBe(direct.status);
    expect(errorCode(r.json)).toBeUndefined(); // the upstream's outcome, not a gateway error
    expect(coded(r.json)).toEqual(coded(direct.json));
    for (const i of (r.json as { issue: Issue[] }).issue) {
      expect(i.diagnostics).toBeUndefined();
      expect(i.details?.text).toBeUndefined();
      expect(i.expression).toBeUndefined();
    }
    expect((await auditFor(stack, r.requestId)).decision).toBe('deny');
  });

  it('a stale If-Match: 412 precondition-failed before anything is sent, nothing is written; the current version goes through', async () => {
    const before = await upstreamJson('GET', `/Patient/${DEMO.patients.brian}`);
    const version = (before.json.meta as { versionId: string }).versionId;
    const changed = { ...before.json, gender: 'other', meta: undefined };
    const r = await send(`/Patient/${DEMO.patients.brian}`, clinician, 'PUT', changed, 'application/fhir+json', { 'if-match': 'W/"stale-version"' });
    expectError(r, 412, 'precondition-failed');
    expect((await auditFor(stack, r.requestId)).decision).toBe('deny');
    const after = await upstreamJson('GET', `/Patient/${DEMO.patients.brian}`);
    expect((after.json.meta as { versionId: string }).versionId).toBe(version);
    const ok = await send(`/Patient/${DEMO.patients.brian}`, clinician, 'PUT', { ...changed, gender: before.json.gender }, 'application/fhir+json', { 'if-match': `W/"${version}"` });
    expect(ok.status, ok.text).toBe(200);
  });

});

describe('Prefer: return= on writes', () => {
  const obs = (marker: string) => ({ resourceType: 'Observation', status: 'final', code: { text: marker }, subject: { reference: `Patient/${DEMO.patients.alice}` } });

  it('minimal: no body, Location and ETag kept, audited as released without elements', async () => {
    const r = await send('/Observation', clinician, 'POST', obs('prefer-minimal'), 'application/fhir+json', { prefer: 'return=minimal' });
    expect(r.status).toBe(201);
    expect(r.text).toBe('');
    expect(r.headers.get('location')).toMatch(new RegExp(`^${stack.url}/Observation/[^/]+`));
    expect(r.headers.get('etag')).toMatch(/^W\/"[^"]+"$/);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.rule).toContain('return=minimal');
    expect(rec.disclosed.elements).toBeUndefined();
    expect(rec.disclosed.resources).toHaveLength(1);
  });

  it('OperationOutcome: the gateway outcome instead of the resource', async () => {
    const r = await send('/Observation', clinician, 'POST', obs('prefer-oo'), 'application/fhir+json', { prefer: 'return=OperationOutcome' });
    expect(r.status).toBe(201);
    const oo = r.json as { resourceType: string; issue: Issue[] };
    expect(oo.resourceType).toBe('OperationOutcome');
    expect(oo.issue[0]).toMatchObject({ severity: 'information', code: 'informational' });
    expect(r.text).not.toContain('prefer-oo');
    expect(r.headers.get('location')).not.toBeNull();
  });

  it('representation (and no Prefer): the filtered resource', async () => {
    for (const prefer of ['return=representation', undefined]) {
      const r = await send('/Observation', clinician, 'POST', obs('prefer-rep'), 'application/fhir+json', prefer ? { prefer } : {});
      expect(r.status).toBe(201);
      expect((r.json as { resourceType: string; code: { text: string } }).code.text).toBe('prefer-rep');
    }
  });

  it('an update with return=minimal', async () => {
    const { json } = await upstreamJson('GET', '/Encounter/enc-alice-1');
    const r = await send('/Encounter/enc-alice-1', clinician, 'PUT', { ...json, meta: undefined }, 'application/fhir+json', { prefer: 'return=minimal' });
    expect(r.status, r.text).toBe(200);
    expect(r.text).toBe('');
  });
});

describe('formats', () => {
  it.each([['application/fhir+xml'], ['application/xml'], ['text/html'], ['application/fhir+json;q=0, application/json;q=0, application/json+fhir;q=0']])(
    'Accept: %s -> 406 not-acceptable, an OperationOutcome in JSON',
    async (accept) => {
      const r = await receive(await stack.get(`/Patient/${DEMO.patients.alice}`, { ...clinician, headers: { accept } }));
      expectError(r, 406, 'not-acceptable');
      expect((await auditFor(stack, r.requestId)).status).toBe(406);
    },
  );

  it('_format=xml -> 406', async () => {
    expectError(await receive(await stack.get(`/Patient/${DEMO.patients.alice}?_format=xml`, clinician)), 406, 'not-acceptable');
  });

  it.each([['*/*'], ['application/json'], ['application/fhir+json'], ['application/json+fhir'], ['text/html, */*;q=0.1']])('Accept: %s -> FHIR JSON', async (accept) => {
    const r = await receive(await stack.get(`/Patient/${DEMO.patients.alice}`, { ...clinician, headers: { accept } }));
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
  });

  it.each([['application/json+fhir'], ['application/json+fhir; charset=utf-8'], ['application/fhir+json; charset=UTF-8'], ['application/json']])(
    'a body sent as %s is accepted',
    async (contentType) => {
      const r = await send('/Observation', clinician, 'POST', { resourceType: 'Observation', status: 'final', code: { text: 'ct' }, subject: { reference: `Patient/${DEMO.patients.alice}` } }, contentType);
      expect(r.status, r.text).toBe(201);
    },
  );

  it('a body of another type is still 415', async () => {
    const r = await send('/Observation', clinician, 'POST', { resourceType: 'Observation' }, 'application/fhir+xml');
    expectError(r, 415, 'unsupported-media-type');
  });
});

describe('compression', () => {
  const search = '/Observation?_count=50';

  it.each([
    ['gzip', gunzipSync],
    ['br', brotliDecompressSync],
  ] as const)('%s when asked: the same bytes, much smaller', async (encoding, decode) => {
    const plain = await raw('GET', search, clinician, { 'accept-encoding': 'identity' });
    const packed = await raw('GET', search, clinician, { 'accept-encoding': encoding });
    expect(plain.status).toBe(200);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(packed.headers['content-encoding']).toBe(encoding);
    expect(packed.headers.vary).toMatch(/accept-encoding/i);
    expect(packed.bytes.length).toBeLessThan(plain.bytes.length / 3);
    const unpacked = decode(packed.bytes);
    // Paging tokens are sealed per answer: compare the bodies without them.
    const norm = (b: Buffer) => b.toString('utf8').replace(/_cursor=[A-Za-z0-9_-]+/g, '_cursor=T');
    expect(norm(unpacked)).toBe(norm(plain.bytes));
  });

  it('prefers brotli when the client takes both', async () => {
    const r = await raw('GET', search, clinician, { 'accept-encoding': 'gzip, deflate, br' });
    expect(r.headers['content-encoding']).toBe('br');
  });

  it('the audit record describes the uncompressed answer', async () => {
    const r = await raw('GET', `/Patient/${DEMO.patients.alice}`, clinician, { 'accept-encoding': 'gzip' });
    const rec = await auditFor(stack, String(r.headers['x-request-id']));
    expect(rec.status).toBe(200);
    expect(rec.disclosed.resources).toEqual([`Patient/${DEMO.patients.alice}`]);
  });

  it('small answers (errors) are not compressed', async () => {
    const r = await raw('GET', '/Patient/does-not-exist', clinician, { 'accept-encoding': 'gzip' });
    expect(r.status).toBe(404);
    expect(r.headers['content-encoding']).toBeUndefined();
    expect(JSON.parse(r.bytes.toString('utf8')).resourceType).toBe('OperationOutcome');
  });

  it.each([['identity'], ['gzip'], ['br']])('HEAD with Accept-Encoding %s has the head of the GET, Content-Length included', async (enc) => {
    const path = `/Patient/${DEMO.patients.alice}`;
    const get = await raw('GET', path, clinician, { 'accept-encoding': enc });
    const head = await raw('HEAD', path, clinician, { 'accept-encoding': enc });
    expect(head.status).toBe(200);
    expect(head.bytes.length).toBe(0);
    expect(head.headers['content-length']).toBe(get.headers['content-length']);
    expect(head.headers['content-encoding']).toBe(get.headers['content-encoding']);
    expect(head.headers.etag).toBe(get.headers.etag);
    if (enc === 'identity') expect(Number(get.headers['content-length'])).toBe(get.bytes.length);
  });
});

describe("the gateway's own ETag and 304", () => {
  const path = `/Patient/${DEMO.patients.alice}`;

  it("a strong tag over the released bytes, never the upstream's", async () => {
    const r = await raw('GET', path, clinician, { 'accept-encoding': 'identity' });
    const up = await fetch(`${stack.upstreamUrl}${path}`);
    const etag = String(r.headers.etag);
    expect(etag).toMatch(/^"[A-Za-z0-9_-]{27}"$/);
    expect(etag).not.toBe(up.headers.get('etag'));
    // Another caller sees other bytes, so another tag.
    const b = await raw('GET', path, billing);
    expect(b.headers.etag).toMatch(/^"[A-Za-z0-9_-]{27}"$/);
    expect(b.headers.etag).not.toBe(etag);
  });

  it.each([
    ['the tag', (t: string) => t],
    ['the weak form', (t: string) => `W/${t}`],
    ['a list holding it', (t: string) => `"other", ${t}`],
    ['*', () => '*'],
  ])('If-None-Match with %s: 304, no body, the tag, audited as 304 releasing nothing', async (_n, make) => {
    const first = await raw('GET', path, clinician);
    const etag = String(first.headers.etag);
    for (const enc of ['identity', 'gzip']) {
      const r = await raw('GET', path, clinician, { 'if-none-match': make(etag), 'accept-encoding': enc });
      expect(r.status).toBe(304);
      expect(r.bytes.length).toBe(0);
      expect(r.headers.etag).toBe(etag);
      expect(r.headers['content-encoding']).toBeUndefined();
      const rec = await auditFor(stack, String(r.headers['x-request-id']));
      expect(rec).toMatchObject({ status: 304, decision: 'allow', request: { method: 'GET', path } });
      expect(rec.disclosed.resources).toEqual([]);
      expect(rec.disclosed.elements).toBeUndefined();
    }
  });

  it("the upstream's own ETag does not match, nor another tag", async () => {
    const up = (await fetch(`${stack.upstreamUrl}${path}`)).headers.get('etag')!;
    for (const tag of [up, '"something-else"', 'not-a-tag']) {
      const r = await raw('GET', path, clinician, { 'if-none-match': tag });
      expect(r.status, tag).toBe(200);
    }
  });

  it('HEAD answers 304 the same way; searches have tags too', async () => {
    const first = await raw('GET', path, clinician);
    const head = await raw('HEAD', path, clinician, { 'if-none-match': String(first.headers.etag) });
    expect(head.status).toBe(304);
    const s1 = await raw('GET', `/Patient?_id=${DEMO.patients.alice}`, clinician);
    expect(s1.status).toBe(200);
    const s2 = await raw('GET', `/Patient?_id=${DEMO.patients.alice}`, clinician, { 'if-none-match': String(s1.headers.etag) });
    expect(s2.status).toBe(304);
  });

  it('the tag changes when what the caller gets changes', async () => {
    const p = `/Patient/${DEMO.patients.grace}`;
    const before = await raw('GET', p, clinician);
    const { json } = await upstreamJson('GET', p);
    const w = await send(p, clinician, 'PUT', { ...json, meta: undefined, active: !(json.active === true) });
    expect(w.status, w.text).toBe(200);
    const after = await raw('GET', p, clinician, { 'if-none-match': String(before.headers.etag) });
    expect(after.status).toBe(200);
    expect(after.headers.etag).not.toBe(before.headers.etag);
  });

  it('a write answer keeps the W/"version" tag for a caller shown versions', async () => {
    const r = await send('/Observation', clinician, 'POST', { resourceType: 'Observation', status: 'final', code: { text: 'etag-write' }, subject: { reference: `Patient/${DEMO.patients.alice}` } });
    const body = r.json as { meta: { versionId: string } };
    expect(r.headers.get('etag')).toBe(`W/"${body.meta.versionId}"`);
  });
});

describe('upstream.errorText: true', () => {
  let open: Stack;
  beforeAll(async () => {
    open = await startStack({ policy: withPatch, configure: (c) => ({ ...c, upstream: { ...c.upstream, errorText: true } }) });
  }, 60_000);
  afterAll(async () => {
    await open?.close();
  });

  it("releases the upstream's free text too", async () => {
    const patch = [{ op: 'test', path: '/status', value: 'not-the-status' }];
    const direct = await (
      await fetch(`${open.upstreamUrl}/Encounter/enc-alice-1`, { method: 'PATCH', headers: { 'content-type': 'application/json-patch+json' }, body: JSON.stringify(patch) })
    ).json();
    const texts = ((direct as { issue: Issue[] }).issue ?? []).map((i) => i.details?.text ?? i.diagnostics).filter((t) => t !== undefined);
    expect(texts.length).toBeGreaterThan(0);
    const r = await receive(await open.request('/Encounter/enc-alice-1', { ...clinician, method: 'PATCH', body: JSON.stringify(patch), contentType: 'application/json-patch+json' }));
    for (const t of texts) expect(r.text).toContain(JSON.stringify(t).slice(1, -1));
    expect(r.text).not.toContain(ERROR_SYSTEM);
  });
});
