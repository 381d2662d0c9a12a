/**
 * Non-interference under patients' consents (SPEC 3.6): the callers the demo's consents restrict,
 * under the shipped policy's `consent` section: the researcher (Henry's research opt-out), billing
 * (Brian's visit restricted from payment) and the coder (Paula's 42 CFR Part 2 record, which no
 * consent releases to it). S' lacks, beyond what their data sets withhold, what the oracle's own
 * reading of the seeded Consents withholds from each (test/noninterference/oracle.ts
 * consentWithholds, written from the design, not from src/consent), and keeps the Consents
 * themselves. The corpus adds requests aimed at the withheld records (their codes, labels, the
 * encounter they reference, batches of their ids). A file of its own, so it runs beside the others.
 *
 *   npx vitest run test/noninterference/consent.test.ts
 */
import type { Resource } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import type { RequestSpec } from './harness.js';
import {
  type Caller,
  compartmentPatients,
  consentCallers,
  consentsByPatient,
  consentWithholds,
  currentResources,
  keyOf,
  readConsent,
  sPrimeVersions,
  withheldFor,
} from './oracle.js';
import { corpusSuite, generatedSuite, selected, sensitivitySuite } from './suites.js';

const C = DEMO.consents;
const P = DEMO.patients;
const [RESEARCHER, BILLING, CODER] = consentCallers() as [Caller, Caller, Caller];
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const q = encodeURIComponent;

describe('oracle: patients consents (independent of the gateway)', () => {
  it('reads every demo consent, none of them unreadable', () => {
    const all = [...consentsByPatient().values()].flat();
    expect(all.map((c) => c.id).sort()).toEqual([C.researchOptOut.id, C.payerRestriction.id, C.part2.id, C.expired.id].map((id) => `Consent/${id}`).sort());
    for (const c of all) expect(c.unreadable, c.id).toBeUndefined();
    // What the gateway must fail closed on, read the same way here.
    const base = { resourceType: 'Consent', id: 'x', status: 'active', scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] }, patient: { reference: 'Patient/p' } };
    expect(readConsent({ ...base, provision: { dataPeriod: { start: '2020-01-01' } } })?.unreadable).toBeDefined();
    expect(readConsent({ ...base, modifierExtension: [{ url: 'x', valueBoolean: true }] })?.unreadable).toBeDefined();
    expect(readConsent({ ...base, provision: { provision: [{ class: [{ code: 'Observation' }] }] } })?.unreadable).toBeDefined();
    expect(readConsent({ ...base, status: 'inactive', provision: { dataPeriod: {} } })).toBeUndefined();
  });

  it('withholds what each consent says, from the callers it restricts, and nothing else', () => {
    const researcher = withheldFor(RESEARCHER);
    for (const key of [`Patient/${P.henry}`, 'Encounter/enc-henry-1', `Encounter/${DEMO.relationships.recentEncounter}`]) expect(researcher.get(key), key).toBe('consent');
    expect([...researcher].filter(([, why]) => why === 'consent').length).toBeGreaterThan(3);
    expect(researcher.has(`Patient/${P.alice}`)).toBe(false);

    const billing = withheldFor(BILLING);
    const PR = C.payerRestriction;
    for (const key of [`Encounter/${PR.encounter}`, `Condition/${PR.condition}`, `Claim/${PR.claim}`, `Coverage/${PR.coverage}`]) expect(billing.get(key), key).toBe('consent');
    for (const key of [`Encounter/${PR.otherEncounter}`, 'Coverage/cov-brian', `Patient/${P.brian}`, 'Condition/cond-brian-dm2']) expect(billing.has(key), key).toBe(false);
    // The Part 2 record: withheld from billing by the consent (and its data set's label rule).
    expect(billing.get(`Condition/${C.part2.condition}`)).toBe('consent');

    const coder = withheldFor(CODER);
    expect(coder.get(`Condition/${C.part2.condition}`)).toBe('consent');
    for (const key of [`Condition/${DEMO.psyCondition}`, `Patient/${P.paula}`, `Encounter/${PR.encounter}`]) expect(coder.has(key), key).toBe(false);
    // Edith's consent ended in 2023: nothing of hers is withheld for it.
    for (const c of consentCallers()) expect([...withheldFor(c)].filter(([k, why]) => why === 'consent' && k.includes('elder')), c.name).toEqual([]);
    // Without the consent section (the same role, not marked), the consents withhold nothing.
    expect(withheldFor({ ...CODER, name: 'coder/HOPERAT', consent: false }).has(`Condition/${C.part2.condition}`)).toBe(false);
  });

  it("S' keeps the Consents and lacks each consent-withheld record; no contained resource is caught in a released one", () => {
    for (const c of consentCallers()) {
      const kept = new Map(sPrimeVersions(c).map((r) => [keyOf(r), r]));
      for (const id of [C.researchOptOut.id, C.payerRestriction.id, C.part2.id, C.expired.id]) expect(kept.has(`Consent/${id}`), `${c.name} ${id}`).toBe(true);
      const withheld = withheldFor(c);
      for (const [key, why] of withheld) if (why === 'consent') expect(kept.has(key), `${c.name} ${key}`).toBe(false);
      // A released resource holding a resource its patient's consent withholds would answer
      // differently in S and S' for a reason S' cannot express: the demo holds none.
      for (const r of currentResources().values()) {
        if (withheld.has(keyOf(r))) continue;
        for (const x of (r as { contained?: Resource[] }).contained ?? []) {
          const patients = [...new Set([...compartmentPatients(r), ...compartmentPatients(x)])];
          expect(consentWithholds(c, x, patients), `${c.name} ${keyOf(r)}#${x.id}`).toBe(false);
        }
      }
    }
  });
});

