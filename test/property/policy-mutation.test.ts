/**
 * Mutation test over the shipped config/policy.yaml. Every single-character typo (insert, delete,
 * substitute, swap of neighbours) in a security label, a purpose code, a resource type or an
 * element name either fails the validation `check-config` runs (readPolicySource, the path
 * readPolicy takes after reading the file), or compiles to a policy that provably grants no more:
 * for every role x purpose x resource type the mutant's plan is within the original's (no new
 * type, interaction, operation, search parameter or released element, no withheld label dropped,
 * no de-identification or compartment lost). A typo never widens access.
 *
 * Every label, purpose and resource type mutant runs; element-name mutants are sampled (fixed
 * seed) when running all of them would take longer than the budget below.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { isMap, isScalar, isSeq, type Node, parseDocument, type Scalar } from 'yaml';
import { describe, expect, it } from 'vitest';
import { elementCompiler, readPolicySource } from '../../src/config/policy-file.js';
import type { ElementCompiler } from '../../src/policy/compile.js';
import type { AccessPlan, CompiledPolicy, ResourcePlan } from '../../src/policy/plan.js';
import type { ElementPlan } from '../../src/redact/types.js';

const SHIPPED = readFileSync('config/policy.yaml', 'utf8');
// Keys a finger can hit inside a code or a name; a separator typed into a flow list splits the token.
const ALPHABET = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,'];

type Kind = 'label' | 'purpose' | 'type' | 'element';

interface Token {
  readonly kind: Kind;
  readonly where: string;
  /** Source offsets of the mutable characters (inside quotes; an element's names, not a filter's value). */
  readonly start: number;
  readonly end: number;
}

/** The label, purpose, type and element-name tokens of the shipped policy, with their source ranges. */
function tokens(text: string): Token[] {
  const doc = parseDocument(text);
  const out: Token[] = [];
  const span = (node: Node | null | undefined): [number, number] | undefined => {
    if (!isScalar(node) || node.range === undefined || node.range === null) return undefined;
    const [s, e] = node.range;
    const quoted = (node as Scalar).type === 'QUOTE_SINGLE' || (node as Scalar).type === 'QUOTE_DOUBLE';
    return quoted ? [s + 1, e - 1] : [s, e];
  };
  const add = (kind: Kind, where: string, node: Node | null | undefined) => {
    const r = span(node);
    if (r !== undefined) out.push({ kind, where, start: r[0], end: r[1] });
  };
  const get = (node: unknown, key: string): Node | undefined => {
    if (!isMap(node)) return undefined;
    return node.items.find((p) => isScalar(p.key) && p.key.value === key)?.value as Node | undefined;
  };
  const items = (node: unknown): Node[] => (isSeq(node) ? (node.items as Node[]) : []);
  const pairs = (node: unknown) => (isMap(node) ? node.items : []);
  /** A selector's element-name parts: everything outside a filter's `=value]` (`identifier[type`, and what follows). */
  const addElement = (where: string, node: Node | null | undefined) => {
    const r = span(node);
    if (r === undefined) return;
    const text0 = text.slice(r[0], r[1]);
    if (text0 === '*') return;
    let from = 0;
    // A filter's value (`[type=MR]`, `[system=URI]`) is data, not a name: an insertion at either
    // edge of a name part must not land inside it.
    for (const m of text0.matchAll(/=[^\]]*\]/g)) {
      if (m.index! > from) out.push({ kind: 'element', where, start: r[0] + from, end: r[0] + m.index! });
      from = m.index! + m[0].length;
    }
    if (from < text0.length) out.push({ kind: 'element', where, start: r[0] + from, end: r[1] });
  };

  const root = doc.contents;
  for (const p of pairs(get(root, 'purposes'))) {
    add('purpose', `purposes.${String((p.key as Scalar).value)}`, p.key as Node);
    add('purpose', `purposes.${String((p.key as Scalar).value)}.parent`, get(p.value, 'parent'));
  }
  for (const p of pairs(get(root, 'roles'))) {
    for (const g of pairs(get(p.value, 'purposes'))) add('purpose', `roles.${String((p.key as Scalar).value)}.purposes`, g.key as Node);
  }
  for (const ds of pairs(get(root, 'dataSets'))) {
    const base = `dataSets.${String((ds.key as Scalar).value)}`;
    items(get(ds.value, 'withhold')).forEach((n, i) => {
      add('label', `${base}.withhold[${i}]`, n);
    });
    items(get(ds.value, 'rules')).forEach((rule, r) => {
      const where = `${base}.rules[${r}]`;
      items(get(rule, 'withhold')).forEach((n, i) => {
        add('label', `${where}.withhold[${i}]`, n);
      });
      items(get(rule, 'types')).forEach((n, i) => {
        add('type', `${where}.types[${i}]`, n);
      });
      items(get(rule, 'elements')).forEach((n, i) => {
        addElement(`${where}.elements[${i}]`, n);
      });
      items(get(rule, 'remove')).forEach((n, i) => {
        addElement(`${where}.remove[${i}]`, n);
      });
      items(get(rule, 'transforms')).forEach((t, i) => {
        addElement(`${where}.transforms[${i}].select`, get(t, 'select'));
      });
    });
  }
  return out;
}

