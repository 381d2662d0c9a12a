/**
 * The non-interference oracle (SPEC 3.6): which seeded resources a caller may not see, decided
 * here WITHOUT the gateway's policy code. The data sets and the role -> purpose -> data set mapping
 * are read straight from config/policy.yaml with the `yaml` package; security labels are matched
 * by this file's own reading of the policy (a plain code means that code in v3-Confidentiality or
 * v3-ActCode, or on a coding without a system; `system|code` means exactly that); patient
 * compartment membership uses the R4 CompartmentDefinition table (`patientReferencePaths`).
 *
 * S  = every seeded version (the demo seed plus EXTRA_HISTORY), in seed order.
 * S' = the same sequence without every version of each resource the caller may not see.
 * A resource is judged on its current (last) version: SPEC 3 "a withheld current version withholds
 * every version".
 *
 * Care relationships: a caller with a `fhirUser` runs under the shipped policy's relationship
 * requirements (the harness keeps them for it). Whom it is related to is decided here from the
 * seeded CareTeam, Encounter, EpisodeOfCare, PractitionerRole and Task resources themselves, by
 * this file's reading of the policy's source kinds; every record of any other patient is withheld
 * (reason `relationship`). The resources that relate the caller are the policy's input, not data
 * it asks for: S' keeps them even where the caller may not read them (a labelled care team, a
 * coder's Tasks), so S and S' relate the caller to the same patients. A care team or task of an
 * unrelated patient is that patient's data and goes.
 *
 * Patients' consents: a caller marked `consent` runs under the shipped policy's `consent` section
 * (the harness keeps it for it). What each seeded Consent withholds from it is decided here, by this
 * file's own reading of the design (consentWithholds: provisions, nesting, overlap, 42 CFR Part 2,
 * authorizations, fail closed), never by src/consent; those records are withheld (reason `consent`).
 * The Consents are the policy's input, not data the caller asks for: S' keeps them.
 */
import { readFileSync } from 'node:fs';
import type { Coding, Condition, Resource } from 'fhir/r4.js';
import { parse } from 'yaml';
import { ACT_CODE_SYSTEM, aliceFirstVersion, CONFIDENTIALITY_SYSTEM, DEMO, demoResources } from '../../src/demo/data.js';
import { patientReferencePaths } from '../../src/fhir/tables.js';

export const POLICY_FILE = new URL('../../config/policy.yaml', import.meta.url).pathname;

// ---------------------------------------------------------------------------------------------
// Policy, read independently

interface RuleYaml {
  types: string[];
  interactions?: string[];
  withhold?: string[];
}
interface RelationshipYaml {
  required?: boolean;
  sources: string[];
  purposes?: string[];
}
interface DataSetYaml {
  withhold?: string[];
  rules: RuleYaml[];
  relationship?: RelationshipYaml;
}
export type SourceKind = 'CareTeam' | 'Encounter' | 'EpisodeOfCare' | 'PractitionerRole' | 'Task';
interface SourceYaml {
  kind: SourceKind;
  days?: number;
}
interface RoleYaml {
  purposes: Record<string, string>;
  breakGlass?: boolean;
}
interface ConsentYaml {
  overlap?: 'deny-wins' | 'latest';
  exemptPurposes?: string[];
  part2?: { labels?: string[] };
}
interface PolicyYaml {
  dataSets: Record<string, DataSetYaml>;
  roles: Record<string, RoleYaml>;
  purposes?: Record<string, { parent?: string }>;
  relationships?: { sources: Record<string, SourceYaml> };
  consent?: ConsentYaml;
}

let policyYaml: PolicyYaml | undefined;
export function policy(): PolicyYaml {
  policyYaml ??= parse(readFileSync(POLICY_FILE, 'utf8')) as PolicyYaml;
  return policyYaml;
}

/**
 * Who is asking: a role, one declared purpose, optionally a SMART patient claim, and optionally the
 * token's `fhirUser` (the caller's own FHIR resource): only then do the shipped policy's care
 * relationship requirements apply (without it the harness's stacks run without them).
 */
export interface Caller {
  readonly name: string;
  readonly role: string;
  readonly purpose: string;
  readonly patient?: string;
  readonly fhirUser?: string;
  /** Runs under the shipped policy's `consent` section (the harness keeps it for this caller only). */
  readonly consent?: boolean;
  /**
   * An access grant the caller asked for and had approved, used (X-Access-Grant) on every request
   * once it has expired: S' is the caller's own S', since an expired grant widens nothing.
   */
  readonly grant?: { readonly dataSet: string; readonly patients: readonly string[]; readonly minutes: number } | undefined;
}

