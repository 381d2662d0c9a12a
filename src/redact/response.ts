/**
 * Filters a whole upstream response body: a single resource, a Bundle of any type (nested Bundles
 * included), `contained`, `Parameters`, OperationOutcomes. Pure; never mutates the body.
 *
 * Fail closed: a shape the engine does not understand is withheld (Bundle entries) or rejected
 * with GatewayError('upstream-bad-response') (the top level), never passed through.
 */
import type { Coding, OperationOutcome } from 'fhir/r4.js';
import { newConsentStats } from '../consent/judge.js';
import { type ConsentVerdict, NOTICE_EXTENSION, REFRAIN_CODE, REFRAIN_DISPLAY, REFRAIN_SYSTEM } from '../consent/types.js';
import { GatewayError, operationOutcome } from '../errors.js';
import { tailTypeId } from '../fhir/reference.js';
import { isResourceType, patientReferencePaths, typeElements } from '../fhir/tables.js';
import type { ResourcePlan } from '../policy/plan.js';
import { type ContainedHandler, redactWith } from './apply.js';
import { deidentifyResource } from './deidentify.js';
import { pseudonymId, REMOVE } from './transforms.js';
import type { ConsentStats, ElementPlan, FilterResult, FilterStats, ResponseContext, WithheldReason } from './types.js';

type Obj = Record<string, unknown>;

/** Bundles nest (a Bundle in a Bundle, in Parameters): bounded so a hostile body cannot recurse us away. */
const MAX_DEPTH = 8;

const WITHHELD_TEXT = 'Some results were withheld; break-glass access can reveal them.';

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(detail: string): GatewayError {
  return new GatewayError('upstream-bad-response', detail);
}

/** The announcement a searchset carries when entries were withheld (withheldMode `announce`). */
export function withheldOutcomeEntry(): Obj {
  const outcome: OperationOutcome = {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'information',
        code: 'suppressed',
        details: {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'BTG' }],
          text: WITHHELD_TEXT,
        },
      },
    ],
  };
  return { search: { mode: 'outcome' }, resource: outcome };
}

/** An issue-type code or a coding's code: a token, never a sentence (a code field can carry free text too). */
const CODE_TOKEN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
/** A code system: a URI, so printable ASCII without spaces. */
const SYSTEM_URI = /^[\x21-\x7e]{1,255}$/;

/**
 * Rebuilds an upstream OperationOutcome from an allow-list: per issue `severity`, `code` and
 * `details.coding` (system and code only), so a client keeps the upstream's reason for a 4xx
 * (a failed patch, a stale If-Match 412, a 409 or 422). Never kept: the upstream's id, narrative,
 * extensions, and `expression`/`location` (FHIRPath naming elements, which may be elements the
 * caller's plan withholds: an invariant failing on a removed element would tell that it holds a
 * value). `freeText` (gateway config `upstream.errorText`, default off) also keeps `diagnostics`
 * and `details.text`, which may echo PHI or upstream internals.
 */
export function scrubOperationOutcome(oo: Obj, freeText = false): Obj {
  const out: Obj = { resourceType: 'OperationOutcome' };
  const issues: Obj[] = [];
  if (Array.isArray(oo.issue)) {
    for (const i of oo.issue) {
      if (!isObj(i)) continue;
      const severity = typeof i.severity === 'string' && SEVERITIES.has(i.severity) ? i.severity : 'error';
      const issue: Obj = { severity, code: typeof i.code === 'string' && CODE_TOKEN.test(i.code) ? i.code : 'processing' };
      const details: Obj = {};
      if (isObj(i.details) && Array.isArray(i.details.coding)) {
        const coding = i.details.coding
          .filter(isObj)
          .map((c) => {
            const k: Obj = {};
            if (typeof c.system === 'string' && SYSTEM_URI.test(c.system)) k.system = c.system;
            if (typeof c.code === 'string' && CODE_TOKEN.test(c.code)) k.code = c.code;
            return k;
          })
          .filter((c) => c.code !== undefined);
        if (coding.length > 0) details.coding = coding;
      }
      if (freeText && isObj(i.details) && typeof i.details.text === 'string') details.text = i.details.text;
      if (Object.keys(details).length > 0) issue.details = details;
      if (freeText && typeof i.diagnostics === 'string') issue.diagnostics = i.diagnostics;
      issues.push(issue);
    }
  }
  // issue is 1..*: an outcome with no usable issue still says that something happened.
  out.issue = issues.length > 0 ? issues : [{ severity: 'error', code: 'processing' }];
  return out;
}

