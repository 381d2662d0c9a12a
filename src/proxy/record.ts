/**
 * The per-request state the pipeline accumulates, and the audit record built from it. One
 * Exchange per request; `toAuditRecord` is the only place the record's shape is assembled.
 */
import type { AuditRecord } from '../audit/record.js';
import type { Principal } from '../auth/principal.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { FilterStats } from '../redact/types.js';

export interface Exchange {
  readonly id: string;
  readonly time: Date;
  readonly started: bigint;
  readonly method: string;
  /** Path and query as received, without the `/fhir` prefix. */
  readonly url: string;
  readonly clientAddress: string;
  readonly userAgent: string | undefined;
  policyVersion: string;
  /** Default 'fhir'; the audit export route records 'export'. */
  kind?: AuditRecord['kind'];
  details?: Record<string, unknown>;
  principal?: Principal;
  purpose?: string;
  role?: string;
  request?: ClassifiedRequest;
  rule?: string;
  breakGlass?: { session: string; reason: string; patient: string };
  upstreamStatus?: number;
  upstreamMs?: number;
  stats?: FilterStats;
}

export function elapsedMs(from: bigint): number {
  return Number((process.hrtime.bigint() - from) / 1000n) / 1000;
}

export function toAuditRecord(ex: Exchange, outcome: { status: number; decision: AuditRecord['decision']; rule: string }): AuditRecord {
  const p = ex.principal;
  return {
    id: ex.id,
    time: ex.time.toISOString(),
    kind: ex.kind ?? 'fhir',
    actor: { iss: p?.iss, sub: p?.sub, clientId: p?.clientId, jti: p?.jti, roles: p?.roles ?? [] },
    purpose: ex.purpose,
    role: ex.role,
    breakGlass: ex.breakGlass,
    client: { address: ex.clientAddress, userAgent: ex.userAgent },
    request: {
      method: ex.method,
      path: ex.url,
      interaction: ex.request?.interaction,
      resourceType: ex.request?.resourceType,
    },
    decision: outcome.decision,
    rule: outcome.rule,
    disclosed: {
      resources: ex.stats?.resources ?? [],
      patients: ex.stats ? [...ex.stats.patients] : [],
      elementsRemoved: ex.stats?.elementsRemoved ?? 0,
      resourcesWithheld: ex.stats?.resourcesWithheld ?? 0,
      elements: disclosedElements(ex.stats?.elements),
    },
    status: outcome.status,
    upstreamStatus: ex.upstreamStatus,
    durations: { totalMs: elapsedMs(ex.started), upstreamMs: ex.upstreamMs },
    policyVersion: ex.policyVersion,
    details: ex.details,
  };
}

/** Per type, sorted element names; sorted types too, so equal disclosures give equal record text. */
function disclosedElements(m: ReadonlyMap<string, ReadonlySet<string>> | undefined): Record<string, string[]> | undefined {
  if (m === undefined || m.size === 0) return undefined;
  const out: Record<string, string[]> = {};
  for (const type of [...m.keys()].sort()) {
    const names = m.get(type);
    if (names !== undefined && names.size > 0) out[type] = [...names].sort();
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
