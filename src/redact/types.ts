/**
 * The redaction engine's contract. `compileElementPlan` (src/redact/compile.ts) turns a rule's
 * elements / remove / transforms into an ElementPlan once at load; `redactResource`
 * (src/redact/apply.ts) applies it without mutating its input; `filterResponse`
 * (src/redact/response.ts) walks a whole response body (resource, Bundle of any type, contained,
 * nested Bundles, Parameters) with per-type plans and label withholding.
 */
import type { ConsentJudge } from '../consent/types.js';
import type { DeidProfile } from '../policy/model.js';
import type { ResourcePlan } from '../policy/plan.js';

export interface ElementPlan {
  /** True when the plan keeps every element unchanged: the engine may skip the walk. */
  readonly keepsAll: boolean;
  /** Element by element, what survives and how, for `explain`. */
  describe(): readonly ElementLine[];
}

export interface ElementLine {
  /** e.g. `Patient.name`, `Patient.identifier[system=http://hl7.org/fhir/sid/us-ssn]`, `@HumanName`. */
  readonly element: string;
  readonly action: 'keep' | 'remove' | 'mask' | 'year' | 'zip3' | 'age90' | 'pseudonym';
  /** The selector that caused it, as written in the policy. */
  readonly selector: string;
}

export interface RedactContext {
  /** Restricted ZIP3 prefixes become `000`. */
  readonly restrictedZip3: ReadonlySet<string>;
  /** HMAC key for pseudonyms; undefined = the `pseudonym` transform removes instead. */
  readonly pseudonymKey: Uint8Array | undefined;
  /** Keys pseudonyms were issued under before the current one: still resolved, never issued. */
  readonly pseudonymPreviousKeys?: readonly Uint8Array[];
  /** For age90 on birthDate: "now", injectable for tests. */
  readonly now: () => Date;
}

export interface RedactResult<T = unknown> {
  readonly resource: T;
  /** Number of elements removed (an array item or an object key counts one). */
  readonly removed: number;
  /** Number of values transformed (masked, generalized, pseudonymized). */
  readonly transformed: number;
}

export interface ResponseContext extends RedactContext {
  /** The plan for a resource type, or undefined when the caller may not see that type at all. */
  planFor(resourceType: string): ResourcePlan | undefined;
  /** `hide`: withheld resources vanish. `announce`: a search gets one `suppressed` outcome entry. */
  readonly withheldMode: 'hide' | 'announce';
  /** Maps an absolute upstream URL to the gateway's public URL; undefined if it is not upstream's. */
  rewriteUrl(url: string): string | undefined;
  /** Limit to one patient's compartment (SMART `patient` claim or compartment role). */
  readonly patientCompartment: string | undefined;
  /**
   * The patients the caller has a care relationship with, where its data set requires one: a
   * resource of any other patient (or of none) is withheld with reason `relationship`.
   */
  readonly relatedPatients?: ReadonlySet<string> | undefined;
  /** The data set's de-identification profile (every type of a data set shares it). */
  readonly deidentify?: DeidProfile;
  /**
   * Patients' consent directives (src/consent), where the policy enforces them for this purpose:
   * a resource they withhold is withheld with reason `consent` (as if it did not exist). The
   * patients of a body must be loaded (`consent.load`) before it is filtered.
   */
  readonly consent?: ConsentJudge | undefined;
  /**
   * An access grant in use (src/access): resources of its types outside its encounters or period
   * are withheld with reason `type` (as if the type were not granted), counted in `grantOutOfScope`.
   */
  readonly grantScope?: { readonly types: ReadonlySet<string>; outOfScope(resource: Readonly<Record<string, unknown>>): boolean } | undefined;
}

export interface FilterStats {
  elementsRemoved: number;
  resourcesWithheld: number;
  /** `Type/id` (real ids) of every resource released. */
  readonly resources: string[];
  /** Real patient ids whose data was released. */
  readonly patients: Set<string>;
  /**
   * Patients whose records were withheld because the caller has no care relationship with them
   * (the audit record's `relationship.unrelated`); absent until one is.
   */
  unrelated?: Set<string>;
  /** What consents did (the audit record's `consent`); absent until one did something. */
  consent?: ConsentStats;
  /** Resources of a grant's types withheld for falling outside its encounters or period (ResponseContext.grantScope). */
  grantOutOfScope?: number;
  /**
   * Top-level element names released, per resource type (contained resources under their own
   * type): the keys of each released resource that its type defines (`_x` counted as `x`, choice
   * elements by their concrete name, e.g. `deceasedBoolean`). Always set by filterResponse.
   */
  readonly elements?: Map<string, Set<string>>;
  /**
   * State of residence per released Patient (real id -> state), as the released body shows it:
   * `address[].state` of the `home` address, else of the first address with one; trimmed,
   * uppercased, at most 40 characters. The state only, never another part of the address (Safe
   * Harbor keeps it). For the breach report's per-state counts; absent until one is noted.
   */
  states?: Map<string, string>;
}

export type FilterResult =
  | { readonly kind: 'ok'; readonly body: unknown; readonly stats: FilterStats }
  /** The response is a single resource the caller may not see. `label` says why (audit only). */
  | { readonly kind: 'withheld'; readonly reason: WithheldReason; readonly stats: FilterStats };

/** Why a resource is not released: a withheld label, an ungranted type, outside the token's patient compartment, of a patient the caller has no care relationship with, or withheld by a patient's consent. */
export type WithheldReason = 'label' | 'type' | 'compartment' | 'relationship' | 'consent';

/** What consents did to one response (FilterStats.consent). */
export interface ConsentStats {
  withheld: number;
  part2: number;
  readonly restricted: Set<string>;
  readonly permitted: Set<string>;
  readonly overridden: Set<string>;
  readonly unevaluable: Set<string>;
}
