/**
 * A de-identified caller (the researcher, `deidentify: safe-harbor`) addresses resources by the
 * pseudonyms the gateway gave it, never by real ids. Against the real upstream: reads, `_id`,
 * reference and compartment searches by pseudonym work and answer in pseudonyms; a real id is
 * refused before the upstream is asked, with the same answer whether or not it exists (in a
 * batch entry too); searches and sorts on what the profile removes, generalizes or pseudonymizes
 * are refused; no header or paging link carries a real id, a version or a modification time.
 * Against a hand-written upstream: Location headers are pseudonymized, and `_elements` always
 * brings `meta` along so labels still withhold.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { gatewayEtag } from '../../src/proxy/etag.js';
import { pseudonymize } from '../../src/redact/pseudonym.js';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, type StackOptions, startStack } from '../helpers/gateway.js';
import { auditFor, comparableHeaders, entries, expectAbsent, expectError, receive } from './support.js';

const researcher = { role: 'researcher', purpose: 'HRESCH' } as const;
const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
const deidentified: StackOptions['policy'] = (p) => {
  p.dataSets.research!.deidentify = 'safe-harbor';
};
const REAL = DEMO.patients.alice;

let stack: Stack;
/** The pseudonym the stack's gateway issues for `type/id`. */
let pseudo: (type: string, id: string) => string;

beforeAll(async () => {
  stack = await startStack({ policy: deidentified });
  const key = new TextEncoder().encode(stack.config.pseudonymKey!);
  pseudo = (type, id) => pseudonymize(key, type, id)!;
});
afterAll(async () => {
  await stack?.close();
});

const link = (json: unknown, relation: string) => (json as { link?: Array<{ relation: string; url: string }> }).link?.find((l) => l.relation === relation)?.url;

describe('ids are pseudonyms both ways', () => {
  it('a read by pseudonym answers 200 with that pseudonym as the id, and no real id anywhere', async () => {
    const alice = pseudo('Patient', REAL);
    const r = await receive(await stack.get(`/Patient/${alice}`, researcher));
    expect(r.status, r.text).toBe(200);
    expect((r.json as { id?: string }).id).toBe(alice);
    expectAbsent(r, [REAL, DEMO.names.alice]);
  });

  it('a real id is refused before the upstream, exactly as a real id that does not exist', async () => {
    const real = await receive(await stack.get(`/Patient/${REAL}`, researcher));
    expectError(real, 403, 'pseudonym-required');
    const missing = await receive(await stack.get('/Patient/pat-nobody', researcher));
    expect(missing.status).toBe(real.status);
    expect(missing.text).toBe(real.text);
    expect(comparableHeaders(missing.headers)).toEqual(comparableHeaders(real.headers));
    expect((await auditFor(stack, real.requestId)).upstreamStatus).toBeUndefined();
  });

  it('versions are not released: the current and an older version answer alike (red-team reproduction)', async () => {
    // Alice's record has two versions; the answer for 2 (current) and 1 used to differ (200 vs 403).
    const alice = pseudo('Patient', REAL);
    const current = await receive(await stack.get(`/Patient/${alice}/_history/2`, researcher));
    const older = await receive(await stack.get(`/Patient/${alice}/_history/1`, researcher));
    expectError(current, 403, 'interaction-denied');
    expectError(older, 403, 'interaction-denied');
    expect(current.text.replace(current.requestId, '')).toBe(older.text.replace(older.requestId, ''));
  });

  it.each([
    ['a compartment search', `/Patient/${REAL}/Observation`],
    ['an Observation', '/Observation/obs-alice-bp'],
  ])('%s by real id: 403 pseudonym-required', async (_name, path) => {
    expectError(await receive(await stack.get(path, researcher)), 403, 'pseudonym-required');
  });

  it('a Patient pseudonym does not address an Observation', async () => {
    expectError(await receive(await stack.get(`/Observation/${pseudo('Patient', REAL)}`, researcher)), 403, 'pseudonym-required');
  });
});

