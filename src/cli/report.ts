/**
 * `phi-gateway report usage|access|break-glass --from T --to T [--source S] [--format table|csv|html]
 *  [--out F] [--config F] [--policy F] [--review-due-hours N]`
 * `phi-gateway report breach (--actor SUB | --client ID | --address CIDR)... --from T --to T
 *  [--discovered T] [--source S] [--format table|csv|html] [--out F] [--config F]`
 *
 * Source as for `audit export`: --source, else PHI_GATEWAY_AUDIT, else the gateway config's sink.
 * The usage report compares against the policy file (--policy, else the gateway config's).
 * Exit codes: 0 done, 1 failure, 2 usage error.
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { openAuditSource } from '../audit/index.js';
import { isChainRecord } from '../audit/chain.js';
import type { AuditRecord } from '../audit/record.js';
import { parseTimeBound } from '../audit/export.js';
import type { AuditConfig } from '../config/types.js';
import type { CompiledPolicy } from '../policy/plan.js';
import { BreachDigest, breachCsv } from '../report/breach.js';
import { AuditDigest, REPORT_KINDS, type ReportKind } from '../report/digest.js';
import { htmlPage, REPORT_FORMATS, type ReportFormat, render, toText } from '../report/render.js';
import { namedTrail, withCliAuditRecord } from './cli-audit.js';

export interface ReportCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Report clock (overdue reviews, chart of unreviewed ages); tests pin it. */
  readonly now?: () => Date;
}

export const USAGE = `usage:
  phi-gateway report usage|access|break-glass [--from T] [--to T] [--format table|csv|html] [--out F]
                     [--source S] [--config F] [--policy F] [--review-due-hours N]
  phi-gateway report breach (--actor SUB | --client ID | --address CIDR)... --from T --to T
                     [--discovered T] [--format table|csv|html] [--out F] [--source S] [--config F]

  usage        per role and purpose: granted resource types (and elements) vs what was disclosed;
               grants never used are candidates for removal (compared with --policy F, else
               PHI_GATEWAY_POLICY, else the gateway config's policy)
  access       per actor and per patient: requests, denials, break-glass sessions, anomalies,
               requests restricted by patients' consents; per actor, access without a care
               relationship (refused, break-glass, recorded only); per consent, requests it
               restricted and requests where break-glass overrode it; access requests (overall,
               per data set, per grant): requests, approvals (narrowed), denials, refused steps,
               median time to decide, grants expired vs revoked early, time from approval to
               revocation, grants never used after approval
  break-glass  sessions, review state and outcome, the consents each session overrode, median and
               worst time to review, overdue reviews (a review is overdue after --review-due-hours
               N, default 72)
  breach       what the trail shows was released to the named actors (token sub, client id, or
               client address in an IPv4/IPv6 CIDR range; repeat each, any one matches) in the
               window: every patient whose data was released, with resource types and elements,
               requests, resources, first and last access, state of residence where the released
               data showed one, break-glass sessions, access grants and anomaly alerts; patients per
               state with the 45 CFR 164.406 media threshold (more than 500 residents) marked, and the
               notification deadlines counted from --discovered T (default now). --from and --to are
               required. CSV: one row per patient.
  S: file:DIR or redis://host:port[/db][?stream=NAME]; default PHI_GATEWAY_AUDIT, then the audit
  section of the gateway config (--config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml).
  T: an ISO 8601 time; --from inclusive, --to exclusive. Default format table, on stdout unless --out.
  Every report is itself recorded in the trail it read (kind audit-export: OS user, host, window,
  output); when that record cannot be written, nothing is printed or written and the exit is 1.
  Exit 0 done, 1 failure, 2 usage.
`;

class UsageError extends Error {}

async function loadConfig(configFlag: string | undefined, env: NodeJS.ProcessEnv) {
  const { resolveConfigPath } = await import('../config/env.js');
  const { loadGatewayConfig } = await import('../config/gateway.js');
  return loadGatewayConfig(resolveConfigPath(configFlag, env), env);
}

