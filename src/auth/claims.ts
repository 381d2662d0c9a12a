import { GatewayError } from '../errors.js';
import type { Principal } from './principal.js';
import { parseSmartScopes } from './scopes.js';

/** A verified JWT claims set (jose's JWTPayload, kept structural so this module stays jose-free). */
export type Claims = Readonly<Record<string, unknown>>;

// Code systems whose codes are purposes of use. The ActReason code system is canonical
// (STANDARDS); the PurposeOfUse URLs and OIDs are what real tokens carry.
const PURPOSE_SYSTEMS: ReadonlySet<string> = new Set([
  'http://terminology.hl7.org/CodeSystem/v3-ActReason',
  'http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse',
  'http://terminology.hl7.org/ValueSet/v3-PurposeOfUse',
  'http://hl7.org/fhir/v3/ActReason',
  'http://hl7.org/fhir/v3/PurposeOfUse',
  'urn:oid:2.16.840.1.113883.5.8',
  'urn:oid:2.16.840.1.113883.1.11.20448',
]);

const CODE_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
// FHIR R4 id datatype.
const FHIR_ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const MAX_SUB_LENGTH = 1024;
const UNSAFE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Builds the Principal from an already verified claims set. Throws `invalid-token` when a claim that
 * narrows access is present but unusable (`patient`), so a malformed restriction never turns into no
 * restriction (BYPASSES 4).
 */
export function principalFromClaims(claims: Claims, rolesClaim: string): Principal {
  const sub = claims.sub;
  // Control characters in `sub` would be written verbatim into audit records and alerts.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (typeof sub !== 'string' || sub.trim() === '' || sub.length > MAX_SUB_LENGTH || /[\u0000-\u001f\u007f]/.test(sub)) {
    throw new GatewayError('invalid-token', 'sub claim missing or not a usable string');
  }
  const iss = claims.iss;
  if (typeof iss !== 'string' || iss === '') throw new GatewayError('invalid-token', 'iss claim missing');
  const exp = claims.exp;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new GatewayError('invalid-token', 'exp claim missing');

  return Object.freeze({
    iss,
    sub,
    clientId: optionalString(claims.client_id) ?? optionalString(claims.azp),
    jti: optionalString(claims.jti),
    roles: Object.freeze(rolesFrom(claimAt(claims, rolesClaim))),
    tokenPurposes: purposesFrom(claims),
    patient: patientFrom(claims.patient),
    scopes: scopesFrom(claims.scope),
    familyName: optionalString(claims.family_name),
    exp,
  });
}

/**
 * Reads a claim by name, or by dotted path (`realm_access.roles`) when no top-level claim has that
 * exact name: namespaced claims like `https://example.org/roles` contain dots themselves.
 * Only own properties are followed and prototype-ish names never are, so `__proto__.x` or
 * `constructor.name` resolve to nothing.
 */
export function claimAt(claims: Claims, name: string): unknown {
  if (Object.hasOwn(claims, name)) return claims[name];
  let cur: unknown = claims;
  for (const seg of name.split('.')) {
    if (UNSAFE_KEYS.has(seg) || cur === null || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

/** A string array, or one string as one role. Anything else (including a mixed array) is no roles. */
function rolesFrom(value: unknown): string[] {
  if (typeof value === 'string') return value === '' ? [] : [value];
  if (!Array.isArray(value) || !value.every((r) => typeof r === 'string')) return [];
  return [...new Set((value as string[]).filter((r) => r !== ''))];
}

/**
 * Union of the purposes found in `purpose_of_use`, IHE IUA `extensions.ihe_iua.purpose_of_use`
 * and UDAP/FAST `extensions["hl7-b2b"].purpose_of_use`. `undefined` only when none of these claims is
 * present; a present claim that yields no recognisable code gives `[]` (the token allows no purpose),
 * never "unlimited".
 */
export function purposesFrom(claims: Claims): readonly string[] | undefined {
  const sources: unknown[] = [];
  if (Object.hasOwn(claims, 'purpose_of_use')) sources.push(claims.purpose_of_use);
  const ext = claims.extensions;
  if (ext !== null && typeof ext === 'object' && !Array.isArray(ext)) {
    for (const key of ['ihe_iua', 'hl7-b2b']) {
      const block = Object.hasOwn(ext, key) ? (ext as Record<string, unknown>)[key] : undefined;
      if (block !== null && typeof block === 'object' && !Array.isArray(block) && Object.hasOwn(block, 'purpose_of_use')) {
        sources.push((block as Record<string, unknown>).purpose_of_use);
      }
    }
  }
  if (sources.length === 0) return undefined;
  const codes = new Set<string>();
  for (const source of sources) {
    for (const item of Array.isArray(source) ? source : [source]) {
      const code = purposeCode(item);
      if (code !== undefined) codes.add(code);
    }
  }
  return Object.freeze([...codes]);
}

/** `TREAT`, `system|TREAT`, `urn:oid:2.16.840.1.113883.5.8#TREAT`, or a Coding `{system, code}`. */
function purposeCode(item: unknown): string | undefined {
  if (typeof item === 'string') {
    const s = item.trim();
    const sep = Math.max(s.lastIndexOf('|'), s.lastIndexOf('#'));
    if (sep === -1) return CODE_RE.test(s) ? s : undefined;
    return codeIn(s.slice(0, sep), s.slice(sep + 1));
  }
  if (item !== null && typeof item === 'object' && !Array.isArray(item)) {
    const { system, code } = item as { system?: unknown; code?: unknown };
    // A Coding without a system cannot be told apart from some other vocabulary's code.
    if (typeof system === 'string' && typeof code === 'string') return codeIn(system, code);
  }
  return undefined;
}

function codeIn(system: string, code: string): string | undefined {
  return PURPOSE_SYSTEMS.has(system) && CODE_RE.test(code) ? code : undefined;
}

/** SMART launch context. `Patient/123` is normalized to `123`; anything else unusable is refused. */
function patientFrom(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') {
    const id = value.startsWith('Patient/') ? value.slice('Patient/'.length) : value;
    if (FHIR_ID_RE.test(id)) return id;
  }
  throw new GatewayError('invalid-token', 'patient claim is not a FHIR Patient id');
}

/** `scope` as a string (or an array of scope strings, as some IdPs issue). Other types: no scopes. */
function scopesFrom(value: unknown): Principal['scopes'] {
  if (value === undefined) return undefined;
  let text = '';
  if (typeof value === 'string') text = value;
  else if (Array.isArray(value) && value.every((s) => typeof s === 'string')) text = value.join(' ');
  // A present but malformed scope claim still limits the token: to nothing.
  return Object.freeze(parseSmartScopes(text));
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
