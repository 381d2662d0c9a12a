/**
 * Non-interference under care relationships (SPEC 3.6): the demo clinician (TREAT) and coder
 * (HOPERAT) as themselves (fhirUser), under the shipped policy's requirements. S' lacks, beyond what
 * their data sets withhold, every record of each patient they are not related to (the oracle decides
 * relatedness from the seeded CareTeam, Encounter, EpisodeOfCare, PractitionerRole and Task
 * resources, not from the gateway), and keeps the resources that relate them. The corpus adds, for
 * these callers, every way a request names a patient (related, unrelated, missing), searches naming
 * none (narrowed), batches and writes. A file of its own, so it runs beside corpus.test.ts.
 *
 *   npx vitest run test/noninterference/relationships.test.ts
 */
import { describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import {
  type Caller,
  currentResources,
  keyOf,
  relatedPatients,
  relationshipCallers,
  relationshipRequirement,
  relationshipsIn,
  sPrimeVersions,
  withheldFor,
} from './oracle.js';
import { corpusSuite, generatedSuite, selected, sensitivitySuite } from './suites.js';

const R = DEMO.relationships;
const [CLINICIAN, CODER] = relationshipCallers() as [Caller, Caller];

describe('oracle: care relationships (independent of the gateway)', () => {
  it('relates the demo clinician and coder from the seeded resources, as DEMO.relationships documents', () => {
    const ids = (keys: readonly string[]) => keys.map((k) => DEMO.patients[k as keyof typeof DEMO.patients]).sort();
    const clinician = relatedPatients(CLINICIAN)!;
    expect([...clinician.keys()].sort()).toEqual(ids(Object.keys(R.clinicianRelated)));
    for (const [k, source] of Object.entries(R.clinicianRelated)) expect(clinician.get(DEMO.patients[k as keyof typeof DEMO.patients])?.source).toBe(source);
    const coder = relatedPatients(CODER)!;
    expect([...coder.keys()].sort()).toEqual(ids(R.coderAssigned));
    // Callers without a fhirUser, and purposes the requirement does not list, are not narrowed.
    expect(relatedPatients({ name: 'clinician/TREAT', role: 'clinician', purpose: 'TREAT' })).toBeUndefined();
    expect(relationshipRequirement({ ...CODER, name: 'coder/HPAYMT+me', purpose: 'HPAYMT' })).toBeUndefined();
    expect(relationshipRequirement({ ...CLINICIAN, name: 'clinician/COC+me', purpose: 'COC' })).toBeDefined();
  });

  it("withholds every record of an unrelated patient, and S' keeps what relates the caller", () => {
    const withheld = withheldFor(CLINICIAN);
    expect(withheld.get(`Patient/${DEMO.patients.brian}`)).toBe('relationship');
    expect(withheld.get('Observation/obs-brian-glucose')).toBe('relationship');
    // David's inactive care team names dr-reyes, but it is David's record.
    expect(withheld.get(`CareTeam/${R.careTeams.davidInactive}`)).toBe('relationship');
    expect(withheld.has(`Condition/${DEMO.hivCondition}`)).toBe(false);
    expect(withheldFor(CODER).get(`Encounter/${R.wardEncounter}`)).toBe('relationship');
    for (const c of [CLINICIAN, CODER]) {
      const kept = new Map(sPrimeVersions(c).map((r) => [keyOf(r), r]));
      const req = relationshipRequirement(c)!;
      // S' relates the caller to exactly the patients S does.
      expect(relationshipsIn(c.fhirUser!, req.sources, [...kept.values()])).toEqual(relationshipsIn(c.fhirUser!, req.sources, [...currentResources().values()]));
      expect(kept.has(`Patient/${DEMO.patients.brian}`)).toBe(false);
      expect(kept.has(`Task/${R.tasks.brianCompleted}`)).toBe(false);
      expect(kept.has(`CareTeam/${R.careTeams.davidInactive}`)).toBe(false);
    }
    // Kept although the caller may not read them: the labelled care team, the coder's tasks.
    expect(withheldFor(CLINICIAN).get(`CareTeam/${R.careTeams.vip}`)).toBe('label');
    expect(sPrimeVersions(CLINICIAN).some((r) => r.id === R.careTeams.vip)).toBe(true);
    expect(withheldFor(CODER).get(`Task/${R.tasks.alice}`)).toBe('type');
    expect(sPrimeVersions(CODER).some((r) => r.id === R.tasks.alice)).toBe(true);
  });
});

sensitivitySuite([
  {
    // Under a requirement (and the relationship-required normalisation) a visible record is still missed.
    caller: CLINICIAN,
    drop: 'Observation/obs-alice-weight',
    requests: ['/Observation/obs-alice-weight', '/Observation?_count=2', `/Observation?patient=${DEMO.patients.alice}`],
  },
  {
    // Without the care team that relates her, Alice is unrelated: the harness must see it.
    caller: CLINICIAN,
    drop: `CareTeam/${R.careTeams.alice}`,
    requests: [`/Patient/${DEMO.patients.alice}`, '/Observation?_count=1', `/Condition?patient=${DEMO.patients.alice}`],
  },
  {
    caller: CODER,
    drop: `Task/${R.tasks.alice}`,
    requests: [`/Patient/${DEMO.patients.alice}`, '/Observation?_count=1', `/Claim?patient=${DEMO.patients.alice}`],
  },
]);

for (const caller of selected(relationshipCallers())) {
  corpusSuite(caller);
  generatedSuite(caller);
}
