import type { Principal } from './principal.js';
import { TokenRefusal } from './refusal.js';
import { readSmartScopes, type ScopeReading } from './scopes.js';

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
const RESOURCE_TYPE_RE = /^[A-Z][A-Za-z]{0,63}$/;
const MAX_SUB_LENGTH = 1024;
const UNSAFE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** How a verified claims set becomes a Principal (the `auth` section of gateway.yaml, compiled once). */
export interface ClaimRules {
  /** Claim names or dotted paths whose string values are the caller's IdP roles (union of all). */
  readonly rolesClaim: string | readonly string[];
  /**
   * IdP role or group name -> policy roles. When set, only mapped names become roles: an unmapped
   * name (even one spelled like a policy role) is ignored.
   */
  readonly roleMap?: ReadonlyMap<string, readonly string[]> | undefined;
  /** Claims naming the SMART patient context (default [`patient`]); `fhirUser` is read as a reference. */
  readonly patientClaims?: readonly string[] | undefined;
  /**
   * A scope claim naming no SMART scope (`openid profile email`): `refuse` = the token may do
   * nothing; `roles-only` = as if there were no scope claim, roles alone decide. Default `refuse`.
   */
  readonly scopelessTokens?: 'refuse' | 'roles-only' | undefined;
  /** The claim naming the caller's own FHIR resource (default `fhirUser`), for care relationships. */
  readonly fhirUserClaim?: string | undefined;
}

/**
 * Builds the Principal from an already verified claims set. Throws `invalid-token` when a claim that
 * narrows access is present but unusable (a patient claim, a scope claim contradicting another), so a
 * malformed restriction never turns into no restriction (BYPASSES 4).
 */
export function principalFromClaims(claims: Claims, rules: string | ClaimRules): Principal {
  const r: ClaimRules = typeof rules === 'string' ? { rolesClaim: rules } : rules;
  const sub = claims.sub;
  // Control characters in `sub` would be written verbatim into audit records and alerts.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (typeof sub !== 'string' || sub.trim() === '' || sub.length > MAX_SUB_LENGTH || /[\u0000-\u001f\u007f]/.test(sub)) {
    throw new TokenRefusal('claims', 'sub claim missing or not a usable string');
  }
  const iss = claims.iss;
  if (typeof iss !== 'string' || iss === '') throw new TokenRefusal('claims', 'iss claim missing');
  const exp = claims.exp;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new TokenRefusal('claims', 'exp claim missing');

  return Object.freeze({
    iss,
    sub,
    // RFC 9068 / SMART `client_id`; OIDC and Azure v2 `azp`; Okta `cid`; Azure v1 `appid`.
    clientId: optionalString(claims.client_id) ?? optionalString(claims.azp) ?? optionalString(claims.cid) ?? optionalString(claims.appid),
    // Azure names its token id `uti`.
    jti: optionalString(claims.jti) ?? optionalString(claims.uti),
    roles: Object.freeze(rolesOf(claims, r.rolesClaim, r.roleMap)),
    tokenPurposes: purposesFrom(claims),
    patient: patientOf(claims, r.patientClaims ?? ['patient']),
    scopes: scopesOf(claims, r.scopelessTokens ?? 'refuse'),
    familyName: optionalString(claims.family_name),
    fhirUser: fhirUserOf(claims, r.fhirUserClaim ?? 'fhirUser'),
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

/**
 * The union of the role names in every roles claim, then, with a role map, the policy roles they
 * map to. Keycloak puts realm roles in `realm_access.roles` and group paths (`/clinician`,
 * `/hospital/clinician`) in `groups`; Azure puts app roles (`Clinician.ReadWrite`) in `roles`.
 */
function rolesOf(claims: Claims, rolesClaim: string | readonly string[], roleMap: ReadonlyMap<string, readonly string[]> | undefined): string[] {
  const names = new Set<string>();
  for (const claim of typeof rolesClaim === 'string' ? [rolesClaim] : rolesClaim) {
    for (const name of rolesFrom(claimAt(claims, claim))) names.add(name);
  }
  if (roleMap === undefined) return [...names];
  const roles = new Set<string>();
  for (const name of names) for (const role of roleMap.get(name) ?? []) roles.add(role);
  return [...roles];
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

/**
 * The SMART patient context from the configured claims. Every listed claim that is present must name
 * a patient (a `fhirUser` may instead name another kind of user: no patient context from it), and
 * all that name one must name the same: anything else is refused, never read as "no restriction".
 */
function patientOf(claims: Claims, names: readonly string[]): string | undefined {
  let patient: string | undefined;
  for (const name of names) {
    const value = claimAt(claims, name);
    if (value === undefined) continue;
    const id = name === 'fhirUser' ? fhirUserPatient(value) : patientId(value, name);
    if (id === undefined) continue;
    if (patient !== undefined && patient !== id) throw new TokenRefusal('claims', 'patient claims name different patients');
    patient = id;
  }
  return patient;
}

/** `123` or `Patient/123` (normalized to `123`); anything else unusable is refused. */
function patientId(value: unknown, name: string): string {
  if (typeof value === 'string') {
    const id = value.startsWith('Patient/') ? value.slice('Patient/'.length) : value;
    if (FHIR_ID_RE.test(id)) return id;
  }
  throw new TokenRefusal('claims', `${safeName(name)} claim is not a FHIR Patient id`);
}

/**
 * `fhirUser` (SMART): a relative (`Patient/123`) or absolute (`https://ehr/fhir/Patient/123`)
 * reference to the user's own resource. A Patient gives its id; Practitioner, RelatedPerson... give
 * no patient context; anything that is not such a reference is refused.
 */
function fhirUserPatient(value: unknown): string | undefined {
  const ref = fhirUserReference(value);
  return ref.type === 'Patient' ? ref.id : undefined;
}

/**
 * The caller's own resource as `Type/id` (relative; an absolute URL's last two segments), from the
 * configured claim; absent claim: undefined. Present but not such a reference: the token is refused.
 */
function fhirUserOf(claims: Claims, name: string): string | undefined {
  const value = claimAt(claims, name);
  if (value === undefined) return undefined;
  const { type, id } = fhirUserReference(value);
  return `${type}/${id}`;
}

function fhirUserReference(value: unknown): { type: string; id: string } {
  if (typeof value !== 'string' || value.length > 2048) throw new TokenRefusal('claims', 'fhirUser claim is not a reference');
  let path = value;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new TokenRefusal('claims', 'fhirUser claim is not a reference');
    }
    if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search !== '' || url.hash !== '') {
      throw new TokenRefusal('claims', 'fhirUser claim is not a reference');
    }
    path = url.pathname;
  }
  const parts = path.split('/');
  const [type, id] = parts.slice(-2);
  if (parts.length < 2 || !RESOURCE_TYPE_RE.test(type) || !FHIR_ID_RE.test(id)) throw new TokenRefusal('claims', 'fhirUser claim is not a reference');
  return { type, id };
}

