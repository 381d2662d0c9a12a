/**
 * Anomaly rules (policy file `anomalies:`), compiled once per policy version, and the pure
 * judgements the monitor makes per request: is this time outside the allowed hours, is this a
 * search without a patient parameter, does a role match, did a request reach a patient without a
 * care relationship. No I/O here.
 */
import type { RelationshipEvidence } from '../audit/record.js';
import type { AnomaliesSpec, AnomalyKind, AnomalyRuleSpec } from '../policy/model.js';
import type { ClassifiedRequest } from '../policy/request.js';

export type Weekday = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';

export interface CompiledAnomalyRule {
  readonly name: string;
  readonly kind: AnomalyKind;
  /** Where it is written, e.g. `anomalies.rules[2]` (audit `rule`). */
  readonly path: string;
  readonly threshold: number;
  readonly windowMs: number;
  readonly roles: ReadonlySet<string> | undefined;
  readonly block: boolean;
  /** off-hours: minutes after local midnight, [start, end); start > end wraps midnight. */
  readonly hours: { readonly start: number; readonly end: number } | undefined;
  readonly days: ReadonlySet<Weekday> | undefined;
  readonly timeZone: string;
}

export const DEFAULT_WINDOW_MINUTES = 60;
/** A family-name hit is about one relative: it is not repeated for a day. */
export const FAMILY_WINDOW_MINUTES = 24 * 60;

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return h * 60 + m;
}

/** Throws (naming the rule) on what the schema cannot check: time zones, duplicate names. */
export function compileAnomalies(spec: AnomaliesSpec | undefined): CompiledAnomalyRule[] {
  if (!spec) return [];
  const names = new Set<string>();
  return spec.rules.map((r: AnomalyRuleSpec, i) => {
    const path = `anomalies.rules[${i}]`;
    if (names.has(r.name)) throw new Error(`${path}: duplicate rule name '${r.name}'`);
    names.add(r.name);
    const timeZone = r.timeZone ?? spec.timeZone ?? 'UTC';
    if (!isTimeZone(timeZone)) throw new Error(`${path}: unknown time zone '${timeZone}'`);
    const minutes = r.windowMinutes ?? (r.kind === 'family-name' ? FAMILY_WINDOW_MINUTES : DEFAULT_WINDOW_MINUTES);
    const hours = r.hours ? { start: minutesOf(r.hours.start), end: minutesOf(r.hours.end) } : undefined;
    if (hours && hours.start === hours.end) throw new Error(`${path}: hours.start equals hours.end`);
    return {
      name: r.name,
      kind: r.kind,
      path,
      // family-name and off-hours fire on one request; no-relationship on the first patient reached without one.
      threshold: r.threshold ?? 1,
      windowMs: minutes * 60_000,
      roles: r.roles ? new Set(r.roles) : undefined,
      block: r.block === true,
      hours,
      days: r.days ? new Set(r.days) : undefined,
      timeZone,
    };
  });
}

export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export interface LocalTime {
  readonly day: Weekday;
  readonly minutes: number;
}

/**
 * Per time zone: its formatter and the last UTC minute judged. Requests arrive many per minute and
 * formatToParts costs microseconds, so it runs about once per minute per zone instead of per request.
 */
interface ZoneMemo {
  readonly format: Intl.DateTimeFormat;
  minute: number;
  at: LocalTime | undefined;
}
const zones = new Map<string, ZoneMemo>();

function formatLocal(f: Intl.DateTimeFormat, t: number): LocalTime {
  let day = 'mon';
  let hour = 0;
  let minute = 0;
  for (const p of f.formatToParts(t)) {
    if (p.type === 'weekday') day = p.value.slice(0, 3).toLowerCase();
    else if (p.type === 'hour') hour = Number(p.value);
    else if (p.type === 'minute') minute = Number(p.value);
  }
  return { day: day as Weekday, minutes: hour * 60 + minute };
}

/** Local weekday and minutes after midnight of `t` in `timeZone`. */
export function localTime(t: Date, timeZone: string): LocalTime {
  let z = zones.get(timeZone);
  if (!z) {
    z = {
      format: new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }),
      minute: Number.NaN,
      at: undefined,
    };
    zones.set(timeZone, z);
  }
  const ms = t.getTime();
  const minute = Math.floor(ms / 60_000);
  if (minute === z.minute && z.at !== undefined) return z.at;
  const start = formatLocal(z.format, minute * 60_000);
  const end = formatLocal(z.format, minute * 60_000 + 59_999);
  // Reused for the whole UTC minute only when it is one local minute: not so under an offset with
  // seconds (historic LMT) or a transition inside the minute; then every call formats its own time.
  if (start.day === end.day && start.minutes === end.minutes) {
    z.minute = minute;
    z.at = start;
    return start;
  }
  return formatLocal(z.format, ms);
}

