// Every error code is counted, documented in the README, used by the code, and built without request data.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_SYSTEM, ERRORS, GatewayError, operationOutcome } from '../../src/errors.js';

// http://hl7.org/fhir/issue-type (R4), the codes the catalogue may use.
const ISSUE_TYPES = new Set([
  'invalid', 'structure', 'required', 'value', 'invariant', 'security', 'login', 'unknown', 'expired', 'forbidden',
  'suppressed', 'processing', 'not-supported', 'duplicate', 'multiple-matches', 'not-found', 'deleted', 'too-long',
  'code-invalid', 'extension', 'too-costly', 'business-rule', 'conflict', 'transient', 'lock-error', 'no-store',
  'exception', 'timeout', 'incomplete', 'throttled', 'informational',
]);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const codes = Object.keys(ERRORS) as (keyof typeof ERRORS)[];

describe('error catalogue', () => {
  it('has the expected number of codes (update README and this count together)', () => {
    expect(codes.length).toBe(64);
  });

  it.each(codes)('%s has an HTTP error status and a FHIR issue type', (code) => {
    const spec = ERRORS[code];
    expect(spec.status).toBeGreaterThanOrEqual(400);
    expect(spec.status).toBeLessThan(600);
    expect(ISSUE_TYPES.has(spec.issue)).toBe(true);
  });

  it('builds OperationOutcomes from the catalogue only', () => {
    for (const code of codes) {
      const oo = operationOutcome(code);
      expect(oo.issue).toHaveLength(1);
      expect(oo.issue[0].details?.coding).toEqual([{ system: ERROR_SYSTEM, code }]);
      expect(oo.issue[0].details?.text).toBe(ERRORS[code].text);
      expect(oo.issue[0]).not.toHaveProperty('diagnostics');
    }
  });

  it('GatewayError keeps its detail out of the message', () => {
    const e = new GatewayError('invalid-token', 'kid abc not found');
    expect(e.message).not.toContain('abc');
    expect(e.status).toBe(401);
  });

  it('every code is documented in the README error table', () => {
    const readme = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const documented = [...readme.matchAll(/^\| `([a-z0-9-]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(codes.map((c) => [c, ERRORS[c].status])));
  });

  it('every code is used somewhere in the source (no dead codes)', () => {
    const root = new URL('../../src', import.meta.url).pathname;
    const text = sources(root)
      .filter((f) => !f.endsWith('errors.ts'))
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n');
    const unused = codes.filter((c) => !text.includes(`'${c}'`));
    expect(unused).toEqual([]);
  });
});
