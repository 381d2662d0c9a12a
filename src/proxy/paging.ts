/**
 * Gateway-owned paging. A page of a search (or history) is what the caller may see of the result,
 * in upstream order: the pager reads upstream pages itself, following the upstream's own `next`
 * links, until it holds the page size in visible matches plus one more (so a `next` link is handed
 * out only when a visible match follows), or the upstream result ends. Withheld entries are skipped
 * as if absent, so page boundaries, the `next` link and `total` depend only on what the caller may
 * see: the answer is the same whether or not the withheld resources exist (SPEC 3.6).
 *
 * Includes are released only when tied to a released match (the match references them, they
 * reference it, or, transitively, a tied include), whichever upstream page they came on: an
 * include tied only to a withheld match would show that the match exists.
 *
 * At the bound (maxUpstreamPages read for one client page) the page is released as it stands, with
 * a `next` link at the upstream position reached: that page may hold fewer entries than asked.
 */
import { tailTypeId } from '../fhir/reference.js';
import { searchParam } from '../fhir/tables.js';
import { GatewayError } from '../errors.js';
import { collectRefs, type Filter, withheldOutcomeEntry } from '../redact/response.js';
import { REMOVE } from '../redact/transforms.js';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface PageStart {
  /** Upstream path + query of the first page to use (already fetched as `first`). */
  readonly at: string;
  /** Entries of that page already released on an earlier client page. */
  readonly index: number;
  /** Matches released on earlier client pages. */
  readonly released: number;
  /** Page size. */
  readonly count: number;
}

export interface PagerInput {
  readonly first: Obj;
  readonly start: PageStart;
  readonly filter: Filter;
  /** Reads one more upstream page (path + query on the upstream origin) as a parsed Bundle. */
  fetchPage(at: string): Promise<Obj>;
  /** An upstream `next` link as path + query on the upstream origin; throws for a link elsewhere. */
  resolveLink(url: string): string;
  readonly maxUpstreamPages: number;
  /** Type history: an entry without a resource (a delete) cannot be judged, so it is withheld. */
  readonly typeHistory: boolean;
  /** The request's includes: only includes tied to released matches through these are released. */
  readonly includes?: readonly IncludeSpec[];
}

export interface CollectedPage {
  readonly type: 'searchset' | 'history';
  readonly entries: Obj[];
  /** Visible matches in the whole result, when the gateway has seen all of it. */
  readonly total: number | undefined;
  /** Where the next client page starts, when there is one. */
  readonly next: { readonly at: string; readonly index: number; readonly released: number } | undefined;
  /** Upstream pages read for this client page. */
  readonly upstreamPages: number;
}

interface Held {
  readonly raw: Obj;
}

function bundleType(b: Obj): 'searchset' | 'history' {
  if (b.resourceType !== 'Bundle') throw new GatewayError('upstream-bad-response', 'page is not a Bundle');
  if (b.type !== 'searchset' && b.type !== 'history') throw new GatewayError('upstream-bad-response', 'page is not a searchset or history Bundle');
  if (b.entry !== undefined && !Array.isArray(b.entry)) throw new GatewayError('upstream-bad-response', 'bundle entry is not an array');
  if (b.link !== undefined && !Array.isArray(b.link)) throw new GatewayError('upstream-bad-response', 'bundle link is not an array');
  return b.type;
}

function nextLink(b: Obj): string | undefined {
  for (const l of (b.link as unknown[] | undefined) ?? []) {
    if (isObj(l) && l.relation === 'next' && typeof l.url === 'string') return l.url;
  }
  return undefined;
}

function mode(e: unknown): unknown {
  return isObj(e) && isObj(e.search) ? e.search.mode : undefined;
}

/** `Type/id` of a resource, or undefined. */
function keyOf(r: unknown): string | undefined {
  return isObj(r) && typeof r.resourceType === 'string' && typeof r.id === 'string' ? `${r.resourceType}/${r.id}` : undefined;
}

/**
 * One `_include` / `_revinclude` of the request: `source:param[:target]`, with the element paths of
 * that search parameter (split on dots). Built by the pipeline from the decided request.
 */
export interface IncludeSpec {
  readonly reverse: boolean;
  readonly iterate: boolean;
  readonly source: string;
  readonly target: string | undefined;
  readonly paths: ReadonlyArray<readonly string[]>;
}

/** The include specs of a request's parameters; values the tables cannot resolve tie nothing. */
export function includeSpecs(params: ReadonlyArray<readonly [string, string]>): IncludeSpec[] {
  const out: IncludeSpec[] = [];
  for (const [name, value] of params) {
    const [base, modifier] = name.split(':', 2);
    if (base !== '_include' && base !== '_revinclude') continue;
    const [source, code, target] = value.split(':');
    if (!source || !code) continue;
    const info = searchParam(source, code);
    if (info === undefined || info.type !== 'reference' || info.paths.length === 0) continue;
    out.push({
      reverse: base === '_revinclude',
      iterate: modifier === 'iterate' || modifier === 'recurse',
      source,
      target: target || undefined,
      paths: info.paths.map((p) => p.split('.')),
    });
  }
  return out;
}

/** `Type/id` of every reference on `paths` of a resource (relative or absolute reference strings). */
function referencesAt(res: unknown, paths: IncludeSpec['paths']): Set<string> {
  const refs: string[] = [];
  for (const p of paths) collectRefs(res, p, 0, refs);
  const out = new Set<string>();
  for (const r of refs) {
    const t = tailTypeId(r);
    if (t) out.add(`${t.type}/${t.id}`);
  }
  return out;
}

