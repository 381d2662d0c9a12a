import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { aggregate, alternation, compareMarkdown, fromAutocannon, histogramBuckets, histogramLine, histogramSummary, loadTable, pairedRounds, percentile, splitSide, targets, withRatios } from '../lib/report.mjs';

const run = (ok, seconds, p50 = 1, p99 = 2) => ({ ok, seconds, non2xx: 0, errors: 0, p50, p99 });
const stats = (rps, p99 = 10) => aggregate([run(rps, 1, 5, p99)]);

describe('aggregate', () => {
  it('weights req/s by duration (total responses over total seconds), not a mean of rates', () => {
    const a = aggregate([run(100, 1), run(100, 4)]);
    assert.equal(a.rps, 40);
  });
  it('averages the percentiles of the runs and sums failures', () => {
    const a = aggregate([
      { ...run(10, 1, 2, 10), non2xx: 3 },
      { ...run(10, 1, 4, 30), errors: 2 },
    ]);
    assert.deepEqual([a.p50, a.p99, a.non2xx, a.errors], [3, 20, 3, 2]);
  });
  it('pools the latencies of paced runs and takes the percentiles of the pool (one bad run does not set p99 alone)', () => {
    const calm = (n) => Array.from({ length: n }, (_, i) => 1 + i / n);
    const spiky = [...calm(90), ...Array(10).fill(50)]; // 10% of one run stalled
    const runs = [
      { ...run(100, 1), latencies: calm(100) },
      { ...run(100, 1), latencies: spiky.sort((a, b) => a - b) },
      { ...run(100, 1), latencies: calm(100) },
    ];
    const a = aggregate(runs);
    assert.equal(a.samples, 300);
    // 10 of 300 samples at 50 ms: the pooled p99 (rank 297) is one of them; the mean of the runs' p99s would be ~17.
    assert.equal(a.p99, 50);
    assert.ok(a.p50 < 2);
    const b = aggregate([...runs.slice(0, 1), { ...run(100, 1), latencies: [...calm(98), 50, 50] }, runs[2]]);
    // 2 of 300 at 50 ms: under 1%, so the pooled p99 stays a calm value.
    assert.ok(b.p99 < 2, `p99 ${b.p99}`);
  });
  it('has no result without runs', () => {
    assert.equal(aggregate([]), undefined);
  });
});

describe('fromAutocannon', () => {
  it('counts only 2xx as successes and timeouts as errors', () => {
    const r = fromAutocannon({ '2xx': 90, non2xx: 10, errors: 1, timeouts: 2, duration: 5.01, latency: { p50: 3, p99: 9 } });
    assert.deepEqual(r, { ok: 90, seconds: 5.01, non2xx: 10, errors: 3, p50: 3, p99: 9 });
  });
});

describe('alternation', () => {
  it('runs forwards then backwards so drift does not favour the first scenario', () => {
    assert.deepEqual(alternation(['a', 'b', 'c'], 3), ['a', 'b', 'c', 'c', 'b', 'a', 'a', 'b', 'c']);
  });
  it('gives every scenario the same number of runs', () => {
    const order = alternation(['x', 'y', 'z', 'w'], 4);
    for (const id of ['x', 'y', 'z', 'w']) assert.equal(order.filter((o) => o === id).length, 4);
  });
});

function group(key, gw) {
  return {
    key,
    name: key,
    rows: [
      { label: 'bare', kind: 'bare', stats: stats(1000, 10) },
      { label: 'parse', kind: 'parse', stats: stats(500, 12) },
      ...gw.map(([label, rps, p99]) => ({ label, kind: 'gateway', stats: stats(rps, p99) })),
    ],
  };
}

describe('withRatios', () => {
  it('divides by the bare and parse-only rows of the same group', () => {
    const rows = withRatios(group('read', [['gw', 800, 11.5]]).rows);
    const gw = rows.find((r) => r.label === 'gw');
    assert.equal(gw.vsBare, 0.8);
    assert.equal(gw.vsParse, 1.6);
    assert.equal(gw.p99Added, 1.5);
  });
  it('gives NaN ratios when a baseline failed', () => {
    const rows = withRatios([{ label: 'gw', kind: 'gateway', stats: stats(10) }]);
    assert.ok(Number.isNaN(rows[0].vsBare) && Number.isNaN(rows[0].vsParse));
  });
});

