import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { parseStrictJson, validateStrictJson } from '../../../src/policy/classify/json.js';

function code(text: string, depth = 10): string {
  try {
    validateStrictJson(text, depth);
    return 'ok';
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
}

describe('strict JSON validation', () => {
  it.each([
    '{}',
    '[]',
    ' \t\r\n{ "a" : [ 1 , -0.5e+3 , true , false , null , "x" ] } ',
    '"just a string"',
    '0',
    '-0',
    '1E5',
    '"\\u00e9\\n\\t\\"\\\\\\/\\b\\f\\r"',
    '{"a":{"a":{"a":1}}}',
    '[{"a":1},{"a":2}]',
    '{"":1}',
    '{"a":1,"A":2}',
  ])('accepts %s', (text) => {
    expect(code(text)).toBe('ok');
    expect(parseStrictJson(text, 10)).toEqual(JSON.parse(text));
  });

  it.each([
    ['empty', ''],
    ['whitespace only', '  '],
    ['leading zero', '01'],
    ['plus sign', '+1'],
    ['bare dot', '.5'],
    ['dangling exponent', '1e'],
    ['hex', '0x10'],
    ['Infinity', 'Infinity'],
    ['undefined', 'undefined'],
    ['unterminated string', '"abc'],
    ['raw newline in string', '"a\nb"'],
    ['raw tab in string', '"a\tb"'],
    ['bad escape', '"\\x41"'],
    ['short unicode escape', '"\\u12"'],
    ['unquoted key', '{a:1}'],
    ['missing colon', '{"a" 1}'],
    ['missing value', '{"a":}'],
    ['trailing comma in array', '[1,]'],
    ['trailing comma in object', '{"a":1,}'],
    ['leading comma', '[,1]'],
    ['mismatched brackets', '[1}'],
    ['unclosed array', '[1'],
    ['extra closer', '[1]]'],
    ['two values', '1 2'],
    ['duplicate key', '{"a":1,"a":1}'],
    ['duplicate via escape', '{"é":1,"\\u00e9":2}'],
    ['duplicate deep', '[{"x":{"y":1,"y":2}}]'],
    ['__proto__', '{"__proto__":1}'],
    ['constructor', '{"a":[{"constructor":1}]}'],
    ['prototype', '{"prototype":1}'],
    ['escaped __proto__', '{"\\u005f\\u005fproto__":1}'],
  ])('refuses %s', (_n, text) => {
    expect(code(text)).toBe('request-body-invalid');
  });

  it('limits nesting depth without recursion (no stack overflow on hostile input)', () => {
    expect(code('[[[1]]]', 3)).toBe('ok');
    expect(code('[[[[1]]]]', 3)).toBe('request-body-invalid');
    expect(code('{"a":{"b":{}}}', 3)).toBe('ok');
    expect(code('{"a":{"b":{"c":{}}}}', 3)).toBe('request-body-invalid');
    const hostile = '['.repeat(1_000_000);
    expect(code(hostile, 1_000_000 + 1)).toBe('request-body-invalid');
  });

  it('error details carry offsets, never content', () => {
    try {
      validateStrictJson('{"ssn":"123-45-6789","ssn":"x"}', 10);
      expect.unreachable();
    } catch (e) {
      expect((e as GatewayError).detail).toMatch(/^duplicate key at offset \d+$/);
      expect((e as GatewayError).detail).not.toContain('123-45');
    }
  });
});
