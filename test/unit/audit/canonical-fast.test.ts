// The native fast path in canonical.ts must write exactly what the member-by-member writer did
// before it (so `audit verify` accepts lines written before and after the change). The oracle
// below is a verbatim copy of that earlier implementation.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalSplit } from '../../../src/audit/canonical.js';
import { chainLine, genesisHead } from '../../../src/audit/chain.js';
import type { AuditRecord } from '../../../src/audit/record.js';
import { sampleRecord } from './fixtures.js';

// ---- oracle: canonical.ts as it was before the fast path ----
function oldCanonicalJson(value: unknown): string {
  return oldWrite(value, '') ?? 'null';
}
function oldCanonicalSplit(obj: object, key: string): { before: string; after: string } {
  const src = obj as Record<string, unknown>;
  const keys = Object.keys(src);
  if (!keys.includes(key)) keys.push(key);
  keys.sort();
  let before = '{';
  let after = '';
  let seen = false;
  let first = true;
  for (const k of keys) {
    if (k === key) {
      before += (first ? '' : ',') + JSON.stringify(k) + ':';
      seen = true;
      first = false;
      continue;
    }
    const v = oldWrite(src[k], k);
    if (v === undefined) continue;
    const member = (first ? '' : ',') + JSON.stringify(k) + ':' + v;
    first = false;
    if (seen) after += member;
    else before += member;
  }
  return { before, after: after + '}' };
}
function oldWrite(input: unknown, key: string): string | undefined {
  let value = input;
  if (value !== null && (typeof value === 'object' || typeof value === 'bigint')) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = toJSON.call(value, key);
  }
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (value instanceof Number || value instanceof String || value instanceof Boolean) return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (oldIsFlat(value)) return JSON.stringify(value);
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += oldWrite(value[i], String(i)) ?? 'null';
    }
    return out + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = oldWrite(obj[k], k);
    if (v === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += JSON.stringify(k) + ':' + v;
  }
  return out + '}';
}
function oldIsFlat(arr: readonly unknown[]): boolean {
  for (let i = 0; i < arr.length; i++) {
    const t = typeof arr[i];
    if (t !== 'string' && t !== 'number' && t !== 'boolean') return false;
  }
  return true;
}
/** chain.ts's chainLine as it was (createHash, old split). */
function oldChainLine(writer: string, seq: number, prev: string, record: object): { line: string; hash: string } {
  const { before, after } = oldCanonicalSplit(record, 'chain');
  const unsealed = `{"prev":${JSON.stringify(prev)},"seq":${seq},"writer":${JSON.stringify(writer)}}`;
  const hash = createHash('sha256')
    .update(before + unsealed + after)
    .digest('hex');
  return { line: `${before}{"hash":"${hash}",${unsealed.slice(1)}${after}`, hash };
}
// ---- end of oracle ----

// Any UTF-16 code unit, lone surrogates included, plus keys that trip ordering and prototype rules.
const unit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));
const key = fc.oneof(
  fc.string({ unit, maxLength: 4 }),
  fc.string({ maxLength: 4 }),
  fc.constantFrom('__proto__', 'toJSON', 'chain', '1', '9', '10', '01', '-1', 'a', 'B', 'é', '\ud800', '\udfff\ud800', ''),
);
const number = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(-0, 0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e21, 5e-324));

