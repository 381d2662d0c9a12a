/**
 * Patients' consent directives, attacked from outside by low-privilege callers against the real
 * upstream (the demo's consents, the shipped policy's `consent` section): billing against Brian's
 * visit restricted from payment, the coder against Paula's 42 CFR Part 2 record, the researcher
 * against Henry's research opt-out, and a clinician not named by Paula's consent against the versions
 * of her Part 2 record. A consent-withheld resource must answer exactly as one that does not exist
 * (status, headers and body, byte for byte apart from X-Request-Id, Date and the caller's own query
 * echoed in self links), and nothing only those records hold may appear in any answer: reads,
 * versions, history, searches by id, code, label and reference, `_summary=count`, includes,
 * `$everything`, batches and transactions, conditional reads, and every page of a paged search.
 */
import type { Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aliceFirstVersion, DEMO, demoResources } from '../../src/demo/data.js';
import { patientReferencePaths } from '../../src/fhir/tables.js';
import { pseudonymize } from '../../src/redact/pseudonym.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, comparableHeaders, expectAbsent, type Received, receive } from './support.js';

const FHIR_JSON = 'application/fhir+json';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const C = DEMO.consents;
const P = DEMO.patients;
const MISSING = 'does-not-exist-31';

type Obj = Record<string, unknown>;
type Who = { role: string; purpose: string; claims?: Record<string, unknown> };

const billing: Who = { role: 'billing', purpose: 'HPAYMT' };
const coder: Who = { role: 'coder', purpose: 'HOPERAT' };
const coderPayment: Who = { role: 'coder', purpose: 'HPAYMT' };
const researcher: Who = { role: 'researcher', purpose: 'HRESCH' };
/** A clinician Paula's consent does not name (the clinical data set grants history). */
const chen: Who = { role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-chen', fhirUser: 'Practitioner/prac-chen' } };

let stack: Stack;
const tokens = new Map<string, string>();
let pseudo: (type: string, id: string) => string;

async function call(who: Who, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Received> {
  const key = `${who.role} ${JSON.stringify(who.claims ?? {})}`;
  if (!tokens.has(key)) tokens.set(key, await stack.token(who.role, who.claims));
  return receive(
    await stack.request(path, {
      token: tokens.get(key)!,
      purpose: who.purpose,
      method,
      headers: { accept: FHIR_JSON, ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: FHIR_JSON }),
    }),
  );
}
const get = (who: Who, path: string, headers?: Record<string, string>) => call(who, 'GET', path, undefined, headers);
const bundle = (urls: string[], type: 'batch' | 'transaction' = 'batch') => ({ resourceType: 'Bundle', type, entry: urls.map((url) => ({ request: { method: 'GET', url } })) });

/** Every self link's URL (the caller's own query, echoed) blanked, so what it names is not counted. */
function bodyOnly(r: Received): Received {
  let text = r.text;
  for (const m of r.text.matchAll(/"relation":"self","url":"([^"]*)"/g)) text = text.split(m[1]!).join('<self>');
  return { ...r, text };
}

/** Byte for byte alike, X-Request-Id, Date and the echoed query aside. */
function expectIdentical(a: Received, b: Received, what: string): void {
  const self = (r: Received) => /"relation":"self"/.test(r.text);
  expect(a.status, what).toBe(b.status);
  expect(bodyOnly(a).text, what).toBe(bodyOnly(b).text);
  // Content-Length and the gateway's ETag (a hash of the released bytes) follow the self link.
  const headers = (r: Received) => comparableHeaders(r.headers).filter(([k]) => !self(r) || (k !== 'etag' && k !== 'content-length'));
  expect(headers(a), what).toEqual(headers(b));
}

/** The seeded current versions, by `Type/id`. */
function seeded(): Map<string, Resource> {
  const out = new Map<string, Resource>();
  for (const r of [aliceFirstVersion(), ...demoResources()]) out.set(`${r.resourceType}/${r.id}`, r);
  return out;
}

function strings(v: unknown, out = new Set<string>()): Set<string> {
  if (typeof v === 'string') out.add(v);
  else if (Array.isArray(v)) for (const x of v) strings(x, out);
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) strings(x, out);
  return out;
}

/**
 * Strings (5 characters or more) only the records `keys` hold, found in no other seeded resource,
 * not even inside a longer string; the Consents that withhold them aside (no caller here may read
 * a Consent).
 */
