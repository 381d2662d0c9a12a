/**
 * Non-interference, fixed corpus (SPEC 3.6): for each caller, every request of requests.corpus()
 * must get the same answer from a gateway over S (the seed) and over S' (the seed without what the
 * caller may not see). Each request family is one test; a failure lists the request, the caller
 * and the first differing path. The last test per caller is the harness self-check: S against an
 * identical S2 over the same requests must agree (else the normalisation is raising false alarms).
 *
 *   npx vitest run test/noninterference
 *   NI_CALLERS=billing/HPAYMT npx vitest run test/noninterference/corpus.test.ts   # one caller
 */
import { describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Caller, callers, HENRY_HISTORY_ID, sPrimeVersions, withheldFor } from './oracle.js';
import { corpusSuite, selected, sensitivitySuite } from './suites.js';

describe('oracle (independent of the gateway)', () => {
  const find = (name: string): Caller => callers().find((c) => c.name === name)!;
  it('withholds by type, by label and by compartment as config/policy.yaml says', () => {
    const billing = withheldFor(find('billing/HPAYMT'));
    expect(billing.get('Observation/obs-alice-bp')).toBe('type');
    expect(billing.get(`Condition/${DEMO.hivCondition}`)).toBe('label');
    expect(billing.get(`Claim/${DEMO.psyClaim}`)).toBe('label');
    expect(billing.has(`Condition/${DEMO.hypertension}`)).toBe(false);
    const clinician = withheldFor(find('clinician/TREAT'));
    expect(clinician.get(`Patient/${DEMO.patients.vip}`)).toBe('label');
    expect(clinician.has(`Condition/${DEMO.hivCondition}`)).toBe(false);
    expect(clinician.get('Claim/claim-alice-1')).toBe('type');
    const alice = withheldFor(find(`clinician/TREAT+patient=${DEMO.patients.alice}`));
    expect(alice.get(`Patient/${DEMO.patients.brian}`)).toBe('compartment');
    expect(alice.get('Observation/obs-brian-glucose')).toBe('compartment');
    expect(alice.has(`Patient/${DEMO.patients.alice}`)).toBe(false);
    expect(alice.has('Practitioner/prac-reyes')).toBe(false);
    expect(alice.has('Appointment/appt-alice-1')).toBe(false);
  });
  it('drops every version of the relabelled history for every data set withholding HIV or R', () => {
    for (const c of callers()) {
      const kept = sPrimeVersions(c).filter((r) => r.id === HENRY_HISTORY_ID);
      expect(kept, c.name).toHaveLength(0);
    }
  });
});

const byName = (name: string): Caller => callers().find((c) => c.name === name)!;

sensitivitySuite([
  {
    caller: byName('billing/HPAYMT'),
    drop: `Condition/${DEMO.hypertension}`,
    requests: [`/Condition/${DEMO.hypertension}`, '/Condition?_count=1', `/Encounter?_revinclude=${encodeURIComponent('Condition:encounter')}`],
  },
  {
    // Break-glass eligible: the 403 -> 404 and `suppressed` normalisations must not hide a visible resource.
    caller: byName('clinician/TREAT'),
    drop: 'Observation/obs-alice-weight',
    requests: ['/Observation/obs-alice-weight', '/Observation?_count=2', `/Observation?patient=${DEMO.patients.alice}`],
  },
]);

for (const caller of selected(callers())) corpusSuite(caller);
