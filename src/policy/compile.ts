/**
 * Compiles a validated policy file into per-(role, purpose, type) plans, once at load (pure apart
 * from the generated FHIR tables). Every semantic problem is returned with the policy path of the
 * offending node, so the loader can report it as file:line:col; a policy with problems yields no
 * CompiledPolicy at all (fail closed: never half a policy).
 */
import { createHash } from 'node:crypto';
import { didYouMean, editDistance } from '../config/errors.js';
import { isR4ResourceType as isKnownResourceType } from '../fhir/resource-types.js';
import { resourceTypes, searchParam, searchParamCodes, typeElements } from '../fhir/tables.js';
import { type Fate, pathFate, worseFate } from '../redact/deidentify.js';
import type { ElementPlan } from '../redact/types.js';
import {
  CONFIDENTIALITY,
  CONFIDENTIALITY_LEVELS,
  canonicalSystem,
  compileLabelSet,
  expandLabel,
  isValidLabel,
  type LabelVocabulary,
  labelVocabulary,
  unknownLabel,
} from './labels.js';
import type { CompiledConsent } from '../consent/types.js';
import { selfGrantingTypes } from './relationship.js';
import { isTimeZone } from '../monitor/rules.js';
import type { DeidProfile, LabelDeclaration, PolicyFile, PolicyInteraction, RuleSpec, TransformName } from './model.js';
import type {
  AccessPlan,
  CompiledAccessRequests,
  CompiledBreakGlass,
  CompiledPolicy,
  CompiledRelationships,
  CompiledRole,
  PurposeInfo,
  RelationshipKind,
  RelationshipRequirement,
  RelationshipSource,
  RequestableDataSet,
  ResourcePlan,
} from './plan.js';

/** Parameters that shape a search rather than filter on element values; always allowed. */
export const CONTROL_SEARCH_PARAMS: readonly string[] = Object.freeze([
  '_id',
  '_count',
  '_sort',
  '_include',
  '_revinclude',
  '_elements',
  '_summary',
  '_total',
  '_lastUpdated',
]);

const DEFAULT_INTERACTIONS: readonly PolicyInteraction[] = ['read', 'search'];
export const BREAK_GLASS_PURPOSE = 'BTG';
export const BREAK_GLASS_ROLE = 'break-glass';

/** Kept as a seam so config validation can switch tables without touching callers. */
export function isR4ResourceType(name: string): boolean {
  return isKnownResourceType(name);
}

export interface ElementCompiler {
  compileElementPlan(
    resourceType: string,
    rule: {
      elements?: readonly string[];
      remove?: readonly string[];
      transforms?: ReadonlyArray<{ select: string; apply: TransformName }>;
    },
    where: string,
  ): ElementPlan;
  /** Search params whose every path the plan keeps unchanged (src/redact/compile.ts). */
  derivedSearchParams?(resourceType: string, plan: ElementPlan): readonly string[];
}

export interface CompileProblem {
  /** Policy path, e.g. `dataSets.billing.rules[0].types[2]`. */
  readonly path: string;
  /** Point at the key of the last segment rather than its value. */
  readonly at: 'value' | 'key';
  readonly message: string;
}

export type CompileResult =
  | { readonly ok: true; readonly policy: CompiledPolicy; readonly problems: readonly [] }
  | { readonly ok: false; readonly policy: undefined; readonly problems: readonly CompileProblem[] };

export function policyVersion(source: string | Uint8Array): string {
  return createHash('sha256').update(source).digest('hex').slice(0, 16);
}

/**
 * Compiles `raw`. It also runs over a file that failed the schema (check-config reports every
 * problem at once): parts of the wrong shape are skipped here, the schema has already named them.
 */
