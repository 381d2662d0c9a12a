/**
 * Fuzz the response side end to end on a time budget: a hand-written upstream serves generated
 * resources and Bundles (nested, contained, odd shapes) holding sentinel secrets in every element
 * the billing role may not see, and labels it must withhold. Whatever the shape, the client gets
 * either a typed gateway error or a body in which no sentinel survives.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const S = (k: string) => `SENTINEL-${k}-77`;
const PSY = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' };

const patient = fc.record({
  resourceType: fc.constant('Patient'),
  id: fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  name: fc.constant([{ family: 'Visible' }]),
  telecom: fc.constant([{ system: 'phone', value: S('telecom') }]),
  identifier: fc.constant([{ system: 'http://hl7.org/fhir/sid/us-ssn', value: S('ssn') }]),
  text: fc.constant({ status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${S('narrative')}</div>` }),
  contact: fc.constant([{ name: { family: S('contact') } }]),
});
const observation = fc.record({
  resourceType: fc.constant('Observation'),
  id: fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  status: fc.constant('final'),
  code: fc.constant({ text: S('observation') }),
});
const labelledCondition = fc.record({
  resourceType: fc.constant('Condition'),
  id: fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  meta: fc.constant({ security: [PSY] }),
  code: fc.constant({ text: S('psy') }),
  subject: fc.constant({ reference: 'Patient/x' }),
});
const condition = fc.record({
  resourceType: fc.constant('Condition'),
  id: fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  code: fc.constant({ text: 'visible-code' }),
  note: fc.constant([{ text: S('note') }]),
  subject: fc.constant({ reference: 'Patient/x' }),
  contained: fc.array(fc.oneof(observation, patient), { maxLength: 2 }),
});
const leaf = fc.oneof(patient, observation, labelledCondition, condition, fc.constant({ junk: S('junk') }), fc.constant(S('string')));
const bundleType = fc.constantFrom('searchset', 'collection', 'history', 'batch-response', 'transaction-response', 'document');
const tree = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('bundle'), tie('parameters')),
  bundle: fc.record({
    resourceType: fc.constant('Bundle'),
    type: bundleType,
    total: fc.nat(20),
    entry: fc.array(fc.record({ resource: tie('node'), search: fc.constant({ mode: 'match' }) }), { maxLength: 4 }),
  }),
  parameters: fc.record({
    resourceType: fc.constant('Parameters'),
    parameter: fc.array(fc.record({ name: fc.constant('p'), resource: tie('node') }), { maxLength: 3 }),
  }),
})).node;

let up: FaultyUpstream;
let stack: Stack;
/**
 * fast-check's time limit abandons the run in progress (it races it), so a request may still be
 * in flight when the test ends: cleanup waits for it rather than closing under it.
 */
let inFlight: Promise<unknown> = Promise.resolve();
beforeAll(async () => {
  up = await startFaultyUpstream({});
  stack = await startStack({ upstreamUrl: up.url });
});
afterAll(async () => {
  await inFlight.catch(() => undefined);
  await stack?.close();
  await up?.close();
});

describe('generated upstream bodies through the billing pipeline', () => {
  it('never release a sentinel; errors are typed', async () => {
    const token = await stack.token('billing');
    let n = 0;
    await fc.assert(
      fc.asyncProperty(tree, async (body) => {
        const path = `/Claim/f${n++}`;
        up.set(path, fhirJson(body));
        const call = fetch(`${stack.url}${path}`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'HPAYMT' } }).then(
          async (res) => ({ res, text: await res.text() }),
        );
        inFlight = call;
        const { res, text } = await call;
        expect(text).not.toContain('SENTINEL-');
        if (res.status >= 400) {
          const oo = JSON.parse(text) as { resourceType: string; issue: Array<{ details?: { coding?: Array<{ system?: string }> } }> };
          expect(oo.resourceType).toBe('OperationOutcome');
          expect(oo.issue[0]?.details?.coding?.[0]?.system).toBe(ERROR_SYSTEM);
        }
      }),
      { interruptAfterTimeLimit: 4_000, numRuns: 100_000 },
    );
  }, 20_000);
});
