/**
 * `phi-gateway audit ship [--config F] [--once]`: the SIEM forwarder alone, in a process of its
 * own, on the cursors `serve` would use (docs/siem.md). With a file sink each target's cursor is
 * locked: a target another process delivers (a running `serve` with the same `siem` section, or a
 * second ship) is refused at start. With a Redis sink this process is one more consumer in each
 * target's group (`<host>-ship`), sharing the work with the gateways.
 * Exit codes: 0 stopped by a signal, or (--once) every target caught up; 1 a target failed or is
 * held by another process; 2 usage or configuration error.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadGatewayConfig } from '../config/load.js';
import { resolveConfigPath } from '../config/env.js';
import type { GatewayConfig } from '../config/types.js';
import { createLogger, flushLogger } from '../server/logger.js';
import { CursorLockedError } from '../siem/cursor.js';
import { defaultConsumer } from '../siem/cursor-redis.js';
import { openTrailSource, SiemForwarder, type SiemTargetStatus } from '../siem/forwarder.js';
import { createTarget } from '../siem/targets.js';
import type { TargetConfig } from '../siem/types.js';
import type { AuditCliIo } from './audit.js';

export const SHIP_USAGE = `usage: phi-gateway audit ship [--config F] [--once]
  Delivers the audit trail to the SIEM targets of the gateway config's siem section, from the
  same persisted cursors serve uses, until SIGTERM/SIGINT (the batch in flight finishes and its
  cursor is kept). --once: deliver until every target has caught up, then exit (0 caught up,
  1 a target failed). Do not run it and a serve with the same siem targets on a file sink: each
  target's cursor is locked, and a target held by another process is refused (exit 1). On a Redis
  sink it joins each target's consumer group beside the gateways.
`;

function summary(s: readonly SiemTargetStatus[]): string {
  return s.map((t) => `${t.name}: ${t.delivered} delivered, lag ${t.lag}${t.lastError && t.failing ? `, failing (${t.lastError})` : ''}\n`).join('');
}

export async function runShip(argv: string[], io: AuditCliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { config: { type: 'string' }, once: { type: 'boolean' } } });
  let config: GatewayConfig;
  try {
    config = loadGatewayConfig(resolveConfigPath(values.config, io.env), io.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const p of e.problems) io.stderr.write(`${p}\n`);
      return 2;
    }
    throw e;
  }
  const siem = config.siem;
  if (!siem || siem.targets.length === 0) {
    io.stderr.write('phi-gateway audit ship: the gateway config has no siem targets\n');
    return 2;
  }
  const logger = createLogger(config.logLevel);
  const consumer = defaultConsumer('ship');
  // Every cursor is taken before anything is delivered: a target held elsewhere refuses the start.
  const sources = new Map<string, Awaited<ReturnType<typeof openTrailSource>>>();
  try {
    for (const t of siem.targets) sources.set(t.name, await openTrailSource(config.audit, siem, t, logger, consumer));
  } catch (e) {
    await Promise.allSettled([...sources.values()].map((s) => s.close()));
    if (e instanceof CursorLockedError) {
      io.stderr.write(`phi-gateway audit ship: ${e.message}; stop it first (serve with this siem section, or another audit ship)\n`);
      return 1;
    }
    throw e;
  }
  const forwarder = new SiemForwarder({
    siem,
    audit: config.audit,
    logger,
    consumer,
    createTarget: (t) => createTarget(t, { logger }),
    // The sources opened above, once each; a reopen after a failure goes through the usual path.
    openSource: async (t: TargetConfig) => {
      const s = sources.get(t.name);
      sources.delete(t.name);
      return s ?? openTrailSource(config.audit, siem, t, logger, consumer);
    },
  });
  if (values.once) {
    const ok = await forwarder.drain();
    await forwarder.stop();
    io.stdout.write(summary(forwarder.status()));
    await flushLogger(logger);
    return ok ? 0 : 1;
  }
  forwarder.start();
  logger.info({ siem: { targets: siem.targets.map((t) => t.name), consumer: config.audit.sink === 'redis' ? consumer : undefined } }, 'audit ship started');
  // Timers of the forwarder are unref'd: this keeps the process alive until a signal.
  const keepAlive = setInterval(() => logger.info({ siem: { status: forwarder.status() } }, 'audit ship status'), 60_000);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  clearInterval(keepAlive);
  await forwarder.stop();
  logger.info({ siem: { status: forwarder.status() } }, 'audit ship stopped');
  await flushLogger(logger);
  return 0;
}
