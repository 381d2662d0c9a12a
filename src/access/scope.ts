/**
 * What an access grant in use does to one request (pure): the requester's own plan with the
 * granted types replaced by the requestable data set's, and the response limited, for those types,
 * to the granted encounters and period. The granted patients are enforced by the pipeline (the
 * request must name one of them, and the answer is limited to that patient's compartment).
 */
import { tailTypeId } from '../fhir/reference.js';
import type { AccessPlan, RequestableDataSet, ResourcePlan } from '../policy/plan.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { ResponseContext } from '../redact/types.js';
import type { AccessScope } from './types.js';

/**
 * The requester's plan widened by a grant: every type it already had, with each granted type
 * (the grant's `types`, or all of the data set's) answered by the data set's own rule. The care
 * relationship requirement is dropped for the request (the approved patient list replaces it);
 * the rule names the grant for the audit.
 */
export function elevatePlan(base: AccessPlan, ds: RequestableDataSet, scope: AccessScope, grantId: string): AccessPlan {
  const types = new Map<string, ResourcePlan>(base.types);
  for (const t of grantedTypes(ds, scope)) types.set(t, ds.types.get(t)!);
  return {
    ...base,
    dataSet: `${base.dataSet}+${ds.name}`,
    grantedBy: `${base.grantedBy} + ${ds.rule} (grant ${grantId})`,
    types,
    relationship: undefined,
  };
}

/** The data set's types the grant names (all of them when it names none), in the data set's order. */
export function grantedTypes(ds: RequestableDataSet, scope: AccessScope): string[] {
  const named = scope.types === undefined ? undefined : new Set(scope.types);
  return [...ds.types.keys()].filter((t) => named === undefined || named.has(t));
}

/**
 * The clinical date of each dated type, most specific first (R4 element paths; a choice element
 * by each concrete name). A type listed here without any of its dates is outside every period
 * (fail closed); a type not listed (Patient, Practitioner, Organization...) has no period.
 */
const DATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  AllergyIntolerance: ['recordedDate', 'onsetDateTime', 'onsetPeriod.start'],
  Appointment: ['start'],
  CarePlan: ['period.start', 'created'],
  Claim: ['billablePeriod.start', 'created'],
  ClaimResponse: ['created'],
  ClinicalImpression: ['effectiveDateTime', 'effectivePeriod.start', 'date'],
  Communication: ['sent', 'received'],
  Composition: ['date'],
  Condition: ['recordedDate', 'onsetDateTime', 'onsetPeriod.start'],
  Consent: ['dateTime'],
  DiagnosticReport: ['effectiveDateTime', 'effectivePeriod.start', 'issued'],
  DocumentReference: ['context.period.start', 'date'],
  Encounter: ['period.start'],
  ExplanationOfBenefit: ['billablePeriod.start', 'created'],
  Immunization: ['occurrenceDateTime', 'recorded'],
  MedicationAdministration: ['effectiveDateTime', 'effectivePeriod.start'],
  MedicationDispense: ['whenHandedOver', 'whenPrepared'],
  MedicationRequest: ['authoredOn'],
  MedicationStatement: ['effectiveDateTime', 'effectivePeriod.start', 'dateAsserted'],
  Observation: ['effectiveDateTime', 'effectivePeriod.start', 'effectiveInstant', 'issued'],
  Procedure: ['performedDateTime', 'performedPeriod.start'],
  QuestionnaireResponse: ['authored'],
  ServiceRequest: ['authoredOn', 'occurrenceDateTime', 'occurrencePeriod.start'],
};

/** Where each type names its encounter (R4); a type not listed is not limited by encounter. */
const ENCOUNTER_PATHS: Readonly<Record<string, readonly string[]>> = {
  AllergyIntolerance: ['encounter'],
  CarePlan: ['encounter'],
  ClinicalImpression: ['encounter'],
  Communication: ['encounter'],
  Composition: ['encounter'],
  Condition: ['encounter'],
  DiagnosticReport: ['encounter'],
  DocumentReference: ['context.encounter'],
  Immunization: ['encounter'],
  MedicationAdministration: ['context'],
  MedicationRequest: ['encounter'],
  MedicationStatement: ['context'],
  Observation: ['encounter'],
  Procedure: ['encounter'],
  QuestionnaireResponse: ['encounter'],
  ServiceRequest: ['encounter'],
  Claim: ['item.encounter'],
  ExplanationOfBenefit: ['item.encounter'],
};

