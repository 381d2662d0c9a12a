/**
 * Non-interference, generated searches (SPEC 3.6): fast-check draws searches per caller (a type,
 * up to two granted parameters with values taken from the seed, `_count` 1..4, `_include`,
 * `_revinclude`, `_sort`, GET or POST `_search`, now and then an `If-None-Match`, `Prefer` or
 * `Accept` variant) and each must get the same answer, page by page,
 * from the gateway over S and over S'. Every run is also checked against an identical S2 first, so
 * a harness false alarm is reported as such (suites.ts generatedSuite).
 *
 *   NI_RUNS=100 NI_SEED=123 npx vitest run test/noninterference/generated.test.ts
 */
import { callers } from './oracle.js';
import { generatedSuite, selected } from './suites.js';

for (const caller of selected(callers())) generatedSuite(caller);
