/**
 * Whether patients' consents let one access see one resource (pure; src/consent/judge.ts calls it
 * for every resource the response filter would release, so the common cases cost almost nothing:
 * a patient without consents is answered with a shared verdict, and decisions are packed in
 * small integers rather than objects).
 *
 * - A consent is in force while its period holds; one that is not says nothing.
 * - A provision applies when every condition it has holds (period, actor, purpose, class, code,
 *   security label, data). Where it applies, a denying nested provision wins over a permitting one,
 *   and either over the provision's own type (inherited from its parent, the root from the
 *   consent's base). Where the root does not apply, the base decides (possibly no opinion).
 * - Across a patient's consents: `deny-wins`, or the newest (`dateTime`) consent with an opinion.
 * - 42 CFR Part 2 data (a policy Part 2 label) is released only under, for every patient, a permit
 *   whose path (the deciding provision or its ancestors) names the caller and a purpose covering the
 *   declared one; break-glass releases it only where the policy lets it (42 CFR 2.51).
 * - A purpose needing the patient's authorization is released only under a permit whose path names
 *   that purpose (and the caller, wherever the path names actors: an actor condition only holds for it).
 * - A deny withholds, unless break-glass and the policy lets break-glass override consents.
 * - A patient with an unevaluable consent: withheld unless break-glass. A patient not loaded:
 *   withheld, break-glass or not (nothing is released unjudged).
 */
import { tailTypeId } from '../fhir/reference.js';
import { canonicalSystem } from '../policy/labels.js';
import type { CompiledConsent, ConsentAccess, ConsentData, ConsentProvision, ConsentVerdict, Interval, ParsedConsent, PatientConsents } from './types.js';

type Resource = Readonly<Record<string, unknown>>;
type Decision = 'permit' | 'deny' | undefined;

/** The verdict of every resource no consent has anything to say about. */
const RELEASED: ConsentVerdict = Object.freeze({ release: true });

// A decision packed in an integer: the decision in the low bits, and whether the deciding path
// names the caller (an actor condition held) and a purpose (a purpose condition held).
const NONE = 0;
const PERMIT = 1;
const DENY = 2;
const ACTOR = 4;
const PURPOSE = 8;
/** A provision that does not apply. */
const NOT_APPLIES = -1;

const DECISIONS: readonly { readonly decision: Decision; readonly namesActor: boolean; readonly namesPurpose: boolean }[] = Object.freeze(
  Array.from({ length: 16 }, (_, r) =>
    Object.freeze({
      decision: (r & 3) === PERMIT ? 'permit' : (r & 3) === DENY ? 'deny' : undefined,
      namesActor: (r & ACTOR) !== 0,
      namesPurpose: (r & PURPOSE) !== 0,
    }),
  ),
);

/** A consent's decision for one access to one resource, and the path that decided (for explain and tests). */
export function decideConsent(
  consent: ParsedConsent,
  resource: Resource,
  access: ConsentAccess,
): { decision: 'permit' | 'deny' | undefined; namesActor: boolean; namesPurpose: boolean } {
  return { ...DECISIONS[decision(consent, resource, access)] };
}

function decision(consent: ParsedConsent, resource: Resource, access: ConsentAccess): number {
  const base = consent.base === 'permit' ? PERMIT : consent.base === 'deny' ? DENY : NONE;
  const r = decide(consent.root, base, 0, resource, access);
  return r === NOT_APPLIES ? base : r;
}

/** The packed decision of `p` where it applies (NOT_APPLIES elsewhere); `names`: what its ancestors named. */
function decide(p: ConsentProvision, inherited: number, names: number, resource: Resource, access: ConsentAccess): number {
  if (!applies(p, resource, access)) return NOT_APPLIES;
  const path = names | (p.actors !== undefined ? ACTOR : 0) | (p.purposes !== undefined ? PURPOSE : 0);
  const own = p.type === 'permit' ? PERMIT : p.type === 'deny' ? DENY : inherited;
  // Among permitting exceptions, the one whose path names the most (purpose over actor).
  let permit = NOT_APPLIES;
  const children = p.provisions;
  for (let i = 0; i < children.length; i++) {
    const r = decide(children[i], own, path, resource, access);
    if (r === NOT_APPLIES) continue;
    if ((r & 3) === DENY) return r;
    if ((r & 3) === PERMIT && r > permit) permit = r;
  }
  if (permit !== NOT_APPLIES) return permit;
  return own === NONE ? NONE : own | path;
}

