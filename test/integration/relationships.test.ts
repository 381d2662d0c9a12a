/**
 * Care relationships end to end, against the real FHIR upstream (medplum, seeded with the demo) and
 * the shipped policy's requirements: the clinician (dr-reyes, TREAT, may break the glass) reaches
 * the patients she treats and is told `relationship-required` for any other; the coder (coder-1,
 * HOPERAT) reaches the patients in his work queue and every other one answers exactly as a patient
 * that does not exist. Reads, versions, history, `$everything`, compartment and patient searches,
 * searches naming no patient (narrowed), includes, batches and writes; every answer's bytes are
 * checked for anything of the caller's unrelated patients. Then break-glass, the relationship
 * cache's TTL against care teams created and deleted upstream, a lookup that fails (503), a
 * requirement that only records (`required: false`), and the audit evidence.
 */
import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Bundle, Condition, Observation, Resource } from 'fhir/r4.js';
import { Client } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { breakGlassDir } from '../../src/breakglass/index.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { type ShippedPolicy, type Stack, startStack } from '../helpers/gateway.js';
import { type Caller, patientsMentioned, recordsOnlyOf, relatedPatients } from '../noninterference/oracle.js';
import { auditFor, comparableHeaders, errorCode, expectAbsent, expectError, type Received, receive } from '../security/support.js';

const R = DEMO.relationships;
const P = DEMO.patients;
/** A patient id the upstream has never held. */
const NOBODY = 'pat-never-existed';
const FHIR_JSON = 'application/fhir+json';

type PatientKey = keyof typeof P;

interface Who {
  readonly role: string;
  readonly purpose: string;
  readonly sub: string;
  readonly fhirUser: string;
  /** The oracle's caller (test/noninterference/oracle.ts decides relatedness from the seeded resources). */
  readonly caller: Caller;
  /** The rule its data set's requirement is recorded under. */
  readonly rule: string;
  /** Related patients and the relationship the audit record must name. */
  readonly related: Partial<Record<PatientKey, { source: string; resource: string }>>;
  readonly unrelated: readonly PatientKey[];
}

const CLINICIAN: Who = {
  role: 'clinician',
  purpose: 'TREAT',
  sub: 'dr-reyes',
  fhirUser: R.fhirUsers.clinician,
  caller: { name: 'clinician', role: 'clinician', purpose: 'TREAT', fhirUser: R.fhirUsers.clinician },
  rule: 'dataSets.clinical.relationship',
  related: {
    alice: { source: 'care-team', resource: `CareTeam/${R.careTeams.alice}` },
    elder: { source: 'episode', resource: `EpisodeOfCare/${R.episode}` },
    grace: { source: 'department', resource: `Encounter/${R.wardEncounter}` },
    henry: { source: 'encounter', resource: `Encounter/${R.recentEncounter}` },
    paula: { source: 'encounter', resource: `Encounter/${R.currentEncounter}` },
  },
  unrelated: R.clinicianUnrelated,
};

const CODER: Who = {
  role: 'coder',
  purpose: 'HOPERAT',
  sub: 'coder-1',
  fhirUser: R.fhirUsers.coder,
  caller: { name: 'coder', role: 'coder', purpose: 'HOPERAT', fhirUser: R.fhirUsers.coder },
  rule: 'dataSets.coding.relationship',
  related: {
    alice: { source: 'work-queue', resource: `Task/${R.tasks.alice}` },
    elder: { source: 'work-queue', resource: `Task/${R.tasks.elderEncounter}` },
    paula: { source: 'work-queue', resource: `Task/${R.tasks.paulaClaim}` },
  },
  unrelated: R.coderUnassigned,
};

