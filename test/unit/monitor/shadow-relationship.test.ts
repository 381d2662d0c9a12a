// Shadow mode with care relationships: the candidate's requirement judged on the relationships the
// running policy looked up for each live request; a refusal for lack of one is the running policy's
// own (not skipped as a gate refusal), and a request without a lookup is recorded as such.
import { describe, expect, it } from 'vitest';
import type { AuditRecord, RelationshipEvidence } from '../../../src/audit/record.js';
import { createShadowObserver } from '../../../src/monitor/shadow.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import type { Exchange } from '../../../src/proxy/record.js';
import { principal, request } from '../breakglass/helpers.js';
import { evidence, RECORDED, REQUIRED, relationshipPolicy } from './relationship-fixtures.js';

const silent = { warn() {}, error() {}, info() {}, debug() {} } as never;
let seq = 0;

function exchange(url: string, relationship: RelationshipEvidence | undefined, released: string[], policyVersion: string, role = 'clinician'): Exchange {
  seq++;
  return {
    id: `req-${seq}`,
    time: new Date('2024-06-03T15:00:00Z'),
    started: 0n,
    method: 'GET',
    url,
    clientAddress: '127.0.0.1',
    userAgent: undefined,
    policyVersion,
    principal: principal('dr-a', [role]),
    purpose: 'TREAT',
    role,
    request: request(url),
    relationship,
    stats: { elementsRemoved: 0, resourcesWithheld: 0, resources: released.map((p) => `Patient/${p}`), patients: new Set(released) },
  };
}

function shadow(current: CompiledPolicy, candidate: CompiledPolicy) {
  const records: AuditRecord[] = [];
  const observer = createShadowObserver({
    audit: { write: async (r: AuditRecord) => void records.push(r) } as never,
    logger: silent,
    current: (v) => (v === current.version ? current : undefined),
    candidate,
    candidateFile: 'candidate.yaml',
  });
  return { observer, records };
}

describe('shadow mode: care relationships', () => {
  it('a recorded requirement switched on in the candidate: refusals and narrowing recorded, related reads not', async () => {
    const current = relationshipPolicy(RECORDED);
    const { observer, records } = shadow(current, relationshipPolicy(REQUIRED));
    const ok = { status: 200, decision: 'allow', rule: 'r' } as const;
    observer.observe(exchange('/Patient/pat-9', evidence({ unrelated: ['pat-9'] }), ['pat-9'], current.version), ok);
    observer.observe(exchange('/Patient/pat-1', evidence({ related: [{ patient: 'pat-1', resource: 'CareTeam/ct-1', source: 'care-team' }] }), ['pat-1'], current.version), ok);
    observer.observe(exchange('/Observation?code=1', evidence({ unrelated: ['pat-9'] }), ['pat-9'], current.version), ok);
    await observer.idle();
    expect(records.map((r) => [r.request.path, r.decision, r.rule, r.details?.decision, r.details?.now])).toEqual([
      ['/Patient/pat-9', 'deny', `shadow ${relationshipPolicy(REQUIRED).version}: roles.clinician.purposes.TREAT -> dataSets.clinical.rules[0] -> dataSets.clinical.relationship: no relationship`, 'relationship-refused', 'dataSets.clinical.relationship: no relationship'],
      ['/Observation?code=1', 'allow', expect.stringContaining('roles.clinician.purposes.TREAT'), 'relationship-narrowed', 'dataSets.clinical.relationship: no relationship'],
    ]);
    // Shadow records name no patient.
    expect(records.every((r) => r.kind === 'shadow-diff' && r.disclosed.patients.length === 0)).toBe(true);
  });

  it('a live refusal for lack of a relationship is judged (404 or an empty searchset), and the candidate dropping it would allow', async () => {
    const current = relationshipPolicy(REQUIRED);
    const { observer, records } = shadow(current, relationshipPolicy(undefined));
    const refused = evidence({ required: true, unrelated: ['pat-9'] });
    observer.observe(exchange('/Patient/pat-9', refused, [], current.version, 'front-desk'), { status: 404, decision: 'deny', rule: 'x: no relationship' });
    observer.observe(exchange('/Observation?patient=pat-9', refused, [], current.version, 'front-desk'), { status: 200, decision: 'allow', rule: 'x: no relationship' });
    // A resource withheld as an unrelated patient's: the rule tells.
    observer.observe(exchange('/Observation/o-1', evidence({ required: true }), [], current.version, 'front-desk'), { status: 404, decision: 'deny', rule: 'g: withheld (relationship)' });
    // A refusal that is not the policy's (a gate, say) and shows no missing relationship is still skipped.
    observer.observe(exchange('/Patient/pat-1', evidence({ required: true }), [], current.version), { status: 403, decision: 'deny', rule: 'anomaly' });
    await observer.idle();
    expect(records.map((r) => [r.request.path, r.decision, r.details?.decision, r.details?.was])).toEqual([
      ['/Patient/pat-9', 'allow', 'relationship-allowed', 'no relationship'],
      ['/Observation?patient=pat-9', 'allow', 'relationship-allowed', 'no relationship'],
      ['/Observation/o-1', 'allow', 'relationship-allowed', 'no relationship'],
    ]);
  });

  it('no lookup under the running policy, a requirement in the candidate: recorded as not looked up', async () => {
    const current = relationshipPolicy(undefined);
    const { observer, records } = shadow(current, relationshipPolicy(REQUIRED));
    observer.observe(exchange('/Patient/pat-1', undefined, ['pat-1'], current.version), { status: 200, decision: 'allow', rule: 'r' });
    await observer.idle();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ decision: 'allow', details: { decision: 'relationship-not-looked-up', now: 'dataSets.clinical.relationship' } });
    expect(records[0]!.rule).toMatch(/dataSets\.clinical\.relationship: not looked up$/);
  });
});
