/**
 * Compliance reports from the audit trail (pure): one pass over the records of a time window
 * builds a digest; `usage`, `access` and `break-glass` reports are tables computed from it.
 * Memory grows with distinct actors, patients, sessions, consents, access requests and (role,
 * purpose, type) grants, never with the number of records.
 */
import type { AuditRecord } from '../audit/record.js';
import { withoutRelationship } from '../monitor/rules.js';
import type { CompiledPolicy } from '../policy/plan.js';
import { type AccessRequestCharts, AccessRequestDigest } from './access-requests.js';

export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: ReadonlyArray<ReadonlyArray<string | number>>;
  /** One line under the title saying how to read it. */
  readonly note?: string;
}

export interface Series {
  readonly label: string;
  readonly value: number;
  /** Stacked part of the value (e.g. denied requests of an hour). */
  readonly part?: number;
}

export interface Report {
  readonly kind: ReportKind;
  readonly title: string;
  readonly from: string | undefined;
  readonly to: string | undefined;
  readonly tables: readonly Table[];
  /** For the HTML report: the three charts, whatever the kind. */
  readonly charts: {
    readonly accessOverTime: readonly Series[];
    readonly denialsByRole: readonly Series[];
    readonly reviewAges: readonly Series[];
    /** The access report's access-requests section (src/report/access-requests.ts). */
    readonly accessRequests?: AccessRequestCharts | undefined;
  };
}

export type ReportKind = 'usage' | 'access' | 'break-glass';
export const REPORT_KINDS: readonly ReportKind[] = ['usage', 'access', 'break-glass'];

interface Counter {
  requests: number;
  allowed: number;
  denied: number;
  errors: number;
  sessions: Set<string>;
  anomalies: number;
  others: Set<string>;
  /** Requests whose answer patients' consents restricted (`consent.restricted` or `consent.unevaluable`). */
  consent: number;
}

const counter = (): Counter => ({ requests: 0, allowed: 0, denied: 0, errors: 0, sessions: new Set(), anomalies: 0, others: new Set(), consent: 0 });

/** One consent's effect over the window: records it restricted, records where break-glass overrode it. */
interface ConsentUse {
  restricted: number;
  overridden: number;
}

/** One actor's accesses to patients without a care relationship (records' `relationship.unrelated`). */
interface Unrelated {
  /** Requests refused for lack of one (`required: true`). */
  refused: number;
  /** Break-glass sessions whose records show the patient unrelated: what the glass was broken for. */
  breakGlass: Set<string>;
  /** Requests a `required: false` requirement only recorded. */
  recorded: number;
  patients: Set<string>;
}

interface Session {
  id: string;
  actor: string;
  patient: string;
  reason: string;
  started: number;
  ended: number | undefined;
  reviews: Array<{ at: number; outcome: string; reviewer: string }>;
  /** Consents the session's requests overrode (`consent.overridden`): what a reviewer must weigh. */
  overridden: Set<string>;
}

interface Grant {
  requests: number;
  interactions: Set<string>;
  resources: number;
  /** Top-level element names the records show released (`disclosed.elements`). */
  elements: Set<string>;
  /** Requests that released this type in a record without `disclosed.elements` (older records). */
  unrecorded: number;
}

export interface DigestOptions {
  /** Reports cover [from, to). */
  readonly from?: string | undefined;
  readonly to?: string | undefined;
  /** Time-series bucket (default: hour when the window is at most 2 days, else day). */
  readonly bucket?: 'hour' | 'day';
}

/** Accumulates records (any order) and answers the reports. */
export class AuditDigest {
  private readonly actors = new Map<string, Counter>();
  private readonly patients = new Map<string, Counter>();
  private readonly sessions = new Map<string, Session>();
  private readonly grants = new Map<string, Grant>();
  private readonly denialsByRole = new Map<string, number>();
  private readonly buckets = new Map<number, { total: number; denied: number }>();
  private readonly anomalyRules = new Map<string, number>();
  private readonly unrelated = new Map<string, Unrelated>();
  private readonly consents = new Map<string, ConsentUse>();
  private readonly accessRequests = new AccessRequestDigest();
  private readonly fromMs: number | undefined;
  private readonly toMs: number | undefined;
  private first = Number.POSITIVE_INFINITY;
  private last = Number.NEGATIVE_INFINITY;
  records = 0;