describe('searches by pseudonym', () => {
  it('_id by pseudonym finds the patient, and answers in pseudonyms', async () => {
    const alice = pseudo('Patient', REAL);
    const r = await receive(await stack.get(`/Patient?_id=${alice}`, researcher));
    expect(r.status, r.text).toBe(200);
    expect(entries(r.json, 'match').map((e) => e.resource?.id)).toEqual([alice]);
    expectAbsent(r, [REAL]);
  });

  it.each([
    ['subject=Patient/<p>', (p: string) => `/Observation?subject=Patient/${p}`],
    ['patient=<p>', (p: string) => `/Observation?patient=${p}`],
    ['subject:Patient=<p>', (p: string) => `/Observation?subject:Patient=${p}`],
    ['the compartment Patient/<p>/Observation', (p: string) => `/Patient/${p}/Observation`],
  ])('%s finds alice’s Observations, referenced by her pseudonym', async (_name, path) => {
    const alice = pseudo('Patient', REAL);
    const r = await receive(await stack.get(path(alice), researcher));
    expect(r.status, r.text).toBe(200);
    const found = entries(r.json, 'match');
    expect(found.length).toBeGreaterThan(0);
    for (const e of found) expect((e.resource?.subject as { reference?: string } | undefined)?.reference).toBe(`Patient/${alice}`);
    expect(found.map((e) => e.resource?.id)).toContain(pseudo('Observation', 'obs-alice-bp'));
    expectAbsent(r, [REAL, 'obs-alice-']);
  });

  it('a reference by real id: 403 pseudonym-required', async () => {
    expectError(await receive(await stack.get(`/Observation?subject=Patient/${REAL}`, researcher)), 403, 'pseudonym-required');
  });

  it.each([
    ['_lastUpdated', '/Observation?_lastUpdated=gt2000-01-01'],
    ['_sort=_id', '/Observation?_sort=_id'],
    ['_sort=subject', '/Observation?_sort=subject'],
    ['_sort=-_lastUpdated', '/Observation?_sort=-_lastUpdated'],
    ['_elements=name', '/Patient?_elements=name'],
    ['a chain', '/Observation?subject.gender=female'],
    ['a date', '/Observation?date=2024'],
  ])('%s: 403 search-param-denied', async (_name, path) => {
    const r = await receive(await stack.get(path, researcher));
    expectError(r, 403, 'search-param-denied');
    expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
  });

  it('POST _search is judged the same way', async () => {
    const alice = pseudo('Patient', REAL);
    const ok = await receive(await stack.request('/Observation/_search', { ...researcher, method: 'POST', body: `subject=Patient/${alice}`, contentType: 'application/x-www-form-urlencoded' }));
    expect(ok.status, ok.text).toBe(200);
    const real = await receive(await stack.request('/Observation/_search', { ...researcher, method: 'POST', body: `subject=Patient/${REAL}`, contentType: 'application/x-www-form-urlencoded' }));
    expectError(real, 403, 'pseudonym-required');
  });
});

describe('headers and paging links', () => {
  it("no Last-Modified or version for the researcher (the clinician gets Last-Modified from the same upstream); its ETag is the gateway's hash of its own bytes", async () => {
    const c = await stack.get(`/Patient/${REAL}`, clinician);
    await c.arrayBuffer();
    expect(c.headers.get('last-modified')).not.toBeNull();
    const r = await receive(await stack.get(`/Patient/${pseudo('Patient', REAL)}`, researcher));
    expect(r.status).toBe(200);
    expect(r.headers.get('etag')).toBe(gatewayEtag(Buffer.from(r.text)));
    expect(r.headers.get('last-modified')).toBeNull();
  });

  it('self and next repeat the pseudonyms the client sent, and the next page still answers', async () => {
    const alice = pseudo('Patient', REAL);
    const first = await receive(await stack.get(`/Observation?subject=Patient/${alice}&_count=1`, researcher));
    expect(first.status, first.text).toBe(200);
    expect(link(first.json, 'self')).toContain(alice);
    const next = link(first.json, 'next');
    expect(next).toBeDefined();
    expectAbsent(first, [REAL, 'obs-alice-']);
    const second = await receive(await stack.get(next!.slice(stack.url.length), researcher));
    expect(second.status, second.text).toBe(200);
    expectAbsent(second, [REAL, 'obs-alice-']);
    expect(entries(second.json, 'match').length).toBe(1);
  });
});

