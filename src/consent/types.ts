/**
 * Patient consent directives: the contract between the parser (parse.ts), the evaluator
 * (evaluate.ts), the per-patient cache (resolver.ts), the response filter (src/redact/response.ts)
 * and the audit record.
 *
 * A patient's active FHIR `Consent` resources (scope `patient-privacy`) are read from the upstream
 * with the gateway's own credentials, parsed once into `ParsedConsent`s and cached per patient. The
 * response filter asks, for every resource it would release, whether the consents of every patient
 * the resource names let this caller see it (`ConsentJudge.judge`). Consent only removes what the
 * data set grants, with two exceptions that need a permit naming the caller and purpose: data
 * labelled as 42 CFR Part 2 (released only under such a consent, with the redisclosure notice), and
 * purposes a data set marks as needing the patient's authorization (HIPAA 164.508).
 */

/** A half-open interval in epoch ms; either end may be open. */
export interface Interval {
  readonly start?: number | undefined;
  readonly end?: number | undefined;
}

/** `provision.data`: `instance` is the resource itself; `related` and `dependents` also what references it. */
export interface ConsentData {
  readonly meaning: 'instance' | 'related' | 'dependents';
  /** `Type/id`. */
  readonly reference: string;
}

/**
 * One provision (the root one included). Every condition present must hold for the provision to
 * apply to an access; a condition absent holds for any access. Nested provisions are exceptions
 * to their parent: where one applies, its `type` decides (deny wins among siblings).
 */
export interface ConsentProvision {
  /** Absent on the root provision (R4: not permitted there); required on nested ones. */
  readonly type?: 'permit' | 'deny' | undefined;
  /** When the provision is in force (`provision.period`). */
  readonly period?: Interval | undefined;
  /** `provision.actor.reference` as `Type/id` (absolute references cut to their tail). */
  readonly actors?: readonly string[] | undefined;
  /** `provision.purpose` codes (v3-ActReason; a code covers its children). */
  readonly purposes?: readonly string[] | undefined;
  /** `provision.class`: resource types. */
  readonly classes?: readonly string[] | undefined;
  /** `provision.code` codings as `system|code` (the resource's `code`/`type`-like elements). */
  readonly codes?: readonly string[] | undefined;
  /** `provision.securityLabel` as `system|code` (against the resource's `meta.security`). */
  readonly labels?: readonly string[] | undefined;
  readonly data?: readonly ConsentData[] | undefined;
  readonly provisions: readonly ConsentProvision[];
}

/** An active patient-privacy Consent as the gateway reads it. */
export interface ParsedConsent {
  /** `Consent/id`. */
  readonly id: string;
  /** The patient id it is about. */
  readonly patient: string;
  /** `Consent.dateTime` (epoch ms), for `overlap: latest`; absent when the consent has none. */
  readonly dateTime?: number | undefined;
  /**
   * What the consent decides where no provision applies: `policyRule` OPTIN/OPTINR -> permit,
   * OPTOUT/OPTOUTE -> deny; absent: no opinion (a root provision type then decides where the root applies).
   */
  readonly base?: 'permit' | 'deny' | undefined;
  /** The `policyRule` code `base` came from (OPTIN, OPTOUT...), for `explain`; absent when it came from the root provision's type. */
  readonly policyRule?: string | undefined;
  /** The root provision's period: outside it the consent is not in force (an expired consent). */
  readonly period?: Interval | undefined;
  readonly root: ConsentProvision;
}

/** A Consent that could not be parsed or evaluated: its patient's data is withheld (fail closed). */
export interface UnevaluableConsent {
  /** `Consent/id`, or `Consent/?` when it has none. */
  readonly id: string;
  /** What the gateway could not read, e.g. `provision.dataPeriod is not supported`. No PHI. */
  readonly reason: string;
}

