/**
 * What a request gets under one policy versus another (pure): allow or deny, and for each resource
 * type the request can release, which elements survive and how. Used by `policy diff` (replaying
 * recorded requests) and by shadow mode (live traffic).
 */
import type { Principal } from '../auth/principal.js';
import { decide } from '../policy/decide.js';
import type { CompiledPolicy } from '../policy/plan.js';
import type { ClassifiedRequest } from '../policy/request.js';
import type { ElementLine } from '../redact/types.js';

export interface Verdict {
  readonly allow: boolean;
  /** Error code when denied. */
  readonly code: string | undefined;
  readonly role: string | undefined;
  readonly rule: string;
  /** Per resource type asked about: element -> action (elements absent from the map are not released). */
  readonly elements: ReadonlyMap<string, ReadonlyMap<string, ElementLine['action']>>;
}

export interface VerdictInput {
  readonly principal: Principal;
  readonly purpose: string;
  readonly requestedRole?: string | undefined;
  readonly request: ClassifiedRequest;
  /** Resource types whose element plans matter (the request's type plus what it released). */
  readonly types: readonly string[];
}

export function verdict(policy: CompiledPolicy, input: VerdictInput): Verdict {
  let d: ReturnType<typeof decide>;
  try {
    if (!policy.purposes.has(input.purpose)) return { allow: false, code: 'purpose-unknown', role: undefined, rule: `purposes.${input.purpose}`, elements: new Map() };
    d = decide({ policy, principal: input.principal, purpose: input.purpose, requestedRole: input.requestedRole, request: input.request });
  } catch {
    return { allow: false, code: 'internal', role: undefined, rule: 'decide threw', elements: new Map() };
  }
  if (!d.allow) return { allow: false, code: d.code, role: undefined, rule: d.rule, elements: new Map() };
  const elements = new Map<string, Map<string, ElementLine['action']>>();
  for (const type of input.types) {
    const plan = d.plan.types.get(type);
    if (!plan) continue;
    const m = new Map<string, ElementLine['action']>();
    for (const line of plan.elements.describe()) {
      // A plain element that is removed is simply not released; a removal of matching items or of a
      // data type (`identifier[type=SS]`, `@ContactPoint`) is kept: it hides part of what is released.
      if (line.action !== 'remove' || isSelectorLine(line.element)) m.set(line.element, line.action);
    }
    elements.set(type, m);
  }
  return { allow: true, code: undefined, role: d.plan.role, rule: d.rule, elements };
}

export interface ElementChange {
  readonly element: string;
  /** `absent` = not released. */
  readonly from: ElementLine['action'] | 'absent';
  readonly to: ElementLine['action'] | 'absent';
}

export type Change =
  | { readonly kind: 'newly-allowed'; readonly was: string; readonly now: string }
  | { readonly kind: 'newly-denied'; readonly was: string; readonly now: string }
  | { readonly kind: 'elements'; readonly shown: readonly ElementChange[]; readonly hidden: readonly ElementChange[]; readonly changed: readonly ElementChange[] };

/** Differences from `current` to `candidate`; [] when the request fares the same. */
export function compareVerdicts(current: Verdict, candidate: Verdict): Change[] {
  if (current.allow && !candidate.allow) return [{ kind: 'newly-denied', was: current.rule, now: candidate.code ?? candidate.rule }];
  if (!current.allow && candidate.allow) return [{ kind: 'newly-allowed', was: current.code ?? current.rule, now: candidate.rule }];
  if (!current.allow) return [];
  const shown: ElementChange[] = [];
  const hidden: ElementChange[] = [];
  const changed: ElementChange[] = [];
  const types = new Set([...current.elements.keys(), ...candidate.elements.keys()]);
  for (const type of types) {
    const a = current.elements.get(type) ?? new Map();
    const b = candidate.elements.get(type) ?? new Map();
    for (const el of new Set([...a.keys(), ...b.keys()])) {
      const from = a.get(el) ?? 'absent';
      const to = b.get(el) ?? 'absent';
      if (from === to) continue;
      const c = { element: el, from, to };
      const selector = isSelectorLine(el);
      const visible = (x: string) => (selector ? x !== 'remove' : x !== 'absent');
      if (!visible(from) && visible(to)) shown.push(c);
      else if (visible(from) && !visible(to)) hidden.push(c);
      else changed.push(c);
    }
  }
  if (shown.length + hidden.length + changed.length === 0) return [];
  const by = (x: ElementChange, y: ElementChange) => x.element.localeCompare(y.element);
  return [{ kind: 'elements', shown: shown.sort(by), hidden: hidden.sort(by), changed: changed.sort(by) }];
}

/** `Patient.identifier[type=SS]`, `@ContactPoint`: lines about parts of elements, not whole elements. */
function isSelectorLine(element: string): boolean {
  return element.startsWith('@') || (element.includes('[') && !element.endsWith('[x]'));
}

/** Resource types named by `Type/id` references. */
export function typesOf(resources: readonly string[]): string[] {
  const s = new Set<string>();
  for (const r of resources) {
    const i = r.indexOf('/');
    if (i > 0) s.add(r.slice(0, i));
  }
  return [...s];
}