/** Every role of the shipped policy with each purpose it is granted, and each role (first purpose) with a patient claim. */
export function callers(): Caller[] {
  const out: Caller[] = [];
  for (const [role, spec] of Object.entries(policy().roles)) {
    for (const purpose of Object.keys(spec.purposes)) out.push({ name: `${role}/${purpose}`, role, purpose });
  }
  for (const role of Object.keys(policy().roles)) {
    const purpose = Object.keys(policy().roles[role]!.purposes)[0]!;
    out.push({ name: `${role}/${purpose}+patient=${DEMO.patients.alice}`, role, purpose, patient: DEMO.patients.alice });
  }
  return out;
}

/**
 * The demo's clinician and coder as themselves (fhirUser), for the purposes their data sets require
 * a care relationship or an assignment for.
 */
export function relationshipCallers(): Caller[] {
  const me = DEMO.relationships.fhirUsers;
  return [
    { name: `clinician/TREAT+fhirUser=${me.clinician}`, role: 'clinician', purpose: 'TREAT', fhirUser: me.clinician },
    { name: `coder/HOPERAT+fhirUser=${me.coder}`, role: 'coder', purpose: 'HOPERAT', fhirUser: me.coder },
  ];
}

export function dataSetName(c: Caller): string {
  const ds = policy().roles[c.role]?.purposes[c.purpose];
  if (ds === undefined) throw new Error(`oracle: role ${c.role} is not granted purpose ${c.purpose} in policy.yaml`);
  return ds;
}

/** Whether the caller's data set de-identifies (it then reads and searches by pseudonym). */
export function deidentifies(c: Caller): boolean {
  return (policy().dataSets[dataSetName(c)] as { deidentify?: string } | undefined)?.deidentify !== undefined;
}

export function breakGlassEligible(c: Caller): boolean {
  return policy().roles[c.role]?.breakGlass === true;
}

function ruleFor(c: Caller, type: string): { rule: RuleYaml; ds: DataSetYaml } | undefined {
  const ds = policy().dataSets[dataSetName(c)]!;
  const rule = ds.rules.find((r) => r.types.includes(type));
  return rule ? { rule, ds } : undefined;
}

/** Resource types in the caller's data set. */
export function grantedTypes(c: Caller): string[] {
  return policy().dataSets[dataSetName(c)]!.rules.flatMap((r) => r.types);
}

/** Interactions granted on a type (policy default: read, search). */
export function interactions(c: Caller, type: string): Set<string> {
  const r = ruleFor(c, type);
  return new Set(r ? (r.rule.interactions ?? ['read', 'search']) : []);
}

/** Labels withheld for a type: the data set's plus the rule's own. */
export function withheldLabels(c: Caller, type: string): string[] {
  const r = ruleFor(c, type);
  return r ? [...(r.ds.withhold ?? []), ...(r.rule.withhold ?? [])] : [];
}

const LABEL_SYSTEMS = new Set([CONFIDENTIALITY_SYSTEM, ACT_CODE_SYSTEM]);

function labelMatches(label: string, coding: Coding): boolean {
  const bar = label.indexOf('|');
  if (bar >= 0) return coding.system === label.slice(0, bar) && coding.code === label.slice(bar + 1);
  return coding.code === label && (coding.system === undefined || coding.system === '' || LABEL_SYSTEMS.has(coding.system));
}

// ---------------------------------------------------------------------------------------------
// Patient compartment (R4 CompartmentDefinition "patient")

function referencesAt(value: unknown, path: readonly string[]): string[] {
  if (Array.isArray(value)) return value.flatMap((v) => referencesAt(v, path));
  if (value === null || typeof value !== 'object') return [];
  if (path.length === 0) {
    const ref = (value as { reference?: unknown }).reference;
    return typeof ref === 'string' ? [ref] : [];
  }
  return referencesAt((value as Record<string, unknown>)[path[0]!], path.slice(1));
}

/** undefined: the type has no patient compartment (not patient data); else membership. */
export function inPatientCompartment(r: Resource, patient: string): boolean | undefined {
  if (r.resourceType === 'Patient') return r.id === patient;
  const paths = patientReferencePaths(r.resourceType);
  if (paths.length === 0) return undefined;
  return paths.some((p) => referencesAt(r, p.split('.')).some((ref) => ref === `Patient/${patient}`));
}

