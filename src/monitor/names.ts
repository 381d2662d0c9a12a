/**
 * Family names of patients, for the `family-name` anomaly rule, looked up from the FHIR server with
 * the gateway's own credentials, after the response was released (no added latency).
 *
 * Why a lookup rather than the released resources: the rule matters most where the caller cannot
 * see names at all (a coder's Patient view has no name; an Observation read discloses a patient id
 * and no Patient). Only keyed hashes of the normalized names are kept, never the names, and nothing
 * leaves this module but "matches" or "does not match".
 */
import { createHmac, randomBytes } from 'node:crypto';
import { type Dispatcher, fetch as undiciFetch } from 'undici';
import { normalizeFamily } from './rules.js';

export interface FamilyNameLookup {
  /** True when one of the patient's family names equals `family` (normalized). Throws when unknown. */
  matches(patientId: string, family: string): Promise<boolean>;
  /**
   * The same judgement for one family name against many patients: the name is normalized and
   * digested once (a searchset discloses up to hundreds of patients). Optional; `matches` otherwise.
   */
  matcher?(family: string): (patientId: string) => Promise<boolean>;
}

export interface UpstreamLookupOptions {
  /** FHIR base URL of the upstream. */
  readonly url: string;
  readonly authorization: () => Promise<string | undefined>;
  readonly timeoutMs?: number;
  /** Cache entries kept (default 10,000), for ttlMs (default 10 min). */
  readonly maxEntries?: number;
  readonly ttlMs?: number;
  /**
   * The gateway's upstream dispatcher: the proxy's CA, client certificate and timeouts. Without
   * it the system CAs and no client certificate are used, which an mTLS upstream refuses.
   */
  readonly dispatcher?: Dispatcher | undefined;
  /** Replaces the HTTP client (tests); `dispatcher` is then unused. */
  readonly fetch?: typeof fetch;
}

/** What the lookup reads of a response: the global and undici fetch both answer this. */
interface LookupResponse {
  readonly status: number;
  readonly ok: boolean;
  readonly body: { cancel(): Promise<void> } | null;
  json(): Promise<unknown>;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function createUpstreamFamilyLookup(o: UpstreamLookupOptions): FamilyNameLookup {
  // A per-process key: the cache holds nothing that could be matched against a name list offline.
  const key = randomBytes(32);
  const digestNormalized = (n: string) => createHmac('sha256', key).update(n).digest('base64url');
  const digest = (s: string) => digestNormalized(normalizeFamily(s));
  const cache = new Map<string, { hashes: ReadonlySet<string>; at: number }>();
  const inflight = new Map<string, Promise<ReadonlySet<string>>>();
  const max = o.maxEntries ?? 10_000;
  const ttl = o.ttlMs ?? 600_000;
  const injected = o.fetch;
  const get = (url: string, init: { headers: Record<string, string>; signal: AbortSignal }): Promise<LookupResponse> =>
    injected ? injected(url, { ...init, redirect: 'manual' }) : undiciFetch(url, { ...init, redirect: 'manual', dispatcher: o.dispatcher });
  const base = o.url.replace(/\/+$/, '');

  async function load(id: string): Promise<ReadonlySet<string>> {
    const headers: Record<string, string> = { accept: 'application/fhir+json' };
    const auth = await o.authorization();
    if (auth) headers.authorization = auth;
    const res = await get(`${base}/Patient/${id}`, { headers, signal: AbortSignal.timeout(o.timeoutMs ?? 5000) });
    if (res.status === 404 || res.status === 410) {
      await res.body?.cancel().catch(() => {});
      return new Set();
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw new Error(`patient lookup: upstream ${res.status}`);
    }
    const body = (await res.json()) as { resourceType?: unknown; name?: unknown };
    if (body?.resourceType !== 'Patient') throw new Error('patient lookup: not a Patient');
    const hashes = new Set<string>();
    if (Array.isArray(body.name)) {
      for (const n of body.name) {
        const family = (n as { family?: unknown })?.family;
        if (typeof family === 'string' && family.trim() !== '') hashes.add(digest(family));
      }
    }
    return hashes;
  }

  async function hashesOf(id: string): Promise<ReadonlySet<string>> {
    const hit = cache.get(id);
    if (hit && Date.now() - hit.at < ttl) return hit.hashes;
    let p = inflight.get(id);
    if (!p) {
      p = load(id).finally(() => inflight.delete(id));
      inflight.set(id, p);
    }
    const hashes = await p;
    if (cache.size >= max) cache.delete(cache.keys().next().value as string);
    cache.set(id, { hashes, at: Date.now() });
    return hashes;
  }

  const matcher = (family: string): ((patientId: string) => Promise<boolean>) => {
    const normalized = normalizeFamily(family);
    const want = normalized === '' ? undefined : digestNormalized(normalized);
    return async (patientId) => {
      if (want === undefined || !ID.test(patientId)) return false;
      return (await hashesOf(patientId)).has(want);
    };
  };

  return {
    async matches(patientId, family) {
      return matcher(family)(patientId);
    },
    matcher,
  };
}
