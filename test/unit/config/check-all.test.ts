/**
 * check-config names every mistake of a file in one run, each as file:line:col with a "did you
 * mean" where a valid name is close: schema and semantic problems together, in the gateway file
 * and in the policy; YAML syntax errors in plain words at the line and column to fix.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run as checkConfigCli } from '../../../src/cli/check-config.js';
import { checkConfig } from '../../../src/config/load.js';
import { readPolicySource } from '../../../src/config/policy-file.js';
import { parseYaml } from '../../../src/config/yaml.js';

const tmp = mkdtempSync(join(tmpdir(), 'phi-check-all-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const GATEWAY = `upstream:
  url: http://127.0.0.1:8103/fhir
auth:
  issuer: https://idp.example.org
  audience: phi-gateway
  jwksUri: https://idp.example.org/jwks
  roleMap:
    /doctors: clinicain
    /billing: [billing, biling]
policy: ./policy.yaml
`;

// Line numbers matter: the expectations below point into this text.
const POLICY = `version: 1
labels:
  - { code: ETHUD-LOCAL, system: https://hospital.example/labels, display: alcohol use (local) }
purposes:
  TREAT: { display: treatment }
  HPAYMT: { display: payment, parnet: TREAT }
  COC: { display: coordination of care, parent: TRAET }
dataSets:
  clinical:
    withhold: [R, V, ETHUD-LOCL, psy, https://hospital.example/label|ETHUD-LOCAL]
    rules:
      - types: [Patient, Obsevation]
        elements: [name, gendr]
        interactions: [read, serch]
  billing:
    withhold: [N, V]
    rules:
      - types: [Claim]
        search: [patinet]
roles:
  clinician:
    purposes: { TRAET: clinical, COC: clinicl }
    breakGlas: true
  billing:
    purposes: { HPAYMT: billing }
`;

const VALID_POLICY = `version: 1
purposes:
  TREAT: { display: treatment }
  HPAYMT: { display: payment }
dataSets:
  clinical: { withhold: [R, V], rules: [{ types: [Patient] }] }
  billing: { rules: [{ types: [Claim] }] }
roles:
  clinician: { purposes: { TREAT: clinical } }
  billing: { purposes: { HPAYMT: billing } }
`;

const NOT_KNOWN = 'not v3-Confidentiality, a v3-ActCode sensitivity code, or declared under labels:';

function files(gateway: string, policy: string, name: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'gateway.yaml'), gateway);
  writeFileSync(join(dir, 'policy.yaml'), policy);
  return join(dir, 'gateway.yaml');
}

describe('check-config reports every problem at once', () => {
  it('schema and semantic problems of the policy together, each located, with what was meant', () => {
    const gw = files(GATEWAY.replace(/ {2}roleMap:\n.*\n.*\n/, ''), POLICY, 'policy');
    const problems = checkConfig(gw, {});
    const p = (line: number, col: number, text: string) => `${join(tmp, 'policy', 'policy.yaml')}:${line}:${col} ${text}`;
    expect(problems).toEqual([
      p(6, 31, "purposes.HPAYMT: unknown property 'parnet'; did you mean 'parent'?"),
      p(7, 49, "purposes.COC.parent: unknown parent purpose 'TRAET'; did you mean 'TREAT'?"),
      p(10, 22, `dataSets.clinical.withhold[2]: unknown security label code 'ETHUD-LOCL' (${NOT_KNOWN}); did you mean 'ETHUD-LOCAL'?`),
      p(10, 34, `dataSets.clinical.withhold[3]: unknown security label code 'psy' (${NOT_KNOWN}); did you mean 'PSY'?`),
      p(
        10,
        39,
        "dataSets.clinical.withhold[4]: security label 'https://hospital.example/label|ETHUD-LOCAL' is not declared under labels: (a label of another code system must be declared); did you mean 'https://hospital.example/labels|ETHUD-LOCAL'?",
      ),
      p(12, 26, "dataSets.clinical.rules[0].types[1]: unknown FHIR R4 resource type 'Obsevation'; did you mean 'Observation'?"),
      p(13, 26, `dataSets.clinical.rules[0].elements[1]: Patient: selector "gendr": Patient has no element "gendr"; did you mean 'gender'?`),
      p(14, 30, "dataSets.clinical.rules[0].interactions[1]: must be one of: read, search, history, create, update, patch, delete, relabel; did you mean 'search'?"),
      p(
        16,
        16,
        "dataSets.billing.withhold[0]: withholds confidentiality N but releases the more restricted R (v3-Confidentiality ranks U < L < M < N < R < V); withhold R too, or did you mean 'R'?",
      ),
      p(19, 18, "dataSets.billing.rules[0].search[0]: no type of this rule has a search parameter 'patinet'; did you mean 'patient'?"),
      p(22, 17, "roles.clinician.purposes.TRAET: unknown purpose 'TRAET' (not declared under purposes); did you mean 'TREAT'?"),
      p(22, 39, "roles.clinician.purposes.COC: unknown data set 'clinicl'; did you mean 'clinical'?"),
      p(23, 5, "roles.clinician: unknown property 'breakGlas'; did you mean 'breakGlass'?"),
    ]);
  });

  it('every bad roleMap target of the gateway file, with the policy role meant; and unknown keys with the key meant', () => {
    const gw = files(`${GATEWAY}logLevl: info\naudit:\n  sink: fiel\n  pth: ./audit\n`, VALID_POLICY, 'gateway');
    const problems = checkConfig(gw, {}).filter((x) => x.startsWith(gw));
    expect(problems).toEqual(
      expect.arrayContaining([
        `${gw}:8:15 auth.roleMap./doctors: 'clinicain' is not a role of the policy ${join(tmp, 'gateway', 'policy.yaml')}; did you mean 'clinician'?`,
        `${gw}:9:25 auth.roleMap./billing: 'biling' is not a role of the policy ${join(tmp, 'gateway', 'policy.yaml')}; did you mean 'billing'?`,
        `${gw}:11:1 unknown property 'logLevl'; did you mean 'logLevel'?`,
        `${gw}:13:9 audit.sink: must be one of: file, redis; did you mean 'file'?`,
        `${gw}:14:3 audit: unknown property 'pth'; did you mean 'path'?`,
      ]),
    );
  });

  it('the CLI prints each problem on its own line and counts them', async () => {
    const gw = files(GATEWAY.replace(/ {2}roleMap:\n.*\n.*\n/, ''), POLICY, 'cli');
    let err = '';
    const sink = (s: (x: string) => void) =>
      ({
        write: (c: string) => {
          s(c);
          return true;
        },
      }) as unknown as NodeJS.WritableStream;
    const code = await checkConfigCli(['--config', gw], { stdout: sink(() => {}), stderr: sink((c) => (err += c)), env: {} });
    expect(code).toBe(1);
    const lines = err.trim().split('\n');
    expect(lines.at(-1)).toBe('check-config: 13 problems');
    expect(lines.slice(0, -1).every((l) => /^\S+:\d+:\d+ /.test(l))).toBe(true);
  });
});

describe('label checks that catch one real code typed for another', () => {
  const problemsOf = (withhold: string) =>
    readPolicySource('p.yaml', Buffer.from(VALID_POLICY.replace("billing: { rules: [{ types: [Claim] }] }", `billing: { withhold: ${withhold}, rules: [{ types: [Claim] }] }`).replace('withhold: [R, V], rules', 'withhold: [R, V, SUD], rules'))).problems;

  it('a code withheld once, one letter from a code withheld elsewhere, is a problem; written in full it is meant', () => {
    expect(problemsOf('[STD, R, V]')).toEqual([
      expect.stringMatching(/^p\.yaml:6:32 dataSets\.clinical\.withhold\[2\]: 'SUD' is withheld only here and is one letter from 'STD'/),
      expect.stringMatching(/^p\.yaml:7:25 dataSets\.billing\.withhold\[0\]: 'STD' is withheld only here and is one letter from 'SUD'.*did you mean 'SUD'\?/),
    ]);
    expect(problemsOf('[http://terminology.hl7.org/CodeSystem/v3-ActCode|STD, R, V]')).toEqual([]);
    expect(problemsOf('[SUD, R, V]')).toEqual([]);
  });

  it('confidentiality levels withheld must include every more restricted level', () => {
    expect(problemsOf('[N, V]')).toEqual([expect.stringMatching(/dataSets\.billing\.withhold\[0\]: withholds confidentiality N but releases the more restricted R .*did you mean 'R'\?$/)]);
    expect(problemsOf('[R]')).toEqual([expect.stringMatching(/withholds confidentiality R but releases the more restricted V/)]);
    expect(problemsOf('[N, R, V]')).toEqual([]);
  });
});

describe('YAML syntax errors in plain words, at the line and column to fix', () => {
  const problems = (text: string) => parseYaml('p.yaml', text).problems;

  it('several mistakes in one file: each reported where it is', () => {
    const text = [
      'version: 1', // 1
      'purposes:', // 2
      '  TREAT: { display: treatment }', // 3
      '  TREAT: { display: again }', // 4 duplicate
      'dataSets:', // 5
      '  billing:', // 6
      "    description: 'never closed", // 7
      '    rules: []', // 8
      '',
    ].join('\n');
    const out = problems(text);
    expect(out).toContainEqual(expect.stringMatching(/^p\.yaml:4:3 YAML syntax: the key 'TREAT' appears twice in the same block \(first on line 3\)/));
    expect(out).toContainEqual(expect.stringMatching(/^p\.yaml:7:18 YAML syntax: this single-quoted value is never closed: add the closing '/));
  });

  it.each([
    [
      'a line indented under a key that already has a value',
      'roles:\n  billing:\n    description: Billing office\n      purposes: { HPAYMT: billing }\n',
      /^p\.yaml:4:7 YAML syntax: this line is indented more than line 3, so YAML reads it as part of the value of 'description' \('Billing office'\) on that line; if it is a new key, start it in column 5 like 'description'$/,
    ],
    [
      'a line indented under a complete [list]',
      'dataSets:\n  billing:\n    withhold: [R, V]\n     rules: []\n',
      /^p\.yaml:4:6 YAML syntax: this line is indented more than line 3, but 'withhold' there already has its whole value \(\[R, V\]\), so YAML cannot place it; .*column 5/,
    ],
    ['a tab', 'roles:\n\tbilling: {}\n', /^p\.yaml:2:1 YAML syntax: this line is indented with a tab; YAML indentation must be spaces only/],
    ['a tab after spaces', 'roles:\n  billing:\n  \tdescription: x\n', /^p\.yaml:3:3 YAML syntax: this line is indented with a tab/],
    ['an unclosed double quote', 'a: 1\nb: "open\nc: 2\n', /^p\.yaml:2:4 YAML syntax: this double-quoted value is never closed/],
    ['an unclosed [', 'withhold: [R, V\nrules: []\n', /^p\.yaml:1:11 YAML syntax: this '\[' list is never closed: add '\]'/],
    ['an unclosed {', 'roles:\n  billing: { purposes: x\n  coder: {}\n', /^p\.yaml:2:12 YAML syntax: this '\{' mapping is never closed: add '\}'/],
    ['an outdented line between two blocks', 'a:\n    b: 1\n  c: 2\n', /^p\.yaml:3:3 YAML syntax: this line is indented less than line 2 but lines up with no block above it.*column 1 or 5/],
    ['keys among list items', 'rules:\n  - types: [Patient]\n  elements: [name]\n', /^p\.yaml:3:3 YAML syntax: this key starts in the same column as the list items/],
    ['a value with ": " in it', 'description: billing: office\n', /^p\.yaml:1:14 YAML syntax: this value contains ': '.*quotes/],
    ['a line that is not key: value', 'version: 1\npurposes\nroles: {}\n', /^p\.yaml:2:1 YAML syntax: this line is neither 'key: value' nor a list item/],
  ])('%s', (_name, text, expected) => {
    const out = problems(text);
    expect(out.some((p) => expected.test(p)), out.join('\n')).toBe(true);
    // One mistake, one message.
    expect(out).toHaveLength(1);
  });
});