type Obj = Readonly<Record<string, unknown>>;

/** Every value at a dotted path (arrays flattened at each step). */
function valuesAt(res: unknown, path: string): unknown[] {
  let cur: unknown[] = [res];
  for (const step of path.split('.')) {
    const next: unknown[] = [];
    for (const v of cur) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) continue;
      const x = (v as Obj)[step];
      if (Array.isArray(x)) next.push(...x);
      else if (x !== undefined) next.push(x);
    }
    cur = next;
  }
  return cur;
}

/** One formatter per time zone: building one costs far more than using it (records are judged by the page). */
const zoneFormats = new Map<string, Intl.DateTimeFormat>();

/** The offset of `timeZone` from UTC at instant `t`, ms (positive east of Greenwich). */
function zoneOffsetMs(t: number, timeZone: string): number {
  let format = zoneFormats.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    zoneFormats.set(timeZone, format);
  }
  const parts = format.formatToParts(new Date(t));
  const n = (type: string) => Number(parts.find((p) => p.type === type)?.value);
  return Date.UTC(n('year'), n('month') - 1, n('day'), n('hour'), n('minute'), n('second')) - Math.floor(t / 1000) * 1000;
}

/** The instant a local wall-clock time in `timeZone` names (the later one across a DST fold, a gap moved forward). */
function zonedInstant(y: number, mo: number, d: number, h: number, mi: number, sec: number, ms: number, timeZone: string): number {
  const wall = Date.UTC(y, mo, d, h, mi, sec, ms);
  let t = wall - zoneOffsetMs(wall, timeZone);
  t = wall - zoneOffsetMs(t, timeZone);
  return t;
}

/**
 * An ISO 8601 date, dateTime or instant as [earliest, latest] epoch ms it names: a date (or a year,
 * a month) is its whole span of days in `timeZone` (the hospital's: `accessRequests.timeZone`), a
 * dateTime with an offset is that instant, one without is wall-clock time in `timeZone`.
 * Undefined when unparseable.
 */
export function dateRange(v: unknown, timeZone = 'UTC'): [number, number] | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?$/.exec(v);
  if (m === null) return undefined;
  const y = Number(m[1]);
  const mo = m[2] === undefined ? undefined : Number(m[2]) - 1;
  const d = m[3] === undefined ? undefined : Number(m[3]);
  if (mo !== undefined && (mo < 0 || mo > 11)) return undefined;
  if (d !== undefined && (d < 1 || d > 31)) return undefined;
  if (m[4] !== undefined) {
    if (d === undefined) return undefined;
    const ms = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'));
    const [h, mi, sec] = [Number(m[4]), Number(m[5]), m[6] === undefined ? 0 : Number(m[6])];
    if (h > 23 || mi > 59 || sec > 60) return undefined;
    let t: number;
    if (m[8] === undefined) t = zonedInstant(y, mo!, d, h, mi, sec, ms, timeZone);
    else {
      t = Date.parse(v);
      if (Number.isNaN(t)) return undefined;
    }
    return [t, t];
  }
  const start = zonedInstant(y, mo ?? 0, d ?? 1, 0, 0, 0, 0, timeZone);
  const next = d !== undefined ? [y, mo!, d + 1] : mo !== undefined ? [y, mo + 1, 1] : [y + 1, 0, 1];
  const end = zonedInstant(next[0]!, next[1]!, next[2]!, 0, 0, 0, 0, timeZone);
  return [start, end - 1];
}

/** A grant's period as epoch ms bounds (each end inclusive; a bare end date covers its whole day). */
function periodBounds(p: NonNullable<AccessScope['period']>, timeZone: string): { from: number; to: number } {
  const from = p.start === undefined ? Number.NEGATIVE_INFINITY : (dateRange(p.start, timeZone)?.[0] ?? Number.POSITIVE_INFINITY);
  const to = p.end === undefined ? Number.POSITIVE_INFINITY : (dateRange(p.end, timeZone)?.[1] ?? Number.NEGATIVE_INFINITY);
  return { from, to };
}

