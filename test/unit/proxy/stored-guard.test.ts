/**
 * The stored-resource guard (src/proxy/stored-guard.ts) against the real demo upstream (medplum's
 * repository, with real versions): vread and instance history of a resource whose current version
 * is withheld, writes to missing and withheld resources, security-label changes, If-Match, and
 * batch entries. The guard is called as the pipeline calls it, with the caller's access plan and
 * the filter context its answer would get.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Resource as MedplumResource } from '@medplum/fhirtypes';
import type { Condition } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadGatewayConfig } from '../../../src/config/load.js';
import { type LoadedPolicy, loadPolicy, readPolicy } from '../../../src/config/policy-file.js';
import { DEMO } from '../../../src/demo/data.js';
import { GatewayError } from '../../../src/errors.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify } from '../../../src/policy/classify.js';
import type { AccessPlan, ResourcePlan } from '../../../src/policy/plan.js';
import type { ClassifiedRequest } from '../../../src/policy/request.js';
import type { Exchange } from '../../../src/proxy/record.js';
import { createStoredGuard, isStoredRefusal, type StoredGuard } from '../../../src/proxy/stored-guard.js';
import type { ResponseContext } from '../../../src/redact/types.js';
import { type FaultyUpstream, fhirJson, startFaultyUpstream } from '../../helpers/faulty-upstream.js';
import { type TestUpstream, withUpstream } from '../../helpers/upstream.js';

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const HIV = { system: ACT, code: 'HIV', display: 'HIV/AIDS information sensitivity' };
const R = { system: CONF, code: 'R', display: 'restricted' };
const PSY = { system: ACT, code: 'PSY' };

/** A Condition whose version 1 is unlabelled and version 2 labelled HIV + R (BYPASSES 17). */
const RELABELLED = 'cond-relabelled';
/** Unlabelled, updated once: versions 1 and 2, both visible to billing. */
const TWO_VERSIONS = 'cond-two-versions';

let up: TestUpstream;
let guard: StoredGuard;
let policy: LoadedPolicy;

function plan(role: string, purpose: string): AccessPlan {
  return policy.policy.roles.get(role)!.plans.get(purpose)!;
}
const billing = () => plan('billing', 'HPAYMT');
const clinician = () => plan('clinician', 'TREAT');
const emergency = () => policy.policy.breakGlass!.plan;

/** The plan with extra interactions granted on one type. */
function granting(p: AccessPlan, type: string, ...extra: string[]): AccessPlan {
  const types = new Map<string, ResourcePlan>(p.types);
  const tp = types.get(type)!;
  types.set(type, { ...tp, interactions: new Set([...tp.interactions, ...extra]) as ResourcePlan['interactions'] });
  return { ...p, types };
}

function ctxFor(p: AccessPlan, mode: 'hide' | 'announce', patient?: string): ResponseContext {
  return { ...policy.context, planFor: (t) => p.types.get(t), withheldMode: mode, rewriteUrl: () => undefined, patientCompartment: patient };
}

function ex(): Exchange {
  return { id: 'req-1', time: new Date(), started: process.hrtime.bigint(), method: 'GET', url: '/', clientAddress: '127.0.0.1', userAgent: undefined, policyVersion: 'v' };
}

function req(method: string, url: string, body?: unknown, contentType = 'application/fhir+json'): ClassifiedRequest {
  return classify(
    {
      method,
      url,
      headers: body === undefined ? {} : { 'content-type': contentType },
      body: body === undefined ? undefined : Buffer.from(JSON.stringify(body)),
    },
    { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 },
  );
}

interface Call {
  plan?: AccessPlan;
  mode?: 'hide' | 'announce';
  patient?: string;
  breakGlass?: boolean;
}

function run(r: ClassifiedRequest, c: Call = {}) {
  const p = c.plan ?? clinician();
  return guard({ ex: ex(), req: r, plan: p, filter: ctxFor(p, c.mode ?? 'hide', c.patient), breakGlass: c.breakGlass ?? false });
}

/** The error code the guard refused with. */
async function refusal(r: ClassifiedRequest, c: Call = {}): Promise<string> {
  try {
    await run(r, c);
  } catch (e) {
    if (e instanceof GatewayError) return e.code;
    throw e;
  }
  return 'allowed';
}

