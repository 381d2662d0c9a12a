/**
 * @medplum/core's MedplumClient against the gateway as an app would configure it for a plain FHIR
 * server: Node's fetch, fhirUrl = the gateway's /fhir/, a known access token (no refresh, no
 * cache), and X-Purpose-Of-Use on every request through its `defaultHeaders`. readResource,
 * searchResources, the searchResourcePages paging helper, createResource,
 * createResourceIfNoneExist and updateResource; against the demo upstream and against one that
 * pages HAPI-style under another host name.
 */
import { MedplumClient } from '@medplum/core';
import type { Observation as MedplumObservation, Patient as MedplumPatient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClientStack, type ClientUpstream, startClientStack } from '../../helpers/client-stack.js';

function medplum(cs: ClientStack, token: string, purpose: string): MedplumClient {
  const client = new MedplumClient({
    baseUrl: `${new URL(cs.url).origin}/`,
    fhirUrlPath: `${new URL(cs.url).pathname.replace(/^\//, '')}/`,
    fetch: (url: string, init?: RequestInit) => fetch(url, init),
    cacheTime: 0,
    refreshGracePeriod: 0,
    defaultHeaders: { 'X-Purpose-Of-Use': purpose },
  });
  client.setAccessToken(token);
  return client;
}

describe.each<ClientUpstream>(['medplum', 'hapi'])('@medplum/core MedplumClient through the gateway (%s upstream)', (kind) => {
  let cs: ClientStack;

  beforeAll(async () => {
    cs = await startClientStack(kind);
  });
  afterAll(async () => {
    await cs?.close();
  });

  it('builds its FHIR URLs on the gateway', async () => {
    const client = medplum(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    expect(client.fhirUrl('Patient', 'x').toString()).toBe(`${cs.url}/Patient/x`);
  });

  it('readResource and searchResources return what the upstream holds (clinician)', async () => {
    const client = medplum(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const p = cs.data.patients[3];
    const got = await client.readResource('Patient', p.id);
    const stored = (await cs.repo.readResource('Patient', p.id)) as MedplumPatient;
    expect(got.name).toEqual(stored.name);
    expect(got.telecom).toEqual(stored.telecom);

    const found = await client.searchResources('Observation', { subject: `Patient/${cs.data.patients[0].id}`, _count: '100' });
    expect(new Set(found.map((o) => o.id))).toEqual(new Set(cs.data.observations));
    expect(found.length).toBe(cs.data.observations.length);
  });

  it('searchResourcePages reaches every observation exactly once over more than two pages', async () => {
    const client = medplum(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const upstreamPages = cs.upstreamPageRequests();
    const pages: string[][] = [];
    for await (const page of client.searchResourcePages('Observation', { subject: `Patient/${cs.data.patients[0].id}`, _count: '2' })) {
      pages.push(page.map((o) => o.id));
      expect(page.length).toBeLessThanOrEqual(2);
      if (pages.length > 20) break;
    }
    expect(pages.length).toBeGreaterThan(2);
    const ids = pages.flat();
    expect(ids.length).toBe(cs.data.observations.length);
    expect(new Set(ids)).toEqual(new Set(cs.data.observations));
    // HAPI style: the upstream's own _getpages links were followed (small upstream pages).
    if (kind === 'hapi') expect(cs.upstreamPageRequests()).toBeGreaterThan(upstreamPages);
  });

  it('billing: searchResourcePages and readResource never return the restricted patient or a withheld element', async () => {
    const client = medplum(cs, await cs.token('billing', 'HPAYMT'), 'HPAYMT');
    const upstreamPages = cs.upstreamPageRequests();
    const seen: MedplumPatient[] = [];
    let pages = 0;
    for await (const page of client.searchResourcePages('Patient', { name: cs.data.family, _count: '2' })) {
      pages += 1;
      seen.push(...page);
      if (pages > 20) break;
    }
    expect(pages).toBeGreaterThan(2);
    expect(seen.map((p) => p.id).sort()).toEqual(cs.data.patients.map((p) => p.id).sort());
    // HAPI style: the upstream's own _getpages links were followed (small upstream pages).
    if (kind === 'hapi') expect(cs.upstreamPageRequests()).toBeGreaterThan(upstreamPages);
    for (const p of seen) {
      expect(p.name?.[0]?.family).toBe(cs.data.family);
      expect(p.telecom).toBeUndefined();
    }
    const one = await client.readResource('Patient', cs.data.patients[0].id);
    expect(one.identifier?.map((i) => i.value)).toEqual([cs.data.patients[0].mrn]);
    const listed = await client.searchResources('Patient', { name: cs.data.family, _count: '50' });
    const text = JSON.stringify([seen, one, listed, listed.bundle]);
    for (const secret of cs.billingWithheld()) expect(text).not.toContain(secret);
    expect(text).not.toContain(cs.data.restricted.id);
  });

  it('createResource and updateResource land upstream', async () => {
    const client = medplum(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const created = await client.createResource<MedplumObservation>({
      resourceType: 'Observation',
      status: 'preliminary',
      code: { text: 'medplum respiratory rate' },
      subject: { reference: `Patient/${cs.data.patients[1].id}` },
      valueQuantity: { value: 14, unit: '/min' },
    });
    expect(created.id).toBeTruthy();
    expect(((await cs.repo.readResource('Observation', created.id)) as MedplumObservation).valueQuantity?.value).toBe(14);

    const updated = await client.updateResource({ ...created, status: 'final', valueQuantity: { value: 16, unit: '/min' } });
    expect(updated.id).toBe(created.id);
    const after = (await cs.repo.readResource('Observation', created.id)) as MedplumObservation;
    expect(after.status).toBe('final');
    expect(after.valueQuantity?.value).toBe(16);
  });

  it('createResourceIfNoneExist: the second call returns the first, upstream holds one', async () => {
    const client = medplum(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const system = 'urn:example:medplum';
    const value = `mp-${kind}`;
    const patient: MedplumPatient = { resourceType: 'Patient', identifier: [{ system, value }], name: [{ family: 'Ifnone', given: ['Medplum'] }] };
    const first = await client.createResourceIfNoneExist(patient, `identifier=${system}|${value}`);
    const second = await client.createResourceIfNoneExist(patient, `identifier=${system}|${value}`);
    expect(first.id).toBeTruthy();
    expect(second.id).toBe(first.id);
    expect(await cs.upstreamIds('Patient', `identifier=${system}|${value}`)).toEqual([first.id]);
  });
});
