/**
 * Delivery of the audit trail to SIEM targets (gateway.yaml `siem`): the forwarder that `serve`
 * runs beside the gateway and `phi-gateway audit ship` runs alone. docs/siem.md is the operator's
 * guide.
 */
import type { Logger } from 'pino';
import type { GatewayConfig } from '../config/types.js';
import { SiemForwarder } from './forwarder.js';
import { createTarget } from './targets.js';

export type { SiemTargetStatus } from './forwarder.js';
export { SiemForwarder } from './forwarder.js';
export type { TargetStatus } from './types.js';

export interface OpenSiemOptions {
  readonly logger: Logger;
  /** Redis consumer name (default the host name). */
  readonly consumer?: string | undefined;
}

/** A started forwarder for the configured targets, or undefined when none is configured. */
export function openSiem(config: GatewayConfig, opts: OpenSiemOptions): SiemForwarder | undefined {
  const siem = config.siem;
  if (!siem || siem.targets.length === 0) return undefined;
  const logger = opts.logger;
  const forwarder = new SiemForwarder({
    siem,
    audit: config.audit,
    logger,
    consumer: opts.consumer,
    createTarget: (t) => createTarget(t, { logger }),
  });
  forwarder.start();
  logger.info({ siem: { targets: siem.targets.map((t) => ({ name: t.name, type: t.type })) } }, 'SIEM forwarder started');
  return forwarder;
}
