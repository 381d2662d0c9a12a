import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../../src/audit/record.js';
import { AuditDigest } from '../../../src/report/digest.js';
import { toCsv, toHtml, toText } from '../../../src/report/render.js';

function rec(over: Partial<AuditRecord> & { sub: string }): AuditRecord {
  const { sub, ...rest } = over;
  return {
    id: Math.random().toString(36),
    time: '2024-06-03T14:10:00.000Z',
    kind: 'fhir',
    actor: { iss: 'https://idp', sub, roles: ['billing'] },
    purpose: 'HPAYMT',
    role: 'billing',
    client: { address: '127.0.0.1' },
    request: { method: 'GET', path: '/Patient/p1', interaction: 'read', resourceType: 'Patient' },
    decision: 'allow',
    rule: 'r',
    disclosed: { resources: ['Patient/p1'], patients: ['p1'], elementsRemoved: 0, resourcesWithheld: 0 },
    status: 200,
    upstreamStatus: 200,
    durations: { totalMs: 1 },
    policyVersion: 'v',
    ...rest,
  };
}

describe('report rendering', () => {
  const hostile = '=HYPERLINK("http://evil")<script>alert(1)</script>';
  const d = new AuditDigest({ from: '2024-06-03T00:00:00Z', to: '2024-06-04T00:00:00Z' });
  d.add(rec({ sub: hostile }));
  d.add(rec({ sub: 'ok', decision: 'deny', time: '2024-06-03T15:00:00.000Z' }));
  d.add(rec({ sub: 'outside', time: '2024-06-04T00:00:00.000Z' }));
  const report = d.report('access', { now: new Date('2024-06-05T00:00:00Z') });

  it('keeps the window [from, to)', () => {
    expect(d.records).toBe(2);
    expect(toText(report)).not.toContain('outside');
  });

  it('CSV: a caller-chosen id cannot become a spreadsheet formula', () => {
    const csv = toCsv(report);
    expect(csv).toContain(`"'=HYPERLINK(""http://evil"")<script>alert(1)</script>"`);
    expect(csv.split('\r\n').some((l) => l.startsWith('=') || l.startsWith('"='))).toBe(false);
  });

  it('HTML: escaped, no script, no remote resource, a CSP that forbids both', () => {
    const html = toHtml(report, new Date('2024-06-05T00:00:00Z'));
    expect(html).not.toContain('<script>');
    expect(html).toContain('&lt;script&gt;');
    expect(html).toContain(`content="default-src 'none'`);
    // 24 hourly bars; the 14:00 bar holds one request, the 15:00 bar one denial.
    const bars = [...html.matchAll(/data-label="([^"]+)" data-value="(\d+)" data-part="(\d+)"/g)].map((m) => [m[1], Number(m[2]), Number(m[3])]);
    expect(bars.filter(([, v]) => (v as number) > 0)).toEqual([
      ['2024-06-03 14', 1, 0],
      ['2024-06-03 15', 1, 1],
    ]);
    expect(bars).toHaveLength(24);
  });
});
