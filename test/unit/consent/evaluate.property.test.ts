/**
 * Properties of the consent judge over generated consents (FHIR JSON, read by the real parser),
 * resources, accesses and policies:
 *
 * 1. deny-wins is monotone: adding a consent never releases what was withheld, except a permit the
 *    resource needed (Part 2 data, an authorization), which names the added consent;
 * 2. a patient without consents: everything but Part 2 data released (and authorization-needing
 *    purposes withheld), Part 2 data never released but by break-glass where the policy allows it
 *    (and no authorization is needed);
 * 3. a resource naming two patients is released exactly when it is released for each alone;
 * 4. break-glass never releases less than the same access without it;
 * 5. an element the gateway does not know, or a modifierExtension, anywhere in a consent makes it
 *    unevaluable (never a consent that permits), and its patient's data withheld.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isPart2, judgeResource } from '../../../src/consent/evaluate.js';
import { consentsByPatient, parseConsent } from '../../../src/consent/parse.js';
import type { CompiledConsent, ConsentAccess, ConsentVerdict } from '../../../src/consent/types.js';

type R = Record<string, unknown>;

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const LOINC = 'http://loinc.org';
const NOW = Date.parse('2025-06-15T12:00:00Z');
const RUNS = { numRuns: 400 };

const PARENT: Record<string, string> = { COC: 'TREAT' };
const PURPOSES = ['TREAT', 'COC', 'HPAYMT', 'HMARKT'];
const ACTORS = ['Practitioner/prac-1', 'Practitioner/prac-2', 'Organization/org-1'];
const LABELS = [
  { system: ACT, code: 'SUD' },
  { system: ACT, code: 'PSY' },
  { system: CONF, code: 'R' },
  { system: ACT, code: '42CFRPart2' },
];
const CODINGS = [{ system: LOINC, code: '1' }, { system: LOINC, code: '2' }, { code: '1' }];
const DATA_REFS = ['Encounter/enc-1', 'Observation/obs-1', 'Condition/cond-1'];

function policyOf(o: { overlap: 'deny-wins' | 'latest'; overrides: boolean; part2BreakGlass: boolean }): CompiledConsent {
  return {
    ttlMs: 60_000,
    maxPatients: 1000,
    overlap: o.overlap,
    exemptPurposes: new Set(['PATRQT']),
    breakGlassOverrides: o.overrides,
    part2: { labels: [`${ACT}|SUD`, `${CONF}|SUD`, `${ACT}|42CFRPart2`], notice: 'notice', breakGlass: o.part2BreakGlass },
  };
}

// ---- Generators

const some = <T>(xs: readonly T[]) => fc.subarray([...xs], { minLength: 1 });
const period = fc.constantFrom<R>({ start: '2025-01-01' }, { end: '2025-03-01' }, { start: '2025-06-01', end: '2025-12-31' }, { start: '2026' }, { end: '2025-06-15' });

/** Provision conditions, each present or not. */
const conditions = fc.record(
  {
    period,
    actor: some(ACTORS).map((xs) => xs.map((reference) => ({ role: { coding: [{ code: 'PRCP' }] }, reference: { reference } }))),
    purpose: some(PURPOSES).map((xs) => xs.map((code) => ({ system: REASON, code }))),
    class: some(['Observation', 'Condition']).map((xs) => xs.map((code) => ({ code }))),
    securityLabel: some(LABELS),
    code: some(CODINGS).map((coding) => [{ coding }]),
    data: some(DATA_REFS).chain((refs) => fc.tuple(...refs.map((reference) => fc.constantFrom('instance', 'related', 'dependents').map((meaning) => ({ meaning, reference: { reference } }))))),
    action: some(['access', 'use', 'collect']).map((xs) => xs.map((code) => ({ coding: [{ system: ACTION, code }] }))),
  },
  { requiredKeys: [] },
);

function provision(depth: number, root: boolean): fc.Arbitrary<R> {
  const children = depth === 0 ? fc.constant([]) : fc.array(provision(depth - 1, false), { maxLength: 2 });
  const type = root ? fc.option(fc.constantFrom('permit', 'deny'), { nil: undefined }) : fc.constantFrom('permit', 'deny');
  return fc.tuple(type, conditions, children).map(([t, c, kids]) => ({
    ...(t === undefined ? {} : { type: t }),
    ...c,
    ...(kids.length === 0 ? {} : { provision: kids }),
  }));
}