const SEVERITIES: ReadonlySet<string> = new Set(['fatal', 'error', 'warning', 'information']);

type Stats = FilterStats & { readonly elements: Map<string, Set<string>> };

function newStats(): Stats {
  return { elementsRemoved: 0, resourcesWithheld: 0, resources: [], patients: new Set<string>(), elements: new Map() };
}

/**
 * Notes the top-level elements of one released resource: its own keys, nothing deeper. Only names
 * the type defines are kept, so a key an upstream invents (kept by a `*` plan) never reaches the
 * audit trail; `_birthDate` (a primitive's extension) is the element `birthDate`.
 */
function noteElements(stats: Stats, type: string, released: Obj): void {
  const defined = typeElements(type);
  if (defined === undefined) return;
  let set = stats.elements.get(type);
  for (const k of Object.keys(released)) {
    const name = k.charCodeAt(0) === 95 /* _ */ ? k.slice(1) : k;
    if (name === 'resourceType' || !Object.hasOwn(defined, name)) continue;
    if (set === undefined) {
      set = new Set();
      stats.elements.set(type, set);
    }
    set.add(name);
  }
}

/** `FilterStats.states` keeps at most this many characters of a state. */
const STATE_MAX = 40;

/**
 * The state of residence a released Patient shows: `address[].state` of the `home` address, else
 * of the first address that has one; trimmed and uppercased. Only the state is read: no other
 * part of an address ever reaches the trail.
 */
export function residenceState(patient: Obj): string | undefined {
  const addresses = patient.address;
  if (!Array.isArray(addresses)) return undefined;
  let first: string | undefined;
  for (const a of addresses) {
    if (!isObj(a) || typeof a.state !== 'string') continue;
    const state = a.state.trim().toUpperCase().slice(0, STATE_MAX).trim();
    if (state === '') continue;
    if (a.use === 'home') return state;
    first ??= state;
  }
  return first;
}

/** Notes a released Patient's state (its real id), the first the answer showed for it. */
function noteState(stats: Stats, id: string, released: Obj): void {
  if (stats.states?.has(id)) return;
  const state = residenceState(released);
  if (state === undefined) return;
  stats.states ??= new Map();
  stats.states.set(id, state);
}

const splitPaths = new Map<string, ReadonlyArray<readonly string[]>>();

function referencePaths(type: string): ReadonlyArray<readonly string[]> {
  let p = splitPaths.get(type);
  if (p === undefined) {
    p = patientReferencePaths(type).map((x) => x.split('.'));
    splitPaths.set(type, p);
  }
  return p;
}

/** The `reference` strings found at `path` (split element names) under `v`, arrays at any level. */
export function collectRefs(v: unknown, path: readonly string[], i: number, out: string[]): void {
  if (Array.isArray(v)) {
    for (const x of v) collectRefs(x, path, i, out);
    return;
  }
  if (!isObj(v)) return;
  if (i === path.length) {
    if (typeof v.reference === 'string') out.push(v.reference);
    return;
  }
  collectRefs(v[path[i]], path, i + 1, out);
}

/**
 * Real patient ids a resource is about: its own id (Patient) or its compartment references.
 * A Patient belongs to itself only: the R4 CompartmentDefinition's `link` parameter is there for
 * merges, and following it would release another person's chart to a token limited to yours
 * just because that chart links to you (BYPASSES 11).
 */
export function patientsOf(res: Obj): string[] {
  const type = res.resourceType as string;
  if (type === 'Patient') return typeof res.id === 'string' ? [res.id] : [];
  const ids: string[] = [];
  const refs: string[] = [];
  for (const p of referencePaths(type)) collectRefs(res, p, 0, refs);
  for (const r of refs) {
    const t = tailTypeId(r);
    if (t && t.type === 'Patient' && !ids.includes(t.id)) ids.push(t.id);
  }
  return ids;
}

/**
 * Every patient the resources in a response body name (Bundles, nested Bundles and Parameters
 * walked; contained resources included): the patients whose consents must be loaded before the
 * body is filtered. Shapes the filter would refuse are skipped here (it refuses them there).
 */
