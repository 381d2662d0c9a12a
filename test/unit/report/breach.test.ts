// The breach report (src/report/breach.ts): which records are the named actors' (sub, client id,
// address in an IPv4/IPv6 CIDR range, IPv4-mapped IPv6 either way), the window's edges, the state
// of residence per patient, the notification thresholds and deadlines as 45 CFR 164.404-408 word
// them, the break-glass, grant and anomaly context, and output a spreadsheet or browser cannot run.
import type { Patient } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../../src/audit/record.js';
import { BreachDigest, breachCsv, inRange, parseAddress, parseCidr } from '../../../src/report/breach.js';
import type { Table } from '../../../src/report/digest.js';
import { htmlPage, toText } from '../../../src/report/render.js';
import { filterResponse, residenceState } from '../../../src/redact/response.js';
import { deepFreeze, resourcePlan, responseCtx } from '../redact/helpers.js';

const FROM = '2025-03-01T00:00:00.000Z';
const TO = '2025-03-08T00:00:00.000Z';
const DISCOVERED = new Date('2025-03-10T09:00:00.000Z');

let n = 0;
function rec(over: Partial<AuditRecord> & { sub?: string; patients?: string[]; address?: string; states?: Record<string, string>; elements?: Record<string, string[]> } = {}): AuditRecord {
  const { sub = 'mallory', patients = ['p1'], address = '10.0.0.5', states, elements, ...rest } = over;
  return {
    id: `r${n++}`,
    time: '2025-03-02T10:00:00.000Z',
    kind: 'fhir',
    actor: { iss: 'https://idp', sub, clientId: 'portal', roles: ['clinician'] },
    purpose: 'TREAT',
    role: 'clinician',
    client: { address },
    request: { method: 'GET', path: '/Patient/p1', interaction: 'read', resourceType: 'Patient' },
    decision: 'allow',
    rule: 'r',
    disclosed: {
      resources: patients.map((p) => `Patient/${p}`),
      patients,
      elementsRemoved: 0,
      resourcesWithheld: 0,
      elements: elements ?? { Patient: ['birthDate', 'id', 'name'] },
      states,
    },
    status: 200,
    upstreamStatus: 200,
    durations: { totalMs: 1 },
    policyVersion: 'v',
    ...rest,
  };
}

function digest(sel: { actors?: string[]; clients?: string[]; addresses?: string[] } = { actors: ['mallory'] }, records: AuditRecord[] = []): BreachDigest {
  const d = new BreachDigest({ ...sel, from: FROM, to: TO, discovered: DISCOVERED });
  for (const r of records) d.add(r);
  return d;
}

/** The patients table as objects keyed by column. */
function rows(d: BreachDigest): Record<string, Record<string, string | number>> {
  const t = d.report().patients;
  return Object.fromEntries(t.rows.map((r) => [r[0] as string, Object.fromEntries(t.columns.map((c, i) => [c, r[i] as string | number]))]));
}

function table(d: BreachDigest, title: string): Table {
  const t = d.report().tables.find((x) => x.title.startsWith(title));
  if (!t) throw new Error(`no table ${title}`);
  return t;
}

