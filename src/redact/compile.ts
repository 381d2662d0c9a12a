/**
 * Compiles a rule's elements / remove / transforms into an ElementPlan once, at policy load.
 *
 * The plan is a trie of Branches rooted at the resource (path selectors) plus per-data-type Slots
 * (type selectors, applied wherever an element of that type occurs). Everything the hot path
 * (src/redact/apply.ts) consults is a null-prototype table or a precomputed flag, so applying a plan
 * is map lookups only: no parsing, regexes or string splitting per node.
 */
import type { TransformName } from '../policy/model.js';
import { type ElementInfo, isDataType, isPrimitiveType, isResourceType, searchParam, searchParamCodes, typeElements } from '../fhir/tables.js';
import { type ParsedSelector, parseSelector, type SelectorFilter, SelectorError, type SelectorSegment } from './selector.js';
import type { ElementLine, ElementPlan } from './types.js';

export { SelectorError } from './selector.js';

export interface ElementRule {
  readonly elements?: readonly string[];
  readonly remove?: readonly string[];
  readonly transforms?: ReadonlyArray<{ readonly select: string; readonly apply: TransformName }>;
}

/** keep: 0 none, 1 only the children listed, 2 everything (subject to remove / transforms). */
export type Keep = 0 | 1 | 2;

export interface Tx {
  /** Position in the rule's transforms list: transforms run in the order listed. */
  readonly index: number;
  readonly apply: TransformName;
  readonly selector: string;
}

export interface Branch {
  readonly keep: Keep;
  /** Selector that removes this element, if any. */
  readonly remove: string | undefined;
  readonly transforms: readonly Tx[];
  /** Element name -> slot; null-prototype; undefined when no selector reaches below. */
  readonly children: Readonly<Record<string, Slot>> | undefined;
  /** Selector that keeps this element (for explain). */
  readonly keptBy: string | undefined;
}

export interface FilteredBranch {
  readonly filter: CompiledFilter;
  readonly branch: Branch;
}

export interface Slot {
  /** What applies to every item (always present once normalized). */
  readonly plain: Branch;
  /** What applies additionally to items matching a filter. */
  readonly filtered: readonly FilteredBranch[] | undefined;
  /** Lazily merged branches per matching-filter bitmask (hot path cache). */
  readonly combos: Map<number, Branch>;
  /** Lazily merged slots with a type slot (hot path cache). */
  readonly withType: Map<Slot, Slot>;
}

export interface CompiledFilter {
  readonly key: string;
  readonly value: string;
  /** For `system|code` values on Coding / CodeableConcept children. */
  readonly system: string | undefined;
  readonly code: string;
}

const EMPTY_TX: readonly Tx[] = Object.freeze([]);

function branch(keep: Keep, extra?: Partial<Omit<Branch, 'keep'>>): Branch {
  return {
    keep,
    remove: extra?.remove,
    transforms: extra?.transforms ?? EMPTY_TX,
    children: extra?.children,
    keptBy: extra?.keptBy,
  };
}

function slot(plain: Branch, filtered?: readonly FilteredBranch[]): Slot {
  return { plain, filtered: filtered && filtered.length > 0 ? filtered : undefined, combos: new Map(), withType: new Map() };
}

function mergeTx(a: readonly Tx[], b: readonly Tx[]): readonly Tx[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const out = [...a];
  for (const t of b) if (!out.some((x) => x.index === t.index && x.selector === t.selector)) out.push(t);
  return out.sort((x, y) => x.index - y.index);
}

/** Union of what two branches say about the same element: most-permissive keep, any removal, all transforms. */
export function mergeBranch(a: Branch, b: Branch): Branch {
  if (a === b) return a;
  let children: Record<string, Slot> | undefined;
  if (a.children || b.children) {
    children = Object.create(null) as Record<string, Slot>;
    for (const src of [a.children, b.children]) {
      if (!src) continue;
      for (const k of Object.keys(src)) children[k] = children[k] ? mergeSlot(children[k], src[k]) : src[k];
    }
  }
  return {
    keep: Math.max(a.keep, b.keep) as Keep,
    remove: a.remove ?? b.remove,
    transforms: mergeTx(a.transforms, b.transforms),
    children,
    keptBy: a.keptBy ?? b.keptBy,
  };
}

