/**
 * De-identification by FHIR data type: a property of the data set (`deidentify:`), applied after
 * the rules' element plan to every element of every released resource, whatever its path:
 * extensions, modifier extensions, primitive-extension siblings (`_birthDate`), contained
 * resources. Where an identifier can hide is decided by the element's data type, not by a list of
 * element names that will always miss one.
 *
 * `safe-harbor` (45 CFR 164.514(b)(2)):
 * - removed: HumanName, ContactPoint, Identifier (also `Reference.identifier`), Attachment,
 *   Signature, Narrative, Annotation, `markdown`, `xhtml`, `base64Binary`, `instant`, `time`,
 *   element ids, `meta.versionId`/`lastUpdated`/`source`, and every `string` except a few
 *   structural ones (`Address.state`/`country`, `Quantity.unit`); `CodeableConcept.text` and
 *   `Coding.display`/`version` with them: free text can hold anything;
 * - uri/url/canonical values survive only where they name a terminology, profile or extension
 *   (Coding.system, Quantity.system, Extension.url, meta.profile, Reference.type) and only on a
 *   known terminology host; a Coding or Extension under any other URL goes whole (a modifier
 *   extension takes the element it modifies with it);
 * - Address: state, country and the 3-digit ZIP (restricted areas `000`);
 * - every date and dateTime (Period, Timing, extensions included) to its year, and any year before
 *   (now - 90) to (now - 90): a year that old implies an age over 89 (birth dates, and any event
 *   the person lived through);
 * - every age over 89 to `>= 90`: Age, and any Quantity, Range or Duration in units of time that
 *   come to more than 89 years; integer or unit-less values of age observations (LOINC);
 * - resource ids and references to pseudonyms (src/redact/pseudonym.ts); contained ids to `c<n>`.
 *
 * `limited-data-set` (164.514(e)): dates, times, ages, city, state and the 5-digit ZIP stay; the
 * direct identifiers go as above (names, street, telecom, identifiers, URLs, photos and documents,
 * free text), and ids are pseudonyms.
 */
import { tailTypeId } from '../fhir/reference.js';
import { elementType, isPrimitiveType, isResourceType, typeElements } from '../fhir/tables.js';
import type { DeidProfile } from '../policy/model.js';
import { pseudonymize } from './pseudonym.js';
import { REMOVE, zip3 } from './transforms.js';
import type { RedactContext } from './types.js';

type Obj = Record<string, unknown>;
type Removed = typeof REMOVE;

/**
 * What a profile does to the element at `path` (dotted element names from the resource root,
 * choice elements expanded, as in the generated search tables):
 * - `keep`: released unchanged (a search or sort on it reveals nothing the caller does not see);
 * - `pseudonym`: ids and references, released as pseudonyms (searchable only by pseudonym, never sortable);
 * - `generalize`: released less precise or only in part (dates, ZIP, ages, URLs): neither searchable nor sortable;
 * - `remove`: never released.
 */
export type Fate = 'keep' | 'pseudonym' | 'generalize' | 'remove';

const UCUM = 'http://unitsofmeasure.org';

/** Terminology hosts whose URLs name code systems, profiles and extensions, never a person. */
const TERMINOLOGY_HOSTS: ReadonlySet<string> = new Set([
  'hl7.org',
  'terminology.hl7.org',
  'fhir.org',
  'loinc.org',
  'snomed.info',
  'unitsofmeasure.org',
  'www.nlm.nih.gov',
  'www.ama-assn.org',
  'www.cms.gov',
  'www.cdc.gov',
  'www.whocc.no',
  'www.who.int',
  'nucc.org',
  'www.nubc.org',
  'www.ncpdp.org',
  'www.ietf.org',
  'tools.ietf.org',
  'ncithesaurus-stage.nci.nih.gov',
  'ncit.nci.nih.gov',
  'www.iana.org',
  'www.iso.org',
  'fdasis.nlm.nih.gov',
  'hl7.org.au',
]);

