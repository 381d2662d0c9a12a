// Property tests for the redaction engine over random Patients and Bundles carrying unique sentinels.
import fc from 'fast-check';
import type { Bundle, Patient } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { redactResource } from '../../src/redact/apply.js';
import { compileElementPlan } from '../../src/redact/compile.js';
import { filterResponse } from '../../src/redact/response.js';
import { deepFreeze, redactCtx, resourcePlan, responseCtx, UPSTREAM } from '../unit/redact/helpers.js';

// Each selector, and the sentinel prefixes that must vanish when it is removed.
const REMOVABLE: Record<string, readonly string[]> = {
  name: ['NAME'],
  telecom: ['TEL'],
  address: ['ADDR', 'CITY'],
  'address.city': ['CITY'],
  '@HumanName': ['NAME', 'CNAME', 'XNAME'],
  '@ContactPoint': ['TEL', 'CTEL'],
  identifier: ['IDV'],
  'identifier[system=http://hl7.org/fhir/sid/us-ssn]': ['SSN'],
  contact: ['CNAME', 'CTEL'],
  '@Reference.display': ['DISP'],
  extension: ['XNAME'],
  text: ['NARR'],
};
const SELECTORS = Object.keys(REMOVABLE);
const TRANSFORMS = [
  { select: 'birthDate', apply: 'year' },
  { select: 'birthDate', apply: 'age90' },
  { select: 'address.postalCode', apply: 'zip3' },
  { select: 'gender', apply: 'mask' },
  { select: '@date', apply: 'year' },
] as const;

const tag = (p: string) => fc.integer({ min: 0, max: 1e9 }).map((n) => `${p}_${n}_SENTINEL`);

const patientArb: fc.Arbitrary<Patient> = fc
  .record(
    {
      id: fc.stringMatching(/^[A-Za-z0-9-]{1,12}$/),
      text: tag('NARR').map((t) => ({ status: 'generated' as const, div: `<div xmlns="http://www.w3.org/1999/xhtml">${t}</div>` })),
      name: fc.array(fc.record({ family: tag('NAME'), given: fc.array(tag('NAME'), { maxLength: 2 }) }), { minLength: 1, maxLength: 2 }),
      telecom: fc.array(fc.record({ system: fc.constant('phone' as const), value: tag('TEL') }), { minLength: 1, maxLength: 2 }),
      address: fc.array(fc.record({ line: fc.array(tag('ADDR'), { maxLength: 1 }), city: tag('CITY'), state: fc.constant('MA'), postalCode: fc.stringMatching(/^\d{5}$/) }), {
        minLength: 1,
        maxLength: 2,
      }),
      identifier: fc.array(
        fc.oneof(
          tag('SSN').map((v) => ({ system: 'http://hl7.org/fhir/sid/us-ssn', value: v })),
          tag('IDV').map((v) => ({ system: 'urn:mrn', value: v })),
        ),
        { minLength: 1, maxLength: 3 },
      ),
      contact: fc.array(fc.record({ name: fc.record({ family: tag('CNAME') }), telecom: fc.array(fc.record({ value: tag('CTEL') }), { maxLength: 1 }) }), { maxLength: 2 }),
      managingOrganization: tag('DISP').map((d) => ({ reference: 'Organization/o1', display: d })),
      extension: fc.array(tag('XNAME').map((f) => ({ url: 'http://example.org/alias', valueHumanName: { family: f } })), { maxLength: 1 }),
      gender: fc.constantFrom('male' as const, 'female' as const, 'other' as const),
      birthDate: fc.date({ min: new Date('1900-01-01'), max: new Date('2020-12-31'), noInvalidDate: true }).map((d) => d.toISOString().slice(0, 10)),
    },
    { requiredKeys: ['id'] },
  )
  .map((r) => ({ resourceType: 'Patient' as const, ...r }));

const ruleArb = fc.record({
  remove: fc.subarray(SELECTORS),
  transforms: fc.subarray([...TRANSFORMS]),
});

/** Key paths (array indexes dropped) present in a value. */
function keyPaths(v: unknown, prefix = '', out = new Set<string>()): Set<string> {
  if (Array.isArray(v)) for (const x of v) keyPaths(x, prefix, out);
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      const p = prefix ? `${prefix}.${k}` : k;
      out.add(p);
      keyPaths(x, p, out);
    }
  }
  return out;
}
const MARKING_PATHS = new Set(['meta', 'meta.security', 'meta.security.system', 'meta.security.code']);

