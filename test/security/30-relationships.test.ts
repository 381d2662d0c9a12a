/**
 * Care relationships (a data set's `relationship: required`), attacked from outside: the demo
 * clinician (dr-reyes, may break the glass) and coder (coder-1) against the real upstream, trying to
 * reach Brian (related to neither) through records that name him outside the compartment paths,
 * writes, the fhirUser claim itself, child purposes, paging links minted for someone else,
 * searches by his identifiers rather than his id, records moved between patients, searches too
 * broad to narrow, and searches naming a related patient on a parameter that also matches his
 * records (whose paging must not tell they exist). Every check is on the bytes the client received.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type ShippedPolicy, type Stack, startStack } from '../helpers/gateway.js';
import { recordsOnlyOf } from '../noninterference/oracle.js';
import { auditFor, comparableHeaders, entries, expectAbsent, expectError, type Received, receive, refs } from './support.js';

const R = DEMO.relationships;
const P = DEMO.patients;
const FHIR_JSON = 'application/fhir+json';
const REYES = { sub: 'dr-reyes', fhirUser: R.fhirUsers.clinician };
const CODER = { sub: 'coder-1', fhirUser: R.fhirUsers.coder };
/** Everything only Brian's seeded records hold. */
const BRIAN = recordsOnlyOf([P.brian]);

type Who = { role: string; purpose: string; claims: Record<string, unknown> };

let stack: Stack;
const tokens = new Map<string, string>();

async function tokenFor(role: string, claims: Record<string, unknown>): Promise<string> {
  const key = `${role} ${JSON.stringify(claims)}`;
  if (!tokens.has(key)) tokens.set(key, await stack.token(role, claims));
  return tokens.get(key)!;
}

async function call(
  who: Who,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Received> {
  return receive(
    await stack.request(path, {
      token: await tokenFor(who.role, who.claims),
      purpose: who.purpose,
      method,
      headers: { accept: FHIR_JSON, ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body), contentType: headers['content-type'] ?? FHIR_JSON }),
    }),
  );
}

const clinician = { role: 'clinician', purpose: 'TREAT', claims: REYES };
const coder = { role: 'coder', purpose: 'HOPERAT', claims: CODER };

const get = (who: Who, path: string, headers?: Record<string, string>) => call(who, 'GET', path, undefined, headers);

