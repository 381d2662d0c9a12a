/**
 * Narrowing a search to the token's patient (pure), and rebuilding a ClassifiedRequest when the
 * decision changed what is forwarded.
 *
 * A patient-context token may search only its own compartment, and the answer must not depend on
 * whether other patients' resources exist (SPEC 3.6). Filtering the upstream's answer afterwards is
 * not enough: paging and `total` would still count the others. So the search itself is narrowed
 * before it is sent (`Observation?...` -> `Patient/P/Observation?...`, `Patient?...` ->
 * `Patient?...&_id=P`), and a search that names another patient is refused outright, by the value
 * it names alone, so the refusal is the same whether or not that patient has any data.
 */
import { tailTypeId } from '../fhir/reference.js';
import { isResourceType, searchParam } from '../fhir/tables.js';
import { ID } from './classify/target.js';
import { encodeParams, type Param } from './classify/url.js';
import type { ClassifiedRequest } from './request.js';

/** A patient id usable as a path segment: FHIR id grammar and not a dot segment (`..` would climb). */
export function isPathSafeId(id: string): boolean {
  return ID.test(id) && id !== '.' && id !== '..';
}

/**
 * Whether one alternative of a patient-reference value stays with `patient`: `P`, `Patient/P`, a
 * URL ending in `Patient/P`, or a typed reference to another kind of resource (a Group or Device
 * subject names no patient). A bare id is read as a patient id even where the parameter also
 * reaches other types: the upstream may resolve it to a Patient, and it is refused by its value.
 */
function staysWith(alt: string, patient: string, typedPatient: boolean): boolean {
  if (!alt.includes('/')) return alt === patient;
  const t = tailTypeId(alt);
  if (t === undefined) return false; // unparseable: it could name anyone
  if (t.type === 'Patient') return t.id === patient;
  return !typedPatient;
}

/**
 * The first parameter of a search on `type` that names a patient other than `patient`, or
 * undefined. Reference parameters that can target Patient come from the R4 tables; for Patient
 * itself `_id` is one too. Every alternative of an OR list must stay with the patient.
 */
export function paramNamingOtherPatient(type: string, params: readonly Param[], patient: string): string | undefined {
  for (const [name, value] of params) {
    // Chains and _has are refused unless granted word for word (decide); a granted one is still
    // bounded by the compartment path.
    if (name.includes('.') || name === '_has' || name.startsWith('_has:')) continue;
    const colon = name.indexOf(':');
    const base = colon < 0 ? name : name.slice(0, colon);
    const modifier = colon < 0 ? undefined : name.slice(colon + 1);
    if (modifier === 'missing') continue; // true/false, names nobody
    if (type === 'Patient' && base === '_id') {
      if (value.split(',').some((alt) => alt !== patient)) return name;
      continue;
    }
    const info = searchParam(type, base);
    if (info === undefined || info.type !== 'reference' || !info.targets?.includes('Patient')) continue;
    // A business identifier cannot be compared with an id; the compartment path bounds it.
    if (modifier === 'identifier') continue;
    // `subject:Group=g1` names a Group.
    if (modifier !== undefined && modifier !== 'Patient' && isResourceType(modifier)) continue;
    const typedPatient = modifier === 'Patient';
    if (value.split(',').some((alt) => !staysWith(alt, patient, typedPatient))) return name;
  }
  return undefined;
}

export interface Changes {
  readonly params?: readonly Param[];
  readonly id?: string;
  readonly compartment?: { readonly type: string; readonly id: string };
  readonly upstreamPath?: string;
  readonly body?: unknown;
  readonly entries?: readonly ClassifiedRequest[];
}