/** True for a URI naming a well-known terminology, profile or extension (never a person or host of the hospital). */
export function isTerminologyUri(v: unknown): boolean {
  if (typeof v !== 'string' || v.length > 300) return false;
  // HL7's OID branches for code systems: .5 (v3), .6 (external: LOINC, SNOMED, RxNorm, ICD...),
  // .12 and .18 (v2 tables). Not .3 (assigned to organizations: their MRN and account namespaces)
  // nor .4 (identifier systems: SSN, NPI...), nor any organization's own OID.
  if (v.startsWith('urn:oid:')) return /^urn:oid:2\.16\.840\.1\.113883\.(5|6|12|18)(\.[0-9]+)+$/.test(v);
  if (/^urn:(ietf|iso):[A-Za-z0-9:.-]+$/.test(v)) return true;
  const m = /^https?:\/\/([a-z0-9.-]+)(\/[A-Za-z0-9/._-]*)?$/.exec(v);
  if (m === null) return false;
  const host = m[1]!;
  const path = m[2] ?? '';
  // hl7.org/fhir/sid/ names identifier systems (us-ssn, us-npi, us-medicare...) beside a few code
  // systems: only those.
  if (path.startsWith('/fhir/sid/')) return host === 'hl7.org' && SID_CODE_SYSTEMS.has(path.slice('/fhir/sid/'.length));
  if (TERMINOLOGY_HOSTS.has(host)) return true;
  // hl7.org subdomains (build.fhir.org excepted: anyone can publish there).
  return host.endsWith('.hl7.org');
}

/** Code systems (not identifier systems) under http://hl7.org/fhir/sid/. */
const SID_CODE_SYSTEMS: ReadonlySet<string> = new Set(['icd-10', 'icd-10-cm', 'icd-10-pcs', 'icd-9-cm', 'icd-9', 'cvx', 'ndc', 'mvx', 'icd-10-nl', 'icd-10-de', 'icd-10-ca']);

/** LOINC codes whose value is the person's age. */
const AGE_CODES: ReadonlySet<string> = new Set(['30525-0', '21612-7', '29553-5', '21611-9', '21613-5', '35659-2', '63900-5', '46251-5']);

/** Years per UCUM time unit (and the unit strings people write). */
const YEARS_PER: Readonly<Record<string, number>> = {
  a: 1,
  year: 1,
  years: 1,
  yr: 1,
  yrs: 1,
  y: 1,
  mo: 1 / 12,
  month: 1 / 12,
  months: 1 / 12,
  wk: 7 / 365.25,
  week: 7 / 365.25,
  weeks: 7 / 365.25,
  d: 1 / 365.25,
  day: 1 / 365.25,
  days: 1 / 365.25,
  h: 1 / 8766,
  hour: 1 / 8766,
  hours: 1 / 8766,
  min: 1 / 525960,
  s: 1 / 31557600,
};

const AGE_CAP = { value: 90, comparator: '>=', unit: 'a', system: UCUM, code: 'a' } as const;

/** Data types removed whole under both profiles: each is an identifier, or prose, or a file. */
const REMOVED_TYPES: ReadonlySet<string> = new Set([
  'HumanName',
  'ContactPoint',
  'Identifier',
  'Attachment',
  'Signature',
  'Narrative',
  'Annotation',
  'markdown',
  'xhtml',
  'base64Binary',
]);

/** Primitive types that cannot hold a person: released as they are. */
const KEPT_PRIMITIVES: ReadonlySet<string> = new Set(['boolean', 'integer', 'integer64', 'decimal', 'positiveInt', 'unsignedInt', 'code']);

const QUANTITY_TYPES: ReadonlySet<string> = new Set(['Quantity', 'Age', 'Duration', 'Distance', 'Count', 'SimpleQuantity', 'MoneyQuantity']);

/** Strings that name no one: kept. (Everything else of type string is free text and goes.) */
function keptString(owner: string, key: string, profile: DeidProfile): boolean {
  if (QUANTITY_TYPES.has(owner)) return key === 'unit';
  if (owner === 'Address') return key === 'state' || key === 'country' || (profile === 'limited-data-set' && (key === 'city' || key === 'postalCode'));
  return false;
}

