import { describe, expect, it } from 'vitest';
import { compareVerdicts, verdict } from '../../../src/monitor/compare.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import { readPolicy } from '../../../src/config/load.js';
import { parse, stringify } from 'yaml';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { principal, request, shippedPolicy } from '../breakglass/helpers.js';

// The parsed YAML, loosely typed: each test edits one corner of it.
type Loose = { dataSets: Record<string, { rules: Array<{ types: string[]; elements: string[]; remove: string[]; transforms?: unknown[] }> }> };

function variant(mutate: (p: Loose) => void): CompiledPolicy {
  const p = parse(readFileSync(new URL('../../../config/policy.yaml', import.meta.url), 'utf8'));
  mutate(p);
  const f = join(tmpdir(), `cmp-${process.pid}-${Math.random()}.yaml`);
  writeFileSync(f, stringify(p));
  try {
    const r = readPolicy(f);
    if (!r.loaded) throw new Error(r.problems.join('\n'));
    return r.loaded.policy;
  } finally {
    rmSync(f);
  }
}

describe('policy comparison', () => {
  const current = shippedPolicy();
  const billing = principal('b1', ['billing']);
  const input = (url: string, types: string[]) => ({ principal: billing, purpose: 'HPAYMT', request: request(url), types });

  it('the same policy changes nothing', () => {
    const i = input('/Patient/p1', ['Patient']);
    expect(compareVerdicts(verdict(current, i), verdict(current, i))).toEqual([]);
  });

  it('an element dropped from the allow-list is hidden; a removal dropped shows a part', () => {
    const next = variant((p) => {
      const rule = p.dataSets.billing.rules[0];
      rule.elements = rule.elements.filter((e) => e !== 'birthDate');
      rule.remove = rule.remove.filter((e) => e !== 'identifier[type=SS]');
    });
    const i = input('/Patient/p1', ['Patient']);
    const [c] = compareVerdicts(verdict(current, i), verdict(next, i));
    expect(c).toMatchObject({ kind: 'elements', hidden: [{ element: 'Patient.birthDate', from: 'keep', to: 'absent' }], shown: [{ element: 'Patient.identifier[type=SS]', from: 'remove', to: 'absent' }], changed: [] });
  });

  it('a transform is a change, not a show or hide', () => {
    const next = variant((p) => {
      p.dataSets.billing.rules[0].transforms = [{ select: 'birthDate', apply: 'year' }];
    });
    const i = input('/Patient/p1', ['Patient']);
    expect(compareVerdicts(verdict(current, i), verdict(next, i))).toEqual([{ kind: 'elements', shown: [], hidden: [], changed: [{ element: 'Patient.birthDate', from: 'keep', to: 'year' }] }]);
  });

  it('a type granted or withdrawn flips the decision', () => {
    const next = variant((p) => {
      p.dataSets.billing.rules = p.dataSets.billing.rules.filter((r) => !r.types.includes('Encounter'));
      p.dataSets.billing.rules.push({ types: ['Observation'] } as Loose['dataSets'][string]['rules'][number]);
    });
    const enc = input('/Encounter?patient=p1', ['Encounter']);
    expect(compareVerdicts(verdict(current, enc), verdict(next, enc))).toEqual([{ kind: 'newly-denied', was: expect.stringContaining('billing'), now: 'type-denied' }]);
    const obs = input('/Observation?patient=p1', ['Observation']);
    expect(compareVerdicts(verdict(current, obs), verdict(next, obs))).toMatchObject([{ kind: 'newly-allowed', was: 'type-denied' }]);
  });
});