/** Own data properties via defineProperty, so `__proto__` becomes a real key like JSON.parse makes it. */
function objectFrom(entries: readonly (readonly [string, unknown])[], sorted: boolean, nullProto: boolean): Record<string, unknown> {
  const list = sorted ? [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : entries;
  const o: Record<string, unknown> = nullProto ? Object.create(null) : {};
  for (const [k, v] of list) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
}

const value = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.string({ unit, maxLength: 6 }),
    fc.string({ maxLength: 6 }),
    number,
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.date(), // invalid dates too: toJSON gives null
    fc.constant(() => 1),
    fc.constant(Symbol('s')),
    fc.string().map((s) => new String(s)),
    number.map((n) => new Number(n)),
    fc.boolean().map((b) => new Boolean(b)),
    fc.integer().map((n) => ({ toJSON: (k: string) => ({ z: n, k }) })),
  ),
  node: fc.oneof(
    { depthSize: 'small' },
    tie('leaf'),
    fc.array(tie('node'), { maxLength: 5 }),
    // Sparse: holes read as undefined.
    fc.sparseArray(tie('node'), { maxLength: 5 }),
    fc.tuple(fc.array(fc.tuple(key, tie('node')), { maxLength: 5 }), fc.boolean(), fc.boolean()).map(([e, sorted, np]) => objectFrom(e, sorted, np)),
    // Mostly-canonical shapes, where the fast path is taken.
    fc.array(fc.tuple(key, tie('node')), { maxLength: 5 }).map((e) => objectFrom(e, true, false)),
    fc.array(fc.string({ unit, maxLength: 8 }), { maxLength: 8 }),
  ),
})).node;

/** Result or the error's class: both implementations must throw alike too. */
function outcome<T>(f: () => T): T | string {
  try {
    return f();
  } catch (err) {
    return `threw ${(err as Error).constructor.name}`;
  }
}

describe('canonicalJson fast path is byte-identical to the earlier writer', () => {
  it('for arbitrary JSON-ish values (random key order, undefined, dates, -0/NaN/Infinity, surrogate keys)', () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(outcome(() => canonicalJson(v))).toEqual(outcome(() => oldCanonicalJson(v)));
      }),
      { numRuns: 3000 },
    );
  });

  it('for canonicalSplit on arbitrary objects, with and without an own member at the split key', () => {
    const obj = fc.tuple(fc.array(fc.tuple(key, value), { maxLength: 8 }), fc.boolean(), fc.boolean()).map(([e, sorted, np]) => objectFrom(e, sorted, np));
    fc.assert(
      fc.property(obj, fc.oneof(key, fc.constant('chain')), (o, k) => {
        expect(outcome(() => canonicalSplit(o, k))).toEqual(outcome(() => oldCanonicalSplit(o, k)));
      }),
      { numRuns: 3000 },
    );
  });

  it('covers the cases the generators might miss', () => {
    const cases: unknown[] = [
      { b: 1, a: 2 },
      { 1: 'x', 10: 'y', 9: 'z' }, // integer keys: native order is numeric, canonical is not
      { '01': 1, 1: 2 },
      { a: [undefined, () => 1, Symbol('x')], b: undefined, c: () => 1 },
      { a: -0, b: Number.NaN, c: Number.NEGATIVE_INFINITY },
      { a: new Date(0), b: new Date(Number.NaN) },
      { '\ud800': 1, '\udc00': 2, é: 3, z: 4 },
      objectFrom([['__proto__', { y: 1, x: 2 }], ['a', 1]], true, false),
      Object.assign(Object.create({ inherited: 1 }), { own: 2 }), // class-like prototype: general writer
      Object.defineProperty({ a: 1 }, 'hidden', { value: 2, enumerable: false }),
      // biome-ignore lint/suspicious/noSparseArray: a hole is the point
      [1, , 3],
      [[{ b: 1, a: 1 }]],
      'top-level string',
      undefined,
      null,
    ];
    for (const c of cases) expect(canonicalJson(c)).toBe(oldCanonicalJson(c));
    for (const c of cases.filter((x) => typeof x === 'object' && x !== null)) {
      expect(canonicalSplit(c as object, 'chain')).toEqual(oldCanonicalSplit(c as object, 'chain'));
      expect(canonicalSplit(c as object, 'a')).toEqual(oldCanonicalSplit(c as object, 'a'));
    }
  });

  it('honours a toJSON found on Object.prototype like JSON.stringify (no native shortcut)', () => {
    // toJSON answers with an unsorted object: only the general writer sorts what toJSON returns.
    const proto = Object.prototype as { toJSON?: unknown };
    proto.toJSON = function (this: object, k: string) {
      return { z: Object.keys(this).length, k };
    };
    try {
      for (const v of [{ a: 1 }, { a: { x: 1 } }, [{ a: 1 }]]) {
        expect(canonicalJson(v)).toBe(oldCanonicalJson(v));
        expect(canonicalSplit(v, 'chain')).toEqual(oldCanonicalSplit(v, 'chain'));
      }
    } finally {
      delete proto.toJSON;
    }
    const hidden = Object.defineProperty({ a: 1 }, 'toJSON', { value: () => ({ y: 1, x: 2 }), enumerable: false });
    expect(canonicalJson({ v: hidden })).toBe('{"v":{"x":2,"y":1}}');
    expect(canonicalJson({ v: hidden })).toBe(oldCanonicalJson({ v: hidden }));
  });

  it('throws where the earlier writer threw (bigint, cycles) and handles deep nesting alike', () => {
    expect(() => canonicalJson({ a: 1n })).toThrow(TypeError);
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(RangeError);
    expect(() => canonicalSplit(cyclic, 'chain')).toThrow(RangeError);
    let deep: unknown = 'leaf';
    for (let i = 0; i < 2000; i++) deep = { a: deep };
    expect(canonicalJson(deep)).toBe(oldCanonicalJson(deep));
  });
});

