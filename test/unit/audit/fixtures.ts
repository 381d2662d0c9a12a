import type { AuditRecord } from '../../../src/audit/record.js';

/** A realistic request record; `over` replaces top-level fields. */
export function sampleRecord(i: number, over: Partial<AuditRecord> = {}): AuditRecord {
  return {
    id: `req-${i}`,
    time: new Date(Date.UTC(2025, 0, 1, 0, 0, i % 60)).toISOString(),
    kind: 'fhir',
    actor: { iss: 'https://idp.example', sub: `user-${i % 7}`, clientId: 'app', jti: `jti-${i}`, roles: ['billing'] },
    purpose: 'HPAYMT',
    role: 'billing',
    breakGlass: undefined,
    client: { address: '10.0.0.1', userAgent: 'test' },
    request: { method: 'GET', path: `/fhir/Patient/p${i}`, interaction: 'read', resourceType: 'Patient' },
    decision: 'allow',
    rule: 'roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]',
    disclosed: { resources: [`Patient/p${i}`], patients: [`p${i}`], elementsRemoved: 3, resourcesWithheld: 0 },
    status: 200,
    upstreamStatus: 200,
    durations: { totalMs: 4.5, upstreamMs: 3 },
    policyVersion: 'sha256:abc',
    ...over,
  };
}
