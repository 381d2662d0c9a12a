/**
 * Reads FHIR R4 `Consent` resources as the gateway enforces them (pure). Strict: what the gateway
 * cannot read exactly makes the consent unevaluable, never ignored, so its patient's data is
 * withheld from every caller but break-glass (fail closed).
 *
 * - Only `status: active` Consents of scope `patient-privacy` count; other statuses and scopes are
 *   ignored (a revoked or draft consent says nothing). A status that is not a Consent status, or a
 *   scope without a coding, is unevaluable.
 * - `patient` must be a `Patient/id` reference (relative, or an absolute URL cut to its tail).
 * - `policyRule` (v3-ActCode) OPTIN/OPTINR -> base permit, OPTOUT/OPTOUTE -> base deny. Without a
 *   known code the root provision's `type` decides where the root applies (no opinion elsewhere); with neither, an unknown code, or a `policy`
 *   without a rule, the base is unknown: unevaluable. With no policy at all the consent has no
 *   base opinion (only its provisions decide).
 * - Unevaluable: a modifierExtension anywhere, `implicitRules`, an element R4 does not define on
 *   the Consent or a provision, `provision.dataPeriod`, `data.meaning` authoredby, a nested
 *   provision without `type`, a malformed period or date, a reference that is not `Type/id`
 *   (contained `#x`, `urn:`, identifier-only), a coding without a code, a purpose outside
 *   v3-ActReason, a class that is not a resource type, an action without a consentaction code.
 * - A provision whose actions are only `collect`/`correct` does not concern reading: it never
 *   applies, and is dropped (with its nested provisions).
 *
 * Reasons name the element (`provision.provision[0].dataPeriod is not supported`), never a value:
 * they are logged and shown by `explain`.
 */
import { tailTypeId } from '../fhir/reference.js';
import { isResourceType } from '../fhir/tables.js';
import { ACT_CODE, canonicalSystem } from '../policy/labels.js';
import { FHIR_ID, isObj, type Obj } from '../relationships/sources.js';
import type { ConsentData, ConsentProvision, Interval, ParsedConsent, PatientConsents, UnevaluableConsent } from './types.js';

export type ParseOutcome =
  | { readonly kind: 'consent'; readonly consent: ParsedConsent }
  | { readonly kind: 'unevaluable'; readonly patient: string | undefined; readonly consent: UnevaluableConsent }
  /** Not a Consent, not active, or not of scope patient-privacy. */
  | { readonly kind: 'ignored'; readonly why: string };

export const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
export const CONSENT_ACTION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentaction';
export const ACT_REASON_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
export const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';

/** The reason given to a Consent whose patient cannot be read (attributed to every patient of its search). */
export const PATIENT_UNREADABLE = 'patient unreadable';

/** Statuses that make a Consent say nothing. */
const NOT_ACTIVE: ReadonlySet<string> = new Set(['draft', 'proposed', 'rejected', 'inactive', 'entered-in-error']);
const BASE_OF_RULE: Readonly<Record<string, 'permit' | 'deny'>> = Object.assign(Object.create(null), {
  OPTIN: 'permit',
  OPTINR: 'permit',
  OPTOUT: 'deny',
  OPTOUTE: 'deny',
});
const ACT_REASON_SYSTEMS: ReadonlySet<string> = new Set([ACT_REASON_SYSTEM, 'http://hl7.org/fhir/v3/ActReason', 'urn:oid:2.16.840.1.113883.5.8']);
const ACTION_SYSTEMS: ReadonlySet<string> = new Set([CONSENT_ACTION_SYSTEM, 'http://hl7.org/fhir/consentaction']);
const SCOPE_SYSTEMS: ReadonlySet<string> = new Set([CONSENT_SCOPE_SYSTEM, 'http://hl7.org/fhir/consentscope']);
/** consentaction codes; those that concern reading are true. */
const ACTIONS: Readonly<Record<string, boolean>> = Object.assign(Object.create(null), {
  collect: false,
  correct: false,
  access: true,
  use: true,
  disclose: true,
});

