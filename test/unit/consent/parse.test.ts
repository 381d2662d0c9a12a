/**
 * Reading Consents (src/consent/parse.ts): every element the gateway enforces, every cause that
 * makes a consent unevaluable (its patient's data withheld, never the consent ignored), what is
 * ignored, and the grouping of a search's Consents by patient. The examples are written as a
 * consent-management system would send them (the R4 examples are not among the fixtures); the
 * explain lines (src/consent/describe.ts) are checked on the same examples.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { describeConsents } from '../../../src/consent/describe.js';
import { consentsByPatient, dateRange, type ParseOutcome, parseConsent } from '../../../src/consent/parse.js';
import type { ParsedConsent, PatientConsents } from '../../../src/consent/types.js';

type R = Record<string, unknown>;

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const SCOPE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
const CATEGORY = [{ coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] }];
const rule = (code: string) => ({ coding: [{ system: ACT, code }] });
const action = (code: string) => ({ coding: [{ system: ACTION, code }] });
const role = (code: string) => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code }] });
const ms = (iso: string) => Date.parse(iso);

/** A minimal valid opt-out Consent of pat-1, with `extra` merged in. */
function consent(extra: R = {}): R {
  return {
    resourceType: 'Consent',
    id: 'c1',
    status: 'active',
    scope: SCOPE,
    category: CATEGORY,
    patient: { reference: 'Patient/pat-1' },
    policyRule: rule('OPTOUT'),
    ...extra,
  };
}

/** A Consent whose root provision holds `provision` as its only nested provision. */
const nested = (provision: R, extra: R = {}) => consent({ provision: { provision: [provision] }, ...extra });

function parsed(resource: unknown): ParsedConsent {
  const o = parseConsent(resource);
  if (o.kind !== 'consent') throw new Error(`not parsed: ${JSON.stringify(o)}`);
  return o.consent;
}
function reason(resource: unknown): string {
  const o = parseConsent(resource);
  if (o.kind !== 'unevaluable') throw new Error(`not unevaluable: ${JSON.stringify(o)}`);
  return o.consent.reason;
}
const kind = (o: ParseOutcome) => o.kind;

// A general opt-out (HIE style) with one practitioner the patient still lets in.
const OPT_OUT: R = {
  resourceType: 'Consent',
  id: 'optout-1',
  meta: { versionId: '2', lastUpdated: '2025-01-02T14:30:00Z' },
  text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Opt out, except Dr. Reyes</div>' },
  status: 'active',
  scope: SCOPE,
  category: CATEGORY,
  patient: { reference: 'Patient/pat-1', display: 'Alice Example' },
  dateTime: '2025-01-02T09:30:00-05:00',
  performer: [{ reference: 'Patient/pat-1' }],
  organization: [{ reference: 'Organization/org-1' }],
  sourceAttachment: { contentType: 'application/pdf', title: 'Signed opt-out form', url: 'https://docs.example.org/forms/987' },
  policy: [{ authority: 'https://hospital.example.org', uri: 'https://hospital.example.org/policies/hie-opt-out' }],
  policyRule: rule('OPTOUT'),
  provision: {
    period: { start: '2025-01-01' },
    provision: [
      {
        type: 'permit',
        actor: [{ role: role('PRCP'), reference: { reference: 'Practitioner/prac-1', display: 'Dr. Reyes' } }],
        action: [action('access')],
      },
    ],
  },
};

// A 42 CFR Part 2 consent: SUD records to one named recipient, for treatment, for a year.
const PART2: R = {
  resourceType: 'Consent',
  id: 'part2-1',
  status: 'active',
  scope: SCOPE,
  category: [{ coding: [{ system: 'http://loinc.org', code: '64292-6', display: 'Release of information consent' }] }],
  patient: { reference: 'https://fhir.example.org/r4/Patient/pat-1' },
  dateTime: '2025-03-01',
  organization: [{ reference: 'Organization/sud-program' }],
  policy: [{ uri: 'https://www.ecfr.gov/current/title-42/chapter-I/subchapter-A/part-2' }],
  policyRule: rule('OPTIN'),
  provision: {
    period: { start: '2025-03-01', end: '2026-02-28' },
    provision: [
      {
        type: 'permit',
        actor: [{ role: role('IRCP'), reference: { reference: 'https://fhir.example.org/r4/Practitioner/prac-1' } }],
        action: [action('disclose'), action('use')],
        purpose: [{ system: REASON, code: 'TREAT', display: 'treatment' }],
        securityLabel: [
          { system: ACT, code: '42CFRPart2' },
          { system: ACT, code: 'SUD' },
        ],
      },
    ],
  },
};

