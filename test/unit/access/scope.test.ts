// What a grant in use does to the plan and to the answer (src/access/scope.ts), checked against the
// shipped policy's requestable data sets and through the real response filter.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dateRange, elevatePlan, grantScopeOf, grantedTypes, validPeriod } from '../../../src/access/scope.js';
import { loadPolicy } from '../../../src/config/policy-file.js';
import { filterResponse } from '../../../src/redact/response.js';
import { resourcePlan, responseCtx } from '../redact/helpers.js';

const policy = loadPolicy(new URL('../../../config/policy.yaml', import.meta.url).pathname).policy;
const claim = policy.accessRequests!.dataSets.get('claim-attachment')!;
const chart = policy.accessRequests!.dataSets.get('compliance-chart')!;
const billing = policy.roles.get('billing')!.plans.get('HPAYMT')!;

describe('elevatePlan', () => {
  it('adds exactly the granted types, from the requestable data set, and keeps the rest of the plan', () => {
    expect(billing.types.has('DocumentReference')).toBe(false);
    const up = elevatePlan(billing, claim, { patients: ['p1'], types: ['DocumentReference'] }, 'g1');
    expect(up.types.get('DocumentReference')).toBe(claim.types.get('DocumentReference'));
    expect(up.types.has('DiagnosticReport')).toBe(false);
    for (const [t, p] of billing.types) expect(up.types.get(t), t).toBe(p);
    expect(up.types.size).toBe(billing.types.size + 1);
    expect(up.role).toBe('billing');
    expect(up.purpose).toBe('HPAYMT');
    expect(up.grantedBy).toContain('grant g1');
    // The base plan is not changed for anyone else.
    expect(billing.types.has('DocumentReference')).toBe(false);
  });

  it('grants every type of the data set when the grant names none, and reads only', () => {
    const up = elevatePlan(billing, claim, { patients: ['p1'] }, 'g1');
    expect(grantedTypes(claim, { patients: ['p1'] })).toEqual([...claim.types.keys()]);
    for (const t of claim.types.keys()) {
      const i = up.types.get(t)!.interactions;
      expect([...i].every((x) => x === 'read' || x === 'search' || x === 'history'), t).toBe(true);
    }
  });

  it('drops the relationship requirement: the approved patients replace it', () => {
    const coder = policy.roles.get('coder')!.plans.get('HOPERAT')!;
    const withRel = { ...coder, relationship: { required: true, sources: ['work-queue'], rule: 'x' } };
    expect(elevatePlan(withRel, chart, { patients: ['p'] }, 'g').relationship).toBeUndefined();
  });
});

describe('dates and periods', () => {
  it('reads dates, dateTimes and instants as the range they name, a date as its day in the time zone', () => {
    expect(dateRange('2024-03-05')).toEqual([Date.UTC(2024, 2, 5), Date.UTC(2024, 2, 6) - 1]);
    expect(dateRange('2024-03-05T10:00:00Z')).toEqual([Date.UTC(2024, 2, 5, 10), Date.UTC(2024, 2, 5, 10)]);
    expect(dateRange('2024-03-05T10:00:00+02:00')).toEqual([Date.UTC(2024, 2, 5, 8), Date.UTC(2024, 2, 5, 8)]);
    expect(dateRange('2024')?.[1]).toBe(Date.UTC(2025, 0, 1) - 1);
    // New York: EST (UTC-5) in February, EDT (UTC-4) in July; a wall-clock time without an offset is local.
    expect(dateRange('2024-02-11', 'America/New_York')).toEqual([Date.UTC(2024, 1, 11, 5), Date.UTC(2024, 1, 12, 5) - 1]);
    expect(dateRange('2024-07-04', 'America/New_York')).toEqual([Date.UTC(2024, 6, 4, 4), Date.UTC(2024, 6, 5, 4) - 1]);
    expect(dateRange('2024-02-11T09:30:00', 'America/New_York')).toEqual([Date.UTC(2024, 1, 11, 14, 30), Date.UTC(2024, 1, 11, 14, 30)]);
    for (const bad of ['', 'yesterday', '2024-3-5', 5, null, '2024-03-05Tnope', '2024-13-01', '2024-02-11T25:00:00Z']) expect(dateRange(bad), String(bad)).toBeUndefined();
  });

  it('a period of dates covers exactly those days in the hospital time zone (no widening by other zones)', () => {
    const s = grantScopeOf(chart, { patients: ['p1'], period: { start: '2024-02-11', end: '2024-02-28' } }, 'America/New_York')!;
    const obs = (effectiveDateTime: string) => ({ resourceType: 'Observation', id: 'o', status: 'final', subject: { reference: 'Patient/p1' }, effectiveDateTime });
    // 09:00 in New York on Feb 10: the day before the period, whatever UTC says.
    expect(s.outOfScope(obs('2024-02-10T14:00:00Z'))).toBe(true);
    expect(s.outOfScope(obs('2024-02-11T04:59:59Z'))).toBe(true);
    expect(s.outOfScope(obs('2024-02-11T05:00:00Z'))).toBe(false);
    expect(s.outOfScope(obs('2024-02-11T07:45:00Z'))).toBe(false);
    expect(s.outOfScope(obs('2024-02-11'))).toBe(false);
    expect(s.outOfScope(obs('2024-02-10'))).toBe(true);
    expect(s.outOfScope(obs('2024-02-28T23:59:00-05:00'))).toBe(false);
    expect(s.outOfScope(obs('2024-02-29T04:59:59Z'))).toBe(false);
    expect(s.outOfScope(obs('2024-02-29T05:00:00Z'))).toBe(true);
  });

  it('validates periods', () => {
    expect(validPeriod(undefined)).toBe(true);
    expect(validPeriod({ start: '2024-01-01', end: '2024-01-31' })).toBe(true);
    expect(validPeriod({ start: '2024-01-01' })).toBe(true);
    expect(validPeriod({})).toBe(false);
    expect(validPeriod({ start: '2024-02-01', end: '2024-01-01' })).toBe(false);
    expect(validPeriod({ start: 'soon' })).toBe(false);
  });
});

