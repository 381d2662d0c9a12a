// FilterStats.elements: the top-level element names a response released, per resource type, read
// from the released (post-redaction) resources, contained ones under their own type.
import type { Patient } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { filterResponse } from '../../../src/redact/response.js';
import type { FilterResult } from '../../../src/redact/types.js';
import { deepFreeze, resourcePlan, responseCtx } from './helpers.js';

const plans = () => ({
  Patient: resourcePlan('Patient', { elements: ['identifier', 'name', 'gender', 'birthDate', 'address'], remove: ['@ContactPoint'] }, ['R']),
  Condition: resourcePlan('Condition', { elements: ['code', 'subject', 'contained'] }),
  Organization: resourcePlan('Organization'),
});

const named = (r: FilterResult) => Object.fromEntries([...(r.stats.elements ?? new Map())].map(([t, s]) => [t, [...s].sort()]));

describe('filterResponse: disclosed elements', () => {
  it('names what survived redaction, not what the upstream sent', () => {
    const input: Patient = deepFreeze({
      resourceType: 'Patient',
      id: 'p1',
      meta: { versionId: '1' },
      text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Jane</div>' },
      name: [{ family: 'Doe' }],
      telecom: [{ value: '555' }],
      gender: 'female',
      active: true,
    });
    const r = filterResponse(input, responseCtx(plans()));
    expect(named(r)).toEqual({ Patient: ['gender', 'id', 'meta', 'name'] });
  });

  it("counts a primitive's extension (_birthDate) as the element", () => {
    const input = deepFreeze({ resourceType: 'Patient', id: 'p1', _birthDate: { extension: [{ url: 'http://example.org/x', valueString: 'y' }] } });
    expect(named(filterResponse(input, responseCtx(plans())))).toEqual({ Patient: ['birthDate', 'id'] });
  });

  it('never records a key the type does not define, even where the plan keeps everything', () => {
    const input = deepFreeze(JSON.parse('{"resourceType":"Organization","id":"o1","name":"Acme","ssnOfJaneDoe":"123","__proto__":{"x":1},"constructor":1}'));
    const r = filterResponse(input, responseCtx(plans()));
    expect(named(r)).toEqual({ Organization: ['id', 'name'] });
    expect(Object.getPrototypeOf(r.stats.elements)).toBe(Map.prototype);
  });

  it('records contained resources under their own type, and nothing of contained types without a plan', () => {
    const input = deepFreeze({
      resourceType: 'Condition',
      id: 'c1',
      contained: [
        { resourceType: 'Patient', id: 'inner', name: [{ family: 'Doe' }], telecom: [{ value: '555' }], maritalStatus: { text: 'M' } },
        { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'x' } },
      ],
      code: { text: 'dx' },
      note: [{ text: 'n' }],
      subject: { reference: '#inner' },
    });
    const r = filterResponse(input, responseCtx(plans()));
    // The container's note went, so the gateway added meta (the REDACTED marking): released too.
    expect(named(r)).toEqual({ Condition: ['code', 'contained', 'id', 'meta', 'subject'], Patient: ['id', 'name'] });
  });

  it('unions the entries of a Bundle and leaves out withheld ones', () => {
    const input = deepFreeze({
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [
        { resource: { resourceType: 'Patient', id: 'a', gender: 'male' } },
        { resource: { resourceType: 'Patient', id: 'b', birthDate: '1970-01-01' } },
        // Withheld for its label: its address must not count as disclosed.
        { resource: { resourceType: 'Patient', id: 'r', address: [{ city: 'X' }], meta: { security: [{ code: 'R' }] } } },
        // No plan for the type.
        { resource: { resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'x' } } },
      ],
    });
    const r = filterResponse(input, responseCtx(plans()));
    expect(r.stats.resourcesWithheld).toBe(2);
    expect(named(r)).toEqual({ Patient: ['birthDate', 'gender', 'id'] });
  });

  it('a single withheld resource discloses no element', () => {
    const input = deepFreeze({ resourceType: 'Patient', id: 'r', name: [{ family: 'X' }], meta: { security: [{ code: 'R' }] } });
    const r = filterResponse(input, responseCtx(plans()));
    expect(r.kind).toBe('withheld');
    expect(r.stats.elements?.size).toBe(0);
  });
});
