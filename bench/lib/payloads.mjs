/**
 * Synthetic, deterministic FHIR R4 payloads for the benchmarks: a ~4 KB Patient, a paged search
 * over a fixed result set of 1,000 Patients (100 entries a page by default, ~400 KB), a copy of
 * that result set where every other Patient is labelled confidentiality R, and a ~5 MB searchset
 * for the memory test. Every Patient carries what the shipped policy acts on (SSN and MRN
 * identifiers, telecom, addresses, narrative, extensions, a contact, dates), so billing and
 * researcher plans do real work. No real person's data.
 */

const GIVEN = ['Maria', 'James', 'Aiyana', 'Wei', 'Oluwaseun', 'Sofia', 'Mateo', 'Hannah', 'Ravi', 'Noor', 'Elena', 'Kofi'];
const FAMILY = ['Garcia', 'Okafor', 'Nguyen', 'Smith', 'Kowalski', 'Haddad', 'Silva', 'Johansson', 'Patel', 'Cohen'];
const CITIES = [
  ['Springfield', 'IL', '62704'],
  ['Boston', 'MA', '02118'],
  ['Portland', 'OR', '97205'],
  ['Austin', 'TX', '78701'],
  ['Madison', 'WI', '53703'],
  ['Reno', 'NV', '89501'],
];
const STREETS = ['Maple Avenue', 'Oak Street', 'Harbor Road', 'Cedar Lane', 'Elm Court', 'Lakeview Drive'];

/** Small deterministic PRNG (mulberry32): the same payload bytes on every run and machine. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = (r, list) => list[Math.floor(r() * list.length)];
const digits = (r, n) => Array.from({ length: n }, () => Math.floor(r() * 10)).join('');
const pad2 = (n) => String(n).padStart(2, '0');

export function patientId(i) {
  return `pat-${String(i).padStart(5, '0')}`;
}

export const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';

/**
 * One Patient of about 4 KB (serialized), index `i` picks its synthetic details. `confidentiality`
 * is its meta.security confidentiality code (N normal; R restricted, which billing withholds).
 */