/** A valid Consent of `patient` (the id is set by `withIds`). */
const consentBody = fc.record(
  {
    policyRule: fc.constantFrom('OPTIN', 'OPTOUT', 'OPTOUTE', 'OPTINR').map((code) => ({ coding: [{ system: ACT, code }] })),
    dateTime: fc.constantFrom('2024', '2025-01-01', '2025-03-01T10:00:00Z', '2025-03-01T10:00:00Z'),
    provision: provision(2, true),
  },
  { requiredKeys: [] },
);
const SCOPE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
function asConsent(body: R, id: string, patient: string): R {
  return { resourceType: 'Consent', id, status: 'active', scope: SCOPE, patient: { reference: `Patient/${patient}` }, ...body };
}
const consents = fc.array(consentBody, { maxLength: 3 });

const resource = fc
  .record({
    type: fc.constantFrom('Observation', 'Condition'),
    id: fc.constantFrom('obs-1', 'cond-1', 'x-1'),
    code: fc.subarray(CODINGS),
    security: fc.subarray(LABELS),
    encounter: fc.boolean(),
  })
  .map(({ type, id, code, security, encounter }) => ({
    resourceType: type,
    id,
    ...(code.length === 0 ? {} : { code: { coding: code } }),
    ...(security.length === 0 ? {} : { meta: { security } }),
    subject: { reference: 'Patient/pat-1' },
    ...(encounter ? { encounter: { reference: 'Encounter/enc-1' } } : {}),
  }));

const accessArb = fc
  .record({
    purpose: fc.constantFrom(...PURPOSES),
    actors: fc.constantFrom([], ['Practitioner/prac-1'], ['Practitioner/prac-2']),
    breakGlass: fc.boolean(),
    authorizationRequired: fc.boolean(),
  })
  .map(({ purpose, actors, breakGlass, authorizationRequired }): ConsentAccess => {
    const purposes = new Set<string>();
    for (let p: string | undefined = purpose; p !== undefined; p = PARENT[p]) purposes.add(p);
    return { purpose, purposes, actors, now: NOW, breakGlass, authorizationRequired };
  });

const policyArb = fc.record({ overlap: fc.constantFrom<'deny-wins' | 'latest'>('deny-wins', 'latest'), overrides: fc.boolean(), part2BreakGlass: fc.boolean() }).map(policyOf);
const denyWinsArb = fc.record({ overlap: fc.constant<'deny-wins'>('deny-wins'), overrides: fc.boolean(), part2BreakGlass: fc.boolean() }).map(policyOf);

/** Judges `r` for `patients`, each with its consents (bodies) as the upstream would send them. */
function judge(r: R, byPatient: Record<string, readonly R[]>, access: ConsentAccess, policy: CompiledConsent): ConsentVerdict {
  const raw = Object.entries(byPatient).flatMap(([p, bodies]) => bodies.map((b, i) => (b.resourceType === 'Consent' ? b : asConsent(b, `${p}-c${i}`, p))));
  const m = consentsByPatient(raw, Object.keys(byPatient));
  return judgeResource(r, Object.keys(byPatient), (p) => m.get(p), access, policy);
}