export type WithheldReason = 'type' | 'label' | 'compartment' | 'relationship' | 'consent';

/** Why the caller may not see this (current version of a) resource, or undefined when it may. */
export function withheldReason(c: Caller, r: Resource): WithheldReason | undefined {
  if (!grantedTypes(c).includes(r.resourceType)) return 'type';
  const related = relatedSet(c);
  if (related !== undefined && !ofRelatedPatients(r, related)) return 'relationship';
  if (c.consent === true && consentWithholds(c, r)) return 'consent';
  const labels = withheldLabels(c, r.resourceType);
  const security = r.meta?.security ?? [];
  if (labels.some((l) => security.some((coding) => labelMatches(l, coding)))) return 'label';
  if (c.patient !== undefined && inPatientCompartment(r, c.patient) === false) return 'compartment';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Care relationships, read independently (the policy's `relationships.sources` and each data
// set's `relationship` requirement, evaluated here on the seeded resources themselves)

const OPEN_TASK = new Set(['draft', 'requested', 'received', 'accepted', 'ready', 'in-progress', 'on-hold']);
const CURRENT_ENCOUNTER = new Set(['in-progress', 'arrived', 'triaged', 'onleave']);
const DAY_MS = 86_400_000;

/** Whether `purpose` is `listed` or one of its descendants in the policy's purpose tree. */
function purposeCovers(listed: string, purpose: string): boolean {
  const tree = policy().purposes ?? {};
  for (let p: string | undefined = purpose, depth = 0; p !== undefined && depth < 20; p = tree[p]?.parent, depth++) {
    if (p === listed) return true;
  }
  return false;
}

/** The requirement that applies to the caller (only callers with a fhirUser run under one). */
export function relationshipRequirement(c: Caller): RelationshipYaml | undefined {
  if (c.fhirUser === undefined) return undefined;
  const req = policy().dataSets[dataSetName(c)]?.relationship;
  if (req === undefined) return undefined;
  if (req.purposes !== undefined && !req.purposes.some((p) => purposeCovers(p, c.purpose))) return undefined;
  return req;
}

type Obj = Record<string, unknown>;
const asObj = (v: unknown): Obj | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined);
const many = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
const refOf = (v: unknown): string | undefined => {
  const r = asObj(v)?.reference;
  return typeof r === 'string' ? r : undefined;
};
const patientIdOf = (v: unknown): string | undefined => {
  const r = refOf(v);
  return r?.startsWith('Patient/') ? r.slice('Patient/'.length) : undefined;
};

/** Epoch ms a FHIR date or dateTime is over (a date: the next day's start, UTC). */
function over(value: string): number {
  return /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) + DAY_MS : Date.parse(value);
}
const endedBy = (period: unknown, now: number): boolean => {
  const end = asObj(period)?.end;
  return typeof end === 'string' && over(end) <= now;
};

/** A patient the caller is related to: the source that relates it, and the resources that make the link. */
export interface RelatedPatient {
  readonly source: string;
  readonly evidence: readonly string[];
}

/**
 * The patients `fhirUser` is related to through the named sources of config/policy.yaml, read from
 * `resources` (current versions): first source listed wins, as the audit record names one.
 */
