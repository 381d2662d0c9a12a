/**
 * The kinds of care relationship a policy names under `relationships.sources`: for each, the
 * upstream searches that find a caller's patients, and the checks that keep only what those
 * searches claimed to match. The searches narrow on the server (one page of `maxPatients`); every
 * condition is checked again here on what came back, so an upstream that ignores a parameter, or
 * reads it differently, can only make the gateway find fewer relationships, never more.
 *
 * - CareTeam: active teams with the caller as a current participant -> the team's subject.
 * - Encounter: encounters with the caller as participant, not cancelled or entered in error, that
 *   are current (in progress, arrived, triaged, on leave, or without an end) or ended at most
 *   `days` ago -> the subject. The upstream is asked for `date=ge<cutoff>` (a period overlapping
 *   the cutoff or later, open periods included); an encounter with no period at all is not found.
 * - EpisodeOfCare: active episodes the caller manages -> the patient.
 * - PractitionerRole: the caller's active roles (a PractitionerRole caller: that role) -> their
 *   locations (a role without one: its organization) -> in-progress encounters at those locations
 *   (a location the patient has left no longer counts) or with that service provider -> subject.
 * - Task: open tasks the caller owns -> `for` when it is a Patient, else the focus resource's
 *   patient (`patient`, `subject` or `beneficiary`: Encounter, Claim, Account, Condition...), read
 *   through `_include=Task:focus`.
 *
 * Only `Patient/<id>` references count, relative or absolute under the upstream's own bases;
 * anything else (contained, logical, another server's) is ignored. Pure apart from `search`.
 */
import { tailTypeId } from '../fhir/reference.js';
import type { RelationshipSource } from '../policy/plan.js';

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A FHIR logical id. */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The caller whose relationships are looked up: only these types have any. */
export interface Caller {
  readonly type: 'Practitioner' | 'PractitionerRole';
  readonly id: string;
  /** `Type/id`. */
  readonly ref: string;
}

/** `Practitioner/x` or `PractitionerRole/x` as a Caller; anything else has no relationships. */
export function parseCaller(ref: string): Caller | undefined {
  const slash = ref.indexOf('/');
  const type = ref.slice(0, slash);
  const id = ref.slice(slash + 1);
  if ((type !== 'Practitioner' && type !== 'PractitionerRole') || !FHIR_ID.test(id)) return undefined;
  return { type, id, ref };
}

/** `Type/id` of a Reference (or a reference string), relative or under one of `bases`; else undefined. */
export type LocalRef = (ref: unknown) => string | undefined;

/**
 * Reads references as the upstream's own `Type/id`: relative, or absolute under one of its bases
 * (no trailing slash). A `/_history/v` suffix is dropped. Contained (`#x`), `urn:` and other
 * servers' references are not the upstream's resources: undefined.
 */
export function localReferences(bases: readonly string[]): LocalRef {
  const prefixes = new Set(['', ...bases.map((b) => `${b.replace(/\/+$/, '')}/`)]);
  return (ref) => {
    const s = isObj(ref) ? ref.reference : ref;
    if (typeof s !== 'string' || s.length > 2048) return undefined;
    const t = tailTypeId(s);
    if (!t || !FHIR_ID.test(t.id) || !prefixes.has(t.prefix)) return undefined;
    return `${t.type}/${t.id}`;
  };
}

/** The patient id a reference names, when it is the upstream's `Patient/<id>`. */
function patientOf(local: LocalRef, ref: unknown): string | undefined {
  const r = local(ref);
  return r?.startsWith('Patient/') ? r.slice('Patient/'.length) : undefined;
}

/**
 * The first instant after a FHIR date, dateTime or instant, at its precision (`2024` ends when 2025
 * begins), or undefined when unparseable. A date without a zone is read as UTC.
 */
export function endOf(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?)?)?$/.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, time] = m;
  let t: number;
  if (time !== undefined) t = Date.parse(value) + 1000;
  else if (d !== undefined) t = Date.UTC(Number(y), Number(mo) - 1, Number(d) + 1);
  else if (mo !== undefined) t = Date.UTC(Number(y), Number(mo), 1);
  else t = Date.UTC(Number(y) + 1, 0, 1);
  return Number.isFinite(t) ? t : undefined;
}

/** A Period whose end has passed (an unreadable end counts as passed). */
function ended(period: unknown, now: number): boolean {
  if (!isObj(period) || period.end === undefined) return false;
  const end = endOf(period.end);
  return end === undefined || end <= now;
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : v === undefined ? [] : [v];
}

function idOf(r: Obj): string | undefined {
  return typeof r.id === 'string' && FHIR_ID.test(r.id) ? r.id : undefined;
}

// ---------------------------------------------------------------------------------------------
// Search results

export interface SearchResult {
  /** Entries of the searched type (search mode `match`, or none given). */
  readonly matches: readonly Obj[];
  /** The other resources (`_include`d), by `Type/id`. */
  readonly included: ReadonlyMap<string, Obj>;
  /** The upstream offered a next page: what is on it is not read. */
  readonly truncated: boolean;
}

