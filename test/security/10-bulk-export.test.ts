/**
 * BYPASSES 10: bulk `$export` granted when ANY requested type was allowed instead of ALL
 * (hapi-fhir PR 5556). Exported NDJSON files are fetched outside the response filter, so no
 * data set grants `$export`: kick-off at system, type and group level, with and without `_type`
 * (allowed types, forbidden types, a mix), by GET and POST, and the status / file URLs that an
 * export hands out, are refused for every demo role and purpose, before the upstream is asked.
 * (test/unit/policy/decide-writes-exports.test.ts pins the all-of rule for a policy that does
 * grant `$export` on a type: `_type` and the other widening parameters are still refused.)
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
  ['clinician for one patient', { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: DEMO.patients.alice } }],
  ['billing HPAYMT', { role: 'billing', purpose: 'HPAYMT' }],
  ['coder HOPERAT', { role: 'coder', purpose: 'HOPERAT' }],
  ['researcher HRESCH', { role: 'researcher', purpose: 'HRESCH' }],
  ['front-desk HOPERAT', { role: 'front-desk', purpose: 'HOPERAT' }],
  ['auditor HCOMPL', { role: 'auditor', purpose: 'HCOMPL' }],
  ['privacy-officer HCOMPL', { role: 'privacy-officer', purpose: 'HCOMPL' }],
];

const ASYNC = { prefer: 'respond-async', accept: 'application/fhir+json' };
const params = (types: string) => JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: '_type', valueString: types }] });

/** [name, method, path, body?, content type?] */
const ATTEMPTS: ReadonlyArray<readonly [string, 'GET' | 'POST', string, string?, string?]> = [
  ['system kick-off', 'GET', '/$export'],
  ['system, one type each role can read', 'GET', '/$export?_type=Patient'],
  ['system, allowed and forbidden types', 'GET', '/$export?_type=Patient,Observation,Claim'],
  ['system, repeated _type', 'GET', '/$export?_type=Patient&_type=DocumentReference'],
  ['system, _typeFilter', 'GET', `/$export?_type=Patient&_typeFilter=${encodeURIComponent('Patient?identifier=123-45-6789')}`],
  ['patient kick-off', 'GET', '/Patient/$export'],
  ['patient, _type=Patient', 'GET', '/Patient/$export?_type=Patient'],
  ['patient, mixed _type', 'GET', '/Patient/$export?_type=Patient,Condition,Observation'],
  ['patient, _since', 'GET', '/Patient/$export?_since=2000-01-01T00:00:00Z'],
  ['group kick-off', 'GET', '/Group/all-patients/$export'],
  ['group, _type', 'GET', '/Group/all-patients/$export?_type=Patient'],
  ['type-level group', 'GET', '/Group/$export'],
  ['system POST, Parameters', 'POST', '/$export', params('Patient'), 'application/fhir+json'],
  ['patient POST, Parameters', 'POST', '/Patient/$export', params('Patient,Observation'), 'application/fhir+json'],
  ['patient POST, form', 'POST', '/Patient/$export', '_type=Patient', 'application/x-www-form-urlencoded'],
  ['group POST, Parameters', 'POST', '/Group/all-patients/$export', params('Patient'), 'application/fhir+json'],
  ['HAPI status URL', 'GET', '/$export-poll-status?_jobId=0d9a8e1c-1111-2222-3333-444455556666'],
  ['status URL as an operation', 'GET', '/$bulkdata-status?job=abc'],
  ['medplum-style status path', 'GET', '/bulkdata/export/0d9a8e1c'],
  ['exported file path', 'GET', '/bulkdata/export/0d9a8e1c/Patient.ndjson'],
  ['Binary as export output', 'GET', '/Binary/export-output-1'],
];

describe('$export is refused everywhere, kick-off and status alike', () => {
  it.each(CALLERS)('%s', async (_who, opts) => {
    const ids: string[] = [];
    for (const [name, method, path, body, contentType] of ATTEMPTS) {
      const r = await receive(await stack.request(path, { ...opts, method, headers: ASYNC, ...(body !== undefined && { body }), ...(contentType && { contentType }) }));
      // Never accepted (202), never data: a typed refusal.
      expect(r.status, `${name}: ${r.text}`).toBeGreaterThanOrEqual(400);
      expect(r.status, name).toBeLessThan(500);
      expect(errorCode(r.json), name).toMatch(/^(interaction-denied|type-denied|search-param-denied|request-unclassified|compartment-denied)$/);
      expect(r.headers.get('content-location'), name).toBeNull();
      expectAbsent(r, [DEMO.names.alice, DEMO.ssn.alice, 'ndjson', stack.upstreamUrl]);
      ids.push(r.requestId);
    }
    const records = (await stack.auditRecords()).filter((x) => ids.includes(x.id));
    expect(records).toHaveLength(ATTEMPTS.length);
    for (const rec of records) {
      expect(rec.upstreamStatus, rec.request.path).toBeUndefined();
      expect(rec.decision).toBe('deny');
    }
  });

  it('the refusals are the precise ones: operation not granted, or the type not in the data set', async () => {
    const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
    const code = async (path: string, opts: RequestOpts = billing) => errorCode((await receive(await stack.get(path, opts))).json);
    expect(await code('/$export?_type=Patient')).toBe('interaction-denied');
    expect(await code('/Patient/$export?_type=Patient')).toBe('interaction-denied');
    // Group is in no data set: refused on the type, whatever `_type` asks for.
    expect(await code('/Group/g1/$export?_type=Patient')).toBe('type-denied');
    expect(await code('/bulkdata/export/0d9a8e1c')).toBe('request-unclassified');
  });

  it('break-glass does not open $export', async () => {
    const r = await receive(
      await stack.get(`/Patient/$export?_type=Patient`, { role: 'clinician', purpose: 'BTG', headers: { 'x-break-glass-reason': 'Mass casualty event, need all charts now' } }),
    );
    expect({ status: r.status, code: errorCode(r.json) }).toEqual({ status: 403, code: 'interaction-denied' });
    expect(r.headers.get('x-break-glass-session')).toBeNull();
  });
});
