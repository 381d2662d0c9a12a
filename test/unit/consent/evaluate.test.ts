/**
 * Judging one resource against its patients' consents (src/consent/evaluate.ts): each provision
 * condition alone, matching and not; nested exceptions; overlapping consents under both overlap
 * rules; consents out of force; 42 CFR Part 2 data with and without a consent naming the caller
 * and purpose; purposes needing the patient's authorization; break-glass under each policy flag;
 * unevaluable and unloaded patients. Consents are parsed from FHIR JSON by the real parser and the
 * policy's consent section is compiled by the real compiler.
 */
import { describe, expect, it } from 'vitest';
import { elementCompiler } from '../../../src/config/policy-file.js';
import { decideConsent, isPart2, judgeResource } from '../../../src/consent/evaluate.js';
import { consentsByPatient } from '../../../src/consent/parse.js';
import type { CompiledConsent, ConsentAccess, ConsentVerdict, PatientConsents } from '../../../src/consent/types.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import type { ConsentSpec, PolicyFile } from '../../../src/policy/model.js';

type R = Record<string, unknown>;

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const LOINC = 'http://loinc.org';
const NOW = Date.parse('2025-06-15T12:00:00Z');
const PRAC = 'Practitioner/prac-1';
const OTHER = 'Practitioner/prac-2';

function compiledConsent(spec: ConsentSpec): CompiledConsent {
  const raw: PolicyFile = {
    version: 1,
    purposes: {
      TREAT: { display: 'treatment' },
      COC: { display: 'coordination of care', parent: 'TREAT' },
      BTG: { display: 'break the glass', parent: 'TREAT' },
      HPAYMT: { display: 'payment' },
      HMARKT: { display: 'marketing' },
      PATRQT: { display: 'patient requested' },
    },
    dataSets: { clinical: { rules: [{ types: ['Observation', 'Condition'] }] } },
    roles: { clinician: { purposes: { TREAT: 'clinical' } } },
    consent: spec,
  };
  const r = compilePolicy(raw, JSON.stringify(raw), elementCompiler);
  if (!r.ok) throw new Error(r.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
  return r.policy.consent!;
}
const POLICY = compiledConsent({});
const LATEST = compiledConsent({ overlap: 'latest' });
const OVERRIDE = compiledConsent({ breakGlass: 'override' });
const PART2_EMERGENCY = compiledConsent({ part2: { breakGlass: true } });

const PARENT: Record<string, string> = { COC: 'TREAT', BTG: 'TREAT' };
function ancestors(purpose: string): Set<string> {
  const out = new Set<string>();
  for (let p: string | undefined = purpose; p !== undefined; p = PARENT[p]) out.add(p);
  return out;
}
function access(o: Partial<ConsentAccess> = {}): ConsentAccess {
  const purpose = o.purpose ?? 'TREAT';
  return { purpose, purposes: ancestors(purpose), actors: [PRAC], now: NOW, breakGlass: false, authorizationRequired: false, ...o };
}

// ---- Consents (FHIR JSON, read by the real parser)

const SCOPE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
const rule = (code: string) => ({ coding: [{ system: ACT, code }] });
const actor = (reference: string) => ({ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] }, reference: { reference } });
const purpose = (code: string) => ({ system: REASON, code });
const label = (code: string, system = ACT) => ({ system, code });
const act = (code: string) => ({ coding: [{ system: ACTION, code }] });

function consent(id: string, extra: R = {}, patient = 'pat-1'): R {
  return { resourceType: 'Consent', id, status: 'active', scope: SCOPE, patient: { reference: `Patient/${patient}` }, ...extra };
}
/** A consent with no base whose only provision is `p`: its decision is p's type where p applies, else none. */
const only = (p: R, id = 'c1') => consent(id, { provision: { provision: [p] } });
/** The Part 2 consent: a permit for `who`, for `why`, of SUD records. */
const part2Consent = (id: string, who = PRAC, why = 'TREAT', patient = 'pat-1') =>
  consent(id, { policyRule: rule('OPTIN'), provision: { provision: [{ type: 'permit', actor: [actor(who)], purpose: [purpose(why)], securityLabel: [label('SUD'), label('42CFRPart2')] }] } }, patient);

