import type { Interaction } from '../policy/request.js';

/**
 * One audit record per request (SPEC 5). Written, durably, before the response is released.
 * Holds identifiers (resource ids, patient ids) but never resource content or tokens.
 */
export interface AuditRecord {
  /** Equals the response's X-Request-Id. */
  readonly id: string;
  /** ISO 8601 time the request arrived. */
  readonly time: string;
  readonly kind:
    | 'fhir'
    | 'export'
    /** `phi-gateway audit export` run from the CLI: who ran it (OS user, host), filters, count, output. */
    | 'audit-export'
    | 'break-glass-review'
    | 'break-glass-start'
    | 'break-glass-end'
    | 'alert'
    | 'anomaly'
    /** Elevated access on request (src/access): a request, decision, revocation or listing; `details.action` says which. */
    | 'access-request'
    /** An approved access grant reached its expiry (written once, by whichever replica's sweep saw it first). */
    | 'access-grant-expired'
    /** Shadow mode: a candidate policy would have treated this request differently (src/monitor/shadow.ts). */
    | 'shadow-diff'
    /** Written by the sink itself as a writer's last record on a clean close (src/audit/chain.ts). */
    | 'writer-seal'
    /** Written by the sink itself: a signed chain head (src/audit/checkpoint.ts). */
    | 'writer-checkpoint'
    /**
     * Written by the Redis sink in its new writer's chain after an ambiguous failure retired the
     * old one: where the old chain ends (src/audit/chain.ts retirementRecord).
     */
    | 'writer-retired';
  readonly actor: {
    readonly iss?: string | undefined;
    readonly sub?: string | undefined;
    readonly clientId?: string | undefined;
    readonly jti?: string | undefined;
    readonly roles: readonly string[];
  };
  readonly purpose: string | undefined;
  /** Role whose data set applied. */
  readonly role?: string | undefined;
  /** The care relationships behind the access, where the data set requires or records them. */
  readonly relationship?: RelationshipEvidence | undefined;
  /** What patients' consent directives did to the answer (src/consent); absent when they did nothing. */
  readonly consent?: ConsentEvidence | undefined;
  readonly breakGlass?: { readonly session: string; readonly reason: string } | undefined;
  /** The approved access grant the request used (X-Access-Grant), src/access. Sorted keys. */
  readonly grant?: GrantEvidence | undefined;
  readonly client: { readonly address: string; readonly userAgent?: string | undefined };
  readonly request: {
    readonly method: string;
    /** Path and query as received (ids only: the gateway forbids PHI-bearing search on hidden elements). */
    readonly path: string;
    readonly interaction: Interaction | undefined;
    readonly resourceType: string | undefined;
  };
  readonly decision: 'allow' | 'deny' | 'error';
  /** The rule behind the decision, e.g. `roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]`, or the error code. */
  readonly rule: string;
  readonly disclosed: {
    /** `Type/id` of every resource released (after redaction). */
    readonly resources: readonly string[];
    /** Patient ids whose data was released. */
    readonly patients: readonly string[];
    readonly elementsRemoved: number;
    readonly resourcesWithheld: number;
    /**
     * Top-level element names released, per resource type, both sorted (e.g. `{Patient: ["birthDate",
     * "id", "name"]}`): names only, never values. For the usage report's granted-vs-disclosed
     * elements. Absent on records written before it existed and when nothing was released.
     */
    readonly elements?: Readonly<Record<string, readonly string[]>> | undefined;
    /**
     * State of residence per released Patient whose released body showed one (real patient id ->
     * `address[].state` of the home address, else of the first with a state; trimmed, uppercased,
     * at most 40 characters), sorted keys. The state only, never another part of an address. For
     * the breach report's per-state counts. Absent when no released Patient showed a state.
     */
    readonly states?: Readonly<Record<string, string>> | undefined;
  };
  readonly status: number;
  readonly upstreamStatus: number | undefined;
  readonly durations: { readonly totalMs: number; readonly upstreamMs?: number | undefined };
  readonly policyVersion: string;
  /** Free-form, kind-specific details (export filters, review outcome...). No PHI. */
  readonly details?: Readonly<Record<string, unknown>> | undefined;
}

/** The access grant behind a request (sorted keys: the record is canonical JSON). */
export interface GrantEvidence {
  /** The approver's sub. */
  readonly approvedBy: string;
  readonly dataSet: string;
  readonly id: string;
  /** Resources of the granted types withheld because they fall outside the grant's encounters or period. */
  readonly outOfScope?: number | undefined;
  /** The granted patient the request was about. */
  readonly patient: string;
}

/**
 * What a caller's care relationships did for one request (src/relationships). Sorted keys (the
 * record is canonical JSON). `related` and `unrelated` hold at most 50 entries each.
 */
export interface RelationshipEvidence {
  /** The FHIR user looked up (`Practitioner/p1`); absent when the token names none (nothing is related). */
  readonly caller?: string | undefined;
  /** A search naming no patient, narrowed to this many related patients. */
  readonly narrowed?: number | undefined;
  /** Per patient the request reached or released: the relationship that allowed it (source name and resource). */
  readonly related: ReadonlyArray<{ readonly patient: string; readonly resource: string; readonly source: string }>;
  /** true: enforced; false: looked up and recorded only. */
  readonly required: boolean;
  /** e.g. `dataSets.clinical.relationship`. */
  readonly rule: string;
  /** Patients named or released without a relationship (refused when required). */
  readonly unrelated: readonly string[];
}

/**
 * What patients' consent directives did to one answer (src/consent). Sorted keys; each list sorted,
 * at most 50 entries. Present only when a consent withheld, permitted or was overridden, or a
 * patient's consents could not be evaluated.
 */
export interface ConsentEvidence {
  /** Consents (`Consent/id`) a break-glass session overrode: it released what they withhold. */
  readonly overridden?: readonly string[] | undefined;
  /** Released resources carrying the 42 CFR Part 2 redisclosure notice. */
  readonly part2?: number | undefined;
  /** Consents whose permit released what only a consent may (Part 2 data, an authorization). */
  readonly permitted?: readonly string[] | undefined;
  /** Consents that withheld something from this answer. */
  readonly restricted?: readonly string[] | undefined;
  /** Patients whose consents could not be evaluated (their data withheld, fail closed). */
  readonly unevaluable?: readonly string[] | undefined;
  /** Resources withheld for consent. */
  readonly withheld: number;
}

/** A record as stored: the record plus the chain fields the sink assigns. */
export interface ChainedRecord extends AuditRecord {
  readonly chain: {
    /** Writer (gateway instance) id: one chain per writer. */
    readonly writer: string;
    readonly seq: number;
    readonly prev: string;
    readonly hash: string;
  };
}

export interface AuditSink {
  /** Resolves once the record is durable; rejects if it cannot be made durable. */
  write(record: AuditRecord): Promise<void>;
  /** Health probe for /readyz. */
  ready(): Promise<boolean>;
  close(): Promise<void>;
}
