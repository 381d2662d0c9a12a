/**
 * fhirclient (the SMART on FHIR JS client, v2) driving the gateway as a SMART app's server side
 * would: a client built from a server URL and a known access token through the library's node
 * entry (`smart(req, res).client(state)`), then `client.request` reads, searches with the library's
 * own pager (`pageLimit: 0, flat: true`), create, update and conditional create. Against the demo
 * upstream and against an upstream that pages HAPI-style under another host name.
 *
 * The pager sends only the Authorization header on page 2 onwards (no custom headers), so the
 * paging cases use tokens naming exactly one purpose: the gateway takes that purpose when the
 * header is absent.
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Observation, Patient, Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClientStack, type ClientUpstream, startClientStack } from '../../helpers/client-stack.js';

// The members of fhirclient's node entry used here, typed by hand: its own declarations pull the DOM
// lib into the whole program (`/// <reference lib="dom" />`), which breaks Node's Headers type
// elsewhere. The module is imported through a variable so TypeScript does not load them.
interface FhirOptions {
  pageLimit?: number;
  flat?: boolean;
  onPage?: (data: unknown) => unknown;
}
interface RequestOptions {
  url: string;
  headers?: Record<string, string>;
  includeResponse?: boolean;
}
interface Client {
  request(options: RequestOptions | string, fhirOptions?: FhirOptions): Promise<unknown>;
  create(resource: object, options?: { headers?: Record<string, string> }): Promise<unknown>;
  update(resource: object, options?: { headers?: Record<string, string> }): Promise<unknown>;
}
interface Storage {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<unknown>;
  unset(key: string): Promise<boolean>;
}
type Smart = (req: IncomingMessage, res: ServerResponse, storage?: Storage) => { client(state: object): Client };

const fhirclientModule = 'fhirclient';
const smart = ((await import(fhirclientModule)) as { default: Smart }).default;

/** In-memory storage for the SMART state (the default server storage needs a session on the request). */
function memoryStorage(): Storage {
  const m = new Map<string, unknown>();
  return {
    async set(k, v) {
      m.set(k, v);
      return v;
    },
    get: async (k) => m.get(k),
    unset: async (k) => m.delete(k),
  };
}

/** The library's supported server-side construction: an adapter for a request/response pair, then `client(state)`. */
function fhirClient(serverUrl: string, accessToken: string): Client {
  const req = new IncomingMessage(new Socket());
  const res = new ServerResponse(req);
  return smart(req, res, memoryStorage()).client({ serverUrl, tokenResponse: { access_token: accessToken } });
}