/** uri-typed elements that name a terminology, profile or extension. */
function structuralUri(owner: string, key: string): boolean {
  if (key === 'system') return owner === 'Coding' || QUANTITY_TYPES.has(owner);
  if (owner === 'Meta') return key === 'profile';
  if (owner === 'Extension') return key === 'url';
  if (owner === 'Reference') return key === 'type';
  return false;
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

interface State {
  readonly profile: DeidProfile;
  readonly ctx: RedactContext;
  /** Earliest year released (safe harbor): now - 90. */
  readonly floorYear: number;
  /** Contained ids of the resource being walked: old -> new. */
  contained: Map<string, string> | undefined;
  removed: number;
  transformed: number;
  pseudonymized: boolean;
}

/** date/dateTime under safe harbor: the year, no earlier than the floor year; unparseable: gone. */
function dateToYear(v: unknown, st: State): string | Removed {
  if (typeof v !== 'string' || !/^[0-9]{4}/.test(v)) return REMOVE;
  const y = Number(v.slice(0, 4));
  return String(Math.max(y, st.floorYear)).padStart(4, '0');
}

function pseudoRef(ref: string, st: State): string | Removed {
  if (ref === '#') return ref;
  if (ref.charCodeAt(0) === 35 /* # */) {
    const renamed = st.contained?.get(ref.slice(1));
    return renamed === undefined ? REMOVE : `#${renamed}`;
  }
  const key = st.ctx.pseudonymKey;
  if (key === undefined || ref.startsWith('urn:')) return REMOVE;
  const t = tailTypeId(ref);
  if (t === undefined || t.id.includes('?') || t.id.length === 0) return REMOVE;
  const p = pseudonymize(key, t.type, t.id);
  if (p === undefined) return REMOVE;
  st.pseudonymized = true;
  return `${t.type}/${p}`;
}

/**
 * A unit as the YEARS_PER table spells it: case folded, UCUM annotations unwrapped (`{years}`),
 * and the Julian, Gregorian and mean year and month (`a_j`, `a_g`, `mo_j`...), `ANN` and `{age}`
 * as years. Case folding reads the ampere `A` as a year: for an age, over-capping is the safe side.
 */
function timeUnit(unit: string): string {
  const u = unit.trim().replace(/^\{(.*)\}$/, '$1').trim().toLowerCase();
  if (u === 'a_j' || u === 'a_g' || u === 'ann' || u === 'age' || u === 'annum') return 'a';
  if (u === 'mo_j' || u === 'mo_g' || u === 'mo_s') return 'mo';
  return u;
}

/**
 * Years a time quantity comes to, or undefined when it is not one. Where the value is an age
 * (`assumeYears`: the Age type, the value of an age observation), a missing or unknown unit
 * (`1`, `{count}`, a typo) is read as years: an age is never released because its unit was odd.
 */
function yearsOf(q: Obj, assumeYears: boolean): number | undefined {
  if (typeof q.value !== 'number') return undefined;
  const unit = typeof q.code === 'string' && (q.system === undefined || q.system === UCUM) ? q.code : typeof q.unit === 'string' ? q.unit : undefined;
  const per = unit === undefined ? undefined : YEARS_PER[timeUnit(unit)];
  if (per === undefined) return assumeYears ? q.value : undefined;
  return q.value * per;
}

function walkValue(v: unknown, type: string, owner: string, key: string, st: State): unknown {
  if (REMOVED_TYPES.has(type)) return REMOVE;
  const sh = st.profile === 'safe-harbor';
  if (isPrimitiveType(type)) {
    if (KEPT_PRIMITIVES.has(type)) return v;
    switch (type) {
      case 'date':
      case 'dateTime':
        if (!sh) return v;
        return dateToYear(v, st);
      case 'instant':
      case 'time':
        return sh ? REMOVE : v;
      case 'uri':
      case 'url':
      case 'canonical':
        if (owner === 'Reference' && key === 'type') return typeof v === 'string' && (isResourceType(v) || isTerminologyUri(v)) ? v : REMOVE;
        return structuralUri(owner, key) && isTerminologyUri(v) ? v : REMOVE;
      case 'string':
        if (owner === 'Reference' && key === 'reference') return typeof v === 'string' ? pseudoRef(v, st) : REMOVE;
        if (owner === 'Address' && key === 'postalCode' && sh) return zip3(v, 'string', st.ctx);
        return keptString(owner, key, st.profile) ? v : REMOVE;
      default:
        // id, oid, uuid, and anything else: ids are handled where they belong (root, contained).
        return REMOVE;
    }
  }
  if (!isObj(v)) return REMOVE;
  if (type === 'Resource') return walkResource(v, st, true);
  if (type === 'Coding' && v.system !== undefined && !isTerminologyUri(v.system)) return REMOVE;
  if (type === 'Extension' && !isTerminologyUri(v.url)) return REMOVE;
  let out = walkObject(v, type, st);
  if (out === REMOVE) return REMOVE;
  if (QUANTITY_TYPES.has(type)) {
    // Judge the age on the original unit (the text may be all there is), then keep only codes.
    const capped = sh ? capQuantity(out, type === 'Age') : out;
    const coded = unitAsCode(capped);
    if (coded !== out) st.transformed++;
    return Object.keys(coded).length === 0 ? REMOVE : coded;
  }
  if (sh) {
    if (type === 'Range') out = capRange(out);
  }
  return out;
}

/**
 * `unit` is free text ("mmHg per Dr Reyes"): a Quantity keeps it only as its UCUM code, which is a
 * code from a terminology; otherwise it goes.
 */
function unitAsCode(q: Obj): Obj {
  if (!('unit' in q)) return q;
  const ucum = (q.system === UCUM || q.system === undefined) && typeof q.code === 'string' ? q.code : undefined;
  if (q.unit === ucum && q.system === UCUM) return q;
  const out: Obj = { ...q };
  delete out._unit;
  if (ucum !== undefined && q.system === UCUM) out.unit = ucum;
  else delete out.unit;
  return out;
}

function capQuantity(q: Obj, isAge: boolean): Obj {
  const years = yearsOf(q, isAge);
  if (years === undefined || years <= 89) return q;
  return { ...AGE_CAP };
}

function capRange(r: Obj): Obj | Removed {
  const low = isObj(r.low) ? yearsOf(r.low, false) : undefined;
  const high = isObj(r.high) ? yearsOf(r.high, false) : undefined;
  if ((low === undefined || low <= 89) && (high === undefined || high <= 89)) return r;
  const out: Obj = { ...r };
  // `90 and over`: an upper bound above 89 says how far over.
  delete out.high;
  if (low !== undefined && low > 89) out.low = { value: 90, unit: 'a', system: UCUM, code: 'a' };
  return out;
}

/** Walks an object of `type` (a data type or a backbone path); REMOVE when nothing is left. */
function walkObject(obj: Obj, type: string, st: State): Obj | Removed {
  const els = typeElements(type);
  if (els === undefined) return REMOVE;
  const out: Obj = {};
  let kept = 0;
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    let nv: unknown;
    if (key === 'modifierExtension') {
      // An extension that changes the meaning of its element: if any is not understood and
      // kept, the element cannot be released as if it said something else.
      const info = els[key];
      const m = info === undefined ? REMOVE : walkElementValue(v, info, type, key, st);
      if (m === REMOVE || (Array.isArray(v) && Array.isArray(m) && m.length !== v.length)) return REMOVE;
      nv = m;
    } else if (key.charCodeAt(0) === 95 /* _ */) {
      const base = key.slice(1);
      const info = els[base];
      // The sibling follows its primitive: only where the value survives, walked as an Element.
      if (info === undefined || info.types.length !== 1 || !(base in obj)) nv = REMOVE;
      else nv = walkCompanion(v, info.array, st);
    } else {
      const info = els[key];
      nv = info === undefined || key === 'id' ? REMOVE : walkElementValue(v, info, type, key, st);
    }
    if (nv === REMOVE) {
      st.removed++;
      continue;
    }
    if (nv !== v) st.transformed++;
    out[key] = nv;
    kept++;
  }
  // A primitive's sibling goes with it (and `_x` may come before `x` in the input).
  for (const key of Object.keys(out)) {
    if (key.charCodeAt(0) === 95 && out[key.slice(1)] === undefined) {
      delete out[key];
      kept--;
    }
  }
  if (kept === 0) return REMOVE;
  if (type === 'Extension' && Object.keys(out).every((k) => k === 'url')) return REMOVE;
  if (type === 'Observation.component') return capAgeObservation(out, st);
  return out;
}