// Opt-in, but nothing about one encounter's data goes to payers.
const NO_PAYER: R = {
  resourceType: 'Consent',
  id: 'nopay-1',
  status: 'active',
  scope: SCOPE,
  category: CATEGORY,
  patient: { reference: 'Patient/pat-2' },
  dateTime: '2025-05-10T08:00:00Z',
  policyRule: { coding: [{ system: ACT, code: 'OPTIN' }], text: 'opt in' },
  provision: {
    provision: [
      {
        type: 'deny',
        purpose: [{ system: REASON, code: 'HPAYMT' }],
        data: [{ meaning: 'related', reference: { reference: 'Encounter/enc-1' } }],
      },
    ],
  },
};

describe('realistic consents', () => {
  it('an opt-out with a permit for one practitioner', () => {
    expect(parsed(OPT_OUT)).toEqual({
      id: 'Consent/optout-1',
      patient: 'pat-1',
      dateTime: ms('2025-01-02T14:30:00Z'),
      base: 'deny',
      policyRule: 'OPTOUT',
      period: { start: ms('2025-01-01T00:00:00Z') },
      root: { provisions: [{ type: 'permit', actors: ['Practitioner/prac-1'], provisions: [] }] },
    });
  });

  it('a Part 2 consent naming a recipient and a purpose', () => {
    expect(parsed(PART2)).toEqual({
      id: 'Consent/part2-1',
      patient: 'pat-1',
      dateTime: ms('2025-03-01T00:00:00Z'),
      base: 'permit',
      policyRule: 'OPTIN',
      period: { start: ms('2025-03-01T00:00:00Z'), end: ms('2026-03-01T00:00:00Z') },
      root: {
        provisions: [
          {
            type: 'permit',
            actors: ['Practitioner/prac-1'],
            purposes: ['TREAT'],
            labels: [`${ACT}|42CFRPart2`, `${ACT}|SUD`],
            provisions: [],
          },
        ],
      },
    });
  });

  it('a deny of payment purposes on one encounter and what relates to it', () => {
    expect(parsed(NO_PAYER)).toEqual({
      id: 'Consent/nopay-1',
      patient: 'pat-2',
      dateTime: ms('2025-05-10T08:00:00Z'),
      base: 'permit',
      policyRule: 'OPTIN',
      root: {
        provisions: [{ type: 'deny', purposes: ['HPAYMT'], data: [{ meaning: 'related', reference: 'Encounter/enc-1' }], provisions: [] }],
      },
    });
  });

  it('explain shows them as the gateway reads them', () => {
    const now = ms('2025-06-15T12:00:00Z');
    const [optOut, part2, noPay] = [OPT_OUT, PART2, NO_PAYER].map(parsed);
    const expired = parsed(consent({ id: 'c3', provision: { period: { start: '2024-01-01', end: '2024-12-31' } } }));
    const lines = describeConsents({ patient: 'pat-1', consents: [optOut, part2, noPay, expired], unevaluable: [{ id: 'Consent/c2', reason: 'provision.dataPeriod is not supported' }] }, now);
    expect(lines).toEqual([
      'Consent/optout-1  active, in force (period 2025-01-01..)  base deny (OPTOUT)  dated 2025-01-02T14:30:00Z',
      '  permit  actor Practitioner/prac-1',
      'Consent/part2-1  active, in force (period 2025-03-01..2026-02-28)  base permit (OPTIN)  dated 2025-03-01',
      '  permit  actor Practitioner/prac-1  purpose TREAT  label 42CFRPart2,SUD',
      'Consent/nopay-1  active, in force  base permit (OPTIN)  dated 2025-05-10T08:00:00Z',
      '  deny  purpose HPAYMT  data related Encounter/enc-1',
      'Consent/c3  expired 2024-12-31: no effect',
      "Consent/c2  UNEVALUABLE: provision.dataPeriod is not supported -> patient's data withheld from every caller but break-glass",
    ]);
  });

  it('explain shows root conditions, nesting, periods not in force and consents not yet in force', () => {
    const now = ms('2025-06-15T12:00:00Z');
    const c = parsed(
      consent({
        policyRule: undefined,
        provision: {
          type: 'deny',
          class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Condition' }],
          provision: [
            {
              type: 'permit',
              period: { start: '2025-07-01T08:00:00Z' },
              purpose: [{ code: 'TREAT' }],
              provision: [{ type: 'deny', code: [{ coding: [{ system: 'http://snomed.info/sct', code: '66590003' }, { code: 'X1' }] }] }],
            },
          ],
        },
      }),
    );
    const future = parsed(consent({ id: 'c9', provision: { period: { start: '2026' } } }));
    expect(describeConsents({ patient: 'pat-1', consents: [c, future], unevaluable: [] }, now)).toEqual([
      'Consent/c1  active, in force  no base decision',
      '  where it applies: deny  class Condition  (elsewhere: no opinion)',
      '    permit  period 2025-07-01T08:00:00Z.. (not now)  purpose TREAT',
      '      deny  code http://snomed.info/sct|66590003,X1 (any system)',
      'Consent/c9  not yet in force (from 2026-01-01): no effect',
    ]);
    expect(describeConsents({ patient: 'pat-1', consents: [], unevaluable: [] }, now)).toEqual([]);
  });
});