function holds(period: Interval, now: number): boolean {
  return (period.start === undefined || now >= period.start) && (period.end === undefined || now < period.end);
}

function applies(p: ConsentProvision, resource: Resource, access: ConsentAccess): boolean {
  if (p.period !== undefined && !holds(p.period, access.now)) return false;
  if (p.actors !== undefined && !someIn(p.actors, access.actors)) return false;
  if (p.purposes !== undefined && !someInSet(p.purposes, access.purposes)) return false;
  if (p.classes !== undefined && !p.classes.includes(resource.resourceType as string)) return false;
  if (p.labels !== undefined && !labelsMeet(p.labels, resource)) return false;
  if (p.codes !== undefined && !codesMeet(p.codes, resource)) return false;
  if (p.data !== undefined && !dataMeets(p.data, resource)) return false;
  return true;
}

function someIn(xs: readonly string[], ys: readonly string[]): boolean {
  for (let i = 0; i < xs.length; i++) if (ys.includes(xs[i])) return true;
  return false;
}

function someInSet(xs: readonly string[], ys: ReadonlySet<string>): boolean {
  for (let i = 0; i < xs.length; i++) if (ys.has(xs[i])) return true;
  return false;
}

/**
 * Whether a provision key (`system|code`, or `|code`) matches a coding: a system-less key matches
 * the code in any system; a key with a system only a coding of that system (canonical).
 */
function keyMatches(keys: readonly string[], system: unknown, code: unknown): boolean {
  if (typeof code !== 'string' || code === '') return false;
  const sys = typeof system === 'string' && system !== '' ? canonicalSystem(system) : undefined;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    if (k.charCodeAt(0) === 124) {
      if (k.length === code.length + 1 && k.endsWith(code)) return true;
    } else if (sys !== undefined && k.length === sys.length + 1 + code.length && k.startsWith(sys) && k.charCodeAt(sys.length) === 124 && k.endsWith(code)) {
      return true;
    }
  }
  return false;
}

function labelsMeet(keys: readonly string[], resource: Resource): boolean {
  const meta = resource.meta as { security?: unknown } | undefined;
  const security = meta !== null && typeof meta === 'object' ? meta.security : undefined;
  if (!Array.isArray(security)) return false;
  for (const c of security) if (c !== null && typeof c === 'object' && keyMatches(keys, c.system, c.code)) return true;
  return false;
}

/** The elements of a resource a provision's `code` is matched against. */
const CODE_ELEMENTS = ['code', 'type', 'vaccineCode', 'medicationCodeableConcept'] as const;

function codesMeet(keys: readonly string[], resource: Resource): boolean {
  for (const e of CODE_ELEMENTS) if (conceptMeets(keys, resource[e])) return true;
  return false;
}

/** A CodeableConcept, a Coding, or an array of either. */
function conceptMeets(keys: readonly string[], v: unknown): boolean {
  if (Array.isArray(v)) {
    for (const x of v) if (conceptMeets(keys, x)) return true;
    return false;
  }
  if (v === null || typeof v !== 'object') return false;
  const o = v as { coding?: unknown; system?: unknown; code?: unknown };
  if (Array.isArray(o.coding)) {
    for (const c of o.coding) if (c !== null && typeof c === 'object' && keyMatches(keys, c.system, c.code)) return true;
    return false;
  }
  return keyMatches(keys, o.system, o.code);
}

function dataMeets(data: readonly ConsentData[], resource: Resource): boolean {
  for (const d of data) {
    if (isInstance(resource, d.reference)) return true;
    if (d.meaning !== 'instance' && refersTo(resource, d.reference, 0)) return true;
  }
  return false;
}