export function compilePolicy(raw: PolicyFile, source: string | Uint8Array, compiler: ElementCompiler): CompileResult {
  const problems: CompileProblem[] = [];
  const problem = (path: string, message: string, at: 'value' | 'key' = 'value') => {
    problems.push({ path, at, message });
  };

  const vocabulary = compileDeclaredLabels(raw.labels, problem);
  const purposes = compilePurposes(raw, problem);
  const restrictedZip3 = Array.isArray(raw.safeHarbor?.restrictedZip3) ? raw.safeHarbor.restrictedZip3 : undefined;

  // Data sets compile once and are shared by every role and purpose that names them.
  const dataSets = new Map<string, ReadonlyMap<string, ResourcePlan>>();
  for (const [name, ds] of entries(raw.dataSets)) {
    if (!isObject(ds)) continue;
    const withhold = Array.isArray(ds.withhold) ? ds.withhold : [];
    const rules = Array.isArray(ds.rules) ? ds.rules : [];
    dataSets.set(name, compileDataSet(name, withhold, rules, restrictedZip3 !== undefined, compiler, problem, vocabulary, ds.deidentify));
  }
  nearMissLabels(raw, vocabulary, problem);
  const relationships = compileRelationships(raw, problem);
  if (relationships !== undefined) selfGrantingWrites(raw, dataSets, relationships, problem);
  const consent = compileConsent(raw, purposes, vocabulary, problem);
  // A section of the wrong shape was reported by the schema; names it would have declared are not guessed at.
  const purposesKnown = isObject(raw.purposes);
  const dataSetsKnown = isObject(raw.dataSets);

  const roles = new Map<string, CompiledRole>();
  for (const [roleName, spec] of entries(raw.roles)) {
    if (!isObject(spec) || !isObject(spec.purposes)) continue;
    const base = `roles.${roleName}`;
    for (const [code, dataSet] of Object.entries(spec.purposes)) {
      if (!purposes.has(code)) {
        if (purposesKnown) {
          problem(`${base}.purposes.${code}`, `unknown purpose '${code}' (not declared under purposes)${didYouMean(code, purposes.keys())}`, 'key');
        }
      } else if (code === BREAK_GLASS_PURPOSE) {
        problem(`${base}.purposes.${code}`, 'BTG cannot be granted as a purpose; mark the role breakGlass: true', 'key');
      }
      if (typeof dataSet === 'string' && dataSetsKnown && !dataSets.has(dataSet)) {
        problem(`${base}.purposes.${code}`, `unknown data set '${dataSet}'${didYouMean(dataSet, dataSets.keys())}`);
      }
    }
    if (spec.breakGlass === true && raw.breakGlass === undefined) {
      problem(`${base}.breakGlass`, 'role is break-glass eligible but the policy has no breakGlass section');
    }
    const plans = new Map<string, AccessPlan>();
    for (const code of purposes.keys()) {
      // Break-glass is never inherited from TREAT: it is its own, alerted, path.
      if (code === BREAK_GLASS_PURPOSE) continue;
      const grant = nearestGrant(code, spec.purposes, purposes);
      if (grant === undefined) continue;
      const dataSet = spec.purposes[grant];
      const types = dataSets.get(dataSet);
      if (!types) continue;
      const relationship = relationshipFor(raw.dataSets?.[dataSet], dataSet, code, purposes, relationships);
      const authorization = authorizationFor(raw.dataSets?.[dataSet], dataSet, code, purposes);
      plans.set(
        code,
        Object.freeze({
          role: roleName,
          purpose: code,
          dataSet,
          grantedBy: `${base}.purposes.${grant}`,
          compartment: spec.compartment,
          types,
          ...(relationship === undefined ? {} : { relationship }),
          ...(authorization === undefined ? {} : { authorization }),
        }),
      );
    }
    roles.set(
      roleName,
      Object.freeze({
        name: roleName,
        breakGlass: spec.breakGlass === true,
        capabilities: new Set(Array.isArray(spec.capabilities) ? spec.capabilities : []),
        plans,
      }),
    );
  }

  let breakGlass: CompiledBreakGlass | undefined;
  if (isObject(raw.breakGlass) && typeof raw.breakGlass.dataSet === 'string') {
    const bg = raw.breakGlass;
    const types = dataSets.get(bg.dataSet);
    if (!types && dataSetsKnown) problem('breakGlass.dataSet', `unknown data set '${bg.dataSet}'${didYouMean(bg.dataSet, dataSets.keys())}`);
    if (!purposes.has(BREAK_GLASS_PURPOSE)) problem('breakGlass', 'breakGlass is configured but purpose BTG is not declared');
    if (types) {
      breakGlass = Object.freeze({
        dataSet: bg.dataSet,
        sessionMs: (bg.sessionMinutes ?? 60) * 60_000,
        minReasonLength: bg.minReasonLength ?? 20,
        reasons: bg.reasons ? Object.freeze([...bg.reasons]) : undefined,
        maxSessionsPerDay: bg.maxSessionsPerDay ?? 5,
        plan: Object.freeze({
          role: BREAK_GLASS_ROLE,
          purpose: BREAK_GLASS_PURPOSE,
          dataSet: bg.dataSet,
          grantedBy: 'breakGlass',
          // The session (not the token) limits break-glass to one patient: checked by its module.
          compartment: undefined,
          types,
        }),
      });
    }
  }

  const accessRequests = compileAccessRequests(raw, dataSets, roles, purposes, problem);

  if (problems.length > 0) return { ok: false, policy: undefined, problems };
  return {
    ok: true,
    problems: [],
    policy: Object.freeze({
      version: policyVersion(source),
      purposes,
      roles,
      breakGlass,
      ...(relationships === undefined ? {} : { relationships }),
      ...(consent === undefined ? {} : { consent }),
      ...(accessRequests === undefined ? {} : { accessRequests }),
      restrictedZip3: new Set(restrictedZip3 ?? []),
    }),
  };
}

type Report = (path: string, message: string, at?: 'value' | 'key') => void;

