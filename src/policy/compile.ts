/**
 * Compiles a validated policy file into per-(role, purpose, type) plans, once at load (pure apart
 * from the generated FHIR tables). Every semantic problem is returned with the policy path of the
 * offending node, so the loader can report it as file:line:col; a policy with problems yields no
 * CompiledPolicy at all (fail closed: never half a policy).
 */
import { createHash } from 'node:crypto';
import { isR4ResourceType as isKnownResourceType } from '../fhir/resource-types.js';
import { searchParam } from '../fhir/tables.js';
import { type Fate, pathFate, worseFate } from '../redact/deidentify.js';
import type { ElementPlan } from '../redact/types.js';
import { compileLabelSet, isValidLabel, unknownLabel } from './labels.js';
import type { DeidProfile, PolicyFile, PolicyInteraction, RuleSpec, TransformName } from './model.js';
import type {
  AccessPlan,
  CompiledBreakGlass,
  CompiledPolicy,
  CompiledRole,
  PurposeInfo,
  ResourcePlan,
} from './plan.js';

/** Parameters that shape a search rather than filter on element values; always allowed. */
export const CONTROL_SEARCH_PARAMS: readonly string[] = Object.freeze([
  '_id',
  '_count',
  '_sort',
  '_include',
  '_revinclude',
  '_elements',
  '_summary',
  '_total',
  '_lastUpdated',
]);

const DEFAULT_INTERACTIONS: readonly PolicyInteraction[] = ['read', 'search'];
export const BREAK_GLASS_PURPOSE = 'BTG';
export const BREAK_GLASS_ROLE = 'break-glass';

/** Kept as a seam so config validation can switch tables without touching callers. */
export function isR4ResourceType(name: string): boolean {
  return isKnownResourceType(name);
}

export interface ElementCompiler {
  compileElementPlan(
    resourceType: string,
    rule: {
      elements?: readonly string[];
      remove?: readonly string[];
      transforms?: ReadonlyArray<{ select: string; apply: TransformName }>;
    },
    where: string,
  ): ElementPlan;
  /** Search params whose every path the plan keeps unchanged (src/redact/compile.ts). */
  derivedSearchParams?(resourceType: string, plan: ElementPlan): readonly string[];
}

export interface CompileProblem {
  /** Policy path, e.g. `dataSets.billing.rules[0].types[2]`. */
  readonly path: string;
  /** Point at the key of the last segment rather than its value. */
  readonly at: 'value' | 'key';
  readonly message: string;
}

export type CompileResult =
  | { readonly ok: true; readonly policy: CompiledPolicy; readonly problems: readonly [] }
  | { readonly ok: false; readonly policy: undefined; readonly problems: readonly CompileProblem[] };

export function policyVersion(source: string | Uint8Array): string {
  return createHash('sha256').update(source).digest('hex').slice(0, 16);
}

