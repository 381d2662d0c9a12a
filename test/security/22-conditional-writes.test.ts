/**
 * BYPASSES 3 and 18 for conditional create (`If-None-Exist`, and `request.ifNoneExist` in
 * transaction entries as Synthea bundles send them): whether the server answers 201 (created) or
 * 200 (matched) tells whether something matches the criteria, so the criteria are judged as a
 * search of the type under the caller's search rules, and the answer must be the same whether or
 * not a resource the caller may not see matches them (non-interference). For a caller not told of
 * withholding the upstream is asked never to match withheld resources (`_security:not`), so a
 * match of a withheld record answers exactly as no match does: created, 201. A caller that may
 * break the glass is told (403 `break-glass-available`), as its search would tell it; nothing is
 * written. Full stack: the real upstream (medplum, seeded demo) and the shipped policy, plus roles
 * that treat without break-glass (`ward-clerk`) and register patients with a narrow search grant.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO, MRN_SYSTEM } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, expectError, type Received, receive } from './support.js';

const clinician: RequestOpts = { role: 'clinician', purpose: 'TREAT' };
/** The clinical data set (withholds R and V), not break-glass eligible: not told of withholding. */
const clerk: RequestOpts = { role: 'clinician', purpose: 'TREAT', tokenClaims: { roles: ['ward-clerk'] } };
/** Creates Patients, sees identifier, gender and birth date only, so may search on those alone. */
const registrar: RequestOpts = { role: 'front-desk', purpose: 'HOPERAT', tokenClaims: { roles: ['registrar'] } };
/** May create Patients but not search them. */
const intake: RequestOpts = { role: 'front-desk', purpose: 'HOPERAT', tokenClaims: { roles: ['intake'] } };

const vipMrn = `${MRN_SYSTEM}|${DEMO.mrn.vip}`;
const vipBytes = [DEMO.names.vip, DEMO.patients.vip, DEMO.ssn.vip, 'Vip'];

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({
    policy: (p) => {
      p.roles['ward-clerk'] = { description: 'Treats; may not break the glass.', purposes: { TREAT: 'clinical' } };
      p.dataSets.registration = {
        description: 'Registers patients.',
        withhold: ['R', 'V'],
        rules: [{ types: ['Patient'], interactions: ['read', 'search', 'create'], elements: ['identifier', 'gender', 'birthDate'] }],
      };
      p.dataSets.intake = {
        description: 'Creates patients only.',
        withhold: ['R', 'V'],
        rules: [{ types: ['Patient'], interactions: ['read', 'create'], elements: ['identifier', 'gender', 'birthDate'] }],
      };
      p.roles.registrar = { description: 'Registration.', purposes: { HOPERAT: 'registration' } };
      p.roles.intake = { description: 'Intake.', purposes: { HOPERAT: 'intake' } };
    },
  });
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

function newPatient(marker: string, mrn: string): Record<string, unknown> {
  return { resourceType: 'Patient', identifier: [{ system: MRN_SYSTEM, value: mrn }], name: [{ family: marker }], gender: 'unknown' };
}

function conditionalCreate(opts: RequestOpts, criteria: string, body: unknown): Promise<Received> {
  return stack
    .request('/Patient', { ...opts, method: 'POST', body: JSON.stringify(body), contentType: 'application/fhir+json', headers: { 'if-none-exist': criteria, ...opts.headers } })
    .then(receive);
}

/** Patients the upstream holds with this family name (the test's marker). */
async function storedWithMarker(marker: string): Promise<number> {
  const r = (await (await fetch(`${stack.upstreamUrl}/Patient?family=${marker}`)).json()) as { entry?: unknown[] };
  return (r.entry ?? []).length;
}

/** The answer without what differs between any two creates: ids, versions, times, request id. */
function shape(r: Received): unknown {
  const body = r.json as Record<string, unknown> | undefined;
  const { id: _id, meta: _meta, name: _name, ...rest } = body ?? {};
  const headers = [...r.headers.entries()]
    .filter(([k]) => !['x-request-id', 'date', 'etag', 'last-modified', 'content-length'].includes(k))
    .map(([k, v]) => [k, k === 'location' ? v.replace(/\/Patient\/[^/]+(\/_history\/[^/]+)?$/, '/Patient/ID') : v]);
  return { status: r.status, headers: headers.sort(), body: rest, etag: r.headers.get('etag') === null ? 'none' : 'set' };
}

