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
import { failFastRedisOptions, waitUntilReady } from '../audit/redis-options.js';
import type { GatewayConfig } from '../config/types.js';
import { GatewayError, isGatewayError } from '../errors.js';
import type { CompiledRelationships, RelationshipSource } from '../policy/plan.js';
import { parseStrictJson } from '../proxy/strict-json.js';
import {
  abortable,
  type CachedLookup,
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
import { type Caller, FHIR_ID, isObj, localReferences, parseCaller, readSource, type SearchResult, type SourceResult } from './sources.js';

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
export interface RelationshipStats extends LookupCounts {
  /** Callers cached now. */
  readonly callers: number;
}

export interface RelationshipResolver {
  /** Throws GatewayError('relationship-unavailable') when the upstream cannot answer (fail closed). */
  /** Synchronous on a cache hit; a promise when the upstream (or Redis) must be asked. */
  lookup(caller: string, config: CompiledRelationships, signal?: AbortSignal): CallerRelationships | Promise<CallerRelationships>;
  stats(): RelationshipStats;
  close(): Promise<void>;
}

/**
 * The upstream and its bounds (absolute references under `linkBases` count; `timeoutMs` bounds one
 * lookup, all its searches together), and Redis.
 */
export interface RelationshipResolverOptions extends UpstreamLookupOptions {
  /** Shared entries across replicas; the resolver does not close it. */
  readonly redis?: Redis | undefined;
}

const REDIS_PREFIX = 'phi-gateway:rel:';
/** A relationship's evidence: `Type/id`. */
const RESOURCE_REF = /^[A-Z][A-Za-z]{1,63}\/[A-Za-z0-9\-.]{1,64}$/;

/** A lookup's outcome: `shared` when another replica's entry (Redis) answered it. */
interface Resolved {
  readonly value: CallerRelationships;
  readonly shared: boolean;
}

type Entry = CachedLookup<CallerRelationships>;

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

export function createRelationshipResolver(opts: RelationshipResolverOptions): RelationshipResolver {
  const { dispatcher, logger, redis } = opts;
  const now = opts.now ?? Date.now;
  const base = opts.upstreamUrl.replace(/\/+$/, '');
  const local = localReferences([base, ...(opts.linkBases ?? [])]);
  const limit = opts.responseLimit ?? DEFAULT_RESPONSE_LIMIT;
  const up: SearchUpstream = {
    dispatcher,
    authorization: () => opts.upstreamAuthorization(),
    limits: { responseBodyBytes: limit, decompressedBytes: limit },
    unavailable,
  };
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  const cache = new LookupCache<CallerRelationships>();
  /** The one lookup under way per cache key (blocking or background). */
  const inflight = new Map<string, Promise<Resolved>>();
  const pendingWrites = new Set<Promise<void>>();
  const signatures = new WeakMap<CompiledRelationships, string>();
  const closing = new AbortController();
  let closed = false;
  const counts = noLookups();
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
    const query = new URLSearchParams(params as [string, string][]).toString();
    return (await searchPage(up, `${base}/${resourceType}?${query}`, resourceType, signal)).result;
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
    cache.set(key, value, value.resolvedAt, maxCallers);
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
        counts.refreshes++;
      },
      () => {
        counts.failures++;
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
      const t = now();
      const entry = cache.fresh(key, t, config.ttlMs);
      if (entry !== undefined) {
        counts.hits++;
        if (refreshDue(entry, t, config.ttlMs) && !inflight.has(key)) refresh(key, caller, config, entry);
        return entry.value;
      }
      return abortable(resolve(key, caller, config, undefined), signal, unavailable).then(
        ({ value, shared }) => {
          if (shared) counts.hits++;
          else counts.misses++;
          return value;
        },
        (e: unknown) => {
          if (isGatewayError(e) && e.code === 'relationship-unavailable') counts.failures++;
          throw e;
        },
      );
    },
    stats() {
      return { callers: cache.size, ...counts };
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
export async function openRelationshipResolver(config: GatewayConfig, opts: LookupDeps): Promise<RelationshipResolver> {
  let redis: Redis | undefined;
  if (config.audit.sink === 'redis') {
    redis = new Redis(config.audit.url, failFastRedisOptions(config.audit.commandTimeoutMs));
    // Failures surface as rejected commands (the upstream answers instead); the event would only repeat them.
    redis.on('error', () => {});
    await waitUntilReady(redis, undefined, { untilRefused: true });
  }
  const resolver = createRelationshipResolver({ ...upstreamLookupOptions(config, opts), redis });
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
