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
    decision: outcome.decision,
    details: ex.details,
    disclosed: {
      elements: disclosedElements(stats?.elements),
      elementsRemoved: stats?.elementsRemoved ?? 0,
      patients: stats ? [...stats.patients] : [],
      resources: stats?.resources ?? [],
      resourcesWithheld: stats?.resourcesWithheld ?? 0,
    },
    durations: { totalMs: elapsedMs(ex.started), upstreamMs: ex.upstreamMs },
    id: ex.id,
    kind: ex.kind ?? 'fhir',
    policyVersion: ex.policyVersion,
    purpose: ex.purpose,
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

/** Per type, sorted element names; sorted types too, so equal disclosures give equal record text. */
function disclosedElements(m: ReadonlyMap<string, ReadonlySet<string>> | undefined): Record<string, string[]> | undefined {
  if (m === undefined || m.size === 0) return undefined;
  const out: Record<string, string[]> = {};
  for (const type of [...m.keys()].sort()) {
    const names = m.get(type);
    if (names !== undefined && names.size > 0) out[type] = sortedNames(type, names);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Per resource type, the element names of its last few answers in the order the filter met them,
 * each with its sorted copy. Answers of one type mostly hold the same names in the same order (a
 * few variants: one per role's data set, optional elements present or not), and sorting ~20 names
 * was most of toAuditRecord's time (~0.6 µs of ~1.2 µs, Node 20); comparing with a variant seen
 * before costs a fraction of that, and a miss little more than the sort. A hit is checked name by
 * name, never assumed, and the caller gets its own copy. At most 256 types x 4 lists of 128 names.
 */
interface SortedVariant {
  readonly seen: readonly string[];
  readonly sorted: readonly string[];
}
const recentNames = new Map<string, SortedVariant[]>();
const RECENT_TYPES = 256;
const VARIANTS_PER_TYPE = 4;
/** FHIR R4 resources have at most ~60 top-level elements: a longer list is not kept (bounded memory). */
const MAX_KEPT_NAMES = 128;

function sortedNames(type: string, names: ReadonlySet<string>): string[] {
  const seen = [...names];
  let variants = recentNames.get(type);
  if (variants !== undefined) {
    for (const v of variants) if (sameList(v.seen, seen)) return v.sorted.slice();
  } else if (recentNames.size < RECENT_TYPES) {
    variants = [];
    recentNames.set(type, variants);
  }
  const sorted = seen.slice().sort();
  if (variants !== undefined && seen.length <= MAX_KEPT_NAMES) {
    if (variants.length >= VARIANTS_PER_TYPE) variants.pop();
    variants.unshift({ seen, sorted });
  }
  return sorted.slice();
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
