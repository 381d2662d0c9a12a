/**
 * Security-label sets (DS4P) compiled once per resource plan. Matching fails safe: a plain code
 * in the policy matches wherever that code may turn up in real data, including retired systems
 * and legacy system URIs, so a sloppy label in the upstream never lets a resource through.
 */
import type { Coding } from 'fhir/r4.js';
import { closest, editDistance } from '../config/errors.js';
import type { LabelDeclaration } from './model.js';
import type { LabelSet } from './plan.js';

export const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
export const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

/** Current v3-Confidentiality codes, least protective first: a plain label with one of these means confidentiality only. */
export const CONFIDENTIALITY_LEVELS: readonly string[] = Object.freeze(['U', 'L', 'M', 'N', 'R', 'V']);
const CONFIDENTIALITY_CODES: ReadonlySet<string> = new Set(CONFIDENTIALITY_LEVELS);
/** Retired v3-Confidentiality codes (by access kind, by information type, modifiers) still found in data. */
const RETIRED_CONFIDENTIALITY_CODES: ReadonlySet<string> = new Set(['B', 'D', 'I', 'ETH', 'HIV', 'PSY', 'SDV', 'C', 'S', 'T']);

/** Older spellings of the same code systems that still appear in exported data. */
const SYSTEM_ALIASES: Readonly<Record<string, string>> = Object.assign(Object.create(null), {
  [CONFIDENTIALITY]: CONFIDENTIALITY,
  'http://hl7.org/fhir/v3/Confidentiality': CONFIDENTIALITY,
  'urn:oid:2.16.840.1.113883.5.25': CONFIDENTIALITY,
  [ACT_CODE]: ACT_CODE,
  'http://hl7.org/fhir/v3/ActCode': ACT_CODE,
  'urn:oid:2.16.840.1.113883.5.4': ACT_CODE,
});

export function canonicalSystem(system: string): string {
  return SYSTEM_ALIASES[system] ?? system;
}

/**
 * The policy's `labels:` list: codes of other systems (or newer HL7 codes) a withhold list may name,
 * plain or as `system|code`. Keys are `system|code` with the system canonical.
 */
export interface LabelVocabulary {
  /** Plain code -> the `system|code` keys declared with that code. */
  readonly byCode: ReadonlyMap<string, readonly string[]>;
  readonly keys: ReadonlySet<string>;
}

export const NO_DECLARED_LABELS: LabelVocabulary = Object.freeze({ byCode: new Map(), keys: new Set<string>() });

export function labelVocabulary(declared: readonly LabelDeclaration[] | undefined): LabelVocabulary {
  const byCode = new Map<string, string[]>();
  const keys = new Set<string>();
  for (const d of declared ?? []) {
    const key = `${canonicalSystem(d.system)}|${d.code}`;
    if (keys.has(key)) continue;
    keys.add(key);
    byCode.set(d.code, [...(byCode.get(d.code) ?? []), key]);
  }
  return { byCode, keys };
}

/**
 * The `system|code` keys a policy label stands for. `R` -> confidentiality only; `PSY` -> the
 * ActCode sensitivity and the retired confidentiality code of the same letters; a declared code ->
 * its declared system(s) too (an HL7 code declared again under another system withholds both).
 */
export function expandLabel(label: string, vocabulary: LabelVocabulary = NO_DECLARED_LABELS): string[] {
  const bar = label.indexOf('|');
  if (bar >= 0) return [`${canonicalSystem(label.slice(0, bar))}|${label.slice(bar + 1)}`];
  const declared = vocabulary.byCode.get(label) ?? [];
  if (CONFIDENTIALITY_CODES.has(label)) return [`${CONFIDENTIALITY}|${label}`, ...declared];
  if (KNOWN_CODES.has(label)) return [`${ACT_CODE}|${label}`, `${CONFIDENTIALITY}|${label}`, ...declared];
  return declared.length > 0 ? [...declared] : [`${ACT_CODE}|${label}`, `${CONFIDENTIALITY}|${label}`];
}

