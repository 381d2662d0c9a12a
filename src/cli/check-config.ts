/** `phi-gateway check-config [--config F]`: validate the gateway and policy files, report every problem. */
import { parseArgs } from 'node:util';
import { resolveConfigPath } from '../config/env.js';
import { checkConfig, displayPath, loadGatewayConfig, loadPolicy } from '../config/load.js';
import { configWarnings } from '../config/gateway.js';

export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

export const USAGE = `usage: phi-gateway check-config [--config F]
  Validates the gateway config and the policy it names without starting anything: unknown keys,
  wrong types, unsafe values, unknown label codes, roles, purposes, types and elements. Every
  problem is reported at once as file:line:col on stderr, with a "did you mean" where a known name
  is close. A valid config weaker than production should be (e.g. unsigned audit checkpoints)
  gets a warning line on stderr. Environment overrides (PHI_GATEWAY_*) apply as they do for serve.
  --config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml. Exit 0 valid, 1 problems.
`;

export async function run(argv: string[], io: Io): Promise<number> {
  let values: { config?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { config: { type: 'string' } }, strict: true, allowPositionals: false }));
  } catch (e) {
    io.stderr.write(`check-config: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  const file = resolveConfigPath(values.config, io.env);
  const problems = checkConfig(file, io.env);
  if (problems.length > 0) {
    for (const p of problems) io.stderr.write(`${p}\n`);
    io.stderr.write(`check-config: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n`);
    return 1;
  }
  const config = loadGatewayConfig(file, io.env);
  const loaded = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey });
  // Valid but weaker than production should be: said, not refused.
  for (const w of configWarnings(config)) io.stderr.write(`warning: ${w}\n`);
  io.stdout.write(`ok: ${displayPath(file)}, ${loaded.file} (policy version ${loaded.policy.version})\n`);
  return 0;
}
