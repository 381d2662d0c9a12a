/**
 * The response filter's care-relationship check: with `relatedPatients` set, a resource of any
 * other patient (on any reference, contained ones included) is withheld with reason
 * `relationship`; a read of one answers 404, or 403 relationship-required to a caller told of
 * withholding too (by value only, where a request names the patient, is relationship-required given); resources naming no patient at all are left alone.
 */
import { describe, expect, it } from 'vitest';
import { filterResponse, withheldCode } from '../../../src/redact/response.js';
import { resourcePlan, responseCtx } from './helpers.js';

const plans = () => ({
  Patient: resourcePlan('Patient', { elements: ['*'] }),
  Observation: resourcePlan('Observation', { elements: ['*'] }),
  Practitioner: resourcePlan('Practitioner', { elements: ['*'] }),
});
const related = new Set(['p1', 'p2']);
const ctx = (mode: 'hide' | 'announce' = 'hide') => responseCtx(plans(), { relatedPatients: related, withheldMode: mode });
const obs = (id: string, subject: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { text: 'x' },
  subject: { reference: subject },
  ...extra,
});

describe('relatedPatients in the response filter', () => {
  it('withholds a read of an unrelated patient and of its data', () => {
    expect(filterResponse({ resourceType: 'Patient', id: 'p9' }, ctx())).toMatchObject({ kind: 'withheld', reason: 'relationship' });
    expect(filterResponse(obs('o9', 'Patient/p9'), ctx())).toMatchObject({ kind: 'withheld', reason: 'relationship' });
    expect(filterResponse({ resourceType: 'Patient', id: 'p1' }, ctx()).kind).toBe('ok');
    expect(filterResponse(obs('o1', 'Patient/p1'), ctx()).kind).toBe('ok');
  });

  it('names the unrelated patients of what it withheld, for the audit record', () => {
    const bundle = { resourceType: 'Bundle', type: 'searchset', entry: [{ resource: obs('o9', 'Patient/p9') }, { resource: obs('o1', 'Patient/p1') }] };
    const out = filterResponse(bundle, ctx());
    expect([...(out.stats.unrelated ?? [])]).toEqual(['p9']);
    expect([...out.stats.patients]).toEqual(['p1']);
  });

  it('withholds a related patient record that names an unrelated patient anywhere', () => {
    expect(filterResponse(obs('o1', 'Patient/p1', { focus: [{ reference: 'Patient/p9' }] }), ctx()).kind).toBe('withheld');
    expect(filterResponse(obs('o1', 'Patient/p1', { performer: [{ reference: 'https://x.example/fhir/Patient/p9' }] }), ctx()).kind).toBe('withheld');
    expect(filterResponse(obs('o1', 'Patient/p1', { contained: [{ resourceType: 'Patient', id: 'c' }] }), ctx()).kind).toBe('withheld');
    // Patient data naming no patient (a Group subject) is not shown to a relationship-limited caller.
    expect(filterResponse(obs('o1', 'Group/g1'), ctx()).kind).toBe('withheld');
  });

  it('leaves types outside the patient compartment alone', () => {
    expect(filterResponse({ resourceType: 'Practitioner', id: 'pr1' }, ctx()).kind).toBe('ok');
  });

  it('drops unrelated entries from a searchset without announcing them', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [{ resource: obs('o1', 'Patient/p1'), search: { mode: 'match' } }, { resource: obs('o9', 'Patient/p9'), search: { mode: 'match' } }],
    };
    const out = filterResponse(bundle, ctx('announce'));
    expect(out.kind).toBe('ok');
    const text = JSON.stringify(out.kind === 'ok' ? out.body : undefined);
    expect(text).toContain('o1');
    expect(text).not.toContain('p9');
    expect(text).not.toContain('o9');
  });

  it('answers a withheld read as the caller may be told', () => {
    expect(withheldCode('relationship', 'hide')).toBe('not-found');
    // Not relationship-required: that would tell a break-glass role which ids of an unrelated
    // patient's records exist (it is answered by value only, where the request names the patient).
    expect(withheldCode('relationship', 'announce')).toBe('not-found');
    expect(withheldCode('label', 'announce')).toBe('break-glass-available');
    expect(withheldCode('compartment', 'announce')).toBe('not-found');
  });

  it('without relatedPatients nothing changes', () => {
    expect(filterResponse(obs('o9', 'Patient/p9'), responseCtx(plans())).kind).toBe('ok');
  });
});
