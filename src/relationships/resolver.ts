/**
 * Looks up a caller's care relationships on the upstream FHIR server (src/relationships/sources.ts),
 * with the gateway's own credentials, dispatcher and limits, and caches them.
 *
 * - Every configured source is searched, in parallel, whatever subset a request needs: one cache
 *   entry per (caller, configured sources) serves every requirement.
 * - An entry younger than half the TTL is used as it is; one between half and the whole TTL is used
 *   and refreshed in the background; an older one is looked up again before the request goes on.
 *   So a relationship added or removed upstream takes effect within the TTL. Concurrent lookups of
 *   one caller share one upstream lookup (a refresh included). Entries are bounded by
 *   `maxCallers`, least recently used dropped.
 * - Fail closed: when the upstream cannot answer (connection, timeout, a status other than 200, a
 *   body that is not a searchset Bundle) the lookup throws `relationship-unavailable`, never an
 *   empty set. A failed background refresh keeps the entry until its TTL runs out.
 * - With Redis (the audit sink's), replicas share entries under `phi-gateway:rel:<sha256>` for the
 *   TTL: a replica that misses reads it there before asking the upstream. Redis failing only costs
 *   upstream lookups (logged once per outage), never a refusal.
 *
 * Logs name the caller's reference and counts, never a patient id.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import { failFastRedisOptions, waitUntilReady } from '../audit/redis-options.js';
import type { GatewayConfig } from '../config/types.js';
import { GatewayError, isGatewayError } from '../errors.js';
import type { CompiledRelationships, RelationshipSource } from '../policy/plan.js';
import { parseStrictJson } from '../proxy/strict-json.js';
import { readUpstreamBody } from '../proxy/upstream-body.js';
import { type Caller, FHIR_ID, isObj, localReferences, parseCaller, readSearchBundle, readSource, type SearchResult, type SourceResult } from './sources.js';

export interface Relationship {
  /** The policy's source name, e.g. `care-team`. */
  readonly source: string;
  /** The resource that made the link, e.g. `CareTeam/ct-1`. */
  readonly resource: string;
}

export interface CallerRelationships {
  /** e.g. `Practitioner/prac-1`. */
  readonly caller: string;
  /** Patient id -> every relationship found with it (all configured sources). */
  readonly patients: ReadonlyMap<string, readonly Relationship[]>;
  /** Epoch ms the upstream was asked (what it answered is at least this recent). */
  readonly resolvedAt: number;
}

/**
 * Counts since the resolver started, for metrics (src/server/metrics.ts). `hits`: lookups answered
 * from the cache (this replica's or Redis); `misses`: lookups that waited for the upstream;
 * `refreshes`: background refreshes done; `failures`: lookups refused because the upstream could
 * not answer, and background refreshes that failed.
 */
export interface RelationshipStats {
  /** Callers cached now. */
  readonly callers: number;
  readonly hits: number;
  readonly misses: number;
  readonly refreshes: number;
  readonly failures: number;
}

export interface RelationshipResolver {
  /** Throws GatewayError('relationship-unavailable') when the upstream cannot answer (fail closed). */
  /** Synchronous on a cache hit; a promise when the upstream (or Redis) must be asked. */
  lookup(caller: string, config: CompiledRelationships, signal?: AbortSignal): CallerRelationships | Promise<CallerRelationships>;
  stats(): RelationshipStats;
  close(): Promise<void>;
}

export interface RelationshipResolverOptions {
  /** The upstream FHIR base (`config.upstream.url`). */
  readonly upstreamUrl: string;
  /** Other bases the upstream names itself by (`config.upstream.linkBases`): absolute references under them count. */
  readonly linkBases?: readonly string[] | undefined;
  /** The gateway's upstream dispatcher (its TLS and idle timeouts). */
  readonly dispatcher: Dispatcher;
  upstreamAuthorization(): Promise<string | undefined>;
  /** Shared entries across replicas; the resolver does not close it. */
  readonly redis?: Redis | undefined;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Bytes one upstream answer may have (default 16 MiB). */
  readonly responseLimit?: number;
  /** Wall-clock bound on one lookup, all its searches together (default 10 s). */
  readonly timeoutMs?: number;
}