export function makePatient(i, confidentiality = 'N') {
  const r = rng(1000 + i);
  const given = pick(r, GIVEN);
  const middle = pick(r, GIVEN);
  const family = pick(r, FAMILY);
  const [city, state, zip] = pick(r, CITIES);
  const street = `${100 + Math.floor(r() * 9000)} ${pick(r, STREETS)}`;
  // One patient in ten is over 89, so age90 has something to do.
  const year = i % 10 === 0 ? 1925 + Math.floor(r() * 8) : 1940 + Math.floor(r() * 65);
  const birthDate = `${year}-${pad2(1 + Math.floor(r() * 12))}-${pad2(1 + Math.floor(r() * 28))}`;
  const gender = r() < 0.5 ? 'female' : 'male';
  const ssn = `${digits(r, 3)}-${digits(r, 2)}-${digits(r, 4)}`;
  const mrn = `MRN${digits(r, 8)}`;
  const phone = `(555) ${digits(r, 3)}-${digits(r, 4)}`;
  const id = patientId(i);
  return {
    resourceType: 'Patient',
    id,
    meta: {
      versionId: String(1 + (i % 7)),
      lastUpdated: `2024-0${1 + (i % 9)}-1${i % 10}T08:${pad2(i % 60)}:00.000Z`,
      profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient'],
      security: [{ system: CONFIDENTIALITY, code: confidentiality, display: confidentiality === 'N' ? 'normal' : confidentiality === 'R' ? 'restricted' : confidentiality }],
    },
    text: {
      status: 'generated',
      div:
        `<div xmlns="http://www.w3.org/1999/xhtml"><table><tbody>` +
        `<tr><td>Name</td><td>${given} ${middle} ${family}</td></tr>` +
        `<tr><td>MRN</td><td>${mrn}</td></tr><tr><td>SSN</td><td>${ssn}</td></tr>` +
        `<tr><td>Date of birth</td><td>${birthDate}</td></tr><tr><td>Phone</td><td>${phone}</td></tr>` +
        `<tr><td>Address</td><td>${street}, ${city}, ${state} ${zip}</td></tr></tbody></table></div>`,
    },
    extension: [
      {
        url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race',
        extension: [
          { url: 'ombCategory', valueCoding: { system: 'urn:oid:2.16.840.1.113883.6.238', code: '2106-3', display: 'White' } },
          { url: 'text', valueString: 'White' },
        ],
      },
      {
        url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity',
        extension: [
          { url: 'ombCategory', valueCoding: { system: 'urn:oid:2.16.840.1.113883.6.238', code: '2186-5', display: 'Not Hispanic or Latino' } },
          { url: 'text', valueString: 'Not Hispanic or Latino' },
        ],
      },
      { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: gender === 'female' ? 'F' : 'M' },
    ],
    identifier: [
      {
        use: 'usual',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical Record Number' }], text: 'Medical Record Number' },
        system: 'http://hospital.example.org/mrn',
        value: mrn,
        period: { start: '2010-03-14' },
        assigner: { reference: 'Organization/org-001', display: 'Example General Hospital' },
      },
      {
        use: 'official',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'SS', display: 'Social Security number' }], text: 'Social Security Number' },
        system: 'http://hl7.org/fhir/sid/us-ssn',
        value: ssn,
      },
      {
        use: 'secondary',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'DL', display: "Driver's license number" }] },
        system: `urn:oid:2.16.840.1.113883.4.3.${state === 'IL' ? 17 : 25}`,
        value: `D${digits(r, 9)}`,
      },
    ],
    active: true,
    name: [
      { use: 'official', family, given: [given, middle], prefix: [gender === 'female' ? 'Ms.' : 'Mr.'], period: { start: birthDate } },
      { use: 'usual', given: [given.slice(0, 3)] },
    ],
    telecom: [
      { system: 'phone', value: phone, use: 'home', rank: 1 },
      { system: 'phone', value: `(555) ${digits(r, 3)}-${digits(r, 4)}`, use: 'mobile', rank: 2 },
      { system: 'email', value: `${given.toLowerCase()}.${family.toLowerCase()}${i}@example.com`, use: 'home' },
    ],
    gender,
    birthDate,
    deceasedBoolean: false,
    address: [
      {
        use: 'home',
        type: 'both',
        text: `${street}, ${city}, ${state} ${zip}`,
        line: [street, `Apt ${1 + Math.floor(r() * 40)}`],
        city,
        district: `${city} County`,
        state,
        postalCode: zip,
        country: 'US',
        period: { start: '2015-06-01' },
      },
      { use: 'old', line: [`${10 + Math.floor(r() * 90)} ${pick(r, STREETS)}`], city, state, postalCode: zip, country: 'US', period: { start: '2001-02-01', end: '2015-05-31' } },
    ],
    maritalStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: 'M', display: 'Married' }],
      text: 'Married',
    },
    multipleBirthBoolean: false,
    contact: [
      {
        relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0131', code: 'N', display: 'Next-of-Kin' }] }],
        name: { use: 'official', family, given: [pick(r, GIVEN)] },
        telecom: [{ system: 'phone', value: `(555) ${digits(r, 3)}-${digits(r, 4)}`, use: 'mobile' }],
        address: { line: [street], city, state, postalCode: zip, country: 'US' },
        gender: r() < 0.5 ? 'female' : 'male',
      },
    ],
    communication: [
      { language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en-US', display: 'English (United States)' }], text: 'English' }, preferred: true },
    ],
    generalPractitioner: [{ reference: `Practitioner/prac-${String(i % 17).padStart(3, '0')}`, display: `Dr. ${pick(r, GIVEN)} ${pick(r, FAMILY)}` }],
    managingOrganization: { reference: 'Organization/org-001', display: 'Example General Hospital' },
  };
}

