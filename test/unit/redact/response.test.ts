import { readFileSync } from 'node:fs';
import type { Bundle, Observation, OperationOutcome, Parameters, Patient } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { GatewayError, operationOutcome } from '../../../src/errors.js';
import { filterResponse, scrubOperationOutcome } from '../../../src/redact/response.js';
import { pseudonymId } from '../../../src/redact/transforms.js';
import type { FilterResult } from '../../../src/redact/types.js';
import { clone, deepFreeze, KEY, PUBLIC, resourcePlan, responseCtx, UPSTREAM } from './helpers.js';

const fixture = <T>(name: string): T => JSON.parse(readFileSync(new URL(`../../fixtures/r4/${name}`, import.meta.url), 'utf8')) as T;
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

const billingPlans = () => ({
  Patient: resourcePlan('Patient', { elements: ['identifier', 'name', 'gender', 'birthDate', 'address'], remove: ['identifier[system=http://hl7.org/fhir/sid/us-ssn]'] }, ['R', 'V', 'PSY']),
  Condition: resourcePlan('Condition', { elements: ['code', 'subject', 'encounter', 'recordedDate'] }, ['R', 'V', 'PSY']),
  Organization: resourcePlan('Organization'),
});

function pat(id: string, extra: Partial<Patient> = {}): Patient {
  return { resourceType: 'Patient', id, name: [{ family: `Fam${id}` }], telecom: [{ value: `tel-${id}` }], gender: 'other', ...extra };
}
function cond(id: string, patientId: string, labels: string[] = []): Record<string, unknown> {
  return {
    resourceType: 'Condition',
    id,
    meta: labels.length ? { security: labels.map((l) => ({ system: l === 'PSY' ? ACT : CONF, code: l })) } : undefined,
    code: { text: `dx-${id}` },
    note: [{ text: `NoteSentinel-${id}` }],
    subject: { reference: `Patient/${patientId}` },
  };
}
function searchset(resources: unknown[], total = resources.length): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total,
    link: [
      { relation: 'self', url: `${UPSTREAM}/Condition?patient=p1` },
      { relation: 'next', url: `${UPSTREAM}?_getpages=abc&_offset=20` },
      { relation: 'alternate', url: 'https://elsewhere.example/fhir/x' },
    ],
    entry: resources.map((r) => {
      const x = r as { resourceType: string; id: string };
      return { fullUrl: `${UPSTREAM}/${x.resourceType}/${x.id}`, resource: r as Patient, search: { mode: 'match' as const } };
    }),
  };
}
const ok = (r: FilterResult) => {
  if (r.kind !== 'ok') throw new Error(`expected ok, got ${r.kind}`);
  return r;
};

