/**
 * Non-interference, generated searches (SPEC 3.6): fast-check draws searches per caller (a type,
 * up to two granted parameters with values taken from the seed, `_count` 1..4, `_include`,
 * `_revinclude`, `_sort`, GET or POST `_search`, now and then an `If-None-Match`, `Prefer` or
 * `Accept` variant) and each must get the same answer, page by page,
 * from the gateway over S and over S'. Every run is also checked against an identical S2 first, so
 * a harness false alarm is reported as such.
 *
 *   NI_RUNS=100 NI_SEED=123 npx vitest run test/noninterference/generated.test.ts
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { judge, type RequestSpec, startWorld, type World } from './harness.js';
import { type Caller, callers, grantedTypes, interactions } from './oracle.js';
import { filterParams, includesFrom, revincludesOnto, seededIds, seededTypes, seedValues, sortParams } from './requests.js';

const RUNS = Number(process.env.NI_RUNS ?? 40);
const SEED = process.env.NI_SEED === undefined ? undefined : Number(process.env.NI_SEED);
const only = process.env.NI_CALLERS?.split(',').map((s) => s.trim());
const CALLERS = callers().filter((c) => !only || only.includes(c.name));

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

for (const caller of CALLERS) {
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