async function upstream(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${stack.upstreamUrl}${path}`, {
    method,
    headers: body === undefined ? { accept: FHIR_JSON } : { accept: FHIR_JSON, 'content-type': FHIR_JSON },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

/** Every self link's URL (the caller's own query, echoed) blanked, so what it names is not counted. */
function bodyOnly(r: Received): Received {
  let text = r.text;
  for (const m of r.text.matchAll(/"relation":"self","url":"([^"]*)"/g)) text = text.split(m[1]!).join('<self>');
  return { ...r, text };
}

const observation = (id: string, extra: Record<string, unknown>) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { text: `SECRET-${id}` },
  ...extra,
});

/** Records of a related patient (Alice) that also name Brian, and one of Brian's that names Alice. */
const CROSS = {
  brianPerformedByAlice: observation('x-brian-performer-alice', { subject: { reference: `Patient/${P.brian}` }, performer: [{ reference: `Patient/${P.alice}` }] }),
  aliceFocusBrian: observation('x-alice-focus-brian', { subject: { reference: `Patient/${P.alice}` }, focus: [{ reference: `Patient/${P.brian}` }] }),
  aliceExtensionBrian: observation('x-alice-extension-brian', {
    subject: { reference: `Patient/${P.alice}` },
    extension: [{ url: 'https://example.org/fhir/StructureDefinition/donor', valueReference: { reference: `Patient/${P.brian}`, display: DEMO.names.brian } }],
  }),
  aliceContainsPatient: observation('x-alice-contained', {
    subject: { reference: `Patient/${P.alice}` },
    contained: [{ resourceType: 'Patient', id: 'p1', name: [{ family: 'SECRET-contained-family' }] }],
  }),
  sharedAppointment: {
    resourceType: 'Appointment',
    id: 'x-appt-alice-brian',
    status: 'booked',
    description: 'SECRET-shared-appointment',
    participant: [
      { actor: { reference: `Patient/${P.alice}` }, status: 'accepted' },
      { actor: { reference: `Patient/${P.brian}` }, status: 'accepted' },
    ],
  },
  brianLinksAlice: {
    resourceType: 'Patient',
    id: 'x-brian-duplicate',
    name: [{ family: 'SECRET-duplicate-chart' }],
    link: [{ other: { reference: `Patient/${P.alice}` }, type: 'seealso' }],
  },
} as const;
const CROSS_SECRETS = ['SECRET-', ...Object.values(CROSS).map((r) => r.id)];

beforeAll(async () => {
  stack = await startStack({ relationships: true });
  for (const r of Object.values(CROSS)) expect((await upstream('PUT', `/${r.resourceType}/${r.id}`, r)).status).toBeLessThan(300);
}, 60_000);
afterAll(async () => {
  await stack?.close();
});

describe("a record that names an unrelated patient anywhere is that patient's record too", () => {
  it('never released through reads, compartment and reference searches, includes or $everything', async () => {
    const paths = [
      `/Patient/${P.alice}/$everything`,
      `/Patient/${P.alice}/Observation`,
      `/Observation?patient=${P.alice}`,
      `/Observation?performer=Patient/${P.alice}`,
      `/Observation?_count=100`,
      `/Patient?_id=${P.alice}&_revinclude=Observation:performer`,
      `/Patient?_id=${P.alice}&_revinclude=Observation:subject`,
      `/Patient?link=Patient/${P.alice}`,
      `/Appointment?patient=${P.alice}`,
      `/Appointment?actor=Patient/${P.alice}`,
      `/Encounter?patient=${P.alice}&_revinclude=Observation:encounter`,
      ...Object.values(CROSS).map((r) => `/${r.resourceType}/${r.id}`),
      ...Object.values(CROSS).map((r) => `/${r.resourceType}?_id=${r.id}`),
    ];
    for (const who of [clinician, coder]) {
      for (const path of paths) {
        const r = await get(who, path);
        expect([200, 403, 404], `${who.role} ${path}`).toContain(r.status);
        expectAbsent(bodyOnly(r), [...CROSS_SECRETS, ...BRIAN]);
      }
    }
    // Read by id: not found, as Brian's own records and missing ones are (to the clinician too: told
    // relationship-required, it could tell which ids of an unrelated patient's records exist).
    expectError(await get(clinician, `/Observation/${CROSS.aliceFocusBrian.id}`), 404, 'not-found');
    expectError(await get(coder, `/Observation/${CROSS.aliceFocusBrian.id}`), 404, 'not-found');
    // By value: a Patient id the clinician is not related to, existing or not.
    expectError(await get(clinician, `/Patient/${CROSS.brianLinksAlice.id}`), 403, 'relationship-required');
  });
});

describe('writes', () => {
  it('a create or update naming an unrelated patient on a compartment reference is refused before the upstream', async () => {
    const before = (await upstream('GET', '/Observation?_summary=count')).json.total;
    for (const body of [
      observation('w1', { subject: { reference: `Patient/${P.brian}` } }),
      observation('w2', { subject: { reference: `${stack.upstreamUrl}/Patient/${P.brian}` } }),
      observation('w3', { subject: { reference: `Patient/${P.alice}` }, performer: [{ reference: `Patient/${P.brian}` }] }),
    ]) {
      const { id: _, ...create } = body;
      expectError(await call(clinician, 'POST', '/Observation', create), 403, 'relationship-required');
    }
    expect((await upstream('GET', '/Observation?_summary=count')).json.total).toBe(before);
  });

  // The request judge checks compartment references only; the response filter counts a reference
  // to a patient on any element. A write naming Brian elsewhere is executed, the clinician then
  // cannot read what she wrote, and Brian's chart has gained a record by someone unrelated to him.
  it.each([
    ['Observation.focus', '/Observation', observation('w4', { subject: { reference: `Patient/${P.alice}` }, focus: [{ reference: `Patient/${P.brian}` }] })],
    [
      'an extension valueReference',
      '/Observation',
      observation('w5', { subject: { reference: `Patient/${P.alice}` }, extension: [{ url: 'https://example.org/donor', valueReference: { reference: `Patient/${P.brian}` } }] }),
    ],
  ])('a create naming an unrelated patient on %s is refused (relationship-required), nothing written', async (_what, path, body) => {
    const before = (await upstream('GET', '/Observation?_summary=count')).json.total;
    const { id: _, ...create } = body;
    const r = await call(clinician, 'POST', path, create);
    expect((await upstream('GET', '/Observation?_summary=count')).json.total, 'the write reached the upstream').toBe(before);
    expectError(r, 403, 'relationship-required');
  });

  it("an update linking a related patient's chart to an unrelated one (Patient.link) is refused", async () => {
    const alice = (await upstream('GET', `/Patient/${P.alice}`)).json as { meta?: { versionId?: string } };
    const r = await call(clinician, 'PUT', `/Patient/${P.alice}`, { ...alice, link: [{ other: { reference: `Patient/${P.brian}` }, type: 'seealso' }] });
    const after = (await upstream('GET', `/Patient/${P.alice}`)).json as { meta?: { versionId?: string }; link?: unknown };
    if (after.meta?.versionId !== alice.meta?.versionId) {
      // Undo, so the rest of this file sees the seeded chart.
      await upstream('PUT', `/Patient/${P.alice}`, { ...after, link: undefined });
    }
    expect(after.link, "Alice's chart now links to Brian").toBeUndefined();
    expectError(r, 403, 'relationship-required');
  });
});

describe('found by a red-team session', () => {
  it('a clinician cannot relate itself to everyone admitted by writing its own PractitionerRole', async () => {
    const role = { resourceType: 'PractitionerRole', active: true, practitioner: { reference: R.fhirUsers.clinician }, organization: { reference: 'Organization/org-hospital' } };
    const before = (await upstream('GET', '/PractitionerRole?_summary=count')).json.total;
    expectError(await call(clinician, 'POST', '/PractitionerRole', role), 403, 'interaction-denied');
    expectError(await call(clinician, 'PUT', `/PractitionerRole/${R.wardRole}`, { ...role, id: R.wardRole }), 403, 'interaction-denied');
    expect((await upstream('GET', '/PractitionerRole?_summary=count')).json.total).toBe(before);
  });

  it("which ids of an unrelated patient's records exist is not told to the clinician", async () => {
    for (const [found, missing] of [
      ['/Encounter/enc-brian-1', '/Encounter/enc-zzzzz-1'],
      ['/Encounter/enc-brian-1/_history/1', '/Encounter/enc-zzzzz-1/_history/1'],
      ['/Appointment/appt-brian-1', '/Appointment/appt-zzzzz-1'],
    ]) {
      const a = await get(clinician, found);
      const b = await get(clinician, missing);
      expectError(a, 404, 'not-found');
      expect(a.status).toBe(b.status);
      expect(a.text).toBe(b.text);
    }
  });

  it.each([
    ['a leading space', ' Patient/pat-brian'],
    ['a lower-case type', 'patient/pat-brian'],
    ['a conditional reference', 'Patient?identifier=MRN-100002'],
    ['a bare id', 'pat-brian'],
  ])('a write naming a patient with %s is refused before the upstream', async (_what, ref) => {
    const before = (await upstream('GET', '/CareTeam?_summary=count')).json.total;
    const r = await call(clinician, 'POST', '/CareTeam', { resourceType: 'CareTeam', status: 'active', subject: { reference: ref }, participant: [{ member: { reference: R.fhirUsers.clinician } }] });
    expectError(r, 403, 'relationship-required');
    const focus = await call(clinician, 'POST', '/Observation', { ...observation('x', { subject: { reference: `Patient/${P.alice}` } }), id: undefined, focus: [{ reference: ref }] });
    expectError(focus, 403, 'relationship-required');
    expect((await upstream('GET', '/CareTeam?_summary=count')).json.total).toBe(before);
  });

  it('a write whose conditional reference to another type would be resolved upstream is refused', async () => {
    const r = await call(clinician, 'POST', '/Observation', {
      ...observation('x', { subject: { reference: `Patient/${P.alice}` } }),
      id: undefined,
      encounter: { reference: 'Encounter?_id=enc-brian-1' },
    });
    expectError(r, 403, 'relationship-required');
  });
});

describe('who the caller is (fhirUser)', () => {
  it('a token naming no FHIR user is related to no one', async () => {
    const anonymous = { role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-nobody' } };
    expectError(await get(anonymous, `/Patient/${P.alice}`), 403, 'relationship-required');
    const search = await get(anonymous, '/Observation?_count=100');
    expect(search.status === 403 || (search.status === 200 && entries(search.json, 'match').length === 0)).toBe(true);
    const coderAnonymous = { role: 'coder', purpose: 'HOPERAT', claims: { sub: 'coder-nobody' } };
    expectError(await get(coderAnonymous, `/Patient/${P.alice}`), 404, 'not-found');
    const coderSearch = await get(coderAnonymous, '/Observation?_count=100');
    expect(coderSearch.status).toBe(200);
    expect(entries(coderSearch.json)).toHaveLength(0);
  });

  it.each(['Practitioner/prac-reyes,prac-chen', 'Practitioner/prac-reyes?participant=x', 'practitioner/prac-reyes', 'Practitioner/prac-reyes/_history/1', '', 'Practitioner/'])(
    'a fhirUser that is not one reference (%j) is refused, never widened',
    async (fhirUser) => {
      const r = await get({ role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-reyes', fhirUser } }, `/Patient/${P.alice}`);
      expect([401, 403]).toContain(r.status);
      expectAbsent(r, recordsOnlyOf([P.alice]));
    },
  );

  it("another practitioner's token reaches that practitioner's patients only; a patient or a role as fhirUser, theirs only", async () => {
    const chen = { role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-chen', fhirUser: 'Practitioner/prac-chen' } };
    expectError(await get(chen, `/Patient/${P.alice}`), 403, 'relationship-required');
    // Chen attends Grace on the ward (an encounter in progress).
    expect((await get(chen, `/Patient/${P.grace}`)).status).toBe(200);
    const patients = await get(chen, '/Patient?_count=100');
    expect(refs(patients.json).filter((k) => k.startsWith('Patient/'))).toEqual([`Patient/${P.grace}`]);

    const aPatient = { role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-x', fhirUser: `Patient/${P.alice}` } };
    expectError(await get(aPatient, `/Patient/${P.alice}`), 403, 'relationship-required');
    const aRole = { role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-y', fhirUser: `PractitionerRole/${R.wardRole}` } };
    expectError(await get(aRole, `/Patient/${P.alice}`), 403, 'relationship-required');
  });

  it("a role's requirement counts its own sources only: dr-reyes as a coder has no work queue", async () => {
    const reyesCoding = { role: 'coder', purpose: 'HOPERAT', claims: REYES };
    const a = await get(reyesCoding, `/Patient/${P.alice}`);
    const b = await get(reyesCoding, '/Patient/pat-does-not-exist');
    expectError(a, 404, 'not-found');
    expect(a.text).toBe(b.text);
  });
});

describe('purposes', () => {
  it('a child of the listed purpose is narrowed as the purpose is; one outside the requirement is not', async () => {
    // COC is granted in its own right, ETREAT as a child of TREAT: both are treatment.
    for (const purpose of ['COC', 'ETREAT']) expectError(await get({ ...clinician, purpose }, `/Patient/${P.brian}`), 403, 'relationship-required');
    expectError(await get({ ...coder, purpose: 'HQUALIMP' }, `/Patient/${P.brian}`), 404, 'not-found');
    // Claims work (HPAYMT) is not narrowed by the shipped policy: the coder sees Brian's claim data there.
    expect((await get({ ...coder, purpose: 'HPAYMT' }, `/Patient/${P.brian}`)).status).toBe(200);
  });

  it('break-glass needs a reason, and the coder may not break the glass at all', async () => {
    const noReason = await get({ ...clinician, purpose: 'BTG' }, `/Patient/${P.brian}`);
    expect(noReason.status).toBeGreaterThanOrEqual(400);
    expectAbsent(noReason, BRIAN);
    const coderBtg = await get({ ...coder, purpose: 'BTG' }, `/Patient/${P.brian}`, { 'x-break-glass-reason': 'Coding audit needs this chart right now please' });
    expect(coderBtg.status).toBeGreaterThanOrEqual(400);
    expectAbsent(coderBtg, BRIAN);
  });
});

describe('paging links are bound to the caller they were minted for', () => {
  async function nextLink(who: Who): Promise<string> {
    const first = await get(who, '/Observation?_count=1');
    const url = (first.json as { link?: Array<{ relation: string; url: string }> }).link?.find((l) => l.relation === 'next')?.url;
    expect(url).toBeDefined();
    return url!.slice(stack.url.length);
  }

  it("dr-reyes's next link is refused to another clinician", async () => {
    const next = await nextLink(clinician);
    const other = await get({ role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-chen', fhirUser: 'Practitioner/prac-chen' } }, next);
    expectError(other, 400, 'paging-token-invalid');
  });

  // The binding is issuer, subject, roles, purpose and patient context: not the FHIR user, whose
  // relationships the search was narrowed to. A token of the same subject naming another FHIR user
  // continues the first one's narrowed upstream search (its filter still withholds the records of
  // patients it is not related to, but `total` counts what the first caller was released).
  it("dr-reyes's next link is refused to a token of the same subject naming another FHIR user", async () => {
    const next = await nextLink(clinician);
    const other = await get({ role: 'clinician', purpose: 'TREAT', claims: { sub: REYES.sub, fhirUser: 'Practitioner/prac-chen' } }, next);
    expectError(other, 400, 'paging-token-invalid');
  });
});

describe("searches that find a patient by something other than the id answer as if the patient did not exist", () => {
  it.each([
    ['an identifier', `/Patient?identifier=${DEMO.mrn.brian}`, '/Patient?identifier=MRN-999999'],
    ['an identifier on the subject', `/Observation?subject:identifier=${DEMO.mrn.brian}`, '/Observation?subject:identifier=MRN-999999'],
    ['a family name', '/Patient?family=Baker', '/Patient?family=Zzyzx'],
    ['a phone number', `/Patient?phone=${DEMO.phones.brian}`, '/Patient?phone=000-555-0000'],
  ])('%s of an unrelated patient', async (_what, hidden, none) => {
    for (const who of [clinician, coder]) {
      const a = await get(who, hidden);
      const b = await get(who, none);
      expect(a.status, `${who.role} ${hidden}`).toBe(b.status);
      expect(bodyOnly(a).text).toBe(bodyOnly(b).text);
      expectAbsent(bodyOnly(a), BRIAN);
    }
  });

  it('negations and modifiers reach related patients only (_id:not, :not, :missing)', async () => {
    for (const who of [clinician, coder]) {
      for (const path of [`/Patient?_id:not=${P.alice}`, `/Observation?subject:not=Patient/${P.alice}`, '/Encounter?subject:missing=false', `/Condition?patient:not=${P.alice}`]) {
        const r = await get(who, path);
        expect([200, 403], `${who.role} ${path}`).toContain(r.status);
        expectAbsent(bodyOnly(r), BRIAN);
      }
    }
  });
});

describe('a record moved between patients', () => {
  it("moved from Brian to Alice: her record's history and old versions release nothing of Brian's version", async () => {
    const created = await upstream('POST', '/Observation', observation('ignored', { subject: { reference: `Patient/${P.brian}` }, valueString: 'SECRET-brian-version' }));
    const id = created.json.id as string;
    await upstream('PUT', `/Observation/${id}`, { resourceType: 'Observation', id, status: 'final', code: { text: 'moved' }, subject: { reference: `Patient/${P.alice}` } });
    const history = await get(clinician, `/Observation/${id}/_history`);
    expect(history.status).toBe(200);
    expectAbsent(history, ['SECRET-brian-version', P.brian]);
    expectError(await get(clinician, `/Observation/${id}/_history/1`), 404, 'not-found');
    expect((await get(clinician, `/Observation/${id}/_history/2`)).status).toBe(200);
  });

  it('moved from Alice to Brian: every version is withheld', async () => {
    const created = await upstream('POST', '/Observation', observation('ignored', { subject: { reference: `Patient/${P.alice}` }, valueString: 'SECRET-alice-version' }));
    const id = created.json.id as string;
    await upstream('PUT', `/Observation/${id}`, { resourceType: 'Observation', id, status: 'final', code: { text: 'moved' }, subject: { reference: `Patient/${P.brian}` } });
    for (const path of [`/Observation/${id}`, `/Observation/${id}/_history`, `/Observation/${id}/_history/1`]) {
      const r = await get(clinician, path);
      expectError(r, 404, 'not-found');
      expectAbsent(r, ['SECRET-alice-version']);
    }
    // The coder is not granted history: his read answers as a missing record.
    const c = await get(coder, `/Observation/${id}`);
    expect(c.text).toBe((await get(coder, '/Observation/does-not-exist')).text);
  });
});

describe('HEAD answers an unrelated patient as a missing one', () => {
  it('the same status and headers (coder)', async () => {
    const token = await tokenFor('coder', CODER);
    const a = await stack.request(`/Patient/${P.brian}`, { token, purpose: 'HOPERAT', method: 'HEAD' });
    const b = await stack.request('/Patient/pat-does-not-exist', { token, purpose: 'HOPERAT', method: 'HEAD' });
    expect(a.status).toBe(404);
    expect([a.status, comparableHeaders(a.headers)]).toEqual([b.status, comparableHeaders(b.headers)]);
  });
});

describe('a caller related to more patients than a search may be narrowed to', () => {
  let broad: Stack;
  beforeAll(async () => {
    broad = await startStack({
      relationships: true,
      policy: (p: ShippedPolicy) => {
        (p.relationships as { searchPatients: number }).searchPatients = 2;
      },
    });
  }, 60_000);
  afterAll(async () => {
    await broad?.close();
  });

  it('must name the patient: a search naming none is refused (400), in a batch too; naming one is answered', async () => {
    const token = await broad.token('clinician', REYES);
    const go = async (path: string, method = 'GET', body?: unknown) =>
      receive(await broad.request(path, { token, purpose: 'TREAT', method, ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: FHIR_JSON }) }));
    const refused = await go('/Observation?_count=100');
    expectError(refused, 400, 'relationship-search-too-broad');
    expect((await auditFor(broad, refused.requestId)).rule).toContain('dataSets.clinical.relationship: search too broad');
    expectError(await go('/', 'POST', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?_count=5' } }] }), 400, 'relationship-search-too-broad');
    const named = await go(`/Observation?patient=${P.alice}`);
    expect(named.status).toBe(200);
    expectAbsent(named, BRIAN);
    // A type with no patients is not narrowed.
    expect((await go('/Practitioner?_count=5')).status).toBe(200);
  });
});

// The judge takes a search naming only related patients as reaching only their records, and does
// not narrow it. That holds for the parameters that make a record the patient's (`patient`,
// `subject`, `_id` on Patient) but not for `performer`, `link`, `actor`... nor for `_id:not`: the
// upstream then matches other patients' records, which the filter withholds page after page. Once
// the pager has read its limit of upstream pages without filling one, it answers an empty page with
// a next link: the shape of the answer depends on how many records of unrelated patients match.
describe('a search naming a related patient on a parameter that also matches other patients', () => {
  let small: Stack;
  beforeAll(async () => {
    small = await startStack({ relationships: true, configure: (c) => ({ ...c, paging: { ...c.paging, minUpstreamCount: 1, maxUpstreamPages: 3 } }) });
  }, 60_000);
  afterAll(async () => {
    await small?.close();
  });

  /** Every page of a search, followed through its next links: status, entries, total, a next link or not. */
  async function pages(token: string, purpose: string, first: string): Promise<string[]> {
    const out: string[] = [];
    for (let path: string | undefined = first; path !== undefined && out.length < 20; ) {
      const r = await receive(await small.request(path, { token, purpose, method: 'GET' }));
      const b = r.json as { total?: number; entry?: Array<{ resource?: { resourceType: string; id?: string } }>; link?: Array<{ relation: string; url: string }> };
      const next = b.link?.find((l) => l.relation === 'next')?.url;
      out.push(`${r.status} [${(b.entry ?? []).map((e) => `${e.resource?.resourceType}/${e.resource?.id ?? ''}`).join(' ')}] total=${b.total ?? '-'} next=${next !== undefined}`);
      path = next?.slice(small.url.length);
    }
    return out;
  }

  it('answers the same whether or not unrelated patients\' records match it', async () => {
    const coderToken = await small.token('coder', CODER);
    const reyesToken = await small.token('clinician', REYES);
    const searches: Array<[string, string, string]> = [
      [coderToken, 'HOPERAT', `/Observation?performer=Patient/${P.alice}&_count=1`],
      [coderToken, 'HOPERAT', `/Patient?_id:not=${P.alice}&_count=1`],
      [reyesToken, 'TREAT', `/Observation?performer=Patient/${P.alice}&_count=1`],
    ];
    const before = await Promise.all(searches.map(([t, purpose, path]) => pages(t, purpose, path)));
    const post = (body: unknown) =>
      fetch(`${small.upstreamUrl}/${(body as { resourceType: string }).resourceType}`, { method: 'POST', headers: { 'content-type': FHIR_JSON }, body: JSON.stringify(body) });
    for (let i = 0; i < 12; i++) {
      // Brian's, performed by Alice; and patients the caller is related to no more than to Brian.
      expect((await post({ resourceType: 'Observation', status: 'final', code: { text: 'SECRET-hidden' }, subject: { reference: `Patient/${P.brian}` }, performer: [{ reference: `Patient/${P.alice}` }] })).status).toBe(201);
      expect((await post({ resourceType: 'Patient', name: [{ family: `SECRET-unrelated-${i}` }] })).status).toBe(201);
    }
    const after = await Promise.all(searches.map(([t, purpose, path]) => pages(t, purpose, path)));
    const byPath = (answers: string[][]) => Object.fromEntries(searches.map(([, purpose, path], k) => [`${purpose} ${path}`, answers[k]]));
    expect(byPath(after)).toEqual(byPath(before));
  });
});