export function mergeSlot(a: Slot, b: Slot): Slot {
  if (a === b) return a;
  const filtered = [...(a.filtered ?? []), ...(b.filtered ?? [])];
  return slot(mergeBranch(a.plain, b.plain), filtered);
}

/** Effective branch for one item given which filters it matched (bitmask over slot.filtered). */
export function comboBranch(s: Slot, mask: number): Branch {
  if (mask === 0) return s.plain;
  let b = s.combos.get(mask);
  if (b === undefined) {
    b = s.plain;
    const f = s.filtered!;
    for (let i = 0; i < f.length; i++) if (mask & (1 << i)) b = mergeBranch(b, f[i].branch);
    s.combos.set(mask, b);
  }
  return b;
}

/** A path slot and a type slot on the same element, merged once and cached. */
export function slotWithType(pathSlot: Slot, typeSlot: Slot): Slot {
  let m = pathSlot.withType.get(typeSlot);
  if (m === undefined) {
    m = mergeSlot(pathSlot, typeSlot);
    pathSlot.withType.set(typeSlot, m);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Mutable builder trie (compile time only)

interface BNode {
  keep: Keep;
  keptBy: string | undefined;
  remove: string | undefined;
  transforms: Tx[];
  children: Map<string, BSlot>;
}
interface BSlot {
  plain: BNode | undefined;
  filtered: Array<{ filter: CompiledFilter; node: BNode }>;
}

function bnode(): BNode {
  return { keep: 0, keptBy: undefined, remove: undefined, transforms: [], children: new Map() };
}

interface Resolved {
  /** Concrete element names at this step (a choice expands to several). */
  readonly names: readonly string[];
  readonly infos: readonly ElementInfo[];
}

const TRANSFORM_TYPES: Readonly<Record<TransformName, readonly string[] | undefined>> = {
  remove: undefined,
  mask: undefined,
  year: ['date', 'dateTime', 'instant', 'Period'],
  zip3: ['string', 'Address'],
  age90: ['date', 'dateTime', 'Age', 'Quantity'],
  pseudonym: ['string', 'id', 'Reference'],
};

const FILTERABLE_CHILD = new Set(['CodeableConcept', 'Coding']);

class PlanCompiler {
  readonly root: BNode = bnode();
  readonly typeSlots = new Map<string, BSlot>();
  readonly lines: ElementLine[] = [];

  constructor(
    readonly resourceType: string,
    readonly where: string,
  ) {}

  private resolveStep(owner: string, seg: SelectorSegment, raw: string, where: string): Resolved {
    const els = typeElements(owner);
    const info = els?.[seg.name];
    if (!els || !info) throw new SelectorError(where, raw, `${owner} has no element "${seg.name}"`);
    if (seg.name.endsWith('[x]')) {
      const names: string[] = [];
      const infos: ElementInfo[] = [];
      for (const k of Object.keys(els)) {
        if (els[k].choice === seg.name) {
          names.push(k);
          infos.push(els[k]);
        }
      }
      return { names, infos };
    }
    return { names: [seg.name], infos: [info] };
  }

  private compileFilter(f: SelectorFilter, info: ElementInfo, raw: string, where: string): CompiledFilter {
    if (info.types.length !== 1 || isPrimitiveType(info.types[0])) {
      throw new SelectorError(where, raw, 'a filter applies to elements of a complex type');
    }
    const child = typeElements(info.types[0])?.[f.key];
    if (child?.types.length !== 1) {
      throw new SelectorError(where, raw, `${info.types[0]} has no filterable element "${f.key}"`);
    }
    const ct = child.types[0];
    if (!isPrimitiveType(ct) && !FILTERABLE_CHILD.has(ct)) {
      throw new SelectorError(where, raw, `cannot filter on "${f.key}" of type ${ct}`);
    }
    const bar = f.value.lastIndexOf('|');
    const system = FILTERABLE_CHILD.has(ct) && bar > 0 ? f.value.slice(0, bar) : undefined;
    return { key: f.key, value: f.value, system, code: system !== undefined ? f.value.slice(bar + 1) : f.value };
  }

  /** Walks `segments` from `start`, creating builder nodes; returns the final nodes and their types. */
  private walk(
    start: BNode,
    ownerType: string,
    segments: readonly SelectorSegment[],
    raw: string,
    where: string,
  ): Array<{ node: BNode; types: readonly string[] }> {
    let frontier: Array<{ node: BNode; owner: string; types: readonly string[] }> = [{ node: start, owner: ownerType, types: [ownerType] }];
    for (let s = 0; s < segments.length; s++) {
      const seg = segments[s];
      const next: typeof frontier = [];
      for (const f of frontier) {
        if (f.owner === '') throw new SelectorError(where, raw, 'cannot select inside a choice or primitive element');
        const res = this.resolveStep(f.owner, seg, raw, where);
        for (let n = 0; n < res.names.length; n++) {
          const info = res.infos[n];
          let bs = f.node.children.get(res.names[n]);
          if (!bs) {
            bs = { plain: undefined, filtered: [] };
            f.node.children.set(res.names[n], bs);
          }
          let node: BNode;
          if (seg.filter) {
            const cf = this.compileFilter(seg.filter, info, raw, where);
            const existing = bs.filtered.find((x) => x.filter.key === cf.key && x.filter.value === cf.value);
            if (existing) node = existing.node;
            else {
              node = bnode();
              bs.filtered.push({ filter: cf, node });
            }
          } else {
            bs.plain = bs.plain ?? bnode();
            node = bs.plain;
          }
          const single = info.types.length === 1 && !isPrimitiveType(info.types[0]) ? info.types[0] : '';
          next.push({ node, owner: single, types: info.types });
        }
      }
      frontier = next;
    }
    return frontier.map((f) => ({ node: f.node, types: f.types }));
  }

  private target(raw: string, where: string, allowAll: boolean): Array<{ node: BNode; types: readonly string[] }> {
    const sel: ParsedSelector = parseSelector(raw, where);
    if (sel.kind === 'all') {
      if (!allowAll) throw new SelectorError(where, raw, '`*` is only valid in elements');
      return [{ node: this.root, types: [this.resourceType] }];
    }
    if (sel.kind === 'path') return this.walk(this.root, this.resourceType, sel.segments, raw, where);
    if (!isDataType(sel.type)) throw new SelectorError(where, raw, `"${sel.type}" is not an R4 data type`);
    let ts = this.typeSlots.get(sel.type);
    if (!ts) {
      ts = { plain: bnode(), filtered: [] };
      this.typeSlots.set(sel.type, ts);
    }
    if (sel.segments.length > 0 && isPrimitiveType(sel.type)) {
      throw new SelectorError(where, raw, `${sel.type} is a primitive type and has no elements`);
    }
    return this.walk(ts.plain!, sel.type, sel.segments, raw, where);
  }

  addKeep(raw: string, where: string): void {
    if (raw.startsWith('@')) throw new SelectorError(where, raw, 'type selectors cannot be used in elements');
    for (const t of this.target(raw, where, true)) {
      t.node.keep = 2;
      t.node.keptBy = t.node.keptBy ?? raw;
    }
  }

  addRemove(raw: string, where: string): void {
    for (const t of this.target(raw, where, false)) t.node.remove = t.node.remove ?? raw;
  }

  addTransform(raw: string, apply: TransformName, index: number, where: string): void {
    const targets = this.target(raw, where, false);
    const supported = TRANSFORM_TYPES[apply];
    if (supported === undefined && !(apply in TRANSFORM_TYPES)) throw new SelectorError(where, raw, `unknown transform "${apply}"`);
    if (supported && !targets.some((t) => t.types.some((ty) => supported.includes(ty)))) {
      throw new SelectorError(where, raw, `transform "${apply}" does not apply to ${targets[0]?.types.join('|')}`);
    }
    for (const t of targets) t.node.transforms.push({ index, apply, selector: raw });
  }

  /** Freezes the builder trie into Branch/Slot objects, propagating keep-all downwards. */
  freezeNode(n: BNode, inheritedKeep: Keep): Branch {
    const keep: Keep = inheritedKeep === 2 ? 2 : n.keep === 2 ? 2 : n.children.size > 0 && n.keep === 0 && hasKeep(n) ? 1 : n.keep;
    let children: Record<string, Slot> | undefined;
    if (n.children.size > 0) {
      children = Object.create(null) as Record<string, Slot>;
      for (const [name, bs] of n.children) {
        const plain = bs.plain ? this.freezeNode(bs.plain, keep) : branch(keep === 2 ? 2 : 0);
        const filtered = bs.filtered.map((f) => ({ filter: f.filter, branch: this.freezeNode(f.node, keep) }));
        children[name] = slot(plain, filtered);
      }
    }
    return branch(keep, {
      remove: n.remove,
      transforms: n.transforms.length > 0 ? [...n.transforms].sort((a, b) => a.index - b.index) : EMPTY_TX,
      children,
      keptBy: n.keptBy,
    });
  }
}

/** Does any descendant ask to be kept (makes an ancestor partially kept)? */
function hasKeep(n: BNode): boolean {
  for (const bs of n.children.values()) {
    if (bs.plain && (bs.plain.keep > 0 || hasKeep(bs.plain))) return true;
    for (const f of bs.filtered) if (f.node.keep > 0 || hasKeep(f.node)) return true;
  }
  return false;
}

/** Opaque to callers; src/redact/apply.ts reads the internals. */
export class CompiledElementPlan implements ElementPlan {
  readonly keepsAll: boolean;
  readonly resourceType: string;
  readonly root: Branch;
  /** Data type name -> slot applied to every element of that type. Null-prototype. */
  readonly typeSlots: Readonly<Record<string, Slot>>;
  readonly hasTypeSlots: boolean;
  private readonly walkCache: Map<string, boolean> = new Map();
  private readonly lines: readonly ElementLine[];

  constructor(resourceType: string, root: Branch, typeSlots: Record<string, Slot>, keepsAll: boolean, lines: ElementLine[]) {
    this.resourceType = resourceType;
    this.root = root;
    this.typeSlots = typeSlots;
    this.hasTypeSlots = Object.keys(typeSlots).length > 0;
    this.keepsAll = keepsAll;
    this.lines = Object.freeze(lines);
  }

  describe(): readonly ElementLine[] {
    return this.lines;
  }

  /**
   * Could a type selector (or a contained resource) change anything inside an element of type `t`?
   * When not, the apply walk passes that subtree by reference. Memoized; cycles (Extension inside
   * Extension, Identifier.assigner -> Reference.identifier) resolve to false on re-entry, which is
   * sound because any match is found along another branch of the same search.
   */
  needsWalk(t: string): boolean {
    const cached = this.walkCache.get(t);
    if (cached !== undefined) return cached;
    if (!this.hasTypeSlots) {
      const r = t === 'Resource';
      this.walkCache.set(t, r);
      return r;
    }
    const visiting = new Set<string>();
    const visit = (ty: string): boolean => {
      const c = this.walkCache.get(ty);
      if (c !== undefined) return c;
      if (ty === 'Resource') return true;
      if (visiting.has(ty)) return false;
      visiting.add(ty);
      const els = typeElements(ty);
      let r = false;
      if (els) {
        for (const k of Object.keys(els)) {
          const info = els[k];
          for (const et of info.types) {
            if (this.typeSlots[et] !== undefined || (!isPrimitiveType(et) && visit(et))) {
              r = true;
              break;
            }
          }
          if (r) break;
        }
      }
      visiting.delete(ty);
      // Only a positive answer is final during a search; negatives are final at top level.
      if (r || visiting.size === 0) this.walkCache.set(ty, r);
      return r;
    };
    return visit(t);
  }
}

function describePlan(c: PlanCompiler, root: Branch, rule: ElementRule): ElementLine[] {
  const lines: ElementLine[] = [];
  const els = typeElements(c.resourceType) ?? {};
  const rt = c.resourceType;
  for (const name of Object.keys(els)) {
    if (els[name].choice !== undefined) continue;
    const concrete = name.endsWith('[x]') ? Object.keys(els).filter((k) => els[k].choice === name) : [name];
    const slots = concrete.map((k) => root.children?.[k]).filter((s): s is Slot => s !== undefined);
    const s = slots[0];
    const alwaysKept = name === 'id' || name === 'meta';
    let line: ElementLine;
    const typeSlot = els[name].types.length === 1 ? c.typeSlots.get(els[name].types[0])?.plain : undefined;
    if (typeSlot?.remove) line = { element: `${rt}.${name}`, action: 'remove', selector: typeSlot.remove };
    else if (s?.plain.remove) line = { element: `${rt}.${name}`, action: 'remove', selector: s.plain.remove };
    else if (s && s.plain.transforms.length > 0) {
      const t = s.plain.transforms[0];
      line = { element: `${rt}.${name}`, action: t.apply, selector: t.selector };
    } else if (typeSlot && typeSlot.transforms.length > 0) {
      const t = typeSlot.transforms[0];
      line = { element: `${rt}.${name}`, action: t.apply, selector: t.selector };
    } else if (root.keep === 2) line = { element: `${rt}.${name}`, action: 'keep', selector: '*' };
    else if (alwaysKept) line = { element: `${rt}.${name}`, action: 'keep', selector: '(always kept)' };
    else if (s && (s.plain.keep > 0 || s.filtered?.some((f) => f.branch.keep > 0))) {
      const by = s.plain.keptBy ?? s.filtered?.find((f) => f.branch.keptBy)?.branch.keptBy ?? firstKeepBelow(s) ?? name;
      line = { element: `${rt}.${name}`, action: 'keep', selector: by };
    } else line = { element: `${rt}.${name}`, action: 'remove', selector: '(not in elements)' };
    lines.push(line);
  }
  // Nested path selectors and filters: one line each, as written.
  const written: Array<[string, ElementLine['action']]> = [];
  for (const e of rule.elements ?? []) if (e !== '*' && (e.includes('.') || e.includes('['))) written.push([e, 'keep']);
  for (const r of rule.remove ?? []) if (r.startsWith('@') || r.includes('.') || r.includes('[')) written.push([r, 'remove']);
  for (const t of rule.transforms ?? []) if (t.select.startsWith('@') || t.select.includes('.') || t.select.includes('[')) written.push([t.select, t.apply]);
  for (const [sel, action] of written) {
    lines.push({ element: sel.startsWith('@') ? sel : `${rt}.${sel}`, action, selector: sel });
  }
  return lines;
}

function firstKeepBelow(s: Slot): string | undefined {
  const stack: Branch[] = [s.plain, ...(s.filtered ?? []).map((f) => f.branch)];
  while (stack.length > 0) {
    const b = stack.pop()!;
    if (b.keptBy) return b.keptBy;
    if (b.children) for (const k of Object.keys(b.children)) stack.push(b.children[k].plain, ...(b.children[k].filtered ?? []).map((f) => f.branch));
  }
  return undefined;
}

export function compileElementPlan(resourceType: string, rule: ElementRule, where: string): ElementPlan {
  if (!isResourceType(resourceType)) {
    throw new SelectorError(where, resourceType, `"${resourceType}" is not an R4 resource type`);
  }
  const c = new PlanCompiler(resourceType, where);
  const elements = rule.elements ?? ['*'];
  elements.forEach((e, i) => {
    c.addKeep(e, `${where}.elements[${i}]`);
  });
  // resourceType, id and meta always survive the allow-list (meta stays subject to transforms).
  for (const always of ['id', 'meta']) {
    const bs = c.root.children.get(always) ?? { plain: undefined, filtered: [] };
    c.root.children.set(always, bs);
    bs.plain = bs.plain ?? bnode();
    bs.plain.keep = 2;
    bs.plain.keptBy = bs.plain.keptBy ?? '(always kept)';
  }
  (rule.remove ?? []).forEach((r, i) => {
    c.addRemove(r, `${where}.remove[${i}]`);
  });
  (rule.transforms ?? []).forEach((t, i) => {
    c.addTransform(t.select, t.apply, i, `${where}.transforms[${i}]`);
  });
  const keepAll = elements.includes('*');
  if (keepAll) c.root.keep = 2;
  const root = c.freezeNode(c.root, keepAll ? 2 : 1);
  const rootBranch: Branch = keepAll ? root : { ...root, keep: 1 };
  const typeSlots = Object.create(null) as Record<string, Slot>;
  for (const [t, bs] of c.typeSlots) {
    const plain = c.freezeNode(bs.plain!, 2);
    typeSlots[t] = slot(plain);
  }
  const keepsAll = keepAll && (rule.remove ?? []).length === 0 && (rule.transforms ?? []).length === 0;
  return new CompiledElementPlan(resourceType, rootBranch, typeSlots, keepsAll, describePlan(c, rootBranch, rule));
}

/**
 * True when the element at `path` (dotted, from the root) reaches the client unchanged: no path
 * rule and no type selector (e.g. `@Reference.display` while walking Reference) removes, filters or
 * transforms it or anything below it.
 */
function pathUnchanged(plan: CompiledElementPlan, path: string): boolean {
  const names = path.split('.');
  let b: Branch | undefined = plan.root;
  // Branches contributed by type selectors for the element being walked (`@Reference.display`).
  let typed: Branch[] = [];
  let owner = plan.resourceType;
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const info = typeElements(owner)?.[name];
    if (info?.types.length !== 1) return false;
    const t = info.types[0];
    const s: Slot | undefined = b?.children?.[name];
    if (b !== undefined && b.keep !== 2 && (s === undefined || s.plain.keep === 0)) return false;
    if (s && (s.filtered || s.plain.remove || s.plain.transforms.length > 0)) return false;
    b = s ? s.plain : undefined;
    const next: Branch[] = [];
    for (const tb of typed) {
      const c = tb.children?.[name];
      if (!c) continue;
      if (c.filtered || c.plain.remove || c.plain.transforms.length > 0) return false;
      next.push(c.plain);
    }
    const ts = plan.typeSlots[t];
    if (ts) {
      if ((ts.filtered && ts.filtered.length > 0) || ts.plain.remove || ts.plain.transforms.length > 0) return false;
      next.push(ts.plain);
    }
    typed = next;
    if (i === names.length - 1) {
      // The whole subtree must be untouched: no partial keep, nothing removed or transformed below.
      if (b !== undefined && (b.keep !== 2 || subtreeTouched(b))) return false;
      if (typed.some(subtreeTouched)) return false;
      if (!isPrimitiveType(t) && plan.needsWalk(t)) return false;
    }
    owner = t;
  }
  return true;
}

/** The element type at a dotted path, or undefined when it is not a single known type. */
function typeAt(resourceType: string, path: string): string | undefined {
  let owner = resourceType;
  for (const name of path.split('.')) {
    const info = typeElements(owner)?.[name];
    if (info?.types.length !== 1) return undefined;
    owner = info.types[0];
  }
  return owner;
}

/**
 * What a search on `path` actually matches against, by search parameter type: a reference search
 * compares `reference` (not `display`), a token search the codes and text, a string search the
 * name or address parts. The parameter is an oracle only if one of these is hidden.
 */
const SEARCHED_PARTS: Readonly<Record<string, Readonly<Record<string, readonly string[]>>>> = {
  reference: { Reference: ['reference'] },
  token: {
    CodeableConcept: ['coding.system', 'coding.code', 'text'],
    Coding: ['system', 'code'],
    Identifier: ['system', 'value', 'type'],
    ContactPoint: ['system', 'value', 'use'],
  },
  string: {
    HumanName: ['family', 'given', 'prefix', 'suffix', 'text'],
    Address: ['line', 'city', 'district', 'state', 'postalCode', 'country', 'text'],
  },
  // A date search compares dates only: the string, Age and Range choices (`performedString`,
  // `onsetAge`) are never matched by it, so hiding them does not make the parameter an oracle.
  date: { Period: ['start', 'end'], string: [], Age: [], Range: [] },
  quantity: { Quantity: ['value', 'unit', 'system', 'code'] },
};

function searchedPaths(resourceType: string, paramType: string, path: string): string[] {
  const t = typeAt(resourceType, path);
  const parts = t === undefined ? undefined : SEARCHED_PARTS[paramType]?.[t];
  return parts ? parts.map((p) => `${path}.${p}`) : [path];
}

function subtreeTouched(b: Branch): boolean {
  if (b.remove || b.transforms.length > 0) return true;
  if (b.children) {
    for (const k of Object.keys(b.children)) {
      const s = b.children[k];
      if (s.filtered || subtreeTouched(s.plain)) return true;
    }
  }
  return false;
}

/**
 * Search parameters of `resourceType` whose every element path the plan releases unchanged: a role
 * may only search on what it can see (searching hidden elements is an oracle). Parameters that are
 * not plain element paths (FHIRPath functions, extensions, `_content`) are never derived.
 */
export function derivedSearchParams(resourceType: string, plan: ElementPlan): string[] {
  const out: string[] = [];
  for (const code of searchParamCodes(resourceType)) {
    const sp = searchParam(resourceType, code);
    if (!sp || sp.paths.length === 0) continue;
    if (plan.keepsAll) {
      out.push(code);
      continue;
    }
    if (!(plan instanceof CompiledElementPlan)) continue;
    if (sp.paths.every((p) => searchedPaths(resourceType, sp.type, p).every((q) => pathUnchanged(plan, q)))) out.push(code);
  }
  return out.sort();
}
