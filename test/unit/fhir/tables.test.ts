import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_OUT_DIR, parseSearchPath, writeFhirTables } from '../../../scripts/build-fhir-tables.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import {
  elementType,
  isDataType,
  isResourceType,
  patientReferencePaths,
  resourceTypes,
  searchParam,
  typeElements,
} from '../../../src/fhir/tables.js';

describe('generated FHIR tables', () => {
  it('regenerate byte-identically (the committed tables are not stale)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fhir-tables-'));
    try {
      const files = writeFhirTables(dir);
      expect(files).toHaveLength(3);
      for (const f of files) {
        const name = f.slice(dir.length + 1);
        expect(readFileSync(f, 'utf8'), name).toBe(readFileSync(join(DEFAULT_OUT_DIR, name), 'utf8'));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('lists the R4 resource types exactly', () => {
    // The R4 (4.0.1) list, as in @types/fhir's FhirResource; later backports (SubscriptionStatus) excluded.
    expect(resourceTypes()).toHaveLength(146);
    expect(isResourceType('SubscriptionStatus')).toBe(false);
    expect(isResourceType('Patient')).toBe(true);
    expect(isResourceType('patient')).toBe(false);
    expect(isResourceType('DomainResource')).toBe(false);
    expect(isResourceType('HumanName')).toBe(false);
    expect(isR4ResourceType('MedicationRequest')).toBe(true);
    expect(isR4ResourceType('__proto__')).toBe(false);
    expect(isR4ResourceType('constructor')).toBe(false);
  });

  it('expands choice types and keeps the base name', () => {
    expect(elementType('Patient', 'deceasedBoolean')).toMatchObject({ types: ['boolean'], array: false, choice: 'deceased[x]' });
    expect(elementType('Patient', 'deceasedDateTime')?.types).toEqual(['dateTime']);
    expect(elementType('Patient', 'deceased[x]')?.types).toEqual(['boolean', 'dateTime']);
    expect(elementType('Patient', 'deceasedString')).toBeUndefined();
  });

  it('addresses backbone elements by path and resolves contentReference', () => {
    expect(elementType('Patient', 'contact')).toMatchObject({ types: ['Patient.contact'], array: true });
    expect(elementType('Patient.contact', 'name')?.types).toEqual(['HumanName']);
    expect(elementType('Questionnaire.item', 'item')).toMatchObject({ types: ['Questionnaire.item'], array: true });
    expect(elementType('Timing', 'repeat')?.types).toEqual(['Timing.repeat']);
    expect(elementType('Address', 'postalCode')?.types).toEqual(['string']);
    expect(typeElements('Extension')?.valueHumanName?.types).toEqual(['HumanName']);
  });

  it('null-prototype lookups never resolve Object.prototype members', () => {
    expect(elementType('Patient', '__proto__')).toBeUndefined();
    expect(elementType('Patient', 'constructor')).toBeUndefined();
    expect(typeElements('toString')).toBeUndefined();
    expect(searchParam('Patient', 'hasOwnProperty')).toBeUndefined();
    expect(isDataType('HumanName') && isDataType('date') && !isDataType('Patient')).toBe(true);
  });

  it('parses search parameter expressions into element paths', () => {
    expect(searchParam('Patient', 'name')?.paths).toEqual(['name']);
    expect(searchParam('Observation', 'value-quantity')?.paths).toContain('valueQuantity');
    expect(searchParam('Observation', 'patient')).toMatchObject({ type: 'reference', paths: ['subject'], targets: ['Patient'] });
    expect(searchParam('Observation', '_id')?.paths).toEqual(['id']);
    expect(searchParam('Condition', 'onset-date')?.paths).toEqual(['onsetDateTime', 'onsetPeriod']);
    // A test of an element reads that element; an untyped choice reaches every type it may hold.
    expect(searchParam('Patient', 'deceased')?.paths).toEqual(['deceasedBoolean', 'deceasedDateTime']);
    expect(searchParam('Observation', 'date')?.paths).toEqual(['effectiveDateTime', 'effectivePeriod', 'effectiveTiming', 'effectiveInstant']);
    expect(searchParam('Specimen', 'collected')?.paths).toEqual(['collection.collectedDateTime', 'collection.collectedPeriod']);
    // A composite searches its components; `%resource` components from the resource root.
    expect(searchParam('Observation', 'code-value-quantity')?.paths).toEqual(['code', 'valueQuantity']);
    expect(searchParam('MolecularSequence', 'chromosome-variant-coordinate')?.paths).toEqual(['referenceSeq.chromosome', 'variant.start', 'variant.end']);
    // Not an element path: refused, with the reason.
    expect(searchParam('Patient', '_content')).toMatchObject({ paths: [], refused: expect.stringContaining('full-text') });
  });

  it('every R4 search parameter is enforceable by its element paths, or refused with a stated reason', () => {
    const t = JSON.parse(readFileSync(join(DEFAULT_OUT_DIR, 'types.json'), 'utf8')) as { types: Record<string, Record<string, { types: string[] }>> };
    const all = JSON.parse(readFileSync(join(DEFAULT_OUT_DIR, 'search-params.json'), 'utf8')) as Record<string, Record<string, { paths: string[]; refused?: string }>>;
    let walked = 0;
    let refused = 0;
    for (const [type, params] of Object.entries(all)) {
      for (const [code, info] of Object.entries(params)) {
        walked++;
        if (info.paths.length === 0) {
          refused++;
          expect(info.refused, `${type}.${code}`).toMatch(/^.{20,}$/);
          continue;
        }
        expect(info.refused, `${type}.${code}`).toBeUndefined();
        for (const path of info.paths) {
          // Each path exists in the R4 structure, step by step.
          let owner = type;
          const steps = path.split('.');
          steps.forEach((step, i) => {
            const el = t.types[owner]?.[step];
            expect(el, `${type}.${code}: ${path}`).toBeDefined();
            if (i < steps.length - 1) owner = el!.types[0]!;
          });
        }
      }
    }
    // All of R4 (1,709 parameter/base pairs in 4.0.1), three of them refused (_text, _content, _query).
    expect(walked).toBeGreaterThan(1700);
    expect(refused).toBeLessThan(4);
  });

  it('parseSearchPath rejects non-paths and paths that do not exist', () => {
    const t = JSON.parse(readFileSync(join(DEFAULT_OUT_DIR, 'types.json'), 'utf8'));
    expect(parseSearchPath('(Observation.value as Quantity)', 'Observation', t)).toBe('valueQuantity');
    expect(parseSearchPath('Observation.subject.where(resolve() is Patient)', 'Observation', t)).toBe('subject');
    expect(parseSearchPath('Patient.extension(\'http://x\')', 'Patient', t)).toBeUndefined();
    expect(parseSearchPath('Patient.nosuch', 'Patient', t)).toBeUndefined();
    expect(parseSearchPath('Practitioner.name', 'Patient', t)).toBeUndefined();
  });

  it('derives patient compartment paths from the CompartmentDefinition', () => {
    expect(patientReferencePaths('Observation')).toEqual(['performer', 'subject']);
    expect(patientReferencePaths('Patient')).toEqual(['link.other']);
    expect(patientReferencePaths('Encounter')).toEqual(['subject']);
    expect(patientReferencePaths('Practitioner')).toEqual([]);
  });
});
