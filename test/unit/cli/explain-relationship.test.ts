// `phi-gateway explain` on a data set with a care-relationship requirement: required or recorded
// only, the sources with their kinds and what each reads, the cache TTL, the claim naming the
// caller, and what a caller without a relationship gets (break-glass roles vs the others).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { run as explain } from '../../../src/cli/explain.js';
import { relationshipPolicyYaml } from '../monitor/relationship-fixtures.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const ALL_SOURCES =
  '{ care-team: { kind: CareTeam }, encounter: { kind: Encounter, days: 14 }, episode: { kind: EpisodeOfCare }, department: { kind: PractitionerRole }, work-queue: { kind: Task } }';

/** A gateway config over the test policy with `relationship` as the clinical requirement. */
function config(relationship: string | undefined): { file: string; policy: string } {
  const dir = mkdtempSync(join(tmpdir(), 'phi-explain-'));
  dirs.push(dir);
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, relationshipPolicyYaml(relationship, ALL_SOURCES));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `policy: ${policy}\nupstream:\n  url: http://127.0.0.1:8103/fhir\nauth:\n  issuer: https://idp.test\n  audience: phi-gateway\n  jwksUri: https://idp.test/jwks\n  fhirUserClaim: practitioner_ref\naudit:\n  sink: file\n  path: audit\n`,
  );
  return { file, policy };
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (add: (s: string) => void) =>
    new Writable({
      write(chunk, _enc, cb) {
        add(String(chunk));
        cb();
      },
    });
  const code = await explain(argv, { stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)), env: {} });
  return { code, out, err };
}

describe('explain: care relationships', () => {
  const required = config('{ required: true, sources: [care-team, encounter, episode, department, work-queue] }');

  it('a required relationship: the rule, the caller claim, the TTL, each source and what it reads', async () => {
    const r = await run(['--role', 'clinician', '--purpose', 'TREAT', '--config', required.file]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines).toContainEqual(expect.stringMatching(/^care relationship required by dataSets\.clinical\.relationship \(.*policy\.yaml:\d+\): only patients the caller is related to$/));
    expect(r.out).toContain("  the caller: the token's practitioner_ref claim (a token without one is related to no patient)\n");
    expect(r.out).toContain('cached 120 s (a change upstream takes effect within it)');
    expect(lines).toContainEqual(expect.stringMatching(/^ {4}care-team +CareTeam +active CareTeams listing the caller as a participant member -> CareTeam\.subject +\(.*policy\.yaml:\d+\)$/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {4}encounter +Encounter \(14 days\) +Encounters the caller takes part in .*ended within 14 days -> Encounter\.subject/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {4}episode +EpisodeOfCare +.*care manager -> EpisodeOfCare\.patient/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {4}department +PractitionerRole +the caller's active PractitionerRoles -> in-progress Encounters/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {4}work-queue +Task +open Tasks owned by the caller .*-> Task\.for, or the patient of Task\.focus/));
    expect(r.out).toContain('  without a relationship: 403 relationship-required (this role may break the glass: purpose BTG with a reason; alerted and reviewed)\n');
    expect(r.out).toContain('a search naming no patient is narrowed to the related patients (at most 100; more: 400 relationship-search-too-broad)');
  });

  it('a role that may not break the glass: answered as if the patient did not exist', async () => {
    const r = await run(['--role', 'front-desk', '--purpose', 'TREAT', '--config', required.file]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('  without a relationship: answered as if the patient did not exist (404 not-found for a read, an empty searchset for a search naming the patient)\n');
    expect(r.out).not.toContain('403 relationship-required');
  });

  it('recorded only: looked up and recorded, nothing refused or narrowed', async () => {
    const r = await run(['--role', 'clinician', '--purpose', 'TREAT', '--config', config('{ required: false, sources: [care-team] }').file]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^care relationships recorded only \(required: false\) by dataSets\.clinical\.relationship \(.*\): looked up and written to each audit record, nothing refused or narrowed$/m);
    expect(r.out).toMatch(/^ {4}care-team +CareTeam +active CareTeams/m);
    expect(r.out).not.toMatch(/^ {4}encounter/m);
    expect(r.out).toContain('  without a relationship: answered as usual; the record lists the patient as unrelated\n');
    expect(r.out).not.toContain('narrowed to the related patients');
  });

  it('break-glass, and a data set without a requirement', async () => {
    const btg = await run(['--role', 'clinician', '--purpose', 'BTG', '--config', required.file]);
    expect(btg.code).toBe(0);
    expect(btg.out).toContain('care relationships: break-glass is never narrowed; its audit records say whether the patient was related (what the glass was needed for)\n');
    const free = await run(['--role', 'clinician', '--purpose', 'TREAT', '--config', config(undefined).file]);
    expect(free.out).toContain('care relationships: not required for this purpose\n');
  });
});
