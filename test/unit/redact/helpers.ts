import { upstreamExclusions } from '../../../src/policy/labels.js';
// Test helpers: contexts and ResourcePlans built from rules, without the policy compiler.
import type { Coding } from 'fhir/r4.js';
import type { ResourcePlan } from '../../../src/policy/plan.js';
import { compileElementPlan, type ElementRule } from '../../../src/redact/compile.js';
import type { RedactContext, ResponseContext } from '../../../src/redact/types.js';

export const NOW = new Date('2025-06-15T12:00:00Z');
export const KEY = new TextEncoder().encode('test-pseudonym-key');
export const UPSTREAM = 'http://upstream.internal:8080/fhir';
export const PUBLIC = 'https://gateway.example.org/fhir';

export function redactCtx(over: Partial<RedactContext> = {}): RedactContext {
  return { restrictedZip3: new Set(['036', '059', '102']), pseudonymKey: KEY, now: () => NOW, ...over };
}

/** Labels as `code` or `system|code`, matched like the policy compiler does. */
export function labelSet(labels: readonly string[]) {
  return {
    labels,
    upstream: upstreamExclusions(labels),
    match(security: readonly Coding[] | undefined): string | undefined {
      for (const c of security ?? []) {
        for (const l of labels) {
          const bar = l.indexOf('|');
          const ok = bar >= 0 ? `${c.system}|${c.code}` === l : c.code === l;
          if (ok) return `${c.system}|${c.code}`;
        }
      }
      return undefined;
    },
  };
}

export function resourcePlan(type: string, rule: ElementRule = {}, withhold: readonly string[] = []): ResourcePlan {
  return {
    resourceType: type,
    rule: `test.${type}`,
    interactions: new Set(['read', 'search']),
    operations: new Set(),
    searchParams: new Set(),
    withhold: labelSet(withhold),
    elements: compileElementPlan(type, rule, `test.${type}`),
  };
}

export function responseCtx(
  plans: Record<string, ResourcePlan>,
  over: Partial<Omit<ResponseContext, 'planFor' | 'rewriteUrl'>> = {},
): ResponseContext {
  return {
    ...redactCtx(),
    withheldMode: 'hide',
    patientCompartment: undefined,
    ...over,
    planFor: (t: string) => (Object.hasOwn(plans, t) ? plans[t] : undefined),
    rewriteUrl: (u: string) =>
      u === UPSTREAM || u.startsWith(`${UPSTREAM}/`) || u.startsWith(`${UPSTREAM}?`) ? PUBLIC + u.slice(UPSTREAM.length) : undefined,
  };
}

export function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

export const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
