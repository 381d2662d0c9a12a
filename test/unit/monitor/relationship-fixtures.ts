// Shared fixtures for replaying care relationships (policy diff, shadow mode): a small policy whose
// clinical data set carries the relationship requirement under test, compiled for real, and audit
// records with relationship evidence built by hand in the shape of src/audit/record.ts.
import type { AuditRecord, RelationshipEvidence } from '../../../src/audit/record.js';
import { readPolicySource } from '../../../src/config/policy-file.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';

/**
 * The test policy with `relationship` as the clinical data set's requirement (YAML flow text, or
 * undefined for none), `sources` as the declared relationship sources and `types` as what it grants.
 * Clinicians may break the glass; front-desk may not.
 */
export function relationshipPolicy(relationship: string | undefined, sources?: string, types?: string): CompiledPolicy {
  const r = readPolicySource('relationship-test.yaml', Buffer.from(relationshipPolicyYaml(relationship, sources, types)));
  if (!r.loaded) throw new Error(r.problems.join('\n'));
  return r.loaded.policy;
}

/** The text of `relationshipPolicy`. */
export function relationshipPolicyYaml(
  relationship: string | undefined,
  sources = '{ care-team: { kind: CareTeam }, encounter: { kind: Encounter, days: 30 } }',
  types = 'Patient, Observation, Encounter',
): string {
  return `version: 1
purposes:
  TREAT: { display: treatment, minimumNecessary: false }
  BTG: { display: break the glass, minimumNecessary: false }
relationships:
  cacheSeconds: 120
  sources: ${sources}
dataSets:
  clinical:
${relationship === undefined ? '' : `    relationship: ${relationship}\n`}    rules:
      - types: [${types}]
  emergency:
    rules:
      - types: [Patient, Observation]
roles:
  clinician:
    purposes: { TREAT: clinical }
    breakGlass: true
  front-desk:
    purposes: { TREAT: clinical }
breakGlass:
  dataSet: emergency
`;
}

export const RECORDED = '{ required: false, sources: [care-team, encounter] }';
export const REQUIRED = '{ required: true, sources: [care-team, encounter] }';

export function evidence(over: Partial<RelationshipEvidence> = {}): RelationshipEvidence {
  return { caller: 'Practitioner/prac-1', related: [], required: false, rule: 'dataSets.clinical.relationship', unrelated: [], ...over };
}

let n = 0;

/** A clinician's GET, as the gateway records it; `released` are the patients whose data went out. */
export function fhirRecord(path: string, o: { sub?: string; released?: string[]; relationship?: RelationshipEvidence; decision?: AuditRecord['decision']; status?: number; role?: string; breakGlass?: AuditRecord['breakGlass']; purpose?: string; time?: string } = {}): AuditRecord {
  n++;
  const released = o.released ?? [];
  const type = path.slice(1).split(/[/?]/)[0];
  const interaction = path.includes('?') ? 'search-type' : 'read';
  return {
    id: `req-${n}`,
    time: o.time ?? '2024-06-03T14:00:00.000Z',
    kind: 'fhir',
    actor: { iss: 'https://idp.test', sub: o.sub ?? 'dr-a', roles: [o.role ?? 'clinician'] },
    purpose: o.purpose ?? 'TREAT',
    role: o.role ?? 'clinician',
    relationship: o.relationship,
    breakGlass: o.breakGlass,
    client: { address: '127.0.0.1' },
    request: { method: 'GET', path, interaction, resourceType: type },
    decision: o.decision ?? 'allow',
    rule: 'r',
    disclosed: { resources: released.map((p) => `Patient/${p}`), patients: released, elementsRemoved: 0, resourcesWithheld: 0 },
    status: o.status ?? 200,
    upstreamStatus: 200,
    durations: { totalMs: 1 },
    policyVersion: 'v',
  };
}
