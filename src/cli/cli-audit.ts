/**
 * Every command-line read of the trail (or of the break-glass sessions) leaves its own record in
 * the trail: `audit export`, `report ...`, `policy diff`, `break-glass list`. Kind `audit-export`
 * (exported as DICOM 110106 "Export"), `details.command` naming the verb. The CLI has no token, so
 * the actor is the OS account and host that ran it.
 *
 * The record's sink is opened before anything is read, so a trail that cannot take the record
 * refuses the command up front; the record is written once the work is done (what was read, how
 * much, where it went). A command whose record cannot be written fails: callers that hold their
 * output until then (reports, diff, list) release nothing.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { resolve } from 'node:path';
import { auditLocation, openAuditSource } from '../audit/index.js';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { AuditConfig } from '../config/types.js';

export interface CliAuditIo {
  readonly env: NodeJS.ProcessEnv;
}

/** What the command was asked to do, known before it runs. */
export interface CliAuditAction {
  /** The verb as typed, e.g. `audit export`, `report access`, `break-glass list`. */
  readonly command: string;
  /** Arguments worth keeping (filters, window, format, output path). Identifiers only, never PHI. */
  readonly details?: Readonly<Record<string, unknown>>;
  /** Patient ids the request itself names (e.g. an export filtered to one patient). */
  readonly patients?: readonly string[];
  readonly policyVersion?: string | undefined;
}

/** What the command produced: its value, plus what to add to the record about it. */
export interface CliAuditOutcome<T> {
  readonly value: T;
  readonly details?: Readonly<Record<string, unknown>>;
  /** Patient ids the output discloses (added to the action's). */
  readonly patients?: readonly string[];
}

/** The command ran (or failed) but its record could not be written: it must fail. */
export class CliAuditUnrecordedError extends Error {
  constructor(
    readonly command: string,
    /** Where the record should have gone (no password). */
    readonly trail: string,
    /** An error code, never a message (a redis error can name the URL and its password). */
    readonly reason: string,
    /** The command's own failure, when it failed as well. */
    readonly failure: unknown,
  ) {
    super(`${command}: FAILED: its own audit record could not be written to ${trail} (${reason}); nothing was released`);
  }
}

export function errorCode(e: unknown): string {
  // Codes, not messages: a redis error can name the URL, which may hold a password.
  const err = e as { code?: string; name?: string; message?: string };
  return err?.code ?? (/^[A-Z]+\b/.exec(err?.message ?? '')?.[0] || err?.name || 'error');
}

/** The sink configuration that writes into the trail `target` names (`file:DIR`, a directory, `redis://...`, or a config). */
export async function trailConfig(target: string | AuditConfig): Promise<AuditConfig> {
  if (typeof target !== 'string') return target;
  const at = auditLocation(target);
  if (at.kind === 'redis') return { sink: 'redis', url: at.url, stream: at.stream, failOpen: false };
  const { DEFAULTS } = await import('../config/gateway.js');
  return { sink: 'file', path: resolve(at.dir), failOpen: false, rotateBytes: DEFAULTS.auditRotateBytes, groupCommitMs: 0 };
}

/**
 * The trail a command names itself: `--source`, else PHI_GATEWAY_AUDIT (or the file
 * PHI_GATEWAY_AUDIT_FILE names: a redis URL may hold a password); undefined = the gateway
 * config's sink. Throws the variable's problem (both set, unreadable file), never its content.
 */
export async function namedTrail(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (flag?.trim()) return flag.trim();
  const { withSecretFiles } = await import('../config/env.js');
  const secrets = withSecretFiles(env);
  const problem = secrets.problems.find((p) => /^PHI_GATEWAY_AUDIT[,_:]/.test(p));
  if (problem !== undefined) throw new Error(problem);
  return secrets.env.PHI_GATEWAY_AUDIT?.trim() || undefined;
}

/**
 * Runs `fn` with the record of `action` accounted for in `trail`: refuses before `fn` when the
 * trail cannot take a record, writes the record after `fn` (allow, or error when `fn` threw, then
 * rethrows), and throws CliAuditUnrecordedError when that write fails. Returns `fn`'s value and the
 * record id.
 */
export async function withCliAuditRecord<T>(
  trail: string | AuditConfig,
  action: CliAuditAction,
  io: CliAuditIo,
  fn: () => Promise<CliAuditOutcome<T>>,
): Promise<{ value: T; recordId: string }> {
  const cfg = await trailConfig(trail);
  // A mistyped path must not become a new, empty trail that nobody reviews.
  if (cfg.sink === 'file' && !existsSync(cfg.path)) throw new Error(`no audit trail at ${cfg.path}`);
  const where = openAuditSource(cfg).description;
  const refused = (why: string) => new Error(`${action.command} refused: its audit record could not be written to the trail (${why})`);
  const { createAuditSink } = await import('../audit/index.js');
  let sink: AuditSink;
  try {
    // `cli`: a file of its own beside the gateway's; signed when the signing key is at hand.
    sink = await createAuditSink(cfg, { env: io.env, cli: true });
  } catch (e) {
    throw refused(errorCode(e));
  }
  try {
    if (!(await sink.ready())) throw refused('not writable');
  } catch (e) {
    await sink.close().catch(() => {});
    throw e;
  }
  const startedAt = new Date();
  let outcome: CliAuditOutcome<T> | undefined;
  let failure: unknown;
  try {
    outcome = await fn();
  } catch (e) {
    failure = e;
  }
  const record = cliRecord(action, startedAt, where, outcome, failure);
  try {
    await sink.write(record);
  } catch (e) {
    throw new CliAuditUnrecordedError(action.command, where, errorCode(e), failure);
  } finally {
    await sink.close().catch(() => {});
  }
  if (failure !== undefined) throw failure;
  return { value: outcome!.value, recordId: record.id };
}

function cliRecord(action: CliAuditAction, startedAt: Date, source: string, outcome: CliAuditOutcome<unknown> | undefined, failure: unknown): AuditRecord {
  const osUser = userInfo().username;
  const host = hostname();
  const failed = failure !== undefined;
  const patients = [...new Set([...(action.patients ?? []), ...(outcome?.patients ?? [])])];
  return {
    id: randomUUID(),
    time: startedAt.toISOString(),
    kind: 'audit-export',
    actor: { iss: undefined, sub: osUser, roles: [] },
    purpose: undefined,
    client: { address: '', userAgent: `phi-gateway-cli (${osUser}@${host})` },
    request: { method: 'CLI', path: action.command, interaction: undefined, resourceType: undefined },
    decision: failed ? 'error' : 'allow',
    rule: failed ? `cli: ${action.command} failed (${errorCode(failure)})` : `cli: ${action.command}`,
    disclosed: { resources: [], patients, elementsRemoved: 0, resourcesWithheld: 0 },
    status: failed ? 500 : 200,
    upstreamStatus: undefined,
    durations: { totalMs: Date.now() - startedAt.getTime() },
    policyVersion: action.policyVersion ?? '',
    details: {
      via: 'cli',
      command: action.command,
      osUser,
      host,
      ...action.details,
      ...outcome?.details,
      source,
      finishedAt: new Date().toISOString(),
      error: failed ? errorCode(failure) : undefined,
    },
  };
}
