/**
 * The breach report (pure): what the audit trail says was released to named actors (token `sub`,
 * client id, or client address in a CIDR range) in a time window, for the risk assessment and the
 * notifications of the HIPAA breach rule (45 CFR 164.400-414). One pass over the records, in any
 * order: per patient, the requests and resources that released their data, the resource types
 * and elements, first and last access, the state of residence the released data showed, and the
 * break-glass sessions, access grants and anomaly alerts around them.
 *
 * Memory holds per-patient summaries, never records: it grows with patients × (resource types +
 * elements released), plus the sessions, grants and anomaly rules of the selected actors.
 */
import { isIP } from 'node:net';
import type { AuditRecord } from '../audit/record.js';
import type { Table } from './digest.js';
import { csvCell, type ReportTables } from './render.js';

/** Which records are the suspect actors': any one of the criteria matches (a union). */
export interface BreachSelection {
  /** Token subjects (`actor.sub`). */
  readonly actors?: readonly string[];
  /** OAuth client ids (`actor.clientId`). */
  readonly clients?: readonly string[];
  /** Client address ranges, IPv4 or IPv6 CIDR (or single addresses). */
  readonly addresses?: readonly string[];
}

export interface BreachOptions extends BreachSelection {
  /** The window, [from, to). */
  readonly from: string;
  readonly to: string;
  /** When the breach was discovered: the notification deadlines run from it (45 CFR 164.404(a)(2)). */
  readonly discovered: Date;
}

/** 45 CFR 164.406(a): media notice for a breach involving more than this many residents of a State. */
export const MEDIA_THRESHOLD = 500;
/** 45 CFR 164.408(b)/(c): HHS notice with the individual notices at 500 or more individuals, else yearly. */
export const HHS_THRESHOLD = 500;
/** 45 CFR 164.404(b), 164.406(b), 164.408(b)/(c): calendar days. */
const NOTICE_DAYS = 60;
const DAY_MS = 86_400_000;
export const UNKNOWN_STATE = 'unknown';

// ---- addresses ----

/** An address range in the IPv6 space; IPv4 is mapped to `::ffff:a.b.c.d` so either notation matches the other. */
export interface AddressRange {
  readonly text: string;
  readonly base: bigint;
  /** Prefix length in the 128-bit space (an IPv4 /n is 96 + n). */
  readonly prefix: number;
}

const MAPPED = 0xffffn << 32n;

function ipv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    v = (v << 8n) | BigInt(Number(p));
  }
  return v;
}

/**
 * An address as a 128-bit number (IPv4 and IPv4-mapped IPv6 alike), or undefined when `s` is not
 * one. A zone (`fe80::1%eth0`) and brackets are ignored.
 */
export function parseAddress(input: string): bigint | undefined {
  let s = input.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const kind = isIP(s);
  if (kind === 4) return MAPPED | ipv4(s)!;
  if (kind !== 6) return undefined;
  let tail: bigint[] = [];
  const dot = s.lastIndexOf('.');
  if (dot >= 0) {
    // An embedded IPv4 tail (`::ffff:10.0.0.1`): two groups.
    const colon = s.lastIndexOf(':');
    const v4 = ipv4(s.slice(colon + 1));
    if (v4 === undefined) return undefined;
    tail = [v4 >> 16n, v4 & 0xffffn];
    s = s.slice(0, colon + 1);
    if (s.endsWith(':') && !s.endsWith('::')) s = s.slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === '' ? [] : h.split(':').map((g) => BigInt(`0x${g}`)));
  const head = groups(halves[0] as string);
  const rest = halves.length === 2 ? groups(halves[1] as string) : [];
  const missing = 8 - head.length - rest.length - tail.length;
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return undefined;
  const all = [...head, ...Array<bigint>(halves.length === 2 ? missing : 0).fill(0n), ...rest, ...tail];
  let v = 0n;
  for (const g of all) v = (v << 16n) | g;
  return v;
}

