/**
 * BYPASSES 18: writes to what the caller cannot read. A write to a withheld resource is answered
 * exactly as a read of it would be and never reaches the upstream (so its label cannot be
 * overwritten away); an update never creates (201 vs 200 would tell whether a withheld resource
 * exists), so a write to a missing resource and one to a withheld resource answer the same bytes;
 * label changes need the `relabel` grant; a create carrying a label the role withholds is refused
 * before it is sent (never executed upstream and then reported as denied).
 * Full stack: the real upstream (medplum, seeded demo), the shipped policy plus one role that
 * treats like a clinician but may not break the glass (`ward-clerk`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, comparableHeaders, expectAbsent, expectError, type Received, receive } from './support.js';

const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const VIP_ENC = DEMO.vip.encounter;
const MISSING = 'enc-missing-18';
/** What identifies the VIP chart. */
const vipBytes = [DEMO.names.vip, DEMO.patients.vip, 'Fracture of wrist'];

const billing: RequestOpts = { role: 'billing', purpose: 'HPAYMT' };
const clinician: RequestOpts = { role: 'clinician', purpose: 'TREAT' };
/** Treats with the clinical data set plus patch and delete, but is not break-glass eligible. */
const clerk: RequestOpts = { role: 'clinician', purpose: 'TREAT', tokenClaims: { roles: ['ward-clerk'] } };
/** The same data set, break-glass eligible. */
const doctor: RequestOpts = { role: 'clinician', purpose: 'TREAT', tokenClaims: { roles: ['ward-doctor'] } };

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({
    policy: (p) => {
      // The clinical data set with patch and delete as well (the shipped one grants create and update only).
      const clinical = p.dataSets.clinical!;
      p.dataSets.ward = { ...clinical, rules: clinical.rules.map((r) => ({ ...r, interactions: [...(r.interactions ?? []), 'patch', 'delete'] })) };
      p.roles['ward-clerk'] = { description: 'Treats; may not break the glass.', purposes: { TREAT: 'ward' } };
      p.roles['ward-doctor'] = { description: 'Treats; may break the glass.', purposes: { TREAT: 'ward' }, breakGlass: true };
    },
  });
});

afterAll(async () => {
  await stack?.close();
});