export function compilePolicy(raw: PolicyFile, source: string | Uint8Array, compiler: ElementCompiler): CompileResult {
  const problems: CompileProblem[] = [];
  const problem = (path: string, message: string, at: 'value' | 'key' = 'value') => {
    problems.push({ path, at, message });
  };

  const purposes = compilePurposes(raw, problem);
  const restrictedZip3 = raw.safeHarbor?.restrictedZip3;

  // Data sets compile once and are shared by every role and purpose that names them.
  const dataSets = new Map<string, ReadonlyMap<string, ResourcePlan>>();
  for (const [name, ds] of Object.entries(raw.dataSets)) {
    dataSets.set(name, compileDataSet(name, ds.withhold ?? [], ds.rules, restrictedZip3 !== undefined, compiler, problem, ds.deidentify));
  }

  const roles = new Map<string, CompiledRole>();
  for (const [roleName, spec] of Object.entries(raw.roles)) {
    const base = `roles.${roleName}`;
    for (const [code, dataSet] of Object.entries(spec.purposes)) {
      if (!purposes.has(code)) problem(`${base}.purposes.${code}`, `unknown purpose '${code}' (not declared under purposes)`, 'key');
      else if (code === BREAK_GLASS_PURPOSE) {
        problem(`${base}.purposes.${code}`, 'BTG cannot be granted as a purpose; mark the role breakGlass: true', 'key');
      }
      if (!dataSets.has(dataSet)) problem(`${base}.purposes.${code}`, `unknown data set '${dataSet}'`);
    }
    if (spec.breakGlass === true && raw.breakGlass === undefined) {
      problem(`${base}.breakGlass`, 'role is break-glass eligible but the policy has no breakGlass section');
    }
    const plans = new Map<string, AccessPlan>();
    for (const code of purposes.keys()) {
      // Break-glass is never inherited from TREAT: it is its own, alerted, path.
      if (code === BREAK_GLASS_PURPOSE) continue;
      const grant = nearestGrant(code, spec.purposes, purposes);
      if (grant === undefined) continue;
      const dataSet = spec.purposes[grant];
      const types = dataSets.get(dataSet);
      if (!types) continue;
      plans.set(
        code,
        Object.freeze({
          role: roleName,
          purpose: code,
          dataSet,
          grantedBy: `${base}.purposes.${grant}`,
          compartment: spec.compartment,
          types,
        }),
      );
    }
    roles.set(
      roleName,
      Object.freeze({
        name: roleName,
        breakGlass: spec.breakGlass === true,
        capabilities: new Set(spec.capabilities ?? []),
        plans,
      }),
    );
  }

  let breakGlass: CompiledBreakGlass | undefined;
  if (raw.breakGlass !== undefined) {
    const bg = raw.breakGlass;
    const types = dataSets.get(bg.dataSet);
    if (!types) problem('breakGlass.dataSet', `unknown data set '${bg.dataSet}'`);
    if (!purposes.has(BREAK_GLASS_PURPOSE)) problem('breakGlass', 'breakGlass is configured but purpose BTG is not declared');
    if (types) {
      breakGlass = Object.freeze({
        dataSet: bg.dataSet,
        sessionMs: (bg.sessionMinutes ?? 60) * 60_000,
        minReasonLength: bg.minReasonLength ?? 20,
        reasons: bg.reasons ? Object.freeze([...bg.reasons]) : undefined,
        maxSessionsPerDay: bg.maxSessionsPerDay ?? 5,
        plan: Object.freeze({
          role: BREAK_GLASS_ROLE,
          purpose: BREAK_GLASS_PURPOSE,
          dataSet: bg.dataSet,
          grantedBy: 'breakGlass',
          // The session (not the token) limits break-glass to one patient: checked by its module.
          compartment: undefined,
          types,
        }),
      });
    }
  }

  if (problems.length > 0) return { ok: false, policy: undefined, problems };
  return {
    ok: true,
    problems: [],
    policy: Object.freeze({
      version: policyVersion(source),
      purposes,
      roles,
      breakGlass,
      restrictedZip3: new Set(restrictedZip3 ?? []),
    }),
  };
}

type Report = (path: string, message: string, at?: 'value' | 'key') => void;

function compilePurposes(raw: PolicyFile, problem: Report): Map<string, PurposeInfo> {
  const purposes = new Map<string, PurposeInfo>();
  for (const [code, spec] of Object.entries(raw.purposes)) {
    purposes.set(
      code,
      Object.freeze({
        code,
        display: spec.display,
        parent: spec.parent,
        minimumNecessary: spec.minimumNecessary ?? true,
      }),
    );
  }
  for (const [code, info] of purposes) {
    if (info.parent === undefined) continue;
    if (!purposes.has(info.parent)) {
      problem(`purposes.${code}.parent`, `unknown parent purpose '${info.parent}'`);
      continue;
    }
    // A cycle would make a purpose its own ancestor: every grant would cover it.
    const seen = new Set([code]);
    for (let p: string | undefined = info.parent; p !== undefined; p = purposes.get(p)?.parent) {
      if (seen.has(p)) {
        problem(`purposes.${code}.parent`, `purpose hierarchy has a cycle through '${code}'`);
        break;
      }
      seen.add(p);
    }
  }
  return purposes;
}