describe('targets', () => {
  const micro = { redaction: { clinician: { filterVsParseStringify: 0.1 }, billing: { filterVsParseStringify: 0.95 }, researcher: { filterVsParseStringify: 0.91 } } };
  it('passes at the thresholds of SPEC 7 and names the worst row', () => {
    const t = targets([group('read', [['a', 760, 11], ['b', 900, 12]]), group('search', [['c', 460, 12]])], micro);
    assert.deepEqual(
      t.map((x) => x.pass),
      [true, true, true, true],
    );
    assert.match(t[0].detail, /worst: a 0\.76x/);
    assert.match(t[2].detail, /worst: read b \+2\.0 ms/);
  });
  it('fails each target just past its threshold and lists the failing rows', () => {
    const badMicro = { redaction: { billing: { filterVsParseStringify: 0.89 } } };
    const t = targets([group('read', [['a', 740, 12.1]]), group('search', [['c', 440, 10]])], badMicro);
    assert.deepEqual(
      t.map((x) => x.pass),
      [false, false, false, false],
    );
    assert.match(t[0].detail, /a 0\.74x/);
    assert.match(t[2].detail, /read a \+2\.1 ms/);
  });
  it('ignores the clinician (no redaction) for the redaction target', () => {
    const t = targets([], micro);
    assert.equal(t[3].pass, true);
  });
  it('fails a target that was not measured rather than passing it', () => {
    const t = targets([group('read', [])], undefined);
    assert.equal(t.length, 3);
    assert.ok(t.every((x) => !x.pass));
    assert.match(t[1].detail, /not measured/);
  });
  it('fails when a gateway row could not be measured even if the others pass', () => {
    const g = group('read', [['a', 900, 10]]);
    g.rows.push({ label: 'broken', kind: 'gateway', stats: undefined, error: 'HTTP 500' });
    const t = targets([g], undefined);
    assert.equal(t[0].pass, false);
    assert.match(t[0].detail, /1 not measured/);
  });
});

describe('loadTable', () => {
  it('shows a failed scenario with its error instead of numbers', () => {
    const g = group('read', []);
    g.rows.push({ label: 'gw', kind: 'gateway', stats: undefined, error: 'HTTP 403 purpose-not-allowed' });
    const md = loadTable([g], 32);
    assert.match(md, /\| read: gw \| FAILED: HTTP 403 purpose-not-allowed \|/);
    assert.match(md, /\| read: bare \| 1000 \|/);
  });
  it("names a row's ratio to another row of its group when it has one, and only when it was measured", () => {
    const g = { key: 'relationship', name: 'rel', rows: [] };
    g.rows.push({ label: 'with', kind: 'gateway', stats: stats(950), vs: { ratio: 0.95, of: 'of the read without it' } });
    g.rows.push({ label: 'rounds', kind: 'gateway', stats: stats(900), vs: { ratio: 0.9, of: 'of y', median: 0.96, rounds: 5 } });
    g.rows.push({ label: 'without', kind: 'gateway', stats: stats(1000) });
    g.rows.push({ label: 'broken', kind: 'gateway', stats: undefined, error: 'HTTP 503', vs: { ratio: Number.NaN, of: 'of x' } });
    const md = loadTable([g], 32);
    assert.match(md, /\| rel: with \(req\/s 0\.950x of the read without it\) \| 950 \|/);
    assert.match(md, /\| rel: without \| 1000 \|/);
    assert.match(md, /\| rel: rounds \(req\/s 0\.900x of y; median of 5 rounds 0\.960x\) \| 900 \|/);
    assert.match(md, /\| rel: broken \| FAILED: HTTP 503 \|/);
  });
});

describe('compareMarkdown', () => {
  it('matches rows by group and label and gives head/base ratios', () => {
    const a = { groups: [group('read', [['gw', 500, 20]])], micro: { results: [{ group: 'redact', name: 'x', nsPerOp: 2000 }] } };
    const b = { groups: [group('read', [['gw', 750, 15]])], micro: { results: [{ group: 'redact', name: 'x', nsPerOp: 1000 }] } };
    const md = compareMarkdown(a, b, 'base', 'head');
    assert.match(md, /\| read: gw \| 500 \| 750 \| 1\.50x \| 20\.0 \| 15\.0 \| -5\.0 \|/);
    assert.match(md, /\| redact: x \| 2\.0 µs \| 1\.0 µs \| 2\.00x \|/);
  });
  it('shows rows present on one side only', () => {
    const a = { groups: [group('read', [])] };
    const b = { groups: [group('read', [['new', 100, 1]])] };
    assert.match(compareMarkdown(a, b, 'a', 'b'), /\| read: new \| n\/a \| 100 \| n\/a \|/);
  });
});

describe('splitSide', () => {
  it('keeps the shared baselines and one side\'s gateway rows, without the suffix', () => {
    const report = {
      groups: [group('read', [['gw billing @base', 500, 20], ['gw billing @head', 700, 15]])],
      microBySide: { base: { results: [] }, head: { results: [{ group: 'g', name: 'n', nsPerOp: 5 }] } },
    };
    const head = splitSide(report, 'head');
    assert.deepEqual(
      head.groups[0].rows.map((r) => r.label),
      ['bare', 'parse', 'gw billing'],
    );
    assert.equal(head.groups[0].rows[2].stats.rps, 700);
    assert.equal(head.micro, report.microBySide.head);
    assert.match(compareMarkdown(splitSide(report, 'base'), head, 'base', 'head'), /\| read: gw billing \| 500 \| 700 \| 1\.40x \|/);
  });
});

