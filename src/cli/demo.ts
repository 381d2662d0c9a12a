/**
 * `phi-gateway demo` (`npm start`): a sample FHIR server (medplum's FHIR router over an in-memory
 * repository, seeded with synthetic patients), the gateway in front of it with the shipped example
 * policy, a local signing key standing in for the identity provider, and the file audit sink under
 * ./data. Prints curl commands with a token for each demo role, break-glass, and an elevated-access
 * request approved by another role and then used. Needs no Redis, Docker or network.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEMO_AUDIENCE, DEMO_ISSUER, ensureDemoKeys, mintDemoToken } from '../auth/demo-keys.js';
import { ConfigError, loadGatewayConfig } from '../config/load.js';
import type { GatewayConfig } from '../config/types.js';
import { DEMO } from '../demo/data.js';
import { startFhirUpstream } from '../demo/upstream.js';
import { startGateway } from '../server/runtime.js';
import type { CliIo } from './main.js';
import { serveUntilSignal } from './serve.js';

const C = DEMO.consents;

/**
 * The demo roles, the purpose each one declares, and requests that show what the policy does. A
 * `fhirUser` names the person behind the token, whose care relationships (DEMO.relationships) the
 * policy's relationship requirements use, and whom patients' consents (DEMO.consents) name. Each
 * `shows` names the status a request answers with when it is not 200.
 */
export const DEMO_TOUR: ReadonlyArray<{
  role: string;
  purpose: string;
  sub: string;
  fhirUser?: string;
  requests: ReadonlyArray<{ path: string; shows: string }>;
}> = [
  {
    role: 'clinician',
    purpose: 'TREAT',
    sub: 'dr-reyes',
    fhirUser: DEMO.relationships.fhirUsers.clinician,
    requests: [
      { path: `/Patient/${DEMO.patients.alice}`, shows: 'her patient (care team): the whole chart, SSN, phone, narrative' },
      { path: `/Condition?patient=${DEMO.patients.alice}`, shows: 'clinical data, notes included' },
      {
        path: `/Patient/${DEMO.patients.brian}`,
        shows: 'not her patient (no care team, encounter, episode or ward): 403 relationship-required, break-glass can open it',
      },
      { path: `/Patient/${DEMO.patients.vip}`, shows: 'the VIP chart is restricted: 403, break-glass can reveal it' },
      {
        path: `/Condition/${C.part2.condition}`,
        shows: "Paula's substance use disorder record (42 CFR Part 2): her consent names Dr. Reyes for treatment; released with the redisclosure notice (meta.extension, label NORDSCLCDS)",
      },
      { path: `/Condition?patient=${DEMO.patients.elder}`, shows: "Edith's consent refusing all sharing ended in 2023: no effect, her conditions as usual" },
    ],
  },
  {
    role: 'billing',
    purpose: 'HPAYMT',
    sub: 'billing-clerk-1',
    requests: [
      { path: `/Patient/${DEMO.patients.alice}`, shows: 'no SSN, no telecom, no narrative; marked REDACTED' },
      { path: `/Condition?patient=${DEMO.patients.paula}`, shows: 'psychiatric conditions withheld, codes only' },
      { path: `/Claim?patient=${DEMO.patients.alice}`, shows: 'claims' },
      { path: `/Observation?patient=${DEMO.patients.alice}`, shows: '403: billing may not see observations' },
      {
        path: `/Encounter?patient=${DEMO.patients.brian}`,
        shows: 'Brian paid for one visit himself and restricted it from payment (his consent): only his other encounter',
      },
      { path: `/Claim?patient=${DEMO.patients.brian}`, shows: "nor that visit's claim: an empty searchset, as if it did not exist" },
    ],
  },
  {
    role: 'coder',
    purpose: 'HOPERAT',
    sub: 'coder-1',
    fhirUser: DEMO.relationships.fhirUsers.coder,
    requests: [
      { path: `/Patient/${DEMO.patients.alice}`, shows: 'in the coding work queue: MRN, gender and birth date only' },
      { path: `/Patient/${DEMO.patients.brian}`, shows: 'not in the work queue (his task is completed): 404, as if he did not exist' },
      {
        path: `/Condition/${C.part2.condition}`,
        shows: "Paula is in the work queue, but her Part 2 consent does not name the coder: 404, as if the record did not exist",
      },
    ],
  },
  {
    role: 'researcher',
    purpose: 'HRESCH',
    sub: 'researcher-1',
    requests: [
      { path: '/Patient?_count=5', shows: 'Safe Harbor: pseudonymous ids, birth year, 3-digit ZIP, no names' },
      { path: `/Observation?code=http://loinc.org|8867-4`, shows: 'de-identified observations' },
      {
        path: '/Condition?code=http://snomed.info/sct|86406008',
        shows: 'Henry opted out of research (his consent): the only HIV diagnosis is his, so an empty searchset',
      },
    ],
  },
  {
    role: 'front-desk',
    purpose: 'HOPERAT',
    sub: 'front-desk-1',
    requests: [
      { path: `/Appointment?patient=${DEMO.patients.alice}`, shows: 'appointments' },
      { path: `/Condition?patient=${DEMO.patients.alice}`, shows: '403: no clinical data' },
    ],
  },
  {
    role: 'auditor',
    purpose: 'HCOMPL',
    sub: 'auditor-1',
    requests: [{ path: `/Patient/${DEMO.patients.alice}`, shows: '403: no PHI through the FHIR API' }],
  },
];

