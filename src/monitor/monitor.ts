/**
 * Live anomaly detection (policy file `anomalies:`). An observer after each released response
 * counts per actor over sliding windows and, on a hit, writes an audit record (kind `anomaly`) and
 * raises an alert on the break-glass channels (webhook, Redis PUBLISH, warn log), once per rule,
 * actor (and patient, for family-name) and window. A gate refuses an actor's requests only for
 * rules marked `block: true`: off-hours at once, the others for the rest of the window after
 * they fired. `no-relationship` reads the care-relationship evidence the pipeline put on the
 * exchange (the same the request's audit record holds).
 */
import { hash, randomUUID } from 'node:crypto';
import type { Principal } from '../auth/principal.js';
import type { Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { AlertPayload } from '../breakglass/outbox.js';
import { ERRORS, type ErrorCode, GatewayError } from '../errors.js';
import type { Exchange } from '../proxy/record.js';
import type { FamilyNameLookup } from './names.js';
import { type CompiledAnomalyRule, isOffHours, isUntargetedSearch, ruleApplies, withoutRelationship } from './rules.js';
import type { WindowStore } from './window.js';

/**
 * Refusal code for a blocking rule. Proposed catalogue entry `anomaly-blocked` (403 forbidden); until
 * src/errors.ts has it, the nearest existing code.
 */
export const BLOCK_CODE: ErrorCode = 'anomaly-blocked';

export type Outcome = Readonly<{ status: number; decision: 'allow' | 'deny' | 'error'; rule: string }>;

export interface MonitorOptions {
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly alerter: { raise(p: AlertPayload): Promise<void> };
  readonly store: WindowStore;
  /** Rules in force for a request's policy version (hot reload). */
  rules(policyVersion: string): readonly CompiledAnomalyRule[];
  /** Needed by family-name rules; without it they never fire (and say so once). */
  readonly families?: FamilyNameLookup | undefined;
  readonly newId?: () => string;
}

export interface Monitor {
  gate(ex: Readonly<Exchange>): Promise<void>;
  observe(ex: Readonly<Exchange>, outcome: Outcome): void;
  /** Resolves when every evaluation started so far has finished (tests, shutdown). */
  idle(): Promise<void>;
}

/**
 * Actor digests per verified principal. The token cache hands out one Principal object per token,
 * so the digest is made once per token rather than once per request; weak keys leave no residue.
 */
const actorDigests = new WeakMap<Principal, string>();

/** Window keys name actors by a digest: bounded length, no raw subject in Redis key names. */
function actorKey(ex: Readonly<Exchange>): string {
  const p = ex.principal!;
  let key = actorDigests.get(p);
  if (key === undefined) {
    key = hash('sha256', `${p.iss}\n${p.sub}`, 'base64url').slice(0, 22);
    actorDigests.set(p, key);
  }
  return key;
}

interface Hit {
  readonly rule: CompiledAnomalyRule;
  readonly count: number;
  readonly patients: readonly string[];
  /** Dedupe scope beyond (rule, actor). */
  readonly scope?: string;
  /** Kind-specific facts added to the record's details and the alert (counts and codes only). */
  readonly facts?: Readonly<Record<string, string | number>>;
}

export function createMonitor(o: MonitorOptions): Monitor {
  const newId = o.newId ?? randomUUID;
  const pending = new Set<Promise<void>>();
  let warnedNoLookup = false;
  const familyTests = new WeakMap<Principal, (patientId: string) => Promise<boolean>>();

  async function fire(ex: Readonly<Exchange>, outcome: Pick<Outcome, 'status' | 'decision'>, hit: Hit): Promise<boolean> {
    const { rule } = hit;
    const t = ex.time.getTime();
    const actor = actorKey(ex);
    const key = `${rule.name}:${actor}${hit.scope ? `:${hit.scope}` : ''}`;
    if (!(await o.store.once(`fired:${key}`, t, rule.windowMs))) return false;
    if (rule.block) await o.store.mark(`block:${rule.name}:${actor}`, t, rule.windowMs);
    const p = ex.principal!;
    const alertId = newId();
    const facts = {
      anomaly: rule.name,
      anomalyKind: rule.kind,
      requestId: ex.id,
      count: hit.count,
      threshold: rule.threshold,
      windowMinutes: rule.windowMs / 60_000,
      block: rule.block,
      alertId,
      ...hit.facts,
    };
    const record: AuditRecord = {
      id: newId(),
      time: ex.time.toISOString(),
      kind: 'anomaly',
      actor: { iss: p.iss, sub: p.sub, clientId: p.clientId, jti: p.jti, roles: p.roles },
      purpose: ex.purpose,
      role: ex.role,
      client: { address: ex.clientAddress, userAgent: ex.userAgent },
      request: { method: ex.method, path: ex.url, interaction: ex.request?.interaction, resourceType: ex.request?.resourceType },
      decision: outcome.decision,
      rule: `${rule.path} (${rule.name}): ${rule.kind}`,
      disclosed: { resources: [], patients: [...hit.patients], elementsRemoved: 0, resourcesWithheld: 0 },
      status: outcome.status,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion: ex.policyVersion,
      details: facts,
    };
    try {
      await o.audit.write(record);
    } catch (e) {
      // The alert still goes out: the privacy office must hear of it even while the audit trail is down.
      o.logger.error({ reqId: ex.id, err: e, anomaly: rule.name }, 'audit write for an anomaly failed');
    }
    await o.alerter.raise({
      type: 'anomaly',
      alertId,
      time: ex.time.toISOString(),
      actor: { iss: p.iss, sub: p.sub, clientId: p.clientId, roles: [...p.roles] },
      patient: hit.patients.length === 1 ? hit.patients[0] : '',
      anomaly: {
        rule: rule.name,
        kind: rule.kind,
        path: rule.path,
        requestId: ex.id,
        count: hit.count,
        threshold: rule.threshold,
        windowMinutes: facts.windowMinutes,
        block: rule.block,
        patients: hit.patients.length,
        ...hit.facts,
      },
    });
    return true;
  }

  async function evaluate(ex: Readonly<Exchange>, outcome: Outcome): Promise<void> {
    const rules = o.rules(ex.policyVersion);
    if (rules.length === 0) return;
    const p = ex.principal!;
    const t = ex.time.getTime();
    const actor = actorKey(ex);
    const patients = ex.stats ? [...ex.stats.patients] : [];
    const allowed = outcome.decision === 'allow';
    for (const rule of rules) {
      if (!ruleApplies(rule, ex.role, p.roles)) continue;
      switch (rule.kind) {
        case 'bulk-access': {
          if (!allowed || patients.length === 0) break;
          const n = await o.store.add(`bulk:${rule.name}:${actor}`, patients, t, rule.windowMs);
          if (n > rule.threshold) await fire(ex, outcome, { rule, count: n, patients });
          break;
        }
        case 'denial-burst': {
          if (outcome.decision !== 'deny') break;
          const n = await o.store.add(`deny:${rule.name}:${actor}`, [ex.id], t, rule.windowMs);
          if (n >= rule.threshold) await fire(ex, outcome, { rule, count: n, patients: [] });
          break;
        }
        case 'off-hours': {
          // A blocking rule was judged (and fired) by the gate, before forwarding.
          if (!allowed || rule.block || !isOffHours(rule, ex.time)) break;
          await fire(ex, outcome, { rule, count: 1, patients });
          break;
        }
        case 'broad-search': {
          if (!allowed || !ex.request || !isUntargetedSearch(ex.request)) break;
          if (patients.length >= rule.threshold) await fire(ex, outcome, { rule, count: patients.length, patients });
          break;
        }
        case 'no-relationship': {
          // Any decision: a refusal for lack of a relationship is the commonest case.
          const without = withoutRelationship(ex.relationship, ex.breakGlass !== undefined, outcome.rule);
          if (without === undefined) break;
          // A resource withheld as an unrelated patient's names no patient: counted by what was asked for.
          const members = without.patients.length > 0 ? without.patients : [`${ex.request?.resourceType ?? ''}/${ex.request?.id ?? ex.id}`];
          const n = await o.store.add(`norel:${rule.name}:${actor}`, members, t, rule.windowMs);
          if (n < rule.threshold) break;
          // Patient ids only as far as this response released them, as the other rules name them:
          // a refused request names none.
          const unrelated = new Set(without.patients);
          await fire(ex, outcome, { rule, count: n, patients: patients.filter((x) => unrelated.has(x)), facts: { access: without.access } });
          break;
        }
        case 'family-name': {
          if (!allowed || !p.familyName || patients.length === 0) break;
          if (!o.families) {
            if (!warnedNoLookup) o.logger.warn({ anomaly: rule.name }, 'family-name anomaly rule has no patient lookup: it cannot fire');
            warnedNoLookup = true;
            break;
          }
          const families = o.families;
          const family = p.familyName;
          // One normalized digest of the caller's name for all the patients of this response.
          // Kept per verified principal (weakly): a digest of the caller's name, never the name.
          let test = familyTests.get(p);
          try {
            if (test === undefined) {
              test = families.matcher ? families.matcher(family) : (id) => families.matches(id, family);
              familyTests.set(p, test);
            }
          } catch (e) {
            o.logger.warn({ reqId: ex.id, err: e, anomaly: rule.name }, 'family-name lookup failed');
            break;
          }
          for (const patient of patients) {
            let same: boolean;
            try {
              same = await test(patient);
            } catch (e) {
              o.logger.warn({ reqId: ex.id, err: e, anomaly: rule.name }, 'family-name lookup failed');
              continue;
            }
            if (same) await fire(ex, outcome, { rule, count: 1, patients: [patient], scope: patient });
          }
          break;
        }
      }
    }
  }

  return {
    async gate(ex) {
      if (!ex.principal || (ex.kind !== undefined && ex.kind !== 'fhir')) return;
      const rules = o.rules(ex.policyVersion);
      for (const rule of rules) {
        if (!rule.block || !ruleApplies(rule, ex.role, ex.principal.roles)) continue;
        if (rule.kind === 'off-hours') {
          if (!isOffHours(rule, ex.time)) continue;
          await fire(ex, { status: ERRORS[BLOCK_CODE].status, decision: 'deny' }, { rule, count: 1, patients: [] });
          throw new GatewayError(BLOCK_CODE, `anomaly rule ${rule.name}`);
        }
        if (await o.store.isSet(`block:${rule.name}:${actorKey(ex)}`, ex.time.getTime())) {
          throw new GatewayError(BLOCK_CODE, `anomaly rule ${rule.name}`);
        }
      }
    },
    observe(ex, outcome) {
      if (!ex.principal || (ex.kind !== undefined && ex.kind !== 'fhir')) return;
      const run = evaluate(ex, outcome).catch((e: unknown) => {
        o.logger.error({ reqId: ex.id, err: e }, 'anomaly evaluation failed');
      });
      pending.add(run);
      void run.finally(() => pending.delete(run));
    },
    async idle() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
  };
}