export function relationshipsIn(fhirUser: string, sourceNames: readonly string[], resources: readonly Resource[], now = Date.now()): Map<string, RelatedPatient> {
  const sources = policy().relationships?.sources ?? {};
  const byKey = new Map(resources.map((r) => [keyOf(r), r as unknown as Obj]));
  const ofType = (t: string) => resources.filter((r) => r.resourceType === t).map((r) => r as unknown as Obj);
  const out = new Map<string, RelatedPatient>();
  const add = (patient: string | undefined, source: string, evidence: string[]) => {
    if (patient !== undefined && !out.has(patient)) out.set(patient, { source, evidence });
  };
  for (const name of sourceNames) {
    const source = sources[name];
    if (source === undefined) throw new Error(`oracle: relationship source ${name} is not in policy.yaml`);
    switch (source.kind) {
      case 'CareTeam':
        for (const ct of ofType('CareTeam')) {
          if (ct.status !== 'active' || endedBy(ct.period, now)) continue;
          if (!many(ct.participant).some((p) => refOf(asObj(p)?.member) === fhirUser && !endedBy(asObj(p)?.period, now))) continue;
          add(patientIdOf(ct.subject), name, [`CareTeam/${ct.id}`]);
        }
        break;
      case 'Encounter':
        for (const enc of ofType('Encounter')) {
          if (enc.status === 'cancelled' || enc.status === 'entered-in-error') continue;
          if (!many(enc.participant).some((p) => refOf(asObj(p)?.individual) === fhirUser)) continue;
          const end = asObj(enc.period)?.end;
          const current = CURRENT_ENCOUNTER.has(String(enc.status)) || typeof end !== 'string';
          if (!current && over(end as string) <= now - (source.days ?? 0) * DAY_MS) continue;
          add(patientIdOf(enc.subject), name, [`Encounter/${enc.id}`]);
        }
        break;
      case 'EpisodeOfCare':
        for (const eoc of ofType('EpisodeOfCare')) {
          if (eoc.status !== 'active' || endedBy(eoc.period, now) || refOf(eoc.careManager) !== fhirUser) continue;
          add(patientIdOf(eoc.patient), name, [`EpisodeOfCare/${eoc.id}`]);
        }
        break;
      case 'PractitionerRole':
        for (const role of ofType('PractitionerRole')) {
          if (role.active !== true || endedBy(role.period, now) || refOf(role.practitioner) !== fhirUser) continue;
          const locations = many(role.location).map(refOf);
          const organization = locations.length === 0 ? refOf(role.organization) : undefined;
          for (const enc of ofType('Encounter')) {
            if (enc.status !== 'in-progress') continue;
            const there =
              many(enc.location).some((l) => {
                const at = asObj(l);
                return at !== undefined && at.status !== 'completed' && !endedBy(at.period, now) && locations.includes(refOf(at.location));
              }) ||
              (organization !== undefined && refOf(enc.serviceProvider) === organization);
            if (there) add(patientIdOf(enc.subject), name, [`PractitionerRole/${role.id}`, `Encounter/${enc.id}`]);
          }
        }
        break;
      case 'Task':
        for (const task of ofType('Task')) {
          if (!OPEN_TASK.has(String(task.status)) || refOf(task.owner) !== fhirUser) continue;
          const direct = patientIdOf(task.for) ?? patientIdOf(task.focus);
          if (direct !== undefined) {
            add(direct, name, [`Task/${task.id}`]);
            continue;
          }
          const focus = refOf(task.focus);
          const target = focus === undefined ? undefined : byKey.get(focus);
          if (target === undefined) continue;
          const patient = ['patient', 'subject', 'beneficiary'].map((k) => patientIdOf(many(target[k])[0])).find((p) => p !== undefined);
          add(patient, name, [`Task/${task.id}`, focus!]);
        }
        break;
    }
  }
  return out;
}

const relatedCache = new Map<string, Map<string, RelatedPatient> | undefined>();

/** The caller's related patients in S (undefined: no requirement applies to it). */
export function relatedPatients(c: Caller): Map<string, RelatedPatient> | undefined {
  if (!relatedCache.has(c.name)) {
    const req = relationshipRequirement(c);
    relatedCache.set(c.name, req === undefined ? undefined : relationshipsIn(c.fhirUser!, req.sources, [...currentResources().values()]));
  }
  return relatedCache.get(c.name);
}

function relatedSet(c: Caller): ReadonlySet<string> | undefined {
  const related = relatedPatients(c);
  return related === undefined ? undefined : new Set(related.keys());
}

/** Every patient id a reference anywhere in `value` names (relative or absolute, versioned or not). */
export function patientsMentioned(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const v of value) patientsMentioned(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') {
        const m = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]*)?$/.exec(v);
        if (m) out.add(m[1]!);
      } else patientsMentioned(v, out);
    }
  }
  return out;
}

/**
 * Whether a resource is the record of related patients only: a Patient by its id; other patient
 * data (a type with a patient compartment) when its compartment references name at least one
 * patient, every patient any reference names is related, and it contains no Patient.
 */