/**
 * Elevated access on request, as the tour shows it: billing, which never sees clinical documents,
 * asks for the `claim-attachment` data set for one patient (a payer wants the note as a claim
 * attachment), the privacy officer approves it, billing reads the patient's documents with
 * `X-Access-Grant`, and the grant is revoked. The approver's token is printed with the others.
 */
export const DEMO_ACCESS = {
  requester: 'billing',
  purpose: 'HPAYMT',
  approver: { role: 'privacy-officer', purpose: 'HCOMPL', sub: 'privacy-officer-1' },
  dataSet: 'claim-attachment',
  patient: DEMO.patients.alice,
  /** A patient the grant does not name. */
  other: DEMO.patients.brian,
  justification: 'Payer requested the February progress note as an attachment to claim CLM-1001',
  minutes: 60,
} as const;

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The printed tour. `explain`: the demo's FHIR server, the gateway config it runs and its audit
 * trail, for the `explain --patient` command (the CLI reads consents from the upstream as the
 * gateway does, and records that read in the trail).
 */
export function tourText(
  baseUrl: string,
  tokens: Record<string, string>,
  explain?: { upstreamUrl: string; configFile: string; audit: string },
): string {
  const lines: string[] = [];
  lines.push('# Demo tokens (valid 8 hours; mint more with: npx phi-gateway token --role billing,');
  lines.push(`#   or for a clinician's own patients: npx phi-gateway token --role clinician --fhir-user ${DEMO.relationships.fhirUsers.clinician})`);
  for (const t of DEMO_TOUR) lines.push(`export ${envName(t.role)}=${tokens[t.role]}`);
  lines.push(`export ${envName(DEMO_ACCESS.approver.role)}=${tokens[DEMO_ACCESS.approver.role]}`);
  lines.push('');
  for (const t of DEMO_TOUR) {
    lines.push(`# ${t.role} (purpose ${t.purpose})`);
    for (const r of t.requests) {
      lines.push(`#   ${r.shows}`);
      lines.push(
        `curl -s ${shellQuote(baseUrl + r.path)} -H "Authorization: Bearer $${envName(t.role)}" -H 'X-Purpose-Of-Use: ${t.purpose}'`,
      );
    }
    lines.push('');
  }
  lines.push('# break the glass (clinician, with a reason; alerted and queued for review):');
  lines.push(
    `curl -s ${shellQuote(`${baseUrl}/Patient/${DEMO.patients.vip}`)} -H "Authorization: Bearer $${envName('clinician')}" -H 'X-Purpose-Of-Use: BTG' -H 'X-Break-Glass-Reason: Unconscious patient in the ED, identity confirmed by ID band'`,
  );
  lines.push('# break the glass for a patient who is not hers (the audit record says so: no relationship):');
  lines.push(
    `curl -s ${shellQuote(`${baseUrl}/Patient/${DEMO.patients.brian}`)} -H "Authorization: Bearer $${envName('clinician')}" -H 'X-Purpose-Of-Use: BTG' -H 'X-Break-Glass-Reason: Covering the ED overnight, patient arrived by ambulance'`,
  );
  lines.push('');
  lines.push(...accessTour(baseUrl));
  if (explain) {
    lines.push('');
    lines.push("# Paula's consent directives as the gateway reads them (from the demo's FHIR server):");
    lines.push(
      `PHI_GATEWAY_UPSTREAM=${shellQuote(explain.upstreamUrl)} PHI_GATEWAY_AUDIT=${shellQuote(explain.audit)} ` +
        `npx phi-gateway explain --config ${shellQuote(explain.configFile)} --patient ${DEMO.patients.paula}`,
    );
  }
  lines.push('');
  lines.push(`# the audit trail: ./data/audit   (npx phi-gateway audit verify --source file:data/audit)`);
  return `${lines.join('\n')}\n`;
}

