/**
 * Found by a red-team session with the researcher token: the gateway withheld labelled matches
 * correctly, but the upstream still found them (and followed their includes), so a search that
 * matched a withheld record took measurably longer — timed, with `_revinclude:iterate` as an
 * amplifier, it told which withheld codes exist and whose they are. A search by a caller who is not
 * told of withholding now carries `_security:not` for every label its plan withholds from the type,
 * so the upstream never matches them; a role that may break the glass still sees them matched (it is
 * told that results were withheld). Checked on the query the upstream receives; and a real upstream
 * (medplum) accepts the parameter, with the same answer as before.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { receive } from './support.js';

let up: FaultyUpstream;
let stack: Stack;
const queries: URLSearchParams[] = [];

beforeAll(async () => {
  up = await startFaultyUpstream();
  up.set('/Condition', (req, res) => {
    queries.push(new URL(req.url ?? '/', 'http://x').searchParams);
    fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: [] })(req, res);
  });
  stack = await startStack({ upstreamUrl: up.url });
}, 60_000);
afterAll(async () => {
  await stack?.close();
  await up?.close();
});

async function sent(role: string, purpose: string, path: string): Promise<string[]> {
  queries.length = 0;
  const r = await receive(await stack.get(path, { role, purpose }));
  expect(r.status, r.text).toBe(200);
  expect(queries.length).toBe(1);
  return queries[0]!.getAll('_security:not').sort();
}

describe('the upstream is asked not to match what the caller may not see', () => {
  it('billing: every code its plan withholds from Condition, in any system (no system named)', async () => {
    const labels = await sent('billing', 'HPAYMT', '/Condition?code=http://snomed.info/sct|47505003');
    // A system-less value matches the code in every system: the retired spellings, OIDs and codings
    // without a system that the filter withholds are not matched upstream either.
    expect(labels).toEqual(['ETH', 'HIV', 'PSY', 'PSYTHPN', 'R', 'SDV', 'SUD', 'V']);
  });

  it('the researcher too, with its own (shorter) list', async () => {
    const labels = await sent('researcher', 'HRESCH', '/Condition?code=http://snomed.info/sct|47505003');
    expect(labels).toContain('PSYTHPN');
    expect(labels).not.toContain('HIV');
  });

  it('not for a role that may break the glass: it is told that results were withheld', async () => {
    expect(await sent('clinician', 'TREAT', '/Condition?code=http://snomed.info/sct|47505003')).toEqual([]);
  });
});

describe('on a real upstream (it accepts the parameter; the answer is what the filter gave before)', () => {
  let real: Stack;
  beforeAll(async () => {
    real = await startStack();
  }, 60_000);
  afterAll(async () => {
    await real?.close();
  });

  it('a PSY label without a system or under a retired system is not matched upstream either', async () => {
    const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
    const ids: string[] = [];
    for (const security of [[{ code: 'PSY' }], [{ system: 'http://hl7.org/fhir/v3/ActCode', code: 'PSY' }], [{ system: 'urn:oid:2.16.840.1.113883.5.4', code: 'PSY' }]]) {
      const r = await real.request('/Condition', {
        ...clinician,
        method: 'POST',
        contentType: 'application/fhir+json',
        body: JSON.stringify({ resourceType: 'Condition', subject: { reference: 'Patient/pat-alice' }, code: { text: 'spelling test' }, meta: { security } }),
      });
      expect(r.status).toBe(201);
      ids.push(((await r.json()) as { id: string }).id);
    }
    // Asked of the upstream directly, exactly as the gateway asks it for billing:
    const q = new URLSearchParams([['subject', 'Patient/pat-alice'], ['_count', '100'], ...['ETH', 'HIV', 'PSY', 'PSYTHPN', 'R', 'SDV', 'SUD', 'V'].map((c) => ['_security:not', c] as [string, string])]);
    const direct = (await (await fetch(`${real.upstreamUrl}/Condition?${q}`)).json()) as { entry?: Array<{ resource: { id: string } }> };
    const matched = (direct.entry ?? []).map((e) => e.resource.id);
    expect(matched.length).toBeGreaterThan(0);
    for (const id of ids) expect(matched).not.toContain(id);
    // And through the gateway, none of them reaches billing.
    const r = await receive(await real.get('/Condition?subject=Patient/pat-alice&_count=100', { role: 'billing', purpose: 'HPAYMT' }));
    expect(r.status).toBe(200);
    for (const id of ids) expect(r.text).not.toContain(id);
  });

  it('billing searches Conditions and gets exactly the unlabelled ones', async () => {
    const r = await receive(await real.get('/Condition?_count=50', { role: 'billing', purpose: 'HPAYMT' }));
    expect(r.status).toBe(200);
    const ids = ((r.json as { entry?: Array<{ resource: { id: string; meta?: { security?: unknown[] } } }> }).entry ?? []).map((e) => e.resource);
    expect(ids.length).toBeGreaterThan(0);
    expect(r.text).not.toContain('cond-psythpn');
    expect(r.text).not.toContain('cond-vip');
  });
});
