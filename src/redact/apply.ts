/**
 * Applies an ElementPlan to one resource. Pure: never mutates its input; copy-on-write, so only
 * objects on a path that changes are copied and untouched subtrees are shared by reference.
 *
 * Fail closed: inside any object the walk visits, keys the R4 tables do not know (and so cannot
 * be checked against type selectors), arrays where one value belongs, scalars where an object
 * belongs, are removed and counted.
 */
import type { Coding } from 'fhir/r4.js';
import { type ElementInfo, isPrimitiveType, typeElements } from '../fhir/tables.js';
import { type Branch, CompiledElementPlan, comboBranch, type CompiledFilter, type Slot, slotWithType, type Tx } from './compile.js';
import { age90, mask, pseudonym, REMOVE, type Removed, year, zip3 } from './transforms.js';
import type { ElementPlan, RedactContext, RedactResult } from './types.js';

export const MARKING_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';

type Obj = Record<string, unknown>;

/** Redacts a contained resource with its own type's plan; REMOVE when the caller may not see it. */
export type ContainedHandler = (resource: unknown) => { resource: unknown; removed: number; transformed: number } | Removed;

interface State {
  readonly plan: CompiledElementPlan;
  readonly ctx: RedactContext;
  readonly rootType: string;
  readonly contained: ContainedHandler | undefined;
  removed: number;
  transformed: number;
  masked: boolean;
  pseudonymized: boolean;
  generalized: boolean;
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function matchesFilter(item: unknown, f: CompiledFilter): boolean {
  if (!isObj(item)) return false;
  const c = item[f.key];
  if (typeof c === 'string') return c === f.value;
  if (typeof c === 'number' || typeof c === 'boolean') return String(c) === f.value;
  if (Array.isArray(c)) {
    for (const x of c) if (matchesCoded(x, f)) return true;
    return false;
  }
  return matchesCoded(c, f);
}

/** A Coding matches its code (or system|code); a CodeableConcept matches any of its codings. */
function matchesCoded(c: unknown, f: CompiledFilter): boolean {
  if (!isObj(c)) return false;
  if (Array.isArray(c.coding)) {
    for (const x of c.coding) if (matchesCoded(x, f)) return true;
    return false;
  }
  if (c.code !== f.code) return false;
  return f.system === undefined || c.system === f.system;
}

function applyTransforms(v: unknown, txs: readonly Tx[], type: string, key: string, ownerType: string, st: State): unknown {
  let val = v;
  for (let i = 0; i < txs.length; i++) {
    const before = val;
    switch (txs[i].apply) {
      case 'remove':
        return REMOVE;
      case 'mask':
        val = mask(val);
        if (val !== before) st.masked = true;
        break;
      case 'year':
        val = year(val, type);
        if (val !== before) st.generalized = true;
        break;
      case 'zip3':
        val = zip3(val, type, st.ctx);
        if (val !== before) st.generalized = true;
        break;
      case 'age90':
        val = age90(val, type, st.ctx);
        if (val !== before) st.generalized = true;
        break;
      case 'pseudonym':
        val = pseudonym(val, type, key, ownerType, st.rootType, st.ctx);
        if (val !== before) st.pseudonymized = true;
        break;
    }
    if (val === REMOVE) return REMOVE;
  }
  if (val !== v) st.transformed++;
  return val;
}

/** One value (an array item or a single element) under an effective slot. */
function applySlot(item: unknown, s: Slot, type: string, key: string, ownerType: string, st: State): unknown {
  let br: Branch = s.plain;
  if (s.filtered !== undefined) {
    let m = 0;
    for (let i = 0; i < s.filtered.length; i++) if (matchesFilter(item, s.filtered[i].filter)) m |= 1 << i;
    br = comboBranch(s, m);
  }
  if (br.keep === 0 || br.remove !== undefined) return REMOVE;
  let val = item;
  if (br.transforms.length > 0) {
    val = applyTransforms(item, br.transforms, type, key, ownerType, st);
    if (val === REMOVE) return REMOVE;
  }
  if (isPrimitiveType(type)) return val;
  return descend(val, type, br.keep === 2 && br.children === undefined ? undefined : br, st);
}

/** Into a complex value; `b` undefined = keep everything, only type selectors apply below. */
function descend(val: unknown, type: string, b: Branch | undefined, st: State): unknown {
  if (type === 'Resource') {
    if (st.contained === undefined) return REMOVE;
    const r = st.contained(val);
    if (r === REMOVE) return REMOVE;
    st.removed += r.removed;
    st.transformed += r.transformed;
    return r.resource;
  }
  if (!isObj(val)) return REMOVE;
  if (b === undefined && !st.plan.needsWalk(type)) return val;
  return walkObject(val, type, b, st, false);
}

function walkElement(v: unknown, info: ElementInfo, key: string, ownerType: string, b: Branch | undefined, st: State): unknown {
  if (info.types.length !== 1) return REMOVE; // `value[x]` is not a JSON name
  const type = info.types[0];
  const ps = b?.children?.[key];
  if (b !== undefined && b.keep !== 2 && ps === undefined) return REMOVE;
  const ts = st.plan.typeSlots[type];
  const s = ps !== undefined ? (ts !== undefined ? slotWithType(ps, ts) : ps) : ts;
  if (info.array) {
    if (!Array.isArray(v)) return REMOVE;
    if (s === undefined && (isPrimitiveType(type) || (type !== 'Resource' && !st.plan.needsWalk(type)))) return v;
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const item = v[i];
      const nv = s !== undefined ? applySlot(item, s, type, key, ownerType, st) : descend(item, type, undefined, st);
      if (nv !== item && out === undefined) out = v.slice(0, i);
      if (out !== undefined) {
        if (nv === REMOVE) st.removed++;
        else out.push(nv);
      }
    }
    if (out === undefined) return v;
    return out.length === 0 ? REMOVE : out;
  }
  if (Array.isArray(v)) return REMOVE;
  if (s !== undefined) return applySlot(v, s, type, key, ownerType, st);
  if (isPrimitiveType(type)) return v;
  return descend(v, type, undefined, st);
}

