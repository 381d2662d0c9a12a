/**
 * The demo FHIR upstream (medplum fhir-router behind Fastify) and its synthetic data. The gateway's
 * integration and security tests run against this server, so what it serves must look like a real
 * FHIR server's answers (absolute fullUrls and paging links, 201 + Location, 404/410
 * OperationOutcomes) and the seed must hold every sensitive item SPEC 4's demo table relies on.
 */
import { readFileSync } from 'node:fs';
import type {
  Bundle,
  CapabilityStatement,
  Condition,
  Consent,
  Coverage,
  DocumentReference,
  Encounter,
  Observation,
  OperationOutcome,
  Patient,
  Resource,
  Task,
} from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ACT_CODE_SYSTEM,
  aliceFirstVersion,
  CONFIDENTIALITY_SYSTEM,
  DEMO,
  demoResources,
  SEED_INSTANT,
  SSN_SYSTEM,
} from '../../src/demo/data.js';
import { buildFhirUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { type TestUpstream, withUpstream } from '../helpers/upstream.js';

const FHIR_JSON = 'application/fhir+json';

function labels(r: Resource): string[] {
  return (r.meta?.security ?? []).map((c) => `${c.system}|${c.code}`);
}
const R = `${CONFIDENTIALITY_SYSTEM}|R`;
const PSY = `${ACT_CODE_SYSTEM}|PSY`;
const PSYTHPN = `${ACT_CODE_SYSTEM}|PSYTHPN`;
const HIV = `${ACT_CODE_SYSTEM}|HIV`;
const SUD = `${ACT_CODE_SYSTEM}|SUD`;

function partition<T>(items: readonly T[], keep: (item: T) => boolean): [T[], T[]] {
  return [items.filter(keep), items.filter((i) => !keep(i))];
}

function patientOf(r: Resource): string | undefined {
  const x = r as { subject?: { reference?: string }; patient?: { reference?: string }; beneficiary?: { reference?: string }; for?: { reference?: string } };
  return (x.subject ?? x.patient ?? x.beneficiary ?? x.for)?.reference;
}

const ids = (b: Bundle) => (b.entry ?? []).map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);

