/**
 * BYPASSES 9: batch, transaction and nested Bundles not checked entry by entry (hapi-fhir 727,
 * 1459; pathling PR 2603). Against the real upstream: every entry is classified and decided, one
 * denied entry denies the whole Bundle before anything is forwarded (the upstream's state is read
 * back to prove no write happened), Bundles inside entries are refused, and batch-response
 * entries are filtered one by one: a withheld resource answers like a missing one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { errorCode, expectAbsent, expectError, receive } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const P = DEMO.patients;

type Entry = { request: { method: string; url: string }; resource?: unknown; fullUrl?: string };
const bundle = (type: 'batch' | 'transaction', entry: Entry[]) => JSON.stringify({ resourceType: 'Bundle', type, entry });
const post = (body: string, who: RequestOpts) => stack.request('/', { ...who, method: 'POST', body, contentType: 'application/fhir+json' });
const marker = (n: string) => `BATCH-MARKER-${n}-${Date.now()}`;
const obs = (text: string, patient: string = P.alice) => ({ resourceType: 'Observation', status: 'final', code: { text }, subject: { reference: `Patient/${patient}` } });

/** Reads the upstream directly (not through the gateway): did anything get written? */
async function upstreamHas(text: string): Promise<boolean> {
  const res = await fetch(`${stack.upstreamUrl}/Observation?_count=1000`, { headers: { accept: 'application/fhir+json' } });
  return (await res.text()).includes(text);
}
async function upstreamStatus(path: string): Promise<number> {
  const res = await fetch(`${stack.upstreamUrl}${path}`, { headers: { accept: 'application/fhir+json' } });
  await res.arrayBuffer();
  return res.status;
}
async function notForwarded(requestId: string): Promise<void> {
  const rec = (await stack.auditRecords()).find((r) => r.id === requestId);
  expect(rec?.decision).toBe('deny');
  expect(rec?.upstreamStatus).toBeUndefined();
}

describe('every entry is decided; one refusal refuses the Bundle', () => {
  it.each([
    ['a type the role may not see', billing, [{ request: { method: 'GET', url: `Patient/${P.alice}` } }, { request: { method: 'GET', url: 'Observation?_count=5' } }], 'type-denied'],
    ['a search on a removed element (SSN)', billing, [{ request: { method: 'GET', url: `Patient?identifier=${DEMO.ssn.alice}` } }], 'search-param-denied'],
    ['a reverse chain', billing, [{ request: { method: 'GET', url: `Patient?_has:Condition:subject:code=F32.9` } }], 'search-param-denied'],
    ['system history', clinician, [{ request: { method: 'GET', url: '_history' } }], 'interaction-denied'],
    ['a write the role lacks', billing, [{ request: { method: 'POST', url: 'Claim' }, resource: { resourceType: 'Claim', status: 'active' } }], 'interaction-denied'],
    ['an operation nobody holds', clinician, [{ request: { method: 'GET', url: `Patient/${P.alice}/$graphql?query=x` } }], 'interaction-denied'],
    ['a read of another patient under a patient token', { ...clinician, tokenClaims: { patient: P.alice } }, [{ request: { method: 'GET', url: `Patient/${P.alice}` } }, { request: { method: 'GET', url: `Patient/${P.brian}` } }], 'compartment-denied'],
  ] as const)('batch with %s', async (_name, who, entry, code) => {
    for (const type of ['batch', 'transaction'] as const) {
      const r = await receive(await post(bundle(type, entry as unknown as Entry[]), who));
      expectError(r, 403, code);
      expectAbsent(r, [DEMO.names.alice, DEMO.ssn.alice]);
      await notForwarded(r.requestId);
    }
  });

  it('a transaction whose last entry is denied writes nothing (the allowed create is not made)', async () => {
    const m = marker('tx');
    const r = await receive(
      await post(
        bundle('transaction', [
          { fullUrl: 'urn:uuid:0b1c2d3e-0000-4000-8000-000000000001', request: { method: 'POST', url: 'Observation' }, resource: obs(m) },
          { request: { method: 'DELETE', url: `Patient/${P.brian}` } },
        ]),
        clinician,
      ),
    );
    expectError(r, 403, 'interaction-denied');
    await notForwarded(r.requestId);
    expect(await upstreamHas(m)).toBe(false);
    expect(await upstreamStatus(`/Patient/${P.brian}`)).toBe(200);
  });

  it('a batch mixing allowed creates with a create of an ungranted type writes nothing', async () => {
    const m = marker('batch');
    const r = await receive(
      await post(
        bundle('batch', [
          { request: { method: 'POST', url: 'Observation' }, resource: obs(m) },
          { request: { method: 'POST', url: 'Claim' }, resource: { resourceType: 'Claim', status: 'active', patient: { reference: `Patient/${P.alice}` } } },
        ]),
        clinician,
      ),
    );
    expectError(r, 403, 'type-denied');
    expect(await upstreamHas(m)).toBe(false);
  });

  it('the same transaction without the denied entry is forwarded and writes (so the refusal above was the entry)', async () => {
    const m = marker('ok');
    const r = await receive(await post(bundle('transaction', [{ request: { method: 'POST', url: 'Observation' }, resource: obs(m) }]), clinician));
    expect(r.status, r.text).toBe(200);
    expect((r.json as { type?: string }).type).toBe('transaction-response');
    expect(await upstreamHas(m)).toBe(true);
    expect(r.text).not.toContain(new URL(stack.upstreamUrl).host);
  });
});