/** `10.0.0.0/8`, `2001:db8::/32`, `::ffff:10.0.0.0/104`, or one address. Throws on anything else. */
export function parseCidr(text: string): AddressRange {
  const slash = text.indexOf('/');
  const addr = slash >= 0 ? text.slice(0, slash) : text;
  const base = parseAddress(addr);
  if (base === undefined) throw new Error(`not an IPv4 or IPv6 address or CIDR range: ${JSON.stringify(text.slice(0, 60))}`);
  const v4 = isIP(addr.trim()) === 4;
  const max = v4 ? 32 : 128;
  const bits = slash >= 0 ? text.slice(slash + 1) : String(max);
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) throw new Error(`bad prefix length in ${JSON.stringify(text.slice(0, 60))} (0-${max})`);
  const prefix = (v4 ? 96 : 0) + Number(bits);
  const shift = BigInt(128 - prefix);
  return { text, base: (base >> shift) << shift, prefix };
}

export function inRange(address: bigint, r: AddressRange): boolean {
  const shift = BigInt(128 - r.prefix);
  return address >> shift === r.base >> shift;
}

// ---- the digest ----

interface PatientSummary {
  requests: number;
  resources: number;
  first: number;
  last: number;
  /** Resource type -> top-level element names released (interned strings). */
  readonly types: Map<string, Set<string>>;
  /** Answers that released this patient's data in a record without `disclosed.elements`. */
  unrecorded: number;
  /** The state the latest record showing one showed, and when. */
  state: string | undefined;
  stateAt: number;
  /** Other states earlier records showed (the patient moved, or records disagree). */
  otherStates: Set<string> | undefined;
  /** The selected actors who received it. */
  readonly actors: Set<string>;
  sessions: Set<string> | undefined;
  grants: Set<string> | undefined;
}

interface SessionSummary {
  actor: string;
  patient: string;
  reason: string;
  started: number | undefined;
  ended: number | undefined;
  requests: number;
  readonly patients: Set<string>;
}

interface GrantSummary {
  dataSet: string;
  patient: string;
  approvedBy: string;
  requests: number;
  readonly patients: Set<string>;
}

interface AnomalySummary {
  alerts: number;
  first: number;
  last: number;
  readonly actors: Set<string>;
  readonly patients: Set<string>;
}

/** One pass over the trail: `add` every record (any order), then `report`. */
export class BreachDigest {
  private readonly subs: ReadonlySet<string>;
  private readonly clients: ReadonlySet<string>;
  private readonly ranges: readonly AddressRange[];
  private readonly fromMs: number;
  private readonly toMs: number;
  private readonly patients = new Map<string, PatientSummary>();
  private readonly sessions = new Map<string, SessionSummary>();
  private readonly grants = new Map<string, GrantSummary>();
  private readonly anomalies = new Map<string, AnomalySummary>();
  /** Patient -> anomaly rule -> alerts naming the patient (joined to the released patients at the end). */
  private readonly anomalyPatients = new Map<string, Map<string, number>>();
  /** Element and type names, actors: one string each however many patients hold them. */
  private readonly names = new Map<string, string>();
  /** Addresses already judged (a client sends many requests from one address); bounded. */
  private readonly addressMemo = new Map<string, boolean>();
  /** Records read, in the window, and of the selected actors. */
  records = 0;
  inWindow = 0;
  matched = 0;
  releasing = 0;
  denied = 0;
  errors = 0;
  /** Audit exports (`GET /audit/export`) by the selected actors: the trail itself was released. */
  auditExports = 0;

  constructor(private readonly o: BreachOptions) {
    this.subs = new Set(o.actors ?? []);
    this.clients = new Set(o.clients ?? []);
    this.ranges = (o.addresses ?? []).map(parseCidr);
    if (this.subs.size + this.clients.size + this.ranges.length === 0) throw new Error('name the actors: --actor, --client or --address');
    this.fromMs = Date.parse(o.from);
    this.toMs = Date.parse(o.to);
    if (!Number.isFinite(this.fromMs) || !Number.isFinite(this.toMs)) throw new Error('the window needs a from and a to time');
    if (this.toMs <= this.fromMs) throw new Error('the window is empty: --to must be after --from');
  }