function isObject<T>(x: T): x is T & object {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** The entries of a section, none when it is not a mapping (the schema said so already). */
function entries<T>(x: Readonly<Record<string, T>> | undefined): Array<[string, T]> {
  return isObject(x) ? Object.entries(x) : [];
}

function strings(x: unknown): x is readonly string[] {
  return Array.isArray(x) && x.every((s) => typeof s === 'string');
}

/** The policy's `labels:` list: each code of a system once. */
function compileDeclaredLabels(declared: readonly LabelDeclaration[] | undefined, problem: Report): LabelVocabulary {
  if (declared === undefined || !Array.isArray(declared)) return labelVocabulary([]);
  const seen = new Map<string, number>();
  const ok: LabelDeclaration[] = [];
  declared.forEach((d, i) => {
    if (!isObject(d) || typeof d.code !== 'string' || typeof d.system !== 'string') return;
    const key = `${canonicalSystem(d.system)}|${d.code}`;
    const prior = seen.get(key);
    if (prior !== undefined) {
      problem(`labels[${i}]`, `label ${d.code} of ${d.system} is already declared by labels[${prior}]`);
      return;
    }
    seen.set(key, i);
    ok.push(d);
  });
  return labelVocabulary(ok);
}

/**
 * The v3-ActReason PurposeOfUse codes (THO, as in FHIR R4): the only codes X-Purpose-Of-Use carries
 * (src/policy/purpose.ts). A declared purpose outside them is a typo (`CLINTRX`) that no client
 * would send, or one a client could send to obtain its parent's grants under another name.
 */
export const PURPOSES_OF_USE: ReadonlySet<string> = new Set([
  'HMARKT', 'HOPERAT', 'CAREMGT', 'DONAT', 'FRAUD', 'GOV', 'HACCRED', 'HCOMPL', 'HDECD', 'HDIRECT', 'HDM', 'HLEGAL',
  'HOUTCOMS', 'HPRGRP', 'HQUALIMP', 'HSYSADMIN', 'LABELING', 'METAMGT', 'MEMADMIN', 'MILCDM', 'PATADMIN', 'PATSFTY',
  'PERFMSR', 'RECORDMGT', 'SYSDEV', 'HTEST', 'TRAIN', 'HPAYMT', 'CLMATTCH', 'COVAUTH', 'COVERAGE', 'ELIGDTRM',
  'ELIGVER', 'ENROLLM', 'MILDCRG', 'REMITADV', 'HRESCH', 'BIORCH', 'CLINTRCH', 'CLINTRCHNPC', 'CLINTRCHPC',
  'PRECLINTRCH', 'DSRCH', 'POARCH', 'TRANSRCH', 'PATRQT', 'FAMRQT', 'PWATRNY', 'SUPNWK', 'PUBHLTH', 'DISASTER',
  'THREAT', 'TREAT', 'CLINTRL', 'COC', 'ETREAT', 'BTG', 'ERTREAT', 'POPHLTH',
]);

function compilePurposes(raw: PolicyFile, problem: Report): Map<string, PurposeInfo> {
  const purposes = new Map<string, PurposeInfo>();
  for (const [code, spec] of entries(raw.purposes)) {
    if (!isObject(spec)) continue;
    if (!PURPOSES_OF_USE.has(code)) {
      problem(`purposes.${code}`, `'${code}' is not a v3-ActReason purpose of use${didYouMean(code, PURPOSES_OF_USE)}`, 'key');
    }
    purposes.set(
      code,
      Object.freeze({
        code,
        display: spec.display,
        parent: typeof spec.parent === 'string' ? spec.parent : undefined,
        minimumNecessary: spec.minimumNecessary ?? true,
      }),
    );
  }
  for (const [code, info] of purposes) {
    if (info.parent === undefined) continue;
    if (!purposes.has(info.parent)) {
      problem(`purposes.${code}.parent`, `unknown parent purpose '${info.parent}'${didYouMean(info.parent, purposes.keys())}`);
      continue;
    }
    // A cycle would make a purpose its own ancestor: every grant would cover it.
    const seen = new Set([code]);
    for (let p: string | undefined = info.parent; p !== undefined; p = purposes.get(p)?.parent) {
      if (seen.has(p)) {
        problem(`purposes.${code}.parent`, `purpose hierarchy has a cycle through '${code}'`);
        break;
      }
      seen.add(p);
    }
  }
  return purposes;
}

/**
 * The `relationships` section: cache bounds and the named sources. Every data set's
 * `relationship` must name declared sources, and purposes it lists must be declared.
 */
function compileRelationships(raw: PolicyFile, problem: (path: string, message: string, at?: 'value' | 'key') => void): CompiledRelationships | undefined {
  const spec = raw.relationships;
  const sources = new Map<string, RelationshipSource>();
  if (isObject(spec) && isObject(spec.sources)) {
    for (const [name, s] of entries(spec.sources)) {
      if (!isObject(s) || !RELATIONSHIP_KINDS.has(s.kind as RelationshipKind)) continue;
      const kind = s.kind as RelationshipKind;
      if (s.days !== undefined && kind !== 'Encounter') problem(`relationships.sources.${name}.days`, `days applies to Encounter sources only, not ${kind}`, 'key');
      sources.set(name, Object.freeze({ name, kind, ...(kind === 'Encounter' ? { days: typeof s.days === 'number' ? s.days : 30 } : {}) }));
    }
  }
  const purposesDeclared = isObject(raw.purposes) ? raw.purposes : {};
  for (const [dsName, ds] of entries(raw.dataSets)) {
    const rel = isObject(ds) ? ds.relationship : undefined;
    if (!isObject(rel)) continue;
    const base = `dataSets.${dsName}.relationship`;
    if (!isObject(spec)) {
      problem(base, 'a relationship requirement needs a relationships section naming its sources', 'key');
      continue;
    }
    (Array.isArray(rel.sources) ? rel.sources : []).forEach((n, i) => {
      if (typeof n === 'string' && isObject(spec.sources) && !sources.has(n) && !Object.hasOwn(spec.sources, n)) {
        problem(`${base}.sources[${i}]`, `unknown relationship source '${n}' (not declared under relationships.sources)${didYouMean(n, sources.keys())}`);
      }
    });
    (Array.isArray(rel.purposes) ? rel.purposes : []).forEach((p, i) => {
      if (typeof p === 'string' && !Object.hasOwn(purposesDeclared, p)) {
        problem(`${base}.purposes[${i}]`, `unknown purpose '${p}' (not declared under purposes)${didYouMean(p, Object.keys(purposesDeclared))}`);
      }
    });
  }
  if (!isObject(spec)) return undefined;
  const all = Object.freeze([...sources.keys()]);
  return Object.freeze({
    breakGlassRecord: Object.freeze({ required: false, sources: all, rule: 'breakGlass' }),
    ttlMs: (typeof spec.cacheSeconds === 'number' ? spec.cacheSeconds : 300) * 1000,
    maxCallers: typeof spec.maxCallers === 'number' ? spec.maxCallers : 10_000,
    maxPatients: typeof spec.maxPatients === 'number' ? spec.maxPatients : 1000,
    searchPatients: typeof spec.searchPatients === 'number' ? spec.searchPatients : 100,
    sources,
  });
}

/**
 * A data set that enforces a relationship must not let its callers write the resources that would
 * relate them to any patient (src/policy/relationship.ts selfGrantingTypes): a clinician creating a
 * PractitionerRole at the hospital's organization would be related to everyone admitted there.
 */
function selfGrantingWrites(
  raw: PolicyFile,
  dataSets: ReadonlyMap<string, ReadonlyMap<string, ResourcePlan>>,
  relationships: CompiledRelationships,
  problem: (path: string, message: string, at?: 'value' | 'key') => void,
): void {
  for (const [dsName, ds] of entries(raw.dataSets)) {
    const rel = isObject(ds) ? ds.relationship : undefined;
    if (!isObject(rel) || rel.required === false || !Array.isArray(rel.sources)) continue;
    const types = dataSets.get(dsName);
    rel.sources.forEach((name, i) => {
      const kind = relationships.sources.get(name)?.kind;
      if (kind === undefined) return;
      for (const t of selfGrantingTypes([kind])) {
        const writes = (['create', 'update', 'patch', 'delete'] as const).filter((w) => types?.get(t)?.interactions.has(w));
        if (writes.length > 0) {
          problem(
            `dataSets.${dsName}.relationship.sources[${i}]`,
            `source '${name}' reads ${t}, which this data set lets its callers ${writes.join('/')}: they could relate themselves to any patient; grant ${t} read and search only`,
          );
        }
      }
    });
  }
}

const RELATIONSHIP_KINDS: ReadonlySet<RelationshipKind> = new Set(['CareTeam', 'Encounter', 'EpisodeOfCare', 'PractitionerRole', 'Task']);

/**
 * A data set's relationship requirement as it applies to purpose `code`: when the data set lists
 * no purposes, always; else when `code` or one of its ancestors is listed (TREAT covers COC).
 */
function relationshipFor(
  ds: PolicyFile['dataSets'][string] | undefined,
  dataSet: string,
  code: string,
  purposes: ReadonlyMap<string, PurposeInfo>,
  relationships: CompiledRelationships | undefined,
): RelationshipRequirement | undefined {
  const rel = isObject(ds) ? ds.relationship : undefined;
  if (!isObject(rel) || !Array.isArray(rel.sources)) return undefined;
  if (Array.isArray(rel.purposes) && !coveredBy(code, new Set(rel.purposes), purposes)) return undefined;
  const required = rel.required !== false;
  const kinds = rel.sources.map((n) => relationships?.sources.get(n)?.kind).filter((k) => k !== undefined);
  return Object.freeze({
    required,
    sources: Object.freeze([...rel.sources]),
    rule: `dataSets.${dataSet}.relationship`,
    ...(required ? { writeProtected: selfGrantingTypes(kinds) } : {}),
  });
}

/** Whether `code` is one of `listed` or a descendant of one (TREAT covers COC). */
function coveredBy(code: string, listed: ReadonlySet<string>, purposes: ReadonlyMap<string, PurposeInfo>): boolean {
  const seen = new Set<string>();
  for (let c: string | undefined = code; c !== undefined && !seen.has(c); c = purposes.get(c)?.parent) {
    seen.add(c);
    if (listed.has(c)) return true;
  }
  return false;
}

/** The default redisclosure notice for 42 CFR Part 2 data (42 CFR 2.32). */
export const DEFAULT_PART2_NOTICE =
  'This record which has been disclosed to you is protected by federal confidentiality rules (42 CFR part 2). These rules prohibit you from using or disclosing this record, or testimony that describes the information contained in this record, in any civil, criminal, administrative, or legislative proceedings by any Federal, State, or local authority, against the patient, unless authorized by the consent of the patient, except as provided at 42 CFR 2.12(c)(5) or as authorized by a court in accordance with 42 CFR 2.64 or 2.65. In addition, the federal rules prohibit you from making any other use or disclosure of this record unless at least one of the following applies: (i) Further use or disclosure is expressly permitted by the written consent of the individual whose information is being disclosed in this record or as otherwise permitted by 42 CFR part 2. (ii) You are a covered entity or business associate and have received the record for treatment, payment, or health care operations, or (iii) You have received the record from a covered entity or business associate as permitted by 45 CFR part 164, subparts A and E. A general authorization for the release of medical or other information is NOT sufficient to meet the required elements of written consent to further use or redisclose the record (see 42 CFR 2.31).';

/**
 * The `consent` section: cache bounds, how overlapping consents combine, the purposes it does not
 * apply to, break-glass, and the 42 CFR Part 2 labels and notice. Purposes and labels it names must
 * be declared (or HL7 codes).
 */
function compileConsent(
  raw: PolicyFile,
  purposes: ReadonlyMap<string, PurposeInfo>,
  vocabulary: LabelVocabulary,
  problem: Report,
): CompiledConsent | undefined {
  const spec = raw.consent;
  const purposesKnown = isObject(raw.purposes);
  // Data sets may mark purposes as needing an authorization only where consent is enforced.
  for (const [dsName, ds] of entries(raw.dataSets)) {
    const c = isObject(ds) ? ds.consent : undefined;
    if (!isObject(c)) continue;
    const base = `dataSets.${dsName}.consent`;
    if (!isObject(spec)) problem(base, 'an authorization requirement needs a consent section (patient consents are not read without one)', 'key');
    for (const [i, p] of (Array.isArray(c.authorization) ? c.authorization : []).entries()) {
      if (purposesKnown && !purposes.has(p)) problem(`${base}.authorization[${i}]`, `unknown purpose '${p}'${didYouMean(p, purposes.keys())}`);
    }
  }
  if (!isObject(spec)) return undefined;
  const exempt = new Set<string>();
  for (const [i, p] of (Array.isArray(spec.exemptPurposes) ? spec.exemptPurposes : []).entries()) {
    if (!purposes.has(p)) {
      if (purposesKnown) problem(`consent.exemptPurposes[${i}]`, `unknown purpose '${p}'${didYouMean(p, purposes.keys())}`);
      continue;
    }
    exempt.add(p);
  }
  // Children of an exempt purpose are exempt (PATRQT covers FAMRQT).
  for (const code of purposes.keys()) if (coveredBy(code, exempt, purposes)) exempt.add(code);
  if (exempt.has(BREAK_GLASS_PURPOSE)) problem('consent.exemptPurposes', 'BTG cannot be exempt from consent; set consent.breakGlass: override instead');
  const part2 = isObject(spec.part2) ? spec.part2 : {};
  const labelSpecs = Array.isArray(part2.labels) ? part2.labels : ['SUD', '42CFRPart2'];
  const labels: string[] = [];
  for (const [i, l] of labelSpecs.entries()) {
    const unknown = unknownLabel(l, vocabulary);
    if (unknown !== undefined) problem(`consent.part2.labels[${i}]`, unknown);
    for (const k of expandLabel(l, vocabulary)) if (!labels.includes(k)) labels.push(k);
  }
  return Object.freeze({
    ttlMs: (spec.cacheSeconds ?? 60) * 1000,
    maxPatients: spec.maxPatients ?? 100_000,
    overlap: spec.overlap ?? 'deny-wins',
    exemptPurposes: exempt,
    breakGlassOverrides: spec.breakGlass === 'override',
    part2: Object.freeze({
      labels: Object.freeze(labels),
      notice: typeof part2.notice === 'string' ? part2.notice : DEFAULT_PART2_NOTICE,
      breakGlass: part2.breakGlass === true,
    }),
  });
}

/** The rule naming `code` as needing the patient's authorization in data set `dataSet`, or undefined. */
function authorizationFor(
  ds: PolicyFile['dataSets'][string] | undefined,
  dataSet: string,
  code: string,
  purposes: ReadonlyMap<string, PurposeInfo>,
): string | undefined {
  const c = isObject(ds) ? ds.consent : undefined;
  if (!isObject(c) || !Array.isArray(c.authorization)) return undefined;
  return coveredBy(code, new Set(c.authorization), purposes) ? `dataSets.${dataSet}.consent` : undefined;
}

/** The granted code that covers `code`: itself, else its nearest granted ancestor. */
function nearestGrant(
  code: string,
  granted: Readonly<Record<string, string>>,
  purposes: ReadonlyMap<string, PurposeInfo>,
): string | undefined {
  const seen = new Set<string>();
  for (let c: string | undefined = code; c !== undefined && !seen.has(c); c = purposes.get(c)?.parent) {
    seen.add(c);
    if (Object.hasOwn(granted, c)) return c;
  }
  return undefined;
}

/** Interactions a requestable data set may grant: a grant widens what its holder reads, never what it writes. */
const GRANTABLE: ReadonlySet<string> = new Set(['read', 'search', 'history']);

/**
 * The `accessRequests` section: each requestable data set exists, reads only, does not
 * de-identify, and is asked for by roles that hold each of its purposes with a data set that does
 * not de-identify either (a grant widens the requester's own view of named patients) and that are
 * not limited to a patient compartment; its approvers are roles of the policy.
 */
function compileAccessRequests(
  raw: PolicyFile,
  dataSets: ReadonlyMap<string, ReadonlyMap<string, ResourcePlan>>,
  roles: ReadonlyMap<string, CompiledRole>,
  purposes: ReadonlyMap<string, PurposeInfo>,
  problem: Report,
): CompiledAccessRequests | undefined {
  const spec = raw.accessRequests;
  if (!isObject(spec)) return undefined;
  const maxMs = (spec.maxMinutes ?? 1440) * 60_000;
  const timeZone = spec.timeZone ?? 'UTC';
  if (!isTimeZone(timeZone)) problem('accessRequests.timeZone', `unknown time zone '${timeZone}'`);
  const out = new Map<string, RequestableDataSet>();
  for (const [name, r] of entries(spec.dataSets)) {
    if (!isObject(r)) continue;
    const base = `accessRequests.dataSets.${name}`;
    const types = dataSets.get(name);
    if (types === undefined) {
      problem(base, `unknown data set '${name}'${didYouMean(name, dataSets.keys())}`, 'key');
      continue;
    }
    const ds = raw.dataSets?.[name];
    if (isObject(ds) && ds.deidentify !== undefined) problem(base, 'a requestable data set cannot de-identify (a grant widens an identified view)', 'key');
    for (const [type, plan] of types) {
      const writes = [...plan.interactions].filter((i) => !GRANTABLE.has(i));
      if (writes.length > 0) problem(base, `a requestable data set grants reads only: ${type} grants ${writes.join(', ')} (${plan.rule})`, 'key');
    }
    const requesters = strings(r.requesters) ? r.requesters : [];
    const listed = strings(r.purposes) ? r.purposes : [];
    listed.forEach((p, i) => {
      if (!purposes.has(p)) problem(`${base}.purposes[${i}]`, `unknown purpose '${p}'${didYouMean(p, purposes.keys())}`);
      else if (p === BREAK_GLASS_PURPOSE) problem(`${base}.purposes[${i}]`, 'BTG cannot be requested: break-glass has its own section');
    });
    requesters.forEach((roleName, i) => {
      const role = roles.get(roleName);
      if (role === undefined) {
        problem(`${base}.requesters[${i}]`, `unknown role '${roleName}'${didYouMean(roleName, roles.keys())}`);
        return;
      }
      for (const p of listed) {
        const plan = role.plans.get(p);
        if (plan === undefined) {
          if (purposes.has(p)) problem(`${base}.requesters[${i}]`, `role ${roleName} does not hold purpose ${p}: a grant widens the requester's own data set for that purpose`);
          continue;
        }
        if (plan.compartment !== undefined) problem(`${base}.requesters[${i}]`, `role ${roleName} is limited to a patient compartment and cannot be granted more`);
        const own = raw.dataSets?.[plan.dataSet];
        if (isObject(own) && own.deidentify !== undefined) problem(`${base}.requesters[${i}]`, `role ${roleName} sees de-identified data for ${p}: a grant cannot mix identified data into it`);
      }
    });
    const approvers = strings(r.approvers) ? r.approvers : [];
    approvers.forEach((roleName, i) => {
      if (!roles.has(roleName)) problem(`${base}.approvers[${i}]`, `unknown role '${roleName}'${didYouMean(roleName, roles.keys())}`);
    });
    const own = (r.maxMinutes ?? spec.maxMinutes ?? 1440) * 60_000;
    if (own > maxMs) problem(`${base}.maxMinutes`, `longer than accessRequests.maxMinutes (${maxMs / 60_000})`);
    out.set(
      name,
      Object.freeze({
        name,
        requesters: new Set(requesters),
        purposes: new Set(listed),
        approvers: new Set(approvers),
        maxMs: Math.min(own, maxMs),
        types,
        rule: base,
      }),
    );
  }
  return Object.freeze({
    maxMs,
    minJustificationLength: spec.minJustificationLength ?? 20,
    reasons: spec.reasons ? Object.freeze([...spec.reasons]) : undefined,
    maxPatients: spec.maxPatients ?? 20,
    maxPending: spec.maxPending ?? 5,
    timeZone,
    dataSets: out,
  });
}

function compileDataSet(
  name: string,
  dataSetWithhold: readonly string[],
  rules: readonly RuleSpec[],
  hasSafeHarbor: boolean,
  compiler: ElementCompiler,
  problem: Report,
  vocabulary: LabelVocabulary,
  deidentify?: DeidProfile,
): ReadonlyMap<string, ResourcePlan> {
  const base = `dataSets.${name}`;
  const checkLabels = (list: readonly string[], path: string): boolean => {
    let ok = true;
    list.forEach((label, i) => {
      if (typeof label !== 'string') ok = false;
      else if (!isValidLabel(label)) {
        problem(`${path}[${i}]`, `invalid security label '${label}' (CODE or system|code)`);
        ok = false;
      } else {
        const unknown = unknownLabel(label, vocabulary);
        if (unknown !== undefined) {
          problem(`${path}[${i}]`, unknown);
          ok = false;
        }
      }
    });
    return ok;
  };
  if (checkLabels(dataSetWithhold, `${base}.withhold`)) confidentialityGaps(dataSetWithhold, [], `${base}.withhold`, problem);
  if (deidentify === 'safe-harbor' && !hasSafeHarbor) {
    // Without the list, restricted 3-digit areas (population < 20,000) would be disclosed.
    problem(`${base}.deidentify`, 'safe-harbor needs safeHarbor.restrictedZip3 in the policy');
  }
  const types = new Map<string, ResourcePlan>();
  const firstRule = new Map<string, number>();
  rules.forEach((rule, r) => {
    const where = `${base}.rules[${r}]`;
    if (!isObject(rule) || !strings(rule.types)) return;
    const ruleWithhold = Array.isArray(rule.withhold) ? rule.withhold : [];
    if (checkLabels(ruleWithhold, `${where}.withhold`) && ruleWithhold.length > 0) {
      confidentialityGaps(ruleWithhold, dataSetWithhold, `${where}.withhold`, problem);
    }
    const shaped = (x: unknown) => x === undefined || strings(x);
    const transformsShaped =
      rule.transforms === undefined ||
      (Array.isArray(rule.transforms) && rule.transforms.every((t) => isObject(t) && typeof t.select === 'string' && typeof t.apply === 'string'));
    // Elements of the wrong shape were reported by the schema; the element plan is not built from them.
    const elementsShaped = shaped(rule.elements) && shaped(rule.remove) && transformsShaped;
    if (transformsShaped) rule.transforms?.forEach((t, i) => {
      if (t.apply === 'zip3' && !hasSafeHarbor) {
        // Without the list, restricted 3-digit areas (population < 20,000) would be disclosed.
        problem(`${where}.transforms[${i}].apply`, 'zip3 needs safeHarbor.restrictedZip3 in the policy');
      }
    });
    const search = strings(rule.search) ? rule.search : [];
    search.forEach((p, i) => {
      if (!isVerbatimOnly(p) && !rule.types.some((t) => isR4ResourceType(t) && searchParam(t, p) !== undefined)) {
        const known = rule.types.filter(isR4ResourceType).flatMap((t) => searchParamCodes(t));
        problem(`${where}.search[${i}]`, `no type of this rule has a search parameter '${p}'${didYouMean(p, new Set(known))}`);
        return;
      }
      // A parameter that searches no element (full text, narrative, named queries) reaches past any element list.
      const refused = rule.types.map((t) => (isR4ResourceType(t) ? searchParam(t, p)?.refused : undefined)).find((r) => r !== undefined);
      if (refused !== undefined) problem(`${where}.search[${i}]`, `'${p}' cannot be enforced: it ${refused}`);
    });
    const withhold = compileLabelSet([...dataSetWithhold, ...ruleWithhold].filter((l) => typeof l === 'string'), vocabulary);
    const interactions = new Set(Array.isArray(rule.interactions) ? rule.interactions : DEFAULT_INTERACTIONS);
    if (interactions.has('relabel') && !interactions.has('update') && !interactions.has('patch')) {
      // relabel only widens update and patch: alone it grants nothing, which is surely not what was meant.
      problem(`${where}.interactions[${rule.interactions!.indexOf('relabel')}]`, 'relabel needs update or patch in the same rule');
    }
    const operations = new Set(Array.isArray(rule.operations) ? rule.operations : []);
    rule.types.forEach((type, t) => {
      if (!isR4ResourceType(type)) {
        problem(`${where}.types[${t}]`, `unknown FHIR R4 resource type '${type}'${didYouMean(type, resourceTypes())}`);
        return;
      }
      const prior = firstRule.get(type);
      if (prior !== undefined) {
        problem(`${where}.types[${t}]`, `type ${type} is already granted by ${base}.rules[${prior}] (one rule per type per data set)`);
        return;
      }
      firstRule.set(type, r);
      if (!elementsShaped) return;
      let elements: ElementPlan;
      try {
        elements = compiler.compileElementPlan(
          type,
          { elements: rule.elements, remove: rule.remove, transforms: rule.transforms },
          where,
        );
      } catch (e) {
        const err = e as { selector?: unknown; where?: unknown; message?: unknown };
        const message = typeof err.message === 'string' ? err.message : String(e);
        let at = where;
        let text = message;
        if (typeof err.where === 'string' && (err.where === where || err.where.startsWith(`${where}.`))) {
          // The element compiler names the exact node (`...rules[0].remove[1]`); keep only its reason.
          at = err.where;
          if (text.startsWith(`${err.where}: `)) text = text.slice(err.where.length + 2);
        } else if (typeof err.selector === 'string') {
          at = selectorPath(rule, where, err.selector);
        }
        problem(at, `${type}: ${text}${elementHint(text)}`);
        return;
      }
      const searchParams = new Set<string>(CONTROL_SEARCH_PARAMS);
      for (const p of compiler.derivedSearchParams?.(type, elements) ?? []) searchParams.add(p);
      // A rule's search list applies to each of its types that has the parameter.
      for (const p of search) if (isVerbatimOnly(p) || searchParam(type, p) !== undefined) searchParams.add(p);
      if (deidentify !== undefined) {
        // A search on a value the profile generalizes or removes would undo it (bisecting a date,
        // matching a name); ids and references are searched by pseudonym (src/policy/deid-request.ts).
        for (const p of [...searchParams]) {
          if (deidSearchable(deidentify, type, p)) continue;
          searchParams.delete(p);
          const i = rule.search?.indexOf(p) ?? -1;
          if (i >= 0) problem(`${where}.search[${i}]`, `${type}: '${p}' searches values the ${deidentify} profile generalizes or removes`);
        }
      }
      types.set(
        type,
        Object.freeze({
          resourceType: type,
          rule: where,
          interactions,
          operations,
          searchParams,
          withhold,
          elements,
          ...(deidentify === undefined ? {} : { deidentify }),
        }),
      );
    });
  });
  return types;
}

/** Parameters that only shape a search (their values are not element values). */
const SHAPING_PARAMS: ReadonlySet<string> = new Set(['_count', '_sort', '_include', '_revinclude', '_elements', '_summary', '_total']);

/**
 * Whether a de-identified caller may search on `param`: shaping parameters (their own values are
 * judged per request), and parameters whose every path the profile keeps, or, for references and
 * `_id`, pseudonymizes. Chains, `_has` and parameters the tables give no path for cannot be judged.
 */
export function deidSearchable(profile: DeidProfile, type: string, param: string): boolean {
  if (SHAPING_PARAMS.has(param)) return true;
  if (isVerbatimOnly(param)) return false;
  const info = searchParam(type, param);
  if (info === undefined || info.paths.length === 0) return false;
  let fate: Fate = 'keep';
  for (const path of info.paths) fate = worseFate(fate, pathFate(profile, type, path));
  if (fate === 'keep') return true;
  return fate === 'pseudonym' && (info.type === 'reference' || param === '_id');
}

/** Chained and reverse-chained parameters are granted only verbatim and not checked against tables. */
export function isVerbatimOnly(param: string): boolean {
  return param.includes('.') || param === '_has' || param.startsWith('_has:');
}

/** The policy path of the selector an element compiler complained about (first occurrence). */
function selectorPath(rule: RuleSpec, where: string, selector: string): string {
  const e = rule.elements?.indexOf(selector) ?? -1;
  if (e >= 0) return `${where}.elements[${e}]`;
  const r = rule.remove?.indexOf(selector) ?? -1;
  if (r >= 0) return `${where}.remove[${r}]`;
  const t = rule.transforms?.findIndex((x) => x.select === selector) ?? -1;
  if (t >= 0) return `${where}.transforms[${t}].select`;
  return where;
}

/** "did you mean" for an element the element compiler did not find (`Patient has no element "nme"`). */
function elementHint(message: string): string {
  const m = /(\S+) has no (?:filterable )?element "([^"]+)"/.exec(message);
  if (m === null) return '';
  const els = typeElements(m[1]!);
  return els === undefined ? '' : didYouMean(m[2]!, Object.keys(els));
}

