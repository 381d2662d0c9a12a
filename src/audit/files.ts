/** Naming of the file sink's NDJSON files: `audit-YYYY-MM-DD-NNN.ndjson`, read in (date, NNN) order. */
import { readdir } from 'node:fs/promises';

const NAME = /^audit-(\d{4}-\d{2}-\d{2})-(\d{3,})\.ndjson$/;

export interface AuditFileName {
  readonly name: string;
  readonly day: string;
  readonly n: number;
}

export function parseAuditFileName(name: string): AuditFileName | undefined {
  const m = NAME.exec(name);
  return m ? { name, day: m[1], n: Number(m[2]) } : undefined;
}

export function auditFileName(day: string, n: number): string {
  return `audit-${day}-${String(n).padStart(3, '0')}.ndjson`;
}

/** UTC day of an instant, `YYYY-MM-DD`. */
export function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function compareAuditFiles(a: AuditFileName, b: AuditFileName): number {
  return a.day < b.day ? -1 : a.day > b.day ? 1 : a.n - b.n;
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