describe('addresses and CIDR ranges', () => {
  const match = (cidr: string, addr: string) => {
    const a = parseAddress(addr);
    return a !== undefined && inRange(a, parseCidr(cidr));
  };

  it('IPv4', () => {
    expect(match('10.0.0.0/8', '10.200.3.4')).toBe(true);
    expect(match('10.0.0.0/8', '11.0.0.1')).toBe(false);
    expect(match('192.168.1.0/24', '192.168.1.255')).toBe(true);
    expect(match('192.168.1.0/24', '192.168.2.0')).toBe(false);
    expect(match('192.168.1.7', '192.168.1.7')).toBe(true);
    expect(match('192.168.1.7/32', '192.168.1.8')).toBe(false);
    // Host bits in the range are ignored, as routers do.
    expect(match('10.1.2.3/16', '10.1.200.1')).toBe(true);
    expect(match('0.0.0.0/0', '203.0.113.9')).toBe(true);
    // An IPv4 /0 is every IPv4 address, not every address.
    expect(match('0.0.0.0/0', '2001:db8::1')).toBe(false);
  });

  it('IPv6, compressed or not, with a zone or brackets', () => {
    expect(match('2001:db8::/32', '2001:db8:ffff:1::9')).toBe(true);
    expect(match('2001:db8::/32', '2001:db9::1')).toBe(false);
    expect(match('2001:db8::1/128', '2001:0db8:0000:0000:0000:0000:0000:0001')).toBe(true);
    expect(match('fe80::/10', 'fe80::1%eth0')).toBe(true);
    expect(match('::1/128', '[::1]')).toBe(true);
    expect(match('2001:db8:1::/48', '2001:db8:1:0:0:0:0:0')).toBe(true);
    expect(match('2001:db8:1::/48', '2001:db8:2::')).toBe(false);
    expect(parseAddress('1::')).toBe(1n << 112n);
    expect(parseAddress('::')).toBe(0n);
  });

  it('IPv4-mapped IPv6 matches IPv4 ranges, and IPv4 addresses match mapped ranges', () => {
    expect(match('10.0.0.0/8', '::ffff:10.9.8.7')).toBe(true);
    expect(match('10.0.0.0/8', '::ffff:a09:807')).toBe(true);
    expect(match('10.0.0.0/8', '::ffff:11.0.0.1')).toBe(false);
    expect(match('::ffff:10.0.0.0/104', '10.1.2.3')).toBe(true);
    expect(match('::ffff:10.0.0.0/104', '11.1.2.3')).toBe(false);
    // Not mapped: ::10.9.8.7 (IPv4-compatible, deprecated) is a different address.
    expect(match('10.0.0.0/8', '::10.9.8.7')).toBe(false);
  });

  it('refuses what is not a range, and reads no garbage as an address', () => {
    for (const bad of ['10.0.0.0/33', '2001:db8::/129', '10.0.0/8', 'example.org', '10.0.0.0/-1', '10.0.0.0/', '1:2:3:4:5:6:7:8:9', '']) {
      expect(() => parseCidr(bad), bad).toThrow();
    }
    for (const bad of ['', 'unknown', '10.0.0.256', '1::2::3', '::ffff:10.0.0']) expect(parseAddress(bad), bad).toBeUndefined();
  });

  it('selects records by address, sub or client id, any one matching', () => {
    const d = digest({ addresses: ['10.0.0.0/8', '2001:db8::/32'] });
    expect(d.selects(rec({ sub: 'x', address: '10.1.1.1' }))).toBe(true);
    expect(d.selects(rec({ sub: 'x', address: '::ffff:10.1.1.1' }))).toBe(true);
    expect(d.selects(rec({ sub: 'x', address: '2001:db8::5' }))).toBe(true);
    expect(d.selects(rec({ sub: 'x', address: '172.16.0.1' }))).toBe(false);
    expect(d.selects(rec({ sub: 'x', address: '' }))).toBe(false);
    const byClient = digest({ clients: ['portal'] });
    expect(byClient.selects(rec({ sub: 'anyone', address: '172.16.0.1' }))).toBe(true);
    expect(byClient.selects({ ...rec(), actor: { sub: 'x', clientId: 'other', roles: [] } })).toBe(false);
    const both = digest({ actors: ['mallory'], addresses: ['192.0.2.0/24'] });
    expect(both.selects(rec({ sub: 'mallory', address: '172.16.0.1' }))).toBe(true);
    expect(both.selects(rec({ sub: 'bob', address: '192.0.2.9' }))).toBe(true);
    expect(both.selects(rec({ sub: 'bob', address: '172.16.0.1' }))).toBe(false);
  });

  it('needs a selection and a window', () => {
    expect(() => digest({})).toThrow(/name the actors/);
    expect(() => new BreachDigest({ actors: ['a'], from: TO, to: FROM, discovered: DISCOVERED })).toThrow(/empty/);
    expect(() => new BreachDigest({ actors: ['a'], from: 'soon', to: TO, discovered: DISCOVERED })).toThrow();
  });
});