/** The elements R4 defines on Consent (a `_x` sibling of a primitive is allowed too). */
const CONSENT_KEYS = new Set([
  'resourceType', 'id', 'meta', 'implicitRules', 'language', 'text', 'contained', 'extension', 'modifierExtension',
  'identifier', 'status', 'scope', 'category', 'patient', 'dateTime', 'performer', 'organization', 'sourceAttachment',
  'sourceReference', 'policy', 'policyRule', 'verification', 'provision',
]);
const CONSENT_PRIMITIVES = new Set(['id', 'implicitRules', 'language', 'status', 'dateTime']);
const PROVISION_KEYS = new Set([
  'id', 'extension', 'modifierExtension', 'type', 'period', 'actor', 'action', 'securityLabel', 'purpose', 'class', 'code',
  'dataPeriod', 'data', 'provision',
]);
const PROVISION_PRIMITIVES = new Set(['type']);
const ACTOR_KEYS = new Set(['id', 'extension', 'modifierExtension', 'role', 'reference']);
const DATA_KEYS = new Set(['id', 'extension', 'modifierExtension', 'meaning', 'reference']);
const DATA_PRIMITIVES = new Set(['meaning']);

/** Provisions nest at most this deep, and the modifierExtension search descends at most this far. */
const MAX_DEPTH = 32;
const MAX_WALK_DEPTH = 64;

/** Thrown inside the parser: what makes the consent unevaluable. */
class Unreadable extends Error {}

function fail(reason: string): never {
  throw new Unreadable(reason);
}

/** Reads one resource of a Consent search. Never throws. */
export function parseConsent(resource: unknown): ParseOutcome {
  if (!isObj(resource) || resource.resourceType !== 'Consent') return { kind: 'ignored', why: 'not a Consent' };
  const id = typeof resource.id === 'string' && FHIR_ID.test(resource.id) ? `Consent/${resource.id}` : 'Consent/?';
  const unevaluable = (patient: string | undefined, reason: string): ParseOutcome => ({ kind: 'unevaluable', patient, consent: { id, reason } });
  const patient = patientOf(resource.patient);

  const status = resource.status;
  if (typeof status === 'string' && NOT_ACTIVE.has(status)) return { kind: 'ignored', why: `status ${status}` };
  const scope = scopeOf(resource.scope);
  if (scope === 'other') return { kind: 'ignored', why: 'scope is not patient-privacy' };
  if (status !== 'active') return unevaluable(patient, 'status is not a Consent status');
  if (scope === 'unreadable') return unevaluable(patient, 'scope has no coding');
  if (patient === undefined) {
    const why = resource.patient === undefined ? 'patient is missing' : 'patient.reference is not a Patient/id reference';
    return unevaluable(undefined, `${PATIENT_UNREADABLE}: ${why}`);
  }
  try {
    return { kind: 'consent', consent: readConsent(resource, id, patient) };
  } catch (e) {
    if (e instanceof Unreadable) return unevaluable(patient, e.message);
    throw e;
  }
}

/**
 * Groups a search's Consents by patient: every patient in `patients` gets an entry (empty when
 * none). A Consent about a patient outside `patients` is dropped (an upstream that ignored the
 * search parameter). One whose patient cannot be read is attributed to every patient of the
 * batch (reason `patient unreadable`): it came back for one of them, and which one is not known.
 */
