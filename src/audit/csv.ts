/** CSV rows for audit export: a fixed column list, RFC 4180 quoting, CRLF line ends. */
import type { ChainedRecord } from './record.js';

export const CSV_COLUMNS = [
  'id',
  'time',
  'actor_sub',
  'actor_iss',
  'roles',
  'purpose',
  'role',
  'break_glass_session',
  'method',
  'path',
  'interaction',
  'resource_type',
  'decision',
  'rule',
  'status',
  'upstream_status',
  'resources',
  'patients',
  'elements_removed',
  'resources_withheld',
  'policy_version',
  'writer',
  'seq',
] as const;

/**
 * One field, RFC 4180: quoted when it holds a comma, quote, CR or LF; quotes doubled. A text
 * field starting with = + - @ TAB or CR is prefixed with `'` so a spreadsheet opened by an
 * auditor never evaluates it as a formula (CSV injection via a crafted `sub` or path).
 */
export function csvField(v: string | number | undefined | null): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  let s = v;
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvHeader(): string {
  return CSV_COLUMNS.join(',') + '\r\n';
}

/** Lists (roles, resources, patients) are space-separated: ids and role names hold no spaces. */
export function csvRow(r: ChainedRecord): string {
  const d = r.disclosed ?? { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 };
  const cells: Array<string | number | undefined> = [
    r.id,
    r.time,
    r.actor?.sub,
    r.actor?.iss,
    (r.actor?.roles ?? []).join(' '),
    r.purpose,
    r.role,
    r.breakGlass?.session,
    r.request?.method,
    r.request?.path,
    r.request?.interaction,
    r.request?.resourceType,
    r.decision,
    r.rule,
    r.status,
    r.upstreamStatus,
    (d.resources ?? []).join(' '),
    (d.patients ?? []).join(' '),
    d.elementsRemoved,
    d.resourcesWithheld,
    r.policyVersion,
    r.chain?.writer,
    r.chain?.seq,
  ];
  let line = '';
  for (let i = 0; i < cells.length; i++) line += (i ? ',' : '') + csvField(cells[i]);
  return line + '\r\n';
}