function patients(byPatient: Record<string, R[]>): Map<string, PatientConsents> {
  const all = Object.values(byPatient).flat();
  return consentsByPatient(all, Object.keys(byPatient));
}
function judge(resource: R, byPatient: Record<string, R[]>, a: ConsentAccess = access(), policy: CompiledConsent = POLICY): ConsentVerdict {
  const m = patients(byPatient);
  return judgeResource(resource, Object.keys(byPatient), (p) => m.get(p), a, policy);
}
function decide(c: R, resource: R, a: ConsentAccess = access()) {
  const pc = patients({ 'pat-1': [c] }).get('pat-1')!;
  if (pc.consents.length !== 1) throw new Error(`not parsed: ${JSON.stringify(pc.unevaluable)}`);
  return decideConsent(pc.consents[0], resource, a);
}
const decision = (c: R, resource: R, a?: ConsentAccess) => decide(c, resource, a).decision;

// ---- Resources

const OBS: R = {
  resourceType: 'Observation',
  id: 'obs-1',
  status: 'final',
  code: { coding: [{ system: LOINC, code: '8867-4' }] },
  subject: { reference: 'Patient/pat-1' },
  encounter: { reference: 'Encounter/enc-1' },
};
const labelled = (r: R, ...security: R[]): R => ({ ...r, meta: { security } });
const SUD_CONDITION: R = labelled(
  { resourceType: 'Condition', id: 'cond-1', code: { coding: [{ system: 'http://snomed.info/sct', code: '66590003' }] }, subject: { reference: 'Patient/pat-1' } },
  label('SUD'),
);

describe('a root provision with a type and no policy rule', () => {
  // An HIE-style opt-out: the root denies one recipient. It denies that recipient, and no one else.
  const rootDeny = consent('c-root', { provision: { type: 'deny', actor: [actor(OTHER)] } });
  it('decides where the root applies and has no opinion elsewhere', () => {
    expect(decision(rootDeny, OBS, access({ actors: [OTHER] }))).toBe('deny');
    expect(decision(rootDeny, OBS)).toBeUndefined();
    expect(judge(OBS, { 'pat-1': [rootDeny] }, access({ actors: [OTHER] })).release).toBe(false);
    expect(judge(OBS, { 'pat-1': [rootDeny] }).release).toBe(true);
  });
});