function walkElementValue(v: unknown, info: { types: readonly string[]; array: boolean }, owner: string, key: string, st: State): unknown {
  if (info.types.length !== 1) return REMOVE;
  const type = info.types[0]!;
  if (info.array) {
    if (!Array.isArray(v)) return REMOVE;
    const out: unknown[] = [];
    for (const item of v) {
      const nv = walkValue(item, type, owner, key, st);
      if (nv === REMOVE) st.removed++;
      else out.push(nv);
    }
    return out.length === 0 ? REMOVE : out;
  }
  if (Array.isArray(v)) return REMOVE;
  return walkValue(v, type, owner, key, st);
}

function walkCompanion(v: unknown, array: boolean, st: State): unknown {
  if (array) {
    if (!Array.isArray(v)) return REMOVE;
    const out = v.map((x) => (isObj(x) ? walkObject(x, 'Element', st) : REMOVE)).map((x) => (x === REMOVE ? null : x));
    return out.every((x) => x === null) ? REMOVE : out;
  }
  return isObj(v) ? walkObject(v, 'Element', st) : REMOVE;
}

/** Age observations (LOINC): an integer, decimal or unit-less quantity value is years. */
function capAgeObservation(o: Obj, st: State): Obj {
  if (st.profile !== 'safe-harbor' || !isAgeCode(o.code)) return o;
  const out: Obj = { ...o };
  for (const k of ['valueInteger', 'valueDecimal'] as const) {
    if (typeof out[k] === 'number' && (out[k] as number) > 89) {
      delete out[k];
      delete out[`_${k}`];
      out.valueQuantity = { ...AGE_CAP };
    }
  }
  if (isObj(out.valueQuantity)) out.valueQuantity = capQuantity(out.valueQuantity, true);
  if (isObj(out.valueRange)) {
    // As capRange, with unit-less or oddly-united bounds read as years.
    const r = out.valueRange;
    const low = isObj(r.low) ? yearsOf(r.low, true) : undefined;
    const high = isObj(r.high) ? yearsOf(r.high, true) : undefined;
    if ((low ?? 0) > 89 || (high ?? 0) > 89) {
      const capped: Obj = {};
      if (low !== undefined && low > 89) capped.low = { value: 90, unit: 'a', system: UCUM, code: 'a' };
      else if (isObj(r.low)) capped.low = r.low;
      out.valueRange = capped;
    }
  }
  // An age as a ratio or a sampled series (origin, factor, a data string) cannot be capped
  // reliably: it goes.
  for (const k of ['valueRatio', 'valueSampledData', 'valuePeriod', 'valueTime', 'valueDateTime'] as const) {
    if (k in out) {
      delete out[k];
      delete out[`_${k}`];
    }
  }
  return out;
}

