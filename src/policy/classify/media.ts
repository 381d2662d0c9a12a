/**
 * Request Content-Type handling for classify(). Only the media types the gateway can inspect are
 * accepted, in UTF-8 only; an unknown parameter or charset is refused rather than ignored, since
 * the upstream might honour what the gateway skipped. Pure.
 */
import { GatewayError } from '../../errors.js';

export type BodyMedia = 'json' | 'json-patch' | 'form';

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function unsupported(detail: string): GatewayError {
  return new GatewayError('unsupported-media-type', detail);
}

/**
 * Splits on `sep` outside quoted strings (backslash escapes inside them kept as they are);
 * `closed` is false when a quoted string never ends.
 */
function splitOutsideQuotes(s: string, sep: string): { parts: string[]; closed: boolean } {
  const parts: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (quoted && ch === '\\') {
      cur += ch + (s[i + 1] ?? '');
      i++;
    } else if (ch === sep && !quoted) {
      parts.push(cur);
      cur = '';
    } else {
      if (ch === '"') quoted = !quoted;
      cur += ch;
    }
  }
  parts.push(cur);
  return { parts, closed: !quoted };
}

/** Splits a media type on `;` outside quoted strings. */
function splitParams(s: string): string[] {
  const { parts, closed } = splitOutsideQuotes(s, ';');
  if (!closed) throw unsupported('unterminated quoted string');
  return parts;
}

function unquote(v: string): string {
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) return v.slice(1, -1).replace(/\\(.)/g, '$1');
  if (!TOKEN.test(v)) throw unsupported('bad parameter value');
  return v;
}

/**
 * Returns which kind of body the Content-Type announces, or throws `unsupported-media-type`.
 * Accepted: application/fhir+json, application/json and application/json+fhir (params `charset=utf-8`, `fhirVersion=4.0`),
 * application/json-patch+json and application/x-www-form-urlencoded (param `charset=utf-8`).
 */
export function bodyMedia(header: string | string[] | undefined): BodyMedia {
  if (header === undefined) throw unsupported('missing content-type');
  if (typeof header !== 'string') throw unsupported('repeated content-type');
  const [essence, ...rawParams] = splitParams(header);
  const type = essence!.trim().toLowerCase();
  let media: BodyMedia;
  // application/json+fhir: the DSTU2-era spelling, still sent by older clients and servers.
  if (type === 'application/fhir+json' || type === 'application/json' || type === 'application/json+fhir') media = 'json';
  else if (type === 'application/json-patch+json') media = 'json-patch';
  else if (type === 'application/x-www-form-urlencoded') media = 'form';
  else throw unsupported('media type not accepted');
  const seen = new Set<string>();
  for (const raw of rawParams) {
    const p = raw.trim();
    if (p === '') throw unsupported('empty parameter');
    const eq = p.indexOf('=');
    if (eq <= 0) throw unsupported('malformed parameter');
    const name = p.slice(0, eq).trim().toLowerCase();
    if (!TOKEN.test(name)) throw unsupported('malformed parameter name');
    if (seen.has(name)) throw unsupported('repeated parameter');
    seen.add(name);
    const value = unquote(p.slice(eq + 1).trim());
    if (name === 'charset') {
      if (value.toLowerCase() !== 'utf-8') throw unsupported('charset other than utf-8');
    } else if (name === 'fhirversion' && media === 'json') {
      // R4 is the only version this gateway classifies; 4.0 is its MIME-parameter spelling.
      if (value !== '4.0') throw unsupported('fhirVersion other than 4.0');
    } else {
      throw unsupported('unknown parameter');
    }
  }
  return media;
}

// ---- what the client accepts back ----

/** The names of what the gateway answers with: FHIR JSON (application/json+fhir is the DSTU2-era spelling). */
const PRODUCED = ['application/fhir+json', 'application/json', 'application/json+fhir'] as const;
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

function notAcceptable(detail: string): GatewayError {
  return new GatewayError('not-acceptable', detail);
}

/** Splits a header list on `,` outside quoted strings. */
function splitList(s: string): string[] {
  return splitOutsideQuotes(s, ',').parts;
}

interface Range {
  readonly type: string;
  readonly subtype: string;
  readonly q: number;
  /** More specific ranges win (RFC 9110 12.5.1): exact 2, `type/*` 1, `*\/*` 0. */
  readonly specificity: number;
}

/** The media ranges of an Accept header; a range that cannot be read (or asks another FHIR version) is left out. */
function ranges(accept: string): Range[] {
  const out: Range[] = [];
  for (const raw of splitList(accept)) {
    if (raw.trim() === '') continue;
    let parts: string[];
    try {
      parts = splitParams(raw);
    } catch {
      continue;
    }
    const essence = parts[0]!.trim().toLowerCase();
    const slash = essence.indexOf('/');
    if (slash <= 0 || slash === essence.length - 1) continue;
    const type = essence.slice(0, slash);
    const subtype = essence.slice(slash + 1);
    if (!TOKEN.test(type) || !TOKEN.test(subtype) || (type === '*' && subtype !== '*')) continue;
    let q = 1;
    let usable = true;
    for (const p of parts.slice(1)) {
      const eq = p.indexOf('=');
      if (eq <= 0) continue;
      const name = p.slice(0, eq).trim().toLowerCase();
      const value = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
      if (name === 'q') {
        if (!QVALUE.test(value)) usable = false;
        else q = Number(value);
      } else if (name === 'fhirversion' && value !== '4.0') usable = false;
    }
    if (!usable) continue;
    const specificity = type === '*' ? 0 : subtype === '*' ? 1 : 2;
    out.push({ type, subtype, q, specificity });
  }
  return out;
}

/** The q-value the most specific matching range gives `media` (0 when none matches). */
function qualityOf(media: string, list: readonly Range[]): number {
  const [type, subtype] = media.split('/') as [string, string];
  let best: Range | undefined;
  for (const r of list) {
    const matches = r.type === '*' || (r.type === type && (r.subtype === '*' || r.subtype === subtype));
    if (matches && (best === undefined || r.specificity > best.specificity || (r.specificity === best.specificity && r.q < best.q))) best = r;
  }
  return best?.q ?? 0;
}

/**
 * Throws `not-acceptable` when the Accept header asks only for formats the gateway does not
 * produce (it answers FHIR JSON, nothing else: XML, Turtle or HTML would be JSON under another
 * name). Missing or empty: fine. A range with `q=0` refuses that format; the most specific range
 * decides (`*\/*, application/fhir+json;q=0` still accepts application/json).
 */
export function checkAccept(header: string | string[] | undefined): void {
  if (header === undefined) return;
  const text = Array.isArray(header) ? header.join(',') : header;
  if (text.trim() === '') return;
  const list = ranges(text);
  if (!PRODUCED.some((m) => qualityOf(m, list) > 0)) throw notAcceptable('Accept names no format the gateway produces');
}

/** `_format` values meaning FHIR JSON (after form decoding, where `+` became a space). */
const JSON_FORMATS: ReadonlySet<string> = new Set(['json', ...PRODUCED]);

/** Throws `not-acceptable` unless `_format` (any case of its name) asks for FHIR JSON. */
export function checkFormatParam(value: string): void {
  const essence = value.split(';', 1)[0]!.trim().toLowerCase().replaceAll(' ', '+');
  if (!JSON_FORMATS.has(essence)) throw notAcceptable('_format names a format the gateway does not produce');
}
