/**
 * BYPASSES 12: substring id matching. Against the real upstream, a chart `pat-alic` (a prefix of
 * the seeded `pat-alice`) is created as a treating clinician; a token limited to `pat-alic` sees
 * only that chart in reads, searches, includes, compartment searches and `$everything`, never a
 * byte of `pat-alice`'s; reference spellings that merely start with or contain the id never match.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, entries, expectAbsent, expectError, receive, refs } from './support.js';

const SHORT = 'pat-alic';
const ALICE = DEMO.patients.alice;
const SHORT_SECRET = 'PREFIX-CHART-MARKER';
/** Everything that identifies pat-alice. */
const aliceBytes = [DEMO.names.alice, DEMO.ssn.alice, DEMO.mrn.alice, DEMO.phones.alice, `Patient/${ALICE}`, 'obs-alice-'];

let stack: Stack;
const mine = { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: SHORT } } as const;

beforeAll(async () => {
  stack = await startStack();
  // Seeded on the upstream directly: through the gateway a PUT never creates.
  const put = async (path: string, body: unknown) => {
    const r = await fetch(`${stack.upstreamUrl}${path}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });
    if (r.status !== 200 && r.status !== 201) throw new Error(`setup ${path}: ${r.status} ${await r.text()}`);
  };
  await put(`/Patient/${SHORT}`, { resourceType: 'Patient', id: SHORT, name: [{ family: 'Alic', given: [SHORT_SECRET] }], gender: 'other' });
  await put('/Observation/obs-alic-1', {
    resourceType: 'Observation',
    id: 'obs-alic-1',
    status: 'final',
    code: { text: 'prefix chart reading' },
    subject: { reference: `Patient/${SHORT}` },
  });
});

afterAll(async () => {
  await stack?.close();
});

describe('reads and searches stay on the exact id', () => {
  it('the token patient chart and its Observation are readable (the setup worked)', async () => {
    const p = await receive(await stack.get(`/Patient/${SHORT}`, mine));
    expect(p.status, p.text).toBe(200);
    expect(p.text).toContain(SHORT_SECRET);
    const o = await receive(await stack.get('/Observation', mine));
    // A suppressed-outcome entry may appear (the label-oracle bug pinned in 04); no other resource may.
    expect(refs(o.json).filter((x) => x !== 'OperationOutcome/')).toEqual(['Observation/obs-alic-1']);
    expectAbsent(o, aliceBytes);
  });

  it.each([
    `/Patient/${ALICE}`,
    `/Patient/${ALICE}/Observation`,
    `/Patient/${ALICE}/$everything`,
    `/Patient/${ALICE}/_history`,
    `/Patient/${ALICE}/_history/1`,
  ])('%s: 403 compartment-denied before the upstream', async (path) => {
    const r = await receive(await stack.get(path, mine));
    expectError(r, 403, 'compartment-denied');
    expectAbsent(r, aliceBytes.filter((b) => !path.includes(b)));
    expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
  });

  it.each(['obs-alice-bp', 'obs-alice-weight', DEMO.containedObservation])('Observation/%s of pat-alice reads as not found', async (id) => {
    const r = await receive(await stack.get(`/Observation/${id}`, mine));
    expect(r.status).toBe(404);
    expectAbsent(r, [DEMO.names.alice, DEMO.ssn.alice, `Patient/${ALICE}`]);
  });

  it.each([
    `/Observation?subject=Patient/${ALICE}`,
    `/Observation?subject=${ALICE}`,
    `/Observation?patient=${ALICE}`,
    `/Observation?subject:Patient=${ALICE}`,
    `/Patient?_id=${ALICE}`,
    '/Patient?name=Anderson',
    '/Observation?_include=Observation:subject',
    '/Observation?_include=*&_revinclude=*',
    '/Patient?_revinclude=Observation:subject',
    '/Encounter?_include=Encounter:subject',
  ])('%s never returns pat-alice data', async (path) => {
    const r = await receive(await stack.get(path, mine));
    if (r.status === 200) {
      for (const ref of refs(r.json)) expect([`Patient/${SHORT}`, 'Observation/obs-alic-1', 'OperationOutcome/']).toContain(ref);
      for (const e of entries(r.json)) expect(JSON.stringify(e.resource)).not.toContain(ALICE);
    } else {
      expect(r.status).toBeGreaterThanOrEqual(400);
    }
    expectAbsent(r, [DEMO.names.alice, DEMO.ssn.alice, DEMO.mrn.alice, DEMO.phones.alice, 'obs-alice-']);
  });

  it('$everything of the token patient holds only that chart', async () => {
    const r = await receive(await stack.get(`/Patient/${SHORT}/$everything`, mine));
    expect(r.status, r.text).toBe(200);
    expect(refs(r.json).filter((x) => x !== 'OperationOutcome/').sort()).toEqual(['Observation/obs-alic-1', `Patient/${SHORT}`]);
    expectAbsent(r, aliceBytes);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.disclosed.patients).toEqual([SHORT]);
  });

  it('the longer id is not the shorter either: a pat-alice token never sees pat-alic', async () => {
    const r = await receive(await stack.get('/Observation', { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: ALICE } }));
    expect(r.status).toBe(200);
    expect(refs(r.json)).not.toContain('Observation/obs-alic-1');
    expectAbsent(r, [SHORT_SECRET, `Patient/${SHORT}"`]);
    const p = await receive(await stack.get(`/Patient/${SHORT}`, { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: ALICE } }));
    expectError(p, 403, 'compartment-denied');
  });
});

describe('reference spellings that only look like the token patient never match', () => {
  it.each([
    ['the longer id', `Patient/${ALICE}`],
    ['a versioned reference to the longer id', `Patient/${ALICE}/_history/1`],
    ['an absolute URL on another server', `http://elsewhere.example/fhir/Patient/${SHORT}`],
    ['a query suffix', `Patient/${SHORT}?x=1`],
    ['a trailing slash', `Patient/${SHORT}/`],
    ['a lower-case type', `patient/${SHORT}`],
    ['a prefix of the id', 'Patient/pat-ali'],
  ])('a write naming %s is refused, nothing written', async (_n, reference) => {
    const r = await receive(
      await stack.request('/Observation', {
        ...mine,
        method: 'POST',
        body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference } }),
        contentType: 'application/fhir+json',
      }),
    );
    expectError(r, 403, 'compartment-denied');
    expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
  });

  it('a compartment search on a spelling of the id is refused or empty, never another chart', async () => {
    for (const path of [`/Patient/${SHORT}e/Observation`, '/Patient/pat-ali/Observation', `/Patient/${SHORT}%65/Observation`]) {
      const r = await receive(await stack.get(path, mine));
      expect(r.status, path).toBeGreaterThanOrEqual(400);
      expectAbsent(r, [DEMO.names.alice, DEMO.ssn.alice, 'obs-alice-']);
      expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
    }
  });
});