function onlyIn(keys: readonly string[]): string[] {
  const mine = new Set<string>();
  const others: string[] = [];
  for (const [key, r] of seeded()) {
    if (keys.includes(key)) strings(r, mine);
    else if (r.resourceType !== 'Consent') for (const s of strings(r)) others.push(s.toLowerCase());
  }
  return [...mine].filter((s) => s.length >= 5 && !others.some((o) => o.includes(s.toLowerCase())));
}

/** `Type/id` of every seeded record of the patient (its compartment, and the Patient itself). */
function recordsOf(patient: string): string[] {
  const out: string[] = [];
  for (const [key, r] of seeded()) {
    if (r.resourceType === 'Consent') continue;
    if (r.resourceType === 'Patient' ? r.id === patient : patientReferencePaths(r.resourceType).length > 0 && JSON.stringify(r).includes(`"Patient/${patient}"`)) out.push(key);
  }
  return out;
}

/** A read's path for `Type/id` as the caller names it (the researcher: by pseudonym). */
function as(who: Who, key: string): string {
  const [type, id] = key.split('/') as [string, string];
  return who === researcher ? `${type}/${pseudo(type, id)}` : key;
}

const PR = C.payerRestriction;
const BRIAN_WITHHELD = [`Encounter/${PR.encounter}`, `Condition/${PR.condition}`, `Claim/${PR.claim}`, `Coverage/${PR.coverage}`];
const PAULA_WITHHELD = [`Condition/${C.part2.condition}`];

beforeAll(async () => {
  stack = await startStack({ consent: true });
  const key = new TextEncoder().encode(stack.config.pseudonymKey!);
  pseudo = (type, id) => pseudonymize(key, type, id)!;
  // A second version of each withheld record (same content, a new versionId): its first version
  // is then a past version, withheld with it.
  for (const k of [...BRIAN_WITHHELD, ...PAULA_WITHHELD]) {
    const cur = (await (await fetch(`${stack.upstreamUrl}/${k}`)).json()) as Obj;
    const r = await fetch(`${stack.upstreamUrl}/${k}`, { method: 'PUT', headers: { 'content-type': FHIR_JSON }, body: JSON.stringify({ ...cur, meta: { ...(cur.meta as Obj), versionId: undefined } }) });
    expect(r.status, k).toBeLessThan(300);
  }
}, 60_000);
afterAll(async () => {
  await stack?.close();
});

/** Each low-privilege caller, what consent withholds from it, and what only that holds. */
const cases = (): Array<{ name: string; who: Who; withheld: string[]; secrets: () => string[]; patient: string }> => [
  { name: 'billing: the visit Brian restricted from payment', who: billing, withheld: BRIAN_WITHHELD, secrets: () => onlyIn(BRIAN_WITHHELD), patient: P.brian },
  { name: 'coder (payment): the same restriction', who: coderPayment, withheld: BRIAN_WITHHELD, secrets: () => onlyIn(BRIAN_WITHHELD), patient: P.brian },
  { name: "coder (operations): Paula's Part 2 record", who: coder, withheld: PAULA_WITHHELD, secrets: () => onlyIn(PAULA_WITHHELD), patient: P.paula },
  {
    name: "researcher: Henry's research opt-out",
    who: researcher,
    withheld: recordsOf(P.henry).filter((k) => ['Patient', 'Observation', 'Condition', 'Procedure', 'Encounter'].includes(k.split('/')[0]!)),
    secrets: () => {
      const keys = recordsOf(P.henry);
      return [...onlyIn(keys), ...keys.map((k) => pseudo(k.split('/')[0]!, k.split('/')[1]!))];
    },
    patient: P.henry,
  },
];