  /** Whether a record is one of the selected actors' (by sub, client id, or address). */
  selects(r: AuditRecord): boolean {
    const a = r.actor;
    if (a !== undefined && a !== null) {
      if (typeof a.sub === 'string' && this.subs.has(a.sub)) return true;
      if (typeof a.clientId === 'string' && this.clients.has(a.clientId)) return true;
    }
    if (this.ranges.length === 0) return false;
    const address = r.client?.address;
    if (typeof address !== 'string' || address === '') return false;
    let hit = this.addressMemo.get(address);
    if (hit === undefined) {
      const v = parseAddress(address);
      hit = v !== undefined && this.ranges.some((range) => inRange(v, range));
      if (this.addressMemo.size >= 10_000) this.addressMemo.clear();
      this.addressMemo.set(address, hit);
    }
    return hit;
  }

  add(r: AuditRecord): void {
    this.records++;
    const t = Date.parse(r.time);
    if (!Number.isFinite(t) || t < this.fromMs || t >= this.toMs) return;
    this.inWindow++;
    if (!this.selects(r)) return;
    this.matched++;
    const actor = this.intern(r.actor?.sub ?? r.actor?.clientId ?? '(anonymous)');
    const patients = ids(r.disclosed?.patients);
    switch (r.kind) {
      case 'fhir':
        if (r.decision === 'deny') this.denied++;
        else if (r.decision === 'error') this.errors++;
        else if (r.decision === 'allow' && patients.length > 0) this.release(r, t, actor, patients);
        break;
      case 'export':
        if (r.decision === 'allow') this.auditExports++;
        break;
      case 'anomaly':
        this.anomaly(r, t, actor, patients);
        break;
      case 'break-glass-start': {
        const id = r.breakGlass?.session;
        if (typeof id !== 'string') break;
        const s = this.sessionOf(id, actor);
        s.patient = patients[0] ?? s.patient;
        s.reason = r.breakGlass?.reason ?? s.reason;
        s.started = t;
        break;
      }
      case 'break-glass-end': {
        const id = r.breakGlass?.session;
        if (typeof id === 'string') this.sessionOf(id, actor).ended = t;
        break;
      }
      default:
        break;
    }
  }

  /** A FHIR answer that released patient data: every measure goes to each patient it named. */
  private release(r: AuditRecord, t: number, actor: string, patients: readonly string[]): void {
    this.releasing++;
    const resources = ids(r.disclosed?.resources);
    const elements = recordedElements(r.disclosed?.elements);
    const types = new Set<string>();
    for (const res of resources) {
      const i = res.indexOf('/');
      if (i > 0) types.add(this.intern(res.slice(0, i)));
    }
    if (elements !== undefined) for (const type of elements.keys()) types.add(this.intern(type));
    const states = recordedStates(r.disclosed?.states);
    const bg = r.breakGlass;
    const session = typeof bg?.session === 'string' ? bg.session : undefined;
    if (session !== undefined) {
      const s = this.sessionOf(session, actor);
      if (!s.reason && typeof bg?.reason === 'string') s.reason = bg.reason;
      s.requests++;
      for (const p of patients) s.patients.add(p);
    }
    const g = r.grant;
    const grant = typeof g?.id === 'string' ? g.id : undefined;
    if (grant !== undefined) {
      let x = this.grants.get(grant);
      if (x === undefined) {
        x = { dataSet: String(g?.dataSet ?? ''), patient: String(g?.patient ?? ''), approvedBy: String(g?.approvedBy ?? ''), requests: 0, patients: new Set() };
        this.grants.set(grant, x);
      }
      x.requests++;
      for (const p of patients) x.patients.add(p);
    }
    for (const p of patients) {
      const s = this.patientOf(p);
      s.requests++;
      s.resources += resources.length;
      if (t < s.first) s.first = t;
      if (t > s.last) s.last = t;
      s.actors.add(actor);
      for (const type of types) {
        let set = s.types.get(type);
        if (set === undefined) {
          set = new Set();
          s.types.set(type, set);
        }
        for (const e of elements?.get(type) ?? []) set.add(this.intern(e));
      }
      if (elements === undefined) s.unrecorded++;
      const state = states?.get(p);
      if (state !== undefined) this.noteState(s, this.intern(state), t);
      if (session !== undefined) {
        s.sessions ??= new Set();
        s.sessions.add(session);
      }
      if (grant !== undefined) {
        s.grants ??= new Set();
        s.grants.add(grant);
      }
    }
  }