describe('demo data', () => {
  const all = demoResources();
  const byType = (t: string) => all.filter((r) => r.resourceType === t);
  const patients = byType('Patient') as Patient[];

  it('is deterministic and gives callers fresh objects', () => {
    const again = demoResources();
    expect(JSON.stringify(again)).toBe(JSON.stringify(all));
    (again[0] as { id?: string }).id = 'changed';
    expect(demoResources()[0].id).not.toBe('changed');
  });

  it('dates only the encounters that make a relationship current by the clock, to the day', () => {
    const at = (iso: string) => demoResources(new Date(iso));
    expect(JSON.stringify(at('2030-01-05T01:00:00Z'))).toBe(JSON.stringify(at('2030-01-05T23:59:59Z')));
    const a = at('2030-01-05T12:00:00Z');
    const b = at('2030-03-01T12:00:00Z');
    const differs = a.filter((r, i) => JSON.stringify(r) !== JSON.stringify(b[i])).map((r) => `${r.resourceType}/${r.id}`);
    const R = DEMO.relationships;
    expect(differs.sort()).toEqual([`Encounter/${R.currentEncounter}`, `Encounter/${R.recentEncounter}`, `Encounter/${R.wardEncounter}`].sort());
    const period = (id: string) => (a.find((r) => r.id === id) as Encounter).period;
    expect(period(R.recentEncounter)).toEqual({ start: '2029-12-26T14:00:00Z', end: '2029-12-26T14:30:00Z' });
    expect(period(R.currentEncounter)).toEqual({ start: '2030-01-04T09:00:00Z' });
    expect(period(R.wardEncounter)).toEqual({ start: '2030-01-03T18:00:00Z' });
  });

  it('has unique ids and every reference resolves inside the seed', () => {
    const keys = all.map((r) => `${r.resourceType}/${r.id}`);
    expect(new Set(keys).size).toBe(keys.length);
    const refs = JSON.stringify(all).match(/"reference":"([A-Za-z]+\/[^"]+)"/g) ?? [];
    expect(refs.length).toBeGreaterThan(50);
    for (const m of refs) {
      const ref = m.slice('"reference":"'.length, -1);
      expect(keys, ref).toContain(ref);
    }
  });

  it('has eight patients with SSN (system and type SS), MRN, telecom, address and a GP with a display name', () => {
    expect(patients).toHaveLength(8);
    expect(patients.map((p) => p.id).sort()).toEqual(Object.values(DEMO.patients).sort());
    for (const p of patients) {
      const key = Object.entries(DEMO.patients).find(([, id]) => id === p.id)![0] as keyof typeof DEMO.ssn;
      const ssn = p.identifier?.find((i) => i.system === SSN_SYSTEM);
      expect(ssn?.value).toBe(DEMO.ssn[key]);
      expect(ssn?.type?.coding?.[0].code).toBe('SS');
      expect(p.identifier?.find((i) => i.type?.coding?.[0].code === 'MR')?.value).toBe(DEMO.mrn[key]);
      expect(p.telecom?.some((t) => t.system === 'phone')).toBe(true);
      expect(p.address?.[0].postalCode).toMatch(/^\d{5}$/);
      expect(p.generalPractitioner?.[0].display).toMatch(/\w+ \w+/);
      // Narrative repeats the identifiers, so dropping `text` is needed, not optional.
      expect(p.text?.div).toContain(DEMO.ssn[key]);
      expect(p.text?.div).toContain(p.name?.[0].family);
    }
  });

  it('covers the demo table: VIP, over-89, deceased, restricted ZIP3, relatives', () => {
    const restricted = patients.filter((p) => labels(p).includes(R));
    expect(restricted.map((p) => p.id)).toEqual([DEMO.patients.vip]);
    expect(restricted[0].name?.[0].given?.[0]).toBe('Celebrity');
    expect(patients.filter((p) => (p.birthDate ?? '9999') < '1936').map((p) => p.id)).toEqual([DEMO.patients.elder]);
    expect(patients.filter((p) => p.deceasedDateTime).map((p) => p.id)).toEqual([DEMO.patients.david]);
    const zips = patients.map((p) => p.address?.[0].postalCode);
    expect(zips).toContain('03601');
    expect(zips).toContain('02115');
    const contacts = patients.flatMap((p) => p.contact ?? []);
    expect(contacts.map((c) => c.name?.given?.[0])).toEqual(expect.arrayContaining(['Arthur', 'Ellen', 'Gloria']));
    expect(contacts.every((c) => c.telecom?.[0].value)).toBe(true);
  });

  it('propagates the VIP label to the VIP chart and to nothing else', () => {
    const labelled = all.filter((r) => labels(r).includes(R)).map((r) => `${r.resourceType}/${r.id}`);
    expect(labelled.sort()).toEqual(
      [
        `Patient/${DEMO.vip.patient}`,
        `Encounter/${DEMO.vip.encounter}`,
        `Observation/${DEMO.vip.observation}`,
        `Condition/${DEMO.vip.condition}`,
        `CareTeam/${DEMO.relationships.careTeams.vip}`,
      ].sort(),
    );
    for (const r of all) {
      if (patientOf(r) === `Patient/${DEMO.vip.patient}`) expect(labels(r), r.id).toContain(R);
    }
  });

  it('has sensitivity-labelled conditions (PSY, PSYTHPN, HIV) with notes, and ordinary ones', () => {
    const conditions = byType('Condition') as Condition[];
    const withLabel = (l: string) => conditions.filter((c) => labels(c).includes(l)).map((c) => c.id);
    expect(withLabel(PSY)).toContain(DEMO.psyCondition);
    expect(withLabel(PSYTHPN)).toEqual([DEMO.psythpnCondition]);
    expect(withLabel(HIV)).toEqual([DEMO.hivCondition]);
    const htn = conditions.find((c) => c.id === DEMO.hypertension)!;
    expect(labels(htn)).toEqual([]);
    expect(htn.note?.[0].text).toBe(DEMO.notes.hypertension);
    for (const c of conditions) expect(c.recordedDate).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    const elder = conditions.find((c) => c.id === DEMO.elderAgeCondition)!;
    expect(elder.onsetAge?.value).toBeGreaterThan(89);
  });

  it('has a contained Specimen and Practitioner referenced by #id', () => {
    const obs = all.find((r) => r.id === DEMO.containedObservation) as Observation;
    const containedIds = (obs.contained ?? []).map((c) => `#${c.id}`);
    expect(containedIds).toEqual(['#spec1', '#phleb']);
    expect(obs.specimen?.reference).toBe('#spec1');
    expect(obs.performer?.[0].reference).toBe('#phleb');
  });

  it('has a DocumentReference whose attachment names no patient', () => {
    const doc = all.find((r) => r.id === DEMO.documentReference) as DocumentReference;
    const text = Buffer.from(doc.content[0].attachment.data!, 'base64').toString('utf8');
    expect(text).toBe(DEMO.documentText);
    for (const family of DEMO.families) expect(text).not.toContain(family);
  });

  it('has every clinical, financial and scheduling type, each tied to a patient', () => {
    const expected = [
      'Encounter', 'Condition', 'Observation', 'Procedure', 'DiagnosticReport', 'DocumentReference',
      'MedicationRequest', 'AllergyIntolerance', 'Immunization', 'Claim', 'Coverage', 'ExplanationOfBenefit',
      'Practitioner', 'Organization', 'Appointment', 'CareTeam', 'EpisodeOfCare', 'PractitionerRole', 'Location', 'Task',
    ];
    for (const t of expected) expect(byType(t).length, t).toBeGreaterThan(0);
    const patientIds = new Set(Object.values(DEMO.patients).map((id) => `Patient/${id}`));
    const byRef = new Map(all.map((r) => [`${r.resourceType}/${r.id}`, r]));
    for (const r of all) {
      if (['Patient', 'Practitioner', 'Organization', 'Appointment', 'PractitionerRole', 'Location'].includes(r.resourceType)) continue;
      // A work-queue Task names its patient, or an encounter or claim of that patient.
      const focus = (r as Task).focus?.reference;
      const patient = patientOf(r) ?? (focus ? patientOf(byRef.get(focus)!) : undefined);
      expect(patientIds.has(patient ?? ''), `${r.resourceType}/${r.id}`).toBe(true);
    }
    // Health plan coverage carries member ids; a self-pay Coverage is paid by the patient.
    const [selfPay, insured] = partition(byType('Coverage') as Coverage[], (c) => c.type?.coding?.[0].code === 'pay');
    expect(insured.every((c) => c.subscriberId && c.identifier?.[0].type?.coding?.[0].code === 'MB')).toBe(true);
    expect(selfPay.map((c) => [c.id, c.payor[0].reference])).toEqual([[DEMO.consents.payerRestriction.coverage, `Patient/${DEMO.patients.brian}`]]);
    expect(JSON.stringify(byType('ExplanationOfBenefit'))).toContain(DEMO.notes.eob);
    expect(labels(all.find((r) => r.id === DEMO.psyClaim)!)).toContain(PSY);
  });

  it('has the consent directives DEMO.consents describes: active, patient-privacy, one per patient', () => {
    const C = DEMO.consents;
    const consents = byType('Consent') as Consent[];
    expect(consents.map((c) => c.id).sort()).toEqual(Object.values(C).map((c) => c.id).sort());
    for (const c of consents) {
      const key = Object.values(C).find((x) => x.id === c.id)!.patient;
      expect(c.status).toBe('active');
      expect(c.scope.coding?.[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' });
      expect(c.patient?.reference).toBe(`Patient/${DEMO.patients[key]}`);
      expect(c.policyRule?.coding?.[0].system).toBe(ACT_CODE_SYSTEM);
      expect(c.provision).toBeDefined();
      // What makes a consent unevaluable (fail closed) has no place in the demo's.
      expect(JSON.stringify(c)).not.toMatch(/modifierExtension|dataPeriod|authoredby/);
    }
    const byId = (id: string) => consents.find((c) => c.id === id)!;
    // Opt-out of research: a nested deny for HRESCH under an opt-in.
    const optOut = byId(C.researchOptOut.id);
    expect(optOut.policyRule?.coding?.[0].code).toBe('OPTIN');
    expect(optOut.provision?.provision?.map((p) => [p.type, p.purpose?.map((x) => x.code)])).toEqual([['deny', ['HRESCH']]]);
    // Part 2: a deny for label SUD, and inside it the permit for the recipient and purpose.
    const part2 = byId(C.part2.id).provision!.provision!;
    expect(part2.map((p) => [p.type, p.securityLabel?.map((l) => `${l.system}|${l.code}`)])).toEqual([['deny', [SUD]]]);
    expect(part2[0].provision?.map((p) => [p.type, p.actor?.map((a) => a.reference.reference), p.purpose?.map((x) => x.code)])).toEqual([
      ['permit', [C.part2.recipient], [C.part2.purpose]],
    ]);
    // Expired: a deny-all whose period ended before the seed was taken.
    const expired = byId(C.expired.id);
    expect(expired.policyRule?.coding?.[0].code).toBe('OPTOUT');
    expect(expired.provision?.period).toEqual(C.expired.period);
    expect(Date.parse(C.expired.period.end) < Date.parse(SEED_INSTANT)).toBe(true);
  });

  it("labels one record SUD (Paula's, named by her Part 2 consent); the payer restriction reaches one visit and what references it", () => {
    expect(all.filter((r) => labels(r).includes(SUD)).map((r) => `${r.resourceType}/${r.id}`)).toEqual([`Condition/${DEMO.consents.part2.condition}`]);
    const sud = all.find((r) => r.id === DEMO.consents.part2.condition) as Condition;
    expect(sud.subject?.reference).toBe(`Patient/${DEMO.patients.paula}`);
    expect(sud.note?.[0].text).toBe(DEMO.notes.sud);

    const PR = DEMO.consents.payerRestriction;
    const restricted = `Encounter/${PR.encounter}`;
    const related = all.filter((r) => `${r.resourceType}/${r.id}` === restricted || JSON.stringify(r).includes(`"reference":"${restricted}"`));
    expect(related.map((r) => `${r.resourceType}/${r.id}`).sort()).toEqual(
      [restricted, `Condition/${PR.condition}`, `Claim/${PR.claim}`, `Consent/${PR.id}`].sort(),
    );
    // Brian keeps an encounter, a condition and coverage the restriction does not reach.
    const brians = all.filter((r) => patientOf(r) === `Patient/${DEMO.patients.brian}` && !related.includes(r)).map((r) => `${r.resourceType}/${r.id}`);
    expect(brians).toEqual(expect.arrayContaining([`Encounter/${PR.otherEncounter}`, 'Condition/cond-brian-dm2', 'Coverage/cov-brian', `Coverage/${PR.coverage}`]));
  });

  it("keeps Alice's superseded phone number only in her first version", () => {
    expect(JSON.stringify(aliceFirstVersion())).toContain(DEMO.phones.aliceOld);
    expect(JSON.stringify(all)).not.toContain(DEMO.phones.aliceOld);
  });
});

describe('demo FHIR upstream over HTTP', () => {
  let up: TestUpstream;
  let startMs = 0;

  beforeAll(async () => {
    const t0 = performance.now();
    up = await withUpstream();
    startMs = performance.now() - t0;
  });
  afterAll(() => up?.close());

  it('starts quickly once the definitions are indexed', async () => {
    // The first start in a process indexes the R4 definitions; later starts only seed.
    expect(startMs).toBeLessThan(10_000);
    const t0 = performance.now();
    const second = await startFhirUpstream();
    const again = performance.now() - t0;
    await second.close();
    expect(again).toBeLessThan(500);
    console.info(`demo upstream start: first ${Math.round(startMs)} ms, then ${Math.round(again)} ms`);
  });

  it('reads a patient as FHIR JSON with ETag, and the seed over HTTP equals demoResources()', async () => {
    const res = await up.get<Patient>(`Patient/${DEMO.patients.alice}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain(FHIR_JSON);
    expect(res.headers.get('etag')).toBe('W/"2"');
    const seeded = demoResources().find((r) => r.id === DEMO.patients.alice)!;
    expect(res.body).toEqual(seeded);
  });

  it('answers HEAD like GET without a body', async () => {
    const found = await fetch(`${up.url}/Condition/${DEMO.psyCondition}`, { method: 'HEAD' });
    expect(found.status).toBe(200);
    expect(found.headers.get('etag')).toBe('W/"1"');
    expect(await found.text()).toBe('');
    const missing = await fetch(`${up.url}/Condition/missing`, { method: 'HEAD' });
    expect(missing.status).toBe(404);
  });

  it('answers an unknown id with 404 and an OperationOutcome, and an unknown type too', async () => {
    for (const path of ['Patient/does-not-exist', 'NotAType/1', 'NotAType']) {
      const res = await up.get<OperationOutcome>(path);
      expect(res.status, path).toBe(404);
      expect(res.body.resourceType).toBe('OperationOutcome');
      expect(res.body.issue[0].code).toBe('not-found');
    }
  });

  it('searches with parameters (string, token, date, bare-id reference) and returns absolute fullUrls', async () => {
    const byName = await up.get<Bundle>('Patient?name=anders');
    expect(byName.body.entry?.map((e) => e.resource?.id)).toEqual([DEMO.patients.alice]);
    expect(byName.body.entry?.[0].fullUrl).toBe(`${up.url}/Patient/${DEMO.patients.alice}`);
    expect(byName.body.entry?.[0].search?.mode).toBe('match');

    const bySsn = await up.get<Bundle>(`Patient?identifier=${encodeURIComponent(`${SSN_SYSTEM}|${DEMO.ssn.brian}`)}`);
    expect(bySsn.body.entry?.map((e) => e.resource?.id)).toEqual([DEMO.patients.brian]);

    const old = await up.get<Bundle>('Patient?birthdate=lt1936-01-01');
    expect(old.body.entry?.map((e) => e.resource?.id)).toEqual([DEMO.patients.elder]);

    const bareId = await up.get<Bundle>(`Condition?patient=${DEMO.patients.paula}`);
    const full = await up.get<Bundle>(`Condition?patient=Patient/${DEMO.patients.paula}`);
    expect(bareId.body.total).toBe(3);
    expect(bareId.body.entry?.map((e) => e.resource?.id).sort()).toEqual(
      [DEMO.psyCondition, DEMO.psythpnCondition, DEMO.consents.part2.condition].sort(),
    );
    expect(full.body.entry).toEqual(bareId.body.entry);

    const bySecurity = await up.get<Bundle>(`Patient?_security=${encodeURIComponent(R)}`);
    expect(bySecurity.body.entry?.map((e) => e.resource?.id)).toEqual([DEMO.patients.vip]);
  });

  it('pages with _count and absolute self/next/previous links at the upstream base', async () => {
    const page1 = await up.get<Bundle>('Observation?patient=pat-alice&_count=2');
    expect(page1.body.total).toBe(4);
    expect(page1.body.entry).toHaveLength(2);
    const link = (b: Bundle, rel: string) => b.link?.find((l) => l.relation === rel)?.url;
    expect(link(page1.body, 'self')).toBe(`${up.url}/Observation?patient=pat-alice&_count=2`);
    const next = link(page1.body, 'next')!;
    expect(next.startsWith(`${up.url}/Observation?`)).toBe(true);
    const page2 = await up.get<Bundle>(next.slice(up.url.length + 1));
    expect(page2.body.entry).toHaveLength(2);
    expect(link(page2.body, 'next')).toBeUndefined();
    expect(link(page2.body, 'previous')).toBeDefined();
    const ids = [...page1.body.entry!, ...page2.body.entry!].map((e) => e.resource?.id);
    expect(new Set(ids).size).toBe(4);
  });

  it('serves _include and _revinclude (including other patients and :iterate) with search.mode=include', async () => {
    const inc = await up.get<Bundle>(`Observation?_id=${DEMO.containedObservation}&_include=Observation:patient`);
    const modes = inc.body.entry?.map((e) => `${e.search?.mode}:${e.resource?.resourceType}/${e.resource?.id}`);
    expect(modes).toEqual([`match:Observation/${DEMO.containedObservation}`, `include:Patient/${DEMO.patients.alice}`]);

    const rev = await up.get<Bundle>(`Patient?_id=${DEMO.patients.vip}&_revinclude=Observation:subject`);
    expect(rev.body.entry?.map((e) => e.resource?.id)).toEqual([DEMO.patients.vip, DEMO.vip.observation]);
    expect(rev.body.total).toBe(1);

    const iterate = await up.get<Bundle>(
      `Condition?_id=${DEMO.psyCondition}&_include=Condition:subject&_include:iterate=Patient:general-practitioner`,
    );
    expect(iterate.body.entry?.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`)).toEqual([
      `Condition/${DEMO.psyCondition}`,
      `Patient/${DEMO.patients.paula}`,
      `Practitioner/${DEMO.practitioners.okafor}`,
    ]);
  });

  it('serves POST _search with a form body and URL parameters combined', async () => {
    const res = await fetch(`${up.url}/Condition/_search?patient=${DEMO.patients.paula}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `_security=${encodeURIComponent(PSYTHPN)}`,
    });
    const body = (await res.json()) as Bundle;
    expect(res.status).toBe(200);
    expect(body.entry?.map((e) => e.resource?.id)).toEqual([DEMO.psythpnCondition]);
  });

  it('serves instance history (newest first, with the old phone number) and vread', async () => {
    const hist = await up.get<Bundle>(`Patient/${DEMO.patients.alice}/_history`);
    expect(hist.body.type).toBe('history');
    expect(hist.body.entry?.map((e) => e.resource?.meta?.versionId)).toEqual(['2', '1']);
    expect(hist.body.entry?.[0].fullUrl).toBe(`${up.url}/Patient/${DEMO.patients.alice}`);
    expect(JSON.stringify(hist.body.entry?.[1])).toContain(DEMO.phones.aliceOld);
    const v1 = await up.get<Patient>(`Patient/${DEMO.patients.alice}/_history/1`);
    expect(v1.status).toBe(200);
    expect(v1.body.telecom?.[0].value).toBe(DEMO.phones.aliceOld);
    const typeHist = await up.get<Bundle>('Patient/_history?_count=100');
    expect(typeHist.body.total).toBe(9);
  });

  it('serves $everything: the patient and its compartment, nobody else', async () => {
    const res = await up.get<Bundle>(`Patient/${DEMO.patients.elder}/$everything`);
    expect(res.status).toBe(200);
    const refs = res.body.entry!.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
    expect(refs).toContain(`Patient/${DEMO.patients.elder}`);
    expect(refs).toContain(`Condition/${DEMO.elderAgeCondition}`);
    expect(refs).toContain(`Observation/${DEMO.elderAgeObservation}`);
    // No search paging links: they would point at a Patient search, not at this operation.
    expect(res.body.link).toBeUndefined();
    for (const e of res.body.entry!) {
      if (e.resource?.resourceType !== 'Patient') expect(patientOf(e.resource!)).toBe(`Patient/${DEMO.patients.elder}`);
    }
  });

  it('serves system search with _type, paged at the base URL', async () => {
    const res = await up.get<Bundle>('?_type=Coverage,ExplanationOfBenefit&_count=3');
    expect(res.status).toBe(200);
    expect(res.body.total).toBe(5);
    expect(res.body.entry?.map((e) => e.resource?.resourceType)).toEqual(['Coverage', 'Coverage', 'Coverage']);
    expect(res.body.link?.find((l) => l.relation === 'next')?.url).toMatch(new RegExp(`^${up.url}\\?`));
  });

  it('relates patients to the demo clinician and coder as DEMO.relationships says, by the searches a lookup makes', async () => {
    const R = DEMO.relationships;
    const get = async (path: string) => (await up.get<Bundle>(path)).body;
    const patientsOf = (b: Bundle, path: (r: Resource) => string | undefined) =>
      new Set((b.entry ?? []).map((e) => path(e.resource!)).filter((p) => p !== undefined));
    const reyes = R.fhirUsers.clinician;
    const since = new Date(Date.now() - 30 * 86_400_000).toISOString().slice(0, 10);

    const careTeams = await get(`CareTeam?participant=${reyes}&status=active`);
    expect(ids(careTeams).sort()).toEqual([`CareTeam/${R.careTeams.alice}`, `CareTeam/${R.careTeams.vip}`]);
    expect(ids(await get(`CareTeam?participant=${reyes}`))).toContain(`CareTeam/${R.careTeams.davidInactive}`);

    // Current or ended within 30 days: the in-progress one (no end) matches a date search too.
    const encounters = await get(`Encounter?participant=${reyes}&date=ge${since}`);
    expect(ids(encounters).sort()).toEqual([`Encounter/${R.currentEncounter}`, `Encounter/${R.recentEncounter}`].sort());
    expect((await get(`Encounter?participant=${reyes}`)).total).toBe(5);

    const episodes = await get(`EpisodeOfCare?care-manager=${reyes}&status=active`);
    expect(ids(episodes)).toEqual([`EpisodeOfCare/${R.episode}`]);

    const roles = await get(`PractitionerRole?practitioner=${reyes}&active=true`);
    expect(ids(roles)).toEqual([`PractitionerRole/${R.wardRole}`]);
    expect((roles.entry![0].resource as { organization?: unknown }).organization).toBeUndefined();
    const admitted = await get(`Encounter?location=Location/${R.ward}&status=in-progress`);
    expect(ids(admitted)).toEqual([`Encounter/${R.wardEncounter}`]);

    const related = new Map<string, Set<string>>([
      ['care-team', patientsOf(careTeams, patientOf)],
      ['encounter', patientsOf(encounters, patientOf)],
      ['episode', patientsOf(episodes, patientOf)],
      ['department', patientsOf(admitted, patientOf)],
    ]);
    const expected = new Map<string, string[]>();
    for (const [key, source] of Object.entries(R.clinicianRelated)) {
      expected.set(source, [...(expected.get(source) ?? []), `Patient/${DEMO.patients[key as keyof typeof DEMO.patients]}`]);
    }
    for (const [source, patients] of related) expect([...patients].sort(), source).toEqual((expected.get(source) ?? []).sort());
    const all = new Set([...related.values()].flatMap((p) => [...p]));
    for (const key of R.clinicianUnrelated) expect(all.has(`Patient/${DEMO.patients[key]}`), key).toBe(false);

    const queue = await get(`Task?owner=${R.fhirUsers.coder}&status:not=completed&_include=Task:focus`);
    const tasks = (queue.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as Task);
    const focused = new Map((queue.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => [`${e.resource?.resourceType}/${e.resource?.id}`, e.resource!]));
    const assigned = tasks.map((t) => t.for?.reference ?? patientOf(focused.get(t.focus!.reference!)!));
    expect(assigned.sort()).toEqual(R.coderAssigned.map((k) => `Patient/${DEMO.patients[k]}`).sort());
    expect(tasks.map((t) => t.id).sort()).toEqual([R.tasks.alice, R.tasks.elderEncounter, R.tasks.paulaClaim].sort());
    const completed = await get(`Task?owner=${R.fhirUsers.coder}&status=completed`);
    expect(ids(completed)).toEqual([`Task/${R.tasks.brianCompleted}`]);
    for (const key of R.coderUnassigned) expect(assigned, key).not.toContain(`Patient/${DEMO.patients[key]}`);
  });

  it("answers the consent lookup the gateway makes (patients' active Consents, OR-listed) with DEMO.consents", async () => {
    const C = DEMO.consents;
    const patients = [C.researchOptOut, C.part2, C.expired].map((c) => `Patient/${DEMO.patients[c.patient]}`);
    const res = await up.get<Bundle>(`Consent?patient=${patients.join(',')}&status=active&_count=1000`);
    expect(res.status).toBe(200);
    expect(ids(res.body).sort()).toEqual([C.researchOptOut.id, C.part2.id, C.expired.id].map((id) => `Consent/${id}`).sort());
    const none = await up.get<Bundle>(`Consent?patient=Patient/${DEMO.patients.alice}&status=active&_count=1000`);
    expect(none.body.total).toBe(0);
    const inactive = await up.get<Bundle>(`Consent?patient=Patient/${DEMO.patients.brian}&status=inactive`);
    expect(inactive.body.total).toBe(0);
  });

  it('serves a minimal CapabilityStatement at /metadata', async () => {
    const res = await up.get<CapabilityStatement>('metadata');
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('CapabilityStatement');
    expect(res.body.fhirVersion).toBe('4.0.1');
    const patient = res.body.rest?.[0].resource?.find((r) => r.type === 'Patient');
    expect(patient?.interaction?.map((i) => i.code)).toContain('search-type');
  });
});

describe('demo FHIR upstream writes', () => {
  let up: TestUpstream;
  beforeAll(async () => {
    up = await withUpstream();
  });
  afterAll(() => up?.close());

  const send = (method: string, path: string, body: unknown, contentType = FHIR_JSON) =>
    fetch(`${up.url}/${path}`, { method, headers: { 'content-type': contentType }, body: JSON.stringify(body) });

  it('creates with 201, a server-assigned id and an absolute Location, ignoring a client id', async () => {
    const example = JSON.parse(readFileSync('test/fixtures/r4/patient-example.json', 'utf8')) as Patient;
    const res = await send('POST', 'Patient', { ...example, id: DEMO.patients.alice });
    expect(res.status).toBe(201);
    const created = (await res.json()) as Patient;
    expect(created.id).not.toBe(DEMO.patients.alice);
    expect(res.headers.get('location')).toBe(`${up.url}/Patient/${created.id}/_history/1`);
    const read = await up.get<Patient>(`Patient/${created.id}`);
    expect(read.body.name).toEqual(example.name);
    const alice = await up.get<Patient>(`Patient/${DEMO.patients.alice}`);
    expect(alice.body.name?.[0].family).toBe('Anderson');
  });

  it('updates (new version), creates by update (201), honours If-Match, and patches', async () => {
    const doc = JSON.parse(readFileSync('test/fixtures/r4/documentreference-example.json', 'utf8')) as DocumentReference;
    const put = await send('PUT', `DocumentReference/${doc.id}`, doc);
    expect(put.status).toBe(201);

    const obs = (await up.get<Observation>('Observation/obs-alice-weight')).body;
    const upd = await send('PUT', 'Observation/obs-alice-weight', { ...obs, valueQuantity: { ...obs.valueQuantity, value: 67 } });
    expect(upd.status).toBe(200);
    expect(((await upd.json()) as Observation).meta?.versionId).toBe('2');

    const stale = await fetch(`${up.url}/Observation/obs-alice-weight`, {
      method: 'PUT',
      headers: { 'content-type': FHIR_JSON, 'if-match': 'W/"1"' },
      body: JSON.stringify(obs),
    });
    expect(stale.status).toBe(412);

    const patch = await send('PATCH', 'Observation/obs-alice-weight', [{ op: 'replace', path: '/status', value: 'amended' }], 'application/json-patch+json');
    expect(patch.status).toBe(200);
    const patched = (await patch.json()) as Observation;
    expect(patched.status).toBe('amended');
    expect(patched.meta?.versionId).toBe('3');
  });

  it('deletes: read answers 410, history keeps a deleted entry, search no longer matches', async () => {
    const del = await fetch(`${up.url}/Appointment/appt-grace-1`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    const read = await up.get<OperationOutcome>('Appointment/appt-grace-1');
    expect(read.status).toBe(410);
    expect(read.body.resourceType).toBe('OperationOutcome');
    const hist = await up.get<Bundle>('Appointment/appt-grace-1/_history');
    expect(hist.body.entry?.[0].request?.method).toBe('DELETE');
    expect(hist.body.entry?.[0].resource).toBeUndefined();
    expect(hist.body.entry?.[0].fullUrl).toBe(`${up.url}/Appointment/appt-grace-1`);
    const search = await up.get<Bundle>(`Appointment?patient=${DEMO.patients.grace}`);
    expect(search.body.total).toBe(0);
    // Delete is idempotent; an id that never existed is 404.
    expect((await fetch(`${up.url}/Appointment/appt-grace-1`, { method: 'DELETE' })).status).toBe(200);
    expect((await fetch(`${up.url}/Appointment/never-was`, { method: 'DELETE' })).status).toBe(404);
  });

  it('processes a batch entry by entry (reads, searches, a miss) with absolute fullUrls inside', async () => {
    const res = await send('POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${DEMO.patients.brian}` } },
        { request: { method: 'GET', url: `Condition?patient=${DEMO.patients.henry}` } },
        { request: { method: 'GET', url: 'Patient/missing' } },
        { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${DEMO.patients.brian}` } } },
      ],
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Bundle;
    expect(body.type).toBe('batch-response');
    expect(body.entry?.map((e) => e.response?.status)).toEqual(['200', '200', '404', '201']);
    expect(body.entry?.[0].fullUrl).toBe(`${up.url}/Patient/${DEMO.patients.brian}`);
    const nested = body.entry?.[1].resource as Bundle;
    expect(nested.type).toBe('searchset');
    expect(nested.entry?.map((e) => e.resource?.id)).toEqual([DEMO.hivCondition]);
    expect(nested.entry?.[0].fullUrl).toBe(`${up.url}/Condition/${DEMO.hivCondition}`);
  });

  it('resolves urn:uuid references in a transaction', async () => {
    const res = await send('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:0f3c2f1e-8a7b-4c6d-9e5f-1a2b3c4d5e6f', request: { method: 'POST', url: 'Patient' }, resource: { resourceType: 'Patient', name: [{ family: 'Txn' }] } },
        { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final', code: { text: 'y' }, subject: { reference: 'urn:uuid:0f3c2f1e-8a7b-4c6d-9e5f-1a2b3c4d5e6f' } } },
      ],
    });
    const body = (await res.json()) as Bundle;
    expect(body.type).toBe('transaction-response');
    const patientId = (body.entry![0].resource as Patient).id;
    expect((body.entry![1].resource as Observation).subject?.reference).toBe(`Patient/${patientId}`);
  });

  it('answers a malformed body with 400 and an OperationOutcome', async () => {
    const res = await fetch(`${up.url}/Patient`, { method: 'POST', headers: { 'content-type': FHIR_JSON }, body: '{"resourceType":' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as OperationOutcome).resourceType).toBe('OperationOutcome');
  });
});

describe('buildFhirUpstream without listening', () => {
  it('serves through inject with links built from the Host header, and can start empty', async () => {
    const app = await buildFhirUpstream({ seed: false });
    const res = await app.inject({ method: 'GET', url: '/fhir/Patient?_count=5', headers: { host: 'fhir.internal:8080' } });
    const body = res.json() as Bundle;
    expect(res.statusCode).toBe(200);
    expect(body.total).toBe(0);
    expect(body.link?.[0].url).toBe('http://fhir.internal:8080/fhir/Patient?_count=5');
    await app.close();
  });
});