describe('targets with two sides', () => {
  it('judges the redaction target on each side and names the failing one', () => {
    const t = targets([], undefined, {
      base: { redaction: { billing: { filterVsParseStringify: 0.5 } } },
      head: { redaction: { billing: { filterVsParseStringify: 1.2 } } },
    });
    assert.equal(t[3].pass, false);
    assert.match(t[3].detail, /^billing @base 0\.50x$/);
  });
});

describe('targets with a fixed-rate latency group', () => {
  it('judges p99 added latency on the fixed-rate rows, not the saturated ones', () => {
    const saturated = group('read', [['gw', 900, 60]]); // +50 ms under saturation
    const fixed = { ...group('latency', [['gw', 400, 11]]), name: 'read at 400 req/s' }; // +1 ms
    const t = targets([saturated, fixed], undefined);
    assert.equal(t[2].pass, true);
    assert.match(t[2].title, /read at 400 req\/s/);
    assert.match(t[2].detail, /gw \+1\.0 ms/);
  });
});

describe('percentile', () => {
  it('is nearest-rank on an ascending list', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.equal(percentile(xs, 50), 50);
    assert.equal(percentile(xs, 99), 99);
    assert.equal(percentile([7], 99), 7);
    assert.ok(Number.isNaN(percentile([], 50)));
  });
});

describe('audit write histogram from /metrics', () => {
  const scrape = (counts) =>
    [
      '# HELP phi_gateway_audit_write_duration_seconds Time until an audit record was durable',
      '# TYPE phi_gateway_audit_write_duration_seconds histogram',
      ...Object.entries(counts).map(([le, n]) => `phi_gateway_audit_write_duration_seconds_bucket{le="${le}"} ${n}`),
      'phi_gateway_audit_write_duration_seconds_sum 1.5',
      'phi_gateway_other_bucket{le="0.001"} 999',
    ].join('\n');
  const name = 'phi_gateway_audit_write_duration_seconds';
  it('reads the cumulative buckets of the named histogram only', () => {
    const b = histogramBuckets(scrape({ 0.0005: 1, 0.001: 2, '+Inf': 3 }), name);
    assert.deepEqual([...b.entries()], [
      [0.0005, 1],
      [0.001, 2],
      [Number.POSITIVE_INFINITY, 3],
    ]);
    assert.equal(histogramBuckets('nothing here', name), undefined);
  });
  it('brackets the p99 of the observations between two scrapes and counts the share over 1 ms', () => {
    const before = histogramBuckets(scrape({ 0.0005: 5000, 0.001: 5000, 0.0025: 5000, 0.005: 5000, '+Inf': 5000 }), name);
    // 1000 new records: 900 under 0.5 ms, 80 in (0.5, 1], 15 in (1, 2.5], 5 in (2.5, 5].
    const after = histogramBuckets(scrape({ 0.0005: 5900, 0.001: 5980, 0.0025: 5995, 0.005: 6000, '+Inf': 6000 }), name);
    const s = histogramSummary(before, after);
    assert.deepEqual([s.total, s.low, s.high], [1000, 0.001, 0.0025]);
    assert.equal(s.over, 0.02);
    assert.equal(histogramLine('file sink', s), 'file sink: p99 in (1, 2.5] ms, 2.0% over 1 ms (1000 records)');
    // Without the earlier scrape the 5000 older, fast records count too and the p99 moves down a bucket.
    assert.deepEqual([histogramSummary(undefined, after).low, histogramSummary(undefined, after).high], [0.0005, 0.001]);
    assert.equal(histogramLine('idle', histogramSummary(after, after)), 'idle: no observations');
  });
});

describe('pairedRounds', () => {
  const r = (ok, cpuSeconds) => ({ ...run(ok, 2), cpuSeconds });
  it('gives req/s ratios round by round, their median, and CPU per request of each side', () => {
    const a = [r(900, 0.9), r(1200, 1.2), r(400, 0.5)];
    const b = [r(1000, 0.8), r(1000, 0.8), r(1000, 1.0)];
    const p = pairedRounds(a, b);
    assert.deepEqual(
      p.rpsRatios.map((x) => x.toFixed(2)),
      ['0.90', '1.20', '0.40'],
    );
    assert.equal(p.medianRpsRatio, 0.9);
    // 2.6 s of CPU for 2,500 responses against 2.6 s for 3,000.
    assert.deepEqual(
      p.usPerRequest.map((x) => x.toFixed(0)),
      ['1040', '867'],
    );
    assert.equal(p.cpuRatio.toFixed(3), '1.200');
    assert.deepEqual(
      p.cpuRatios.map((x) => x.toFixed(3)),
      ['1.250', '1.250', '1.250'],
    );
  });
  it('pairs only the rounds both sides ran, and has no CPU figures without CPU times', () => {
    const p = pairedRounds([run(10, 1), run(20, 1)], [run(10, 1)]);
    assert.deepEqual(p.rpsRatios, [1]);
    assert.ok(Number.isNaN(p.usPerRequest[0]) && Number.isNaN(p.cpuRatio));
  });
});