export function patientsIn(body: unknown, out: Set<string> = new Set(), depth = 0): Set<string> {
  if (!isObj(body) || depth > MAX_DEPTH) return out;
  const type = body.resourceType;
  if (type === 'Bundle') {
    if (Array.isArray(body.entry)) for (const e of body.entry) if (isObj(e)) patientsIn(e.resource, out, depth + 1);
    return out;
  }
  if (type === 'Parameters') {
    const walk = (list: unknown) => {
      if (!Array.isArray(list)) return;
      for (const q of list) {
        if (!isObj(q)) continue;
        patientsIn(q.resource, out, depth + 1);
        walk(q.part);
      }
    };
    walk(body.parameter);
    return out;
  }
  if (typeof type !== 'string' || !isResourceType(type)) return out;
  for (const p of patientsOf(body)) out.add(p);
  if (Array.isArray(body.contained)) for (const c of body.contained) if (isObj(c) && typeof c.resourceType === 'string' && isResourceType(c.resourceType)) for (const p of patientsOf(c)) out.add(p);
  return out;
}

/**
 * Whether nothing in `v` names a patient other than `patient`: no reference to another Patient on
 * any element (`focus`, `derivedFrom`, an extension's `valueReference`...: a third red-team session
 * read Brian's records through Alice's token because they named him outside the compartment
 * paths), and no contained Patient (a person the caller cannot be shown to be).
 */
function namesNoOtherPatient(v: unknown, allowed: (patient: string) => boolean): boolean {
  if (Array.isArray(v)) return v.every((x) => namesNoOtherPatient(x, allowed));
  if (!isObj(v)) return true;
  for (const [k, x] of Object.entries(v)) {
    if (k === 'reference' && typeof x === 'string') {
      const t = tailTypeId(x);
      if (t !== undefined && t.type === 'Patient' && !allowed(t.id)) return false;
    } else if (k === 'contained' && Array.isArray(x) && x.some((c) => isObj(c) && c.resourceType === 'Patient')) {
      return false;
    } else if (typeof x === 'object' && x !== null && !namesNoOtherPatient(x, allowed)) {
      return false;
    }
  }
  return true;
}

/** `resource` with the 42 CFR Part 2 refrain label and redisclosure notice in its meta (a copy). */
function withPart2Notice(resource: Obj, notice: string): Obj {
  const meta = isObj(resource.meta) ? resource.meta : {};
  const security = Array.isArray(meta.security) ? meta.security : [];
  const extension = Array.isArray(meta.extension) ? meta.extension : [];
  const refrain = security.some((c) => isObj(c) && c.system === REFRAIN_SYSTEM && c.code === REFRAIN_CODE)
    ? security
    : [...security, { system: REFRAIN_SYSTEM, code: REFRAIN_CODE, display: REFRAIN_DISPLAY }];
  return { ...resource, meta: { ...meta, security: refrain, extension: [...extension, { url: NOTICE_EXTENSION, valueString: notice }] } };
}

/**
 * What a read of a withheld resource answers: not found, except for a label to a caller told of
 * withholding (it may break the glass): `break-glass-available`. A record of a patient the caller
 * has no care relationship with is not found for every caller: told otherwise, a caller that may
 * break the glass would learn which ids of an unrelated patient's records exist (a red-team session
 * counted them). It is refused with `relationship-required` only where the request itself names the
 * patient (src/policy/relationship.ts), whether or not that patient exists.
 */
export function withheldCode(reason: WithheldReason, mode: ResponseContext['withheldMode']): 'not-found' | 'break-glass-available' {
  return reason === 'label' && mode === 'announce' ? 'break-glass-available' : 'not-found';
}

/** Whether a plan rewrites `id` (pseudonym) or drops it; probed once per plan. */
const idFate = new WeakMap<ElementPlan, 'keep' | 'pseudonym' | 'remove'>();

/** Entries that count towards `Bundle.total`: search matches (or, outside searchsets, every entry). */
function matchCount(entry: unknown): number {
  if (!Array.isArray(entry)) return 0;
  let n = 0;
  for (const e of entry) {
    const mode = isObj(e) && isObj(e.search) ? e.search.mode : undefined;
    if (mode === undefined || mode === 'match') n++;
  }
  return n;
}

