/**
 * Requests for the non-interference suite: the fixed corpus per caller, and the building blocks
 * the fast-check generator draws from. Search parameters granted to a caller come from the
 * compiled policy (loadPolicy -> compilePolicy: plan.types.get(T).searchParams); their values are
 * taken from the seed data (every resource of S, withheld ones included, so searches match what
 * the caller may not see) by evaluating the upstream's own SearchParameter expressions.
 */
import { evalFhirPath, getSearchParameter } from '@medplum/core';
import type { Coding, Resource } from 'fhir/r4.js';
import { loadPolicy } from '../../src/config/load.js';
import { ACT_CODE_SYSTEM, CONFIDENTIALITY_SYSTEM, DEMO } from '../../src/demo/data.js';
import { prepareFhirDefinitions } from '../../src/demo/upstream.js';
import { PUBLIC_BASE, type RequestSpec } from './harness.js';
import {
  type Caller,
  currentResources,
  grantedTypes,
  HENRY_HISTORY_ID,
  interactions,
  keyOf,
  POLICY_FILE,
  relatedPatients,
  versionsByKey,
  withheldFor,
  withheldLabels,
} from './oracle.js';

export const MISSING_ID = 'ni-missing-0001';
const SNOMED_HIV = 'http://snomed.info/sct|86406008';

let compiled: ReturnType<typeof loadPolicy>['policy'] | undefined;

/** Granted search parameters (compiled policy), or [] when the type is not granted. */
export function grantedSearchParams(c: Caller, type: string): string[] {
  compiled ??= loadPolicy(POLICY_FILE).policy;
  const plan = compiled.roles.get(c.role)?.plans.get(c.purpose)?.types.get(type);
  return plan ? [...plan.searchParams].sort() : [];
}

const q = (v: string): string => encodeURIComponent(v);

// ---------------------------------------------------------------------------------------------
// Seed-derived search values

