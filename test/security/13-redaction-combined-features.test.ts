/**
 * BYPASSES 13: redaction combined with other features. `_elements` and `_summary` never widen the
 * role's view (SSN, narrative, telecom stay out whatever is asked for); a token holding two roles
 * that grant the same purpose must pick one with X-Role and then gets exactly that role's view,
 * never a union; document Bundles are refused where Bundle access is not granted; contained
 * resources are filtered by their own type's plan.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO, SSN_SYSTEM } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, receive } from './support.js';

const ALICE = DEMO.patients.alice;
const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const billingNever = [DEMO.ssn.alice, SSN_SYSTEM, DEMO.phones.alice, DEMO.emails.alice, '<div'];
const CONTAINED_SSN = '999-88-7777';
const CONTAINED_PHONE = '617-555-0999';
const CONTAINED_OBS = 'CONTAINED-OBSERVATION-SECRET';

let stack: Stack;

/** Test data written straight into the upstream: no gateway role may create Claims or Bundles. */
async function upstreamPut(path: string, body: unknown): Promise<void> {
  const r = await fetch(`${stack.upstreamUrl}${path}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`setup ${path}: ${r.status} ${await r.text()}`);
}

beforeAll(async () => {
  stack = await startStack();
  await upstreamPut('/Claim/claim-contained', {
    resourceType: 'Claim',
    id: 'claim-contained',
    contained: [
      { resourceType: 'Patient', id: 'p1', name: [{ family: 'Contained' }], identifier: [{ system: SSN_SYSTEM, value: CONTAINED_SSN }], telecom: [{ system: 'phone', value: CONTAINED_PHONE }] },
      { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: CONTAINED_OBS } },
    ],
    status: 'active',
    type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/claim-type', code: 'professional' }] },
    use: 'claim',
    patient: { reference: '#p1' },
    created: '2024-05-01',
    provider: { reference: 'Organization/org-hospital' },
    priority: { coding: [{ code: 'normal' }] },
    supportingInfo: [{ sequence: 1, category: { text: 'lab' }, valueReference: { reference: '#o1' } }],
    insurance: [{ sequence: 1, focal: true, coverage: { display: 'x' } }],
  });
  await upstreamPut('/Bundle/doc-1', {
    resourceType: 'Bundle',
    id: 'doc-1',
    type: 'document',
    timestamp: '2024-05-01T00:00:00Z',
    entry: [
      { fullUrl: 'urn:uuid:c1', resource: { resourceType: 'Composition', id: 'c1', status: 'final', type: { text: 'note' }, title: 'Discharge', date: '2024-05-01', author: [{ display: 'x' }], subject: { reference: `Patient/${ALICE}` } } },
      { fullUrl: `urn:uuid:p1`, resource: { resourceType: 'Patient', id: ALICE, identifier: [{ system: SSN_SYSTEM, value: DEMO.ssn.alice }], telecom: [{ system: 'phone', value: DEMO.phones.alice }] } },
    ],
  });
});

afterAll(async () => {
  await stack?.close();
});

describe('_elements and _summary never widen the view', () => {
  it.each([
    `/Patient/${ALICE}?_elements=identifier`,
    `/Patient?_id=${ALICE}&_elements=identifier`,
    `/Patient/${ALICE}?_elements=identifier,telecom,text`,
    `/Patient/${ALICE}?_elements=meta`,
    `/Patient/${ALICE}?_elements=text`,
    `/Patient/${ALICE}?_summary=true`,
    `/Patient/${ALICE}?_summary=data`,
    `/Patient?_id=${ALICE}&_summary=data`,
  ])('billing %s: no SSN, telecom or narrative', async (path) => {
    const r = await receive(await stack.get(path, billing));
    expect(r.status, r.text).toBeLessThan(500);
    expectAbsent(r, billingNever);
    if (r.status === 200 && path.includes('identifier')) expect(r.text).toContain(DEMO.mrn.alice);
  });

  it('a hidden element asked for explicitly still carries the REDACTED marking when elements went', async () => {
    const r = await receive(await stack.get(`/Patient/${ALICE}?_elements=identifier`, billing));
    expect(r.status).toBe(200);
    expect(JSON.stringify((r.json as { meta?: unknown }).meta)).toContain('REDACTED');
  });
});

describe('several matching roles: one view, chosen explicitly, never a union', () => {
  const both = { purpose: 'HPAYMT', role: 'billing', tokenClaims: { roles: ['billing', 'coder'] } } as const;

  it('without X-Role: 403 role-ambiguous before the upstream', async () => {
    const r = await receive(await stack.get(`/Patient/${ALICE}`, both));
    expectError(r, 403, 'role-ambiguous');
    expectAbsent(r, [DEMO.names.alice, DEMO.mrn.alice, DEMO.ssn.alice]);
    expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
  });

  it('X-Role billing: the billing view exactly (name kept, no Observations)', async () => {
    const asBilling = await receive(await stack.get(`/Patient/${ALICE}`, { ...both, headers: { 'x-role': 'billing' } }));
    const plainBilling = await receive(await stack.get(`/Patient/${ALICE}`, billing));
    expect(asBilling.status).toBe(200);
    expect(asBilling.json).toEqual(plainBilling.json);
    expectAbsent(asBilling, billingNever);
    const obs = await receive(await stack.get('/Observation', { ...both, headers: { 'x-role': 'billing' } }));
    expectError(obs, 403, 'type-denied');
  });

  it('X-Role coder: the coder view exactly (no name, Observations readable)', async () => {
    const asCoder = await receive(await stack.get(`/Patient/${ALICE}`, { ...both, headers: { 'x-role': 'coder' } }));
    const plainCoder = await receive(await stack.get(`/Patient/${ALICE}`, { role: 'coder', purpose: 'HPAYMT' }));
    expect(asCoder.status).toBe(200);
    expect(asCoder.json).toEqual(plainCoder.json);
    expectAbsent(asCoder, [DEMO.names.alice, 'Anderson', DEMO.addresses.aliceLine, ...billingNever]);
    const obs = await receive(await stack.get('/Observation', { ...both, headers: { 'x-role': 'coder' } }));
    expect(obs.status).toBe(200);
  });

  it('X-Role naming a role the token does not hold: 403 role-not-held', async () => {
    const r = await receive(await stack.get(`/Patient/${ALICE}`, { ...both, headers: { 'x-role': 'clinician' } }));
    expectError(r, 403, 'role-not-held');
  });
});

describe('document Bundles', () => {
  it('billing may not read Bundles: refused before the upstream, nothing of the document comes back', async () => {
    const r = await receive(await stack.get('/Bundle/doc-1', billing));
    expect([403, 404]).toContain(r.status);
    expectAbsent(r, [...billingNever, 'Discharge']);
    if (r.status === 403) expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
  });

  it('a Bundle search is refused for billing too', async () => {
    const r = await receive(await stack.get('/Bundle?type=document', billing));
    expect(r.status).toBeGreaterThanOrEqual(400);
    expectAbsent(r, [...billingNever, 'Discharge']);
  });

  it('the clinician may not store a document Bundle where Bundle access is not granted', async () => {
    const r = await receive(
      await stack.request('/Bundle', {
        role: 'clinician',
        purpose: 'TREAT',
        method: 'POST',
        body: JSON.stringify({ resourceType: 'Bundle', type: 'document', entry: [] }),
        contentType: 'application/fhir+json',
      }),
    );
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect((await auditFor(stack, r.requestId)).upstreamStatus).toBeUndefined();
  });
});

describe('contained resources are filtered by their own type', () => {
  it("billing reads a Claim: the contained Patient loses SSN and telecom, the contained Observation goes", async () => {
    const r = await receive(await stack.get('/Claim/claim-contained', billing));
    expect(r.status, r.text).toBe(200);
    expectAbsent(r, [CONTAINED_SSN, CONTAINED_PHONE, CONTAINED_OBS, SSN_SYSTEM]);
    const contained = (r.json as { contained?: Array<{ resourceType: string }> }).contained ?? [];
    expect(contained.map((c) => c.resourceType)).toEqual(['Patient']);
    expect(JSON.stringify(contained[0])).toContain('Contained');
  });

  it('the clinician reads the same Claim type-denied (Claim is not clinical), so the view differs by role, not by luck', async () => {
    const r = await receive(await stack.get('/Claim/claim-contained', { role: 'clinician', purpose: 'TREAT' }));
    expectError(r, 403, 'type-denied');
  });
});
