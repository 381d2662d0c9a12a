/**
 * Pure aggregation and Markdown rendering for the benchmark report (no I/O, testable).
 * Load runs are combined per scenario: req/s = 2xx responses / seconds over all runs; p50 and
 * p99 = the percentiles of all the runs' latencies pooled, when every run kept them (the paced
 * latency runs), else the mean of the runs' percentiles (autocannon reports percentiles only).
 */

/** Combines the alternated runs of one scenario. */
export function aggregate(runs) {
  if (runs.length === 0) return undefined;
  let ok = 0;
  let seconds = 0;
  let non2xx = 0;
  let errors = 0;
  let p50 = 0;
  let p99 = 0;
  for (const r of runs) {
    ok += r.ok;
    seconds += r.seconds;
    non2xx += r.non2xx;
    errors += r.errors;
    p50 += r.p50;
    p99 += r.p99;
  }
  if (runs.every((r) => Array.isArray(r.latencies))) {
    const pooled = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
    return { rps: seconds > 0 ? ok / seconds : 0, p50: percentile(pooled, 50), p99: percentile(pooled, 99), non2xx, errors, runs: runs.length, samples: pooled.length };
  }
  return { rps: seconds > 0 ? ok / seconds : 0, p50: p50 / runs.length, p99: p99 / runs.length, non2xx, errors, runs: runs.length };
}

/** Nearest-rank percentile of an ascending list (NaN when empty). */
export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Maps an autocannon result to the fields `aggregate` uses. */
export function fromAutocannon(r) {
  return {
    ok: r['2xx'] ?? 0,
    seconds: r.duration,
    non2xx: r.non2xx ?? 0,
    errors: (r.errors ?? 0) + (r.timeouts ?? 0),
    p50: r.latency.p50,
    p99: r.latency.p99,
  };
}

/**
 * Two scenarios measured in the same alternated rounds (`a[k]` and `b[k]` ran next to each other):
 * per round, a's req/s over b's and its median (slow drift of the machine cancels within a round),
 * and, when the runs carry `cpuSeconds` (CPU time of the server process during the run), CPU time
 * per 2xx response of each (µs, over all rounds) and a's over b's, overall and per round.
 */
export function pairedRounds(a, b) {
  const n = Math.min(a.length, b.length);
  const rps = (r) => (r.seconds > 0 ? r.ok / r.seconds : Number.NaN);
  const us = (runs) => {
    const ok = runs.reduce((s, r) => s + r.ok, 0);
    return ok > 0 ? (runs.reduce((s, r) => s + (r.cpuSeconds ?? Number.NaN), 0) * 1e6) / ok : Number.NaN;
  };
  const rpsRatios = [];
  const cpuRatios = [];
  for (let k = 0; k < n; k++) {
    rpsRatios.push(rps(a[k]) / rps(b[k]));
    cpuRatios.push(us([a[k]]) / us([b[k]]));
  }
  const usPerRequest = [us(a.slice(0, n)), us(b.slice(0, n))];
  return { rpsRatios, medianRpsRatio: median(rpsRatios), usPerRequest, cpuRatio: usPerRequest[0] / usPerRequest[1], cpuRatios };
}

