/**
 * Looks up patients' consent directives on the upstream FHIR server, with the gateway's own
 * credentials, dispatcher and limits, and caches them per patient.
 *
 * - A lookup names every patient a response is about; those not cached (or expired) are searched
 *   together, up to CHUNK_PATIENTS per search (`Consent?patient=Patient/a,Patient/b&status=active`),
 *   following the upstream's `next` links up to MAX_PAGES. Every Consent that comes back is read
 *   again here (src/consent/parse.ts): an upstream that ignores a parameter cannot attribute a
 *   consent to the wrong patient, and what the gateway cannot read exactly makes that patient
 *   unevaluable (withheld from every caller but break-glass), never ignored.
 * - A patient's entry younger than half the TTL is used as it is; one between half and the whole
 *   TTL is used and refreshed in the background; an older one is looked up again before the
 *   request goes on. So a consent created or revoked upstream takes effect within the TTL.
 *   Concurrent lookups of one patient share one upstream search (a refresh included). Entries are
 *   bounded by `maxPatients`, least recently used dropped. A lookup that finds every patient fresh
 *   is answered synchronously.
 * - Fail closed: when the upstream cannot answer (connection, timeout, a status other than 200, a
 *   body that is not a searchset Bundle or reads two ways, more pages than MAX_PAGES, a paging link
 *   off the upstream) the lookup throws `consent-unavailable`, never an empty set. A failed
 *   background refresh keeps the entries until their TTL runs out.
 *
 * An id that is not a FHIR id cannot name an upstream patient: it is answered with no consents
 * and never sent upstream. Logs name consent ids, reasons and counts, never a patient id.
 */
import type { GatewayConfig } from '../config/types.js';
import { GatewayError, isGatewayError } from '../errors.js';
import {
  abortable,
  DEFAULT_RESPONSE_LIMIT,
  DEFAULT_TIMEOUT_MS,
  LookupCache,
  type LookupCounts,
  type LookupDeps,
  noLookups,
  REFRESH_RETRY_MS,
  refreshDue,
  type SearchUpstream,
  searchPage,
  type UpstreamLookupOptions,
  upstreamLookupOptions,
} from '../proxy/upstream-lookup.js';
import { FHIR_ID, isObj } from '../relationships/sources.js';
import { consentsByPatient } from './parse.js';
import type { CompiledConsent, PatientConsents, UnevaluableConsent } from './types.js';

/**
 * Counts since the resolver started, per patient, for metrics (src/server/metrics.ts). `hits`:
 * patients answered from the cache; `misses`: patients a lookup waited for the upstream for;
 * `refreshes`: patients refreshed in the background; `failures`: patients a lookup was refused for
 * because the upstream could not answer, and patients whose background refresh failed.
 */
export interface ConsentResolverStats extends LookupCounts {
  /** Patients cached now. */
  readonly patients: number;
  /**
   * Requests judged against consents, and those refused because consents could not be read: one
   * each per request, whatever its answer held (what /metrics shows: the per-patient counts above
   * change with the patients an answer names, withheld ones included, so they are not exported).
   */
  readonly requests: number;
  readonly refused: number;
  /** Cached patients with an unevaluable consent, and those consents (id + reason, at most MAX_REPORTED). */
  readonly unevaluablePatients: number;
  readonly unevaluable: readonly UnevaluableConsent[];
}

export interface ConsentResolver {
  /**
   * Every patient's consents (each patient named is a key of the answer): synchronous when all are
   * cached and fresh, else a promise. Throws GatewayError('consent-unavailable') when the upstream
   * cannot answer (fail closed).
   */
  lookup(patients: readonly string[], config: CompiledConsent, signal?: AbortSignal): ReadonlyMap<string, PatientConsents> | Promise<ReadonlyMap<string, PatientConsents>>;
  /**
   * One patient's consents when the cache holds them younger than half the TTL (nothing to refresh),
   * else undefined (then `lookup`). The request path's shortcut: no allocation on a hit.
   */
  peek?(patient: string, config: CompiledConsent): PatientConsents | undefined;
  stats(): ConsentResolverStats;
  /** Counts one request judged against consents (`refused`: it was refused, the consents unreadable). */
  noteRequest?(refused: boolean): void;
  close(): Promise<void>;
}

