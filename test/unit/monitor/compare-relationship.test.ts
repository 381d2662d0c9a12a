// Care relationships under a candidate policy, judged from a record's relationship evidence (never
// looked up again): refused, narrowed, let through, or not replayable for want of a lookup.
import { describe, expect, it } from 'vitest';
import type { RelationshipEvidence } from '../../../src/audit/record.js';
import { compareRequest, verdict } from '../../../src/monitor/compare.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import { principal, request } from '../breakglass/helpers.js';
import { evidence, RECORDED, REQUIRED, relationshipPolicy } from './relationship-fixtures.js';

const none = relationshipPolicy(undefined);
const recorded = relationshipPolicy(RECORDED);
const required = relationshipPolicy(REQUIRED);

function compare(current: CompiledPolicy, candidate: CompiledPolicy, url: string, ev: RelationshipEvidence | undefined, released: string[] = [], role = 'clinician', rule = 'r') {
  const req = request(url);
  const input = { principal: principal('dr-a', [role]), purpose: 'TREAT', request: req, types: [req.resourceType!] };
  return compareRequest(current, verdict(current, input), verdict(candidate, input), { request: req, evidence: ev, released, rule });
}

const careTeam = (patient: string) => ({ patient, resource: `CareTeam/ct-${patient}`, source: 'care-team' });
const encounter = (patient: string) => ({ patient, resource: `Encounter/e-${patient}`, source: 'encounter' });