const DEFAULT_RESPONSE_LIMIT = 16 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;
/** After a failed background refresh, the next one waits this long (the entry is still served). */
const REFRESH_RETRY_MS = 1000;
const REDIS_PREFIX = 'phi-gateway:rel:';
/** A relationship's evidence: `Type/id`. */
const RESOURCE_REF = /^[A-Z][A-Za-z]{1,63}\/[A-Za-z0-9\-.]{1,64}$/;

/** A lookup's outcome: `shared` when another replica's entry (Redis) answered it. */
interface Resolved {
  readonly value: CallerRelationships;
  readonly shared: boolean;
}

interface Entry {
  readonly value: CallerRelationships;
  /** No background refresh before this (epoch ms): set when one failed. */
  retryAt: number;
}

function unavailable(detail: string, cause?: unknown): GatewayError {
  return new GatewayError('relationship-unavailable', detail, cause === undefined ? undefined : { cause });
}

function none(caller: string, now: number): CallerRelationships {
  return Object.freeze({ caller, patients: new Map(), resolvedAt: now });
}

/** What identifies the configured sources (and page size): entries made under other ones are not used. */
function signatureOf(config: CompiledRelationships): string {
  const sources = [...config.sources.values()]
    .map((s) => [s.name, s.kind, s.days ?? null] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return JSON.stringify({ sources, maxPatients: config.maxPatients });
}

/** Resolves `p`, or rejects as soon as `signal` aborts (with its reason) without cancelling `p` for others. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
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

export function createRelationshipResolver(opts: RelationshipResolverOptions): RelationshipResolver {
  const { dispatcher, logger, redis } = opts;
  const now = opts.now ?? Date.now;
  const base = opts.upstreamUrl.replace(/\/+$/, '');
  const local = localReferences([base, ...(opts.linkBases ?? [])]);
  const limit = opts.responseLimit ?? DEFAULT_RESPONSE_LIMIT;
  const limits = { responseBodyBytes: limit, decompressedBytes: limit };
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  /** Least recently used first. */
  const cache = new Map<string, Entry>();
  /** The one lookup under way per cache key (blocking or background). */
  const inflight = new Map<string, Promise<Resolved>>();
  const pendingWrites = new Set<Promise<void>>();
  const signatures = new WeakMap<CompiledRelationships, string>();
  const closing = new AbortController();
  let closed = false;
  let hits = 0;
  let misses = 0;
  let refreshes = 0;
  let failures = 0;
  let redisFailing = false;

  /** Per config, each caller's parsed reference and cache key (made once, not on every request). */
  const keys = new WeakMap<CompiledRelationships, Map<string, { caller: Caller; key: string } | null>>();
  function keyOf(callerRef: string, config: CompiledRelationships): { caller: Caller; key: string } | undefined {
    let byCaller = keys.get(config);
    if (byCaller === undefined) {
      byCaller = new Map();
      keys.set(config, byCaller);
    }
    let k = byCaller.get(callerRef);
    if (k === undefined) {
      const caller = parseCaller(callerRef);
      k = caller === undefined ? null : { caller, key: `${caller.ref}\n${signature(config)}` };
      // Bounded like the cache itself.
      if (byCaller.size >= config.maxCallers) byCaller.clear();
      byCaller.set(callerRef, k);
    }
    return k ?? undefined;
  }

  function signature(config: CompiledRelationships): string {
    let s = signatures.get(config);
    if (s === undefined) {
      s = signatureOf(config);
      signatures.set(config, s);
    }
    return s;
  }

  // ---------------------------------------------------------------------------------------------
  // Upstream

  async function search(resourceType: string, params: readonly (readonly [string, string])[], signal: AbortSignal): Promise<SearchResult> {
    const what = `${resourceType} search`;
    const headers: Record<string, string> = {
      accept: 'application/fhir+json',
      'accept-encoding': 'identity',
      // A parameter the upstream does not know must fail the search, not be dropped from it.
      prefer: 'handling=strict',
    };
    let res: Awaited<ReturnType<typeof request>>;
    try {
      const authorization = await opts.upstreamAuthorization();
      if (authorization) headers.authorization = authorization;
      const query = new URLSearchParams(params as [string, string][]).toString();
      res = await request(`${base}/${resourceType}?${query}`, { method: 'GET', headers, dispatcher, signal });
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
      const body = await readUpstreamBody(res.body, res.headers, limits);
      value = body.kind === 'json' ? body.value : undefined;
    } catch (e) {
      res.body.destroy();
      throw unavailable(`${what}: ${isGatewayError(e) ? e.code : 'unreadable body'}`, e);
    }
    try {
      return readSearchBundle(value, resourceType);
    } catch (e) {
      throw unavailable(`${what}: ${(e as Error).message}`);
    }
  }

  /** Every configured source for the caller, as one CallerRelationships (throws `relationship-unavailable`). */
  async function fromUpstream(caller: Caller, config: CompiledRelationships, background: boolean): Promise<CallerRelationships> {
    const resolvedAt = now();
    const started = Date.now();
    const cut = new AbortController();
    const signal = AbortSignal.any([cut.signal, closing.signal, AbortSignal.timeout(timeoutMs)]);
    const input = { caller, count: config.maxPatients, now: resolvedAt, local, search: (t: string, p: readonly (readonly [string, string])[]) => search(t, p, signal) };
    let results: { source: RelationshipSource; result: SourceResult }[];
    try {
      results = await Promise.all(
        [...config.sources.values()].map(async (source) => {
          try {
            return { source, result: await readSource(source, input) };
          } catch (e) {
            // The lookup has failed: the other sources' searches stop.
            cut.abort();
            throw isGatewayError(e) ? e : unavailable(`${source.kind} source: ${(e as Error)?.message}`, e);
          }
        }),
      );
    } catch (e) {
      const err = isGatewayError(e) ? e : unavailable('lookup failed', e);
      logger.warn({ caller: caller.ref, detail: err.detail, background }, background ? 'care relationships could not be refreshed: the cached ones are used until they expire' : 'care relationships could not be looked up: requests that need them are refused');
      throw err;
    }
    const patients = new Map<string, Relationship[]>();
    const seen = new Set<string>();
    for (const { source, result } of results) {
      if (result.truncated) {
        logger.warn({ caller: caller.ref, source: source.name, maxPatients: config.maxPatients }, 'relationship source has more than one page: only the first is used, later relationships are not found');
      }
      for (const link of result.links) {
        const key = `${link.patient}\n${source.name}\n${link.resource}`;
        if (seen.has(key)) continue;
        seen.add(key);
        let rels = patients.get(link.patient);
        if (rels === undefined) {
          rels = [];
          patients.set(link.patient, rels);
        }
        rels.push(Object.freeze({ source: source.name, resource: link.resource }));
      }
    }
    for (const rels of patients.values()) Object.freeze(rels);
    logger.debug({ caller: caller.ref, patients: patients.size, ms: Date.now() - started, background }, 'care relationships looked up');
    return Object.freeze({ caller: caller.ref, patients, resolvedAt });
  }

  // ---------------------------------------------------------------------------------------------
  // Redis

  function redisFailed(e: unknown): void {
    if (redisFailing) return;
    redisFailing = true;
    logger.warn({ err: (e as Error)?.message ?? String(e) }, 'shared relationship cache in Redis unavailable: relationships are looked up on the upstream');
  }

  function redisWorks(): void {
    if (!redisFailing) return;
    redisFailing = false;
    logger.info('shared relationship cache in Redis available again');
  }

  function redisKey(caller: Caller, sig: string): string {
    return REDIS_PREFIX + createHash('sha256').update(`${base}\n${caller.ref}\n${sig}`).digest('hex');
  }

  function encode(value: CallerRelationships): string {
    const patients = [...value.patients].map(([id, rels]) => [id, rels.map((r) => [r.source, r.resource])]);
    return JSON.stringify({ v: 1, caller: value.caller, resolvedAt: value.resolvedAt, patients });
  }

  /** A shared entry, when well formed and made for this caller under these sources; else undefined. */
  function decode(text: string, caller: Caller, config: CompiledRelationships): CallerRelationships | undefined {
    let v: unknown;
    try {
      v = parseStrictJson(text, 'internal');
    } catch {
      return undefined;
    }
    if (!isObj(v) || v.v !== 1 || v.caller !== caller.ref || typeof v.resolvedAt !== 'number' || !Number.isFinite(v.resolvedAt) || !Array.isArray(v.patients)) return undefined;
    const patients = new Map<string, readonly Relationship[]>();
    for (const p of v.patients as unknown[]) {
      if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'string' || !FHIR_ID.test(p[0]) || !Array.isArray(p[1])) return undefined;
      const rels: Relationship[] = [];
      for (const r of p[1] as unknown[]) {
        if (!Array.isArray(r) || r.length !== 2 || typeof r[0] !== 'string' || !config.sources.has(r[0]) || typeof r[1] !== 'string' || !RESOURCE_REF.test(r[1])) return undefined;
        rels.push(Object.freeze({ source: r[0], resource: r[1] }));
      }
      patients.set(p[0], Object.freeze(rels));
    }
    // Another replica's clock ahead of ours must not make the entry outlive the TTL here.
    return Object.freeze({ caller: caller.ref, patients, resolvedAt: Math.min(v.resolvedAt, now()) });
  }

  async function readShared(key: string, caller: Caller, config: CompiledRelationships): Promise<CallerRelationships | undefined> {
    if (redis === undefined) return undefined;
    // A client that is not connected would queue the command (or refuse it): the upstream answers instead.
    if (redis.status !== 'ready') {
      redisFailed(new Error(`Redis ${redis.status}`));
      return undefined;
    }
    let text: string | null;
    try {
      text = await redis.get(key);
    } catch (e) {
      redisFailed(e);
      return undefined;
    }
    redisWorks();
    return text === null ? undefined : decode(text, caller, config);
  }

  function writeShared(key: string, value: CallerRelationships, ttlMs: number): void {
    if (redis === undefined || redis.status !== 'ready') return;
    const px = Math.floor(ttlMs - (now() - value.resolvedAt));
    if (px <= 0) return;
    const write: Promise<void> = redis.set(key, encode(value), 'PX', px).then(redisWorks, redisFailed);
    pendingWrites.add(write);
    void write.finally(() => pendingWrites.delete(write));
  }

  // ---------------------------------------------------------------------------------------------
  // Cache

  function remember(key: string, value: CallerRelationships, maxCallers: number): void {
    cache.delete(key);
    cache.set(key, { value, retryAt: 0 });
    for (const oldest of cache.keys()) {
      if (cache.size <= maxCallers) break;
      cache.delete(oldest);
    }
  }

  /**
   * The caller's relationships from Redis or the upstream, stored in the cache; one at a time per
   * key. A refresh of `current` takes a shared entry only when it is newer and still fresh.
   */
  function resolve(key: string, caller: Caller, config: CompiledRelationships, current: Entry | undefined): Promise<Resolved> {
    let p = inflight.get(key);
    if (p !== undefined) return p;
    p = (async () => {
      const sig = signature(config);
      const shared = redis === undefined ? undefined : redisKey(caller, sig);
      if (shared !== undefined) {
        const found = await readShared(shared, caller, config);
        const maxAge = current === undefined ? config.ttlMs : config.ttlMs / 2;
        if (found !== undefined && now() - found.resolvedAt < maxAge && (current === undefined || found.resolvedAt > current.value.resolvedAt)) {
          remember(key, found, config.maxCallers);
          return { value: found, shared: true };
        }
      }
      const value = await fromUpstream(caller, config, current !== undefined);
      if (closed) throw unavailable('resolver closed');
      remember(key, value, config.maxCallers);
      if (shared !== undefined) writeShared(shared, value, config.ttlMs);
      return { value, shared: false };
    })().finally(() => inflight.delete(key));
    inflight.set(key, p);
    return p;
  }

  function refresh(key: string, caller: Caller, config: CompiledRelationships, entry: Entry): void {
    resolve(key, caller, config, entry).then(
      () => {
        refreshes++;
      },
      () => {
        failures++;
        entry.retryAt = now() + REFRESH_RETRY_MS;
      },
    );
  }

  return {
    // Not async: a cache hit is answered synchronously (no promise turn on the request's hot path).
    lookup(callerRef, config, signal) {
      if (closed) return Promise.reject(unavailable('resolver closed'));
      const k = keyOf(callerRef, config);
      // Only practitioners (and their roles) have care relationships: nobody else is asked about.
      if (k === undefined || config.sources.size === 0) return none(callerRef, now());
      const { caller, key } = k;
      const entry = cache.get(key);
      if (entry !== undefined) {
        const t = now();
        const age = t - entry.value.resolvedAt;
        if (age < config.ttlMs) {
          cache.delete(key);
          cache.set(key, entry);
          hits++;
          if (age >= config.ttlMs / 2 && !inflight.has(key) && t >= entry.retryAt) refresh(key, caller, config, entry);
          return entry.value;
        }
        cache.delete(key);
      }
      return abortable(resolve(key, caller, config, undefined), signal).then(
        ({ value, shared }) => {
          if (shared) hits++;
          else misses++;
          return value;
        },
        (e: unknown) => {
          if (isGatewayError(e) && e.code === 'relationship-unavailable') failures++;
          throw e;
        },
      );
    },
    stats() {
      return { callers: cache.size, hits, misses, refreshes, failures };
    },
    async close() {
      if (closed) return;
      closed = true;
      closing.abort(unavailable('resolver closed'));
      await Promise.allSettled([...inflight.values(), ...pendingWrites]);
      cache.clear();
    },
  };
}