export class Filter {
  readonly stats: Stats = newStats();
  private announceNeeded = false;
  /** Withheld for their labels: the only kind break-glass can reveal, so the only kind announced. */
  private labelWithheld = 0;
  /** Why the last nested() call withheld its resource (read right after a REMOVE). */
  private lastWithheld: WithheldReason = 'type';
  /** The consent verdict of the last withheldReason() call that judged one (read right after it). */
  private lastConsent: ConsentVerdict | undefined;
  /** The patients of the resource being redacted: its contained resources are judged as theirs. */
  private containerPatients: readonly string[] = [];

  constructor(readonly ctx: ResponseContext) {}

  private readonly contained: ContainedHandler = (c) => {
    if (!isObj(c) || typeof c.resourceType !== 'string') return REMOVE;
    const plan = this.ctx.planFor(c.resourceType);
    // No plan for that type: the caller may not see it, even inside another resource.
    if (plan === undefined) return REMOVE;
    if (this.outsideGrant(c)) return REMOVE;
    // A patient's consent reaches what is contained in their records (a consent denying Conditions
    // denies the Condition contained in a report); contained resources carry no labels (dom-5).
    const consent = this.ctx.consent;
    if (consent !== undefined) {
      const own = patientsOf(c);
      const patients = own.length === 0 ? this.containerPatients : [...new Set([...this.containerPatients, ...own])];
      if (patients.length > 0 && !this.noteConsent(consent.judge(c, patients)).release) return REMOVE;
    }
    for (const p of patientsOf(c)) this.stats.patients.add(p);
    const r = redactWith(c, plan.elements, this.ctx, { contained: this.contained, isContained: true });
    noteElements(this.stats, c.resourceType, r.resource as Obj);
    return r;
  };

  private idFateOf(rp: ResourcePlan): 'keep' | 'pseudonym' | 'remove' {
    let f = idFate.get(rp.elements);
    if (f === undefined) {
      const probe = redactWith({ resourceType: rp.resourceType, id: 'probe' }, rp.elements, this.ctx, {}).resource as Obj;
      f = probe.id === 'probe' ? 'keep' : typeof probe.id === 'string' && this.ctx.pseudonymKey !== undefined ? 'pseudonym' : 'remove';
      idFate.set(rp.elements, f);
    }
    return f;
  }

  /**
   * The compartment check: Patient by id, others through their compartment references, where every
   * patient named must be the caller's, and at least one must be. R4 membership ("any compartment
   * reference names the patient") would release Brian's Condition to Alice's token because Alice is
   * its asserter, or a group session's Appointment with every patient in it: another person's
   * record, merely because it mentions the caller (the rule writes already follow,
   * src/policy/compartment.ts).
   */
  private inCompartment(res: Obj): boolean {
    const patient = this.ctx.patientCompartment;
    if (patient === undefined) return true;
    const type = res.resourceType as string;
    if (type !== 'Patient' && referencePaths(type).length === 0) return true; // not patient data (Practitioner, Organization...)
    // A Patient belongs by id alone: its own chart stays readable when it links to another.
    if (type === 'Patient') return res.id === patient;
    const named = patientsOf(res);
    return named.length > 0 && named.every((p) => p === patient) && namesNoOtherPatient(res, (p) => p === patient);
  }

  /**
   * The care-relationship check (src/policy/relationship.ts), as strict as the compartment check:
   * a Patient by id, any other patient data only when every patient it names, on any element, is
   * one the caller is related to, and it names at least one.
   */
  private related(res: Obj): boolean {
    const related = this.ctx.relatedPatients;
    if (related === undefined) return true;
    const type = res.resourceType as string;
    if (type !== 'Patient' && referencePaths(type).length === 0) return true;
    if (type === 'Patient') return typeof res.id === 'string' && related.has(res.id);
    const named = patientsOf(res);
    return named.length > 0 && named.every((p) => related.has(p)) && namesNoOtherPatient(res, (p) => related.has(p));
  }

  /** A resource of an access grant's types outside its encounters or period (counted for the audit). */
  private outsideGrant(res: Obj): boolean {
    const g = this.ctx.grantScope;
    if (g === undefined || !g.types.has(res.resourceType as string) || !g.outOfScope(res)) return false;
    this.stats.grantOutOfScope = (this.stats.grantOutOfScope ?? 0) + 1;
    return true;
  }

