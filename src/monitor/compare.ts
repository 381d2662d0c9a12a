/**
 * What a request gets under one policy versus another (pure): allow or deny, and for each resource
 * type the request can release, which elements survive and how. Used by `policy diff` (replaying
 * recorded requests) and by shadow mode (live traffic).
 *
 * Care relationships are judged from the evidence the request's record holds (`relationship`: the
 * patients it reached with the relationship behind each, and those without one), never looked up
 * again: a candidate's requirement is replayable only where the record has that evidence for the
 * sources the candidate counts. Turning a requirement on with `required: false` first records it.
 *
 * Patients' consents are judged the same way, from the record's consent evidence (`consent`: what
 * they withheld, or what break-glass released despite them): the consents themselves are not read
 * again. A candidate that stops enforcing them releases what they withheld; one whose break-glass
 * no longer overrides them withholds what was overridden; one that enforces them where the running
 * policy did not (or differently) cannot be replayed on a request that reached patient data.
 */
import type { ConsentEvidence, RelationshipEvidence } from '../audit/record.js';
import type { Principal } from '../auth/principal.js';
import { isCompartmentType } from '../policy/compartment.js';
import { decide } from '../policy/decide.js';
import type { CompiledPolicy, RelationshipRequirement, RelationshipSource } from '../policy/plan.js';
import { patientsNamed } from '../policy/relationship.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { ElementLine } from '../redact/types.js';
import { relationshipRefusal } from './rules.js';

export interface Verdict {
  readonly allow: boolean;
  /** Error code when denied. */
  readonly code: string | undefined;
  readonly role: string | undefined;
  readonly rule: string;
  /** Per resource type asked about: element -> action (elements absent from the map are not released). */
  readonly elements: ReadonlyMap<string, ReadonlyMap<string, ElementLine['action']>>;
  /** The plan's care-relationship requirement, when allowed under one. */
  readonly relationship?: VerdictRelationship | undefined;
  /** The rule making this purpose need the patient's authorization (`dataSets.X.consent`), when allowed under one. */
  readonly authorization?: string | undefined;
}

/** A requirement with its sources as its policy defines them (a source is its name, kind and days). */
export interface VerdictRelationship {
  readonly required: boolean;
  /** e.g. `dataSets.clinical.relationship`. */
  readonly rule: string;
  readonly sources: ReadonlyMap<string, RelationshipSource | undefined>;
}

export interface VerdictInput {
  readonly principal: Principal;
  readonly purpose: string;
  readonly requestedRole?: string | undefined;
  readonly request: ClassifiedRequest;
  /** Resource types whose element plans matter (the request's type plus what it released). */
  readonly types: readonly string[];
}

export function verdict(policy: CompiledPolicy, input: VerdictInput): Verdict {
  let d: ReturnType<typeof decide>;
  try {
    if (!policy.purposes.has(input.purpose)) return { allow: false, code: 'purpose-unknown', role: undefined, rule: `purposes.${input.purpose}`, elements: new Map() };
    d = decide({ policy, principal: input.principal, purpose: input.purpose, requestedRole: input.requestedRole, request: input.request });
  } catch {
    return { allow: false, code: 'internal', role: undefined, rule: 'decide threw', elements: new Map() };
  }
  if (!d.allow) return { allow: false, code: d.code, role: undefined, rule: d.rule, elements: new Map() };
  const elements = new Map<string, Map<string, ElementLine['action']>>();
  for (const type of input.types) {
    const plan = d.plan.types.get(type);
    if (!plan) continue;
    const m = new Map<string, ElementLine['action']>();
    for (const line of plan.elements.describe()) {
      // A plain element that is removed is simply not released; a removal of matching items or of a
      // data type (`identifier[type=SS]`, `@ContactPoint`) is kept: it hides part of what is released.
      if (line.action !== 'remove' || isSelectorLine(line.element)) m.set(line.element, line.action);
    }
    elements.set(type, m);
  }
  const relationship = d.plan.relationship ? resolve(policy, d.plan.relationship) : undefined;
  return {
    allow: true,
    code: undefined,
    role: d.plan.role,
    rule: d.rule,
    elements,
    ...(relationship ? { relationship } : {}),
    ...(d.plan.authorization === undefined ? {} : { authorization: d.plan.authorization }),
  };
}

