/** `phi-gateway check-config [--config F]`: validate the gateway and policy files, report every problem. */
import { parseArgs } from 'node:util';
import { resolveConfigPath } from '../config/env.js';
import { checkConfig, displayPath, loadGatewayConfig, loadPolicy } from '../config/load.js';

export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

export async function run(argv: string[], io: Io): Promise<number> {
  let values: { config?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { config: { type: 'string' } }, strict: true, allowPositionals: false }));
  } catch (e) {
    io.stderr.write(`check-config: ${(e as Error).message}\nusage: phi-gateway check-config [--config F]\n`);
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
  io.stdout.write(`ok: ${displayPath(file)}, ${loaded.file} (policy version ${loaded.policy.version})\n`);
  return 0;
}