  constructor(private readonly o: DigestOptions = {}) {
    this.fromMs = o.from !== undefined ? Date.parse(o.from) : undefined;
    this.toMs = o.to !== undefined ? Date.parse(o.to) : undefined;
  }

  add(r: AuditRecord): void {
    const t = Date.parse(r.time);
    if (!Number.isFinite(t)) return;
    // An access request's approval before the window still dates a revocation inside it.
    if (this.fromMs !== undefined && t < this.fromMs) {
      this.accessRequests.outside(r, true);
      return;
    }
    if (this.toMs !== undefined && t >= this.toMs) {
      this.accessRequests.outside(r, false);
      return;
    }
    this.records++;
    this.accessRequests.add(r, t);
    const actor = r.actor?.sub ?? '(anonymous)';
    const patients = r.disclosed?.patients ?? [];
    if (r.relationship && (r.kind === 'fhir' || r.kind === 'break-glass-start')) this.relationshipUse(actor, r);
    switch (r.kind) {
      case 'fhir': {
        this.first = Math.min(this.first, t);
        this.last = Math.max(this.last, t);
        const b = this.bucketOf(t);
        const slot = this.buckets.get(b) ?? { total: 0, denied: 0 };
        slot.total++;
        if (r.decision === 'deny') slot.denied++;
        this.buckets.set(b, slot);
        if (r.decision === 'deny') {
          const role = r.role ?? (r.actor?.roles?.length ? [...r.actor.roles].sort().join('+') : '(no role)');
          this.denialsByRole.set(role, (this.denialsByRole.get(role) ?? 0) + 1);
        }
        const a = this.counterOf(this.actors, actor);
        tally(a, r);
        if (r.consent !== undefined && this.consentUse(r)) a.consent++;
        for (const p of patients) {
          const c = this.counterOf(this.patients, p);
          tally(c, r);
          c.others.add(actor);
          a.others.add(p);
        }
        if (r.decision === 'allow' && r.role && r.purpose) this.grantUse(r);
        break;
      }
      case 'anomaly': {
        this.counterOf(this.actors, actor).anomalies++;
        for (const p of patients) this.counterOf(this.patients, p).anomalies++;
        const name = String(r.details?.anomaly ?? r.rule);
        this.anomalyRules.set(name, (this.anomalyRules.get(name) ?? 0) + 1);
        break;
      }
      case 'break-glass-start': {
        const id = r.breakGlass?.session;
        if (!id) break;
        const s = this.sessionOf(id);
        s.actor = actor;
        s.patient = patients[0] ?? s.patient;
        s.reason = r.breakGlass?.reason ?? '';
        s.started = t;
        break;
      }
      case 'break-glass-end': {
        const id = r.breakGlass?.session;
        if (id) this.sessionOf(id).ended = t;
        break;
      }
      case 'break-glass-review': {
        const d = r.details ?? {};
        if (d.action !== 'review' || r.decision !== 'allow' || typeof d.session !== 'string') break;
        this.sessionOf(d.session).reviews.push({ at: t, outcome: String(d.outcome ?? ''), reviewer: actor });
        break;
      }
      default:
        break;
    }
  }

  private relationshipUse(actor: string, r: AuditRecord): void {
    const session = r.breakGlass?.session;
    const without = withoutRelationship(r.relationship, session !== undefined, r.rule);
    if (without === undefined) return;
    let u = this.unrelated.get(actor);
    if (!u) {
      u = { refused: 0, breakGlass: new Set(), recorded: 0, patients: new Set() };
      this.unrelated.set(actor, u);
    }
    if (without.access === 'break-glass') u.breakGlass.add(session!);
    else if (without.access === 'refused') u.refused++;
    else u.recorded++;
    for (const p of without.patients) u.patients.add(p);
  }