/**
 * v3-Confidentiality ranks U < L < M < N < R < V: a list that withholds one level must withhold
 * every level above it (with `inherited`, the data set's list a rule adds to). `[N, V]` releases R
 * records while withholding less restricted N ones: surely `R` misspelt, never a policy.
 */
function confidentialityGaps(list: readonly string[], inherited: readonly string[], path: string, problem: Report): void {
  const level = (label: string): number => {
    const bar = label.indexOf('|');
    if (bar >= 0 && canonicalSystem(label.slice(0, bar)) !== CONFIDENTIALITY) return -1;
    return CONFIDENTIALITY_LEVELS.indexOf(bar >= 0 ? label.slice(bar + 1) : label);
  };
  const levels = new Set([...list, ...inherited].map(level).filter((l) => l >= 0));
  if (levels.size === 0) return;
  const lowest = Math.min(...levels);
  const missing = CONFIDENTIALITY_LEVELS.filter((_, i) => i > lowest && !levels.has(i));
  if (missing.length === 0) return;
  const i = list.findIndex((l) => level(l) === lowest);
  const lowestCode = CONFIDENTIALITY_LEVELS[lowest]!;
  problem(
    i >= 0 ? `${path}[${i}]` : path,
    `withholds confidentiality ${lowestCode} but releases the more restricted ${missing.join(', ')} ` +
      `(v3-Confidentiality ranks ${CONFIDENTIALITY_LEVELS.join(' < ')}); withhold ${missing.join(', ')} too` +
      (missing.length === 1 && i >= 0 ? `, or did you mean '${missing[0]}'?` : ''),
  );
}