/**
 * The request / approve / use / revoke sequence (DEMO_ACCESS). The access-request routes live beside
 * the FHIR base (`/access-requests`, not under `/fhir`); the request's id, kept in `$GRANT`, is
 * read from its JSON answer with node, which `npm start` already needs.
 */
function accessTour(baseUrl: string): string[] {
  const a = DEMO_ACCESS;
  const origin = baseUrl.replace(/\/fhir$/, '');
  const officer = a.approver.role.replace(/-/g, ' ');
  const requester = `-H "Authorization: Bearer $${envName(a.requester)}" -H 'X-Purpose-Of-Use: ${a.purpose}'`;
  const approver = `-H "Authorization: Bearer $${envName(a.approver.role)}" -H 'X-Purpose-Of-Use: ${a.approver.purpose}'`;
  const json = (body: unknown) => `-H 'Content-Type: application/json' -d ${shellQuote(JSON.stringify(body))}`;
  const search = (type: string, patient: string) => shellQuote(`${baseUrl}/${type}?patient=${patient}`);
  const request = { dataSet: a.dataSet, patients: [a.patient], justification: a.justification, minutes: a.minutes };
  return [
    `# elevated access on request: ${a.requester} needs Alice's progress note for a payer (data set ${a.dataSet}, approved by the ${officer}):`,
    `#   without a grant ${a.requester} may not read documents: 403`,
    `curl -s ${search('DocumentReference', a.patient)} ${requester}`,
    `#   (a) ${a.requester} asks, for Alice only and ${a.minutes} minutes, with a justification: 201, the privacy office is alerted; the id goes in $GRANT`,
    `GRANT=$(curl -s -X POST ${shellQuote(`${origin}/access-requests`)} ${requester} ${json(request)} | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).id')`,
    `#   the ${officer}'s queue holds it (${a.requester} may not approve its own request)`,
    `curl -s ${shellQuote(`${origin}/access-requests?status=pending`)} ${approver}`,
    `#   (b) the ${officer} approves it (or approves less: fewer patients or types, a shorter time; or denies it)`,
    `curl -s -X POST "${origin}/access-requests/$GRANT/approve" ${approver} ${json({ note: 'Payer request verified against the claim' })}`,
    `#   (c) ${a.requester} reads Alice's documents with the grant; the response and each audit record name it`,
    `curl -s ${search('DocumentReference', a.patient)} ${requester} -H "X-Access-Grant: $GRANT"`,
    `#   and her lab report (DiagnosticReport is in the data set too)`,
    `curl -s ${search('DiagnosticReport', a.patient)} ${requester} -H "X-Access-Grant: $GRANT"`,
    `#   the same grant for a patient it does not name: 403 grant-out-of-scope, and the privacy office is alerted`,
    `curl -s ${search('DocumentReference', a.other)} ${requester} -H "X-Access-Grant: $GRANT"`,
    `#   (d) the ${officer} revokes it (${a.requester} may also give it back early)`,
    `curl -s -X POST "${origin}/access-requests/$GRANT/revoke" ${approver} ${json({ note: 'Attachment sent to the payer' })}`,
    `#   the next use, on any replica: 403 grant-inactive`,
    `curl -s ${search('DocumentReference', a.patient)} ${requester} -H "X-Access-Grant: $GRANT"`,
  ];
}

