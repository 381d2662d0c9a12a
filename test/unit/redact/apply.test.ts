import { readFileSync } from 'node:fs';
import type { Observation, Patient } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { MARKING_SYSTEM, redactResource } from '../../../src/redact/apply.js';
import { compileElementPlan, type ElementRule } from '../../../src/redact/compile.js';
import { pseudonymId } from '../../../src/redact/transforms.js';
import { clone, deepFreeze, KEY, redactCtx } from './helpers.js';

const fixture = <T>(name: string): T => JSON.parse(readFileSync(new URL(`../../fixtures/r4/${name}`, import.meta.url), 'utf8')) as T;
const SSN = 'http://hl7.org/fhir/sid/us-ssn';

function patient(): Patient {
  return {
    resourceType: 'Patient',
    id: 'pat-1',
    meta: { versionId: '3', security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] },
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Jane Roe SSN 999-11-2222</div>' },
    extension: [{ url: 'http://example.org/nickname', valueHumanName: { family: 'ExtFamilySentinel' } }],
    identifier: [
      { system: SSN, value: '999-11-2222' },
      { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, system: 'urn:mrn', value: 'MRN-77' },
    ],
    name: [{ family: 'Roe', given: ['Jane'] }],
    telecom: [{ system: 'phone', value: '555-0100' }],
    gender: 'female',
    birthDate: '1931-03-04',
    _birthDate: { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1931-03-04T05:06:07Z' }] },
    address: [{ line: ['1 Elm St'], city: 'Keene', state: 'NH', postalCode: '03601' }],
    contact: [{ name: { family: 'ContactSentinel' }, telecom: [{ value: '555-0199' }] }],
    managingOrganization: { reference: 'Organization/org-1', display: 'General Hospital' },
  };
}

const compile = (rule: ElementRule, type = 'Patient') => compileElementPlan(type, rule, 'test');
const securityCodes = (r: { meta?: { security?: Array<{ system?: string; code?: string }> } }) =>
  (r.meta?.security ?? []).filter((c) => c.system === MARKING_SYSTEM).map((c) => c.code);

