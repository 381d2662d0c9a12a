/**
 * The per-caller non-interference suites (SPEC 3.6), shared by corpus.test.ts and generated.test.ts
 * (every role and purpose of the shipped policy), relationships.test.ts (the callers under a
 * care-relationship requirement) and consent.test.ts (the callers the demo's consents restrict),
 * each in a file of its own so they run beside the others:
 *
 * - corpusSuite: every request of requests.corpus(), one test per request family, then the
 *   harness self-check (S against an identical S2 over the same requests must agree).
 * - generatedSuite: fast-check draws searches (a type, up to two granted parameters with values
 *   taken from the seed, `_count` 1..4, `_include`, `_revinclude`, `_sort`, GET or POST `_search`,
 *   now and then an `If-None-Match`, `Prefer` or `Accept` variant); each must get the same answer,
 *   page by page, over S and S', and over S and S2 first.
 * - sensitivitySuite: an S' lacking something the caller MAY see must be caught.
 *
 *   NI_CALLERS=billing/HPAYMT    only these callers (comma-separated names)
 *   NI_RUNS=100 NI_SEED=123      generated searches per caller, and the fast-check seed
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { judge, mapLimit, report, type RequestSpec, startWorld, type World } from './harness.js';
import { type Caller, grantedTypes, interactions, sPrimeVersions } from './oracle.js';
import { corpus, filterParams, includesFrom, revincludesOnto, seededIds, seededTypes, seedValues, sortParams } from './requests.js';

const RUNS = Number(process.env.NI_RUNS ?? 40);
const SEED = process.env.NI_SEED === undefined ? undefined : Number(process.env.NI_SEED);
const ONLY = process.env.NI_CALLERS?.split(',').map((s) => s.trim());

/** The callers NI_CALLERS selects (all when unset). */
export function selected(callers: readonly Caller[]): Caller[] {
  return callers.filter((c) => !ONLY || ONLY.includes(c.name));
}

interface Draw {
  readonly type: string;
  readonly filters: ReadonlyArray<readonly [string, string]>;
  readonly count: number | undefined;
  readonly include: string | undefined;
  readonly revinclude: string | undefined;
  readonly sort: string | undefined;
  readonly post: boolean;
  readonly headers: Readonly<Record<string, string>> | undefined;
}

/**
 * HTTP variants a client may add (fetch already asks for gzip/br on every request): conditional
 * GETs against the gateway's ETag, `Prefer`, and `Accept` spellings, including one it refuses.
 */
const HTTP_VARIANTS: ReadonlyArray<Readonly<Record<string, string>>> = [
  { 'if-none-match': '*' },
  { 'if-none-match': 'W/"1", "x"' },
  { prefer: 'return=minimal' },
  { prefer: 'handling=strict' },
  { accept: 'application/json+fhir' },
  { accept: 'application/fhir+xml;q=0.9, application/fhir+json;q=0.1' },
  { accept: 'application/fhir+xml' },
  { 'accept-encoding': 'identity' },
];

function toSpec(d: Draw): RequestSpec {
  const params = new URLSearchParams();
  for (const [k, v] of d.filters) params.append(k, v);
  if (d.count !== undefined) params.set('_count', String(d.count));
  if (d.include !== undefined) params.set('_include', d.include);
  if (d.revinclude !== undefined) params.set('_revinclude', d.revinclude);
  if (d.sort !== undefined) params.set('_sort', d.sort);
  const query = params.toString();
  const headers = d.headers === undefined ? {} : { headers: d.headers };
  if (d.post) {
    return {
      family: 'generated-post-search',
      method: 'POST',
      path: `/${d.type}/_search`,
      body: query,
      contentType: 'application/x-www-form-urlencoded',
      ...headers,
    };
  }
  return { family: 'generated-search', method: 'GET', path: `/${d.type}${query ? `?${query}` : ''}`, ...headers };
}

const maybe = <T>(values: readonly T[]): fc.Arbitrary<T | undefined> =>
  values.length === 0 ? fc.constant(undefined) : fc.option(fc.constantFrom(...values), { nil: undefined, freq: 2 });

