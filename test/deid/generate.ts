/**
 * Generated FHIR R4 resources with planted identifiers, for the Safe Harbor tests.
 *
 * Resources are built by walking the generated R4 type tables (src/fhir/tables.ts) to a bounded
 * depth and filling a random subset of elements by data type: every name, identifier, phone,
 * address, date, age, URL and free text is a planted, unique value, listed in `seeds` (strings) or
 * in `planted` (dates, times, ages, old years, URLs, IPs: what the scanner finds by pattern).
 *
 * `code` elements get valid-looking codes and never a planted identifier: the research data set
 * releases codes unchanged (they are searchable), so a code holding an identifier would be a defect
 * of the data, not of the gateway.
 */
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import type { Resource } from 'fhir/r4.js';
import { aliceFirstVersion, demoResources } from '../../src/demo/data.js';
import { type ElementInfo, isPrimitiveType, isResourceType, typeElements } from '../../src/fhir/tables.js';

type Obj = Record<string, unknown>;

/** The types the researcher's data set grants (config/policy.yaml, data set `research`). */
export const RESEARCH_TYPES = ['Patient', 'Observation', 'Condition', 'Procedure', 'Encounter'] as const;
/** A broad default set: the research types and common clinical, administrative and financial ones. */
export const DEFAULT_TYPES: readonly string[] = [
  ...RESEARCH_TYPES,
  'DiagnosticReport', 'MedicationRequest', 'Immunization', 'AllergyIntolerance', 'Practitioner', 'Organization',
  'Location', 'DocumentReference', 'CarePlan', 'Claim', 'Coverage', 'QuestionnaireResponse', 'RelatedPerson',
  'Specimen', 'ServiceRequest',
];
/** Types generated as contained resources. */
const CONTAINED_TYPES = ['Practitioner', 'Patient', 'Specimen', 'Organization', 'Medication', 'Location', 'RelatedPerson'];

/** What the scanner finds by pattern rather than by seed. */
export interface Planted {
  /** Dates finer than a year, exactly as planted (YYYY-MM-DD, instants, 3/14/1984...). */
  readonly dates: string[];
  /** `time` values (hh:mm:ss). */
  readonly times: string[];
  /** Ages over 89, described (`93 a`, `valueInteger 95`). */
  readonly ages: string[];
  /** Whole-value years before now - 90 (`1921`). */
  readonly oldYears: string[];
  /** URLs on planted hosts (and on IPs). */
  readonly urls: string[];
  readonly ips: string[];
}

export interface PlantedResource {
  readonly resource: Resource;
  /** Every planted identifying string and the real ids (the resource's, its contained ones'). */
  readonly seeds: string[];
  readonly planted: Planted;
}

export interface PlantedCorpus {
  readonly resources: Resource[];
  readonly seeds: string[];
  readonly planted: Planted;
}

export interface GenerateOptions {
  /** References (`Type/id`) to existing resources that generated references may point at. */
  readonly refs?: readonly string[];
  /** The clock for "older than 90 years" (default: now). */
  readonly now?: Date;
}

/** One resource of one of `types` (default DEFAULT_TYPES) with its plants. */
export function arbResourceWithPlants(types: readonly string[] = DEFAULT_TYPES, opts: GenerateOptions = {}): fc.Arbitrary<PlantedResource> {
  for (const t of types) if (!isResourceType(t)) throw new Error(`not an R4 resource type: ${t}`);
  return fc.gen().map((g) => {
    const ctx = new Ctx(g, opts.refs ?? [], opts.now ?? new Date());
    const type = ctx.pick(types);
    const resource = buildResource(ctx, type, ctx.id(), true);
    return { resource: resource as unknown as Resource, seeds: [...ctx.seeds], planted: ctx.planted };
  });
}

/**
 * `count` resources that reference each other (and `opts.refs`) by their real ids: Patients first,
 * then the other types in turn, so that every type appears when count >= types.length.
 */
export function arbPlantedCorpus(count: number, types: readonly string[] = RESEARCH_TYPES, opts: GenerateOptions = {}): fc.Arbitrary<PlantedCorpus> {
  const ordered = [...new Set(types.includes('Patient') ? ['Patient', ...types] : types)];
  return fc.gen().map((g) => {
    const ctx = new Ctx(g, [], opts.now ?? new Date());
    const plan = Array.from({ length: count }, (_, i) => ({ type: ordered[i % ordered.length]!, id: ctx.id() }));
    ctx.refs = [...(opts.refs ?? []), ...plan.map((p) => `${p.type}/${p.id}`)];
    const resources = plan.map((p) => buildResource(ctx, p.type, p.id, true) as unknown as Resource);
    return { resources, seeds: [...ctx.seeds], planted: ctx.planted };
  });
}

