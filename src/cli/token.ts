import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureDemoKeys, isFhirUserReference, mintDemoToken } from '../auth/demo-keys.js';

export const USAGE = `usage: phi-gateway token --role R [--sub S] [--purpose P]... [--patient ID] [--scope S]
                         [--family-name N] [--fhir-user Type/id] [--ttl 1h] [--keys DIR]
  Demo only: mints an access token signed with the demo key (trusted only by the demo configuration)
  and prints it alone on stdout. --purpose may be repeated (or comma-separated); --patient sets the
  patient claim; --scope the SMART scopes; --family-name the family_name claim; --fhir-user the
  fhirUser claim, the caller's own resource whose care relationships count (e.g.
  Practitioner/prac-reyes); --ttl accepts 30s, 15m, 1h, 1d (at most 1d); --keys defaults to
  ./data/demo-keys.
`;

/** Longest lifetime the demo will mint: a day keeps a leaked demo token short-lived. */
const MAX_TTL_SEC = 86_400;
const UNIT_SEC: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `30s` / `15m` / `1h` / `1d` -> seconds, or undefined when malformed. */
export function parseTtl(text: string): number | undefined {
  const m = /^([1-9][0-9]{0,6})([smhd])$/.exec(text);
  return m === null ? undefined : Number(m[1]) * UNIT_SEC[m[2]];
}

/**
 * `phi-gateway token ...`: `argv` is the arguments after the verb. Prints the JWT alone on stdout
 * (so `$(phi-gateway token --role billing)` works); errors and usage go to stderr.
 */
export async function run(
  argv: string[],
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; env: NodeJS.ProcessEnv },
): Promise<number> {
  let values: {
    role?: string;
    sub?: string;
    purpose?: string[];
    patient?: string;
    scope?: string;
    'family-name'?: string;
    'fhir-user'?: string;
    ttl?: string;
    keys?: string;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        role: { type: 'string' },
        sub: { type: 'string' },
        purpose: { type: 'string', multiple: true },
        patient: { type: 'string' },
        scope: { type: 'string' },
        'family-name': { type: 'string' },
        'fhir-user': { type: 'string' },
        ttl: { type: 'string', default: '1h' },
        keys: { type: 'string', default: './data/demo-keys' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    io.stderr.write(`token: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (!values.role) {
    io.stderr.write(`token: --role is required\n${USAGE}`);
    return 2;
  }
  if (values['fhir-user'] !== undefined && !isFhirUserReference(values['fhir-user'])) {
    io.stderr.write(`token: --fhir-user must be a reference like Practitioner/prac-reyes\n`);
    return 2;
  }
  const ttlSec = parseTtl(values.ttl ?? '1h');
  if (ttlSec === undefined || ttlSec > MAX_TTL_SEC) {
    io.stderr.write(`token: --ttl must look like 30s, 15m, 1h or 1d and be at most 1d\n`);
    return 2;
  }
  try {
    const keys = await ensureDemoKeys(resolve(values.keys ?? './data/demo-keys'));
    const token = await mintDemoToken(keys, {
      role: values.role,
      sub: values.sub,
      purpose: values.purpose?.flatMap((p) => p.split(',')).filter((p) => p !== ''),
      patient: values.patient,
      scope: values.scope,
      familyName: values['family-name'],
      fhirUser: values['fhir-user'],
      ttlSec,
    });
    io.stdout.write(`${token}\n`);
    return 0;
  } catch (e) {
    io.stderr.write(`token: ${(e as Error).message}\n`);
    return 1;
  }
}
