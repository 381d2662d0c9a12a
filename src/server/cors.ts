/**
 * CORS for browser apps (SMART apps served from another origin). Only origins listed in
 * `cors.origins` are answered, each with its own exact value (never `*`); credentials mode is not
 * offered: the apps send bearer tokens, not cookies. Pure: the pipeline answers (and audits)
 * preflights with `preflight()`, and the app adds `responseHeaders()` to every answer under /fhir.
 */

/** Every method the FHIR routes take. */
export const ALLOWED_METHODS: readonly string[] = Object.freeze(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/** Every request header the gateway reads (or passes on), so a browser may send it. */
export const ALLOWED_HEADERS: readonly string[] = Object.freeze([
  'Authorization',
  'Content-Type',
  'Accept',
  'X-Purpose-Of-Use',
  'X-Role',
  'X-Break-Glass-Reason',
  'X-Access-Grant',
  'If-Match',
  'If-None-Match',
  'If-None-Exist',
  'Prefer',
  'X-Request-Id',
]);

/** Every response header the gateway sets that a script may need to read. */
export const EXPOSED_HEADERS: readonly string[] = Object.freeze([
  'Location',
  'Content-Location',
  'ETag',
  'Last-Modified',
  'X-Request-Id',
  'X-Break-Glass-Session',
  'X-Access-Grant',
  'WWW-Authenticate',
  'Retry-After',
]);

/** How long a browser may reuse a preflight answer (Chromium caps it at 2 h). */
export const PREFLIGHT_MAX_AGE_SECONDS = 3600;

type Headers = Record<string, string>;

export interface Cors {
  /** Whether any origin is configured (`security.cors` of the CapabilityStatement). */
  readonly enabled: boolean;
  /** Whether `origin` (the Origin header as received) is one of the configured origins. */
  allows(origin: string | string[] | undefined): origin is string;
  /**
   * Headers for an actual answer: for an allowed origin the Access-Control-* ones; `Vary: Origin`
   * whenever CORS is configured (the answer's headers depend on the Origin). Undefined: none.
   */
  responseHeaders(origin: string | string[] | undefined): Readonly<Headers> | undefined;
  /** The headers of a 204 preflight answer for an allowed origin, or undefined (not allowed). */
  preflight(origin: string | string[] | undefined): Headers | undefined;
}

/** A CORS preflight: OPTIONS with an Origin and the method the browser is about to use. */
export function isPreflight(method: string, headers: Readonly<Record<string, string | string[] | undefined>>): boolean {
  return method === 'OPTIONS' && headers.origin !== undefined && headers['access-control-request-method'] !== undefined;
}

export function createCors(origins: readonly string[]): Cors {
  const allowed = new Set(origins);
  const enabled = allowed.size > 0;
  const methods = ALLOWED_METHODS.join(', ');
  const requestHeaders = ALLOWED_HEADERS.join(', ');
  const exposed = EXPOSED_HEADERS.join(', ');
  // Built once per origin: the hot path only looks up a frozen object.
  const actual = new Map<string, Readonly<Headers>>();
  for (const o of allowed) {
    actual.set(o, Object.freeze({ 'access-control-allow-origin': o, 'access-control-expose-headers': exposed, vary: 'Origin' }));
  }
  const varyOnly: Readonly<Headers> = Object.freeze({ vary: 'Origin' });
  // A repeated Origin arrives as an array or joined with ", ": never equal to one configured origin.
  const allows = (origin: string | string[] | undefined): origin is string => typeof origin === 'string' && allowed.has(origin);
  return {
    enabled,
    allows,
    responseHeaders(origin) {
      if (!enabled) return undefined;
      return allows(origin) ? actual.get(origin) : varyOnly;
    },
    preflight(origin) {
      if (!allows(origin)) return undefined;
      return {
        'access-control-allow-origin': origin,
        'access-control-allow-methods': methods,
        'access-control-allow-headers': requestHeaders,
        'access-control-max-age': String(PREFLIGHT_MAX_AGE_SECONDS),
        vary: 'Origin',
      };
    },
  };
}