  /** The latest record's state wins; earlier different ones are kept as other states shown. */
  private noteState(s: PatientSummary, state: string, t: number): void {
    if (s.state === undefined || s.state === state) {
      s.state = state;
      s.stateAt = Math.max(s.stateAt, t);
      return;
    }
    s.otherStates ??= new Set();
    if (t >= s.stateAt) {
      s.otherStates.add(s.state);
      s.state = state;
      s.stateAt = t;
      s.otherStates.delete(state);
    } else s.otherStates.add(state);
  }

  private anomaly(r: AuditRecord, t: number, actor: string, patients: readonly string[]): void {
    const rule = this.intern(String(r.details?.anomaly ?? r.rule ?? 'anomaly'));
    let a = this.anomalies.get(rule);
    if (a === undefined) {
      a = { alerts: 0, first: t, last: t, actors: new Set(), patients: new Set() };
      this.anomalies.set(rule, a);
    }
    a.alerts++;
    a.first = Math.min(a.first, t);
    a.last = Math.max(a.last, t);
    a.actors.add(actor);
    for (const p of patients) {
      a.patients.add(p);
      let m = this.anomalyPatients.get(p);
      if (m === undefined) {
        m = new Map();
        this.anomalyPatients.set(p, m);
      }
      m.set(rule, (m.get(rule) ?? 0) + 1);
    }
  }

  private intern(s: string): string {
    const have = this.names.get(s);
    if (have !== undefined) return have;
    this.names.set(s, s);
    return s;
  }

  private patientOf(id: string): PatientSummary {
    let s = this.patients.get(id);
    if (s === undefined) {
      s = {
        requests: 0,
        resources: 0,
        first: Number.POSITIVE_INFINITY,
        last: Number.NEGATIVE_INFINITY,
        types: new Map(),
        unrecorded: 0,
        state: undefined,
        stateAt: Number.NEGATIVE_INFINITY,
        otherStates: undefined,
        actors: new Set(),
        sessions: undefined,
        grants: undefined,
      };
      this.patients.set(id, s);
    }
    return s;
  }

  private sessionOf(id: string, actor: string): SessionSummary {
    let s = this.sessions.get(id);
    if (s === undefined) {
      s = { actor, patient: '', reason: '', started: undefined, ended: undefined, requests: 0, patients: new Set() };
      this.sessions.set(id, s);
    }
    return s;
  }

  /** Patients affected and their count per state of residence (`unknown` where no record showed one). */
  perState(): Map<string, number> {
    const m = new Map<string, number>();
    for (const s of this.patients.values()) {
      const k = s.state ?? UNKNOWN_STATE;
      m.set(k, (m.get(k) ?? 0) + 1);
    }
    return m;
  }