/**
 * The `_security:not` values that keep the upstream from matching any resource `labels` (keys of
 * a compiled LabelSet) withhold. A code of the HL7 label systems goes without a system (FHIR token
 * search: that code in any system), so the retired spellings, OIDs and system-less codings that
 * the filter withholds are not matched either (a second red-team session timed searches matching
 * a system-less PSY). It also keeps out the same code under an unrelated system, which the filter
 * would have released: the caller may miss such a record, never see one it should not. A label of
 * another system is sent as `system|code`.
 */
export function upstreamExclusions(labels: readonly string[]): string[] {
  const out = new Set<string>();
  for (const key of labels) {
    const bar = key.lastIndexOf('|');
    if (bar < 0) continue;
    const system = key.slice(0, bar);
    out.add(system === ACT_CODE || system === CONFIDENTIALITY ? key.slice(bar + 1) : key);
  }
  return [...out];
}

/**
 * The codes a plain label (or an HL7 `system|code` one) may name: v3-Confidentiality, and the
 * v3-ActCode information sensitivity policy codes. A label outside them withholds nothing real
 * data carries: a typo (`psythpn`, `SUDX`) that passed would release what it meant to withhold.
 */
export const KNOWN_CODES: ReadonlySet<string> = new Set([
  ...CONFIDENTIALITY_CODES,
  // ActInformationSensitivityPolicy (v3-ActCode)
  'ETH', 'ETHUD', 'OPIOIDUD', 'GDIS', 'HIV', 'MST', 'SCA', 'SDV', 'SEX', 'SPI', 'BH', 'COCI', 'DRGIS', 'MH', 'PREGNANT',
  'PSY', 'PSYTHPN', 'SUD', 'STD', 'SICKLE', 'TBOO', 'DVD', 'PRS', 'COGN', 'EMOTDIS', 'VIO',
  // EntitySensitivityPolicyType and RoleInformationSensitivityPolicy (v3-ActCode)
  'DEMO', 'DOB', 'GENDER', 'LIVARG', 'MARST', 'PATLOC', 'RACE', 'REL', 'B', 'EMPL', 'LOCIS', 'SSP', 'ADOL', 'CEL', 'DIA', 'EMP', 'PDS', 'PHY',
  // Compartments and flags
  'COMPT', 'HRCOMPT', 'RESCOMPT', 'RMGTCOMPT', 'VIP', 'TAINT',
  // ActPrivacyLaw (v3-ActCode): 42 CFR Part 2 substance use disorder records
  '42CFRPart2',
]);

/**
 * Why a well-formed label names no known code (with a "did you mean" when one is close), or
 * undefined. A plain code must be an HL7 one or declared under `labels:`; `system|code` of an HL7
 * system must be a code of that system (or declared); of any other system, declared. An undeclared
 * label of another system would withhold nothing if its system or code were misspelt.
 */
export function unknownLabel(label: string, vocabulary: LabelVocabulary = NO_DECLARED_LABELS): string | undefined {
  const bar = label.indexOf('|');
  const declaredCodes = [...vocabulary.byCode.keys()];
  if (bar >= 0) {
    const system = canonicalSystem(label.slice(0, bar));
    const code = label.slice(bar + 1);
    if (vocabulary.keys.has(`${system}|${code}`)) return undefined;
    if (system === CONFIDENTIALITY) {
      if (CONFIDENTIALITY_CODES.has(code) || RETIRED_CONFIDENTIALITY_CODES.has(code)) return undefined;
      return `unknown security label code '${code}' (not a v3-Confidentiality code)${hint(code, [...CONFIDENTIALITY_CODES, ...RETIRED_CONFIDENTIALITY_CODES])}`;
    }
    if (system === ACT_CODE) {
      if (KNOWN_CODES.has(code) && !CONFIDENTIALITY_CODES.has(code)) return undefined;
      return `unknown security label code '${code}' (not a v3-ActCode sensitivity code)${hint(code, [...KNOWN_CODES].filter((c) => !CONFIDENTIALITY_CODES.has(c)))}`;
    }
    return `security label '${label}' is not declared under labels: (a label of another code system must be declared)${hint(`${system}|${code}`, vocabulary.keys)}`;
  }
  if (vocabulary.byCode.has(label)) return undefined;
  if (KNOWN_CODES.has(label)) return confusablePlain(label);
  return `unknown security label code '${label}' (not v3-Confidentiality, a v3-ActCode sensitivity code, or declared under labels:)${hint(label, [...KNOWN_CODES, ...declaredCodes])}`;
}

