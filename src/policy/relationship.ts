/**
 * Care relationships, judged on the request (pure): whose records a request reaches, by the values
 * it names, against the set of patients the caller is related to (src/relationships looks them up).
 *
 * The judgement depends only on the request and the caller's set, never on what the upstream holds:
 * an unrelated patient and a patient that does not exist are answered alike, so nothing about an
 * unrelated patient's data (or existence) can be learned from the answer. Concretely:
 *
 * - A read, vread, instance history, instance operation, update, patch or delete of `Patient/X`, and
 *   a compartment search `Patient/X/Type`, need X related.
 * - A search's reference parameters that can name a Patient (`patient`, `subject`, `_id` on Patient,
 *   ...) must name related patients only. A search naming none is narrowed to the related patients
 *   (`_id=` on Patient, the type's patient parameter elsewhere), at most `searchPatients` of them;
 *   with none related it can match nothing the caller may see (an empty searchset, answered by the
 *   gateway). A type the patient compartment does not hold (Practitioner, Organization...) is not
 *   narrowed.
 * - A create or update body must name related patients only on its compartment references.
 * - Reads of other types by id cannot be judged before the upstream answers: the response filter
 *   withholds any resource of an unrelated patient (src/redact/response.ts, reason `relationship`).
 * - A batch or transaction is judged entry by entry; one entry about an unrelated patient refuses
 *   the Bundle.
 */
import { tailTypeId } from '../fhir/reference.js';
import { isResourceType, searchParam } from '../fhir/tables.js';
import { isCompartmentType, patientReferences } from './compartment.js';
import type { Param } from './classify/url.js';
import { rebuild, rebuildBatch } from './narrow.js';
import type { ClassifiedRequest } from './request.js';

export type RelationshipVerdict =
  /** Forward `request` (narrowed when `narrowed` is set); `named`: the related patients it names. */
  | { readonly kind: 'allow'; readonly request: ClassifiedRequest; readonly named: readonly string[]; readonly narrowed?: number | undefined }
  /** It names patients the caller is not related to (an unparseable value counts as one: `?`). */
  | { readonly kind: 'unrelated'; readonly patients: readonly string[] }
  /** A search that can only match patients the caller is not related to: nothing to answer. */
  | { readonly kind: 'empty' }
  /** A search naming no patient, by a caller related to more than `searchPatients`. */
  | { readonly kind: 'too-broad' }
  /** A write of a resource the caller's own relationships are read from, that could relate it to anyone. */
  | { readonly kind: 'source-write'; readonly type: string };

export interface RelationshipOptions {
  readonly searchPatients: number;
  /**
   * Types the caller may not write at all: relationship sources that relate through something other
   * than a patient the written resource names (a PractitionerRole through its locations, a Task
   * through its focus), so a write could relate the caller to any patient. See selfGrantingTypes.
   */
  readonly sourceWriteTypes?: ReadonlySet<string> | undefined;
}

/**
 * The resource types whose writes would let a caller grant itself relationships through the given
 * source kinds: PractitionerRole (its locations and organizations relate everyone admitted there)
 * and Task (its focus may be any patient's encounter or claim). CareTeam, Encounter and
 * EpisodeOfCare relate the patient they name, which a write must name and be related to already.
 */
export function selfGrantingTypes(kinds: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const k of kinds) if (k === 'PractitionerRole' || k === 'Task') out.add(k);
  return out;
}

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The patient ids a reference parameter value names: bare ids, `Patient/x`, URLs ending in it. `?` for an unparseable one. */
function patientsIn(value: string, typedPatient: boolean): string[] {
  const out: string[] = [];
  for (const alt of value.split(',')) {
    if (!alt.includes('/')) {
      out.push(alt);
      continue;
    }
    const t = tailTypeId(alt);
    if (t === undefined) out.push('?');
    else if (t.type === 'Patient') out.push(t.id);
    else if (typedPatient) out.push('?');
  }
  return out;
}

/**
 * Every patient a search's parameters name, and whether something other than an id names one (a
 * business identifier, a chain, `_has`): such a search is still narrowed.
 */
export function patientsNamed(type: string, params: readonly Param[]): { ids: string[]; indirect: boolean } {
  const ids: string[] = [];
  let indirect = false;
  for (const [name, value] of params) {
    if (name.includes('.') || name === '_has' || name.startsWith('_has:')) {
      indirect = true;
      continue;
    }
    const colon = name.indexOf(':');
    const base = colon < 0 ? name : name.slice(0, colon);
    const modifier = colon < 0 ? undefined : name.slice(colon + 1);
    if (modifier === 'missing') continue;
    if (type === 'Patient' && base === '_id') {
      // `_id:not=A` names everyone else: it bounds nothing.
      if (modifier !== undefined) indirect = true;
      else ids.push(...value.split(','));
      continue;
    }
    const info = searchParam(type, base);
    if (info === undefined || info.type !== 'reference' || !info.targets?.includes('Patient')) continue;
    if (modifier === 'identifier' || modifier === 'not' || modifier === 'above' || modifier === 'below') {
      indirect = true;
      continue;
    }
    if (modifier !== undefined && modifier !== 'Patient' && isResourceType(modifier)) continue;
    ids.push(...patientsIn(value, modifier === 'Patient'));
  }
  return { ids: [...new Set(ids)], indirect };
}

