/**
 * What the first Safe Harbor view let through, tried as a researcher would on the demo data: ages
 * over 89 beside a capped birth year (Condition.onsetAge 91, an "Age" Observation of 93), real ids
 * answered with pseudonyms that could not be followed, exact instants in Last-Modified and through
 * `_lastUpdated`, and upstream Bundle fields copied verbatim. Each is checked on the bytes the client
 * receives; the round trip runs through a real FHIR client (fhir-kit-client).
 */
import { Client } from 'fhir-kit-client';
import type { Bundle, Condition, Observation, Patient } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { gatewayEtag } from '../../src/proxy/etag.js';
import { pseudonymize } from '../../src/redact/pseudonym.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectError, receive } from './support.js';

let stack: Stack;
let key: Uint8Array;
beforeAll(async () => {
  stack = await startStack();
  key = new TextEncoder().encode(stack.config.pseudonymKey!);
}, 60_000);
afterAll(async () => {
  await stack?.close();
});

const researcher = { role: 'researcher', purpose: 'HRESCH' } as const;
const p = (type: string, id: string) => pseudonymize(key, type, id)!;

/** Every number in the body that sits in an Age-like or age-coded value. */
function agesIn(body: unknown): number[] {
  const out: number[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x);
      return;
    }
    if (v === null || typeof v !== 'object') return;
    const o = v as Record<string, unknown>;
    if (typeof o.value === 'number' && (o.code === 'a' || o.unit === 'years' || o.unit === 'a')) out.push(o.value);
    for (const x of Object.values(o)) walk(x);
  };
  walk(body);
  return out;
}