describe('elements', () => {
  it('base: policyRule codes, the root type, or no opinion', () => {
    expect(parsed(consent({ policyRule: rule('OPTIN') })).base).toBe('permit');
    expect(parsed(consent({ policyRule: rule('OPTINR') })).base).toBe('permit');
    expect(parsed(consent({ policyRule: rule('OPTOUT') })).base).toBe('deny');
    expect(parsed(consent({ policyRule: rule('OPTOUTE') })).base).toBe('deny');
    // Older spellings of v3-ActCode, and a code without a system.
    expect(parsed(consent({ policyRule: { coding: [{ system: 'http://hl7.org/fhir/v3/ActCode', code: 'OPTIN' }] } })).base).toBe('permit');
    expect(parsed(consent({ policyRule: { coding: [{ code: 'OPTOUT' }] } })).base).toBe('deny');
    // A known code among others.
    expect(parsed(consent({ policyRule: { coding: [{ system: 'https://local.example/rules', code: 'X' }, { system: ACT, code: 'OPTIN' }] } })).base).toBe('permit');
    // No known rule: the root provision's type decides where the root applies, nothing elsewhere
    // (a root deny naming one actor must not deny everyone).
    const rootType = parsed(consent({ policyRule: undefined, provision: { type: 'deny' } }));
    expect(rootType.base).toBeUndefined();
    expect(rootType.policyRule).toBeUndefined();
    expect(rootType.root.type).toBe('deny');
    expect(parsed(consent({ policyRule: rule('IDSCL'), provision: { type: 'permit' } })).base).toBeUndefined();
    // A rule and a root type: the rule is the base, the type decides where the root applies.
    const both = parsed(consent({ policyRule: rule('OPTIN'), provision: { type: 'deny', class: [{ code: 'Condition' }] } }));
    expect([both.base, both.root.type]).toEqual(['permit', 'deny']);
    // Neither: no opinion of its own.
    expect(parsed(consent({ policyRule: undefined })).base).toBeUndefined();
  });

  it('periods and dateTime at their precision, in UTC', () => {
    const c = parsed(consent({ dateTime: '2025-02', provision: { period: { start: '2025', end: '2025-06' } } }));
    expect(c.dateTime).toBe(ms('2025-02-01T00:00:00Z'));
    expect(c.period).toEqual({ start: ms('2025-01-01T00:00:00Z'), end: ms('2025-07-01T00:00:00Z') });
    const p = parsed(nested({ type: 'permit', period: { start: '2025-03-01T10:00:00+02:00', end: '2025-03-01T12:00:00.5Z' } })).root.provisions[0];
    expect(p.period).toEqual({ start: ms('2025-03-01T08:00:00Z'), end: ms('2025-03-01T12:00:00.600Z') });
    expect(parsed(nested({ type: 'permit', period: { end: '2025-12-31' } })).root.provisions[0].period).toEqual({ end: ms('2026-01-01T00:00:00Z') });
  });

  it('dates: every FHIR precision, and nothing else', () => {
    expect(dateRange('2025', 'x')).toEqual({ start: ms('2025-01-01T00:00:00Z'), end: ms('2026-01-01T00:00:00Z') });
    expect(dateRange('2024-02', 'x')).toEqual({ start: ms('2024-02-01T00:00:00Z'), end: ms('2024-03-01T00:00:00Z') });
    expect(dateRange('2024-02-29', 'x')).toEqual({ start: ms('2024-02-29T00:00:00Z'), end: ms('2024-03-01T00:00:00Z') });
    expect(dateRange('2025-12-31T23:59:59Z', 'x')).toEqual({ start: ms('2025-12-31T23:59:59Z'), end: ms('2026-01-01T00:00:00Z') });
    expect(dateRange('2025-01-01T00:00:00.123456-05:00', 'x')).toEqual({ start: ms('2025-01-01T05:00:00.123Z'), end: ms('2025-01-01T05:00:00.124Z') });
    expect(dateRange('0099-01-01', 'x').start).toBe(Date.parse('0099-01-01T00:00:00Z'));
    for (const bad of ['2025-02-29', '2025-13', '2025-00', '2025-01-32', '2025-01-01T24:00:00Z', '2025-01-01T10:00Z', '2025-01-01T10:00:00', '2025-01-01T10:00:60Z', '2025-01-01T10:00:00+15:00', '25', '2025-1-1', '0000', '', 2025, null]) {
      expect(() => dateRange(bad, 'provision.period.start'), String(bad)).toThrow('provision.period.start is not a FHIR date');
    }
  });

  it('actors: relative and absolute references by their Type/id tail', () => {
    const actors = (refs: string[]) => parsed(nested({ type: 'permit', actor: refs.map((reference) => ({ role: role('PRCP'), reference: { reference } })) })).root.provisions[0].actors;
    expect(actors(['Practitioner/p1', 'https://fhir.example.org/r4/PractitionerRole/r1', 'http://other.example/Organization/o1/_history/3', 'Practitioner/p1'])).toEqual([
      'Practitioner/p1',
      'PractitionerRole/r1',
      'Organization/o1',
    ]);
  });

  it('purposes, classes, codes and labels', () => {
    const p = parsed(
      nested({
        type: 'deny',
        purpose: [{ system: REASON, code: 'HPAYMT' }, { system: 'urn:oid:2.16.840.1.113883.5.8', code: 'HMARKT' }, { code: 'HRESCH' }],
        class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }, { code: 'Condition' }],
        code: [{ coding: [{ system: 'http://loinc.org', code: '8867-4' }, { code: 'local-1' }] }, { coding: [{ system: 'http://snomed.info/sct', code: '66590003' }] }],
        securityLabel: [{ system: 'urn:oid:2.16.840.1.113883.5.25', code: 'R' }, { system: ACT, code: 'PSY' }, { code: 'HIV' }],
      }),
    ).root.provisions[0];
    expect(p).toEqual({
      type: 'deny',
      purposes: ['HPAYMT', 'HMARKT', 'HRESCH'],
      classes: ['Observation', 'Condition'],
      codes: ['http://loinc.org|8867-4', '|local-1', 'http://snomed.info/sct|66590003'],
      labels: ['http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R', `${ACT}|PSY`, '|HIV'],
      provisions: [],
    });
  });

  it('data: instance, related and dependents', () => {
    const p = parsed(
      nested({
        type: 'deny',
        data: [
          { meaning: 'instance', reference: { reference: 'Observation/o1' } },
          { meaning: 'related', reference: { reference: 'https://fhir.example.org/r4/Encounter/e1' } },
          { meaning: 'dependents', reference: { reference: 'DiagnosticReport/d1' } },
        ],
      }),
    ).root.provisions[0];
    expect(p.data).toEqual([
      { meaning: 'instance', reference: 'Observation/o1' },
      { meaning: 'related', reference: 'Encounter/e1' },
      { meaning: 'dependents', reference: 'DiagnosticReport/d1' },
    ]);
  });

  it('actions: access, use and disclose concern reading; collect and correct alone never apply', () => {
    const kept = parsed(nested({ type: 'deny', action: [action('collect'), action('access')] }));
    expect(kept.root.provisions).toEqual([{ type: 'deny', provisions: [] }]);
    for (const code of ['use', 'disclose']) expect(parsed(nested({ type: 'deny', action: [action(code)] })).root.provisions).toHaveLength(1);
    // A collect-only provision is dropped with its exceptions.
    const dropped = parsed(nested({ type: 'deny', action: [action('collect'), action('correct')], provision: [{ type: 'permit' }] }));
    expect(dropped.root.provisions).toEqual([]);
    // A collect-only root applies to nothing: the base alone decides, within the root's period.
    const root = parsed(consent({ provision: { period: { end: '2030' }, action: [action('collect')], actor: [{ role: role('PRCP'), reference: { reference: 'Practitioner/p1' } }] } }));
    expect(root).toMatchObject({ base: 'deny', period: { end: ms('2031-01-01T00:00:00Z') }, root: { provisions: [] } });
    expect(root.root.actors).toBeUndefined();
  });

  it('nested provisions keep their order and depth', () => {
    const c = parsed(
      consent({
        provision: {
          provision: [
            { type: 'permit', actor: [{ role: role('PRCP'), reference: { reference: 'Practitioner/p1' } }], provision: [{ type: 'deny', securityLabel: [{ system: ACT, code: 'PSY' }], provision: [{ type: 'permit', purpose: [{ code: 'ETREAT' }] }] }] },
            { type: 'deny', class: [{ code: 'Observation' }] },
          ],
        },
      }),
    );
    expect(c.root.provisions.map((p) => p.type)).toEqual(['permit', 'deny']);
    expect(c.root.provisions[0].provisions[0].provisions[0]).toEqual({ type: 'permit', purposes: ['ETREAT'], provisions: [] });
  });

  it('elements the gateway does not need are read past (their primitives extended too)', () => {
    const c = consent({
      identifier: [{ system: 'urn:ietf:rfc:3986', value: 'urn:uuid:1' }],
      language: 'en',
      _status: { extension: [{ url: 'https://example.org/x', valueString: 'y' }] },
      extension: [{ url: 'https://example.org/ext', valueString: 'z' }],
      contained: [{ resourceType: 'Organization', id: 'o', name: 'x' }],
      verification: [{ verified: true, verifiedWith: { reference: 'Patient/pat-1' } }],
      sourceReference: { reference: 'DocumentReference/d1' },
      provision: { id: 'root', extension: [], provision: [{ type: 'permit', _type: { extension: [] }, actor: [{ id: 'a', role: role('PRCP'), reference: { reference: 'Practitioner/p1' } }] }] },
    });
    expect(kind(parseConsent(c))).toBe('consent');
  });
});