describe('consent judge properties', () => {
  it('the generated consents are all readable', () => {
    fc.assert(
      fc.property(consentBody, (b) => {
        expect(parseConsent(asConsent(b, 'c', 'pat-1')).kind).toBe('consent');
      }),
      RUNS,
    );
  });

  it('(1) deny-wins: adding a consent never releases what was withheld, but for a permit the resource needed', () => {
    const extra = fc.tuple(consentBody, fc.boolean()).map(([b, broken]) => asConsent(broken ? { ...b, provision: { ...(b.provision as R), dataPeriod: { end: '2020' } } } : b, 'extra', 'pat-1'));
    fc.assert(
      fc.property(consents, extra, resource, accessArb, denyWinsArb, (cs, x, r, a, policy) => {
        const before = judge(r, { 'pat-1': cs }, a, policy);
        const after = judge(r, { 'pat-1': [...cs, x] }, a, policy);
        if (before.release || !after.release) return;
        // Released only now: a Part 2 or authorization permit the added consent gave.
        expect(['part2-without-consent', 'authorization-missing']).toContain(before.why);
        expect(after.permitted).toContain('Consent/extra');
        expect(isPart2(r, policy) || a.authorizationRequired).toBe(true);
      }),
      RUNS,
    );
  });

  it('(2) a patient without consents: all but Part 2 data released; Part 2 data only by break-glass where allowed', () => {
    fc.assert(
      fc.property(resource, accessArb, policyArb, (r, a, policy) => {
        const v = judge(r, { 'pat-1': [] }, a, policy);
        if (isPart2(r, policy)) {
          // Break-glass stands in for a Part 2 consent where allowed, never for an authorization.
          const emergency = a.breakGlass && policy.part2.breakGlass;
          expect(v.release).toBe(emergency && !a.authorizationRequired);
          if (v.release) expect(v.part2).toBe(true);
          else expect(v.why).toBe(emergency ? 'authorization-missing' : 'part2-without-consent');
        } else if (a.authorizationRequired) {
          expect(v).toEqual({ release: false, why: 'authorization-missing' });
        } else {
          expect(v).toEqual({ release: true });
          expect(Object.isFrozen(v)).toBe(true);
        }
      }),
      RUNS,
    );
  });

  it('(3) a resource naming two patients is released exactly when it is released for each alone', () => {
    fc.assert(
      fc.property(consents, consents, resource, accessArb, policyArb, (c1, c2, r, a, policy) => {
        const both = judge({ ...r, performer: [{ reference: 'Patient/pat-2' }] }, { 'pat-1': c1, 'pat-2': c2 }, a, policy);
        const one = judge(r, { 'pat-1': c1 }, a, policy);
        const two = judge(r, { 'pat-2': c2 }, a, policy);
        expect(both.release).toBe(one.release && two.release);
      }),
      RUNS,
    );
  });

  it('(4) break-glass never releases less than without it', () => {
    const broken = fc.option(consentBody.map((b) => ({ ...b, provision: { dataPeriod: { end: '2020' } } })), { nil: undefined });
    fc.assert(
      fc.property(consents, broken, resource, accessArb, policyArb, (cs, bad, r, a, policy) => {
        const all = bad === undefined ? cs : [...cs, bad];
        const without = judge(r, { 'pat-1': all }, { ...a, breakGlass: false }, policy);
        const withBg = judge(r, { 'pat-1': all }, { ...a, breakGlass: true }, policy);
        if (without.release) expect(withBg.release).toBe(true);
      }),
      RUNS,
    );
  });

  it('(5) an unknown element or a modifierExtension anywhere: unevaluable, never a permit', () => {
    const UNKNOWN = ['decision', 'grantee', 'subject', 'controller', 'regulatoryBasis', 'foo', 'expression'];
    const mutation = fc.record({ at: fc.nat(), modifier: fc.boolean(), key: fc.constantFrom(...UNKNOWN) });
    fc.assert(
      fc.property(consentBody, mutation, consents, resource, accessArb, policyArb, (body, m, others, r, a, policy) => {
        const c = structuredClone(asConsent(body, 'mutant', 'pat-1'));
        const places = targets(c);
        const target = places[m.at % places.length];
        if (m.modifier) target.modifierExtension = [{ url: 'https://example.org/fhir/StructureDefinition/only-if', valueBoolean: true }];
        else target[m.key] = { text: 'something the gateway cannot read' };
        const o = parseConsent(c);
        expect(o.kind).toBe('unevaluable');
        if (o.kind === 'unevaluable') expect(o.patient).toBe('pat-1');
        const v = judge(r, { 'pat-1': [...others, c] }, { ...a, breakGlass: false }, policy);
        expect(v).toEqual({ release: false, why: 'unevaluable', unevaluable: ['pat-1'] });
      }),
      RUNS,
    );
  });
});

/** The objects of a Consent an element may be added to: the Consent, its provisions, actors and data. */
function targets(c: R): R[] {
  const out: R[] = [c];
  const visit = (p: unknown) => {
    if (p === null || typeof p !== 'object') return;
    const prov = p as R;
    out.push(prov);
    for (const a of (prov.actor as R[] | undefined) ?? []) out.push(a);
    for (const d of (prov.data as R[] | undefined) ?? []) out.push(d);
    for (const child of (prov.provision as unknown[] | undefined) ?? []) visit(child);
  };
  visit(c.provision);
  return out;
}