describe('each provision condition alone', () => {
  const deny = (cond: R) => only({ type: 'deny', ...cond });
  it.each<[string, R, R, ConsentAccess | undefined, 'deny' | undefined]>([
    ['no condition', {}, OBS, undefined, 'deny'],
    ['period holding now', { period: { start: '2025-01-01', end: '2025-12-31' } }, OBS, undefined, 'deny'],
    ['period over', { period: { end: '2025-06-14' } }, OBS, undefined, undefined],
    ['period to come', { period: { start: '2025-06-16' } }, OBS, undefined, undefined],
    ['period ending today (inclusive)', { period: { end: '2025-06-15' } }, OBS, undefined, 'deny'],
    ['actor: the caller', { actor: [actor(PRAC)] }, OBS, undefined, 'deny'],
    ['actor: the caller, by absolute URL', { actor: [actor(`https://fhir.example.org/r4/${PRAC}`)] }, OBS, undefined, 'deny'],
    ['actor: another practitioner', { actor: [actor(OTHER)] }, OBS, undefined, undefined],
    ['actor: a caller without fhirUser', { actor: [actor(PRAC)] }, OBS, access({ actors: [] }), undefined],
    ['actor: one of several', { actor: [actor(OTHER), actor(PRAC)] }, OBS, undefined, 'deny'],
    ['purpose: the declared one', { purpose: [purpose('TREAT')] }, OBS, undefined, 'deny'],
    ['purpose: a parent covers its child', { purpose: [purpose('TREAT')] }, OBS, access({ purpose: 'COC' }), 'deny'],
    ['purpose: a child does not cover its parent', { purpose: [purpose('COC')] }, OBS, undefined, undefined],
    ['purpose: another', { purpose: [purpose('HPAYMT')] }, OBS, undefined, undefined],
    ['class: the type', { class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] }, OBS, undefined, 'deny'],
    ['class: another type', { class: [{ code: 'Condition' }] }, OBS, undefined, undefined],
    ['code: system and code', { code: [{ coding: [{ system: LOINC, code: '8867-4' }] }] }, OBS, undefined, 'deny'],
    ['code: another code', { code: [{ coding: [{ system: LOINC, code: '8310-5' }] }] }, OBS, undefined, undefined],
    ['code: the code in another system', { code: [{ coding: [{ system: 'http://snomed.info/sct', code: '8867-4' }] }] }, OBS, undefined, undefined],
    ['code: a system-less code matches any system', { code: [{ coding: [{ code: '8867-4' }] }] }, OBS, undefined, 'deny'],
    ['code: a resource coding without a system against a system', { code: [{ coding: [{ system: LOINC, code: 'x1' }] }] }, { ...OBS, code: { coding: [{ code: 'x1' }] } }, undefined, undefined],
    ['code: system-less against system-less', { code: [{ coding: [{ code: 'x1' }] }] }, { ...OBS, code: { coding: [{ code: 'x1' }] } }, undefined, 'deny'],
    ['code: a type array', { code: [{ coding: [{ system: 'http://snomed.info/sct', code: '183452005' }] }] }, { resourceType: 'Encounter', id: 'e', type: [{ coding: [{ system: 'http://snomed.info/sct', code: '1' }] }, { coding: [{ system: 'http://snomed.info/sct', code: '183452005' }] }] }, undefined, 'deny'],
    ['code: vaccineCode', { code: [{ coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: '207' }] }] }, { resourceType: 'Immunization', id: 'i', vaccineCode: { coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: '207' }] } }, undefined, 'deny'],
    ['code: medicationCodeableConcept', { code: [{ coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '1049502' }] }] }, { resourceType: 'MedicationRequest', id: 'm', medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '1049502' }] } }, undefined, 'deny'],
    ['code: a Coding-typed element', { code: [{ coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' }] }] }, { resourceType: 'AuditEvent', id: 'a', type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' } }, undefined, 'deny'],
    ['code: category is not matched', { code: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }] }, { ...OBS, category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }] }, undefined, undefined],
    ['label: carried', { securityLabel: [label('PSY')] }, labelled(OBS, label('PSY')), undefined, 'deny'],
    ['label: carried under a legacy system', { securityLabel: [label('PSY')] }, labelled(OBS, label('PSY', 'urn:oid:2.16.840.1.113883.5.4')), undefined, 'deny'],
    ['label: not carried', { securityLabel: [label('PSY')] }, labelled(OBS, label('HIV')), undefined, undefined],
    ['label: no labels', { securityLabel: [label('PSY')] }, OBS, undefined, undefined],
    ['data instance: the resource', { data: [{ meaning: 'instance', reference: { reference: 'Observation/obs-1' } }] }, OBS, undefined, 'deny'],
    ['data instance: another resource', { data: [{ meaning: 'instance', reference: { reference: 'Observation/obs-10' } }] }, OBS, undefined, undefined],
    ['data instance: not what refers to it', { data: [{ meaning: 'instance', reference: { reference: 'Encounter/enc-1' } }] }, OBS, undefined, undefined],
    ['data related: what refers to it', { data: [{ meaning: 'related', reference: { reference: 'Encounter/enc-1' } }] }, OBS, undefined, 'deny'],
    ['data related: an absolute reference to it', { data: [{ meaning: 'related', reference: { reference: 'Encounter/enc-1' } }] }, { ...OBS, encounter: { reference: 'https://fhir.example.org/r4/Encounter/enc-1/_history/3' } }, undefined, 'deny'],
    ['data related: a longer id', { data: [{ meaning: 'related', reference: { reference: 'Encounter/enc-1' } }] }, { ...OBS, encounter: { reference: 'Encounter/enc-10' } }, undefined, undefined],
    ['data related: a deep reference', { data: [{ meaning: 'related', reference: { reference: 'Encounter/enc-1' } }] }, { resourceType: 'Claim', id: 'cl', item: [{ encounter: [{ reference: 'Encounter/enc-1' }] }] }, undefined, 'deny'],
    ['data dependents: what refers to it', { data: [{ meaning: 'dependents', reference: { reference: 'Encounter/enc-1' } }] }, OBS, undefined, 'deny'],
    ['data dependents: the resource itself', { data: [{ meaning: 'dependents', reference: { reference: 'Observation/obs-1' } }] }, OBS, undefined, 'deny'],
    ['action access applies', { action: [act('access')] }, OBS, undefined, 'deny'],
  ])('%s', (_, cond, resource, a, expected) => {
    expect(decision(deny(cond), resource, a)).toBe(expected);
  });

  it('a provision about collecting only never applies', () => {
    expect(decision(deny({ action: [act('collect')] }), OBS)).toBeUndefined();
  });

  it('every condition must hold', () => {
    const c = deny({ actor: [actor(PRAC)], purpose: [purpose('TREAT')], class: [{ code: 'Observation' }] });
    expect(decision(c, OBS)).toBe('deny');
    expect(decision(c, OBS, access({ actors: [OTHER] }))).toBeUndefined();
    expect(decision(c, OBS, access({ purpose: 'HPAYMT' }))).toBeUndefined();
    expect(decision(c, SUD_CONDITION)).toBeUndefined();
  });
});

