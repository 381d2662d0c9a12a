/**
 * A real FHIR client (fhir-kit-client) talking to the gateway as an application would: capability
 * statement, read, search, paging through the gateway's own links, create, and the error it sees
 * when a resource is withheld. The gateway must look like a FHIR server to it.
 */
import { Client } from 'fhir-kit-client';
import type { Bundle, Patient } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

async function clientFor(role: string, purpose: string): Promise<Client> {
  return new Client({
    baseUrl: stack.url,
    bearerToken: await stack.token(role),
    customHeaders: { 'X-Purpose-Of-Use': purpose },
  });
}

describe('fhir-kit-client through the gateway', () => {
  it('reads the capability statement and a redacted patient', async () => {
    const client = await clientFor('billing', 'HPAYMT');
    const cs = (await client.capabilityStatement()) as { resourceType: string };
    expect(cs.resourceType).toBe('CapabilityStatement');
    const p = (await client.read({ resourceType: 'Patient', id: DEMO.patients.alice })) as Patient;
    expect(p.id).toBe(DEMO.patients.alice);
    expect(p.telecom).toBeUndefined();
    expect(JSON.stringify(p)).not.toContain(DEMO.ssn.alice);
  });

  it('pages through a search using the links the gateway rewrote to itself', async () => {
    const client = await clientFor('clinician', 'TREAT');
    const first = (await client.search({ resourceType: 'Observation', searchParams: { _count: 2 } })) as unknown as Bundle;
    expect(first.entry?.length).toBe(2);
    const next = first.link?.find((l) => l.relation === 'next');
    expect(next?.url.startsWith(stack.url)).toBe(true);
    expect(JSON.stringify(first)).not.toContain(stack.upstreamUrl);
    const second = (await client.nextPage({ bundle: first as unknown as Parameters<Client['nextPage']>[0]['bundle'] })) as unknown as Bundle;
    expect(second.entry?.length).toBeGreaterThan(0);
    const ids = new Set([...(first.entry ?? []), ...(second.entry ?? [])].map((e) => e.resource?.id));
    expect(ids.size).toBe((first.entry?.length ?? 0) + (second.entry?.length ?? 0));
    for (const e of second.entry ?? []) if (e.fullUrl) expect(e.fullUrl.startsWith(stack.url)).toBe(true);
  });

  it('creates a resource where the policy grants it, with Location on the gateway', async () => {
    const client = await clientFor('clinician', 'TREAT');
    const created = (await client.create({
      resourceType: 'Observation',
      body: {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'body temperature' },
        subject: { reference: `Patient/${DEMO.patients.alice}` },
        valueQuantity: { value: 37.1, unit: 'Cel' },
      },
    })) as { id?: string; resourceType: string };
    expect(created.resourceType).toBe('Observation');
    expect(created.id).toBeTruthy();
    const back = (await client.read({ resourceType: 'Observation', id: created.id! })) as { id?: string };
    expect(back.id).toBe(created.id);
  });

  it('sees a FHIR error (OperationOutcome) when it is refused', async () => {
    const client = await clientFor('billing', 'HPAYMT');
    const err = await client.read({ resourceType: 'Observation', id: 'obs-alice-bp' }).then(
      () => undefined,
      (e: { response?: { status?: number; data?: { resourceType?: string } } }) => e,
    );
    expect(err?.response?.status).toBe(403);
    expect(err?.response?.data?.resourceType).toBe('OperationOutcome');
  });
});