describe('what counts as released to the actors', () => {
  it('the window is [from, to): a record at from counts, one at to does not', () => {
    const d = digest(undefined, [
      rec({ patients: ['at-from'], time: FROM }),
      rec({ patients: ['before'], time: '2025-02-28T23:59:59.999Z' }),
      rec({ patients: ['last-ms'], time: '2025-03-07T23:59:59.999Z' }),
      rec({ patients: ['at-to'], time: TO }),
      rec({ patients: ['bad-time'], time: 'yesterday' }),
    ]);
    expect(Object.keys(rows(d)).sort()).toEqual(['at-from', 'last-ms']);
    expect(d.records).toBe(5);
    expect(d.inWindow).toBe(2);
  });

  it('only allowed FHIR answers naming patients, of the named actors', () => {
    const d = digest(undefined, [
      rec({ patients: ['p1'] }),
      rec({ patients: ['denied'], decision: 'deny', status: 403 }),
      rec({ patients: ['failed'], decision: 'error', status: 502 }),
      rec({ patients: ['other-actor'], sub: 'alice' }),
      rec({ patients: [] }),
      rec({ patients: ['cli'], kind: 'audit-export' }),
      rec({ patients: [], kind: 'export' }),
    ]);
    expect(Object.keys(rows(d))).toEqual(['p1']);
    expect(d.denied).toBe(1);
    expect(d.errors).toBe(1);
    expect(d.auditExports).toBe(1);
    const summary = Object.fromEntries(table(d, 'Summary').rows.map(([k, v]) => [k, v]));
    expect(summary['audit trail exports by these actors (GET /audit/export)']).toBe(1);
    expect(summary['patients affected']).toBe(1);
  });

  it('per patient: requests, resources, types and elements unioned, first and last access, actors', () => {
    const d = digest({ actors: ['mallory', 'eve'] }, [
      rec({ patients: ['p1'], time: '2025-03-03T00:00:00.000Z' }),
      rec({
        sub: 'eve',
        patients: ['p1', 'p2'],
        time: '2025-03-02T00:00:00.000Z',
        disclosed: {
          resources: ['Observation/o1', 'Observation/o2', 'Condition/c1'],
          patients: ['p1', 'p2'],
          elementsRemoved: 1,
          resourcesWithheld: 0,
          elements: { Condition: ['code', 'id'], Observation: ['code', 'id', 'valueQuantity'] },
        },
      }),
      // Older records carry no element names.
      rec({ patients: ['p2'], time: '2025-03-05T00:00:00.000Z', disclosed: { resources: ['Patient/p2'], patients: ['p2'], elementsRemoved: 0, resourcesWithheld: 0 } }),
    ]);
    const r = rows(d);
    expect(r.p1).toMatchObject({
      requests: 2,
      resources: 4,
      'first access': '2025-03-02T00:00:00.000Z',
      'last access': '2025-03-03T00:00:00.000Z',
      'resource types': 'Condition Observation Patient',
      elements: 'Condition.code Condition.id Observation.code Observation.id Observation.valueQuantity Patient.birthDate Patient.id Patient.name',
      actors: 'eve mallory',
    });
    expect(r.p2).toMatchObject({ requests: 2, resources: 4, 'resource types': 'Condition Observation Patient', actors: 'eve mallory' });
    expect(r.p2?.elements).toContain('(elements not recorded in 1 answers)');
  });
});