describe('the base, the root and nesting', () => {
  it('the base decides where no provision applies', () => {
    expect(decision(consent('c', { policyRule: rule('OPTIN') }), OBS)).toBe('permit');
    expect(decision(consent('c', { policyRule: rule('OPTOUT') }), OBS)).toBe('deny');
    expect(decision(consent('c'), OBS)).toBeUndefined();
  });

  it('a typed root decides where it applies, the base elsewhere', () => {
    const c = consent('c', { policyRule: rule('OPTIN'), provision: { type: 'deny', purpose: [purpose('HPAYMT')] } });
    expect(decision(c, OBS, access({ purpose: 'HPAYMT' }))).toBe('deny');
    expect(decision(c, OBS)).toBe('permit');
  });

  it('an opt-out with a permit for one practitioner, and an exception to the exception', () => {
    const c = consent('c', {
      policyRule: rule('OPTOUT'),
      provision: { provision: [{ type: 'permit', actor: [actor(PRAC)], provision: [{ type: 'deny', securityLabel: [label('PSY')], provision: [{ type: 'permit', purpose: [purpose('BTG')] }] }] }] },
    });
    expect(decide(c, OBS)).toEqual({ decision: 'permit', namesActor: true, namesPurpose: false });
    expect(decide(c, labelled(OBS, label('PSY')))).toEqual({ decision: 'deny', namesActor: true, namesPurpose: false });
    expect(decide(c, labelled(OBS, label('PSY')), access({ purpose: 'BTG' }))).toEqual({ decision: 'permit', namesActor: true, namesPurpose: true });
    expect(decide(c, OBS, access({ actors: [OTHER] }))).toEqual({ decision: 'deny', namesActor: false, namesPurpose: false });
  });

  it('among siblings that apply, deny wins', () => {
    const c = consent('c', { policyRule: rule('OPTIN'), provision: { provision: [{ type: 'permit', actor: [actor(PRAC)] }, { type: 'deny', class: [{ code: 'Observation' }] }] } });
    expect(decision(c, OBS)).toBe('deny');
    expect(decision(c, SUD_CONDITION)).toBe('permit');
  });

  it('an opt-in with a deny of payment purposes on one encounter and what relates to it', () => {
    const c = consent('nopay', {
      policyRule: rule('OPTIN'),
      provision: { provision: [{ type: 'deny', purpose: [purpose('HPAYMT')], data: [{ meaning: 'related', reference: { reference: 'Encounter/enc-1' } }] }] },
    });
    const payer = access({ purpose: 'HPAYMT', actors: ['Organization/payer-1'] });
    expect(judge(OBS, { 'pat-1': [c] }, payer)).toEqual({ release: false, why: 'denied', restricted: ['Consent/nopay'] });
    expect(judge({ resourceType: 'Encounter', id: 'enc-1', subject: { reference: 'Patient/pat-1' } }, { 'pat-1': [c] }, payer)).toMatchObject({ release: false, why: 'denied' });
    expect(judge({ ...OBS, encounter: { reference: 'Encounter/enc-2' } }, { 'pat-1': [c] }, payer)).toEqual({ release: true });
    expect(judge(OBS, { 'pat-1': [c] })).toEqual({ release: true });
  });

  it('a nested provision applies only where its parent does', () => {
    const c = consent('c', { policyRule: rule('OPTIN'), provision: { provision: [{ type: 'permit', actor: [actor(OTHER)], provision: [{ type: 'deny', class: [{ code: 'Observation' }] }] }] } });
    expect(decision(c, OBS)).toBe('permit');
  });

  it('the path that decides: the permit naming the most', () => {
    const c = consent('c', {
      policyRule: rule('OPTIN'),
      provision: { provision: [{ type: 'permit', actor: [actor(PRAC)] }, { type: 'permit', purpose: [purpose('TREAT')], provision: [{ type: 'permit', actor: [actor(PRAC)] }] }] },
    });
    expect(decide(c, OBS)).toEqual({ decision: 'permit', namesActor: true, namesPurpose: true });
    // The base decides with an empty path.
    expect(decide(consent('c', { policyRule: rule('OPTIN') }), OBS)).toEqual({ decision: 'permit', namesActor: false, namesPurpose: false });
  });
});