describe('filterResponse: single resources', () => {
  it('redacts a resource with its type plan and reports stats', () => {
    const r = ok(filterResponse(deepFreeze(fixture<Patient>('patient-example.json')), responseCtx(billingPlans())));
    const body = r.body as Patient;
    expect(body.telecom).toBeUndefined();
    expect(body.text).toBeUndefined();
    expect(r.stats.resources).toEqual(['Patient/example']);
    expect([...r.stats.patients]).toEqual(['example']);
    expect(r.stats.elementsRemoved).toBeGreaterThan(0);
  });

  it('withholds a type without a plan, a withheld label, and a resource outside the compartment', () => {
    const obs = fixture<Observation>('observation-example.json');
    expect(filterResponse(obs, responseCtx(billingPlans()))).toMatchObject({ kind: 'withheld', reason: 'type' });
    expect(filterResponse(cond('c1', 'p1', ['R']), responseCtx(billingPlans()))).toMatchObject({ kind: 'withheld', reason: 'label' });
    expect(filterResponse(cond('c1', 'p1', ['PSY']), responseCtx(billingPlans()))).toMatchObject({ kind: 'withheld', reason: 'label' });
    expect(filterResponse(cond('c1', 'p1', ['N']), responseCtx(billingPlans())).kind).toBe('ok');
    const ctx = responseCtx(billingPlans(), { patientCompartment: 'p12' });
    // `Patient/p1` must not match a compartment of `p12` (or the reverse): exact ids only.
    expect(filterResponse(cond('c1', 'p1'), ctx)).toMatchObject({ kind: 'withheld', reason: 'compartment' });
    expect(filterResponse(cond('c1', 'p12'), ctx).kind).toBe('ok');
    expect(filterResponse(pat('p1'), ctx)).toMatchObject({ kind: 'withheld', reason: 'compartment' });
    expect(filterResponse(pat('p12'), ctx).kind).toBe('ok');
    // Patient membership is by id only: another chart that links to p12 is still someone else's.
    for (const type of ['seealso', 'refer', 'replaces', 'replaced-by'] as const) {
      expect(filterResponse(pat('p13', { link: [{ other: { reference: 'Patient/p12' }, type }] }), ctx)).toMatchObject({ kind: 'withheld', reason: 'compartment' });
    }
    expect(filterResponse(pat('p12', { link: [{ other: { reference: 'Patient/p13' }, type: 'seealso' }] }), ctx).kind).toBe('ok');
    // A record about p12 that names another patient anywhere (an extension here) is not p12's alone.
    const named = { ...cond('c2', 'p12'), extension: [{ url: 'http://example.org/x', valueReference: { reference: 'Patient/p13' } }] };
    expect(filterResponse(named, ctx)).toMatchObject({ kind: 'withheld', reason: 'compartment' });
    expect(filterResponse({ ...cond('c3', 'p12'), contained: [{ resourceType: 'Patient', id: 'x' }] }, ctx)).toMatchObject({ kind: 'withheld', reason: 'compartment' });
    // Not patient data: no compartment applies.
    expect(filterResponse({ resourceType: 'Organization', id: 'o' }, ctx).kind).toBe('ok');
  });

  it('withholds a resource whose meta.security is malformed (fail closed)', () => {
    expect(filterResponse({ resourceType: 'Condition', id: 'x', meta: { security: { code: 'R' } } }, responseCtx(billingPlans()))).toMatchObject({ kind: 'withheld' });
    expect(filterResponse({ resourceType: 'Condition', id: 'x', meta: [] }, responseCtx(billingPlans()))).toMatchObject({ kind: 'withheld' });
  });

  it('rejects bodies that are not FHIR resources with a typed error', () => {
    for (const body of [null, 'text', [], [{ resourceType: 'Patient' }], {}, { resourceType: 5 }, { resourceType: 'NotAType' }]) {
      expect(() => filterResponse(body, responseCtx(billingPlans()))).toThrow(GatewayError);
    }
  });

  it('scrubs diagnostics, details.text and expression from upstream OperationOutcomes', () => {
    const oo: OperationOutcome = {
      resourceType: 'OperationOutcome',
      text: { status: 'generated', div: '<div>Patient Jane Roe</div>' },
      issue: [{ severity: 'error', code: 'processing', diagnostics: 'Jane Roe SSN 999', details: { text: 'Roe not found', coding: [{ system: 's', code: 'c' }] }, expression: ['Patient.name'] }],
    };
    const r = ok(filterResponse(deepFreeze(oo), responseCtx({})));
    expect(JSON.stringify(r.body)).not.toContain('Roe');
    expect(r.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', details: { coding: [{ system: 's', code: 'c' }] } }] });
  });

  it('keeps upstream OperationOutcome free text only when asked to, and never a sentence as a code', () => {
    const oo = { resourceType: 'OperationOutcome', id: 'upstream-internal', issue: [{ severity: 'error', code: 'Jane Roe', diagnostics: 'd', details: { text: 't', coding: [{ system: 'http://s', code: 'not a code' }, { code: 'ok' }] } }] };
    expect(scrubOperationOutcome(deepFreeze(oo))).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', details: { coding: [{ code: 'ok' }] } }] });
    expect(scrubOperationOutcome(deepFreeze(oo), true)).toEqual({
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'processing', diagnostics: 'd', details: { coding: [{ code: 'ok' }], text: 't' } }],
    });
  });

  it('ignores upstream _elements/_summary claims: SUBSETTED resources are filtered anyway', () => {
    const p = pat('p1', { meta: { tag: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' }] } });
    const r = ok(filterResponse(deepFreeze(p), responseCtx(billingPlans())));
    expect((r.body as Patient).telecom).toBeUndefined();
  });
});

describe('filterResponse: contained', () => {
  it('applies each contained resource its own plan and removes types without a plan', () => {
    const c = {
      ...cond('c1', 'p1'),
      contained: [pat('inner', { identifier: [{ system: 'http://hl7.org/fhir/sid/us-ssn', value: 'SSN-SENTINEL' }] }), { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'ObsSentinel' } }],
      subject: { reference: '#inner' },
    };
    const plans = { ...billingPlans(), Condition: resourcePlan('Condition') };
    const r = ok(filterResponse(deepFreeze(c), responseCtx(plans)));
    const json = JSON.stringify(r.body);
    expect(json).not.toContain('SSN-SENTINEL');
    expect(json).not.toContain('tel-inner');
    expect(json).not.toContain('ObsSentinel');
    const body = r.body as { contained: Array<Record<string, unknown>>; meta?: { security?: unknown[] } };
    expect(body.contained).toHaveLength(1);
    // contained resources carry no labels of their own (dom-5); the container is marked
    expect((body.contained[0].meta as { security?: unknown } | undefined)?.security).toBeUndefined();
    expect(JSON.stringify(body.meta)).toContain('REDACTED');
  });
});

describe('filterResponse: Bundles', () => {
  it('searchset: withholds labelled and unplanned entries, drops total, rewrites links, never points upstream', () => {
    const b = searchset([cond('c1', 'p1'), cond('c2', 'p1', ['R']), cond('c3', 'p2', ['PSY']), fixture<Observation>('observation-example.json')]);
    const r = ok(filterResponse(deepFreeze(b), responseCtx(billingPlans())));
    const body = r.body as Bundle;
    expect(body.entry?.map((e) => e.resource?.id)).toEqual(['c1']);
    expect(body.total).toBeUndefined();
    expect(r.stats.resourcesWithheld).toBe(3);
    expect(r.stats.resources).toEqual(['Condition/c1']);
    expect([...r.stats.patients]).toEqual(['p1']);
    expect(body.link).toEqual([
      { relation: 'self', url: `${PUBLIC}/Condition?patient=p1` },
      { relation: 'next', url: `${PUBLIC}?_getpages=abc&_offset=20` },
    ]);
    expect(body.entry?.[0].fullUrl).toBe(`${PUBLIC}/Condition/c1`);
    expect(JSON.stringify(body)).not.toContain('upstream.internal');
    expect(JSON.stringify(body)).not.toContain('NoteSentinel');
  });

  it('keeps total when nothing was withheld', () => {
    const r = ok(filterResponse(searchset([cond('c1', 'p1')], 1), responseCtx(billingPlans())));
    expect((r.body as Bundle).total).toBe(1);
  });

  it('announce mode adds exactly one suppressed outcome entry', () => {
    const b = searchset([cond('c1', 'p1', ['R']), cond('c2', 'p1', ['V']), cond('c3', 'p1')]);
    const r = ok(filterResponse(b, responseCtx(billingPlans(), { withheldMode: 'announce' })));
    const entries = (r.body as Bundle).entry ?? [];
    const outcomes = entries.filter((e) => e.search?.mode === 'outcome');
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0].resource).toEqual({
      resourceType: 'OperationOutcome',
      issue: [
        {
          severity: 'information',
          code: 'suppressed',
          details: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'BTG' }], text: 'Some results were withheld; break-glass access can reveal them.' },
        },
      ],
    });
    const none = ok(filterResponse(searchset([cond('c3', 'p1')]), responseCtx(billingPlans(), { withheldMode: 'announce' })));
    expect((none.body as Bundle).entry?.some((e) => e.search?.mode === 'outcome')).toBe(false);
    const hide = ok(filterResponse(b, responseCtx(billingPlans(), { withheldMode: 'hide' })));
    expect((hide.body as Bundle).entry?.some((e) => e.search?.mode === 'outcome')).toBe(false);
  });

  it('searchset include entries and upstream outcome entries', () => {
    const b = searchset([cond('c1', 'p1'), pat('p1')]);
    b.entry![1].search = { mode: 'include' };
    const upstreamOutcome: OperationOutcome = { resourceType: 'OperationOutcome', issue: [{ severity: 'warning', code: 'processing', diagnostics: 'Famp1 leaked' }] };
    b.entry!.push({ search: { mode: 'outcome' }, resource: upstreamOutcome });
    const r = ok(filterResponse(b, responseCtx(billingPlans())));
    const body = r.body as Bundle;
    expect(body.entry).toHaveLength(3);
    expect(JSON.stringify(body)).not.toContain('tel-p1');
    expect(JSON.stringify(body)).not.toContain('leaked');
  });

  it('history: entries with request/response kept, deleted entries kept as is', () => {
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'history',
      entry: [
        { fullUrl: `${UPSTREAM}/Patient/p1`, resource: pat('p1'), request: { method: 'PUT', url: 'Patient/p1' }, response: { status: '200 OK', etag: 'W/"2"' } },
        { request: { method: 'DELETE', url: 'Patient/p1' }, response: { status: '204 No Content' } },
      ],
    };
    const r = ok(filterResponse(deepFreeze(b), responseCtx(billingPlans())));
    const body = r.body as Bundle;
    expect(body.entry).toHaveLength(2);
    expect(body.entry?.[0].resource).toBeDefined();
    expect(body.entry?.[0].request).toEqual({ method: 'PUT', url: 'Patient/p1' });
    expect(body.entry?.[1]).toEqual({ request: { method: 'DELETE', url: 'Patient/p1' }, response: { status: '204 No Content' } });
    expect(JSON.stringify(body)).not.toContain('tel-p1');
  });

  it('transaction-response (R4 example): keeps positions, scrubs outcomes, rewrites nothing to upstream', () => {
    const b = fixture<Bundle>('bundle-response.json');
    const r = ok(filterResponse(deepFreeze(b), responseCtx(billingPlans())));
    const body = r.body as Bundle;
    expect(body.entry).toHaveLength(b.entry!.length);
    expect(JSON.stringify(body)).not.toContain('was not known and was deleted');
    expect(body.entry?.[0].response?.location).toBe('Patient/12423/_history/1');
    // absolute fullUrl on a server that is not the upstream: dropped, never passed on
    expect(body.entry?.[0].fullUrl).toBeUndefined();
  });

  it('batch-response: a withheld entry answers like a missing one (no status, location or etag oracle)', () => {
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'batch-response',
      entry: [
        { resource: cond('c1', 'p1', ['R']) as never, response: { status: '200 OK', location: `${UPSTREAM}/Condition/c1/_history/3`, etag: 'W/"3"' } },
        { resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'Patient Famp1 missing' }] } as OperationOutcome, response: { status: '404 Not Found' } },
        { response: { status: '410', outcome: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'deleted', diagnostics: 'c9 deleted' }] } as OperationOutcome } },
        { resource: cond('c2', 'p1') as never, response: { status: '200 OK' } },
      ],
    };
    const notFound = { response: { status: '404 Not Found', outcome: operationOutcome('not-found') } };
    const r = ok(filterResponse(deepFreeze(clone(b)), responseCtx(billingPlans())));
    const body = r.body as Bundle;
    expect(body.entry?.slice(0, 3)).toEqual([notFound, notFound, notFound]);
    expect(body.entry?.[3]?.resource?.id).toBe('c2');
    expect(r.stats.resourcesWithheld).toBe(1);
    expect(JSON.stringify(body)).not.toContain('c1');

    // A caller who could break the glass is told so, as a direct read would; a type or
    // compartment the glass cannot open stays "not found".
    const eligible = ok(filterResponse(b, responseCtx(billingPlans(), { withheldMode: 'announce', patientCompartment: 'p1' })));
    expect((eligible.body as Bundle).entry?.[0]).toEqual({ response: { status: '403 Forbidden', outcome: operationOutcome('break-glass-available') } });
    const other = { resourceType: 'Bundle', type: 'batch-response', entry: [{ resource: cond('c3', 'p2'), response: { status: '200 OK' } }, { resource: fixture<Observation>('observation-example.json'), response: { status: '200 OK' } }] };
    const hidden = ok(filterResponse(other, responseCtx(billingPlans(), { withheldMode: 'announce', patientCompartment: 'p1' })));
    expect((hidden.body as Bundle).entry).toEqual([notFound, notFound]);
  });

  it('document (R4 example): every entry filtered, the signature dropped once content changed', () => {
    const b = fixture<Bundle>('bundle-father.json');
    b.signature = { type: [{ system: 'urn:iso-astm:E1762-95:2013', code: '1.2.840.10065.1.12.1.1' }], when: '2020-01-01T00:00:00Z', who: { reference: 'Practitioner/x' } };
    const plans = { Patient: resourcePlan('Patient', { remove: ['telecom', 'address'] }), Composition: resourcePlan('Composition'), Practitioner: resourcePlan('Practitioner') };
    const r = ok(filterResponse(deepFreeze(b), responseCtx(plans)));
    const body = r.body as Bundle;
    expect(body.signature).toBeUndefined();
    expect(body.entry?.map((e) => e.resource?.resourceType)).toEqual(['Composition', 'Practitioner', 'Patient']);
    expect(r.stats.resourcesWithheld).toBe(5);
    // absolute fullUrls of a server that is not the upstream are dropped, never passed on
    expect(b.entry?.[0].fullUrl).toMatch(/^http/);
    expect(body.entry?.[0].fullUrl).toBeUndefined();
    const patientEntry = body.entry?.find((e) => e.resource?.resourceType === 'Patient')?.resource as Patient;
    expect(patientEntry.telecom).toBeUndefined();
  });

  it('collection (R4 bundle-example) and nested Bundles inside Bundles and Parameters', () => {
    const inner = searchset([cond('c9', 'p9', ['R']), pat('p9')]);
    const outer: Bundle = { resourceType: 'Bundle', type: 'collection', entry: [{ resource: inner }, { resource: pat('p8') }] };
    const r = ok(filterResponse(deepFreeze(outer), responseCtx(billingPlans())));
    const body = r.body as Bundle;
    const innerOut = body.entry?.[0].resource as Bundle;
    expect(innerOut.entry?.map((e) => e.resource?.id)).toEqual(['p9']);
    expect(innerOut.total).toBeUndefined();
    expect(JSON.stringify(body)).not.toContain('tel-');
    expect(r.stats.resourcesWithheld).toBe(1);
    const params: Parameters = { resourceType: 'Parameters', parameter: [{ name: 'return', resource: inner }] };
    const pr = ok(filterResponse(deepFreeze(params), responseCtx(billingPlans())));
    expect(JSON.stringify(pr.body)).not.toContain('dx-c9');
  });

  it('pseudonymized ids: fullUrl and response.location carry the pseudonym, never the real id', () => {
    const plans = { Patient: resourcePlan('Patient', { transforms: [{ select: 'id', apply: 'pseudonym' }] }) };
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction-response',
      entry: [{ fullUrl: `${UPSTREAM}/Patient/real-77`, resource: pat('real-77'), response: { status: '201 Created', location: `${UPSTREAM}/Patient/real-77/_history/1` } }],
    };
    const r = ok(filterResponse(deepFreeze(b), responseCtx(plans)));
    const p = pseudonymId(KEY, 'Patient', 'real-77');
    const e = (r.body as Bundle).entry?.[0];
    expect(e?.resource?.id).toBe(p);
    expect(e?.fullUrl).toBe(`${PUBLIC}/Patient/${p}`);
    expect(e?.response?.location).toBe(`${PUBLIC}/Patient/${p}`);
    expect(JSON.stringify(e?.response)).not.toContain('real-77');
    expect(r.stats.resources).toEqual(['Patient/real-77']);
    // no key: ids removed, and so are URLs that would carry them
    const noKey = ok(filterResponse(deepFreeze(b), responseCtx(plans, { pseudonymKey: undefined })));
    const nk = (noKey.body as Bundle).entry?.[0];
    expect(nk?.resource?.id).toBeUndefined();
    expect(nk?.fullUrl).toBeUndefined();
    expect(nk?.response?.location).toBeUndefined();
  });

  it('odd shapes never pass: non-object entries and resources are withheld, bad containers rejected', () => {
    const b = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [
        'string-entry',
        [cond('c1', 'p1')],
        { resource: 'not-an-object' },
        { resource: [cond('c2', 'p1')] },
        { resource: { id: 'no-type', note: 'Sentinel' } },
        { resource: { resourceType: 7 } },
        { resource: cond('c3', 'p1'), modifierExtension: [{ url: 'x', valueBoolean: true }] },
        { resource: cond('c4', 'p1') },
      ],
    };
    const r = ok(filterResponse(deepFreeze(b), responseCtx(billingPlans())));
    expect((r.body as Bundle).entry?.map((e) => e.resource?.id)).toEqual(['c4']);
    expect(r.stats.resourcesWithheld).toBe(7);
    expect(() => filterResponse({ resourceType: 'Bundle', type: 'searchset', entry: { resource: cond('c', 'p') } }, responseCtx(billingPlans()))).toThrow(GatewayError);
    expect(() => filterResponse({ resourceType: 'Bundle', entry: [] }, responseCtx(billingPlans()))).toThrow(GatewayError);
  });

  it('rejects absurdly deep nesting', () => {
    let b: unknown = searchset([cond('c', 'p')]);
    for (let i = 0; i < 20; i++) b = { resourceType: 'Bundle', type: 'collection', entry: [{ resource: b }] };
    expect(() => filterResponse(b, responseCtx(billingPlans()))).toThrow(GatewayError);
  });

  it('never mutates the body', () => {
    const b = searchset([cond('c1', 'p1'), cond('c2', 'p1', ['R']), pat('p1')]);
    const before = clone(b);
    filterResponse(b, responseCtx(billingPlans(), { withheldMode: 'announce' }));
    expect(b).toEqual(before);
  });
});

describe('filterResponse: Parameters', () => {
  it('filters parameter resources, recurses into parts, keeps plain values', () => {
    const p = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'count', valueInteger: 3 },
        { name: 'patient', resource: pat('p1') },
        { name: 'hidden', resource: cond('c1', 'p1', ['R']) },
        { name: 'group', part: [{ name: 'inner', resource: pat('p2') }, { name: 'flag', valueBoolean: true }] },
      ],
    };
    const r = ok(filterResponse(deepFreeze(p), responseCtx(billingPlans())));
    const body = r.body as Parameters;
    expect(body.parameter?.map((x) => x.name)).toEqual(['count', 'patient', 'group']);
    expect(body.parameter?.[0].valueInteger).toBe(3);
    expect(body.parameter?.[2].part?.map((x) => x.name)).toEqual(['inner', 'flag']);
    expect(JSON.stringify(body)).not.toContain('tel-');
    expect(r.stats.resourcesWithheld).toBe(1);
    expect([...r.stats.patients].sort()).toEqual(['p1', 'p2']);
  });
});
