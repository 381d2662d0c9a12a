/**
 * BYPASSES 3: a resource the caller may not see and one that does not exist look the same (status,
 * headers, body; only X-Request-Id differs) to callers who cannot break glass; `total` never
 * counts withheld resources; bare counts are refused where resources can be withheld; conditional
 * create (a match-URL existence oracle) is refused; upstream diagnostics are scrubbed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { comparableHeaders, expectAbsent, expectError, receive } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;

describe('withheld looks exactly like absent', () => {
  it.each([
    ['PSY-labelled Condition', `/Condition/${DEMO.psyCondition}`, '/Condition/cond-does-not-exist'],
    ['R-labelled Patient', `/Patient/${DEMO.vip.patient}`, '/Patient/pat-does-not-exist'],
    ['HIV-labelled Condition', `/Condition/${DEMO.hivCondition}`, '/Condition/cond-nope'],
    ['a type the role may not see', `/Observation/obs-alice-bp`, '/Observation/obs-nope'],
  ])('%s vs a missing id (billing)', async (_n, hidden, missing) => {
    const a = await receive(await stack.get(hidden, billing));
    const b = await receive(await stack.get(missing, billing));
    // A type the role cannot see at all is refused before the upstream is asked, for both ids.
    expect(a.status).toBe(b.status);
    expect(a.text).toBe(b.text);
    expect(comparableHeaders(a.headers)).toEqual(comparableHeaders(b.headers));
    expect([403, 404]).toContain(a.status);
  });

  it('HEAD on withheld and missing answers the same headers', async () => {
    const a = await stack.request(`/Condition/${DEMO.psyCondition}`, { ...billing, method: 'HEAD' });
    const b = await stack.request('/Condition/cond-does-not-exist', { ...billing, method: 'HEAD' });
    expect(a.status).toBe(b.status);
    expect(comparableHeaders(a.headers)).toEqual(comparableHeaders(b.headers));
  });

  it('vread and history of a withheld resource look like a missing one', async () => {
    const a = await receive(await stack.get(`/Condition/${DEMO.psyCondition}/_history/1`, billing));
    const b = await receive(await stack.get('/Condition/cond-nope/_history/1', billing));
    expect([a.status, a.text]).toEqual([b.status, b.text]);
  });

  it('a break-glass-eligible clinician is told break-glass can reveal it (by design, SPEC 3.6)', async () => {
    const r = await receive(await stack.get(`/Patient/${DEMO.vip.patient}`, { role: 'clinician', purpose: 'TREAT' }));
    expectError(r, 403, 'break-glass-available');
    expectAbsent(r, [DEMO.names.vip, DEMO.ssn.vip, DEMO.phones.vip]);
  });
});

describe('counts never include what is withheld', () => {
  it('a searchset with withheld entries counts only what the caller sees', async () => {
    const r = await receive(await stack.get('/Condition?_total=accurate&_count=200', billing));
    expect(r.status).toBe(200);
    const matches = (r.json as { entry?: unknown[] }).entry?.length ?? 0;
    expect(matches).toBeGreaterThan(0);
    expect((r.json as { total?: number }).total).toBe(matches);
    expectAbsent(r, [DEMO.psyCondition, DEMO.hivCondition, DEMO.vip.condition, DEMO.notes.psy]);
  });

  it('a search whose only match is withheld answers total 0, exactly like one with no match', async () => {
    const code = 'code=http://snomed.info/sct|86406008';
    const henry = await receive(await stack.get(`/Condition?patient=${DEMO.patients.henry}&${code}`, billing));
    const alice = await receive(await stack.get(`/Condition?patient=${DEMO.patients.alice}&${code}`, billing));
    const strip = (t: string) => t.replaceAll(DEMO.patients.henry, 'P').replaceAll(DEMO.patients.alice, 'P');
    expect(henry.status).toBe(200);
    expect((henry.json as { total?: number }).total).toBe(0);
    expect(strip(henry.text)).toBe(strip(alice.text));
  });

  it('a result the gateway has not read to its end has no total', async () => {
    const r = await receive(await stack.get('/Patient?_count=1&_total=accurate', { role: 'front-desk', purpose: 'HOPERAT' }));
    expect(r.status).toBe(200);
    expect((r.json as { total?: number }).total).toBeUndefined();
  });

  it.each(['_summary=count', '_count=0', '_count=00'])('%s is refused where resources can be withheld', async (q) => {
    const r = await receive(await stack.get(`/Condition?${q}`, billing));
    expectError(r, 403, 'search-param-denied');
  });

  it('a complete, unfiltered page keeps its exact total', async () => {
    const r = await receive(await stack.get(`/Condition?_id=${DEMO.hypertension}&_total=accurate`, billing));
    expect(r.status).toBe(200);
    expect((r.json as { total?: number }).total).toBe(1);
  });
});

describe('the size of a paging link is not an oracle (found by trying it from outside)', () => {
  const P = DEMO.patients;
  /**
   * Status, Content-Length and body with the sealed token's value replaced: what may differ is only
   * its bytes. Uncompressed: a compressed length also depends on the token's (random) bytes.
   */
  async function shape(path: string, who: { role: string; purpose: string }) {
    const r = await receive(await stack.get(path, { ...who, headers: { 'accept-encoding': 'identity' } }));
    return { status: r.status, length: r.headers.get('content-length'), body: r.text.replace(/_cursor=[A-Za-z0-9_-]+/g, '_cursor=T') };
  }

  it.each([
    // Henry has a withheld HIV Condition, Paula a withheld PSY one; Grace and a made-up id have none.
    ['Condition (HIV)', (x: string) => `/Condition?patient=${P.elder},${x},${P.brian}&_count=1`, [P.henry, P.paula], [P.grace, 'pat-zzzzz']],
    ['Patient (the restricted VIP)', (x: string) => `/Patient?_id=${x},${P.henry},${P.grace}&_sort=-_id&_count=1`, [P.vip], ['pat-zzz', 'pat-vaa']],
  ] as const)('billing: %s: a next link built past a withheld match has the same length as one that skipped nothing', async (_name, path, withheld, absent) => {
    const base = await shape(path(absent[0]), billing);
    expect(base.status).toBe(200);
    expect(base.body).toContain('_cursor=T');
    for (const x of [...withheld, ...absent.slice(1)]) {
      const r = await shape(path(x), billing);
      const norm = (t: string) => t.replaceAll(x, 'X').replaceAll(absent[0], 'X');
      expect({ ...r, body: norm(r.body) }, x).toEqual({ ...base, body: norm(base.body) });
    }
  });
});

