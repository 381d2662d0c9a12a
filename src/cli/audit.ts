/**
 * `phi-gateway audit export [filters] [--format ndjson|csv|fhir] [--bundle] [--out F] [--source S]`
 * `phi-gateway audit verify [--source S]`
 *
 * Source: `--source file:DIR | redis://host:port[/db][?stream=NAME]`, else PHI_GATEWAY_AUDIT, else
 * the audit sink of the gateway config (`--config F`, PHI_GATEWAY_CONFIG, config/gateway.yaml).
 * Exit codes: 0 success / chains intact, 1 chains broken or export failed, 2 usage error.
 */
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { type AuditSource, openAuditSource } from '../audit/index.js';
import { EXPORT_FORMATS, type ExportFilter, type ExportFormat, type ExportProgress, exportRecords, parseTimeBound } from '../audit/export.js';
import { verifyChains } from '../audit/verify.js';
import type { AuditConfig } from '../config/types.js';

export interface AuditCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

const USAGE = `usage:
  phi-gateway audit export [--from T] [--to T] [--actor SUB] [--patient ID] [--purpose CODE]
                           [--break-glass] [--decision allow|deny|error]
                           [--format ndjson|csv|fhir] [--bundle] [--out F] [--source S] [--config F]
  phi-gateway audit verify [--source S] [--config F]

  S: file:DIR or redis://host:port[/db][?stream=NAME]; default PHI_GATEWAY_AUDIT, then the
  audit section of the gateway config. --from is inclusive, --to exclusive.
`;

class UsageError extends Error {}

async function resolveSource(flag: string | undefined, configFlag: string | undefined, env: NodeJS.ProcessEnv): Promise<string | AuditConfig> {
  if (flag?.trim()) return flag.trim();
  if (env.PHI_GATEWAY_AUDIT?.trim()) return env.PHI_GATEWAY_AUDIT.trim();
  try {
    const { resolveConfigPath } = await import('../config/env.js');
    const { loadGatewayConfig } = await import('../config/gateway.js');
    return loadGatewayConfig(resolveConfigPath(configFlag, env), env).audit;
  } catch (e) {
    throw new UsageError(`no audit source: pass --source file:DIR or redis://..., set PHI_GATEWAY_AUDIT, or fix the gateway config (${(e as Error).message.split('\n')[0]})`);
  }
}

function isTty(s: NodeJS.WritableStream): boolean {
  return (s as { isTTY?: boolean }).isTTY === true;
}

export async function run(argv: string[], io: AuditCliIo): Promise<number> {
  const args = argv[0] === 'audit' ? argv.slice(1) : argv;
  const [verb, ...rest] = args;
  try {
    if (verb === 'export') return await runExport(rest, io);
    if (verb === 'verify') return await runVerify(rest, io);
    if (verb === '--help' || verb === '-h') {
      io.stdout.write(USAGE);
      return 0;
    }
    throw new UsageError(verb ? `unknown audit verb "${verb}"` : 'missing audit verb');
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`phi-gateway audit: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr.write(`phi-gateway audit: ${(e as Error).message}\n`);
    return 1;
  }
}

async function runExport(argv: string[], io: AuditCliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      actor: { type: 'string' },
      patient: { type: 'string' },
      purpose: { type: 'string' },
      'break-glass': { type: 'boolean' },
      decision: { type: 'string' },
      format: { type: 'string', default: 'ndjson' },
      bundle: { type: 'boolean' },
      out: { type: 'string' },
      source: { type: 'string' },
      config: { type: 'string' },
    },
  });
  const format = values.format as ExportFormat;
  if (!EXPORT_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${EXPORT_FORMATS.join(', ')}`);
  if (values.bundle && format !== 'fhir') throw new UsageError('--bundle applies to --format fhir only');
  const decision = values.decision;
  if (decision !== undefined && decision !== 'allow' && decision !== 'deny' && decision !== 'error') throw new UsageError('--decision must be allow, deny or error');
  try {
    if (values.from !== undefined) parseTimeBound(values.from, '--from');
    if (values.to !== undefined) parseTimeBound(values.to, '--to');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const filter: ExportFilter = {
    from: values.from,
    to: values.to,
    actor: values.actor,
    patient: values.patient,
    purpose: values.purpose,
    breakGlass: values['break-glass'] ? true : undefined,
    decision,
  };
  const source = openAuditSource(await resolveSource(values.source, values.config, io.env));
  let out: Writable;
  let file: ReturnType<typeof createWriteStream> | undefined;
  if (values.out) {
    // Exports hold identifiers of patients and staff: owner-only permissions.
    file = createWriteStream(values.out, { flags: 'w', mode: 0o600 });
    await new Promise<void>((resolve, reject) => {
      file!.once('open', () => resolve());
      file!.once('error', reject);
    });
    out = file;
  } else {
    out = io.stdout as Writable;
  }
  const started = Date.now();
  const tty = isTty(io.stderr);
  const progress = (p: ExportProgress): void => {
    if (p.done) return;
    if (tty || Date.now() - started > 5000) io.stderr.write(`audit export: ${p.scanned} scanned, ${p.exported} exported\n`);
  };
  try {
    const result = await exportRecords(source, out, { format, filter, bundle: values.bundle === true, onProgress: progress, progressEvery: 100_000 });
    if (file) {
      await new Promise<void>((resolve, reject) => {
        file!.once('error', reject);
        file!.end(() => resolve());
      });
    }
    const skipped = result.skippedCorrupt ? `, ${result.skippedCorrupt} unparsable lines skipped (run audit verify)` : '';
    io.stderr.write(`audit export: ${result.exported} of ${result.scanned} records exported from ${describe(source)}${skipped}\n`);
    return 0;
  } finally {
    await source.close();
    if (file && !file.closed) file.destroy();
  }
}

function describe(s: AuditSource): string {
  return s.description;
}

async function runVerify(argv: string[], io: AuditCliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { source: { type: 'string' }, config: { type: 'string' } },
  });
  const source = openAuditSource(await resolveSource(values.source, values.config, io.env));
  try {
    const report = await verifyChains(source);
    for (const w of report.warnings) io.stdout.write(`warning: ${w.message}\n`);
    if (report.ok) {
      io.stdout.write(`audit verify: intact: ${report.records} records, ${report.writers} writer chain(s) in ${source.description}\n`);
      return 0;
    }
    io.stdout.write(`audit verify: BROKEN: first bad record: ${report.first!.message}\n`);
    for (const p of report.problems.slice(1, 20)) io.stdout.write(`  also: ${p.message}\n`);
    if (report.problems.length > 20) io.stdout.write(`  ... ${report.problems.length - 20} more\n`);
    return 1;
  } finally {
    await source.close();
  }
}