  /**
   * Counts what consents did to one answer, per consent, and the consents a break-glass session
   * overrode; true when the answer was restricted (a consent withheld something, or a patient's
   * consents could not be evaluated).
   */
  private consentUse(r: AuditRecord): boolean {
    const restricted = ids(r.consent?.restricted);
    const overridden = ids(r.consent?.overridden);
    for (const id of restricted) this.consentOf(id).restricted++;
    for (const id of overridden) this.consentOf(id).overridden++;
    const session = r.breakGlass?.session;
    if (session && overridden.length > 0) for (const id of overridden) this.sessionOf(session).overridden.add(id);
    return restricted.length > 0 || ids(r.consent?.unevaluable).length > 0;
  }

  private consentOf(id: string): ConsentUse {
    let c = this.consents.get(id);
    if (!c) {
      c = { restricted: 0, overridden: 0 };
      this.consents.set(id, c);
    }
    return c;
  }

  private bucketOf(t: number): number {
    const size = this.bucketMs();
    return Math.floor(t / size) * size;
  }

  private bucketMs(): number {
    const bucket = this.o.bucket ?? (this.fromMs !== undefined && this.toMs !== undefined && this.toMs - this.fromMs > 2 * 86_400_000 ? 'day' : 'hour');
    return bucket === 'day' ? 86_400_000 : 3_600_000;
  }

  private counterOf(m: Map<string, Counter>, k: string): Counter {
    let c = m.get(k);
    if (!c) {
      c = counter();
      m.set(k, c);
    }
    return c;
  }

  private sessionOf(id: string): Session {
    let s = this.sessions.get(id);
    if (!s) {
      s = { id, actor: '', patient: '', reason: '', started: Number.NaN, ended: undefined, reviews: [], overridden: new Set() };
      this.sessions.set(id, s);
    }
    return s;
  }

  private grantUse(r: AuditRecord): void {
    const counts = new Map<string, number>();
    for (const res of r.disclosed?.resources ?? []) {
      const i = res.indexOf('/');
      if (i > 0) counts.set(res.slice(0, i), (counts.get(res.slice(0, i)) ?? 0) + 1);
    }
    const elements = recordedElements(r.disclosed?.elements);
    // A type released only inside another resource (contained) shows up in elements alone.
    const types = new Set([...counts.keys(), ...(elements?.keys() ?? [])]);
    for (const type of types) {
      const key = `${r.role}\u0000${r.purpose}\u0000${type}`;
      let g = this.grants.get(key);
      if (!g) {
        g = { requests: 0, interactions: new Set(), resources: 0, elements: new Set(), unrecorded: 0 };
        this.grants.set(key, g);
      }
      g.requests++;
      if (r.request?.interaction && r.request.resourceType === type) g.interactions.add(r.request.interaction);
      g.resources += counts.get(type) ?? 0;
      if (elements === undefined) g.unrecorded++;
      else for (const e of elements.get(type) ?? []) g.elements.add(e);
    }
  }