describe('other existence oracles', () => {
  it('conditional create (If-None-Exist) matching a withheld record does not reveal it (see 22-conditional-writes)', async () => {
    const r = await receive(
      await stack.request('/Patient', {
        role: 'clinician',
        purpose: 'TREAT',
        method: 'POST',
        headers: { 'if-none-exist': `identifier=${DEMO.ssn.vip}` },
        body: JSON.stringify({ resourceType: 'Patient' }),
        contentType: 'application/fhir+json',
      }),
    );
    // The clinician is told that break-glass could reveal it, exactly as its search would tell it.
    expectError(r, 403, 'break-glass-available');
    expect(r.text).not.toContain(DEMO.patients.vip);
  });

  it('upstream OperationOutcome diagnostics never reach the client', async () => {
    const r = await receive(await stack.get('/Patient?birthdate=not-a-date', billing));
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.text).not.toContain('not-a-date');
    const oo = r.json as { issue?: Array<{ diagnostics?: string; details?: { text?: string } }> };
    for (const i of oo.issue ?? []) expect(i.diagnostics).toBeUndefined();
  });
});

describe('the reproductions that opened the gateway-owned paging work', () => {
  const P = DEMO.patients;
  type Page = { entry?: Array<{ resource?: { id?: string }; search?: { mode?: string } }>; link?: Array<{ relation: string; url: string }>; total?: number };
  async function walk(path: string, who: { role: string; purpose: string }): Promise<Page[]> {
    const pages: Page[] = [];
    let p: string | undefined = path;
    while (p !== undefined && pages.length < 20) {
      const r = await receive(await stack.get(p, who));
      expect(r.status, r.text).toBe(200);
      const page = r.json as Page;
      pages.push(page);
      const next = page.link?.find((l) => l.relation === 'next')?.url;
      p = next === undefined ? undefined : next.slice(stack.url.length);
    }
    return pages;
  }

  it("_count=1 vs _count=2 no longer counts Paula's withheld psychiatric conditions: pages follow the visible ones only", async () => {
    const all = await walk(`/Condition?patient=${P.paula}&_count=100`, billing);
    const visible = all.flatMap((p) => p.entry ?? []).map((e) => e.resource?.id);
    for (const count of [1, 2, 3]) {
      const pages = await walk(`/Condition?patient=${P.paula}&_count=${count}`, billing);
      expect(pages.flatMap((p) => p.entry ?? []).map((e) => e.resource?.id)).toEqual(visible);
      // Every page full but the last; as many pages as the visible matches need (at least one).
      expect(pages.length).toBe(Math.max(1, Math.ceil(visible.length / count)));
      for (const p of pages.slice(0, -1)) expect(p.entry?.length).toBe(count);
      expect(pages.at(-1)?.total).toBe(visible.length);
    }
    expect(visible).not.toContain(DEMO.psyCondition);
    expect(visible).not.toContain(DEMO.psythpnCondition);
  });

  it('_revinclude of a type billing may not see is refused before the upstream is asked, whoever has notes', async () => {
    for (const name of ['Anderson', 'Nobody']) {
      const r = await receive(await stack.get(`/Patient?name=${name}&_revinclude=DocumentReference:subject`, billing));
      expectError(r, 403, 'type-denied');
    }
  });

  it("a patient-context token probing another patient's diagnoses is refused the same way whether or not they match", async () => {
    const who = { role: 'clinician', purpose: 'TREAT', tokenClaims: { patient: P.alice } };
    const code = 'code=http://snomed.info/sct|44054006';
    const answers = [];
    for (const other of [P.brian, P.grace, 'pat-nobody']) {
      const r = await receive(await stack.get(`/Condition?patient=${other}&${code}`, who));
      expectError(r, 403, 'compartment-denied');
      answers.push({ status: r.status, headers: comparableHeaders(r.headers), body: r.text });
    }
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[2]).toEqual(answers[0]);
  });
});