/** Every distinct single-character typo of the token's characters, as whole policy texts. */
function mutants(text: string, t: Token): string[] {
  const word = text.slice(t.start, t.end);
  const out = new Set<string>();
  for (let i = 0; i <= word.length; i++) {
    for (const c of ALPHABET) out.add(word.slice(0, i) + c + word.slice(i));
    if (i < word.length) {
      out.add(word.slice(0, i) + word.slice(i + 1));
      for (const c of ALPHABET) out.add(word.slice(0, i) + c + word.slice(i + 1));
    }
    if (i + 1 < word.length) out.add(word.slice(0, i) + word[i + 1] + word[i] + word.slice(i + 2));
  }
  out.delete(word);
  return [...out].map((w) => text.slice(0, t.start) + w + text.slice(t.end));
}

const RANK: Readonly<Record<string, number>> = { remove: 0, keep: 2 };
/** remove < any transform < keep; two different transforms are not comparable. */
function noWider(mutant: string | undefined, original: string | undefined): boolean {
  const m = mutant ?? 'remove';
  const o = original ?? 'remove';
  if (m === o || m === 'remove' || o === 'keep') return true;
  return (RANK[m] ?? 1) < (RANK[o] ?? 1);
}

/** Why the mutant's plan for one type grants more than the original's, or undefined. */
function typeWidening(m: ResourcePlan, o: ResourcePlan | undefined): string | undefined {
  if (o === undefined) return 'type granted';
  for (const i of m.interactions) if (!o.interactions.has(i)) return `interaction ${i}`;
  for (const op of m.operations) if (!o.operations.has(op)) return `operation ${op}`;
  for (const p of m.searchParams) if (!o.searchParams.has(p)) return `search parameter ${p}`;
  const mLabels = new Set(m.withhold.labels);
  for (const l of o.withhold.labels) if (!mLabels.has(l)) return `label ${l} no longer withheld`;
  if (o.deidentify !== undefined && m.deidentify !== o.deidentify) return 'de-identification';
  if (o.elements.keepsAll === false && m.elements.keepsAll) return 'all elements kept';
  const mLines = new Map(m.elements.describe().map((l) => [l.element, l.action]));
  const oLines = new Map(o.elements.describe().map((l) => [l.element, l.action]));
  for (const el of new Set([...mLines.keys(), ...oLines.keys()])) {
    if (!noWider(mLines.get(el), oLines.get(el))) return `element ${el}: ${oLines.get(el) ?? 'not released'} -> ${mLines.get(el) ?? 'not listed'}`;
  }
  return undefined;
}

function planWidening(m: AccessPlan, o: AccessPlan | undefined): string | undefined {
  if (o === undefined) return 'plan granted';
  if (o.compartment !== undefined && m.compartment !== o.compartment) return 'compartment lost';
  for (const [type, mt] of m.types) {
    const why = typeWidening(mt, o.types.get(type));
    if (why !== undefined) return `${type}: ${why}`;
  }
  return undefined;
}

/** Every way `mutant` grants more than `original` (role x purpose x type), empty when it does not. */
function widening(mutant: CompiledPolicy, original: CompiledPolicy): string[] {
  const out: string[] = [];
  for (const [name, mr] of mutant.roles) {
    const or = original.roles.get(name);
    if (or === undefined) {
      if (mr.plans.size > 0 || mr.capabilities.size > 0 || mr.breakGlass) out.push(`role ${name} granted`);
      continue;
    }
    if (mr.breakGlass && !or.breakGlass) out.push(`${name}: break-glass`);
    for (const c of mr.capabilities) if (!or.capabilities.has(c)) out.push(`${name}: capability ${c}`);
    for (const [purpose, plan] of mr.plans) {
      const why = planWidening(plan, or.plans.get(purpose));
      if (why !== undefined) out.push(`${name} / ${purpose} / ${why}`);
    }
  }
  if (mutant.breakGlass !== undefined) {
    const why = planWidening(mutant.breakGlass.plan, original.breakGlass?.plan);
    if (why !== undefined) out.push(`break-glass / ${why}`);
  }
  return out;
}

/**
 * The CLI's element compiler, memoized: a mutant repeats all but one rule of the original, and the
 * element compiler is a pure function of (type, rule, where). Errors are memoized too (rethrown).
 */