  report(): ReportTables & { readonly patients: Table } {
    const discovered = this.o.discovered;
    const individualBy = day(discovered.getTime() + NOTICE_DAYS * DAY_MS);
    const year = discovered.getUTCFullYear();
    const yearlyBy = day(Date.UTC(year, 11, 31) + NOTICE_DAYS * DAY_MS);
    const total = this.patients.size;
    const perState = this.perState();
    const unknown = perState.get(UNKNOWN_STATE) ?? 0;
    const states = [...perState].filter(([k]) => k !== UNKNOWN_STATE).sort(([a, x], [b, y]) => y - x || a.localeCompare(b));
    const media = states.filter(([, n]) => n > MEDIA_THRESHOLD);
    const hhsNow = total >= HHS_THRESHOLD;

    const selection = [
      ...(this.o.actors ?? []).map((a) => `sub ${a}`),
      ...(this.o.clients ?? []).map((c) => `client ${c}`),
      ...(this.o.addresses ?? []).map((c) => `address ${c}`),
    ].join('; ');
    const summary: Array<[string, string | number]> = [
      ['actors (any of)', selection],
      ['window', `${this.o.from} .. ${this.o.to} (to exclusive)`],
      ['discovered', discovered.toISOString()],
      ['records read', this.records],
      ['records in the window', this.inWindow],
      ["records of these actors in the window", this.matched],
      ['requests that released patient data', this.releasing],
      ['requests denied / failed (nothing released)', `${this.denied} / ${this.errors}`],
      ['patients affected', total],
      ['patients with a state of residence shown', total - unknown],
      ['patients whose state the released data never showed', unknown],
      ['break-glass sessions', this.sessions.size],
      ['access grants used', this.grants.size],
      ['anomaly alerts about these actors', [...this.anomalies.values()].reduce((n, a) => n + a.alerts, 0)],
      ['audit trail exports by these actors (GET /audit/export)', this.auditExports],
    ];

    const duties: Array<Array<string | number>> = [
      [
        '45 CFR 164.404: notice to each individual',
        total > 0 ? `${total} individuals` : 'none found',
        total > 0 ? `without unreasonable delay, no later than 60 calendar days after discovery: by ${individualBy}` : '-',
      ],
      hhsNow
        ? ['45 CFR 164.408(b): notice to the Secretary of HHS', `500 or more individuals (${total})`, `contemporaneously with the individual notices: by ${individualBy}`]
        : [
            '45 CFR 164.408(c): notice to the Secretary of HHS',
            `less than 500 individuals (${total})`,
            `log the breach; notify no later than 60 days after the end of calendar year ${year}: by ${yearlyBy}`,
          ],
      ...media.map(([state, n]) => [
        `45 CFR 164.406: notice to prominent media outlets serving ${state}`,
        `more than 500 residents of the State or jurisdiction (${n})`,
        `no later than 60 calendar days after discovery: by ${individualBy}`,
      ]),
    ];
    if (media.length === 0) {
      duties.push([
        '45 CFR 164.406: notice to prominent media outlets',
        `no State or jurisdiction with more than 500 residents shown${unknown > 0 ? ` (${unknown} patients of unknown state)` : ''}`,
        '-',
      ]);
    }

    const stateRows: Array<Array<string | number>> = states.map(([state, n]) => [
      state,
      n,
      n > MEDIA_THRESHOLD
        ? 'more than 500 residents: notify prominent media outlets serving the State or jurisdiction (45 CFR 164.406)'
        : n + unknown > MEDIA_THRESHOLD
          ? `500 or fewer shown; with the ${unknown} patients of unknown state it could be more than 500: establish their residence`
          : '500 or fewer: no media notice for this State (45 CFR 164.406)',
      n > MEDIA_THRESHOLD ? individualBy : '-',
    ]);
    if (unknown > 0) stateRows.push([UNKNOWN_STATE, unknown, 'no released data showed a state: establish residence from the patient record', '-']);

    const order = [...this.patients].sort(([a, x], [b, y]) => {
      const sx = x.state ?? '\uffff';
      const sy = y.state ?? '\uffff';
      return sx < sy ? -1 : sx > sy ? 1 : a < b ? -1 : a > b ? 1 : 0;
    });
    const patientRows = order.map(([id, s]) => {
      const anomalies = this.anomalyPatients.get(id);
      return [
        id,
        s.state ?? UNKNOWN_STATE,
        [...(s.otherStates ?? [])].sort().join(' '),
        iso(s.first),
        iso(s.last),
        s.requests,
        s.resources,
        [...s.types.keys()].sort().join(' '),
        elementList(s.types) + (s.unrecorded > 0 ? `${s.types.size ? ' ' : ''}(elements not recorded in ${s.unrecorded} answers)` : ''),
        [...s.actors].sort().join(' '),
        [...(s.sessions ?? [])]
          .sort()
          .map((id) => `${id}: ${this.sessions.get(id)?.reason ?? ''}`)
          .join('; '),
        [...(s.grants ?? [])]
          .sort()
          .map((id) => `${id} (${this.grants.get(id)?.dataSet ?? ''})`)
          .join('; '),
        anomalies === undefined
          ? ''
          : [...anomalies]
              .sort(([a], [b]) => a.localeCompare(b))
              .map(([rule, n]) => `${rule} x${n}`)
              .join('; '),
      ];
    });
    const patients: Table = {
      title: 'Patients whose data was released',
      columns: ['patient', 'state', 'other states shown', 'first access', 'last access', 'requests', 'resources', 'resource types', 'elements', 'actors', 'break-glass (session: reason)', 'access grants (data set)', 'anomaly alerts'],
      rows: patientRows,
      note:
        'Per patient, from the records of the named actors that released their data in the window. An answer naming several patients counts, with all its ' +
        'resources, types and elements, for each of them (an overstatement, never an understatement). State: as the released Patient resource showed it ' +
        '(address state, the home address first), the latest such record winning, earlier different ones under other states shown; ' +
        'unknown where the released data never showed one.',
    };

    const sessionRows = [...this.sessions]
      .sort(([a, x], [b, y]) => (x.started ?? 0) - (y.started ?? 0) || a.localeCompare(b))
      .map(([id, s]) => [id, s.actor, s.patient || '-', s.reason || '-', s.started !== undefined ? iso(s.started) : 'before the window', s.ended !== undefined ? iso(s.ended) : '-', s.requests, s.patients.size]);
    const grantRows = [...this.grants]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([id, g]) => [id, g.dataSet, g.patient, g.approvedBy, g.requests, g.patients.size]);
    const anomalyRows = [...this.anomalies]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([rule, a]) => [rule, a.alerts, [...a.actors].sort().join(' '), a.patients.size, iso(a.first), iso(a.last)]);

    return {
      title: 'Breach assessment: patient data released to the named actors',
      from: this.o.from,
      to: this.o.to,
      patients,
      tables: [
        { title: 'Summary', columns: ['measure', 'value'], rows: summary },
        {
          title: 'Notification duties (45 CFR 164.404, 164.406, 164.408)',
          columns: ['duty', 'applies to', 'deadline'],
          rows: duties,
          note:
            'Thresholds as the rule words them: media notice for a breach involving more than 500 residents of a State or jurisdiction (164.406); notice to ' +
            'the Secretary contemporaneously with the individual notices for 500 or more individuals (164.408(b)), otherwise a log and notice within 60 days ' +
            'after the end of the calendar year (164.408(c)). Deadlines count calendar days from the discovery date given. Whether these disclosures are a ' +
            'breach at all is the risk assessment of 164.402(2); this report only says what the trail shows was released.',
        },
        {
          title: 'Patients per state of residence',
          columns: ['state', 'patients', 'threshold (45 CFR 164.406)', 'media notice by'],
          rows: stateRows,
          note: 'Only states the released data showed (a Patient resource released with an address state); every other patient is counted as unknown.',
        },
        patients,
        {
          title: 'Break-glass sessions',
          columns: ['session', 'actor', 'patient', 'reason', 'started', 'ended', 'requests releasing data', 'patients released'],
          rows: sessionRows,
        },
        {
          title: 'Access grants used',
          columns: ['grant', 'data set', 'granted patient', 'approved by', 'requests releasing data', 'patients released'],
          rows: grantRows,
        },
        {
          title: 'Anomaly alerts about these actors',
          columns: ['rule', 'alerts', 'actors', 'patients named', 'first', 'last'],
          rows: anomalyRows,
        },
      ],
    };
  }
}

