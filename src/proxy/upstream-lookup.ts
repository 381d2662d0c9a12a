/**
 * What the gateway's own lookups on the upstream (care relationships, consents) share: one search
 * page asked for with the gateway's credentials and read strictly as a searchset Bundle, a wait a
 * request can give up on without cancelling the lookup for others, and the cache both keep.
 *
 * - Every failure to answer is thrown as the resolver's own refusal (`unavailable`, made with its
 *   error code): fail closed, never an empty answer.
 * - The cache keeps entries least recently used first, bounded by the caller's maximum. An entry
 *   younger than half the TTL is used as it is; one between half and the whole TTL is used and due
 *   for a background refresh (unless a failed one asked to wait); an older one is dropped.
 */
import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import type { GatewayConfig } from '../config/types.js';
import { GatewayError, isGatewayError } from '../errors.js';
import { type Obj, readSearchBundle, type SearchResult } from '../relationships/sources.js';
import { readsAsParsed } from './strict-json.js';
import { type BodyLimits, readUpstreamBody } from './upstream-body.js';

/** Bytes one upstream answer may have, unless configured. */
export const DEFAULT_RESPONSE_LIMIT = 16 * 1024 * 1024;
/** Wall-clock bound on one lookup, unless configured. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** After a failed background refresh, the next one waits this long (the entry is still served). */
export const REFRESH_RETRY_MS = 1000;

/** What a resolver takes from the gateway besides its configuration. */
export interface LookupDeps {
  readonly logger: Logger;
  /** The gateway's upstream dispatcher (its TLS and idle timeouts). */
  readonly dispatcher: Dispatcher;
  upstreamAuthorization(): Promise<string | undefined>;
  readonly now?: (() => number) | undefined;
}

/** How a resolver reaches the upstream, and its bounds. */
export interface UpstreamLookupOptions extends LookupDeps {
  /** The upstream FHIR base (`config.upstream.url`). */
  readonly upstreamUrl: string;
  /** Other bases the upstream names itself by (`config.upstream.linkBases`). */
  readonly linkBases?: readonly string[] | undefined;
  /** Bytes one upstream answer may have (default 16 MiB). */
  readonly responseLimit?: number;
  /** Wall-clock bound on one lookup (default 10 s). */
  readonly timeoutMs?: number;
}

/** A resolver's options from a gateway's configuration: its upstream, link bases, response limit and total timeout. */
export function upstreamLookupOptions(config: GatewayConfig, deps: LookupDeps): UpstreamLookupOptions {
  return {
    upstreamUrl: config.upstream.url,
    linkBases: config.upstream.linkBases,
    dispatcher: deps.dispatcher,
    upstreamAuthorization: deps.upstreamAuthorization,
    logger: deps.logger,
    now: deps.now,
    responseLimit: config.limits.responseBodyBytes,
    timeoutMs: config.upstream.totalTimeoutMs,
  };
}

/** A resolver's refusal: its own error code, with this detail (and cause). */
export type Unavailable = (detail: string, cause?: unknown) => GatewayError;

