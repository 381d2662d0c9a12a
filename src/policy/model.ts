/**
 * The policy file (config/policy.yaml) as written by a security admin, after JSON-Schema
 * validation. See README "Configuring a role" and config/policy.yaml for a commented example.
 *
 * Selectors (elements / remove / transforms[].select):
 *   `*`                          everything (elements only)
 *   `name`, `address.postalCode` a path from the resource root; `value[x]` matches every valueXxx
 *   `identifier[system=URI]`     array items whose child equals the value; for a CodeableConcept or
 *   `identifier[type=MR]`        Coding child the value matches any coding's `code` (or `system|code`)
 *   `@HumanName`, `@date`        every element of that FHIR data type anywhere in the resource
 *   `@Reference.display`         a path inside every element of that data type
 */
export interface PolicyFile {
  readonly version: 1;
  /** The policy's own security labels (codes of other systems), which withhold lists may name. */
  readonly labels?: readonly LabelDeclaration[];
  /** Purposes that may be declared, with their parent in the v3-ActReason hierarchy. */
  readonly purposes: Readonly<Record<string, PurposeSpec>>;
  readonly safeHarbor?: { readonly restrictedZip3: readonly string[] };
  readonly dataSets: Readonly<Record<string, DataSetSpec>>;
  readonly roles: Readonly<Record<string, RoleSpec>>;
  readonly breakGlass?: BreakGlassSpec;
  readonly relationships?: RelationshipsSpec;
  /** Patients' FHIR Consent directives (42 CFR Part 2 included), enforced on every answer. */
  readonly consent?: ConsentSpec;
  /** Live anomaly rules (src/monitor): alerted and audited; they refuse requests only with `block: true`. */
  readonly anomalies?: AnomaliesSpec;
  /** Elevated access on request (src/access): data sets a role may ask for, with someone else's approval. */
  readonly accessRequests?: AccessRequestsSpec;
}

/**
 * Planned exceptions to a role's data set: a requester asks for a requestable data set for named
 * patients, a purpose, a period and a time, with a justification; a role listed as approver (never
 * the requester) approves, denies or approves narrower; the grant expires on its own.
 */
export interface AccessRequestsSpec {
  /** Longest grant any data set may give, minutes (default 1440). */
  readonly maxMinutes?: number;
  /** Justification: validated like a break-glass reason (default 20 code points). */
  readonly minJustificationLength?: number;
  /** Optional coded justifications; when set, a justification must start with one (`CODE: text`). */
  readonly reasons?: readonly string[];
  /** Patients one request may name (default 20). */
  readonly maxPatients?: number;
  /** Undecided requests a requester may hold at once (default 5). */
  readonly maxPending?: number;
  /** IANA time zone in which a grant's period dates (`2024-02-11`) are days (default UTC). */
  readonly timeZone?: string;
  /** Data set name -> who may ask for it, for which purposes, and who approves. */
  readonly dataSets: Readonly<Record<string, RequestableSpec>>;
}

export interface RequestableSpec {
  /** Roles that may request it. */
  readonly requesters: readonly string[];
  /** Purposes it may be requested for (exactly these; each held by every requester role). */
  readonly purposes: readonly string[];
  /** Roles that may approve, deny or revoke it. */
  readonly approvers: readonly string[];
  /** Longest grant of this data set, minutes (default and ceiling: accessRequests.maxMinutes). */
  readonly maxMinutes?: number;
}

export interface PurposeSpec {
  readonly display: string;
  /** Parent code: a role granted the parent may declare this purpose. */
  readonly parent?: string;
  /** False for treatment and the other 164.502(b)(2) exceptions. Informational (explain, audit). */
  readonly minimumNecessary?: boolean;
}

/** A label: `R`, `PSY` (a v3-Confidentiality or v3-ActCode code), a declared code, or `system|code`. */
export type LabelSpec = string;

/** A security label of the policy's own (or another organization's) code system. */
export interface LabelDeclaration {
  readonly code: string;
  readonly system: string;
  readonly display?: string;
}

export interface DataSetSpec {
  readonly description?: string;
  /** Resources carrying any of these labels are withheld, for every type in this data set. */
  readonly withhold?: readonly LabelSpec[];
  /**
   * De-identification by FHIR data type over every element the rules release (src/redact/deidentify.ts):
   * `safe-harbor` (45 CFR 164.514(b)(2)) or `limited-data-set` (164.514(e)).
   */
  readonly deidentify?: DeidProfile;
  /** Care relationships required (or, `required: false`, only recorded) for the purposes listed (default all). */
  readonly relationship?: { readonly required: boolean; readonly sources: readonly string[]; readonly purposes?: readonly string[] };
  /** Purposes (children included) for which this data set releases patient data only under the patient's authorization (a consent permit). */
  readonly consent?: { readonly authorization: readonly string[] };
  readonly rules: readonly RuleSpec[];
}

