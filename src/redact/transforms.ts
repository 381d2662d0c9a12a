/**
 * Value transforms (mask, year, zip3, age90, pseudonym). Each returns the input itself when nothing
 * changes, a new value otherwise, or REMOVE when the value cannot be safely transformed (fail
 * closed: an unexpected shape or type is dropped, never passed through).
 */
import { tailTypeId } from '../fhir/reference.js';
import { pseudonymize } from './pseudonym.js';
import type { RedactContext } from './types.js';

export const REMOVE: unique symbol = Symbol('remove');
export type Removed = typeof REMOVE;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

export const MASK = '***';

/**
 * mask: strings become `***`; inside a complex value every string leaf is masked and every other
 * leaf (numbers, booleans) is dropped, since it cannot be masked in place without breaking its type.
 */
export function mask(v: unknown): unknown {
  if (typeof v === 'string') return v === MASK ? v : MASK;
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const m = mask(v[i]);
      if (m !== v[i] || out) {
        out = out ?? v.slice(0, i);
        if (m !== REMOVE) out.push(m);
      }
    }
    return out === undefined ? v : out.length === 0 ? REMOVE : out;
  }
  if (isObj(v)) {
    let out: Obj | undefined;
    for (const k in v) {
      // An own `__proto__` key (possible in parsed JSON) would set the prototype when copied.
      const m = k === '__proto__' ? REMOVE : mask(v[k]);
      if (m !== v[k] && out === undefined) {
        out = {};
        for (const k2 in v) {
          if (k2 === k) break;
          out[k2] = v[k2];
        }
      }
      if (out !== undefined && m !== REMOVE) out[k] = m;
    }
    return out === undefined ? v : Object.keys(out).length === 0 ? REMOVE : out;
  }
  if (v === null) return v;
  return REMOVE;
}

/** `YYYY` prefix of a FHIR date/dateTime, or undefined when the value does not start with one. */
function yearOf(v: unknown): string | undefined {
  if (typeof v !== 'string' || v.length < 4) return undefined;
  for (let i = 0; i < 4; i++) if (!isDigit(v.charCodeAt(i))) return undefined;
  return v.length === 4 ? v : v.slice(0, 4);
}

/** year: date/dateTime -> YYYY; instant -> removed (an instant cannot be year-only); Period -> years. */
export function year(v: unknown, type: string): unknown {
  if (type === 'date' || type === 'dateTime') return yearOf(v) ?? REMOVE;
  if (type === 'Period') {
    if (!isObj(v)) return REMOVE;
    let out: Obj | undefined;
    for (const k of ['start', 'end']) {
      if (!(k in v)) continue;
      const y = yearOf(v[k]);
      if (y !== v[k]) {
        out = out ?? { ...v };
        if (y === undefined) delete out[k];
        else out[k] = y;
      }
      // Extensions on start/end (e.g. exact times) would undo the generalization.
      if (`_${k}` in v) {
        out = out ?? { ...v };
        delete out[`_${k}`];
      }
    }
    return out ?? v;
  }
  return REMOVE;
}

/** zip3: Safe Harbor 3-digit ZIP prefix; restricted prefixes (population < 20,000) become `000`. */
export function zip3(v: unknown, type: string, ctx: RedactContext): unknown {
  if (type === 'Address') {
    if (!isObj(v)) return REMOVE;
    if (!('postalCode' in v) && !('_postalCode' in v)) return v;
    const z = 'postalCode' in v ? zip3(v.postalCode, 'string', ctx) : REMOVE;
    if (z === v.postalCode && !('_postalCode' in v)) return v;
    const out: Obj = { ...v };
    delete out._postalCode;
    if (z === REMOVE) delete out.postalCode;
    else out.postalCode = z;
    return out;
  }
  if (typeof v !== 'string' || v.length < 3) return REMOVE;
  for (let i = 0; i < 3; i++) if (!isDigit(v.charCodeAt(i))) return REMOVE;
  const prefix = v.length === 3 ? v : v.slice(0, 3);
  if (ctx.restrictedZip3.has(prefix)) return '000';
  return prefix;
}