function resolve(policy: CompiledPolicy, r: RelationshipRequirement): VerdictRelationship {
  return { required: r.required, rule: r.rule, sources: new Map(r.sources.map((n) => [n, policy.relationships?.sources.get(n)])) };
}

/** Per policy: requirement rule -> the requirement (the sources a record of that rule was looked up in). */
const byRule = new WeakMap<CompiledPolicy, ReadonlyMap<string, VerdictRelationship>>();

/** The requirement `rule` names in `policy` (every purpose of a data set shares its sources). */
export function requirementByRule(policy: CompiledPolicy, rule: string): VerdictRelationship | undefined {
  let m = byRule.get(policy);
  if (m === undefined) {
    const found = new Map<string, VerdictRelationship>();
    for (const role of policy.roles.values()) {
      for (const plan of role.plans.values()) {
        if (plan.relationship && !found.has(plan.relationship.rule)) found.set(plan.relationship.rule, resolve(policy, plan.relationship));
      }
    }
    m = found;
    byRule.set(policy, m);
  }
  return m.get(rule);
}

export interface ElementChange {
  readonly element: string;
  /** `absent` = not released. */
  readonly from: ElementLine['action'] | 'absent';
  readonly to: ElementLine['action'] | 'absent';
}

export type Change =
  | { readonly kind: 'newly-allowed'; readonly was: string; readonly now: string }
  | { readonly kind: 'newly-denied'; readonly was: string; readonly now: string }
  | { readonly kind: 'elements'; readonly shown: readonly ElementChange[]; readonly hidden: readonly ElementChange[]; readonly changed: readonly ElementChange[] }
  /**
   * The candidate's requirement is not met: the request would be refused (answered as if the patient
   * did not exist, or 403 relationship-required), or, a search naming no patient, answered without
   * the unrelated patients (`narrowed`). `rule`: the candidate's requirement.
   */
  | { readonly kind: 'relationship-refused'; readonly narrowed: boolean; readonly rule: string }
  /** The running policy's requirement refused it (as unrelated or too broad), or narrowed the search; the candidate would not. */
  | { readonly kind: 'relationship-allowed'; readonly was: 'refused' | 'too-broad' | 'narrowed'; readonly now: string }
  /** The candidate requires a relationship the record has no evidence for: it cannot be replayed. */
  | { readonly kind: 'relationship-unknown'; readonly rule: string }
  /** Patients' consents withheld part of the answer; the candidate does not apply them (`rule`: why, e.g. `consent.exemptPurposes`). */
  | { readonly kind: 'consent-released'; readonly rule: string }
  /** Break-glass released what `overridden` withhold; the candidate's break-glass does not override them (`rule`). */
  | { readonly kind: 'consent-withheld'; readonly overridden: readonly string[]; readonly rule: string }
  /** The candidate applies consents otherwise than the running policy did (`rule`): the record cannot tell what they would withhold. */
  | { readonly kind: 'consent-unknown'; readonly rule: string };