export function searchArbitrary(c: Caller): fc.Arbitrary<RequestSpec> {
  const searchable = grantedTypes(c).filter((t) => interactions(c, t).has('search') && seededIds(t).length > 0);
  // Mostly granted types; now and then a seeded type outside the data set (refused alike in S and S').
  const outside = seededTypes().filter((t) => !searchable.includes(t));
  const typeArb =
    searchable.length === 0
      ? fc.constantFrom(...outside)
      : outside.length === 0
        ? fc.constantFrom(...searchable)
        : fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...searchable) }, { weight: 1, arbitrary: fc.constantFrom(...outside) });
  return typeArb
    .chain((type) => {
      const pairs = filterParams(c, type).flatMap((p) => seedValues(type, p).slice(0, 8).map((v) => [p, v.value] as const));
      const sorts = sortParams(c, type).flatMap((p) => [p, `-${p}`]);
      return fc.record({
        type: fc.constant(type),
        filters: pairs.length === 0 ? fc.constant([]) : fc.subarray(pairs, { maxLength: 2 }),
        count: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined, freq: 4 }),
        include: maybe(includesFrom(type).map((i) => i.value)),
        revinclude: maybe(revincludesOnto(type).map((r) => r.value)),
        sort: maybe(sorts),
        post: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
        headers: fc.option(fc.constantFrom(...HTTP_VARIANTS), { nil: undefined, freq: 3 }),
      });
    })
    .map(toSpec);
}

function byFamily(specs: readonly RequestSpec[]): Map<string, RequestSpec[]> {
  const out = new Map<string, RequestSpec[]>();
  for (const s of specs) out.set(s.family, [...(out.get(s.family) ?? []), s]);
  return out;
}

/**
 * The fixed corpus for one caller (plus `extra` requests of the caller's own suite): one test per
 * request family, then the self-check.
 */
export function corpusSuite(caller: Caller, extra: readonly RequestSpec[] = []): void {
  describe(`non-interference, corpus: ${caller.name}`, () => {
    let world: World | undefined;
    const selfDiffs: string[] = [];
    let judged = 0;
    beforeAll(async () => {
      world = await startWorld(caller);
    }, 120_000);
    afterAll(async () => {
      await world?.close();
    });

    for (const [family, specs] of byFamily([...corpus(caller), ...extra])) {
      it(`${family} (${specs.length} requests): same answer in S and S'`, async () => {
        // Writes one at a time, so an executed one is attributed to the right request.
        const verdicts = await mapLimit(specs, specs[0]!.write ? 1 : 6, (s) => judge(world!, s));
        judged += verdicts.length;
        for (const v of verdicts) if (v.selfDiff) selfDiffs.push(v.selfDiff);
        const failures = verdicts.flatMap((v) => [v.executed, v.diff].filter((x): x is string => x !== undefined));
        if (failures.length > 0) throw new Error(report(`${caller.name} ${family}`, failures));
      }, 180_000);
    }

    it('self-check: S and an identical S2 agree on every request (no false alarms)', () => {
      expect(judged).toBeGreaterThan(0);
      if (selfDiffs.length > 0) throw new Error(report(`HARNESS FALSE ALARM ${caller.name}`, selfDiffs));
    });
  });
}

/** Generated searches for one caller (NI_RUNS of them). */
export function generatedSuite(caller: Caller): void {
  describe(`non-interference, generated: ${caller.name}`, () => {
    let world: World | undefined;
    beforeAll(async () => {
      world = await startWorld(caller);
    }, 120_000);
    afterAll(async () => {
      await world?.close();
    });

    it(`${RUNS} generated searches: same answer in S and S'`, async () => {
      await fc.assert(
        fc.asyncProperty(searchArbitrary(caller), async (spec) => {
          const v = await judge(world!, spec);
          if (v.selfDiff) throw new Error(`HARNESS FALSE ALARM (S vs S2)\n${v.selfDiff}`);
          if (v.diff) throw new Error(v.diff);
        }),
        // No shrinking: every run costs real requests; the message names the request and the diff.
        { numRuns: RUNS, endOnFailure: true, ...(SEED === undefined ? {} : { seed: SEED }) },
      );
    }, 180_000);
  });
}

export interface SensitivityCase {
  readonly caller: Caller;
  /** `Type/id` left out of S' although the caller may see it (or it relates the caller to a patient). */
  readonly drop: string;
  /** Requests whose answers must then differ between S and S'. */
  readonly requests: readonly string[];
}

/** Guards against a vacuous harness (normalisation or paging that hides real differences). */
export function sensitivitySuite(cases: readonly SensitivityCase[]): void {
  describe("harness sensitivity: an S' lacking what the caller MAY see is caught", () => {
    for (const t of cases) {
      it(`${t.caller.name} without ${t.drop}`, async () => {
        const world = await startWorld(t.caller, { sPrime: sPrimeVersions(t.caller).filter((r) => `${r.resourceType}/${r.id}` !== t.drop) });
        try {
          for (const path of t.requests) {
            const v = await judge(world, { family: 'sensitivity', method: 'GET', path });
            expect(v.selfDiff, path).toBeUndefined();
            expect(v.diff, `${path}: the harness did not see a missing visible resource`).toBeDefined();
          }
        } finally {
          await world.close();
        }
      }, 120_000);
    }
  });
}
