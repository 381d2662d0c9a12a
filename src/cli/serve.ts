/** `phi-gateway serve [--config F]`: production. Resolves (exit code) when told to stop. */
import { parseArgs } from 'node:util';
import { ConfigError, loadGatewayConfig } from '../config/load.js';
import { AuditSealError, type RunningGateway, startGateway } from '../server/runtime.js';
import type { CliIo } from './main.js';

export const USAGE = `usage: phi-gateway serve [--config F]
  Runs the gateway: the FHIR API on listen, /healthz, /readyz and /metrics on adminListen.
  --config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml; PHI_GATEWAY_* environment
  variables override its settings (a secret X also as X_FILE, read from a file).
  SIGHUP reloads the config and policy (refused, and the running ones kept, when invalid);
  SIGTERM or SIGINT drains in-flight requests, flushes and seals the audit trail and exits 0
  (1 when the trail could not be sealed; a second signal stops at once).
`;

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
 * requests finish within shutdownGraceMs, the audit sink is flushed and sealed; resolves 0, or 1
 * when the chain could not be sealed (a full disk, Redis gone: the trail ends unsealed). A second
 * SIGTERM/SIGINT while draining stops at once (exit 1).
 */
export function serveUntilSignal(gw: RunningGateway, io: CliIo): Promise<number> {
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
          // An unsealed chain is logged by the runtime; a supervisor or script sees the exit code.
          if (e instanceof AuditSealError) io.stderr.write('phi-gateway: stopped, but the audit chain could not be sealed (see the log)\n');
          else gw.logger.error({ err: e }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('SIGHUP', onHup);
    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
  });
}