export function ofRelatedPatients(r: Resource, related: ReadonlySet<string>): boolean {
  if (r.resourceType === 'Patient') return related.has(r.id ?? '');
  const paths = patientReferencePaths(r.resourceType);
  if (paths.length === 0) return true;
  const named = paths.flatMap((p) => referencesAt(r, p.split('.'))).filter((ref) => /(?:^|\/)Patient\//.test(ref));
  if (named.length === 0) return false;
  if ([...patientsMentioned(r)].some((p) => !related.has(p))) return false;
  const contained = (r as { contained?: Resource[] }).contained ?? [];
  return !contained.some((x) => x.resourceType === 'Patient');
}

/**
 * Strings only the records of `patients` hold (ids, names, identifiers, values, dates...), each
 * appearing in no other seeded resource, not even inside a longer string: what must never reach a
 * caller not related to them.
 */
export function recordsOnlyOf(patients: readonly string[]): string[] {
  const theirs = (r: Resource) => (r.resourceType === 'Patient' ? patients.includes(r.id ?? '') : [...patientsMentioned(r)].some((p) => patients.includes(p)));
  const strings = (v: unknown, out: Set<string>): Set<string> => {
    if (typeof v === 'string') out.add(v);
    else if (Array.isArray(v)) for (const x of v) strings(x, out);
    else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) strings(x, out);
    return out;
  };
  const mine = new Set<string>();
  const others = new Set<string>();
  for (const r of seedVersions()) strings(r, theirs(r) ? mine : others);
  const elsewhere = [...others].map((s) => s.toLowerCase());
  return [...mine].filter((s) => s.length >= 5 && !elsewhere.some((o) => o.includes(s.toLowerCase())));
}

// ---------------------------------------------------------------------------------------------
// Patients' consents, read independently (the policy's `consent` section and each data set's
// authorization requirement, evaluated here on the seeded Consent resources themselves)

const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
const CONSENT_ACTION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentaction';
/** Actions that concern reading (collect, correct: never). */
const READING_ACTIONS = new Set(['access', 'use', 'disclose']);
const OPT_IN = new Set(['OPTIN', 'OPTINR']);
const OPT_OUT = new Set(['OPTOUT', 'OPTOUTE']);
/** Where a resource's codes are (a consent's `provision.code` is met by a coding of one of these). */
const CODE_ELEMENTS = ['code', 'type', 'vaccineCode', 'medicationCodeableConcept'];

type Decision = 'permit' | 'deny';

interface OracleProvision {
  readonly type?: Decision;
  readonly period?: unknown;
  readonly actors?: string[];
  readonly purposes?: string[];
  readonly classes?: string[];
  readonly codes?: string[];
  readonly labels?: string[];
  readonly data?: Array<{ meaning: string; ref: string }>;
  /** Absent: any action; present: the reading ones among the provision's actions (may be empty). */
  readonly actions?: string[];
  readonly children: OracleProvision[];
}

/** One patient's seeded Consent as this file reads it; `unreadable` when the gateway must fail closed. */
export interface OracleConsent {
  readonly id: string;
  readonly patient: string;
  readonly dateTime: number | undefined;
  readonly base: Decision | undefined;
  readonly period: unknown;
  readonly root: OracleProvision;
  readonly unreadable?: string;
}

/** `Type/id` of a reference (relative or absolute, a version cut off), or undefined. */
function tailOf(ref: string): string | undefined {
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]*)?$/.exec(ref);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

function codingKeys(concepts: unknown): string[] {
  return many(concepts).flatMap((cc) => many(asObj(cc)?.coding).flatMap((c) => (asObj(c)?.system !== undefined ? [`${asObj(c)!.system}|${asObj(c)!.code}`] : [])));
}

/** Whether `period` (a FHIR Period) holds `now`: an end date runs to the end of its day. */
function periodHolds(period: unknown, now: number): boolean {
  const p = asObj(period);
  if (p === undefined) return true;
  if (typeof p.start === 'string' && Date.parse(p.start.length === 10 ? `${p.start}T00:00:00Z` : p.start) > now) return false;
  if (typeof p.end === 'string' && over(p.end) <= now) return false;
  return true;
}

