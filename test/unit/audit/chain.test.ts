import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../../src/audit/canonical.js';
import { chainRecords, GENESIS, genesisHead, hashMatches, recordHash, sealRecord } from '../../../src/audit/chain.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { verifyChains } from '../../../src/audit/verify.js';
import { sampleRecord } from './fixtures.js';

describe('canonicalJson', () => {
  it('sorts keys at every depth and drops undefined members', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: undefined, x: 'é' }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"x":"é","z":1}]},"b":1}');
  });
  it('is independent of key insertion order', () => {
    expect(canonicalJson({ a: 1, b: 2 })).toBe(canonicalJson({ b: 2, a: 1 }));
  });
  it('writes undefined array items as null, like JSON', () => {
    expect(canonicalJson([undefined, 1])).toBe(JSON.stringify([undefined, 1]));
  });
  it('keeps a __proto__ key as data', () => {
    expect(canonicalJson(JSON.parse('{"__proto__":{"x":1},"a":2}'))).toBe('{"__proto__":{"x":1},"a":2}');
  });
});

describe('chainRecords', () => {
  it('numbers from 1, links prev to the previous hash and starts from genesis', () => {
    const { chained, next } = chainRecords(genesisHead('w1'), [sampleRecord(1), sampleRecord(2), sampleRecord(3)]);
    expect(chained.map((c) => c.chain.seq)).toEqual([1, 2, 3]);
    expect(chained[0].chain.prev).toBe(GENESIS);
    expect(chained[1].chain.prev).toBe(chained[0].chain.hash);
    expect(chained[2].chain.prev).toBe(chained[1].chain.hash);
    expect(next).toEqual({ writer: 'w1', seq: 3, hash: chained[2].chain.hash });
    for (const c of chained) expect(c.chain.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('continues from a head exactly as one long batch would', () => {
    const recs = [1, 2, 3, 4].map((i) => sampleRecord(i));
    const all = chainRecords(genesisHead('w'), recs).chained;
    const a = chainRecords(genesisHead('w'), recs.slice(0, 2));
    const b = chainRecords(a.next, recs.slice(2));
    expect([...a.chained, ...b.chained]).toEqual(all);
  });

  it('hash covers content and chain position but not the hash itself', () => {
    const [c] = chainRecords(genesisHead('w'), [sampleRecord(1)]).chained;
    expect(hashMatches(c)).toBe(true);
    const edited = { ...c, status: 500 } as ChainedRecord;
    expect(hashMatches(edited)).toBe(false);
    const moved = { ...c, chain: { ...c.chain, seq: 2 } } as ChainedRecord;
    expect(hashMatches(moved)).toBe(false);
    const otherWriter = { ...c, chain: { ...c.chain, writer: 'x' } } as ChainedRecord;
    expect(hashMatches(otherWriter)).toBe(false);
  });

  it('verifies after a JSON round trip even with undefined fields and key reordering', () => {
    const [c] = chainRecords(genesisHead('w'), [sampleRecord(1, { purpose: undefined, breakGlass: undefined })]).chained;
    const parsed = JSON.parse(JSON.stringify(c)) as ChainedRecord;
    const reordered = Object.fromEntries(Object.entries(parsed).reverse()) as unknown as ChainedRecord;
    expect(recordHash(reordered)).toBe(c.chain.hash);
  });

  it('does not mutate its input and ignores a forged chain field on it', () => {
    const input = { ...sampleRecord(1), chain: { writer: 'evil', seq: 99, prev: 'x', hash: 'y' } };
    const snapshot = structuredClone(input);
    const [c] = chainRecords(genesisHead('w'), [input]).chained;
    expect(input).toEqual(snapshot);
    expect(c.chain.writer).toBe('w');
    expect(c.chain.seq).toBe(1);
  });

  it('returns a copy the caller cannot change afterwards', () => {
    const input = sampleRecord(1);
    const [c] = chainRecords(genesisHead('w'), [input]).chained;
    (input.disclosed.patients as string[]).push('other');
    expect(c.disclosed.patients).toEqual(['p1']);
    expect(hashMatches(c)).toBe(true);
  });

  it('rejects a writer id with whitespace (it is written into positions and logs)', () => {
    expect(() => genesisHead('a b')).toThrow();
    expect(() => genesisHead('')).toThrow();
  });
});

describe('verifyChains (in memory)', () => {
  function chain(writer: string, n: number, seal = false): ChainedRecord[] {
    const r = chainRecords(genesisHead(writer), Array.from({ length: n }, (_, i) => sampleRecord(i)));
    if (!seal) return r.chained;
    return [...r.chained, ...chainRecords(r.next, [sealRecord(r.next, 'seal', '2025-01-01T00:00:00.000Z')]).chained];
  }

  it('accepts interleaved sealed writers', async () => {
    const a = chain('a', 3, true);
    const b = chain('b', 2, true);
    const report = await verifyChains([a[0], b[0], a[1], a[2], b[1], b[2], a[3]]);
    expect(report.ok).toBe(true);
    expect(report.writers).toBe(2);
    expect(report.records).toBe(7);
    expect(report.warnings).toEqual([]);
  });

  it('warns (not fails) about an unsealed writer', async () => {
    const report = await verifyChains(chain('a', 3));
    expect(report.ok).toBe(true);
    expect(report.warnings.map((w) => w.kind)).toEqual(['unsealed']);
  });

  it('fails on a seal whose count disagrees', async () => {
    const r = chainRecords(genesisHead('a'), [sampleRecord(1), sampleRecord(2)]);
    const lying = chainRecords(r.next, [sealRecord({ ...r.next, seq: 5 }, 's', '2025-01-01T00:00:00.000Z')]);
    const report = await verifyChains([...r.chained, ...lying.chained]);
    expect(report.first?.kind).toBe('seal-count');
  });

  it('fails on a record after the seal', async () => {
    const sealed = chain('a', 2, true);
    const extra = chainRecords({ writer: 'a', seq: 3, hash: sealed[2].chain.hash }, [sampleRecord(9)]).chained;
    const report = await verifyChains([...sealed, ...extra]);
    expect(report.first?.kind).toBe('after-seal');
    expect(report.first?.seq).toBe(4);
  });

  it('fails on a chain not starting at seq 1, naming the position', async () => {
    const report = await verifyChains(chain('a', 3).slice(1));
    expect(report.ok).toBe(false);
    expect(report.first).toMatchObject({ kind: 'seq-gap', writer: 'a', seq: 2, position: '#1' });
  });

  it('fails on malformed chain fields', async () => {
    const [c] = chain('a', 1);
    const report = await verifyChains([{ ...c, chain: { ...c.chain, hash: 'nothex' } } as ChainedRecord]);
    expect(report.first?.kind).toBe('malformed');
  });

  it('reports a corrupt item and a torn tail differently', async () => {
    const [c] = chain('a', 1);
    const report = await verifyChains([
      { position: 'f:1', record: c },
      { position: 'f:2', corrupt: 'line without trailing newline', torn: true },
    ]);
    expect(report.ok).toBe(true);
    expect(report.warnings.map((w) => w.kind)).toContain('torn-tail');
    const bad = await verifyChains([{ position: 'f:1', corrupt: 'unparsable JSON' }]);
    expect(bad.first).toMatchObject({ kind: 'unparsable', position: 'f:1' });
  });
});
