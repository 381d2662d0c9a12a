/**
 * A gateway in front of a seeded upstream for the client-library tests (test/integration/clients):
 * the plain medplum upstream, or the same server paging HAPI-style and naming itself under another
 * host name in its links (test/helpers/styled-upstream.ts). Both get the same extra data, so a
 * library's reads, searches and paging can be checked against what the upstream holds:
 *
 *   const cs = await startClientStack('hapi');
 *   cs.data.patients[0].id; cs.data.observations;       // what was seeded
 *   await cs.token('billing', 'HPAYMT');                  // a token naming exactly one purpose
 *   await cs.repo.readResource('Observation', id);        // what landed upstream
 *
 * Upstream pages are kept small (minUpstreamCount 1: the client's _count + 1), so a client page
 * needs several upstream pages and the upstream's own paging links are followed on every search.
 * The gateway runs the shipped policy as startStack does: without its care-relationship
 * requirements unless `opts.relationships` (the seeded patients here have no care relationships).
 */
import { parseSearchRequest } from '@medplum/core';
import type { ResourceType } from '@medplum/fhirtypes';
import type { Identifier, Observation, Patient } from 'fhir/r4.js';
import { CONFIDENTIALITY_SYSTEM, MRN_SYSTEM, SSN_SYSTEM } from '../../src/demo/data.js';
import type { DemoRepository } from '../../src/demo/upstream.js';
import { type Stack, type StackOptions, startStack } from './gateway.js';
import { startStyledUpstream } from './styled-upstream.js';
import { withUpstream } from './upstream.js';

export type ClientUpstream = 'medplum' | 'hapi';

/** The host name the HAPI-style upstream writes in its links (not the address the gateway uses). */
export const HAPI_ADVERTISED_BASE = 'http://fhir.hospital.example/fhir';

export interface SeededPatient {
  readonly id: string;
  readonly phone: string;
  readonly ssn: string;
  readonly mrn: string;
}

export interface ClientData {
  /** Family name shared by every seeded patient (visible and restricted). */
  readonly family: string;
  /** Patients every role with Patient access may see, in creation order. */
  readonly patients: readonly SeededPatient[];
  /** A patient with the same family name labelled restricted (R): withheld from billing and clinicians. */
  readonly restricted: SeededPatient;
  /** Observations of patients[0], more than two pages of _count=2. */
  readonly observations: readonly string[];
}

export interface ClientStack {
  readonly upstream: ClientUpstream;
  readonly stack: Stack;
  /** Gateway FHIR base, e.g. http://127.0.0.1:41234/fhir */
  readonly url: string;
  /** The upstream's own store, to check what writes landed. */
  readonly repo: DemoRepository;
  readonly data: ClientData;
  /** A real IdP token for `role` whose `purpose_of_use` names exactly `purpose`. */
  token(role: string, purpose: string): Promise<string>;
  /** Every value seeded into elements the billing role may not see (phones, SSNs). */
  billingWithheld(): string[];
  /**
   * HAPI style: how many `_getpages` requests (the upstream's own paging links) the upstream has
   * answered so far; always 0 for the plain upstream.
   */
  upstreamPageRequests(): number;
  /** Ids of every match of a search run on the upstream store itself (all pages). */
  upstreamIds(type: string, query: string): Promise<string[]>;
  close(): Promise<void>;
}

const PATIENTS = 5;
const OBSERVATIONS = 7;

export async function startClientStack(upstream: ClientUpstream, opts: StackOptions = {}): Promise<ClientStack> {
  const styled = upstream === 'hapi' ? await startStyledUpstream('hapi', { advertisedBase: HAPI_ADVERTISED_BASE }) : undefined;
  const up = styled ?? (await withUpstream());
  const data = await seed(up.repo);
  let stack: Stack;
  try {
    stack = await startStack({
      ...opts,
      upstreamUrl: up.url,
      env: { ...(upstream === 'hapi' ? { PHI_GATEWAY_UPSTREAM_LINK_BASES: HAPI_ADVERTISED_BASE } : {}), ...opts.env },
      configure: (c) => {
        const paged = { ...c, paging: { ...c.paging, minUpstreamCount: 1 } };
        return opts.configure ? opts.configure(paged) : paged;
      },
    });
  } catch (e) {
    await up.close();
    throw e;
  }
  return {
    upstream,
    stack,
    url: stack.url,
    repo: up.repo,
    data,
    token: (role, purpose) => stack.token(role, { purpose_of_use: [purpose] }),
    upstreamPageRequests: () => styled?.requests.filter((r) => r.includes('_getpages=')).length ?? 0,
    billingWithheld: () => [...data.patients, data.restricted].flatMap((p) => [p.phone, p.ssn]),
    async upstreamIds(type, query) {
      const request = parseSearchRequest(type as ResourceType, Object.fromEntries(new URLSearchParams(query)));
      const bundle = await up.repo.search({ ...request, count: 1000 });
      return (bundle.entry ?? []).map((e) => e.resource?.id ?? '');
    },
    async close() {
      await stack.close();
      await up.close();
    },
  };
}

async function seed(repo: DemoRepository): Promise<ClientData> {
  const family = 'Quillfeather';
  const person = (i: number): SeededPatient => ({ id: `cl-pat-${i}`, phone: `555-019-${1000 + i}`, ssn: `900-41-${1000 + i}`, mrn: `CL-MRN-${1000 + i}` });
  const identifiers = (p: SeededPatient): Identifier[] => [
    { system: MRN_SYSTEM, value: p.mrn, type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] } },
    { system: SSN_SYSTEM, value: p.ssn, type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'SS' }] } },
  ];
  const patient = (p: SeededPatient, i: number, restricted = false): Patient => ({
    resourceType: 'Patient',
    id: p.id,
    ...(restricted ? { meta: { security: [{ system: CONFIDENTIALITY_SYSTEM, code: 'R' }] } } : {}),
    identifier: identifiers(p),
    name: [{ family, given: [`Client${i}`] }],
    telecom: [{ system: 'phone', value: p.phone, use: 'home' }],
    gender: i % 2 === 0 ? 'female' : 'male',
    birthDate: `198${i}-0${(i % 9) + 1}-1${i % 10}`,
    address: [{ line: [`${10 + i} Harbor Way`], city: 'Boston', state: 'MA', postalCode: '02110' }],
  });

  const patients = Array.from({ length: PATIENTS }, (_, i) => person(i));
  const restricted = person(PATIENTS);
  // The restricted one sits between visible ones in upstream order: paging must skip it, not stop at it.
  const order = [...patients.slice(0, 2), restricted, ...patients.slice(2)];
  for (const p of order) {
    const i = Number(p.id.slice('cl-pat-'.length));
    await repo.createResource(patient(p, i, p === restricted) as never, { assignedId: true });
  }
  const observations: string[] = [];
  for (let i = 0; i < OBSERVATIONS; i++) {
    const obs: Observation = {
      resourceType: 'Observation',
      id: `cl-obs-${i}`,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '29463-7', display: 'Body weight' }], text: 'Body weight' },
      subject: { reference: `Patient/${patients[0].id}` },
      effectiveDateTime: `2024-03-${String(i + 1).padStart(2, '0')}T09:00:00Z`,
      valueQuantity: { value: 70 + i, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
    };
    await repo.createResource(obs as never, { assignedId: true });
    observations.push(obs.id!);
  }
  return { family, patients, restricted, observations };
}
