/**
 * The re-identification scanner: the test oracle for HIPAA Safe Harbor (45 CFR 164.514(b)(2)).
 *
 * It looks at every byte a caller receives (every header value and the body text) for what Safe
 * Harbor says must not be there, without knowing how the gateway de-identifies:
 *
 * - `seed`: a planted identifying value (name, SSN, MRN, phone, email, street, city, ZIP5, a real
 *   resource id...), case-insensitively;
 * - `date`: a date finer than a year (YYYY-MM, YYYY-MM-DD, instants, HTTP dates, 3/14/1984,
 *   "14 Mar 1984"), anywhere; `time`: a JSON string value that is a time of day;
 * - `age`: an age over 89 (a time quantity of 90 years or more that is not `>= 90`, or the value of an
 *   age observation); `old-year`: a whole-value year before now - 90 (a birth year implying > 89);
 * - `url` / `ip`: a URL or IPv4 address outside the gateway's base and the terminology allowlist.
 *
 * Text is scanned as sent and also decoded (JSON escapes, %XX, HTML character references, base64
 * JSON strings that decode to text), so an encoding does not hide a value.
 */
import { Buffer } from 'node:buffer';

/** Planted identifying values (strings) and real ids. */
export type Seeds = readonly string[];

export type FindingKind = 'seed' | 'date' | 'time' | 'age' | 'old-year' | 'url' | 'ip';

export interface Finding {
  readonly kind: FindingKind;
  readonly value: string;
  readonly where: `header:${string}` | 'body';
  /** About 40 characters around the value. */
  readonly context: string;
}

