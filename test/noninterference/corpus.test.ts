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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { judge, mapLimit, report, type RequestSpec, startWorld, type World } from './harness.js';
import { type Caller, callers, HENRY_HISTORY_ID, sPrimeVersions, withheldFor } from './oracle.js';
import { corpus } from './requests.js';

const only = process.env.NI_CALLERS?.split(',').map((s) => s.trim());
const CALLERS = callers().filter((c) => !only || only.includes(c.name));

function byFamily(specs: readonly RequestSpec[]): Map<string, RequestSpec[]> {
  const out = new Map<string, RequestSpec[]>();
  for (const s of specs) out.set(s.family, [...(out.get(s.family) ?? []), s]);
  return out;
}

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

describe('harness sensitivity: an S\' lacking what the caller MAY see is caught', () => {
  // Guards against a vacuous harness (normalisation or paging that hides real differences).
  const cases: Array<{ caller: string; drop: string; requests: string[] }> = [
    {
      caller: 'billing/HPAYMT',
      drop: `Condition/${DEMO.hypertension}`,
      requests: [`/Condition/${DEMO.hypertension}`, '/Condition?_count=1', `/Encounter?_revinclude=${encodeURIComponent('Condition:encounter')}`],
    },
    {
      // Break-glass eligible: the 403 -> 404 and `suppressed` normalisations must not hide a visible resource.
      caller: 'clinician/TREAT',
      drop: 'Observation/obs-alice-weight',
      requests: ['/Observation/obs-alice-weight', '/Observation?_count=2', `/Observation?patient=${DEMO.patients.alice}`],
    },
  ];
  for (const t of cases) {
    it(`${t.caller} without ${t.drop}`, async () => {
      const caller = callers().find((c) => c.name === t.caller)!;
      const world = await startWorld(caller, { sPrime: sPrimeVersions(caller).filter((r) => `${r.resourceType}/${r.id}` !== t.drop) });
      try {
        for (const path of t.requests) {
          const v = await judge(world, { family: 'sensitivity', method: 'GET', path });
          expect(v.selfDiff, path).toBeUndefined();
          expect(v.diff, `${path}: the harness did not see a missing visible resource`).toBeDefined();
        }
      } finally {
        await world.close();
      }
    }, 120_000);
  }
});

for (const caller of CALLERS) {
  describe(`non-interference, corpus: ${caller.name}`, () => {
    let world: World | undefined;
    const selfDiffs: string[] = [];
    let judged = 0;
    beforeAll(async () => {
      world = await startWorld(caller);
    }, 120_000);
    afterAll(async () => {
      await world?.close();
    });

    for (const [family, specs] of byFamily(corpus(caller))) {
      it(`${family} (${specs.length} requests): same answer in S and S'`, async () => {
        // Writes one at a time, so an executed one is attributed to the right request.
        const verdicts = await mapLimit(specs, specs[0]!.write ? 1 : 6, (s) => judge(world!, s));
        judged += verdicts.length;
        for (const v of verdicts) if (v.selfDiff) selfDiffs.push(v.selfDiff);
        const failures = verdicts.flatMap((v) => [v.executed, v.diff].filter((x): x is string => x !== undefined));
        if (failures.length > 0) throw new Error(report(`${caller.name} ${family}`, failures));
      }, 180_000);
    }

    it('self-check: S and an identical S2 agree on every request (no false alarms)', () => {
      expect(judged).toBeGreaterThan(0);
      if (selfDiffs.length > 0) throw new Error(report(`HARNESS FALSE ALARM ${caller.name}`, selfDiffs));
    });
  });
}
