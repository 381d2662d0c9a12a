/** `phi-gateway serve [--config F]`: production. Resolves (exit code) when told to stop. */
import { parseArgs } from 'node:util';
import { ConfigError, loadGatewayConfig } from '../config/load.js';
import { type RunningGateway, startGateway } from '../server/runtime.js';
import type { CliIo } from './main.js';

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string' } }, strict: true });
  const file = values.config ?? io.env.PHI_GATEWAY_CONFIG ?? 'config/gateway.yaml';
  let config: ReturnType<typeof loadGatewayConfig>;
  try {
    config = loadGatewayConfig(file, io.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const p of e.problems) io.stderr.write(`${p}\n`);
      return 1;
    }
    throw e;
  }
  const gw = await startGateway(config);
  return serveUntilSignal(gw, io);
}

/** SIGHUP reloads the policy; SIGTERM/SIGINT close gracefully (in-flight requests finish, audit flushes). */
export function serveUntilSignal(gw: RunningGateway, _io: CliIo): Promise<number> {
  return new Promise((resolve) => {
    const onHup = () => {
      try {
        const version = gw.reload();
        gw.logger.info({ policyVersion: version }, 'policy reloaded');
      } catch (e) {
        gw.logger.error({ err: e, problems: (e as ConfigError).problems }, 'policy reload refused; the running policy stays in force');
      }
    };
    const onStop = (signal: string) => {
      gw.logger.info({ signal }, 'shutting down');
      process.off('SIGHUP', onHup);
      gw.close().then(
        () => resolve(0),
        (e: unknown) => {
          gw.logger.error({ err: e }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('SIGHUP', onHup);
    process.once('SIGTERM', () => onStop('SIGTERM'));
    process.once('SIGINT', () => onStop('SIGINT'));
  });
}
