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
  const yaml = parseYaml(shown, bytes.toString('utf8'));
  if (yaml.problems.length > 0) return { loaded: undefined, problems: yaml.problems };
  const data = yaml.data ?? {};
  const schemaProblems = validateSchema(policySchema, data);
  if (schemaProblems.length > 0) {
    const problems = schemaProblems.map((p) =>
      formatProblem(shown, p.at === 'key' ? yaml.locateKey(p.path) : yaml.locate(p.path), p.message),
    );
    return { loaded: undefined, problems: sortProblems(problems) };
  }
  // From here on `data` has the schema's shape; freeze it so no consumer can edit the policy.
  const raw = deepFreeze(structuredClone(data)) as PolicyFile;
  const result = compilePolicy(raw, bytes, elementCompiler);
  if (!result.ok) {
    const problems = result.problems.map((p) => {
      const path = parsePath(p.path);
      return formatProblem(shown, p.at === 'key' ? yaml.locateKey(path) : yaml.locate(path), `${p.path}: ${p.message}`);
    });
    return { loaded: undefined, problems: sortProblems(problems) };
  }
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

function pathExists(data: unknown, path: ReadonlyArray<string | number>): boolean {
  let cur: unknown = data;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, seg)) return false;
    cur = (cur as Record<string | number, unknown>)[seg];
  }
  return true;
}
