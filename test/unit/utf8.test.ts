import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonBytes, utf8Bytes, utf8Text } from '../../src/utf8.js';

// Any UTF-16 code unit, lone surrogates included; and text that is mostly ASCII with a few
// code units from every range (what the length test must tell apart from pure ASCII).
const anyUnit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));
const anyText = fc.string({ unit: anyUnit, maxLength: 200 });
const nearAscii = fc
  .tuple(fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 300 }), anyUnit, fc.nat(300))
  .map(([ascii, u, at]) => ascii.slice(0, at) + u + ascii.slice(at));

describe('utf8Bytes', () => {
  it('writes what Buffer.from(text, "utf8") writes, for any string', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, nearAscii, fc.string({ unit: 'grapheme', maxLength: 50 })), (text) => {
        expect(utf8Bytes(text).equals(Buffer.from(text, 'utf8'))).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('never lets a code unit above U+007F through the Latin-1 path', () => {
    // Latin-1 would keep only the low byte: U+0122 would become a bare quote (0x22) in the JSON.
    for (const text of ['{"a":"\u0122}"}', 'é', '\u00ff', '\u0100', '\ud800', '\udc00', '😀', `${'x'.repeat(10_000)}\u0141`]) {
      const bytes = utf8Bytes(text);
      expect(bytes.equals(Buffer.from(text, 'utf8'))).toBe(true);
      expect(bytes.toString('utf8')).toBe(Buffer.from(text, 'utf8').toString('utf8'));
    }
    // Four quotes in the text, four 0x22 bytes out (a Latin-1 copy would make U+0122 a fifth).
    expect([...utf8Bytes('{"a":"\u0122}"}')].filter((b) => b === 0x22)).toHaveLength(4);
  });

  it('handles the empty string and large bodies on both paths', () => {
    expect(utf8Bytes('').length).toBe(0);
    const ascii = JSON.stringify({ entry: Array.from({ length: 2000 }, (_, i) => ({ id: `p-${i}`, name: 'Garcia' })) });
    expect(utf8Bytes(ascii).equals(Buffer.from(ascii))).toBe(true);
    const mixed = ascii.replaceAll('Garcia', 'García 😀');
    expect(utf8Bytes(mixed).equals(Buffer.from(mixed))).toBe(true);
  });
});

describe('utf8Text', () => {
  it('decodes what buf.toString("utf8") decodes, for any bytes (invalid sequences included)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (arr) => {
        const b = Buffer.from(arr);
        expect(utf8Text(b)).toBe(b.toString('utf8'));
      }),
      { numRuns: 3000 },
    );
  });

  it('decodes ASCII, UTF-8 and overlong or truncated sequences as the UTF-8 decoder does', () => {
    const cases = [
      Buffer.from('{"resourceType":"Patient"}'),
      Buffer.from('{"family":"Nguyễn"}'),
      Buffer.from([0x7b, 0x22, 0xc0, 0xa2, 0x22, 0x7d]), // overlong '"': must not become a quote
      Buffer.from([0x22, 0xe2, 0x82]), // truncated
      Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), // BOM
      Buffer.alloc(0),
    ];
    for (const b of cases) expect(utf8Text(b)).toBe(b.toString('utf8'));
    expect(utf8Text(Buffer.from([0x7b, 0x22, 0xc0, 0xa2, 0x22, 0x7d]))).not.toBe('{"""}');
  });
});

describe('jsonBytes', () => {
  const entryValue = fc.oneof(
    fc.jsonValue(),
    fc.string({ unit: anyUnit, maxLength: 20 }),
    fc.constant(undefined),
    fc.dictionary(fc.string({ unit: anyUnit, maxLength: 5 }), fc.oneof(fc.jsonValue(), fc.constant(undefined)), { maxKeys: 4 }),
  );
  const bundleLike = fc.record(
    {
      resourceType: fc.constant('Bundle'),
      type: fc.constantFrom('searchset', 'collection'),
      id: fc.oneof(fc.string({ unit: anyUnit, maxLength: 8 }), fc.constant(undefined)),
      total: fc.oneof(fc.integer(), fc.constant(undefined)),
      link: fc.array(fc.record({ relation: fc.string(), url: fc.string({ unit: anyUnit }) }), { maxLength: 2 }),
      entry: fc.array(entryValue, { minLength: 0, maxLength: 40 }),
      '\u00e9\ud800': fc.oneof(fc.jsonValue(), fc.constant(undefined)),
    },
    { requiredKeys: ['resourceType', 'entry'] },
  );

  it('writes exactly what JSON.stringify writes, encoded as UTF-8, for Bundles of any size and content', () => {
    fc.assert(
      fc.property(bundleLike, fc.boolean(), (b, entryFirst) => {
        const { entry, ...rest } = b;
        const v = entryFirst ? { entry, ...rest } : b; // member order is kept, wherever entry sits
        expect(jsonBytes(v).equals(Buffer.from(JSON.stringify(v), 'utf8'))).toBe(true);
      }),
      { numRuns: 1500 },
    );
  });

  it('a large searchset (the piecewise path) and small values (the whole path) alike', () => {
    const entries = Array.from({ length: 300 }, (_, i) => ({ fullUrl: `https://gw/fhir/Patient/p${i}`, resource: { resourceType: 'Patient', id: `p${i}`, name: [{ family: i % 7 ? 'Smith' : 'Nguyễn 😀' }] } }));
    for (const v of [{ resourceType: 'Bundle', type: 'searchset', entry: entries }, { resourceType: 'Patient', id: 'x' }, [1, 2], 'text', 3, null]) {
      expect(jsonBytes(v).equals(Buffer.from(JSON.stringify(v)))).toBe(true);
    }
  });

  it('leaves values with toJSON, and what has no JSON form, to JSON.stringify semantics', () => {
    const entry = Array.from({ length: 10 }, (_, i) => ({ i, toJSON: (k: string) => `key:${k}` }));
    const v = { resourceType: 'Bundle', entry };
    expect(jsonBytes(v).toString()).toBe(JSON.stringify(v)); // keys "0".."9", as JSON.stringify passes them
    expect(() => jsonBytes(undefined)).toThrow(TypeError);
    expect(() => jsonBytes({ entry: Array.from({ length: 10 }, () => ({ n: 1n })) })).toThrow(TypeError);
  });
});