/**
 * A plain code withheld in one place only, one letter from another code the policy withholds (SUD
 * and STD): most likely that code mistyped, which would release what it was meant to withhold.
 * Written as `system|code` it is taken as meant. Confidentiality levels are checked by rank instead.
 */
function nearMissLabels(raw: PolicyFile, vocabulary: LabelVocabulary, problem: Report): void {
  const uses = new Map<string, string[]>();
  const add = (list: unknown, path: string) => {
    if (!Array.isArray(list)) return;
    list.forEach((l, i) => {
      if (typeof l !== 'string' || l.includes('|') || !isValidLabel(l) || unknownLabel(l, vocabulary) !== undefined) return;
      if (CONFIDENTIALITY_LEVELS.includes(l)) return;
      uses.set(l, [...(uses.get(l) ?? []), `${path}[${i}]`]);
    });
  };
  for (const [name, ds] of entries(raw.dataSets)) {
    if (!isObject(ds)) continue;
    add(ds.withhold, `dataSets.${name}.withhold`);
    if (!Array.isArray(ds.rules)) continue;
    ds.rules.forEach((r, k) => {
      if (isObject(r)) add(r.withhold, `dataSets.${name}.rules[${k}].withhold`);
    });
  }
  for (const [code, paths] of uses) {
    if (paths.length !== 1) continue;
    const near = [...uses.keys()].find((o) => o !== code && editDistance(o, code) === 1);
    if (near === undefined) continue;
    problem(
      paths[0]!,
      `'${code}' is withheld only here and is one letter from '${near}', withheld elsewhere in this policy; ` +
        `did you mean '${near}'? (to mean ${code}, write it as system|code)`,
    );
  }
}