async function stored(type: string, id: string): Promise<Record<string, unknown>> {
  return (await up.get<Record<string, unknown>>(`${type}/${id}`)).body;
}

beforeAll(async () => {
  up = await withUpstream();
  policy = loadPolicy('config/policy.yaml');
  guard = createStoredGuard({ config: loadGatewayConfig('config/gateway.yaml', { PHI_GATEWAY_UPSTREAM: up.url }), upstreamAuthorization: async () => undefined });
  const base = { resourceType: 'Condition', subject: { reference: `Patient/${DEMO.patients.henry}` }, code: { text: 'HIV-SECRET-DIAGNOSIS' } };
  const v1 = await up.repo.createResource({ ...base, id: RELABELLED } as unknown as MedplumResource, { assignedId: true });
  await up.repo.updateResource({ ...v1, meta: { security: [HIV, R] } } as unknown as MedplumResource);
  const t1 = await up.repo.createResource(
    { resourceType: 'Condition', id: TWO_VERSIONS, subject: { reference: `Patient/${DEMO.patients.alice}` }, code: { text: 'v1' } } as unknown as MedplumResource,
    { assignedId: true },
  );
  await up.repo.updateResource({ ...t1, code: { text: 'v2' } } as unknown as MedplumResource);
});

afterAll(async () => {
  await up?.close();
});

describe('vread and instance history (BYPASSES 17)', () => {
  it('the setup: version 1 is unlabelled, version 2 (current) is labelled HIV + R', async () => {
    expect((await up.get<Condition>(`Condition/${RELABELLED}/_history/1`)).body.meta?.security).toBeUndefined();
    expect((await up.get<Condition>(`Condition/${RELABELLED}`)).body.meta).toMatchObject({ versionId: '2', security: [HIV, R] });
  });

  it.each([
    ['billing', billing, 'hide', 'not-found'],
    ['a clinician told about break-glass', clinician, 'announce', 'break-glass-available'],
    ['a clinician not told', clinician, 'hide', 'not-found'],
  ] as const)('a past version of a resource whose current version is withheld: %s -> %s', async (_who, p, mode, code) => {
    expect(await refusal(req('GET', `/Condition/${RELABELLED}/_history/1`), { plan: p(), mode })).toBe(code);
    expect(await refusal(req('GET', `/Condition/${RELABELLED}/_history`), { plan: p(), mode })).toBe(code);
    expect(await refusal(req('HEAD', `/Condition/${RELABELLED}/_history/1`), { plan: p(), mode })).toBe(code);
  });

  it('withheld and missing resources are refused alike (billing, every history form)', async () => {
    for (const suffix of ['/_history/1', '/_history']) {
      expect(await refusal(req('GET', `/Condition/${RELABELLED}${suffix}`), { plan: billing() })).toBe('not-found');
      expect(await refusal(req('GET', `/Condition/cond-never-was${suffix}`), { plan: billing() })).toBe('not-found');
    }
  });

  it('under break-glass (emergency data set) the versions are reachable', async () => {
    await expect(run(req('GET', `/Condition/${RELABELLED}/_history/1`), { plan: emergency(), breakGlass: true })).resolves.toMatchObject({ ifMatch: undefined });
  });

  it('a past version needs the history grant; the current version does not', async () => {
    expect(await refusal(req('GET', `/Condition/${TWO_VERSIONS}/_history/1`), { plan: billing() })).toBe('interaction-denied');
    expect(await refusal(req('GET', `/Condition/${TWO_VERSIONS}/_history/2`), { plan: billing() })).toBe('allowed');
    expect(await refusal(req('GET', `/Condition/${TWO_VERSIONS}/_history/1`), { plan: clinician() })).toBe('allowed');
    // A version that does not exist is the upstream's 404 (the resource itself is visible).
    expect(await refusal(req('GET', `/Condition/${TWO_VERSIONS}/_history/9`), { plan: clinician() })).toBe('allowed');
  });

  it('a deleted resource answers like a missing one', async () => {
    const gone = await up.repo.createResource({ resourceType: 'Condition', id: 'cond-deleted', subject: { reference: `Patient/${DEMO.patients.alice}` } } as unknown as MedplumResource, { assignedId: true });
    await up.repo.deleteResource('Condition', gone.id);
    expect(await refusal(req('GET', '/Condition/cond-deleted/_history/1'))).toBe('not-found');
    expect(await refusal(req('GET', '/Condition/cond-deleted/_history'))).toBe('not-found');
  });

  it('reads and searches are left to the response filter (no stored read)', async () => {
    for (const r of [req('GET', `/Condition/${RELABELLED}`), req('GET', '/Condition?code=x')]) {
      await expect(run(r)).resolves.toEqual({ req: r, ifMatch: undefined });
    }
  });

  it('type history is refused where resources of the type can be withheld (older clean versions of now-labelled ones)', async () => {
    const r = req('GET', '/Condition/_history');
    expect(await refusal(r, { plan: clinician() })).toBe('interaction-denied');
    expect(await refusal(r, { plan: billing() })).toBe('interaction-denied');
    // Under break-glass nothing of the type is withheld: allowed, and judged by nothing stored.
    expect(await refusal(r, { plan: emergency(), breakGlass: true })).toBe('allowed');
    // A patient context can withhold too.
    expect(await refusal(r, { plan: emergency(), breakGlass: true, patient: DEMO.patients.alice })).toBe('interaction-denied');
  });
});

