/**
 * BYPASSES 2 (and SPEC 3 "search on elements the role cannot see"): a role may only search on
 * parameters whose elements its data set keeps; chains, `_has`, `_sort` on hidden elements,
 * `_filter`, `_query`, `_contained`, `_text`, `_content`, `_list` are refused, in the URL and in a
 * POST `_search` form body alike, before the upstream is asked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectError, receive } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const researcher = { role: 'researcher', purpose: 'HRESCH' } as const;

const refused: Array<[string, typeof billing | typeof researcher, string]> = [
  ['SSN search (identifier is kept but SSN removed)', billing, `identifier=${DEMO.ssn.alice}`],
  ['telecom (removed)', billing, `telecom=${DEMO.phones.alice}`],
  ['phone', billing, `phone=${DEMO.phones.alice}`],
  ['email', billing, `email=${DEMO.emails.alice}`],
  ['_has reverse chain', billing, '_has:Condition:subject:code=F32.1'],
  ['_has on a hidden type', billing, '_has:Observation:patient:code=1234'],
  ['chain', billing, 'general-practitioner.name=Reyes'],
  ['chain with type', billing, 'general-practitioner:Practitioner.name=Reyes'],
  ['_sort on a hidden element', billing, '_sort=telecom'],
  ['_sort descending on a hidden element', billing, '_sort=-phone'],
  ['_sort on a chain', billing, '_sort=general-practitioner.name'],
  ['_filter', billing, '_filter=telecom eq "617-555-0101"'],
  ['_query', billing, '_query=everything'],
  ['_contained', billing, '_contained=true'],
  ['_text', billing, '_text=Anderson'],
  ['_content', billing, '_content=Anderson'],
  ['_list', billing, '_list=abc'],
  ['modifier on a hidden element', billing, 'telecom:missing=false'],
  ['researcher by name', researcher, 'name=Anderson'],
  ['researcher by birthdate (generalized)', researcher, `birthdate=${DEMO.birthDates.alice}`],
  ['researcher by exact address', researcher, 'address-postalcode=02115'],
];

describe('a de-identified caller names records by pseudonym only', () => {
  it('researcher by a real _id: refused as not a pseudonym, before the upstream is asked', async () => {
    expectError(await receive(await stack.get(`/Patient?_id=${DEMO.patients.alice}`, researcher)), 403, 'pseudonym-required');
  });
});

describe('ordering is judged as searching is (found by trying it from outside)', () => {
  // Sorted by the real ids behind the pseudonyms, a researcher's pages matched pat-alice..pat-paula
  // in order, linking each pseudonym (and its HIV or psychiatric Condition) to a person.
  it.each([
    ['Patient', '_sort=_id'],
    ['Patient', '_sort=-_id'],
    ['Patient', '_sort=gender,_id'],
    ['Condition', '_sort=_id'],
    ['Encounter', '_sort=-_id'],
  ])('researcher: %s?%s is refused', async (type, query) => {
    expectError(await receive(await stack.get(`/${type}?${query}&_count=20`, researcher)), 403, 'search-param-denied');
    const post = await receive(await stack.request(`/${type}/_search`, { ...researcher, method: 'POST', body: query, contentType: 'application/x-www-form-urlencoded' }));
    expectError(post, 403, 'search-param-denied');
  });

  it('researcher: sorting by a kept code (gender) stays allowed; billing (real ids) may sort by _id', async () => {
    expect((await receive(await stack.get('/Patient?_sort=gender', researcher))).status).toBe(200);
    // A CodeableConcept sort orders by whichever coding the upstream picks, perhaps one under a
    // local system that de-identification removes from the answer: refused.
    expectError(await receive(await stack.get('/Condition?_sort=code', researcher)), 403, 'search-param-denied');
    expect((await receive(await stack.get('/Patient?_sort=_id', billing))).status).toBe(200);
  });
});

describe('search oracles are refused before the upstream is asked', () => {
  it.each(refused)('%s', async (_n, who, query) => {
    const r = await receive(await stack.get(`/Patient?${encodeQuery(query)}`, who));
    expect([400, 403]).toContain(r.status);
    if (r.status === 403) expectError(r, 403, 'search-param-denied');
  });

  it.each(refused.filter(([, who]) => who === billing))('POST _search form body: %s', async (_n, who, query) => {
    const r = await receive(
      await stack.request('/Patient/_search', { ...who, method: 'POST', body: encodeQuery(query), contentType: 'application/x-www-form-urlencoded' }),
    );
    expect([400, 403]).toContain(r.status);
  });

  it('a parameter split between URL and form body is judged on the merge', async () => {
    const r = await receive(
      await stack.request('/Patient/_search?name=Anderson', { ...billing, method: 'POST', body: `identifier=${DEMO.ssn.alice}`, contentType: 'application/x-www-form-urlencoded' }),
    );
    expectError(r, 403, 'search-param-denied');
  });

  it('a search on a kept element is allowed and answers filtered data', async () => {
    const r = await receive(await stack.get('/Patient?name=Anderson', billing));
    expect(r.status).toBe(200);
    expect(r.text).not.toContain(DEMO.ssn.alice);
  });

  it('case and encoding tricks on parameter names do not slip through', async () => {
    for (const q of ['TELECOM=1', 'Telecom=1', '%74elecom=1', '_HAS:Condition:subject:code=x', '_has%3ACondition%3Asubject%3Acode=x']) {
      const r = await receive(await stack.get(`/Patient?${q}`, billing));
      expect([400, 403], q).toContain(r.status);
    }
  });
});

function encodeQuery(q: string): string {
  const eq = q.indexOf('=');
  return `${encodeURIComponent(q.slice(0, eq))}=${encodeURIComponent(q.slice(eq + 1))}`;
}
