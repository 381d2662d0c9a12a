// The compliance reports on consent evidence: the access report's "restricted by consent" column
// (per actor) and "Restricted by consent" section (per consent: requests restricted, requests where
// break-glass overrode it), and the break-glass report naming the consents each session overrode,
// counted exactly from the records' `consent` member, in every output format.
import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../../src/audit/record.js';
import { AuditDigest, type Table } from '../../../src/report/digest.js';
import { toCsv, toHtml, toText } from '../../../src/report/render.js';
import { btgRecord, consentRecord } from './evidence-fixtures.js';

const NOW = new Date('2024-06-05T00:00:00Z');

function table(d: AuditDigest, kind: 'access' | 'break-glass', title: string): Table {
  const t = d.report(kind, { now: NOW }).tables.find((x) => x.title === title);
  expect(t, title).toBeDefined();
  return t!;
}

function startRecord(session: string, patient: string): AuditRecord {
  const r = consentRecord(`/Patient/${patient}`, undefined, { sub: 'dr-er', purpose: 'BTG', released: [patient], breakGlass: { session, reason: 'ED: unconscious' } });
  return { ...r, kind: 'break-glass-start', time: '2024-06-03T13:59:00.000Z' };
}

describe('reports: consent evidence', () => {
  const d = new AuditDigest({ from: '2024-06-03T00:00:00Z', to: '2024-06-04T00:00:00Z' });
  // dr-a: a read a consent withheld, a search two consents trimmed, a read of a patient whose consents are unevaluable.
  d.add(consentRecord('/Observation/o-1', { restricted: ['Consent/c-deny'], withheld: 1 }, { sub: 'dr-a', decision: 'deny', status: 404 }));
  d.add(consentRecord('/Observation?patient=pat-1', { restricted: ['Consent/c-deny', 'Consent/c-research'], withheld: 3 }, { sub: 'dr-a', released: ['pat-1'] }));
  d.add(consentRecord('/Patient/pat-4', { unevaluable: ['pat-4'], withheld: 1 }, { sub: 'dr-a', decision: 'deny', status: 404 }));
  // dr-b: a Part 2 release under a permit (not a restriction), and a plain read.
  d.add(consentRecord('/Observation/o-9', { part2: 1, permitted: ['Consent/c-part2'], withheld: 0 }, { sub: 'dr-b', released: ['pat-2'] }));
  d.add(consentRecord('/Patient/pat-2', undefined, { sub: 'dr-b', released: ['pat-2'] }));
  // dr-er: session bg-1 overrode c-deny twice; session bg-2 overrode nothing.
  d.add(startRecord('bg-1', 'pat-1'));
  d.add(btgRecord('/Observation?patient=pat-1', 'bg-1', { overridden: ['Consent/c-deny'], withheld: 0 }, ['pat-1']));
  d.add(btgRecord('/Observation/o-1', 'bg-1', { overridden: ['Consent/c-deny', 'Consent/c-part2'], part2: 1, withheld: 0 }, ['pat-1']));
  d.add(startRecord('bg-2', 'pat-2'));
  d.add(btgRecord('/Patient/pat-2', 'bg-2', undefined, ['pat-2']));
  // Outside the window: not counted.
  d.add(consentRecord('/Observation/o-1', { restricted: ['Consent/c-deny'], withheld: 1 }, { sub: 'dr-a', time: '2024-06-04T00:00:00.000Z' }));

  it('per actor: requests restricted by consent (withheld by a consent, or unevaluable)', () => {
    const t = table(d, 'access', 'Per actor');
    expect(t.columns.at(-1)).toBe('restricted by consent');
    const by = new Map(t.rows.map((r) => [r[0], r]));
    expect(by.get('dr-a')).toEqual(['dr-a', 3, 1, 2, 0, 1, 0, 0, 3]);
    expect(by.get('dr-b')?.at(-1)).toBe(0);
    expect(by.get('dr-er')?.at(-1)).toBe(0);
  });

  it('per consent: requests it restricted and requests where break-glass overrode it', () => {
    const t = table(d, 'access', 'Restricted by consent');
    expect(t.columns).toEqual(['consent', 'requests restricted', 'requests where break-glass overrode it']);
    expect(t.rows).toEqual([
      ['Consent/c-deny', 2, 2],
      ['Consent/c-part2', 0, 1],
      ['Consent/c-research', 1, 0],
    ]);
  });

  it('the break-glass report names the consents each session overrode', () => {
    const t = table(d, 'break-glass', 'Sessions');
    expect(t.columns.at(-1)).toBe('consents overridden');
    expect(t.rows.map((r) => [r[0], r.at(-1)])).toEqual([
      ['bg-1', 'Consent/c-deny Consent/c-part2'],
      ['bg-2', '-'],
    ]);
    expect(table(d, 'break-glass', 'Summary').rows).toContainEqual(['overrode a patient consent', 1]);
  });

  it('renders in the table, CSV and HTML formats like the other sections', () => {
    const access = d.report('access', { now: NOW });
    expect(toText(access)).toMatch(/Restricted by consent\n-+\nconsent +requests restricted +requests where break-glass overrode it\n[- ]+\nConsent\/c-deny +2 +2\n/);
    expect(toCsv(access)).toContain(
      '# Restricted by consent\r\nconsent,requests restricted,requests where break-glass overrode it\r\nConsent/c-deny,2,2\r\nConsent/c-part2,0,1\r\nConsent/c-research,1,0',
    );
    expect(toCsv(access)).toContain('\r\ndr-a,3,1,2,0,1,0,0,3\r\n');
    const html = toHtml(access, NOW);
    expect(html).toContain('<h2>Restricted by consent</h2>');
    expect(html).toContain('<tr><td>Consent/c-deny</td><td class="n">2</td><td class="n">2</td></tr>');
    expect(html).toContain('<th>restricted by consent</th>');
    const bg = d.report('break-glass', { now: NOW });
    expect(toCsv(bg)).toMatch(/\r\nbg-1,dr-er,pat-1,[^\r]*,Consent\/c-deny Consent\/c-part2\r\n/);
    expect(toHtml(bg, NOW)).toContain('<td>Consent/c-deny Consent/c-part2</td></tr>');
  });

  it('evidence read back malformed is ignored, not counted or thrown on', () => {
    const odd = new AuditDigest();
    odd.add({ ...consentRecord('/Patient/pat-1', undefined, { sub: 'dr-x' }), consent: { restricted: 'Consent/c-1', overridden: [1, null], withheld: 1 } as never });
    expect(table(odd, 'access', 'Restricted by consent').rows).toEqual([]);
    expect(table(odd, 'access', 'Per actor').rows[0]?.at(-1)).toBe(0);
  });
});
