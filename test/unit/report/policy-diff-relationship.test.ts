// `policy diff` with care relationships: a trail recorded under `required: false` replayed against
// the same requirement switched on, exact counts per line; records without a lookup counted apart;
// a requirement dropped lets through what it refused.
import { describe, expect, it } from 'vitest';
import { PolicyDiff } from '../../../src/report/policy-diff.js';
import { evidence, fhirRecord, RECORDED, REQUIRED, relationshipPolicy } from '../monitor/relationship-fixtures.js';

const none = relationshipPolicy(undefined);
const recorded = relationshipPolicy(RECORDED);
const required = relationshipPolicy(REQUIRED);
const ct = (patient: string) => ({ patient, resource: `CareTeam/ct-${patient}`, source: 'care-team' });

describe('policy diff: care relationships', () => {
  it('switching a recorded requirement on: refused and narrowed requests counted exactly, related ones unchanged', () => {
    const diff = new PolicyDiff(recorded, required);
    // Three reads of unrelated patients (two by the clinician, one by front desk), two of related ones.
    diff.add(fhirRecord('/Patient/pat-9', { released: ['pat-9'], relationship: evidence({ unrelated: ['pat-9'] }) }));
    diff.add(fhirRecord('/Patient/pat-8', { released: ['pat-8'], relationship: evidence({ unrelated: ['pat-8'] }) }));
    diff.add(fhirRecord('/Patient/pat-8', { role: 'front-desk', released: ['pat-8'], relationship: evidence({ unrelated: ['pat-8'] }) }));
    diff.add(fhirRecord('/Patient/pat-1', { released: ['pat-1'], relationship: evidence({ related: [ct('pat-1')] }) }));
    diff.add(fhirRecord('/Patient/pat-1', { released: ['pat-1'], relationship: evidence({ related: [ct('pat-1')] }) }));
    // A search naming no patient that released one unrelated patient among related ones.
    diff.add(fhirRecord('/Observation?code=8867-4', { released: ['pat-1', 'pat-9'], relationship: evidence({ related: [ct('pat-1')], unrelated: ['pat-9'] }) }));
    expect(diff.result()).toEqual([
      { role: 'clinician', purpose: 'TREAT', change: 'would be narrowed: no relationship', what: 'search-type Observation (dataSets.clinical.relationship)', requests: 1 },
      { role: 'clinician', purpose: 'TREAT', change: 'would be refused: no relationship', what: 'read Patient (dataSets.clinical.relationship)', requests: 2 },
      { role: 'front-desk', purpose: 'TREAT', change: 'would be refused: no relationship', what: 'read Patient (dataSets.clinical.relationship)', requests: 1 },
    ]);
    expect([diff.replayed, diff.changed, diff.notLookedUp, diff.skipped]).toEqual([6, 4, 0, 0]);
  });

  it('records without a lookup are "not looked up (cannot replay)", apart from the changes', () => {
    const diff = new PolicyDiff(none, required);
    diff.add(fhirRecord('/Patient/pat-1', { released: ['pat-1'] }));
    diff.add(fhirRecord('/Patient/pat-2', { released: ['pat-2'] }));
    diff.add(fhirRecord('/Observation?patient=pat-1', { released: ['pat-1'] }));
    // Break-glass is never replayed.
    diff.add(fhirRecord('/Patient/pat-3', { purpose: 'BTG', released: ['pat-3'], breakGlass: { session: 's1', reason: 'r' } }));
    expect(diff.result()).toEqual([
      { role: 'clinician', purpose: 'TREAT', change: 'not looked up (cannot replay)', what: 'read Patient (dataSets.clinical.relationship)', requests: 2 },
      { role: 'clinician', purpose: 'TREAT', change: 'not looked up (cannot replay)', what: 'search-type Observation (dataSets.clinical.relationship)', requests: 1 },
    ]);
    expect([diff.replayed, diff.changed, diff.notLookedUp, diff.skipped]).toEqual([3, 0, 3, 1]);
    expect(diff.tables()[0]!.note).toBe(
      '3 requests replayed, 0 would fare differently, 3 not looked up (the candidate requires a care relationship the record holds no lookup for: put it in force with required: false first), 1 not replayable (writes, POST bodies, break-glass, unauthenticated).',
    );
  });

  it('dropping a requirement that refused: would be allowed (and narrowed searches widened)', () => {
    const diff = new PolicyDiff(required, none);
    diff.add(fhirRecord('/Patient/pat-9', { decision: 'deny', status: 404, relationship: evidence({ required: true, unrelated: ['pat-9'] }) }));
    diff.add(fhirRecord('/Patient/pat-9', { decision: 'deny', status: 403, relationship: evidence({ required: true, unrelated: ['pat-9'] }) }));
    diff.add(fhirRecord('/Observation?code=8867-4', { released: ['pat-1'], relationship: evidence({ required: true, narrowed: 1, related: [ct('pat-1')] }) }));
    diff.add(fhirRecord('/Patient/pat-1', { released: ['pat-1'], relationship: evidence({ required: true, related: [ct('pat-1')] }) }));
    const broad = fhirRecord('/Encounter?status=finished', { decision: 'deny', status: 400, relationship: evidence({ required: true }) });
    diff.add({ ...broad, rule: 'roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0] -> dataSets.clinical.relationship: search too broad: relationship-search-too-broad' });
    expect(diff.result()).toEqual([
      { role: 'clinician', purpose: 'TREAT', change: 'would be allowed', what: 'read Patient (was: no relationship)', requests: 2 },
      { role: 'clinician', purpose: 'TREAT', change: 'would be allowed', what: 'search-type Encounter (was: search too broad)', requests: 1 },
      { role: 'clinician', purpose: 'TREAT', change: 'would be allowed', what: 'search-type Observation (was: narrowed to related patients)', requests: 1 },
    ]);
    expect([diff.replayed, diff.changed, diff.notLookedUp]).toEqual([5, 4, 0]);
  });

  it('the running policy against itself: nothing, refusals and missing evidence included', () => {
    const diff = new PolicyDiff(required, required);
    diff.add(fhirRecord('/Patient/pat-9', { decision: 'deny', status: 403, relationship: evidence({ required: true, unrelated: ['pat-9'] }) }));
    diff.add(fhirRecord('/Patient/pat-1', { released: ['pat-1'] }));
    diff.add(fhirRecord('/Observation?code=1', { released: ['pat-1'], relationship: evidence({ required: true, narrowed: 1, related: [ct('pat-1')] }) }));
    expect(diff.result()).toEqual([]);
    expect([diff.replayed, diff.changed, diff.notLookedUp]).toEqual([3, 0, 0]);
  });
});
