import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { utf8Bytes, utf8Text } from '../../../src/proxy/utf8.js';

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