export function consentsByPatient(resources: readonly unknown[], patients: readonly string[]): Map<string, PatientConsents> {
  const consents = new Map<string, ParsedConsent[]>();
  const unevaluable = new Map<string, UnevaluableConsent[]>();
  for (const p of patients) {
    consents.set(p, []);
    unevaluable.set(p, []);
  }
  const orphans: UnevaluableConsent[] = [];
  for (const r of resources) {
    const o = parseConsent(r);
    if (o.kind === 'consent') consents.get(o.consent.patient)?.push(o.consent);
    else if (o.kind === 'unevaluable') {
      if (o.patient === undefined) orphans.push(o.consent);
      else unevaluable.get(o.patient)?.push(o.consent);
    }
  }
  const out = new Map<string, PatientConsents>();
  for (const [p, list] of consents) {
    const bad = unevaluable.get(p)!;
    for (const o of orphans) bad.push(o);
    out.set(p, Object.freeze({ patient: p, consents: Object.freeze(list), unevaluable: Object.freeze(bad) }));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The Consent

function readConsent(r: Obj, id: string, patient: string): ParsedConsent {
  const modifier = modifierAt(r, '', 0);
  if (modifier !== undefined) fail(`${modifier} is not supported`);
  if (r.implicitRules !== undefined) fail('implicitRules is not supported');
  knownKeys(r, CONSENT_KEYS, CONSENT_PRIMITIVES, 'Consent');
  const dateTime = r.dateTime === undefined ? undefined : dateRange(r.dateTime, 'dateTime').start;

  const rootRaw = r.provision;
  const rootType = isObj(rootRaw) ? provisionType(rootRaw.type, 'provision.type') : undefined;
  const read = rootRaw === undefined ? { provisions: [] } : provision(rootRaw, 'provision', 0, true);
  // A root whose actions never concern reading applies to nothing: the base alone decides (in its period).
  const root: ConsentProvision =
    read ?? Object.freeze({ ...(isObj(rootRaw) && rootRaw.period !== undefined ? { period: interval(rootRaw.period, 'provision.period') } : {}), provisions: Object.freeze([]) });
  const { period, ...rest } = root;

  const rule = policyRule(r.policyRule);
  let base: 'permit' | 'deny' | undefined;
  let policyRuleCode: string | undefined;
  if (rule.kind === 'known') {
    base = rule.base;
    policyRuleCode = rule.code;
  } else if (rootType !== undefined) {
    // No rule: the root's own type decides where the root applies (a root `deny` naming one actor
    // denies that actor), and elsewhere the consent has no opinion. Taking it as the base would
    // make such a consent deny everyone.
  } else if (rule.kind === 'unknown') fail('policyRule has no OPTIN, OPTINR, OPTOUT or OPTOUTE code and provision has no type');
  else if (r.policy !== undefined) fail('policy without policyRule or provision.type: the base decision is unknown');

  return Object.freeze({
    id,
    patient,
    ...(dateTime === undefined ? {} : { dateTime }),
    ...(base === undefined ? {} : { base }),
    ...(policyRuleCode === undefined ? {} : { policyRule: policyRuleCode }),
    ...(period === undefined ? {} : { period }),
    // The root's period is the consent's: outside it the consent is not in force at all.
    root: Object.freeze(rest),
  });
}

/** The patient id of `Consent.patient`, or undefined when it is not a `Patient/id` reference. */
function patientOf(v: unknown): string | undefined {
  const ref = localRef(v);
  return ref?.startsWith('Patient/') ? ref.slice('Patient/'.length) : undefined;
}

/** `patient-privacy` among the scope's codings; `other`: codings, none of them it; `unreadable`: no coding. */
function scopeOf(v: unknown): 'privacy' | 'other' | 'unreadable' {
  if (!isObj(v) || !Array.isArray(v.coding) || v.coding.length === 0) return 'unreadable';
  for (const c of v.coding) {
    if (!isObj(c)) return 'unreadable';
    if (c.code === 'patient-privacy' && (c.system === undefined || (typeof c.system === 'string' && SCOPE_SYSTEMS.has(c.system)))) return 'privacy';
  }
  return 'other';
}

type Rule = { kind: 'none' } | { kind: 'unknown' } | { kind: 'known'; base: 'permit' | 'deny'; code: string };

/** The base decision `policyRule` names; codes that disagree make the consent unevaluable. */
function policyRule(v: unknown): Rule {
  if (v === undefined) return { kind: 'none' };
  if (!isObj(v)) fail('policyRule is not a CodeableConcept');
  let found: { base: 'permit' | 'deny'; code: string } | undefined;
  for (const c of Array.isArray(v.coding) ? v.coding : []) {
    if (!isObj(c) || typeof c.code !== 'string') continue;
    if (c.system !== undefined && (typeof c.system !== 'string' || canonicalSystem(c.system) !== ACT_CODE)) continue;
    const base = BASE_OF_RULE[c.code];
    if (base === undefined) continue;
    if (found !== undefined && found.base !== base) fail('policyRule codes disagree (opt-in and opt-out)');
    found ??= { base, code: c.code };
  }
  return found === undefined ? { kind: 'unknown' } : { kind: 'known', ...found };
}

// ---------------------------------------------------------------------------------------------
// Provisions

function provisionType(v: unknown, path: string): 'permit' | 'deny' | undefined {
  if (v === undefined) return undefined;
  if (v === 'permit' || v === 'deny') return v;
  fail(`${path} is not permit or deny`);
}

/** One provision; undefined when its actions never concern reading (it never applies). */
function provision(v: unknown, path: string, depth: number, root: boolean): ConsentProvision | undefined {
  if (!isObj(v)) fail(`${path} is not an object`);
  if (depth > MAX_DEPTH) fail(`${path} is nested too deeply`);
  knownKeys(v, PROVISION_KEYS, PROVISION_PRIMITIVES, path);
  if (v.dataPeriod !== undefined) fail(`${path}.dataPeriod is not supported`);
  const type = provisionType(v.type, `${path}.type`);
  if (!root && type === undefined) fail(`${path}.type is missing`);
  const period = v.period === undefined ? undefined : interval(v.period, `${path}.period`);
  const actors = list(v.actor, `${path}.actor`, actorRef);
  const reading = list(v.action, `${path}.action`, action);
  const labels = list(v.securityLabel, `${path}.securityLabel`, codingKey);
  const purposes = list(v.purpose, `${path}.purpose`, purposeCode);
  const classes = list(v.class, `${path}.class`, resourceClass);
  const codes = list(v.code, `${path}.code`, conceptKeys)?.flat();
  const data = list(v.data, `${path}.data`, dataItem);
  const provisions: ConsentProvision[] = [];
  for (const [i, child] of (list(v.provision, `${path}.provision`, (c) => c) ?? []).entries()) {
    const p = provision(child, `${path}.provision[${i}]`, depth + 1, false);
    if (p !== undefined) provisions.push(p);
  }
  if (reading !== undefined && !reading.includes(true)) return undefined;
  return Object.freeze({
    ...(type === undefined ? {} : { type }),
    ...(period === undefined ? {} : { period }),
    ...(actors === undefined ? {} : { actors: unique(actors) }),
    ...(purposes === undefined ? {} : { purposes: unique(purposes) }),
    ...(classes === undefined ? {} : { classes: unique(classes) }),
    ...(codes === undefined ? {} : { codes: unique(codes) }),
    ...(labels === undefined ? {} : { labels: unique(labels) }),
    ...(data === undefined ? {} : { data: Object.freeze(data) }),
    provisions: Object.freeze(provisions),
  });
}

/** A repeating element: absent -> undefined; otherwise a non-empty array, each item read by `read`. */
function list<T>(v: unknown, path: string, read: (item: unknown, path: string) => T): T[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0) fail(`${path} is not a non-empty array`);
  return v.map((item, i) => read(item, `${path}[${i}]`));
}

function unique(xs: readonly string[]): readonly string[] {
  return Object.freeze([...new Set(xs)]);
}

function actorRef(v: unknown, path: string): string {
  if (!isObj(v)) fail(`${path} is not an object`);
  knownKeys(v, ACTOR_KEYS, undefined, path);
  return typeIdRef(v.reference, `${path}.reference`);
}

/** Whether an action concerns reading (access, use, disclose); unevaluable without a consentaction code. */
function action(v: unknown, path: string): boolean {
  if (!isObj(v) || !Array.isArray(v.coding)) fail(`${path} has no consentaction code`);
  let known = false;
  let reading = false;
  for (const c of v.coding) {
    if (!isObj(c) || typeof c.system !== 'string' || !ACTION_SYSTEMS.has(c.system)) continue;
    const r = typeof c.code === 'string' ? ACTIONS[c.code] : undefined;
    if (r === undefined) fail(`${path} has a code that is not a consentaction code`);
    known = true;
    reading ||= r;
  }
  if (!known) fail(`${path} has no consentaction code`);
  return reading;
}

/** A Coding as `system|code` (system canonical; `|code` without a system). */
function codingKey(v: unknown, path: string): string {
  if (!isObj(v) || typeof v.code !== 'string' || v.code === '') fail(`${path} has no code`);
  if (v.system === undefined) return `|${v.code}`;
  if (typeof v.system !== 'string' || v.system === '') fail(`${path}.system is malformed`);
  return `${canonicalSystem(v.system)}|${v.code}`;
}

/** A CodeableConcept's codings as keys; one without any coding (text only) cannot be matched. */
function conceptKeys(v: unknown, path: string): string[] {
  if (!isObj(v)) fail(`${path} is not a CodeableConcept`);
  const codings = list(v.coding, `${path}.coding`, codingKey);
  if (codings === undefined) fail(`${path} has no coding`);
  return codings;
}

function purposeCode(v: unknown, path: string): string {
  if (!isObj(v) || typeof v.code !== 'string' || v.code === '') fail(`${path} has no code`);
  if (v.system !== undefined && (typeof v.system !== 'string' || !ACT_REASON_SYSTEMS.has(v.system))) fail(`${path} is not a v3-ActReason code`);
  return v.code;
}

function resourceClass(v: unknown, path: string): string {
  if (!isObj(v) || typeof v.code !== 'string') fail(`${path} has no code`);
  if (v.system !== undefined && v.system !== RESOURCE_TYPES_SYSTEM) fail(`${path} is not a resource type`);
  if (!isResourceType(v.code)) fail(`${path} is not a resource type`);
  return v.code;
}

function dataItem(v: unknown, path: string): ConsentData {
  if (!isObj(v)) fail(`${path} is not an object`);
  knownKeys(v, DATA_KEYS, DATA_PRIMITIVES, path);
  const meaning = v.meaning;
  if (meaning === 'authoredby') fail(`${path}.meaning authoredby is not supported`);
  if (meaning !== 'instance' && meaning !== 'related' && meaning !== 'dependents') fail(`${path}.meaning is not instance, related or dependents`);
  return Object.freeze({ meaning, reference: typeIdRef(v.reference, `${path}.reference`) });
}

// ---------------------------------------------------------------------------------------------
// References, dates, structure

/** `Type/id` of a relative reference or an absolute http(s) URL; undefined for anything else. */
function localRef(v: unknown): string | undefined {
  const s = isObj(v) ? v.reference : undefined;
  if (typeof s !== 'string' || s.length > 2048) return undefined;
  const t = tailTypeId(s);
  if (t === undefined || !FHIR_ID.test(t.id)) return undefined;
  if (t.prefix !== '' && !/^https?:\/\/[^/]+\/(?:[^/]+\/)*$/.test(t.prefix)) return undefined;
  return `${t.type}/${t.id}`;
}

function typeIdRef(v: unknown, path: string): string {
  const ref = localRef(v);
  if (ref === undefined) fail(`${path} is not a Type/id reference`);
  return ref;
}

const DAY = 86_400_000;
/** Days in 400 Gregorian years: shifts years below 100 out of Date.UTC's 1900+ mapping. */
const ERA = 146_097 * DAY;
const DATE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2}))?)?)?$/;

