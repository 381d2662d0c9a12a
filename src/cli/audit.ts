/**
 * `phi-gateway audit export [filters] [--format ndjson|csv|fhir] [--bundle] [--out F] [--source S]`
 * `phi-gateway audit verify [--public-key F] [--allow-unsealed] [--anchor F] [--source S]`
 * `phi-gateway audit keygen --out DIR`
 * `phi-gateway audit ship [--config F] [--once]` (ship.ts)
 *
 * Source: `--source file:DIR | redis://host:port[/db][?stream=NAME]`, else PHI_GATEWAY_AUDIT, else
 * the audit sink of the gateway config (`--config F`, PHI_GATEWAY_CONFIG, config/gateway.yaml).
 * Exit codes: 0 success / chains intact, 1 chains broken or export failed, 2 usage error.
 */
import { createWriteStream, existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { type AuditSource, openAuditSource } from '../audit/index.js';
import { EXPORT_FORMATS, type ExportFilter, type ExportFormat, type ExportProgress, exportRecords, parseTimeBound } from '../audit/export.js';
import { parseAnchors, verifyChains } from '../audit/verify.js';
import type { AuditConfig } from '../config/types.js';
import { CliAuditUnrecordedError, namedTrail, withCliAuditRecord } from './cli-audit.js';

export interface AuditCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

export const USAGE = `usage:
  phi-gateway audit export [--from T] [--to T] [--actor SUB] [--patient ID] [--purpose CODE]
                           [--break-glass] [--decision allow|deny|error]
                           [--format ndjson|csv|fhir] [--bundle] [--out F] [--source S] [--config F]
      Records matching every filter; --bundle wraps --format fhir in a Bundle. Default: ndjson on
      stdout. The export writes its own audit record (kind audit-export) to the same trail.
  phi-gateway audit verify [--public-key F]... [--allow-unsealed] [--anchor F]... [--source S] [--config F]
      Checks every writer's hash chain. --public-key F: the Ed25519 public key (PEM) the checkpoints
      must be signed with (repeat it during a key rotation); records after a writer's last checkpoint
      are reported as unprotected. A chain that ends without a seal (truncated, or still being
      written) fails unless --allow-unsealed (for a live trail; a writer started in the last two
      minutes may then have no checkpoint yet and is reported as unprotected). --anchor F: checkpoints kept outside
      this machine (the gateway's logged checkpoint lines, or the checkpoint lines of an earlier
      audit verify); the trail must still hold each one with the same hash.
      Exit 0 intact, 1 broken, 2 usage.
  phi-gateway audit keygen --out DIR
      Writes DIR/audit-signing-key.pem (private, mode 0600; the gateway's audit.checkpoint.keyFile
      or PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE) and DIR/audit-signing-key.pub.pem (for audit verify
      --public-key; keep a copy off this machine). Never overwrites an existing key.

  phi-gateway audit ship [--config F] [--once]
      Delivers the trail to the SIEM targets of the config's siem section, as serve does, in a
      process of its own (docs/siem.md); --once: until caught up, then exit 0 (1 a target failed).
      Never beside a serve with the same targets on a file sink: a target's cursor is locked.

  S: file:DIR or redis://host:port[/db][?stream=NAME]; default PHI_GATEWAY_AUDIT (or the file
  PHI_GATEWAY_AUDIT_FILE names), then the audit section of the gateway config (--config F, else
  PHI_GATEWAY_CONFIG, else config/gateway.yaml). T: an ISO 8601 time; --from inclusive, --to exclusive.
`;

class UsageError extends Error {}

/** A live writer signs its first checkpoint within audit.checkpoint.everySeconds (default 60 s) of starting. */
const NEW_WRITER_GRACE_MS = 120_000;

async function resolveSource(flag: string | undefined, configFlag: string | undefined, env: NodeJS.ProcessEnv): Promise<string | AuditConfig> {
  let named: string | undefined;
  try {
    named = await namedTrail(flag, env);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (named !== undefined) return named;
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
    if (verb === 'keygen') return await runKeygen(rest, io);
    if (verb === 'ship') return await (await import('./ship.js')).runShip(rest, io);
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
  const target = await resolveSource(values.source, values.config, io.env);
  const outPath = values.out ? resolve(values.out) : undefined;
  const format_ = { format, bundle: values.bundle === true || undefined };
  const appliedFilter = Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== undefined));
  // The export is recorded in the trail it reads (kind audit-export, cli-audit.ts). A trail that
  // cannot take that record refuses the export before anything is read; the record is written
  // whether the export completed or not: what left the trail is accounted for either way.
  const source = openAuditSource(target);
  let done: { value: Awaited<ReturnType<typeof exportRecords>>; recordId: string };
  try {
    done = await withCliAuditRecord(
      target,
      { command: 'audit export', details: { filter: appliedFilter, ...format_, out: outPath ?? 'stdout' }, patients: filter.patient !== undefined ? [filter.patient] : [] },
      io,
      async () => {
        const result = await exportTo(source, values.out, io, { format, filter, bundle: values.bundle === true });
        return { value: result, details: { exported: result.exported, scanned: result.scanned } };
      },
    );
  } catch (e) {
    if (!(e instanceof CliAuditUnrecordedError)) throw e;
    io.stderr.write(
      `audit export: FAILED: the export's own audit record could not be written to ${e.trail} (${e.reason}); ` +
        (outPath ? 'the output file was removed\n' : 'what was written to stdout is not accounted for in the trail\n'),
    );
    if (outPath) await rm(outPath, { force: true }).catch(() => {});
    if (e.failure !== undefined) throw e.failure;
    return 1;
  }
  const result = done.value;
  const skipped = result.skippedCorrupt ? `, ${result.skippedCorrupt} unparsable lines skipped (run audit verify)` : '';
  io.stderr.write(`audit export: ${result.exported} of ${result.scanned} records exported from ${describe(source)}${skipped} (recorded as ${done.recordId})\n`);
  return 0;
}