  /** Why the caller may not see `res` at all, or undefined when it may (after redaction). */
  withheldReason(res: Obj): WithheldReason | undefined {
    const plan = this.ctx.planFor(res.resourceType as string);
    if (plan === undefined) return 'type';
    // Outside the grant that made its type visible: as if the type were not granted.
    if (this.outsideGrant(res)) return 'type';
    const meta = res.meta;
    if (meta !== undefined && !isObj(meta)) return 'label';
    const security = meta?.security;
    if (security !== undefined && !Array.isArray(security)) return 'label';
    // Compartment before labels: a restricted record outside the caller's compartment must not be
    // announced as break-glass-revealable (it is not, for this caller); it is simply not there.
    if (!this.inCompartment(res)) return 'compartment';
    // Likewise a record of a patient the caller has no relationship with is not announced as
    // break-glass-revealable for its label: it is refused for the relationship (which break-glass
    // also opens), or simply not there.
    if (!this.related(res)) {
      const related = this.ctx.relatedPatients;
      const unrelated = patientsOf(res).filter((p) => !related?.has(p));
      if (unrelated.length > 0) {
        this.stats.unrelated ??= new Set();
        for (const p of unrelated) this.stats.unrelated.add(p);
      }
      return 'relationship';
    }
    // A patient's consent before labels: what it withholds is simply not there, never announced as
    // break-glass-revealable (break-glass overrides a consent only where the policy says so).
    const consent = this.ctx.consent;
    this.lastConsent = undefined;
    if (consent !== undefined) {
      const patients = patientsOf(res);
      if (patients.length > 0) {
        const v = this.noteConsent(consent.judge(res, patients));
        if (!v.release) return 'consent';
        this.lastConsent = v;
      }
    }
    if (plan.withhold.match(security as readonly Coding[] | undefined) !== undefined) return 'label';
    return undefined;
  }

  private consentStats(): ConsentStats {
    if (this.stats.consent === undefined) this.stats.consent = newConsentStats();
    return this.stats.consent;
  }

  /** Notes what a consent verdict did in the stats (the audit record's `consent`). */
  private noteConsent(v: ConsentVerdict): ConsentVerdict {
    if (v.release) {
      if (v.permitted === undefined && v.overridden === undefined) return v;
      const s = this.consentStats();
      for (const id of v.permitted ?? []) s.permitted.add(id);
      for (const id of v.overridden ?? []) s.overridden.add(id);
      return v;
    }
    const s = this.consentStats();
    for (const id of v.restricted ?? []) s.restricted.add(id);
    for (const p of v.unevaluable ?? []) s.unevaluable.add(p);
    return v;
  }

  /** Counts one resource withheld (audit: resources withheld; labels also for the announcement). */
  private countWithheld(reason: WithheldReason): void {
    this.stats.resourcesWithheld++;
    if (reason === 'label') this.labelWithheld++;
    else if (reason === 'consent') this.consentStats().withheld++;
  }

  /** One resource: withheld (with reason) or redacted with its type's plan. */
  resource(res: Obj): { kind: 'withheld'; reason: WithheldReason } | { kind: 'ok'; resource: Obj; plan: ResourcePlan } {
    const type = res.resourceType as string;
    const reason = this.withheldReason(res);
    if (reason !== undefined) return { kind: 'withheld', reason };
    const consent = this.lastConsent;
    const plan = this.ctx.planFor(type)!;
    // Its patients, once: the audit's patients and, where consent applies, its contained resources' judge.
    const patients = patientsOf(res);
    if (this.ctx.consent !== undefined) this.containerPatients = patients;
    const r = redactWith(res, plan.elements, this.ctx, { contained: this.contained });
    let released = r.resource as Obj;
    this.stats.elementsRemoved += r.removed;
    if (plan.deidentify !== undefined) {
      // After the rules: the profile applies to whatever they release, by data type.
      const d = deidentifyResource(released, plan.deidentify, this.ctx);
      this.stats.elementsRemoved += d.removed;
      released = d.resource;
    }
    if (consent?.release === true && consent.part2 === true) {
      // 42 CFR 2.32: Part 2 data leaves with the notice prohibiting redisclosure, whatever the plan kept of meta.
      released = withPart2Notice(released, this.ctx.consent!.notice);
      this.consentStats().part2++;
    }
    if (typeof res.id === 'string') this.stats.resources.push(`${type}/${res.id}`);
    for (const p of patients) this.stats.patients.add(p);
    noteElements(this.stats, type, released);
    // What the caller received (after redaction and de-identification), under the real id.
    if (type === 'Patient' && typeof res.id === 'string') noteState(this.stats, res.id, released);
    return { kind: 'ok', resource: released, plan };
  }