describe('a consent-withheld record answers exactly as one that does not exist', () => {
  it.each(cases().map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    expect(c.withheld.length).toBeGreaterThan(0);
    const secrets = c.secrets();
    expect(secrets.length).toBeGreaterThan(0);
    for (const key of c.withheld) {
      const type = key.split('/')[0]!;
      const missing = `${type}/${c.who === researcher ? pseudo(type, MISSING) : MISSING}`;
      const pairs: Array<[string, string, Record<string, string>?]> = [
        [`/${as(c.who, key)}`, `/${missing}`],
        [`/${as(c.who, key)}`, `/${missing}`, { 'if-none-match': '*' }],
        [`/${as(c.who, key)}`, `/${missing}`, { prefer: 'return=minimal' }],
        [`/${as(c.who, key)}/_history/1`, `/${missing}/_history/1`],
        [`/${as(c.who, key)}/_history/2`, `/${missing}/_history/2`],
        [`/${as(c.who, key)}/_history`, `/${missing}/_history`],
        [`/${type}?_id=${as(c.who, key).split('/')[1]}`, `/${type}?_id=${missing.split('/')[1]}`],
        [`/${type}?_id=${as(c.who, key).split('/')[1]}&_summary=count`, `/${type}?_id=${missing.split('/')[1]}&_summary=count`],
        [`/${type}?_id=${as(c.who, key).split('/')[1]}&_total=accurate`, `/${type}?_id=${missing.split('/')[1]}&_total=accurate`],
      ];
      for (const [a, b, headers] of pairs) {
        const withheld = await get(c.who, a, headers);
        const absent = await get(c.who, b, headers);
        expectIdentical(withheld, absent, `${a} vs ${b} ${JSON.stringify(headers ?? {})}`);
        expectAbsent(bodyOnly(withheld), secrets);
      }
      for (const type of ['batch', 'transaction'] as const) {
        const a = await call(c.who, 'POST', '/', bundle([as(c.who, key)], type));
        const b = await call(c.who, 'POST', '/', bundle([missing], type));
        expectIdentical(a, b, `${type} ${key}`);
        expectAbsent(a, secrets);
      }
    }
    // The record of a withheld read says consent withheld it, and names no disclosure.
    const r = await get(c.who, `/${as(c.who, c.withheld[0]!)}`);
    const record = await auditFor(stack, r.requestId);
    expect(record.consent?.withheld).toBe(1);
    expect(record.disclosed.resources).toEqual([]);
  });
});