/**
 * The codes withheld most often (confidentiality levels, the common sensitivity categories and
 * flags): always accepted plain. Another HL7 code one letter away from a known code (B from R,
 * PHY from PSY, EMPL from EMP) is accepted only as `system|code`: plain, a slip of one key on a
 * common code would silently withhold another category instead.
 */
const COMMON_CODES: ReadonlySet<string> = new Set([
  ...CONFIDENTIALITY_CODES,
  ...['ETH', 'HIV', 'PSY', 'PSYTHPN', 'SUD', 'OPIOIDUD', 'ETHUD', 'MH', 'BH', 'SDV', 'SEX', 'STD', 'GDIS', 'PREGNANT'],
  ...['VIP', 'EMP', 'CEL'],
]);

/** Why a known HL7 code may not be written plain (see COMMON_CODES), or undefined. */
function confusablePlain(code: string): string | undefined {
  if (COMMON_CODES.has(code)) return undefined;
  for (const k of KNOWN_CODES) {
    if (k !== code && editDistance(k, code) === 1) {
      // Every plain code outside COMMON_CODES is a v3-ActCode one (the confidentiality levels are common).
      return `'${code}' is one letter from '${k}': write it as ${ACT_CODE}|${code} to mean it, or did you mean '${k}'?`;
    }
  }
  return undefined;
}

function hint(word: string, candidates: Iterable<string>): string {
  // Codes are upper case; `psythpn` is PSYTHPN misspelt, however far the case is off.
  const c = closest(word, candidates);
  return c === undefined ? '' : `; did you mean '${c}'?`;
}

/** A plain label (no system) or `system|code` with a non-empty system and code. */
export function isValidLabel(label: string): boolean {
  const bar = label.indexOf('|');
  if (bar < 0) return /^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(label);
  return bar > 0 && bar < label.length - 1 && label.indexOf('|', bar + 1) < 0 && !/\s/.test(label);
}

export function compileLabelSet(labels: readonly string[], vocabulary: LabelVocabulary = NO_DECLARED_LABELS): LabelSet {
  const keys = new Set<string>();
  // Codings without a system are ambiguous; match them by code alone (withhold rather than leak).
  const codes = new Set<string>();
  for (const label of labels) {
    for (const key of expandLabel(label, vocabulary)) {
      keys.add(key);
      codes.add(key.slice(key.lastIndexOf('|') + 1));
    }
  }
  const list = Object.freeze([...keys].sort());
  return Object.freeze({
    labels: list,
    upstream: Object.freeze(upstreamExclusions(list)),
    match(security: readonly Coding[] | undefined): string | undefined {
      if (keys.size === 0 || !Array.isArray(security)) return undefined;
      for (const coding of security) {
        if (coding === null || typeof coding !== 'object') continue;
        const code = coding.code;
        if (typeof code !== 'string') continue;
        if (typeof coding.system !== 'string' || coding.system === '') {
          if (codes.has(code)) return `|${code}`;
          continue;
        }
        const key = `${canonicalSystem(coding.system)}|${code}`;
        if (keys.has(key)) return key;
      }
      return undefined;
    },
  });
}