/**
 * The resolver for a gateway: its upstream, limits and total timeout, and its own Redis client when
 * the audit sink is Redis (closed with the resolver).
 */
export async function openRelationshipResolver(
  config: GatewayConfig,
  opts: { logger: Logger; dispatcher: Dispatcher; upstreamAuthorization(): Promise<string | undefined>; now?: () => number },
): Promise<RelationshipResolver> {
  let redis: Redis | undefined;
  if (config.audit.sink === 'redis') {
    redis = new Redis(config.audit.url, failFastRedisOptions(config.audit.commandTimeoutMs));
    // Failures surface as rejected commands (the upstream answers instead); the event would only repeat them.
    redis.on('error', () => {});
    await waitUntilReady(redis, undefined, { untilRefused: true });
  }
  const resolver = createRelationshipResolver({
    upstreamUrl: config.upstream.url,
    linkBases: config.upstream.linkBases,
    dispatcher: opts.dispatcher,
    upstreamAuthorization: opts.upstreamAuthorization,
    redis,
    logger: opts.logger,
    now: opts.now,
    responseLimit: config.limits.responseBodyBytes,
    timeoutMs: config.upstream.totalTimeoutMs,
  });
  if (redis === undefined) return resolver;
  const client = redis;
  return {
    lookup: (caller, relationships, signal) => resolver.lookup(caller, relationships, signal),
    stats: () => resolver.stats(),
    async close() {
      await resolver.close();
      client.disconnect();
    },
  };
}
