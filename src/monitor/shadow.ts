/**
 * Shadow mode: a candidate policy is evaluated on live traffic, after the response was released,
 * without enforcing it. Each request the candidate would treat differently (allowed vs denied,
 * elements shown, hidden or transformed otherwise, refused or let through for a care relationship)
 * gets an audit record of kind `shadow-diff`. A candidate's relationship requirement is judged on the
 * relationships the running policy looked up for the request: where those cannot answer it (no
 * requirement of its own, or sources it does not read), the record says so
 * (`relationship-not-looked-up`). Patients' consents likewise, on what they did to the live answer
 * (its consent evidence): `consent` says what the candidate would release or withhold, or that it
 * cannot be told (`consent-not-replayable`).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { CompiledPolicy } from '../policy/plan.js';
import type { Exchange } from '../proxy/record.js';
import { type Change, compareConsent, compareRequest, typesOf, type Verdict, verdict, WAS } from './compare.js';
import type { Outcome } from './monitor.js';
import { relationshipRefusal } from './rules.js';

export interface ShadowOptions {
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** The running policy of that version, or undefined when it is no longer known (reloaded since). */
  current(version: string): CompiledPolicy | undefined;
  readonly candidate: CompiledPolicy;
  /** Where the candidate came from, shown in the records. */
  readonly candidateFile: string;
  readonly newId?: () => string;
}

/** Changes as plain data for a record's details (element names and actions only). */
export function describeChanges(changes: readonly Change[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of changes) {
    if (c.kind === 'elements') {
      if (c.shown.length) out.shown = c.shown.map((x) => x.element);
      if (c.hidden.length) out.hidden = c.hidden.map((x) => x.element);
      if (c.changed.length) out.changed = c.changed.map((x) => `${x.element}: ${x.from} -> ${x.to}`);
    } else if (c.kind === 'relationship-refused') {
      out.decision = c.narrowed ? 'relationship-narrowed' : 'relationship-refused';
      out.now = `${c.rule}: no relationship`;
    } else if (c.kind === 'relationship-allowed') {
      out.decision = 'relationship-allowed';
      out.was = WAS[c.was];
      out.now = c.now;
    } else if (c.kind === 'relationship-unknown') {
      out.decision = 'relationship-not-looked-up';
      out.now = c.rule;
    } else if (c.kind === 'consent-released' || c.kind === 'consent-withheld' || c.kind === 'consent-unknown') {
      // Apart from `decision`: a consent change comes on top of any other.
      out.consent = c.kind === 'consent-unknown' ? 'consent-not-replayable' : c.kind;
      out.consentRule = c.rule;
      if (c.kind === 'consent-withheld') out.overridden = c.overridden;
    } else {
      out.decision = c.kind;
      out.was = c.was;
      out.now = c.now;
    }
  }
  return out;
}

/** The candidate's decision and rule for the record, a relationship's refusal included. */
function candidateOutcome(b: Verdict, changes: readonly Change[]): { decision: 'allow' | 'deny'; rule: string } {
  for (const c of changes) {
    if (c.kind === 'relationship-refused' && !c.narrowed) return { decision: 'deny', rule: `${b.rule} -> ${c.rule}: no relationship` };
    if (c.kind === 'relationship-unknown') return { decision: 'allow', rule: `${b.rule} -> ${c.rule}: not looked up` };
  }
  for (const c of changes) {
    if (c.kind === 'consent-withheld') return { decision: 'allow', rule: `${b.rule} -> ${c.rule}: consent overridden would be withheld` };
    if (c.kind === 'consent-released') return { decision: 'allow', rule: `${b.rule} -> ${c.rule}: consent-restricted would be released` };
    if (c.kind === 'consent-unknown') return { decision: 'allow', rule: `${b.rule} -> ${c.rule}: not replayable for consent` };
  }
  return b.allow ? { decision: 'allow', rule: b.rule } : { decision: 'deny', rule: b.code ?? b.rule };
}

export function createShadowObserver(o: ShadowOptions): { observe(ex: Readonly<Exchange>, outcome: Outcome): void; idle(): Promise<void> } {
  const newId = o.newId ?? randomUUID;
  const pending = new Set<Promise<void>>();

  async function run(ex: Readonly<Exchange>, outcome: Outcome): Promise<void> {
    const current = o.current(ex.policyVersion);
    if (!current || !ex.principal || !ex.purpose || !ex.request) return;
    const types = [...new Set([...(ex.request.resourceType ? [ex.request.resourceType] : []), ...typesOf(ex.stats?.resources ?? [])])];
    const input = { principal: ex.principal, purpose: ex.purpose, requestedRole: ex.role, request: ex.request, types };
    const a = verdict(current, input);
    // The live decision is the truth for "was it allowed": a break-glass or gate refusal is not the
    // policy's. A care relationship's is (for a search, an allowed empty searchset).
    const rel = ex.relationship;
    const byRelationship = a.allow && rel?.required === true && (rel.unrelated.length > 0 || relationshipRefusal(outcome.rule) !== undefined);
    // A read a consent withheld is answered as missing: the policy's own doing, judged as well.
    const byConsent = a.allow && (ex.consent?.withheld ?? 0) > 0;
    if (!byRelationship && !byConsent && a.allow !== (outcome.decision === 'allow') && outcome.decision !== 'error') return;
    const b = verdict(o.candidate, input);
    const released = ex.stats ? [...ex.stats.patients] : [];
    const changes = compareRequest(current, a, b, { request: ex.request, evidence: rel, released, rule: outcome.rule });
    if (a.allow && b.allow && !changes.some((c) => c.kind === 'relationship-refused' && !c.narrowed)) {
      const consent = compareConsent(current, o.candidate, a, b, { purpose: ex.purpose, breakGlass: ex.breakGlass !== undefined, evidence: ex.consent, released });
      if (consent) changes.push(consent);
    }
    if (changes.length === 0) return;
    const { decision, rule } = candidateOutcome(b, changes);
    const p = ex.principal;
    const record: AuditRecord = {
      id: newId(),
      time: ex.time.toISOString(),
      kind: 'shadow-diff',
      actor: { iss: p.iss, sub: p.sub, clientId: p.clientId, jti: p.jti, roles: p.roles },
      purpose: ex.purpose,
      role: ex.role ?? b.role,
      client: { address: ex.clientAddress, userAgent: ex.userAgent },
      request: { method: ex.method, path: ex.url, interaction: ex.request.interaction, resourceType: ex.request.resourceType },
      decision,
      rule: `shadow ${o.candidate.version}: ${rule}`,
      disclosed: { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 },
      status: outcome.status,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion: ex.policyVersion,
      details: { requestId: ex.id, candidate: o.candidateFile, candidateVersion: o.candidate.version, ...describeChanges(changes) },
    };
    await o.audit.write(record);
  }

  return {
    observe(ex, outcome) {
      if (ex.kind !== undefined && ex.kind !== 'fhir') return;
      const p = run(ex, outcome).catch((e: unknown) => o.logger.error({ reqId: ex.id, err: e }, 'shadow policy evaluation failed'));
      pending.add(p);
      void p.finally(() => pending.delete(p));
    },
    async idle() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
  };
}