function isAgeCode(code: unknown): boolean {
  if (!isObj(code) || !Array.isArray(code.coding)) return false;
  return code.coding.some((c) => isObj(c) && c.system === 'http://loinc.org' && typeof c.code === 'string' && AGE_CODES.has(c.code));
}

/** One resource, root or contained: ids to pseudonyms (contained ids renumbered), the rest by type. */
function walkResource(res: Obj, st: State, nested: boolean): Obj | Removed {
  const type = res.resourceType;
  if (typeof type !== 'string' || !isResourceType(type)) return REMOVE;
  const saved = st.contained;
  if (!nested) {
    st.contained = new Map();
    if (Array.isArray(res.contained)) {
      res.contained.forEach((c, i) => {
        if (isObj(c) && typeof c.id === 'string') st.contained!.set(c.id, `c${i}`);
      });
    }
  }
  try {
    const body: Obj = {};
    for (const k of Object.keys(res)) if (k !== 'resourceType' && k !== 'id' && k !== 'contained') body[k] = res[k];
    let walked = Object.keys(body).length === 0 ? {} : walkObject(body, type, st);
    if (walked === REMOVE) walked = {};
    const out: Obj = { resourceType: type };
    if (typeof res.id === 'string') {
      let id: string | undefined;
      if (nested && st.contained !== undefined) id = st.contained.get(res.id);
      else if (!nested && st.ctx.pseudonymKey !== undefined) {
        id = pseudonymize(st.ctx.pseudonymKey, type, res.id);
        if (id !== undefined) st.pseudonymized = true;
      }
      if (id !== undefined) out.id = id;
      else st.removed++;
    }
    Object.assign(out, walked);
    if (!nested && Array.isArray(res.contained)) {
      const contained: Obj[] = [];
      for (const c of res.contained) {
        const w = isObj(c) ? walkResource(c, st, true) : REMOVE;
        if (w === REMOVE) st.removed++;
        else contained.push(w);
      }
      if (contained.length > 0) out.contained = contained;
    }
    return type === 'Observation' ? capAgeObservation(out, st) : out;
  } finally {
    st.contained = saved;
  }
}