  /** Any resource-shaped value found inside a Bundle or Parameters; REMOVE when withheld. */
  nested(v: unknown, depth: number): Obj | typeof REMOVE {
    if (!isObj(v) || typeof v.resourceType !== 'string' || !isResourceType(v.resourceType)) {
      this.stats.resourcesWithheld++;
      this.lastWithheld = 'type';
      return REMOVE;
    }
    switch (v.resourceType) {
      case 'Bundle':
        return this.bundle(v, depth + 1);
      case 'Parameters':
        return this.parameters(v, depth + 1);
      case 'OperationOutcome':
        return scrubOperationOutcome(v);
    }
    const r = this.resource(v);
    if (r.kind === 'withheld') {
      this.countWithheld(r.reason);
      this.lastWithheld = r.reason;
      return REMOVE;
    }
    return r.resource;
  }

  /** Maps an upstream URL to the gateway, pseudonymizing a trailing `Type/id` when the type's plan does. */
  private url(u: unknown, allowRelative: boolean): string | undefined {
    if (typeof u !== 'string') return undefined;
    const absolute = u.includes('://');
    let out: string | undefined;
    if (absolute) out = this.ctx.rewriteUrl(u);
    else if (allowRelative) out = u;
    else if (u.startsWith('urn:uuid:') || u.startsWith('urn:oid:')) out = u;
    if (out === undefined) return undefined;
    const t = tailTypeId(out);
    if (this.ctx.deidentify !== undefined) {
      // Every id a de-identified caller sees is a pseudonym; other URLs (an upstream's links, a
      // search in a request entry) can carry real ids in their queries: the gateway pages itself.
      if (t === undefined) return undefined;
      const p = this.ctx.pseudonymKey === undefined ? undefined : pseudonymId(this.ctx.pseudonymKey, t.type, t.id);
      return p === undefined ? undefined : `${t.prefix}${t.type}/${p}`;
    }
    if (t === undefined) return out;
    const plan = this.ctx.planFor(t.type);
    if (plan === undefined) return out;
    const fate = this.idFateOf(plan);
    if (fate === 'keep') return out;
    if (fate === 'remove' || this.ctx.pseudonymKey === undefined) return undefined;
    const p = pseudonymId(this.ctx.pseudonymKey, t.type, t.id);
    return p === undefined ? undefined : `${t.prefix}${t.type}/${p}`;
  }

  bundle(b: Obj, depth: number): Obj {
    if (depth > MAX_DEPTH) throw bad('bundle nesting too deep');
    const type = b.type;
    if (typeof type !== 'string') throw bad('bundle without type');
    if (b.entry !== undefined && !Array.isArray(b.entry)) throw bad('bundle entry is not an array');
    if (b.link !== undefined && !Array.isArray(b.link)) throw bad('bundle link is not an array');
    const batch = type === 'batch-response' || type === 'transaction-response';
    const deid = this.ctx.deidentify !== undefined;
    const out: Obj = {};
    const withheldBefore = this.stats.resourcesWithheld;
    const labelWithheldBefore = this.labelWithheld;
    for (const k of Object.keys(b)) {
      if (k === 'entry' || k === 'link' || k === 'total' || k === 'signature') continue;
      // Bundle.id/meta/type/timestamp/identifier carry no entry content; other keys are unknown here.
      // For a de-identified caller only the type: the upstream's id, meta, identifier and timestamp
      // are ids and instants of its own.
      if (k === 'resourceType' || k === 'type' || (!deid && (k === 'id' || k === 'meta' || k === 'timestamp' || k === 'identifier' || k === 'language'))) {
        out[k] = b[k];
      } else this.stats.elementsRemoved++;
    }
    if (Array.isArray(b.link)) {
      const links: Obj[] = [];
      for (const l of b.link) {
        if (!isObj(l)) continue;
        const url = this.url(l.url, false);
        if (url !== undefined && typeof l.relation === 'string') links.push({ relation: l.relation, url });
      }
      if (links.length > 0) out.link = links;
    }
    const entries: Obj[] = [];
    let changed = false;
    for (const e of (b.entry as unknown[] | undefined) ?? []) {
      const ne = this.entry(e, depth, batch);
      if (ne === REMOVE) {
        changed = true;
        continue;
      }
      if (ne !== e) changed = true;
      entries.push(ne);
    }
    const withheld = this.stats.resourcesWithheld > withheldBefore;
    // Announcing type or compartment withholding would tell a patient-limited caller that other
    // patients' records match, and break-glass could not show them anyway.
    if (this.labelWithheld > labelWithheldBefore && this.ctx.withheldMode === 'announce' && type === 'searchset') this.announceNeeded = true;
    if (this.announceNeeded && depth === 0 && type === 'searchset') {
      entries.push(withheldOutcomeEntry());
      this.announceNeeded = false;
    }
    if (entries.length > 0) out.entry = entries;
    // A count that includes withheld resources is an existence oracle, and so is the total of a
    // paged result, whose withheld members may sit on another page: the total is released only
    // when this page holds every match and none was withheld.
    if (b.total !== undefined && !withheld && b.total === matchCount(b.entry)) out.total = b.total;
    // A redacted document's signature no longer verifies; an unchanged one is passed on.
    if (b.signature !== undefined && !changed && !withheld && !deid) out.signature = b.signature;
    return out;
  }