const YEAR_UNITS = new Set(['a', 'year', 'years', 'yr', 'yrs', 'y']);

/**
 * age90: a date whose person would be over 89 at ctx.now() becomes the year (now - 90); an Age
 * (or Quantity in years) over 89 becomes 90. Partial dates are read as their latest possible day,
 * so a year-only value is generalized whenever it could mean an age of 90 or more.
 */
export function age90(v: unknown, type: string, ctx: RedactContext): unknown {
  const now = ctx.now();
  if (type === 'date' || type === 'dateTime') {
    if (typeof v !== 'string' || yearOf(v) === undefined) return REMOVE;
    const y = Number(v.slice(0, 4));
    const m = v.length >= 7 ? Number(v.slice(5, 7)) : 12;
    const d = v.length >= 10 ? Number(v.slice(8, 10)) : 31;
    const ny = now.getUTCFullYear();
    const nm = now.getUTCMonth() + 1;
    const nd = now.getUTCDate();
    // Age at `now` for someone born on the latest day the value allows.
    let age = ny - y;
    if (nm < m || (nm === m && nd < d)) age--;
    if (age <= 89) return v;
    const capped = String(ny - 90).padStart(4, '0');
    return v === capped ? v : capped;
  }
  if (type === 'Age' || type === 'Quantity') {
    if (!isObj(v)) return REMOVE;
    const unit = typeof v.code === 'string' ? v.code : typeof v.unit === 'string' ? v.unit : undefined;
    if (typeof v.value !== 'number' || unit === undefined || !YEAR_UNITS.has(unit)) return v;
    if (v.value <= 89) return v;
    const out: Obj = { ...v, value: 90 };
    delete out._value;
    return out;
  }
  return REMOVE;
}

/** The pseudonym of `type/id` (src/redact/pseudonym.ts), or undefined when it cannot have one. */
export function pseudonymId(key: Uint8Array, type: string, id: string): string | undefined {
  return pseudonymize(key, type, id);
}

/**
 * `Type/id` (relative, absolute or with `/_history/v`) -> `Type/<pseudonym>`; anything else
 * (`#contained`, `urn:uuid:`, conditional or unparseable references) -> undefined: removed.
 */
export function pseudonymReference(key: Uint8Array, ref: string): string | undefined {
  if (ref.length === 0 || ref.charCodeAt(0) === 35 /* # */ || ref.startsWith('urn:')) return undefined;
  const t = tailTypeId(ref);
  if (t === undefined || t.id.includes('?')) return undefined;
  const p = pseudonymId(key, t.type, t.id);
  return p === undefined ? undefined : `${t.type}/${p}`;
}

/**
 * pseudonym: an id string (resource `id`) -> the pseudonym of `Type/id` so that it matches pseudonymized
 * references to it; `Reference.reference` and whole References -> `Type/<pseudonym>`. With no key
 * configured the element is removed: never the raw id.
 */
export function pseudonym(v: unknown, type: string, key: string, ownerType: string, rootType: string, ctx: RedactContext): unknown {
  const k = ctx.pseudonymKey;
  if (k === undefined) return REMOVE;
  if (type === 'Reference') {
    if (!isObj(v)) return REMOVE;
    if (!('reference' in v) && !('_reference' in v)) return v;
    const r = typeof v.reference === 'string' ? pseudonymReference(k, v.reference) : undefined;
    const out: Obj = { ...v };
    delete out._reference;
    if (r === undefined) delete out.reference;
    else out.reference = r;
    return Object.keys(out).length === 0 ? REMOVE : out;
  }
  if (typeof v !== 'string') return REMOVE;
  if (ownerType === 'Reference' && key === 'reference') return pseudonymReference(k, v) ?? REMOVE;
  return pseudonymId(k, rootType, v) ?? REMOVE;
}
