import { describe, expect, it } from 'vitest';
import { compileElementPlan, derivedSearchParams, SelectorError } from '../../../src/redact/compile.js';
import { parseSelector } from '../../../src/redact/selector.js';

function compileError(rule: Parameters<typeof compileElementPlan>[1], type = 'Patient'): SelectorError {
  try {
    compileElementPlan(type, rule, 'dataSets.t.rules[0]');
  } catch (e) {
    expect(e).toBeInstanceOf(SelectorError);
    return e as SelectorError;
  }
  throw new Error('expected a SelectorError');
}

describe('parseSelector', () => {
  it('parses paths, choices, filters with URIs, and type selectors', () => {
    expect(parseSelector('address.postalCode', 'w')).toEqual({
      kind: 'path',
      segments: [
        { name: 'address', filter: undefined },
        { name: 'postalCode', filter: undefined },
      ],
    });
    expect(parseSelector('value[x]', 'w')).toMatchObject({ kind: 'path', segments: [{ name: 'value[x]' }] });
    expect(parseSelector('identifier[system=http://hl7.org/fhir/sid/us-ssn].value', 'w')).toMatchObject({
      kind: 'path',
      segments: [{ name: 'identifier', filter: { key: 'system', value: 'http://hl7.org/fhir/sid/us-ssn' } }, { name: 'value' }],
    });
    expect(parseSelector('@Reference.display', 'w')).toMatchObject({ kind: 'type', type: 'Reference', segments: [{ name: 'display' }] });
    expect(parseSelector('*', 'w')).toEqual({ kind: 'all' });
  });

  it.each(['', 'a..b', 'a.', '.a', 'a[', 'a[=x]', 'a[k=]', '@', '@.x', 'a b', '1a', 'a[x'])('rejects %j', (s) => {
    expect(() => parseSelector(s, 'w')).toThrow(SelectorError);
  });
});

describe('compileElementPlan validation', () => {
  it('accepts paths that exist on the type and rejects those that do not', () => {
    expect(() => compileElementPlan('Patient', { elements: ['address.postalCode'] }, 'w')).not.toThrow();
    const e = compileError({ elements: ['address.foo'] });
    expect(e.where).toBe('dataSets.t.rules[0].elements[0]');
    expect(e.selector).toBe('address.foo');
    expect(e.message).toContain('Address has no element "foo"');
  });

  it('names where the bad selector is', () => {
    const e = compileError({ remove: ['name', 'nosuch'] });
    expect(e.where).toBe('dataSets.t.rules[0].remove[1]');
    expect(compileError({ transforms: [{ select: 'birthDate', apply: 'zip3' }] }).where).toBe('dataSets.t.rules[0].transforms[0]');
  });

  it('validates type selectors against the R4 data types', () => {
    expect(() => compileElementPlan('Patient', { remove: ['@HumanName', '@Reference.display', '@date'] }, 'w')).not.toThrow();
    expect(compileError({ remove: ['@HumanNames'] }).message).toContain('not an R4 data type');
    expect(compileError({ remove: ['@Patient'] }).message).toContain('not an R4 data type');
    expect(compileError({ remove: ['@Reference.foo'] }).message).toContain('Reference has no element "foo"');
    expect(compileError({ remove: ['@date.value'] }).message).toContain('primitive');
    expect(compileError({ elements: ['@HumanName'] }).message).toContain('type selectors cannot be used in elements');
  });

  it('rejects filters on elements that cannot be filtered and `*` outside elements', () => {
    expect(compileError({ remove: ['identifier[nosuch=1]'] }).message).toContain('no filterable element');
    expect(compileError({ remove: ['gender[x=1]'] }).message).toContain('complex type');
    expect(compileError({ remove: ['*'] }).message).toContain('only valid in elements');
  });

  it('rejects a transform that cannot apply to the selected type', () => {
    expect(compileError({ transforms: [{ select: 'gender', apply: 'year' }] }).message).toContain('does not apply');
    expect(() => compileElementPlan('Observation', { transforms: [{ select: 'effective[x]', apply: 'year' }] }, 'w')).not.toThrow();
  });

  it('rejects resource types that are not R4 resource types', () => {
    expect(() => compileElementPlan('HumanName', {}, 'w')).toThrow(SelectorError);
    expect(() => compileElementPlan('patient', {}, 'w')).toThrow(SelectorError);
  });

  it('keepsAll only for the default rule', () => {
    expect(compileElementPlan('Patient', {}, 'w').keepsAll).toBe(true);
    expect(compileElementPlan('Patient', { elements: ['*'] }, 'w').keepsAll).toBe(true);
    expect(compileElementPlan('Patient', { remove: ['text'] }, 'w').keepsAll).toBe(false);
    expect(compileElementPlan('Patient', { elements: ['name'] }, 'w').keepsAll).toBe(false);
    expect(compileElementPlan('Patient', { transforms: [{ select: 'id', apply: 'pseudonym' }] }, 'w').keepsAll).toBe(false);
  });
});

