/**
 * Policy dry-run (pure): replays recorded requests through the running policy and a candidate and
 * aggregates, per role, what would change: requests newly allowed or denied, elements newly shown,
 * hidden or transformed differently.
 *
 * What a record lets us replay: the actor's roles, purpose, role applied, method, path and query,
 * and the types released. Not recorded, so not replayed: token purpose/patient/scope limits (the
 * replay assumes none), POST bodies (form `_search` parameters, writes; such requests are skipped
 * and counted), break-glass sessions (BTG requests are skipped: they are reviewed, not policy-judged).
 *
 * Care relationships are judged from each record's relationship evidence (src/monitor/compare.ts):
 * a candidate requirement the record shows unmet "would be refused: no relationship" (a search
 * naming no patient "would be narrowed"); a requirement the running policy enforced and the
 * candidate drops "would be allowed"; a candidate requirement the record's lookup cannot answer
 * (the running policy had none, or read other sources) is counted apart as "not looked up (cannot
 * replay)": put the requirement in force with `required: false` first, then diff.
 *
 * Patients' consents are judged from each record's consent evidence (compareConsent): a candidate
 * without a consent section, or exempting the purpose, "would be released: consent-restricted"
 * what consents withheld; a candidate whose break-glass no longer overrides consents "would be
 * withheld: consent overridden" (break-glass requests are replayed for this alone); a candidate applying
 * consents where the running policy did not, or otherwise, is counted apart as "not replayable for
 * consent" on every request that reached patient data: the record cannot tell what they would withhold.
 */
import type { AuditRecord } from '../audit/record.js';
import type { Principal } from '../auth/principal.js';
import { isR4ResourceType } from '../fhir/resource-types.js';
import { type Change, compareConsent, compareRequest, typesOf, verdict, WAS } from '../monitor/compare.js';
import { classify } from '../policy/classify.js';
import type { CompiledPolicy } from '../policy/plan.js';
import type { Table } from './digest.js';

export interface DiffLine {
  readonly role: string;
  readonly purpose: string;
  readonly change:
    | 'newly allowed'
    | 'newly denied'
    | 'element shown'
    | 'element hidden'
    | 'element changed'
    | 'would be refused: no relationship'
    | 'would be narrowed: no relationship'
    | 'would be allowed'
    | 'not looked up (cannot replay)'
    | 'would be released: consent-restricted'
    | 'would be withheld: consent overridden'
    | 'not replayable for consent';
  /** `search-type Observation` for decisions; the element (and `from -> to`) for elements. */
  readonly what: string;
  readonly requests: number;
}

export class PolicyDiff {
  private readonly lines = new Map<string, { line: Omit<DiffLine, 'requests'>; requests: number }>();
  replayed = 0;
  skipped = 0;
  changed = 0;
  /** Replayed, but the candidate requires a relationship the record holds no lookup for. */
  notLookedUp = 0;
  /** Replayed, but the candidate applies patients' consents otherwise: the record cannot tell what they would withhold. */
  notReplayableConsent = 0;

  constructor(
    private readonly current: CompiledPolicy,
    private readonly candidate: CompiledPolicy,
  ) {}

  add(r: AuditRecord): void {
    if (r.kind !== 'fhir') return;
    if (r.purpose === 'BTG' && r.request?.interaction !== undefined && this.breakGlassConsent(r)) return;
    if (!r.actor?.sub || !r.purpose || r.purpose === 'BTG' || r.request.interaction === undefined) {
      this.skipped++;
      return;
    }
    const method = r.request.method === 'HEAD' ? 'GET' : r.request.method;
    if (method !== 'GET') {
      this.skipped++;
      return;
    }
    let request: ReturnType<typeof classify>;
    try {
      request = classify({ method, url: r.request.path, headers: {}, body: undefined }, { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 });
    } catch {
      this.skipped++;
      return;
    }
    const principal: Principal = {
      iss: r.actor.iss ?? '',
      sub: r.actor.sub,
      clientId: r.actor.clientId,
      jti: r.actor.jti,
      roles: r.actor.roles,
      tokenPurposes: undefined,
      patient: undefined,
      scopes: undefined,
      familyName: undefined,
      exp: Number.MAX_SAFE_INTEGER,
    };
    const types = [...new Set([...(request.resourceType ? [request.resourceType] : []), ...typesOf(r.disclosed?.resources ?? [])])];
    const input = { principal, purpose: r.purpose, requestedRole: r.role, request, types };
    const a = verdict(this.current, input);
    const b = verdict(this.candidate, input);
    this.replayed++;
    const released = r.disclosed?.patients ?? [];
    const changes = compareRequest(this.current, a, b, { request, evidence: r.relationship, released, rule: r.rule });
    // Consents matter only to an answer both policies give (a relationship refusal gives none).
    if (a.allow && b.allow && !changes.some((c) => c.kind === 'relationship-refused' && !c.narrowed)) {
      const consent = compareConsent(this.current, this.candidate, a, b, { purpose: r.purpose, breakGlass: false, evidence: r.consent, released });
      if (consent) changes.push(consent);
    }
    if (changes.length === 0) return;
    if (changes.some((c) => c.kind === 'relationship-unknown')) this.notLookedUp++;
    else if (changes.some((c) => c.kind === 'consent-unknown')) this.notReplayableConsent++;
    else this.changed++;
    const role = a.role ?? b.role ?? r.role ?? r.actor.roles.join('+');
    for (const c of changes) for (const line of linesOf(c, role, r.purpose, `${request.interaction}${request.resourceType ? ` ${request.resourceType}` : ''}`)) this.count(line);
  }