describe('nothing only the withheld records hold reaches the caller', () => {
  /** Every page of a search, its `next` links followed. */
  async function pages(who: Who, path: string): Promise<Received[]> {
    const out = [await get(who, path)];
    for (;;) {
      const next = (out.at(-1)!.json as { link?: Array<{ relation: string; url: string }> } | undefined)?.link?.find((l) => l.relation === 'next')?.url;
      if (next === undefined || out.length > 40) break;
      expect(next.startsWith(stack.url)).toBe(true);
      out.push(await get(who, next.slice(stack.url.length)));
    }
    return out;
  }

  it('billing: searches by patient, code, reference and label, includes, paging, history', async () => {
    const secrets = onlyIn(BRIAN_WITHHELD);
    const paths = [
      `/Encounter?patient=${P.brian}`,
      `/Encounter?patient=${P.brian}&_count=1`,
      `/Encounter?_count=1`,
      `/Condition?patient=${P.brian}&_count=1`,
      '/Condition?code=860914002',
      '/Condition?code=http://snomed.info/sct|860914002',
      `/Condition?encounter=Encounter/${PR.encounter}`,
      `/Claim?patient=${P.brian}&_count=1`,
      `/Claim?encounter=Encounter/${PR.encounter}`,
      `/Claim?patient=${P.brian}&_include=Claim:encounter&_include=Claim:insurance`,
      `/Claim?_include=Claim:patient&_count=2`,
      `/Patient?_id=${P.brian}&_revinclude=Encounter:subject&_revinclude=Claim:patient`,
      `/Coverage?beneficiary=Patient/${P.brian}&_revinclude=Claim:insurance`,
      `/Encounter?patient=${P.brian}&_revinclude=Condition:encounter&_revinclude=Claim:encounter`,
      `/Encounter?_sort=-date&_count=1`,
      `/Patient/${P.brian}/$everything`,
      '/Condition/_history',
      '/Encounter/_history?_count=1',
    ];
    for (const path of paths) for (const p of await pages(billing, path)) expectAbsent(bodyOnly(p), secrets);
    // The controls: what the restriction leaves alone is there.
    const encounters = await get(billing, `/Encounter?patient=${P.brian}`);
    expect(encounters.text).toContain(PR.otherEncounter);
    const coverages = await get(billing, `/Coverage?beneficiary=Patient/${P.brian}`);
    expect(coverages.text).toContain('cov-brian');
    // The self-pay arrangement is named by the consent too (a red-team session saw it otherwise).
    expect(coverages.text).not.toContain(PR.coverage);
    // The upstream does hold them: the gateway withholds them.
    const up = await (await fetch(`${stack.upstreamUrl}/Condition?code=860914002`)).text();
    expect(up).toContain(PR.condition);
  });

  it('billing: a search matching only withheld records answers as one matching nothing', async () => {
    const pairs: Array<[string, string]> = [
      ['/Condition?code=860914002', '/Condition?code=999999999'],
      ['/Condition?code=860914002&_summary=count', '/Condition?code=999999999&_summary=count'],
      ['/Condition?code=860914002&_total=accurate', '/Condition?code=999999999&_total=accurate'],
      [`/Condition?encounter=Encounter/${PR.encounter}`, `/Condition?encounter=Encounter/${MISSING}`],
      [`/Claim?encounter=Encounter/${PR.encounter}`, `/Claim?encounter=Encounter/${MISSING}`],
      [`/Encounter?_id=${PR.encounter},${PR.otherEncounter}`, `/Encounter?_id=${MISSING},${PR.otherEncounter}`],
    ];
    for (const [a, b] of pairs) expectIdentical(await get(billing, a), await get(billing, b), `${a} vs ${b}`);
    const a = await call(billing, 'POST', '/', bundle([`Encounter/${PR.otherEncounter}`, `Encounter/${PR.encounter}`, 'Condition?code=860914002']));
    const b = await call(billing, 'POST', '/', bundle([`Encounter/${PR.otherEncounter}`, `Encounter/${MISSING}`, 'Condition?code=999999999']));
    expectIdentical(a, b, 'batch');
  });

  it('coder: the Part 2 record by patient, code, label, includes and paging; a clinician not named: versions and history', async () => {
    const secrets = onlyIn(PAULA_WITHHELD);
    expect(secrets).toEqual(expect.arrayContaining(['Opioid dependence', '75544000', 'F11.20', DEMO.notes.sud]));
    const paths = [
      `/Condition?patient=${P.paula}`,
      `/Condition?patient=${P.paula}&_count=1`,
      '/Condition?code=75544000',
      `/Condition?_security=${ACT_CODE}|SUD`,
      `/Encounter?patient=${P.paula}&_revinclude=Condition:encounter`,
      `/Condition?_count=2&_include=Condition:encounter`,
      `/Patient?_id=${P.paula}&_revinclude=Condition:subject`,
      `/Condition?_sort=-recorded-date&_count=1`,
    ];
    for (const who of [coder, chen]) for (const path of paths) for (const p of await pages(who, path)) expectAbsent(bodyOnly(p), secrets);
    for (const [a, b] of [
      ['/Condition?code=75544000', '/Condition?code=999999999'],
      [`/Condition?_security=${ACT_CODE}|SUD`, `/Condition?_security=${ACT_CODE}|ETH`],
      [`/Condition?patient=${P.paula}&code=75544000`, `/Condition?patient=${P.paula}&code=999999999`],
    ]) {
      expectIdentical(await get(coder, a!), await get(coder, b!), `${a} vs ${b}`);
    }
    // History and versions, to a caller granted them whom the consent does not name.
    const key = `Condition/${C.part2.condition}`;
    for (const [a, b] of [
      [`/${key}`, `/Condition/${MISSING}`],
      [`/${key}/_history`, `/Condition/${MISSING}/_history`],
      [`/${key}/_history/1`, `/Condition/${MISSING}/_history/1`],
      [`/${key}/_history/2`, `/Condition/${MISSING}/_history/2`],
    ]) {
      const withheld = await get(chen, a!);
      expectIdentical(withheld, await get(chen, b!), `${a} vs ${b}`);
      expectAbsent(withheld, secrets);
    }
    for (const p of await pages(chen, `/Patient/${P.paula}/$everything`)) expectAbsent(bodyOnly(p), secrets);
    for (const p of await pages(chen, '/Condition/_history')) expectAbsent(bodyOnly(p), secrets);
    // The control: Dr. Reyes, whom the consent names, does see it.
    const reyes: Who = { role: 'clinician', purpose: 'TREAT', claims: { sub: 'dr-reyes', fhirUser: 'Practitioner/prac-reyes' } };
    expect((await get(reyes, `/${key}`)).text).toContain('Opioid dependence');
  });

  it("researcher: nothing of Henry's records, under any pseudonym", async () => {
    const keys = recordsOf(P.henry);
    const secrets = [...onlyIn(keys), ...keys.map((k) => pseudo(k.split('/')[0]!, k.split('/')[1]!))];
    const henry = pseudo('Patient', P.henry);
    const paths = [
      '/Patient',
      '/Patient?_count=1',
      '/Observation?_count=2',
      '/Condition',
      '/Encounter?_count=1',
      '/Procedure',
      `/Observation?patient=${henry}`,
      `/Condition?subject=Patient/${henry}`,
      `/Encounter?patient=${henry}&_count=1`,
      '/Observation?_include=Observation:subject',
      '/Condition?_include=Condition:subject&_count=1',
      '/Patient?_revinclude=Observation:subject&_revinclude=Condition:subject',
      '/Encounter?_revinclude=Observation:encounter&_revinclude=Condition:encounter',
    ];
    for (const path of paths) for (const p of await pages(researcher, path)) expectAbsent(bodyOnly(p), secrets);
    expectIdentical(await get(researcher, `/Observation?patient=${henry}`), await get(researcher, `/Observation?patient=${pseudo('Patient', MISSING)}`), 'by patient');
    const a = await call(researcher, 'POST', '/', bundle([`Patient/${henry}`, `Observation?patient=${henry}`]));
    const b = await call(researcher, 'POST', '/', bundle([`Patient/${pseudo('Patient', MISSING)}`, `Observation?patient=${pseudo('Patient', MISSING)}`]));
    expectIdentical(a, b, 'batch');
    // The control: another patient's records are there, under their pseudonyms.
    expect((await get(researcher, '/Patient?_count=100')).text).toContain(pseudo('Patient', P.alice));
  });
});

