/**
 * Which trail records a SIEM target receives (gateway.yaml `siem.targets[].filter`). Every field
 * given must match; no filter: every record, the chain's own seals and checkpoints included (a
 * copy of them outside the gateway is an external anchor for `audit verify`). Records a filter
 * leaves out still move the target's cursor: they are decided, not pending.
 */
import type { AuditRecord } from '../audit/record.js';
import type { TargetFilter } from './types.js';

/** Every record kind the trail holds (src/audit/record.ts): what a filter may name. */
export const RECORD_KINDS: readonly string[] = [
  'fhir',
  'export',
  'audit-export',
  'break-glass-review',
  'break-glass-start',
  'break-glass-end',
  'alert',
  'anomaly',
  'access-request',
  'access-grant-expired',
  'shadow-diff',
  'writer-seal',
  'writer-checkpoint',
  'writer-retired',
];

export const DECISIONS: readonly string[] = ['allow', 'deny', 'error'];

/** Kinds that are break-glass access by themselves (the session's start, end and review). */
const BREAK_GLASS_KINDS = new Set(['break-glass-start', 'break-glass-end', 'break-glass-review']);

/** True when `filter` (absent: no restriction) lets `record` through. */
export function matchesFilter(record: AuditRecord, filter: TargetFilter | undefined): boolean {
  if (!filter) return true;
  if (filter.kinds && filter.kinds.length > 0 && !filter.kinds.includes(record.kind)) return false;
  if (filter.decisions && filter.decisions.length > 0 && !filter.decisions.includes(record.decision)) return false;
  if (filter.breakGlassOnly && record.breakGlass === undefined && !BREAK_GLASS_KINDS.has(record.kind)) return false;
  return true;
}