export async function run(argv: string[], io: ReportCliIo): Promise<number> {
  const args = argv[0] === 'report' ? argv.slice(1) : argv;
  try {
    if (args[0] === 'breach') return await runBreach(args.slice(1), io);
    return await runReport(args, io);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`phi-gateway report: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr.write(`phi-gateway report: ${(e as Error).message}\n`);
    return 1;
  }
}

async function runReport(argv: string[], io: ReportCliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string', default: 'table' },
      out: { type: 'string' },
      source: { type: 'string' },
      config: { type: 'string' },
      policy: { type: 'string' },
      'review-due-hours': { type: 'string', default: '72' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  const kind = positionals[0] as ReportKind;
  if (positionals.length !== 1 || !REPORT_KINDS.includes(kind)) throw new UsageError(`name one report: ${REPORT_KINDS.join(', ')}`);
  const format = values.format as ReportFormat;
  if (!REPORT_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${REPORT_FORMATS.join(', ')}`);
  const due = Number(values['review-due-hours']);
  if (!Number.isFinite(due) || due <= 0) throw new UsageError('--review-due-hours must be a positive number');
  try {
    if (values.from !== undefined) parseTimeBound(values.from, '--from');
    if (values.to !== undefined) parseTimeBound(values.to, '--to');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }

  const source = await namedTrail(values.source, io.env);
  let policy: CompiledPolicy | undefined;
  const needConfig = source === undefined || (kind === 'usage' && values.policy === undefined && !io.env.PHI_GATEWAY_POLICY);
  const config = needConfig ? await loadConfig(values.config, io.env) : undefined;
  const trail: string | AuditConfig = source ?? config!.audit;
  if (kind === 'usage') {
    const { loadPolicy } = await import('../config/load.js');
    const file = values.policy ?? io.env.PHI_GATEWAY_POLICY ?? config!.policyFile;
    policy = loadPolicy(file).policy;
  }

  // The report names staff and patients: reading the trail for it is itself recorded (cli-audit.ts),
  // and nothing is released unless that record was written.
  const command = `report ${kind}`;
  const { value } = await withCliAuditRecord(
    trail,
    { command, details: { from: values.from, to: values.to, format, out: values.out ? resolve(values.out) : 'stdout', reviewDueHours: kind === 'break-glass' ? due : undefined }, policyVersion: policy?.version },
    io,
    async () => {
      const digest = new AuditDigest({ from: values.from, to: values.to });
      const corrupt = await readTrail(trail, (r) => digest.add(r));
      const now = io.now?.() ?? new Date();
      const text = render(digest.report(kind, { policy, now, reviewDueHours: due }), format, now);
      return { value: { text, records: digest.records, corrupt }, details: { records: digest.records, skippedCorrupt: corrupt || undefined } };
    },
  );
  if (values.out) {
    // Reports name staff and patients: owner-only permissions.
    await writeFile(values.out, value.text, { mode: 0o600 });
    io.stderr.write(`phi-gateway report: ${kind} from ${value.records} records written to ${values.out}\n`);
  } else {
    io.stdout.write(value.text);
  }
  if (value.corrupt > 0) io.stderr.write(`phi-gateway report: ${value.corrupt} unreadable stored lines skipped (run audit verify)\n`);
  return 0;
}

async function runBreach(argv: string[], io: ReportCliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      actor: { type: 'string', multiple: true },
      client: { type: 'string', multiple: true },
      address: { type: 'string', multiple: true },
      from: { type: 'string' },
      to: { type: 'string' },
      discovered: { type: 'string' },
      format: { type: 'string', default: 'table' },
      out: { type: 'string' },
      source: { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const format = values.format as ReportFormat;
  if (!REPORT_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${REPORT_FORMATS.join(', ')}`);
  const actors = values.actor ?? [];
  const clients = values.client ?? [];
  const addresses = values.address ?? [];
  if (actors.length + clients.length + addresses.length === 0) throw new UsageError('name the actors: --actor SUB, --client ID or --address CIDR');
  if ([...actors, ...clients].some((v) => v.trim() === '')) throw new UsageError('--actor and --client need a value');
  if (values.from === undefined || values.to === undefined) throw new UsageError('the breach report needs its window: --from T and --to T');
  const now = io.now?.() ?? new Date();
  let digest: BreachDigest;
  let discovered: Date;
  try {
    parseTimeBound(values.from, '--from');
    parseTimeBound(values.to, '--to');
    discovered = values.discovered === undefined ? now : new Date(parseTimeBound(values.discovered, '--discovered'));
    digest = new BreachDigest({ actors, clients, addresses, from: values.from, to: values.to, discovered });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }

  const source = await namedTrail(values.source, io.env);
  const trail: string | AuditConfig = source ?? (await loadConfig(values.config, io.env)).audit;
  // Like every report, reading the trail for it is itself recorded, and nothing is released unless that record was written.
  const { value } = await withCliAuditRecord(
    trail,
    {
      command: 'report breach',
      details: {
        from: values.from,
        to: values.to,
        discovered: discovered.toISOString(),
        actors: actors.length ? actors : undefined,
        clients: clients.length ? clients : undefined,
        addresses: addresses.length ? addresses : undefined,
        format,
        out: values.out ? resolve(values.out) : 'stdout',
      },
    },
    io,
    async () => {
      const corrupt = await readTrail(trail, (r) => digest.add(r));
      const report = digest.report();
      const text = format === 'csv' ? breachCsv(report.patients) : format === 'html' ? htmlPage(report, now) : toText(report);
      const patients = report.patients.rows.length;
      return { value: { text, records: digest.records, patients, corrupt }, details: { records: digest.records, patientsAffected: patients, skippedCorrupt: corrupt || undefined } };
    },
  );
  if (values.out) {
    // The report names patients: owner-only permissions.
    await writeFile(values.out, value.text, { mode: 0o600 });
    io.stderr.write(`phi-gateway report: breach from ${value.records} records, ${value.patients} patients, written to ${values.out}\n`);
  } else {
    io.stdout.write(value.text);
  }
  if (value.corrupt > 0) io.stderr.write(`phi-gateway report: ${value.corrupt} unreadable stored lines skipped (run audit verify)\n`);
  return 0;
}

/** Feeds every record of the trail but the chain's own (seals, checkpoints) to `add`; returns how many lines were unreadable. */
async function readTrail(trail: Parameters<typeof openAuditSource>[0], add: (record: AuditRecord) => void): Promise<number> {
  const audit = openAuditSource(trail);
  let corrupt = 0;
  try {
    for await (const item of audit) {
      if ('corrupt' in item) {
        corrupt++;
        continue;
      }
      if (!isChainRecord(item.record)) add(item.record);
    }
  } finally {
    await audit.close();
  }
  return corrupt;
}