describe('state of residence', () => {
  it("only what these actors' records showed; the latest wins; unknown otherwise", () => {
    const d = digest(undefined, [
      rec({ patients: ['p1'], states: { p1: 'NY' }, time: '2025-03-05T00:00:00.000Z' }),
      rec({ patients: ['p1'], states: { p1: 'CA' }, time: '2025-03-02T00:00:00.000Z' }),
      rec({ patients: ['p1'], time: '2025-03-06T00:00:00.000Z' }),
      // Another actor saw p2's state: not what these actors received.
      rec({ patients: ['p2'] }),
      rec({ sub: 'alice', patients: ['p2'], states: { p2: 'TX' } }),
      // A state for a patient the record did not release is ignored.
      rec({ patients: ['p3'], states: { p3: 'MA', p9: 'WA' } }),
    ]);
    const r = rows(d);
    expect(r.p1).toMatchObject({ state: 'NY', 'other states shown': 'CA' });
    expect(r.p2).toMatchObject({ state: 'unknown', 'other states shown': '' });
    expect(r.p3?.state).toBe('MA');
    expect(r.p9).toBeUndefined();
    expect(Object.fromEntries(d.perState())).toEqual({ NY: 1, MA: 1, unknown: 1 });
  });

  it('the Filter notes what the released Patient showed, home address first, under the real id', () => {
    expect(residenceState({ address: [{ use: 'work', state: 'ny' }, { use: 'home', state: ' ma ' }] })).toBe('MA');
    expect(residenceState({ address: [{ use: 'old', line: ['1 Main St'] }, { state: 'ri' }, { state: 'ct' }] })).toBe('RI');
    expect(residenceState({ address: [{ use: 'home', state: '   ' }, { state: 'vt' }] })).toBe('VT');
    expect(residenceState({ address: [{ state: 'x'.repeat(100) }] })).toHaveLength(40);
    expect(residenceState({ address: [{ city: 'Boston' }] })).toBeUndefined();
    expect(residenceState({ address: 'MA' })).toBeUndefined();

    const plans = {
      Patient: resourcePlan('Patient', { elements: ['name', 'address'] }),
      Observation: resourcePlan('Observation'),
    };
    const withAddress = (id: string, address: Patient['address']): Patient => ({ resourceType: 'Patient', id, name: [{ family: 'Doe' }], address });
    const body = deepFreeze({
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [
        { resource: withAddress('a', [{ use: 'work', state: 'NY', city: 'Albany' }, { use: 'home', state: 'nj', line: ['1 Elm St'] }]) },
        { resource: withAddress('b', [{ city: 'Nowhere' }]) },
        { resource: { resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/c' } } },
      ],
    });
    const r = filterResponse(body, responseCtx(plans));
    expect(Object.fromEntries(r.stats.states ?? [])).toEqual({ a: 'NJ' });

    // Where the plan does not release the address, no state is noted.
    const noAddress = filterResponse(body, responseCtx({ Patient: resourcePlan('Patient', { elements: ['name'] }) }));
    expect(noAddress.stats.states).toBeUndefined();
  });

  it('a de-identified caller: the state it received, under the real patient id', () => {
    const plan = { ...resourcePlan('Patient', { elements: ['name', 'address', 'birthDate'] }), deidentify: 'safe-harbor' as const };
    const r = filterResponse(
      deepFreeze({ resourceType: 'Patient', id: 'real-1', address: [{ use: 'home', state: 'MA', city: 'Boston', postalCode: '02115', line: ['1 Elm St'] }] }),
      responseCtx({ Patient: plan }),
    );
    expect(r.kind).toBe('ok');
    const released = (r as { body: Patient }).body;
    expect(released.id).not.toBe('real-1');
    expect(released.address?.[0]?.state).toBe('MA');
    expect(Object.fromEntries(r.stats.states ?? [])).toEqual({ 'real-1': 'MA' });
  });
});

describe('notification thresholds and deadlines', () => {
  function population(perState: Record<string, number>): BreachDigest {
    const d = digest();
    let k = 0;
    for (const [state, count] of Object.entries(perState)) {
      for (let i = 0; i < count; i++) {
        const p = `p${k++}`;
        d.add(rec({ patients: [p], states: state === 'unknown' ? undefined : { [p]: state } }));
      }
    }
    return d;
  }

  it('more than 500 residents of a State: media notice (164.406); 500 exactly is not', () => {
    const d = population({ CA: 501, NY: 500, TX: 3 });
    const states = Object.fromEntries(table(d, 'Patients per state').rows.map((r) => [r[0], r]));
    expect(states.CA?.[2]).toMatch(/^more than 500 residents: notify prominent media outlets serving the State or jurisdiction \(45 CFR 164\.406\)/);
    expect(states.CA?.[3]).toBe('2025-05-09');
    expect(states.NY?.[2]).toMatch(/^500 or fewer: no media notice/);
    expect(states.NY?.[3]).toBe('-');
    const duties = table(d, 'Notification duties').rows.map((r) => r.join(' | '));
    expect(duties).toContain('45 CFR 164.406: notice to prominent media outlets serving CA | more than 500 residents of the State or jurisdiction (501) | no later than 60 calendar days after discovery: by 2025-05-09');
    expect(duties.some((x) => x.includes('serving NY'))).toBe(false);
    // 1004 individuals: HHS with the individual notices.
    expect(duties).toContain('45 CFR 164.408(b): notice to the Secretary of HHS | 500 or more individuals (1004) | contemporaneously with the individual notices: by 2025-05-09');
    expect(duties[0]).toBe(
      '45 CFR 164.404: notice to each individual | 1004 individuals | without unreasonable delay, no later than 60 calendar days after discovery: by 2025-05-09',
    );
  });

  it('fewer than 500 individuals: a log and HHS within 60 days after the calendar year ends', () => {
    const d = population({ MA: 499 });
    const duties = table(d, 'Notification duties').rows.map((r) => r.join(' | '));
    expect(duties).toContain('45 CFR 164.408(c): notice to the Secretary of HHS | less than 500 individuals (499) | log the breach; notify no later than 60 days after the end of calendar year 2025: by 2026-03-01');
    expect(duties.some((x) => x.startsWith('45 CFR 164.406: notice to prominent media outlets |'))).toBe(true);
    // 500 in total: HHS now, though no state has more than 500.
    const d500 = population({ MA: 250, RI: 250 });
    expect(table(d500, 'Notification duties').rows.map((r) => r[0])).toContain('45 CFR 164.408(b): notice to the Secretary of HHS');
  });

  it('patients of unknown state that could push a State over the threshold are called out', () => {
    const d = population({ CA: 450, unknown: 60 });
    const states = Object.fromEntries(table(d, 'Patients per state').rows.map((r) => [r[0], r]));
    expect(states.CA?.[2]).toMatch(/with the 60 patients of unknown state it could be more than 500/);
    expect(states.unknown?.[1]).toBe(60);
  });
});

describe('break-glass, grant and anomaly context', () => {
  it('sessions with their reasons, grants with their data sets, anomalies about the actors', () => {
    const d = digest(undefined, [
      rec({ kind: 'break-glass-start', patients: ['p1'], breakGlass: { session: 'bg-1', reason: 'ED: unconscious patient' }, time: '2025-03-02T09:00:00.000Z' }),
      rec({ patients: ['p1'], breakGlass: { session: 'bg-1', reason: 'ED: unconscious patient' }, time: '2025-03-02T09:01:00.000Z' }),
      rec({ kind: 'break-glass-end', patients: ['p1'], breakGlass: { session: 'bg-1', reason: 'ED: unconscious patient' }, time: '2025-03-02T09:30:00.000Z' }),
      // A session opened before the window: its reason from the request's record.
      rec({ patients: ['p2'], breakGlass: { session: 'bg-0', reason: 'code blue' } }),
      rec({ patients: ['p3'], grant: { approvedBy: 'boss', dataSet: 'claim-attachment', id: 'g-1', patient: 'p3' } }),
      rec({ kind: 'anomaly', patients: ['p3', 'p4'], details: { anomaly: 'bulk-access' }, decision: 'allow' }),
      rec({ kind: 'anomaly', sub: 'alice', patients: ['p1'], details: { anomaly: 'off-hours' } }),
    ]);
    const r = rows(d);
    expect(r.p1?.['break-glass (session: reason)']).toBe('bg-1: ED: unconscious patient');
    expect(r.p2?.['break-glass (session: reason)']).toBe('bg-0: code blue');
    expect(r.p3?.['access grants (data set)']).toBe('g-1 (claim-attachment)');
    expect(r.p3?.['anomaly alerts']).toBe('bulk-access x1');
    expect(r.p1?.['anomaly alerts']).toBe('');
    // p4 was named by an alert but nothing of theirs was released: not a patient affected.
    expect(r.p4).toBeUndefined();
    const sessions = table(d, 'Break-glass sessions').rows;
    expect(sessions).toEqual([
      ['bg-0', 'mallory', '-', 'code blue', 'before the window', '-', 1, 1],
      ['bg-1', 'mallory', 'p1', 'ED: unconscious patient', '2025-03-02T09:00:00.000Z', '2025-03-02T09:30:00.000Z', 1, 1],
    ]);
    expect(table(d, 'Access grants used').rows).toEqual([['g-1', 'claim-attachment', 'p3', 'boss', 1, 1]]);
    expect(table(d, 'Anomaly alerts').rows).toEqual([['bulk-access', 1, 'mallory', 2, '2025-03-02T10:00:00.000Z', '2025-03-02T10:00:00.000Z']]);
  });
});

describe('output', () => {
  const hostile = '=HYPERLINK("http://evil","x")';
  const d = digest(undefined, [
    rec({ patients: [hostile, '+cmd', 'ok'], states: { [hostile]: '@SUM(1)', ok: 'MA' }, breakGlass: { session: '-s', reason: 'a, "quoted"\nreason <script>alert(1)</script>' } }),
  ]);
  const report = d.report();

  it('CSV: a header and one row per patient, no cell a spreadsheet would run, RFC 4180 quoting', () => {
    const csv = breachCsv(report.patients);
    const lines = csv.split('\r\n');
    expect(lines[0]).toBe('patient,state,other states shown,first access,last access,requests,resources,resource types,elements,actors,break-glass (session: reason),access grants (data set),anomaly alerts');
    expect(csv).toContain(`"'=HYPERLINK(""http://evil"",""x"")"`);
    expect(csv).toContain("'+cmd");
    expect(csv).toContain("'@SUM(1)");
    expect(csv).toContain(`"'-s: a, ""quoted""\nreason <script>alert(1)</script>"`);
    // No cell (first or after a comma, quoted or not) starts with a formula character.
    expect(/(^|,)"?[=+\-@]/m.test(csv)).toBe(false);
    expect(report.patients.rows).toHaveLength(3);
  });

  it('HTML: printable, self-contained, escaped', () => {
    const html = htmlPage(report, DISCOVERED);
    expect(html).not.toContain('<script>');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('=HYPERLINK(&quot;http://evil&quot;');
    expect(html).toContain(`content="default-src 'none'`);
    expect(html).toContain('@media print');
    expect(html).not.toMatch(/<(?:link|img|script|iframe)\b|src=|href=/i);
    for (const t of ['Summary', 'Notification duties', 'Patients per state of residence', 'Patients whose data was released', 'Break-glass sessions']) expect(html).toContain(`<h2>${t}`);
  });

  it('text: every section', () => {
    const text = toText(report);
    expect(text).toContain('Breach assessment: patient data released to the named actors');
    expect(text).toContain('Notification duties (45 CFR 164.404, 164.406, 164.408)');
    expect(text).toContain('patients affected');
  });
});
