import type { Principal } from './principal.js';

/** Longest a verified principal is reused without re-verifying the signature and claims. */
export const MAX_CACHE_MS = 5 * 60_000;

interface Entry {
  readonly principal: Principal;
  /** Epoch ms after which the entry is ignored. */
  readonly until: number;
}

/**
 * Verified principals keyed by a digest of the token (never the token itself), LRU-bounded.
 * A Map keeps insertion order, so delete + set moves a key to the young end and the first key is
 * the least recently used: every operation is O(1).
 */
export class PrincipalCache {
  readonly #max: number;
  readonly #entries = new Map<string, Entry>();

  constructor(maxEntries: number) {
    // A non-number must not become an unbounded cache.
    this.#max = Number.isFinite(maxEntries) ? Math.max(0, Math.floor(maxEntries)) : 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cached principal, if still valid at `nowMs` (the token's own `exp` is re-checked). */
  get(key: string, nowMs: number): Principal | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (nowMs >= entry.until || nowMs >= entry.principal.exp * 1000) {
      this.#entries.delete(key);
      return undefined;
    }
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.principal;
  }

  set(key: string, principal: Principal, nowMs: number): void {
    if (this.#max === 0) return;
    const until = Math.min(principal.exp * 1000, nowMs + MAX_CACHE_MS);
    if (until <= nowMs) return;
    this.#entries.delete(key);
    this.#entries.set(key, { principal, until });
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }
}