/** A searchset Bundle of `n` Patients, with upstream-absolute URLs the gateway must rewrite. */
export function makeSearchset(n, upstreamBase) {
  const entry = [];
  for (let i = 1; i <= n; i++) {
    const p = makePatient(i);
    entry.push({ fullUrl: `${upstreamBase}/Patient/${p.id}`, resource: p, search: { mode: 'match', score: 1 } });
  }
  return {
    resourceType: 'Bundle',
    id: `bench-searchset-${n}`,
    meta: { lastUpdated: '2024-05-01T12:00:00.000Z' },
    type: 'searchset',
    total: n,
    link: [
      { relation: 'self', url: `${upstreamBase}/Patient?_count=${n}` },
      { relation: 'next', url: `${upstreamBase}/Patient?_count=${n}&_offset=${n}` },
    ],
    entry,
  };
}

/**
 * The care relationships the upstream holds (the `relationship` group): one active CareTeam with
 * BENCH_PRACTITIONER as a participant member, about RELATED_PATIENT (the Patient every read
 * returns). Nobody else is on a team; the other sources the policy names (encounters, episodes of
 * care, practitioner roles, tasks) hold nothing.
 */
export const BENCH_PRACTITIONER = 'Practitioner/bench-prac';
export const RELATED_PATIENT = patientId(1);
/** The types the gateway searches to look relationships up (src/relationships/sources.ts). */
export const RELATIONSHIP_TYPES = ['CareTeam', 'Encounter', 'EpisodeOfCare', 'PractitionerRole', 'Task'];

export function makeCareTeam() {
  return {
    resourceType: 'CareTeam',
    id: 'bench-careteam',
    meta: { versionId: '1', lastUpdated: '2024-05-01T12:00:00.000Z' },
    status: 'active',
    name: 'Bench ward team',
    subject: { reference: `Patient/${RELATED_PATIENT}` },
    period: { start: '2024-01-01' },
    participant: [
      {
        role: [{ coding: [{ system: 'http://snomed.info/sct', code: '309343006', display: 'Physician' }] }],
        member: { reference: BENCH_PRACTITIONER, display: 'Dr. Bench' },
      },
    ],
  };
}

/**
 * The upstream's answer to a relationship search of `type` (one of RELATIONSHIP_TYPES) with
 * `query` (URLSearchParams), as a searchset Buffer: for CareTeam, the bench team when `participant`
 * names its member (relative or on `upstreamBase`) and `status`, when given, allows active;
 * otherwise, and for every other type, an empty searchset.
 */
export function relationshipSearch(upstreamBase, type, query) {
  const entry = [];
  if (type === 'CareTeam') {
    const team = makeCareTeam();
    const member = team.participant[0].member.reference;
    const named = (query.get('participant') ?? '').split(',').some((v) => v === member || v === `${upstreamBase}/${member}`);
    const status = query.get('status');
    if (named && (status === null || status.split(',').includes(team.status))) {
      entry.push({ fullUrl: `${upstreamBase}/CareTeam/${team.id}`, resource: team, search: { mode: 'match' } });
    }
  }
  return Buffer.from(
    JSON.stringify({
      resourceType: 'Bundle',
      type: 'searchset',
      total: entry.length,
      link: [{ relation: 'self', url: `${upstreamBase}/${type}?${query}` }],
      entry,
    }),
  );
}

/**
 * The patients' consents the upstream holds (the `consent` group): every patient has the same three
 * active patient-privacy Consents, OPTIN each, with nested provisions the gateway evaluates for
 * every Patient it releases and none of which withholds a Patient from treatment: a marketing
 * opt-out (deny HMARKT), a restriction from another practitioner (deny Observations and
 * Conditions to Practitioner/bench-other), and a care-coordination opt-out (deny COC, except for
 * Practitioner/bench-emergency), which the group's probe reads a Patient for to tell that the
 * consent section is in force.
 */
export const CONSENTS_PER_PATIENT = 3;
const V3_ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const V3_ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const CONSENT_ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';