/** A new frozen request like `req` with `changes`, shaped as classify's assemble() shapes it. */
export function rebuild(req: ClassifiedRequest, changes: Changes): ClassifiedRequest {
  const params = Object.freeze((changes.params ?? req.params).map((p) => Object.freeze([p[0], p[1]] as const)));
  const entries = changes.entries ?? req.entries;
  const compartment = changes.compartment ?? req.compartment;
  return Object.freeze({
    method: req.method,
    interaction: req.interaction,
    resourceType: req.resourceType,
    id: changes.id ?? req.id,
    versionId: req.versionId,
    operation: req.operation,
    compartment: compartment === undefined ? undefined : Object.freeze({ ...compartment }),
    params,
    upstreamPath: changes.upstreamPath ?? req.upstreamPath,
    upstreamQuery: encodeParams(params),
    body: Object.hasOwn(changes, 'body') ? changes.body : req.body,
    entries: entries === undefined ? undefined : Object.freeze([...entries]),
  });
}

/**
 * `req` (a search of a compartment type, already checked) narrowed to `patient`, whose id must be
 * path-safe: a Patient search gets `_id=P` (the only id it may name), any other type becomes the
 * compartment search `Patient/P/Type` with the same parameters.
 */
export function narrowToPatient(req: ClassifiedRequest, params: readonly Param[], patient: string): ClassifiedRequest {
  const type = req.resourceType!;
  if (type === 'Patient') return rebuild(req, { params: [...params, ['_id', patient]] });
  return rebuild(req, { params, upstreamPath: `/Patient/${encodeURIComponent(patient)}/${type}` });
}

/** As classify writes a Bundle entry's request.url: relative to the base, canonical query. */
function entryUrl(c: ClassifiedRequest): string {
  const path = c.upstreamPath.slice(1);
  const url = c.upstreamQuery === '' ? path : `${path}?${c.upstreamQuery}`;
  return url === '' ? '/' : url;
}

/**
 * The batch/transaction `req` with `entries` (one per entry, some narrowed) in place of its own,
 * and the forwarded Bundle's `entry.request.url` rewritten to match, so the upstream executes what
 * was decided (and an entry's decided body, where it changed, as its resource). Undefined when the
 * body does not line up with the entries (fail closed).
 */
export function rebuildBatch(req: ClassifiedRequest, entries: readonly ClassifiedRequest[]): ClassifiedRequest | undefined {
  const body = req.body as { entry?: unknown } | undefined;
  const old = req.entries;
  if (old === undefined || old.length !== entries.length) return undefined;
  if (typeof body !== 'object' || body === null || !Array.isArray(body.entry) || body.entry.length !== entries.length) return undefined;
  const bodyEntries = body.entry as unknown[];
  const entry = bodyEntries.map((e, i) => {
    if (entries[i] === old[i]) return e;
    const o = e as { request?: unknown };
    if (typeof o !== 'object' || o === null || typeof o.request !== 'object' || o.request === null) return undefined;
    const out: Record<string, unknown> = { ...o, request: { ...o.request, url: entryUrl(entries[i]!) } };
    // A decided body (an update's id translated from a pseudonym) replaces the client's.
    if (entries[i]!.body !== old[i]!.body) out.resource = entries[i]!.body;
    return out;
  });
  if (entry.some((e) => e === undefined)) return undefined;
  return rebuild(req, { body: { ...body, entry }, entries });
}

/**
 * `req` with `meta` added to every `_elements` list that lacks it (batch entries too): an upstream
 * honouring `_elements` could drop `meta`, and with it the security labels the response filter
 * withholds by. Returns `req` itself when nothing changes, undefined when a Bundle body does not
 * line up with its entries.
 */
export function withMetaElements(req: ClassifiedRequest): ClassifiedRequest | undefined {
  if (req.entries !== undefined) {
    const entries = req.entries.map(withMetaElements);
    if (entries.every((e, i) => e === req.entries![i])) return req;
    return entries.some((e) => e === undefined) ? undefined : rebuildBatch(req, entries as ClassifiedRequest[]);
  }
  const lacks = ([n, v]: Param) => n === '_elements' && !v.split(',').some((e) => e.trim() === 'meta');
  if (!req.params.some(lacks)) return req;
  return rebuild(req, { params: req.params.map((p) => (lacks(p) ? ([p[0], `${p[1]},meta`] as const) : p)) });
}
