/**
 * The access-requests section of `report access` (pure), from the audit trail alone: kind
 * `access-request` records (`details.action` request, approve, deny, revoke), kind
 * `access-grant-expired`, and FHIR records naming the grant they used (`grant`). Requests,
 * approvals (narrowed or not), denials, refused steps, time to decide, grants expired vs revoked
 * early, time to revoke, grants never used after approval; per data set and per grant.
 *
 * Records come in any order (several writers' chains). Memory grows with access requests (one
 * summary each) and data sets, never with the number of records: a FHIR request using a grant adds
 * one to its summary's count.
 */
import type { AuditRecord } from '../audit/record.js';
import type { Series, Table } from './digest.js';

/** One bar group of a grouped bar chart: one value per series key. */
export interface GroupedSeries {
  readonly label: string;
  readonly values: readonly number[];
}

export interface AccessRequestCharts {
  /** Per data set: requests, approvals, denials (the keys). */
  readonly byDataSet: readonly GroupedSeries[];
  readonly keys: readonly string[];
  /** Decisions per time-to-decide bin; `part`: denials. Empty when there was no decision. */
  readonly decisionTimes: readonly Series[];
}

/** A step as recorded: its audit record id (a later record may say it did not happen) and time. */
interface Step {
  readonly auditId: string;
  readonly at: number;
}

interface Decision extends Step {
  readonly outcome: 'approve' | 'deny';
  readonly by: string;
  readonly narrowed: boolean;
  /** `details.decideSeconds`: from the request to this decision. */
  readonly seconds: number | undefined;
}

interface Revocation extends Step {
  /** `details.by`: the requester giving the grant up, or an approver. */
  readonly by: 'requester' | 'approver' | undefined;
  /** `details.approvedAt`, where recorded. */
  readonly approvedAt: number | undefined;
}

/** What the window's records say about one access request (and the grant approved from it). */
interface Summary {
  dataSet: string | undefined;
  requester: string | undefined;
  requested: Step | undefined;
  /** Usually one; two allowed ones when two approvers raced and the store kept one (the other superseded). */
  decisions: Decision[];
  revocations: Revocation[];
  expiredAt: number | undefined;
  /** FHIR requests in the window that used the grant. */
  uses: number;
}

/** Refused steps (decision deny or error), per data set. */
interface Refusals {
  request: number;
  decide: number;
  revoke: number;
}

/** Data sets counted apart; more (only a forged trail names so many) are counted as one. */
const MAX_DATA_SETS = 200;
const OTHER_DATA_SET = '(other)';
/** Refusals before the data set was known (unknown data set, unknown request, refused before the service). */
const NO_DATA_SET = '(not named)';

/** Time-to-decide bins for the HTML histogram: upper bounds in minutes. */
const DECISION_BINS: ReadonlyArray<readonly [number, string]> = [
  [5, '< 5 min'],
  [15, '5-15 min'],
  [60, '15-60 min'],
  [240, '1-4 h'],
  [1440, '4-24 h'],
  [4320, '1-3 days'],
  [Number.POSITIVE_INFINITY, '> 3 days'],
];

export class AccessRequestDigest {
  private readonly summaries = new Map<string, Summary>();
  private readonly refusals = new Map<string, Refusals>();
  /** Audit ids of allowed steps a later record says did not happen (`details.supersedes`). */
  private readonly superseded = new Set<string>();
  /** Approvals recorded before the window (request id -> approvals), for the time to revoke a grant inside it. */
  private readonly priorApprovals = new Map<string, Step[]>();

