/**
 * A patient-context token reads its own patient's records, not records that merely mention that
 * patient. Found by a red-team session: a Condition about Brian whose asserter is Alice (a family
 * member reporting) came back in full, diagnosis and note, to Alice's token from `GET /Condition`,
 * the compartment search, a direct read, `$everything` and `?asserter=`; so did an Observation about
 * Brian performed by Alice. R4 compartment membership counts asserter, performer, recorder...; the
 * gateway counts a record as the patient's only when every patient it names is that patient (the
 * rule writes already followed). Checked on the bytes the client receives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectAbsent, receive } from './support.js';

let stack: Stack;
let conditionId: string;
let observationId: string;
let ownConditionId: string;
const CONDITION_MARK = 'MENTIONED-ONLY-7f3a-brian-diagnosis';
const OBSERVATION_MARK = 'MENTIONED-ONLY-7f3a-brian-observation';
const OWN_MARK = 'OWN-RECORD-7f3a-alice-self-reported';
/** Records about Alice that also name Brian outside the compartment paths (a third red-team session). */
const OUTSIDE_MARK = 'NAMES-BRIAN-ELSEWHERE-7f3a';
const outsideIds: string[] = [];

const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
const alice = { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: DEMO.patients.alice, scope: 'patient/*.rs' } } as const;

async function create(resource: Record<string, unknown>): Promise<string> {
  const r = await stack.request(`/${resource.resourceType as string}`, { ...clinician, method: 'POST', body: JSON.stringify(resource), contentType: 'application/fhir+json' });
  expect(r.status).toBe(201);
  return ((await r.json()) as { id: string }).id;
}

beforeAll(async () => {
  stack = await startStack();
  conditionId = await create({
    resourceType: 'Condition',
    subject: { reference: `Patient/${DEMO.patients.brian}` },
    asserter: { reference: `Patient/${DEMO.patients.alice}` },
    code: { text: CONDITION_MARK },
    note: [{ text: CONDITION_MARK }],
  });
  observationId = await create({
    resourceType: 'Observation',
    status: 'final',
    subject: { reference: `Patient/${DEMO.patients.brian}` },
    performer: [{ reference: `Patient/${DEMO.patients.alice}` }],
    code: { text: OBSERVATION_MARK },
  });
  const brian = { reference: `Patient/${DEMO.patients.brian}` };
  const aboutAlice = { subject: { reference: `Patient/${DEMO.patients.alice}` } };
  for (const r of [
    { resourceType: 'Observation', status: 'final', ...aboutAlice, focus: [brian], code: { text: `${OUTSIDE_MARK} focus` } },
    { resourceType: 'Observation', status: 'final', ...aboutAlice, derivedFrom: [brian], code: { text: `${OUTSIDE_MARK} derivedFrom` } },
    { resourceType: 'Condition', ...aboutAlice, extension: [{ url: 'http://example.org/fhir/StructureDefinition/related-person', valueReference: brian }], code: { text: `${OUTSIDE_MARK} extension` } },
    {
      resourceType: 'Observation',
      status: 'final',
      ...aboutAlice,
      contained: [{ resourceType: 'Patient', id: 'p1', name: [{ family: 'CONTAINEDBRIAN' }] }],
      performer: [{ reference: '#p1' }],
      code: { text: `${OUTSIDE_MARK} contained` },
    },
  ]) {
    outsideIds.push(await create(r));
  }
  // The control: her own record, which she also asserted, must still come back.
  ownConditionId = await create({
    resourceType: 'Condition',
    subject: { reference: `Patient/${DEMO.patients.alice}` },
    asserter: { reference: `Patient/${DEMO.patients.alice}` },
    code: { text: OWN_MARK },
  });
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

describe("another patient's record that names the caller's patient in another role", () => {
  it.each([
    ['/Condition?_count=100'],
    [`/Patient/${DEMO.patients.alice}/Condition?_count=100`],
    [`/Condition?asserter=Patient/${DEMO.patients.alice}`],
    ['/Observation?_count=100'],
    [`/Observation?performer=Patient/${DEMO.patients.alice}`],
    [`/Patient/${DEMO.patients.alice}/$everything?_count=200`],
  ])('%s: not released to her token', async (path) => {
    const r = await receive(await stack.get(path, alice));
    expect(r.status).toBe(200);
    expectAbsent(r, [CONDITION_MARK, OBSERVATION_MARK, conditionId, observationId]);
  });

  it.each([['/Observation?_count=100'], ['/Condition?_count=100'], [`/Patient/${DEMO.patients.alice}/$everything?_count=200`], [`/Observation?derived-from=Patient/${DEMO.patients.brian}`]])(
    '%s: a record about her that names him elsewhere (focus, derivedFrom, an extension, a contained Patient) is not released',
    async (path) => {
      const r = await receive(await stack.get(path, alice));
      expect(r.status === 200 || r.status === 403).toBe(true);
      // (The self link repeats the caller's own query, which may name him.)
      expectAbsent(r, [OUTSIDE_MARK, 'CONTAINEDBRIAN', ...outsideIds, ...(path.includes(DEMO.patients.brian) ? [] : [DEMO.patients.brian])]);
    },
  );

  it('those records read directly answer as missing ones', async () => {
    for (const id of outsideIds) {
      const type = ((await (await stack.get(`/Observation/${id}`, clinician)).json()) as { resourceType?: string }).resourceType === 'Observation' ? 'Observation' : 'Condition';
      const got = await receive(await stack.get(`/${type}/${id}`, alice));
      expect(got.status, `${type}/${id}`).toBe(404);
      expectAbsent(got, [OUTSIDE_MARK, 'CONTAINEDBRIAN']);
    }
  });

  it('a direct read answers exactly as a missing resource', async () => {
    for (const [type, id] of [
      ['Condition', conditionId],
      ['Observation', observationId],
    ] as const) {
      const got = await receive(await stack.get(`/${type}/${id}`, alice));
      const missing = await receive(await stack.get(`/${type}/${id.replace(/.$/, (c) => (c === '0' ? '1' : '0'))}x`, alice));
      expect(got.status).toBe(404);
      expect(got.text).toBe(missing.text);
      expectAbsent(got, [CONDITION_MARK, OBSERVATION_MARK]);
    }
  });

  it('her own record (subject and asserter both her) is still hers; the clinician still sees Brian’s', async () => {
    const own = await receive(await stack.get(`/Condition/${ownConditionId}`, alice));
    expect(own.status).toBe(200);
    expect(own.text).toContain(OWN_MARK);
    const search = await receive(await stack.get(`/Patient/${DEMO.patients.alice}/Condition?_count=100`, alice));
    expect(search.text).toContain(OWN_MARK);
    const theirs = await receive(await stack.get(`/Condition/${conditionId}`, clinician));
    expect(theirs.text).toContain(CONDITION_MARK);
  });
});
