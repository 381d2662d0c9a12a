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
  /** SIGTERM/SIGINT: in-flight requests get this long to finish before connections are cut (default 10 s). */
  readonly shutdownGraceMs?: number | undefined;
  /** A candidate policy evaluated on live traffic without being enforced (src/monitor/shadow.ts). */
  readonly shadowPolicy?: string | undefined;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface UpstreamConfig {
  /** FHIR base URL, no trailing slash. */
  readonly url: string;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly connections: number;
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
  readonly rolesClaim: string;
  readonly clockToleranceSec: number;
  /** Max verified tokens kept in memory (0 disables the cache). */
  readonly tokenCacheSize: number;
  /** Accept only tokens with this `typ` header when set (e.g. `at+jwt`). */
  readonly requiredTyp: string | undefined;
}

export type AuditConfig =
  | { readonly sink: 'file'; readonly path: string; readonly failOpen: boolean; readonly rotateBytes: number; readonly groupCommitMs: number }
  | { readonly sink: 'redis'; readonly url: string; readonly stream: string; readonly failOpen: boolean };

export interface AlertsConfig {
  readonly webhook: string | undefined;
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
}