/** Searches `resourceType` on the upstream with these parameters (values unencoded). */
export type Search = (resourceType: string, params: readonly (readonly [string, string])[]) => Promise<SearchResult>;

/** A parsed upstream answer as a SearchResult; throws an Error naming what is wrong when it is not a searchset Bundle. */
export function readSearchBundle(value: unknown, resourceType: string): SearchResult {
  if (!isObj(value) || value.resourceType !== 'Bundle') throw new Error('not a Bundle');
  if (value.type !== 'searchset') throw new Error('not a searchset');
  if (value.entry !== undefined && !Array.isArray(value.entry)) throw new Error('Bundle.entry is not an array');
  if (value.link !== undefined && !Array.isArray(value.link)) throw new Error('Bundle.link is not an array');
  const matches: Obj[] = [];
  const included = new Map<string, Obj>();
  for (const e of (value.entry ?? []) as unknown[]) {
    const r = isObj(e) ? e.resource : undefined;
    if (!isObj(r) || typeof r.resourceType !== 'string') continue;
    const mode = isObj((e as Obj).search) ? ((e as Obj).search as Obj).mode : undefined;
    if (mode === 'outcome') continue;
    if (r.resourceType === resourceType && mode !== 'include') matches.push(r);
    else {
      const id = idOf(r);
      if (id !== undefined) included.set(`${r.resourceType}/${id}`, r);
    }
  }
  const truncated = ((value.link ?? []) as unknown[]).some((l) => isObj(l) && l.relation === 'next');
  return { matches, included, truncated };
}

// ---------------------------------------------------------------------------------------------
// Sources

/** One patient found, and the resource that made the link (`CareTeam/ct-1`). */
export interface Link {
  readonly patient: string;
  readonly resource: string;
}

export interface SourceInput {
  readonly caller: Caller;
  /** `_count` of every search (policy `relationships.maxPatients`). */
  readonly count: number;
  /** Epoch ms the lookup is made at. */
  readonly now: number;
  readonly local: LocalRef;
  readonly search: Search;
}

export interface SourceResult {
  readonly links: readonly Link[];
  /** A search had a next page (or the caller has more places than are searched): some relationships were not read. */
  readonly truncated: boolean;
}

const DAY_MS = 86_400_000;

/** Locations (and organizations) of the caller's roles searched for encounters, at most. */
export const MAX_PLACES = 50;

/** Task statuses of work still to do. */
const OPEN_TASK = ['draft', 'requested', 'received', 'accepted', 'ready', 'in-progress', 'on-hold'];
const CURRENT_ENCOUNTER = new Set(['in-progress', 'arrived', 'triaged', 'onleave']);
const VOID_ENCOUNTER = new Set(['cancelled', 'entered-in-error']);

