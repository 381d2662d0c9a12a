/**
 * BYPASSES 4, 11, 12: a token with a `patient` claim sees and writes only that patient's
 * compartment, by exact reference (Patient/pat-1 is not Patient/pat-12), in reads, searches,
 * includes, history and writes; an update cannot move a resource out of the compartment. The
 * upstream here is hand-written so the answers can carry look-alike ids deterministically.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultyUpstream, fhirJson, raw, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, receive, refs } from './support.js';

const ME = 'pat-1';
const SECRET_12 = 'NEIGHBOUR-12-SECRET';
const SECRET_1X = 'ABSOLUTE-URL-SECRET';

const obs = (id: string, subject: string, secret = 'ok') => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { text: secret },
  subject: { reference: subject },
});
const pat = (id: string, extra: Record<string, unknown> = {}) => ({ resourceType: 'Patient', id, name: [{ family: `Fam-${id}` }], ...extra });

const searchset = {
  resourceType: 'Bundle',
  type: 'searchset',
  total: 5,
  entry: [
    { fullUrl: 'x/Observation/o1', search: { mode: 'match' }, resource: obs('o1', `Patient/${ME}`) },
    { search: { mode: 'match' }, resource: obs('o12', 'Patient/pat-12', SECRET_12) },
    { search: { mode: 'match' }, resource: obs('o1x', `http://elsewhere.example/fhir/Patient/x${ME}`, SECRET_1X) },
    { search: { mode: 'include' }, resource: pat(ME) },
    { search: { mode: 'include' }, resource: pat('pat-12', { telecom: [{ value: SECRET_12 }] }) },
  ],
};
const history = {
  resourceType: 'Bundle',
  type: 'history',
  entry: [
    { resource: obs('o9', `Patient/${ME}`), request: { method: 'PUT', url: 'Observation/o9' } },
    // An older version that belonged to another patient: its content must not reappear.
    { resource: obs('o9', 'Patient/pat-12', SECRET_12), request: { method: 'PUT', url: 'Observation/o9' } },
  ],
};

let up: FaultyUpstream;
let stack: Stack;

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Observation': fhirJson(searchset),
    // A patient-context search is narrowed to the compartment before it is sent; this upstream
    // answers it with other patients' records all the same, and the filter must still hold.
    [`/Patient/${ME}/Observation`]: fhirJson(searchset),
    '/Observation/o12': fhirJson(obs('o12', 'Patient/pat-12', SECRET_12)),
    '/Observation/o1': fhirJson({ ...obs('o1', `Patient/${ME}`), meta: { versionId: '1' } }),
    // The current version, read first: vread and history are judged by it.
    '/Observation/o9': fhirJson({ ...obs('o9', `Patient/${ME}`), meta: { versionId: '2' } }),
    '/Observation/o9/_history': fhirJson(history),
    '/Patient/pat-12': fhirJson(pat('pat-12', { telecom: [{ value: SECRET_12 }] })),
    '/Patient/pat-1': fhirJson(pat(ME)),
  });
  stack = await startStack({ upstreamUrl: up.url });
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

const mine = { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: ME } } as const;

describe('reads and searches', () => {
  it('a direct read of another patient is refused before the upstream is asked', async () => {
    const before = up.requests.length;
    const r = await receive(await stack.get('/Patient/pat-12', mine));
    expectError(r, 403, 'compartment-denied');
    expect(up.requests.length).toBe(before);
  });

  it('an Observation of Patient/pat-12 is not in the compartment of pat-1 (no substring match)', async () => {
    const r = await receive(await stack.get('/Observation/o12', mine));
    expect(r.status).toBe(404);
    expectAbsent(r, [SECRET_12, 'pat-12']);
    const own = await receive(await stack.get('/Observation/o1', mine));
    expect(own.status).toBe(200);
  });

  it('search and _include results are enforced entry by entry; total counts only the visible matches', async () => {
    const r = await receive(await stack.get('/Observation?_include=Observation:subject', mine));
    expect(r.status).toBe(200);
    expect(refs(r.json).sort(), r.text).toEqual(['Observation/o1', `Patient/${ME}`]);
    expectAbsent(r, [SECRET_12, SECRET_1X, 'pat-12']);
    expect((r.json as { total?: number }).total).toBe(1);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.disclosed.patients).toEqual([ME]);
    expect(rec.disclosed.resourcesWithheld).toBe(3);
  });

  it('history: a version that belonged to another patient is withheld', async () => {
    const r = await receive(await stack.get('/Observation/o9/_history', mine));
    expect(r.status).toBe(200);
    expectAbsent(r, [SECRET_12]);
  });

  it('compartment search and $everything for another patient are refused', async () => {
    for (const path of ['/Patient/pat-12/Observation', '/Patient/pat-12/$everything', '/Patient/pat-12/_history', '/Patient/pat-12/Observation?code=x']) {
      const r = await receive(await stack.get(path, mine));
      expectError(r, 403, 'compartment-denied');
    }
  });
});

describe('writes cannot leave (or name someone outside) the compartment', () => {
  const post = (path: string, method: string, body: unknown) =>
    stack.request(path, { ...mine, method, body: JSON.stringify(body), contentType: 'application/fhir+json' });

  it.each([
    ['create for another patient', 'POST', '/Observation', obs(undefined as never, 'Patient/pat-12')],
    ['create for a look-alike id', 'POST', '/Observation', obs(undefined as never, 'Patient/pat-10')],
    ['create for a prefix id', 'POST', '/Observation', obs(undefined as never, 'Patient/pat-')],
    ['create naming no patient', 'POST', '/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' } }],
    ['create with an absolute reference', 'POST', '/Observation', obs(undefined as never, `http://elsewhere.example/fhir/Patient/${ME}`)],
    ['create with a second patient on another path', 'POST', '/Observation', { ...obs(undefined as never, `Patient/${ME}`), performer: [{ reference: 'Patient/pat-12' }] }],
    ['update that moves a resource out', 'PUT', '/Observation/o1', obs('o1', 'Patient/pat-12')],
    ['create of a new Patient', 'POST', '/Patient', pat(undefined as never)],
    ['update of another Patient', 'PUT', '/Patient/pat-12', pat('pat-12')],
  ])('%s: 403 compartment-denied, never forwarded', async (_name, method, path, body) => {
    const before = up.requests.length;
    const r = await receive(await post(path, method, body));
    expectError(r, 403, 'compartment-denied');
    expect(up.requests.length).toBe(before);
  });

  it('a batch whose one entry leaves the compartment is refused as a whole', async () => {
    const before = up.requests.length;
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${ME}` } },
        { request: { method: 'POST', url: 'Observation' }, resource: obs(undefined as never, 'Patient/pat-12') },
      ],
    };
    const r = await receive(await post('/', 'POST', bundle));
    expectError(r, 403, 'compartment-denied');
    expect(up.requests.length).toBe(before);
  });

  it('a write inside the compartment is forwarded', async () => {
    up.set('/Observation', fhirJson(obs('new', `Patient/${ME}`), 201));
    const r = await receive(await post('/Observation', 'POST', obs(undefined as never, `Patient/${ME}`)));
    expect(r.status).toBe(201);
    expect(up.requests.at(-1)?.method).toBe('POST');
    up.set('/Observation', fhirJson(searchset));
  });
});

describe('a compartment-limited token with no patient claim fails closed', () => {
  it('a patient-scoped SMART token without patient context is refused', async () => {
    const r = await receive(await stack.get('/Observation', { role: 'clinician', purpose: 'TREAT', tokenClaims: { scope: 'patient/*.rs' } }));
    expectError(r, 403, 'scope-denied');
  });
});

describe('writes cannot take over a stored resource of another patient (the stored resource is read first)', () => {
  const put = (path: string, body: unknown, method = 'PUT') =>
    stack.request(path, { ...mine, method, body: JSON.stringify(body), contentType: 'application/fhir+json' });
  const seen = (from: number) => up.requests.slice(from).map((r) => `${r.method} ${r.url.split('?')[0]}`);

  it("an update of pat-12's Observation with a body naming pat-1 is answered as a read of it would be; only the read reached the upstream", async () => {
    const before = up.requests.length;
    const r = await receive(await put('/Observation/o12', obs('o12', `Patient/${ME}`)));
    // The caller cannot read it, so it is answered exactly as a missing one (not "outside your compartment").
    expectError(r, 404, 'not-found');
    expectAbsent(r, [SECRET_12, 'pat-12']);
    expect(seen(before)).toEqual(['GET /Observation/o12']);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.decision).toBe('deny');
    expect(rec.rule).toContain('not-found');
    expect(rec.disclosed.resources).toEqual([]);
  });

  it('a stored resource that names pat-1 only as performer is still pat-12\'s record', async () => {
    up.set('/Observation/shared', fhirJson({ ...obs('shared', 'Patient/pat-12', SECRET_12), performer: [{ reference: `Patient/${ME}` }] }));
    const before = up.requests.length;
    const r = await receive(await put('/Observation/shared', obs('shared', `Patient/${ME}`)));
    // Not hers to read either (every patient a record names must be hers), so the write answers as
    // a read of it would: as a missing resource.
    expectError(r, 404, 'not-found');
    expect(seen(before)).toEqual(['GET /Observation/shared']);
  });

  it('a batch or transaction entry that updates a stored resource of another patient refuses the whole Bundle', async () => {
    for (const type of ['batch', 'transaction']) {
      const before = up.requests.length;
      const bundle = {
        resourceType: 'Bundle',
        type,
        entry: [
          { request: { method: 'PUT', url: 'Observation/o1' }, resource: obs('o1', `Patient/${ME}`) },
          { request: { method: 'PUT', url: 'Observation/o12' }, resource: obs('o12', `Patient/${ME}`) },
        ],
      };
      const r = await receive(await put('/', bundle, 'POST'));
      expectError(r, 404, 'not-found');
      expect(seen(before)).toEqual(['GET /Observation/o1', 'GET /Observation/o12']);
    }
  });

  it('an update of a resource in the compartment is forwarded with If-Match set to the version that was checked', async () => {
    const stored = { ...obs('o7', `Patient/${ME}`), meta: { versionId: '7' } };
    up.set('/Observation/o7', (req, res) => fhirJson(req.method === 'GET' ? stored : { ...stored, meta: { versionId: '8' } })(req, res));
    for (const ifMatch of [undefined, 'W/"7"', '"7"', '*']) {
      const before = up.requests.length;
      const headers: Record<string, string> = ifMatch === undefined ? {} : { 'if-match': ifMatch };
      const r = await receive(await stack.request('/Observation/o7', { ...mine, method: 'PUT', body: JSON.stringify(obs('o7', `Patient/${ME}`)), contentType: 'application/fhir+json', headers }));
      expect(r.status, r.text).toBe(200);
      expect(seen(before)).toEqual(['GET /Observation/o7', 'PUT /Observation/o7']);
      expect(up.requests.at(-1)?.headers['if-match']).toBe('W/"7"');
      // The check goes with the gateway's own headers, never the client's token.
      expect(up.requests.at(-2)?.headers.authorization).toBeUndefined();
    }
  });

  it("a client's If-Match naming another version (stale, or the next one) is refused 412 and never sent: the write could land on a version nobody checked", async () => {
    const stored = { ...obs('o7', `Patient/${ME}`), meta: { versionId: '7' } };
    up.set('/Observation/o7', (req, res) => fhirJson(req.method === 'GET' ? stored : { ...stored, meta: { versionId: '8' } })(req, res));
    for (const ifMatch of ['W/"3"', 'W/"8"']) {
      const before = up.requests.length;
      const r = await receive(await stack.request('/Observation/o7', { ...mine, method: 'PUT', body: JSON.stringify(obs('o7', `Patient/${ME}`)), contentType: 'application/fhir+json', headers: { 'if-match': ifMatch } }));
      expectError(r, 412, 'precondition-failed');
      expect(seen(before)).toEqual(['GET /Observation/o7']);
    }
  });

  it('an update-as-create (nothing stored) is refused like an update of a withheld resource: PUT never creates', async () => {
    const before = up.requests.length;
    const r = await receive(await put('/Observation/brand-new', obs('brand-new', `Patient/${ME}`)));
    expectError(r, 404, 'not-found');
    expect(seen(before)).toEqual(['GET /Observation/brand-new']);
  });

  it.each([
    ['an HTML error page', raw(500, { 'content-type': 'text/html' }, '<html>oops pat-12</html>'), 'upstream-bad-response'],
    ['a 500 OperationOutcome', fhirJson({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: 'oops pat-12' }] }, 500), 'upstream-error'],
    ['another resource than asked', fhirJson(obs('o1', `Patient/${ME}`)), 'upstream-bad-response'],
  ] as const)('%s during the check: a clean 502 and nothing is written', async (_name, behaviour, code) => {
    up.set('/Observation/broken', behaviour);
    const before = up.requests.length;
    const r = await receive(await put('/Observation/broken', obs('broken', `Patient/${ME}`)));
    expectError(r, 502, code);
    expectAbsent(r, ['oops', 'pat-12']);
    expect(seen(before)).toEqual(['GET /Observation/broken']);
  });
});

describe('Patient membership is by id: a chart that links to yours is not yours', () => {
  const linking = pat('pat-13', { telecom: [{ value: 'LINKED-CHART-SECRET' }], link: [{ other: { reference: `Patient/${ME}` }, type: 'seealso' }] });

  it('a search returning another Patient whose link.other is the token patient withholds it', async () => {
    up.set('/Patient', fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: [{ search: { mode: 'match' }, resource: pat(ME) }, { search: { mode: 'match' }, resource: linking }] }));
    const r = await receive(await stack.get(`/Patient?link=Patient/${ME}`, mine));
    expect(r.status).toBe(200);
    expect(refs(r.json)).toEqual([`Patient/${ME}`]);
    expectAbsent(r, ['LINKED-CHART-SECRET', 'pat-13']);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.disclosed.patients).toEqual([ME]);
  });

  it('$everything that carries a linked chart withholds it', async () => {
    up.set(`/Patient/${ME}/$everything`, fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: [{ resource: pat(ME) }, { resource: linking }, { resource: obs('o1', `Patient/${ME}`) }] }));
    const r = await receive(await stack.get(`/Patient/${ME}/$everything`, mine));
    expect(r.status).toBe(200);
    expect(refs(r.json).sort()).toEqual(['Observation/o1', `Patient/${ME}`]);
    expectAbsent(r, ['LINKED-CHART-SECRET', 'pat-13']);
  });

  it('the token patient\'s own chart linking to another stays readable', async () => {
    up.set(`/Patient/${ME}`, fhirJson(pat(ME, { link: [{ other: { reference: 'Patient/pat-13' }, type: 'seealso' }] })));
    const r = await receive(await stack.get(`/Patient/${ME}`, mine));
    expect(r.status).toBe(200);
    up.set(`/Patient/${ME}`, fhirJson(pat(ME)));
  });
});
