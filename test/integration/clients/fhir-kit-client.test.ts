/**
 * fhir-kit-client against the gateway: read, search then nextPage until the library reports no
 * more pages, create, update and conditional create (If-None-Exist as a per-request header: the
 * library has no option of its own for it). Against the demo upstream and against one that pages
 * HAPI-style under another host name.
 */
import type { Bundle, Observation, Patient } from 'fhir/r4.js';
import { Client, type FhirResource } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClientStack, type ClientUpstream, startClientStack } from '../../helpers/client-stack.js';

type KitBundle = Parameters<Client['nextPage']>[0]['bundle'];

function kit(cs: ClientStack, token: string, purpose: string): Client {
  return new Client({ baseUrl: cs.url, bearerToken: token, customHeaders: { 'X-Purpose-Of-Use': purpose } });
}

/** The first page and every page nextPage gives after it, as the library returns them. */
async function allPages(client: Client, first: Bundle): Promise<Bundle[]> {
  const pages = [first];
  for (let page: Bundle | undefined = first; pages.length <= 20; ) {
    page = (await client.nextPage({ bundle: page as unknown as KitBundle })) as unknown as Bundle | undefined;
    if (page === undefined) break;
    pages.push(page);
  }
  return pages;
}

describe.each<ClientUpstream>(['medplum', 'hapi'])('fhir-kit-client through the gateway (%s upstream)', (kind) => {
  let cs: ClientStack;

  beforeAll(async () => {
    cs = await startClientStack(kind);
  });
  afterAll(async () => {
    await cs?.close();
  });

  it('reads a seeded patient as the upstream holds it (clinician)', async () => {
    const client = kit(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const p = cs.data.patients[4];
    const got = (await client.read({ resourceType: 'Patient', id: p.id })) as unknown as Patient;
    const stored = (await cs.repo.readResource('Patient', p.id)) as unknown as Patient;
    expect(got.id).toBe(p.id);
    expect(got.name).toEqual(stored.name);
    expect(got.identifier).toEqual(stored.identifier);
  });

  it('search + nextPage until done: every observation exactly once, links on the gateway', async () => {
    const client = kit(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const upstreamPages = cs.upstreamPageRequests();
    const first = (await client.search({
      resourceType: 'Observation',
      searchParams: { subject: `Patient/${cs.data.patients[0].id}`, _count: 2 },
    })) as unknown as Bundle;
    const pages = await allPages(client, first);
    expect(pages.length).toBeGreaterThan(2);
    const ids = pages.flatMap((b) => (b.entry ?? []).map((e) => e.resource?.id));
    expect(ids.length).toBe(cs.data.observations.length);
    expect(new Set(ids)).toEqual(new Set(cs.data.observations));
    // HAPI style: the upstream's own _getpages links were followed (small upstream pages).
    if (kind === 'hapi') expect(cs.upstreamPageRequests()).toBeGreaterThan(upstreamPages);
    for (const b of pages) {
      for (const l of b.link ?? []) expect(l.url.startsWith(cs.url)).toBe(true);
      for (const e of b.entry ?? []) if (e.fullUrl) expect(e.fullUrl.startsWith(cs.url)).toBe(true);
    }
    const text = JSON.stringify(pages);
    expect(text).not.toContain(cs.stack.upstreamUrl);
    expect(text).not.toContain('_getpages');
    expect(text).not.toContain('hospital.example');
  });

  it('billing: every visible patient once over the pages, never the restricted one, never a withheld element', async () => {
    const client = kit(cs, await cs.token('billing', 'HPAYMT'), 'HPAYMT');
    const upstreamPages = cs.upstreamPageRequests();
    const first = (await client.search({ resourceType: 'Patient', searchParams: { name: cs.data.family, _count: 2 } })) as unknown as Bundle;
    const pages = await allPages(client, first);
    expect(pages.length).toBeGreaterThan(2);
    const patients = pages.flatMap((b) => (b.entry ?? []).map((e) => e.resource as Patient));
    expect(patients.map((p) => p.id).sort()).toEqual(cs.data.patients.map((p) => p.id).sort());
    // HAPI style: the upstream's own _getpages links were followed (small upstream pages).
    if (kind === 'hapi') expect(cs.upstreamPageRequests()).toBeGreaterThan(upstreamPages);
    for (const p of patients) {
      expect(p.name?.[0]?.family).toBe(cs.data.family);
      expect(p.telecom).toBeUndefined();
    }
    const one = (await client.read({ resourceType: 'Patient', id: cs.data.patients[0].id })) as unknown as Patient;
    expect(one.identifier?.map((i) => i.value)).toEqual([cs.data.patients[0].mrn]);
    const text = JSON.stringify([pages, one]);
    for (const secret of cs.billingWithheld()) expect(text).not.toContain(secret);
    expect(text).not.toContain(cs.data.restricted.id);
  });

  it('creates and updates an observation; both land upstream', async () => {
    const client = kit(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const created = (await client.create({
      resourceType: 'Observation',
      body: {
        resourceType: 'Observation',
        status: 'preliminary',
        code: { text: 'fhir-kit oxygen saturation' },
        subject: { reference: `Patient/${cs.data.patients[3].id}` },
        valueQuantity: { value: 95, unit: '%' },
      },
    })) as unknown as Observation;
    expect(created.id).toBeTruthy();
    expect(((await cs.repo.readResource('Observation', created.id!)) as unknown as Observation).valueQuantity?.value).toBe(95);

    const updated = (await client.update({
      resourceType: 'Observation',
      id: created.id!,
      body: { ...created, status: 'final', valueQuantity: { value: 97, unit: '%' } },
    })) as unknown as Observation;
    expect(updated.id).toBe(created.id);
    const after = (await cs.repo.readResource('Observation', created.id!)) as unknown as Observation;
    expect(after.status).toBe('final');
    expect(after.valueQuantity?.value).toBe(97);
  });

  it('conditional create (If-None-Exist header): the second call finds the first, upstream holds one', async () => {
    const client = kit(cs, await cs.token('clinician', 'TREAT'), 'TREAT');
    const system = 'urn:example:fhir-kit';
    const value = `fk-${kind}`;
    const body: Patient = { resourceType: 'Patient', identifier: [{ system, value }], name: [{ family: 'Ifnone', given: ['Kit'] }] };
    const options = { headers: { 'If-None-Exist': `identifier=${system}|${value}` } };
    const first = (await client.create({ resourceType: 'Patient', body: body as unknown as FhirResource, options })) as unknown as Patient;
    const second = (await client.create({ resourceType: 'Patient', body: body as unknown as FhirResource, options })) as unknown as Patient;
    expect(first.id).toBeTruthy();
    expect(second.id).toBe(first.id);
    expect(await cs.upstreamIds('Patient', `identifier=${system}|${value}`)).toEqual([first.id]);
  });
});