/** The granted code that covers `code`: itself, else its nearest granted ancestor. */
function nearestGrant(
  code: string,
  granted: Readonly<Record<string, string>>,
  purposes: ReadonlyMap<string, PurposeInfo>,
): string | undefined {
  const seen = new Set<string>();
  for (let c: string | undefined = code; c !== undefined && !seen.has(c); c = purposes.get(c)?.parent) {
    seen.add(c);
    if (Object.hasOwn(granted, c)) return c;
  }
  return undefined;
}

function compileDataSet(
  name: string,
  dataSetWithhold: readonly string[],
  rules: readonly RuleSpec[],
  hasSafeHarbor: boolean,
  compiler: ElementCompiler,
  problem: Report,
  deidentify?: DeidProfile,
): ReadonlyMap<string, ResourcePlan> {
  const base = `dataSets.${name}`;
  dataSetWithhold.forEach((label, i) => {
    if (!isValidLabel(label)) problem(`${base}.withhold[${i}]`, `invalid security label '${label}' (CODE or system|code)`);
    else if (unknownLabel(label) !== undefined) problem(`${base}.withhold[${i}]`, unknownLabel(label)!);
  });
  if (deidentify === 'safe-harbor' && !hasSafeHarbor) {
    // Without the list, restricted 3-digit areas (population < 20,000) would be disclosed.
    problem(`${base}.deidentify`, 'safe-harbor needs safeHarbor.restrictedZip3 in the policy');
  }
  const types = new Map<string, ResourcePlan>();
  const firstRule = new Map<string, number>();
  rules.forEach((rule, r) => {
    const where = `${base}.rules[${r}]`;
    rule.withhold?.forEach((label, i) => {
      if (!isValidLabel(label)) problem(`${where}.withhold[${i}]`, `invalid security label '${label}' (CODE or system|code)`);
      else if (unknownLabel(label) !== undefined) problem(`${where}.withhold[${i}]`, unknownLabel(label)!);
    });
    rule.transforms?.forEach((t, i) => {
      if (t.apply === 'zip3' && !hasSafeHarbor) {
        // Without the list, restricted 3-digit areas (population < 20,000) would be disclosed.
        problem(`${where}.transforms[${i}].apply`, 'zip3 needs safeHarbor.restrictedZip3 in the policy');
      }
    });
    rule.search?.forEach((p, i) => {
      if (!isVerbatimOnly(p) && !rule.types.some((t) => isR4ResourceType(t) && searchParam(t, p) !== undefined)) {
        problem(`${where}.search[${i}]`, `no type of this rule has a search parameter '${p}'`);
        return;
      }
      // A parameter that searches no element (full text, narrative, named queries) reaches past any element list.
      const refused = rule.types.map((t) => (isR4ResourceType(t) ? searchParam(t, p)?.refused : undefined)).find((r) => r !== undefined);
      if (refused !== undefined) problem(`${where}.search[${i}]`, `'${p}' cannot be enforced: it ${refused}`);
    });
    const withhold = compileLabelSet([...dataSetWithhold, ...(rule.withhold ?? [])]);
    const interactions = new Set(rule.interactions ?? DEFAULT_INTERACTIONS);
    if (interactions.has('relabel') && !interactions.has('update') && !interactions.has('patch')) {
      // relabel only widens update and patch: alone it grants nothing, which is surely not what was meant.
      problem(`${where}.interactions[${rule.interactions!.indexOf('relabel')}]`, 'relabel needs update or patch in the same rule');
    }
    const operations = new Set(rule.operations ?? []);
    rule.types.forEach((type, t) => {
      if (!isR4ResourceType(type)) {
        problem(`${where}.types[${t}]`, `unknown FHIR R4 resource type '${type}'`);
        return;
      }
      const prior = firstRule.get(type);
      if (prior !== undefined) {
        problem(`${where}.types[${t}]`, `type ${type} is already granted by ${base}.rules[${prior}] (one rule per type per data set)`);
        return;
      }
      firstRule.set(type, r);
      let elements: ElementPlan;
      try {
        elements = compiler.compileElementPlan(
          type,
          { elements: rule.elements, remove: rule.remove, transforms: rule.transforms },
          where,
        );
      } catch (e) {
        const err = e as { selector?: unknown; where?: unknown; message?: unknown };
        const message = typeof err.message === 'string' ? err.message : String(e);
        let at = where;
        let text = message;
        if (typeof err.where === 'string' && (err.where === where || err.where.startsWith(`${where}.`))) {
          // The element compiler names the exact node (`...rules[0].remove[1]`); keep only its reason.
          at = err.where;
          if (text.startsWith(`${err.where}: `)) text = text.slice(err.where.length + 2);
        } else if (typeof err.selector === 'string') {
          at = selectorPath(rule, where, err.selector);
        }
        problem(at, `${type}: ${text}`);
        return;
      }
      const searchParams = new Set<string>(CONTROL_SEARCH_PARAMS);
      for (const p of compiler.derivedSearchParams?.(type, elements) ?? []) searchParams.add(p);
      // A rule's search list applies to each of its types that has the parameter.
      for (const p of rule.search ?? []) if (isVerbatimOnly(p) || searchParam(type, p) !== undefined) searchParams.add(p);
      if (deidentify !== undefined) {
        // A search on a value the profile generalizes or removes would undo it (bisecting a date,
        // matching a name); ids and references are searched by pseudonym (src/policy/deid-request.ts).
        for (const p of [...searchParams]) {
          if (deidSearchable(deidentify, type, p)) continue;
          searchParams.delete(p);
          const i = rule.search?.indexOf(p) ?? -1;
          if (i >= 0) problem(`${where}.search[${i}]`, `${type}: '${p}' searches values the ${deidentify} profile generalizes or removes`);
        }
      }
      types.set(
        type,
        Object.freeze({
          resourceType: type,
          rule: where,
          interactions,
          operations,
          searchParams,
          withhold,
          elements,
          ...(deidentify === undefined ? {} : { deidentify }),
        }),
      );
    });
  });
  return types;
}