/** True when `t` falls outside the rule's allowed days and hours. */
export function isOffHours(rule: Pick<CompiledAnomalyRule, 'hours' | 'days' | 'timeZone'>, t: Date): boolean {
  const { day, minutes } = localTime(t, rule.timeZone);
  if (rule.days && !rule.days.has(day)) return true;
  const h = rule.hours;
  if (!h) return false;
  const inside = h.start < h.end ? minutes >= h.start && minutes < h.end : minutes >= h.start || minutes < h.end;
  return !inside;
}

/** Parameters that confine a search to named patients (any modifier or chain on them too). */
const PATIENT_PARAMS = new Set(['patient', 'subject', 'beneficiary', 'member', 'focus']);

/**
 * A type or system search that names no patient: `Patient?gender=female`, `Observation?code=X`.
 * A compartment search, or a search on patient/subject (or `_id` of Patient), is targeted.
 */
export function isUntargetedSearch(req: Pick<ClassifiedRequest, 'interaction' | 'resourceType' | 'params'>): boolean {
  if (req.interaction !== 'search-type' && req.interaction !== 'search-system') return false;
  for (const [raw] of req.params) {
    const name = raw.split(/[:.]/, 1)[0];
    if (PATIENT_PARAMS.has(name)) return false;
    if (req.resourceType === 'Patient' && (name === '_id' || name === 'identifier')) return false;
  }
  return true;
}

/** Does the rule apply to this request's role (the applied one, else any the actor holds)? */
export function ruleApplies(rule: Pick<CompiledAnomalyRule, 'roles'>, role: string | undefined, roles: readonly string[]): boolean {
  if (!rule.roles) return true;
  if (role !== undefined) return rule.roles.has(role);
  return roles.some((r) => rule.roles!.has(r));
}

/**
 * What a request's rule says a care-relationship requirement did to it (src/proxy/pipeline.ts):
 * refused it for lack of a relationship (also a resource withheld as an unrelated patient's), or as a
 * search too broad to narrow; undefined otherwise.
 */
export function relationshipRefusal(rule: string | undefined): 'no-relationship' | 'too-broad' | undefined {
  if (typeof rule !== 'string') return undefined;
  if (NO_RELATIONSHIP.test(rule)) return 'no-relationship';
  if (TOO_BROAD.test(rule)) return 'too-broad';
  return undefined;
}

/** `<grant> -> <requirement>: no relationship`, then the error code when one was raised; or the filter's withholding. */
const NO_RELATIONSHIP = /(: no relationship(: [a-z-]+)?|: withheld \(relationship\))$/;
const TOO_BROAD = /: search too broad(: [a-z-]+)?$/;

/**
 * A request that reached a patient without a care relationship, and how: refused for lack of one
 * (`required`), under a break-glass session (the glass was needed for lack of one), or under a
 * `required: false` requirement that only records. `patients`: the evidence's `unrelated`; a
 * refusal the rule tells of may name none (a resource withheld as an unrelated patient's). Undefined
 * when the request reached none (or has no evidence).
 */
export function withoutRelationship(
  evidence: RelationshipEvidence | undefined,
  breakGlass: boolean,
  rule?: string,
): { readonly patients: readonly string[]; readonly access: 'refused' | 'break-glass' | 'recorded-only' } | undefined {
  if (evidence === undefined) return undefined;
  // As stored: anything not a list of ids is not evidence.
  const patients = Array.isArray(evidence.unrelated) ? evidence.unrelated.filter((p) => typeof p === 'string') : [];
  const access = breakGlass ? 'break-glass' : evidence.required === true ? 'refused' : 'recorded-only';
  if (patients.length > 0 || (access === 'refused' && relationshipRefusal(rule) === 'no-relationship')) return { patients, access };
  return undefined;
}

/** Family names compared without case, accents or surrounding space ("Müller" = "MULLER "). */
export function normalizeFamily(s: string): string {
  return s
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .replace(/\s+/g, ' ')
    .trim()
    .toLocaleLowerCase('en-US');
}