  /** A record inside the window. */
  add(r: AuditRecord, t: number): void {
    if (r.kind === 'fhir') {
      const g = r.grant;
      if (g && typeof g.id === 'string') {
        const s = this.summaryOf(g.id);
        s.uses++;
        s.dataSet ??= str(g.dataSet);
      }
      return;
    }
    if (r.kind === 'access-grant-expired') {
      const id = str(r.details?.request);
      if (id === undefined) return;
      const s = this.summaryOf(id);
      s.expiredAt = t;
      s.dataSet ??= str(r.details?.dataSet);
      s.requester ??= r.actor?.sub;
      return;
    }
    if (r.kind !== 'access-request') return;
    const d = r.details ?? {};
    const supersedes = str(d.supersedes);
    if (supersedes !== undefined) this.superseded.add(supersedes);
    const action = d.action;
    if (action !== 'request' && action !== 'approve' && action !== 'deny' && action !== 'revoke') return;
    const dataSet = str(d.dataSet);
    if (r.decision !== 'allow') {
      const f = this.refusalsOf(dataSet ?? NO_DATA_SET);
      if (action === 'request') f.request++;
      else if (action === 'revoke') f.revoke++;
      else f.decide++;
      return;
    }
    const id = str(d.request);
    if (id === undefined) return;
    const s = this.summaryOf(id);
    s.dataSet ??= dataSet;
    const actor = r.actor?.sub ?? '(anonymous)';
    const step = { auditId: r.id, at: t };
    if (action === 'request') {
      s.requested = step;
      s.requester = actor;
    } else if (action === 'revoke') {
      const by = d.by === 'requester' || d.by === 'approver' ? d.by : undefined;
      const approvedAt = typeof d.approvedAt === 'string' ? Date.parse(d.approvedAt) : Number.NaN;
      s.revocations.push({ ...step, by, approvedAt: Number.isFinite(approvedAt) ? approvedAt : undefined });
      s.requester ??= str(d.requester);
    } else {
      const seconds = typeof d.decideSeconds === 'number' && Number.isFinite(d.decideSeconds) && d.decideSeconds >= 0 ? d.decideSeconds : undefined;
      s.decisions.push({ ...step, outcome: action, by: actor, narrowed: d.narrowed === true, seconds });
      s.requester ??= str(d.requester);
    }
  }

  /** A record outside the window: only what a step inside it needs (its approval, a supersession). */
  outside(r: AuditRecord, before: boolean): void {
    if (r.kind !== 'access-request') return;
    const d = r.details ?? {};
    const supersedes = str(d.supersedes);
    if (supersedes !== undefined) this.superseded.add(supersedes);
    const id = str(d.request);
    if (before && id !== undefined && d.action === 'approve' && r.decision === 'allow' && supersedes === undefined) {
      const t = Date.parse(r.time);
      // Two approvals of one request: the store kept one, the other is superseded (checked when read).
      if (Number.isFinite(t)) this.priorApprovals.set(id, [...(this.priorApprovals.get(id) ?? []), { auditId: r.id, at: t }]);
    }
  }

  private summaryOf(id: string): Summary {
    let s = this.summaries.get(id);
    if (!s) {
      s = { dataSet: undefined, requester: undefined, requested: undefined, decisions: [], revocations: [], expiredAt: undefined, uses: 0 };
      this.summaries.set(id, s);
    }
    return s;
  }

  private refusalsOf(dataSet: string): Refusals {
    let f = this.refusals.get(dataSet);
    if (!f) {
      if (this.refusals.size >= MAX_DATA_SETS && dataSet !== OTHER_DATA_SET) return this.refusalsOf(OTHER_DATA_SET);
      f = { request: 0, decide: 0, revoke: 0 };
      this.refusals.set(dataSet, f);
    }
    return f;
  }

  private valid<S extends Step>(steps: readonly S[]): S | undefined {
    return steps.find((x) => !this.superseded.has(x.auditId));
  }

  /** Each request's steps as they stand once every record is read. */
  private resolved(): Resolved[] {
    const out: Resolved[] = [];
    for (const [id, s] of this.summaries) {
      const requested = s.requested && !this.superseded.has(s.requested.auditId) ? s.requested : undefined;
      const decision = this.valid(s.decisions);
      const revocation = this.valid(s.revocations);
      const prior = this.valid(this.priorApprovals.get(id) ?? []);
      const approvedAt = decision?.outcome === 'approve' ? decision.at : (revocation?.approvedAt ?? prior?.at);
      out.push({
        id,
        dataSet: s.dataSet ?? NO_DATA_SET,
        requester: s.requester,
        requested,
        decision,
        revocation,
        approvedAt,
        expiredAt: s.expiredAt,
        uses: s.uses,
      });
    }
    return out;
  }