/**
 * The upstream and its bounds: paging links under `linkBases` are followed; `timeoutMs` bounds one
 * search, all its pages together.
 */
export type ConsentResolverOptions = UpstreamLookupOptions;

/** Patients named in one search. */
export const CHUNK_PATIENTS = 50;
/** Pages of one search read at most: a search with more refuses (its consents would be incomplete). */
export const MAX_PAGES = 20;
/** `_count` asked of the upstream (it may answer with fewer per page). */
const PAGE_SIZE = 1000;
/** Unevaluable consents listed in stats (and /readyz) at most. */
const MAX_REPORTED = 20;
/** Unevaluable consents remembered as already logged (forgotten all at once when full). */
const MAX_LOGGED = 10_000;

type Found = ReadonlyMap<string, PatientConsents>;

function unavailable(detail: string, cause?: unknown): GatewayError {
  return new GatewayError('consent-unavailable', detail, cause === undefined ? undefined : { cause });
}

function none(patient: string): PatientConsents {
  return Object.freeze({ patient, consents: Object.freeze([]), unevaluable: Object.freeze([]) });
}

function chunks<T>(all: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < all.length; i += size) out.push(all.slice(i, i + size));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Upstream

/** How the resolver (and `fetchPatientConsents`) reaches the upstream. */
interface Upstream extends SearchUpstream {
  readonly base: string;
  /** An upstream paging link as a URL on `base`'s origin and path; undefined for a link elsewhere. */
  readonly link: (url: string) => string | undefined;
  readonly timeoutMs: number;
}

function upstreamOf(opts: ConsentResolverOptions): Upstream {
  const base = opts.upstreamUrl.replace(/\/+$/, '');
  const own = new URL(base);
  const ownPath = own.pathname.replace(/\/+$/, '');
  const bases = [base, ...(opts.linkBases ?? [])].map((b) => {
    const u = new URL(b.replace(/\/+$/, ''));
    return { origin: u.origin, path: u.pathname.replace(/\/+$/, '') };
  });
  const limit = opts.responseLimit ?? DEFAULT_RESPONSE_LIMIT;
  return {
    base,
    // A link under a base the upstream names itself by is moved onto upstream.url; a link anywhere
    // else is not followed: the gateway's credentials go to the upstream only.
    link(url) {
      let u: URL;
      try {
        u = new URL(url, `${base}/`);
      } catch {
        return undefined;
      }
      for (const b of bases) {
        if (u.origin !== b.origin) continue;
        if (u.pathname !== b.path && !u.pathname.startsWith(`${b.path}/`)) continue;
        return own.origin + ownPath + u.pathname.slice(b.path.length) + u.search;
      }
      return undefined;
    },
    dispatcher: opts.dispatcher,
    authorization: () => opts.upstreamAuthorization(),
    limits: { responseBodyBytes: limit, decompressedBytes: limit },
    unavailable,
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  };
}

/** One page of a Consent search: its Consents and the upstream's `next` link, if any. */
async function readPage(up: Upstream, url: string, signal: AbortSignal): Promise<{ consents: readonly unknown[]; next: string | undefined }> {
  const what = 'Consent search';
  // Strict: which of two `provision`s, or `status`es, an ambiguous body meant is unknown, so the consents are too.
  const { result, bundle } = await searchPage(up, url, 'Consent', signal, { strict: true });
  const consents: readonly unknown[] = result.matches;
  let next: string | undefined;
  for (const l of (bundle.link ?? []) as unknown[]) {
    if (!isObj(l) || l.relation !== 'next') continue;
    if (typeof l.url !== 'string') throw unavailable(`${what}: a next link without a url`);
    next = up.link(l.url);
    if (next === undefined) throw unavailable(`${what}: paging link outside the configured upstream`);
    break;
  }
  return { consents, next };
}

/**
 * The consents of `patients` (FHIR ids, at most CHUNK_PATIENTS), every page of one search read
 * and parsed; every patient named is a key of the answer. Throws `consent-unavailable`.
 */
