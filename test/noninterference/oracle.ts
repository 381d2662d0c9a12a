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
interface DataSetYaml {
  withhold?: string[];
  rules: RuleYaml[];
}
interface RoleYaml {
  purposes: Record<string, string>;
  breakGlass?: boolean;
}
interface PolicyYaml {
  dataSets: Record<string, DataSetYaml>;
  roles: Record<string, RoleYaml>;
}

let policyYaml: PolicyYaml | undefined;
export function policy(): PolicyYaml {
  policyYaml ??= parse(readFileSync(POLICY_FILE, 'utf8')) as PolicyYaml;
  return policyYaml;
}

/** Who is asking: a role, one declared purpose, and optionally a SMART patient claim. */
export interface Caller {
  readonly name: string;
  readonly role: string;
  readonly purpose: string;
  readonly patient?: string;
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

export type WithheldReason = 'type' | 'label' | 'compartment';

/** Why the caller may not see this (current version of a) resource, or undefined when it may. */
export function withheldReason(c: Caller, r: Resource): WithheldReason | undefined {
  if (!grantedTypes(c).includes(r.resourceType)) return 'type';
  const labels = withheldLabels(c, r.resourceType);
  const security = r.meta?.security ?? [];
  if (labels.some((l) => security.some((coding) => labelMatches(l, coding)))) return 'label';
  if (c.patient !== undefined && inPatientCompartment(r, c.patient) === false) return 'compartment';
  return undefined;
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

/** The versions stored in S' for the caller: S without every version of each withheld resource. */
export function sPrimeVersions(c: Caller): Resource[] {
  const withheld = withheldFor(c);
  return seedVersions().filter((r) => !withheld.has(keyOf(r)));
}
