/**
 * Configuration entry points: the gateway file, the policy file, and check-config over both.
 * Problems are `file:line:col message` lines (or `VARIABLE: message` for the environment).
 */
import { readFileSync } from 'node:fs';
import { displayPath, readGatewayConfig } from './gateway.js';
import { readPolicy } from './policy-file.js';
import type { GatewayConfig } from './types.js';
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
    if (gw.config !== undefined && policy.loaded !== undefined) {
      problems.push(...roleMapProblems(gatewayFile, gw.config, policy.loaded.policy.roles, policy.loaded.file));
    }
  }
  return problems;
}

/**
 * `auth.roleMap` targets that are not roles of the policy: such a mapping would silently grant
 * nothing, so check-config names each one where it is written in the gateway file.
 */
function roleMapProblems(gatewayFile: string, config: GatewayConfig, roles: ReadonlyMap<string, unknown>, policyShown: string): string[] {
  const map = config.auth.roleMap;
  if (map === undefined) return [];
  const yaml = parseYaml(displayPath(gatewayFile), readFileSync(gatewayFile, 'utf8'));
  const out: string[] = [];
  for (const [name, target] of Object.entries(map)) {
    const list = typeof target === 'string' ? [target] : target;
    list.forEach((role, i) => {
      if (roles.has(role)) return;
      // A scalar target has no item `i`: locate() stops at the scalar itself.
      const pos = yaml.locate(['auth', 'roleMap', name, i]);
      out.push(formatProblem(yaml.file, pos, `auth.roleMap.${name}: '${role}' is not a role of the policy ${policyShown}`));
    });
  }
  return out;
}
