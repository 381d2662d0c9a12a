/**
 * The pager alone, against upstreams that page in every size: the pages a caller is handed, their
 * `next` links and `total` are the same whether or not the resources it may not see exist, however
 * the upstream cuts its pages (property), and includes travel only with the match they belong to.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { collectPage, includeSpecs, type PageStart } from '../../../src/proxy/paging.js';
import { Filter } from '../../../src/redact/response.js';
import { resourcePlan, responseCtx, UPSTREAM } from '../redact/helpers.js';

const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
type Obj = Record<string, unknown>;

interface Item {
  readonly id: string;
  readonly withheld: boolean;
  /** Includes this match references (Patient ids), each possibly withheld itself. */
  readonly patient?: { id: string; withheld: boolean };
}

function observation(it: Item): Obj {
  return {
    resourceType: 'Observation',
    id: it.id,
    ...(it.withheld ? { meta: { security: [{ system: CONF, code: 'R' }] } } : {}),
    status: 'final',
    code: { text: 'x' },
    ...(it.patient ? { subject: { reference: `Patient/${it.patient.id}` } } : {}),
  };
}

function patient(p: { id: string; withheld: boolean }): Obj {
  return { resourceType: 'Patient', id: p.id, ...(p.withheld ? { meta: { security: [{ system: CONF, code: 'R' }] } } : {}) };
}

/** An offset-paging upstream over `items`, `size` matches per page, includes on the page of their match. */
function upstream(items: readonly Item[], size: number) {
  let reads = 0;
  const pageAt = (offset: number): Obj => {
    const slice = items.slice(offset, offset + size);
    const entry: Obj[] = slice.map((it) => ({ fullUrl: `${UPSTREAM}/Observation/${it.id}`, resource: observation(it), search: { mode: 'match' } }));
    const seen = new Set<string>();
    for (const it of slice) {
      if (it.patient && !seen.has(it.patient.id)) {
        seen.add(it.patient.id);
        entry.push({ fullUrl: `${UPSTREAM}/Patient/${it.patient.id}`, resource: patient(it.patient), search: { mode: 'include' } });
      }
    }
    const link: Obj[] = [{ relation: 'self', url: `${UPSTREAM}/Observation?_offset=${offset}` }];
    if (offset + size < items.length) link.push({ relation: 'next', url: `${UPSTREAM}/Observation?_offset=${offset + size}` });
    return { resourceType: 'Bundle', type: 'searchset', total: items.length, link, entry };
  };
  const at = (o: number) => `/fhir/Observation?_offset=${o}`;
  return {
    first: () => pageAt(0),
    at,
    fetchPage: async (path: string) => {
      reads++;
      const m = /_offset=(\d+)$/.exec(path);
      if (!m) throw new Error(`unexpected page ${path}`);
      return pageAt(Number(m[1]));
    },
    resolveLink: (url: string) => {
      if (!url.startsWith(UPSTREAM)) throw new GatewayError('upstream-bad-response', 'elsewhere');
      return `/fhir${url.slice(UPSTREAM.length)}`;
    },
    get reads() {
      return reads;
    },
  };
}

const INCLUDE_SUBJECT = includeSpecs([['_include', 'Observation:subject:Patient']]);

const ctx = () =>
  responseCtx({ Observation: resourcePlan('Observation', {}, ['R']), Patient: resourcePlan('Patient', {}, ['R']) });

interface Walked {
  pages: Array<{ ids: string[]; includes: string[]; total: number | undefined; hasNext: boolean }>;
}