/** A caller's session on one stack: every answer is checked for its unrelated patients' bytes. */
interface Session {
  readonly who: Who;
  readonly token: string;
  get(path: string, headers?: Record<string, string>): Promise<Received>;
  send(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Received>;
}

/** Every `self` link of a Bundle (nested ones too): the echo of the caller's own query. */
function selfLinks(json: unknown, out: string[] = []): string[] {
  if (Array.isArray(json)) for (const x of json) selfLinks(x, out);
  else if (json !== null && typeof json === 'object') {
    const o = json as Record<string, unknown>;
    if (o.relation === 'self' && typeof o.url === 'string') out.push(o.url);
    for (const v of Object.values(o)) selfLinks(v, out);
  }
  return out;
}

/** The body text with each self link replaced by a placeholder. */
function withoutSelf(r: Received): string {
  let text = r.text;
  for (const url of selfLinks(r.json)) text = text.split(JSON.stringify(url).slice(1, -1)).join('<self>');
  return text;
}

/** `secrets` appear nowhere in what the client received, its own query echoed in self links aside. */
function expectNothingOf(r: Received, secrets: readonly string[]): void {
  expectAbsent({ ...r, text: withoutSelf(r) }, secrets);
}

async function session(stack: Stack, who: Who, opts: { check?: boolean; purpose?: string; headers?: Record<string, string> } = {}): Promise<Session> {
  const token = await stack.token(who.role, { sub: who.sub, fhirUser: who.fhirUser });
  const secrets = recordsOnlyOf(who.unrelated.map((k) => P[k]));
  const send = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Received> => {
    const r = await receive(
      await stack.request(path, {
        token,
        purpose: opts.purpose ?? who.purpose,
        method,
        headers: { accept: FHIR_JSON, ...opts.headers, ...headers },
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body), contentType: headers['content-type'] ?? FHIR_JSON }),
      }),
    );
    if (opts.check !== false) expectNothingOf(r, secrets);
    return r;
  };
  return { who, token, get: (path, headers) => send('GET', path, undefined, headers), send };
}

type Entry = { resource?: Resource & Record<string, unknown>; search?: { mode?: string }; response?: { status?: string; outcome?: unknown } };
const entriesOf = (r: Received | unknown): Entry[] => (((r as Received).json ?? r) as { entry?: Entry[] }).entry ?? [];
const matches = (r: Received): Array<Resource & Record<string, unknown>> =>
  entriesOf(r)
    .filter((e) => e.search?.mode !== 'outcome' && e.resource !== undefined)
    .map((e) => e.resource!);
const keysOf = (r: Received): string[] => matches(r).map((x) => `${x.resourceType}/${x.id}`);

/** The patients a released resource belongs to (a Patient: itself). */
function patientsOf(resource: Resource): string[] {
  return resource.resourceType === 'Patient' ? [resource.id!] : [...patientsMentioned(resource)];
}

/** Every resource released is of the caller's related patients (or is no patient's data). */
function expectOnlyRelated(r: Received, who: Who): void {
  const related = new Set<string>(Object.keys(who.related).map((k) => P[k as PatientKey]));
  for (const x of matches(r)) for (const p of patientsOf(x)) expect(related.has(p), `${x.resourceType}/${x.id} is of ${p}`).toBe(true);
}

/** Answered exactly alike (the request id and the self link aside). */
function expectSameAnswer(a: Received, b: Received): void {
  expect(a.status).toBe(b.status);
  expect(withoutSelf(a)).toBe(withoutSelf(b));
  // Content-Length and the gateway's ETag (a hash of the released bytes) follow the self link.
  const headers = (r: Received) => comparableHeaders(r.headers).filter(([k]) => (k !== 'etag' && k !== 'content-length') || selfLinks(r.json).length === 0);
  expect(headers(a)).toEqual(headers(b));
}

function expectEmptySearchset(r: Received): void {
  expect(r.status).toBe(200);
  expect(r.json).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: 0 });
  expect(entriesOf(r)).toHaveLength(0);
}

/** Follows `next` links (relative to the gateway) from a first page; every page through `s`. */
async function allPages(s: Session, stack: Stack, first: Received): Promise<Received[]> {
  const pages = [first];
  for (let next = nextOf(first); next !== undefined; next = nextOf(pages.at(-1)!)) {
    expect(next.startsWith(stack.url)).toBe(true);
    pages.push(await s.get(next.slice(stack.url.length)));
    expect(pages.length).toBeLessThan(50);
  }
  return pages;
}
const nextOf = (r: Received): string | undefined => (r.json as Bundle).link?.find((l) => l.relation === 'next')?.url;

const batch = (urls: string[], type: 'batch' | 'transaction' = 'batch') => ({
  resourceType: 'Bundle',
  type,
  entry: urls.map((url) => ({ request: { method: 'GET', url } })),
});

const observation = (patient: string, extra: Partial<Observation> = {}): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'relationship test' },
  subject: { reference: `Patient/${patient}` },
  ...extra,
});

