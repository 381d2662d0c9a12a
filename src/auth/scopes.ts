import type { SmartScope } from './principal.js';

type Permission = 'c' | 'r' | 'u' | 'd' | 's';

// SMART v2 (`.cruds` letters, in that order) and v1 (`.read` / `.write` / `.*`) in one grammar.
// Only the resource part is matched here; the optional `?query` is split off first.
const SCOPE_RE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{0,63})\.(read|write|\*|c?r?u?d?s?)$/;

const V1: Readonly<Record<string, readonly Permission[]>> = {
  read: ['r', 's'],
  write: ['c', 'u', 'd'],
  '*': ['c', 'r', 'u', 'd', 's'],
};

// Microsoft Entra ID allows no `/` in scope names, so SMART scopes registered there reach the token's
// `scp` as `patient.Observation.read` / `user.all.read` (the form Azure Health Data Services uses).
const ENTRA_RE = /^(patient|user|system)\.(\*|all|[A-Z][A-Za-z]{0,63})\.(read|write|\*|c?r?u?d?s?)$/;

// Anything that starts like a SMART resource scope, in either spelling and any case (`Patient/x.r`,
// `user.Observation.Read`; not a two-part `User.Read`). Such a scope, even one that cannot be used,
// means the token names SMART scopes (src/auth/claims.ts): it is never read as a token without
// SMART scopes, which `scopelessTokens: roles-only` would widen.
const SMART_LIKE_RE = /^(patient|user|system)(\/|\.[^.]*\.)/i;

/** A scope claim's reading: the usable SMART scopes, and every SMART-looking scope it names. */
export interface ScopeReading {
  readonly scopes: SmartScope[];
  /** SMART-looking scopes as named (Entra spelling rewritten to `context/Type.perm`), usable or not. */
  readonly named: string[];
}

/**
 * Parses a space-separated OAuth `scope` string into SMART scopes (STANDARDS "SMART v2 scopes").
 * Non-SMART scopes (`openid`, `launch/patient`, `fhirUser`, ...) are ignored. A SMART-looking scope
 * whose `?param=value` restriction cannot be decoded is dropped entirely: keeping it without the
 * restriction would grant more than the token says.
 */
export function parseSmartScopes(scope: string): SmartScope[] {
  return readSmartScopes(scope).scopes;
}

/** parseSmartScopes, also telling which SMART-looking scopes the string names. */
export function readSmartScopes(scope: string): ScopeReading {
  const out: SmartScope[] = [];
  const named: string[] = [];
  for (const token of scope.split(/[ \t\r\n]+/)) {
    if (token === '' || !SMART_LIKE_RE.test(token)) continue;
    const entra = ENTRA_RE.exec(token);
    const raw = entra === null ? token : `${entra[1]}/${entra[2] === 'all' ? '*' : entra[2]}.${entra[3]}`;
    named.push(raw);
    const q = raw.indexOf('?');
    const head = q === -1 ? raw : raw.slice(0, q);
    const m = SCOPE_RE.exec(head);
    if (m === null) continue;
    const letters = m[3];
    const perms: readonly Permission[] = V1[letters] ?? ([...letters] as Permission[]);
    if (perms.length === 0) continue; // `patient/Observation.` grants nothing
    const params = q === -1 ? [] : parseParams(raw.slice(q + 1));
    if (params === undefined) continue;
    out.push(
      Object.freeze({
        context: m[1] as SmartScope['context'],
        resourceType: m[2],
        permissions: new Set(perms),
        params: Object.freeze(params),
      }),
    );
  }
  return { scopes: out, named };
}

function parseParams(query: string): Array<readonly [string, string]> | undefined {
  const pairs: Array<readonly [string, string]> = [];
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || eq === part.length - 1) return undefined;
    try {
      // `+` is a literal in scope strings (not form encoding), so only percent-escapes are decoded.
      pairs.push(Object.freeze([decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))] as const));
    } catch {
      return undefined;
    }
  }
  return pairs;
}
