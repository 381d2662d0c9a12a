/**
 * HIPAA Safe Harbor, end to end: nothing a researcher (purpose HRESCH) receives re-identifies
 * anyone. The real FHIR upstream holds the demo data plus generated resources full of planted
 * identifiers (test/deid/generate.ts); the researcher searches every granted type, follows every
 * `next` link, reads back every resource and reference it was given, `_include`s subjects, and
 * fast-check adds random request sequences. Every answer — each header and the body — goes through
 * the re-identification scanner (test/deid/scanner.ts) with the seeds of both data sets: zero
 * findings. The same crawl as a clinician (TREAT) must find plenty, so the test can fail.
 *
 *   DEID_SEED=123 DEID_RUNS=40 DEID_REPORT=/tmp/deid.json npx vitest run test/deid/safe-harbor.e2e.test.ts
 */
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { arbPlantedCorpus, demoSeeds, type PlantedCorpus, RESEARCH_TYPES } from './generate.js';
import { type Finding, scan, summarize } from './scanner.js';

const SEED = Number(process.env.DEID_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RUNS = Number(process.env.DEID_RUNS ?? 25);
/** Generated resources: the research types, and two the researcher may not see (reached only by reference). */
const COUNT = 40;
const GENERATED_TYPES = [...RESEARCH_TYPES, 'Practitioner', 'RelatedPerson'];
const GRANTED: readonly string[] = RESEARCH_TYPES;
/** Real references the generated resources point at (demo patients, a practitioner, an encounter). */
const DEMO_REFS = [
  ...Object.values(DEMO.patients).map((id) => `Patient/${id}`),
  `Practitioner/${DEMO.practitioners.reyes}`,
  'Encounter/enc-alice-1',
  `Condition/${DEMO.hypertension}`,
];
const researcher: RequestOpts = { role: 'researcher', purpose: 'HRESCH' };
const clinician: RequestOpts = { role: 'clinician', purpose: 'TREAT' };

let stack: Stack;
let corpus: PlantedCorpus;
let seeds: string[];

interface Located extends Finding {
  readonly request: string;
}

interface Answer {
  readonly status: number;
  readonly json: unknown;
  readonly findings: Located[];
}

beforeAll(async () => {
  stack = await startStack();
  [corpus] = fc.sample(arbPlantedCorpus(COUNT, GENERATED_TYPES, { refs: DEMO_REFS }), { numRuns: 1, seed: SEED });
  seeds = [...demoSeeds(), ...corpus.seeds];
  // Stored straight in the upstream (not through the gateway), with PUT to keep the planted ids.
  for (const r of corpus.resources) {
    const res = await fetch(`${stack.upstreamUrl}/${r.resourceType}/${r.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(r),
    });
    await res.arrayBuffer();
    expect(res.status, `seeding ${r.resourceType}/${r.id}`).toBeLessThan(300);
  }
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

/** One request through the gateway, its whole answer scanned. */
async function fetchScanned(who: RequestOpts, path: string, method = 'GET', body?: string, contentType = 'application/x-www-form-urlencoded'): Promise<Answer> {
  const res = await stack.request(path, { ...who, method, ...(body === undefined ? {} : { body, contentType }) });
  const text = await res.text();
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    headers[k] = v;
  });
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  const findings = scan({ headers, body: text }, seeds, { gatewayBase: stack.url, now: new Date() }).map((f) => ({ ...f, request: `${method} ${path}` }));
  return { status: res.status, json, findings };
}

/** `Type/id` of every entry and every reference in an answer, as the gateway gave them. */
function refsIn(json: unknown): string[] {
  const out = new Set<string>();
  const base = stack.url;
  const visit = (v: unknown, key?: string): void => {
    if (Array.isArray(v)) for (const x of v) visit(x, key);
    else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      if (typeof o.resourceType === 'string' && typeof o.id === 'string' && o.resourceType !== 'Bundle' && o.resourceType !== 'OperationOutcome') {
        out.add(`${o.resourceType}/${o.id}`);
      }
      for (const [k, x] of Object.entries(o)) visit(x, k);
    } else if (typeof v === 'string' && key === 'reference') {
      const rel = v.startsWith(`${base}/`) ? v.slice(base.length + 1) : v;
      if (/^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(rel)) out.add(rel);
    }
  };
  visit(json);
  return [...out];
}

function nextLink(json: unknown): string | undefined {
  const links = (json as { link?: Array<{ relation?: string; url?: string }> } | undefined)?.link ?? [];
  const url = links.find((l) => l.relation === 'next')?.url;
  if (url === undefined) return undefined;
  // A next link outside the gateway would be a finding of its own; it is not followed.
  return url.startsWith(`${stack.url}/`) ? url.slice(stack.url.length) : undefined;
}

function entriesOf(json: unknown): Array<{ resource?: { resourceType?: string }; search?: { mode?: string } }> {
  return (json as { entry?: Array<{ resource?: { resourceType?: string }; search?: { mode?: string } }> } | undefined)?.entry ?? [];
}

interface Crawl {
  readonly findings: Located[];
  /** Matches released per type, over all pages of the plain searches. */
  readonly matches: Map<string, number>;
  /** Every `Type/id` the caller was given. */
  readonly refs: string[];
  readonly requests: number;
  readonly okReads: number;
}

/** A search and every page after it; returns the answers. */
async function searchAll(who: RequestOpts, first: string, maxPages = 20): Promise<Answer[]> {
  const out: Answer[] = [];
  let path: string | undefined = first;
  for (let i = 0; path !== undefined && i < maxPages; i++) {
    const a = await fetchScanned(who, path);
    out.push(a);
    path = a.status === 200 ? nextLink(a.json) : undefined;
  }
  return out;
}

/** Everything a caller can reach: searches of each granted type, includes, reads of everything it was given. */
async function crawl(who: RequestOpts): Promise<Crawl> {
  const findings: Located[] = [];
  const matches = new Map<string, number>();
  const refs = new Set<string>();
  let requests = 0;
  const take = (answers: Answer[]) => {
    for (const a of answers) {
      requests++;
      findings.push(...a.findings);
      for (const r of refsIn(a.json)) refs.add(r);
    }
  };
  for (const type of GRANTED) {
    const pages = await searchAll(who, `/${type}?_count=50`);
    take(pages);
    const n = pages.flatMap((p) => entriesOf(p.json)).filter((e) => e.search?.mode !== 'include' && e.resource?.resourceType === type).length;
    matches.set(type, n);
  }
  for (const q of ['/Observation?_include=Observation:subject&_count=20', '/Condition?_include=Condition:subject&_count=20', '/Encounter?_include=Encounter:subject&_count=20']) {
    take(await searchAll(who, q));
  }
  let okReads = 0;
  for (const ref of [...refs].slice(0, 250)) {
    const a = await fetchScanned(who, `/${ref}`);
    take([a]);
    if (a.status === 200) okReads++;
  }
  return { findings, matches, refs: [...refs], requests, okReads };
}

/** Findings as a failure message: counts by kind, then the first few (deduplicated by value). */
function report(findings: readonly Located[], max = 15): string {
  const byKind = new Map<string, number>();
  for (const f of findings) byKind.set(f.kind, (byKind.get(f.kind) ?? 0) + 1);
  const seen = new Set<string>();
  const distinct = findings.filter((f) => {
    const k = `${f.kind}|${f.value.toLowerCase()}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  if (process.env.DEID_REPORT) writeFileSync(process.env.DEID_REPORT, JSON.stringify(findings, null, 1));
  const kinds = [...byKind].map(([k, n]) => `${k}: ${n}`).join(', ');
  return `seed ${SEED}; ${findings.length} findings (${kinds}), ${distinct.length} distinct values. First ${Math.min(max, distinct.length)}:\n${summarize(distinct, max)}\n(requests: ${[...new Set(distinct.slice(0, max).map((f) => f.request))].join(', ')})`;
}

describe('Safe Harbor: a researcher (HRESCH) receives nothing that re-identifies', () => {
  it('the upstream holds every plant (the data really is there to leak)', async () => {
    const found = new Set<string>();
    for (const r of corpus.resources) {
      const res = await fetch(`${stack.upstreamUrl}/${r.resourceType}/${r.id}`);
      const text = await res.text();
      for (const f of scan({ headers: {}, body: text }, corpus.seeds, { gatewayBase: stack.url, now: new Date() })) {
        if (f.kind === 'seed') found.add(f.value.toLowerCase());
      }
    }
    expect(corpus.seeds.filter((s) => s.length >= 4 && !found.has(s.toLowerCase()))).toEqual([]);
  });

  it('every search page, include and read of every granted type is clean', async () => {
    const c = await crawl(researcher);
    // Not vacuous: every generated resource of a granted type was released (none is labelled).
    for (const type of GRANTED) {
      const generated = corpus.resources.filter((r) => r.resourceType === type).length;
      expect(c.matches.get(type) ?? 0, `${type} matches released`).toBeGreaterThanOrEqual(generated);
    }
    expect(c.okReads).toBeGreaterThan(COUNT / 2);
    expect(c.findings, report(c.findings)).toEqual([]);
  }, 60_000);

  it('random request sequences are clean (fast-check)', async () => {
    // What the researcher was given (pseudonyms), and the real ids (as if guessed).
    const known = (await crawl(researcher)).refs.filter((r) => GRANTED.includes(r.split('/')[0]!));
    const patients = known.filter((r) => r.startsWith('Patient/'));
    const realIds = corpus.resources.map((r) => `${r.resourceType}/${r.id}`);
    const at = <T>(xs: readonly T[], i: number): T | undefined => (xs.length === 0 ? undefined : xs[i % xs.length]);
    const extras: Record<string, readonly string[]> = {
      Patient: ['_revinclude=Observation:subject', 'gender=female', '_summary=true', '_sort=birthdate', 'birthdate=ge1900', '_elements=birthDate,address'],
      Observation: ['_include=Observation:subject', 'code=http://loinc.org|30525-0', 'category=vital-signs', '_elements=code,value', '_summary=true', '_sort=code'],
      Condition: ['_include=Condition:subject', 'code=http://snomed.info/sct|38341003', '_include=Condition:encounter', '_revinclude=Encounter:diagnosis'],
      Procedure: ['_include=Procedure:subject', 'code=http://snomed.info/sct|73761001', '_summary=data'],
      Encounter: ['_include=Encounter:subject', '_revinclude=Condition:encounter', 'class=AMB'],
    };
    /** A GET path: a search (with a granted or refused extra, or a subject named by pseudonym or by real id), a read, vread, history, compartment. */
    const path = fc.oneof(
      fc.record({ type: fc.constantFrom(...GRANTED), count: fc.integer({ min: 1, max: 50 }), extra: fc.option(fc.nat(), { nil: undefined }) }).map(({ type, count, extra }) => {
        const x = extras[type] ?? [];
        return `/${type}?_count=${count}${extra !== undefined && x.length > 0 ? `&${x[extra % x.length]}` : ''}`;
      }),
      fc.record({ type: fc.constantFrom('Observation', 'Condition', 'Procedure', 'Encounter'), pick: fc.nat(), real: fc.boolean() }).map(({ type, pick, real }) => {
        const p = real ? `Patient/${at(Object.values(DEMO.patients), pick)}` : at(patients, pick);
        return `/${type}?subject=${p ?? 'Patient/x'}&_count=10`;
      }),
      fc.record({ pick: fc.nat(), form: fc.constantFrom('', '/_history/1', '/_history', '/$everything') }).map(({ pick, form }) => `/${at(known, pick) ?? 'Patient/x'}${form}`),
      fc.record({ pick: fc.nat(), type: fc.constantFrom(...GRANTED) }).map(({ pick, type }) => `/${at(patients, pick) ?? 'Patient/x'}/${type}?_count=5`),
      fc.nat().map((pick) => `/${at(realIds, pick)}`),
    );
    const request = fc.oneof(
      fc.record({ kind: fc.constant('get' as const), path, pages: fc.integer({ min: 1, max: 4 }) }),
      fc.record({ kind: fc.constant('head' as const), path }),
      fc.record({ kind: fc.constant('post-search' as const), type: fc.constantFrom(...GRANTED), count: fc.integer({ min: 1, max: 50 }) }),
      fc.record({ kind: fc.constant('batch' as const), paths: fc.array(path, { minLength: 1, maxLength: 3 }) }),
    );
    const all: Located[] = [];
    const statuses: number[] = [];
    const run = async (a: Promise<Answer> | Promise<Answer[]>): Promise<Located[]> => {
      const answers = [await a].flat();
      statuses.push(...answers.map((x) => x.status));
      return answers.flatMap((x) => x.findings);
    };
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 5 }), async (reqs) => {
        const found: Located[] = [];
        for (const r of reqs) {
          if (r.kind === 'get') found.push(...(await run(searchAll(researcher, r.path, r.pages))));
          else if (r.kind === 'head') found.push(...(await run(fetchScanned(researcher, r.path, 'HEAD'))));
          else if (r.kind === 'post-search') found.push(...(await run(fetchScanned(researcher, `/${r.type}/_search`, 'POST', `_count=${r.count}`))));
          else {
            const bundle = { resourceType: 'Bundle', type: 'batch', entry: r.paths.map((p) => ({ request: { method: 'GET', url: p.slice(1) } })) };
            found.push(...(await run(fetchScanned(researcher, '', 'POST', JSON.stringify(bundle), 'application/fhir+json'))));
          }
        }
        all.push(...found);
        return found.length === 0;
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    ).catch((err: unknown) => {
      throw new Error(`${report(all)}\n${String(err).split('\n')[0]}`);
    });
    // Not vacuous: many of these requests are answered with data.
    expect(statuses.filter((x) => x === 200).length, `statuses ${JSON.stringify(statuses)}`).toBeGreaterThan(statuses.length / 3);
  }, 60_000);
});

describe('the same crawl as a clinician (TREAT) finds identifiers: the test can fail', () => {
  it('finds planted seeds, dates, ages and URLs of both data sets', async () => {
    const c = await crawl(clinician);
    const kinds = new Set(c.findings.map((f) => f.kind));
    for (const k of ['seed', 'date', 'age', 'url'] as const) expect(kinds.has(k), k).toBe(true);
    const values = new Set(c.findings.filter((f) => f.kind === 'seed').map((f) => f.value.toLowerCase()));
    expect(values.has(DEMO.names.alice.split(' ')[1]!.toLowerCase())).toBe(true);
    expect(corpus.seeds.filter((s) => values.has(s.toLowerCase())).length).toBeGreaterThan(COUNT);
  }, 60_000);
});