/** Resolves `p`, or rejects as soon as `signal` aborts (with its reason) without cancelling `p` for others. */
export function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, unavailable: Unavailable): Promise<T> {
  if (signal === undefined) return p;
  const reason = (): GatewayError => (isGatewayError(signal.reason) ? signal.reason : unavailable('lookup aborted'));
  if (signal.aborted) return Promise.reject(reason());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(reason());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Upstream

/** How a resolver reaches the upstream. */
export interface SearchUpstream {
  /** The gateway's upstream dispatcher (its TLS and idle timeouts). */
  readonly dispatcher: Dispatcher;
  authorization(): Promise<string | undefined>;
  readonly limits: BodyLimits;
  readonly unavailable: Unavailable;
}

export interface SearchPageOptions {
  /**
   * JSON that reads two ways in other parsers (a duplicate key, invalid UTF-8) is refused, and a
   * body refused says why (`code (detail)`), not only its code.
   */
  readonly strict?: boolean;
}

/**
 * One page of a `resourceType` search at `url`: its SearchResult, and the Bundle it was read from.
 * Throws `up.unavailable(...)` when the upstream cannot answer: connection, a status other than
 * 200, a body over the limits or not a searchset Bundle.
 */
export async function searchPage(
  up: SearchUpstream,
  url: string,
  resourceType: string,
  signal: AbortSignal,
  opts: SearchPageOptions = {},
): Promise<{ result: SearchResult; bundle: Obj }> {
  const { unavailable } = up;
  const what = `${resourceType} search`;
  const headers: Record<string, string> = {
    accept: 'application/fhir+json',
    'accept-encoding': 'identity',
    // A parameter the upstream does not know must fail the search, not be dropped from it.
    prefer: 'handling=strict',
  };
  let res: Awaited<ReturnType<typeof request>>;
  try {
    const authorization = await up.authorization();
    if (authorization) headers.authorization = authorization;
    res = await request(url, { method: 'GET', headers, dispatcher: up.dispatcher, signal });
  } catch (e) {
    const code = String((e as { code?: unknown } | undefined)?.code ?? (signal.aborted ? 'aborted' : 'connection error'));
    throw unavailable(`${what}: ${isGatewayError(e) ? e.code : code}`, e);
  }
  if (res.statusCode !== 200) {
    res.body.dump().catch(() => {});
    throw unavailable(`${what}: upstream ${res.statusCode}`);
  }
  let value: unknown;
  try {
    const body = await readUpstreamBody(res.body, res.headers, up.limits);
    // A duplicate key (or invalid UTF-8) reads differently in other parsers: which of two values
    // the upstream meant is unknown.
    if (opts.strict && body.kind === 'json' && !readsAsParsed(body.raw, body.value)) throw new GatewayError('upstream-bad-response', 'ambiguous JSON');
    value = body.kind === 'json' ? body.value : undefined;
  } catch (e) {
    res.body.destroy();
    const detail = isGatewayError(e) ? (opts.strict ? `${e.code} (${e.detail})` : e.code) : 'unreadable body';
    throw unavailable(`${what}: ${detail}`, e);
  }
  try {
    return { result: readSearchBundle(value, resourceType), bundle: value as Obj };
  } catch (e) {
    throw unavailable(`${what}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Cache

/**
 * Counts since a resolver started, for metrics (src/server/metrics.ts). `hits`: answered from the
 * cache; `misses`: waited for the upstream; `refreshes`: background refreshes done; `failures`:
 * refused because the upstream could not answer, and background refreshes that failed.
 */
export interface LookupCounts {
  readonly hits: number;
  readonly misses: number;
  readonly refreshes: number;
  readonly failures: number;
}

/** A resolver's counts as it adds to them. */
export type Counting = { -readonly [K in keyof LookupCounts]: number };

/** Counts of a resolver that has not looked anything up yet. */
export function noLookups(): Counting {
  return { hits: 0, misses: 0, refreshes: 0, failures: 0 };
}

export interface CachedLookup<V> {
  readonly value: V;
  /** Epoch ms the upstream was asked (what it answered is at least this recent). */
  readonly resolvedAt: number;
  /** No background refresh before this (epoch ms): set when one failed. */
  retryAt: number;
}

/** Whether a fresh entry is due for a background refresh at `t`: past half the TTL, and not told to wait. */
export function refreshDue(entry: CachedLookup<unknown>, t: number, ttlMs: number): boolean {
  return t - entry.resolvedAt >= ttlMs / 2 && t >= entry.retryAt;
}

/** Lookups by key, least recently used first. */
export class LookupCache<V> {
  private readonly entries = new Map<string, CachedLookup<V>>();

  /** `dropped` hears of every key the cache lets go of (expired, evicted, deleted), not of `clear`. */
  constructor(private readonly dropped?: (key: string) => void) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry as it is, its place in the order kept. */
  peek(key: string): CachedLookup<V> | undefined {
    return this.entries.get(key);
  }

  /** Makes `entry` (the key's) the most recently used. */
  touch(key: string, entry: CachedLookup<V>): void {
    this.entries.delete(key);
    this.entries.set(key, entry);
  }

  /** The key's entry when younger than `ttlMs` at `t`, made the most recently used; an older one is dropped. */
  fresh(key: string, t: number, ttlMs: number): CachedLookup<V> | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (t - entry.resolvedAt < ttlMs) {
      this.touch(key, entry);
      return entry;
    }
    this.delete(key);
    return undefined;
  }

  /** Stores `value` as the most recently used, then drops the least recently used beyond `max`. */
  set(key: string, value: V, resolvedAt: number, max: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value, resolvedAt, retryAt: 0 });
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= max) break;
      this.delete(oldest);
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
    this.dropped?.(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