/**
 * Whether the search is already bounded to the patients it names: its narrowing parameter itself
 * (plain, or typed `:Patient`) names patients by id only. Then every match is one of theirs; any
 * other parameter naming a patient (`performer`, `link`, `_id:not`) matches other patients' records
 * too, which the filter would drop and the pages would show the gaps of.
 */
function boundedBy(params: readonly Param[], param: string): boolean {
  return params.some(
    ([name, value]) => (name === param || (param !== '_id' && name === `${param}:Patient`)) && value.split(',').every((alt) => alt !== '' && !alt.includes('?')),
  );
}

/** The parameter a search of `type` is narrowed to patients with: `_id` on Patient, else `patient` or `subject`. */
export function narrowingParam(type: string): string | undefined {
  if (type === 'Patient') return '_id';
  for (const p of ['patient', 'subject', 'beneficiary']) {
    const info = searchParam(type, p);
    if (info?.type === 'reference' && info.targets?.includes('Patient')) return p;
  }
  return undefined;
}

/**
 * Patient ids named by `reference` strings anywhere in `v` (a contained Patient counts as `?`, a
 * person who cannot be shown to be related); with `anyString`, by every string that reads as a
 * Patient reference (a JSON Patch `value`, a FHIRPath Patch `valueString`).
 */