describe('unevaluable: the patient is known, the consent cannot be read exactly', () => {
  const actor = (reference: unknown) => ({ type: 'permit', actor: [{ role: role('PRCP'), reference }] });
  it.each<[string, R, RegExp]>([
    ['a modifierExtension on the Consent', consent({ modifierExtension: [{ url: 'https://example.org/m', valueBoolean: true }] }), /^modifierExtension is not supported$/],
    ['a modifierExtension on a nested provision', nested({ type: 'permit', modifierExtension: [{ url: 'https://example.org/m' }] }), /^provision\.provision\[0\]\.modifierExtension/],
    ['a modifierExtension on an actor', nested({ type: 'permit', actor: [{ role: role('PRCP'), reference: { reference: 'Practitioner/p1' }, modifierExtension: [{ url: 'x' }] }] }), /actor\[0\]\.modifierExtension/],
    ['a modifierExtension in a contained resource', consent({ contained: [{ resourceType: 'Organization', id: 'o', modifierExtension: [{ url: 'x' }] }] }), /^contained\[0\]\.modifierExtension/],
    ['a modifierExtension in policy', consent({ policy: [{ uri: 'https://x.example', modifierExtension: [{ url: 'x' }] }] }), /^policy\[0\]\.modifierExtension/],
    ['implicitRules', consent({ implicitRules: 'https://example.org/rules' }), /^implicitRules is not supported$/],
    ['an element Consent does not have', consent({ decision: 'deny' }), /^Consent\.decision is not an element of Consent$/],
    ['an element a provision does not have', nested({ type: 'permit', purposes: [{ code: 'TREAT' }] }), /^provision\.provision\[0\]\.purposes is not an element/],
    ['an element an actor does not have', nested({ type: 'permit', actor: [{ role: role('PRCP'), reference: { reference: 'Practitioner/p1' }, period: {} }] }), /actor\[0\]\.period is not an element/],
    ['an element data does not have', nested({ type: 'deny', data: [{ meaning: 'instance', reference: { reference: 'Observation/o1' }, scope: 'x' }] }), /data\[0\]\.scope is not an element/],
    ['provision.dataPeriod', nested({ type: 'deny', dataPeriod: { start: '2020' } }), /^provision\.provision\[0\]\.dataPeriod is not supported$/],
    ['a root dataPeriod', consent({ provision: { dataPeriod: { end: '2020' } } }), /^provision\.dataPeriod is not supported$/],
    ['data.meaning authoredby', nested({ type: 'deny', data: [{ meaning: 'authoredby', reference: { reference: 'Practitioner/p1' } }] }), /data\[0\]\.meaning authoredby is not supported/],
    ['data.meaning unknown', nested({ type: 'deny', data: [{ meaning: 'other', reference: { reference: 'Observation/o1' } }] }), /data\[0\]\.meaning is not instance/],
    ['a nested provision without type', nested({ class: [{ code: 'Observation' }] }), /^provision\.provision\[0\]\.type is missing$/],
    ['a type that is not permit or deny', nested({ type: 'Permit' }), /type is not permit or deny/],
    ['an unknown policyRule and no root type', consent({ policyRule: rule('IDSCL') }), /^policyRule has no OPTIN/],
    ['a policyRule with text only and no root type', consent({ policyRule: { text: 'opt out' } }), /^policyRule has no OPTIN/],
    ['policyRule codes that disagree', consent({ policyRule: { coding: [{ system: ACT, code: 'OPTIN' }, { system: ACT, code: 'OPTOUT' }] } }), /disagree/],
    ['a policy without a rule or root type', consent({ policyRule: undefined, policy: [{ uri: 'https://hospital.example.org/opt-out' }] }), /^policy without policyRule/],
    ['a malformed dateTime', consent({ dateTime: '2025-02-30' }), /^dateTime is not a FHIR date$/],
    ['a malformed period start', consent({ provision: { period: { start: '01/02/2025' } } }), /^provision\.period\.start is not a FHIR date$/],
    ['a period that is not an object', nested({ type: 'permit', period: '2025' }), /period is not a Period/],
    ['a period ending before it starts', consent({ provision: { period: { start: '2025-06-01', end: '2025-01-01' } } }), /^provision\.period ends before it starts$/],
    ['a contained actor', nested(actor({ reference: '#p1' })), /actor\[0\]\.reference is not a Type\/id reference/],
    ['a urn actor', nested(actor({ reference: 'urn:uuid:3b0f1c9e-8a4e-4a8c-9d39-1f0c2c7a9a11' })), /actor\[0\]\.reference is not a Type\/id reference/],
    ['an identifier-only actor', nested(actor({ identifier: { system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567890' } })), /actor\[0\]\.reference is not a Type\/id reference/],
    ['an actor without a reference', nested({ type: 'permit', actor: [{ role: role('PRCP') }] }), /actor\[0\]\.reference is not a Type\/id reference/],
    ['an actor of an unknown type', nested(actor({ reference: 'Doctor/p1' })), /is not a Type\/id reference/],
    ['an actor under a relative path', nested(actor({ reference: 'fhir/Practitioner/p1' })), /is not a Type\/id reference/],
    ['an actor id that is not a FHIR id', nested(actor({ reference: 'Practitioner/p 1' })), /is not a Type\/id reference/],
    ['a data reference that is contained', nested({ type: 'deny', data: [{ meaning: 'instance', reference: { reference: '#o1' } }] }), /data\[0\]\.reference is not a Type\/id reference/],
    ['an action without a consentaction code', nested({ type: 'deny', action: [{ coding: [{ system: 'https://local.example/actions', code: 'read' }] }] }), /action\[0\] has no consentaction code/],
    ['an action with text only', nested({ type: 'deny', action: [{ text: 'read' }] }), /action\[0\] has no consentaction code/],
    ['an unknown consentaction code', nested({ type: 'deny', action: [action('print')] }), /action\[0\] has a code that is not a consentaction code/],
    ['a purpose of another system', nested({ type: 'deny', purpose: [{ system: 'https://local.example/purposes', code: 'TREAT' }] }), /purpose\[0\] is not a v3-ActReason code/],
    ['a purpose without a code', nested({ type: 'deny', purpose: [{ system: REASON, display: 'treatment' }] }), /purpose\[0\] has no code/],
    ['a class that is a MIME type', nested({ type: 'deny', class: [{ system: 'urn:ietf:bcp:13', code: 'application/hl7-cda+xml' }] }), /class\[0\] is not a resource type/],
    ['a class that is a profile', nested({ type: 'deny', class: [{ system: 'http://hl7.org/fhir/StructureDefinition', code: 'vitalsigns' }] }), /class\[0\] is not a resource type/],
    ['a class that is no resource type', nested({ type: 'deny', class: [{ code: 'Observations' }] }), /class\[0\] is not a resource type/],
    ['a code with text only', nested({ type: 'deny', code: [{ text: 'HIV test' }] }), /code\[0\] has no coding/],
    ['a coding without a code', nested({ type: 'deny', code: [{ coding: [{ system: 'http://loinc.org' }] }] }), /code\[0\]\.coding\[0\] has no code/],
    ['a label with an empty system', nested({ type: 'deny', securityLabel: [{ system: '', code: 'PSY' }] }), /securityLabel\[0\]\.system is malformed/],
    ['an empty list', nested({ type: 'deny', actor: [] }), /actor is not a non-empty array/],
    ['a list that is not an array', nested({ type: 'deny', securityLabel: { system: ACT, code: 'PSY' } }), /securityLabel is not a non-empty array/],
    ['a provision that is not an object', consent({ provision: { provision: ['deny'] } }), /^provision\.provision\[0\] is not an object$/],
    ['a status that is not a Consent status', consent({ status: 'Active' }), /^status is not a Consent status$/],
    ['a missing status', consent({ status: undefined }), /^status is not a Consent status$/],
    ['a scope without a coding', consent({ scope: { text: 'privacy' } }), /^scope has no coding$/],
    ['a missing scope', consent({ scope: undefined }), /^scope has no coding$/],
  ])('%s', (_, resource, expected) => {
    const o = parseConsent(resource);
    expect(o).toMatchObject({ kind: 'unevaluable', patient: 'pat-1', consent: { id: 'Consent/c1' } });
    expect(reason(resource)).toMatch(expected);
  });

  it('provisions nested too deeply, and deep JSON, are unevaluable (not a stack overflow)', () => {
    let p: R = { type: 'deny' };
    for (let i = 0; i < 40; i++) p = { type: 'permit', provision: [p] };
    expect(reason(consent({ provision: p }))).toMatch(/is nested too deeply/);
    let deep: unknown = 'x';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(reason(consent({ extension: [{ url: 'x', valueString: 'y', nested: deep }] }))).toMatch(/nested too deeply/);
  });

  it('reasons name elements, never values', () => {
    const secret = 'Patient-Jane-Doe-SSN-123-45-6789';
    const resources = [
      consent({ dateTime: secret }),
      nested({ type: 'deny', actor: [{ role: role('PRCP'), reference: { reference: secret } }] }),
      nested({ type: 'deny', purpose: [{ system: secret, code: 'TREAT' }] }),
      nested({ type: 'deny', class: [{ code: secret }] }),
      nested({ type: secret }),
      consent({ [secret]: 1 }),
      nested({ type: 'deny', [`${secret} x`]: 1 }),
      consent({ status: secret }),
    ];
    for (const r of resources) expect(reason(r)).not.toContain('Jane');
    expect(reason(consent({ ['Jane Doe']: 1 }))).toBe('Consent.(an unnamed element) is not an element of Consent');
  });

  it('a Consent without a usable id is named Consent/?', () => {
    expect(parseConsent(consent({ id: undefined, dateTime: 'x' }))).toMatchObject({ consent: { id: 'Consent/?' } });
    expect(parseConsent(consent({ id: '../x', dateTime: 'x' }))).toMatchObject({ consent: { id: 'Consent/?' } });
  });
});

describe('unevaluable: the patient cannot be read', () => {
  it.each<[string, unknown]>([
    ['missing', undefined],
    ['contained', { reference: '#p' }],
    ['a urn', { reference: 'urn:uuid:3b0f1c9e-8a4e-4a8c-9d39-1f0c2c7a9a11' }],
    ['identifier only', { identifier: { system: 'urn:oid:1.2.3', value: 'MRN-1' } }],
    ['another resource type', { reference: 'Group/g1' }],
    ['not a Reference', 'Patient/pat-1'],
  ])('%s', (_, patient) => {
    const o = parseConsent(consent({ patient }));
    expect(o).toMatchObject({ kind: 'unevaluable', patient: undefined, consent: { id: 'Consent/c1' } });
    if (o.kind === 'unevaluable') expect(o.consent.reason).toMatch(/^patient unreadable/);
  });

  it('a problem elsewhere keeps the patient known', () => {
    expect(parseConsent(consent({ patient: { reference: 'http://fhir.example.org/Patient/pat-1/_history/2' }, dateTime: 'x' }))).toMatchObject({ kind: 'unevaluable', patient: 'pat-1' });
  });
});

describe('ignored', () => {
  it.each<[string, unknown]>([
    ['not a Consent', { resourceType: 'Patient', id: 'pat-1' }],
    ['not an object', 'Consent'],
    ['null', null],
    ['an OperationOutcome', { resourceType: 'OperationOutcome', issue: [] }],
    ['inactive (revoked)', consent({ status: 'inactive' })],
    ['draft', consent({ status: 'draft' })],
    ['proposed', consent({ status: 'proposed' })],
    ['rejected', consent({ status: 'rejected' })],
    ['entered in error', consent({ status: 'entered-in-error' })],
    ['research scope', consent({ scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'research' }] } })],
    ['treatment scope', consent({ scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'treatment' }] } })],
    ['advance directive scope', consent({ scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'adr' }] } })],
    ['patient-privacy of another system', consent({ scope: { coding: [{ system: 'https://local.example/scope', code: 'patient-privacy' }] } })],
    // Whatever else is wrong with it, an inactive or other-scope consent says nothing.
    ['inactive and unreadable', consent({ status: 'inactive', modifierExtension: [{ url: 'x' }], patient: undefined })],
    ['research scope with an unknown status', consent({ status: '??', scope: { coding: [{ code: 'research' }] } })],
  ])('%s', (_, resource) => {
    expect(kind(parseConsent(resource))).toBe('ignored');
  });

  it('patient-privacy with the older system or none counts', () => {
    expect(kind(parseConsent(consent({ scope: { coding: [{ code: 'patient-privacy' }] } })))).toBe('consent');
    expect(kind(parseConsent(consent({ scope: { coding: [{ system: 'http://hl7.org/fhir/consentscope', code: 'patient-privacy' }] } })))).toBe('consent');
  });
});