/**
 * SMART scopes from `scope` (Keycloak, RFC 9068) or `scp` (Okta: array; Azure: string), each a
 * space-separated string or an array of scope strings. `undefined` = no scope claim: roles decide.
 *
 * Both claims present: they must name the same SMART scopes, or the token is refused. Of the
 * narrower readings (an intersection, or refusing) refusing is chosen: an IdP that fills both with
 * different scopes is misconfigured, and a silent intersection would surface as puzzling per-request
 * denials instead of one clear 401 naming the claims.
 */
function scopesOf(claims: Claims, scopeless: 'refuse' | 'roles-only'): Principal['scopes'] {
  const readings: ScopeReading[] = [];
  for (const name of ['scope', 'scp'] as const) {
    if (Object.hasOwn(claims, name)) readings.push(scopeReading(claims[name]));
  }
  if (readings.length === 0) return undefined;
  const [first, second] = readings;
  if (second !== undefined && !sameScopes(first.named, second.named)) throw new TokenRefusal('claims', 'scope and scp claims name different SMART scopes');
  // No SMART scope named at all (`openid profile email`): what that means is a deployment choice.
  if (first.named.length === 0 && scopeless === 'roles-only') return undefined;
  return Object.freeze(first.scopes);
}

/** A present but malformed scope claim still limits the token: to nothing (never read as scopeless). */
function scopeReading(value: unknown): ScopeReading {
  if (typeof value === 'string') return readSmartScopes(value);
  if (Array.isArray(value) && value.every((s) => typeof s === 'string')) return readSmartScopes(value.join(' '));
  return { scopes: [], named: ['(malformed scope claim)'] };
}

function sameScopes(a: readonly string[], b: readonly string[]): boolean {
  const x = [...new Set(a)].sort();
  const y = [...new Set(b)].sort();
  return x.length === y.length && x.every((s, i) => s === y[i]);
}

/** A configured claim name as it may appear in a log detail (it comes from gateway.yaml, not the token). */
function safeName(name: string): string {
  return /^[\w.:/-]{1,128}$/.test(name) ? name : 'patient';
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