/** The median of a list of numbers (NaN when empty). */
function median(xs) {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Order in which to run the scenarios of each round: forwards on odd rounds, backwards on even
 * ones (A B C, C B A, ...), so a slow drift of the machine does not favour whoever runs first.
 */
export function alternation(ids, rounds) {
  const order = [];
  for (let r = 0; r < rounds; r++) order.push(...(r % 2 === 0 ? ids : [...ids].reverse()));
  return order;
}

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const ratio = (a, b) => (b > 0 && Number.isFinite(a) ? a / b : Number.NaN);

/**
 * Rows for one payload group. `rows` = [{ label, kind: 'bare'|'parse'|'gateway', stats, error, vs? }]
 * (`vs`: `{ ratio, of, median?, rounds? }`, this row's req/s as a ratio of another row's in the same
 * run, `of` saying which; `median`: the median of the ratios of `rounds` alternated rounds).
 * Ratios are against the bare proxy and the parse-only proxy of the same group and run.
 */
export function withRatios(rows) {
  const bare = rows.find((r) => r.kind === 'bare')?.stats;
  const parse = rows.find((r) => r.kind === 'parse')?.stats;
  return rows.map((r) => ({
    ...r,
    vsBare: r.stats && bare ? ratio(r.stats.rps, bare.rps) : Number.NaN,
    vsParse: r.stats && parse ? ratio(r.stats.rps, parse.rps) : Number.NaN,
    p99Added: r.stats && bare ? r.stats.p99 - bare.p99 : Number.NaN,
  }));
}

export function loadTable(groups, connections) {
  const lines = [
    `| scenario (${connections} connections) | req/s | p50 ms | p99 ms | x bare | x parse-only | p99 added ms | non-2xx / errors |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const g of groups) {
    for (const r of withRatios(g.rows)) {
      // A row measured against another row of its group (`vs`) shows that ratio in its name.
      const median = r.vs && Number.isFinite(r.vs.median) ? `; median of ${r.vs.rounds} rounds ${fmt(r.vs.median, 3)}x` : '';
      const vs = r.stats && r.vs && Number.isFinite(r.vs.ratio) ? ` (req/s ${fmt(r.vs.ratio, 3)}x ${r.vs.of}${median})` : '';
      const name = `${g.name}: ${r.label}${vs}`;
      if (!r.stats) {
        lines.push(`| ${name} | FAILED: ${r.error ?? 'no result'} | | | | | | |`);
        continue;
      }
      const s = r.stats;
      lines.push(
        `| ${name} | ${fmt(s.rps)} | ${fmt(s.p50, 1)} | ${fmt(s.p99, 1)} | ${fmt(r.vsBare, 2)} | ${fmt(r.vsParse, 2)} | ${r.kind === 'bare' ? '-' : fmt(r.p99Added, 1)} | ${s.non2xx} / ${s.errors} |`,
      );
    }
  }
  return lines.join('\n');
}

const nsFmt = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(1)} µs` : `${ns.toFixed(0)} ns`);

export function microTable(micro) {
  const lines = ['| micro-benchmark | time/op | ops/s | spread |', '|---|---:|---:|---:|'];
  for (const r of micro.results) {
    lines.push(`| ${r.group}: ${r.name} | ${nsFmt(r.nsPerOp)} | ${fmt(r.opsPerSec)} | ±${fmt((r.spread * 100) / 2, 0)}% |`);
  }
  lines.push('', '| redaction of the searchset | filter alone vs parse+stringify | parse+filter+stringify vs parse+stringify | elements removed | output bytes |', '|---|---:|---:|---:|---:|');
  for (const [role, v] of Object.entries(micro.redaction)) {
    lines.push(`| ${role} | ${fmt(v.filterVsParseStringify, 2)}x | ${fmt(v.fullVsParseStringify, 2)}x | ${v.elementsRemoved} | ${v.outBytes} |`);
  }
  return lines.join('\n');
}

/** The SPEC 7 targets, each judged on its worst applicable row. */
export function targets(groups, micro, microBySide) {
  const out = [];
  const gwRows = (name) => withRatios(groups.find((g) => g.key === name)?.rows ?? []).filter((r) => r.kind === 'gateway');
  const judge = (title, rows, value, ok, show) => {
    const measured = rows.filter((r) => Number.isFinite(value(r)));
    if (measured.length === 0) return out.push({ title, pass: false, detail: 'not measured' });
    // Values are oriented so that larger is better: the worst row is the smallest.
    const worst = measured.reduce((a, b) => (value(b) < value(a) ? b : a));
    const failing = measured.filter((r) => !ok(value(r)));
    const missing = rows.length - measured.length;
    out.push({
      title,
      pass: failing.length === 0 && missing === 0,
      detail:
        failing.length === 0
          ? `all ${measured.length} rows pass${missing ? `, ${missing} not measured` : ''} (worst: ${worst.label} ${show(value(worst))})`
          : failing.map((r) => `${r.label} ${show(value(r))}`).join('; '),
    });
  };
  judge('gateway req/s >= 0.75x bare proxy, Patient read', gwRows('read'), (r) => r.vsBare, (v) => v >= 0.75, (v) => `${fmt(v, 2)}x`);
  judge('gateway req/s >= 0.9x parse-only proxy, searchset', gwRows('search'), (r) => r.vsParse, (v) => v >= 0.9, (v) => `${fmt(v, 2)}x`);
  // Judged at a fixed rate when that group ran (saturated p99 is queueing, not added latency).
  const fixed = groups.find((g) => g.key === 'latency');
  judge(
    fixed ? `p99 added latency <= 2 ms over bare proxy (${fixed.name})` : 'p99 added latency <= 2 ms over bare proxy',
    fixed
      ? gwRows('latency')
      : [...gwRows('read').map((r) => ({ ...r, label: `read ${r.label}` })), ...gwRows('search').map((r) => ({ ...r, label: `search ${r.label}` }))],
    (r) => -r.p99Added,
    (v) => v >= -2,
    (v) => `+${fmt(-v, 1)} ms`,
  );
  const micros = microBySide ? Object.entries(microBySide).map(([side, m]) => [` @${side}`, m]) : micro ? [['', micro]] : [];
  if (micros.length > 0) {
    const rows = micros.flatMap(([suffix, m]) =>
      Object.entries(m.redaction)
        .filter(([role]) => role !== 'clinician')
        .map(([role, v]) => ({ label: `${role}${suffix}`, v: v.filterVsParseStringify })),
    );
    judge('redaction engine >= 0.9x parse+stringify throughput', rows, (r) => r.v, (v) => v >= 0.9, (v) => `${fmt(v, 2)}x`);
  }
  return out;
}

export function targetsTable(list) {
  const lines = ['| target (SPEC 7) | result | detail |', '|---|---|---|'];
  for (const t of list) lines.push(`| ${t.title} | ${t.pass ? 'PASS' : 'FAIL'} | ${t.detail} |`);
  return lines.join('\n');
}

const mb = (bytes) => (bytes === undefined ? 'n/a' : `${(bytes / 1048576).toFixed(0)} MB`);

export function memoryTable(mem) {
  const lines = [
    `| memory: ${mem.clients} clients fetching the ${mb(mem.bigBytes)} Bundle | response limit | RSS before | peak RSS | peak - before | responses | seconds | non-2xx / errors |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of mem.rows) {
    if (r.error) {
      lines.push(`| ${r.label} | ${r.limit ? mb(r.limit) : '-'} | FAILED: ${r.error} | | | | | |`);
      continue;
    }
    lines.push(
      `| ${r.label} | ${r.limit ? mb(r.limit) : '-'} | ${mb(r.before)} | ${mb(r.peak)} | ${mb(r.peak - r.before)} | ${r.ok} x 2xx, ${r.non2xx} x non-2xx | ${fmt(r.seconds, 1)} | ${r.non2xx} / ${r.errors} |`,
    );
  }
  if (mem.overLimit) lines.push('', `Over-limit check: ${mem.overLimit}`);
  return lines.join('\n');
}

export function machineLines(m) {
  return [
    `- date: ${m.date}`,
    `- CPU: ${m.cpu} x ${m.cores} cores`,
    `- memory: ${m.memGb} GB, Node ${m.node}, ${m.platform}`,
    `- commit: ${m.commit}`,
    `- load: autocannon ${m.autocannon}, ${m.connections} connections, ${m.duration} s per run, ${m.rounds} alternated rounds after a ${m.warmup} s warm-up per scenario; load generator, upstream and proxy share the machine`,
    `- CPU pinning: ${m.pinning ?? 'none'}`,
    `- load average at start: ${m.loadavg ?? 'n/a'}${m.loadavgEnd ? `, at end: ${m.loadavgEnd}` : ''} (other work on the machine skews absolute numbers; the alternation keeps ratios fairer)`,
  ];
}

export function renderReport({ machine, groups, micro, microBySide, memory, notes }) {
  const parts = ['# phi-gateway benchmark', '', ...machineLines(machine), ''];
  if (groups.length > 0) parts.push('## Throughput and latency', '', loadTable(groups, machine.connections), '');
  parts.push('## Targets', '', targetsTable(targets(groups, micro, microBySide)), '');
  if (micro) parts.push('## Micro-benchmarks (in-process, median of rounds)', '', microTable(micro), '');
  for (const [side, m] of Object.entries(microBySide ?? {})) {
    parts.push(`## Micro-benchmarks @${side} (in-process, median of rounds)`, '', microTable(m), '');
  }
  if (memory) parts.push('## Memory', '', memoryTable(memory), '');
  if (notes.length > 0) parts.push('## Notes', '', ...notes.map((n) => `- ${n}`), '');
  return parts.join('\n');
}

/**
 * Side by side: two reports (from the same harness) for revisions `a` and `b`, with b/a ratios.
 * Rows are matched by group and label; a row missing on one side is shown as such.
 */
export function compareMarkdown(a, b, nameA, nameB) {
  const lines = [
    `| scenario | req/s ${nameA} | req/s ${nameB} | ${nameB} / ${nameA} | p99 ms ${nameA} | p99 ms ${nameB} | p99 change ms |`,
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  const keyed = (report) => {
    const m = new Map();
    for (const g of report.groups ?? []) for (const r of g.rows) m.set(`${g.name}: ${r.label}`, r.stats);
    return m;
  };
  const ka = keyed(a);
  const kb = keyed(b);
  for (const key of new Set([...ka.keys(), ...kb.keys()])) {
    const sa = ka.get(key);
    const sb = kb.get(key);
    lines.push(
      `| ${key} | ${sa ? fmt(sa.rps) : 'n/a'} | ${sb ? fmt(sb.rps) : 'n/a'} | ${sa && sb ? `${fmt(ratio(sb.rps, sa.rps), 2)}x` : 'n/a'} | ${sa ? fmt(sa.p99, 1) : 'n/a'} | ${sb ? fmt(sb.p99, 1) : 'n/a'} | ${sa && sb ? fmt(sb.p99 - sa.p99, 1) : 'n/a'} |`,
    );
  }
  const ma = new Map((a.micro?.results ?? []).map((r) => [`${r.group}: ${r.name}`, r]));
  const mbm = new Map((b.micro?.results ?? []).map((r) => [`${r.group}: ${r.name}`, r]));
  if (ma.size + mbm.size > 0) {
    lines.push('', `| micro-benchmark | ${nameA} | ${nameB} | speed-up ${nameB} vs ${nameA} |`, '|---|---:|---:|---:|');
    for (const key of new Set([...ma.keys(), ...mbm.keys()])) {
      const ra = ma.get(key);
      const rb = mbm.get(key);
      lines.push(`| ${key} | ${ra ? nsFmt(ra.nsPerOp) : 'n/a'} | ${rb ? nsFmt(rb.nsPerOp) : 'n/a'} | ${ra && rb ? `${fmt(ra.nsPerOp / rb.nsPerOp, 2)}x` : 'n/a'} |`);
    }
  }
  return lines.join('\n');
}

/**
 * From a report that measured two revisions in one run (gateway rows labelled `... @SIDE`), the
 * report of one side: the shared baselines plus that side's rows without the suffix.
 */
export function splitSide(report, side) {
  const suffix = ` @${side}`;
  return {
    groups: (report.groups ?? []).map((g) => ({
      ...g,
      rows: g.rows
        .filter((r) => r.kind !== 'gateway' || r.label.endsWith(suffix))
        .map((r) => (r.kind === 'gateway' ? { ...r, label: r.label.slice(0, -suffix.length) } : r)),
    })),
    micro: report.microBySide?.[side],
  };
}

/**
 * Cumulative bucket counts `{ le: count }` (le in seconds, `+Inf` as Infinity) of one Prometheus
 * histogram in a /metrics text, or undefined when it is absent.
 */
export function histogramBuckets(text, name) {
  const out = new Map();
  const prefix = `${name}_bucket{`;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const m = /le="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
    if (!m) continue;
    out.set(m[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[1]), Number(m[2]));
  }
  return out.size > 0 ? out : undefined;
}

/**
 * What a histogram's bucket counts say about the observations between two scrapes: how many,
 * the share over `overSeconds`, and the bucket bounds `(low, high]` that hold the p-th
 * percentile (buckets only bracket it).
 */
export function histogramSummary(before, after, p = 99, overSeconds = 0.001) {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const count = (le) => (after.get(le) ?? 0) - (before?.get(le) ?? 0);
  const total = count(Number.POSITIVE_INFINITY);
  if (!(total > 0)) return { total: 0 };
  const rank = Math.ceil((p / 100) * total);
  let low = 0;
  let high = Number.POSITIVE_INFINITY;
  for (const le of bounds) {
    if (count(le) >= rank) {
      high = le;
      break;
    }
    low = le;
  }
  const within = bounds.includes(overSeconds) ? count(overSeconds) : Number.NaN;
  return { total, low, high, over: (total - within) / total };
}

const msOf = (s) => (s === Number.POSITIVE_INFINITY ? '∞' : `${+(s * 1000).toFixed(2)}`);

/** One note line: `label: p99 in (2.5, 5] ms, 3.1% over 1 ms (6,400 records)`. */
export function histogramLine(label, s, overSeconds = 0.001) {
  if (!s || !(s.total > 0)) return `${label}: no observations`;
  return `${label}: p99 in (${msOf(s.low)}, ${msOf(s.high)}] ms, ${fmt(s.over * 100, 1)}% over ${msOf(overSeconds)} ms (${s.total} records)`;
}
