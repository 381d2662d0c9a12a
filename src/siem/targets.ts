/**
 * The delivery targets of gateway.yaml `siem.targets`: syslog over TLS (src/siem/syslog.ts) and a
 * FHIR Audit Record Repository (src/siem/fhir-target.ts). A target connects lazily: creating one
 * opens nothing, so a receiver that is down only fails deliveries.
 */
import type { Logger } from 'pino';
import { createFhirTarget } from './fhir-target.js';
import { createSyslogTarget, errorCode } from './syslog.js';
import type { Target, TargetConfig } from './types.js';

export { AUDIT_EVENT_TAG_SYSTEM } from './fhir-target.js';
export { SD_ID } from './syslog.js';

export interface TargetOptions {
  readonly logger: Logger;
  /** Clock for token refresh (client credentials). */
  readonly now?: (() => number) | undefined;
}

export function createTarget(config: TargetConfig, opts: TargetOptions): Target {
  const logger = opts.logger.child({ siemTarget: config.name });
  switch (config.type) {
    case 'syslog':
      return createSyslogTarget(config, { logger });
    case 'fhir':
      return createFhirTarget(config, { logger, now: opts.now });
  }
}

/**
 * What a failed delivery says about itself, in fixed words: the error's code (`ECONNREFUSED`,
 * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `http-503`, `entry-400`...) or `error`; never its message.
 */
export function deliveryErrorCode(e: unknown): string {
  return errorCode(e);
}
