/**
 * The profile itself, on every type: generated resources of a broad set of R4 types (clinical,
 * administrative, financial, questionnaires), identifiers planted in every data-type slot,
 * extensions and contained resources included, de-identified by src/redact/deidentify.ts and
 * scanned as a caller would receive them. The end-to-end test covers what the shipped researcher
 * may see; this covers the types a hospital might grant a de-identified data set.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { typeElements } from '../../src/fhir/tables.js';
import { deidentifyResource } from '../../src/redact/deidentify.js';
import { resolvePseudonym } from '../../src/redact/pseudonym.js';
import { arbResourceWithPlants, DEFAULT_TYPES } from './generate.js';
import { scan, summarize } from './scanner.js';

const NOW = new Date('2026-06-15T12:00:00Z');
const KEY = new TextEncoder().encode('profile-property-key-0123456789abcdefghij');
const ctx = { restrictedZip3: new Set(['036', '890']), pseudonymKey: KEY, now: () => NOW };
const OPTS = { gatewayBase: 'http://127.0.0.1:1/fhir', now: NOW };
const REFS = ['Patient/pat-planted-0001', 'Encounter/enc-planted-0001', 'Practitioner/prac-planted-0001'];
const RUNS = Number(process.env.DEID_PROFILE_RUNS ?? 300);

/** Every key of the output is an element its type defines: nothing invented, nothing passed blind. */
function definedKeysOnly(v: unknown, type: string, path: string, bad: string[]): void {
  if (Array.isArray(v)) {
    for (const x of v) definedKeysOnly(x, type, path, bad);
    return;
  }
  if (v === null || typeof v !== 'object') return;
  const o = v as Record<string, unknown>;
  const t = typeof o.resourceType === 'string' ? o.resourceType : type;
  const els = typeElements(t);
  if (els === undefined) return;
  for (const [k, x] of Object.entries(o)) {
    if (k === 'resourceType') continue;
    const info = els[k.startsWith('_') ? k.slice(1) : k];
    if (info === undefined) bad.push(`${path}.${k}`);
    else if (info.types.length === 1) definedKeysOnly(x, k.startsWith('_') ? 'Element' : info.types[0]!, `${path}.${k}`, bad);
  }
}

describe('safe-harbor over generated resources of many types', () => {
  it(`leaves nothing the scanner can find (${RUNS} runs over ${DEFAULT_TYPES.length} types)`, () => {
    fc.assert(
      fc.property(arbResourceWithPlants(DEFAULT_TYPES, { refs: REFS, now: NOW }), ({ resource, seeds }) => {
        const out = deidentifyResource(resource as unknown as Record<string, unknown>, 'safe-harbor', ctx).resource;
        const findings = scan({ headers: {}, body: JSON.stringify(out) }, [...seeds, ...REFS.map((r) => r.split('/')[1]!)], OPTS);
        expect(findings, summarize(findings)).toEqual([]);
        const bad: string[] = [];
        definedKeysOnly(out, out.resourceType as string, out.resourceType as string, bad);
        expect(bad).toEqual([]);
        // The id is still the resource's, for whoever holds the key.
        if (typeof resource.id === 'string') expect(resolvePseudonym([KEY], resource.resourceType as string, out.id as string)).toBe(resource.id);
      }),
      { numRuns: RUNS },
    );
  });

  it('the same resources without the profile are full of findings (the property can fail)', () => {
    fc.assert(
      fc.property(arbResourceWithPlants(DEFAULT_TYPES, { refs: REFS, now: NOW }), ({ resource, seeds }) => {
        expect(scan({ headers: {}, body: JSON.stringify(resource) }, seeds, OPTS).length).toBeGreaterThan(0);
      }),
      { numRuns: 30 },
    );
  });
});