/** Every client page from the start, following the pager's own continuation. */
async function walk(items: readonly Item[], size: number, count: number, maxUpstreamPages = 1000): Promise<Walked> {
  const up = upstream(items, size);
  const pages: Walked['pages'] = [];
  let start: PageStart = { at: up.at(0), index: 0, released: 0, count };
  let first = up.first();
  for (let guard = 0; guard < 500; guard++) {
    const got = await collectPage({ first, start, filter: new Filter(ctx()), fetchPage: up.fetchPage, resolveLink: up.resolveLink, maxUpstreamPages, typeHistory: false, includes: INCLUDE_SUBJECT });
    const res = got.entries.map((e) => e.resource as Obj);
    pages.push({
      ids: res.filter((r) => r.resourceType === 'Observation').map((r) => r.id as string),
      includes: res.filter((r) => r.resourceType === 'Patient').map((r) => r.id as string),
      total: got.total,
      hasNext: got.next !== undefined,
    });
    if (got.next === undefined) return { pages };
    start = { at: got.next.at, index: got.next.index, released: got.next.released, count };
    first = await up.fetchPage(got.next.at);
  }
  throw new Error('did not end');
}

const itemsArb = fc
  .array(
    fc.record({
      withheld: fc.boolean(),
      patient: fc.option(fc.record({ n: fc.nat({ max: 4 }), withheld: fc.boolean() }), { nil: undefined }),
    }),
    { maxLength: 25 },
  )
  .map((xs) =>
    xs.map((x, i): Item => ({
      id: `o${i}`,
      withheld: x.withheld,
      // One patient id, one label: whether patient pN is withheld is a property of pN.
      ...(x.patient ? { patient: { id: `p${x.patient.n}`, withheld: x.patient.n % 2 === 1 } } : {}),
    })),
  );

/** One client page from the start of `up`'s result (the first upstream page already read). */
function firstPage(up: ReturnType<typeof upstream>, count: number, over: { first?: Obj; maxUpstreamPages?: number } = {}) {
  return collectPage({
    first: over.first ?? up.first(),
    start: { at: up.at(0), index: 0, released: 0, count },
    filter: new Filter(ctx()),
    fetchPage: up.fetchPage,
    resolveLink: up.resolveLink,
    maxUpstreamPages: over.maxUpstreamPages ?? 10,
    typeHistory: false,
  });
}

