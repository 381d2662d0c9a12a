/**
 * Delivery of the audit trail to a SIEM (IHE ATNA): a forwarder reads the committed trail (file
 * segments, or the Redis stream through a consumer group) from a persisted cursor and delivers
 * each record, at least once, to each configured target, retrying with backoff: never dropping a
 * record, never blocking a request. Each target has its own cursor, so one receiver's outage
 * delays only its own deliveries.
 */
import type { ChainedRecord } from '../audit/record.js';

/** Which records a target receives (every field optional; all given must match). */
export interface TargetFilter {
  /** Record kinds (`fhir`, `break-glass-start`, `access-request`...). */
  readonly kinds?: readonly string[] | undefined;
  /** `allow`, `deny`, `error`. */
  readonly decisions?: readonly string[] | undefined;
  /** Only records of break-glass access (a `breakGlass` member, or a break-glass kind). */
  readonly breakGlassOnly?: boolean | undefined;
}

/** RFC 5424 syslog over TLS (RFC 5425 octet-counted framing), as IHE ATNA's secure transport. */
export interface SyslogTargetConfig {
  readonly name: string;
  readonly type: 'syslog';
  /** `tls://host:port` (6514 is the registered port). */
  readonly url: string;
  /** PEM files (absolute paths): the receiver's CA; a client certificate and key for mutual TLS. */
  readonly tls?: { readonly ca?: string | undefined; readonly cert?: string | undefined; readonly key?: string | undefined; readonly serverName?: string | undefined } | undefined;
  /** `balp`: the IHE BALP AuditEvent JSON as the MSG (as ATNA's FHIR feed does); `record`: the trail record's JSON. */
  readonly format: 'balp' | 'record';
  /** RFC 5424 APP-NAME (default `phi-gateway`) and HOSTNAME (default the machine's). */
  readonly appName?: string | undefined;
  readonly hostname?: string | undefined;
  readonly filter?: TargetFilter | undefined;
}

/** FHIR AuditEvents created (in batch Bundles) on an Audit Record Repository. */
export interface FhirTargetConfig {
  readonly name: string;
  readonly type: 'fhir';
  /** The repository's FHIR base URL. */
  readonly url: string;
  /** Its own credentials (never the callers' and never the upstream's unless configured so). */
  readonly auth:
    | { readonly type: 'none' }
    | { readonly type: 'bearer'; readonly token: string }
    | { readonly type: 'client-credentials'; readonly tokenUrl: string; readonly clientId: string; readonly clientSecret: string; readonly scope?: string | undefined };
  readonly tls?: { readonly ca?: string | undefined; readonly cert?: string | undefined; readonly key?: string | undefined } | undefined;
  /** AuditEvents per batch Bundle (default 50). */
  readonly batchSize?: number | undefined;
  readonly filter?: TargetFilter | undefined;
}

export type TargetConfig = SyslogTargetConfig | FhirTargetConfig;

/** gateway.yaml `siem`. */
export interface SiemConfig {
  readonly targets: readonly TargetConfig[];
  /**
   * Where cursors are kept for a file audit sink (default: beside the audit directory, `data/siem`).
   * With a Redis sink each target is a consumer group on the stream (`phi-gateway-siem:<name>`).
   */
  readonly stateDir?: string | undefined;
  /** Records read per round (default 200). */
  readonly batchSize?: number | undefined;
  /** First retry delay (default 1 s), doubled per failure up to maxDelayMs (default 5 min). */
  readonly baseDelayMs?: number | undefined;
  readonly maxDelayMs?: number | undefined;
  /** How often the trail is polled for new records when idle (default 1 s). */
  readonly pollMs?: number | undefined;
}

/**
 * One delivery target. `deliver` resolves only once every record of the batch was handed over
 * (syslog: written and flushed on the TLS socket; FHIR: the batch answered with a 2xx for every
 * entry); it throws on any failure, and the forwarder retries the whole batch later (so a
 * receiver may see a record twice only when a failure hit mid-batch: the record id, in each
 * message, tells duplicates apart).
 */
export interface Target {
  readonly name: string;
  readonly type: TargetConfig['type'];
  deliver(records: readonly ChainedRecord[]): Promise<void>;
  close(): Promise<void>;
}

/** What /metrics and /readyz show per target. */
export interface TargetStatus {
  readonly name: string;
  readonly type: TargetConfig['type'];
  readonly delivered: number;
  readonly failures: number;
  /** Records committed to the trail and not yet delivered to this target (as last measured). */
  readonly lag: number;
  /** Age of the oldest undelivered record, seconds (0 when none). */
  readonly oldestUndeliveredAgeSec: number;
  /** The last failure, in fixed words (an error code; never a message that could echo a secret). */
  readonly lastError: string | undefined;
  readonly lastDeliveredAt: string | undefined;
}