  /**
   * Whether a search or history entry would be released (its resource, if any, visible to the
   * caller), without redacting it or counting it: the pager asks this of every entry it reads, and
   * filters with entry() only the ones it releases, so the audit counts what was released.
   */
  visibility(e: unknown): 'ok' | WithheldReason {
    if (!isObj(e) || e.modifierExtension !== undefined) return 'type';
    const r = e.resource;
    if (r === undefined) return 'ok';
    if (!isObj(r) || typeof r.resourceType !== 'string' || !isResourceType(r.resourceType)) return 'type';
    if (r.resourceType === 'Bundle' || r.resourceType === 'Parameters' || r.resourceType === 'OperationOutcome') return 'ok';
    return this.withheldReason(r) ?? 'ok';
  }

  /** Counts an entry the pager skipped as withheld (audit: resources withheld). */
  skipped(reason: WithheldReason): void {
    this.countWithheld(reason);
  }

  get labelsWithheld(): number {
    return this.labelWithheld;
  }

  entry(e: unknown, depth: number, batch: boolean): Obj | typeof REMOVE {
    if (!isObj(e) || e.modifierExtension !== undefined) {
      this.stats.resourcesWithheld++;
      return REMOVE;
    }
    const out: Obj = {};
    let resource: Obj | typeof REMOVE | undefined;
    if (e.resource !== undefined) {
      resource = this.nested(e.resource, depth);
      if (resource === REMOVE) return batch ? this.withheldAnswer(this.lastWithheld) : REMOVE;
    }
    // Not found and gone look alike whatever the upstream wrote, so a withheld entry (below) cannot
    // be told from a missing one.
    if (batch && isObj(e.response) && typeof e.response.status === 'string' && /^\s*(404|410)\b/.test(e.response.status)) {
      return this.withheldAnswer('type');
    }
    if (e.fullUrl !== undefined && resource !== REMOVE) {
      const u = this.url(e.fullUrl, false);
      // A fullUrl must never carry the real id of a resource whose id was pseudonymized or removed.
      const realId = isObj(e.resource) ? e.resource.id : undefined;
      const idChanged = resource !== undefined && realId !== undefined && resource.id !== realId;
      if (u !== undefined && (!idChanged || (typeof resource?.id === 'string' && u.endsWith(`/${resource.id}`)))) out.fullUrl = u;
    }
    if (resource !== undefined && resource !== REMOVE) out.resource = resource;
    if (isObj(e.search)) {
      const s: Obj = {};
      if (typeof e.search.mode === 'string') s.mode = e.search.mode;
      if (typeof e.search.score === 'number') s.score = e.search.score;
      out.search = s;
    }
    if (isObj(e.request)) {
      const r: Obj = {};
      if (typeof e.request.method === 'string') r.method = e.request.method;
      const u = this.url(e.request.url, true);
      if (u !== undefined) r.url = u;
      out.request = r;
    }
    if (isObj(e.response)) {
      const r: Obj = {};
      const rsp = e.response;
      if (typeof rsp.status === 'string') r.status = rsp.status;
      if (rsp.location !== undefined) {
        const u = this.url(rsp.location, true);
        if (u !== undefined) r.location = u;
      }
      // Versions and instants of the upstream's record: not for a de-identified caller.
      if (typeof rsp.etag === 'string' && this.ctx.deidentify === undefined) r.etag = rsp.etag;
      if (typeof rsp.lastModified === 'string' && this.ctx.deidentify === undefined) r.lastModified = rsp.lastModified;
      if (isObj(rsp.outcome) && rsp.outcome.resourceType === 'OperationOutcome') r.outcome = scrubOperationOutcome(rsp.outcome);
      out.response = r;
    }
    return out;
  }

