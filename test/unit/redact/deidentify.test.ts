import { describe, expect, it } from 'vitest';
import { deidentifyResource, isTerminologyUri, pathFate } from '../../../src/redact/deidentify.js';
import { pseudonymize, resolvePseudonym } from '../../../src/redact/pseudonym.js';

const KEY = new TextEncoder().encode('deidentify-test-key-0123456789abcdefghij');
const ctx = { restrictedZip3: new Set(['036']), pseudonymKey: KEY, now: () => new Date('2026-12-06T12:00:00Z') };
// biome-ignore lint/suspicious/noExplicitAny: results are inspected by shape, field by field
type Obj = Record<string, any>;
const sh = (r: Obj) => deidentifyResource(r, 'safe-harbor', ctx).resource as Obj;
const lds = (r: Obj) => deidentifyResource(r, 'limited-data-set', ctx).resource as Obj;
const CAP = { value: 90, comparator: '>=', unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' };

function patient(): Obj {
  return {
    resourceType: 'Patient',
    id: 'pat-alice',
    meta: { versionId: '3', lastUpdated: '2024-01-01T00:00:00Z', source: 'http://ehr.internal/x', security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] },
    text: { status: 'generated', div: '<div>Alice Smith</div>' },
    extension: [
      { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'F' },
      { url: 'http://hospital.example.org/ext/nickname', valueString: 'Ally' },
    ],
    identifier: [{ system: 'http://hl7.org/fhir/sid/us-ssn', value: '999-11-2222' }],
    name: [{ family: 'Smith', given: ['Alice'] }],
    telecom: [{ system: 'phone', value: '617-555-0101' }],
    gender: 'female',
    birthDate: '1930-05-06',
    _birthDate: { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1930-05-06T10:00:00Z' }] },
    address: [{ line: ['1 Main St'], city: 'Boston', district: 'Suffolk', state: 'MA', postalCode: '03601', period: { start: '2001-02-03' } }],
    generalPractitioner: [{ reference: 'Practitioner/pr-1', display: 'Dr Who', identifier: { value: 'NPI-1' } }],
    contained: [{ resourceType: 'Organization', id: 'org1', name: 'ACME Clinic' }],
    managingOrganization: { reference: '#org1' },
    photo: [{ url: 'http://photos.example.com/alice.jpg' }],
    deceasedBoolean: false,
  };
}

describe('safe-harbor by data type', () => {
  it('removes names, identifiers, telecom, free text, photos, narrative and non-terminology extensions', () => {
    const r = sh(patient());
    const text = JSON.stringify(r);
    for (const v of ['Smith', 'Alice', '999-11-2222', '617-555', '1 Main St', 'Boston', 'Suffolk', 'Dr Who', 'NPI-1', 'ACME', 'photos.example', 'Ally', 'hospital.example', 'ehr.internal', 'pat-alice', 'pr-1', '2024-01-01']) {
      expect(text).not.toContain(v);
    }
    expect(r.extension).toEqual([{ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'F' }]);
    expect(r.gender).toBe('female');
  });

  it('addresses keep state and the 3-digit ZIP (restricted areas 000); the limited data set keeps city and ZIP5', () => {
    expect(sh(patient()).address).toEqual([{ state: 'MA', postalCode: '000', period: { start: '2001' } }]);
    expect(sh({ ...patient(), address: [{ postalCode: '02139-1234', state: 'MA' }] }).address).toEqual([{ postalCode: '021', state: 'MA' }]);
    expect(lds(patient()).address).toEqual([{ city: 'Boston', state: 'MA', postalCode: '03601', period: { start: '2001-02-03' } }]);
  });

  it('an age over 89 in any unit spelling or value type is capped (red-team reproductions)', () => {
    const UCUM = 'http://unitsofmeasure.org';
    const age = (value: Record<string, unknown>) =>
      sh({ resourceType: 'Observation', id: 'o', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '30525-0' }] }, ...value });
    for (const code of ['a_j', 'a_g', 'ANN', 'A', '{years}', '{age}', '1', 'yr ']) {
      expect(age({ valueQuantity: { value: 93, system: UCUM, code } }).valueQuantity, code).toEqual(CAP);
      expect(age({ valueQuantity: { value: 93, unit: code } }).valueQuantity, `unit ${code}`).toEqual(CAP);
    }
    expect(age({ valueQuantity: { value: 1116, system: UCUM, code: 'mo_j' } }).valueQuantity).toEqual(CAP);
    expect(age({ valueQuantity: { value: 45, system: UCUM, code: 'a_j' } }).valueQuantity).toEqual({ value: 45, system: UCUM, code: 'a_j' });
    // Values that cannot be capped reliably go; a range is capped with unit-less bounds read as years.
    const ratio = age({ valueRatio: { numerator: { value: 93 }, denominator: { value: 1 } } });
    expect(ratio.valueRatio).toBeUndefined();
    expect(JSON.stringify(ratio)).not.toContain('93');
    const sampled = age({ valueSampledData: { origin: { value: 93 }, period: 1, dimensions: 1, data: '0' } });
    expect(sampled.valueSampledData).toBeUndefined();
    expect(age({ valueRange: { low: { value: 93 }, high: { value: 95 } } }).valueRange).toEqual({ low: { value: 90, unit: 'a', system: UCUM, code: 'a' } });
    // The Age data type: any unit it is given is read as a time, or as years when unknown.
    for (const code of ['a_j', '{years}', 'ANN']) {
      const cond = sh({ resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/pat-alice' }, onsetAge: { value: 93, system: UCUM, code } });
      expect(cond.onsetAge, code).toEqual(CAP);
    }
  });

  it('dates become years, none earlier than now - 90, primitive extensions included', () => {
    const r = sh(patient());
    expect(r.birthDate).toBe('1936');
    expect(r._birthDate.extension[0].valueDateTime).toBe('1936');
    expect(sh({ ...patient(), birthDate: '1980-02-29' }).birthDate).toBe('1980');
    const enc = sh({ resourceType: 'Encounter', id: 'e', status: 'finished', class: { code: 'AMB' }, period: { start: '2020-03-04T10:00:00Z', end: '1920-01-01' } });
    expect(enc.period).toEqual({ start: '2020', end: '1936' });
  });

  it('ages over 89 become >= 90 wherever they appear', () => {
    const cond = sh({ resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/pat-alice' }, onsetAge: { value: 91, unit: 'years', system: 'http://unitsofmeasure.org', code: 'a' }, abatementRange: { low: { value: 1100, system: 'http://unitsofmeasure.org', code: 'mo' }, high: { value: 95, unit: 'years' } } });
    expect(cond.onsetAge).toEqual(CAP);
    expect(cond.abatementRange).toEqual({ low: { value: 90, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' } });
    // Under 89 stays; a unit that is not a UCUM code is free text and goes.
    expect(sh({ ...cond, id: 'c2', onsetAge: { value: 45, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' } }).onsetAge).toEqual({ value: 45, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' });
    expect(sh({ ...cond, id: 'c3', onsetAge: { value: 45, unit: 'years' } }).onsetAge).toEqual({ value: 45 });
    const obs = sh({
      resourceType: 'Observation',
      id: 'o',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '30525-0', display: 'Age' }], text: 'Age' },
      valueQuantity: { value: 93 },
      component: [{ code: { coding: [{ system: 'http://loinc.org', code: '21612-7' }] }, valueInteger: 97 }],
    });
    expect(obs.valueQuantity).toEqual(CAP);
    expect(obs.component[0].valueInteger).toBeUndefined();
    expect(obs.component[0].valueQuantity).toEqual(CAP);
    expect(obs.code).toEqual({ coding: [{ system: 'http://loinc.org', code: '30525-0' }] });
    const fmh = sh({ resourceType: 'FamilyMemberHistory', id: 'f', status: 'completed', patient: { reference: 'Patient/p' }, relationship: { coding: [] }, ageAge: { value: 96, unit: 'a' } });
    expect(fmh.ageAge).toEqual(CAP);
  });

  it('ids and references become pseudonyms the gateway can resolve; contained ids are renumbered', () => {
    const r = sh(patient());
    expect(resolvePseudonym([KEY], 'Patient', r.id)).toBe('pat-alice');
    expect(r.generalPractitioner).toEqual([{ reference: `Practitioner/${pseudonymize(KEY, 'Practitioner', 'pr-1')}` }]);
    expect(r.contained).toEqual([{ resourceType: 'Organization', id: 'c0' }]);
    expect(r.managingOrganization).toEqual({ reference: '#c0' });
    const abs = sh({ resourceType: 'Observation', id: 'o', status: 'final', code: { coding: [] }, subject: { reference: 'http://upstream.internal/fhir/Patient/pat-alice/_history/2' } });
    expect(abs.subject).toEqual({ reference: `Patient/${r.id}` });
    expect(sh({ ...patient(), generalPractitioner: [{ reference: 'urn:uuid:1234' }, { reference: 'Practitioner?identifier=x' }] }).generalPractitioner).toBeUndefined();
  });

  it('marks the resource REDACTED and PSEUDED; meta keeps only labels', () => {
    const r = sh(patient());
    expect(r.meta.versionId).toBeUndefined();
    expect(r.meta.lastUpdated).toBeUndefined();
    expect(r.meta.source).toBeUndefined();
    expect(r.meta.security.map((c: Obj) => c.code)).toEqual(['N', 'REDACTED', 'PSEUDED']);
  });

  it('codings under a system that is not a terminology go whole; an unknown modifier extension takes its element', () => {
    const obs = sh({
      resourceType: 'Observation',
      id: 'o',
      status: 'final',
      code: { coding: [{ system: 'http://hospital.example.org/codes', code: 'MRN123' }, { system: 'http://loinc.org', code: '1234-5', version: '2.7' }] },
      component: [{ modifierExtension: [{ url: 'http://hospital.example.org/negated', valueBoolean: true }], code: { coding: [{ system: 'http://loinc.org', code: '1' }] } }],
    });
    expect(obs.code).toEqual({ coding: [{ system: 'http://loinc.org', code: '1234-5' }] });
    expect(obs.component).toBeUndefined();
  });

  it('does not mutate its input', () => {
    const p = patient();
    const before = JSON.stringify(p);
    sh(p);
    lds(p);
    expect(JSON.stringify(p)).toBe(before);
  });

  it('the limited data set keeps dates and ages but removes direct identifiers', () => {
    const r = lds(patient());
    expect(r.birthDate).toBe('1930-05-06');
    expect(r.name).toBeUndefined();
    expect(r.identifier).toBeUndefined();
    expect(r.telecom).toBeUndefined();
    expect(resolvePseudonym([KEY], 'Patient', r.id)).toBe('pat-alice');
    expect(lds({ resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/p' }, onsetAge: { value: 91, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' } }).onsetAge).toEqual({ value: 91, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' });
  });
});

describe('pathFate', () => {
  it('judges search paths by the data type they reach', () => {
    const cases: Array<[string, string, string, string]> = [
      ['safe-harbor', 'Observation', 'subject', 'pseudonym'],
      ['safe-harbor', 'Observation', 'code', 'keep'],
      ['safe-harbor', 'Observation', 'meta.lastUpdated', 'remove'],
      ['limited-data-set', 'Observation', 'meta.lastUpdated', 'keep'],
      ['safe-harbor', 'Observation', 'valueQuantity', 'generalize'],
      ['safe-harbor', 'Observation', 'effectiveDateTime', 'generalize'],
      ['limited-data-set', 'Observation', 'effectiveDateTime', 'keep'],
      ['safe-harbor', 'Patient', 'address.state', 'keep'],
      ['safe-harbor', 'Patient', 'address.postalCode', 'generalize'],
      ['limited-data-set', 'Patient', 'address.postalCode', 'keep'],
      ['safe-harbor', 'Patient', 'address.city', 'remove'],
      ['safe-harbor', 'Patient', 'name', 'remove'],
      ['safe-harbor', 'Patient', 'identifier', 'remove'],
      ['safe-harbor', 'Patient', 'link.other', 'pseudonym'],
      ['safe-harbor', 'Patient', 'id', 'pseudonym'],
      ['safe-harbor', 'Patient', 'nosuch', 'remove'],
    ];
    for (const [profile, type, path, fate] of cases) expect(`${type}.${path}: ${pathFate(profile as 'safe-harbor', type, path)}`).toBe(`${type}.${path}: ${fate}`);
  });

  it('knows terminology URIs from others', () => {
    for (const u of ['http://loinc.org', 'http://snomed.info/sct', 'urn:oid:2.16.840.1.113883.6.1', 'http://hl7.org/fhir/us/core/StructureDefinition/x', 'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'http://hl7.org/fhir/sid/cvx']) expect(isTerminologyUri(u)).toBe(true);
    for (const u of ['http://hospital.example.org/x', 'http://10.0.0.1/x', 'https://loinc.org.evil.com/x', 'http://loinc.org@evil.com/', 'mailto:a@b.c', 42]) expect(isTerminologyUri(u)).toBe(false);
  });
});

describe('found by a red-team session: identifier namespaces posing as terminologies, free text in units', () => {
  it('codings under an organization OID, an identifier system under hl7.org/fhir/sid, and a prose unit do not survive', () => {
    const obs = sh({
      resourceType: 'Observation',
      id: 'o',
      status: 'final',
      code: {
        coding: [
          { system: 'http://loinc.org', code: '29553-5' },
          { system: 'urn:oid:2.16.840.1.113883.3.9999.1.1', code: 'MRN-100002' },
          { system: 'http://hl7.org/fhir/sid/us-ssn', code: '234-56-7890' },
          { system: 'urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14', code: 'E123' },
          { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F43.10' },
          { system: 'urn:oid:2.16.840.1.113883.6.96', code: '47505003' },
        ],
      },
      // (29553-5 is an age code: a value over 89 in an odd unit would be capped as years.)
      valueQuantity: { value: 80, unit: 'mmHg per Dr Maria Reyes, pt Brian Baker 617-555-0102', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
    });
    expect(obs.code.coding).toEqual([
      { system: 'http://loinc.org', code: '29553-5' },
      { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F43.10' },
      { system: 'urn:oid:2.16.840.1.113883.6.96', code: '47505003' },
    ]);
    expect(obs.valueQuantity).toEqual({ value: 80, unit: 'mm[Hg]', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' });
    for (const u of ['urn:oid:2.16.840.1.113883.4.1', 'http://hl7.org/fhir/sid/us-npi', 'http://hl7.org/fhir/sid/us-medicare', 'urn:oid:2.16.840.1.113883.3.9999']) expect(isTerminologyUri(u)).toBe(false);
  });
});

describe('the answer says nothing by its shape', () => {
  it('root keys come in one order, whether meta held labels, only instants, or nothing', () => {
    const base = { resourceType: 'Observation', id: 'o', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '1' }] } };
    const shapes = [
      { ...base },
      { ...base, meta: { lastUpdated: '2024-01-01T00:00:00Z' } },
      { ...base, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] } },
      { resourceType: 'Observation', id: 'o', meta: { versionId: '2' }, contained: [{ resourceType: 'Specimen', id: 's' }], status: 'final', code: base.code },
    ];
    for (const r of shapes) expect(Object.keys(sh(r)).slice(0, 3)).toEqual(['resourceType', 'id', 'meta']);
  });
});