describe('describe()', () => {
  it('lists each top-level element with its action and selector, plus type selectors', () => {
    const plan = compileElementPlan(
      'Patient',
      {
        elements: ['name', 'identifier[type=MR]', 'address.state', 'birthDate'],
        remove: ['@Reference.display'],
        transforms: [{ select: 'birthDate', apply: 'year' }],
      },
      'w',
    );
    const lines = plan.describe();
    const by = (el: string) => lines.find((l) => l.element === el);
    expect(by('Patient.name')).toEqual({ element: 'Patient.name', action: 'keep', selector: 'name' });
    expect(by('Patient.identifier')).toEqual({ element: 'Patient.identifier', action: 'keep', selector: 'identifier[type=MR]' });
    expect(by('Patient.address')).toEqual({ element: 'Patient.address', action: 'keep', selector: 'address.state' });
    expect(by('Patient.birthDate')).toEqual({ element: 'Patient.birthDate', action: 'year', selector: 'birthDate' });
    expect(by('Patient.telecom')?.action).toBe('remove');
    expect(by('Patient.id')?.action).toBe('keep');
    expect(by('Patient.meta')?.action).toBe('keep');
    expect(by('Patient.deceased[x]')?.action).toBe('remove');
    expect(by('@Reference.display')).toEqual({ element: '@Reference.display', action: 'remove', selector: '@Reference.display' });
    expect(lines.some((l) => l.element === 'Patient.deceasedBoolean')).toBe(false);
  });

  it('reports type selectors on the top-level elements they hit', () => {
    const lines = compileElementPlan('Patient', { remove: ['@HumanName'] }, 'w').describe();
    expect(lines.find((l) => l.element === 'Patient.name')).toEqual({ element: 'Patient.name', action: 'remove', selector: '@HumanName' });
    expect(lines.find((l) => l.element === 'Patient.gender')?.action).toBe('keep');
  });
});

describe('derivedSearchParams', () => {
  it('allows only parameters whose every path is kept unchanged', () => {
    const plan = compileElementPlan(
      'Patient',
      { elements: ['name', 'gender', 'birthDate', 'address.state', 'identifier'], remove: ['identifier[system=http://hl7.org/fhir/sid/us-ssn]'] },
      'w',
    );
    const params = derivedSearchParams('Patient', plan);
    expect(params).toEqual(expect.arrayContaining(['name', 'family', 'given', 'gender', 'birthdate', 'address-state', '_id']));
    // identifier could match the removed SSN; address matches city/line which are hidden.
    expect(params).not.toContain('identifier');
    expect(params).not.toContain('address');
    expect(params).not.toContain('address-city');
    expect(params).not.toContain('telecom');
    expect(params).not.toContain('phone');
    // Not a plain element path: never derived.
    expect(params).not.toContain('deceased');
  });

  it('excludes transformed and type-selected elements', () => {
    const plan = compileElementPlan(
      'Patient',
      { remove: ['@HumanName'], transforms: [{ select: 'birthDate', apply: 'year' }, { select: 'id', apply: 'pseudonym' }] },
      'w',
    );
    const params = derivedSearchParams('Patient', plan);
    expect(params).not.toContain('name');
    expect(params).not.toContain('birthdate');
    expect(params).not.toContain('_id');
    expect(params).toContain('gender');
  });

  it('derives everything plain for a keep-all plan', () => {
    const params = derivedSearchParams('Observation', compileElementPlan('Observation', {}, 'w'));
    expect(params).toEqual(expect.arrayContaining(['code', 'subject', 'patient', 'value-quantity', '_id']));
  });
});
