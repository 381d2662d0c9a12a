/**
 * Naming of the file sink's NDJSON files: `audit-YYYY-MM-DD-NNN.ndjson`, read in (date, NNN) order.
 * A command-line writer (an export's or a review's own record) appends to a file of its own,
 * `audit-YYYY-MM-DD-000-<sidecar>.ndjson`, never to the gateway's: the gateway repairs and rolls
 * back its own last file, which would cut another process's lines.
 */
import { readdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

const NAME = /^audit-(\d{4}-\d{2}-\d{2})-(\d{3,})(?:-([a-z0-9]{1,64}))?\.ndjson$/;

export interface AuditFileName {
  readonly name: string;
  readonly day: string;
  readonly n: number;
  /** Set for a command-line writer's own file. */
  readonly sidecar?: string;
}

export function parseAuditFileName(name: string): AuditFileName | undefined {
  const m = NAME.exec(name);
  if (!m) return undefined;
  return m[3] ? { name, day: m[1], n: Number(m[2]), sidecar: m[3] } : { name, day: m[1], n: Number(m[2]) };
}

export function auditFileName(day: string, n: number, sidecar?: string): string {
  return `audit-${day}-${String(n).padStart(3, '0')}${sidecar ? `-${sidecar}` : ''}.ndjson`;
}

/** A fresh sidecar name for one command-line run: lower-case alphanumerics, unique per process and time. */
export function newSidecarName(): string {
  return `cli${process.pid.toString(36)}t${Date.now().toString(36)}`;
}

/** UTC day of an instant, `YYYY-MM-DD`. */
export function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function compareAuditFiles(a: AuditFileName, b: AuditFileName): number {
  if (a.day !== b.day) return a.day < b.day ? -1 : 1;
  if (a.n !== b.n) return a.n - b.n;
  if (a.sidecar === b.sidecar) return 0;
  return a.sidecar === undefined ? -1 : b.sidecar === undefined ? 1 : a.sidecar < b.sidecar ? -1 : 1;
}

/** The audit files of a directory in chain order (other files are ignored). */
export async function listAuditFiles(dir: string): Promise<AuditFileName[]> {
  const names = await readdir(dir);
  const files: AuditFileName[] = [];
  for (const n of names) {
    const f = parseAuditFileName(n);
    if (f) files.push(f);
  }
  return files.sort(compareAuditFiles);
}

/**
 * A directory kept beside the audit directory (break-glass sessions, access requests, alert
 * outboxes, SIEM cursors): `data/audit` -> `data/<name>`; any other directory X -> its sibling
 * `X.<name>`, so two gateways whose audit directories share a parent never share it.
 */
export function besideAuditDir(auditDir: string, name: string): string {
  const audit = resolve(auditDir);
  const base = basename(audit);
  return join(dirname(audit), base === 'audit' ? name : `${base}.${name}`);
}