describe('writes to what the caller cannot read (BYPASSES 18)', () => {
  const vip = DEMO.vip.encounter;
  const encounterBody = async (id: string) => ({ ...(await stored('Encounter', id)), meta: undefined });

  it('update, patch and delete of a withheld resource are answered as a read of it would be', async () => {
    const body = { ...(await encounterBody(vip)), status: 'cancelled' };
    const patch = [{ op: 'replace', path: '/status', value: 'cancelled' }];
    for (const [r, mode, code] of [
      [req('PUT', `/Encounter/${vip}`, body), 'announce', 'break-glass-available'],
      [req('PUT', `/Encounter/${vip}`, body), 'hide', 'not-found'],
      [req('PATCH', `/Encounter/${vip}`, patch, 'application/json-patch+json'), 'announce', 'break-glass-available'],
      [req('DELETE', `/Encounter/${vip}`), 'hide', 'not-found'],
    ] as const) {
      expect(await refusal(r, { mode })).toBe(code);
    }
    expect((await stored('Encounter', vip)).meta).toMatchObject({ security: [{ code: 'R' }] });
  });

  it('update, patch and delete of a missing resource are not-found: an update never creates', async () => {
    const body = { resourceType: 'Encounter', id: 'enc-never-was', status: 'finished', class: { code: 'AMB' } };
    expect(await refusal(req('PUT', '/Encounter/enc-never-was', body))).toBe('not-found');
    expect(await refusal(req('PATCH', '/Encounter/enc-never-was', [{ op: 'replace', path: '/status', value: 'x' }], 'application/json-patch+json'))).toBe('not-found');
    expect(await refusal(req('DELETE', '/Encounter/enc-never-was'))).toBe('not-found');
    expect(up.repo.exists('Encounter', 'enc-never-was')).toBe(false);
  });

  it('a visible resource is written with If-Match on the version that was judged', async () => {
    const body = { ...(await stored('Condition', DEMO.hypertension)), note: [{ text: 'updated' }] };
    const version = ((await stored('Condition', DEMO.hypertension)).meta as { versionId: string }).versionId;
    await expect(run(req('PUT', `/Condition/${DEMO.hypertension}`, body))).resolves.toMatchObject({ ifMatch: `W/"${version}"` });
    await expect(run(req('DELETE', `/Condition/${DEMO.hypertension}`))).resolves.toMatchObject({ ifMatch: `W/"${version}"` });
    await expect(run(req('PATCH', `/Condition/${DEMO.hypertension}`, [{ op: 'add', path: '/note', value: [] }], 'application/json-patch+json'))).resolves.toMatchObject({
      ifMatch: `W/"${version}"`,
    });
  });

  it('conditional update, patch and delete are refused: what they reach cannot be read first', async () => {
    const body = { resourceType: 'Condition', subject: { reference: `Patient/${DEMO.patients.alice}` } };
    expect(await refusal(req('PUT', '/Condition?code=x', body))).toBe('interaction-denied');
    expect(await refusal(req('DELETE', '/Condition?code=x'))).toBe('interaction-denied');
  });

  it('batch and transaction: every write entry is judged; each carries its own If-Match', async () => {
    const htn = await stored('Condition', DEMO.hypertension);
    const two = await stored('Condition', TWO_VERSIONS);
    for (const type of ['batch', 'transaction']) {
      const ok = req('POST', '/', {
        resourceType: 'Bundle',
        type,
        entry: [
          { request: { method: 'GET', url: `Condition/${DEMO.hypertension}` } },
          { request: { method: 'PUT', url: `Condition/${DEMO.hypertension}` }, resource: htn },
          { request: { method: 'DELETE', url: `Condition/${TWO_VERSIONS}` } },
        ],
      });
      const out = await run(ok);
      expect(out.ifMatch).toBeUndefined();
      const entries = (out.req.body as { entry: Array<{ request: { ifMatch?: string } }> }).entry;
      expect(entries.map((e) => e.request.ifMatch)).toEqual([undefined, `W/"${(htn.meta as { versionId: string }).versionId}"`, `W/"${(two.meta as { versionId: string }).versionId}"`]);
      // The request decide() judged is not modified.
      expect((ok.body as { entry: Array<{ request: { ifMatch?: string } }> }).entry[1]?.request.ifMatch).toBeUndefined();

      for (const target of [`Encounter/${DEMO.vip.encounter}`, 'Encounter/enc-never-was']) {
        const bad = req('POST', '/', { resourceType: 'Bundle', type, entry: [{ request: { method: 'PUT', url: `Condition/${DEMO.hypertension}` }, resource: htn }, { request: { method: 'DELETE', url: target } }] });
        expect(await refusal(bad)).toBe('not-found');
      }
      // A plain read of a withheld resource: left to the response filter in a batch (each entry
      // answers alone, withheld and missing alike), read first in a transaction (which the upstream
      // would fail as a whole only for the missing one).
      const read = (id: string) => req('POST', '/', { resourceType: 'Bundle', type, entry: [{ request: { method: 'GET', url: `Condition/${id}` } }] });
      for (const id of [RELABELLED, 'cond-never-was']) expect(await refusal(read(id))).toBe(type === 'batch' ? 'allowed' : 'not-found');
      const vread = req('POST', '/', { resourceType: 'Bundle', type, entry: [{ request: { method: 'GET', url: `Condition/${RELABELLED}/_history/1` } }] });
      expect(await refusal(vread, { plan: billing() })).toBe('not-found');
    }
  });
});