describe('several consents', () => {
  const optIn = (id: string, dateTime?: string) => consent(id, { policyRule: rule('OPTIN'), ...(dateTime ? { dateTime } : {}) });
  const optOut = (id: string, dateTime?: string) => consent(id, { policyRule: rule('OPTOUT'), ...(dateTime ? { dateTime } : {}) });

  it('deny-wins: any deny withholds, naming the consents that denied', () => {
    expect(judge(OBS, { 'pat-1': [optIn('a', '2025-03-01'), optOut('b', '2025-01-01'), optOut('c')] })).toEqual({ release: false, why: 'denied', restricted: ['Consent/b', 'Consent/c'] });
  });

  it('latest: the newest consent with an opinion decides', () => {
    expect(judge(OBS, { 'pat-1': [optIn('a', '2025-03-01'), optOut('b', '2025-01-01')] }, access(), LATEST)).toEqual({ release: true });
    expect(judge(OBS, { 'pat-1': [optIn('a', '2025-01-01'), optOut('b', '2025-03-01')] }, access(), LATEST)).toEqual({ release: false, why: 'denied', restricted: ['Consent/b'] });
    // A consent without a date is the oldest.
    expect(judge(OBS, { 'pat-1': [optOut('a'), optIn('b', '2020')] }, access(), LATEST)).toEqual({ release: true });
    // One without an opinion on this access does not decide.
    const silent = consent('s', { dateTime: '2025-05-01', provision: { provision: [{ type: 'permit', class: [{ code: 'Condition' }] }] } });
    expect(judge(OBS, { 'pat-1': [optOut('a', '2025-01-01'), silent] }, access(), LATEST)).toMatchObject({ release: false, restricted: ['Consent/a'] });
    // Equally new: deny wins.
    expect(judge(OBS, { 'pat-1': [optIn('a', '2025-01-01'), optOut('b', '2025-01-01')] }, access(), LATEST)).toEqual({ release: false, why: 'denied', restricted: ['Consent/b'] });
  });

  it('a consent out of force says nothing', () => {
    const expired = consent('x', { policyRule: rule('OPTOUT'), provision: { period: { start: '2024-01-01', end: '2024-12-31' } } });
    const future = consent('f', { policyRule: rule('OPTOUT'), provision: { period: { start: '2026-01-01' } } });
    expect(judge(OBS, { 'pat-1': [expired, future] })).toEqual({ release: true });
    expect(judge(OBS, { 'pat-1': [expired] }, access({ now: Date.parse('2024-06-01T00:00:00Z') }))).toMatchObject({ release: false, why: 'denied' });
    // An expired newer opt-in does not outrank an older opt-out in force.
    expect(judge(OBS, { 'pat-1': [optOut('a', '2024-01-01'), consent('b', { policyRule: rule('OPTIN'), dateTime: '2025-01-01', provision: { period: { end: '2025-02-01' } } })] }, access(), LATEST)).toMatchObject({ release: false });
  });

  it('a resource naming several patients: each one decides for it', () => {
    const both = { ...OBS, performer: [{ reference: 'Patient/pat-2' }] };
    expect(judge(both, { 'pat-1': [optIn('a')], 'pat-2': [consent('b', { policyRule: rule('OPTOUT') }, 'pat-2')] })).toMatchObject({ release: false, restricted: ['Consent/b'] });
    expect(judge(both, { 'pat-1': [optIn('a')], 'pat-2': [] })).toEqual({ release: true });
  });
});

