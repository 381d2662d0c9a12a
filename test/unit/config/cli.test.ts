import { NO_CHECKPOINT_KEY_WARNING } from '../../../src/audit/checkpoint.js';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { run as checkConfig } from '../../../src/cli/check-config.js';
import { run as explain } from '../../../src/cli/explain.js';
import { loadPolicy } from '../../../src/config/load.js';

function buffers(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]) =>
    new Writable({
      write(chunk, _enc, cb) {
        into.push(String(chunk));
        cb();
      },
    });
  return { io: { stdout: sink(out), stderr: sink(err), env }, out: () => out.join(''), err: () => err.join('') };
}

const version = loadPolicy('config/policy.yaml').policy.version;

describe('check-config', () => {
  it('accepts the shipped files and prints the policy version', async () => {
    const b = buffers();
    expect(await checkConfig([], b.io)).toBe(0);
    expect(b.out()).toBe(`ok: config/gateway.yaml, config/policy.yaml (policy version ${version})\n`);
    // The example config names no checkpoint key: said, but not a problem.
    expect(b.err()).toBe(`warning: ${NO_CHECKPOINT_KEY_WARNING}\n`);
  });

  it('reports a broken policy with line and column and exits 1', async () => {
    const b = buffers();
    expect(await checkConfig(['--config', 'test/fixtures/config/schema/gateway.yaml'], b.io)).toBe(1);
    const lines = b.err().trim().split('\n');
    expect(lines).toContain("test/fixtures/config/schema/policy.yaml:9:9 dataSets.clinical.rules[0]: unknown property 'element'; did you mean 'elements'?");
    expect(lines.at(-1)).toBe('check-config: 3 problems');
    expect(b.out()).toBe('');
  });

  it('takes the file from PHI_GATEWAY_CONFIG; --config wins over it', async () => {
    const env = { PHI_GATEWAY_CONFIG: 'test/fixtures/config/semantic/gateway.yaml' };
    const b = buffers(env);
    expect(await checkConfig([], b.io)).toBe(1);
    expect(b.err()).toContain('semantic/policy.yaml:12:17 ');
    const c = buffers(env);
    expect(await checkConfig(['--config', 'config/gateway.yaml'], c.io)).toBe(0);
  });

  it('rejects unknown options', async () => {
    const b = buffers();
    expect(await checkConfig(['--bogus'], b.io)).toBe(1);
    expect(b.err()).toContain('usage:');
  });
});

describe('explain', () => {
  it('billing/HPAYMT on Patient: grant chain with file:line, then element by element', async () => {
    const b = buffers();
    expect(await explain(['--role', 'billing', '--purpose', 'HPAYMT', '--resource', 'Patient'], b.io)).toBe(0);
    const loaded = loadPolicy('config/policy.yaml');
    const g = loaded.locate('roles.billing.purposes.HPAYMT')!.line;
    const r = loaded.locate('dataSets.billing.rules[0]')!.line;
    const text = b.out();
    expect(text).toContain(
      `granted by roles.billing.purposes.HPAYMT (config/policy.yaml:${g}) -> dataSets.billing.rules[0] (config/policy.yaml:${r})`,
    );
    expect(text).toContain('  interactions: read, search');
    expect(text).toContain('  operations: none');
    expect(text).toMatch(/search parameters: .*\bname\b/);
    expect(text).not.toMatch(/search parameters: .*\bidentifier\b/);
    expect(text).toMatch(/withheld labels: .*v3-ActCode\|PSY\b/);
    expect(text).toMatch(/remove +Patient\.telecom +by @ContactPoint/);
    expect(text).toMatch(/keep +Patient\.name +by name/);
    expect(text).toMatch(/remove +Patient\.identifier\[system=http:\/\/hl7\.org\/fhir\/sid\/us-ssn\] +by identifier\[system=/);
    expect(text).not.toContain('\nCoverage\n');
  });

  it('a child purpose shows the parent grant; without --resource every granted type is listed', async () => {
    const b = buffers();
    expect(await explain(['--role', 'billing', '--purpose', 'http://terminology.hl7.org/CodeSystem/v3-ActReason|CLMATTCH'], b.io)).toBe(0);
    const types = b.out().split('\n').filter((l) => /^[A-Z][A-Za-z]+$/.test(l));
    expect(types.sort()).toEqual(['Claim', 'Condition', 'Coverage', 'Encounter', 'ExplanationOfBenefit', 'Organization', 'Patient', 'Practitioner', 'Procedure']);
    expect(b.out()).toContain('purpose CLMATTCH (claim attachment)');
    expect(b.out()).toMatch(/granted by roles\.billing\.purposes\.HPAYMT \(config\/policy\.yaml:\d+\)/);
  });

  it('a capability-only role sees no FHIR types', async () => {
    const b = buffers();
    expect(await explain(['--role', 'privacy-officer', '--purpose', 'HCOMPL'], b.io)).toBe(0);
    expect(b.out()).toContain('capabilities: audit-export, break-glass-review');
    expect(b.out()).toContain('no FHIR resource types are granted');
  });

  it('break-glass for an eligible role explains the emergency data set', async () => {
    const b = buffers();
    expect(await explain(['--role', 'clinician', '--purpose', 'BTG', '--resource', 'Patient'], b.io)).toBe(0);
    expect(b.out()).toMatch(/granted by roles\.clinician\.breakGlass \(config\/policy\.yaml:\d+\) -> breakGlass\.dataSet/);
    expect(b.out()).toContain('withheld labels: none');
    expect(b.out()).toContain('operations: $everything');
  });

  it.each([
    ['unknown role', ['--role', 'janitor', '--purpose', 'TREAT'], /unknown role 'janitor'/],
    ['purpose the role cannot declare', ['--role', 'billing', '--purpose', 'TREAT'], /role billing cannot declare purpose TREAT/],
    ['unknown purpose', ['--role', 'billing', '--purpose', 'SHOPPING'], /not a purpose of this policy/],
    ['BTG for a role that is not eligible', ['--role', 'billing', '--purpose', 'BTG'], /may not break the glass/],
    ['missing --purpose', ['--role', 'billing'], /--role and --purpose are required/],
  ])('%s -> message and exit 1', async (_n, argv, message) => {
    const b = buffers();
    expect(await explain(argv, b.io)).toBe(1);
    expect(b.err()).toMatch(message);
  });

  it('a type the role does not get exits 1 and says so', async () => {
    const b = buffers();
    expect(await explain(['--role', 'billing', '--purpose', 'HPAYMT', '--resource', 'Observation'], b.io)).toBe(1);
    expect(b.out()).toContain('Observation: not granted (type-denied)');
  });

  it('a broken configuration prints its problems and exits 1', async () => {
    const b = buffers();
    expect(await explain(['--role', 'billing', '--purpose', 'HPAYMT', '--config', 'test/fixtures/config/syntax/gateway.yaml'], b.io)).toBe(1);
    expect(b.err()).toBe(
      "test/fixtures/config/syntax/policy.yaml:4:3 YAML syntax: the key 'TREAT' appears twice in the same block (first on line 3); YAML cannot tell which one is meant: keep one\n",
    );
  });
});