/** Differences from `current` to `candidate`; [] when the request fares the same. */
export function compareVerdicts(current: Verdict, candidate: Verdict): Change[] {
  if (current.allow && !candidate.allow) return [{ kind: 'newly-denied', was: current.rule, now: candidate.code ?? candidate.rule }];
  if (!current.allow && candidate.allow) return [{ kind: 'newly-allowed', was: current.code ?? current.rule, now: candidate.rule }];
  if (!current.allow) return [];
  const shown: ElementChange[] = [];
  const hidden: ElementChange[] = [];
  const changed: ElementChange[] = [];
  const types = new Set([...current.elements.keys(), ...candidate.elements.keys()]);
  for (const type of types) {
    const a = current.elements.get(type) ?? new Map();
    const b = candidate.elements.get(type) ?? new Map();
    for (const el of new Set([...a.keys(), ...b.keys()])) {
      const from = a.get(el) ?? 'absent';
      const to = b.get(el) ?? 'absent';
      if (from === to) continue;
      const c = { element: el, from, to };
      const selector = isSelectorLine(el);
      const visible = (x: string) => (selector ? x !== 'remove' : x !== 'absent');
      if (!visible(from) && visible(to)) shown.push(c);
      else if (visible(from) && !visible(to)) hidden.push(c);
      else changed.push(c);
    }
  }
  if (shown.length + hidden.length + changed.length === 0) return [];
  const by = (x: ElementChange, y: ElementChange) => x.element.localeCompare(y.element);
  return [{ kind: 'elements', shown: shown.sort(by), hidden: hidden.sort(by), changed: changed.sort(by) }];
}

/** What the running policy's requirement did to a request a candidate would let through, in words. */
export const WAS = { refused: 'no relationship', 'too-broad': 'search too broad', narrowed: 'narrowed to related patients' } as const;

/** What a record shows of the request beyond its verdicts: the relationship evidence, what was released, its rule. */
export interface RequestFacts {
  readonly request: ClassifiedRequest;
  /** The record's relationship evidence; absent when no lookup was made. */
  readonly evidence: RelationshipEvidence | undefined;
  /** Patients whose data was released (`disclosed.patients`). */
  readonly released: readonly string[];
  /** The record's rule: says when a relationship refused the request (`relationshipRefusal`). */
  readonly rule?: string | undefined;
}

type RelationshipState = 'none' | 'related' | 'unrelated' | 'unknown';

function sameSource(a: RelationshipSource | undefined, b: RelationshipSource | undefined): boolean {
  return a !== undefined && b !== undefined && a.kind === b.kind && a.days === b.days;
}

/** Both enforce the same sources, defined alike, or neither enforces anything. */
function sameRequirement(a: VerdictRelationship | undefined, b: VerdictRelationship | undefined): boolean {
  const ra = a?.required === true ? a : undefined;
  const rb = b?.required === true ? b : undefined;
  if (ra === undefined || rb === undefined) return ra === rb;
  if (ra.sources.size !== rb.sources.size) return false;
  for (const [name, s] of ra.sources) if (!rb.sources.has(name) || !sameSource(s, rb.sources.get(name))) return false;
  return true;
}

/**
 * Whether the record's evidence meets `req`, patient by patient (those it names as unrelated and
 * those released). Related: the evidence names a relationship of his through a source `req` counts.
 * Unrelated: the evidence lists him as unrelated and every source `req` counts was read for the
 * record, defined as `req` defines it (`consulted`: the requirement the record was looked up under).
 * Otherwise it cannot be told: a source the lookup did not read, a patient the evidence does not
 * list (it holds at most 50), or one related through a source `req` does not count (the record
 * names only the first relationship found, so another may hold).
 */
function judge(req: VerdictRelationship | undefined, facts: RequestFacts, consulted: VerdictRelationship | undefined): RelationshipState {
  if (req === undefined || !req.required) return 'none';
  const evidence = facts.evidence;
  if (evidence === undefined) return 'unknown';
  const known = (s: string) => consulted?.sources.has(s) === true && sameSource(consulted.sources.get(s), req.sources.get(s));
  const everyKnown = [...req.sources.keys()].every(known);
  const counted = new Set<string>();
  for (const r of evidence.related) if (req.sources.has(r.source) && known(r.source)) counted.add(r.patient);
  const unrelated = new Set(evidence.unrelated);
  let unknown = false;
  for (const patient of new Set([...evidence.unrelated, ...facts.released])) {
    if (counted.has(patient)) continue;
    if (everyKnown && unrelated.has(patient)) return 'unrelated';
    unknown = true;
  }
  return unknown ? 'unknown' : 'related';
}