/** Whether a period and encounter list in a scope are well-formed (dates parse, start before end). */
export function validPeriod(p: AccessScope['period'], timeZone = 'UTC'): boolean {
  if (p === undefined) return true;
  if (p.start === undefined && p.end === undefined) return false;
  if (p.start !== undefined && dateRange(p.start, timeZone) === undefined) return false;
  if (p.end !== undefined && dateRange(p.end, timeZone) === undefined) return false;
  const { from, to } = periodBounds(p, timeZone);
  return from <= to;
}

/**
 * The response limit for a grant's types: a resource of a dated type is in scope only when its
 * first clinical date present falls in the period (wholly: a month reaching outside it is out),
 * dates read in the hospital's time zone; a resource of a type that names its encounter, only when it names a granted one
 * (an Encounter by its own id). Undefined when the grant names neither.
 */
export function grantScopeOf(ds: RequestableDataSet, scope: AccessScope, timeZone = 'UTC'): ResponseContext['grantScope'] {
  if (scope.period === undefined && (scope.encounters === undefined || scope.encounters.length === 0)) return undefined;
  const types = new Set(grantedTypes(ds, scope));
  const bounds = scope.period === undefined ? undefined : periodBounds(scope.period, timeZone);
  const encounters = scope.encounters === undefined || scope.encounters.length === 0 ? undefined : new Set(scope.encounters);
  return {
    types,
    outOfScope(res) {
      const type = res.resourceType as string;
      if (bounds !== undefined) {
        const paths = DATE_PATHS[type];
        if (paths !== undefined) {
          let range: [number, number] | undefined;
          for (const p of paths) {
            const v = valuesAt(res, p)[0];
            if (v === undefined) continue;
            range = dateRange(v, timeZone);
            break;
          }
          if (range === undefined || range[0] < bounds.from || range[1] > bounds.to) return true;
        }
      }
      if (encounters !== undefined) {
        if (type === 'Encounter') return !(typeof res.id === 'string' && encounters.has(res.id));
        const paths = ENCOUNTER_PATHS[type];
        if (paths !== undefined) {
          const named = paths.flatMap((p) => valuesAt(res, p));
          if (named.length === 0) return true;
          for (const r of named) {
            const ref = (r as Obj | null)?.reference;
            const t = typeof ref === 'string' ? tailTypeId(ref) : undefined;
            if (t === undefined || t.type !== 'Encounter' || !encounters.has(t.id)) return true;
          }
        }
      }
      return false;
    },
  };
}

/** Search parameters that name the patient a resource belongs to (any modifier). */
const PATIENT_PARAMS: ReadonlySet<string> = new Set(['patient', 'subject', 'beneficiary']);
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * Every patient a request names, for checking it against a grant's patients: a Patient by id
 * (read, vread, instance history, an instance operation), a Patient compartment, `_id` of a
 * Patient search, and each value (comma lists included) of a `patient`, `subject` or `beneficiary`
 * parameter, plain or `:Patient`. `opaque` when it names patients in a way that cannot be read as
 * ids (another modifier, an identifier, a batch or transaction): a grant then refuses it rather
 * than guess.
 */
export function requestPatients(req: ClassifiedRequest): { readonly ids: ReadonlySet<string>; readonly opaque: boolean } {
  const ids = new Set<string>();
  let opaque = false;
  const add = (value: string) => {
    const t = value.includes('/') ? tailTypeId(value) : undefined;
    if (value.includes('/') && (t === undefined || t.type !== 'Patient')) {
      opaque = true;
      return;
    }
    const id = t?.id ?? value;
    if (FHIR_ID.test(id)) ids.add(id);
    else opaque = true;
  };
  const i = req.interaction;
  if (i === 'batch' || i === 'transaction') return { ids, opaque: true };
  if (req.resourceType === 'Patient' && req.id !== undefined) add(req.id);
  if (req.compartment !== undefined) {
    if (req.compartment.type === 'Patient') add(req.compartment.id);
    else opaque = true;
  }
  for (const [name, value] of req.params) {
    const [base, modifier] = name.split(':', 2) as [string, string | undefined];
    const patientSearch = base === '_id' && req.resourceType === 'Patient' && modifier === undefined;
    if (!PATIENT_PARAMS.has(base) && !patientSearch) continue;
    if (modifier !== undefined && modifier !== 'Patient') {
      opaque = true;
      continue;
    }
    for (const v of value.split(',')) add(v.trim());
  }
  return { ids, opaque };
}