function utc(y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0): number {
  return y < 100 ? Date.UTC(y + 400, mo, d, h, mi, s, ms) - ERA : Date.UTC(y, mo, d, h, mi, s, ms);
}

/**
 * A FHIR date, dateTime or instant as the interval it names, at its precision: `2025` is all of
 * 2025, `2025-03-01T10:00:00Z` that second. Dates without a zone are read as UTC.
 */
export function dateRange(v: unknown, path: string): { start: number; end: number } {
  const m = typeof v === 'string' ? DATE.exec(v) : null;
  if (m === null) fail(`${path} is not a FHIR date`);
  const [, ys, mos, ds, hs, mis, ss, frac, zone] = m;
  const y = Number(ys);
  if (y < 1) fail(`${path} is not a FHIR date`);
  if (mos === undefined) return { start: utc(y, 0, 1), end: utc(y + 1, 0, 1) };
  const mo = Number(mos) - 1;
  if (mo < 0 || mo > 11) fail(`${path} is not a FHIR date`);
  if (ds === undefined) return { start: utc(y, mo, 1), end: utc(y, mo + 1, 1) };
  const d = Number(ds);
  if (d < 1 || d > new Date(utc(y, mo + 1, 0)).getUTCDate()) fail(`${path} is not a FHIR date`);
  if (hs === undefined) {
    const start = utc(y, mo, d);
    return { start, end: start + DAY };
  }
  const [h, mi, s] = [Number(hs), Number(mis), Number(ss)];
  if (h > 23 || mi > 59 || s > 59) fail(`${path} is not a FHIR date`);
  let offset = 0;
  if (zone !== 'Z') {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 14 || om > 59) fail(`${path} is not a FHIR date`);
    offset = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  const digits = frac === undefined ? 0 : Math.min(frac.length, 3);
  const ms = frac === undefined ? 0 : Number(frac.slice(0, 3).padEnd(3, '0'));
  const start = utc(y, mo, d, h, mi, s, ms) - offset;
  return { start, end: start + 10 ** (3 - digits) };
}