  /** Grants in `policy` against what the window's records show was disclosed under each. */
  usage(policy: CompiledPolicy): Table[] {
    const rows: Array<Array<string | number>> = [];
    const unused: Array<Array<string | number>> = [];
    const unusedElements: Array<Array<string | number>> = [];
    // One group per role and granting purpose: children of a purpose share its data set.
    for (const role of [...policy.roles.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const groups = new Map<string, { purposes: string[]; types: Map<string, string[]> }>();
      for (const [purpose, plan] of role.plans) {
        const g = groups.get(plan.grantedBy) ?? { purposes: [] as string[], types: new Map<string, string[]>() };
        g.purposes.push(purpose);
        for (const [type, tp] of plan.types) {
          const released = tp.elements.describe().filter((l) => l.action !== 'remove' && isWholeElement(type, l.element));
          g.types.set(type, [...new Set(released.map((l) => l.element.slice(type.length + 1)))]);
        }
        groups.set(plan.grantedBy, g);
      }
      for (const [grantedBy, g] of groups) {
        const granted = grantedBy.split('.').pop() ?? grantedBy;
        for (const [type, elements] of [...g.types].sort(([a], [b]) => a.localeCompare(b))) {
          let requests = 0;
          let resources = 0;
          let unrecorded = 0;
          const interactions = new Set<string>();
          const used = new Set<string>();
          for (const p of g.purposes) {
            const u = this.grants.get(`${role.name}\u0000${p}\u0000${type}`);
            if (!u) continue;
            requests += u.requests;
            resources += u.resources;
            unrecorded += u.unrecorded;
            for (const i of u.interactions) interactions.add(i);
            for (const e of u.elements) used.add(e);
          }
          const isUsed = resources > 0 || used.size > 0;
          // Only when every release in the window recorded its elements: a record without them
          // might have disclosed any element, and naming it unused would invite removing a grant in use.
          const neverElements = isUsed && unrecorded === 0 ? elements.filter((e) => !ALWAYS_KEPT.has(e) && !disclosed(e, used)) : undefined;
          rows.push([
            role.name,
            granted,
            type,
            isUsed ? 'used' : 'never used',
            requests,
            resources,
            [...interactions].sort().join(' '),
            elements.length,
            neverElements === undefined ? (isUsed ? 'not recorded' : '-') : neverElements.join(' ') || '(all used)',
          ]);
          if (!isUsed) unused.push([role.name, granted, type, grantedBy]);
          for (const e of neverElements ?? []) unusedElements.push([role.name, granted, type, `${type}.${e}`, grantedBy]);
        }
      }
    }
    return [
      {
        title: 'Grants never used (candidates for removal)',
        columns: ['role', 'purpose', 'resource type', 'granted by'],
        rows: unused,
        note: 'Resource types the policy grants to a role for a purpose, of which no resource was disclosed in the window.',
      },
      {
        title: 'Elements never disclosed (candidates for removal)',
        columns: ['role', 'purpose', 'resource type', 'element', 'granted by'],
        rows: unusedElements,
        note: 'Top-level elements the policy keeps for a resource type that was disclosed, which no disclosed resource carried in the window (id and meta are always kept).',
      },
      {
        title: 'Granted vs disclosed, per role, purpose and resource type',
        columns: ['role', 'purpose', 'resource type', 'status', 'requests', 'resources disclosed', 'interactions used', 'elements granted', 'elements never disclosed'],
        rows,
        note: 'Elements never disclosed needs records that carry the released element names: where any release in the window predates them, "not recorded".',
      },
    ];
  }

  access(): Table[] {
    const actorRows = [...this.actors]
      .sort(([a, x], [b, y]) => y.requests - x.requests || a.localeCompare(b))
      .map(([sub, c]) => [sub, c.requests, c.allowed, c.denied, c.errors, c.others.size, c.sessions.size, c.anomalies, c.consent]);
    const patientRows = [...this.patients]
      .sort(([a, x], [b, y]) => y.requests - x.requests || a.localeCompare(b))
      .map(([id, c]) => [id, c.requests, c.others.size, c.sessions.size, c.anomalies]);
    const ruleRows = [...this.anomalyRules].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, v]);
    const total = (u: Unrelated) => u.refused + u.breakGlass.size + u.recorded;
    const unrelatedRows = [...this.unrelated]
      .sort(([a, x], [b, y]) => total(y) - total(x) || a.localeCompare(b))
      .map(([sub, u]) => [sub, u.refused, u.breakGlass.size, u.recorded, u.patients.size]);
    const consentRows = [...this.consents]
      .sort(([a, x], [b, y]) => y.restricted + y.overridden - (x.restricted + x.overridden) || a.localeCompare(b))
      .map(([id, c]) => [id, c.restricted, c.overridden]);
    return [
      {
        title: 'Per actor',
        columns: ['actor', 'requests', 'allowed', 'denied', 'errors', 'patients', 'break-glass sessions', 'anomalies', 'restricted by consent'],
        rows: actorRows,
        note: "Restricted by consent: requests whose answer a patient's consent directive restricted (something withheld, or the patient's consents unevaluable and withheld).",
      },
      { title: 'Per patient', columns: ['patient', 'requests', 'actors', 'break-glass sessions', 'anomalies'], rows: patientRows },
      { title: 'Anomalies by rule', columns: ['rule', 'alerts'], rows: ruleRows },
      {
        title: 'Access without relationship',
        columns: ['actor', 'refused: no relationship', 'break-glass sessions opened without one', 'recorded only (required: false)', 'patients without relationship'],
        rows: unrelatedRows,
        note:
          'Per actor, from the care-relationship evidence of each record: requests refused for lack of a relationship, break-glass sessions whose patient ' +
          'the actor had no relationship with (the glass was broken for that), requests to unrelated patients a required: false requirement only recorded, ' +
          'and the distinct patients concerned (each record lists at most 50; a resource withheld as an unrelated patient\'s names none).',
      },
      {
        title: 'Restricted by consent',
        columns: ['consent', 'requests restricted', 'requests where break-glass overrode it'],
        rows: consentRows,
        note:
          'Per patient consent directive, from the consent evidence of each record: requests from whose answer it withheld something (by a deny, or for want of ' +
          'its permit where one is needed: 42 CFR Part 2 data, a purpose needing authorization), and break-glass requests that released what it withholds (each record lists at most 50 consents).',
      },
      ...this.accessRequests.tables(),
    ];
  }

  breakGlass(now: Date, reviewDueHours: number): Table[] {
    const sessions = [...this.sessions.values()].filter((s) => Number.isFinite(s.started)).sort((a, b) => a.started - b.started);
    const delays: number[] = [];
    const rows = sessions.map((s) => {
      const first = s.reviews[0];
      const last = s.reviews[s.reviews.length - 1];
      const hours = first ? (first.at - s.started) / 3_600_000 : undefined;
      if (hours !== undefined) delays.push(hours);
      const age = (now.getTime() - s.started) / 3_600_000;
      const state = first ? 'reviewed' : age > reviewDueHours ? 'OVERDUE' : 'awaiting review';
      return [
        s.id,
        s.actor,
        s.patient,
        new Date(s.started).toISOString(),
        s.ended !== undefined ? new Date(s.ended).toISOString() : '-',
        state,
        last?.outcome ?? '-',
        last?.reviewer ?? '-',
        hours !== undefined ? round(hours) : '-',
        [...s.overridden].sort().join(' ') || '-',
      ];
    });
    const overdue = rows.filter((r) => r[5] === 'OVERDUE').length;
    const summary: Array<[string, string | number]> = [
      ['sessions', sessions.length],
      ['reviewed', delays.length],
      ['justified', sessions.filter((s) => s.reviews.at(-1)?.outcome === 'justified').length],
      ['unjustified', sessions.filter((s) => s.reviews.at(-1)?.outcome === 'unjustified').length],
      ['awaiting review', sessions.length - delays.length],
      ['overrode a patient consent', sessions.filter((s) => s.overridden.size > 0).length],
      [`overdue (unreviewed after ${reviewDueHours} h)`, overdue],
      ['median hours to review', delays.length ? round(median(delays)) : '-'],
      ['worst hours to review', delays.length ? round(Math.max(...delays)) : '-'],
    ];
    return [
      { title: 'Summary', columns: ['measure', 'value'], rows: summary },
      {
        title: 'Sessions',
        columns: ['session', 'actor', 'patient', 'started', 'ended', 'review state', 'outcome', 'reviewer', 'hours to review', 'consents overridden'],
        rows,
        note: "Consents overridden: patients' consent directives whose restriction the session's requests released anyway (break-glass overriding consent).",
      },
    ];
  }

  charts(now: Date): Report['charts'] {
    const size = this.bucketMs();
    const accessOverTime: Series[] = [];
    if (this.buckets.size > 0) {
      const start = this.fromMs !== undefined ? Math.floor(this.fromMs / size) * size : Math.min(...this.buckets.keys());
      const end = this.toMs !== undefined ? this.toMs : Math.max(...this.buckets.keys()) + size;
      // Empty buckets are drawn too, but never more than 400 bars.
      for (let b = start; b < end && accessOverTime.length < 400; b += size) {
        const v = this.buckets.get(b);
        accessOverTime.push({ label: new Date(b).toISOString().slice(0, size === 3_600_000 ? 13 : 10).replace('T', ' '), value: v?.total ?? 0, part: v?.denied ?? 0 });
      }
    }
    const denialsByRole = [...this.denialsByRole].sort(([a, x], [b, y]) => y - x || a.localeCompare(b)).map(([label, value]) => ({ label, value }));
    const reviewAges = [...this.sessions.values()]
      .filter((s) => Number.isFinite(s.started))
      .sort((a, b) => a.started - b.started)
      .map((s) => {
        const end = s.reviews[0]?.at ?? now.getTime();
        // `part` = 1 marks a session still unreviewed (its bar is its age so far).
        return { label: s.id.slice(0, 8), value: round((end - s.started) / 3_600_000), part: s.reviews.length ? 0 : 1 };
      });
    return { accessOverTime, denialsByRole, reviewAges };
  }

  report(kind: ReportKind, o: { policy?: CompiledPolicy; now: Date; reviewDueHours?: number }): Report {
    let tables: Table[];
    if (kind === 'usage') {
      if (!o.policy) throw new Error('the usage report needs the policy');
      tables = this.usage(o.policy);
    } else if (kind === 'access') tables = this.access();
    else tables = this.breakGlass(o.now, o.reviewDueHours ?? 72);
    const titles: Record<ReportKind, string> = {
      usage: 'Minimum-necessary usage: grants vs disclosures',
      access: 'Access by actor and patient, and access requests',
      'break-glass': 'Break-glass sessions and reviews',
    };
    const charts = kind === 'access' ? { ...this.charts(o.now), accessRequests: this.accessRequests.charts() } : this.charts(o.now);
    return { kind, title: titles[kind], from: this.o.from, to: this.o.to, tables, charts };
  }
}