describe('a caller not told of withholding: a withheld match answers as no match', () => {
  it('If-None-Exist naming the restricted VIP patient creates, exactly as for an MRN nobody has', async () => {
    const a = await conditionalCreate(clerk, `identifier=${vipMrn}`, newPatient('CondA22', 'MRN-COND-A22'));
    const b = await conditionalCreate(clerk, `identifier=${MRN_SYSTEM}|MRN-NOBODY-22`, newPatient('CondB22', 'MRN-COND-A22'));
    expect(a.status, a.text).toBe(201);
    expect(shape(a)).toEqual(shape(b));
    expectAbsent(a, vipBytes);
    expect(await storedWithMarker('CondA22')).toBe(1);
    // The VIP record is what it was.
    const vip = (await (await fetch(`${stack.upstreamUrl}/Patient/${DEMO.patients.vip}`)).json()) as { meta?: { versionId?: string } };
    expect(vip.meta?.versionId).toBe('1');
  });

  it('the same in a transaction entry (request.ifNoneExist)', async () => {
    const tx = (criteria: string, marker: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ fullUrl: 'urn:uuid:6c6b2f53-2222-4a0b-9f00-000000000022', resource: newPatient(marker, 'MRN-TX-22'), request: { method: 'POST', url: 'Patient', ifNoneExist: criteria } }],
    });
    const post = (body: unknown) => stack.request('/', { ...clerk, method: 'POST', body: JSON.stringify(body), contentType: 'application/fhir+json' }).then(receive);
    const a = await post(tx(`identifier=${vipMrn}`, 'TxA22'));
    const b = await post(tx(`identifier=${MRN_SYSTEM}|MRN-NOBODY-TX-22`, 'TxB22'));
    expect(a.status, a.text).toBe(200);
    const status = (r: Received) => (r.json as { entry: Array<{ response?: { status?: string } }> }).entry.map((e) => e.response?.status?.slice(0, 3));
    expect(status(a)).toEqual(['201']);
    expect(status(b)).toEqual(['201']);
    expectAbsent(a, vipBytes);
    expect(await storedWithMarker('TxA22')).toBe(1);
  });

  it('a visible match answers 200 with it (filtered), and nothing is created', async () => {
    const r = await conditionalCreate(clerk, `identifier=${MRN_SYSTEM}|${DEMO.mrn.alice}`, newPatient('CondC22', 'MRN-COND-C22'));
    expect(r.status, r.text).toBe(200);
    expect((r.json as { id?: string }).id).toBe(DEMO.patients.alice);
    expect(await storedWithMarker('CondC22')).toBe(0);
  });

  it('the audit record names a create, allowed (the criteria reach the upstream as If-None-Exist: the visible match above was found)', async () => {
    const r = await conditionalCreate(clerk, `identifier=${MRN_SYSTEM}|MRN-AUDIT-22`, newPatient('CondD22', 'MRN-AUDIT-22'));
    expect(r.status, r.text).toBe(201);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.request).toMatchObject({ interaction: 'create', method: 'POST', resourceType: 'Patient' });
    expect(rec.decision).toBe('allow');
  });
});

describe('a caller told of withholding (break-glass eligible)', () => {
  it('a withheld match: 403 break-glass-available, nothing written, nothing of the VIP released', async () => {
    const r = await conditionalCreate(clinician, `identifier=${vipMrn}`, newPatient('CondE22', 'MRN-COND-E22'));
    expectError(r, 403, 'break-glass-available');
    expectAbsent(r, vipBytes);
    expect(r.headers.get('location')).toBeNull();
    expect(await storedWithMarker('CondE22')).toBe(0);
    expect((await auditFor(stack, r.requestId)).decision).toBe('deny');
  });
});

describe('the criteria are judged as a search, before the upstream is asked', () => {
  it('a parameter the role may not search on: search-param-denied, the same bytes whether or not it would match', async () => {
    const a = await conditionalCreate(registrar, `name=${encodeURIComponent(DEMO.names.vip)}`, newPatient('CondF22', 'MRN-COND-F22'));
    const b = await conditionalCreate(registrar, 'name=Nobody-At-All', newPatient('CondF22', 'MRN-COND-F22'));
    expectError(a, 403, 'search-param-denied');
    expect(a.text).toBe(b.text);
    expect(await storedWithMarker('CondF22')).toBe(0);
  });

  it('a parameter it may search on goes through', async () => {
    const r = await conditionalCreate(registrar, `identifier=${MRN_SYSTEM}|MRN-COND-G22`, newPatient('CondG22', 'MRN-COND-G22'));
    expect(r.status, r.text).toBe(201);
  });

  it('a role that may create but not search: interaction-denied', async () => {
    const r = await conditionalCreate(intake, `identifier=${MRN_SYSTEM}|MRN-COND-H22`, newPatient('CondH22', 'MRN-COND-H22'));
    expectError(r, 403, 'interaction-denied');
    // The same role's plain create is fine.
    const plain = await stack.request('/Patient', { ...intake, method: 'POST', body: JSON.stringify(newPatient('CondH22', 'MRN-COND-H22')), contentType: 'application/fhir+json' }).then(receive);
    expect(plain.status, plain.text).toBe(201);
  });

  it('under a patient compartment (SMART launch context): compartment-denied', async () => {
    const body = { resourceType: 'Observation', status: 'final', code: { text: 'cond-22' }, subject: { reference: `Patient/${DEMO.patients.alice}` } };
    const r = await stack
      .request('/Observation', {
        ...clinician,
        tokenClaims: { patient: DEMO.patients.alice },
        method: 'POST',
        body: JSON.stringify(body),
        contentType: 'application/fhir+json',
        headers: { 'if-none-exist': 'code=cond-22' },
      })
      .then(receive);
    expectError(r, 403, 'compartment-denied');
  });

  it('chains and result parameters in the criteria are refused', async () => {
    const chain = await conditionalCreate(registrar, 'general-practitioner.name=Smith', newPatient('CondI22', 'MRN-COND-I22'));
    expectError(chain, 403, 'search-param-denied');
    const count = await conditionalCreate(registrar, `identifier=${MRN_SYSTEM}|X&_count=1`, newPatient('CondI22', 'MRN-COND-I22'));
    expectError(count, 400, 'request-unclassified');
    expect(await storedWithMarker('CondI22')).toBe(0);
  });
});