/** A search naming no patient, of a type with patients: narrowed under a requirement, not refused (src/policy/relationship.ts). */
function isNarrowable(req: ClassifiedRequest): boolean {
  const type = req.resourceType;
  return req.interaction === 'search-type' && type !== undefined && isCompartmentType(type) && patientsNamed(type, req.params).ids.length === 0;
}

/**
 * Differences from `current` to `candidate` for a request whose record shows `facts`, care
 * relationships included; [] when the request fares the same. The running policy's outcome is the
 * recorded one: refused for lack of a relationship (or as too broad) as its rule says, narrowed as
 * its evidence says; without evidence, as recorded (the record predates the lookup). A candidate
 * whose requirement the record cannot answer gives `relationship-unknown` alone.
 */
export function compareRequest(currentPolicy: CompiledPolicy, current: Verdict, candidate: Verdict, facts: RequestFacts): Change[] {
  const consulted = facts.evidence ? requirementByRule(currentPolicy, facts.evidence.rule) : undefined;
  const narrowable = isNarrowable(facts.request);
  const refusal = relationshipRefusal(facts.rule);
  const enforcesA = current.allow && current.relationship?.required === true;
  const enforcesB = candidate.allow && candidate.relationship?.required === true;
  const relA = current.allow ? judge(current.relationship, facts, consulted) : 'none';
  const tooBroadA = enforcesA && refusal === 'too-broad';
  const refusedA = enforcesA && (refusal === 'no-relationship' || (relA === 'unrelated' && !narrowable));
  // Answered without the unrelated patients (a search naming none), or narrowed to the related ones.
  const lossA = enforcesA && narrowable && !refusedA && relA === 'unrelated';
  const narrowedA = enforcesA && narrowable && !refusedA && !tooBroadA && (lossA || facts.evidence?.narrowed !== undefined);
  if (!candidate.allow || (current.allow && sameRequirement(current.relationship, candidate.relationship))) {
    return refusedA || tooBroadA ? [] : compareVerdicts(current, candidate);
  }
  const rule = candidate.relationship?.rule ?? '';
  // Too broad depends on how many patients the caller is related to: not in the record.
  if (tooBroadA) return enforcesB ? [{ kind: 'relationship-unknown', rule }] : [{ kind: 'relationship-allowed', was: 'too-broad', now: candidate.rule }];
  const relB = judge(candidate.relationship, facts, consulted);
  if (relB === 'unknown') return [{ kind: 'relationship-unknown', rule }];
  const refusedB = relB === 'unrelated' && !narrowable;
  if (refusedA) {
    if (relB === 'unrelated') return [];
    // Refused as the rule says, with no unrelated patient in the evidence (a withheld resource's): the candidate's sources cannot be judged.
    if (enforcesB && relA !== 'unrelated') return [{ kind: 'relationship-unknown', rule }];
    return [{ kind: 'relationship-allowed', was: 'refused', now: candidate.rule }];
  }
  if (!current.allow) return refusedB ? [] : compareVerdicts(current, candidate);
  if (refusedB) return [{ kind: 'relationship-refused', narrowed: false, rule }];
  const out: Change[] = [];
  if (narrowedA && !enforcesB) out.push({ kind: 'relationship-allowed', was: 'narrowed', now: candidate.rule });
  else if (relB === 'unrelated' && !lossA) out.push({ kind: 'relationship-refused', narrowed: true, rule });
  return [...out, ...compareVerdicts(current, candidate)];
}

/** What a record shows of a request for replaying consents. */
export interface ConsentFacts {
  /** The declared purpose (BTG under break-glass). */
  readonly purpose: string;
  /** A break-glass session was open for the request. */
  readonly breakGlass: boolean;
  /** The record's consent evidence; absent when consents did nothing to the answer (or were not applied). */
  readonly evidence: ConsentEvidence | undefined;
  /** Patients whose data was released (`disclosed.patients`). */
  readonly released: readonly string[];
}

/** Whether `policy` applies patients' consents to requests of `purpose` (BTG is never exempt). */
function enforcesConsent(policy: CompiledPolicy, purpose: string): boolean {
  return policy.consent !== undefined && !policy.consent.exemptPurposes.has(purpose);
}