async function upstream(path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${stack.upstreamUrl}${path}`);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

/** The stored VIP encounter without its label: what an overwrite would send. */
async function unlabelled(id: string): Promise<Record<string, unknown>> {
  const { body } = await upstream(`/Encounter/${VIP_ENC}`);
  return { ...body, id, meta: undefined, status: 'cancelled' };
}

function write(path: string, opts: RequestOpts, method: string, body?: unknown, contentType = 'application/fhir+json'): Promise<Received> {
  return stack.request(path, { ...opts, method, ...(body === undefined ? {} : { body: JSON.stringify(body), contentType }) }).then(receive);
}

/** The request is audited as refused. */
async function expectAuditedDeny(r: Received): Promise<void> {
  const rec = await auditFor(stack, r.requestId);
  expect(rec.decision).toBe('deny');
}

describe('overwriting a restricted resource the caller cannot read', () => {
  it('a clinician without break-glass: 403 break-glass-available, nothing written, the label stays', async () => {
    const r = await write(`/Encounter/${VIP_ENC}`, clinician, 'PUT', await unlabelled(VIP_ENC));
    expectError(r, 403, 'break-glass-available');
    expectAbsent(r, vipBytes);
    expect(r.headers.get('etag')).toBeNull();
    expect(r.headers.get('location')).toBeNull();
    await expectAuditedDeny(r);
    const stored = await upstream(`/Encounter/${VIP_ENC}`);
    expect(stored.body.status).toBe('finished');
    expect(stored.body.meta).toMatchObject({ versionId: '1', security: [{ system: CONF, code: 'R' }] });
    // Billing still cannot read it.
    const b = await receive(await stack.get(`/Encounter/${VIP_ENC}`, billing));
    expectError(b, 404, 'not-found');
    expectAbsent(b, vipBytes);
  });

  it('patch and delete are refused the same way', async () => {
    const patch = await write(`/Encounter/${VIP_ENC}`, doctor, 'PATCH', [{ op: 'replace', path: '/status', value: 'cancelled' }], 'application/json-patch+json');
    expectError(patch, 403, 'break-glass-available');
    const del = await write(`/Encounter/${VIP_ENC}`, doctor, 'DELETE');
    expectError(del, 403, 'break-glass-available');
    expect((await upstream(`/Encounter/${VIP_ENC}`)).status).toBe(200);
  });
});

describe('a write tells nothing about existence', () => {
  it('an update of a missing resource is 404 and creates nothing (an update never creates)', async () => {
    const r = await write(`/Encounter/${MISSING}`, clinician, 'PUT', await unlabelled(MISSING));
    expectError(r, 404, 'not-found');
    expect(r.headers.get('location')).toBeNull();
    expect((await upstream(`/Encounter/${MISSING}`)).status).toBe(404);
  });

  it.each([
    ['PUT', async (id: string) => unlabelled(id), undefined],
    ['PATCH', async () => [{ op: 'replace', path: '/status', value: 'cancelled' }], 'application/json-patch+json'],
    ['DELETE', async () => undefined, undefined],
  ] as const)('%s of a withheld and of a missing resource answer the same bytes (apart from X-Request-Id)', async (method, body, contentType) => {
    const a = await write(`/Encounter/${VIP_ENC}`, clerk, method, await body(VIP_ENC), contentType);
    const b = await write(`/Encounter/${MISSING}`, clerk, method, await body(MISSING), contentType);
    expectError(a, 404, 'not-found');
    expect(a.text).toBe(b.text);
    expect(comparableHeaders(a.headers)).toEqual(comparableHeaders(b.headers));
    expectAbsent(a, vipBytes);
  });

  it('the stored VIP encounter is untouched after all of it', async () => {
    const stored = await upstream(`/Encounter/${VIP_ENC}`);
    expect(stored.body.meta).toMatchObject({ versionId: '1', security: [{ code: 'R' }] });
    expect((await upstream(`/Encounter/${MISSING}`)).status).toBe(404);
  });

  it('an update of a resource the caller can read goes through', async () => {
    const { body } = await upstream('/Encounter/enc-alice-2');
    const r = await write('/Encounter/enc-alice-2', clerk, 'PUT', { ...body, status: 'entered-in-error' });
    expect(r.status, r.text).toBe(200);
    expect((await upstream('/Encounter/enc-alice-2')).body.status).toBe('entered-in-error');
  });
});

describe('security labels need their own grant', () => {
  it('removing a label the clinician can see (PSY) is refused before it is sent', async () => {
    const { body } = await upstream(`/Condition/${DEMO.psyCondition}`);
    const r = await write(`/Condition/${DEMO.psyCondition}`, clinician, 'PUT', { ...body, meta: undefined });
    expectError(r, 403, 'label-change-denied');
    await expectAuditedDeny(r);
    expect((await upstream(`/Condition/${DEMO.psyCondition}`)).body.meta).toMatchObject({ versionId: '1', security: [{ code: 'PSY' }] });
  });

  it('adding a label by JSON Patch is refused', async () => {
    const r = await write(`/Condition/${DEMO.hypertension}`, clerk, 'PATCH', [{ op: 'add', path: '/meta/security', value: [{ system: CONF, code: 'N' }] }], 'application/json-patch+json');
    expectError(r, 403, 'label-change-denied');
  });

  it('a create carrying a label the role withholds is refused before it is sent, and audited as deny', async () => {
    const marker = 'CREATE-WITH-R-LABEL-18';
    const r = await write('/Condition', clinician, 'POST', {
      resourceType: 'Condition',
      meta: { security: [{ system: CONF, code: 'R' }] },
      subject: { reference: `Patient/${DEMO.patients.alice}` },
      code: { text: marker },
    });
    expectError(r, 403, 'label-denied');
    await expectAuditedDeny(r);
    const search = (await (await fetch(`${stack.upstreamUrl}/Condition?_count=1000`)).json()) as { entry?: Array<{ resource?: { code?: { text?: string } } }> };
    expect((search.entry ?? []).filter((e) => e.resource?.code?.text === marker)).toEqual([]);
  });

  it('a create with labels the role may see is forwarded (201)', async () => {
    const r = await write('/Condition', clinician, 'POST', {
      resourceType: 'Condition',
      meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] },
      subject: { reference: `Patient/${DEMO.patients.alice}` },
      code: { text: 'psy-labelled-create-18' },
    });
    expect(r.status, r.text).toBe(201);
  });
});
