/**
 * What an access grant in use does to one request (pure): the requester's own plan with the
 * granted types replaced by the requestable data set's, and the response limited, for those types,
 * to the granted encounters and period. The granted patients are enforced by the pipeline (the
 * request must name one of them, and the answer is limited to that patient's compartment).
 */
import { tailTypeId } from '../fhir/reference.js';
import type { AccessPlan, RequestableDataSet, ResourcePlan } from '../policy/plan.js';
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

/**
 * An ISO 8601 date, dateTime or instant as [earliest, latest] epoch ms it can mean (a bare date is
 * the whole day in UTC, give or take the 14 hours of time zones); undefined when unparseable.
 */
export function dateRange(v: unknown): [number, number] | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(T.*)?$/.exec(v);
  if (m === null) return undefined;
  if (m[4] !== undefined) {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : [t, t];
  }
  const y = Number(m[1]);
  const mo = m[2] === undefined ? undefined : Number(m[2]) - 1;
  const d = m[3] === undefined ? undefined : Number(m[3]);
  const zone = 14 * 3_600_000;
  const start = Date.UTC(y, mo ?? 0, d ?? 1);
  const end = d !== undefined ? Date.UTC(y, mo!, d + 1) : mo !== undefined ? Date.UTC(y, mo + 1, 1) : Date.UTC(y + 1, 0, 1);
  return [start - zone, end + zone - 1];
}

/** A grant's period as epoch ms bounds (each end inclusive; a bare end date covers its whole day). */
function periodBounds(p: NonNullable<AccessScope['period']>): { from: number; to: number } {
  const from = p.start === undefined ? Number.NEGATIVE_INFINITY : (dateRange(p.start)?.[0] ?? Number.POSITIVE_INFINITY);
  const to = p.end === undefined ? Number.POSITIVE_INFINITY : (dateRange(p.end)?.[1] ?? Number.NEGATIVE_INFINITY);
  return { from, to };
}

/** Whether a period and encounter list in a scope are well-formed (dates parse, start before end). */
export function validPeriod(p: AccessScope['period']): boolean {
  if (p === undefined) return true;
  if (p.start === undefined && p.end === undefined) return false;
  if (p.start !== undefined && dateRange(p.start) === undefined) return false;
  if (p.end !== undefined && dateRange(p.end) === undefined) return false;
  const { from, to } = periodBounds(p);
  return from <= to;
}

/**
 * The response limit for a grant's types: a resource of a dated type is in scope only when its
 * first clinical date present falls in the period (wholly: a date that could mean a time outside
 * it is out); a resource of a type that names its encounter, only when it names a granted one
 * (an Encounter by its own id). Undefined when the grant names neither.
 */
export function grantScopeOf(ds: RequestableDataSet, scope: AccessScope): ResponseContext['grantScope'] {
  if (scope.period === undefined && (scope.encounters === undefined || scope.encounters.length === 0)) return undefined;
  const types = new Set(grantedTypes(ds, scope));
  const bounds = scope.period === undefined ? undefined : periodBounds(scope.period);
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
            range = dateRange(v);
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