/** Parameters that only shape a search (their values are not element values). */
const SHAPING_PARAMS: ReadonlySet<string> = new Set(['_count', '_sort', '_include', '_revinclude', '_elements', '_summary', '_total']);

/**
 * Whether a de-identified caller may search on `param`: shaping parameters (their own values are
 * judged per request), and parameters whose every path the profile keeps, or, for references and
 * `_id`, pseudonymizes. Chains, `_has` and parameters the tables give no path for cannot be judged.
 */
export function deidSearchable(profile: DeidProfile, type: string, param: string): boolean {
  if (SHAPING_PARAMS.has(param)) return true;
  if (isVerbatimOnly(param)) return false;
  const info = searchParam(type, param);
  if (info === undefined || info.paths.length === 0) return false;
  let fate: Fate = 'keep';
  for (const path of info.paths) fate = worseFate(fate, pathFate(profile, type, path));
  if (fate === 'keep') return true;
  return fate === 'pseudonym' && (info.type === 'reference' || param === '_id');
}

/** Chained and reverse-chained parameters are granted only verbatim and not checked against tables. */
export function isVerbatimOnly(param: string): boolean {
  return param.includes('.') || param === '_has' || param.startsWith('_has:');
}

/** The policy path of the selector an element compiler complained about (first occurrence). */
function selectorPath(rule: RuleSpec, where: string, selector: string): string {
  const e = rule.elements?.indexOf(selector) ?? -1;
  if (e >= 0) return `${where}.elements[${e}]`;
  const r = rule.remove?.indexOf(selector) ?? -1;
  if (r >= 0) return `${where}.remove[${r}]`;
  const t = rule.transforms?.findIndex((x) => x.select === selector) ?? -1;
  if (t >= 0) return `${where}.transforms[${t}].select`;
  return where;
}