  /**
   * A break-glass request is not policy-judged (it is reviewed), but what its consent evidence shows
   * break-glass overrode is replayed: true when the candidate would treat it otherwise (counted).
   */
  private breakGlassConsent(r: AuditRecord): boolean {
    const c = compareConsent(this.current, this.candidate, undefined, undefined, { purpose: 'BTG', breakGlass: true, evidence: r.consent, released: r.disclosed?.patients ?? [] });
    if (c === undefined) return false;
    this.replayed++;
    if (c.kind === 'consent-unknown') this.notReplayableConsent++;
    else this.changed++;
    const what = `${r.request.interaction}${r.request.resourceType ? ` ${r.request.resourceType}` : ''}`;
    for (const line of linesOf(c, r.role ?? r.actor?.roles?.join('+') ?? '(no role)', 'BTG', what)) this.count(line);
    return true;
  }

  private count(line: Omit<DiffLine, 'requests'>): void {
    const key = `${line.role}\u0000${line.purpose}\u0000${line.change}\u0000${line.what}`;
    const e = this.lines.get(key);
    if (e) e.requests++;
    else this.lines.set(key, { line, requests: 1 });
  }

  result(): DiffLine[] {
    return [...this.lines.values()]
      .map((e) => ({ ...e.line, requests: e.requests }))
      .sort((x, y) => x.role.localeCompare(y.role) || x.purpose.localeCompare(y.purpose) || x.change.localeCompare(y.change) || x.what.localeCompare(y.what));
  }

  tables(): Table[] {
    const consent =
      this.current.consent || this.candidate.consent
        ? `${this.notReplayableConsent} not replayable for consent (the candidate applies patients' consents where, or otherwise than, the running policy did: the records cannot tell what they would withhold), `
        : '';
    return [
      {
        title: 'Changes per role',
        columns: ['role', 'purpose', 'change', 'what', 'requests'],
        rows: this.result().map((l) => [l.role, l.purpose, l.change, l.what, l.requests]),
        note:
          `${this.replayed} requests replayed, ${this.changed} would fare differently, ${this.notLookedUp} not looked up (the candidate requires a care relationship ` +
          `the record holds no lookup for: put it in force with required: false first), ${consent}${this.skipped} not replayable (writes, POST bodies, break-glass, unauthenticated).`,
      },
    ];
  }
}

function linesOf(c: Change, role: string, purpose: string, request: string): Array<Omit<DiffLine, 'requests'>> {
  if (c.kind === 'newly-allowed') return [{ role, purpose, change: 'newly allowed', what: request }];
  if (c.kind === 'newly-denied') return [{ role, purpose, change: 'newly denied', what: `${request} (${c.now})` }];
  if (c.kind === 'relationship-refused') return [{ role, purpose, change: c.narrowed ? 'would be narrowed: no relationship' : 'would be refused: no relationship', what: `${request} (${c.rule})` }];
  if (c.kind === 'relationship-allowed') return [{ role, purpose, change: 'would be allowed', what: `${request} (was: ${WAS[c.was]})` }];
  if (c.kind === 'relationship-unknown') return [{ role, purpose, change: 'not looked up (cannot replay)', what: `${request} (${c.rule})` }];
  if (c.kind === 'consent-released') return [{ role, purpose, change: 'would be released: consent-restricted', what: `${request} (${c.rule})` }];
  if (c.kind === 'consent-withheld') return [{ role, purpose, change: 'would be withheld: consent overridden', what: `${request} (${c.rule})` }];
  if (c.kind === 'consent-unknown') return [{ role, purpose, change: 'not replayable for consent', what: `${request} (${c.rule})` }];
  return [
    ...c.shown.map((e) => ({ role, purpose, change: 'element shown' as const, what: e.element })),
    ...c.hidden.map((e) => ({ role, purpose, change: 'element hidden' as const, what: e.element })),
    ...c.changed.map((e) => ({ role, purpose, change: 'element changed' as const, what: `${e.element}: ${e.from} -> ${e.to}` })),
  ];
}
