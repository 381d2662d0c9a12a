/**
 * Configuration entry points: the gateway file, the policy file, and check-config over both.
 * Problems are `file:line:col message` lines (or `VARIABLE: message` for the environment).
 */
import { readFileSync } from 'node:fs';
import { didYouMean } from './errors.js';
import { displayPath, readGatewayConfig } from './gateway.js';
import { readPolicy } from './policy-file.js';
import { formatProblem, parseYaml } from './yaml.js';

export { ConfigError } from './errors.js';
export { displayPath, loadGatewayConfig, readGatewayConfig } from './gateway.js';
export { type LoadedPolicy, loadPolicy, type PolicyOptions, readPolicy } from './policy-file.js';

/** Every problem in the gateway file, its environment overrides and the policy it names; [] = ok. */
export function checkConfig(gatewayFile: string, env: NodeJS.ProcessEnv): string[] {
  const gw = readGatewayConfig(gatewayFile, env);
  const problems = [...gw.problems];
  const policyFile = gw.config?.policyFile ?? gw.policyFile;
  if (policyFile !== undefined) {
    const policy = readPolicy(policyFile, { pseudonymKey: gw.config?.pseudonymKey });
    problems.push(...policy.problems);
    // Checked from the file itself, so that other problems of the gateway file do not hide these.
    if (policy.loaded !== undefined) problems.push(...roleMapProblems(gatewayFile, policy.loaded.policy.roles, policy.loaded.file));
  }
  return problems;
}

/**
 * `auth.roleMap` targets that are not roles of the policy: such a mapping would silently grant
 * nothing, so check-config names each one where it is written in the gateway file.
 */
function roleMapProblems(gatewayFile: string, roles: ReadonlyMap<string, unknown>, policyShown: string): string[] {
  let text: string;
  try {
    text = readFileSync(gatewayFile, 'utf8');
  } catch {
    return [];
  }
  const yaml = parseYaml(displayPath(gatewayFile), text);
  const auth = (yaml.data as { auth?: { roleMap?: unknown } } | null | undefined)?.auth;
  const map = auth !== null && typeof auth === 'object' ? auth.roleMap : undefined;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) return [];
  const out: string[] = [];
  for (const [name, target] of Object.entries(map)) {
    const list: unknown[] = typeof target === 'string' ? [target] : Array.isArray(target) ? target : [];
    list.forEach((role, i) => {
      // Not a string: the schema says so.
      if (typeof role !== 'string' || roles.has(role)) return;
      // A scalar target has no item `i`: locate() stops at the scalar itself.
      const pos = yaml.locate(['auth', 'roleMap', name, i]);
      const hint = didYouMean(role, roles.keys());
      out.push(formatProblem(yaml.file, pos, `auth.roleMap.${name}: '${role}' is not a role of the policy ${policyShown}${hint}`));
    });
  }
  return out;
}
