/**
 * upstream.totalTimeoutMs: one wall-clock deadline over everything a client request asks of the
 * upstream, next to the idle timeouts (headersTimeoutMs, bodyTimeoutMs). An upstream that drips one
 * byte every 200 ms resets the idle timeouts forever; without the total deadline these requests
 * would never be answered (the test would time out). Each case: 504 upstream-timeout within the
 * stated bound, an audit record for the answer's X-Request-Id, and the upstream connection closed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drip, type FaultyUpstream, fhirJson, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, expectError, receive } from '../security/support.js';

/** The deadline under test, and the idle timeouts it must win against (each far longer than a drip's gap). */
const TOTAL_MS = 1_200;
const IDLE_MS = 5_000;
/** Stated bound on the answer: the deadline plus an allowance for a 2-core CI machine. */
const BOUND_MS = TOTAL_MS + 1_500;
const DRIP_EVERY_MS = 200;
/** Each upstream page of the slow search takes this long (well within the idle timeouts). */
const PAGE_MS = 400;

const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
const dripping = { dripping: 0 };
let up: FaultyUpstream;
let stack: Stack;

/** A searchset page with no entries and a `next` link: the gateway reads on to fill its page. */
function slowEmptyPage(req: IncomingMessage, res: ServerResponse): void {
  const page = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('_page') ?? '1');
  const bundle = { resourceType: 'Bundle', type: 'searchset', link: [{ relation: 'next', url: `${up.url}/Patient?_page=${page + 1}` }] };
  setTimeout(() => fhirJson(bundle)(req, res), PAGE_MS);
}

beforeAll(async () => {
  up = await startFaultyUpstream({
    '/Patient/drip': drip(DRIP_EVERY_MS, dripping),
    '/Patient': slowEmptyPage,
    '/Patient/ok': fhirJson({ resourceType: 'Patient', id: 'ok', name: [{ family: 'Fast' }] }),
  });
  stack = await startStack({
    upstreamUrl: up.url,
    configure: (c) => ({
      ...c,
      upstream: { ...c.upstream, headersTimeoutMs: IDLE_MS, bodyTimeoutMs: IDLE_MS, totalTimeoutMs: TOTAL_MS },
    }),
  });
}, 60_000);

afterAll(async () => {
  await stack?.close();
  await up?.close();
});

async function until(what: string, ok: () => boolean, withinMs: number): Promise<void> {
  const end = Date.now() + withinMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the total upstream deadline', () => {
  it('a read whose body drips forever: 504 at the deadline, audited, the upstream connection closed', async () => {
    const t0 = performance.now();
    const r = await receive(await stack.get('/Patient/drip', clinician));
    const ms = performance.now() - t0;
    expectError(r, 504, 'upstream-timeout');
    expect(ms).toBeGreaterThanOrEqual(TOTAL_MS - 50);
    expect(ms).toBeLessThan(BOUND_MS);
    const rec = await auditFor(stack, r.requestId);
    expect(rec).toMatchObject({ status: 504, decision: 'error' });
    expect(rec.rule).toMatch(/upstream-timeout$/);
    expect(rec.upstreamStatus).toBeUndefined();
    // The cancelled exchange's connection is closed: the upstream stops dripping at once.
    await until('the upstream stopped dripping', () => dripping.dripping === 0, 1_000);
  });

  it('a search the gateway pages: every upstream page counts within the one deadline', async () => {
    const before = up.requests.length;
    const t0 = performance.now();
    const r = await receive(await stack.get('/Patient?name=slow', clinician));
    const ms = performance.now() - t0;
    expectError(r, 504, 'upstream-timeout');
    expect(ms).toBeLessThan(BOUND_MS);
    // Several pages were read (each well inside the idle timeouts) before the request's own
    // deadline ended it; a deadline per page would have read all maxUpstreamPages (10, 4 s).
    const pages = up.requests.slice(before).filter((q) => q.url.startsWith('/Patient?'));
    expect(pages.length).toBeGreaterThanOrEqual(2);
    expect(pages.length).toBeLessThanOrEqual(Math.ceil(TOTAL_MS / PAGE_MS) + 1);
    const rec = await auditFor(stack, r.requestId);
    expect(rec).toMatchObject({ status: 504, decision: 'error' });
    expect(rec.rule).toMatch(/upstream-timeout$/);
  });

  it('the write check reading the stored resource counts too: an update of a dripping resource is 504', async () => {
    const t0 = performance.now();
    const r = await receive(
      await stack.request('/Patient/drip', {
        ...clinician,
        method: 'PUT',
        contentType: 'application/fhir+json',
        body: JSON.stringify({ resourceType: 'Patient', id: 'drip', name: [{ family: 'Written' }] }),
      }),
    );
    const ms = performance.now() - t0;
    expectError(r, 504, 'upstream-timeout');
    expect(ms).toBeLessThan(BOUND_MS);
    // Nothing was written: the only request the upstream saw for it is the guard's read.
    expect(up.requests.filter((q) => q.method === 'PUT')).toEqual([]);
    const rec = await auditFor(stack, r.requestId);
    expect(rec).toMatchObject({ status: 504, decision: 'error' });
    await until('the upstream stopped dripping', () => dripping.dripping === 0, 1_000);
  });

  it('a well-behaved read on the same gateway is not affected', async () => {
    const r = await receive(await stack.get('/Patient/ok', clinician));
    expect(r.status).toBe(200);
    expect((await auditFor(stack, r.requestId)).status).toBe(200);
  });
});