function isInstance(resource: Resource, ref: string): boolean {
  const type = resource.resourceType;
  const id = resource.id;
  if (typeof type !== 'string' || typeof id !== 'string') return false;
  return ref.length === type.length + 1 + id.length && ref.startsWith(type) && ref.charCodeAt(type.length) === 47 && ref.endsWith(id);
}

const MAX_REFERENCE_DEPTH = 64;

/** Whether a `reference` anywhere in `v` names `target` (`Type/id`; absolute references by their tail). */
function refersTo(v: unknown, target: string, depth: number): boolean {
  if (depth > MAX_REFERENCE_DEPTH || v === null || typeof v !== 'object') return false;
  if (Array.isArray(v)) {
    for (const x of v) if (refersTo(x, target, depth + 1)) return true;
    return false;
  }
  for (const [k, x] of Object.entries(v)) {
    if (k === 'reference' && typeof x === 'string') {
      if (x.includes(target)) {
        const t = tailTypeId(x);
        if (t !== undefined && `${t.type}/${t.id}` === target && (t.prefix === '' || /^https?:\/\//.test(t.prefix))) return true;
      }
    } else if (refersTo(x, target, depth + 1)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Part 2 labels

/** Per policy: Part 2 label code -> the canonical systems it is labelled under. */
const part2Codes = new WeakMap<CompiledConsent, ReadonlyMap<string, ReadonlySet<string>>>();

function part2Index(policy: CompiledConsent): ReadonlyMap<string, ReadonlySet<string>> {
  let index = part2Codes.get(policy);
  if (index === undefined) {
    const m = new Map<string, Set<string>>();
    for (const key of policy.part2.labels) {
      const bar = key.lastIndexOf('|');
      const code = key.slice(bar + 1);
      let systems = m.get(code);
      if (systems === undefined) {
        systems = new Set();
        m.set(code, systems);
      }
      systems.add(key.slice(0, bar));
    }
    index = m;
    part2Codes.set(policy, index);
  }
  return index;
}

/**
 * Whether the resource carries one of the policy's Part 2 labels. A label without a system counts
 * when its code is a Part 2 code in any system (a sloppy label never releases Part 2 data as other data).
 */
export function isPart2(resource: Resource, policy: CompiledConsent): boolean {
  const meta = resource.meta as { security?: unknown } | undefined;
  const security = meta !== null && typeof meta === 'object' ? meta.security : undefined;
  if (!Array.isArray(security) || security.length === 0) return false;
  const index = part2Index(policy);
  for (const c of security) {
    if (c === null || typeof c !== 'object' || typeof c.code !== 'string') continue;
    const systems = index.get(c.code);
    if (systems === undefined) continue;
    if (typeof c.system !== 'string' || c.system === '' || systems.has(canonicalSystem(c.system))) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The verdict

/**
 * The consent verdict on one resource for one access: every patient it names must let it through.
 * `consentsOf` answers undefined for a patient not loaded (withheld).
 */
export function judgeResource(
  resource: Resource,
  patients: readonly string[],
  consentsOf: (patient: string) => PatientConsents | undefined,
  access: ConsentAccess,
  policy: CompiledConsent,
): ConsentVerdict {
  let plain = true;
  for (let i = 0; i < patients.length; i++) {
    const pc = consentsOf(patients[i]);
    if (pc === undefined || pc.consents.length !== 0 || pc.unevaluable.length !== 0) {
      plain = false;
      break;
    }
  }
  const part2 = isPart2(resource, policy);
  if (plain && !part2 && !access.authorizationRequired) return RELEASED;
  return judgeFully(resource, patients, consentsOf, access, policy, part2);
}

function judgeFully(
  resource: Resource,
  patients: readonly string[],
  consentsOf: (patient: string) => PatientConsents | undefined,
  access: ConsentAccess,
  policy: CompiledConsent,
  part2: boolean,
): ConsentVerdict {
  let notLoaded: string[] | undefined;
  let unevaluablePatients: string[] | undefined;
  let unevaluableConsents: string[] | undefined;
  let denied: string[] | undefined;
  let permitted: string[] | undefined;
  // "Every patient" must hold of at least one: a resource naming none is not released on a permit.
  let part2Missing = part2 && patients.length === 0;
  let authorizationMissing = access.authorizationRequired && patients.length === 0;

  for (const patient of patients) {
    const pc = consentsOf(patient);
    if (pc === undefined) {
      notLoaded = add(notLoaded, patient);
      continue;
    }
    if (pc.unevaluable.length !== 0) {
      unevaluablePatients = add(unevaluablePatients, patient);
      for (const u of pc.unevaluable) unevaluableConsents = add(unevaluableConsents, u.id);
    }
    let latestTime = Number.NEGATIVE_INFINITY;
    let latest = NONE;
    let latestIds: string[] | undefined;
    let part2Permits: string[] | undefined;
    let authorizations: string[] | undefined;
    for (const c of pc.consents) {
      if (c.period !== undefined && !holds(c.period, access.now)) continue;
      const r = decision(c, resource, access);
      const d = r & 3;
      if (d === NONE) continue;
      if (policy.overlap === 'deny-wins') {
        if (d === DENY) denied = add(denied, c.id);
      } else {
        const t = c.dateTime ?? Number.NEGATIVE_INFINITY;
        if (latestIds === undefined || t > latestTime || (t === latestTime && d === DENY && latest === PERMIT)) {
          latestTime = t;
          latest = d;
          latestIds = [c.id];
        } else if (t === latestTime && d === latest) latestIds.push(c.id);
      }
      if (d === PERMIT) {
        if (part2 && (r & (ACTOR | PURPOSE)) === (ACTOR | PURPOSE)) part2Permits = add(part2Permits, c.id);
        if (access.authorizationRequired && (r & PURPOSE) !== 0) authorizations = add(authorizations, c.id);
      }
    }
    if (latest === DENY && latestIds !== undefined) for (const id of latestIds) denied = add(denied, id);
    if (part2) {
      if (part2Permits === undefined) part2Missing = true;
      else for (const id of part2Permits) permitted = add(permitted, id);
    }
    if (access.authorizationRequired) {
      if (authorizations === undefined) authorizationMissing = true;
      else for (const id of authorizations) permitted = add(permitted, id);
    }
  }

  if (notLoaded !== undefined) return { release: false, why: 'unevaluable', unevaluable: notLoaded };
  let overridden: string[] | undefined;
  if (unevaluablePatients !== undefined) {
    if (!access.breakGlass) return { release: false, why: 'unevaluable', unevaluable: unique(unevaluablePatients) };
    overridden = unique(unevaluableConsents ?? []);
  }
  // Break-glass releases Part 2 data only where the policy allows it for Part 2 (42 CFR 2.51).
  const breakGlassMay = access.breakGlass && (part2 ? policy.part2.breakGlass : policy.breakGlassOverrides);
  if (denied !== undefined) {
    if (!breakGlassMay) return { release: false, why: 'denied', restricted: unique(denied) };
    overridden = unique([...(overridden ?? []), ...denied]);
  }
  if (part2Missing) {
    if (!(access.breakGlass && policy.part2.breakGlass)) return { release: false, why: 'part2-without-consent' };
    // Released without a consent: there may be none to name, but break-glass was needed.
    overridden ??= [];
  }
  if (authorizationMissing) return { release: false, why: 'authorization-missing' };
  if (!part2 && permitted === undefined && overridden === undefined) return RELEASED;
  return {
    release: true,
    ...(part2 ? { part2: true } : {}),
    ...(permitted === undefined ? {} : { permitted: unique(permitted) }),
    ...(overridden === undefined ? {} : { overridden }),
  };
}

function add(xs: string[] | undefined, x: string): string[] {
  if (xs === undefined) return [x];
  xs.push(x);
  return xs;
}

function unique(xs: readonly string[]): string[] {
  return xs.length < 2 ? [...xs] : [...new Set(xs)];
}