export function patientsReferencedIn(v: unknown, anyString = false, depth = 0): string[] {
  if (depth > 64) return ['?'];
  if (typeof v === 'string') {
    if (!anyString) return [];
    if (!/patient\//i.test(v)) return [];
    const t = tailTypeId(v.trim());
    return t !== undefined && t.type === 'Patient' && t.prefix === v.slice(0, t.prefix.length) && FHIR_ID.test(t.id) ? [t.id] : ['?'];
  }
  if (typeof v !== 'object' || v === null) return [];
  if (Array.isArray(v)) return v.flatMap((x) => patientsReferencedIn(x, anyString, depth + 1));
  const out: string[] = [];
  const o = v as Record<string, unknown>;
  if (o.resourceType === 'Patient' && depth > 0) out.push('?');
  for (const [k, x] of Object.entries(o)) {
    if (k === 'reference' && typeof x === 'string') {
      const named = referenceTarget(x);
      if (named !== undefined) out.push(named);
    } else out.push(...patientsReferencedIn(x, anyString, depth + 1));
  }
  return out;
}

/**
 * The patient a written `reference` names (its id), `?` when the gateway cannot be sure what it
 * names, undefined when it names no patient. Only well-formed references are judged: `Type/id`
 * relative or absolute (a version allowed), a transaction's `urn:uuid:`/`urn:oid:` placeholder, a
 * contained `#id`. Anything else (a leading space, `patient/x`, a conditional `Type?criteria`, a
 * bare id) is `?`: another server might read it as a patient, or resolve its criteria against
 * records the caller may not see.
 */
function referenceTarget(ref: string): string | undefined {
  if (ref.startsWith('#') || /^urn:(uuid|oid):[A-Za-z0-9.:-]+$/.test(ref)) return undefined;
  if (ref.includes('?') || ref.trim() !== ref || ref.includes(' ')) return '?';
  const t = tailTypeId(ref);
  if (t === undefined || !FHIR_ID.test(t.id)) return '?';
  if (t.type === 'Patient') return t.id;
  return /(^|\/)patient\//i.test(ref) ? '?' : undefined;
}

function judgeOne(req: ClassifiedRequest, related: ReadonlySet<string>, opts: RelationshipOptions): RelationshipVerdict {
  const unrelatedOf = (ids: readonly string[]) => ids.filter((p) => !related.has(p));
  const byIds = (ids: readonly string[]): RelationshipVerdict => {
    const out = unrelatedOf(ids);
    return out.length > 0 ? { kind: 'unrelated', patients: out } : { kind: 'allow', request: req, named: ids };
  };
  const type = req.resourceType;
  const i = req.interaction;
  if ((i === 'create' || i === 'update' || i === 'patch' || i === 'delete') && type !== undefined && opts.sourceWriteTypes?.has(type)) {
    return { kind: 'source-write', type };
  }
  switch (req.interaction) {
    case 'patch': {
      // A patch may write a reference anywhere, as a reference or as a bare string value.
      const ids = type === 'Patient' && req.id !== undefined ? [req.id] : [];
      ids.push(...patientsReferencedIn(req.body, true));
      return byIds([...new Set(ids)]);
    }
    case 'read':
    case 'vread':
    case 'history-instance':
    case 'delete':
    case 'operation':
      // Patient by id; other types are judged on the stored resource (the filter, the stored guard).
      return type === 'Patient' && req.id !== undefined ? byIds([req.id]) : { kind: 'allow', request: req, named: [] };
    case 'create':
    case 'update': {
      const ids = type === 'Patient' ? (req.id === undefined ? [] : [req.id]) : [];
      if (type !== undefined && type !== 'Patient' && isCompartmentType(type)) {
        const refs = patientReferences(req.body, type);
        // Patient data of nobody: the caller could not read it back, and cannot be related to it.
        if (refs.length === 0) ids.push('?');
        for (const r of refs) {
          const t = tailTypeId(r);
          ids.push(t === undefined ? (r.includes('/') || r === '' ? '?' : r) : t.type === 'Patient' ? t.id : '?');
        }
      }
      // Any other element naming a patient (focus, an extension, Patient.link) must name a related
      // one too: the response filter withholds a record naming anyone else, so the write would put
      // on the server what the caller could never read back, about a patient it has no business with.
      ids.push(...patientsReferencedIn(req.body));
      return byIds([...new Set(ids)]);
    }
    case 'search-compartment': {
      const c = req.compartment;
      if (c === undefined || c.type !== 'Patient') return { kind: 'unrelated', patients: ['?'] };
      const named = patientsNamed(type ?? '', req.params);
      const v = byIds([...new Set([c.id, ...named.ids])]);
      if (v.kind !== 'allow' || type === undefined) return v;
      // The compartment holds records that merely mention the patient (as performer, say) whose
      // owner may be anyone: the search is bounded to the patient's own records.
      const param = narrowingParam(type);
      if (param === undefined) return { kind: 'too-broad' };
      if (boundedBy(req.params, param)) return v;
      return { kind: 'allow', request: rebuild(req, { params: [...req.params, [param, param === '_id' ? c.id : `Patient/${c.id}`]] }), named: v.named };
    }
    case 'search-type': {
      if (type === undefined || !isCompartmentType(type)) return { kind: 'allow', request: req, named: [] };
      const named = patientsNamed(type, req.params);
      const out = unrelatedOf(named.ids);
      if (out.length > 0) return { kind: 'unrelated', patients: out };
      const param = narrowingParam(type);
      if (param !== undefined && boundedBy(req.params, param)) return { kind: 'allow', request: req, named: named.ids };
      if (related.size === 0) return { kind: 'empty' };
      if (param === undefined || related.size > opts.searchPatients) return { kind: 'too-broad' };
      const ids = [...related].sort();
      const value = param === '_id' ? ids.join(',') : ids.map((id) => `Patient/${id}`).join(',');
      return { kind: 'allow', request: rebuild(req, { params: [...req.params, [param, value]] }), named: named.ids, narrowed: ids.length };
    }
    case 'history-type':
      // Refused where anything can be withheld (the stored guard); nothing to narrow here.
      return { kind: 'allow', request: req, named: [] };
    default:
      // System-wide searches and history are not granted by any data set; capabilities is the gateway's own.
      return { kind: 'allow', request: req, named: [] };
  }
}

/** The request judged against the caller's related patients (see the module comment). */
export function judgeRelationship(req: ClassifiedRequest, related: ReadonlySet<string>, opts: RelationshipOptions): RelationshipVerdict {
  if (req.interaction !== 'batch' && req.interaction !== 'transaction') return judgeOne(req, related, opts);
  const entries = req.entries ?? [];
  const verdicts = entries.map((e) => judgeOne(e, related, opts));
  const write = verdicts.find((v) => v.kind === 'source-write');
  if (write !== undefined) return write;
  const unrelated = verdicts.flatMap((v) => (v.kind === 'unrelated' ? v.patients : []));
  if (unrelated.length > 0) return { kind: 'unrelated', patients: [...new Set(unrelated)] };
  // An entry that can match nothing cannot be answered inside the Bundle: refused as a whole, as
  // one naming an unrelated patient is (it names no patient the caller is related to either).
  if (verdicts.some((v) => v.kind === 'empty')) return { kind: 'unrelated', patients: [] };
  if (verdicts.some((v) => v.kind === 'too-broad')) return { kind: 'too-broad' };
  const allowed = verdicts as Array<Extract<RelationshipVerdict, { kind: 'allow' }>>;
  const named = [...new Set(allowed.flatMap((v) => v.named))];
  const narrowed = allowed.reduce((n, v) => Math.max(n, v.narrowed ?? 0), 0);
  if (allowed.every((v, k) => v.request === entries[k])) return { kind: 'allow', request: req, named };
  const rebuilt = rebuildBatch(
    req,
    allowed.map((v) => v.request),
  );
  // A Bundle body that does not line up with its entries cannot be narrowed: refused (fail closed).
  if (rebuilt === undefined) return { kind: 'too-broad' };
  return { kind: 'allow', request: rebuilt, named, narrowed: narrowed > 0 ? narrowed : undefined };
}
