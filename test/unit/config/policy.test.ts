import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkConfig, loadPolicy, readPolicy } from '../../../src/config/load.js';

const dir = 'test/fixtures/config';

describe('policy problems, all of them, as file:line:col', () => {
  it('every label typo in a withhold list is reported, located, with what it may have meant', () => {
    const shipped = readFileSync('config/policy.yaml', 'utf8');
    const tmp = mkdtempSync(join(tmpdir(), 'phi-labels-'));
    const file = join(tmp, 'policy.yaml');
    writeFileSync(file, shipped.replace('withhold: [R, V]', 'withhold: [r, V, psythpn, SUDX]'));
    const problems = readPolicy(file).problems;
    expect(problems.filter((p) => p.includes('unknown security label code'))).toEqual([
      expect.stringMatching(/:\d+:\d+ dataSets\.clinical\.withhold\[0\]: unknown security label code 'r' .*did you mean 'R'\?$/),
      expect.stringMatching(/:\d+:\d+ dataSets\.clinical\.withhold\[2\]: unknown security label code 'psythpn' .*did you mean 'PSYTHPN'\?$/),
      expect.stringMatching(/:\d+:\d+ dataSets\.clinical\.withhold\[3\]: unknown security label code 'SUDX' .*did you mean 'SUD'\?$/),
    ]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('semantic problems point at the offending node', () => {
    expect(checkConfig(`${dir}/semantic/gateway.yaml`, {})).toEqual([
      `${dir}/semantic/policy.yaml:6:39 purposes.HPAYMT.parent: unknown parent purpose 'NOPE'`,
      `${dir}/semantic/policy.yaml:11:28 dataSets.clinical.rules[1].types[1]: type Observation is already granted by dataSets.clinical.rules[0] (one rule per type per data set)`,
      `${dir}/semantic/policy.yaml:12:17 dataSets.clinical.rules[2].types[0]: unknown FHIR R4 resource type 'Pateint'; did you mean 'Patient'?`,
      `${dir}/semantic/policy.yaml:16:26 dataSets.billing.rules[0].elements[1]: Patient: selector "address.foo": Address has no element "foo"`,
      `${dir}/semantic/policy.yaml:18:27 dataSets.billing.rules[1].search[1]: no type of this rule has a search parameter 'colour'`,
      `${dir}/semantic/policy.yaml:19:20 dataSets.billing.rules[1].withhold[0]: invalid security label 'bad label' (CODE or system|code)`,
      `${dir}/semantic/policy.yaml:22:34 roles.clinician.purposes.HRESCH: unknown purpose 'HRESCH' (not declared under purposes)`,
      `${dir}/semantic/policy.yaml:25:15 roles.billing.purposes.HPAYMT: unknown data set 'billingg'; did you mean 'billing'?`,
      `${dir}/semantic/policy.yaml:27:12 breakGlass.dataSet: unknown data set 'emergency'`,
    ]);
  });

  it('schema problems: an unknown key at the key, a missing property at the parent, a bad value at the value', () => {
    expect(checkConfig(`${dir}/schema/gateway.yaml`, {})).toEqual([
      `${dir}/schema/policy.yaml:8:30 dataSets.clinical.rules[0].interactions[1]: must be one of: read, search, history, create, update, patch, delete, relabel; did you mean 'search'?`,
      `${dir}/schema/policy.yaml:9:9 dataSets.clinical.rules[0]: unknown property 'element'; did you mean 'elements'?`,
      `${dir}/schema/policy.yaml:12:5 roles.clinician: missing required property 'purposes'`,
    ]);
  });

  it('YAML syntax errors (a duplicate key) are located too', () => {
    expect(checkConfig(`${dir}/syntax/gateway.yaml`, {})).toEqual([`${dir}/syntax/policy.yaml:4:3 YAML syntax: the key 'TREAT' appears twice in the same block (first on line 3); YAML cannot tell which one is meant: keep one`]);
  });

  it('loadPolicy throws a ConfigError carrying every problem', () => {
    expect(() => loadPolicy(`${dir}/semantic/policy.yaml`)).toThrowError(expect.objectContaining({ name: 'ConfigError', problems: expect.arrayContaining([expect.stringContaining(':12:17 ')]) }));
  });

  it('an unreadable policy is a located problem, not a crash', () => {
    expect(readPolicy(`${dir}/missing-policy.yaml`).problems).toEqual([`${dir}/missing-policy.yaml:1:1 cannot read policy (ENOENT)`]);
  });
});

describe('LoadedPolicy', () => {
  const loaded = loadPolicy('config/policy.yaml', { pseudonymKey: 'x'.repeat(32), now: () => new Date('2030-01-01T00:00:00Z') });

  it('locates policy paths for explain', () => {
    const pos = loaded.locate('dataSets.billing.rules[0]');
    expect(pos).toBeDefined();
    const lines = readFileSync('config/policy.yaml', 'utf8').split('\n');
    expect(lines[pos!.line - 1].slice(pos!.col - 1)).toMatch(/^types: \[Patient\]/);
    const grant = loaded.locate('roles.billing.purposes.HPAYMT')!;
    expect(lines[grant.line - 1]).toContain('HPAYMT: billing');
    expect(loaded.locate('dataSets.billing.rules[99]')).toBeUndefined();
    expect(loaded.locate('roles.nobody')).toBeUndefined();
  });

  it('requires care relationships for clinical treatment and the coding work queue, nothing else', () => {
    const { relationships, roles } = loaded.policy;
    expect(relationships?.ttlMs).toBe(300_000);
    expect([...relationships!.sources.values()]).toEqual([
      { name: 'care-team', kind: 'CareTeam' },
      { name: 'encounter', kind: 'Encounter', days: 30 },
      { name: 'episode', kind: 'EpisodeOfCare' },
      { name: 'department', kind: 'PractitionerRole' },
      { name: 'work-queue', kind: 'Task' },
    ]);
    const required = new Map<string, string>();
    for (const [name, role] of roles) {
      for (const [purpose, plan] of role.plans) {
        if (plan.relationship) required.set(`${name} ${purpose}`, `${plan.relationship.rule} [${plan.relationship.sources.join(', ')}] required: ${plan.relationship.required}`);
      }
    }
    const clinical = 'dataSets.clinical.relationship [care-team, encounter, episode, department] required: true';
    const coding = 'dataSets.coding.relationship [work-queue] required: true';
    // A listed purpose covers its children: TREAT's for the clinician, HOPERAT's (not HPAYMT's) for the coder.
    expect(Object.fromEntries(required)).toEqual({
      ...Object.fromEntries(['TREAT', 'ETREAT', 'ERTREAT', 'COC', 'CLINTRL', 'POPHLTH'].map((p) => [`clinician ${p}`, clinical])),
      ...Object.fromEntries(
        ['HOPERAT', 'HQUALIMP', 'HSYSADMIN', 'HACCRED', 'HCOMPL', 'HLEGAL', 'PATADMIN', 'PATSFTY', 'RECORDMGT', 'CAREMGT', 'FRAUD', 'TRAIN'].map((p) => [`coder ${p}`, coding]),
      ),
    });
    expect(roles.get('coder')!.plans.get('CLMATTCH')!.dataSet).toBe('coding');
  });

  it('builds the redaction context from the policy and options', () => {
    expect(loaded.context.restrictedZip3.has('036')).toBe(true);
    expect(loaded.context.restrictedZip3.size).toBe(17);
    expect(new TextDecoder().decode(loaded.context.pseudonymKey)).toBe('x'.repeat(32));
    expect(loaded.context.now().getUTCFullYear()).toBe(2030);
    expect(loadPolicy('config/policy.yaml').context.pseudonymKey).toBeUndefined();
  });
});
