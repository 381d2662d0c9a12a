/**
 * Non-interference with an access grant that has expired (SPEC 3.6): billing asked for the
 * claim-attachment data set for one patient and had it approved by the privacy officer, then
 * lived past its expiry, and sends `X-Access-Grant` with every request. An expired grant widens
 * nothing, so S' is billing's own S' (without the documents the grant once reached, or anything
 * else billing may not see): every answer must be the same over S and S'. A file of its own, so it
 * runs beside the others.
 *
 *   npx vitest run test/noninterference/grant.test.ts
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { exchange, startWorld, type World } from './harness.js';
import { type Caller, withheldFor } from './oracle.js';
import { corpusSuite, generatedSuite, selected } from './suites.js';

const P = DEMO.patients.alice;
const EXPIRED: Caller = {
  name: 'billing/HPAYMT+expired-grant',
  role: 'billing',
  purpose: 'HPAYMT',
  grant: { dataSet: 'claim-attachment', patients: [P], minutes: 5 },
};

describe('the expired grant, before the suites (the harness really sends it)', () => {
  let world: World | undefined;
  beforeAll(async () => {
    world = await startWorld(EXPIRED);
  }, 120_000);
  afterAll(async () => {
    await world?.close();
  });

  it('every state holds an approved grant, refused once expired; without it billing is billing', async () => {
    for (const st of [world!.s, world!.s2, world!.sp]) expect(st.grant).toMatch(/\S/);
    const x = await exchange(world!.s, EXPIRED, { family: 'probe', method: 'GET', path: `/DocumentReference?patient=${P}` });
    expect(x.pages[0]!.status).toBe(403);
    const code = (x.pages[0]!.body as { issue: Array<{ details: { coding: Array<{ system: string; code: string }> } }> }).issue[0]!.details.coding.find((c) => c.system === ERROR_SYSTEM)?.code;
    expect(code).toBe('grant-inactive');
    // What the grant once reached is in S and not in S' (billing may not see documents): the
    // comparison below would see it, had the expired grant released it.
    const documents = [...withheldFor(EXPIRED)].filter(([key]) => key.startsWith('DocumentReference/'));
    expect(documents.length).toBeGreaterThan(0);
    for (const [key, why] of documents) expect(why, key).toBe('type');
  });
});

for (const caller of selected([EXPIRED])) {
  corpusSuite(caller);
  generatedSuite(caller);
}