describe('the admin port tells a consent-withheld record from a missing one in no metric', () => {
  // A red-team session read /metrics around its own requests: a per-patient consent lookup counter
  // rose by one for a withheld record (its patient's consents were read) and not for a missing one,
  // and the request counter labelled the withheld 404 `deny` and the missing 404 `error`.
  const adminUrl = () => `http://${stack.config.admin.host}:${stack.config.admin.port}`;
  const scrape = async (): Promise<Map<string, number>> => {
    const text = await (await fetch(`${adminUrl()}/metrics`)).text();
    const out = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (line.startsWith('#') || !line.startsWith('phi_gateway_')) continue;
      // Durations and process gauges move with time, not with what was withheld.
      if (/_seconds|process_|nodejs_|_bytes|inflight|audit_|last_reload/.test(line)) continue;
      const at = line.lastIndexOf(' ');
      out.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
    return out;
  };
  const delta = (before: Map<string, number>, after: Map<string, number>): string[] =>
    [...after].filter(([k, v]) => v !== (before.get(k) ?? 0)).map(([k, v]) => `${k} +${v - (before.get(k) ?? 0)}`).sort();

  /** What one request changes in /metrics, the first time (cold caches, maybe) and again (warm). */
  async function deltaOf(who: Who, path: string): Promise<string[][]> {
    await get(who, '/metadata'); // the token minted outside the probes
    const out: string[][] = [];
    for (let i = 0; i < 2; i++) {
      const before = await scrape();
      const r = await get(who, path);
      expect([200, 404]).toContain(r.status);
      out.push(delta(before, await scrape()));
    }
    return out;
  }

  it.each([
    ['coder, the Part 2 record', coder, `/Condition/${C.part2.condition}`, `/Condition/${MISSING}`],
    ['billing, the self-pay visit', billing, `/Encounter/${C.payerRestriction.encounter}`, `/Encounter/${MISSING}`],
    ['billing, claims of the restricted patient vs another', billing, `/Claim?patient=${P.brian}&_id=${C.payerRestriction.claim}`, `/Claim?patient=${P.brian}&_id=${MISSING}`],
    ['coder, a search by the Part 2 code', coder, `/Condition?patient=${P.paula}&code=F11.20`, `/Condition?patient=${P.paula}&code=F11.21`],
  ])('%s', async (_what, who, withheld, missing) => {
    const a = await deltaOf(who, withheld);
    const b = await deltaOf(who, missing);
    expect(a).toEqual(b);
    expect(a[1]!.some((l) => l.startsWith('phi_gateway_consent_requests_total{result="judged"}'))).toBe(true);
  });
});