describe('security labels', () => {
  const htn = async () => stored('Condition', DEMO.hypertension);
  const psyCond = async () => stored('Condition', DEMO.psyCondition);

  it('an update that adds, changes or removes a label needs relabel (or break-glass)', async () => {
    const plain = await htn();
    const labelled = await psyCond();
    const adds = req('PUT', `/Condition/${DEMO.hypertension}`, { ...plain, meta: { security: [PSY] } });
    const removes = req('PUT', `/Condition/${DEMO.psyCondition}`, { ...labelled, meta: {} });
    const changes = req('PUT', `/Condition/${DEMO.psyCondition}`, { ...labelled, meta: { security: [{ system: ACT, code: 'ETH' }] } });
    for (const r of [adds, removes, changes]) {
      expect(await refusal(r)).toBe('label-change-denied');
      expect(await refusal(r, { plan: granting(clinician(), 'Condition', 'relabel') })).toBe('allowed');
      expect(await refusal(r, { breakGlass: true })).toBe('allowed');
    }
  });

  it('the same labels in another order or with another display are no change', async () => {
    const labelled = await psyCond();
    const security = (labelled.meta as { security: Array<{ system: string; code: string }> }).security;
    const same = [...security].reverse().map((c) => ({ system: c.system, code: c.code, display: 'other text' }));
    expect(await refusal(req('PUT', `/Condition/${DEMO.psyCondition}`, { ...labelled, meta: { security: same } }))).toBe('allowed');
    expect(await refusal(req('PUT', `/Condition/${DEMO.psyCondition}`, { ...labelled, meta: { versionId: '99', security } }))).toBe('allowed');
  });

  it.each([
    ['/meta/security', [{ op: 'add', path: '/meta/security', value: [PSY] }]],
    ['/meta/security/0', [{ op: 'remove', path: '/meta/security/0' }]],
    ['/meta', [{ op: 'replace', path: '/meta', value: {} }]],
    ['the whole document', [{ op: 'replace', path: '', value: {} }]],
    ['a move from /meta/security', [{ op: 'move', from: '/meta/security', path: '/note' }]],
  ])('a JSON Patch on %s needs relabel', async (_n, ops) => {
    const r = req('PATCH', `/Condition/${DEMO.psyCondition}`, ops, 'application/json-patch+json');
    expect(await refusal(r)).toBe('label-change-denied');
    expect(await refusal(r, { plan: granting(clinician(), 'Condition', 'relabel') })).toBe('allowed');
  });

  it('a JSON Patch elsewhere, or a test of the labels, changes no label', async () => {
    const ops = [
      { op: 'test', path: '/meta/security/0/code', value: 'PSY' },
      { op: 'replace', path: '/clinicalStatus', value: { text: 'resolved' } },
      { op: 'add', path: '/metadata', value: 'x' },
    ];
    expect(await refusal(req('PATCH', `/Condition/${DEMO.psyCondition}`, ops, 'application/json-patch+json'))).toBe('allowed');
  });

  const fhirPathPatch = (path: string, name?: string) => ({
    resourceType: 'Parameters',
    parameter: [
      {
        name: 'operation',
        part: [
          { name: 'type', valueCode: name === undefined ? 'replace' : 'add' },
          { name: 'path', valueString: path },
          ...(name === undefined ? [] : [{ name: 'name', valueString: name }]),
          { name: 'value', valueCoding: PSY },
        ],
      },
    ],
  });

  it.each([
    ['a path through meta', fhirPathPatch('Condition.meta.security')],
    ['a name meta', fhirPathPatch('Condition', 'meta')],
    ['an escaped identifier', fhirPathPatch('Condition.`m\\u0065ta`.security')],
    ['descendants()', fhirPathPatch('Condition.descendants().where(code = \'PSY\')')],
  ])('a FHIRPath Patch with %s needs relabel', async (_n, body) => {
    expect(await refusal(req('PATCH', `/Condition/${DEMO.psyCondition}`, body))).toBe('label-change-denied');
  });

  it('a FHIRPath Patch elsewhere is forwarded', async () => {
    expect(await refusal(req('PATCH', `/Condition/${DEMO.psyCondition}`, fhirPathPatch('Condition.note', undefined)))).toBe('allowed');
  });

  it('a create or update whose body carries a label the plan withholds is refused before it is sent (relabel or not)', async () => {
    const body = { resourceType: 'Condition', subject: { reference: `Patient/${DEMO.patients.alice}` }, meta: { security: [R] } };
    expect(await refusal(req('POST', '/Condition', body))).toBe('label-denied');
    expect(await refusal(req('POST', '/Condition', { ...body, meta: { security: [{ code: 'R' }] } }))).toBe('label-denied');
    expect(await refusal(req('POST', '/Condition', { ...body, meta: { security: [PSY] } }))).toBe('allowed');
    expect(await refusal(req('PUT', `/Condition/${DEMO.hypertension}`, { ...(await htn()), meta: { security: [R] } }), { plan: granting(clinician(), 'Condition', 'relabel') })).toBe('label-denied');
    const patch = req('PATCH', `/Condition/${DEMO.hypertension}`, [{ op: 'add', path: '/meta/security/-', value: R }], 'application/json-patch+json');
    expect(await refusal(patch, { plan: granting(clinician(), 'Condition', 'relabel') })).toBe('label-denied');
    // A batch entry too.
    expect(await refusal(req('POST', '/', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'POST', url: 'Condition' }, resource: body }] }))).toBe('label-denied');
  });

  it('a malformed meta is refused, not guessed at', async () => {
    const body = { resourceType: 'Condition', subject: { reference: `Patient/${DEMO.patients.alice}` }, meta: { security: { code: 'R' } } };
    expect(await refusal(req('POST', '/Condition', body))).toBe('request-body-invalid');
  });
});