// ---------------------------------------------------------------------------------------------
// Drawing values

const UCUM = 'http://unitsofmeasure.org';
const LOINC = 'http://loinc.org';
const SNOMED = 'http://snomed.info/sct';
const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
/** Codings on terminology hosts (their system survives de-identification). */
const CODINGS: ReadonlyArray<{ system: string; code: string }> = [
  { system: LOINC, code: '8480-6' },
  { system: LOINC, code: '8867-4' },
  { system: LOINC, code: '29463-7' },
  { system: LOINC, code: '2345-7' },
  { system: SNOMED, code: '38341003' },
  { system: SNOMED, code: '44054006' },
  { system: SNOMED, code: '73761001' },
  { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' },
  { system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' },
  { system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '314076' },
  { system: 'urn:oid:2.16.840.1.113883.6.96', code: '22298006' },
];
/** Age observations (LOINC) the profile and the scanner know. */
const AGE_CODES = ['30525-0', '21612-7', '29553-5', '21611-9'];
/** ZIP3 prefixes: ordinary ones and Safe Harbor restricted ones (036, 890, 059, 102, 203). */
const ZIP3 = ['021', '024', '606', '100', '941', '036', '890', '059', '102', '203'];
const TIME_UNITS = [
  { code: 'a', unit: 'years', perYear: 1 },
  { code: 'mo', unit: 'months', perYear: 12 },
  { code: 'wk', unit: 'weeks', perYear: 365.25 / 7 },
  { code: 'd', unit: 'days', perYear: 365.25 },
] as const;
const PLAIN_UNITS = [
  { code: 'mg/dL', unit: 'mg/dL' },
  { code: 'kg', unit: 'kg' },
  { code: 'mm[Hg]', unit: 'mmHg' },
  { code: '%', unit: '%' },
] as const;
const MONTH_NAMES = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/**
 * Types the walk never generates: Meta (server-owned; a few meta elements are set apart at the top
 * level), ElementDefinition (only in conformance resources), Resource (only as `contained`, built
 * apart) and the abstract bases.
 */
const SKIP_TYPES = new Set(['Meta', 'ElementDefinition', 'Resource', 'BackboneElement', 'Element']);
/** The generic walk's maximum nesting of complex and backbone elements below the resource. */
const MAX_DEPTH = 3;

/** Uniform draws: fast-check's bias towards small and extreme values would make tokens like `aaaazzzz`. */
const uniform = (max: number) => fc.noBias(fc.nat({ max }));

const pad = (n: number, w = 2) => String(n).padStart(w, '0');
const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);

class Ctx {
  readonly seeds = new Set<string>();
  readonly planted: Planted = { dates: [], times: [], ages: [], oldYears: [], urls: [], ips: [] };
  private readonly tokens = new Set<string>();

  constructor(
    private readonly g: fc.GeneratorValue,
    public refs: readonly string[],
    readonly now: Date,
  ) {}

  int(min: number, max: number): number {
    return this.g(fc.integer, { min, max });
  }
  chance(p: number): boolean {
    return this.int(0, 999) < p * 1000;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }
  some<T>(min: number, max: number, f: () => T | undefined): T[] {
    const out: T[] = [];
    const n = this.int(min, max);
    for (let i = 0; i < n; i++) {
      const v = f();
      if (v !== undefined) out.push(v);
    }
    return out;
  }

  /** A unique lowercase token of letters only (no digits: never mistaken for a date, IP or code). */
  token(length = 10): string {
    let t = '';
    while (t.length < length) {
      let n = this.g(uniform, 26 ** 5 - 1);
      for (let i = 0; i < 5; i++, n = Math.floor(n / 26)) t += String.fromCharCode(97 + (n % 26));
    }
    t = t.slice(0, length);
    while (this.tokens.has(t)) t += 'q';
    this.tokens.add(t);
    return t;
  }
  seed(v: string): string {
    this.seeds.add(v);
    return v;
  }
  /** A planted resource id (unique, 12 letters, a seed). */
  id(): string {
    return this.seed(this.token(12));
  }
  name(): string {
    return this.seed(cap(this.token(9)));
  }

  // Identifiers and contact data.
  ssn(): string {
    return this.seed(`9${this.int(10, 99)}-${pad(this.int(1, 99))}-${this.int(1000, 9999)}`);
  }
  mrn(): string {
    return this.seed(`MRN-${this.token(8).toUpperCase()}`);
  }
  phone(): string {
    return this.seed(`${this.pick(['617', '508', '413', '978'])}-555-${this.int(1000, 9999)}`);
  }
  email(): string {
    return this.seed(`${this.seed(this.token(8))}.${this.token(4)}@${this.seed(this.token(8))}.example.net`);
  }
  street(): string {
    return this.seed(`${this.int(1, 999)} ${this.name()} Street`);
  }
  zip(): string {
    return this.seed(`${this.pick(ZIP3)}${pad(this.int(0, 99))}`);
  }
  ip(): string {
    const ip = `${this.pick([10, 172, 192, 203])}.${this.int(0, 255)}.${this.int(0, 255)}.${this.int(1, 254)}`;
    this.planted.ips.push(ip);
    return ip;
  }
  /** A URL on a planted host (or on a planted IP). */
  url(path = 'doc'): string {
    const url = this.chance(0.2) ? `http://${this.ip()}/${this.seed(this.token(8))}` : `https://${this.seed(this.token(10))}.example.com/${path}/${this.seed(this.token(8))}`;
    this.planted.urls.push(url);
    return url;
  }

  // Dates, times, ages.
  private year(old: boolean): number {
    const y = this.now.getUTCFullYear();
    return old ? this.int(1890, y - 91) : this.int(y - 80, y - 1);
  }
  date(old = this.chance(0.35)): string {
    const d = `${this.year(old)}-${pad(this.int(1, 12))}-${pad(this.int(1, 28))}`;
    this.planted.dates.push(d);
    return d;
  }
  dateTime(): string {
    if (this.chance(0.3)) return this.date();
    const d = `${this.year(this.chance(0.3))}-${pad(this.int(1, 12))}-${pad(this.int(1, 28))}T${pad(this.int(0, 23))}:${pad(this.int(0, 59))}:${pad(this.int(0, 59))}${this.pick(['Z', '-05:00', '+01:00'])}`;
    this.planted.dates.push(d);
    return d;
  }
  instant(): string {
    const d = `${this.year(this.chance(0.2))}-${pad(this.int(1, 12))}-${pad(this.int(1, 28))}T${pad(this.int(0, 23))}:${pad(this.int(0, 59))}:${pad(this.int(0, 59))}.${pad(this.int(0, 999), 3)}Z`;
    this.planted.dates.push(d);
    return d;
  }
  /** A date or dateTime element's value: mostly a full date, sometimes only a year (an old one is a plant). */
  dateElement(type: 'date' | 'dateTime'): string {
    if (this.chance(0.1)) {
      const y = String(this.year(true));
      this.planted.oldYears.push(y);
      return y;
    }
    return type === 'date' ? this.date() : this.dateTime();
  }
  time(): string {
    const t = `${pad(this.int(0, 23))}:${pad(this.int(0, 59))}:${pad(this.int(0, 59))}`;
    this.planted.times.push(t);
    return t;
  }
  /** A quantity in units of time; `old` makes it 90 years or more (a planted age). */
  timeQuantity(old = this.chance(0.5)): Obj {
    const u = this.pick(TIME_UNITS);
    // From 91: a bare `low` of exactly 90 years (Observation.referenceRange.low) reads as the ">= 90" aggregate.
    const years = old ? this.int(91, 112) : this.int(1, 80);
    // Rounded up: 90 years in weeks must not round down to 89.99 years.
    const value = Math.ceil(years * u.perYear);
    if (old) this.planted.ages.push(`${value} ${u.code}`);
    return { value, unit: u.unit, system: UCUM, code: u.code };
  }
  age(): Obj {
    if (this.chance(0.6)) {
      const value = this.int(90, 110);
      this.planted.ages.push(`${value} a`);
      return { value, unit: 'years', system: UCUM, code: 'a' };
    }
    return { value: this.int(1, 85), unit: 'years', system: UCUM, code: 'a' };
  }

  /** Free text that repeats identifiers, as notes and narrative do. */
  text(): string {
    // Every seed drawn here ends up in the text (a seed that is not in the resource would make the
    // scanner's own test fail for nothing).
    const who = () => `${this.name()} ${this.name()}`;
    switch (this.int(0, 7)) {
      case 0:
        return `${who()} seen at ${this.street()}, ${this.name()}`;
      case 1:
        return `Call ${this.phone()} or write to ${this.email()}`;
      case 2:
        return `Patient ${who()} (MRN ${this.mrn()}) born ${this.date()}`;
      case 3:
        return `Portal login by ${who()} from ${this.ip()}`;
      case 4:
        return `Report for ${who()}: ${this.url()}`;
      case 5: {
        const d = `${this.int(1, 12)}/${this.int(1, 28)}/${this.year(this.chance(0.5))}`;
        this.planted.dates.push(d);
        return `${who()} admitted ${d}`;
      }
      case 6: {
        const d = `${this.int(1, 28)} ${this.pick(MONTH_NAMES)} ${this.year(this.chance(0.5))}`;
        this.planted.dates.push(d);
        return `Discharged ${d}, SSN ${this.ssn()}`;
      }
      default:
        return who();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Data types

function humanName(c: Ctx): Obj {
  const family = c.name();
  const given = c.some(1, 2, () => c.name());
  return {
    use: c.pick(['official', 'usual', 'maiden']),
    family,
    given,
    ...(c.chance(0.1) ? { prefix: ['Dr.'] } : {}),
    ...(c.chance(0.3) ? { text: `${given.join(' ')} ${family}` } : {}),
    ...(c.chance(0.1) ? { period: period(c) } : {}),
  };
}

function identifier(c: Ctx): Obj {
  switch (c.int(0, 2)) {
    case 0:
      return { use: 'official', type: { coding: [{ system: V2_0203, code: 'SS' }] }, system: 'http://hl7.org/fhir/sid/us-ssn', value: c.ssn() };
    case 1:
      return {
        use: 'usual',
        type: { coding: [{ system: V2_0203, code: 'MR' }] },
        system: 'urn:oid:2.16.840.1.113883.3.9999.1.1',
        value: c.mrn(),
        ...(c.chance(0.3) ? { assigner: { display: `${c.name()} Clinic` } } : {}),
      };
    default:
      return { system: c.url('ids'), value: c.seed(c.token(10)), ...(c.chance(0.2) ? { period: period(c) } : {}) };
  }
}

function contactPoint(c: Ctx): Obj {
  switch (c.int(0, 3)) {
    case 0:
    case 1:
      return { system: 'phone', value: c.phone(), use: c.pick(['home', 'work', 'mobile']) };
    case 2:
      return { system: 'email', value: c.email() };
    default:
      return { system: 'url', value: c.url('home'), ...(c.chance(0.3) ? { period: period(c) } : {}) };
  }
}

function address(c: Ctx): Obj {
  const line = [c.street()];
  const city = c.name();
  const zip = c.zip();
  return {
    use: c.pick(['home', 'work', 'temp']),
    line,
    city,
    ...(c.chance(0.3) ? { district: c.seed(`${c.name()} County`) } : {}),
    state: 'MA',
    postalCode: zip,
    country: 'US',
    ...(c.chance(0.3) ? { text: `${line[0]}, ${city}, MA ${zip}` } : {}),
    ...(c.chance(0.1) ? { period: period(c) } : {}),
  };
}

function period(c: Ctx): Obj {
  return c.chance(0.2) ? { start: c.dateTime() } : { start: c.dateTime(), end: c.dateTime() };
}

function timing(c: Ctx): Obj {
  const out: Obj = {};
  if (c.chance(0.6)) out.event = c.some(1, 2, () => c.dateTime());
  if (c.chance(0.7) || !out.event) {
    out.repeat = {
      ...(c.chance(0.5) ? { boundsPeriod: period(c) } : { boundsDuration: c.timeQuantity() }),
      frequency: c.int(1, 3),
      period: 1,
      periodUnit: 'd',
      ...(c.chance(0.5) ? { timeOfDay: [c.time()] } : {}),
    };
  }
  if (c.chance(0.2)) out.code = codeableConcept(c);
  return out;
}

function quantity(c: Ctx, type: string): Obj {
  switch (type) {
    case 'Age':
      return c.age();
    case 'Duration':
      return c.timeQuantity();
    case 'Count':
      return { value: c.int(1, 20), system: UCUM, code: '1' };
    case 'Distance':
      return { value: c.int(1, 200), unit: 'km', system: UCUM, code: 'km' };
    case 'Money':
      return { value: c.int(1, 2000), currency: 'USD' };
    default: {
      if (c.chance(0.2)) return c.timeQuantity();
      const u = c.pick(PLAIN_UNITS);
      return { value: c.int(1, 2000) / 10, unit: u.unit, system: UCUM, code: u.code };
    }
  }
}

function range(c: Ctx): Obj {
  if (c.chance(0.4)) {
    const old = c.chance(0.5);
    return { low: c.timeQuantity(false), high: c.timeQuantity(old) };
  }
  return { low: quantity(c, 'Quantity'), high: quantity(c, 'Quantity') };
}

function coding(c: Ctx): Obj {
  const out: Obj = c.chance(0.12) ? { system: c.url('CodeSystem'), code: 'x1' } : { ...c.pick(CODINGS) };
  if (c.chance(0.5)) out.display = c.text();
  if (c.chance(0.1)) out.userSelected = true;
  return out;
}

function codeableConcept(c: Ctx): Obj {
  return { coding: c.some(1, 2, () => coding(c)), ...(c.chance(0.5) ? { text: c.text() } : {}) };
}

function reference(c: Ctx, path: string): Obj {
  const out: Obj = {};
  const patientish = /\.(subject|patient|beneficiary)$/.test(path);
  const pool = patientish ? c.refs.filter((r) => r.startsWith('Patient/')) : c.refs;
  const kind = c.int(0, 9);
  if (kind <= 5 && pool.length > 0) out.reference = c.pick(pool);
  else if (kind <= 7) out.reference = `${patientish ? 'Patient' : c.pick(['Practitioner', 'Organization', 'Location', 'Patient'])}/${c.id()}`;
  else if (kind === 8) out.reference = `${c.url('fhir/Patient')}`;
  if (c.chance(0.5)) out.display = `${c.name()} ${c.name()}`;
  if (kind === 9 || c.chance(0.15)) out.identifier = identifier(c);
  if (c.chance(0.1) && typeof out.reference === 'string' && !out.reference.includes('://')) out.type = out.reference.split('/')[0];
  return out;
}

function attachment(c: Ctx): Obj {
  const text = c.text();
  return {
    contentType: 'text/plain',
    language: 'en',
    data: c.seed(Buffer.from(text, 'utf8').toString('base64')),
    ...(c.chance(0.5) ? { url: c.url('files') } : {}),
    size: Buffer.byteLength(text),
    title: c.text(),
    creation: c.dateTime(),
  };
}

function narrative(c: Ctx): Obj {
  return { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml"><p>${c.text()}</p><p>${c.text()}</p></div>` };
}

function annotation(c: Ctx): Obj {
  return {
    ...(c.chance(0.5) ? { authorString: `${c.name()} ${c.name()}` } : { authorReference: reference(c, 'Annotation.authorReference') }),
    time: c.dateTime(),
    text: c.text(),
  };
}

function signature(c: Ctx): Obj {
  return {
    type: [{ system: 'urn:iso-astm:E1762-95:2013', code: '1.2.840.10065.1.12.1.1' }],
    when: c.instant(),
    who: reference(c, 'Signature.who'),
    sigFormat: 'application/jose',
    data: c.seed(Buffer.from(c.text(), 'utf8').toString('base64')),
  };
}

/** Extension value[x] types, from the table (Meta excepted). */
const EXTENSION_VALUES: ReadonlyArray<[string, string]> = Object.entries(typeElements('Extension') ?? {})
  .filter(([, info]) => info.choice === 'value[x]' && !SKIP_TYPES.has(info.types[0]!))
  .map(([name, info]) => [name, info.types[0]!]);

/**
 * An extension: mostly under a planted hospital URL (removed whole by the profile), sometimes a
 * well-known HL7 one (kept, its value de-identified by type); a value of any type, or nested extensions.
 */
function extension(c: Ctx, depth: number): Obj {
  const k = c.int(0, 9);
  if (k === 8) return { url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace', valueAddress: address(c) };
  if (k === 9) {
    if (c.chance(0.5)) return { url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName', valueString: c.name() };
    // A complex HL7 extension whose parts have relative urls, one of them free text.
    return {
      url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race',
      extension: [
        { url: 'ombCategory', valueCoding: { system: 'urn:oid:2.16.840.1.113883.6.238', code: '2106-3' } },
        { url: 'text', valueString: c.text() },
      ],
    };
  }
  const url = `http://hospital.example.org/ext/${c.seed(c.token(10))}`;
  c.planted.urls.push(url);
  if (k === 7 && depth < MAX_DEPTH) return { url, extension: c.some(1, 2, () => extension(c, depth + 1)) };
  const [name, type] = c.pick(EXTENSION_VALUES);
  const value = valueOfType(c, type, `Extension.${name}`, depth + 1);
  return value === undefined ? { url, valueString: c.text() } : { url, [name]: value };
}

// ---------------------------------------------------------------------------------------------
// The walk

function codeFor(c: Ctx, path: string): string {
  const name = path.slice(path.lastIndexOf('.') + 1);
  switch (name) {
    case 'gender':
      return c.pick(['female', 'male', 'other', 'unknown']);
    case 'language':
      return 'en-US';
    case 'contentType':
      return 'text/plain';
    case 'currency':
      return 'USD';
    default:
      return c.pick(['active', 'completed', 'final', 'unknown', 'other', 'routine']);
  }
}

/** A value of data type `type` for the element at `path`, or undefined to leave it out. */
function valueOfType(c: Ctx, type: string, path: string, depth: number): unknown {
  switch (type) {
    case 'string':
      // Element ids are strings too: a token, not text.
      return path.endsWith('.id') ? c.seed(c.token(10)) : c.text();
    case 'markdown':
      return c.text();
    case 'code':
      return codeFor(c, path);
    case 'boolean':
      return c.chance(0.5);
    case 'integer':
    case 'unsignedInt':
    case 'positiveInt':
      return c.int(1, 20);
    case 'decimal':
      return c.int(1, 2000) / 10;
    case 'date':
    case 'dateTime':
      return c.dateElement(type);
    case 'instant':
      return c.instant();
    case 'time':
      return c.time();
    case 'uri':
    case 'url':
      return c.url();
    case 'canonical':
      return c.chance(0.2) ? 'http://hl7.org/fhir/StructureDefinition/Observation' : c.url('StructureDefinition');
    case 'oid':
      return `urn:oid:2.16.840.1.113883.${c.int(1, 99)}.${c.int(1, 999)}`;
    case 'uuid': {
      const hex = Buffer.from(c.token(16)).toString('hex').slice(0, 32);
      return `urn:uuid:${c.seed(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`)}`;
    }
    case 'id':
      return c.seed(c.token(10));
    case 'base64Binary':
      return c.seed(Buffer.from(c.text(), 'utf8').toString('base64'));
    case 'xhtml':
      return narrative(c).div;
    case 'HumanName':
      return humanName(c);
    case 'Identifier':
      return identifier(c);
    case 'ContactPoint':
      return contactPoint(c);
    case 'Address':
      return address(c);
    case 'Period':
      return period(c);
    case 'Timing':
      return timing(c);
    case 'Age':
    case 'Duration':
    case 'Count':
    case 'Distance':
    case 'Money':
    case 'Quantity':
      return quantity(c, type);
    case 'Range':
      return range(c);
    case 'Coding':
      return coding(c);
    case 'CodeableConcept':
      return codeableConcept(c);
    case 'Reference':
      return reference(c, path);
    case 'Attachment':
      return attachment(c);
    case 'Narrative':
      return narrative(c);
    case 'Annotation':
      return annotation(c);
    case 'Signature':
      return signature(c);
    case 'Extension':
      return extension(c, depth);
    default:
      if (SKIP_TYPES.has(type) || depth >= MAX_DEPTH) return undefined;
      // Other complex types (Ratio, SampledData, Dosage, ContactDetail...) and backbone elements, one level down.
      return elements(c, type, depth + 1, false);
  }
}

/** Fill probability by depth: the deeper, the sparser (keeps resources small and the walk bounded). */
const FILL = [0.45, 0.35, 0.25, 0.15];

function fill(c: Ctx, info: ElementInfo, path: string, depth: number): unknown {
  const type = c.pick(info.types);
  if (!info.array) return valueOfType(c, type, path, depth);
  const items = c.some(1, 2, () => valueOfType(c, type, path, depth));
  return items.length > 0 ? items : undefined;
}

/** A primitive-extension sibling (`_birthDate`) for the primitive value `v`. */
function primitiveExtension(c: Ctx, v: unknown, depth: number): unknown {
  const one = () => ({ extension: [extension(c, depth + 1)] });
  return Array.isArray(v) ? v.map((_, i) => (i === 0 || c.chance(0.5) ? one() : null)) : one();
}

/**
 * The elements of `typePath` (a complex type or backbone path, or a resource when `resource`), a
 * random subset filled by type. Choice elements get at most one of their types.
 */
function elements(c: Ctx, typePath: string, depth: number, resource: boolean, preset: Obj = {}): Obj | undefined {
  const table = typeElements(typePath);
  if (!table) return undefined;
  const p = FILL[depth] ?? 0.1;
  const out: Obj = { ...preset };
  const choices = new Map<string, string[]>();
  for (const [name, info] of Object.entries(table)) {
    if (name.endsWith('[x]')) continue;
    if (out[name] !== undefined) continue;
    if (info.choice) {
      choices.set(info.choice, [...(choices.get(info.choice) ?? []), name]);
      continue;
    }
    // Handled apart: ids, meta, contained, narrative and extensions.
    if (['meta', 'contained', 'extension', 'modifierExtension'].includes(name)) continue;
    if (resource && (name === 'id' || name === 'text')) continue;
    // Element ids (`string`) are rare in real data: planted now and then.
    if (name === 'id' && !c.chance(0.05)) continue;
    if (!c.chance(p)) continue;
    const v = fill(c, info, `${typePath}.${name}`, depth);
    if (v === undefined) continue;
    out[name] = v;
    if (info.types.every(isPrimitiveType) && c.chance(0.1)) out[`_${name}`] = primitiveExtension(c, v, depth);
  }
  for (const names of choices.values()) {
    if (names.some((n) => out[n] !== undefined) || !c.chance(p)) continue;
    const name = c.pick(names);
    const v = fill(c, table[name]!, `${typePath}.${name}`, depth);
    if (v !== undefined) out[name] = v;
  }
  if (table.extension && out.extension === undefined && c.chance(depth === 0 ? 0.5 : 0.15)) out.extension = c.some(1, 2, () => extension(c, depth));
  if (table.modifierExtension && c.chance(0.06)) out.modifierExtension = [extension(c, depth)];
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Plants every type gets now and then, whatever the random walk would choose: set before the walk,
 * which leaves them (and the other types of a choice element set here) alone.
 */
function plantByType(c: Ctx, type: string): Obj {
  const r: Obj = {};
  const setChoice = (_base: string, name: string, value: unknown) => {
    r[name] = value;
  };
  const patients = c.refs.filter((x) => x.startsWith('Patient/'));
  if (type !== 'Patient' && typeElements(type)?.subject && patients.length > 0 && c.chance(0.85)) {
    r.subject = { reference: c.pick(patients), ...(c.chance(0.5) ? { display: `${c.name()} ${c.name()}` } : {}) };
  }
  switch (type) {
    case 'Patient':
      if (c.chance(0.9)) r.name = [humanName(c)];
      if (c.chance(0.9)) r.identifier = [identifier(c), identifier(c)];
      if (c.chance(0.8)) r.telecom = c.some(1, 2, () => contactPoint(c));
      if (c.chance(0.8)) r.address = [address(c)];
      r.birthDate = c.chance(0.1) ? c.dateElement('date') : c.date(c.chance(0.4));
      if (c.chance(0.2)) setChoice('deceased', 'deceasedDateTime', c.dateTime());
      break;
    case 'Condition':
      // Condition.onsetAge over 89.
      if (c.chance(0.45)) {
        const value = c.int(90, 105);
        const coded = c.chance(0.7);
        c.planted.ages.push(coded ? `${value} a` : `${value} years`);
        setChoice('onset', 'onsetAge', coded ? { value, unit: 'years', system: UCUM, code: 'a' } : { value, unit: 'years' });
      }
      break;
    case 'Observation':
      r.status = 'final';
      // An age observation over 89 (LOINC 30525-0 and kin), in each form ages are written, on the
      // Observation itself or on one of its components.
      if (c.chance(0.3)) {
        const value = c.int(90, 110);
        const [key, v, label] = c.pick([
          ['valueQuantity', { value, unit: 'a', system: UCUM, code: 'a' }, `${value} a`],
          ['valueQuantity', { value, unit: 'yrs' }, `${value} yrs`],
          ['valueQuantity', { value }, `valueQuantity ${value}`],
          ['valueInteger', value, `valueInteger ${value}`],
          ['valueString', String(value), `valueString ${value}`],
        ] as const);
        c.planted.ages.push(label);
        const age = { code: { coding: [{ system: LOINC, code: c.pick(AGE_CODES) }] }, [key]: v };
        if (c.chance(0.3)) {
          r.code = codeableConcept(c);
          r.component = [age];
        } else Object.assign(r, age);
      } else r.code = codeableConcept(c);
      break;
    case 'Encounter':
      r.status = 'finished';
      r.class = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' };
      if (c.chance(0.7)) r.period = period(c);
      break;
    case 'Procedure':
      r.status = 'completed';
      if (c.chance(0.7)) setChoice('performed', c.chance(0.5) ? 'performedDateTime' : 'performedPeriod', c.chance(0.5) ? c.dateTime() : period(c));
      break;
  }
  return r;
}

/** Points some Reference element of the resource (or a new extension) at `ref`. */
function attachReference(c: Ctx, type: string, r: Obj, ref: string): void {
  const slots = Object.entries(typeElements(type) ?? {}).filter(
    ([name, info]) => !info.choice && info.types.length === 1 && info.types[0] === 'Reference' && !['subject', 'patient'].includes(name) && (info.array || r[name] === undefined),
  );
  if (slots.length > 0) {
    const [name, info] = c.pick(slots);
    if (info.array) r[name] = [...((r[name] as unknown[] | undefined) ?? []), { reference: ref }];
    else r[name] = { reference: ref };
    return;
  }
  const url = `http://hospital.example.org/ext/${c.seed(c.token(10))}`;
  c.planted.urls.push(url);
  r.extension = [...((r.extension as unknown[] | undefined) ?? []), { url, valueReference: { reference: ref } }];
}

function buildResource(c: Ctx, type: string, id: string, topLevel: boolean): Obj {
  const r: Obj = { resourceType: type, id };
  Object.assign(r, elements(c, type, 0, true, plantByType(c, type)) ?? {});
  if (c.chance(0.5)) r.text = narrative(c);
  if (topLevel && c.chance(0.3)) {
    // Never meta.security: labels decide what is withheld, and a withheld resource would leak nothing.
    r.meta = {
      profile: [c.chance(0.5) ? 'http://hl7.org/fhir/StructureDefinition/Patient' : c.url('StructureDefinition')],
      ...(c.chance(0.5) ? { source: c.url('source') } : {}),
      ...(c.chance(0.5) ? { tag: [coding(c)] } : {}),
    };
  }
  if (topLevel && c.chance(0.35)) {
    // Contained resources, with their own plants, referenced from the container by `#id`.
    const contained = c.some(1, 2, () => buildResource(c, c.pick(CONTAINED_TYPES), c.id(), false));
    r.contained = contained;
    for (const x of contained) attachReference(c, type, r, `#${String(x.id)}`);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Seeds of the demo data

/**
 * The identifying values of the demo data (src/demo/data.ts: `demoResources()` and Alice's first
 * version): every name part, identifier value, telecom value, address line, city, district, text
 * and 5-digit postal code, annotation text, attachment data, Reference.display, and every
 * resource id (contained ones included). Found by walking each resource by its data types.
 */
export function demoSeeds(): string[] {
  const seeds = new Set<string>();
  const add = (v: unknown) => {
    if (typeof v === 'string' && v.length > 0) seeds.add(v);
  };
  const onType = (type: string, v: unknown) => {
    if (typeof v !== 'object' || v === null) return;
    const o = v as Obj;
    switch (type) {
      case 'HumanName':
        add(o.family);
        add(o.text);
        for (const k of ['given', 'prefix', 'suffix']) for (const x of (o[k] as unknown[] | undefined) ?? []) add(x);
        break;
      case 'Identifier':
      case 'ContactPoint':
        add(o.value);
        break;
      case 'Address':
        for (const x of (o.line as unknown[] | undefined) ?? []) add(x);
        add(o.city);
        add(o.district);
        add(o.text);
        if (typeof o.postalCode === 'string' && /^\d{5}/.test(o.postalCode)) add(o.postalCode.slice(0, 5));
        break;
      case 'Annotation':
        add(o.text);
        break;
      case 'Attachment':
        add(o.data);
        add(o.url);
        break;
      case 'Reference':
        add(o.display);
        break;
    }
  };
  for (const r of [aliceFirstVersion(), ...demoResources()]) walkTyped(r, r.resourceType, onType, (id) => add(id));
  return [...seeds];
}

/**
 * Walks a FHIR JSON value by its data types (from the tables), calling `onType` for every complex
 * value and `onId` for every resource id (contained resources included).
 */
export function walkTyped(v: unknown, type: string, onType: (type: string, v: unknown) => void, onId: (id: string) => void): void {
  if (Array.isArray(v)) {
    for (const x of v) walkTyped(x, type, onType, onId);
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  let t = type;
  if (type === 'Resource' || isResourceType(type)) {
    t = String(o.resourceType);
    if (typeof o.id === 'string') onId(o.id);
  }
  onType(t, o);
  const table = typeElements(t);
  if (!table) return;
  for (const [k, x] of Object.entries(o)) {
    const info = table[k.startsWith('_') ? k.slice(1) : k];
    if (!info) continue;
    // A primitive's sibling (`_birthDate`) is an Element: only extensions inside.
    walkTyped(x, k.startsWith('_') ? 'Element' : info.types[0]!, onType, onId);
  }
}