describe('chainLine keeps the stored lines of the earlier code', () => {
  const record = fc.record({
    n: fc.nat(1000),
    purpose: fc.option(fc.string({ unit, maxLength: 5 }), { nil: undefined }),
    userAgent: fc.option(fc.string({ unit, maxLength: 8 }), { nil: undefined }),
    ids: fc.array(fc.string({ unit, maxLength: 10 }), { maxLength: 20 }),
    details: fc.option(fc.dictionary(fc.string({ unit, maxLength: 4 }), fc.oneof(fc.string(), fc.integer(), fc.constant(undefined))), { nil: undefined }),
    breakGlass: fc.option(fc.record({ session: fc.string(), reason: fc.string(), patient: fc.string() }), { nil: undefined }),
    seq: fc.nat(1e6),
    writer: fc.string({ minLength: 1, maxLength: 6 }).filter((w) => !/\s/.test(w)),
  });
  it('line and hash equal the oracle for any record, keys in any order', () => {
    fc.assert(
      fc.property(record, fc.boolean(), (r, reverse) => {
        const base: AuditRecord = sampleRecord(r.n, {
          purpose: r.purpose,
          client: { address: '10.0.0.1', userAgent: r.userAgent },
          disclosed: { resources: r.ids.map((id) => `Patient/${id}`), patients: r.ids, elementsRemoved: 1, resourcesWithheld: 0 },
          details: r.details,
          breakGlass: r.breakGlass,
        });
        const input = reverse ? (Object.fromEntries(Object.entries(base).reverse()) as unknown as AuditRecord) : base;
        const prev = createHash('sha256').update(String(r.seq)).digest('hex');
        const got = chainLine({ writer: r.writer, seq: r.seq, hash: prev }, input);
        const want = oldChainLine(r.writer, r.seq + 1, prev, input);
        expect(got.line).toBe(want.line);
        expect(got.next.hash).toBe(want.hash);
      }),
      { numRuns: 500 },
    );
  });

  it('ignores an own chain member as before', () => {
    const input = { ...sampleRecord(1), chain: { hash: 'forged', prev: 'x', seq: 99, writer: 'evil' } } as AuditRecord;
    const got = chainLine(genesisHead('w'), input);
    expect(got.line).toBe(oldChainLine('w', 1, genesisHead('w').hash, input).line);
    expect(got.line).not.toContain('forged');
  });
});