/** A Period: from the start of `start`'s precision until the end of `end`'s (exclusive). */
function interval(v: unknown, path: string): Interval {
  if (!isObj(v)) fail(`${path} is not a Period`);
  const start = v.start === undefined ? undefined : dateRange(v.start, `${path}.start`).start;
  const end = v.end === undefined ? undefined : dateRange(v.end, `${path}.end`).end;
  if (start !== undefined && end !== undefined && end <= start) fail(`${path} ends before it starts`);
  return Object.freeze({ ...(start === undefined ? {} : { start }), ...(end === undefined ? {} : { end }) });
}

/** An element name safe to repeat in a reason (it comes from the upstream's JSON). */
function keyName(k: string): string {
  return /^_?[A-Za-z][A-Za-z0-9]{0,63}$/.test(k) ? k : '(an unnamed element)';
}

function knownKeys(v: Obj, keys: ReadonlySet<string>, primitives: ReadonlySet<string> | undefined, path: string): void {
  for (const k of Object.keys(v)) {
    if (keys.has(k)) continue;
    if (k.startsWith('_') && primitives?.has(k.slice(1))) continue;
    fail(`${path}.${keyName(k)} is not an element of ${path === 'Consent' ? 'Consent' : 'a Consent provision'}`);
  }
}

/** The path of the first modifierExtension in `v` (contained resources and primitives' `_x` included). */
function modifierAt(v: unknown, path: string, depth: number): string | undefined {
  if (depth > MAX_WALK_DEPTH) fail(`${path || 'Consent'} is nested too deeply`);
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const found = modifierAt(v[i], `${path}[${i}]`, depth + 1);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (!isObj(v)) return undefined;
  for (const k of Object.keys(v)) {
    const at = path === '' ? keyName(k) : `${path}.${keyName(k)}`;
    if (k === 'modifierExtension') return at;
    const found = modifierAt(v[k], at, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}