const MARKING_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';

/** meta.security says what was done (REDACTED, PSEUDED), as for any redaction; `out` is ours to change. */
function mark(out: Obj, st: State): void {
  const meta: Obj = isObj(out.meta) ? { ...out.meta } : {};
  const security: unknown[] = Array.isArray(meta.security) ? [...meta.security] : [];
  const has = (code: string) => security.some((c) => isObj(c) && c.system === MARKING_SYSTEM && c.code === code);
  if ((st.removed > 0 || st.transformed > 0) && !has('REDACTED')) security.push({ system: MARKING_SYSTEM, code: 'REDACTED' });
  if (st.pseudonymized && !has('PSEUDED')) security.push({ system: MARKING_SYSTEM, code: 'PSEUDED' });
  meta.security = security;
  out.meta = meta;
}

const LEADING = ['resourceType', 'id', 'meta', 'contained'];

/**
 * The root keys in one order whatever the input held: where `meta` or `contained` sat (kept in
 * place, or added at the end when the profile emptied them) would tell what they held before.
 */
function ordered(res: Obj): Obj {
  const out: Obj = {};
  for (const k of LEADING) if (k in res) out[k] = res[k];
  for (const k of Object.keys(res)) if (!(k in out)) out[k] = res[k];
  return out;
}

export interface DeidResult {
  readonly resource: Obj;
  readonly removed: number;
  readonly transformed: number;
  readonly pseudonymized: boolean;
}

/**
 * Applies `profile` to one (already redacted) resource without mutating it. The result is a new
 * object; the caller marks it (meta.security REDACTED / PSEUDED) as for any redaction.
 */
export function deidentifyResource(resource: Obj, profile: DeidProfile, ctx: RedactContext): DeidResult {
  const st: State = {
    profile,
    ctx,
    floorYear: ctx.now().getUTCFullYear() - 90,
    contained: undefined,
    removed: 0,
    transformed: 0,
    pseudonymized: false,
  };
  const walked = walkResource(resource, st, false);
  const out = walked === REMOVE ? { resourceType: resource.resourceType } : walked;
  if (st.removed > 0 || st.transformed > 0 || st.pseudonymized) mark(out, st);
  return {
    resource: ordered(out),
    removed: st.removed,
    transformed: st.transformed,
    pseudonymized: st.pseudonymized,
  };
}

const FATE_ORDER: Readonly<Record<Fate, number>> = { keep: 0, pseudonym: 1, generalize: 2, remove: 3 };

/** The worse of two fates (a search over several paths is judged by its worst). */
export function worseFate(a: Fate, b: Fate): Fate {
  return FATE_ORDER[a] >= FATE_ORDER[b] ? a : b;
}

/** The fate of a value of `type` held at `owner.key`, before looking inside it. */
function slotFate(profile: DeidProfile, type: string, owner: string, key: string): Fate {
  const sh = profile === 'safe-harbor';
  if (REMOVED_TYPES.has(type)) return 'remove';
  if (KEPT_PRIMITIVES.has(type)) return 'keep';
  switch (type) {
    case 'date':
    case 'dateTime':
    case 'Period':
    case 'Timing':
      return sh ? 'generalize' : 'keep';
    case 'instant':
    case 'time':
      return sh ? 'remove' : 'keep';
    case 'uri':
    case 'url':
    case 'canonical':
      return structuralUri(owner, key) ? 'generalize' : 'remove';
    case 'string':
      if (owner === 'Reference' && key === 'reference') return 'pseudonym';
      if (owner === 'Address' && key === 'postalCode' && sh) return 'generalize';
      return keptString(owner, key, profile) ? 'keep' : 'remove';
    case 'Reference':
      return 'pseudonym';
    case 'Address':
    case 'Extension':
    case 'Meta':
      return 'generalize';
    case 'CodeableConcept':
    case 'Coding':
      // Codings under unknown systems, displays and texts go; codes on terminology systems stay.
      return 'keep';
    default:
      if (QUANTITY_TYPES.has(type) || type === 'Range' || type === 'Ratio' || type === 'SampledData') return sh ? 'generalize' : 'keep';
      return isPrimitiveType(type) ? 'remove' : 'generalize';
  }
}

/**
 * What `profile` does to the element at `path` of `resourceType` (see Fate). Unknown paths,
 * elements with more than one type and element ids are `remove`.
 */