/** `_birthDate` and friends follow their primitive: gone or transformed with it, else walked as Element. */
function walkCompanion(v: unknown, key: string, els: Readonly<Record<string, ElementInfo>>, b: Branch | undefined, st: State): unknown {
  const base = key.slice(1);
  const info = els[base];
  if (info === undefined || info.types.length !== 1 || !isPrimitiveType(info.types[0])) return REMOVE;
  const ps = b?.children?.[base];
  if (b !== undefined && b.keep !== 2 && ps === undefined) return REMOVE;
  const ts = st.plan.typeSlots[info.types[0]];
  const s = ps !== undefined ? (ts !== undefined ? slotWithType(ps, ts) : ps) : ts;
  if (s !== undefined) {
    const br = s.plain;
    if (br.keep === 0 || br.remove !== undefined || br.transforms.length > 0 || s.filtered !== undefined) return REMOVE;
  }
  if (!st.plan.needsWalk('Element')) return v;
  if (info.array) {
    if (!Array.isArray(v)) return REMOVE;
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const item = v[i];
      // Nulls keep positions aligned with the primitive array.
      const nv = item === null ? null : isObj(item) ? walkObject(item, 'Element', undefined, st, false) : REMOVE;
      if (nv !== item && out === undefined) out = v.slice(0, i);
      if (out !== undefined) out.push(nv === REMOVE ? null : nv);
    }
    return out ?? v;
  }
  if (!isObj(v)) return REMOVE;
  return walkObject(v, 'Element', undefined, st, false);
}

function walkObject(obj: Obj, type: string, b: Branch | undefined, st: State, isRoot: boolean): Obj | Removed {
  const els = typeElements(type);
  if (els === undefined) return REMOVE;
  let out: Obj | undefined;
  let kept = 0;
  for (const key in obj) {
    const v = obj[key];
    let nv: unknown;
    const info = els[key];
    if (info !== undefined) nv = walkElement(v, info, key, type, b, st);
    else if (isRoot && key === 'resourceType') nv = v;
    else if (key.charCodeAt(0) === 95 /* _ */) nv = walkCompanion(v, key, els, b, st);
    else nv = REMOVE;
    if (nv !== v && out === undefined) {
      out = {};
      for (const k2 in obj) {
        if (k2 === key) break;
        out[k2] = obj[k2];
      }
    }
    if (nv === REMOVE) {
      st.removed++;
    } else {
      kept++;
      if (out !== undefined) out[key] = nv;
    }
  }
  if (out === undefined) return obj;
  // Left-over empty objects carry nothing and are invalid FHIR.
  if (kept === 0 && !isRoot) return REMOVE;
  // An extension whose value was removed says nothing (and breaks ext-1): drop it whole.
  if (type === 'Extension' && isHollowExtension(out)) return REMOVE;
  return out;
}