describe('Bundles inside Bundles', () => {
  it('a batch nested in a transaction entry is refused, whatever it holds', async () => {
    const m = marker('nested');
    const inner = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'POST', url: 'Observation' }, resource: obs(m) }] };
    for (const url of ['/', '']) {
      const r = await receive(await post(bundle('transaction', [{ request: { method: 'POST', url }, resource: inner }]), clinician));
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
      expect(errorCode(r.json)).toMatch(/^(interaction-denied|request-unclassified)$/);
      await notForwarded(r.requestId);
    }
    expect(await upstreamHas(m)).toBe(false);
  });

  it('a Bundle resource created or updated through an entry is a type no data set grants', async () => {
    const m = marker('doc');
    const doc = { resourceType: 'Bundle', type: 'collection', entry: [{ resource: obs(m) }, { resource: { resourceType: 'Patient', name: [{ family: m }] } }] };
    for (const entry of [
      { request: { method: 'POST', url: 'Bundle' }, resource: doc },
      { request: { method: 'PUT', url: 'Bundle/b1' }, resource: { ...doc, id: 'b1' } },
    ]) {
      const r = await receive(await post(bundle('batch', [entry]), clinician));
      expectError(r, 403, 'type-denied');
    }
    expect(await upstreamHas(m)).toBe(false);
  });

  it('Bundles nested deeper than the classifier follows are refused as unclassified', async () => {
    let b: unknown = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Patient/${P.alice}` } }] };
    for (let i = 0; i < 4; i++) b = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'POST', url: '/' }, resource: b }] };
    const r = await receive(await post(JSON.stringify(b), clinician));
    expectError(r, 400, 'request-unclassified');
  });
});

describe('batch-response entries are filtered one by one', () => {
  const reads = (ids: string[]) => bundle('batch', ids.map((id) => ({ request: { method: 'GET', url: `Patient/${id}` } })));

  it('billing: the R-labelled chart answers exactly like a chart that does not exist', async () => {
    const r = await receive(await post(reads([P.alice, P.vip, 'does-not-exist']), billing));
    expect(r.status).toBe(200);
    const e = (r.json as { type: string; entry: Array<Record<string, unknown>> }).entry;
    expect((r.json as { type: string }).type).toBe('batch-response');
    expect(e).toHaveLength(3);
    expect((e[0]!.resource as { id?: string }).id).toBe(P.alice);
    expect(e[1]).toEqual(e[2]);
    expect(e[1]).toMatchObject({ response: { status: expect.stringMatching(/^404/) } });
    expectAbsent(r, [P.vip, DEMO.names.vip, DEMO.ssn.vip, DEMO.phones.vip, DEMO.ssn.alice, DEMO.phones.alice, new URL(stack.upstreamUrl).host]);
  });

  it('clinician (break-glass eligible): the R-labelled chart is announced as break-glass-revealable, not released', async () => {
    const r = await receive(await post(reads([P.vip, 'does-not-exist']), clinician));
    expect(r.status).toBe(200);
    const e = (r.json as { entry: Array<{ response?: { status?: string; outcome?: unknown }; resource?: unknown }> }).entry;
    expect(e[0]?.resource).toBeUndefined();
    expect(e[0]?.response?.status).toMatch(/^403/);
    expect(errorCode(e[0]?.response?.outcome)).toBe('break-glass-available');
    expect(e[1]?.response?.status).toMatch(/^404/);
    expectAbsent(r, [P.vip, DEMO.names.vip, DEMO.ssn.vip]);
  });

  it('a patient-limited token: the own chart is released, the other is "not found", never "withheld"', async () => {
    // The decision refuses naming another patient; an entry that reaches another patient only
    // through what the upstream returns (a search) is filtered in the nested searchset.
    const who = { ...clinician, tokenClaims: { patient: P.alice } };
    const r = await receive(await post(bundle('batch', [{ request: { method: 'GET', url: `Patient/${P.alice}` } }, { request: { method: 'GET', url: 'Encounter?_count=50&_include=Encounter:subject' } }]), who));
    expect(r.status).toBe(200);
    for (const other of ['brian', 'vip', 'elder', 'david', 'paula', 'henry', 'grace'] as const) expectAbsent(r, [P[other], DEMO.names[other]]);
    expect(r.text).toContain(DEMO.names.alice.split(' ')[1]!);
  });

  it('a search inside a batch is filtered like a search: labelled and removed content never appears', async () => {
    const r = await receive(await post(bundle('batch', [{ request: { method: 'GET', url: 'Condition?_count=100' } }, { request: { method: 'GET', url: `Patient?_id=${P.paula}` } }]), billing));
    expect(r.status).toBe(200);
    expectAbsent(r, [DEMO.notes.psy, DEMO.notes.hiv, DEMO.notes.hypertension, DEMO.psyCondition, DEMO.hivCondition, DEMO.phones.paula, DEMO.ssn.paula, '<div']);
    const inner = (r.json as { entry: Array<{ resource?: { resourceType: string; total?: number; entry?: unknown[]; link?: Array<{ url: string }> } }> }).entry[0]?.resource;
    expect(inner?.resourceType).toBe('Bundle');
    // The nested page is the gateway's: total counts the visible matches, links are the gateway's.
    expect(inner?.total).toBe(inner?.entry?.length ?? 0);
    for (const l of inner?.link ?? []) expect(l.url.startsWith(stack.url), l.url).toBe(true);
  });
});

describe('a transaction cannot tell withheld from missing (found by trying it from outside)', () => {
  /** Status, Content-Length and body with the id replaced. */
  async function shape(entries: Entry[], who: RequestOpts, id: string) {
    const r = await receive(await post(bundle('transaction', entries), who));
    return { status: r.status, length: r.headers.get('content-length'), body: r.text.replaceAll(id, 'ID') };
  }

  it.each([
    ['billing, the restricted VIP patient', billing, 'Patient', P.vip, 'pat-vix'],
    ['billing, an HIV-labelled Condition', billing, 'Condition', DEMO.hivCondition, 'cond-hix'],
    ['front-desk, the restricted VIP patient', { role: 'front-desk', purpose: 'HOPERAT' }, 'Patient', P.vip, 'pat-vix'],
    ['a patient-context clinician, another patient\'s Condition', { ...clinician, tokenClaims: { patient: P.alice } }, 'Condition', DEMO.hivCondition, 'cond-hix'],
  ] as const)('%s: a read entry answers exactly as a missing one', async (_name, who, type, withheld, missing) => {
    const a = await shape([{ request: { method: 'GET', url: `${type}/${withheld}` } }], who, withheld);
    const b = await shape([{ request: { method: 'GET', url: `${type}/${missing}` } }], who, missing);
    expect(a).toEqual(b);
    expect(a.status).toBe(404);
  });

  it("an eligible clinician's $everything on the restricted VIP answers as a read of it would, never an emptied 200", async () => {
    const r = await receive(await stack.get(`/Patient/${P.vip}/$everything`, clinician));
    expectError(r, 403, 'break-glass-available');
    const missing = await receive(await stack.get('/Patient/pat-vix/$everything', clinician));
    expectError(missing, 404, 'not-found');
  });
});