/** A FHIR dateTime search value, second precision, UTC. */
function searchInstant(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export async function readSource(source: RelationshipSource, input: SourceInput): Promise<SourceResult> {
  switch (source.kind) {
    case 'CareTeam':
      return careTeams(input);
    case 'Encounter':
      return encounters(input, source.days ?? 0);
    case 'EpisodeOfCare':
      return episodes(input);
    case 'PractitionerRole':
      return departments(input);
    case 'Task':
      return tasks(input);
  }
}

function linksFrom(resources: readonly Obj[], type: string, patients: (r: Obj) => readonly string[]): Link[] {
  const links: Link[] = [];
  for (const r of resources) {
    const id = idOf(r);
    if (id === undefined) continue;
    for (const patient of patients(r)) links.push({ patient, resource: `${type}/${id}` });
  }
  return links;
}

async function careTeams(input: SourceInput): Promise<SourceResult> {
  const { caller, local, now } = input;
  const found = await input.search('CareTeam', [
    ['participant', caller.ref],
    ['status', 'active'],
    ['_count', String(input.count)],
  ]);
  const links = linksFrom(found.matches, 'CareTeam', (ct) => {
    if (ct.status !== 'active' || ended(ct.period, now)) return [];
    const member = list(ct.participant).some((p) => isObj(p) && local(p.member) === caller.ref && !ended(p.period, now));
    const patient = member ? patientOf(local, ct.subject) : undefined;
    return patient === undefined ? [] : [patient];
  });
  return { links, truncated: found.truncated };
}

async function encounters(input: SourceInput, days: number): Promise<SourceResult> {
  const { caller, local } = input;
  const cutoff = input.now - days * DAY_MS;
  const found = await input.search('Encounter', [
    ['participant', caller.ref],
    ['date', `ge${searchInstant(cutoff)}`],
    ['_count', String(input.count)],
  ]);
  const links = linksFrom(found.matches, 'Encounter', (enc) => {
    const status = enc.status;
    if (typeof status !== 'string' || VOID_ENCOUNTER.has(status)) return [];
    const end = isObj(enc.period) ? enc.period.end : undefined;
    const current = CURRENT_ENCOUNTER.has(status) || end === undefined;
    if (!current && !((endOf(end) ?? Number.NEGATIVE_INFINITY) > cutoff)) return [];
    if (!list(enc.participant).some((p) => isObj(p) && local(p.individual) === caller.ref)) return [];
    const patient = patientOf(local, enc.subject);
    return patient === undefined ? [] : [patient];
  });
  return { links, truncated: found.truncated };
}

async function episodes(input: SourceInput): Promise<SourceResult> {
  const { caller, local, now } = input;
  const found = await input.search('EpisodeOfCare', [
    ['care-manager', caller.ref],
    ['status', 'active'],
    ['_count', String(input.count)],
  ]);
  const links = linksFrom(found.matches, 'EpisodeOfCare', (eoc) => {
    if (eoc.status !== 'active' || ended(eoc.period, now) || local(eoc.careManager) !== caller.ref) return [];
    const patient = patientOf(local, eoc.patient);
    return patient === undefined ? [] : [patient];
  });
  return { links, truncated: found.truncated };
}

async function departments(input: SourceInput): Promise<SourceResult> {
  const { caller, local, now } = input;
  const count = String(input.count);
  const roles = await input.search(
    'PractitionerRole',
    caller.type === 'Practitioner'
      ? [['practitioner', caller.ref], ['active', 'true'], ['_count', count]]
      : [['_id', caller.id], ['active', 'true'], ['_count', count]],
  );
  let truncated = roles.truncated;
  const locations = new Set<string>();
  const organizations = new Set<string>();
  for (const role of roles.matches) {
    if (role.active !== true || ended(role.period, now)) continue;
    const mine = caller.type === 'Practitioner' ? local(role.practitioner) === caller.ref : idOf(role) === caller.id;
    if (!mine) continue;
    // The department is where the role works; a role naming no location covers its organization.
    const at = list(role.location).flatMap((l) => {
      const r = local(l);
      return r?.startsWith('Location/') ? [r] : [];
    });
    for (const l of at) locations.add(l);
    const org = local(role.organization);
    if (at.length === 0 && org?.startsWith('Organization/')) organizations.add(org);
  }
  const places = (set: Set<string>): string[] => {
    const all = [...set];
    if (all.length > MAX_PLACES) truncated = true;
    return all.slice(0, MAX_PLACES);
  };
  const byLocation = places(locations);
  const byOrganization = places(organizations);
  const [atLocations, atOrganizations] = await Promise.all([
    byLocation.length === 0
      ? undefined
      : input.search('Encounter', [['location', byLocation.join(',')], ['status', 'in-progress'], ['_count', count]]),
    byOrganization.length === 0
      ? undefined
      : input.search('Encounter', [['service-provider', byOrganization.join(',')], ['status', 'in-progress'], ['_count', count]]),
  ]);
  const locSet = new Set(byLocation);
  const orgSet = new Set(byOrganization);
  const there = (enc: Obj): readonly string[] => {
    if (enc.status !== 'in-progress') return [];
    // A location the patient has moved on from (completed, or its period ended) no longer counts.
    const atLocation = list(enc.location).some((l) => isObj(l) && l.status !== 'completed' && !ended(l.period, now) && locSet.has(local(l.location) ?? ''));
    const atOrganization = orgSet.has(local(enc.serviceProvider) ?? '');
    if (!atLocation && !atOrganization) return [];
    const patient = patientOf(local, enc.subject);
    return patient === undefined ? [] : [patient];
  };
  const links: Link[] = [];
  for (const found of [atLocations, atOrganizations]) {
    if (found === undefined) continue;
    truncated ||= found.truncated;
    links.push(...linksFrom(found.matches, 'Encounter', there));
  }
  return { links, truncated };
}

/** The patients a resource is about: the first of `patient`, `subject`, `beneficiary` that names any. */
function patientsOfResource(local: LocalRef, r: Obj): string[] {
  for (const key of ['patient', 'subject', 'beneficiary']) {
    const ids = list(r[key]).flatMap((ref) => {
      const p = patientOf(local, ref);
      return p === undefined ? [] : [p];
    });
    if (ids.length > 0) return ids;
  }
  return [];
}

async function tasks(input: SourceInput): Promise<SourceResult> {
  const { caller, local } = input;
  const found = await input.search('Task', [
    ['owner', caller.ref],
    ['status', OPEN_TASK.join(',')],
    ['_include', 'Task:focus'],
    ['_count', String(input.count)],
  ]);
  const links = linksFrom(found.matches, 'Task', (task) => {
    if (typeof task.status !== 'string' || !OPEN_TASK.includes(task.status) || local(task.owner) !== caller.ref) return [];
    const patient = patientOf(local, task.for);
    if (patient !== undefined) return [patient];
    const focus = local(task.focus);
    if (focus === undefined) return [];
    if (focus.startsWith('Patient/')) return [focus.slice('Patient/'.length)];
    const target = found.included.get(focus);
    return target === undefined ? [] : patientsOfResource(local, target);
  });
  return { links, truncated: found.truncated };
}
