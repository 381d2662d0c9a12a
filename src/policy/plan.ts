/**
 * The policy compiled once at load (src/policy/compile.ts): per (role, purpose, resource type)
 * plans. Pure data; the hot path only does map lookups.
 */
import type { Coding } from 'fhir/r4.js';
import type { CompiledConsent } from '../consent/types.js';
import type { ElementPlan } from '../redact/types.js';
import type { DeidProfile, PolicyInteraction, RoleCapability } from './model.js';

export interface LabelSet {
  readonly labels: readonly string[];
  /** The `_security:not` values that keep the upstream from matching these labels (labels.ts `upstreamExclusions`), made once. */
  readonly upstream: readonly string[];
  /** The first label (as `system|code`) among `security` that this set withholds, or undefined. */
  match(security: readonly Coding[] | undefined): string | undefined;
}

export interface ResourcePlan {
  readonly resourceType: string;
  /** Where it comes from, e.g. `dataSets.billing.rules[0]` (explain, audit). */
  readonly rule: string;
  readonly interactions: ReadonlySet<PolicyInteraction>;
  readonly operations: ReadonlySet<string>;
  /** Allowed search parameters (derived from kept elements + explicit + control params). */
  readonly searchParams: ReadonlySet<string>;
  readonly withhold: LabelSet;
  readonly elements: ElementPlan;
  /**
   * The data set's de-identification profile, applied by FHIR data type after `elements`
   * (src/redact/deidentify.ts): ids and references become pseudonyms, and every request is judged
   * and translated accordingly (src/policy/deid-request.ts).
   */
  readonly deidentify?: DeidProfile;
}

export interface AccessPlan {
  readonly role: string;
  readonly purpose: string;
  readonly dataSet: string;
  /** e.g. `roles.billing.purposes.HPAYMT` (for a child purpose: the granting parent). */
  readonly grantedBy: string;
  readonly compartment: 'patient' | undefined;
  readonly types: ReadonlyMap<string, ResourcePlan>;
  /** The data set's care-relationship requirement for this purpose (policy `dataSets.X.relationship`). */
  readonly relationship?: RelationshipRequirement | undefined;
  /**
   * Set when the data set marks this purpose as needing the patient's authorization (policy
   * `dataSets.X.consent.authorization`, HIPAA 164.508): patient data is released only under a
   * consent permit naming the caller's purpose. The value is the rule, e.g. `dataSets.marketing.consent`.
   */
  readonly authorization?: string | undefined;
}

/**
 * Whose records a plan reaches: only patients the caller has a care relationship or an assignment
 * with, found through the named sources (src/relationships). `required: false` looks the
 * relationships up and records them without refusing anything (to see first what it would refuse).
 */
export interface RelationshipRequirement {
  readonly required: boolean;
  /** Names under `relationships.sources` that count. */
  readonly sources: readonly string[];
  /** e.g. `dataSets.clinical.relationship` (audit, explain). */
  readonly rule: string;
  /**
   * Types its callers may not write where it is enforced: the sources that relate through something
   * other than a patient the written resource names (src/policy/relationship.ts selfGrantingTypes).
   */
  readonly writeProtected?: ReadonlySet<string> | undefined;
}

/** The kinds of upstream resource a relationship is read from. */
export type RelationshipKind = 'CareTeam' | 'Encounter' | 'EpisodeOfCare' | 'PractitionerRole' | 'Task';

export interface RelationshipSource {
  readonly name: string;
  readonly kind: RelationshipKind;
  /** Encounter: encounters that ended at most this many days ago count (current ones always). */
  readonly days?: number | undefined;
}

/** The policy's `relationships` section, compiled. */
export interface CompiledRelationships {
  /** How long a caller's looked-up relationships are used (a change upstream takes effect within it). */
  readonly ttlMs: number;
  /** Callers whose relationships are cached at once (least recently used dropped). */
  readonly maxCallers: number;
  /** Patients read per source per caller (one upstream page); beyond it, later ones are not found (fail closed). */
  readonly maxPatients: number;
  /** A search naming no patient is narrowed to at most this many related patients; more: it must name one. */
  readonly searchPatients: number;
  readonly sources: ReadonlyMap<string, RelationshipSource>;
  /** What a break-glass record looks up: every source, recorded only (always set by compilePolicy). */
  readonly breakGlassRecord?: RelationshipRequirement | undefined;
}

export interface CompiledRole {
  readonly name: string;
  readonly breakGlass: boolean;
  readonly capabilities: ReadonlySet<RoleCapability>;
  /** Declared purpose code (children included) -> plan. */
  readonly plans: ReadonlyMap<string, AccessPlan>;
}

export interface PurposeInfo {
  readonly code: string;
  readonly display: string;
  readonly parent: string | undefined;
  readonly minimumNecessary: boolean;
}

export interface CompiledBreakGlass {
  readonly dataSet: string;
  readonly sessionMs: number;
  readonly minReasonLength: number;
  readonly reasons: readonly string[] | undefined;
  readonly maxSessionsPerDay: number;
  /** The break-glass data set compiled as an access plan (role `break-glass`, purpose BTG). */
  readonly plan: AccessPlan;
}

/** The `accessRequests` section, compiled (src/access). */
export interface CompiledAccessRequests {
  /** Longest grant any data set gives. */
  readonly maxMs: number;
  readonly minJustificationLength: number;
  readonly reasons: readonly string[] | undefined;
  readonly maxPatients: number;
  readonly maxPending: number;
  /** IANA time zone of a grant's period dates and of records' bare dates. */
  readonly timeZone: string;
  readonly dataSets: ReadonlyMap<string, RequestableDataSet>;
}

/** One data set a role may ask for. */
export interface RequestableDataSet {
  readonly name: string;
  readonly requesters: ReadonlySet<string>;
  /** Purposes it may be requested for: a grant is used for exactly the purpose it was asked for. */
  readonly purposes: ReadonlySet<string>;
  readonly approvers: ReadonlySet<string>;
  /** Longest grant of this data set (at most CompiledAccessRequests.maxMs). */
  readonly maxMs: number;
  /** The data set's types, compiled (read, search and history only: check-config refuses writes). */
  readonly types: ReadonlyMap<string, ResourcePlan>;
  /** e.g. `accessRequests.dataSets.claim-attachment` (audit, explain). */
  readonly rule: string;
}

export interface CompiledPolicy {
  /** sha256 (hex, first 16 chars) of the policy file bytes: recorded in every audit record. */
  readonly version: string;
  readonly purposes: ReadonlyMap<string, PurposeInfo>;
  readonly roles: ReadonlyMap<string, CompiledRole>;
  readonly breakGlass: CompiledBreakGlass | undefined;
  /** The `relationships` section (care relationships and assignments), when the policy has one. */
  readonly relationships?: CompiledRelationships | undefined;
  /** The `consent` section: patients' consent directives enforced on every answer, when the policy has one. */
  readonly consent?: CompiledConsent | undefined;
  /** The `accessRequests` section: data sets a role may ask for, approved by another role. */
  readonly accessRequests?: CompiledAccessRequests | undefined;
  /** safeHarbor.restrictedZip3 (for RedactContext). Always set by compilePolicy. */
  readonly restrictedZip3?: ReadonlySet<string>;
}
