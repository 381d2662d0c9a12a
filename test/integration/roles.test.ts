/**
 * One block per demo role and purpose (SPEC 4's table), against the real FHIR upstream, with access
 * tokens issued by a real OpenID provider (client credentials) and verified through its JWKS.
 * Every "never sees" assertion is made on the raw bytes the client receives: status line aside,
 * the forbidden value must not appear anywhere in the body or the headers.
 */
import type { Bundle, Patient, Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

interface Received {
  status: number;
  /** Headers and body as one text: what a forbidden value must never be part of. */
  bytes: string;
  json: Record<string, unknown> & Partial<Bundle> & Partial<Patient>;
  headers: Headers;
}

async function receive(path: string, opts: RequestOpts): Promise<Received> {
  const res = await stack.get(path, opts);
  const body = await res.text();
  const headerText = [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n');
  return { status: res.status, bytes: `${headerText}\n\n${body}`, json: body ? JSON.parse(body) : {}, headers: res.headers };
}

function entries(b: Received): Resource[] {
  return (b.json.entry ?? []).map((e) => e.resource).filter((r): r is Resource => r !== undefined);
}

function errorCode(b: Received): string | undefined {
  const issue = (b.json as { issue?: Array<{ details?: { coding?: Array<{ code?: string }> } }> }).issue;
  return issue?.[0]?.details?.coding?.[0]?.code;
}

function expectAbsent(b: Received, values: readonly string[]): void {
  for (const v of values) expect(b.bytes, `"${v}" must not reach the client`).not.toContain(v);
}

const SSNS = Object.values(DEMO.ssn);
const VIP = [DEMO.names.vip, DEMO.ssn.vip, DEMO.mrn.vip, DEMO.phones.vip, 'Vip'];

describe('clinician (TREAT, COC): all clinical resources, all elements; never R/V without break-glass', () => {
  const as = { role: 'clinician', purpose: 'TREAT' };

  it('reads a whole patient: SSN, phone, narrative', async () => {
    const b = await receive(`/Patient/${DEMO.patients.alice}`, as);
    expect(b.status).toBe(200);
    expect(b.bytes).toContain(DEMO.ssn.alice);
    expect(b.bytes).toContain(DEMO.phones.alice);
    expect(b.json.text).toBeDefined();
    expect(b.json.meta?.security ?? []).not.toContainEqual(expect.objectContaining({ code: 'REDACTED' }));
  });

  it('sees clinical notes and the PSY condition', async () => {
    const b = await receive(`/Condition?patient=${DEMO.patients.paula}`, as);
    expect(b.status).toBe(200);
    expect(entries(b).map((r) => r.id)).toContain(DEMO.psyCondition);
    expect(b.bytes).toContain(DEMO.notes.psy);
  });

  it('is refused the VIP patient, told break-glass can reveal it, and learns nothing about it', async () => {
    const b = await receive(`/Patient/${DEMO.patients.vip}`, as);
    expect(b.status).toBe(403);
    expect(errorCode(b)).toBe('break-glass-available');
    expectAbsent(b, VIP);
  });

  it('never sees the VIP chart in searches; a suppressed outcome entry says results were withheld', async () => {
    const b = await receive('/Patient?_count=50', as);
    expect(b.status).toBe(200);
    expectAbsent(b, VIP);
    // The whole result fit one page: total counts what the clinician sees, never the VIP.
    expect(b.json.total).toBe((b.json.entry ?? []).filter((e) => e.search?.mode === 'match').length);
    const outcome = (b.json.entry ?? []).filter((e) => e.search?.mode === 'outcome');
    expect(outcome).toHaveLength(1);
    expect(JSON.stringify(outcome[0])).toContain('suppressed');
    const enc = await receive(`/Encounter?patient=${DEMO.patients.vip}`, as);
    expect(enc.status).toBe(200);
    expect(entries(enc).filter((r) => r.resourceType === 'Encounter')).toHaveLength(0);
    expectAbsent(enc, VIP);
  });

  it('COC is a granted purpose too; a purpose the role lacks is refused', async () => {
    expect((await receive(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'COC' })).status).toBe(200);
    const b = await receive(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'HPAYMT' });
    expect(b.status).toBe(403);
    expect(errorCode(b)).toBe('purpose-not-permitted');
  });

  it('may not read billing resources', async () => {
    const b = await receive(`/Claim?patient=${DEMO.patients.alice}`, as);
    expect(b.status).toBe(403);
    expect(errorCode(b)).toBe('type-denied');
  });
});