function envName(role: string): string {
  return `${role.toUpperCase().replace(/-/g, '_')}_TOKEN`;
}

export const USAGE = `usage: phi-gateway demo [--config F] [--data DIR]
  Starts a sample FHIR server with synthetic patients, the gateway in front of it with the shipped
  example policy, and a local signing key standing in for the identity provider; prints a token and
  curl commands for each demo role, and an elevated-access request approved, used and revoked.
  Needs no Redis, Docker or network. Not for production.
  --config F: the gateway config (default PHI_GATEWAY_CONFIG, else the package's config/gateway.yaml;
  upstream, issuer and audience are the demo's). --data DIR: demo keys and the file audit trail
  (default ./data; PHI_GATEWAY_AUDIT overrides the trail). Ctrl-C stops.
`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, data: { type: 'string' } },
    strict: true,
  });
  const dataDir = resolve(values.data ?? 'data');
  const keys = await ensureDemoKeys(resolve(dataDir, 'demo-keys'));
  const upstream = await startFhirUpstream({ seed: true });
  const configFile = values.config ?? io.env.PHI_GATEWAY_CONFIG ?? new URL('../../config/gateway.yaml', import.meta.url).pathname;
  const audit = io.env.PHI_GATEWAY_AUDIT ?? `file:${resolve(dataDir, 'audit')}`;
  let config: GatewayConfig;
  try {
    const loaded = loadGatewayConfig(configFile, {
      ...io.env,
      PHI_GATEWAY_UPSTREAM: upstream.url,
      PHI_GATEWAY_ISSUER: DEMO_ISSUER,
      PHI_GATEWAY_AUDIENCE: DEMO_AUDIENCE,
      PHI_GATEWAY_AUDIT: audit,
      // A fixed demo key so pseudonyms are stable across demo runs; production sets its own secret.
      ...(io.env.PHI_GATEWAY_PSEUDONYM_KEY_FILE
        ? {}
        : { PHI_GATEWAY_PSEUDONYM_KEY: io.env.PHI_GATEWAY_PSEUDONYM_KEY ?? 'demo-only-pseudonym-key-not-for-production-use' }),
    });
    // The demo's identity provider is a local key pair: verify against its JWKS file.
    config = { ...loaded, auth: { ...loaded.auth, jwksUri: undefined, jwksFile: keys.jwksFile } };
  } catch (e) {
    await upstream.close();
    if (e instanceof ConfigError) {
      for (const p of e.problems) io.stderr.write(`${p}\n`);
      return 1;
    }
    throw e;
  }
  const gw = await startGateway(config);
  const tokens: Record<string, string> = {};
  for (const t of DEMO_TOUR) {
    tokens[t.role] = await mintDemoToken(keys, { role: t.role, sub: t.sub, fhirUser: t.fhirUser, ttlSec: 8 * 3600 });
  }
  const approver = DEMO_ACCESS.approver;
  tokens[approver.role] = await mintDemoToken(keys, { role: approver.role, sub: approver.sub, ttlSec: 8 * 3600 });
  io.stdout.write(`\nphi-gateway demo: FHIR API at ${gw.url} (upstream ${upstream.url}, admin http://${config.admin.host}:${config.admin.port})\n\n`);
  io.stdout.write(tourText(gw.url, tokens, { upstreamUrl: upstream.url, configFile: resolve(configFile), audit }));
  io.stdout.write('\nCtrl-C to stop.\n');
  const code = await serveUntilSignal(gw, io);
  await upstream.close();
  return code;
}
