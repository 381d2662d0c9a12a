/**
 * BYPASSES 6: `$graphql` resolves nested references server-side, outside any per-resource policy
 * (medplum 7641). No data set grants it, so it is refused at every level (system, type, instance),
 * by GET and POST, in every body form, for every demo role and purpose, before the upstream is
 * asked: the audit record of each attempt has no upstream status.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { errorCode, expectAbsent, receive } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const CALLERS: ReadonlyArray<readonly [string, RequestOpts]> = [
  ['clinician TREAT', { role: 'clinician', purpose: 'TREAT' }],
  ['clinician COC', { role: 'clinician', purpose: 'COC' }],
  ['clinician for one patient', { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: DEMO.patients.alice } }],
  ['billing HPAYMT', { role: 'billing', purpose: 'HPAYMT' }],
  ['coder HPAYMT', { role: 'coder', purpose: 'HPAYMT' }],
  ['coder HOPERAT', { role: 'coder', purpose: 'HOPERAT' }],
  ['researcher HRESCH', { role: 'researcher', purpose: 'HRESCH' }],
  ['front-desk HOPERAT', { role: 'front-desk', purpose: 'HOPERAT' }],
  ['auditor HCOMPL', { role: 'auditor', purpose: 'HCOMPL' }],
  ['privacy-officer HCOMPL', { role: 'privacy-officer', purpose: 'HCOMPL' }],
];
/** Roles whose data set holds no Patient at all: refused on the type before the operation. */
const NO_PATIENT_TYPE = new Set(['auditor HCOMPL', 'privacy-officer HCOMPL']);

// Nested resolution is the point of GraphQL: a permitted root reaching restricted records.
const NESTED = `{ Patient(id: "${DEMO.patients.alice}") { name { family } generalPractitioner { resource { ... on Practitioner { name { family } } } } ObservationList(_reference: patient) { valueQuantity { value } } } ConditionList(_id: "${DEMO.psyCondition}") { note { text } } }`;
const q = encodeURIComponent(NESTED);

interface Attempt {
  readonly name: string;
  readonly path: string;
  readonly method: 'GET' | 'POST';
  readonly body?: string;
  readonly contentType?: string;
  /** The gateway's answer for a caller whose data set has Patient (others: type-denied where typed). */
  readonly expect: 'interaction-denied' | 'request-body-invalid' | 'unsupported-media-type';
  readonly typed: boolean;
}

const ATTEMPTS: readonly Attempt[] = [
  { name: 'system GET', path: `/$graphql?query=${q}`, method: 'GET', expect: 'interaction-denied', typed: false },
  { name: 'system GET, other case', path: `/$GraphQL?query=${q}`, method: 'GET', expect: 'interaction-denied', typed: false },
  { name: 'system GET, percent-encoded $', path: `/%24graphql?query=${q}`, method: 'GET', expect: 'interaction-denied', typed: false },
  { name: 'type GET', path: `/Patient/$graphql?query=${q}`, method: 'GET', expect: 'interaction-denied', typed: true },
  { name: 'instance GET', path: `/Patient/${DEMO.patients.alice}/$graphql?query=${q}`, method: 'GET', expect: 'interaction-denied', typed: true },
  { name: 'instance GET of another patient', path: `/Patient/${DEMO.patients.vip}/$graphql?query=${q}`, method: 'GET', expect: 'interaction-denied', typed: true },
  { name: 'system POST, GraphQL JSON body', path: '/$graphql', method: 'POST', body: JSON.stringify({ query: NESTED }), contentType: 'application/json', expect: 'request-body-invalid', typed: false },
  { name: 'system POST, application/graphql', path: '/$graphql', method: 'POST', body: NESTED, contentType: 'application/graphql', expect: 'unsupported-media-type', typed: false },
  { name: 'system POST, form body', path: '/$graphql', method: 'POST', body: `query=${q}`, contentType: 'application/x-www-form-urlencoded', expect: 'interaction-denied', typed: false },
  {
    name: 'system POST, Parameters body',
    path: '/$graphql',
    method: 'POST',
    body: JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: 'query', valueString: NESTED }] }),
    contentType: 'application/fhir+json',
    expect: 'interaction-denied',
    typed: false,
  },
  {
    name: 'instance POST, Parameters body',
    path: `/Patient/${DEMO.patients.alice}/$graphql`,
    method: 'POST',
    body: JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: 'query', valueString: NESTED }] }),
    contentType: 'application/fhir+json',
    expect: 'interaction-denied',
    typed: true,
  },
  { name: 'type POST, form body', path: '/Patient/$graphql', method: 'POST', body: `query=${q}`, contentType: 'application/x-www-form-urlencoded', expect: 'interaction-denied', typed: true },
];

/** Values only reachable through the nested resolution (or the root record itself). */
const NEVER = [DEMO.names.alice, DEMO.practitionerNames.chen, DEMO.notes.psy, DEMO.ssn.alice, DEMO.names.vip, 'Anderson', 'Reyes'];

describe('$graphql is refused for every role, at every level, in every form', () => {
  it.each(CALLERS)('%s', async (who, opts) => {
    const ids: string[] = [];
    for (const a of ATTEMPTS) {
      const res = await stack.request(a.path, { ...opts, method: a.method, ...(a.body !== undefined && { body: a.body }), ...(a.contentType && { contentType: a.contentType }) });
      const r = await receive(res);
      const expected = a.expect === 'interaction-denied' && a.typed && NO_PATIENT_TYPE.has(who) ? 'type-denied' : a.expect;
      expect({ attempt: a.name, status: r.status, code: errorCode(r.json) }).toEqual({
        attempt: a.name,
        status: a.expect === 'interaction-denied' ? 403 : a.expect === 'request-body-invalid' ? 400 : 415,
        code: expected,
      });
      expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
      expectAbsent(r, NEVER);
      ids.push(r.requestId);
    }
    // Nothing reached the FHIR server: no record carries an upstream status, every one is a denial.
    const records = (await stack.auditRecords()).filter((x) => ids.includes(x.id));
    expect(records).toHaveLength(ATTEMPTS.length);
    for (const rec of records) {
      expect(rec.upstreamStatus, rec.request.path).toBeUndefined();
      expect(rec.decision).toBe('deny');
      expect(rec.disclosed.resources).toEqual([]);
    }
  });

  it('break-glass does not open $graphql either (refused before a session is opened)', async () => {
    const r = await receive(
      await stack.get(`/Patient/${DEMO.patients.vip}/$graphql?query=${q}`, {
        role: 'clinician',
        purpose: 'BTG',
        headers: { 'x-break-glass-reason': 'Unconscious patient in the ED, need history now' },
      }),
    );
    expect({ status: r.status, code: errorCode(r.json) }).toEqual({ status: 403, code: 'interaction-denied' });
    expect(r.headers.get('x-break-glass-session')).toBeNull();
    expectAbsent(r, NEVER);
  });

  it('the same caller can read the root resource directly, so the refusal is about $graphql itself', async () => {
    const r = await receive(await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' }));
    expect(r.status).toBe(200);
    expect(r.text).toContain('Anderson');
  });
});
