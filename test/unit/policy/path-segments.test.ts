import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pathSegments } from '../../../src/policy/classify/url.js';

/** The straightforward judgement: decode every segment, then check it (what the fast path must equal). */
function reference(path: string): string[] {
  if (path === '') return [];
  return path.split('/').map((seg, i) => {
    const what = `path segment ${i + 1}`;
    if (seg === '') throw new Error(`${what}: empty`);
    if (seg.includes(';')) throw new Error(`${what}: matrix parameter`);
    if (seg.includes('\\')) throw new Error(`${what}: backslash`);
    let d: string;
    try {
      d = decodeURIComponent(seg);
    } catch {
      throw new Error(`${what}: malformed percent-encoding`);
    }
    if (d === '.' || d === '..') throw new Error(`${what}: dot segment`);
    if (/[/\\;%]/.test(d)) throw new Error(`${what}: encoded delimiter`);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: controls are what is refused
    if (/[\u0000-\u001f\u007f]/.test(d)) throw new Error(`${what}: control character`);
    return d;
  });
}

function outcome(f: () => string[]): { ok: string[] } | { error: string } {
  try {
    return { ok: f() };
  } catch (e) {
    return { error: (e as Error & { detail?: string }).detail ?? (e as Error).message };
  }
}

// Pieces that exercise every branch: escapes of delimiters, dots, controls, bad escapes, UTF-8.
const piece = fc.constantFrom('a', 'Patient', 'pat-1', '.', '..', '/', ';', '\\', '%', '%2F', '%2f', '%5C', '%3B', '%25', '%2E', '%2E%2E', '%00', '%7F', '%C3%A9', '%C3', '%zz', '%41', '_history', '$everything', '');

describe('pathSegments', () => {
  it('decodes and refuses exactly as decoding every segment first would', () => {
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }).map((xs) => xs.join('')), (path) => {
        expect(outcome(() => pathSegments(path))).toEqual(outcome(() => reference(path)));
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses encoded delimiters and dot segments that only appear after decoding', () => {
    expect(outcome(() => pathSegments('Patient/a%2Fb'))).toEqual({ error: 'path segment 2: encoded delimiter' });
    expect(outcome(() => pathSegments('Patient/%2E%2E'))).toEqual({ error: 'path segment 2: dot segment' });
    expect(outcome(() => pathSegments('Patient/%2525'))).toEqual({ error: 'path segment 2: encoded delimiter' });
    expect(outcome(() => pathSegments('Patient/pat%2D1'))).toEqual({ ok: ['Patient', 'pat-1'] });
  });
});