function readProvision(v: unknown, root: boolean, fail: (why: string) => never): OracleProvision {
  const p = asObj(v) ?? {};
  if (p.modifierExtension !== undefined) fail('modifierExtension');
  if (p.dataPeriod !== undefined) fail('provision.dataPeriod');
  const type = p.type === 'permit' || p.type === 'deny' ? p.type : undefined;
  if (!root && type === undefined) fail('a nested provision without type');
  const list = <T>(x: unknown, f: (y: unknown) => T | undefined): T[] | undefined => {
    if (x === undefined) return undefined;
    return many(x).map((y) => f(y) ?? fail('an unreadable element'));
  };
  let actions: string[] | undefined;
  if (p.action !== undefined) {
    const codes = many(p.action).flatMap((a) => many(asObj(a)?.coding).filter((c) => asObj(c)?.system === CONSENT_ACTION_SYSTEM).map((c) => String(asObj(c)!.code)));
    if (codes.length === 0) fail('provision.action without a consentaction code');
    actions = codes.filter((c) => READING_ACTIONS.has(c));
  }
  return {
    ...(type === undefined ? {} : { type }),
    ...(p.period === undefined ? {} : { period: p.period }),
    ...(p.actor === undefined ? {} : { actors: list(p.actor, (a) => tailOf(refOf(asObj(a)?.reference) ?? '')) }),
    ...(p.purpose === undefined ? {} : { purposes: list(p.purpose, (c) => (typeof asObj(c)?.code === 'string' ? String(asObj(c)!.code) : undefined)) }),
    ...(p.class === undefined ? {} : { classes: list(p.class, (c) => (typeof asObj(c)?.code === 'string' ? String(asObj(c)!.code) : undefined)) }),
    ...(p.code === undefined ? {} : { codes: codingKeys(p.code) }),
    ...(p.securityLabel === undefined ? {} : { labels: list(p.securityLabel, (c) => (asObj(c)?.system === undefined ? undefined : `${asObj(c)!.system}|${asObj(c)!.code}`)) }),
    ...(p.data === undefined
      ? {}
      : {
          data: list(p.data, (d) => {
            const meaning = asObj(d)?.meaning;
            const ref = tailOf(refOf(asObj(d)?.reference) ?? '');
            return (meaning === 'instance' || meaning === 'related' || meaning === 'dependents') && ref !== undefined ? { meaning, ref } : undefined;
          }),
        }),
    ...(actions === undefined ? {} : { actions }),
    children: many(p.provision).map((x) => readProvision(x, false, fail)),
  };
}

/** The seeded Consent, read; undefined when it does not count (not active, not patient-privacy). */
export function readConsent(r: Obj): OracleConsent | undefined {
  if (r.status !== 'active') return undefined;
  if (!many(asObj(r.scope)?.coding).some((c) => asObj(c)?.system === CONSENT_SCOPE_SYSTEM && asObj(c)?.code === 'patient-privacy')) return undefined;
  const patient = tailOf(refOf(r.patient) ?? '');
  if (patient === undefined || !patient.startsWith('Patient/')) return undefined;
  const id = `Consent/${String(r.id)}`;
  const rule = many(asObj(r.policyRule)?.coding).map((c) => String(asObj(c)?.code));
  const dateTime = typeof r.dateTime === 'string' ? Date.parse(r.dateTime) : undefined;
  const shell = { id, patient: patient.slice('Patient/'.length), dateTime, period: asObj(r.provision)?.period };
  try {
    const fail = (why: string): never => {
      throw new Error(why);
    };
    if (r.modifierExtension !== undefined) fail('modifierExtension');
    const root = readProvision(r.provision, true, fail);
    let base: Decision | undefined = rule.some((c) => OPT_IN.has(c)) ? 'permit' : rule.some((c) => OPT_OUT.has(c)) ? 'deny' : undefined;
    if (rule.length > 0 && base === undefined && root.type === undefined) fail('an unknown policyRule');
    base = root.type ?? base;
    return { ...shell, base, root };
  } catch (e) {
    return { ...shell, base: undefined, root: { children: [] }, unreadable: (e as Error).message };
  }
}

/** The seeded consents of each patient (current versions). */
let consentsCache: Map<string, OracleConsent[]> | undefined;
export function consentsByPatient(): Map<string, OracleConsent[]> {
  if (consentsCache === undefined) {
    consentsCache = new Map();
    for (const r of currentResources().values()) {
      if (r.resourceType !== 'Consent') continue;
      const c = readConsent(r as unknown as Obj);
      if (c !== undefined) consentsCache.set(c.patient, [...(consentsCache.get(c.patient) ?? []), c]);
    }
  }
  return consentsCache;
}

interface Access {
  readonly purpose: string;
  readonly actors: readonly string[];
  readonly now: number;
}

/** Every reference in `value`, as `Type/id`. */
function referencesIn(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const v of value) referencesIn(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') {
        const t = tailOf(v);
        if (t !== undefined) out.add(t);
      } else referencesIn(v, out);
    }
  }
  return out;
}