/** Streams the matching records to `outFile` (owner-only) or stdout; closes the source. */
async function exportTo(
  source: AuditSource,
  outFile: string | undefined,
  io: AuditCliIo,
  o: { format: ExportFormat; filter: ExportFilter; bundle: boolean },
): Promise<Awaited<ReturnType<typeof exportRecords>>> {
  let out: Writable;
  let file: ReturnType<typeof createWriteStream> | undefined;
  try {
    if (outFile) {
      // Exports hold identifiers of patients and staff: owner-only permissions.
      file = createWriteStream(outFile, { flags: 'w', mode: 0o600 });
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
    const result = await exportRecords(source, out, { format: o.format, filter: o.filter, bundle: o.bundle, onProgress: progress, progressEvery: 100_000 });
    if (file) {
      await new Promise<void>((resolve, reject) => {
        file!.once('error', reject);
        file!.end(() => resolve());
      });
    }
    return result;
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
    options: {
      source: { type: 'string' },
      config: { type: 'string' },
      // Several during a key rotation: a checkpoint may be signed by any of them.
      'public-key': { type: 'string', multiple: true },
      'allow-unsealed': { type: 'boolean' },
      anchor: { type: 'string', multiple: true },
    },
  });
  const { readFile } = await import('node:fs/promises');
  const { loadPublicKeys } = await import('../audit/checkpoint.js');
  const publicKeys: import('node:crypto').KeyObject[] = [];
  for (const f of values['public-key'] ?? []) {
    try {
      publicKeys.push(...loadPublicKeys(await readFile(f, 'utf8')));
    } catch (e) {
      throw new UsageError(`--public-key ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const anchors: ReturnType<typeof parseAnchors> = [];
  for (const f of values.anchor ?? []) {
    try {
      anchors.push(...parseAnchors(await readFile(f, 'utf8')));
    } catch (e) {
      throw new UsageError(`--anchor ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const allowUnsealed = values['allow-unsealed'] === true;
  const source = openAuditSource(await resolveSource(values.source, values.config, io.env));
  try {
    const report = await verifyChains(source, { publicKeys, anchors, requireSeal: !allowUnsealed, newWriterGraceMs: NEW_WRITER_GRACE_MS });
    const out = (line: string): boolean => io.stdout.write(`${line}\n`);
    for (const w of report.warnings) out(`warning: ${w.message}`);
    if (!report.keyed) {
      out('note: no --public-key: the chain is unkeyed and cannot prove itself; whoever can write the store can rewrite it consistently. Verify with --public-key F to check the signed checkpoints.');
    } else {
      for (const w of report.writerSummaries) {
        const state = w.sealed ? 'sealed' : 'unsealed';
        out(`writer ${w.writer}: ${w.lastSeq} records, ${state}, signed through seq ${w.protectedTo}, ${w.unprotected} unprotected`);
      }
      // The latest good checkpoint of every writer, in the form --anchor reads back: keep off the machine.
      for (const w of report.writerSummaries) if (w.latest) out(`checkpoint ${JSON.stringify(w.latest)}`);
    }
    if (anchors.length > 0) out(`anchors: ${report.anchorsChecked} of ${report.anchorsGiven} found in the trail`);
    if (report.ok) {
      out(`audit verify: intact: ${report.records} records, ${report.writers} writer chain(s) in ${source.description}${report.keyed ? ', signatures valid' : ''}`);
      return 0;
    }
    out(`audit verify: BROKEN: first problem: ${report.first!.message}`);
    for (const p of report.problems.slice(1, 20)) out(`  also: ${p.message}`);
    if (report.problems.length > 20) out(`  ... ${report.problems.length - 20} more`);
    if (report.problems.some((p) => p.kind === 'unsealed')) out('  (a trail still being written ends unsealed: verify it with --allow-unsealed)');
    return 1;
  } finally {
    await source.close();
  }
}

/** `audit keygen --out DIR`: a fresh Ed25519 key pair for signed checkpoints; never overwrites one. */
async function runKeygen(argv: string[], io: AuditCliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { out: { type: 'string' } } });
  if (!values.out) throw new UsageError('keygen needs --out DIR');
  const { generateKeyPairSync } = await import('node:crypto');
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const { keyIdOf } = await import('../audit/checkpoint.js');
  const dir = resolve(values.out);
  const privPath = join(dir, 'audit-signing-key.pem');
  const pubPath = join(dir, 'audit-signing-key.pub.pem');
  if (existsSync(privPath) || existsSync(pubPath)) {
    io.stderr.write(`phi-gateway audit: ${privPath} or ${pubPath} already exists; not overwriting a signing key\n`);
    return 1;
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // 'wx': fails rather than replace a key created meanwhile.
  await writeFile(privPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  await writeFile(pubPath, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644, flag: 'wx' });
  io.stdout.write(
    `audit keygen: key ${keyIdOf(publicKey)}\n` +
      `  private: ${privPath} (mode 0600; set audit.checkpoint.keyFile or PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE)\n` +
      `  public:  ${pubPath} (for audit verify --public-key; keep a copy off this machine)\n`,
  );
  return 0;
}