describe('billing (HPAYMT and children): demographics and financial data; no SSN, telecom, notes, sensitive labels', () => {
  const as = { role: 'billing', purpose: 'HPAYMT' };

  it('reads the patient without SSN, telecom or narrative, marked REDACTED', async () => {
    const b = await receive(`/Patient/${DEMO.patients.alice}`, as);
    expect(b.status).toBe(200);
    expect(b.bytes).toContain(DEMO.mrn.alice);
    expect(b.bytes).toContain('Anderson');
    expect(b.bytes).toContain(DEMO.addresses.aliceZip);
    expectAbsent(b, [...SSNS, DEMO.phones.alice, DEMO.phones.aliceSpouse, DEMO.emails.alice, DEMO.relatives.aliceSpouse]);
    expect(b.json.text).toBeUndefined();
    expect(b.json.meta?.security).toContainEqual({ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'REDACTED' });
  });

  it('a child purpose (CLMATTCH) is covered by HPAYMT', async () => {
    expect((await receive(`/Patient/${DEMO.patients.alice}`, { role: 'billing', purpose: 'CLMATTCH' })).status).toBe(200);
  });

  it('never sees a PSY condition, its note, or a PSY claim', async () => {
    const b = await receive(`/Condition?patient=${DEMO.patients.paula}`, as);
    expect(b.status).toBe(200);
    const ids = entries(b).map((r) => r.id);
    expect(ids).not.toContain(DEMO.psyCondition);
    expect(ids).not.toContain(DEMO.psythpnCondition);
    expectAbsent(b, [DEMO.notes.psy, DEMO.notes.psythpn, 'depress']);
    expect(b.json.total).toBe(ids.length);
    const direct = await receive(`/Condition/${DEMO.psyCondition}`, as);
    expect(direct.status).toBe(404); // billing cannot break glass: withheld looks like absent
    expectAbsent(direct, [DEMO.notes.psy]);
    const claims = await receive(`/Claim?patient=${DEMO.patients.paula}`, as);
    expect(entries(claims).map((r) => r.id)).not.toContain(DEMO.psyClaim);
  });

  it('sees conditions reduced to code, subject, encounter and recorded date', async () => {
    const b = await receive(`/Condition/${DEMO.hypertension}`, as);
    expect(b.status).toBe(200);
    expect(Object.keys(b.json).sort()).toEqual(['code', 'encounter', 'id', 'meta', 'recordedDate', 'resourceType', 'subject']);
    expectAbsent(b, [DEMO.notes.hypertension, DEMO.phones.alice]);
  });

  it('claims and coverage, with the EOB process note removed', async () => {
    const claims = await receive(`/Claim?patient=${DEMO.patients.alice}`, as);
    expect(claims.status).toBe(200);
    expect(entries(claims).length).toBeGreaterThan(0);
    const cov = await receive(`/Coverage?patient=${DEMO.patients.alice}`, as);
    expect(entries(cov).length).toBeGreaterThan(0);
    const eob = await receive(`/ExplanationOfBenefit?patient=${DEMO.patients.alice}`, as);
    expect(entries(eob).length).toBeGreaterThan(0);
    expectAbsent(eob, [DEMO.notes.eob]);
  });

  it('may not read observations or documents', async () => {
    expect(errorCode(await receive(`/Observation?patient=${DEMO.patients.alice}`, as))).toBe('type-denied');
    expect(errorCode(await receive(`/DocumentReference/${DEMO.documentReference}`, as))).toBe('type-denied');
  });

  it('cannot pull observations in through _revinclude: refused before the upstream is asked', async () => {
    const b = await receive(`/Patient?_id=${DEMO.patients.alice}&_revinclude=Observation:subject`, as);
    expect(b.status).toBe(403);
    expect(errorCode(b)).toBe('type-denied');
  });
});

