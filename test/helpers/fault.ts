/**
 * Shared pieces of the fault-injection suite (test/integration/fault-injection-*.test.ts): the
 * gateway's JSON log lines, tracing every answer a client received to what the gateway recorded
 * about it, and a small tmpfs for a disk that fills up.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import type { Received } from './gateway-process.js';

/** Strings that identify a demo patient: none may reach a client that got no data. */
export const PHI_STRINGS: readonly string[] = [
  ...Object.values(DEMO.ssn),
  ...Object.values(DEMO.names),
  ...DEMO.families,
  ...Object.values(DEMO.mrn),
  ...Object.values(DEMO.phones),
  ...Object.values(DEMO.patients),
];

export const REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** One pino line of the gateway, the fields these tests read. */
export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly reqId?: string;
  readonly status?: number;
  readonly repeated?: number;
  readonly repeatedOverMs?: number;
  readonly sealed?: boolean;
  readonly err?: { readonly code?: string; readonly message?: string };
}

/** The JSON lines of a process's output (anything else, such as a Node warning, is skipped). */
export function logLines(output: readonly string[]): LogLine[] {
  const out: LogLine[] = [];
  for (const l of output) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a line cut by the kill
    }
  }
  return out;
}

/** The gateway's error code of an OperationOutcome body, or undefined for anything else. */
export function outcomeCode(text: string): string | undefined {
  try {
    const oo = JSON.parse(text) as { resourceType?: string; issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
    if (oo.resourceType !== 'OperationOutcome') return undefined;
    return oo.issue?.[0]?.details?.coding?.find((c) => c.system === ERROR_SYSTEM)?.code;
  } catch {
    return undefined;
  }
}

export async function until(what: string, cond: () => boolean | Promise<boolean>, withinMs: number): Promise<void> {
  const end = Date.now() + withinMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Every answer a client received, traced to what the gateway recorded about it; returns the
 * answers that cannot be traced (empty when all can):
 *   - every answer carries an X-Request-Id;
 *   - an answer with data (200) has its audit record, describing that answer (status, allow, path);
 *   - a 503 `audit-unavailable` is the answer given BECAUSE the trail refused the record, so its
 *     record is the gateway's `request completed` log line for that id with status 503; with
 *     `refusalsAbsent` its id must also be absent from the trail (the file sink rolls a failed
 *     batch back; a Redis batch whose outcome is unknown may have landed, recording more, not less);
 *   - any other answer has its audit record with the status the client saw.
 */
export function untraced(
  received: readonly Received[],
  records: ReadonlyMap<string, ChainedRecord>,
  logs: readonly LogLine[],
  opts: { refusalsAbsent: boolean },
): string[] {
  const completed = new Map<string, number>();
  for (const l of logs) if (l.msg === 'request completed' && l.reqId) completed.set(l.reqId, l.status ?? 0);
  const problems: string[] = [];
  for (const r of received) {
    const at = `${r.status} ${r.path} (${r.id || 'no X-Request-Id'})`;
    if (!REQUEST_ID.test(r.id)) {
      problems.push(`${at}: no X-Request-Id`);
      continue;
    }
    const rec = records.get(r.id);
    if (r.status === 503 && outcomeCode(r.text) === 'audit-unavailable') {
      if (completed.get(r.id) !== 503) problems.push(`${at}: refused for the trail, but no 'request completed' log line with status 503`);
      if (opts.refusalsAbsent && rec) problems.push(`${at}: refused, yet the trail holds its record (status ${rec.status})`);
      continue;
    }
    if (!rec) problems.push(`${at}: no audit record`);
    else if (rec.status !== r.status) problems.push(`${at}: its record says status ${rec.status}`);
    else if (r.status === 200 && (rec.decision !== 'allow' || rec.request.path !== r.path || rec.kind !== 'fhir'))
      problems.push(`${at}: its record describes ${rec.kind} ${rec.decision} ${rec.request.path}`);
  }
  return problems;
}

export interface Tmpfs {
  readonly dir: string;
  unmount(): void;
}

/**
 * A tmpfs of `size` (mount's syntax, e.g. `256k`) on a new temp dir. Needs root on Linux; anywhere
 * else (or where the mount is refused, e.g. a container without CAP_SYS_ADMIN) it returns the
 * reason to skip. CI=true (a root Debian VM) makes a refused mount a failure instead.
 */
export function mountTmpfs(size: string): Tmpfs | { skip: string } {
  if (process.platform !== 'linux') return { skip: `tmpfs mounts need Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { skip: 'mounting a tmpfs needs root (run as root, as CI does, to include it)' };
  const dir = mkdtempSync(join(tmpdir(), 'phi-fullfs-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (m.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    const why = `mount -t tmpfs refused: ${(m.stderr || m.error?.message || `exit ${m.status}`).trim()}`;
    if (process.env.CI === 'true') throw new Error(`${why}; CI=true requires the full-disk experiment to run`);
    return { skip: why };
  }
  return {
    dir,
    unmount() {
      // Lazy: a process that still holds a file there must not turn cleanup into a hang.
      spawnSync('umount', ['-l', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
