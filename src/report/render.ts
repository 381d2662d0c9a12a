/**
 * Report output: an aligned text table for the terminal, CSV (one block per table, RFC 4180
 * quoting, spreadsheet formula prefixes neutralized), and a self-contained printable HTML page
 * with inline SVG charts (no script, no network, nothing fetched).
 */
import type { GroupedSeries } from './access-requests.js';
import type { Report, Series, Table } from './digest.js';

export type ReportFormat = 'table' | 'csv' | 'html';
export const REPORT_FORMATS: readonly ReportFormat[] = ['table', 'csv', 'html'];

export function render(report: Report, format: ReportFormat, generatedAt: Date): string {
  if (format === 'csv') return toCsv(report);
  if (format === 'html') return toHtml(report, generatedAt);
  return toText(report);
}

/** What the text, CSV and chartless HTML renderings read of a report. */
export type ReportTables = Pick<Report, 'title' | 'from' | 'to' | 'tables'>;

function windowText(r: ReportTables): string {
  return `${r.from ?? 'beginning'} .. ${r.to ?? 'now'}`;
}

export function toText(r: ReportTables): string {
  const out: string[] = [`${r.title}  (${windowText(r)})`, ''];
  for (const t of r.tables) {
    out.push(t.title, '-'.repeat(t.title.length));
    if (t.rows.length === 0) {
      out.push('(none)', '');
      continue;
    }
    const cells = [t.columns.map(String), ...t.rows.map((row) => row.map(String))];
    const widths = t.columns.map((_, i) => Math.min(60, Math.max(...cells.map((c) => (c[i] ?? '').length))));
    for (const [n, c] of cells.entries()) {
      out.push(
        c
          .map((v, i) => {
            const s = v.length > widths[i] ? `${v.slice(0, widths[i] - 1)}…` : v;
            return typeof t.rows[0]?.[i] === 'number' && n > 0 ? s.padStart(widths[i]) : s.padEnd(widths[i]);
          })
          .join('  ')
          .trimEnd(),
      );
      if (n === 0) out.push(widths.map((w) => '-'.repeat(w)).join('  '));
    }
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

export function csvCell(v: string | number): string {
  let s = String(v);
  // A cell starting with = + - @ would run as a formula in a spreadsheet (actor ids are caller-chosen).
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(r: ReportTables): string {
  const blocks = r.tables.map((t) => [`# ${t.title}`, t.columns.map(csvCell).join(','), ...t.rows.map((row) => row.map(csvCell).join(','))].join('\r\n'));
  return `${blocks.join('\r\n\r\n')}\r\n`;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const W = 720;

/** Vertical bars (stacked `part` in a second colour), labels under every nth bar. */
function barChart(id: string, title: string, series: readonly Series[], o: { partLabel: string; restLabel: string; unit: string }): string {
  const H = 220;
  const top = 20;
  const bottom = 50;
  const left = 44;
  const plotH = H - top - bottom;
  const max = Math.max(1, ...series.map((s) => s.value));
  const bw = series.length ? (W - left - 10) / series.length : 0;
  const every = Math.max(1, Math.ceil(series.length / 12));
  const parts: string[] = [];
  for (let g = 0; g <= 4; g++) {
    const v = (max * g) / 4;
    const y = top + plotH - (plotH * g) / 4;
    parts.push(`<line x1="${left}" x2="${W - 10}" y1="${y}" y2="${y}" class="grid"/><text x="${left - 6}" y="${y + 4}" class="axis" text-anchor="end">${round1(v)}</text>`);
  }
  series.forEach((s, i) => {
    const x = left + i * bw + bw * 0.1;
    const w = Math.max(1, bw * 0.8);
    const h = (plotH * s.value) / max;
    const ph = (plotH * (s.part ?? 0)) / max;
    const label = escapeHtml(s.label);
    parts.push(
      `<g class="bar" data-label="${label}" data-value="${s.value}" data-part="${s.part ?? 0}"><title>${label}: ${s.value} ${o.unit}${s.part ? ` (${s.part} ${o.partLabel})` : ''}</title>` +
        `<rect class="total" x="${x.toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}"/>` +
        (ph > 0 ? `<rect class="part" x="${x.toFixed(1)}" y="${(top + plotH - ph).toFixed(1)}" width="${w.toFixed(1)}" height="${ph.toFixed(1)}"/>` : '') +
        '</g>',
    );
    if (i % every === 0) parts.push(`<text x="${(x + w / 2).toFixed(1)}" y="${H - bottom + 14}" class="axis" text-anchor="end" transform="rotate(-35 ${(x + w / 2).toFixed(1)} ${H - bottom + 14})">${label}</text>`);
  });
  const legend = `<span class="key total"></span>${escapeHtml(o.restLabel)} <span class="key part"></span>${escapeHtml(o.partLabel)}`;
  const body = series.length === 0 ? `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="axis">no data in this window</text>` : parts.join('');
  return `<figure><figcaption>${escapeHtml(title)} <small>${legend}</small></figcaption><svg id="${id}" data-chart="${id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(title)}">${body}</svg></figure>`;
}

/** Horizontal bars, one per label. */
function hbarChart(id: string, title: string, series: readonly Series[], unit: string): string {
  const row = 22;
  const left = 160;
  const H = Math.max(60, series.length * row + 20);
  const max = Math.max(1, ...series.map((s) => s.value));
  const body =
    series.length === 0
      ? `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="axis">no data in this window</text>`
      : series
          .map((s, i) => {
            const w = ((W - left - 60) * s.value) / max;
            const y = 10 + i * row;
            const label = escapeHtml(s.label);
            return `<g class="bar" data-label="${label}" data-value="${s.value}"><title>${label}: ${s.value} ${unit}</title><text x="${left - 8}" y="${y + 14}" class="axis" text-anchor="end">${label}</text><rect class="total" x="${left}" y="${y}" width="${w.toFixed(1)}" height="${row - 6}"/><text x="${(left + w + 6).toFixed(1)}" y="${y + 14}" class="axis">${s.value}</text></g>`;
          })
          .join('');
  return `<figure><figcaption>${escapeHtml(title)}</figcaption><svg id="${id}" data-chart="${id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(title)}">${body}</svg></figure>`;
}

/** Bars side by side per label, one colour per key (at most three keys: k0, k1, k2). */
function groupedBarChart(id: string, title: string, groups: readonly GroupedSeries[], keys: readonly string[], unit: string): string {
  const H = 220;
  const top = 20;
  const bottom = 50;
  const left = 44;
  const plotH = H - top - bottom;
  const max = Math.max(1, ...groups.flatMap((g) => g.values));
  const gw = groups.length ? (W - left - 10) / groups.length : 0;
  const bw = (gw * 0.8) / Math.max(1, keys.length);
  const parts: string[] = [];
  for (let g = 0; g <= 4; g++) {
    const v = (max * g) / 4;
    const y = top + plotH - (plotH * g) / 4;
    parts.push(`<line x1="${left}" x2="${W - 10}" y1="${y}" y2="${y}" class="grid"/><text x="${left - 6}" y="${y + 4}" class="axis" text-anchor="end">${round1(v)}</text>`);
  }
  groups.forEach((g, i) => {
    const x0 = left + i * gw + gw * 0.1;
    const label = escapeHtml(g.label);
    keys.forEach((k, j) => {
      const value = g.values[j] ?? 0;
      const h = (plotH * value) / max;
      const x = x0 + j * bw;
      const key = escapeHtml(k);
      parts.push(
        `<g class="bar" data-label="${label}" data-series="${key}" data-value="${value}"><title>${label}, ${key}: ${value} ${unit}</title>` +
          `<rect class="k${j}" x="${x.toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${h.toFixed(1)}"/></g>`,
      );
    });
    // Upright, centred under the group, cut to the group's width (the bars' titles hold it whole).
    const fit = Math.max(3, Math.floor(gw / 6));
    const shown = g.label.length > fit ? `${g.label.slice(0, fit - 1)}…` : g.label;
    parts.push(`<text x="${(x0 + (gw * 0.8) / 2).toFixed(1)}" y="${H - bottom + 16}" class="axis" text-anchor="middle">${escapeHtml(shown)}</text>`);
  });
  const legend = keys.map((k, j) => `<span class="key k${j}"></span>${escapeHtml(k)}`).join(' ');
  const body = groups.length === 0 ? `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="axis">no data in this window</text>` : parts.join('');
  return `<figure><figcaption>${escapeHtml(title)} <small>${legend}</small></figcaption><svg id="${id}" data-chart="${id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(title)}">${body}</svg></figure>`;
}

function round1(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

function tableHtml(t: Table): string {
  const head = t.columns.map((c) => `<th>${escapeHtml(c)}</th>`).join('');
  const rows = t.rows.length
    ? t.rows.map((r) => `<tr>${r.map((v) => `<td${typeof v === 'number' ? ' class="n"' : ''}>${escapeHtml(String(v))}</td>`).join('')}</tr>`).join('\n')
    : `<tr><td colspan="${t.columns.length}" class="none">none</td></tr>`;
  return `<section><h2>${escapeHtml(t.title)}</h2>${t.note ? `<p class="note">${escapeHtml(t.note)}</p>` : ''}<table><thead><tr>${head}</tr></thead><tbody>\n${rows}\n</tbody></table></section>`;
}

const CSS = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:24px auto;max-width:1000px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 6px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin:0 0 16px}.note{color:#57606a;margin:0 0 6px;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12px}th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}td.none{color:#57606a;font-style:italic}
figure{margin:12px 0;break-inside:avoid}figcaption{font-weight:600;margin-bottom:4px}figcaption small{font-weight:400;color:#57606a;margin-left:8px}
svg{max-width:100%;height:auto}.grid{stroke:#eaeef2}.axis{font-size:10px;fill:#57606a}
rect.total,.key.total{fill:#4c78a8;background:#4c78a8}rect.part,.key.part{fill:#e45756;background:#e45756}
rect.k0,.key.k0{fill:#4c78a8;background:#4c78a8}rect.k1,.key.k1{fill:#54a24b;background:#54a24b}rect.k2,.key.k2{fill:#e45756;background:#e45756}
.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 8px;vertical-align:-1px}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}tr{break-inside:avoid}}
`;

export function toHtml(r: Report, generatedAt: Date): string {
  const c = r.charts;
  const charts = [
    barChart('access-over-time', 'Access over time (requests per period)', c.accessOverTime, { partLabel: 'denied', restLabel: 'requests', unit: 'requests' }),
    hbarChart('denials-by-role', 'Denials by role', c.denialsByRole, 'denials'),
    barChart('review-ages', 'Break-glass review ages (hours from session start to first review; red: not yet reviewed)', c.reviewAges, {
      partLabel: 'awaiting review',
      restLabel: 'hours',
      unit: 'hours',
    }).replace(/data-part="1"><title>([^<]*)<\/title><rect class="total"/g, 'data-part="1"><title>$1</title><rect class="total unreviewed" style="fill:#e45756"'),
  ];
  const ar = c.accessRequests;
  if (ar) {
    charts.push(
      groupedBarChart('access-requests-by-data-set', 'Access requests per data set (requests, approvals, denials)', ar.byDataSet, ar.keys, 'requests'),
      barChart('access-decision-times', 'Time to decide an access request (decisions per interval; red: denials)', ar.decisionTimes, {
        partLabel: 'denied',
        restLabel: 'decisions',
        unit: 'decisions',
      }),
    );
  }
  return htmlPage(r, generatedAt, charts.join('\n'));
}

/** The self-contained printable page: title, meta line, the given figures, then every table. */
export function htmlPage(r: ReportTables, generatedAt: Date, figures = ''): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(r.title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(r.title)}</h1>
<p class="meta">phi-gateway compliance report · window ${escapeHtml(windowText(r))} · generated ${escapeHtml(generatedAt.toISOString())} · contains identifiers of staff and patients: handle as PHI</p>
${figures}
${r.tables.map(tableHtml).join('\n')}
</body></html>
`;
}