/** `disclosed.elements` as read back from storage: anything not shaped as written is ignored. */
function recordedElements(v: unknown): Map<string, readonly string[]> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out = new Map<string, readonly string[]>();
  for (const [type, names] of Object.entries(v)) if (Array.isArray(names)) out.set(type, ids(names));
  return out;
}

/** `disclosed.states` as read back from storage: string values only. */
function recordedStates(v: unknown): Map<string, string> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out = new Map<string, string>();
  for (const [id, state] of Object.entries(v)) if (typeof state === 'string' && state !== '') out.set(id, state);
  return out.size > 0 ? out : undefined;
}

/** A list of ids as read back from storage: strings only, anything else ignored. */
function ids(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** `Observation.code Observation.subject Patient.name`: every released element, sorted. */
function elementList(types: ReadonlyMap<string, ReadonlySet<string>>): string {
  const out: string[] = [];
  for (const type of [...types.keys()].sort()) for (const e of [...(types.get(type) ?? [])].sort()) out.push(`${type}.${e}`);
  return out.join(' ');
}

function iso(t: number): string {
  return Number.isFinite(t) ? new Date(t).toISOString() : '-';
}

function day(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}

/** The patients table alone as CSV: a header row and one row per patient (formula prefixes neutralized). */
export function breachCsv(patients: Table): string {
  const lines = [patients.columns.map(csvCell).join(','), ...patients.rows.map((row) => row.map(csvCell).join(','))];
  return `${lines.join('\r\n')}\r\n`;
}