describe('care relationships, replayed from the evidence', () => {
  it('recorded only, then required: a read of an unrelated patient would be refused', () => {
    const ev = evidence({ unrelated: ['pat-9'] });
    expect(compare(recorded, required, '/Patient/pat-9', ev, ['pat-9'])).toEqual([{ kind: 'relationship-refused', narrowed: false, rule: 'dataSets.clinical.relationship' }]);
  });

  it('a related patient fares the same; the same policy changes nothing', () => {
    const ev = evidence({ related: [careTeam('pat-1')] });
    expect(compare(recorded, required, '/Patient/pat-1', ev, ['pat-1'])).toEqual([]);
    expect(compare(required, required, '/Patient/pat-9', evidence({ required: true, unrelated: ['pat-9'] }))).toEqual([]);
    expect(compare(recorded, recorded, '/Patient/pat-9', evidence({ unrelated: ['pat-9'] }), ['pat-9'])).toEqual([]);
  });

  it('a search naming no patient that released an unrelated one would be narrowed, not refused', () => {
    const ev = evidence({ related: [careTeam('pat-1')], unrelated: ['pat-9'] });
    expect(compare(recorded, required, '/Observation?code=8867-4', ev, ['pat-1', 'pat-9'])).toEqual([{ kind: 'relationship-refused', narrowed: true, rule: 'dataSets.clinical.relationship' }]);
    // Naming the unrelated patient, the same search is refused.
    expect(compare(recorded, required, '/Observation?patient=pat-9', evidence({ unrelated: ['pat-9'] }), ['pat-9'])).toMatchObject([{ kind: 'relationship-refused', narrowed: false }]);
  });

  it('no evidence under a candidate that requires one: not looked up, whatever the decision', () => {
    expect(compare(none, required, '/Patient/pat-1', undefined, ['pat-1'])).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
    // Recorded-only as the candidate refuses nothing: no lookup needed.
    expect(compare(none, recorded, '/Patient/pat-1', undefined, ['pat-1'])).toEqual([]);
    // A record of the running policy without evidence (written before lookups) and the same requirement: no change.
    expect(compare(required, required, '/Patient/pat-1', undefined, ['pat-1'])).toEqual([]);
  });

  it('a requirement dropped: what it refused would be allowed, what it narrowed would not be narrowed', () => {
    const refused = evidence({ required: true, unrelated: ['pat-9'] });
    expect(compare(required, none, '/Patient/pat-9', refused)).toEqual([{ kind: 'relationship-allowed', was: 'refused', now: expect.stringContaining('roles.clinician.purposes.TREAT') }]);
    expect(compare(required, recorded, '/Patient/pat-9', refused)).toMatchObject([{ kind: 'relationship-allowed', was: 'refused' }]);
    const narrowed = evidence({ required: true, narrowed: 2, related: [careTeam('pat-1'), careTeam('pat-2')] });
    expect(compare(required, none, '/Observation?code=8867-4', narrowed, ['pat-1'])).toMatchObject([{ kind: 'relationship-allowed', was: 'narrowed' }]);
    expect(compare(required, required, '/Observation?code=8867-4', narrowed, ['pat-1'])).toEqual([]);
  });

  it('a candidate counting a source the lookup did not read cannot be replayed for unrelated patients', () => {
    const current = relationshipPolicy('{ required: true, sources: [care-team] }');
    const refused = evidence({ required: true, unrelated: ['pat-9'] });
    expect(compare(current, required, '/Patient/pat-9', refused)).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
    // A patient related through a source both count is still related.
    expect(compare(current, required, '/Patient/pat-1', evidence({ required: true, related: [careTeam('pat-1')] }), ['pat-1'])).toEqual([]);
  });

  it('a source redefined (encounter days) does not carry its recorded answer over', () => {
    const shorter = relationshipPolicy(REQUIRED, '{ care-team: { kind: CareTeam }, encounter: { kind: Encounter, days: 7 } }');
    const ev = evidence({ related: [encounter('pat-3')] });
    expect(compare(recorded, shorter, '/Patient/pat-3', ev, ['pat-3'])).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
    expect(compare(recorded, required, '/Patient/pat-3', ev, ['pat-3'])).toEqual([]);
  });

  it('a candidate dropping a source: a patient recorded through it cannot be judged (the record names the first relationship found only)', () => {
    const careTeamOnly = relationshipPolicy('{ required: true, sources: [care-team] }');
    const search = '/Observation?code=1';
    expect(compare(recorded, careTeamOnly, '/Patient/pat-3', evidence({ related: [encounter('pat-3')] }), ['pat-3'])).toEqual([
      { kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' },
    ]);
    expect(compare(recorded, careTeamOnly, '/Patient/pat-1', evidence({ related: [careTeam('pat-1')] }), ['pat-1'])).toEqual([]);
    // Unrelated through every source read, so through the one kept too.
    expect(compare(recorded, careTeamOnly, '/Patient/pat-9', evidence({ unrelated: ['pat-9'] }), ['pat-9'])).toMatchObject([{ kind: 'relationship-refused', narrowed: false }]);
    // In one search: the proven unrelated patient decides, whatever is unknown of the others.
    const mixed = evidence({ related: [encounter('pat-3'), careTeam('pat-1')], unrelated: ['pat-9'] });
    expect(compare(recorded, careTeamOnly, search, mixed, ['pat-1', 'pat-3', 'pat-9'])).toMatchObject([{ kind: 'relationship-refused', narrowed: true }]);
  });

  it('refusals the rule tells of: a withheld resource, an empty search, a search too broad', () => {
    const noOne = evidence({ required: true });
    const withheld = (to: CompiledPolicy) => compare(required, to, '/Observation/o-1', noOne, [], 'front-desk', 'g -> dataSets.clinical.rules[0]: withheld (relationship)');
    // Dropped: would be allowed. The same: no change. Other sources: the withheld patient is not in the record.
    expect(withheld(none)).toMatchObject([{ kind: 'relationship-allowed', was: 'refused' }]);
    expect(withheld(required)).toEqual([]);
    expect(withheld(relationshipPolicy('{ required: true, sources: [care-team] }'))).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
    // A search naming no patient by a caller related to none: an empty searchset, refused.
    expect(compare(required, none, '/Observation?code=1', noOne, [], 'clinician', 'g -> dataSets.clinical.relationship: no relationship')).toMatchObject([{ kind: 'relationship-allowed', was: 'refused' }]);
    const tooBroad = (to: CompiledPolicy) => compare(required, to, '/Observation?code=1', noOne, [], 'clinician', 'g -> dataSets.clinical.relationship: search too broad: relationship-search-too-broad');
    expect(tooBroad(none)).toMatchObject([{ kind: 'relationship-allowed', was: 'too-broad' }]);
    expect(tooBroad(recorded)).toMatchObject([{ kind: 'relationship-allowed', was: 'too-broad' }]);
    expect(tooBroad(required)).toEqual([]);
    expect(tooBroad(relationshipPolicy('{ required: true, sources: [care-team] }'))).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
    // The rule of a policy that did not enforce (an older version) is not the running policy's refusal.
    expect(compare(recorded, none, '/Observation/o-1', evidence(), [], 'clinician', 'g: withheld (relationship)')).toEqual([]);
  });

  it('a released patient the evidence does not list (more than it holds) cannot be judged', () => {
    const ev = evidence({ related: [careTeam('pat-1')] });
    expect(compare(recorded, required, '/Observation?code=x', ev, ['pat-1', 'pat-77'])).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
  });

  it('refused by both (for a relationship, or by type): no change; granted only by the candidate: not looked up', () => {
    const noPatient = relationshipPolicy(REQUIRED, undefined, 'Observation, Encounter');
    const refused = evidence({ required: true, unrelated: ['pat-9'] });
    expect(compare(required, noPatient, '/Patient/pat-9', refused)).toEqual([]);
    // The running policy denies Patient (no lookup was made); the candidate grants it under a requirement.
    expect(compare(noPatient, required, '/Patient/pat-1', undefined)).toEqual([{ kind: 'relationship-unknown', rule: 'dataSets.clinical.relationship' }]);
    // ... and without one, it is newly allowed.
    expect(compare(noPatient, none, '/Patient/pat-1', undefined)).toMatchObject([{ kind: 'newly-allowed', was: 'type-denied' }]);
    // Allowed with a relationship, denied by type under the candidate: newly denied.
    expect(compare(required, noPatient, '/Patient/pat-1', evidence({ required: true, related: [careTeam('pat-1')] }), ['pat-1'])).toMatchObject([{ kind: 'newly-denied', now: 'type-denied' }]);
  });
});