describe('coder (HPAYMT, HOPERAT): clinical coding data; patient reduced to MRN, gender, birth date', () => {
  const as = { role: 'coder', purpose: 'HOPERAT' };

  it('sees only id, MRN, gender and birth date of a patient', async () => {
    const b = await receive(`/Patient/${DEMO.patients.alice}`, as);
    expect(b.status).toBe(200);
    expect(b.bytes).toContain(DEMO.mrn.alice);
    expect(b.json.gender).toBe('female');
    expect(b.json.birthDate).toBe(DEMO.birthDates.alice);
    expectAbsent(b, ['Anderson', 'Alice', DEMO.addresses.aliceLine, DEMO.addresses.aliceCity, DEMO.phones.alice, ...SSNS]);
  });

  it('sees observations and documents without patient or practitioner names', async () => {
    const b = await receive(`/Observation?patient=${DEMO.patients.alice}`, as);
    expect(b.status).toBe(200);
    expect(entries(b).length).toBeGreaterThan(0);
    expectAbsent(b, [DEMO.names.alice, 'Anderson']);
    const d = await receive(`/DocumentReference/${DEMO.documentReference}`, as);
    expect(d.status).toBe(200);
    expectAbsent(d, ['Anderson']);
  });

  it('sees PSY conditions (coding needs them) but never the psychotherapy note', async () => {
    const b = await receive(`/Condition?patient=${DEMO.patients.paula}`, as);
    const ids = entries(b).map((r) => r.id);
    expect(ids).toContain(DEMO.psyCondition);
    expect(ids).not.toContain(DEMO.psythpnCondition);
    expectAbsent(b, [DEMO.notes.psythpn]);
  });

  it('HPAYMT works too; research does not', async () => {
    expect((await receive(`/Claim?patient=${DEMO.patients.alice}`, { role: 'coder', purpose: 'HPAYMT' })).status).toBe(200);
    expect((await receive(`/Claim?patient=${DEMO.patients.alice}`, { role: 'coder', purpose: 'HRESCH' })).status).toBe(403);
  });
});

describe('researcher (HRESCH): Safe Harbor view', () => {
  const as = { role: 'researcher', purpose: 'HRESCH' };

  it('patients have no names, telecom, identifiers or real ids; birth year only; ZIP3 with restricted prefixes as 000', async () => {
    const b = await receive('/Patient?_count=50', as);
    expect(b.status).toBe(200);
    const patients = entries(b) as Patient[];
    expect(patients.length).toBeGreaterThan(3);
    expectAbsent(b, [
      ...Object.values(DEMO.patients),
      ...Object.values(DEMO.names),
      ...DEMO.families,
      ...SSNS,
      ...Object.values(DEMO.mrn),
      ...Object.values(DEMO.phones),
      DEMO.addresses.aliceLine,
      DEMO.addresses.aliceCity,
      DEMO.birthDates.alice,
      DEMO.addresses.aliceZip,
    ]);
    for (const p of patients) {
      expect(p.name).toBeUndefined();
      expect(p.telecom).toBeUndefined();
      expect(p.identifier).toBeUndefined();
      if (p.birthDate) expect(p.birthDate).toMatch(/^\d{4}$/);
      for (const a of p.address ?? []) if (a.postalCode) expect(a.postalCode).toMatch(/^\d{3}$/);
    }
    const zips = patients.flatMap((p) => (p.address ?? []).map((a) => a.postalCode));
    expect(zips).toContain('021');
    expect(zips).toContain('000'); // 036xx is restricted
  });

  it('a patient over 89 appears as 90', async () => {
    const b = await receive('/Patient?_count=50', as);
    const thisYear = new Date().getUTCFullYear();
    const years = (entries(b) as Patient[]).map((p) => Number(p.birthDate)).filter(Number.isFinite);
    expect(Math.min(...years)).toBeGreaterThanOrEqual(thisYear - 90);
    expect(b.bytes).not.toContain('1930');
  });

  it('observations carry pseudonymous references, year-only dates, no performers by name', async () => {
    const b = await receive('/Observation?code=http://loinc.org|85354-9', as);
    expect(b.status).toBe(200);
    expectAbsent(b, [...Object.values(DEMO.patients), ...Object.values(DEMO.practitionerNames), 'Anderson']);
    for (const r of entries(b) as Array<{ subject?: { reference?: string }; effectiveDateTime?: string }>) {
      // Pseudonyms are FHIR ids (src/redact/pseudonym.ts): 61 characters.
      if (r.subject?.reference) expect(r.subject.reference).toMatch(/^Patient\/[A-Za-z0-9.-]{61}$/);
      if (r.effectiveDateTime) expect(r.effectiveDateTime).toMatch(/^\d{4}$/);
    }
  });

  it('pseudonyms are stable across requests', async () => {
    const a = entries(await receive('/Patient?_count=50', as)).map((r) => r.id).sort();
    const b = entries(await receive('/Patient?_count=50', as)).map((r) => r.id).sort();
    expect(a).toEqual(b);
  });

  it('may not search by a real patient id (re-identification) or read claims', async () => {
    expect((await receive(`/Observation?patient=${DEMO.patients.alice}`, as)).status).toBe(403);
    expect((await receive('/Claim', as)).status).toBe(403);
  });
});