async function searchConsents(up: Upstream, patients: readonly string[], signal: AbortSignal): Promise<Map<string, PatientConsents>> {
  const query = new URLSearchParams([
    ['patient', patients.map((p) => `Patient/${p}`).join(',')],
    ['status', 'active'],
    ['_count', String(PAGE_SIZE)],
  ]).toString();
  let url: string | undefined = `${up.base}/Consent?${query}`;
  const resources: unknown[] = [];
  for (let page = 0; url !== undefined; page++) {
    if (page === MAX_PAGES) throw unavailable(`Consent search: more than ${MAX_PAGES} pages`);
    const read: { consents: readonly unknown[]; next: string | undefined } = await readPage(up, url, signal);
    for (const c of read.consents) resources.push(c);
    url = read.next;
  }
  let parsed: Map<string, PatientConsents>;
  try {
    parsed = consentsByPatient(resources, patients);
  } catch (e) {
    // The parser reads what it cannot evaluate as unevaluable; an exception means a bug: refuse.
    throw unavailable('Consent search: consents could not be read', e);
  }
  const out = new Map<string, PatientConsents>();
  for (const p of patients) out.set(p, parsed.get(p) ?? none(p));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Resolver

export function createConsentResolver(opts: ConsentResolverOptions): ConsentResolver {
  const { logger } = opts;
  const now = opts.now ?? Date.now;
  const up = upstreamOf(opts);

  /** Cached patients with an unevaluable consent (kept in step with the cache). */
  const failing = new Map<string, readonly UnevaluableConsent[]>();
  const cache = new LookupCache<PatientConsents>((patient) => failing.delete(patient));
  /** The one search under way per patient (blocking or background). */
  const inflight = new Map<string, Promise<Found>>();
  /** Unevaluable consents already logged (`id\nreason`). */
  const logged = new Set<string>();
  const closing = new AbortController();
  let closed = false;
  const counts = noLookups();

  function remember(value: PatientConsents, resolvedAt: number, maxPatients: number): void {
    failing.delete(value.patient);
    if (value.unevaluable.length > 0) failing.set(value.patient, value.unevaluable);
    cache.set(value.patient, value, resolvedAt, maxPatients);
  }

  /** Each unevaluable consent once (consent id and reason: never the patient). */
  function report(found: Found): void {
    for (const c of found.values()) {
      for (const u of c.unevaluable) {
        const key = `${u.id}\n${u.reason}`;
        if (logged.has(key)) continue;
        if (logged.size >= MAX_LOGGED) logged.clear();
        logged.add(key);
        logger.warn({ consent: u.id, reason: u.reason }, "consent cannot be evaluated: its patient's data is withheld from every caller but break-glass");
      }
    }
  }

  /** One search for `patients` (at most CHUNK_PATIENTS), its answer cached; registered as their search under way. */
  function search(patients: readonly string[], config: CompiledConsent, background: boolean): Promise<Found> {
    const p = (async (): Promise<Found> => {
      const resolvedAt = now();
      const started = Date.now();
      const signal = AbortSignal.any([closing.signal, AbortSignal.timeout(up.timeoutMs)]);
      let found: Found;
      try {
        found = await searchConsents(up, patients, signal);
      } catch (e) {
        const err = isGatewayError(e) ? e : unavailable('lookup failed', e);
        logger.warn(
          { patients: patients.length, detail: err.detail, background },
          background ? 'consents could not be refreshed: the cached ones are used until they expire' : 'consents could not be looked up: answers that need them are refused',
        );
        throw err;
      }
      if (closed) throw unavailable('resolver closed');
      for (const c of found.values()) remember(c, resolvedAt, config.maxPatients);
      report(found);
      logger.debug({ patients: patients.length, ms: Date.now() - started, background }, 'consents looked up');
      return found;
    })();
    for (const id of patients) inflight.set(id, p);
    p.finally(() => {
      for (const id of patients) if (inflight.get(id) === p) inflight.delete(id);
    }).catch(() => {});
    return p;
  }

  function refresh(patients: readonly string[], config: CompiledConsent): void {
    for (const chunk of chunks(patients, CHUNK_PATIENTS)) {
      search(chunk, config, true).then(
        () => {
          counts.refreshes += chunk.length;
        },
        () => {
          counts.failures += chunk.length;
          const retryAt = now() + REFRESH_RETRY_MS;
          for (const id of chunk) {
            const entry = cache.peek(id);
            if (entry !== undefined) entry.retryAt = retryAt;
          }
        },
      );
    }
  }

  /** The patients' searches under way, started for those without one; every patient's consents once all answered. */
  async function wait(patients: readonly string[], config: CompiledConsent, held: Map<string, PatientConsents>): Promise<Found> {
    const fresh = patients.filter((id) => !inflight.has(id));
    for (const chunk of chunks(fresh, CHUNK_PATIENTS)) search(chunk, config, false);
    const searches = new Set(patients.map((id) => inflight.get(id)!));
    for (const found of await Promise.all(searches)) {
      for (const id of patients) {
        const c = found.get(id);
        if (c !== undefined) held.set(id, c);
      }
    }
    return held;
  }

  let requests = 0;
  let refused = 0;
  return {
    // Not async: a lookup whose patients are all cached is answered synchronously (no promise turn
    // on the request's hot path).
    peek(patient, config) {
      if (closed) return undefined;
      const entry = cache.peek(patient);
      if (entry === undefined || now() - entry.resolvedAt >= config.ttlMs / 2) return undefined;
      // Most recently used last (the LRU order lookup keeps).
      cache.touch(patient, entry);
      counts.hits++;
      return entry.value;
    },
    lookup(patients, config, signal) {
      if (closed) return Promise.reject(unavailable('resolver closed'));
      const held = new Map<string, PatientConsents>();
      const missing = new Set<string>();
      const stale: string[] = [];
      const t = now();
      for (const id of patients) {
        if (held.has(id) || missing.has(id)) continue;
        // Not an id the upstream could hold: no patient of its has consents under it.
        if (!FHIR_ID.test(id)) {
          held.set(id, none(id));
          continue;
        }
        const entry = cache.fresh(id, t, config.ttlMs);
        if (entry !== undefined) {
          counts.hits++;
          held.set(id, entry.value);
          if (refreshDue(entry, t, config.ttlMs) && !inflight.has(id)) stale.push(id);
          continue;
        }
        missing.add(id);
      }
      if (stale.length > 0) refresh(stale, config);
      if (missing.size === 0) return held;
      const waiting = [...missing];
      return abortable(wait(waiting, config, held), signal, unavailable).then(
        (found) => {
          counts.misses += waiting.length;
          return found;
        },
        (e: unknown) => {
          if (isGatewayError(e) && e.code === 'consent-unavailable') counts.failures += waiting.length;
          throw e;
        },
      );
    },
    stats() {
      const unevaluable: UnevaluableConsent[] = [];
      const listed = new Set<string>();
      outer: for (const list of failing.values()) {
        for (const u of list) {
          const key = `${u.id}\n${u.reason}`;
          if (listed.has(key)) continue;
          if (unevaluable.length >= MAX_REPORTED) break outer;
          listed.add(key);
          unevaluable.push({ id: u.id, reason: u.reason });
        }
      }
      return { patients: cache.size, ...counts, requests, refused, unevaluablePatients: failing.size, unevaluable };
    },
    noteRequest(wasRefused) {
      if (wasRefused) refused++;
      else requests++;
    },
    async close() {
      if (closed) return;
      closed = true;
      closing.abort(unavailable('resolver closed'));
      await Promise.allSettled([...inflight.values()]);
      cache.clear();
      failing.clear();
    },
  };
}

/** The resolver for a gateway: its upstream, link bases, response limit and total timeout. */
export async function openConsentResolver(config: GatewayConfig, deps: LookupDeps): Promise<ConsentResolver | undefined> {
  return createConsentResolver(consentResolverOptions(config, deps));
}

/** Resolver options from a gateway's configuration (also for `explain --patient`). */
export function consentResolverOptions(config: GatewayConfig, deps: LookupDeps): ConsentResolverOptions {
  return upstreamLookupOptions(config, deps);
}

/**
 * One patient's consents fetched directly (no cache), for `explain --patient`. Throws
 * `consent-unavailable` like a lookup; an id that is not a FHIR id has none and is not sent.
 */
export async function fetchPatientConsents(patient: string, opts: ConsentResolverOptions): Promise<PatientConsents> {
  if (!FHIR_ID.test(patient)) return none(patient);
  const up = upstreamOf(opts);
  const found = await searchConsents(up, [patient], AbortSignal.timeout(up.timeoutMs));
  return found.get(patient) ?? none(patient);
}