export interface SeedValue {
  readonly value: string;
  /** `Type/id` of the resource it was taken from. */
  readonly source: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

function formatValue(paramType: string, v: unknown): string | undefined {
  switch (paramType) {
    case 'token': {
      if (typeof v === 'boolean') return String(v);
      if (typeof v === 'string') return v;
      if (!isObj(v)) return undefined;
      const coding = (Array.isArray(v.coding) ? v.coding[0] : v) as Obj | undefined;
      if (isObj(coding) && str(coding.code)) return str(coding.system) ? `${coding.system}|${coding.code}` : (coding.code as string);
      if (str(v.value)) return str(v.system) ? `${v.system}|${v.value}` : (v.value as string);
      return undefined;
    }
    case 'reference': {
      const ref = isObj(v) ? str(v.reference) : undefined;
      return ref && /^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(ref) ? ref : undefined;
    }
    case 'string': {
      if (typeof v === 'string') return v.slice(0, 40);
      if (!isObj(v)) return undefined;
      if (str(v.family)) return v.family as string;
      if (Array.isArray(v.given) && str(v.given[0])) return v.given[0] as string;
      if (str(v.city)) return v.city as string;
      if (Array.isArray(v.line) && str(v.line[0])) return v.line[0] as string;
      return undefined;
    }
    case 'date': {
      if (typeof v === 'string') return v.slice(0, 10);
      if (isObj(v) && str(v.start)) return (v.start as string).slice(0, 10);
      return undefined;
    }
    case 'quantity':
    case 'number':
      if (typeof v === 'number') return String(v);
      return isObj(v) && typeof v.value === 'number' ? String(v.value) : undefined;
    case 'uri':
      return typeof v === 'string' ? v : undefined;
    default:
      return undefined; // composite, special: not generated
  }
}

const valueCache = new Map<string, SeedValue[]>();

/** Every distinct value of `type`'s parameter `code` in the seed (current versions), with its source. */
export function seedValues(type: string, code: string): SeedValue[] {
  const key = `${type}.${code}`;
  const cached = valueCache.get(key);
  if (cached) return cached;
  prepareFhirDefinitions();
  const out: SeedValue[] = [];
  const seen = new Set<string>();
  const add = (value: string, source: string) => {
    if (!seen.has(value)) {
      seen.add(value);
      out.push({ value, source });
    }
  };
  const resources = [...currentResources().values()].filter((r) => r.resourceType === type);
  if (code === '_id') for (const r of resources) add(r.id!, keyOf(r));
  else if (code === '_lastUpdated') for (const r of resources) add(`ge${r.meta!.lastUpdated!.slice(0, 10)}`, keyOf(r));
  else {
    const param = getSearchParameter(type, code);
    if (param?.expression && param.type) {
      for (const r of resources) {
        let values: unknown[] = [];
        try {
          values = evalFhirPath(param.expression, r);
        } catch {
          values = [];
        }
        for (const v of values) {
          const f = formatValue(param.type, v);
          if (f !== undefined) add(f, keyOf(r));
        }
      }
    }
  }
  valueCache.set(key, out);
  return out;
}

/** The parameter's type in the upstream's definitions (`reference`, `token`...). */
export function paramType(type: string, code: string): string | undefined {
  prepareFhirDefinitions();
  return getSearchParameter(type, code)?.type;
}

/**
 * For the corpus: up to one value taken from a resource the caller may not see and one from a
 * resource it may (the first is the probe, the second the control).
 */
export function corpusValues(c: Caller, type: string, code: string): string[] {
  const withheld = withheldFor(c);
  const all = seedValues(type, code);
  const hidden = all.find((v) => withheld.has(v.source));
  const shown = all.find((v) => !withheld.has(v.source) && v.value !== hidden?.value);
  return [hidden, shown].filter((v) => v !== undefined).map((v) => v!.value);
}

/** Search parameters (granted, filter parameters with seed values) usable on `type`. */
export function filterParams(c: Caller, type: string): string[] {
  return grantedSearchParams(c, type).filter(
    (p) => !['_count', '_offset', '_sort', '_include', '_revinclude', '_elements', '_summary', '_total'].includes(p) && seedValues(type, p).length > 0,
  );
}

/** Types the seed holds, in first-seen order. */
export function seededTypes(): string[] {
  return [...new Set([...currentResources().values()].map((r) => r.resourceType))];
}

export function seededIds(type: string): string[] {
  return [...currentResources().values()].filter((r) => r.resourceType === type).map((r) => r.id!);
}

/**
 * `_include` values from `type`: `type:param` for each reference parameter with seed values (its
 * targets are the seed's), and `type:param:Target` for each target when the parameter points at
 * several types.
 */
export function includesFrom(type: string): Array<{ value: string; targets: string[] }> {
  const out: Array<{ value: string; targets: string[] }> = [];
  for (const code of referenceParams(type)) {
    const targets = [...new Set(seedValues(type, code).map((v) => v.value.split('/')[0]!))];
    out.push({ value: `${type}:${code}`, targets });
    if (targets.length > 1) for (const t of targets) out.push({ value: `${type}:${code}:${t}`, targets: [t] });
  }
  return out;
}

/** `_revinclude` values onto `type`: `U:param` for every seeded type U whose parameter points at `type`. */
export function revincludesOnto(type: string): Array<{ value: string; source: string }> {
  const out: Array<{ value: string; source: string }> = [];
  for (const u of seededTypes()) {
    for (const code of referenceParams(u)) {
      if (seedValues(u, code).some((v) => v.value.startsWith(`${type}/`))) out.push({ value: `${u}:${code}`, source: u });
    }
  }
  return out;
}

const REFERENCE_PARAMS = new Map<string, string[]>();
/** Reference search parameters of a type that have values in the seed (a fixed list of candidates). */
function referenceParams(type: string): string[] {
  const cached = REFERENCE_PARAMS.get(type);
  if (cached) return cached;
  const candidates = [
    'subject', 'patient', 'encounter', 'performer', 'practitioner', 'participant', 'service-provider', 'diagnosis',
    'general-practitioner', 'organization', 'recorder', 'asserter', 'requester', 'author', 'result', 'specimen',
    'beneficiary', 'payor', 'subscriber', 'insurer', 'provider', 'claim', 'coverage', 'actor', 'evidence-detail',
  ];
  const out = candidates.filter((c) => paramType(type, c) === 'reference' && seedValues(type, c).length > 0);
  REFERENCE_PARAMS.set(type, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writes

function labelCoding(label: string): Coding {
  const bar = label.indexOf('|');
  if (bar >= 0) return { system: label.slice(0, bar), code: label.slice(bar + 1) };
  return ['U', 'L', 'M', 'N', 'R', 'V'].includes(label)
    ? { system: CONFIDENTIALITY_SYSTEM, code: label }
    : { system: ACT_CODE_SYSTEM, code: label };
}

function withoutMeta(r: Resource): Resource {
  const copy = structuredClone(r) as Resource & { meta?: unknown };
  delete copy.meta;
  return copy;
}

function writes(c: Caller): RequestSpec[] {
  const out: RequestSpec[] = [];
  const withheld = withheldFor(c);
  const current = currentResources();
  const json = 'application/fhir+json';
  const patch = JSON.stringify([{ op: 'add', path: '/language', value: 'en' }]);
  for (const type of seededTypes()) {
    const granted = grantedTypes(c).includes(type);
    const ids = seededIds(type);
    const hidden = ids.filter((id) => withheld.has(`${type}/${id}`));
    const targets = granted ? [...hidden.slice(0, 2), MISSING_ID] : [ids[0]!];
    const template = current.get(`${type}/${ids[0]}`)!;
    for (const id of targets) {
      const existing = current.get(`${type}/${id}`);
      const body = JSON.stringify({ ...withoutMeta(existing ?? template), id, ...(existing?.meta?.security ? { meta: { security: existing.meta.security } } : {}) });
      const fam = id === MISSING_ID ? 'missing' : withheld.get(`${type}/${id}`) ?? 'visible';
      out.push({ family: `write-put-${fam}`, method: 'PUT', path: `/${type}/${id}`, body, contentType: json, write: true });
      out.push({ family: `write-patch-${fam}`, method: 'PATCH', path: `/${type}/${id}`, body: patch, contentType: 'application/json-patch+json', write: true });
      out.push({ family: `write-delete-${fam}`, method: 'DELETE', path: `/${type}/${id}`, write: true });
    }
    const labels = withheldLabels(c, type);
    if (granted && labels.length > 0) {
      const body = { ...withoutMeta(template), meta: { security: [labelCoding(labels[0]!)] } } as Resource & { id?: string };
      delete body.id;
      out.push({ family: 'write-create-withheld-label', method: 'POST', path: `/${type}`, body: JSON.stringify(body), contentType: json, write: true });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The fixed corpus

function batch(entries: string[], type: 'batch' | 'transaction' = 'batch'): string {
  return JSON.stringify({
    resourceType: 'Bundle',
    type,
    entry: entries.map((url) => ({ request: { method: 'GET', url } })),
  });
}

/** Every request of the fixed corpus for a caller; writes come last (they must all be refused). */
export function corpus(c: Caller): RequestSpec[] {
  const out: RequestSpec[] = [];
  const get = (family: string, path: string) => out.push({ family, method: 'GET', path });
  const granted = grantedTypes(c);
  const versions = versionsByKey();
  const seeded = seededTypes();

  for (const type of seeded) {
    if (granted.includes(type)) continue;
    // A type outside the data set: refused alike whether or not the resource exists.
    get('read-type-denied', `/${type}/${seededIds(type)[0]}`);
    get('read-type-denied', `/${type}/${MISSING_ID}`);
    get('search-type-denied', `/${type}?_count=2`);
  }

  for (const type of granted) {
    const can = interactions(c, type);
    const ids = seededIds(type);
    if (can.has('read')) {
      for (const id of ids) get('read', `/${type}/${id}`);
      get('read-missing', `/${type}/${MISSING_ID}`);
      for (const id of ids) {
        for (const v of versions.get(`${type}/${id}`) ?? []) get('vread', `/${type}/${id}/_history/${v.meta!.versionId}`);
      }
      if (ids[0]) get('vread-missing', `/${type}/${ids[0]}/_history/99`);
      get('vread-missing', `/${type}/${MISSING_ID}/_history/1`);
    }
    if (can.has('history')) {
      for (const id of ids) get('history-instance', `/${type}/${id}/_history`);
      get('history-instance', `/${type}/${MISSING_ID}/_history`);
      get('history-type', `/${type}/_history`);
      get('history-type', `/${type}/_history?_count=2`);
    }
    if (!can.has('search')) continue;
    if (ids.length === 0) {
      get('search-empty-type', `/${type}`);
      continue;
    }
    get('search-plain', `/${type}`);
    for (const p of filterParams(c, type)) {
      for (const v of corpusValues(c, type, p)) get('search-param', `/${type}?${p}=${q(v)}`);
    }
    for (const n of [1, 2, 3]) get('search-count-paging', `/${type}?_count=${n}`);
    for (const inc of includesFrom(type)) {
      get(inc.targets.every((t) => granted.includes(t)) ? 'include' : 'include-nongranted', `/${type}?_include=${q(inc.value)}`);
    }
    for (const rev of revincludesOnto(type)) {
      get(granted.includes(rev.source) ? 'revinclude' : 'revinclude-nongranted', `/${type}?_revinclude=${q(rev.value)}`);
    }
    const firstInclude = includesFrom(type)[0];
    if (firstInclude) get('include-paging', `/${type}?_count=2&_include=${q(firstInclude.value)}`);
  }

  get('special', `/Condition?patient=${DEMO.patients.henry}&code=${q(SNOMED_HIV)}`);
  get('special', `/Patient?name=Anderson&_revinclude=${q('DocumentReference:subject')}`);
  get('special', `/Condition?_id=${HENRY_HISTORY_ID}`);

  // Batches: reads (visible, withheld, missing) and searches, one Bundle each.
  const readable = granted.filter((t) => interactions(c, t).has('read'));
  const reads = (readable.length > 0 ? readable : ['Patient']).flatMap((t) => [...seededIds(t).map((id) => `${t}/${id}`), `${t}/${MISSING_ID}`]);
  const json = 'application/fhir+json';
  out.push({ family: 'batch-read', method: 'POST', path: '/', body: batch(reads), contentType: json });
  for (const t of readable) {
    out.push({ family: 'batch-read-type', method: 'POST', path: '/', body: batch([...seededIds(t).map((id) => `${t}/${id}`), `${t}/${MISSING_ID}`]), contentType: json });
  }
  // A transaction fails as a whole on a missing read: one read per transaction, every id.
  for (const url of reads) out.push({ family: 'transaction-read', method: 'POST', path: '/', body: batch([url], 'transaction'), contentType: json });
  // An instance operation on every patient, withheld and missing ones included (refused alike where not granted).
  for (const id of [...seededIds('Patient'), MISSING_ID]) get('everything', `/Patient/${id}/$everything`);
  const searchable = (granted.length > 0 ? granted : ['Patient']).filter((t) => seededIds(t).length > 0);
  out.push({
    family: 'batch-search',
    method: 'POST',
    path: '/',
    body: batch([...searchable.map((t) => `${t}?_count=2`), `Condition?patient=${DEMO.patients.henry}`, `Condition?code=${q(SNOMED_HIV)}`]),
    contentType: json,
  });

  out.push(...relationshipRequests(c));
  out.push(...writes(c));
  out.push(...relationshipWrites(c));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Care relationships (callers under a requirement only)

/**
 * Every way a request names one patient, for every seeded patient (related ones are the control)
 * and one that does not exist: reads, versions, history, `$everything`, compartment searches,
 * reference searches (plain, typed, `:Patient`, absolute, OR-lists, repeated), includes, batches
 * and transactions; then searches naming no patient, which the gateway narrows.
 */
function relationshipRequests(c: Caller): RequestSpec[] {
  const related = relatedPatients(c);
  if (related === undefined) return [];
  const out: RequestSpec[] = [];
  const get = (family: string, path: string) => out.push({ family, method: 'GET', path });
  const json = 'application/fhir+json';
  const control = [...related.keys()].sort()[0]!;
  for (const id of [...seededIds('Patient'), MISSING_ID]) {
    for (const path of [
      `/Patient/${id}`,
      `/Patient/${id}/_history/1`,
      `/Patient/${id}/_history`,
      `/Patient/${id}/$everything`,
      `/Patient/${id}/Observation`,
      `/Patient/${id}/Encounter?_count=1`,
      `/Patient?_id=${id}`,
      `/Patient?_id=${control},${id}`,
      `/Observation?patient=${id}`,
      `/Observation?subject=Patient/${id}`,
      `/Observation?subject:Patient=${id}`,
      `/Observation?subject=${q(`${PUBLIC_BASE}/Patient/${id}`)}`,
      `/Observation?patient=${control},${id}`,
      `/Observation?patient=${control}&patient=${id}`,
      `/Condition?patient=${id}&_include=Condition:subject`,
      `/Encounter?patient=${id}&_revinclude=${q('Condition:encounter')}`,
      `/Claim?patient=${id}`,
    ]) {
      get('relationship-named', path);
    }
    for (const type of ['batch', 'transaction'] as const) {
      for (const url of [`Patient/${id}`, `Observation?patient=${id}`]) {
        out.push({ family: 'relationship-batch', method: 'POST', path: '/', body: batch([`Patient/${control}`, url], type), contentType: json });
      }
    }
  }
  for (const path of [
    '/Patient',
    '/Patient?_count=1',
    `/Patient?_revinclude=${q('Observation:subject')}&_count=2`,
    `/Observation?_count=2&_include=${q('Observation:subject')}`,
    `/Encounter?_revinclude=${q('Condition:encounter')}&_count=3`,
    `/Encounter?_include=${q('Encounter:subject')}`,
    `/Practitioner?_revinclude=${q('Encounter:participant')}`,
    `/Organization?_revinclude=${q('Patient:organization')}`,
    `/Location?_revinclude=${q('Encounter:location')}`,
    `/Condition?code=${q(SNOMED_HIV)}`,
    `/Observation?_id=${seededIds('Observation').join(',')}`,
    `/Claim?_include=${q('Claim:patient')}`,
  ]) {
    get('relationship-narrowed', path);
  }
  out.push({
    family: 'relationship-batch',
    method: 'POST',
    path: '/',
    body: batch(['Observation?_count=2', 'Encounter?_count=100', 'Patient', ...seededIds('Observation').map((id) => `Observation/${id}`)]),
    contentType: json,
  });
  return out;
}

/** Writes naming each patient the caller is not related to, and writes moving a record onto a related one: all refused. */
function relationshipWrites(c: Caller): RequestSpec[] {
  const related = relatedPatients(c);
  if (related === undefined) return [];
  const out: RequestSpec[] = [];
  const json = 'application/fhir+json';
  const control = [...related.keys()].sort()[0]!;
  const current = currentResources();
  const observation = (patient: string, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'non-interference' }, subject: { reference: `Patient/${patient}` }, ...extra });
  const unrelated = [...seededIds('Patient').filter((id) => !related.has(id)), MISSING_ID];
  for (const id of unrelated) {
    out.push({ family: 'relationship-write', method: 'POST', path: '/Observation', body: observation(id), contentType: json, write: true });
    out.push({ family: 'relationship-write', method: 'POST', path: '/Observation', body: observation(control, { performer: [{ reference: `Patient/${id}` }] }), contentType: json, write: true });
    out.push({ family: 'relationship-write', method: 'PUT', path: `/Patient/${id}`, body: JSON.stringify({ resourceType: 'Patient', id, active: false }), contentType: json, write: true });
  }
  // Another patient's records, moved onto a related patient by the update itself.
  for (const [key, r] of current) {
    if (r.resourceType !== 'Observation' && r.resourceType !== 'Encounter') continue;
    const subject = (r as { subject?: { reference?: string } }).subject?.reference?.replace('Patient/', '');
    if (subject === undefined || related.has(subject)) continue;
    const body = { ...withoutMeta(r), subject: { reference: `Patient/${control}` } };
    out.push({ family: 'relationship-write', method: 'PUT', path: `/${key}`, body: JSON.stringify(body), contentType: json, write: true });
  }
  return out;
}

/** Parameters usable for `_sort` on a type (control ones plus granted date/string/token ones). */
export function sortParams(c: Caller, type: string): string[] {
  const granted = grantedSearchParams(c, type);
  const base = ['_id', '_lastUpdated'].filter((p) => granted.includes(p));
  const extra = granted.filter((p) => ['date', 'string', 'token'].includes(paramType(type, p) ?? '') && seedValues(type, p).length > 0).slice(0, 4);
  return [...base, ...extra];
}