describe('42 CFR Part 2', () => {
  it('recognizes Part 2 labels in their systems, legacy spellings and without a system', () => {
    expect(isPart2(SUD_CONDITION, POLICY)).toBe(true);
    expect(isPart2(labelled(OBS, label('42CFRPart2')), POLICY)).toBe(true);
    expect(isPart2(labelled(OBS, label('SUD', 'urn:oid:2.16.840.1.113883.5.4')), POLICY)).toBe(true);
    expect(isPart2(labelled(OBS, { code: 'SUD' }), POLICY)).toBe(true);
    expect(isPart2(labelled(OBS, label('SUD', 'https://local.example/labels')), POLICY)).toBe(false);
    expect(isPart2(labelled(OBS, label('PSY')), POLICY)).toBe(false);
    expect(isPart2(OBS, POLICY)).toBe(false);
    expect(isPart2({ ...OBS, meta: { security: 'SUD' } }, POLICY)).toBe(false);
    const own = compiledConsent({ part2: { labels: ['PSY'] } });
    expect([isPart2(SUD_CONDITION, own), isPart2(labelled(OBS, label('PSY')), own)]).toEqual([false, true]);
  });

  it('without a consent: withheld', () => {
    expect(judge(SUD_CONDITION, { 'pat-1': [] })).toEqual({ release: false, why: 'part2-without-consent' });
    expect(judge(SUD_CONDITION, { 'pat-1': [consent('g', { policyRule: rule('OPTIN') })] })).toEqual({ release: false, why: 'part2-without-consent' });
  });

  it('under a consent naming the caller and the purpose: released with the notice', () => {
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2')] })).toEqual({ release: true, part2: true, permitted: ['Consent/p2'] });
    // A purpose the consent names covers its children.
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2')] }, access({ purpose: 'COC' }))).toMatchObject({ release: true, part2: true });
  });

  it('the wrong actor, the wrong purpose, or a path naming only one: withheld', () => {
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2', OTHER)] })).toEqual({ release: false, why: 'part2-without-consent' });
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2')] }, access({ purpose: 'HPAYMT' }))).toEqual({ release: false, why: 'part2-without-consent' });
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2', PRAC, 'COC')] })).toEqual({ release: false, why: 'part2-without-consent' });
    const actorOnly = consent('a', { provision: { provision: [{ type: 'permit', actor: [actor(PRAC)] }] } });
    const purposeOnly = consent('b', { provision: { provision: [{ type: 'permit', purpose: [purpose('TREAT')] }] } });
    expect(judge(SUD_CONDITION, { 'pat-1': [actorOnly, purposeOnly] })).toEqual({ release: false, why: 'part2-without-consent' });
    // Actor and purpose on different levels of one path count.
    const split = consent('s', { provision: { actor: [actor(PRAC)], provision: [{ type: 'permit', purpose: [purpose('TREAT')] }] } });
    expect(judge(SUD_CONDITION, { 'pat-1': [split] })).toMatchObject({ release: true, part2: true, permitted: ['Consent/s'] });
  });

  it('every patient it names must have consented', () => {
    const shared = { ...SUD_CONDITION, asserter: { reference: 'Patient/pat-2' } };
    expect(judge(shared, { 'pat-1': [part2Consent('a')], 'pat-2': [] })).toEqual({ release: false, why: 'part2-without-consent' });
    expect(judge(shared, { 'pat-1': [part2Consent('a')], 'pat-2': [part2Consent('b', PRAC, 'TREAT', 'pat-2')] })).toEqual({ release: true, part2: true, permitted: ['Consent/a', 'Consent/b'] });
  });

  it('a deny withholds it even with a naming permit', () => {
    const noPsy = consent('d', { provision: { provision: [{ type: 'deny', class: [{ code: 'Condition' }] }] } });
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2'), noPsy] })).toEqual({ release: false, why: 'denied', restricted: ['Consent/d'] });
  });

  it('a consent out of force does not permit', () => {
    const expired = consent('p2', { policyRule: rule('OPTIN'), provision: { period: { end: '2025-01-01' }, provision: [{ type: 'permit', actor: [actor(PRAC)], purpose: [purpose('TREAT')] }] } });
    expect(judge(SUD_CONDITION, { 'pat-1': [expired] })).toEqual({ release: false, why: 'part2-without-consent' });
  });

  it('a resource naming no patient is not released as Part 2 data', () => {
    expect(judgeResource(SUD_CONDITION, [], () => undefined, access(), POLICY)).toEqual({ release: false, why: 'part2-without-consent' });
  });
});

