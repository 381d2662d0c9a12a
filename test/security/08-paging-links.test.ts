/**
 * BYPASSES 8: paging links reused across users and partitions (hapi-fhir 3357). The gateway owns
 * paging: a `next` link carries one opaque token, sealed by the gateway and bound to the caller's
 * issuer, subject, roles, purpose, patient context and the policy version. Its owner follows it
 * (re-classified and re-decided on every page); anyone else, another purpose, or a tampered token
 * is refused before the upstream is asked. Links never point at the upstream, and opaque paging
 * parameters of upstream servers (`_getpages`, `_page_token`, `_offset`) are refused.
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

describe("a next link is the caller's own: sealed, bound to who asked, why, and under which policy", () => {
  let patientNext: string;
  let observationNext: string;
  beforeAll(async () => {
    const p = await receive(await stack.get('/Patient?_count=2', clinician));
    patientNext = pathOf(next(p.json)!);
    const o = await receive(await stack.get('/Observation?_count=2', clinician));
    observationNext = pathOf(next(o.json)!);
  });

  /** A replay refused before anything reaches the upstream, with nothing of the page in it. */
  async function expectRefusedReplay(path: string, who: RequestOpts): Promise<void> {
    const r = await receive(await stack.get(path, who));
    expectError(r, 400, 'paging-token-invalid');
    expectAbsent(r, [...Object.values(DEMO.phones), ...Object.values(DEMO.ssn), ...Object.values(DEMO.names), upstreamHost]);
    const rec = (await stack.auditRecords()).find((x) => x.id === r.requestId);
    expect(rec?.upstreamStatus).toBeUndefined();
  }

  it('the link names no upstream position and no search: one opaque token', () => {
    const q = new URL(`http://x${observationNext}`).searchParams;
    // The page size rides along in plain sight (clients that rebuild the next request from the
    // link's query keep it instead of adding their own); it is sealed in the token as well.
    expect([...q.keys()]).toEqual(['_cursor', '_count']);
    expect(q.get('_cursor')).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect(observationNext).not.toContain('_offset');
  });

  it('its owner follows it', async () => {
    const r = await receive(await stack.get(observationNext, clinician));
    expect(r.status).toBe(200);
    expect(entries(r.json, 'match').length).toBeGreaterThan(0);
  });

  it("billing, front-desk and the researcher replaying a clinician's page are refused", async () => {
    for (const who of [billing, { role: 'front-desk', purpose: 'HOPERAT' }, { role: 'researcher', purpose: 'HRESCH' }] as const) {
      await expectRefusedReplay(patientNext, who);
      await expectRefusedReplay(observationNext, who);
    }
  });

  it('another clinician (another subject) replaying it is refused', async () => {
    const other = await stack.idp.tokenFor('clinician', { sub: 'dr-someone-else' });
    await expectRefusedReplay(observationNext, { token: other, purpose: 'TREAT' });
  });

  it('the same clinician under another purpose is refused', async () => {
    await expectRefusedReplay(observationNext, { role: 'clinician', purpose: 'COC' });
  });

  it("a patient-limited token replaying an unrestricted clinician's pages is refused", async () => {
    await expectRefusedReplay(observationNext, { ...clinician, tokenClaims: { patient: P.brian } });
  });

  it('an unauthenticated caller is refused before the token is looked at', async () => {
    expectError(await receive(await stack.get(observationNext, { purpose: 'TREAT' })), 401, 'invalid-token');
  });

  it('a token altered by one character is refused', async () => {
    const i = observationNext.length - 5;
    const c = observationNext[i] === 'A' ? 'B' : 'A';
    await expectRefusedReplay(observationNext.slice(0, i) + c + observationNext.slice(i + 1), clinician);
  });

  it('nothing may ride along with a token', async () => {
    const r = await receive(await stack.get(`${observationNext}&code=x`, clinician));
    expectError(r, 400, 'paging-token-invalid');
  });

  it('_count only as the link has it: another page size or a second _count is refused', async () => {
    const size = new URL(`http://x${observationNext}`).searchParams.get('_count')!;
    const bare = observationNext.replace(/&_count=\d+/, '');
    // Without it (as sent by a client that drops it) and repeated as given: the same page.
    const ok = await receive(await stack.get(bare, clinician));
    expect(ok.status).toBe(200);
    for (const path of [`${bare}&_count=${Number(size) + 1}`, `${bare}&_count=1000`, `${observationNext}&_count=${size}`]) {
      const r = await receive(await stack.get(path, clinician));
      expectError(r, 400, 'paging-token-invalid');
    }
  });
});

describe('opaque paging parameters are classified like any other', () => {
  it.each([
    ['a forged token', '/Patient?_cursor=eyJvZmZzZXQiOjIsInEiOiJpZGVudGlmaWVyPTEyMy00NS02Nzg5In0'],
    ['a token carrying a search', `/Patient?_cursor=${encodeURIComponent(`identifier=${DEMO.ssn.alice}`)}`],
  ])('billing, %s: refused, nothing forwarded', async (_name, path) => {
    const r = await receive(await stack.get(path, billing));
    expectError(r, 400, 'paging-token-invalid');
    expectAbsent(r, [DEMO.ssn.alice]);
    const rec = (await stack.auditRecords()).find((x) => x.id === r.requestId);
    expect(rec?.upstreamStatus).toBeUndefined();
  });

  it.each([
    ['_page_token', '/Patient?_page_token=abc'],
    ['_getpages on a type', '/Patient?_getpages=abc&_getpagesoffset=2'],
    ['an upstream offset (the gateway owns paging)', '/Patient?_count=2&_offset=2'],
    ['a forbidden parameter appended to a paging request', `/Patient?_count=2&identifier=${DEMO.ssn.alice}`],
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