export function makeConsents(patient) {
  const consent = (n, dateTime, provision) => ({
    resourceType: 'Consent',
    id: `consent-${patient}-${n}`,
    meta: { versionId: '1', lastUpdated: '2024-05-01T12:00:00.000Z' },
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] }],
    patient: { reference: `Patient/${patient}` },
    dateTime,
    performer: [{ reference: `Patient/${patient}` }],
    policyRule: { coding: [{ system: V3_ACT_CODE, code: 'OPTIN' }] },
    provision,
  });
  const purpose = (code) => ({ system: V3_ACT_REASON, code });
  const action = (code) => ({ coding: [{ system: CONSENT_ACTION, code }] });
  const actor = (reference) => ({ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference } });
  const resourceClass = (code) => ({ system: 'http://hl7.org/fhir/resource-types', code });
  return [
    consent(1, '2024-01-10T09:00:00Z', { provision: [{ type: 'deny', action: [action('use')], purpose: [purpose('HMARKT')] }] }),
    consent(2, '2024-02-10T09:00:00Z', {
      provision: [{ type: 'deny', action: [action('access')], actor: [actor('Practitioner/bench-other')], class: [resourceClass('Observation'), resourceClass('Condition')] }],
    }),
    consent(3, '2024-03-10T09:00:00Z', {
      period: { start: '2020-01-01' },
      provision: [{ type: 'deny', purpose: [purpose('COC')], provision: [{ type: 'permit', actor: [actor('Practitioner/bench-emergency')] }] }],
    }),
  ];
}

/**
 * The upstream's answer to a Consent search (`patient=Patient/a,Patient/b&status=active`): the
 * consents of every patient named (relative or on `upstreamBase`), as one searchset page Buffer.
 */