function provisionApplies(p: OracleProvision, r: Resource, a: Access): boolean {
  const res = r as unknown as Obj;
  if (p.period !== undefined && !periodHolds(p.period, a.now)) return false;
  if (p.actions !== undefined && p.actions.length === 0) return false;
  if (p.actors !== undefined && !p.actors.some((x) => a.actors.includes(x))) return false;
  if (p.purposes !== undefined && !p.purposes.some((x) => purposeCovers(x, a.purpose))) return false;
  if (p.classes !== undefined && !p.classes.includes(r.resourceType)) return false;
  if (p.codes !== undefined) {
    const own = CODE_ELEMENTS.flatMap((e) => codingKeys(res[e]));
    if (!p.codes.some((x) => own.includes(x))) return false;
  }
  if (p.labels !== undefined) {
    const own = (r.meta?.security ?? []).map((c) => `${c.system}|${c.code}`);
    if (!p.labels.some((x) => own.includes(x))) return false;
  }
  if (p.data !== undefined) {
    const key = keyOf(r);
    const refs = referencesIn(r);
    if (!p.data.some((d) => d.ref === key || (d.meaning !== 'instance' && refs.has(d.ref)))) return false;
  }
  return true;
}

/** A provision's decision where it applies, and the provisions from it up to the root that decided. */
function decideProvision(p: OracleProvision, inherited: Decision | undefined, r: Resource, a: Access): { decision: Decision | undefined; path: OracleProvision[] } | undefined {
  if (!provisionApplies(p, r, a)) return undefined;
  const own = p.type ?? inherited;
  const children = p.children.map((x) => decideProvision(x, own, r, a)).filter((x) => x !== undefined && x.decision !== undefined);
  const pick = children.find((x) => x!.decision === 'deny') ?? children.find((x) => x!.decision === 'permit');
  return pick === undefined ? { decision: own, path: [p] } : { decision: pick.decision, path: [...pick.path, p] };
}

/** One consent's opinion on the access to `r` (undefined: none, or not in force). */
function consentDecision(c: OracleConsent, r: Resource, a: Access): { decision: Decision | undefined; path: OracleProvision[] } {
  if (!periodHolds(c.period, a.now)) return { decision: undefined, path: [] };
  return decideProvision(c.root, c.base, r, a) ?? { decision: c.base, path: [] };
}

/** The patients a resource belongs to: a Patient itself; else the patients its compartment references name. */
export function compartmentPatients(r: Resource): string[] {
  if (r.resourceType === 'Patient') return r.id === undefined ? [] : [r.id];
  const out = new Set<string>();
  for (const path of patientReferencePaths(r.resourceType)) {
    for (const ref of referencesAt(r, path.split('.'))) {
      const t = tailOf(ref);
      if (t?.startsWith('Patient/')) out.add(t.slice('Patient/'.length));
    }
  }
  return [...out];
}

/** A permit whose deciding path names the caller (where it names actors) and a purpose covering the declared one. */
function permitNaming(consents: readonly OracleConsent[], r: Resource, a: Access, actorRequired: boolean): boolean {
  return consents.some((c) => {
    const d = consentDecision(c, r, a);
    if (d.decision !== 'permit') return false;
    const purposes = d.path.flatMap((p) => p.purposes ?? []);
    const actors = d.path.flatMap((p) => p.actors ?? []);
    if (!purposes.some((p) => purposeCovers(p, a.purpose))) return false;
    if (actorRequired || actors.length > 0) return actors.some((x) => a.actors.includes(x));
    return true;
  });
}

/**
 * Whether the shipped policy's consent enforcement withholds `r` from the caller (not under
 * break-glass): every patient the resource belongs to (`patients`: a contained resource's include
 * its container's) is judged on their own consents.
 */
export function consentWithholds(c: Caller, r: Resource, patients: readonly string[] = compartmentPatients(r)): boolean {
  const spec = policy().consent;
  if (spec === undefined) return false;
  if ((spec.exemptPurposes ?? []).some((p) => purposeCovers(p, c.purpose))) return false;
  if (patients.length === 0) return false;
  const a: Access = { purpose: c.purpose, actors: c.fhirUser === undefined ? [] : [c.fhirUser], now: Date.now() };
  const part2Labels = spec.part2?.labels ?? ['SUD', '42CFRPart2'];
  const part2 = part2Labels.some((l) => (r.meta?.security ?? []).some((coding) => labelMatches(l, coding)));
  const authorization = ((policy().dataSets[dataSetName(c)] as { consent?: { authorization?: string[] } }).consent?.authorization ?? []).some((p) => purposeCovers(p, c.purpose));
  for (const patient of patients) {
    const all = consentsByPatient().get(patient) ?? [];
    if (all.some((x) => x.unreadable !== undefined)) return true;
    if (part2 && !permitNaming(all, r, a, true)) return true;
    if (authorization && !permitNaming(all, r, a, false)) return true;
    const opinions = all.map((x) => ({ x, d: consentDecision(x, r, a).decision })).filter((o) => o.d !== undefined);
    if (spec.overlap === 'latest') {
      const newest = [...opinions].sort((p, q) => (q.x.dateTime ?? Number.NEGATIVE_INFINITY) - (p.x.dateTime ?? Number.NEGATIVE_INFINITY))[0];
      if (newest?.d === 'deny') return true;
    } else if (opinions.some((o) => o.d === 'deny')) return true;
  }
  return false;
}