/** Upstream reads and writes with no gateway in between (the state the gateway is judged against). */
async function upstream(stack: Stack, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${stack.upstreamUrl}${path}`, {
    method,
    headers: body === undefined ? { accept: FHIR_JSON } : { accept: FHIR_JSON, 'content-type': FHIR_JSON },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

async function until(what: string, withinMs: number, ok: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await ok()) return Date.now() - started;
    if (Date.now() - started > withinMs) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------------------------

describe('care relationships through the gateway (shipped policy, real upstream)', () => {
  let stack: Stack;
  let clinician: Session;
  let coder: Session;

  beforeAll(async () => {
    stack = await startStack({ relationships: true });
    clinician = await session(stack, CLINICIAN);
    coder = await session(stack, CODER);
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
  });

  it('relates the callers as the demo data says (the oracle reads the seeded resources itself)', () => {
    for (const who of [CLINICIAN, CODER]) {
      const oracle = relatedPatients(who.caller)!;
      const expected: string[] = Object.keys(who.related).map((k) => P[k as PatientKey]);
      // The VIP is related to the clinician too (her care team); her chart is withheld by label.
      if (who === CLINICIAN) expected.push(P.vip);
      expect([...oracle.keys()].sort()).toEqual(expected.sort());
      for (const k of who.unrelated) expect(oracle.has(P[k])).toBe(false);
    }
  });

  describe.each([
    ['clinician', () => clinician],
    ['coder', () => coder],
  ] as const)('%s: related patients', (_name, s) => {
    it('reads, versions and searches each related patient, and the audit record names the relationship', async () => {
      const { who } = s();
      for (const [key, rel] of Object.entries(who.related) as Array<[PatientKey, { source: string; resource: string }]>) {
        const id = P[key];
        const read = await s().get(`/Patient/${id}`);
        expect(read.status, id).toBe(200);
        expect((read.json as Resource).id).toBe(id);
        const record = await auditFor(stack, read.requestId);
        expect(record.decision).toBe('allow');
        expect(record.relationship).toEqual({ caller: who.fhirUser, related: [{ patient: id, ...rel }], required: true, rule: who.rule, unrelated: [] });

        const version = (read.json as Resource).meta?.versionId;
        expect((await s().get(`/Patient/${id}/_history/${version}`)).status, `vread ${id}`).toBe(200);
        for (const path of [`/Patient/${id}/Observation`, `/Observation?patient=${id}`, `/Observation?subject=Patient/${id}`, `/Encounter?subject:Patient=${id}`]) {
          const r = await s().get(path);
          expect(r.status, path).toBe(200);
          expectOnlyRelated(r, who);
          for (const x of matches(r)) expect(patientsOf(x), path).toEqual([id]);
        }
      }
      const alice = await s().get(`/Observation?patient=${P.alice}`);
      expect(keysOf(alice)).toContain('Observation/obs-alice-bp');
    });
  });

  it('clinician: history and $everything of a related patient', async () => {
    const history = await clinician.get(`/Patient/${P.alice}/_history`);
    expect(history.status).toBe(200);
    expect(matches(history).length).toBeGreaterThanOrEqual(2);
    const everything = await clinician.get(`/Patient/${P.alice}/$everything`);
    expect(everything.status).toBe(200);
    expect(keysOf(everything)).toEqual(expect.arrayContaining([`Patient/${P.alice}`, 'Observation/obs-alice-bp', `Condition/${DEMO.hypertension}`]));
    expectOnlyRelated(everything, CLINICIAN);
  });

  /** Every way a request names one patient by value. */
  const byValue = (id: string, base: string): string[] => [
    `/Patient/${id}`,
    `/Patient/${id}/_history/1`,
    `/Patient/${id}/Observation`,
    `/Patient/${id}/Encounter?_count=1`,
    `/Observation?patient=${id}`,
    `/Observation?subject=Patient/${id}`,
    `/Observation?subject:Patient=${id}`,
    `/Observation?subject=${encodeURIComponent(`${base}/Patient/${id}`)}`,
    `/Observation?patient=${P.alice},${id}`,
    `/Observation?patient=${P.alice}&patient=${id}`,
    `/Condition?patient=${id}&_include=Condition:subject`,
    `/Patient?_id=${id}`,
    `/Patient?_id=${P.alice},${id}`,
  ];

  it('clinician: every request naming an unrelated patient is refused with relationship-required, exactly as one naming nobody', async () => {
    const paths = (id: string) => [...byValue(id, stack.url), `/Patient/${id}/_history`, `/Patient/${id}/$everything`, `/Encounter?patient=${id}&_revinclude=Condition:encounter`];
    const nobody = await Promise.all(paths(NOBODY).map((p) => clinician.get(p)));
    for (const key of CLINICIAN.unrelated) {
      const id = P[key];
      const got = await Promise.all(paths(id).map((p) => clinician.get(p)));
      for (const [k, r] of got.entries()) {
        expectError(r, 403, 'relationship-required');
        expect(r.text, paths(id)[k]).toBe(nobody[k]!.text);
        expect(comparableHeaders(r.headers)).toEqual(comparableHeaders(nobody[k]!.headers));
      }
      const record = await auditFor(stack, got[0]!.requestId);
      expect(record.decision).toBe('deny');
      expect(record.rule).toContain(' -> dataSets.clinical.relationship: no relationship');
      expect(record.relationship).toMatchObject({ caller: CLINICIAN.fhirUser, required: true, rule: CLINICIAN.rule, related: [], unrelated: [id] });
      expect(record.disclosed.resources).toEqual([]);
    }
  });

  it('coder: every request naming an unassigned patient is answered as for a patient that does not exist', async () => {
    const paths = (id: string) => [...byValue(id, stack.url), `/Claim?patient=${id}`, `/Encounter?patient=${id}&_include=Encounter:subject`];
    const nobody = await Promise.all(paths(NOBODY).map((p) => coder.get(p)));
    expect(nobody[0]!.status).toBe(404);
    expectEmptySearchset(nobody[2]!);
    for (const key of CODER.unrelated) {
      const id = P[key];
      const got = await Promise.all(paths(id).map((p) => coder.get(p)));
      for (const [k, r] of got.entries()) {
        expect([404, 200], paths(id)[k]).toContain(r.status);
        if (r.status === 200) expectEmptySearchset(r);
        expectSameAnswer(r, nobody[k]!);
      }
      const record = await auditFor(stack, got[0]!.requestId);
      expect(record.rule).toContain(' -> dataSets.coding.relationship: no relationship');
      expect(record.relationship).toMatchObject({ caller: CODER.fhirUser, required: true, related: [], unrelated: [id] });
    }
  });

  it("a read of an unrelated patient's Observation by id: 404 to both roles, exactly as a missing one", async () => {
    const hidden = await clinician.get('/Observation/obs-brian-glucose');
    expectError(hidden, 404, 'not-found');
    expect((await auditFor(stack, hidden.requestId)).rule).toContain('withheld (relationship)');
    // A red-team session counted which ids of an unrelated patient's records exist while the
    // clinician was told relationship-required for them and not-found for missing ones.
    expectSameAnswer(hidden, await clinician.get('/Observation/does-not-exist'));
    expectSameAnswer(await clinician.get('/Encounter/enc-brian-1'), await clinician.get('/Encounter/enc-zzzzz-1'));
    expectSameAnswer(await clinician.get('/Observation/obs-brian-glucose/_history/1'), await clinician.get('/Observation/does-not-exist/_history/1'));

    for (const path of ['/Observation/obs-brian-glucose', `/Condition/${DEMO.hivCondition}`, `/Encounter/${R.wardEncounter}`, `/Observation/${DEMO.vip.observation}`]) {
      const a = await coder.get(path);
      const b = await coder.get(path.replace(/\/[^/]+$/, '/does-not-exist'));
      expectError(a, 404, 'not-found');
      expectSameAnswer(a, b);
      expectSameAnswer(await coder.get(`${path}/_history/1`), await coder.get(`${path.replace(/\/[^/]+$/, '/does-not-exist')}/_history/1`));
    }
  });

  it('a search naming no patient is narrowed: every page, the total and the next links count the related patients only', async () => {
    for (const s of [clinician, coder]) {
      const related = Object.keys(s.who.related).map((k) => P[k as PatientKey]);
      const perPatient = new Set<string>();
      for (const id of related) for (const k of keysOf(await s.get(`/Observation?patient=${id}&_count=100`))) perPatient.add(k);
      expect(perPatient.size).toBeGreaterThan(0);

      const first = await s.get('/Observation?_count=1');
      const record = await auditFor(stack, first.requestId);
      expect(record.relationship?.narrowed).toBe(relatedPatients(s.who.caller)!.size);
      const pages = await allPages(s, stack, first);
      const paged = pages.flatMap(keysOf);
      // One entry per page, no empty last page: nothing skipped upstream shows in the paging.
      expect(pages.every((p) => keysOf(p).length === 1)).toBe(true);
      expect(new Set(paged)).toEqual(perPatient);
      expect(paged).toHaveLength(perPatient.size);
      for (const p of pages) expectOnlyRelated(p, s.who);

      const counted = await s.get('/Observation?_total=accurate&_count=100');
      expect((counted.json as Bundle).total).toBe(perPatient.size);

      const patients = await s.get('/Patient?_count=100');
      const visible = related.filter((id) => id !== P.vip);
      expect(keysOf(patients).sort()).toEqual(visible.map((id) => `Patient/${id}`).sort());
    }
  });

  it('a search the caller could narrow is never answered with anything of an unrelated patient (chains, identifiers, _id, :not)', async () => {
    for (const s of [clinician, coder]) {
      for (const path of [
        '/Observation?_id=obs-brian-glucose',
        `/Observation?subject:identifier=${DEMO.mrn.brian}`,
        `/Observation?subject:not=Patient/${P.alice}`,
        '/Encounter?_count=2&_sort=-date',
      ]) {
        const r = await s.get(path);
        expect(r.status, path).toBe(200);
        expectOnlyRelated(r, s.who);
      }
    }
  });

  it('_include and _revinclude release nothing of an unrelated patient', async () => {
    const cases: Array<[Session, string, string[]]> = [
      [clinician, '/Encounter?_include=Encounter:subject', ['Patient/pat-alice']],
      [clinician, '/Practitioner?_revinclude=Encounter:participant', [`Encounter/${R.currentEncounter}`]],
      [clinician, '/Organization?_revinclude=Patient:organization', ['Patient/pat-grace']],
      [clinician, '/Location?_revinclude=Encounter:location', [`Encounter/${R.wardEncounter}`]],
      [clinician, '/Patient?_revinclude=Observation:subject', ['Observation/obs-alice-bp']],
      [clinician, '/Appointment?_include=Appointment:actor', ['Appointment/appt-alice-1']],
      [clinician, '/CareTeam?_include=CareTeam:subject', [`CareTeam/${R.careTeams.alice}`]],
      [coder, '/Encounter?_include=Encounter:subject', ['Patient/pat-paula']],
      [coder, '/Patient?_revinclude=Observation:subject', ['Observation/obs-elder-age']],
      [coder, '/Claim?_include=Claim:patient', [`Claim/${DEMO.psyClaim}`]],
      [coder, `/Encounter?patient=${P.elder}&_revinclude=Condition:encounter`, [`Condition/${DEMO.elderAgeCondition}`]],
    ];
    for (const [s, path, expected] of cases) {
      const r = await s.get(path);
      expect(r.status, path).toBe(200);
      expect(keysOf(r), path).toEqual(expect.arrayContaining(expected));
      expectOnlyRelated(r, s.who);
    }
    // The one revinclude whose upstream answer does hold an unrelated patient's encounter.
    const up = await upstream(stack, 'GET', '/Practitioner?_revinclude=Encounter:participant&_count=100');
    expect(JSON.stringify(up.json)).toContain('enc-brian-1');
  });

  it('batch: an entry naming an unrelated patient refuses the Bundle; one reaching such a record by id is refused in its entry', async () => {
    const ok = await clinician.send('POST', '/', batch([`Patient/${P.alice}`, `Observation?patient=${P.alice}`, 'Observation?_count=100']));
    expect(ok.status).toBe(200);
    const [, byPatient, narrowed] = entriesOf(ok);
    expectOnlyRelated({ ...ok, json: narrowed!.resource } as Received, CLINICIAN);
    expect(matches({ json: byPatient!.resource } as Received).length).toBeGreaterThan(0);

    for (const type of ['batch', 'transaction'] as const) {
      for (const url of [`Patient/${P.brian}`, `Observation?patient=${P.brian}`, `Patient/${P.brian}/Condition`]) {
        const refused = await clinician.send('POST', '/', batch([`Patient/${P.alice}`, url], type));
        expectError(refused, 403, 'relationship-required');
        const nobody = await clinician.send('POST', '/', batch([`Patient/${P.alice}`, url.replace(P.brian, NOBODY)], type));
        expect(refused.text).toBe(nobody.text);

        const a = await coder.send('POST', '/', batch([`Patient/${P.alice}`, url], type));
        const b = await coder.send('POST', '/', batch([`Patient/${P.alice}`, url.replace(P.brian, NOBODY)], type));
        expect(a.status).toBe(404);
        expectSameAnswer(a, b);
      }
    }
    const byId = await clinician.send('POST', '/', batch([`Patient/${P.alice}`, 'Observation/obs-brian-glucose']));
    expect(byId.status).toBe(200);
    expect(errorCode(entriesOf(byId)[1]?.response?.outcome)).toBe('not-found');
    expectSameAnswer(byId, await clinician.send('POST', '/', batch([`Patient/${P.alice}`, 'Observation/does-not-exist'])));
    const coderById = await coder.send('POST', '/', batch([`Patient/${P.alice}`, 'Observation/obs-brian-glucose']));
    const coderMissing = await coder.send('POST', '/', batch([`Patient/${P.alice}`, 'Observation/does-not-exist']));
    expectSameAnswer(coderById, coderMissing);
  });

  it('writes: a create naming an unrelated patient and an update of its record are refused, and nothing reaches the upstream', async () => {
    const count = async () => (await upstream(stack, 'GET', '/Observation?_summary=count')).json.total;
    const before = await count();
    const brianObs = (await upstream(stack, 'GET', '/Observation/obs-brian-glucose')).json as unknown as Observation;

    const create = await clinician.send('POST', '/Observation', observation(P.brian));
    expectError(create, 403, 'relationship-required');
    expect(create.text).toBe((await clinician.send('POST', '/Observation', observation(NOBODY))).text);
    expectError(await clinician.send('POST', '/Observation', observation(P.alice, { performer: [{ reference: `Patient/${P.david}` }] })), 403, 'relationship-required');
    expectError(await clinician.send('PUT', '/Observation/obs-brian-glucose', { ...brianObs, status: 'amended' }), 403, 'relationship-required');
    // Moved onto a related patient by the update itself: judged on what is stored.
    const moved = await clinician.send('PUT', '/Observation/obs-brian-glucose', { ...brianObs, subject: { reference: `Patient/${P.alice}` } });
    expectError(moved, 404, 'not-found');
    expectError(await clinician.send('PUT', `/Patient/${P.brian}`, { resourceType: 'Patient', id: P.brian, active: false }), 403, 'relationship-required');
    // A related patient's record may not be moved onto an unrelated one either.
    const bp = (await upstream(stack, 'GET', '/Observation/obs-alice-bp')).json;
    expectError(await clinician.send('PUT', '/Observation/obs-alice-bp', { ...bp, subject: { reference: `Patient/${P.brian}` } }), 403, 'relationship-required');

    expect(await count()).toBe(before);
    expect(((await upstream(stack, 'GET', '/Observation/obs-brian-glucose')).json as { meta?: { versionId?: string } }).meta?.versionId).toBe(brianObs.meta?.versionId);
    expect(((await upstream(stack, 'GET', '/Observation/obs-alice-bp')).json as { meta?: { versionId?: string } }).meta?.versionId).toBe((bp as { meta?: { versionId?: string } }).meta?.versionId);

    // The coder may not write at all: refused alike for every patient, before relationships.
    const a = await coder.send('POST', '/Observation', observation(P.brian));
    const b = await coder.send('POST', '/Observation', observation(P.alice));
    expectError(a, 403, 'interaction-denied');
    expectSameAnswer(a, b);

    // The control: a related patient's record is written.
    const created = await clinician.send('POST', '/Observation', observation(P.alice));
    expect(created.status).toBe(201);
    expect(await count()).toBe((before as number) + 1);
  });

  it('a real FHIR client (fhir-kit-client) sees related patients and the refusal for others', async () => {
    const client = new Client({ baseUrl: stack.url, bearerToken: clinician.token, customHeaders: { 'X-Purpose-Of-Use': 'TREAT' } });
    const alice = (await client.read({ resourceType: 'Patient', id: P.alice })) as Resource;
    expect(alice.id).toBe(P.alice);
    const refused = await client.read({ resourceType: 'Patient', id: P.brian }).then(
      () => undefined,
      (e: { response?: { status?: number; data?: unknown } }) => e.response,
    );
    expect(refused?.status).toBe(403);
    expect(errorCode(refused?.data)).toBe('relationship-required');
    const found = (await client.search({ resourceType: 'Condition', searchParams: { _count: 100 } })) as unknown as Bundle;
    const subjects = new Set((found.entry ?? []).flatMap((e) => (e.resource?.resourceType === 'Condition' ? [(e.resource as Condition).subject?.reference] : [])));
    expect(subjects.size).toBeGreaterThan(0);
    for (const s of subjects) expect(Object.keys(CLINICIAN.related).map((k) => `Patient/${P[k as PatientKey]}`)).toContain(s);
  });

  it("break-glass opens an unrelated patient's chart; its record says there was no relationship", async () => {
    const reason = 'Patient collapsed in the waiting room, chart needed now';
    const btg = await session(stack, CLINICIAN, { check: false, purpose: 'BTG', headers: { 'x-break-glass-reason': reason } });
    const r = await btg.get(`/Patient/${P.brian}`);
    expect(r.status).toBe(200);
    // The same check every treatment answer above passed fails here: it does see these bytes.
    expect(() => expectNothingOf(r, recordsOnlyOf([P.brian]))).toThrow(/leaked/);
    const record = await auditFor(stack, r.requestId);
    expect(record.breakGlass?.reason).toBe(reason);
    expect(record.relationship).toEqual({ caller: CLINICIAN.fhirUser, related: [], required: false, rule: 'breakGlass', unrelated: [P.brian] });
    // Break-glass on a related patient records the relationship it did not need.
    const alice = await btg.get(`/Patient/${P.alice}`);
    expect(alice.status).toBe(200);
    expect((await auditFor(stack, alice.requestId)).relationship).toMatchObject({ related: [{ patient: P.alice, ...CLINICIAN.related.alice }], required: false, unrelated: [] });
    // The treatment purpose is not opened by it.
    expectError(await clinician.get(`/Patient/${P.brian}`), 403, 'relationship-required');
  });
});

// ---------------------------------------------------------------------------------------------

describe('the relationship cache follows the upstream within its TTL', () => {
  const TTL_MS = 2000;
  let stack: Stack;
  let clinician: Session;

  beforeAll(async () => {
    stack = await startStack({
      relationships: true,
      policy: (p: ShippedPolicy) => {
        (p.relationships as { cacheSeconds: number }).cacheSeconds = TTL_MS / 1000;
      },
    });
    clinician = await session(stack, CLINICIAN, { check: false });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
  });

  it('a care team created upstream relates the patient within the TTL; deleting it ends the access within the TTL', async () => {
    const brian = () => clinician.get(`/Patient/${P.brian}`);
    expectError(await brian(), 403, 'relationship-required');
    // Let that lookup expire, so the next one is fresh and the cache warm when the team is created.
    await new Promise((r) => setTimeout(r, TTL_MS + 100));
    expectError(await brian(), 403, 'relationship-required');
    const created = await upstream(stack, 'POST', '/CareTeam', {
      resourceType: 'CareTeam',
      status: 'active',
      subject: { reference: `Patient/${P.brian}` },
      participant: [{ member: { reference: CLINICIAN.fhirUser } }],
    });
    expect(created.status).toBe(201);
    const team = `CareTeam/${created.json.id as string}`;
    // The cached relationships are used as they are for now.
    expectError(await brian(), 403, 'relationship-required');

    let allowed: Received | undefined;
    await until('the new care team takes effect', TTL_MS + 3000, async () => {
      const r = await brian();
      if (r.status === 200) allowed = r;
      else expectError(r, 403, 'relationship-required');
      return r.status === 200;
    });
    expect((allowed!.json as Resource).id).toBe(P.brian);
    expect((await auditFor(stack, allowed!.requestId)).relationship?.related).toEqual([{ patient: P.brian, resource: team, source: 'care-team' }]);

    expect((await upstream(stack, 'DELETE', `/${team}`)).status).toBeLessThan(300);
    await until('the deleted care team stops counting', TTL_MS + 3000, async () => (await brian()).status === 403);
    expectError(await brian(), 403, 'relationship-required');
  }, 20_000);
});

// ---------------------------------------------------------------------------------------------

/**
 * The real upstream behind a relay that can fail the relationship sources' searches (CareTeam and
 * Task) while every other request goes through: the lookup fails, not the upstream.
 */
async function relay(target: string): Promise<{ url: string; failing: { on: boolean }; close(): Promise<void> }> {
  const failing = { on: true };
  const server: Server = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = (req.url ?? '').replace(/^\/fhir/, '');
    if (failing.on && /^\/(CareTeam|Task)\?/.test(path)) {
      res.writeHead(500, { 'content-type': FHIR_JSON }).end('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}');
      return;
    }
    const headers: Record<string, string> = {};
    for (const h of ['content-type', 'accept', 'if-match', 'if-none-exist', 'prefer']) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
    const up = await fetch(`${target}${path}`, { method: req.method, headers, body });
    const out: Record<string, string> = {};
    for (const h of ['content-type', 'etag', 'location', 'content-location', 'last-modified']) {
      const v = up.headers.get(h);
      if (v !== null) out[h] = v;
    }
    res.writeHead(up.status, out).end(Buffer.from(await up.arrayBuffer()));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`,
    failing,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

describe('a relationship lookup that fails refuses (503 relationship-unavailable), never answers', () => {
  let up: RunningUpstream;
  let gate: Awaited<ReturnType<typeof relay>>;
  let stack: Stack;

  beforeAll(async () => {
    up = await startFhirUpstream({ seed: true });
    gate = await relay(up.url);
    stack = await startStack({ relationships: true, upstreamUrl: gate.url });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    await gate?.close();
    await up?.close();
  });

  it('refuses related and unrelated patients alike while the sources fail, with nothing of them; the record says why', async () => {
    const clinician = await session(stack, CLINICIAN, { check: false });
    const coder = await session(stack, CODER, { check: false });
    const aliceSecrets = recordsOnlyOf([P.alice]);
    for (const [s, path] of [
      [clinician, `/Patient/${P.alice}`],
      [clinician, `/Patient/${P.brian}`],
      [clinician, `/Observation?patient=${P.alice}`],
      [clinician, '/Observation?_count=5'],
      [coder, `/Patient/${P.alice}`],
      [coder, '/Claim'],
    ] as const) {
      const r = await s.get(path);
      expectError(r, 503, 'relationship-unavailable');
      expectAbsent(r, [...aliceSecrets, ...recordsOnlyOf([P.brian])]);
      const record = await auditFor(stack, r.requestId);
      expect(record.decision).toBe('error');
      expect(record.rule).toContain('relationship-unavailable');
      expect(record.disclosed.resources).toEqual([]);
    }
    expect(stack.logs.join('\n')).toContain('care relationships could not be looked up');

    gate.failing.on = false;
    const alice = await clinician.get(`/Patient/${P.alice}`);
    expect(alice.status).toBe(200);
    expect((await auditFor(stack, alice.requestId)).relationship?.related).toEqual([{ patient: P.alice, ...CLINICIAN.related.alice }]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('required: false looks relationships up and records them, refusing nothing', () => {
  let stack: Stack;
  let clinician: Session;

  beforeAll(async () => {
    stack = await startStack({
      relationships: true,
      policy: (p: ShippedPolicy) => {
        (p.dataSets.clinical as unknown as { relationship: { required: boolean } }).relationship.required = false;
      },
    });
    clinician = await session(stack, CLINICIAN, { check: false });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
  });

  it('an unrelated patient is read, and the record lists the patient as unrelated', async () => {
    const r = await clinician.get(`/Patient/${P.brian}`);
    expect(r.status).toBe(200);
    const record: ChainedRecord = await auditFor(stack, r.requestId);
    expect(record.decision).toBe('allow');
    expect(record.relationship).toEqual({ caller: CLINICIAN.fhirUser, related: [], required: false, rule: CLINICIAN.rule, unrelated: [P.brian] });
    const obs = await clinician.get('/Observation/obs-brian-glucose');
    expect(obs.status).toBe(200);
    expect((await auditFor(stack, obs.requestId)).relationship).toMatchObject({ required: false, unrelated: [P.brian] });
  });

  it('a search naming no patient is not narrowed; the record names the related and the unrelated patients released', async () => {
    const r = await clinician.get('/Observation?_count=100');
    expect(r.status).toBe(200);
    const released = new Set(matches(r).flatMap(patientsOf));
    expect(released.has(P.brian)).toBe(true);
    const record = await auditFor(stack, r.requestId);
    expect(record.relationship?.required).toBe(false);
    expect(record.relationship?.unrelated).toEqual([P.brian]);
    expect(record.relationship?.related.map((x) => x.patient).sort()).toEqual([...released].filter((p) => p !== P.brian).sort());

    const named = await clinician.get(`/Observation?patient=${P.alice},${P.brian}`);
    expect(named.status).toBe(200);
    expect((await auditFor(stack, named.requestId)).relationship?.unrelated).toEqual([P.brian]);
  });

  it('the record of a search that was not narrowed does not say it was', async () => {
    const r = await clinician.get('/Observation?_count=100');
    expect(matches(r).some((x) => patientsOf(x).includes(P.brian))).toBe(true);
    // `narrowed` reads "a search naming no patient, narrowed to this many related patients".
    expect((await auditFor(stack, r.requestId)).relationship?.narrowed).toBeUndefined();
  });
});