  tables(): Table[] {
    const all = this.resolved();
    const perSet = new Map<string, Aggregate>();
    const total = aggregate();
    const of = (dataSet: string): Aggregate => {
      let a = perSet.get(dataSet);
      if (!a) {
        if (perSet.size >= MAX_DATA_SETS && dataSet !== OTHER_DATA_SET) return of(OTHER_DATA_SET);
        a = aggregate();
        perSet.set(dataSet, a);
      }
      return a;
    };
    for (const g of all) {
      for (const a of [total, of(g.dataSet)]) count(a, g);
    }
    for (const [dataSet, f] of this.refusals) {
      for (const a of [total, of(dataSet)]) {
        a.refusedRequests += f.request;
        a.refusedDecisions += f.decide;
        a.refusedRevokes += f.revoke;
      }
    }
    const med = (xs: number[]) => (xs.length ? round(median(xs)) : '-');
    const summary: Array<[string, string | number]> = [
      ['requests', total.requests],
      ['requests refused (invalid, not permitted)', total.refusedRequests],
      ['approved', total.approved],
      ['approved narrower than asked', total.narrowed],
      ['denied', total.denied],
      ['decisions refused (own request, no approver role, approver holding a request for the data set, already decided)', total.refusedDecisions],
      ['undecided (asked in the window, no decision in it)', total.undecided],
      ['median minutes to decide', med(total.decideMinutes)],
      ['grants expired', total.expired],
      ['grants revoked early', total.revoked],
      ['revoked early by the requester', total.revokedByRequester],
      ['revocations refused', total.refusedRevokes],
      ['median minutes from approval to revocation', med(total.revokeMinutes)],
      ['grants never used after approval', total.neverUsed],
      ['FHIR requests using a grant', total.uses],
    ];
    const rows = [...perSet]
      .sort(([a, x], [b, y]) => y.requests - x.requests || a.localeCompare(b))
      .map(([name, a]) => [
        name,
        a.requests,
        a.refusedRequests,
        a.approved,
        a.narrowed,
        a.denied,
        a.refusedDecisions,
        med(a.decideMinutes),
        a.expired,
        a.revoked,
        med(a.revokeMinutes),
        a.neverUsed,
        a.uses,
      ]);
    const grants = all
      .filter((g) => g.requested !== undefined || g.decision !== undefined || g.revocation !== undefined || g.expiredAt !== undefined)
      .sort((a, b) => firstTime(a) - firstTime(b) || a.id.localeCompare(b.id))
      .map((g) => [
        g.id,
        g.dataSet,
        g.requester ?? '-',
        g.requested ? iso(g.requested.at) : '-',
        g.decision ? (g.decision.outcome === 'approve' ? (g.decision.narrowed ? 'approved (narrowed)' : 'approved') : 'denied') : g.requested ? 'undecided' : '-',
        g.decision?.by ?? '-',
        g.decision?.seconds !== undefined ? round(g.decision.seconds / 60) : '-',
        g.revocation ? `revoked by ${g.revocation.by ?? 'an approver or the requester'}` : g.expiredAt !== undefined ? 'expired' : '-',
        g.revocation && g.approvedAt !== undefined ? round((g.revocation.at - g.approvedAt) / 60_000) : '-',
        g.uses,
      ]);
    return [
      {
        title: 'Access requests',
        columns: ['measure', 'value'],
        rows: summary,
        note:
          'Elevated access on request, from the access-request records of the window: steps allowed and refused, minutes from request to decision, grants that expired or were ' +
          'revoked before their expiry and the minutes from approval to revocation, and grants approved in the window that no FHIR request in it used.',
      },
      {
        title: 'Access requests per data set',
        columns: [
          'data set',
          'requests',
          'requests refused',
          'approved',
          'narrowed',
          'denied',
          'decisions refused',
          'median minutes to decide',
          'expired',
          'revoked early',
          'median minutes to revoke',
          'never used',
          'FHIR requests using a grant',
        ],
        rows,
        note: `${NO_DATA_SET}: refusals recorded before a data set was known (an unknown data set or request id, a call refused before it reached the service).`,
      },
      {
        title: 'Access grants',
        columns: ['request', 'data set', 'requester', 'requested', 'decision', 'decided by', 'minutes to decide', 'ended', 'minutes from approval to revocation', 'FHIR requests using it'],
        rows: grants,
        note: 'One row per access request with a step in the window; "-" where the step is outside it. A grant approved near the end of the window may be used after it.',
      },
    ];
  }

