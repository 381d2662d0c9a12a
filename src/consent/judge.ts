/**
 * A request's consent judge: what the response filter asks, for each resource it would release,
 * about the consents of the patients that resource names (src/consent/evaluate.ts), with those
 * consents brought into the request first (`load`, from the resolver's cache or the upstream).
 *
 * The judge holds every patient's consents it loaded for the rest of the request, so a search's
 * pages, its includes and a batch's entries are judged against one reading of each patient's
 * consents. A patient that was not loaded is judged unevaluable (withheld): nothing is released
 * unjudged.
 */
import type { ConsentEvidence } from '../audit/record.js';
import type { ConsentStats } from '../redact/types.js';
import { judgeResource } from './evaluate.js';
import type { ConsentResolver } from './resolver.js';
import type { CompiledConsent, ConsentAccess, ConsentJudge, ConsentVerdict, PatientConsents } from './types.js';

/** Evidence lists hold at most this many ids each (the record stays bounded). */
const MAX_EVIDENCE = 50;

export function createConsentJudge(resolver: ConsentResolver, policy: CompiledConsent, access: ConsentAccess, signal?: AbortSignal): ConsentJudge {
  const held = new Map<string, PatientConsents>();
  const merge = (found: ReadonlyMap<string, PatientConsents>) => {
    for (const [p, c] of found) held.set(p, c);
  };
  resolver.noteRequest?.(false);
  let refused = false;
  const refuse = (e: unknown): never => {
    if (!refused) resolver.noteRequest?.(true);
    refused = true;
    throw e;
  };
  return {
    notice: policy.part2.notice,
    load(patients: Iterable<string>): void | Promise<void> {
      let missing: Set<string> | undefined;
      for (const p of patients) {
        if (held.has(p)) continue;
        const cached = resolver.peek?.(p, policy);
        if (cached !== undefined) {
          held.set(p, cached);
          continue;
        }
        missing ??= new Set();
        missing.add(p);
      }
      if (missing === undefined) return;
      let found: ReturnType<ConsentResolver['lookup']>;
      try {
        found = resolver.lookup([...missing], policy, signal);
      } catch (e) {
        return refuse(e);
      }
      if (found instanceof Promise) return found.then(merge, refuse);
      merge(found);
    },
    judge(resource: Readonly<Record<string, unknown>>, patients: readonly string[]): ConsentVerdict {
      return judgeResource(resource, patients, (p) => held.get(p), access, policy);
    },
  };
}

/** Whether consent applies to a request with this purpose (exempt purposes: the patient's own access). */
export function consentApplies(policy: CompiledConsent | undefined, purpose: string): policy is CompiledConsent {
  return policy !== undefined && !policy.exemptPurposes.has(purpose);
}

/** The audit record's `consent` member from what the filters noted; undefined when consent did nothing. */
export function consentEvidence(s: ConsentStats | undefined): ConsentEvidence | undefined {
  if (s === undefined) return undefined;
  const none = s.withheld === 0 && s.part2 === 0 && s.restricted.size === 0 && s.permitted.size === 0 && s.overridden.size === 0 && s.unevaluable.size === 0;
  if (none) return undefined;
  const list = (set: ReadonlySet<string>) => (set.size === 0 ? undefined : [...set].sort().slice(0, MAX_EVIDENCE));
  return {
    overridden: list(s.overridden),
    part2: s.part2 === 0 ? undefined : s.part2,
    permitted: list(s.permitted),
    restricted: list(s.restricted),
    unevaluable: list(s.unevaluable),
    withheld: s.withheld,
  };
}

/** Adds `from` into `into` (a batch's nested search pages, each filtered on its own). */
export function mergeConsentStats(into: { consent?: ConsentStats }, from: ConsentStats | undefined): void {
  if (from === undefined) return;
  if (into.consent === undefined) into.consent = newConsentStats();
  const s = into.consent;
  s.withheld += from.withheld;
  s.part2 += from.part2;
  for (const x of from.restricted) s.restricted.add(x);
  for (const x of from.permitted) s.permitted.add(x);
  for (const x of from.overridden) s.overridden.add(x);
  for (const x of from.unevaluable) s.unevaluable.add(x);
}

export function newConsentStats(): ConsentStats {
  return { withheld: 0, part2: 0, restricted: new Set(), permitted: new Set(), overridden: new Set(), unevaluable: new Set() };
}