describe('grantScopeOf', () => {
  const doc = (date: string | undefined, encounter?: string) => ({
    resourceType: 'DocumentReference',
    id: 'd',
    status: 'current',
    subject: { reference: 'Patient/p1' },
    ...(date === undefined ? {} : { date }),
    ...(encounter === undefined ? {} : { context: { encounter: [{ reference: `Encounter/${encounter}` }] } }),
  });

  it('is undefined when the grant names no period and no encounter', () => {
    expect(grantScopeOf(claim, { patients: ['p1'] })).toBeUndefined();
  });

  it('limits dated types to the period, fail closed on records without a date', () => {
    const s = grantScopeOf(claim, { patients: ['p1'], period: { start: '2024-01-01', end: '2024-01-31' } })!;
    expect(s.outOfScope(doc('2024-01-15T09:00:00Z'))).toBe(false);
    expect(s.outOfScope(doc('2024-01-31'))).toBe(false);
    expect(s.outOfScope(doc('2024-02-02T00:00:00Z'))).toBe(true);
    expect(s.outOfScope(doc('2023-12-30'))).toBe(true);
    expect(s.outOfScope(doc(undefined))).toBe(true);
    // A year can mean days outside the period: out.
    expect(s.outOfScope(doc('2024'))).toBe(true);
  });

  it('generated: a dateTime is in scope exactly when it lies within the period', () => {
    const s = grantScopeOf(claim, { patients: ['p1'], period: { start: '2024-01-01', end: '2024-12-31' } })!;
    const from = Date.UTC(2024, 0, 1);
    const to = Date.UTC(2025, 0, 1) - 1;
    fc.assert(
      fc.property(fc.integer({ min: Date.UTC(2022, 0, 1), max: Date.UTC(2026, 0, 1) }), (t) => {
        const at = new Date(t).toISOString();
        expect(s.outOfScope(doc(at))).toBe(t < from || t > to);
      }),
      { numRuns: 300 },
    );
  });

  it('limits types that name an encounter to the granted encounters; an Encounter by its id', () => {
    const s = grantScopeOf(chart, { patients: ['p1'], encounters: ['e1'] })!;
    expect(s.outOfScope(doc('2024-01-01', 'e1'))).toBe(false);
    expect(s.outOfScope(doc('2024-01-01', 'e2'))).toBe(true);
    expect(s.outOfScope(doc('2024-01-01'))).toBe(true);
    expect(s.outOfScope({ resourceType: 'Encounter', id: 'e1' })).toBe(false);
    expect(s.outOfScope({ resourceType: 'Encounter', id: 'e2' })).toBe(true);
    expect(s.outOfScope({ resourceType: 'Condition', id: 'c', encounter: { reference: 'Encounter/e2' } })).toBe(true);
    // A Patient names no encounter: not limited by one.
    expect(s.outOfScope({ resourceType: 'Patient', id: 'p1' })).toBe(false);
  });

  it('in the response filter: out-of-scope resources of granted types vanish and are counted; other types are untouched', () => {
    const scope = grantScopeOf(claim, { patients: ['p1'], types: ['DocumentReference'], period: { start: '2024-01-01', end: '2024-01-31' } })!;
    const ctx = responseCtx({ DocumentReference: resourcePlan('DocumentReference'), Claim: resourcePlan('Claim') }, { grantScope: scope });
    const inside = { ...doc('2024-01-10T00:00:00Z'), id: 'in' };
    const outside = { ...doc('2023-06-01T00:00:00Z'), id: 'secret-out-of-period' };
    const claimRes = { resourceType: 'Claim', id: 'c1', created: '2020-01-01', patient: { reference: 'Patient/p1' } };
    const bundle = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [inside, outside, claimRes].map((resource) => ({ resource, search: { mode: 'match' } })),
    };
    const r = filterResponse(bundle, ctx);
    expect(r.kind).toBe('ok');
    const text = JSON.stringify(r.kind === 'ok' ? r.body : undefined);
    expect(text).toContain('"in"');
    expect(text).toContain('"c1"');
    expect(text).not.toContain('secret-out-of-period');
    expect(r.stats.grantOutOfScope).toBe(1);
    // A single resource outside the grant reads as a type the caller may not see.
    const one = filterResponse(outside, ctx);
    expect(one.kind).toBe('withheld');
    expect(one.kind === 'withheld' ? one.reason : undefined).toBe('type');
  });
});
