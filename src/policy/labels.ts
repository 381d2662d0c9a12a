/**
 * Security-label sets (DS4P) compiled once per resource plan. Matching fails safe: a plain code
 * in the policy matches wherever that code may turn up in real data, including retired systems
 * and legacy system URIs, so a sloppy label in the upstream never lets a resource through.
 */
import type { Coding } from 'fhir/r4.js';
import type { LabelSet } from './plan.js';

export const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
export const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

/** Current v3-Confidentiality codes: a plain label with one of these means confidentiality only. */
const CONFIDENTIALITY_CODES: ReadonlySet<string> = new Set(['U', 'L', 'M', 'N', 'R', 'V']);

/** Older spellings of the same code systems that still appear in exported data. */
const SYSTEM_ALIASES: Readonly<Record<string, string>> = Object.assign(Object.create(null), {
  [CONFIDENTIALITY]: CONFIDENTIALITY,
  'http://hl7.org/fhir/v3/Confidentiality': CONFIDENTIALITY,
  'urn:oid:2.16.840.1.113883.5.25': CONFIDENTIALITY,
  [ACT_CODE]: ACT_CODE,
  'http://hl7.org/fhir/v3/ActCode': ACT_CODE,
  'urn:oid:2.16.840.1.113883.5.4': ACT_CODE,
});

function canonicalSystem(system: string): string {
  return SYSTEM_ALIASES[system] ?? system;
}

/**
 * The `system|code` keys a policy label stands for. `R` -> confidentiality only; `PSY` -> the
 * ActCode sensitivity and the retired confidentiality code of the same letters.
 */
export function expandLabel(label: string): string[] {
  const bar = label.indexOf('|');
  if (bar >= 0) return [`${canonicalSystem(label.slice(0, bar))}|${label.slice(bar + 1)}`];
  if (CONFIDENTIALITY_CODES.has(label)) return [`${CONFIDENTIALITY}|${label}`];
  return [`${ACT_CODE}|${label}`, `${CONFIDENTIALITY}|${label}`];
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
const KNOWN_CODES: ReadonlySet<string> = new Set([
  ...CONFIDENTIALITY_CODES,
  // ActInformationSensitivityPolicy (v3-ActCode)
  'ETH', 'ETHUD', 'OPIOIDUD', 'GDIS', 'HIV', 'MST', 'SCA', 'SDV', 'SEX', 'SPI', 'BH', 'COCI', 'DRGIS', 'MH', 'PREGNANT',
  'PSY', 'PSYTHPN', 'SUD', 'STD', 'SICKLE', 'TBOO', 'DVD', 'PRS',
  // EntitySensitivityPolicyType and RoleInformationSensitivityPolicy (v3-ActCode)
  'DEMO', 'DOB', 'GENDER', 'LIVARG', 'MARST', 'PATLOC', 'RACE', 'REL', 'B', 'EMPL', 'LOCIS', 'SSP', 'ADOL', 'CEL', 'DIA', 'EMP', 'PDS', 'PHY',
  // Compartments and flags
  'COMPT', 'HRCOMPT', 'RESCOMPT', 'RMGTCOMPT', 'VIP', 'TAINT',
]);

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * Why a well-formed label names no known code (with a "did you mean" when one is close), or
 * undefined. Labels of other code systems (`system|code` outside HL7's) are the policy's own and pass.
 */
export function unknownLabel(label: string): string | undefined {
  const bar = label.indexOf('|');
  if (bar >= 0) {
    const system = canonicalSystem(label.slice(0, bar));
    if (system !== ACT_CODE && system !== CONFIDENTIALITY) return undefined;
  }
  const code = bar >= 0 ? label.slice(bar + 1) : label;
  if (KNOWN_CODES.has(code)) return undefined;
  const upper = code.toUpperCase();
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of KNOWN_CODES) {
    const dist = k === upper ? 0 : distance(upper, k);
    if (dist < bestDistance) {
      best = k;
      bestDistance = dist;
    }
  }
  return `unknown security label code '${code}' (not v3-Confidentiality or a v3-ActCode sensitivity code)${best === undefined ? '' : `; did you mean '${best}'?`}`;
}

/** A plain label (no system) or `system|code` with a non-empty system and code. */
export function isValidLabel(label: string): boolean {
  const bar = label.indexOf('|');
  if (bar < 0) return /^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(label);
  return bar > 0 && bar < label.length - 1 && label.indexOf('|', bar + 1) < 0 && !/\s/.test(label);
}

export function compileLabelSet(labels: readonly string[]): LabelSet {
  const keys = new Set<string>();
  // Codings without a system are ambiguous; match them by code alone (withhold rather than leak).
  const codes = new Set<string>();
  for (const label of labels) {
    for (const key of expandLabel(label)) {
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