describe('front-desk (HOPERAT): demographics and scheduling; no clinical data', () => {
  const as = { role: 'front-desk', purpose: 'HOPERAT' };

  it('reads name, telecom, address, MRN, but no SSN', async () => {
    const b = await receive(`/Patient/${DEMO.patients.alice}`, as);
    expect(b.status).toBe(200);
    expect(b.bytes).toContain(DEMO.phones.alice);
    expect(b.bytes).toContain(DEMO.mrn.alice);
    expectAbsent(b, SSNS);
  });

  it('sees appointments; no clinical resource', async () => {
    expect((await receive(`/Appointment?patient=${DEMO.patients.alice}`, as)).status).toBe(200);
    for (const t of ['Condition', 'Observation', 'Encounter', 'MedicationRequest']) {
      const b = await receive(`/${t}?patient=${DEMO.patients.alice}`, as);
      expect(b.status, t).toBe(403);
      expect(errorCode(b)).toBe('type-denied');
    }
  });
});

describe.each(['auditor', 'privacy-officer'])('%s (HCOMPL): no PHI through the FHIR API', (role) => {
  it('is refused every FHIR resource', async () => {
    for (const path of [`/Patient/${DEMO.patients.alice}`, '/Patient', `/Condition?patient=${DEMO.patients.alice}`]) {
      const b = await receive(path, { role, purpose: 'HCOMPL' });
      expect(b.status, path).toBe(403);
      expectAbsent(b, [DEMO.names.alice, DEMO.ssn.alice]);
    }
  });
});

describe('every response is audited with the id it carries', () => {
  it('records allowed and denied requests, with disclosed ids and patients', async () => {
    const ok = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'billing', purpose: 'HPAYMT' });
    const denied = await stack.get(`/Observation?patient=${DEMO.patients.alice}`, { role: 'billing', purpose: 'HPAYMT' });
    await ok.text();
    await denied.text();
    const records = await stack.auditRecords();
    const a = records.find((r) => r.id === ok.headers.get('x-request-id'));
    const d = records.find((r) => r.id === denied.headers.get('x-request-id'));
    expect(a).toMatchObject({ decision: 'allow', status: 200, purpose: 'HPAYMT', role: 'billing' });
    expect(a?.disclosed.resources).toEqual([`Patient/${DEMO.patients.alice}`]);
    expect(a?.disclosed.patients).toEqual([DEMO.patients.alice]);
    expect(a?.disclosed.elementsRemoved).toBeGreaterThan(0);
    expect(d).toMatchObject({ decision: 'deny', status: 403 });
    expect(d?.rule).toContain('type-denied');
  });
});