/** The callers the demo's consents restrict: Henry's research opt-out, Brian's payer restriction, Paula's Part 2 record. */
export function consentCallers(): Caller[] {
  return [
    { name: 'researcher/HRESCH+consent', role: 'researcher', purpose: 'HRESCH', consent: true },
    { name: 'billing/HPAYMT+consent', role: 'billing', purpose: 'HPAYMT', consent: true },
    { name: 'coder/HOPERAT+consent', role: 'coder', purpose: 'HOPERAT', consent: true },
  ];
}

// ---------------------------------------------------------------------------------------------
// The two states

export const HENRY_HISTORY_ID = 'cond-henry-hiv-history';
const SNOMED = 'http://snomed.info/sct';

/**
 * A Condition for Henry whose version 1 is unlabelled and whose version 2 is labelled HIV and R:
 * its whole history must vanish for callers withholding either.
 */
export function extraHistory(): Resource[] {
  const base = (): Condition => ({
    resourceType: 'Condition',
    id: HENRY_HISTORY_ID,
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'problem-list-item' }] }],
    subject: { reference: `Patient/${DEMO.patients.henry}`, display: DEMO.names.henry },
    encounter: { reference: 'Encounter/enc-henry-1' },
    recordedDate: '2024-05-05',
  });
  const v1: Condition = {
    ...base(),
    meta: { versionId: '1', lastUpdated: '2024-06-02T09:00:00.000Z' },
    verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'provisional' }] },
    code: { coding: [{ system: SNOMED, code: '84229001', display: 'Fatigue' }], text: 'Fatigue' },
  };
  const v2: Condition = {
    ...base(),
    meta: {
      versionId: '2',
      lastUpdated: '2024-06-03T09:00:00.000Z',
      security: [
        { system: ACT_CODE_SYSTEM, code: 'HIV', display: 'HIV/AIDS information sensitivity' },
        { system: CONFIDENTIALITY_SYSTEM, code: 'R', display: 'restricted' },
      ],
    },
    verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
    code: { coding: [{ system: SNOMED, code: '86406008', display: 'Human immunodeficiency virus infection' }], text: 'HIV infection' },
  };
  return [v1, v2];
}

/** Every version stored in S, oldest first (the demo seed order, then the extra history). */
export function seedVersions(): Resource[] {
  return [aliceFirstVersion(), ...demoResources(), ...extraHistory()];
}

export const keyOf = (r: Resource): string => `${r.resourceType}/${r.id}`;

/** Current version of every seeded resource, by `Type/id`, in first-seen order. */
export function currentResources(): Map<string, Resource> {
  const out = new Map<string, Resource>();
  for (const r of seedVersions()) out.set(keyOf(r), r);
  return out;
}

/** Every version of every seeded resource, by `Type/id`. */
export function versionsByKey(): Map<string, Resource[]> {
  const out = new Map<string, Resource[]>();
  for (const r of seedVersions()) out.set(keyOf(r), [...(out.get(keyOf(r)) ?? []), r]);
  return out;
}

/** `Type/id` -> reason, for every resource withheld from the caller. */
export function withheldFor(c: Caller): Map<string, WithheldReason> {
  const out = new Map<string, WithheldReason>();
  for (const [key, r] of currentResources()) {
    const why = withheldReason(c, r);
    if (why !== undefined) out.set(key, why);
  }
  return out;
}

/**
 * The versions stored in S' for the caller: S without every version of each withheld resource,
 * except the resources that relate the caller to its patients (see the file comment).
 */
export function sPrimeVersions(c: Caller): Resource[] {
  const withheld = withheldFor(c);
  const evidence = new Set([...(relatedPatients(c)?.values() ?? [])].flatMap((r) => r.evidence));
  // The Consents decide for the caller (policy input, like the relationship evidence): S' keeps them.
  const kept = (r: Resource) => evidence.has(keyOf(r)) || (c.consent === true && r.resourceType === 'Consent');
  return seedVersions().filter((r) => !withheld.has(keyOf(r)) || kept(r));
}