describe('collectPage', () => {
  it('answers the same pages whether or not withheld matches exist, for any upstream page size (property)', async () => {
    await fc.assert(
      fc.asyncProperty(itemsArb, fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 4 }), async (items, sizeS, sizeS2, count) => {
        const visible = items.filter((i) => !i.withheld);
        const s = await walk(items, sizeS, count);
        const s2 = await walk(visible, sizeS2, count);
        expect(s).toEqual(s2);
        // And the pages are the visible matches in order, `count` at a time, with a total at the end only.
        const ids = s.pages.flatMap((p) => p.ids);
        expect(ids).toEqual(visible.map((i) => i.id));
        for (const p of s.pages.slice(0, -1)) expect(p.ids).toHaveLength(count);
        const last = s.pages[s.pages.length - 1];
        expect(last.total).toBe(visible.length);
        expect(last.hasNext).toBe(false);
        for (const p of s.pages.slice(0, -1)) expect(p.total).toBeUndefined();
      }),
      { numRuns: 300 },
    );
  });

  it('releases an include only with a released match that references it, never a withheld include', async () => {
    const items: Item[] = [
      { id: 'o0', withheld: true, patient: { id: 'p9', withheld: false } },
      { id: 'o1', withheld: false, patient: { id: 'p2', withheld: false } },
      { id: 'o2', withheld: false, patient: { id: 'p3', withheld: true } },
    ];
    const s = await walk(items, 3, 5);
    expect(s.pages).toEqual([{ ids: ['o1', 'o2'], includes: ['p2'], total: 2, hasNext: false }]);
  });

  it('releases only what the requested include reaches: not a resource the match references otherwise', async () => {
    const up = upstream([{ id: 'o1', withheld: false, patient: { id: 'p2', withheld: false } }], 5);
    const first = up.first();
    // The upstream also returned a Practitioner the match references as performer (e.g. included for
    // a withheld match's sake): not reached by Observation:subject, so not released.
    const obs = (first.entry as Obj[])[0].resource as Obj;
    (first.entry as Obj[])[0] = { ...(first.entry as Obj[])[0], resource: { ...obs, performer: [{ reference: 'Practitioner/dr1' }] } };
    (first.entry as Obj[]).push({ fullUrl: `${UPSTREAM}/Practitioner/dr1`, resource: { resourceType: 'Practitioner', id: 'dr1' }, search: { mode: 'include' } });
    const plans = responseCtx({ Observation: resourcePlan('Observation'), Patient: resourcePlan('Patient'), Practitioner: resourcePlan('Practitioner') });
    const filter = new Filter(plans);
    const got = await collectPage({ first, start: { at: up.at(0), index: 0, released: 0, count: 5 }, filter, fetchPage: up.fetchPage, resolveLink: up.resolveLink, maxUpstreamPages: 5, typeHistory: false, includes: INCLUDE_SUBJECT });
    expect(got.entries.map((e) => (e.resource as Obj).id)).toEqual(['o1', 'p2']);
    expect(filter.stats.resourcesWithheld).toBe(1);
  });

  it('hands out a next link only when a visible match follows', async () => {
    const items: Item[] = [{ id: 'o0', withheld: false }, ...Array.from({ length: 9 }, (_, i) => ({ id: `w${i}`, withheld: true }))];
    const s = await walk(items, 2, 1);
    expect(s.pages).toEqual([{ ids: ['o0'], includes: [], total: 1, hasNext: false }]);
  });

  it('asks the upstream for one page when nothing is withheld and the page size fits', async () => {
    const items: Item[] = Array.from({ length: 5 }, (_, i) => ({ id: `o${i}`, withheld: false }));
    const up = upstream(items, 4);
    const got = await firstPage(up, 3);
    expect(up.reads).toBe(0);
    expect(got.next).toEqual({ at: up.at(0), index: 3, released: 3 });
    expect(got.total).toBeUndefined();
  });

  it('stops at the bound with a next link where it stopped', async () => {
    const items: Item[] = [...Array.from({ length: 8 }, (_, i) => ({ id: `w${i}`, withheld: true })), { id: 'o0', withheld: false }];
    const up = upstream(items, 2);
    const got = await firstPage(up, 1, { maxUpstreamPages: 3 });
    expect(up.reads).toBe(2);
    expect(got.entries).toEqual([]);
    expect(got.next).toEqual({ at: up.at(6), index: 0, released: 0 });
  });

  it('refuses an upstream next link outside the upstream', async () => {
    const items: Item[] = Array.from({ length: 4 }, (_, i) => ({ id: `o${i}`, withheld: i < 3 }));
    const up = upstream(items, 2);
    const first = up.first();
    (first.link as Obj[])[1] = { relation: 'next', url: 'https://attacker.example/fhir/Observation?_offset=2' };
    await expect(firstPage(up, 1, { first })).rejects.toMatchObject({ code: 'upstream-bad-response' });
  });

  it('withholds a type-history entry it cannot judge (a delete without a resource)', async () => {
    const history = {
      resourceType: 'Bundle',
      type: 'history',
      entry: [
        { fullUrl: `${UPSTREAM}/Observation/o1`, request: { method: 'DELETE', url: 'Observation/o1' }, response: { status: '204' } },
        { fullUrl: `${UPSTREAM}/Observation/o2`, resource: observation({ id: 'o2', withheld: false }), request: { method: 'PUT', url: 'Observation/o2' } },
      ],
    };
    const got = await collectPage({
      first: history,
      start: { at: '/fhir/Observation/_history', index: 0, released: 0, count: 10 },
      filter: new Filter(ctx()),
      fetchPage: async () => {
        throw new Error('no more pages');
      },
      resolveLink: (u) => u,
      maxUpstreamPages: 10,
      typeHistory: true,
    });
    expect(got.entries.map((e) => (e.resource as Obj | undefined)?.id)).toEqual(['o2']);
    expect(got.total).toBe(1);
  });
});
