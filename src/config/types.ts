import type { SiemConfig } from '../siem/types.js';

/**
 * config/gateway.yaml after validation, defaults and environment overrides (SPEC 2), frozen.
 * Relative paths are resolved against the directory of the file that names them.
 */
export interface GatewayConfig {
  /** Absolute path of the gateway file this came from (undefined when built in code). */
  readonly file: string | undefined;
  /** Absolute path of the policy file. */
  readonly policyFile: string;
  readonly listen: HostPort;
  readonly admin: HostPort;
  /** Public base URL of the FHIR API as clients see it, e.g. `http://localhost:8080/fhir`. */
  readonly publicBaseUrl: string;
  readonly upstream: UpstreamConfig;
  readonly auth: AuthConfig;
  readonly audit: AuditConfig;
  readonly alerts: AlertsConfig;
  readonly limits: LimitsConfig;
  readonly paging: PagingConfig;
  /** HMAC key for pseudonyms (from `pseudonymKey`, `pseudonymKeyFile` or PHI_GATEWAY_PSEUDONYM_KEY). */
  readonly pseudonymKey: string | undefined;
  /** Keys of earlier rotations (`pseudonymPreviousKeysFile`, one per line): pseudonyms issued under them still resolve. */
  readonly pseudonymPreviousKeys?: readonly string[];
  readonly logLevel: string;
  /** TLS for the proxy listener (absolute PEM paths); plain HTTP when absent. */
  readonly tls?: { readonly cert: string; readonly key: string } | undefined;
  /**
   * Load balancers / reverse proxies (IPs or CIDRs) whose X-Forwarded-For is believed: the client
   * address recorded is then the one they report. Absent or empty: the socket peer, headers ignored.
   */
  readonly trustedProxies?: readonly string[] | undefined;
  /** SIGTERM/SIGINT: in-flight requests get this long to finish before connections are cut (default 10 s). */
  readonly shutdownGraceMs?: number | undefined;
  /** A candidate policy evaluated on live traffic without being enforced (src/monitor/shadow.ts). */
  readonly shadowPolicy?: string | undefined;
  /** Browser origins allowed to call the FHIR API (CORS); absent or empty: none. */
  readonly cors?: CorsConfig | undefined;
  /** SMART configuration fields set by hand; absent ones are derived from the issuer's OpenID discovery. */
  readonly smart?: SmartConfig | undefined;
  /** Delivery of the audit trail to SIEM targets (src/siem); absent: nothing is forwarded. */
  readonly siem?: SiemConfig | undefined;
}

export interface CorsConfig {
  /** Exact origins (`https://app.example:8443`), compared byte for byte with the Origin header. */
  readonly origins: readonly string[];
}

export interface SmartConfig {
  readonly authorizationEndpoint?: string | undefined;
  readonly tokenEndpoint?: string | undefined;
  readonly revocationEndpoint?: string | undefined;
  readonly introspectionEndpoint?: string | undefined;
  readonly managementEndpoint?: string | undefined;
  readonly registrationEndpoint?: string | undefined;
  readonly scopesSupported?: readonly string[] | undefined;
  readonly capabilities?: readonly string[] | undefined;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface UpstreamConfig {
  /** FHIR base URL, no trailing slash. */
  readonly url: string;
  /**
   * Other bases (no trailing slash) the upstream names itself by in paging links, fullUrls and
   * Locations: the public address HAPI or Azure is configured with, when the gateway reaches it
   * under another. Links under them are read as under `url`; links anywhere else stay refused.
   */
  readonly linkBases?: readonly string[];
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  /**
   * Wall-clock bound on all upstream exchanges of one client request (queueing for a connection,
   * headers and body, every upstream page of a gateway-paged search), next to the idle timeouts
   * above: an upstream that drips bytes resets those, never this. Past it: 504 upstream-timeout.
   */
  readonly totalTimeoutMs: number;
  readonly connections: number;
  /**
   * Whether the free text of the upstream's OperationOutcomes (`diagnostics`, `details.text`) reaches
   * clients in 4xx answers. Default false: that text may echo PHI or upstream internals; the coded
   * parts (severity, code, details.coding) always do.
   */
  readonly errorText?: boolean;
  readonly auth:
    | { readonly type: 'none' }
    | { readonly type: 'bearer'; readonly token: string }
    | {
        readonly type: 'client-credentials';
        readonly tokenUrl: string;
        readonly clientId: string;
        readonly clientSecret: string;
        readonly scope?: string;
      };
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string };
}

