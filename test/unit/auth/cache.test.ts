import { describe, expect, it } from 'vitest';
import { MAX_CACHE_MS, PrincipalCache } from '../../../src/auth/cache.js';
import type { Principal } from '../../../src/auth/principal.js';

const T = 1_000_000_000_000;

function principal(sub: string, expSec: number): Principal {
  return { iss: 'i', sub, clientId: undefined, jti: undefined, roles: [], tokenPurposes: undefined, patient: undefined, scopes: undefined, familyName: undefined, exp: expSec };
}

describe('PrincipalCache', () => {
  it('keeps an entry until the earlier of exp and five minutes', () => {
    const c = new PrincipalCache(10);
    const long = principal('long', T / 1000 + 3600);
    const short = principal('short', T / 1000 + 60);
    c.set('long', long, T);
    c.set('short', short, T);
    expect(c.get('long', T + MAX_CACHE_MS - 1)).toBe(long);
    expect(c.get('long', T + MAX_CACHE_MS)).toBeUndefined();
    expect(c.get('short', T + 59_999)).toBe(short);
    expect(c.get('short', T + 60_000)).toBeUndefined();
  });
  it('drops expired entries when read', () => {
    const c = new PrincipalCache(10);
    c.set('a', principal('a', T / 1000 + 1), T);
    expect(c.size).toBe(1);
    c.get('a', T + 1000);
    expect(c.size).toBe(0);
  });
  it('does not store an already expired principal', () => {
    const c = new PrincipalCache(10);
    c.set('a', principal('a', T / 1000 - 1), T);
    expect(c.size).toBe(0);
  });
  it('evicts the least recently used entry beyond its bound', () => {
    const c = new PrincipalCache(3);
    for (const k of ['a', 'b', 'c']) c.set(k, principal(k, T / 1000 + 3600), T);
    c.get('a', T);
    c.set('d', principal('d', T / 1000 + 3600), T);
    expect(c.size).toBe(3);
    expect(c.get('b', T)).toBeUndefined();
    expect(c.get('a', T)?.sub).toBe('a');
    expect(c.get('c', T)?.sub).toBe('c');
    expect(c.get('d', T)?.sub).toBe('d');
  });
  it('stores nothing when its size is 0', () => {
    const c = new PrincipalCache(0);
    c.set('a', principal('a', T / 1000 + 3600), T);
    expect(c.get('a', T)).toBeUndefined();
  });
  it('treats a non-numeric bound as 0, never as unbounded', () => {
    const c = new PrincipalCache(Number.NaN);
    c.set('a', principal('a', T / 1000 + 3600), T);
    expect(c.size).toBe(0);
  });
  it('stays bounded under many distinct keys', () => {
    const c = new PrincipalCache(100);
    for (let i = 0; i < 10_000; i++) c.set(String(i), principal(String(i), T / 1000 + 3600), T);
    expect(c.size).toBe(100);
    expect(c.get('9999', T)?.sub).toBe('9999');
    expect(c.get('0', T)).toBeUndefined();
  });
});