function isHollowExtension(ext: Obj): boolean {
  for (const k in ext) if (k !== 'url' && k !== 'id') return false;
  return true;
}

function hasCoding(security: unknown[], code: string): boolean {
  for (const c of security) if (isObj(c) && c.system === MARKING_SYSTEM && c.code === code) return true;
  return false;
}

/** Drops `text` and adds the v3-ObservationValue markings the changes call for (never inside contained). */
function finish(original: Obj, out: Obj, st: State, contained: boolean): Obj {
  if (st.removed === 0 && st.transformed === 0 && !st.generalized && !st.masked && !st.pseudonymized) return out;
  const res: Obj = out === original ? { ...original } : out;
  if ('text' in res) {
    // The narrative repeats what the structured elements held.
    delete res.text;
    st.removed++;
  }
  if (contained) return res;
  const codes: string[] = [];
  if (st.removed > 0 || st.generalized) codes.push('REDACTED');
  if (st.masked) codes.push('MASKED');
  if (st.pseudonymized) codes.push('PSEUDED');
  const meta = isObj(res.meta) ? res.meta : undefined;
  const security: unknown[] = meta && Array.isArray(meta.security) ? meta.security : [];
  const add: Coding[] = [];
  for (const code of codes) if (!hasCoding(security, code)) add.push({ system: MARKING_SYSTEM, code });
  if (add.length > 0) res.meta = { ...meta, security: [...security, ...add] };
  return res;
}

export interface RedactOptions {
  /** How to treat `contained` resources; without it they are removed (unless the plan keeps all). */
  readonly contained?: ContainedHandler;
  /** True for a contained resource: no meta.security of its own (dom-5). */
  readonly isContained?: boolean;
}

/** Internal entry point shared with src/redact/response.ts. */
export function redactWith<T>(resource: T, plan: ElementPlan, ctx: RedactContext, opts: RedactOptions): RedactResult<T> {
  const r = resource as unknown;
  if (plan.keepsAll && (opts.contained === undefined || !isObj(r) || r.contained === undefined)) {
    return { resource, removed: 0, transformed: 0 };
  }
  if (!(plan instanceof CompiledElementPlan)) {
    throw new TypeError('redactResource: plan was not produced by compileElementPlan');
  }
  if (!isObj(r) || r.resourceType !== plan.resourceType) {
    throw new TypeError('redactResource: resource does not match the plan type');
  }
  const st: State = {
    plan,
    ctx,
    rootType: plan.resourceType,
    contained: opts.contained,
    removed: 0,
    transformed: 0,
    masked: false,
    pseudonymized: false,
    generalized: false,
  };
  const walked = walkObject(r, plan.resourceType, plan.root.keep === 2 && plan.root.children === undefined ? undefined : plan.root, st, true);
  const out = finish(r, walked === REMOVE ? { resourceType: r.resourceType } : walked, st, opts.isContained === true);
  return { resource: out as T, removed: st.removed, transformed: st.transformed };
}

/**
 * Applies `plan` to one resource without mutating it. With `plan.keepsAll` the input is returned
 * as is. Anything removed: `text` goes and meta.security gets REDACTED; masked values add MASKED,
 * pseudonyms PSEUDED; generalizations (year, zip3, age90) remove precision and count as REDACTED.
 * Contained resources are removed here (their types' plans are unknown); filterResponse applies
 * each contained resource's own plan.
 */
export function redactResource<T>(resource: T, plan: ElementPlan, ctx: RedactContext): RedactResult<T> {
  return redactWith(resource, plan, ctx, {});
}