describe('batch and transaction entries', () => {
  const post = (type: string, urls: string[]) =>
    stack.request('/', {
      ...researcher,
      method: 'POST',
      contentType: 'application/fhir+json',
      body: JSON.stringify({ resourceType: 'Bundle', type, entry: urls.map((url) => ({ request: { method: 'GET', url } })) }),
    });

  it.each(['batch', 'transaction'])('%s: a real id in one entry refuses the Bundle, as a missing one does', async (type) => {
    const alice = pseudo('Patient', REAL);
    const real = await receive(await post(type, [`Patient/${alice}`, `Patient/${REAL}`]));
    expectError(real, 403, 'pseudonym-required');
    const missing = await receive(await post(type, [`Patient/${alice}`, 'Patient/pat-nobody']));
    expect(missing.text).toBe(real.text);
    expect((await auditFor(stack, real.requestId)).upstreamStatus).toBeUndefined();
  });

  it('entries by pseudonym are answered in pseudonyms; a search entry pages with pseudonym links', async () => {
    const alice = pseudo('Patient', REAL);
    const r = await receive(await post('batch', [`Patient/${alice}`, `Observation?subject=Patient/${alice}&_count=1`]));
    expect(r.status, r.text).toBe(200);
    const [read, search] = (r.json as { entry: Array<{ resource?: Record<string, unknown> }> }).entry;
    expect(read!.resource?.id).toBe(alice);
    expect(link(search!.resource, 'self')).toContain(alice);
    expect(link(search!.resource, 'next')).toBeDefined();
    expectAbsent(r, [REAL, 'obs-alice-']);
  });
});

describe('against a hand-written upstream', () => {
  let up: FaultyUpstream;
  let own: Stack;
  const LABELLED = { resourceType: 'Observation', id: 'obs-r', meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] }, status: 'final', code: { text: 'RESTRICTED-MARKER' } };

  beforeAll(async () => {
    up = await startFaultyUpstream();
    own = await startStack({ upstreamUrl: up.url, policy: deidentified });
    up.set(
      `/Patient/${REAL}`,
      fhirJson({ resourceType: 'Patient', id: REAL, gender: 'female' }, 200, {
        location: `${up.url}/Patient/${REAL}/_history/3`,
        'content-location': `${up.url}/Patient/${REAL}/_history/3`,
        etag: 'W/"3"',
        'last-modified': 'Tue, 04 Jun 2024 12:00:00 GMT',
      }),
    );
    // An upstream that honours _elements: without `meta` in the list, the labels are gone too.
    up.set('/Observation', (req, res) => {
      const elements = new URL(req.url ?? '/', 'http://x').searchParams.get('_elements');
      const keepMeta = elements === null || elements.split(',').includes('meta');
      const resource = keepMeta ? LABELLED : { resourceType: 'Observation', id: 'obs-r', code: LABELLED.code };
      fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: [{ resource, search: { mode: 'match' } }] })(req, res);
    });
  });
  afterAll(async () => {
    await own?.close();
    await up?.close();
  });

  it('Location and Content-Location carry the pseudonym, without the version', async () => {
    const key = new TextEncoder().encode(own.config.pseudonymKey!);
    const alice = pseudonymize(key, 'Patient', REAL)!;
    const r = await receive(await own.get(`/Patient/${alice}`, researcher));
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get('location')).toBe(`${own.url}/Patient/${alice}`);
    expect(r.headers.get('content-location')).toBe(`${own.url}/Patient/${alice}`);
    // Not the upstream's version: the gateway's hash of the bytes it released.
    expect(r.headers.get('etag')).toBe(gatewayEtag(Buffer.from(r.text)));
    expect(r.headers.get('last-modified')).toBeNull();
    expectAbsent(r, [REAL]);
  });

  it('_elements is forwarded with meta, so a labelled resource is still withheld (any caller)', async () => {
    const r = await receive(await own.get('/Observation?_elements=code', clinician));
    expect(r.status, r.text).toBe(200);
    expect(up.requests.at(-1)?.url).toContain(`_elements=${encodeURIComponent('code,meta')}`);
    expect(entries(r.json, 'match')).toEqual([]);
    expectAbsent(r, ['RESTRICTED-MARKER']);
  });

  it('_elements:exclude is refused', async () => {
    expectError(await receive(await own.get('/Observation?_elements:exclude=meta', clinician)), 403, 'search-param-denied');
  });
});
