/**
 * The per-request state the pipeline accumulates, and the audit record built from it. One
 * Exchange per request; `toAuditRecord` is the only place the record's shape is assembled.
 */
import type { GrantUse } from '../access/types.js';
import type { AuditRecord, ConsentEvidence, GrantEvidence, RelationshipEvidence } from '../audit/record.js';
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
  /** The access grant the request used (X-Access-Grant), src/access. */
  grant?: GrantUse;
  /** The caller's care relationships as they applied to this request (src/relationships). */
  relationship?: RelationshipEvidence;
  /** What patients' consents did to the answer (src/consent), when they did something. */
  consent?: ConsentEvidence;
  upstreamStatus?: number;
  upstreamMs?: number;
  stats?: FilterStats;
}

export function elapsedMs(from: bigint): number {
  return Number((process.hrtime.bigint() - from) / 1000n) / 1000;
}

/**
 * Every object literal below lists its keys in sorted (UTF-16) order, at every level: the chain
 * writes a record of exactly this shape in one pass (src/audit/record-text.ts), and any other
 * record through the generic canonical writer (src/audit/canonical.ts), which also serializes a
 * sorted value natively. Shape and order are a performance property only; the stored text is
 * canonical either way (tests check the order stays sorted and that these records take the
 * one-pass writer). Adding a field here means adding it to record-text.ts too.
 */
export function toAuditRecord(ex: Exchange, outcome: { status: number; decision: AuditRecord['decision']; rule: string }): AuditRecord {
  const p = ex.principal;
  const stats = ex.stats;
  return {
    actor: { clientId: p?.clientId, iss: p?.iss, jti: p?.jti, roles: p?.roles ?? [], sub: p?.sub },
    breakGlass: ex.breakGlass,
    client: { address: ex.clientAddress, userAgent: ex.userAgent },
    consent: ex.consent,
    decision: outcome.decision,
    details: ex.details,
    disclosed: {
      elements: disclosedElements(stats?.elements),
      elementsRemoved: stats?.elementsRemoved ?? 0,
      patients: stats ? [...stats.patients] : [],
      resources: stats?.resources ?? [],
      resourcesWithheld: stats?.resourcesWithheld ?? 0,
      states: disclosedStates(stats?.states),
    },
    durations: { totalMs: elapsedMs(ex.started), upstreamMs: ex.upstreamMs },
    grant: grantEvidence(ex.grant, stats?.grantOutOfScope),
    id: ex.id,
    kind: ex.kind ?? 'fhir',
    policyVersion: ex.policyVersion,
    purpose: ex.purpose,
    relationship: ex.relationship,
    request: {
      interaction: ex.request?.interaction,
      method: ex.method,
      path: ex.url,
      resourceType: ex.request?.resourceType,
    },
    role: ex.role,
    rule: outcome.rule,
    status: outcome.status,
    time: ex.time.toISOString(),
    upstreamStatus: ex.upstreamStatus,
  };
}

function grantEvidence(g: GrantUse | undefined, outOfScope: number | undefined): GrantEvidence | undefined {
  if (g === undefined) return undefined;
  return { approvedBy: g.approvedBy, dataSet: g.dataSet, id: g.id, outOfScope: outOfScope || undefined, patient: g.patient };
}

/** Per type, sorted element names; sorted types too, so equal disclosures give equal record text. */
function disclosedElements(m: ReadonlyMap<string, ReadonlySet<string>> | undefined): Record<string, string[]> | undefined {
  if (m === undefined || m.size === 0) return undefined;
  const out: Record<string, string[]> = {};
  for (const type of [...m.keys()].sort()) {
    // Keys are resource type names; `__proto__` would set the prototype instead of a member (the
    // entry lost, the record no longer a plain object). Never a type name: skipped.
    if (type === '__proto__') continue;
    const names = m.get(type);
    if (names !== undefined && names.size > 0) out[type] = [...names].sort();
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Patient id -> state, keys sorted (canonical order); undefined when no released Patient showed one. */
function disclosedStates(m: ReadonlyMap<string, string> | undefined): Record<string, string> | undefined {
  if (m === undefined || m.size === 0) return undefined;
  const out: Record<string, string> = {};
  for (const id of [...m.keys()].sort()) {
    // As for elements: `__proto__` would set the prototype, not a member (never a FHIR id).
    if (id === '__proto__') continue;
    out[id] = m.get(id)!;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