describe('redactResource: allow-list', () => {
  it('returns the very same object for a keep-all plan', () => {
    const p = patient();
    const r = redactResource(p, compile({}), redactCtx());
    expect(r.resource).toBe(p);
    expect(r.removed).toBe(0);
  });

  it('keeps only listed elements plus resourceType, id, meta', () => {
    const r = redactResource(deepFreeze(patient()), compile({ elements: ['gender'] }), redactCtx());
    expect(Object.keys(r.resource).sort()).toEqual(['gender', 'id', 'meta', 'resourceType']);
    expect(securityCodes(r.resource)).toEqual(['REDACTED']);
    // the original label stays
    expect(r.resource.meta?.security?.[0]).toEqual({ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' });
  });

  it('a nested path keeps only that sub-element', () => {
    const r = redactResource(deepFreeze(patient()), compile({ elements: ['address.state'] }), redactCtx());
    expect(r.resource.address).toEqual([{ state: 'NH' }]);
  });

  it('a filtered path keeps only matching items (CodeableConcept code, or system|code)', () => {
    for (const sel of ['identifier[type=MR]', 'identifier[type=http://terminology.hl7.org/CodeSystem/v2-0203|MR]', 'identifier[system=urn:mrn]']) {
      const r = redactResource(deepFreeze(patient()), compile({ elements: [sel] }), redactCtx());
      expect(r.resource.identifier, sel).toHaveLength(1);
      expect(r.resource.identifier?.[0].value).toBe('MRN-77');
    }
    const none = redactResource(deepFreeze(patient()), compile({ elements: ['identifier[type=http://other|MR]'] }), redactCtx());
    expect(none.resource.identifier).toBeUndefined();
  });

  it('removes empty objects and arrays left over', () => {
    const p = patient();
    p.address = [{ line: ['x'] }, { state: 'VT' }];
    const r = redactResource(deepFreeze(p), compile({ elements: ['address.state'] }), redactCtx());
    expect(r.resource.address).toEqual([{ state: 'VT' }]);
    const p2 = patient();
    p2.address = [{ line: ['x'] }];
    expect(redactResource(deepFreeze(p2), compile({ elements: ['address.state'] }), redactCtx()).resource.address).toBeUndefined();
  });

  it('value[x] selects every concrete choice', () => {
    const obs = fixture<Observation>('observation-example.json');
    const kept = redactResource(deepFreeze(clone(obs)), compile({ elements: ['value[x]'] }, 'Observation'), redactCtx());
    expect(kept.resource.valueQuantity).toEqual(obs.valueQuantity);
    expect(kept.resource.subject).toBeUndefined();
    const removed = redactResource(deepFreeze(clone(obs)), compile({ remove: ['value[x]'] }, 'Observation'), redactCtx());
    expect(removed.resource.valueQuantity).toBeUndefined();
    expect(removed.resource.subject).toEqual(obs.subject);
  });
});

describe('redactResource: remove', () => {
  it('removes by path even inside kept elements, and filtered items', () => {
    const r = redactResource(deepFreeze(patient()), compile({ elements: ['identifier', 'address'], remove: [`identifier[system=${SSN}]`, 'address.line'] }), redactCtx());
    expect(r.resource.identifier?.map((i) => i.value)).toEqual(['MRN-77']);
    expect(r.resource.address).toEqual([{ city: 'Keene', state: 'NH', postalCode: '03601' }]);
  });

  it('type selectors apply at any depth, including extensions and backbone elements', () => {
    const r = redactResource(deepFreeze(patient()), compile({ remove: ['@HumanName', '@ContactPoint'] }), redactCtx());
    const json = JSON.stringify(r.resource);
    expect(json).not.toContain('Roe');
    expect(json).not.toContain('ExtFamilySentinel');
    expect(json).not.toContain('ContactSentinel');
    expect(json).not.toContain('555-01');
    expect(r.resource.gender).toBe('female');
    // the extension that only held a name is gone entirely (no empty leftovers)
    expect(r.resource.extension).toBeUndefined();
  });

  it('type path selectors remove inside every element of that type', () => {
    const r = redactResource(deepFreeze(patient()), compile({ remove: ['@Reference.display'] }), redactCtx());
    expect(r.resource.managingOrganization).toEqual({ reference: 'Organization/org-1' });
  });

  it('removing a primitive removes its _companion (e.g. an exact birth time extension)', () => {
    const r = redactResource(deepFreeze(patient()), compile({ remove: ['birthDate'] }), redactCtx());
    expect(JSON.stringify(r.resource)).not.toContain('1931');
  });

  it('drops narrative and marks REDACTED once when anything was removed', () => {
    const plan = compile({ remove: ['telecom'] });
    const r1 = redactResource(deepFreeze(patient()), plan, redactCtx());
    expect(r1.resource.text).toBeUndefined();
    expect(securityCodes(r1.resource)).toEqual(['REDACTED']);
    const r2 = redactResource(deepFreeze(r1.resource), plan, redactCtx());
    expect(r2.resource).toBe(r1.resource);
    expect(securityCodes(r2.resource)).toEqual(['REDACTED']);
  });

  it('fails closed on unknown keys and wrong shapes inside walked objects', () => {
    const p = { ...patient(), bogus: 'BogusSentinel', gender: ['female'], name: { family: 'NotAnArray' } } as unknown as Patient;
    const r = redactResource(deepFreeze(p), compile({ remove: ['telecom'] }), redactCtx());
    const json = JSON.stringify(r.resource);
    expect(json).not.toContain('BogusSentinel');
    expect(json).not.toContain('NotAnArray');
    expect(r.resource.gender).toBeUndefined();
  });

  it('never resolves __proto__ / constructor keys through the prototype', () => {
    const p = JSON.parse('{"resourceType":"Patient","id":"x","__proto__":{"polluted":true},"constructor":"c","gender":"male"}');
    const r = redactResource(deepFreeze(p), compile({ remove: ['telecom'] }), redactCtx());
    expect(Object.hasOwn(r.resource as object, '__proto__')).toBe(false);
    expect(Object.hasOwn(r.resource as object, 'constructor')).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((r.resource as Patient).gender).toBe('male');
  });

  it('removes contained resources when used without filterResponse', () => {
    const p = { ...patient(), contained: [{ resourceType: 'Practitioner', id: 'c1' }] } as Patient;
    const r = redactResource(deepFreeze(p), compile({ remove: ['telecom'] }), redactCtx());
    expect(r.resource.contained).toBeUndefined();
  });

  it('rejects a resource of another type than the plan', () => {
    expect(() => redactResource({ resourceType: 'Observation' }, compile({ remove: ['name'] }), redactCtx())).toThrow(TypeError);
  });
});

describe('redactResource: transforms', () => {
  it('mask: strings become *** and complex values mask every string leaf', () => {
    const r = redactResource(deepFreeze(patient()), compile({ transforms: [{ select: 'address.city', apply: 'mask' }, { select: 'name', apply: 'mask' }] }), redactCtx());
    expect(r.resource.address?.[0].city).toBe('***');
    expect(r.resource.name).toEqual([{ family: '***', given: ['***'] }]);
    expect(securityCodes(r.resource)).toContain('MASKED');
    expect(r.resource.text).toBeUndefined();
  });

  it('year: dates to YYYY, instants removed, Periods to years', () => {
    const obs = fixture<Observation>('observation-example.json');
    const o = { ...clone(obs), effectivePeriod: { start: '2013-04-02T09:30:10+01:00', end: '2013-04-05' }, issued: '2013-04-03T15:30:10.000+01:00' } as Observation;
    delete o.effectiveDateTime;
    const r = redactResource(deepFreeze(o), compile({ transforms: [{ select: 'effective[x]', apply: 'year' }, { select: 'issued', apply: 'year' }] }, 'Observation'), redactCtx());
    expect(r.resource.effectivePeriod).toEqual({ start: '2013', end: '2013' });
    expect(r.resource.issued).toBeUndefined();
    const p = redactResource(deepFreeze(patient()), compile({ transforms: [{ select: '@date', apply: 'year' }] }), redactCtx());
    expect(p.resource.birthDate).toBe('1931');
    expect(JSON.stringify(p.resource)).not.toContain('1931-03');
  });

  it('zip3: three-digit prefix, 000 for restricted prefixes', () => {
    const plan = compile({ transforms: [{ select: 'address.postalCode', apply: 'zip3' }] });
    const p = patient();
    p.address = [{ postalCode: '02139-4307' }, { postalCode: '03601' }, { postalCode: 'K1A 0B1' }];
    const r = redactResource(deepFreeze(p), plan, redactCtx());
    expect(r.resource.address).toEqual([{ postalCode: '021' }, { postalCode: '000' }]);
    const unrestricted = redactResource(deepFreeze(patient()), plan, redactCtx({ restrictedZip3: new Set() }));
    expect(unrestricted.resource.address?.[0].postalCode).toBe('036');
  });

  it('age90: birth dates of people over 89 become now-90, younger unchanged; Age over 89 becomes 90', () => {
    const plan = compile({ transforms: [{ select: 'birthDate', apply: 'age90' }] });
    const old = redactResource(deepFreeze(patient()), plan, redactCtx());
    expect(old.resource.birthDate).toBe('1935'); // now is 2025-06-15
    const young = { ...patient(), birthDate: '1960-01-01' };
    expect(redactResource(deepFreeze(young), plan, redactCtx()).resource.birthDate).toBe('1960-01-01');
    // exactly at the boundary: 90th birthday tomorrow -> still 89
    const boundary = { ...patient(), birthDate: '1935-06-16' };
    expect(redactResource(deepFreeze(boundary), plan, redactCtx()).resource.birthDate).toBe('1935-06-16');
    const turned90 = { ...patient(), birthDate: '1935-06-15' };
    expect(redactResource(deepFreeze(turned90), plan, redactCtx()).resource.birthDate).toBe('1935');
    const cond = { resourceType: 'Condition', subject: { reference: 'Patient/p' }, onsetAge: { value: 94, unit: 'years', system: 'http://unitsofmeasure.org', code: 'a' } };
    const c = redactResource(deepFreeze(cond), compile({ transforms: [{ select: 'onset[x]', apply: 'age90' }] }, 'Condition'), redactCtx());
    expect((c.resource as typeof cond).onsetAge.value).toBe(90);
  });

  it('pseudonym: ids and references consistently keyed, stable, key-dependent', () => {
    const plan = compile({ transforms: [{ select: 'id', apply: 'pseudonym' }, { select: '@Reference', apply: 'pseudonym' }] });
    const a = redactResource(deepFreeze(patient()), plan, redactCtx());
    const b = redactResource(deepFreeze(patient()), plan, redactCtx());
    const other = redactResource(deepFreeze(patient()), plan, redactCtx({ pseudonymKey: new TextEncoder().encode('another key') }));
    expect(a.resource.id).toBe(pseudonymId(KEY, 'Patient', 'pat-1'));
    // A FHIR id (src/redact/pseudonym.ts), 61 characters for every id up to 32 bytes.
    expect(a.resource.id).toMatch(/^[A-Za-z0-9.-]{61}$/);
    expect(b.resource.id).toBe(a.resource.id);
    expect(other.resource.id).not.toBe(a.resource.id);
    expect(a.resource.managingOrganization?.reference).toBe(`Organization/${pseudonymId(KEY, 'Organization', 'org-1')}`);
    expect(JSON.stringify(a.resource)).not.toContain('pat-1');
    expect(securityCodes(a.resource)).toContain('PSEUDED');
    // an Observation's subject reference pseudonymizes to the same value as the Patient's id
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'http://up/fhir/Patient/pat-1/_history/2' } } as Observation;
    const o = redactResource(deepFreeze(obs), compile({ transforms: [{ select: '@Reference', apply: 'pseudonym' }] }, 'Observation'), redactCtx());
    expect(o.resource.subject?.reference).toBe(`Patient/${a.resource.id}`);
  });

  it('pseudonym removes what it cannot pseudonymize, and everything without a key', () => {
    const plan = compile({ transforms: [{ select: 'id', apply: 'pseudonym' }, { select: '@Reference.reference', apply: 'pseudonym' }] });
    const p = { ...patient(), generalPractitioner: [{ reference: '#contained1' }, { reference: 'urn:uuid:abc' }, { reference: 'Practitioner/x', display: 'Dr' }] };
    const r = redactResource(deepFreeze(p), plan, redactCtx());
    expect(r.resource.generalPractitioner).toEqual([{ reference: `Practitioner/${pseudonymId(KEY, 'Practitioner', 'x')}`, display: 'Dr' }]);
    const noKey = redactResource(deepFreeze(patient()), plan, redactCtx({ pseudonymKey: undefined }));
    expect(noKey.resource.id).toBeUndefined();
    expect(noKey.resource.managingOrganization).toEqual({ display: 'General Hospital' });
  });

  it('runs transforms in the order listed', () => {
    const maskThenRemove = compile({ transforms: [{ select: 'gender', apply: 'mask' }, { select: 'gender', apply: 'remove' }] });
    expect(redactResource(deepFreeze(patient()), maskThenRemove, redactCtx()).resource.gender).toBeUndefined();
    const ageThenYear = compile({ transforms: [{ select: 'birthDate', apply: 'age90' }, { select: 'birthDate', apply: 'year' }] });
    expect(redactResource(deepFreeze(patient()), ageThenYear, redactCtx()).resource.birthDate).toBe('1935');
  });

  it('meta stays subject to transforms', () => {
    const p = { ...patient(), meta: { lastUpdated: '2024-01-02T03:04:05Z', source: 'http://src' } };
    const r = redactResource(deepFreeze(p), compile({ transforms: [{ select: 'meta.lastUpdated', apply: 'remove' }] }), redactCtx());
    expect(r.resource.meta?.lastUpdated).toBeUndefined();
    expect(r.resource.meta?.source).toBe('http://src');
  });
});

describe('copy-on-write', () => {
  it('shares untouched subtrees and never mutates the input', () => {
    const p = patient();
    const before = clone(p);
    const r = redactResource(deepFreeze(p), compile({ remove: ['telecom'] }), redactCtx());
    expect(p).toEqual(before);
    expect(r.resource).not.toBe(p);
    expect(r.resource.name).toBe(p.name);
    expect(r.resource.address).toBe(p.address);
  });

  it('redacts the R4 example patient for a billing-like plan', () => {
    const p = deepFreeze(fixture<Patient>('patient-example.json'));
    const r = redactResource(p, compile({ elements: ['identifier', 'name', 'gender', 'birthDate', 'address'] }), redactCtx());
    expect(r.resource.telecom).toBeUndefined();
    expect(r.resource.contact).toBeUndefined();
    expect(r.resource.text).toBeUndefined();
    expect(r.resource.name).toBe(p.name);
    expect(r.resource.birthDate).toBe('1974-12-25');
    expect(r.removed).toBeGreaterThan(0);
  });
});
