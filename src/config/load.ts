/**
 * Configuration entry points: the gateway file, the policy file, and check-config over both.
 * Problems are `file:line:col message` lines (or `VARIABLE: message` for the environment).
 */
import { readGatewayConfig } from './gateway.js';
import { readPolicy } from './policy-file.js';

export { ConfigError } from './errors.js';
export { displayPath, loadGatewayConfig, readGatewayConfig } from './gateway.js';
export { type LoadedPolicy, loadPolicy, type PolicyOptions, readPolicy } from './policy-file.js';

/** Every problem in the gateway file, its environment overrides and the policy it names; [] = ok. */
export function checkConfig(gatewayFile: string, env: NodeJS.ProcessEnv): string[] {
  const gw = readGatewayConfig(gatewayFile, env);
  const problems = [...gw.problems];
  const policyFile = gw.config?.policyFile ?? gw.policyFile;
  if (policyFile !== undefined) {
    problems.push(...readPolicy(policyFile, { pseudonymKey: gw.config?.pseudonymKey }).problems);
  }
  return problems;
}
