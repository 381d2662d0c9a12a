// The README's "Configuring a role" example must stay a working policy change.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadPolicy } from '../../../src/config/load.js';

const root = new URL('../../../', import.meta.url).pathname;

function readmeExample(): { dataSets: Record<string, unknown>; roles: Record<string, unknown> } {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuring a role'));
  const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('no yaml block in "Configuring a role"');
  return parse(block);
}

describe('README policy example', () => {
  it('compiles when added to the shipped policy and grants what the README says', () => {
    const shipped = parse(readFileSync(join(root, 'config/policy.yaml'), 'utf8'));
    const example = readmeExample();
    const merged = {
      ...shipped,
      dataSets: { ...shipped.dataSets, ...example.dataSets },
      roles: { ...shipped.roles, ...example.roles },
    };
    const dir = mkdtempSync(join(tmpdir(), 'phi-readme-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, stringify(merged));
    const { policy } = loadPolicy(file, { pseudonymKey: 'readme-example-test-key-0123456789abcdef' });
    const role = policy.roles.get('care-manager');
    expect(role).toBeDefined();
    const plan = role!.plans.get('CAREMGT');
    expect([...plan!.types.keys()].sort()).toEqual(['CarePlan', 'CareTeam', 'Goal', 'Patient']);
    const patient = plan!.types.get('Patient')!;
    const lines = patient.elements.describe();
    expect(lines.some((l) => l.element.includes('name') && l.action === 'keep')).toBe(true);
    expect(lines.some((l) => l.selector.includes('us-ssn') && l.action === 'remove')).toBe(true);
    const conf = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
    expect(patient.withhold.labels).toEqual(expect.arrayContaining([`${conf}|R`, `${conf}|V`]));
    expect(patient.withhold.match([{ system: conf, code: 'R' }])).toBeDefined();
    expect(patient.withhold.match([{ system: conf, code: 'N' }])).toBeUndefined();
  });
});
