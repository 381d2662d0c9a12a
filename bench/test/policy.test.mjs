import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { withoutRelationshipRequirements, writePolicyWithoutRelationships } from '../lib/policy.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const shipped = join(root, 'config', 'policy.yaml');
// The gateway's own policy compiler (built dist/: `npm test` builds first).
const { loadPolicy } = await import(pathToFileURL(join(root, 'dist', 'config', 'load.js')).href);
const tmp = mkdtempSync(join(tmpdir(), 'phi-bench-policy-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('the policy copy without relationship requirements', () => {
  it('drops every dataSets.*.relationship and nothing else', () => {
    const text = readFileSync(shipped, 'utf8');
    const { text: out, removed } = withoutRelationshipRequirements(text);
    const before = parse(text);
    const expected = structuredClone(before);
    for (const name of removed) delete expected.dataSets[name].relationship;
    assert.deepEqual(parse(out), expected);
    assert.deepEqual(
      removed,
      Object.keys(before.dataSets).filter((n) => before.dataSets[n].relationship !== undefined),
    );
    assert.ok(Object.values(parse(out).dataSets).every((d) => d.relationship === undefined));
  });

  it('leaves a policy without requirements as it is, byte for byte', () => {
    const text = 'version: 1\n# a comment\ndataSets:\n  a: { rules: [] }\nroles: {}\n';
    assert.deepEqual(withoutRelationshipRequirements(text), { text, removed: [] });
  });

  it("compiles to the shipped policy's plans without their requirement (the clinician's TREAT plan had one)", () => {
    const out = join(tmp, 'p.yaml');
    writePolicyWithoutRelationships(shipped, out);
    const key = { pseudonymKey: 'bench-pseudonym-key-0123456789abcdef0123' };
    const a = loadPolicy(shipped, key).policy;
    const b = loadPolicy(out, key).policy;
    const plans = (p) => [...p.roles.values()].flatMap((r) => [...r.plans.values()]);
    assert.ok(a.roles.get('clinician').plans.get('TREAT').relationship?.required, 'the shipped clinician TREAT plan requires a relationship');
    assert.ok(plans(b).every((plan) => plan.relationship === undefined));
    assert.deepEqual(
      plans(b).map((p) => [p.role, p.purpose, p.dataSet, [...p.types.keys()]]),
      plans(a).map((p) => [p.role, p.purpose, p.dataSet, [...p.types.keys()]]),
    );
  });
});