/** One patient's consents as looked up (cached per patient). */
export interface PatientConsents {
  readonly patient: string;
  /** Active patient-privacy consents in force or not (an expired one stays here; evaluate skips it). */
  readonly consents: readonly ParsedConsent[];
  /** Non-empty: the patient's data is withheld from every caller but break-glass. */
  readonly unevaluable: readonly UnevaluableConsent[];
}

/** The policy's `consent` section, compiled. */
export interface CompiledConsent {
  /** How long a patient's consents are reused; a consent created or revoked upstream takes effect within it. */
  readonly ttlMs: number;
  /** Patients whose consents are cached at once (least recently used dropped). */
  readonly maxPatients: number;
  /** `deny-wins`: any consent denying withholds. `latest`: the newest consent (dateTime) with an opinion decides. */
  readonly overlap: 'deny-wins' | 'latest';
  /** Purposes (children included) consent does not apply to: the patient's own access (PATRQT). */
  readonly exemptPurposes: ReadonlySet<string>;
  /** Break-glass releases what a consent denies (not Part 2 data: see part2.breakGlass), recorded as overridden. */
  readonly breakGlassOverrides: boolean;
  readonly part2: {
    /** Labels (`system|code`) marking 42 CFR Part 2 data; default v3-ActCode SUD and 42CFRPart2. */
    readonly labels: readonly string[];
    /** The redisclosure notice released with each Part 2 resource (meta extension text). */
    readonly notice: string;
    /** Break-glass releases Part 2 data without a consent (medical emergency, 42 CFR 2.51). */
    readonly breakGlass: boolean;
  };
}

/** Who is asking and why, as consent provisions match it. */
export interface ConsentAccess {
  /** The declared purpose. */
  readonly purpose: string;
  /** The purpose and its ancestors (a provision purpose covers its children). */
  readonly purposes: ReadonlySet<string>;
  /** The caller as consent actors name it: the token's fhirUser (`Practitioner/p1`), when it has one. */
  readonly actors: readonly string[];
  /** Epoch ms. */
  readonly now: number;
  /** A break-glass session is open for this request. */
  readonly breakGlass: boolean;
  /** The data set marks this purpose as needing the patient's authorization (a permit naming it). */
  readonly authorizationRequired: boolean;
}

/** The consent verdict on one resource for one access. */
export type ConsentVerdict =
  /** Released. `part2`: carries the redisclosure notice. `permitted`: consents whose permit was needed. `overridden`: consents break-glass overrode. */
  | {
      readonly release: true;
      readonly part2?: boolean | undefined;
      readonly permitted?: readonly string[] | undefined;
      readonly overridden?: readonly string[] | undefined;
    }
  /** Withheld. `restricted`: the consents that withheld it (deny, or no permit where one was needed); `unevaluable`: patients failing closed. */
  | {
      readonly release: false;
      readonly why: 'denied' | 'part2-without-consent' | 'authorization-missing' | 'unevaluable';
      readonly restricted?: readonly string[] | undefined;
      readonly unevaluable?: readonly string[] | undefined;
    };

/** The system and code of the refrain label on released Part 2 data (DS4P). */
export const REFRAIN_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const REFRAIN_CODE = 'NORDSCLCDS';
export const REFRAIN_DISPLAY = "no redisclosure without information subject's consent directive";
/** The meta extension carrying the policy's redisclosure notice text. */
export const NOTICE_EXTENSION = 'https://phi-gateway.dev/fhir/StructureDefinition/redisclosure-notice';

/**
 * A request's consent judge (made per request by the pipeline): `load` brings the consents of the
 * patients a body names into the request (from the cache, or the upstream), `judge` answers
 * synchronously for a resource whose patients were loaded. A patient not loaded is judged
 * unevaluable (withheld): never released unjudged.
 */
export interface ConsentJudge {
  /** Resolves once every patient's consents are held; throws GatewayError('consent-unavailable'). */
  load(patients: Iterable<string>): void | Promise<void>;
  judge(resource: Readonly<Record<string, unknown>>, patients: readonly string[]): ConsentVerdict;
  /** The policy's notice text (for the meta extension of released Part 2 resources). */
  readonly notice: string;
}
