/**
 * The canonical description of one client request, produced by `classify()` (pure). Everything
 * downstream (decision, forwarding, audit) reads this, never the raw URL: what is forwarded is
 * exactly what was decided.
 */
export type Interaction =
  | 'capabilities' // GET /metadata
  | 'read'
  | 'vread'
  | 'search-type' // GET /Type?..., POST /Type/_search
  | 'search-system' // GET /?... (denied by default)
  | 'search-compartment' // GET /Patient/123/Observation?...
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'batch'
  | 'transaction'
  | 'operation'; // $everything, $graphql, $export, ...

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface ClassifiedRequest {
  readonly method: HttpMethod;
  readonly interaction: Interaction;
  /** Canonical resource type (exact R4 spelling), when the request targets one. */
  readonly resourceType: string | undefined;
  readonly id: string | undefined;
  readonly versionId: string | undefined;
  /** Operation name including `$`, e.g. `$everything`. */
  readonly operation: string | undefined;
  /** For `search-compartment`: the compartment (`Patient/123` → type Patient, id 123). */
  readonly compartment: { readonly type: string; readonly id: string } | undefined;
  /** Search / operation parameters, URL and form body merged, decoded, in order. */
  readonly params: ReadonlyArray<readonly [string, string]>;
  /** Path to forward, relative to the upstream base, percent-encoded canonically, e.g. `/Patient/123`. */
  readonly upstreamPath: string;
  /** Query string to forward (without `?`), canonical encoding; `_format` removed. */
  readonly upstreamQuery: string;
  /** Parsed JSON body for writes, batch/transaction and operations; undefined otherwise. */
  readonly body: unknown;
  /** Entries of a batch/transaction, each classified the same way. */
  readonly entries: readonly ClassifiedRequest[] | undefined;
}