function sentinels(v: unknown, prefixes: readonly string[]): string[] {
  const json = JSON.stringify(v);
  const found: string[] = [];
  for (const p of prefixes) {
    // Prefixes overlap (TEL, CTEL): a sentinel starts right after a non-letter.
    const re = new RegExp(`(?<![A-Z])${p}_\\d+_SENTINEL`, 'g');
    for (const m of json.match(re) ?? []) found.push(m);
  }
  return found;
}

describe('redaction properties', () => {
  it('a removed element never survives anywhere in the output', () => {
    fc.assert(
      fc.property(patientArb, ruleArb, (p, rule) => {
        const plan = compileElementPlan('Patient', rule, 'prop');
        const out = redactResource(deepFreeze(p), plan, redactCtx()).resource;
        const mustGo = rule.remove.flatMap((s) => REMOVABLE[s]);
        expect(sentinels(out, mustGo)).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('never adds keys other than meta.security markings', () => {
    fc.assert(
      fc.property(patientArb, ruleArb, (p, rule) => {
        const out = redactResource(deepFreeze(p), compileElementPlan('Patient', rule, 'prop'), redactCtx()).resource;
        const before = keyPaths(p);
        for (const k of keyPaths(out)) if (!MARKING_PATHS.has(k)) expect(before.has(k), k).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('is idempotent (pseudonyms aside: a keyed hash of a hash is a new hash)', () => {
    fc.assert(
      fc.property(patientArb, ruleArb, (p, rule) => {
        const plan = compileElementPlan('Patient', rule, 'prop');
        const once = redactResource(deepFreeze(p), plan, redactCtx()).resource;
        const twice = redactResource(deepFreeze(structuredClone(once)), plan, redactCtx()).resource;
        expect(twice).toEqual(once);
      }),
      { numRuns: 300 },
    );
  });

  it('allow-lists: only listed elements (and resourceType, id, meta) survive', () => {
    const listable = ['name', 'telecom', 'address', 'address.state', 'identifier', 'gender', 'birthDate', 'contact'];
    fc.assert(
      fc.property(patientArb, fc.subarray(listable), (p, elements) => {
        const out = redactResource(deepFreeze(p), compileElementPlan('Patient', { elements }, 'prop'), redactCtx()).resource as unknown as Record<string, unknown>;
        const tops = new Set(elements.map((e) => e.split('.')[0]));
        for (const k of Object.keys(out)) expect(['resourceType', 'id', 'meta', ...tops]).toContain(k);
      }),
      { numRuns: 200 },
    );
  });

  it('Bundles: withheld entries never leak, input is never mutated, total goes when anything was withheld', () => {
    const entryArb = fc.record({ p: patientArb, label: fc.constantFrom(undefined, 'R', 'N', 'PSY') });
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 8 }), ruleArb, fc.constantFrom('hide' as const, 'announce' as const), (generated, rule, mode) => {
        // Family names made unique per entry: two generated patients may share a sentinel name, and
        // then a released one would carry a withheld one's name without anything having leaked.
        const items = generated.map(({ p, label }, i) => ({
          label,
          p: { ...p, ...(p.name ? { name: p.name.map((n) => (n.family === undefined ? n : { ...n, family: `${n.family}~E${i}~` })) } : {}) },
        }));
        const bundle: Bundle = {
          resourceType: 'Bundle',
          type: 'searchset',
          total: items.length,
          entry: items.map(({ p, label }, i) => ({
            fullUrl: `${UPSTREAM}/Patient/${p.id}`,
            resource: {
              ...p,
              id: `${p.id}-${i}`,
              ...(label ? { meta: { security: [{ system: label === 'PSY' ? 'http://terminology.hl7.org/CodeSystem/v3-ActCode' : 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: label }] } } : {}),
            },
          })),
        };
        const frozen = deepFreeze(structuredClone(bundle));
        const ctx = responseCtx({ Patient: resourcePlan('Patient', rule, ['R', 'PSY']) }, { withheldMode: mode });
        const r = filterResponse(frozen, ctx);
        expect(r.kind).toBe('ok');
        if (r.kind !== 'ok') return;
        const out = r.body as Bundle;
        const withheld = items.filter((x) => x.label === 'R' || x.label === 'PSY');
        expect(r.stats.resourcesWithheld).toBe(withheld.length);
        for (const w of withheld) {
          for (const n of w.p.name ?? []) expect(JSON.stringify(out)).not.toContain(n.family);
        }
        expect(out.total === undefined).toBe(withheld.length > 0);
        expect(JSON.stringify(out)).not.toContain('upstream.internal');
        const outcomes = (out.entry ?? []).filter((e) => e.search?.mode === 'outcome').length;
        expect(outcomes).toBe(mode === 'announce' && withheld.length > 0 ? 1 : 0);
        expect(sentinels(out, rule.remove.flatMap((s) => REMOVABLE[s]))).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });
});