export interface ScanInput {
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

export interface ScanOptions {
  /** The gateway's FHIR base (e.g. http://127.0.0.1:41234/fhir): its own links are not findings. */
  readonly gatewayBase: string;
  readonly now: Date;
}

/**
 * Seeds shorter than this are ignored: two- and three-character values ("MA", "US", "Dr.", a given
 * name like "May") occur by chance in codes, units, pseudonyms and JSON keys, so matching them would
 * only produce noise; every generated plant is far longer, and the demo's short ones are not
 * identifying on their own.
 */
export const MIN_SEED_LENGTH = 4;
/**
 * Seeds shorter than this ("Chen", "Boston", "02115") match only as a whole word (no letter or digit
 * on either side), so that they are not found by chance inside pseudonyms (FHIR id alphabet) or
 * longer numbers; longer seeds (random generated tokens) match anywhere.
 */
const WORD_SEED_LENGTH = 8;

/** Hosts whose URLs name code systems, units and profiles, never a person. Exact host match. */
const TERMINOLOGY_HOSTS: ReadonlySet<string> = new Set([
  'hl7.org',
  'terminology.hl7.org',
  'loinc.org',
  'snomed.info',
  'unitsofmeasure.org',
  'www.nlm.nih.gov',
  'www.ama-assn.org',
  // The gateway's own code system for error OperationOutcomes (src/errors.ts): names no one.
  'phi-gateway.dev',
]);
// URNs (`urn:oid:`, `urn:ietf:`...) are not URLs and are not flagged as such; an OID's dotted
// digits are never read as an IP address (see IPV4 and scanText).

/** LOINC codes whose value is the person's age. */
const AGE_LOINC: ReadonlySet<string> = new Set(['30525-0', '21612-7', '29553-5', '21611-9', '21613-5', '35659-2', '63900-5', '46251-5']);

/** Years per time unit: UCUM codes and the unit strings people write. */
const YEARS_PER: Readonly<Record<string, number>> = {
  a: 1, y: 1, yr: 1, yrs: 1, year: 1, years: 1,
  mo: 1 / 12, month: 1 / 12, months: 1 / 12,
  wk: 7 / 365.25, week: 7 / 365.25, weeks: 7 / 365.25,
  d: 1 / 365.25, day: 1 / 365.25, days: 1 / 365.25,
  h: 1 / 8766, hour: 1 / 8766, hours: 1 / 8766,
  min: 1 / 525960, minute: 1 / 525960, minutes: 1 / 525960,
};

const MONTHS = 'Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?';
const DATE_PATTERNS: readonly RegExp[] = [
  // ISO 8601: YYYY-MM, YYYY-MM-DD, with a time. Not inside a longer run of letters or digits (a
  // UUID such as `…-8640-10c2-…` in X-Request-Id is not a date).
  /(?<![A-Za-z0-9])\d{4}-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12]\d|3[01])(?:T[0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?)?(?![A-Za-z0-9])/g,
  // US numeric: 3/14/1984.
  /(?<![\d/])(?:0?[1-9]|1[0-2])\/(?:0?[1-9]|[12]\d|3[01])\/\d{4}(?![\d/])/g,
  // 14 Mar 1984 (HTTP dates: Last-Modified, Expires), March 14, 1984.
  new RegExp(`(?<![A-Za-z0-9])\\d{1,2}[ -](?:${MONTHS})\\.?[ -]\\d{4}(?![0-9])`, 'g'),
  new RegExp(`(?<![A-Za-z])(?:${MONTHS})\\.? \\d{1,2}(?:st|nd|rd|th)?,? \\d{4}(?![0-9])`, 'g'),
];
const URL_PATTERN = /(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s"'<>\\]+/g;
const CONTACT_URI = /(?<![A-Za-z0-9])(?:mailto|tel|fax|sms):[^\s"'<>\\]+/gi;
// Four dotted octets, not part of a longer dotted number (OIDs, versions) nor of an id-like token.
const IPV4 = /(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?![\w-]|\.\d)/g;
const TIME_VALUE = /^(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?$/;
const BASE64 = /^[A-Za-z0-9+/]{16,}={0,2}$/;

/** Scans one response. Findings are de-duplicated by kind, value and where. */
export function scan(input: ScanInput, seeds: Seeds, opts: ScanOptions): Finding[] {
  const out = new Findings();
  const prepared = prepareSeeds(seeds);
  for (const [rawName, raw] of Object.entries(input.headers)) {
    if (raw === undefined) continue;
    const name = rawName.toLowerCase();
    // `Date` is the server's clock at the time of the answer, not data about anyone.
    if (name === 'date') continue;
    for (const value of Array.isArray(raw) ? raw : [raw]) {
      for (const view of views(value)) scanText(view, `header:${name}`, prepared, opts, out);
    }
  }
  for (const view of views(input.body)) scanText(view, 'body', prepared, opts, out);
  const json = parseJson(input.body);
  if (json !== undefined) {
    // JSON escapes (\u0041) do not hide anything: scan the canonical serialisation as well.
    const canonical = JSON.stringify(json);
    if (canonical !== input.body) scanText(canonical, 'body', prepared, opts, out);
    scanJson(json, prepared, opts, out);
  }
  return out.list();
}

/** Findings as a short, readable summary (kinds with counts and a few values), for failure messages. */
export function summarize(findings: readonly Finding[], max = 15): string {
  const lines = findings.slice(0, max).map((f) => `${f.kind} ${JSON.stringify(f.value)} in ${f.where}: …${f.context}…`);
  if (findings.length > max) lines.push(`… and ${findings.length - max} more`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

class Findings {
  private readonly seen = new Map<string, Finding>();
  add(kind: FindingKind, value: string, where: Finding['where'], text: string, at: number): void {
    const key = `${kind}\u0000${value.toLowerCase()}\u0000${where}`;
    if (this.seen.has(key)) return;
    // at < 0: a structural finding (JSON walk); the context is the start of the object it was found in.
    const context = (at < 0 ? text.slice(0, 100) : text.slice(Math.max(0, at - 20), at + value.length + 20)).replace(/\s+/g, ' ');
    this.seen.set(key, { kind, value, where, context });
  }
  list(): Finding[] {
    return [...this.seen.values()];
  }
}

interface PreparedSeed {
  readonly value: string;
  readonly lower: string;
  readonly word: boolean;
}

/** Seeds indexed by the key of their first MIN_SEED_LENGTH (lowercased) characters. */
type SeedIndex = ReadonlyMap<number, readonly PreparedSeed[]>;

const preparedCache = new WeakMap<Seeds, SeedIndex>();

/** A 4-character window as a number (collisions only cost a comparison). */
function windowKey(s: string, i: number): number {
  return ((s.charCodeAt(i) & 0xff) << 24) + ((s.charCodeAt(i + 1) & 0xff) << 16) + ((s.charCodeAt(i + 2) & 0xff) << 8) + (s.charCodeAt(i + 3) & 0xff);
}

function prepareSeeds(seeds: Seeds): SeedIndex {
  let index = preparedCache.get(seeds) as Map<number, PreparedSeed[]> | undefined;
  if (index === undefined) {
    index = new Map();
    const unique = new Set<string>();
    for (const s of seeds) {
      if (typeof s !== 'string' || s.length < MIN_SEED_LENGTH) continue;
      const lower = s.toLowerCase();
      if (unique.has(lower)) continue;
      unique.add(lower);
      const key = windowKey(lower, 0);
      const list = index.get(key) ?? [];
      list.push({ value: s, lower, word: s.length < WORD_SEED_LENGTH });
      index.set(key, list);
    }
    preparedCache.set(seeds, index);
  }
  return index;
}

/** The text as sent, and decoded forms that differ from it (%XX, HTML character references). */
function views(text: string): string[] {
  const out = [text];
  if (text.includes('%')) {
    const decoded = text.replace(/(?:%[0-9A-Fa-f]{2})+/g, (m) => {
      try {
        return decodeURIComponent(m);
      } catch {
        return m;
      }
    });
    if (decoded !== text) out.push(decoded.replace(/\+/g, ' '));
  }
  if (text.includes('&#')) {
    const decoded = text.replace(/&#(x[0-9a-f]+|\d+);/gi, (m, n: string) => {
      const code = n[0] === 'x' || n[0] === 'X' ? Number.parseInt(n.slice(1), 16) : Number.parseInt(n, 10);
      return Number.isFinite(code) && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    });
    if (decoded !== text) out.push(decoded);
  }
  return out;
}

function isWordChar(c: string | undefined): boolean {
  return c !== undefined && /[A-Za-z0-9]/.test(c);
}

/** Every seed found in `text` (first occurrence each): one pass over the text, looking up each 4-character window. */
function scanSeeds(text: string, where: Finding['where'], seeds: SeedIndex, out: Findings): void {
  const lower = text.toLowerCase();
  const found = new Set<PreparedSeed>();
  for (let i = 0; i + MIN_SEED_LENGTH <= lower.length; i++) {
    const candidates = seeds.get(windowKey(lower, i));
    if (candidates === undefined) continue;
    for (const s of candidates) {
      if (found.has(s) || !lower.startsWith(s.lower, i)) continue;
      const end = i + s.lower.length;
      const boundaryOk =
        !s.word ||
        ((!isWordChar(s.lower[0]) || !isWordChar(lower[i - 1])) && (!isWordChar(s.lower[s.lower.length - 1]) || !isWordChar(lower[end])));
      if (!boundaryOk) continue;
      found.add(s);
      out.add('seed', s.value, where, text, i);
    }
  }
}

function scanText(text: string, where: Finding['where'], seeds: SeedIndex, opts: ScanOptions, out: Findings): void {
  scanSeeds(text, where, seeds, out);
  for (const re of DATE_PATTERNS) {
    for (const m of text.matchAll(re)) out.add('date', m[0], where, text, m.index);
  }
  // URLs first: an IP inside an allowed URL (the gateway's own base) is not a finding, and one inside
  // a flagged URL is already reported with it.
  const urlSpans: Array<[number, number]> = [];
  for (const m of text.matchAll(URL_PATTERN)) {
    const url = m[0].replace(/[.,;:)\]}]+$/, '');
    urlSpans.push([m.index, m.index + url.length]);
    if (!allowedUrl(url, opts.gatewayBase)) out.add('url', url, where, text, m.index);
  }
  for (const m of text.matchAll(CONTACT_URI)) out.add('url', m[0], where, text, m.index);
  for (const m of text.matchAll(IPV4)) {
    const at = m.index;
    if (urlSpans.some(([a, b]) => at >= a && at < b)) continue;
    if (/urn:oid:$/i.test(text.slice(Math.max(0, at - 8), at))) continue;
    if (m[0].split('.').some((o) => Number(o) > 255)) continue;
    out.add('ip', m[0], where, text, at);
  }
}

function allowedUrl(url: string, gatewayBase: string): boolean {
  const base = gatewayBase.replace(/\/+$/, '');
  if (url === base || url.startsWith(`${base}/`) || url.startsWith(`${base}?`)) return true;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.username || parsed.password || parsed.port) return false;
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return false;
  return TERMINOLOGY_HOSTS.has(parsed.hostname.toLowerCase());
}