const memo = new Map<string, { plan?: ElementPlan; error?: unknown }>();
const memoCompiler: ElementCompiler = {
  compileElementPlan(type, rule, where) {
    const key = JSON.stringify([type, rule.elements, rule.remove, rule.transforms, where]);
    let hit = memo.get(key);
    if (hit === undefined) {
      try {
        hit = { plan: elementCompiler.compileElementPlan(type, rule, where) };
      } catch (error) {
        hit = { error };
      }
      memo.set(key, hit);
    }
    if (hit.plan === undefined) throw hit.error;
    return hit.plan;
  },
  derivedSearchParams(type, plan) {
    let hit = derived.get(plan);
    if (hit === undefined) {
      hit = elementCompiler.derivedSearchParams!(type, plan);
      derived.set(plan, hit);
    }
    return hit;
  },
};
const derived = new WeakMap<ElementPlan, readonly string[]>();

function compileText(text: string): { policy: CompiledPolicy | undefined; problems: readonly string[] } {
  const r = readPolicySource('config/policy.yaml', Buffer.from(text), { elementCompiler: memoCompiler });
  return { policy: r.loaded?.policy, problems: r.problems };
}

const BUDGET_MS = 60_000;
const SAMPLE = 2_000;

describe('a single-character typo in the shipped policy fails check-config or narrows access', () => {
  const original = compileText(SHIPPED);
  const all = tokens(SHIPPED);

  it('finds the tokens it mutates, and the shipped policy itself is valid', () => {
    expect(original.problems).toEqual([]);
    const count = (k: Kind) => all.filter((t) => t.kind === k).length;
    // Lower bounds from the file as shipped: a broken token walk would mutate nothing and pass.
    expect(count('label')).toBeGreaterThanOrEqual(19);
    expect(count('purpose')).toBeGreaterThanOrEqual(60);
    expect(count('type')).toBeGreaterThanOrEqual(60);
    expect(count('element')).toBeGreaterThanOrEqual(40);
    expect(SHIPPED.slice(all[0]!.start, all[0]!.end)).toBe('TREAT');
  });

  it('the comparison sees a widening when there is one (the oracle can fail)', () => {
    const wider = compileText(SHIPPED.replace('withhold: [PSY, PSYTHPN, SUD, HIV, ETH, SDV, R, V]', 'withhold: [PSY, SUD, HIV, ETH, SDV, R, V]'));
    expect(widening(wider.policy!, original.policy!)).toContain(`billing / HPAYMT / Patient: label http://terminology.hl7.org/CodeSystem/v3-ActCode|PSYTHPN no longer withheld`);
    const keepsMore = compileText(SHIPPED.replace('remove: [processNote, ', 'remove: ['));
    expect(widening(keepsMore.policy!, original.policy!).some((w) => w.includes('ExplanationOfBenefit.processNote'))).toBe(true);
    expect(widening(original.policy!, original.policy!)).toEqual([]);
  });

  it('no typo widens access', () => {
    const started = Date.now();
    const widened: string[] = [];
    let rejected = 0;
    let narrowed = 0;
    const run = (t: Token, text: string) => {
      const m = compileText(text);
      if (m.policy === undefined) {
        rejected++;
        return;
      }
      const why = widening(m.policy, original.policy!);
      if (why.length === 0) narrowed++;
      else {
        const typo = text.slice(t.start, t.end + (text.length - SHIPPED.length));
        widened.push(`${t.where} '${SHIPPED.slice(t.start, t.end)}' -> '${typo}': ${why.slice(0, 3).join('; ')}`);
      }
    };
    // Labels: every mutant. Purposes, types and element names: every mutant when that fits the
    // budget (or PHI_MUTATION_ALL=1), else a fixed-seed sample of SAMPLE.
    for (const t of all.filter((x) => x.kind === 'label')) for (const text of mutants(SHIPPED, t)) run(t, text);
    const rest = all.filter((x) => x.kind !== 'label').flatMap((t) => mutants(SHIPPED, t).map((text) => ({ t, text })));
    const perMutant = (Date.now() - started) / Math.max(1, rejected + narrowed + widened.length);
    const everything = process.env.PHI_MUTATION_ALL === '1' || perMutant * rest.length < BUDGET_MS;
    const chosen = everything ? rest : fc.sample(fc.nat({ max: rest.length - 1 }), { numRuns: SAMPLE, seed: 16 }).map((i) => rest[i]!);
    for (const { t, text } of chosen) run(t, text);
    // Not printed by default: the counts show what the run covered when it is run by hand.
    if (process.env.PHI_MUTATION_REPORT === '1') {
      process.stderr.write(`policy mutants: ${rejected} refused, ${narrowed} narrowing, ${widened.length} widening; ${chosen.length} of ${rest.length} others; ${Date.now() - started} ms\n${widened.join('\n')}\n`);
    }
    expect(widened, widened.slice(0, 40).join('\n')).toEqual([]);
    // Most typos are refused outright; the rest provably narrow.
    expect(rejected).toBeGreaterThan(narrowed);
  }, 600_000);
});