export interface ConsentSpec {
  readonly cacheSeconds?: number;
  readonly maxPatients?: number;
  readonly overlap?: 'deny-wins' | 'latest';
  readonly exemptPurposes?: readonly string[];
  /** `override`: break-glass releases what a consent denies (recorded); `never` (default): it does not. */
  readonly breakGlass?: 'override' | 'never';
  readonly part2?: { readonly labels?: readonly LabelSpec[]; readonly notice?: string; readonly breakGlass?: boolean };
}

export interface RelationshipsSpec {
  readonly cacheSeconds?: number;
  readonly maxCallers?: number;
  readonly maxPatients?: number;
  readonly searchPatients?: number;
  readonly sources: Readonly<Record<string, { readonly kind: string; readonly days?: number }>>;
}

/**
 * `relabel`: adding, changing or removing `meta.security` labels on update or patch (on top of
 * `update` / `patch`); without it only an active break-glass session may change labels.
 */
export type PolicyInteraction = 'read' | 'search' | 'history' | 'create' | 'update' | 'patch' | 'delete' | 'relabel';
export type TransformName = 'remove' | 'mask' | 'year' | 'zip3' | 'age90' | 'pseudonym';

export interface RuleSpec {
  /** Resource types this rule grants; a type may appear in one rule per data set only. */
  readonly types: readonly string[];
  /**
   * Default: [read, search]. `read` covers vread of the current version, `history` instance and type
   * history and vread of past versions; `relabel` lets update and patch change `meta.security`.
   */
  readonly interactions?: readonly PolicyInteraction[];
  /** Elements kept (allow-list). Default `['*']`. `resourceType`, `id`, `meta` are always kept. */
  readonly elements?: readonly string[];
  /** Elements removed even though `elements` keeps them. */
  readonly remove?: readonly string[];
  readonly transforms?: ReadonlyArray<{ readonly select: string; readonly apply: TransformName }>;
  /** Search parameters allowed in addition to those derived from the kept elements. */
  readonly search?: readonly string[];
  /** Operations granted on these types, e.g. `$everything`. */
  readonly operations?: readonly string[];
  /** Labels withheld for these types, in addition to the data set's. */
  readonly withhold?: readonly LabelSpec[];
}

export type RoleCapability = 'audit-export' | 'break-glass-review';

export interface RoleSpec {
  readonly description?: string;
  /** Purpose code -> data set name. A purpose covers its children in the hierarchy. */
  readonly purposes: Readonly<Record<string, string>>;
  readonly breakGlass?: boolean;
  /** Restrict the role to the patient compartment named by the token's `patient` claim. */
  readonly compartment?: 'patient';
  readonly capabilities?: readonly RoleCapability[];
}

export interface BreakGlassSpec {
  readonly dataSet: string;
  readonly sessionMinutes?: number;
  readonly minReasonLength?: number;
  /** Optional coded reasons; when set, `X-Break-Glass-Reason` must start with one (`CODE: text`). */
  readonly reasons?: readonly string[];
  readonly maxSessionsPerDay?: number;
}

/**
 * `no-relationship`: access to a patient without a care relationship, as the request's audit record
 * shows it (refused for lack of one, a break-glass access that needed the glass for lack of one, or
 * an access a `required: false` requirement only recorded).
 */
export type AnomalyKind = 'bulk-access' | 'off-hours' | 'denial-burst' | 'family-name' | 'broad-search' | 'no-relationship';

export interface AnomaliesSpec {
  /** IANA time zone for `off-hours` rules without their own (default UTC). */
  readonly timeZone?: string;
  readonly rules: readonly AnomalyRuleSpec[];
}

export interface AnomalyRuleSpec {
  /** Shown in alerts, audit records and reports; unique. */
  readonly name: string;
  readonly kind: AnomalyKind;
  /**
   * bulk-access: distinct patients per actor per window above which it fires; denial-burst: denials
   * per actor per window at which it fires; broad-search: patients returned by one search without a
   * patient parameter at which it fires; no-relationship: distinct patients reached without a care
   * relationship per actor per window at which it fires (default 1).
   */
  readonly threshold?: number;
  /** Sliding window, and how long an alert is not repeated for the same actor (default 60). */
  readonly windowMinutes?: number;
  /** off-hours: allowed local hours, `HH:MM` to `HH:MM` (end exclusive; may wrap midnight). */
  readonly hours?: { readonly start: string; readonly end: string };
  /** off-hours: allowed days (default every day). */
  readonly days?: ReadonlyArray<'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun'>;
  readonly timeZone?: string;
  /** Only for these roles (the role whose data set applied, else any of the actor's roles). */
  readonly roles?: readonly string[];
  /** Refuse the actor's requests for the rest of the window once it fired (off-hours: at once). */
  readonly block?: boolean;
}

export type DeidProfile = 'safe-harbor' | 'limited-data-set';
