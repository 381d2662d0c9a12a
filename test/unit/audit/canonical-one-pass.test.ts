// The chain hashes in one serialization pass (no plain copy first): it must hash exactly what the
// old copy-then-canonicalize did, and store a line that reads back to a record that verifies.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalSplit } from '../../../src/audit/canonical.js';
import { chainLine, chainRecords, genesisHead, hashMatches, recordHash } from '../../../src/audit/chain.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { sampleRecord } from './fixtures.js';

const roundTrip = (v: unknown): unknown => JSON.parse(JSON.stringify(v));

// Values JSON.stringify accepts, including the awkward ones (undefined, NaN, -0, dates, toJSON, boxed).
const awkward = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.string(),
    fc.double(),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.date({ noInvalidDate: true }),
    fc.constant(() => 1),
    fc.string().map((s) => new String(s)),
    fc.integer().map((n) => ({ toJSON: (key: string) => ({ n, key }) })),
  ),
  node: fc.oneof({ depthSize: 'small' }, tie('leaf'), fc.array(tie('node'), { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 6 }), tie('node'), { maxKeys: 5 })),
})).node;

describe('canonicalJson in one pass', () => {
  it('equals canonicalJson of the JSON round trip for any serializable value', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 6 }), awkward, { maxKeys: 6 }), (v) => {
        expect(canonicalJson(v)).toBe(canonicalJson(roundTrip(v)));
      }),
      { numRuns: 300 },
    );
  });

  it('calls toJSON like JSON.stringify (dates become their ISO string)', () => {
    const d = new Date('2025-01-02T03:04:05.000Z');
    expect(canonicalJson({ b: d, a: [d] })).toBe('{"a":["2025-01-02T03:04:05.000Z"],"b":"2025-01-02T03:04:05.000Z"}');
  });

  it('throws where JSON.stringify throws', () => {
    expect(() => canonicalJson({ a: 1n })).toThrow(TypeError);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow();
  });

  it('canonicalSplit places the supplied member in sorted position and ignores the own one', () => {
    const { before, after } = canonicalSplit({ z: 1, chain: 'ignored', a: undefined, b: 2 }, 'chain');
    expect(`${before}"X"${after}`).toBe('{"b":2,"chain":"X","z":1}');
    const last = canonicalSplit({ a: 1 }, 'zz');
    expect(`${last.before}0${last.after}`).toBe('{"a":1,"zz":0}');
  });
});

describe('chainLine', () => {
  it('stores canonical text that reads back to a record whose hash verifies', () => {
    const head = genesisHead('w');
    const input = { ...sampleRecord(1), purpose: undefined, time: '2025-01-01T00:00:00.000Z' };
    const { line, next } = chainLine(head, input);
    const parsed = JSON.parse(line) as ChainedRecord;
    expect(line).toBe(canonicalJson(parsed));
    expect(parsed.chain).toEqual({ writer: 'w', seq: 1, prev: head.hash, hash: next.hash });
    expect(hashMatches(parsed)).toBe(true);
    expect(recordHash(parsed)).toBe(next.hash);
    expect(parsed).not.toHaveProperty('purpose');
  });

  it('gives the same hashes as chainRecords and as hashing the round-tripped record', () => {
    const recs = [sampleRecord(1), sampleRecord(2), sampleRecord(3)];
    let head = genesisHead('w');
    const viaRecords = chainRecords(head, recs).chained;
    for (const [i, r] of recs.entries()) {
      const c = chainLine(head, r);
      expect(c.next.hash).toBe(viaRecords[i].chain.hash);
      const unsealed = { ...(roundTrip(r) as object), chain: { writer: 'w', seq: i + 1, prev: head.hash } };
      expect(c.next.hash).toBe(recordHash(unsealed as ChainedRecord));
      head = c.next;
    }
  });

  it('throws for a record that cannot be serialized, leaving the head usable', () => {
    const head = genesisHead('w');
    const bad = { ...sampleRecord(1), details: { n: 1n } };
    expect(() => chainLine(head, bad as never)).toThrow(TypeError);
    expect(chainLine(head, sampleRecord(1)).next.seq).toBe(1);
  });
});