function listed(v: unknown): readonly string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/**
 * What the candidate's consent section would do otherwise to a request both policies allow (`a`
 * and `b`, the verdicts; undefined for a break-glass request, which only its consent evidence
 * replays), judged from the record's consent evidence; undefined when it would fare the same.
 * - Consents the candidate does not apply (no consent section, or the purpose exempt): what they
 *   withheld would be released.
 * - Break-glass no longer overriding consents (`consent.breakGlass`, `consent.part2.breakGlass`):
 *   what break-glass released despite a consent would be withheld. The record does not say which
 *   kind of consent was overridden, so this counts every override (a patient whose consents could
 *   not be evaluated is still released under break-glass).
 * - Consents applied where the running policy did not, or otherwise (how overlapping consents
 *   combine, the Part 2 labels, an authorization requirement, break-glass newly overriding): cannot
 *   be replayed on a request that released patient data or had something withheld by a consent.
 */
export function compareConsent(currentPolicy: CompiledPolicy, candidatePolicy: CompiledPolicy, a: Verdict | undefined, b: Verdict | undefined, facts: ConsentFacts): Change | undefined {
  const ev = facts.evidence;
  const withheld = typeof ev?.withheld === 'number' && ev.withheld > 0;
  const reached = withheld || facts.released.length > 0;
  const enforcesA = enforcesConsent(currentPolicy, facts.purpose);
  const enforcesB = enforcesConsent(candidatePolicy, facts.purpose);
  if (!enforcesB) return enforcesA && withheld ? { kind: 'consent-released', rule: candidatePolicy.consent ? 'consent.exemptPurposes' : 'no consent section' } : undefined;
  if (!enforcesA) return reached ? { kind: 'consent-unknown', rule: currentPolicy.consent ? 'consent.exemptPurposes' : 'consent' } : undefined;
  const ca = currentPolicy.consent!;
  const cb = candidatePolicy.consent!;
  if (ca.overlap !== cb.overlap) return reached ? { kind: 'consent-unknown', rule: 'consent.overlap' } : undefined;
  if (ca.part2.labels.length !== cb.part2.labels.length || ca.part2.labels.some((l) => !cb.part2.labels.includes(l))) {
    return reached ? { kind: 'consent-unknown', rule: 'consent.part2.labels' } : undefined;
  }
  if (facts.breakGlass) {
    const off = ca.breakGlassOverrides && !cb.breakGlassOverrides ? 'consent.breakGlass' : ca.part2.breakGlass && !cb.part2.breakGlass ? 'consent.part2.breakGlass' : undefined;
    const overridden = listed(ev?.overridden);
    if (off !== undefined && overridden.length > 0) return { kind: 'consent-withheld', overridden, rule: off };
    const on = !ca.breakGlassOverrides && cb.breakGlassOverrides ? 'consent.breakGlass' : !ca.part2.breakGlass && cb.part2.breakGlass ? 'consent.part2.breakGlass' : undefined;
    if (on !== undefined && withheld) return { kind: 'consent-unknown', rule: on };
  }
  const authA = a?.authorization;
  const authB = b?.authorization;
  if (authB !== undefined && authA === undefined && reached) return { kind: 'consent-unknown', rule: authB };
  // Whether what was withheld lacked the authorization or was denied outright, the record does not say.
  if (authA !== undefined && authB === undefined && withheld) return { kind: 'consent-unknown', rule: authA };
  return undefined;
}

/** `Patient.identifier[type=SS]`, `@ContactPoint`: lines about parts of elements, not whole elements. */
function isSelectorLine(element: string): boolean {
  return element.startsWith('@') || (element.includes('[') && !element.endsWith('[x]'));
}

/** Resource types named by `Type/id` references. */
export function typesOf(resources: readonly string[]): string[] {
  const s = new Set<string>();
  for (const r of resources) {
    const i = r.indexOf('/');
    if (i > 0) s.add(r.slice(0, i));
  }
  return [...s];
}