interface Node {
  readonly h: Held;
  readonly res: unknown;
  readonly type: string | undefined;
  readonly key: string | undefined;
  /** A released match (not an include tied through `:iterate`). */
  readonly match: boolean;
  /** referencesAt per include spec, computed once. */
  readonly refs: Map<IncludeSpec, Set<string>>;
}

function node(h: Held, match: boolean): Node {
  const res = (h.raw as { resource?: unknown }).resource;
  return { h, res, type: isObj(res) && typeof res.resourceType === 'string' ? res.resourceType : undefined, key: keyOf(res), match, refs: new Map() };
}

function refsOf(n: Node, spec: IncludeSpec): Set<string> {
  let r = n.refs.get(spec);
  if (r === undefined) {
    r = referencesAt(n.res, spec.paths);
    n.refs.set(spec, r);
  }
  return r;
}

/**
 * The includes tied to the released matches the way the request asked for them: an `_include`
 * target referenced on the parameter's paths of a released match (or, for `:iterate`, of a tied
 * include), a `_revinclude` source that references one on those paths. Whatever else the upstream
 * returned is not released: it may be there only because of a withheld match.
 */
function tiedIncludes(matches: readonly Held[], includes: readonly Held[], specs: readonly IncludeSpec[]): Held[] {
  if (includes.length === 0 || specs.length === 0) return [];
  const tiedNodes: Node[] = matches.map((h) => node(h, true));
  const pending = includes.map((h) => node(h, false));
  const tied: Held[] = [];
  const ties = (p: Node, from: readonly Node[]): boolean =>
    specs.some((spec) => {
      for (const n of from) {
        if (!n.match && !spec.iterate) continue;
        if (!spec.reverse) {
          if (n.type !== spec.source || p.key === undefined) continue;
          if (spec.target !== undefined && p.type !== spec.target) continue;
          if (refsOf(n, spec).has(p.key)) return true;
        } else {
          if (p.type !== spec.source || n.key === undefined) continue;
          if (spec.target !== undefined && n.type !== spec.target) continue;
          if (refsOf(p, spec).has(n.key)) return true;
        }
      }
      return false;
    });
  let grew = true;
  while (grew && pending.length > 0) {
    grew = false;
    for (let i = 0; i < pending.length; i++) {
      if (!ties(pending[i], tiedNodes)) continue;
      tied.push(pending[i].h);
      tiedNodes.push(pending[i]);
      pending.splice(i, 1);
      i--;
      grew = true;
    }
  }
  return tied;
}

/** Orders released includes by what the caller sees (their released fullUrl / type and id), never by upstream position. */
function includeOrder(a: Obj, b: Obj): number {
  const ka = sortKey(a);
  const kb = sortKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function sortKey(e: Obj): string {
  if (typeof e.fullUrl === 'string') return e.fullUrl;
  return keyOf(e.resource) ?? '';
}

export async function collectPage(input: PagerInput): Promise<CollectedPage> {
  const { filter, start } = input;
  const n = start.count;
  const type = bundleType(input.first);
  const matches: Held[] = [];
  const includes: Held[] = [];
  const includeKeys = new Set<string>();
  let page: Obj = input.first;
  let at = start.at;
  let index = start.index;
  let pages = 1;
  let next: CollectedPage['next'];
  let complete = false;

  for (;;) {
    const entries = (page.entry as unknown[] | undefined) ?? [];
    let cut = false;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const m = mode(e);
      if (m === 'include') {
        // Every include of every page read is a candidate (an include may sit on the page of its
        // match, before the resume point); duplicates across pages are one.
        const k = keyOf((e as Obj).resource);
        if (k !== undefined && includeKeys.has(k)) continue;
        if (k !== undefined) includeKeys.add(k);
        includes.push({ raw: e as Obj });
        continue;
      }
      if (m !== undefined && m !== 'match') continue; // upstream outcome entries: not the caller's data
      // Past the cut only includes are still gathered (they may follow their matches on the page).
      if (i < index || cut) continue;
      let v = filter.visibility(e);
      if (v === 'ok' && input.typeHistory && !isObj((e as Obj).resource)) v = 'type';
      if (v !== 'ok') {
        filter.skipped(v);
        continue;
      }
      if (matches.length === n) {
        next = { at, index: i, released: start.released + n };
        cut = true;
        continue;
      }
      matches.push({ raw: e as Obj });
    }
    if (cut) break;
    const link = nextLink(page);
    if (link === undefined) {
      complete = true;
      break;
    }
    const following = input.resolveLink(link);
    if (pages >= input.maxUpstreamPages) {
      next = { at: following, index: 0, released: start.released + matches.length };
      break;
    }
    page = await input.fetchPage(following);
    bundleType(page);
    pages++;
    at = following;
    index = 0;
  }

  const out: Obj[] = [];
  for (const m of matches) {
    const e = filter.entry(m.raw, 0, false);
    // visibility() said yes: a REMOVE here is a nested shape the filter refused; it stays out.
    if (e !== REMOVE) out.push(e);
  }
  const inc: Obj[] = [];
  const tied = tiedIncludes(matches, includes, input.includes ?? []);
  for (const h of tied) {
    const e = filter.entry(h.raw, 0, false);
    if (e !== REMOVE) inc.push(e);
  }
  // Not released: counted as withheld (never announced: break-glass would not show them here).
  for (let k = tied.length; k < includes.length; k++) filter.skipped('compartment');
  inc.sort(includeOrder);
  out.push(...inc);
  return {
    type,
    entries: out,
    total: complete ? start.released + matches.length : undefined,
    next,
    upstreamPages: pages,
  };
}

/** The announcement for a break-glass-eligible caller when labels withheld something on this page. */
export function announceEntry(): Obj {
  return withheldOutcomeEntry();
}