describe('ages over 89', () => {
  it("the elder's dementia onsetAge 91 and Age observation 93 come back as >= 90", async () => {
    const elder = p('Patient', DEMO.patients.elder);
    const conds = await receive(await stack.get(`/Condition?subject=Patient/${elder}`, researcher));
    const obs = await receive(await stack.get(`/Observation?subject=Patient/${elder}`, researcher));
    expect(conds.status).toBe(200);
    expect(obs.status).toBe(200);
    const c = ((conds.json as Bundle).entry ?? []).map((e) => e.resource as Condition).find((x) => x.id === p('Condition', DEMO.elderAgeCondition));
    const o = ((obs.json as Bundle).entry ?? []).map((e) => e.resource as Observation).find((x) => x.id === p('Observation', DEMO.elderAgeObservation));
    expect(c?.onsetAge).toEqual({ value: 90, comparator: '>=', unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' });
    expect(o?.valueQuantity).toEqual({ value: 90, comparator: '>=', unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' });
    for (const r of [conds, obs]) {
      expect(agesIn(r.json).every((a) => a <= 90)).toBe(true);
      expect(r.text).not.toMatch(/"value":\s*9[1-9]\b/);
    }
    const patient = await receive(await stack.get(`/Patient/${elder}`, researcher));
    expect((patient.json as Patient).birthDate).toBe(String(new Date().getUTCFullYear() - 90));
  });
});

describe('the round trip a researcher makes (fhir-kit-client)', () => {
  it('searches Observations, follows subject to Patient/<pseudonym> and reads it; the real id is refused', async () => {
    const client = new Client({ baseUrl: stack.url, bearerToken: await stack.token('researcher'), customHeaders: { 'X-Purpose-Of-Use': 'HRESCH' } });
    const bundle = (await client.search({ resourceType: 'Observation', searchParams: { code: 'http://loinc.org|85354-9' } })) as unknown as Bundle;
    const obs = (bundle.entry ?? []).map((e) => e.resource as Observation);
    expect(obs.length).toBeGreaterThan(0);
    const ref = obs[0]!.subject!.reference!;
    expect(ref).toMatch(/^Patient\/[A-Za-z0-9.-]{61}$/);
    const pseudonym = ref.slice('Patient/'.length);
    const patient = (await client.read({ resourceType: 'Patient', id: pseudonym })) as Patient;
    expect(patient.id).toBe(pseudonym);
    // ... and it is the same person the pseudonym was made from, by the gateway's own key only.
    expect(Object.values(DEMO.patients).map((id) => p('Patient', id))).toContain(pseudonym);
    // The same search by that pseudonym answers the same Observations.
    const again = (await client.search({ resourceType: 'Observation', searchParams: { code: 'http://loinc.org|85354-9', subject: ref } })) as unknown as Bundle;
    expect((again.entry ?? []).every((e) => (e.resource as Observation).subject?.reference === ref)).toBe(true);
    const realId = Object.values(DEMO.patients).find((id) => p('Patient', id) === pseudonym)!;
    await expect(client.read({ resourceType: 'Patient', id: realId })).rejects.toMatchObject({ response: { status: 403 } });
  });

  it('GET Patient/<real id> is refused whether or not that id exists (no pseudonym in the answer)', async () => {
    const real = await receive(await stack.get(`/Patient/${DEMO.patients.alice}`, researcher));
    const none = await receive(await stack.get('/Patient/pat-nobody-at-all', researcher));
    expectError(real, 403, 'pseudonym-required');
    expectError(none, 403, 'pseudonym-required');
    expect(real.text.replace(real.requestId, '')).toBe(none.text.replace(none.requestId, ''));
    expect(real.text).not.toContain(p('Patient', DEMO.patients.alice));
  });
});

describe('no instants, versions or upstream ids outside the resources', () => {
  it('no Last-Modified, ETag or real id in any header; no Bundle meta, identifier, timestamp or id from the upstream', async () => {
    for (const path of [`/Patient/${p('Patient', DEMO.patients.alice)}`, '/Patient?_count=3', `/Observation?subject=Patient/${p('Patient', DEMO.patients.alice)}`]) {
      const r = await receive(await stack.get(path, researcher));
      expect(r.status, path).toBe(200);
      expect(r.headers.get('last-modified'), path).toBeNull();
      // The gateway's hash of the bytes released, never the upstream's version.
      expect(r.headers.get('etag'), path).toBe(gatewayEtag(Buffer.from(r.text)));
      const headers = [...r.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n');
      for (const id of Object.values(DEMO.patients)) expect(headers).not.toContain(id);
      const b = r.json as Bundle;
      if (b.resourceType === 'Bundle') {
        expect(b.meta).toBeUndefined();
        expect(b.identifier).toBeUndefined();
        expect(b.timestamp).toBeUndefined();
        expect(b.id).toBeUndefined();
      }
      // No instant anywhere: meta.lastUpdated is gone from every resource too.
      expect(r.text).not.toMatch(/\d{4}-\d{2}-\d{2}T/);
      expect(r.text).not.toMatch(/"\d{4}-\d{2}(-\d{2})?"/);
    }
  });

  it.each([
    ['_lastUpdated would bisect the hidden instant', '/Patient?_lastUpdated=gt2024-01-01'],
    ['_sort=_lastUpdated orders by it', '/Patient?_sort=-_lastUpdated'],
    ['_sort=_id orders by the real ids', '/Patient?_sort=_id'],
    ['birthdate searches the full date', '/Patient?birthdate=1930'],
    ['an Observation date', '/Observation?date=ge2024-01-01'],
    ['a postal code beyond 3 digits', '/Patient?address-postalcode=02115'],
  ])('%s: refused', async (_n, path) => {
    expectError(await receive(await stack.get(path, researcher)), 403, 'search-param-denied');
  });
});

describe('found by a red-team session with the researcher token', () => {
  it(':missing on a reference told which records held references the profile removed (to contained resources)', async () => {
    for (const q of ['specimen:missing=true', 'specimen:missing=false', 'performer:missing=true']) {
      expectError(await receive(await stack.get(`/Observation?${q}`, researcher)), 403, 'search-param-denied');
    }
  });

  it('an include along Patient.link, which the researcher does not see, is refused', async () => {
    expectError(await receive(await stack.get('/Patient?_include=Patient:link', researcher)), 403, 'type-denied');
    expectError(await receive(await stack.get('/Patient?_revinclude=Patient:link', researcher)), 403, 'type-denied');
  });

  it('every pseudonym has the same length, whatever the length of the real id', async () => {
    const ids = ((await receive(await stack.get('/Observation?_count=50', researcher))).json as Bundle).entry!.map((e) => e.resource!.id!);
    expect(new Set(ids.map((id) => id.length))).toEqual(new Set([61]));
  });
});

describe('limited-data-set: dates, ages, city and ZIP stay; direct identifiers go', () => {
  let lds: Stack;
  beforeAll(async () => {
    lds = await startStack({
      policy: (pol) => {
        (pol.dataSets.research as Record<string, unknown>).deidentify = 'limited-data-set';
      },
    });
  }, 60_000);
  afterAll(async () => {
    await lds?.close();
  });

  it('reads by pseudonym a patient with full birth date and city but no name, phone, SSN, MRN or street', async () => {
    const k = new TextEncoder().encode(lds.config.pseudonymKey!);
    const id = pseudonymize(k, 'Patient', DEMO.patients.alice)!;
    const r = await receive(await lds.get(`/Patient/${id}`, researcher));
    expect(r.status).toBe(200);
    const pt = r.json as Patient;
    expect(pt.id).toBe(id);
    expect(pt.birthDate).toBe(DEMO.birthDates.alice);
    expect(pt.address?.[0]?.city).toBeDefined();
    expect(pt.address?.[0]?.line).toBeUndefined();
    for (const v of [DEMO.names.alice, DEMO.ssn.alice, DEMO.mrn.alice, DEMO.phones.alice, DEMO.addresses.aliceLine, DEMO.patients.alice]) expect(r.text).not.toContain(v);
    // Dates may be searched here; the real id still may not.
    expect((await receive(await lds.get(`/Patient?birthdate=${DEMO.birthDates.alice}`, researcher))).status).toBe(200);
    expectError(await receive(await lds.get(`/Patient/${DEMO.patients.alice}`, researcher)), 403, 'pseudonym-required');
  });
});
