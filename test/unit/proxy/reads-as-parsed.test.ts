/**
 * readsAsParsed decides whether the upstream's own bytes may be released instead of the
 * gateway's serialization of what it judged: it must say yes only when no parser can read those
 * bytes as anything else (no duplicate key, valid UTF-8), and should say yes for ordinary JSON in
 * any layout.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseStrictJson, readsAsParsed } from '../../../src/proxy/strict-json.js';

function judge(text: string | Buffer): boolean {
  const raw = typeof text === 'string' ? Buffer.from(text) : text;
  const decoded = raw.toString('utf8');
  return readsAsParsed(raw, parseStrictJson(decoded, 'upstream-bad-response'));
}

// Strings full of what trips a quote counter: quotes, backslash runs, escapes, any code unit.
const tricky = fc.string({
  unit: fc.oneof(fc.constantFrom('"', '\\', '\\\\', '\\"', '/', '\u0000', '\u2028', 'é', '😀'), fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c))),
  maxLength: 12,
});
const json = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    tricky,
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(tricky, tie('value'), { maxKeys: 4 }),
  ),
})).value;

describe('readsAsParsed', () => {
  it('accepts any duplicate-free JSON, compact or indented', () => {
    fc.assert(
      fc.property(fc.dictionary(tricky, json, { maxKeys: 5 }), fc.constantFrom(undefined, 2, '\t'), (v, indent) => {
        const text = JSON.stringify(v, null, indent);
        // Lone surrogates are valid in JSON.stringify's output (escaped), so the text is always valid UTF-8.
        expect(judge(text)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses a duplicate key anywhere, whatever it holds and however it is spelled', () => {
    fc.assert(
      fc.property(tricky, json, json, fc.nat(3), fc.boolean(), (key, first, second, depth, escapeIt) => {
        const k = JSON.stringify(key);
        // The same key spelled with a \u escape of its first character still names the same member.
        const k2 = escapeIt && key.length > 0 ? `"\\u${key.charCodeAt(0).toString(16).padStart(4, '0')}${JSON.stringify(key.slice(1)).slice(1)}` : k;
        let text = `{${k}:${JSON.stringify(first)},"other":1,${k2}:${JSON.stringify(second)}}`;
        for (let i = 0; i < depth; i++) text = i % 2 === 0 ? `[1,${text},"x"]` : `{"a":"\\"","b":${text}}`;
        expect(JSON.parse(text)).toBeDefined(); // valid JSON, and JSON.parse silently kept the last
        expect(judge(text)).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses bytes that are not valid UTF-8', () => {
    const overlongQuote = Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xa2, 0x22, 0x7d]); // {"a":"<C0 A2>"}
    expect(judge(overlongQuote)).toBe(false);
    const lone = Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]); // UTF-8 of a surrogate
    expect(judge(lone)).toBe(false);
    expect(judge(Buffer.from('{"a":"é"}'))).toBe(true);
  });

  it('refuses nesting deeper than any resource', () => {
    expect(judge(`${'['.repeat(100)}${']'.repeat(100)}`)).toBe(false);
    expect(judge(`${'['.repeat(20)}"x"${']'.repeat(20)}`)).toBe(true);
  });

  it('counts escaped quotes and backslash runs right', () => {
    for (const ok of ['{"a":"\\\\"}', '{"a\\"":"\\\\\\""}', '{"\\\\":"\\\\\\\\"}', '["\\"\\"","\\\\"]', '{"a":"\\u0022"}']) expect(judge(ok)).toBe(true);
    for (const dup of ['{"a\\\\":1,"a\\\\":2}', '{"\\"":1,"\\u0022":2}', '{"a":{"b":"\\\\","b":"\\""}}']) expect(judge(dup)).toBe(false);
  });
});
