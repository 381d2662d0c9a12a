/**
 * A small in-process timing harness for the micro-benchmarks: calibrate a batch size so one round
 * takes about `roundMs`, run `rounds` rounds, report the median time per operation. The median of
 * rounds resists GC pauses and scheduler noise better than a mean over one long loop.
 */

/** Median of a non-empty list of numbers (does not modify the list). */
export function median(values) {
  if (values.length === 0) throw new Error('median of an empty list');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

// Results are folded in here so the engine cannot drop a call whose result is unused.
let sink = 0;
function consume(v) {
  if (v === undefined || v === null) return;
  sink = (sink + (typeof v === 'string' ? v.length : typeof v === 'number' ? v : 1)) | 0;
}
export function blackhole() {
  return sink;
}

async function runBatch(fn, n, isAsync) {
  const t0 = process.hrtime.bigint();
  if (isAsync) {
    for (let i = 0; i < n; i++) consume(await fn());
  } else {
    for (let i = 0; i < n; i++) consume(fn());
  }
  return Number(process.hrtime.bigint() - t0);
}

/**
 * Times `fn`. `async: true` awaits each call. Returns nanoseconds per operation (median of
 * rounds) and operations per second derived from it.
 */
export async function measure(name, fn, opts = {}) {
  const rounds = opts.rounds ?? 11;
  const roundMs = opts.roundMs ?? 80;
  const isAsync = opts.async === true;
  // Warm up (JIT, caches), then grow the batch until one takes a measurable fraction of a round.
  await runBatch(fn, opts.warmup ?? 20, isAsync);
  let n = 1;
  for (;;) {
    const ns = await runBatch(fn, n, isAsync);
    if (ns >= roundMs * 1e6 * 0.25 || n >= 1 << 24) {
      n = Math.max(1, Math.round((n * roundMs * 1e6) / Math.max(ns, 1)));
      break;
    }
    n *= 4;
  }
  const perOp = [];
  for (let r = 0; r < rounds; r++) perOp.push((await runBatch(fn, n, isAsync)) / n);
  const ns = median(perOp);
  return { name, nsPerOp: ns, opsPerSec: 1e9 / ns, iterations: n, rounds, spread: (Math.max(...perOp) - Math.min(...perOp)) / ns };
}
