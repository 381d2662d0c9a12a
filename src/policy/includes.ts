/**
 * `_include` / `_revinclude` under an access plan (pure). An include makes the upstream return
 * resources the search did not match, so every type it can reach must be one the plan lets the
 * caller see, judged before the upstream is asked (BYPASSES 1): filtering them out of the answer
 * afterwards would still let paging and `total` count them.
 *
 * A value is `SourceType:searchParam[:TargetType]`; the name may carry `:iterate` (or the R3
 * spelling `:recurse`). Refused: `*` anywhere, a malformed value, a source or target type outside
 * the plan, a parameter that is unknown for the source or not a reference, a reference parameter
 * the source type's plan does not allow searching on (it follows an element the caller does not
 * see), a non-iterate `_include`
 * whose source is not the searched type, a non-iterate `_revinclude` whose target is not. A value
 * without a target is narrowed, not refused: it becomes one include per target type the plan grants,
 * so the upstream never follows the reference into a type the caller cannot see.
 */
import { searchParam } from '../fhir/tables.js';
import type { Param } from './classify/url.js';
import type { ResourcePlan } from './plan.js';

export type IncludeResult =
  /** `params` is the input array itself when nothing was narrowed. */
  | { readonly ok: true; readonly params: readonly Param[] }
  /** `why` names types and reasons, never the raw value. */
  | { readonly ok: false; readonly param: string; readonly why: string };

export function isIncludeParam(name: string): boolean {
  return name === '_include' || name === '_revinclude' || name.startsWith('_include:') || name.startsWith('_revinclude:');
}

/**
 * Whether the plan lets the caller see resources of `type` (an include is a read of them), and
 * `also` does (the token's SMART scopes: an app limited to Observation must not pull the Patient in).
 */
function visible(types: ReadonlyMap<string, ResourcePlan>, type: string, also?: (type: string) => boolean): boolean {
  const p = types.get(type);
  return p !== undefined && (p.interactions.has('read') || p.interactions.has('search')) && (also === undefined || also(type));
}

/** The include values that replace one include parameter, or why it is refused. */
function expand(name: string, value: string, searchedType: string, types: ReadonlyMap<string, ResourcePlan>, also?: (type: string) => boolean): string[] | { why: string } {
  const colon = name.indexOf(':');
  const kind = colon < 0 ? name : name.slice(0, colon);
  const modifier = colon < 0 ? undefined : name.slice(colon + 1);
  if (modifier !== undefined && modifier !== 'iterate' && modifier !== 'recurse') return { why: 'has an unknown modifier' };
  const iterate = modifier !== undefined;
  const rev = kind === '_revinclude';

  if (value === '*') return { why: 'is a wildcard' };
  const parts = value.split(':');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) return { why: 'is malformed' };
  const [source, code, target] = parts as [string, string, string | undefined];
  if (code === '*' || target === '*') return { why: 'is a wildcard' };
  if (!visible(types, source, also)) return { why: 'names a source type that is not granted' };
  if (!rev && !iterate && source !== searchedType) return { why: 'names a source other than the searched type' };
  const info = searchParam(source, code);
  if (info === undefined || info.type !== 'reference' || info.targets === undefined) return { why: 'names no reference parameter of its source' };
  if (target !== undefined && !info.targets.includes(target)) return { why: 'names a target its parameter cannot reach' };
  // Following a reference the plan does not let the caller search on (an element it removes, or a
  // link that de-identification hides) would show what that element held: which resources it links.
  if (!types.get(source)!.searchParams.has(code)) return { why: 'follows a reference the plan does not release' };

  let candidates: readonly string[] = target === undefined ? info.targets : [target];
  // Without :iterate a reverse include reaches back to the matches only, i.e. the searched type.
  if (rev && !iterate) {
    candidates = candidates.filter((t) => t === searchedType);
    if (candidates.length === 0) return { why: 'names a target other than the searched type' };
  }
  const granted = candidates.filter((t) => visible(types, t, also));
  if (granted.length === 0) return { why: 'reaches no target type that is granted' };
  if (target !== undefined) return [value];
  return granted.map((t) => `${source}:${code}:${t}`);
}

/**
 * Checks and narrows every include parameter among `params` for a search on `searchedType` under
 * a plan granting `types`. Other parameters keep their place; a narrowed include is replaced in
 * place by its expansion. `also`, when given, must hold for every type an include reaches as well.
 */
export function narrowIncludes(
  params: readonly Param[],
  searchedType: string,
  types: ReadonlyMap<string, ResourcePlan>,
  also?: (type: string) => boolean,
): IncludeResult {
  let out: Param[] | undefined;
  for (let i = 0; i < params.length; i++) {
    const [name, value] = params[i]!;
    if (!isIncludeParam(name)) {
      out?.push(params[i]!);
      continue;
    }
    const r = expand(name, value, searchedType, types, also);
    if (!Array.isArray(r)) return { ok: false, param: name, why: r.why };
    if (r.length === 1 && r[0] === value) {
      out?.push(params[i]!);
      continue;
    }
    out ??= params.slice(0, i);
    for (const v of r) out.push([name, v]);
  }
  return { ok: true, params: out ?? params };
}