export function pathFate(profile: DeidProfile, resourceType: string, path: string): Fate {
  if (path === 'id') return 'pseudonym';
  const parts = path.split('.');
  let owner = resourceType;
  let fate: Fate = 'keep';
  for (let i = 0; i < parts.length; i++) {
    const key = parts[i]!;
    const info = elementType(owner, key);
    if (info === undefined || info.types.length !== 1 || key === 'id') return 'remove';
    const type = info.types[0]!;
    const f = slotFate(profile, type, owner, key);
    if (f === 'remove') return 'remove';
    // Inside a value, the leaf decides; the container's own fate only says "something in here changes".
    if (i === parts.length - 1) fate = worseFate(fate, f);
    else if (f === 'pseudonym' && type === 'Reference') {
      const rest = parts.slice(i + 1).join('.');
      return rest === 'reference' ? 'pseudonym' : rest === 'type' ? 'keep' : 'remove';
    }
    owner = type;
  }
  return fate;
}

/** What `profile` does to a value of `type` at `owner.key`, in words (explain). */
function typeAction(profile: DeidProfile, type: string, owner: string, key: string): string {
  const sh = profile === 'safe-harbor';
  if (owner !== 'Reference' && key === 'id') return owner === '' ? 'pseudonym' : 'removed (element id)';
  if (REMOVED_TYPES.has(type)) return `removed (${type})`;
  switch (type) {
    case 'date':
    case 'dateTime':
    case 'Period':
    case 'Timing':
      return sh ? 'year only, none before now - 90' : 'kept';
    case 'instant':
    case 'time':
      return sh ? `removed (${type})` : 'kept';
    case 'Reference':
      return 'reference to a pseudonym; identifier and display removed';
    case 'Address':
      return sh ? 'state, country and 3-digit ZIP only (restricted areas 000)' : 'city, state, ZIP and country only';
    case 'CodeableConcept':
      return 'codings on terminology systems (system, code); text and display removed';
    case 'Coding':
      return 'system and code on a terminology system; display removed';
    case 'Extension':
      return 'only extensions defined on terminology hosts, values by type';
    case 'Meta':
      return sh ? 'security labels, tags and terminology profiles; versionId, lastUpdated, source removed' : 'versionId and source removed';
    case 'Resource':
      return 'each by its own type; ids renumbered';
    case 'string':
      return keptString(owner, key, profile) ? 'kept' : 'removed (free text)';
    case 'uri':
    case 'url':
    case 'canonical':
      return structuralUri(owner, key) ? 'terminology URLs only' : `removed (${type})`;
  }
  if (QUANTITY_TYPES.has(type) || type === 'Range') return sh ? 'ages over 89 years become >= 90' : 'kept';
  if (isPrimitiveType(type)) return KEPT_PRIMITIVES.has(type) ? 'kept' : `removed (${type})`;
  return 'each element by its data type';
}

/**
 * For `explain`: the profile's action on each top-level element of `resourceType` in `names`
 * (choice elements by their base name, e.g. `deceased[x]`), as `[element, action]`.
 */
export function describeProfile(profile: DeidProfile, resourceType: string, names: readonly string[]): Array<[string, string]> {
  const els = typeElements(resourceType) ?? {};
  const out: Array<[string, string]> = [];
  for (const name of names) {
    if (name === 'id') {
      out.push([`${resourceType}.id`, 'pseudonym (contained resources: c0, c1...)']);
      continue;
    }
    const choices = Object.entries(els).filter(([k, i]) => k === name || i.choice === name);
    const action = ([k, i]: [string, { types: readonly string[] }]) => (i.types.length === 1 ? typeAction(profile, i.types[0]!, resourceType, k) : 'removed');
    const text = choices.length === 0 ? 'removed' : choices.length === 1 ? action(choices[0]!) : choices.map((c) => `${c[0]}: ${action(c)}`).join('; ');
    out.push([`${resourceType}.${name}`, text]);
  }
  return out;
}

/** The data type of the element at `path` (dotted, choice names expanded), or undefined. */
export function pathType(resourceType: string, path: string): string | undefined {
  let owner = resourceType;
  for (const key of path.split('.')) {
    const info = elementType(owner, key);
    if (info === undefined || info.types.length !== 1) return undefined;
    owner = info.types[0]!;
  }
  return owner;
}