describe('authorization required (HIPAA 164.508)', () => {
  const marketing = access({ purpose: 'HMARKT', authorizationRequired: true });
  it('released only under a permit naming the purpose', () => {
    expect(judge(OBS, { 'pat-1': [] }, marketing)).toEqual({ release: false, why: 'authorization-missing' });
    expect(judge(OBS, { 'pat-1': [consent('g', { policyRule: rule('OPTIN') })] }, marketing)).toEqual({ release: false, why: 'authorization-missing' });
    const auth = consent('m', { policyRule: rule('OPTOUT'), provision: { provision: [{ type: 'permit', purpose: [purpose('HMARKT')] }] } });
    expect(judge(OBS, { 'pat-1': [auth] }, marketing)).toEqual({ release: true, permitted: ['Consent/m'] });
    // A permit for treatment is not an authorization for marketing.
    expect(judge(OBS, { 'pat-1': [part2Consent('t')] }, marketing)).toEqual({ release: false, why: 'authorization-missing' });
  });

  it('an authorization naming another recipient does not apply to this caller', () => {
    const auth = consent('m', { provision: { provision: [{ type: 'permit', actor: [actor(OTHER)], purpose: [purpose('HMARKT')] }] } });
    expect(judge(OBS, { 'pat-1': [auth] }, marketing)).toEqual({ release: false, why: 'authorization-missing' });
    const mine = consent('m', { provision: { provision: [{ type: 'permit', actor: [actor(PRAC)], purpose: [purpose('HMARKT')] }] } });
    expect(judge(OBS, { 'pat-1': [mine] }, marketing)).toEqual({ release: true, permitted: ['Consent/m'] });
  });

  it('break-glass does not stand in for an authorization', () => {
    expect(judge(OBS, { 'pat-1': [] }, { ...marketing, breakGlass: true }, OVERRIDE)).toEqual({ release: false, why: 'authorization-missing' });
  });
});

describe('break-glass', () => {
  const optOut = consent('o', { policyRule: rule('OPTOUT') });
  const bg = access({ purpose: 'BTG', breakGlass: true });

  it('overrides a deny only where the policy says so', () => {
    expect(judge(OBS, { 'pat-1': [optOut] }, bg, POLICY)).toEqual({ release: false, why: 'denied', restricted: ['Consent/o'] });
    expect(judge(OBS, { 'pat-1': [optOut] }, bg, OVERRIDE)).toEqual({ release: true, overridden: ['Consent/o'] });
    expect(judge(OBS, { 'pat-1': [optOut] }, access(), OVERRIDE)).toEqual({ release: false, why: 'denied', restricted: ['Consent/o'] });
  });

  it('releases Part 2 data only where part2.breakGlass allows (42 CFR 2.51)', () => {
    expect(judge(SUD_CONDITION, { 'pat-1': [] }, bg, OVERRIDE)).toEqual({ release: false, why: 'part2-without-consent' });
    expect(judge(SUD_CONDITION, { 'pat-1': [] }, bg, PART2_EMERGENCY)).toEqual({ release: true, part2: true, overridden: [] });
    expect(judge(SUD_CONDITION, { 'pat-1': [optOut] }, bg, PART2_EMERGENCY)).toEqual({ release: true, part2: true, overridden: ['Consent/o'] });
    expect(judge(SUD_CONDITION, { 'pat-1': [optOut] }, bg, OVERRIDE)).toEqual({ release: false, why: 'denied', restricted: ['Consent/o'] });
    expect(judge(SUD_CONDITION, { 'pat-1': [] }, access(), PART2_EMERGENCY)).toEqual({ release: false, why: 'part2-without-consent' });
  });

  it('a break-glass caller named by a Part 2 consent needs no override', () => {
    expect(judge(SUD_CONDITION, { 'pat-1': [part2Consent('p2')] }, bg, POLICY)).toEqual({ release: true, part2: true, permitted: ['Consent/p2'] });
  });
});