/** Kept by every plan whatever the policy says: never a candidate for removal. */
const ALWAYS_KEPT: ReadonlySet<string> = new Set(['id', 'meta']);

/** Whether a granted element (`address`, `deceased[x]`) is among the disclosed names (`deceasedBoolean`). */
function disclosed(element: string, used: ReadonlySet<string>): boolean {
  if (!element.endsWith('[x]')) return used.has(element);
  const base = element.slice(0, -3);
  for (const u of used) {
    if (u.length > base.length && u.startsWith(base)) {
      const c = u.charCodeAt(base.length);
      if (c >= 65 && c <= 90) return true; // deceased + Boolean: a concrete name of the choice
    }
  }
  return false;
}

/** `disclosed.elements` as read back from storage: anything not shaped as written is ignored. */
function recordedElements(v: unknown): Map<string, readonly string[]> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out = new Map<string, readonly string[]>();
  for (const [type, names] of Object.entries(v)) {
    if (Array.isArray(names)) out.set(type, names.filter((n): n is string => typeof n === 'string'));
  }
  return out;
}

/** `Patient.name`, `Patient.deceased[x]`: a top-level element, not a part selector or a data type. */
function isWholeElement(type: string, element: string): boolean {
  if (!element.startsWith(`${type}.`)) return false;
  const name = element.slice(type.length + 1);
  // `address.state`, `identifier[type=MR]`: lines for parts, the element itself has its own line.
  return !name.includes('.') && (!name.includes('[') || /^[a-z][A-Za-z0-9]*\[x\]$/.test(name));
}

/** A list of ids as read back from storage: strings only, anything else ignored. */
function ids(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

function tally(c: Counter, r: AuditRecord): void {
  c.requests++;
  if (r.decision === 'allow') c.allowed++;
  else if (r.decision === 'deny') c.denied++;
  else c.errors++;
  if (r.breakGlass?.session) c.sessions.add(r.breakGlass.session);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
