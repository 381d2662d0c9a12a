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
  // Reloads re-read the same file with the same environment overrides, and follow file changes.
  const gw = await startGateway(config, { reloadConfig: () => loadGatewayConfig(file, io.env), watch: true });
  const code = await serveUntilSignal(gw, io);
  // Everything is closed; a handle some library leaked must not keep a stopped gateway alive.
  setTimeout(() => process.exit(code), 2000).unref();
  return code;
}

/**
 * SIGHUP reloads the configuration (the runtime logs what was applied, what needs a restart, or
 * why the reload was refused). SIGTERM/SIGINT close gracefully: readiness turns 503, in-flight
 * requests finish within shutdownGraceMs, the audit sink is flushed; resolves 0. A second
 * SIGTERM/SIGINT while draining stops at once (exit 1).
 */
export function serveUntilSignal(gw: RunningGateway, _io: CliIo): Promise<number> {
  return new Promise((resolve) => {
    const onHup = () => {
      try {
        gw.reloadWithReport('SIGHUP');
      } catch {
        // Logged (every file:line:col problem) and counted by the runtime; the running config stays.
      }
    };
    let stopping = false;
    const onStop = (signal: NodeJS.Signals) => {
      if (stopping) {
        gw.logger.error({ signal }, 'second stop signal while draining: exiting now; in-flight requests are cut');
        process.exit(1);
      }
      stopping = true;
      gw.logger.info({ signal }, 'shutting down');
      process.off('SIGHUP', onHup);
      gw.close().then(
        () => {
          process.off('SIGTERM', onStop);
          process.off('SIGINT', onStop);
          resolve(0);
        },
        (e: unknown) => {
          gw.logger.error({ err: e }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('SIGHUP', onHup);
    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
  });
}
