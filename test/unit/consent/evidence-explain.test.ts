// `phi-gateway explain --patient`: the policy's consent section as compiled and a patient's consent
// directives read from a real FHIR server (src/demo/upstream.ts) the way the gateway reads them,
// in-process through the CLI function; with --role and --purpose, what each consent does to that
// role's access; the read recorded in the audit trail. Without --patient, a plan's authorization
// rule and the consent section.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as explain } from '../../../src/cli/explain.js';
import { type RunningUpstream, startFhirUpstream } from '../../../src/demo/upstream.js';
import { consentPolicyYaml, OVERRIDE } from './evidence-fixtures.js';

const SCOPE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
const CATEGORY = [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }];
const rule = (code: string) => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code }] });
const ACTOR = (ref: string) => [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] }, reference: { reference: ref } }];
const TREAT = [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }];
const SUD = [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'SUD' }];

/** pat-1: a deny of Observations, a Part 2 consent naming prac-1 for TREAT, one expired. pat-2: one the gateway cannot read. */
const CONSENTS = [
  {
    resourceType: 'Consent',
    id: 'c-deny-obs',
    status: 'active',
    scope: SCOPE,
    category: CATEGORY,
    patient: { reference: 'Patient/pat-1' },
    dateTime: '2024-01-01',
    policyRule: rule('OPTIN'),
    provision: { provision: [{ type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] }] },
  },
  {
    resourceType: 'Consent',
    id: 'c-part2',
    status: 'active',
    scope: SCOPE,
    category: CATEGORY,
    patient: { reference: 'Patient/pat-1' },
    dateTime: '2024-02-01',
    policyRule: rule('OPTIN'),
    provision: { provision: [{ type: 'permit', actor: ACTOR('Practitioner/prac-1'), purpose: TREAT, securityLabel: SUD }] },
  },
  {
    resourceType: 'Consent',
    id: 'c-expired',
    status: 'active',
    scope: SCOPE,
    category: CATEGORY,
    patient: { reference: 'Patient/pat-1' },
    policyRule: rule('OPTOUT'),
    provision: { period: { start: '2023-01-01', end: '2023-12-31' } },
  },
  {
    resourceType: 'Consent',
    id: 'c-unreadable',
    status: 'active',
    scope: SCOPE,
    category: CATEGORY,
    patient: { reference: 'Patient/pat-2' },
    policyRule: rule('OPTIN'),
    provision: { dataPeriod: { start: '2020-01-01' } },
  },
];

let upstream: RunningUpstream;
let dir: string;

