/**
 * config/policy.yaml: read, validate against the schema, compile (src/policy/compile.ts) and map
 * every problem to file:line:col. The result is all-or-nothing: a policy with any problem is
 * never partly applied.
 */
import { readFileSync } from 'node:fs';
import type { PolicyFile } from '../policy/model.js';
import { compilePolicy, type ElementCompiler } from '../policy/compile.js';
import type { CompiledPolicy } from '../policy/plan.js';
import { compileElementPlan, derivedSearchParams } from '../redact/compile.js';
import type { RedactContext } from '../redact/types.js';
import { ConfigError, deepFreeze } from './errors.js';
import { displayPath } from './gateway.js';
import { policySchema, validateSchema } from './schema.js';
import { formatProblem, type Position, parsePath, parseYaml, sortProblems } from './yaml.js';

export interface LoadedPolicy {
  readonly policy: CompiledPolicy;
  readonly raw: PolicyFile;
  /** The file as shown in messages (relative to the working directory when below it). */
  readonly file: string;
  /** Position of a policy path such as `dataSets.billing.rules[0]` or `roles.billing.purposes.HPAYMT`. */
  locate(path: string): Position | undefined;
  /** Redaction context built from the policy (restricted ZIP3) and the options (key, clock). */
  readonly context: RedactContext;
}

export interface PolicyOptions {
  readonly pseudonymKey?: string;
  readonly pseudonymPreviousKeys?: readonly string[];
  readonly now?: () => Date;
  /** The element compiler (default: src/redact/compile.ts); the mutation test passes a memoized one. */
  readonly elementCompiler?: ElementCompiler;
}

export const elementCompiler: ElementCompiler = { compileElementPlan, derivedSearchParams };

export function readPolicy(
  file: string,
  opts: PolicyOptions = {},
): { readonly loaded: LoadedPolicy | undefined; readonly problems: readonly string[] } {
  const shown = displayPath(file);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    return { loaded: undefined, problems: [formatProblem(shown, { line: 1, col: 1 }, `cannot read policy (${code})`)] };
  }
  return readPolicySource(shown, bytes, opts);
}

/**
 * The policy in `bytes`, shown as `shown` in messages: YAML, schema and compile problems, every
 * one of them (the mutation test runs the CLI's validation through here, without files).
 */
export function readPolicySource(
  shown: string,
  bytes: Uint8Array,
  opts: PolicyOptions = {},
): { readonly loaded: LoadedPolicy | undefined; readonly problems: readonly string[] } {
  const yaml = parseYaml(shown, Buffer.from(bytes).toString('utf8'));
  if (yaml.problems.length > 0) return { loaded: undefined, problems: yaml.problems };
  const data = yaml.data ?? {};
  const schemaProblems = validateSchema(policySchema, data);
  const problems = schemaProblems.map((p) => formatProblem(shown, p.at === 'key' ? yaml.locateKey(p.path) : yaml.locate(p.path), p.message));
  // The compiler also runs over a file with schema problems (it skips what has the wrong shape), so
  // one run names the misspelt key and the unknown purpose alike. What it says about a node the
  // schema already faulted would only repeat it.
  const faulted = schemaProblems.map((p) => p.subject ?? p.path);
  const isRecord = data !== null && typeof data === 'object' && !Array.isArray(data);
  // Freeze a copy so no consumer can edit the policy.
  const raw = deepFreeze(structuredClone(isRecord ? data : {})) as PolicyFile;
  let result: ReturnType<typeof compilePolicy>;
  try {
    result = compilePolicy(raw, bytes, opts.elementCompiler ?? elementCompiler);
  } catch (e) {
    // A shape the compiler did not expect: only possible after schema problems, which say why.
    if (schemaProblems.length === 0) throw e;
    return { loaded: undefined, problems: sortProblems(problems) };
  }
  for (const p of result.problems) {
    const path = parsePath(p.path);
    if (faulted.some((f) => isPrefix(f, path))) continue;
    problems.push(formatProblem(shown, p.at === 'key' ? yaml.locateKey(path) : yaml.locate(path), `${p.path}: ${p.message}`));
  }
  if (problems.length > 0 || !result.ok) return { loaded: undefined, problems: sortProblems(problems) };
  const now = opts.now ?? (() => new Date());
  const loaded: LoadedPolicy = Object.freeze({
    policy: result.policy,
    raw,
    file: shown,
    locate(path: string) {
      const segments = parsePath(path);
      const pos = yaml.locate(segments);
      // locate() falls back to the nearest ancestor; only answer for paths that exist.
      return pathExists(data, segments) ? pos : undefined;
    },
    context: Object.freeze({
      restrictedZip3: result.policy.restrictedZip3 ?? new Set<string>(),
      pseudonymKey: opts.pseudonymKey === undefined ? undefined : new TextEncoder().encode(opts.pseudonymKey),
      pseudonymPreviousKeys: (opts.pseudonymPreviousKeys ?? []).map((k) => new TextEncoder().encode(k)),
      now,
    }),
  });
  return { loaded, problems: [] };
}

export function loadPolicy(file: string, opts: PolicyOptions = {}): LoadedPolicy {
  const r = readPolicy(file, opts);
  if (!r.loaded) throw new ConfigError(r.problems);
  return r.loaded;
}

function isPrefix(prefix: ReadonlyArray<string | number>, path: ReadonlyArray<string | number>): boolean {
  return prefix.length <= path.length && prefix.every((seg, i) => String(seg) === String(path[i]));
}

function pathExists(data: unknown, path: ReadonlyArray<string | number>): boolean {
  let cur: unknown = data;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, seg)) return false;
    cur = (cur as Record<string | number, unknown>)[seg];
  }
  return true;
}