  charts(): AccessRequestCharts {
    const perSet = new Map<string, [number, number, number]>();
    const bins = DECISION_BINS.map(([, label]) => ({ label, value: 0, part: 0 }));
    let decisions = 0;
    for (const g of this.resolved()) {
      let v = perSet.get(g.dataSet);
      if (!v) {
        if (perSet.size >= MAX_DATA_SETS) continue;
        v = [0, 0, 0];
        perSet.set(g.dataSet, v);
      }
      if (g.requested) v[0]++;
      if (g.decision?.outcome === 'approve') v[1]++;
      if (g.decision?.outcome === 'deny') v[2]++;
      if (g.decision?.seconds !== undefined) {
        const minutes = g.decision.seconds / 60;
        const b = bins[DECISION_BINS.findIndex(([max]) => minutes < max)];
        b.value++;
        if (g.decision.outcome === 'deny') b.part++;
        decisions++;
      }
    }
    const byDataSet = [...perSet]
      .filter(([, v]) => v[0] + v[1] + v[2] > 0)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([label, values]) => ({ label, values }));
    return { byDataSet, keys: ['requests', 'approved', 'denied'], decisionTimes: decisions > 0 ? bins : [] };
  }
}

interface Resolved {
  readonly id: string;
  readonly dataSet: string;
  readonly requester: string | undefined;
  readonly requested: Step | undefined;
  readonly decision: Decision | undefined;
  readonly revocation: Revocation | undefined;
  /** The approval's time, from the window's approve record, the revocation's details or an approval before the window. */
  readonly approvedAt: number | undefined;
  readonly expiredAt: number | undefined;
  readonly uses: number;
}

interface Aggregate {
  requests: number;
  refusedRequests: number;
  approved: number;
  narrowed: number;
  denied: number;
  refusedDecisions: number;
  undecided: number;
  decideMinutes: number[];
  expired: number;
  revoked: number;
  revokedByRequester: number;
  refusedRevokes: number;
  revokeMinutes: number[];
  neverUsed: number;
  uses: number;
}

const aggregate = (): Aggregate => ({
  requests: 0,
  refusedRequests: 0,
  approved: 0,
  narrowed: 0,
  denied: 0,
  refusedDecisions: 0,
  undecided: 0,
  decideMinutes: [],
  expired: 0,
  revoked: 0,
  revokedByRequester: 0,
  refusedRevokes: 0,
  revokeMinutes: [],
  neverUsed: 0,
  uses: 0,
});

function count(a: Aggregate, g: Resolved): void {
  if (g.requested) a.requests++;
  if (g.requested && !g.decision) a.undecided++;
  if (g.decision?.outcome === 'approve') {
    a.approved++;
    if (g.decision.narrowed) a.narrowed++;
    if (g.uses === 0) a.neverUsed++;
  }
  if (g.decision?.outcome === 'deny') a.denied++;
  if (g.decision?.seconds !== undefined) a.decideMinutes.push(g.decision.seconds / 60);
  if (g.expiredAt !== undefined) a.expired++;
  if (g.revocation) {
    a.revoked++;
    if (g.revocation.by === 'requester') a.revokedByRequester++;
    if (g.approvedAt !== undefined) a.revokeMinutes.push((g.revocation.at - g.approvedAt) / 60_000);
  }
  a.uses += g.uses;
}

function firstTime(g: Resolved): number {
  return Math.min(g.requested?.at ?? Infinity, g.decision?.at ?? Infinity, g.revocation?.at ?? Infinity, g.expiredAt ?? Infinity);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function iso(t: number): string {
  return new Date(t).toISOString();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