describe('patient compartment (BYPASSES 11) and upstream failures', () => {
  let fake: FaultyUpstream;
  let fakeGuard: StoredGuard;
  const obs = (id: string, subject: string, extra: Record<string, unknown> = {}) => ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference: subject }, ...extra });
  const v = { meta: { versionId: '4' } };

  beforeAll(async () => {
    fake = await startFaultyUpstream({
      '/Observation/mine': fhirJson(obs('mine', 'Patient/pat-1', v)),
      '/Observation/theirs': fhirJson(obs('theirs', 'Patient/pat-12', v)),
      '/Observation/shared': fhirJson(obs('shared', 'Patient/pat-12', { ...v, performer: [{ reference: 'Patient/pat-1' }] })),
      '/Observation/unversioned': fhirJson(obs('unversioned', 'Patient/pat-1')),
      '/Observation/other-id': fhirJson(obs('mine', 'Patient/pat-1', v)),
    });
    fakeGuard = createStoredGuard({ config: loadGatewayConfig('config/gateway.yaml', { PHI_GATEWAY_UPSTREAM: fake.url }), upstreamAuthorization: async () => 'Bearer gateway-own' });
  });
  afterAll(async () => {
    await fake?.close();
  });

  async function code(path: string): Promise<string> {
    const p = clinician();
    const r = req('PUT', path, obs(path.split('/')[2]!, 'Patient/pat-1'));
    try {
      const out = await fakeGuard({ ex: ex(), req: r, plan: p, filter: ctxFor(p, 'announce', 'pat-1'), breakGlass: false });
      return `allowed ${out.ifMatch}`;
    } catch (e) {
      expect(e).toBeInstanceOf(GatewayError);
      return (e as GatewayError).code;
    }
  }

  it("another patient's stored resource is answered like a missing one, also one naming the patient only as performer (not hers to read)", async () => {
    expect(await code('/Observation/mine')).toBe('allowed W/"4"');
    expect(await code('/Observation/theirs')).toBe('not-found');
    expect(await code('/Observation/never-was')).toBe('not-found');
    expect(await code('/Observation/shared')).toBe('not-found');
  });

  it('the stored read goes with the gateway credentials; a stored resource without a version or another resource is a bad upstream answer', async () => {
    expect(await code('/Observation/unversioned')).toBe('upstream-bad-response');
    expect(await code('/Observation/other-id')).toBe('upstream-bad-response');
    expect(fake.requests.at(-1)).toMatchObject({ method: 'GET', url: '/Observation/other-id' });
    expect(fake.requests.at(-1)?.headers.authorization).toBe('Bearer gateway-own');
  });

  it('refusals are audited as deny, upstream failures as error', () => {
    expect(isStoredRefusal(new GatewayError('not-found'))).toBe(true);
    expect(isStoredRefusal(new GatewayError('label-change-denied'))).toBe(true);
    expect(isStoredRefusal(new GatewayError('upstream-bad-response'))).toBe(false);
    expect(isStoredRefusal(new Error('x'))).toBe(false);
  });
});

describe('the relabel interaction in the policy grammar', () => {
  function withRule(rule: string): string[] {
    const dir = mkdtempSync(join(tmpdir(), 'phi-relabel-'));
    const file = join(dir, 'policy.yaml');
    const text = readFileSync('config/policy.yaml', 'utf8').replace('  front-desk:\n    description: Scheduling', `  privacy:\n    rules:\n${rule}\n  front-desk:\n    description: Scheduling`);
    writeFileSync(file, text);
    return [...readPolicy(file).problems];
  }

  it('is accepted beside update or patch and compiled into the type plan', () => {
    expect(withRule('      - { types: [Condition], interactions: [read, update, relabel] }')).toEqual([]);
  });

  it('alone it grants nothing and is refused', () => {
    const problems = withRule('      - { types: [Condition], interactions: [read, relabel] }');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain('relabel needs update or patch in the same rule');
  });
});
