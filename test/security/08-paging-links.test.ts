/**
 * BYPASSES 8: paging links reused across users and partitions (hapi-fhir 3357). The gateway keeps
 * no paging state: a `next` link is a plain search URL on the gateway, so whoever follows it is
 * classified and decided afresh with their own role, purpose and compartment. Links never point
 * at the upstream, and opaque paging parameters (`_cursor`, `_getpages`, `_page_token`) are
 * parameters like any other: refused unless the policy allows them, so nothing can ride in one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { entries, errorCode, expectAbsent, expectError, receive, refs } from './support.js';

let stack: Stack;
let upstreamHost: string;
beforeAll(async () => {
  stack = await startStack();
  upstreamHost = new URL(stack.upstreamUrl).host;
});
afterAll(async () => {
  await stack?.close();
});

const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const P = DEMO.patients;

type Link = { relation: string; url: string };
const links = (json: unknown): Link[] => (json as { link?: Link[] }).link ?? [];
const next = (json: unknown): string | undefined => links(json).find((l) => l.relation === 'next')?.url;
/** A gateway link as a path for stack.get (it must start with the gateway's base). */
function pathOf(url: string): string {
  expect(url.startsWith(`${stack.url}/`) || url.startsWith(`${stack.url}?`), url).toBe(true);
  return url.slice(stack.url.length);
}

/** Follows `next` from `path` as `who`, returning every page's path and body. */
async function walk(path: string, who: RequestOpts, max = 20): Promise<Array<{ path: string; json: unknown; text: string }>> {
  const pages: Array<{ path: string; json: unknown; text: string }> = [];
  let p: string | undefined = path;
  while (p !== undefined && pages.length < max) {
    const r = await receive(await stack.get(p, who));
    expect(r.status, r.text).toBe(200);
    pages.push({ path: p, json: r.json, text: r.text });
    const n = next(r.json);
    p = n === undefined ? undefined : pathOf(n);
  }
  return pages;
}

describe('links are the gateway\'s, never the upstream\'s', () => {
  it.each([
    ['clinician Observation', '/Observation?_count=2', clinician],
    ['clinician Patient with _include', '/Patient?_count=2&_revinclude=Encounter:subject', clinician],
    ['billing Patient', '/Patient?_count=2', billing],
    ['researcher Observation (pseudonymized)', '/Observation?_count=2', { role: 'researcher', purpose: 'HRESCH' }],
  ] as const)('%s: every page, every link, every fullUrl', async (_name, path, who) => {
    const pages = await walk(path, who);
    expect(pages.length).toBeGreaterThan(1);
    for (const page of pages) {
      expect(page.text).not.toContain(upstreamHost);
      for (const l of links(page.json)) expect(l.url.startsWith(stack.url), l.url).toBe(true);
      for (const e of (page.json as { entry?: Array<{ fullUrl?: string }> }).entry ?? []) {
        if (e.fullUrl !== undefined) expect(e.fullUrl.startsWith(stack.url), e.fullUrl).toBe(true);
      }
    }
  });
});