describe('unevaluable and not loaded', () => {
  const broken = consent('bad', { policyRule: rule('OPTIN'), provision: { dataPeriod: { start: '2020' } } });

  it('a patient with an unevaluable consent: withheld from everyone but break-glass', () => {
    expect(judge(OBS, { 'pat-1': [broken, consent('g', { policyRule: rule('OPTIN') })] })).toEqual({ release: false, why: 'unevaluable', unevaluable: ['pat-1'] });
    expect(judge(OBS, { 'pat-1': [broken] }, access({ breakGlass: true }), POLICY)).toEqual({ release: true, overridden: ['Consent/bad'] });
  });

  it('under break-glass the readable consents still count', () => {
    const optOut = consent('o', { policyRule: rule('OPTOUT') });
    expect(judge(OBS, { 'pat-1': [broken, optOut] }, access({ breakGlass: true }), POLICY)).toEqual({ release: false, why: 'denied', restricted: ['Consent/o'] });
    expect(judge(OBS, { 'pat-1': [broken, optOut] }, access({ breakGlass: true }), OVERRIDE)).toEqual({ release: true, overridden: ['Consent/bad', 'Consent/o'] });
    expect(judge(SUD_CONDITION, { 'pat-1': [broken] }, access({ breakGlass: true }), POLICY)).toEqual({ release: false, why: 'part2-without-consent' });
  });

  it('a consent whose patient is unreadable withholds every patient of its search', () => {
    const orphan = { ...consent('orphan', { policyRule: rule('OPTIN') }), patient: { reference: '#p' } };
    const m = consentsByPatient([orphan], ['pat-1', 'pat-2']);
    for (const p of ['pat-1', 'pat-2']) expect(judgeResource(OBS, [p], (x) => m.get(x), access(), POLICY)).toEqual({ release: false, why: 'unevaluable', unevaluable: [p] });
  });

  it('a patient not loaded: withheld, break-glass or not', () => {
    const m = patients({ 'pat-1': [] });
    const both = ['pat-1', 'pat-9'];
    expect(judgeResource(OBS, both, (p) => m.get(p), access(), POLICY)).toEqual({ release: false, why: 'unevaluable', unevaluable: ['pat-9'] });
    expect(judgeResource(OBS, both, (p) => m.get(p), access({ breakGlass: true }), OVERRIDE)).toEqual({ release: false, why: 'unevaluable', unevaluable: ['pat-9'] });
  });
});

describe('the common case', () => {
  it('a patient without consents costs one shared, frozen verdict', () => {
    const none = patients({ 'pat-1': [], 'pat-2': [] });
    const v1 = judgeResource(OBS, ['pat-1'], (p) => none.get(p), access(), POLICY);
    const v2 = judgeResource({ ...OBS, id: 'obs-2' }, ['pat-1', 'pat-2'], (p) => none.get(p), access({ purpose: 'HPAYMT' }), POLICY);
    expect(v1).toEqual({ release: true });
    expect(v2).toBe(v1);
    expect(Object.isFrozen(v1)).toBe(true);
    // A consent that permits everything, with nothing to report, shares it too.
    expect(judge(OBS, { 'pat-1': [consent('g', { policyRule: rule('OPTIN') })] })).toBe(v1);
  });
});
