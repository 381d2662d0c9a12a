// Shared fixtures for the consent evidence tests (report, policy diff, shadow mode, explain): a small
// policy whose consent section is under test, compiled for real, and audit records carrying consent
// evidence built by hand in the shape of src/audit/record.ts.
import type { AuditRecord, ConsentEvidence } from '../../../src/audit/record.js';
import { readPolicySource } from '../../../src/config/policy-file.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import { fhirRecord } from '../monitor/relationship-fixtures.js';

/** A consent section: break-glass overrides consents, Part 2 data released to break-glass. */
export const OVERRIDE = '{ cacheSeconds: 60, exemptPurposes: [PATRQT], breakGlass: override, part2: { breakGlass: true } }';
/** The same, break-glass overriding nothing. */
export const NEVER = '{ cacheSeconds: 60, exemptPurposes: [PATRQT], breakGlass: never, part2: { breakGlass: false } }';

/**
 * The test policy with `consent` as its consent section (YAML flow text, or undefined for none) and,
 * when `authorization`, the marketing data set needing the patient's authorization for HMARKT.
 * Clinicians may break the glass (data set emergency).
 */
export function consentPolicyYaml(consent: string | undefined, o: { authorization?: boolean } = {}): string {
  return `version: 1
purposes:
  TREAT: { display: treatment, minimumNecessary: false }
  BTG: { display: break the glass, minimumNecessary: false }
  PATRQT: { display: patient requested }
  HMARKT: { display: marketing }
${consent === undefined ? '' : `consent: ${consent}\n`}dataSets:
  clinical:
    rules:
      - types: [Patient, Observation, Encounter]
  marketing:
${o.authorization ? '    consent: { authorization: [HMARKT] }\n' : ''}    rules:
      - types: [Patient]
  emergency:
    rules:
      - types: [Patient, Observation]
roles:
  clinician:
    purposes: { TREAT: clinical, PATRQT: clinical }
    breakGlass: true
  marketer:
    purposes: { HMARKT: marketing }
breakGlass:
  dataSet: emergency
`;
}

export function consentPolicy(consent: string | undefined, o: { authorization?: boolean } = {}): CompiledPolicy {
  const r = readPolicySource('consent-test.yaml', Buffer.from(consentPolicyYaml(consent, o)));
  if (!r.loaded) throw new Error(r.problems.join('\n'));
  return r.loaded.policy;
}

/** A GET as the gateway records it, with `consent` evidence; `released` are the patients whose data went out. */
export function consentRecord(
  path: string,
  consent: ConsentEvidence | undefined,
  o: Parameters<typeof fhirRecord>[1] & { rule?: string } = {},
): AuditRecord {
  const r = fhirRecord(path, o);
  return { ...r, ...(consent === undefined ? {} : { consent }), ...(o.rule === undefined ? {} : { rule: o.rule }) };
}

/** A break-glass request of session `session` by dr-er. */
export function btgRecord(path: string, session: string, consent: ConsentEvidence | undefined, released: string[]): AuditRecord {
  return consentRecord(path, consent, { sub: 'dr-er', purpose: 'BTG', breakGlass: { session, reason: 'ED: unconscious' }, released });
}