describe('a next link is re-decided for whoever follows it', () => {
  let patientNext: string;
  let observationNext: string;
  let clinicianPatientPage: string;
  beforeAll(async () => {
    const p = await receive(await stack.get('/Patient?_count=2', clinician));
    patientNext = pathOf(next(p.json)!);
    clinicianPatientPage = (await receive(await stack.get(patientNext, clinician))).text;
    const o = await receive(await stack.get('/Observation?_count=2', clinician));
    observationNext = pathOf(next(o.json)!);
  });

  it("billing replaying a clinician's Patient page gets the billing view of it", async () => {
    // The clinician's own page held what billing must not see, so the replay is a real test.
    const phones = Object.values(DEMO.phones);
    const ssns = Object.values(DEMO.ssn);
    expect(phones.some((x) => clinicianPatientPage.includes(x)) || ssns.some((x) => clinicianPatientPage.includes(x))).toBe(true);
    const r = await receive(await stack.get(patientNext, billing));
    expect(r.status).toBe(200);
    expect(entries(r.json, 'match').length).toBeGreaterThan(0);
    expectAbsent(r, [...phones, ...ssns, '<div']);
  });

  it("front-desk or billing replaying a clinician's Observation page is refused on the type", async () => {
    for (const who of [billing, { role: 'front-desk', purpose: 'HOPERAT' }] as const) {
      const r = await receive(await stack.get(observationNext, who));
      expectError(r, 403, 'type-denied');
    }
  });

  it('the researcher replaying it gets pseudonyms, never the real ids or names', async () => {
    const r = await receive(await stack.get(observationNext, { role: 'researcher', purpose: 'HRESCH' }));
    expect(r.status).toBe(200);
    expect(entries(r.json, 'match').length).toBeGreaterThan(0);
    expectAbsent(r, [...Object.values(P), ...Object.values(DEMO.names)]);
  });

  it('the same link under a purpose the role does not hold, or from an unauthenticated caller, is refused', async () => {
    expectError(await receive(await stack.get(observationNext, { role: 'billing', purpose: 'TREAT' })), 403, 'purpose-not-permitted');
    expectError(await receive(await stack.get(observationNext, { purpose: 'TREAT' })), 401, 'invalid-token');
  });

  it("a patient-limited token walking an unrestricted clinician's pages sees only its own patient", async () => {
    const all = await walk('/Observation?_count=3', clinician);
    const subjects = new Set(all.flatMap((p) => entries(p.json, 'match').map((e) => (e.resource?.subject as { reference?: string } | undefined)?.reference)));
    // Other patients' observations are on those pages: replaying them is a real attempt.
    expect([...subjects].filter((s) => s !== `Patient/${P.brian}`).length).toBeGreaterThan(0);
    const brian = { ...clinician, tokenClaims: { patient: P.brian } };
    const others = Object.entries(P).filter(([k]) => k !== 'brian');
    for (const page of all) {
      const r = await receive(await stack.get(page.path, brian));
      expect(r.status).toBe(200);
      for (const e of entries(r.json, 'match')) expect((e.resource?.subject as { reference?: string } | undefined)?.reference).toBe(`Patient/${P.brian}`);
      expectAbsent(r, [...others.map(([, id]) => id), ...others.map(([k]) => DEMO.names[k as keyof typeof DEMO.names])]);
      expect((r.json as { total?: number }).total).toBeUndefined();
    }
  });
});

describe('opaque paging parameters are classified like any other', () => {
  it.each([
    ['_cursor', '/Patient?_cursor=eyJvZmZzZXQiOjIsInEiOiJpZGVudGlmaWVyPTEyMy00NS02Nzg5In0'],
    ['_cursor carrying a search', `/Patient?_cursor=${encodeURIComponent(`identifier=${DEMO.ssn.alice}`)}`],
    ['_page_token', '/Patient?_page_token=abc'],
    ['_getpages on a type', '/Patient?_getpages=abc&_getpagesoffset=2'],
    ['a forbidden parameter appended to a next link', `/Patient?_count=2&_offset=2&identifier=${DEMO.ssn.alice}`],
    ['a forbidden parameter in a POST _search next to the paging ones', '/Patient/_search?_count=2&_offset=2'],
  ])('billing, %s: refused, nothing forwarded', async (name, path) => {
    const post = path.includes('/_search');
    const r = await receive(
      post
        ? await stack.request(path, { ...billing, method: 'POST', body: `telecom=${DEMO.phones.alice}`, contentType: 'application/x-www-form-urlencoded' })
        : await stack.get(path, billing),
    );
    expectError(r, 403, 'search-param-denied');
    expectAbsent(r, [DEMO.ssn.alice, DEMO.phones.alice, DEMO.names.alice]);
    const rec = (await stack.auditRecords()).find((x) => x.id === r.requestId);
    expect(rec?.upstreamStatus, name).toBeUndefined();
  });

  it('HAPI-style paging at the root is a system search: refused for every role', async () => {
    for (const who of [clinician, billing]) {
      const r = await receive(await stack.get('/?_getpages=abc&_getpagesoffset=20&_count=20', who));
      expectError(r, 403, 'interaction-denied');
    }
  });

  it('_offset with an embedded query stays one value: it cannot add a parameter upstream', async () => {
    const smuggled = `/Patient?_count=2&_offset=${encodeURIComponent(`0&identifier=${DEMO.ssn.alice}`)}`;
    const r = await receive(await stack.get(smuggled, billing));
    // Whatever the upstream makes of the odd offset, it did not filter on the SSN for billing
    // (the page is not narrowed to Alice), and no resource holds an SSN. (The self link echoes
    // the caller's own query back, SSN-looking text included: that is the caller's input.)
    if (r.status === 200) {
      expect(refs(r.json).length).toBeGreaterThan(1);
      expect(JSON.stringify(entries(r.json))).not.toContain(DEMO.ssn.alice);
      for (const l of links(r.json)) expect(l.url.startsWith(stack.url)).toBe(true);
    } else {
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(errorCode(r.json)).toBeDefined();
      expectAbsent(r, [DEMO.ssn.alice]);
    }
  });
});