describe.each<ClientUpstream>(['medplum', 'hapi'])('fhirclient through the gateway (%s upstream)', (kind) => {
  let cs: ClientStack;

  beforeAll(async () => {
    cs = await startClientStack(kind);
  });
  afterAll(async () => {
    await cs?.close();
  });

  it('reads a seeded patient as the upstream holds it (clinician)', async () => {
    const client = fhirClient(cs.url, await cs.token('clinician', 'TREAT'));
    const p = cs.data.patients[1];
    const got = (await client.request({ url: `Patient/${p.id}`, headers: { 'X-Purpose-Of-Use': 'TREAT' } })) as Patient;
    const stored = (await cs.repo.readResource('Patient', p.id)) as unknown as Patient;
    expect(got.id).toBe(p.id);
    expect(got.name).toEqual(stored.name);
    expect(got.telecom).toEqual(stored.telecom);
    expect(got.identifier).toEqual(stored.identifier);
  });

  it('pages a search with its own pager: every observation exactly once', async () => {
    const client = fhirClient(cs.url, await cs.token('clinician', 'TREAT'));
    const pid = cs.data.patients[0].id;
    const upstreamPages = cs.upstreamPageRequests();
    const pages: number[] = [];
    const all = (await client.request(
      { url: `Observation?subject=Patient/${pid}&_count=2`, headers: { 'X-Purpose-Of-Use': 'TREAT' } },
      { pageLimit: 0, flat: true, onPage: (page) => void pages.push((page as unknown[]).length) },
    )) as unknown;
    // onPage makes the pager resolve with null; the pages it saw are what matters.
    expect(all).toBeNull();
    expect(pages.length).toBeGreaterThan(2);
    const flat = (await client.request(
      { url: `Observation?subject=Patient/${pid}&_count=2`, headers: { 'X-Purpose-Of-Use': 'TREAT' } },
      { pageLimit: 0, flat: true },
    )) as Resource[];
    expect(flat.every((r) => r.resourceType === 'Observation')).toBe(true);
    const ids = flat.map((r) => r.id);
    expect(ids.length).toBe(cs.data.observations.length);
    expect(new Set(ids)).toEqual(new Set(cs.data.observations));
    expect(pages.reduce((a, b) => a + b, 0)).toBe(cs.data.observations.length);
    // HAPI style: the upstream's own _getpages links were followed (small upstream pages).
    if (kind === 'hapi') expect(cs.upstreamPageRequests()).toBeGreaterThan(upstreamPages);
  });

  it('billing: the pager reaches every visible patient once, never the restricted one, never a withheld element', async () => {
    const client = fhirClient(cs.url, await cs.token('billing', 'HPAYMT'));
    const upstreamPages = cs.upstreamPageRequests();
    const found = (await client.request({ url: `Patient?name=${cs.data.family}&_count=2` }, { pageLimit: 0, flat: true })) as Patient[];
    const ids = found.map((r) => r.id);
    expect(ids.length).toBe(cs.data.patients.length);
    expect(new Set(ids)).toEqual(new Set(cs.data.patients.map((p) => p.id)));
    expect(ids).not.toContain(cs.data.restricted.id);
    // HAPI style: the upstream's own _getpages links were followed (small upstream pages).
    if (kind === 'hapi') expect(cs.upstreamPageRequests()).toBeGreaterThan(upstreamPages);
    for (const p of found) {
      expect(p.resourceType).toBe('Patient');
      expect(p.name?.[0]?.family).toBe(cs.data.family);
      expect(p.telecom).toBeUndefined();
    }
    const text = JSON.stringify(found);
    for (const secret of cs.billingWithheld()) expect(text).not.toContain(secret);

    const one = (await client.request({ url: `Patient/${cs.data.patients[0].id}`, includeResponse: true })) as unknown as {
      body: Patient;
      response: Response;
    };
    expect(one.response.status).toBe(200);
    expect(one.body.identifier?.map((i) => i.value)).toEqual([cs.data.patients[0].mrn]);
    for (const secret of cs.billingWithheld()) expect(JSON.stringify(one.body)).not.toContain(secret);
  });

  it('creates and updates an observation; both land upstream', async () => {
    const client = fhirClient(cs.url, await cs.token('clinician', 'TREAT'));
    const headers = { 'X-Purpose-Of-Use': 'TREAT' };
    const body: Observation = {
      resourceType: 'Observation',
      status: 'preliminary',
      code: { text: 'fhirclient heart rate' },
      subject: { reference: `Patient/${cs.data.patients[2].id}` },
      valueQuantity: { value: 61, unit: '/min' },
    };
    const created = (await client.create(body, { headers })) as Observation;
    expect(created.resourceType).toBe('Observation');
    expect(created.id).toBeTruthy();
    const stored = (await cs.repo.readResource('Observation', created.id!)) as unknown as Observation;
    expect(stored.valueQuantity?.value).toBe(61);
    expect(stored.subject?.reference).toBe(`Patient/${cs.data.patients[2].id}`);

    const updated = (await client.update({ ...created, status: 'final', valueQuantity: { value: 64, unit: '/min' } }, { headers })) as Observation;
    expect(updated.id).toBe(created.id);
    const after = (await cs.repo.readResource('Observation', created.id!)) as unknown as Observation;
    expect(after.status).toBe('final');
    expect(after.valueQuantity?.value).toBe(64);
  });

  it('conditional create (If-None-Exist): the second call finds the first, upstream holds one', async () => {
    const client = fhirClient(cs.url, await cs.token('clinician', 'TREAT'));
    const system = 'urn:example:fhirclient';
    const value = `fc-${kind}`;
    const patient: Patient = { resourceType: 'Patient', identifier: [{ system, value }], name: [{ family: 'Ifnone', given: ['Fhirclient'] }] };
    const headers = { 'X-Purpose-Of-Use': 'TREAT', 'If-None-Exist': `identifier=${system}|${value}` };
    const first = (await client.create(patient, { headers })) as Patient;
    const second = (await client.create(patient, { headers })) as Patient;
    expect(first.id).toBeTruthy();
    expect(second.id).toBe(first.id);
    expect(await cs.upstreamIds('Patient', `identifier=${system}|${value}`)).toEqual([first.id]);
  });
});