export interface AuthConfig {
  readonly issuer: string;
  readonly audience: string;
  /** Exactly one of jwksUri / jwksFile. */
  readonly jwksUri: string | undefined;
  readonly jwksFile: string | undefined;
  readonly algorithms: readonly string[];
  /** Claim name(s) or dotted path(s) holding the caller's IdP roles; several are united. */
  readonly rolesClaim: string | readonly string[];
  /** IdP role/group name -> policy role(s). When set, only mapped names become roles. */
  readonly roleMap?: Readonly<Record<string, string | readonly string[]>> | undefined;
  /** Claims naming the SMART patient context (default [patient]); `fhirUser` is read as a reference. */
  readonly patientClaims?: readonly string[] | undefined;
  /** A scope claim naming no SMART scope: `refuse` (default, the token may do nothing) or `roles-only`. */
  readonly scopelessTokens?: 'refuse' | 'roles-only' | undefined;
  /** The claim naming the caller's own FHIR resource (default `fhirUser`): whose care relationships apply. */
  readonly fhirUserClaim?: string | undefined;
  readonly clockToleranceSec: number;
  /** Max verified tokens kept in memory (0 disables the cache). */
  readonly tokenCacheSize: number;
  /** Accept only tokens with this `typ` header when set (e.g. `at+jwt`). */
  readonly requiredTyp: string | undefined;
}

export type AuditConfig = (
  | { readonly sink: 'file'; readonly path: string; readonly failOpen: boolean; readonly rotateBytes: number; readonly groupCommitMs: number }
  | {
      readonly sink: 'redis';
      readonly url: string;
      readonly stream: string;
      readonly failOpen: boolean;
      /** Per-command timeout of every Redis client a request waits on (default 1000 ms): a stalled Redis answers 503 within about this. */
      readonly commandTimeoutMs?: number | undefined;
    }
) & {
  /** Signed checkpoints of the chain (src/audit/checkpoint.ts); absent: no key, the chain is unkeyed. */
  readonly checkpoint?: AuditCheckpointConfig | undefined;
};

export interface AuditCheckpointConfig {
  /** Absolute path of the Ed25519 private key (PKCS#8 PEM), from `keyFile` or PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE. */
  readonly keyFile: string;
  /** A checkpoint after at most this many records (default 1000)... */
  readonly everyRecords: number;
  /** ...or this many seconds after the last one when there are new records (default 60). */
  readonly everySeconds: number;
}

export interface AlertsConfig {
  readonly webhook: string | undefined;
  /**
   * Shared secret signing every webhook POST (`X-Phi-Gateway-Signature`, HMAC-SHA256), from
   * `alerts.webhookSecretFile` or PHI_GATEWAY_ALERT_WEBHOOK_SECRET[_FILE]. Unset: alerts go unsigned.
   */
  readonly webhookSecret?: string | undefined;
  readonly redisChannel: string | undefined;
}

export interface PagingConfig {
  /** Page size when the client sends no `_count`. */
  readonly defaultCount: number;
  /** A larger `_count` is lowered to this. */
  readonly maxCount: number;
  /** Upstream pages read for one client page at most (refilling past withheld resources). */
  readonly maxUpstreamPages: number;
  /** Upstream page size at least (the client's page + 1 when larger). */
  readonly minUpstreamCount: number;
  readonly tokenTtlSeconds: number;
  /** Seals continuation tokens (every replica needs the same); undefined = random per process. */
  readonly key: string | undefined;
}

export interface LimitsConfig {
  readonly requestBodyBytes: number;
  readonly responseBodyBytes: number;
  readonly decompressedBytes: number;
  /** Requests handled at once; more are refused with 503 gateway-busy (default 256). */
  readonly maxInflightRequests?: number | undefined;
  /** Upstream body bytes held by all requests in flight together; beyond it, 503 gateway-busy (default 256 MiB). */
  readonly bufferBytes?: number | undefined;
  /** Entries a batch or transaction may hold (default 100); more: 413 bundle-too-large. */
  readonly bundleEntries?: number | undefined;
}