  /**
   * A batch/transaction-response entry whose resource the caller may not see keeps its position
   * (entries answer the request's entries in order) but becomes what a direct read would answer:
   * not found, or, for a label a break-glass-eligible caller could lift, the break-glass outcome.
   * Status, location, etag and the upstream's outcome would tell that the resource exists.
   */
  private withheldAnswer(reason: WithheldReason): Obj {
    const code = withheldCode(reason, this.ctx.withheldMode);
    return { response: { status: code === 'not-found' ? '404 Not Found' : '403 Forbidden', outcome: operationOutcome(code) } };
  }

  parameters(p: Obj, depth: number): Obj {
    if (depth > MAX_DEPTH) throw bad('parameters nesting too deep');
    if (p.parameter !== undefined && !Array.isArray(p.parameter)) throw bad('parameter is not an array');
    const out: Obj = {};
    const deid = this.ctx.deidentify !== undefined;
    for (const k of Object.keys(p)) if (k !== 'parameter' && (k === 'resourceType' || (!deid && (k === 'id' || k === 'meta')))) out[k] = p[k];
    const params = this.parameterList(p.parameter as unknown[] | undefined, depth);
    if (params.length > 0) out.parameter = params;
    return out;
  }

  private parameterList(list: unknown[] | undefined, depth: number): Obj[] {
    const out: Obj[] = [];
    for (const q of list ?? []) {
      if (!isObj(q)) {
        this.stats.elementsRemoved++;
        continue;
      }
      const nq: Obj = {};
      let drop = false;
      for (const k of Object.keys(q)) {
        if (k === 'resource') {
          const r = this.nested(q.resource, depth);
          if (r === REMOVE) drop = true;
          else nq.resource = r;
        } else if (k === 'part') {
          if (!Array.isArray(q.part)) {
            drop = true;
            continue;
          }
          const parts = this.parameterList(q.part, depth + 1);
          if (parts.length > 0) nq.part = parts;
        } else if (this.ctx.deidentify === undefined || k === 'name') nq[k] = q[k];
        // A de-identified caller gets no parameter values: they are not judged by type here.
        else this.stats.elementsRemoved++;
      }
      if (!drop) out.push(nq);
    }
    return out;
  }
}

/**
 * Filters one upstream response body with the caller's per-type plans. A single resource the
 * caller may not see comes back as `{kind: 'withheld'}` (the proxy answers 404 or, for a
 * break-glass-eligible caller, 403); in Bundles such resources vanish (counted) and `total` goes.
 * Upstream `_elements` / `_summary` claims are ignored: every resource is filtered anyway.
 */
export function filterResponse(body: unknown, ctx: ResponseContext): FilterResult {
  if (!isObj(body) || typeof body.resourceType !== 'string' || !isResourceType(body.resourceType)) {
    throw bad('response body is not a FHIR resource');
  }
  const f = new Filter(ctx);
  switch (body.resourceType) {
    case 'Bundle':
      return { kind: 'ok', body: f.bundle(body, 0), stats: f.stats };
    case 'Parameters':
      return { kind: 'ok', body: f.parameters(body, 0), stats: f.stats };
    case 'OperationOutcome':
      return { kind: 'ok', body: scrubOperationOutcome(body), stats: f.stats };
  }
  const r = f.resource(body);
  if (r.kind === 'withheld') {
    f.skipped(r.reason);
    return { kind: 'withheld', reason: r.reason, stats: f.stats };
  }
  return { kind: 'ok', body: r.resource, stats: f.stats };
}
