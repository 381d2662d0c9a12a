/**
 * The re-identification scanner (the Safe Harbor tests' oracle) is itself tested: it must find
 * every plant in raw, un-de-identified resources (else a passing end-to-end test proves nothing),
 * find nothing in a de-identified-looking answer, and honour its exemptions.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { aliceFirstVersion, DEMO, demoResources } from '../../src/demo/data.js';
import { arbResourceWithPlants, DEFAULT_TYPES, demoSeeds } from './generate.js';
import { type Finding, MIN_SEED_LENGTH, type ScanInput, scan, summarize } from './scanner.js';

const NOW = new Date('2026-06-15T12:00:00Z');
const BASE = 'http://127.0.0.1:41234/fhir';
const OPTS = { gatewayBase: BASE, now: NOW };
const DEMO_SEEDS = demoSeeds();

const json = (body: unknown, headers: ScanInput['headers'] = {}): ScanInput => ({
  headers: { 'content-type': 'application/fhir+json; charset=utf-8', ...headers },
  body: JSON.stringify(body),
});
const valuesOf = (findings: readonly Finding[], kind: Finding['kind']) => findings.filter((f) => f.kind === kind).map((f) => f.value.toLowerCase());

describe('the scanner finds what was planted in raw resources', () => {
  it('every seed, date, time, age, old year, URL and IP of a generated resource (50 runs)', () => {
    const refs = ['Patient/pat-alice', 'Encounter/enc-alice-1', 'Practitioner/prac-reyes'];
    fc.assert(
      fc.property(arbResourceWithPlants(DEFAULT_TYPES, { refs, now: NOW }), ({ resource, seeds, planted }) => {
        const findings = scan(json(resource), seeds, OPTS);
        expect(findings.length).toBeGreaterThan(0);
        const seedsFound = new Set(valuesOf(findings, 'seed'));
        expect(seeds.filter((s) => s.length >= MIN_SEED_LENGTH && !seedsFound.has(s.toLowerCase()))).toEqual([]);
        // The resource id is always planted, so there is always a seed finding.
        expect(seedsFound.has(String(resource.id).toLowerCase())).toBe(true);
        const dates = valuesOf(findings, 'date');
        for (const d of planted.dates) expect(dates.some((v) => v.includes(d.toLowerCase())), d).toBe(true);
        const times = new Set(valuesOf(findings, 'time'));
        for (const t of planted.times) expect(times.has(t), t).toBe(true);
        const ages = new Set(valuesOf(findings, 'age'));
        for (const a of planted.ages) expect(ages.has(a.toLowerCase()), a).toBe(true);
        const years = new Set(valuesOf(findings, 'old-year'));
        for (const y of planted.oldYears) expect(years.has(y), y).toBe(true);
        const urls = valuesOf(findings, 'url');
        for (const u of planted.urls) expect(urls.includes(u.toLowerCase()), u).toBe(true);
        // An IP inside a flagged URL is reported with the URL.
        const ips = valuesOf(findings, 'ip');
        for (const ip of planted.ips) expect(ips.includes(ip) || urls.some((u) => u.includes(`//${ip}/`)), ip).toBe(true);
      }),
      // No shrinking: a shrunk resource is no easier to read than the failing one, and shrinking takes minutes.
      { numRuns: Number(process.env.SCAN_RUNS ?? 50), endOnFailure: true },
    );
  });

  it('finds the demo data raw: names, SSNs, ids, dates, the 93-year-old, the 1930 birth date', () => {
    const all = [aliceFirstVersion(), ...demoResources()];
    const findings = scan(json({ resourceType: 'Bundle', type: 'searchset', entry: all.map((resource) => ({ resource })) }), DEMO_SEEDS, OPTS);
    const seeds = new Set(valuesOf(findings, 'seed'));
    for (const s of [DEMO.names.alice, DEMO.ssn.elder, DEMO.mrn.grace, DEMO.phones.aliceOld, DEMO.addresses.aliceLine, DEMO.addresses.restrictedZip, DEMO.patients.elder, 'spec1']) {
      expect(seeds.has(s.toLowerCase()), s).toBe(true);
    }
    expect(valuesOf(findings, 'date')).toContain(DEMO.birthDates.elder);
    expect(valuesOf(findings, 'age')).toEqual(expect.arrayContaining(['93 a', '91 a']));
    // The note's base64 attachment is decoded and scanned too.
    expect(seeds.has(Buffer.from(DEMO.documentText).toString('base64').toLowerCase())).toBe(true);
  });

  it('demoSeeds lists names, identifiers, telecom, addresses and every id, contained ones included', () => {
    for (const s of ['Anderson', 'Alice', 'Celebrity', '123-45-6789', 'MRN-100001', 'BSHP-778812', '617-555-0101', 'alice.anderson@example.org',
      '12 Beacon Street', 'Boston', '02115', '03601', 'pat-alice', 'obs-elder-age', 'claim-paula-psy', 'spec1', 'phleb', 'Quill']) {
      expect(DEMO_SEEDS, s).toContain(s);
    }
  });
});

describe('a de-identified answer is clean', () => {
  const pseudonym = (n: number) => `A${'xK3-pQ9.zL7mW2'.repeat(4)}${n}`.slice(0, 52);
  const clean = {
    resourceType: 'Bundle',
    type: 'searchset',
    link: [
      { relation: 'self', url: `${BASE}/Observation?_count=2` },
      { relation: 'next', url: `${BASE}/Observation?_cursor=eyJ2IjoxLCJwIjoiMTIzNCJ9.AbC-dEf_123-4567` },
    ],
    entry: [
      {
        fullUrl: `${BASE}/Patient/${pseudonym(1)}`,
        resource: {
          resourceType: 'Patient',
          id: pseudonym(1),
          meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'REDACTED' }] },
          gender: 'female',
          birthDate: '1936',
          address: [{ state: 'MA', country: 'US', postalCode: '000' }, { state: 'MA', postalCode: '021' }],
          extension: [{ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'F' }],
        },
        search: { mode: 'include' },
      },
      {
        fullUrl: `${BASE}/Observation/${pseudonym(2)}`,
        resource: {
          resourceType: 'Observation',
          id: pseudonym(2),
          meta: { profile: ['http://hl7.org/fhir/StructureDefinition/vitalsigns'] },
          status: 'final',
          code: { coding: [{ system: 'http://loinc.org', code: '30525-0' }, { system: 'urn:oid:2.16.840.1.113883.6.1', code: '30525-0' }] },
          subject: { reference: `Patient/${pseudonym(1)}` },
          effectiveDateTime: '2024',
          effectivePeriod: { start: '1936', end: '2025' },
          valueQuantity: { value: 90, comparator: '>=', unit: 'years', system: 'http://unitsofmeasure.org', code: 'a' },
          component: [
            { code: { coding: [{ system: 'http://snomed.info/sct', code: '8480' }] }, valueQuantity: { value: 142, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
            { code: { coding: [{ system: 'urn:oid:2.16.840.1', code: 'x' }] }, valueRange: { low: { value: 3, unit: 'd', code: 'd' }, high: { value: 89, unit: 'years', code: 'a' } } },
          ],
          contained: [{ resourceType: 'Specimen', id: 'c1' }],
          specimen: { reference: '#c1' },
        },
        search: { mode: 'match' },
      },
    ],
  };

  it('finds nothing in a clean searchset with its headers', () => {
    const seeds = [...DEMO_SEEDS, 'qzkvwmxrpalm', 'Kitchener'];
    const findings = scan(
      json(clean, {
        date: 'Mon, 15 Jun 2026 12:00:00 GMT',
        'x-request-id': '5f0c6f7e-2b1d-4a8e-9c1f-0d2e3f4a5b6c',
        'content-length': '4242',
        'cache-control': 'no-store',
      }),
      seeds,
      OPTS,
    );
    expect(findings, summarize(findings)).toEqual([]);
  });
});

describe('exemptions and decoding', () => {
  const scanText = (body: string, headers: ScanInput['headers'] = {}, seeds: readonly string[] = []) => scan({ headers, body }, seeds, OPTS);

  it('the Date header only is exempt: the same date in Last-Modified is a finding', () => {
    const http = 'Sat, 01 Jun 2024 12:00:00 GMT';
    expect(scanText('', { date: http, Date: http })).toEqual([]);
    const f = scanText('', { 'last-modified': http, etag: 'W/"1"' });
    expect(f.map((x) => [x.kind, x.where])).toEqual([['date', 'header:last-modified']]);
  });

  it('terminology URLs and the gateway base pass; other hosts, the upstream and contact URIs do not', () => {
    const ok = ['http://hl7.org/fhir/sid/us-ssn', 'http://terminology.hl7.org/CodeSystem/v2-0203', 'http://loinc.org', 'http://snomed.info/sct',
      'http://unitsofmeasure.org', 'http://www.nlm.nih.gov/research/umls/rxnorm', 'http://www.ama-assn.org/go/cpt', `${BASE}/Patient/abc`, `${BASE}?_cursor=x`];
    expect(scanText(JSON.stringify(ok))).toEqual([]);
    const bad = ['http://hospital.example.org/ext/x', 'http://127.0.0.1:9999/fhir/Patient/1', 'https://hl7.org.evil.example/x', 'http://127.0.0.1:41234/fhirx/1',
      'https://user@loinc.org/x', 'http://loinc.org:8080/x', 'mailto:someone@example.org', 'ftp://files.example.net/a'];
    expect(valuesOf(scanText(JSON.stringify(bad)), 'url').sort()).toEqual(bad.map((b) => b.toLowerCase()).sort());
  });

  it('OIDs, versions and longer dotted numbers are not IPs; an IPv4 address is', () => {
    const body = JSON.stringify(['urn:oid:2.16.840.1', 'urn:oid:1.2.3.4', 'urn:oid:2.16.840.1.113883.6.1', '4.0.1', '1.2.3.4.5', 'v10.20.30.40.50', '999.1.1.1', 'a1.2.3.4']);
    expect(scanText(body)).toEqual([]);
    expect(valuesOf(scanText('{"note":"from 10.0.0.1, then 192.168.1.20."}'), 'ip')).toEqual(['10.0.0.1', '192.168.1.20']);
    // The gateway's own base names its IP: not a finding there, a finding elsewhere.
    expect(scanText(`"${BASE}/Patient/x"`)).toEqual([]);
    expect(valuesOf(scanText('"host 127.0.0.1"'), 'ip')).toEqual(['127.0.0.1']);
  });

  it('seeds: case-insensitive, shorter than 4 ignored, short ones as whole words, long ones anywhere', () => {
    const seeds = ['May', 'Chen', 'qzkvwmxrpalm'];
    expect(valuesOf(scanText('"MAY chen"', {}, seeds), 'seed')).toEqual(['chen']);
    expect(scanText('"Kitchener, Mayfield"', {}, seeds)).toEqual([]);
    expect(valuesOf(scanText('"xxQZKVWMXRPALMxx"', {}, seeds), 'seed')).toEqual(['qzkvwmxrpalm']);
  });

  it('seeds behind JSON escapes, %-encoding, character references and base64 are found', () => {
    const seeds = ['Garland', 'alice.anderson@example.org', 'qzkvwmxrpalm'];
    expect(valuesOf(scanText('{"a":"Garl\\u0061nd"}', {}, seeds), 'seed')).toEqual(['garland']);
    expect(valuesOf(scanText('', { link: '<x?email=alice.anderson%40example.org>' }, seeds), 'seed')).toEqual(['alice.anderson@example.org']);
    expect(valuesOf(scanText('{"div":"&#71;arland"}', {}, seeds), 'seed')).toEqual(['garland']);
    const b64 = Buffer.from('note about qzkvwmxrpalm on 2021-03-04').toString('base64');
    const f = scanText(JSON.stringify({ data: b64 }), {}, seeds);
    expect(valuesOf(f, 'seed')).toEqual(['qzkvwmxrpalm']);
    expect(valuesOf(f, 'date')).toEqual(['2021-03-04']);
  });

  it('dates finer than a year in every usual form; a year alone is not one', () => {
    const f = scanText('"2024-02 | 2024-02-10 | 2024-02-10T14:00:00Z | 3/14/1984 | 14 Mar 1984 | March 14, 1984 | 2024 | 123-45-6789 | 617-555-0101 | 8480-6"');
    expect(valuesOf(f, 'date')).toEqual(['2024-02', '2024-02-10', '2024-02-10t14:00:00z', '3/14/1984', '14 mar 1984', 'march 14, 1984']);
    expect(scanText('', { 'x-request-id': '70712d4c-7513-4bd6-8640-10c213ac6dd8' })).toEqual([]);
    expect(f.every((x) => x.kind === 'date')).toBe(true);
  });

  it('ages over 89 unless >= 90; age observations by LOINC; old years; times', () => {
    const q = (value: number, code: string, extra: object = {}) => ({ value, unit: code, system: 'http://unitsofmeasure.org', code, ...extra });
    const body = {
      a: q(90, 'a', { comparator: '>=' }),
      b: q(89, 'a'),
      c: q(1079, 'mo'),
      d: q(91, 'a'),
      e: q(1100, 'mo'),
      f: q(33000, 'd'),
      g: { value: 95, unit: 'years' },
      h: { low: q(10, 'a'), high: q(100, 'a') },
      // A Range can say ">= 90" only as a low without a high.
      i: { low: q(90, 'a') },
      j: { low: q(90, 'a'), high: q(95, 'a') },
      obs: { resourceType: 'Observation', code: { coding: [{ system: 'http://loinc.org', code: '30525-0' }] }, valueInteger: 95 },
      young: { resourceType: 'Observation', code: { coding: [{ system: 'http://loinc.org', code: '30525-0' }] }, valueInteger: 89 },
      other: { resourceType: 'Observation', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, valueInteger: 120 },
      birthDate: '1935',
      recorded: '1936',
      code: '1200',
      t: '14:30:00',
    };
    const f = scanText(JSON.stringify(body));
    expect(valuesOf(f, 'age').sort()).toEqual(['100 a', '1100 mo', '33000 d', '91 a', '95 years', '95 a', '90 a', 'valueinteger 95'].sort());
    expect(valuesOf(f, 'old-year')).toEqual(['1935']);
    expect(valuesOf(f, 'time')).toEqual(['14:30:00']);
  });

  it('each finding says where it is and shows its context', () => {
    const f = scanText('{"name":"Grace Garland"}', { 'x-debug': 'prac-reyes' }, ['Garland', 'prac-reyes']);
    expect(f).toEqual([
      { kind: 'seed', value: 'prac-reyes', where: 'header:x-debug', context: 'prac-reyes' },
      { kind: 'seed', value: 'Garland', where: 'body', context: '{"name":"Grace Garland"}' },
    ]);
  });
});