/** A gateway config reaching `upstreamUrl`, its policy with `consent` as the consent section. */
function config(consent: string | undefined, o: { authorization?: boolean; upstreamUrl?: string } = {}): string {
  const d = mkdtempSync(join(dir, 'cfg-'));
  writeFileSync(join(d, 'policy.yaml'), consentPolicyYaml(consent, o));
  const file = join(d, 'gateway.yaml');
  writeFileSync(
    file,
    `policy: ${join(d, 'policy.yaml')}\nupstream:\n  url: ${o.upstreamUrl ?? upstream.url}\nauth:\n  issuer: https://idp.test\n  audience: phi-gateway\n  jwksUri: https://idp.test/jwks\naudit:\n  sink: file\n  path: ${join(dir, 'audit')}\n`,
  );
  return file;
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

/** The audit records the CLI wrote (its own file beside the gateway's). */
function cliRecords(): Array<{ kind: string; disclosed: { patients: string[] }; details: Record<string, unknown> }> {
  const audit = join(dir, 'audit');
  return readdirSync(audit)
    .filter((f) => f.endsWith('.jsonl') || f.includes('cli'))
    .flatMap((f) => readFileSync(join(audit, f), 'utf8').split('\n').filter(Boolean))
    .map((l) => JSON.parse(l))
    .filter((r) => r.kind === 'audit-export');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'phi-explain-consent-'));
  mkdirSync(join(dir, 'audit'));
  upstream = await startFhirUpstream({ seed: false });
  for (const c of CONSENTS) await upstream.repo.createResource(c as unknown as Resource as never, { assignedId: true });
});
afterAll(async () => {
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('explain --patient', () => {
  it("the consent section as compiled and the patient's consents as the gateway reads them; the read recorded", async () => {
    const before = cliRecords().length;
    const r = await run(['--patient', 'pat-1', '--config', config(OVERRIDE)]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^consent: patients' consent directives enforced on every answer, by consent \(.*policy\.yaml:\d+\)$/m);
    expect(r.out).toContain('  read from the FHIR server with the gateway\'s own credentials, cached 60 s (a consent created or revoked upstream takes effect within it)\n');
    expect(r.out).toContain('  overlapping consents: deny-wins (any consent that denies withholds)\n');
    expect(r.out).toContain("  exempt purposes (the patient's own access; consents not applied): PATRQT\n");
    expect(r.out).toContain('  break-glass: releases what a consent denies (override; each overridden consent recorded)\n');
    expect(r.out).toContain(
      '  42 CFR Part 2 labels: v3-ActCode|SUD, v3-Confidentiality|SUD, v3-ActCode|42CFRPart2, v3-Confidentiality|42CFRPart2: released only under a consent permitting the caller and the purpose, with the notice "This record which has been disclosed to you is protected by federal confidential…"\n',
    );
    expect(r.out).toContain('  42 CFR Part 2 under break-glass: released without a consent (medical emergency, 42 CFR 2.51), recorded as overridden\n');
    expect(r.out).toContain('patient pat-1: consent directives as the gateway reads them (active, scope patient-privacy):\n');
    const lines = r.out.split('\n');
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}Consent\/c-deny-obs +active, in force/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}Consent\/c-part2 +active, in force/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}Consent\/c-expired +expired 2023-12-31: no effect$/));
    const recorded = cliRecords();
    expect(recorded.length).toBe(before + 1);
    const last = recorded.at(-1)!;
    expect(last.details.command).toBe('explain --patient');
    expect(last.disclosed.patients).toEqual(['pat-1']);
    expect(last.details.consents).toEqual(expect.arrayContaining(['Consent/c-deny-obs', 'Consent/c-part2', 'Consent/c-expired']));
  });

  it('a consent the gateway cannot read, a patient without any, the section off', async () => {
    const bad = await run(['--patient', 'Patient/pat-2', '--config', config(OVERRIDE)]);
    expect(bad.code).toBe(0);
    expect(bad.out).toMatch(/^ {2}Consent\/c-unreadable +UNEVALUABLE: .*dataPeriod.* -> patient's data withheld from every caller but break-glass$/m);
    const none = await run(['--patient', 'pat-3', '--config', config(OVERRIDE)]);
    expect(none.out).toContain('\npatient pat-3: no consent directives\n');
    const off = await run(['--patient', 'pat-1', '--config', config(undefined)]);
    expect(off.code).toBe(0);
    expect(off.out).toContain('the consent section is off: consents are not enforced\n');
    expect(off.out).not.toContain('Consent/');
  });

  it('with a role and purpose: what each consent decides for each granted type, and altogether', async () => {
    const file = config(OVERRIDE);
    const anyone = await run(['--role', 'clinician', '--purpose', 'TREAT', '--patient', 'pat-1', '--config', file]);
    expect(anyone.err).toBe('');
    expect(anyone.code).toBe(0);
    expect(anyone.out).toContain("\nrole clinician, purpose TREAT, caller a caller no consent names as an actor (--actor REF: the token's fhirUser):\n");
    expect(anyone.out).toContain('  Consent/c-deny-obs: permit: Patient, Encounter; deny: Observation\n');
    expect(anyone.out).toContain('  Consent/c-part2: permit: Patient, Observation, Encounter (and provisions on codes, labels or particular records, decided resource by resource)\n');
    expect(anyone.out).toContain('  Consent/c-expired: not in force: no effect\n');
    expect(anyone.out).toContain('  altogether (deny-wins): released: Patient, Encounter; withheld: denied (Consent/c-deny-obs): Observation\n');
    expect(anyone.out).toContain('  altogether, 42 CFR Part 2 data: withheld: no consent permits this caller and purpose (42 CFR Part 2): Patient, Encounter;');
    // The named practitioner: Part 2 data released to him with the notice.
    const named = await run(['--role', 'clinician', '--purpose', 'TREAT', '--patient', 'pat-1', '--actor', 'Practitioner/prac-1', '--config', file]);
    expect(named.out).toContain('  Consent/c-part2: permit: Patient, Observation, Encounter; Part 2 data permitted to this caller and purpose: Patient, Observation, Encounter');
    expect(named.out).toMatch(/ {2}altogether, 42 CFR Part 2 data: released \(with the 42 CFR Part 2 notice, permitted by Consent\/c-part2\): Patient, Encounter/);
    // The patient's own access is exempt.
    const own = await run(['--role', 'clinician', '--purpose', 'PATRQT', '--patient', 'pat-1', '--config', file]);
    expect(own.out).toContain('  purpose PATRQT is exempt: consents are not applied\n');
    expect(own.out).not.toContain('altogether');
  });

  it('an upstream that cannot answer: exit 1, nothing shown', async () => {
    const r = await run(['--patient', 'pat-1', '--config', config(OVERRIDE, { upstreamUrl: 'http://127.0.0.1:1/fhir' })]);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^explain: the consents of patient pat-1 could not be read: consent-unavailable/);
  });
});

describe('explain without --patient', () => {
  it("shows a plan's authorization rule and the consent section with whether it applies to the purpose", async () => {
    const r = await run(['--role', 'marketer', '--purpose', 'HMARKT', '--config', config(OVERRIDE, { authorization: true })]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /^authorization required by dataSets\.marketing\.consent \(.*policy\.yaml:\d+\): patient data is released for HMARKT only under a consent of the patient permitting it \(HIPAA 164\.508\)$/m,
    );
    expect(r.out).toContain('  purpose HMARKT: consents applied; what a consent withholds is answered as if it did not exist\n');
    const plain = await run(['--role', 'clinician', '--purpose', 'TREAT', '--config', config(undefined)]);
    expect(plain.code).toBe(0);
    expect(plain.out).not.toMatch(/^consent:|consents applied/m);
    expect(plain.out).not.toContain('authorization required');
  });
});