sensitivitySuite([
  {
    // The visit the restriction leaves alone: missing from S', the harness must see it.
    caller: BILLING,
    drop: `Encounter/${C.payerRestriction.otherEncounter}`,
    requests: [`/Encounter/${C.payerRestriction.otherEncounter}`, `/Encounter?patient=${P.brian}`, '/Encounter?_count=1'],
  },
  {
    caller: CODER,
    drop: `Condition/${DEMO.psyCondition}`,
    requests: [`/Condition/${DEMO.psyCondition}`, `/Condition?patient=${P.paula}`],
  },
]);

/** Requests aimed at what the demo's consents withhold (real ids: the harness gives the researcher pseudonyms). */
function consentRequests(): RequestSpec[] {
  const PR = C.payerRestriction;
  const out: RequestSpec[] = [];
  const get = (path: string) => out.push({ family: 'consent-targeted', method: 'GET', path });
  for (const path of [
    '/Condition?code=860914002',
    `/Condition?code=${q('http://snomed.info/sct|75544000')}`,
    `/Condition?_security=${q(`${ACT_CODE}|SUD`)}`,
    `/Condition?encounter=Encounter/${PR.encounter}`,
    `/Claim?encounter=Encounter/${PR.encounter}`,
    `/Claim?patient=${P.brian}&_include=${q('Claim:encounter')}`,
    `/Encounter?patient=${P.brian}&_revinclude=${q('Condition:encounter')}&_revinclude=${q('Claim:encounter')}`,
    `/Encounter?_id=${PR.encounter},${PR.otherEncounter}`,
    `/Condition?patient=${P.paula}&_count=1`,
    `/Encounter?patient=${P.paula}&_revinclude=${q('Condition:encounter')}`,
    `/Observation?patient=${P.henry}`,
    `/Condition?subject=Patient/${P.henry}`,
    `/Patient?_id=${P.henry},${P.alice}`,
    `/Condition?patient=${P.henry}&_include=${q('Condition:subject')}`,
    '/Condition?_count=1&_total=accurate',
    '/Encounter?_summary=count',
  ]) {
    get(path);
  }
  const reads = [`Encounter/${PR.encounter}`, `Condition/${PR.condition}`, `Claim/${PR.claim}`, `Condition/${C.part2.condition}`, `Patient/${P.henry}`, 'Encounter/enc-henry-1'];
  out.push({
    family: 'consent-targeted',
    method: 'POST',
    path: '/',
    body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [...reads, `Condition?patient=${P.paula}`, `Claim?patient=${P.brian}`].map((url) => ({ request: { method: 'GET', url } })) }),
    contentType: 'application/fhir+json',
  });
  return out;
}

for (const caller of selected(consentCallers())) {
  corpusSuite(caller, consentRequests());
  generatedSuite(caller);
}
