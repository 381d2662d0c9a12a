// The access report's "Access without relationship" section: per actor, requests refused for lack of
// a care relationship, break-glass sessions opened for lack of one, requests a `required: false`
// requirement only recorded, and distinct patients, counted exactly from the records' evidence.
import { describe, expect, it } from 'vitest';
import { AuditDigest, type Table } from '../../../src/report/digest.js';
import { toCsv, toHtml, toText } from '../../../src/report/render.js';
import { evidence, fhirRecord } from '../monitor/relationship-fixtures.js';

const NOW = new Date('2024-06-05T00:00:00Z');
const ct = (patient: string) => ({ patient, resource: `CareTeam/ct-${patient}`, source: 'care-team' });

function section(d: AuditDigest): Table {
  const t = d.report('access', { now: NOW }).tables.find((x) => x.title === 'Access without relationship');
  expect(t).toBeDefined();
  return t!;
}

describe('access report: access without relationship', () => {
  const d = new AuditDigest({ from: '2024-06-03T00:00:00Z', to: '2024-06-04T00:00:00Z' });
  // dr-a: two refusals (pat-9 twice), one recorded-only search reaching pat-7 and pat-8.
  d.add(fhirRecord('/Patient/pat-9', { sub: 'dr-a', decision: 'deny', status: 403, relationship: evidence({ required: true, unrelated: ['pat-9'] }) }));
  d.add(fhirRecord('/Patient/pat-9', { sub: 'dr-a', decision: 'deny', status: 403, relationship: evidence({ required: true, unrelated: ['pat-9'] }) }));
  d.add(fhirRecord('/Observation?code=1', { sub: 'dr-a', released: ['pat-1', 'pat-7', 'pat-8'], relationship: evidence({ related: [ct('pat-1')], unrelated: ['pat-7', 'pat-8'] }) }));
  // dr-er: one break-glass session of three requests about an unrelated patient, one about a related one.
  const s1 = { session: 'bg-1', reason: 'ED' };
  for (let i = 0; i < 3; i++) d.add(fhirRecord('/Patient/pat-5', { sub: 'dr-er', purpose: 'BTG', breakGlass: s1, released: ['pat-5'], relationship: evidence({ unrelated: ['pat-5'] }) }));
  d.add(fhirRecord('/Patient/pat-1', { sub: 'dr-er', purpose: 'BTG', breakGlass: { session: 'bg-2', reason: 'ED' }, released: ['pat-1'], relationship: evidence({ related: [ct('pat-1')] }) }));
  // Related, no evidence, outside the window: not counted.
  d.add(fhirRecord('/Patient/pat-1', { sub: 'dr-b', released: ['pat-1'], relationship: evidence({ required: true, related: [ct('pat-1')] }) }));
  d.add(fhirRecord('/Patient/pat-1', { sub: 'dr-c', released: ['pat-1'] }));
  d.add(fhirRecord('/Patient/pat-9', { sub: 'dr-z', time: '2024-06-04T00:00:00.000Z', relationship: evidence({ required: true, unrelated: ['pat-9'] }) }));

  it('counts per actor: refused, break-glass sessions, recorded only, distinct patients', () => {
    const t = section(d);
    expect(t.columns).toEqual(['actor', 'refused: no relationship', 'break-glass sessions opened without one', 'recorded only (required: false)', 'patients without relationship']);
    expect(t.rows).toEqual([
      ['dr-a', 2, 0, 1, 3],
      ['dr-er', 0, 1, 0, 1],
    ]);
  });

  it('renders in the table, CSV and HTML formats like the other sections', () => {
    const report = d.report('access', { now: NOW });
    expect(toText(report)).toMatch(/Access without relationship\n-+\nactor +refused: no relationship .*\n[- ]+\ndr-a +2 +0 +1 +3\n/);
    expect(toCsv(report)).toContain(
      '# Access without relationship\r\nactor,refused: no relationship,break-glass sessions opened without one,recorded only (required: false),patients without relationship\r\ndr-a,2,0,1,3\r\ndr-er,0,1,0,1',
    );
    const html = toHtml(report, NOW);
    expect(html).toContain('<h2>Access without relationship</h2>');
    expect(html).toContain('<tr><td>dr-a</td><td class="n">2</td><td class="n">0</td><td class="n">1</td><td class="n">3</td></tr>');
  });

  it('exact over a long trail, in one pass: memory follows actors and patients, not records', () => {
    const big = new AuditDigest();
    const n = 60_000;
    for (let i = 0; i < n; i++) {
      const sub = `dr-${i % 3}`;
      const patient = `pat-${i % 40}`;
      if (i % 2 === 0) big.add(fhirRecord(`/Patient/${patient}`, { sub, decision: 'deny', relationship: evidence({ required: true, unrelated: [patient] }) }));
      else big.add(fhirRecord(`/Patient/${patient}`, { sub, released: [patient], relationship: evidence({ unrelated: [patient] }) }));
    }
    // Each actor sees every third record: 20,000, half refused, half recorded; i % 3 and i % 40 give 40 patients each.
    expect(section(big).rows).toEqual([
      ['dr-0', 10_000, 0, 10_000, 40],
      ['dr-1', 10_000, 0, 10_000, 40],
      ['dr-2', 10_000, 0, 10_000, 40],
    ]);
    expect(big.records).toBe(n);
  });

  it('a refusal the rule tells of counts as refused, naming no patient; a search too broad does not count', () => {
    const x = new AuditDigest();
    const withheld = fhirRecord('/Observation/o-1', { sub: 'fd-1', role: 'front-desk', decision: 'deny', status: 404, relationship: evidence({ required: true }) });
    x.add({ ...withheld, rule: 'roles.front-desk.purposes.TREAT -> dataSets.clinical.rules[0]: withheld (relationship)' });
    const broad = fhirRecord('/Observation?code=1', { sub: 'fd-1', decision: 'deny', status: 400, relationship: evidence({ required: true }) });
    x.add({ ...broad, rule: 'g -> dataSets.clinical.relationship: search too broad' });
    expect(section(x).rows).toEqual([['fd-1', 1, 0, 0, 0]]);
  });

  it('evidence not shaped as written is ignored', () => {
    const x = new AuditDigest();
    x.add(fhirRecord('/Patient/p', { relationship: { required: true, rule: 'r', related: [], unrelated: 'pat-9' } as never }));
    expect(section(x).rows).toEqual([]);
  });
});