describe('consentsByPatient', () => {
  const of = (m: Map<string, PatientConsents>, p: string) => {
    const pc = m.get(p)!;
    return { consents: pc.consents.map((c) => c.id), unevaluable: pc.unevaluable.map((u) => `${u.id}: ${u.reason}`) };
  };

  it('groups by patient; every patient asked for has an entry', () => {
    const m = consentsByPatient(
      [
        consent({ id: 'a' }),
        consent({ id: 'b', patient: { reference: 'https://fhir.example.org/r4/Patient/pat-2' } }),
        consent({ id: 'c', dateTime: 'bad' }),
        consent({ id: 'd', status: 'inactive' }),
        { resourceType: 'OperationOutcome' },
      ],
      ['pat-1', 'pat-2', 'pat-3'],
    );
    expect([...m.keys()]).toEqual(['pat-1', 'pat-2', 'pat-3']);
    expect(of(m, 'pat-1')).toEqual({ consents: ['Consent/a'], unevaluable: ['Consent/c: dateTime is not a FHIR date'] });
    expect(of(m, 'pat-2')).toEqual({ consents: ['Consent/b'], unevaluable: [] });
    expect(of(m, 'pat-3')).toEqual({ consents: [], unevaluable: [] });
    expect(m.get('pat-3')!.patient).toBe('pat-3');
  });

  it('drops consents of patients not asked for (an upstream that ignored the parameter)', () => {
    const m = consentsByPatient([consent({ patient: { reference: 'Patient/pat-9' } }), consent({ patient: { reference: 'Patient/pat-9' }, dateTime: 'bad' })], ['pat-1']);
    expect(of(m, 'pat-1')).toEqual({ consents: [], unevaluable: [] });
    expect(m.has('pat-9')).toBe(false);
  });

  it('a consent whose patient cannot be read is attributed to every patient of the batch', () => {
    const m = consentsByPatient([consent({ id: 'x', patient: { reference: '#p' } }), consent({ id: 'y' })], ['pat-1', 'pat-2']);
    expect(of(m, 'pat-1')).toEqual({ consents: ['Consent/y'], unevaluable: ['Consent/x: patient unreadable: patient.reference is not a Patient/id reference'] });
    expect(of(m, 'pat-2')).toEqual({ consents: [], unevaluable: ['Consent/x: patient unreadable: patient.reference is not a Patient/id reference'] });
  });

  it('an empty search: every patient without consents', () => {
    const m = consentsByPatient([], ['pat-1']);
    expect(m.get('pat-1')).toEqual({ patient: 'pat-1', consents: [], unevaluable: [] });
  });
});

describe('never throws', () => {
  it('on anything in any element of a Consent', () => {
    const key = fc.constantFrom('status', 'scope', 'patient', 'dateTime', 'policyRule', 'policy', 'provision', 'contained', 'id', 'meta', 'modifierExtension', 'foo');
    const pkey = fc.constantFrom('type', 'period', 'actor', 'action', 'securityLabel', 'purpose', 'class', 'code', 'data', 'provision', 'dataPeriod');
    fc.assert(
      fc.property(key, fc.anything(), pkey, fc.anything(), (k, v, pk, pv) => {
        for (const r of [consent({ [k]: v }), nested({ type: 'deny', [pk]: pv }), consent({ provision: { [pk]: pv } })]) {
          const o = parseConsent(r);
          expect(['consent', 'unevaluable', 'ignored']).toContain(o.kind);
        }
      }),
      { numRuns: 500 },
    );
    for (const v of [undefined, null, 0, '', [], {}, { resourceType: 'Consent' }, Object.create(null)]) expect(() => parseConsent(v)).not.toThrow();
  });
});
