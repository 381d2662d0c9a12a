/** Who is asking, as established from a verified access token. Never holds the raw token. */
export interface Principal {
  readonly iss: string;
  readonly sub: string;
  /** OAuth client (`client_id` / `azp` claim), when present. */
  readonly clientId: string | undefined;
  /** Token id (`jti`), recorded as the agent's policy in BALP AuditEvents. */
  readonly jti: string | undefined;
  readonly roles: readonly string[];
  /**
   * Purposes the token itself allows (plain codes, normalized from `purpose_of_use` strings or
   * IHE IUA Codings). `undefined` = the token does not limit purposes.
   */
  readonly tokenPurposes: readonly string[] | undefined;
  /** SMART launch context: the token is limited to this patient's compartment. */
  readonly patient: string | undefined;
  /** Parsed SMART v2 scopes; `undefined` = the token carries no `scope` claim. */
  readonly scopes: readonly SmartScope[] | undefined;
  /** Family name claim (`family_name`), used only by anomaly rules; never logged. */
  readonly familyName: string | undefined;
  /**
   * The caller's own FHIR resource as `Type/id` (`Practitioner/p1`), from `fhirUser` or the configured
   * claim: whose care relationships apply (src/relationships). Undefined: the token names none.
   */
  readonly fhirUser?: string | undefined;
  /** Token expiry, epoch seconds. */
  readonly exp: number;
}

export interface SmartScope {
  readonly context: 'patient' | 'user' | 'system';
  /** Resource type or '*'. */
  readonly resourceType: string;
  /** Subset of c r u d s. */
  readonly permissions: ReadonlySet<'c' | 'r' | 'u' | 'd' | 's'>;
  /** Optional `?param=value` restrictions, as pairs. */
  readonly params: ReadonlyArray<readonly [string, string]>;
}