function parseJson(body: string): unknown {
  const t = body.trimStart();
  if (!t.startsWith('{') && !t.startsWith('[')) return undefined;
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return undefined;
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Structural checks on the parsed body: ages, old years, times, URNs, base64 content. */
function scanJson(root: unknown, seeds: SeedIndex, opts: ScanOptions, out: Findings): void {
  const oldestYear = opts.now.getUTCFullYear() - 90;
  const aggregates = new WeakSet<Obj>();
  const visit = (v: unknown, key: string | undefined): void => {
    if (Array.isArray(v)) {
      for (const x of v) visit(x, key);
      return;
    }
    if (typeof v === 'string') {
      const shown = JSON.stringify(v);
      if (TIME_VALUE.test(v)) out.add('time', v, 'body', shown, -1);
      // A whole-value year (a birth year, any date cut to its year) that old implies an age over 89.
      // Codes are released as they are and are not years.
      if (/^\d{4}$/.test(v) && key !== 'code' && Number(v) < oldestYear) out.add('old-year', v, 'body', shown, -1);
      // Base64 that decodes to text (an attachment, a signature) is text the caller receives.
      const text = base64Text(v);
      if (text !== undefined) scanText(text, 'body', seeds, opts, out);
      return;
    }
    if (!isObj(v)) return;
    checkAge(v, aggregates, out);
    for (const [k, x] of Object.entries(v)) visit(x, k);
  };
  visit(root, undefined);
}

/** Decoded text of a base64 string that holds mostly printable UTF-8 (an Attachment, a Signature), else undefined. */
function base64Text(v: string): string | undefined {
  if (v.length < 16 || v.length % 4 !== 0 || !BASE64.test(v)) return undefined;
  const text = Buffer.from(v, 'base64').toString('utf8');
  let printable = 0;
  for (const ch of text) if (/[\x20-\x7e\s]/.test(ch) || ch.charCodeAt(0) > 0x9f) printable++;
  return printable >= text.length * 0.9 ? text : undefined;
}

function yearsOf(q: Obj): number | undefined {
  const raw = typeof q.value === 'number' ? q.value : typeof q.value === 'string' && /^-?\d+(\.\d+)?$/.test(q.value) ? Number(q.value) : undefined;
  if (raw === undefined) return undefined;
  const ucum = q.system === undefined || q.system === 'http://unitsofmeasure.org';
  const code = typeof q.code === 'string' && ucum ? q.code : undefined;
  const unit = typeof q.unit === 'string' ? q.unit.trim().toLowerCase().replace(/\(s\)$/, 's') : undefined;
  const per = (code !== undefined ? YEARS_PER[code] : undefined) ?? (unit !== undefined ? YEARS_PER[unit] : undefined);
  return per === undefined ? undefined : raw * per;
}

function ageLabel(q: Obj): string {
  return `${q.comparator ?? ''}${String(q.value)} ${String(q.code ?? q.unit ?? '')}`.trim();
}

/**
 * Ages over 89: any quantity in units of time that comes to 90 years or more, unless it is the
 * Safe Harbor aggregate `>= 90` years (or a Range `{low: 90 years}` without a high); and the value of an age observation (LOINC) over 89 when it
 * carries no unit (valueInteger, a unit-less quantity or range, a numeric string).
 */
function checkAge(o: Obj, aggregates: WeakSet<Obj>, out: Findings): void {
  // A Range whose low is 90 years and which has no high says ">= 90": the aggregate in the one form a
  // Range can take (its quantities may not carry a comparator). Its low is not a finding.
  if (isObj(o.low) && o.high === undefined) {
    const low = yearsOf(o.low);
    if (low !== undefined && Math.abs(low - 90) < 0.01) aggregates.add(o.low);
  }
  const years = yearsOf(o);
  if (years !== undefined && years >= 90 && !aggregates.has(o)) {
    const aggregate = o.comparator === '>=' && Math.abs(years - 90) < 0.01;
    if (!aggregate) out.add('age', ageLabel(o), 'body', JSON.stringify(o), -1);
  }
  if (!isAgeObservation(o)) return;
  const over = (n: unknown) => typeof n === 'number' && n > 89;
  if (over(o.valueInteger)) out.add('age', `valueInteger ${String(o.valueInteger)}`, 'body', JSON.stringify(o), -1);
  if (typeof o.valueString === 'string' && /^\d+(\.\d+)?$/.test(o.valueString) && Number(o.valueString) > 89) {
    out.add('age', `valueString ${o.valueString}`, 'body', JSON.stringify(o), -1);
  }
  const unitless = (q: unknown) => isObj(q) && yearsOf(q) === undefined && q.unit === undefined && q.code === undefined && over(q.value);
  if (unitless(o.valueQuantity)) out.add('age', `valueQuantity ${String((o.valueQuantity as Obj).value)}`, 'body', JSON.stringify(o), -1);
  const range = o.valueRange;
  if (isObj(range) && (unitless(range.low) || unitless(range.high))) out.add('age', 'valueRange over 89', 'body', JSON.stringify(o), -1);
}

function isAgeObservation(o: Obj): boolean {
  const code = o.code;
  if (!isObj(code) || !Array.isArray(code.coding)) return false;
  return code.coding.some((c) => isObj(c) && typeof c.code === 'string' && AGE_LOINC.has(c.code) && (c.system === undefined || c.system === 'http://loinc.org'));
}
