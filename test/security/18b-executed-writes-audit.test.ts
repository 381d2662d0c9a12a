/**
 * BYPASSES 18, the audit side: a write the upstream executed is never audited as denied. Here the
 * upstream labels what it stores (servers that classify on write do this), so the created
 * resource comes back carrying a label the caller withholds: the client is told the write
 * happened (201, Location, no body) and the audit record says `allow`, executed, answer withheld.
 * The hand-written upstream is the only way to get a server that labels on write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectAbsent, receive } from './support.js';

const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const SECRET = 'RESTRICTED-DIAGNOSIS-TEXT-4411';

let up: FaultyUpstream;
let stack: Stack;

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Condition': fhirJson(
      {
        resourceType: 'Condition',
        id: 'cond-labelled-on-write',
        meta: { versionId: '1', security: [{ system: CONF, code: 'R' }] },
        code: { text: SECRET },
        subject: { reference: 'Patient/pat-1' },
      },
      201,
      { location: 'http://placeholder/fhir/Condition/cond-labelled-on-write/_history/1' },
    ),
  });
  stack = await startStack({ upstreamUrl: up.url });
});

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

describe('an executed write whose answer the caller may not see', () => {
  it('answers with what the upstream did, without the body, and is audited as allowed and executed', async () => {
    const body = { resourceType: 'Condition', code: { text: 'new finding' }, subject: { reference: 'Patient/pat-1' } };
    const r = await receive(
      await stack.request('/Condition', { role: 'clinician', purpose: 'TREAT', method: 'POST', body: JSON.stringify(body), contentType: 'application/fhir+json' }),
    );
    expect(r.status).toBe(201);
    expect(r.text).toBe('');
    expectAbsent(r, [SECRET]);
    expect(up.requests.filter((x) => x.method === 'POST')).toHaveLength(1);
    const rec = await auditFor(stack, r.requestId);
    expect(rec.decision).toBe('allow');
    expect(rec.status).toBe(201);
    expect(rec.rule).toContain('executed; answer withheld (label)');
  });
});