export function consentSearch(upstreamBase, query) {
  const patients = query
    .getAll('patient')
    .flatMap((v) => v.split(','))
    .map((v) => v.replace(`${upstreamBase}/`, '').replace(/^Patient\//, ''))
    .filter((v) => v !== '');
  const status = query.get('status');
  const consents = status === null || status.split(',').includes('active') ? patients.flatMap((p) => makeConsents(p)) : [];
  return Buffer.from(
    JSON.stringify({
      resourceType: 'Bundle',
      type: 'searchset',
      total: consents.length,
      link: [{ relation: 'self', url: `${upstreamBase}/Consent?${query}` }],
      entry: consents.map((c) => ({ fullUrl: `${upstreamBase}/Consent/${c.id}`, resource: c, search: { mode: 'match' } })),
    }),
  );
}

/** How many Patients make a searchset of at least `bytes` serialized. */
export function entriesForBytes(bytes) {
  const one = Buffer.byteLength(JSON.stringify(makePatient(1))) + 120;
  // Patients vary a little in size around patient 1: 3% more entries keeps the total above `bytes`.
  return Math.ceil((bytes / one) * 1.03);
}

/**
 * The paged searches the upstream serves, like a FHIR server over a fixed result set: `_count`
 * entries from `_offset` on (defaults 100 and 0, `_count` at most 1000), `total` = the result size,
 * a `next` link (same parameters, `_count` and `_offset` advanced) only while more remain, all URLs
 * absolute on `upstreamBase`.
 */
export const RESULT_SIZE = 1000;
export const DEFAULT_COUNT = 100;
export const MAX_COUNT = 1000;

/**
 * The result sets, by the `name` search parameter: `halfwithheld` has every other Patient (the
 * 2nd, 4th, ... of the result) labelled confidentiality R; anything else is the plain set.
 */
export const RESULT_SETS = {
  plain: { confidentiality: () => 'N' },
  halfwithheld: { confidentiality: (i) => (i % 2 === 0 ? 'R' : 'N') },
};

/**
 * A paged searcher over the result sets. `page(query)` (a URLSearchParams of the request) returns
 * `{ status, body }` with `body` a Buffer. Entry JSON is serialized once per result set (lazily);
 * page Buffers are cached per (set, other parameters, count, offset), least recently used first
 * out, at most `maxPages` pages and `maxBytes` bytes, so the upstream stays a byte server.
 */
export function createPagedSearch(upstreamBase, { size = RESULT_SIZE, maxPages = 64, maxBytes = 64 * 1024 * 1024 } = {}) {
  const entryJson = new Map();
  const entriesOf = (set) => {
    let list = entryJson.get(set);
    if (list === undefined) {
      list = [];
      for (let i = 1; i <= size; i++) {
        const p = makePatient(i, RESULT_SETS[set].confidentiality(i));
        list.push(JSON.stringify({ fullUrl: `${upstreamBase}/Patient/${p.id}`, resource: p, search: { mode: 'match', score: 1 } }));
      }
      entryJson.set(set, list);
    }
    return list;
  };
  const cache = new Map();
  let cachedBytes = 0;
  const stats = { built: 0, hits: 0, evicted: 0 };

  const outcome = (status, code, diagnostics) => ({
    status,
    body: Buffer.from(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] })),
  });
  const intParam = (query, name, fallback) => {
    const all = query.getAll(name);
    if (all.length === 0) return fallback;
    if (all.length > 1 || !/^\d{1,9}$/.test(all[0])) return Number.NaN;
    return Number(all[0]);
  };

  function build(set, rest, count, offset) {
    const list = entriesOf(set);
    const end = Math.min(list.length, offset + count);
    const url = (c, o) => {
      const q = new URLSearchParams(rest);
      q.append('_count', String(c));
      if (o > 0) q.append('_offset', String(o));
      return `${upstreamBase}/Patient?${q}`;
    };
    const link = [{ relation: 'self', url: url(count, offset) }];
    if (end < list.length && count > 0) link.push({ relation: 'next', url: url(count, end) });
    const head = JSON.stringify({
      resourceType: 'Bundle',
      id: `bench-${set}-${count}-${offset}`,
      meta: { lastUpdated: '2024-05-01T12:00:00.000Z' },
      type: 'searchset',
      total: list.length,
      link,
    });
    const slice = offset < end ? list.slice(offset, end) : [];
    const text = slice.length === 0 ? head : `${head.slice(0, -1)},"entry":[${slice.join(',')}]}`;
    return Buffer.from(text);
  }

  function page(query) {
    const count = intParam(query, '_count', DEFAULT_COUNT);
    const offset = intParam(query, '_offset', 0);
    if (!Number.isFinite(count) || !Number.isFinite(offset)) return outcome(400, 'invalid', 'malformed _count or _offset');
    const n = Math.min(count, MAX_COUNT);
    const set = query.get('name') === 'halfwithheld' ? 'halfwithheld' : 'plain';
    const rest = [...query].filter(([k]) => k !== '_count' && k !== '_offset');
    const key = `${set}\n${new URLSearchParams(rest)}\n${n}\n${offset}`;
    let body = cache.get(key);
    if (body !== undefined) {
      stats.hits++;
      cache.delete(key);
      cache.set(key, body);
      return { status: 200, body };
    }
    body = build(set, rest, n, offset);
    stats.built++;
    cache.set(key, body);
    cachedBytes += body.length;
    for (const [k, b] of cache) {
      if (cache.size <= maxPages && cachedBytes <= maxBytes) break;
      if (k === key) continue;
      cache.delete(k);
      cachedBytes -= b.length;
      stats.evicted++;
    }
    return { status: 200, body };
  }
  return { page, stats, cached: () => ({ pages: cache.size, bytes: cachedBytes }) };
}

/** The prebuilt response bodies the upstream serves, as Buffers (`searchset`: the first page of 100). */
export function buildPayloads(upstreamBase) {
  return {
    patient: Buffer.from(JSON.stringify(makePatient(1))),
    searchset: createPagedSearch(upstreamBase).page(new URLSearchParams('_count=100')).body,
    big: Buffer.from(JSON.stringify(makeSearchset(entriesForBytes(5 * 1024 * 1024), upstreamBase))),
  };
}
