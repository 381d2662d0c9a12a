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

/** Splits on `;` outside quoted strings. */
function splitParams(s: string): string[] {
  const parts: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (quoted && ch === '\\') {
      cur += ch + (s[i + 1] ?? '');
      i++;
    } else if (ch === '"') {
      quoted = !quoted;
      cur += ch;
    } else if (ch === ';' && !quoted) {
      parts.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (quoted) throw unsupported('unterminated quoted string');
  parts.push(cur);
  return parts;
}

function unquote(v: string): string {
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) return v.slice(1, -1).replace(/\\(.)/g, '$1');
  if (!TOKEN.test(v)) throw unsupported('bad parameter value');
  return v;
}

/**
 * Returns which kind of body the Content-Type announces, or throws `unsupported-media-type`.
 * Accepted: application/fhir+json and application/json (params `charset=utf-8`, `fhirVersion=4.0`),
 * application/json-patch+json and application/x-www-form-urlencoded (param `charset=utf-8`).
 */
export function bodyMedia(header: string | string[] | undefined): BodyMedia {
  if (header === undefined) throw unsupported('missing content-type');
  if (typeof header !== 'string') throw unsupported('repeated content-type');
  const [essence, ...rawParams] = splitParams(header);
  const type = essence!.trim().toLowerCase();
  let media: BodyMedia;
  if (type === 'application/fhir+json' || type === 'application/json') media = 'json';
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
