/**
 * Patients' consent directives end to end, against the real FHIR upstream (medplum, seeded with the
 * demo) and the shipped policy's `consent` section: every Consent a test relies on is written to the
 * upstream with its own client, for a patient of that test's own (a fresh chart per test, so no test
 * sees another's consents, and each patient's consents are looked up cold). Each provision element
 * (actor, purpose and a child purpose, period, class, code, security label, data instance and
 * related, nested provisions, actions), overlapping consents (deny-wins, and `latest` by a policy
 * edit), the cache's TTL against consents created and revoked upstream, consents the gateway cannot
 * read (withheld from every caller but break-glass, shown in /readyz and /metrics), 42 CFR Part 2
 * (the demo's SUD Condition, released with the redisclosure notice to the named recipient and
 * purpose only), break-glass over a deny (`override` and `never`), the exempt purpose (the patient's
 * own access), a purpose that needs the patient's authorization (HMARKT), the audit evidence,
 * searches (paging, total, `$everything`, includes, batches) and an upstream that cannot answer the
 * Consent search (503 consent-unavailable). A consent-withheld resource is answered exactly as one
 * that does not exist.
 */
import { rmSync } from 'node:fs';
import type { Bundle, Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { breakGlassDir } from '../../src/breakglass/index.js';
import { NOTICE_EXTENSION, REFRAIN_CODE, REFRAIN_SYSTEM } from '../../src/consent/types.js';
import { DEMO } from '../../src/demo/data.js';
import { DEFAULT_PART2_NOTICE } from '../../src/policy/compile.js';
import { fhirJson, raw, startFaultyUpstream, type FaultyUpstream } from '../helpers/faulty-upstream.js';
import { type ShippedPolicy, type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, comparableHeaders, errorCode, expectAbsent, expectError, type Received, receive } from '../security/support.js';

const FHIR_JSON = 'application/fhir+json';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';
const CONSENT_ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const SNOMED = 'http://snomed.info/sct';
const LOINC = 'http://loinc.org';
const C = DEMO.consents;
const REYES = { sub: 'dr-reyes', fhirUser: 'Practitioner/prac-reyes' };
const CHEN = { sub: 'dr-chen', fhirUser: 'Practitioner/prac-chen' };
const BTG_REASON = 'Patient unresponsive in the emergency department, chart needed now';

type Obj = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Callers

interface Who {
  readonly role: string;
  readonly purpose: string;
  readonly claims?: Record<string, unknown>;
  readonly headers?: Record<string, string>;
}

const reyes: Who = { role: 'clinician', purpose: 'TREAT', claims: REYES };
const reyesCoc: Who = { ...reyes, purpose: 'COC' };
const chen: Who = { role: 'clinician', purpose: 'TREAT', claims: CHEN };
const coder: Who = { role: 'coder', purpose: 'HOPERAT', claims: { sub: 'coder-1' } };
const billing: Who = { role: 'billing', purpose: 'HPAYMT', claims: { sub: 'billing-1' } };
const btg = (who: Who): Who => ({ ...who, purpose: 'BTG', headers: { 'x-break-glass-reason': BTG_REASON } });
/** The marketing role the test policy adds (tokens of the billing client, with the role replaced). */
const marketer: Who = { role: 'billing', purpose: 'HMARKT', claims: { sub: 'marketer-1', roles: ['marketer'] } };

const tokens = new Map<string, string>();

async function call(stack: Stack, who: Who, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Received> {
  const key = `${stack.url} ${who.role} ${JSON.stringify(who.claims ?? {})}`;
  if (!tokens.has(key)) tokens.set(key, await stack.token(who.role, who.claims));
  return receive(
    await stack.request(path, {
      token: tokens.get(key)!,
      purpose: who.purpose,
      method,
      headers: { accept: FHIR_JSON, ...who.headers, ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: FHIR_JSON }),
    }),
  );
}
const get = (stack: Stack, who: Who, path: string) => call(stack, who, 'GET', path);

// ---------------------------------------------------------------------------------------------
// Answers

type Entry = { resource?: Resource & Obj; search?: { mode?: string }; response?: { status?: string; outcome?: unknown } };
const entriesOf = (r: Received | unknown): Entry[] => (((r as Received).json ?? r) as { entry?: Entry[] }).entry ?? [];
const keysOf = (r: Received, mode?: string): string[] =>
  entriesOf(r)
    .filter((e) => e.resource !== undefined && e.search?.mode !== 'outcome' && (mode === undefined || e.search?.mode === mode))
    .map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
const nextOf = (r: Received): string | undefined => (r.json as Bundle).link?.find((l) => l.relation === 'next')?.url;

/** Every `self` link of a Bundle (nested ones too): the echo of the caller's own query. */
function selfLinks(json: unknown, out: string[] = []): string[] {
  if (Array.isArray(json)) for (const x of json) selfLinks(x, out);
  else if (json !== null && typeof json === 'object') {
    const o = json as Obj;
    if (o.relation === 'self' && typeof o.url === 'string') out.push(o.url);
    for (const v of Object.values(o)) selfLinks(v, out);
  }
  return out;
}

function withoutSelf(r: Received): string {
  let text = r.text;
  for (const url of selfLinks(r.json)) text = text.split(JSON.stringify(url).slice(1, -1)).join('<self>');
  return text;
}

/** Answered exactly alike (the request id, the date and the caller's own query in self links aside). */
function expectSameAnswer(a: Received, b: Received, what = ''): void {
  expect(a.status, what).toBe(b.status);
  expect(withoutSelf(a), what).toBe(withoutSelf(b));
  const headers = (r: Received) => comparableHeaders(r.headers).filter(([k]) => (k !== 'etag' && k !== 'content-length') || selfLinks(r.json).length === 0);
  expect(headers(a), what).toEqual(headers(b));
}

/** Follows `next` links (relative to the gateway) from a first page. */
async function allPages(stack: Stack, who: Who, first: Received): Promise<Received[]> {
  const pages = [first];
  for (let next = nextOf(first); next !== undefined; next = nextOf(pages.at(-1)!)) {
    expect(next.startsWith(stack.url)).toBe(true);
    pages.push(await get(stack, who, next.slice(stack.url.length)));
    expect(pages.length).toBeLessThan(30);
  }
  return pages;
}

// ---------------------------------------------------------------------------------------------
// Upstream fixtures: a chart per test, and its consents

async function upstream(stack: Stack, method: string, path: string, body?: unknown): Promise<{ status: number; json: Obj }> {
  const res = await fetch(`${stack.upstreamUrl}${path}`, {
    method,
    headers: body === undefined ? { accept: FHIR_JSON } : { accept: FHIR_JSON, 'content-type': FHIR_JSON },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as Obj) };
}

async function put(stack: Stack, r: Resource & Obj): Promise<void> {
  const res = await upstream(stack, 'PUT', `/${r.resourceType}/${r.id}`, r);
  expect(res.status, `${r.resourceType}/${r.id}: ${JSON.stringify(res.json).slice(0, 300)}`).toBeLessThan(300);
}

/** One patient's chart: `Type/id` of each record, and the text only it holds. */
interface Chart {
  readonly patient: string;
  readonly keys: {
    readonly patient: string;
    readonly encounter: string;
    /** Blood pressure, recorded in the encounter. */
    readonly bp: string;
    /** Body weight, no encounter. */
    readonly weight: string;
    /** An HIV test result labelled HIV (v3-ActCode). */
    readonly hiv: string;
    /** Diabetes (SNOMED 44054006), diagnosed in the encounter. */
    readonly diabetes: string;
    /** Hypertension (SNOMED 38341003). */
    readonly hypertension: string;
  };
  /** Every record's key. */
  readonly all: readonly string[];
  /** Text only one record of this chart holds: the patient's family name, and each record's own. */
  readonly text: { readonly family: string; readonly bp: string; readonly weight: string; readonly hiv: string; readonly diabetes: string; readonly hypertension: string };
}

let charts = 0;

/** Writes a fresh patient and its records to the upstream. */
async function chart(stack: Stack, tag: string): Promise<Chart> {
  const n = ++charts;
  const id = `cx-${tag}-${n}`;
  const family = `Consentfam${tag.replace(/[^a-z]/gi, '')}${n}`;
  const subject = { reference: `Patient/${id}` };
  const keys = {
    patient: `Patient/${id}`,
    encounter: `Encounter/${id}-enc`,
    bp: `Observation/${id}-bp`,
    weight: `Observation/${id}-wt`,
    hiv: `Observation/${id}-hiv`,
    diabetes: `Condition/${id}-dm`,
    hypertension: `Condition/${id}-htn`,
  };
  const idOf = (key: string) => key.split('/')[1]!;
  const note = (what: string) => `${what.toUpperCase()}NOTE${n}`;
  const text = { family, bp: note('bp'), weight: note('weight'), hiv: note('hiv'), diabetes: note('diabetes'), hypertension: note('hypertension') };
  const records: Array<Resource & Obj> = [
    { resourceType: 'Patient', id, name: [{ family, given: ['Consent'] }], gender: 'female', birthDate: '1970-01-01' },
    {
      resourceType: 'Encounter',
      id: idOf(keys.encounter),
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      subject,
      period: { start: '2024-02-01T09:00:00Z', end: '2024-02-01T09:30:00Z' },
    },
    {
      resourceType: 'Observation',
      id: idOf(keys.bp),
      status: 'final',
      code: { coding: [{ system: LOINC, code: '85354-9', display: 'Blood pressure panel' }], text: text.bp },
      subject,
      encounter: { reference: keys.encounter },
      effectiveDateTime: '2024-02-01T09:10:00Z',
    },
    {
      resourceType: 'Observation',
      id: idOf(keys.weight),
      status: 'final',
      code: { coding: [{ system: LOINC, code: '29463-7', display: 'Body weight' }], text: text.weight },
      subject,
      effectiveDateTime: '2024-02-02T09:10:00Z',
      valueQuantity: { value: 71.5, unit: 'kg' },
    },
    {
      resourceType: 'Observation',
      id: idOf(keys.hiv),
      meta: { security: [{ system: ACT_CODE, code: 'HIV' }] },
      status: 'final',
      code: { coding: [{ system: LOINC, code: '7917-8', display: 'HIV 1 Ab' }], text: text.hiv },
      subject,
      effectiveDateTime: '2024-02-03T09:10:00Z',
    },
    {
      resourceType: 'Condition',
      id: idOf(keys.diabetes),
      code: { coding: [{ system: SNOMED, code: '44054006', display: 'Diabetes mellitus type 2' }], text: text.diabetes },
      subject,
      encounter: { reference: keys.encounter },
      recordedDate: '2024-02-01',
    },
    {
      resourceType: 'Condition',
      id: idOf(keys.hypertension),
      code: { coding: [{ system: SNOMED, code: '38341003', display: 'Hypertension' }], text: text.hypertension },
      subject,
      recordedDate: '2024-02-04',
    },
  ];
  for (const r of records) await put(stack, r);
  return { patient: id, keys, all: Object.values(keys), text };
}

type Provision = Obj;
const purpose = (code: string) => ({ system: ACT_REASON, code });
const actor = (reference: string) => ({ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference } });
const action = (code: string) => ({ coding: [{ system: CONSENT_ACTION, code }] });
const resourceClass = (code: string) => ({ system: 'http://hl7.org/fhir/resource-types', code });

let consents = 0;

/** Writes an active patient-privacy Consent for `patient` to the upstream; its `Consent/id`. */
async function consent(stack: Stack, patient: string, opts: { rule?: 'OPTIN' | 'OPTOUT'; provision?: Provision; dateTime?: string; extra?: Obj } = {}): Promise<string> {
  const id = `cx-consent-${++consents}`;
  await put(stack, {
    resourceType: 'Consent',
    id,
    status: 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: LOINC, code: '59284-0' }] }],
    patient: { reference: `Patient/${patient}` },
    dateTime: opts.dateTime ?? '2024-05-01T10:00:00Z',
    policyRule: { coding: [{ system: ACT_CODE, code: opts.rule ?? 'OPTIN' }] },
    ...(opts.provision === undefined ? {} : { provision: opts.provision }),
    ...opts.extra,
  } as Resource & Obj);
  return `Consent/${id}`;
}

// ---------------------------------------------------------------------------------------------
// Checks

/**
 * The caller sees exactly `visible` of the chart: each record read answers 200, every other one
 * answers as a record that does not exist; the patient's Observation and Condition searches and
 * `$everything` (where the data set grants it) hold the visible ones only.
 */
async function expectSees(stack: Stack, who: Who, c: Chart, visible: readonly string[], opts: { everything?: boolean } = {}): Promise<void> {
  const hidden = c.all.filter((k) => !visible.includes(k));
  for (const key of c.all) {
    const r = await get(stack, who, `/${key}`);
    if (visible.includes(key)) {
      expect(r.status, `${who.role}/${who.purpose} ${key}`).toBe(200);
    } else {
      const type = key.split('/')[0];
      expectSameAnswer(r, await get(stack, who, `/${type}/cx-does-not-exist`), `${who.role}/${who.purpose} ${key}`);
    }
  }
  const search = async (type: string) => {
    const r = await get(stack, who, `/${type}?patient=${c.patient}&_count=50`);
    expect(r.status).toBe(200);
    return keysOf(r).sort();
  };
  expect(await search('Observation'), `${who.role}/${who.purpose} observations`).toEqual(visible.filter((k) => k.startsWith('Observation/')).sort());
  expect(await search('Condition'), `${who.role}/${who.purpose} conditions`).toEqual(visible.filter((k) => k.startsWith('Condition/')).sort());
  if (opts.everything !== false && visible.includes(c.keys.patient)) {
    const all = await get(stack, who, `/Patient/${c.patient}/$everything`);
    expect(all.status).toBe(200);
    for (const k of hidden) expect(keysOf(all), `$everything: ${k}`).not.toContain(k);
    for (const k of visible) expect(keysOf(all), `$everything: ${k}`).toContain(k);
  }
}

const admin = (s: Stack): string => `http://${s.config.admin.host}:${s.config.admin.port}`;

/** The gateway's /metrics value of one series (NaN when absent). */
async function metric(stack: Stack, series: string): Promise<number> {
  const text = await (await fetch(`${admin(stack)}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

async function until(what: string, withinMs: number, ok: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await ok()) return Date.now() - started;
    if (Date.now() - started > withinMs) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The shipped policy with consent enforced as these tests need it: break-glass overrides a deny and
 * releases Part 2 data (unless changed), sessions are not rationed, a `marketing` data set whose
 * purpose (HMARKT) needs the patient's authorization, granted to a `marketer` role, and a `patient`
 * role for the patient's own access (PATRQT).
 */
function testPolicy(edit?: (consent: Obj) => void): (p: ShippedPolicy) => void {
  return (p) => {
    const section = (p.consent ?? {}) as Obj;
    section.breakGlass = 'override';
    section.part2 = { ...((section.part2 as Obj | undefined) ?? {}), breakGlass: true };
    edit?.(section);
    p.consent = section;
    (p.breakGlass as Obj).maxSessionsPerDay = 1000;
    p.dataSets.marketing = {
      description: 'Marketing communications: only with the patient authorization (HIPAA 164.508).',
      consent: { authorization: ['HMARKT'] },
      rules: [{ types: ['Patient'], elements: ['name', 'address'] }],
    } as unknown as ShippedPolicy['dataSets'][string];
    p.roles.marketer = { description: 'Marketing staff.', purposes: { HMARKT: 'marketing' } };
    // The patient's own access (a patient-context token), which consent does not restrict.
    p.dataSets['own-record'] = {
      description: "The patient's own record.",
      rules: [{ types: ['Patient', 'Encounter', 'Observation', 'Condition'] }],
    } as unknown as ShippedPolicy['dataSets'][string];
    p.roles.patient = { description: 'Patients, through a patient portal app.', purposes: { PATRQT: 'own-record' } };
  };
}

async function closeStack(stack: Stack | undefined): Promise<void> {
  await stack?.close();
  if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------

describe('consent directives through the gateway (shipped policy, real upstream)', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ consent: true, policy: testPolicy() });
  }, 60_000);
  afterAll(async () => {
    await closeStack(stack);
  });

  describe('each provision element decides where it applies', () => {
    it('actor: a deny naming one practitioner withholds from that practitioner only', async () => {
      const c = await chart(stack, 'actor');
      const id = await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', actor: [actor('Practitioner/prac-chen')] }] } });
      await expectSees(stack, reyes, c, c.all);
      await expectSees(stack, chen, c, []);
      const r = await get(stack, chen, `/${c.keys.bp}`);
      const record = await auditFor(stack, r.requestId);
      expect(record.consent).toMatchObject({ restricted: [id], withheld: 1 });
      expect(record.disclosed.resources).toEqual([]);
      // An absolute actor reference names the same practitioner.
      const c2 = await chart(stack, 'actor-abs');
      await consent(stack, c2.patient, { provision: { provision: [{ type: 'deny', actor: [actor('https://ehr.example/fhir/Practitioner/prac-chen')] }] } });
      await expectSees(stack, chen, c2, [], { everything: false });
      await expectSees(stack, reyes, c2, c2.all, { everything: false });
    });

    it('purpose: a deny naming TREAT covers its child COC; one naming COC leaves TREAT alone', async () => {
      const c = await chart(stack, 'purpose');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', purpose: [purpose('TREAT')] }] } });
      await expectSees(stack, reyes, c, []);
      await expectSees(stack, reyesCoc, c, []);
      // The coder (operations) is not restricted by it.
      await expectSees(stack, coder, c, [c.keys.patient, c.keys.encounter, c.keys.bp, c.keys.weight, c.keys.hiv, c.keys.diabetes, c.keys.hypertension], { everything: false });

      const child = await chart(stack, 'purpose-child');
      await consent(stack, child.patient, { provision: { provision: [{ type: 'deny', purpose: [purpose('COC')] }] } });
      await expectSees(stack, reyes, child, child.all);
      await expectSees(stack, reyesCoc, child, []);
    });

    it('period: a provision in force withholds; one over, or a whole consent expired, does not', async () => {
      const inForce = await chart(stack, 'period-in');
      await consent(stack, inForce.patient, { provision: { provision: [{ type: 'deny', period: { start: '2020-01-01', end: '2099-12-31' } }] } });
      await expectSees(stack, reyes, inForce, []);

      const over = await chart(stack, 'period-out');
      await consent(stack, over.patient, { provision: { provision: [{ type: 'deny', period: { start: '2020-01-01', end: '2021-12-31' } }] } });
      await expectSees(stack, reyes, over, over.all);

      const future = await chart(stack, 'period-future');
      await consent(stack, future.patient, { provision: { provision: [{ type: 'deny', period: { start: '2098-01-01' } }] } });
      await expectSees(stack, reyes, future, future.all);

      const expired = await chart(stack, 'period-expired');
      await consent(stack, expired.patient, { rule: 'OPTOUT', provision: { period: { start: '2023-01-01', end: '2023-12-31' } } });
      await expectSees(stack, reyes, expired, expired.all);
      // The demo's expired consent (Edith, 2023) restricts nothing either.
      expect((await get(stack, reyes, `/Patient/${DEMO.patients.elder}`)).status).toBe(200);
    });

    it('class: a deny of Observations withholds them, not the rest of the chart', async () => {
      const c = await chart(stack, 'class');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', class: [resourceClass('Observation')] }] } });
      await expectSees(stack, reyes, c, [c.keys.patient, c.keys.encounter, c.keys.diabetes, c.keys.hypertension]);
    });

    it("code: a deny of one diagnosis code withholds that record only", async () => {
      const c = await chart(stack, 'code');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', code: [{ coding: [{ system: SNOMED, code: '44054006' }] }] }] } });
      await expectSees(stack, reyes, c, c.all.filter((k) => k !== c.keys.diabetes));
      // The same code under another system is another code.
      const other = await chart(stack, 'code-system');
      await consent(stack, other.patient, { provision: { provision: [{ type: 'deny', code: [{ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: '44054006' }] }] }] } });
      await expectSees(stack, reyes, other, other.all, { everything: false });
    });

    it('securityLabel: a deny of label HIV withholds the labelled record only', async () => {
      const c = await chart(stack, 'label');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', securityLabel: [{ system: ACT_CODE, code: 'HIV' }] }] } });
      await expectSees(stack, reyes, c, c.all.filter((k) => k !== c.keys.hiv));
    });

    it('data: `instance` withholds that record; `related` also what references it', async () => {
      const c = await chart(stack, 'instance');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', data: [{ meaning: 'instance', reference: { reference: c.keys.encounter } }] }] } });
      await expectSees(stack, reyes, c, c.all.filter((k) => k !== c.keys.encounter));

      const r = await chart(stack, 'related');
      await consent(stack, r.patient, { provision: { provision: [{ type: 'deny', data: [{ meaning: 'related', reference: { reference: r.keys.encounter } }] }] } });
      // The encounter, and the blood pressure and diagnosis recorded in it.
      await expectSees(stack, reyes, r, r.all.filter((k) => ![r.keys.encounter, r.keys.bp, r.keys.diabetes].includes(k)));
    });

    it('nested provisions: an exception to an exception decides where it applies', async () => {
      const c = await chart(stack, 'nested');
      // Nothing is shared, except Observations and Conditions, except diabetes.
      await consent(stack, c.patient, {
        rule: 'OPTOUT',
        provision: {
          provision: [
            {
              type: 'permit',
              class: [resourceClass('Observation'), resourceClass('Condition')],
              provision: [{ type: 'deny', code: [{ coding: [{ system: SNOMED, code: '44054006' }] }] }],
            },
          ],
        },
      });
      await expectSees(stack, reyes, c, [c.keys.bp, c.keys.weight, c.keys.hiv, c.keys.hypertension]);
    });

    it('action: a provision about collecting or correcting data does not concern reading it', async () => {
      const c = await chart(stack, 'action');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', action: [action('collect'), action('correct')] }] } });
      await expectSees(stack, reyes, c, c.all);
      const reading = await chart(stack, 'action-access');
      await consent(stack, reading.patient, { provision: { provision: [{ type: 'deny', action: [action('access')] }] } });
      await expectSees(stack, reyes, reading, []);
    });
  });

  it('overlapping consents: a deny wins (deny-wins, the shipped default), whichever is newer', async () => {
    const c = await chart(stack, 'overlap');
    const optIn = await consent(stack, c.patient, { rule: 'OPTIN', dateTime: '2024-06-01T00:00:00Z' });
    const optOut = await consent(stack, c.patient, { rule: 'OPTOUT', dateTime: '2023-01-01T00:00:00Z' });
    await expectSees(stack, reyes, c, []);
    const r = await get(stack, reyes, `/${c.keys.patient}`);
    expect((await auditFor(stack, r.requestId)).consent?.restricted).toEqual([optOut]);
    expect((await auditFor(stack, r.requestId)).consent?.restricted).not.toContain(optIn);
  });

  it('a consent the gateway cannot read withholds the patient from every caller but break-glass, and /readyz and /metrics show it', async () => {
    const dataPeriod = await chart(stack, 'unreadable');
    const bad = await consent(stack, dataPeriod.patient, { provision: { dataPeriod: { start: '2020-01-01' } } });
    const modifier = await chart(stack, 'modifier');
    const bad2 = await consent(stack, modifier.patient, { extra: { modifierExtension: [{ url: 'https://example.org/fhir/StructureDefinition/only-on-tuesdays', valueBoolean: true }] } });
    for (const c of [dataPeriod, modifier]) {
      await expectSees(stack, reyes, c, []);
      await expectSees(stack, coder, c, [], { everything: false });
      const b = await get(stack, billing, `/Patient/${c.patient}`);
      expectSameAnswer(b, await get(stack, billing, '/Patient/cx-does-not-exist'));
      const searched = await get(stack, billing, `/Condition?patient=${c.patient}`);
      expect(keysOf(searched)).toEqual([]);
    }
    const r = await get(stack, reyes, `/${dataPeriod.keys.patient}`);
    expect((await auditFor(stack, r.requestId)).consent).toMatchObject({ unevaluable: [dataPeriod.patient], withheld: 1 });

    // Break-glass opens the chart; the record names the consent it could not read as overridden.
    const opened = await get(stack, btg(reyes), `/${dataPeriod.keys.patient}`);
    expect(opened.status).toBe(200);
    const record = await auditFor(stack, opened.requestId);
    expect(record.breakGlass?.reason).toBe(BTG_REASON);
    expect(record.consent?.overridden).toContain(bad);
    const obs = await get(stack, btg(reyes), `/Observation?patient=${dataPeriod.patient}`);
    expect(keysOf(obs).sort()).toEqual([dataPeriod.keys.bp, dataPeriod.keys.weight, dataPeriod.keys.hiv].sort());

    const ready = await fetch(`${admin(stack)}/readyz`);
    expect(ready.status).toBe(200);
    const detail = (await ready.json()) as { consent?: { unevaluablePatients: number; unevaluable: Array<{ id: string; reason: string }> } };
    expect(detail.consent?.unevaluablePatients).toBeGreaterThanOrEqual(2);
    const listed = new Map(detail.consent?.unevaluable.map((u) => [u.id, u.reason]));
    expect(listed.get(bad)).toMatch(/dataPeriod/);
    expect(listed.get(bad2)).toMatch(/modifierExtension/);
    // No patient is named there, nor in the logs.
    expect(JSON.stringify(detail)).not.toContain(dataPeriod.patient);
    expect(await metric(stack, 'phi_gateway_consent_unevaluable_patients')).toBeGreaterThanOrEqual(2);
    const warned = stack.logs.filter((l) => l.includes(bad.split('/')[1]!));
    expect(warned.length).toBeGreaterThan(0);
    for (const l of warned) expect(l).not.toContain(dataPeriod.patient);
  });

  describe('42 CFR Part 2 (the demo: Paula consents to Dr. Reyes, for treatment, seeing her SUD record)', () => {
    const path = `/Condition/${C.part2.condition}`;

    it('released to the named recipient for the named purpose (and its child), with the refrain label and the redisclosure notice', async () => {
      for (const who of [reyes, reyesCoc]) {
        const r = await get(stack, who, path);
        expect(r.status, who.purpose).toBe(200);
        const meta = (r.json as { meta?: { security?: Obj[]; extension?: Obj[] } }).meta;
        expect(meta?.security).toContainEqual(expect.objectContaining({ system: REFRAIN_SYSTEM, code: REFRAIN_CODE }));
        expect(meta?.security).toContainEqual(expect.objectContaining({ system: ACT_CODE, code: 'SUD' }));
        expect(meta?.extension).toContainEqual({ url: NOTICE_EXTENSION, valueString: DEFAULT_PART2_NOTICE });
        const record = await auditFor(stack, r.requestId);
        expect(record.consent).toMatchObject({ part2: 1, permitted: [`Consent/${C.part2.id}`], withheld: 0 });
      }
      // In searches too, and the rest of her chart carries no notice.
      const searched = await get(stack, reyes, `/Condition?patient=${DEMO.patients.paula}`);
      const conditions = entriesOf(searched).map((e) => e.resource!);
      const sud = conditions.find((x) => x.id === C.part2.condition);
      expect(sud?.meta?.extension).toContainEqual({ url: NOTICE_EXTENSION, valueString: DEFAULT_PART2_NOTICE });
      for (const x of conditions.filter((y) => y.id !== C.part2.condition)) expect(JSON.stringify(x.meta ?? {})).not.toContain(NOTICE_EXTENSION);
      expect((await auditFor(stack, searched.requestId)).consent?.part2).toBe(1);
    });

    it('withheld, as a record that does not exist, from another practitioner and from another purpose', async () => {
      const coderAsReyes: Who = { role: 'coder', purpose: 'HOPERAT', claims: { sub: 'coder-reyes', fhirUser: REYES.fhirUser } };
      for (const who of [chen, coder, coderAsReyes]) {
        const r = await get(stack, who, path);
        expectError(r, 404, 'not-found');
        expectSameAnswer(r, await get(stack, who, '/Condition/cx-does-not-exist'), `${who.role} ${JSON.stringify(who.claims)}`);
        expectAbsent(r, ['Opioid', '75544000', 'F11.20', DEMO.notes.sud]);
        const record = await auditFor(stack, r.requestId);
        expect(record.consent?.withheld).toBe(1);
        expect(record.disclosed.resources).toEqual([]);
        const searched = await get(stack, who, `/Condition?patient=${DEMO.patients.paula}`);
        expect(keysOf(searched)).not.toContain(`Condition/${C.part2.condition}`);
        expectAbsent(searched, ['Opioid', '75544000', 'F11.20', DEMO.notes.sud]);
      }
    });

    it('under break-glass (part2.breakGlass: a medical emergency) released, and the record says overridden', async () => {
      // Break-glass opens one patient's chart: the request names her.
      const r = await get(stack, btg(chen), `/Condition?patient=${DEMO.patients.paula}&_id=${C.part2.condition}`);
      expect(r.status).toBe(200);
      const [sud] = entriesOf(r).map((e) => e.resource!);
      expect(sud?.id).toBe(C.part2.condition);
      expect(sud?.meta?.extension).toContainEqual({ url: NOTICE_EXTENSION, valueString: DEFAULT_PART2_NOTICE });
      const record = await auditFor(stack, r.requestId);
      expect(record.breakGlass).toBeDefined();
      expect(record.consent?.overridden).toContain(`Consent/${C.part2.id}`);
      expect(record.consent?.part2).toBe(1);
    });
  });

  it('break-glass over a deny (breakGlass: override): released, and recorded as overridden', async () => {
    const c = await chart(stack, 'btg-override');
    const id = await consent(stack, c.patient, { rule: 'OPTOUT' });
    await expectSees(stack, reyes, c, []);
    const r = await get(stack, btg(reyes), `/Observation?patient=${c.patient}&code=${LOINC}|85354-9`);
    expect(r.status).toBe(200);
    expect(keysOf(r)).toEqual([c.keys.bp]);
    const record = await auditFor(stack, r.requestId);
    expect(record.consent).toMatchObject({ overridden: [id], withheld: 0 });
    expect(record.disclosed.resources).toEqual([c.keys.bp]);
    expect((await get(stack, btg(reyes), `/${c.keys.patient}`)).status).toBe(200);
    // The treatment purpose is not opened by it.
    expectError(await get(stack, reyes, `/${c.keys.bp}`), 404, 'not-found');
  });

  it("the patient's own access (PATRQT, a patient-context token) is not restricted by the patient's consents", async () => {
    const c = await chart(stack, 'exempt');
    await consent(stack, c.patient, { rule: 'OPTOUT' });
    await expectSees(stack, reyes, c, [], { everything: false });
    const self: Who = { role: 'billing', purpose: 'PATRQT', claims: { sub: `patient-${c.patient}`, roles: ['patient'], patient: c.patient } };
    for (const key of [c.keys.patient, c.keys.bp, c.keys.diabetes]) {
      const r = await get(stack, self, `/${key}`);
      expect(r.status, key).toBe(200);
      expect((await auditFor(stack, r.requestId)).consent).toBeUndefined();
    }
    expect(keysOf(await get(stack, self, `/Observation?patient=${c.patient}`)).length).toBeGreaterThan(0);
  });

  it('a purpose that needs the patient authorization (HMARKT) is released only under a permit naming it', async () => {
    const none = await chart(stack, 'auth-none');
    const wrong = await chart(stack, 'auth-wrong');
    await consent(stack, wrong.patient, { provision: { provision: [{ type: 'permit', purpose: [purpose('TREAT')] }] } });
    const optIn = await chart(stack, 'auth-optin');
    await consent(stack, optIn.patient, { rule: 'OPTIN' });
    const granted = await chart(stack, 'auth-granted');
    const permit = await consent(stack, granted.patient, { provision: { provision: [{ type: 'permit', purpose: [purpose('HMARKT')] }] } });

    const missing = await get(stack, marketer, '/Patient/cx-does-not-exist');
    expectError(missing, 404, 'not-found');
    // No consent, a permit for another purpose, a general opt-in: not an authorization.
    for (const c of [none, wrong, optIn]) {
      const r = await get(stack, marketer, `/${c.keys.patient}`);
      expectSameAnswer(r, missing, c.patient);
      expect((await auditFor(stack, r.requestId)).consent?.withheld).toBe(1);
    }
    const r = await get(stack, marketer, `/${granted.keys.patient}`);
    expect(r.status).toBe(200);
    expect((await auditFor(stack, r.requestId)).consent).toMatchObject({ permitted: [permit], withheld: 0 });
    // A search over all of them releases the authorized patient only.
    const ids = [none, wrong, optIn, granted].map((c) => c.patient).join(',');
    const searched = await get(stack, marketer, `/Patient?_id=${ids}`);
    expect(keysOf(searched)).toEqual([granted.keys.patient]);
    expect((await auditFor(stack, searched.requestId)).consent).toMatchObject({ permitted: [permit], withheld: 3 });
    // Other purposes of the same patients need no authorization.
    expect((await get(stack, reyes, `/${none.keys.patient}`)).status).toBe(200);
  });

  describe('searches', () => {
    it('withheld matches vanish; paging follows what the caller may see; total counts it', async () => {
      const c = await chart(stack, 'paging');
      // Two of the three Observations are withheld.
      await consent(stack, c.patient, {
        provision: { provision: [{ type: 'deny', code: [{ coding: [{ system: LOINC, code: '85354-9' }] }, { coding: [{ system: LOINC, code: '7917-8' }] }] }] },
      });
      const first = await get(stack, reyes, `/Observation?patient=${c.patient}&_count=1`);
      const pages = await allPages(stack, reyes, first);
      expect(pages.flatMap((p) => keysOf(p))).toEqual([c.keys.weight]);
      expect(pages).toHaveLength(1);
      // A result of the same size with nothing withheld pages the same way.
      const conditions = await allPages(stack, reyes, await get(stack, reyes, `/Condition?patient=${c.patient}&_count=1`));
      expect(conditions.map((p) => keysOf(p).length)).toEqual([1, 1]);

      const counted = await get(stack, reyes, `/Observation?patient=${c.patient}&_total=accurate`);
      expect(keysOf(counted)).toEqual([c.keys.weight]);
      // `total` counts what the caller may see, never the withheld matches: what a result of one
      // match answers when nothing is withheld.
      expect((counted.json as Bundle).total).toBe(1);
      for (const p of [...pages, counted]) expectAbsent(p, [c.text.bp, c.text.hiv]);
      const record = await auditFor(stack, counted.requestId);
      expect(record.consent?.withheld).toBe(2);
    });

    it('paging across many pages with withheld entries between them', async () => {
      const c = await chart(stack, 'many');
      const extra: string[] = [];
      for (let i = 0; i < 8; i++) {
        const id = `${c.patient}-obs-${i}`;
        await put(stack, {
          resourceType: 'Observation',
          id,
          status: 'final',
          code: { coding: [{ system: LOINC, code: i % 2 === 0 ? '8867-4' : '9279-1' }] },
          subject: { reference: `Patient/${c.patient}` },
          effectiveDateTime: `2024-03-0${i + 1}T00:00:00Z`,
        });
        extra.push(`Observation/${id}`);
      }
      // Heart rates (8867-4) withheld: every other one.
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', code: [{ coding: [{ system: LOINC, code: '8867-4' }] }] }] } });
      const visible = [c.keys.bp, c.keys.weight, c.keys.hiv, ...extra.filter((_, i) => i % 2 === 1)].sort();
      for (const count of [1, 2, 3]) {
        const pages = await allPages(stack, reyes, await get(stack, reyes, `/Observation?patient=${c.patient}&_count=${count}`));
        const seen = pages.flatMap((p) => keysOf(p));
        expect(seen.sort(), `_count=${count}`).toEqual(visible);
        // Full pages but the last, never an empty one.
        expect(pages.slice(0, -1).every((p) => keysOf(p).length === count), `_count=${count}`).toBe(true);
        expect(keysOf(pages.at(-1)!).length).toBeGreaterThan(0);
      }
    });

    it('$everything, _include and _revinclude release nothing withheld', async () => {
      const c = await chart(stack, 'includes');
      // The Patient resource and the blood pressure are withheld.
      await consent(stack, c.patient, {
        provision: { provision: [{ type: 'deny', class: [resourceClass('Patient')] }, { type: 'deny', data: [{ meaning: 'instance', reference: { reference: c.keys.bp } }] }] },
      });
      const everything = await get(stack, reyes, `/Patient/${c.patient}/$everything`);
      expectSameAnswer(everything, await get(stack, reyes, '/Patient/cx-does-not-exist/$everything'));

      const included = await get(stack, reyes, `/Observation?patient=${c.patient}&_include=Observation:subject`);
      expect(keysOf(included).sort()).toEqual([c.keys.weight, c.keys.hiv].sort());
      const revincluded = await get(stack, reyes, `/Encounter?patient=${c.patient}&_revinclude=Observation:encounter`);
      expect(keysOf(revincluded)).toEqual([c.keys.encounter]);
      const conditions = await get(stack, reyes, `/Condition?patient=${c.patient}&_include=Condition:encounter&_include=Condition:subject`);
      expect(keysOf(conditions).sort()).toEqual([c.keys.diabetes, c.keys.hypertension, c.keys.encounter].sort());
      for (const r of [everything, included, revincluded, conditions]) expectAbsent(r, [c.text.family, c.text.bp]);
      // The upstream did hold them: the includes were withheld by the gateway.
      const held = JSON.stringify((await upstream(stack, 'GET', `/Observation?patient=${c.patient}&_include=Observation:subject`)).json);
      expect(held).toContain(c.text.family);
      expect(held).toContain(c.text.bp);

      // $everything of a visible patient leaves the withheld record out.
      const d = await chart(stack, 'everything');
      await consent(stack, d.patient, { provision: { provision: [{ type: 'deny', class: [resourceClass('Condition')] }] } });
      const all = await get(stack, reyes, `/Patient/${d.patient}/$everything`);
      expect(keysOf(all)).toEqual(expect.arrayContaining([d.keys.patient, d.keys.bp, d.keys.encounter]));
      expect(keysOf(all)).not.toContain(d.keys.diabetes);
      expect(keysOf(all)).not.toContain(d.keys.hypertension);
      expect((await auditFor(stack, all.requestId)).consent?.withheld).toBe(2);
    });

    it('batch: a withheld read answers 404 in its entry, exactly as a missing one; searches in it are filtered', async () => {
      const c = await chart(stack, 'batch');
      await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', class: [resourceClass('Condition')] }] } });
      const bundle = (urls: string[], type = 'batch') => ({ resourceType: 'Bundle', type, entry: urls.map((url) => ({ request: { method: 'GET', url } })) });
      const withheld = await call(stack, reyes, 'POST', '/', bundle([c.keys.bp, c.keys.diabetes, `Condition?patient=${c.patient}`]));
      const missing = await call(stack, reyes, 'POST', '/', bundle([c.keys.bp, 'Condition/cx-does-not-exist', `Condition?patient=${c.patient}`]));
      expect(withheld.status).toBe(200);
      const [visible, hidden, searched] = entriesOf(withheld);
      expect(visible?.response?.status).toMatch(/^200/);
      expect(hidden?.response?.status).toMatch(/^404/);
      expect(errorCode(hidden?.response?.outcome)).toBe('not-found');
      expect(keysOf({ json: searched?.resource } as Received)).toEqual([]);
      expectSameAnswer(withheld, missing);
      expectAbsent(withheld, [c.text.diabetes, c.text.hypertension]);
      expect((await auditFor(stack, withheld.requestId)).consent?.withheld).toBe(3);
      // A transaction fails as a whole, alike.
      const t1 = await call(stack, reyes, 'POST', '/', bundle([c.keys.diabetes], 'transaction'));
      const t2 = await call(stack, reyes, 'POST', '/', bundle(['Condition/cx-does-not-exist'], 'transaction'));
      expectSameAnswer(t1, t2);
    });
  });

  it('the audit record carries what consent did, and nothing when it did nothing', async () => {
    const c = await chart(stack, 'audit');
    const id = await consent(stack, c.patient, { provision: { provision: [{ type: 'deny', class: [resourceClass('Condition')] }] } });
    const none = await get(stack, reyes, `/${c.keys.bp}`);
    expect((await auditFor(stack, none.requestId)).consent).toBeUndefined();
    const some = await get(stack, reyes, `/Condition?patient=${c.patient}`);
    const record: ChainedRecord = await auditFor(stack, some.requestId);
    expect(record.consent).toEqual({ restricted: [id], withheld: 2 });
    expect(record.disclosed.resourcesWithheld).toBeGreaterThanOrEqual(2);
    expect(record.decision).toBe('allow');
  });

  it('payer restriction (the demo: Brian restricted a self-paid visit from payment)', async () => {
    const PR = C.payerRestriction;
    // The self-pay Coverage is named as an instance: no Encounter reference leads to it.
    for (const key of [`Encounter/${PR.encounter}`, `Condition/${PR.condition}`, `Claim/${PR.claim}`, `Coverage/${PR.coverage}`]) {
      const r = await get(stack, billing, `/${key}`);
      expectSameAnswer(r, await get(stack, billing, `/${key.split('/')[0]}/cx-does-not-exist`), key);
      expect((await auditFor(stack, r.requestId)).consent?.restricted).toEqual([`Consent/${PR.id}`]);
      // Treatment is not restricted.
      if (!key.startsWith('Claim/') && !key.startsWith('Coverage/')) expect((await get(stack, reyes, `/${key}`)).status, key).toBe(200);
    }
    for (const key of [`Encounter/${PR.otherEncounter}`, `Coverage/cov-brian`, `Patient/${DEMO.patients.brian}`]) {
      expect((await get(stack, billing, `/${key}`)).status, key).toBe(200);
    }
    const claims = await get(stack, billing, `/Claim?patient=${DEMO.patients.brian}`);
    expect(keysOf(claims)).not.toContain(`Claim/${PR.claim}`);
    expectAbsent(claims, ['Erectile', '860914002', 'N52.9']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('consent variants by policy edit: overlap latest, break-glass never, a short cache', () => {
  const TTL_MS = 2000;
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      consent: true,
      policy: testPolicy((section) => {
        section.overlap = 'latest';
        section.breakGlass = 'never';
        section.cacheSeconds = TTL_MS / 1000;
      }),
    });
  }, 60_000);
  afterAll(async () => {
    await closeStack(stack);
  });

  it('overlap latest: the newest consent with an opinion decides', async () => {
    const permitNewer = await chart(stack, 'latest-permit');
    await consent(stack, permitNewer.patient, { rule: 'OPTOUT', dateTime: '2023-01-01T00:00:00Z' });
    await consent(stack, permitNewer.patient, { rule: 'OPTIN', dateTime: '2024-06-01T00:00:00Z' });
    await expectSees(stack, reyes, permitNewer, permitNewer.all);

    const denyNewer = await chart(stack, 'latest-deny');
    await consent(stack, denyNewer.patient, { rule: 'OPTIN', dateTime: '2023-01-01T00:00:00Z' });
    const newest = await consent(stack, denyNewer.patient, { rule: 'OPTOUT', dateTime: '2024-06-01T00:00:00Z' });
    await expectSees(stack, reyes, denyNewer, []);
    const r = await get(stack, reyes, `/${denyNewer.keys.patient}`);
    expect((await auditFor(stack, r.requestId)).consent?.restricted).toEqual([newest]);

    // A newer consent that has no opinion on a record leaves it to the older one.
    const partial = await chart(stack, 'latest-partial');
    await consent(stack, partial.patient, { provision: { provision: [{ type: 'deny', class: [resourceClass('Condition')] }] }, dateTime: '2023-01-01T00:00:00Z' });
    await consent(stack, partial.patient, { rule: undefined, provision: { provision: [{ type: 'permit', class: [resourceClass('Observation')] }] }, dateTime: '2024-06-01T00:00:00Z', extra: { policyRule: undefined } });
    await expectSees(stack, reyes, partial, partial.all.filter((k) => !k.startsWith('Condition/')), { everything: false });
  });

  it('break-glass never overrides a deny (breakGlass: never): withheld, as a record that does not exist', async () => {
    const c = await chart(stack, 'btg-never');
    await consent(stack, c.patient, { rule: 'OPTOUT' });
    const r = await get(stack, btg(reyes), `/${c.keys.patient}`);
    expectError(r, 404, 'not-found');
    const record = await auditFor(stack, r.requestId);
    expect(record.breakGlass).toBeDefined();
    expect(record.consent?.withheld).toBe(1);
    expect(record.consent?.overridden).toBeUndefined();
    // A search naming the patient: the withheld matches vanish, as if there were none.
    const searched = await get(stack, btg(reyes), `/Observation?patient=${c.patient}`);
    expect(searched.status).toBe(200);
    expect(keysOf(searched)).toEqual([]);
    expectAbsent(searched, [c.text.bp, c.text.weight, c.text.hiv]);
  });

  it('a consent created upstream takes effect within the TTL; revoked (inactive), it stops within the TTL', async () => {
    const c = await chart(stack, 'ttl');
    const read = () => get(stack, reyes, `/${c.keys.bp}`);
    expect((await read()).status).toBe(200);
    // Let that lookup expire, so the next one is fresh and the cache warm when the consent is created.
    await new Promise((r) => setTimeout(r, TTL_MS + 100));
    expect((await read()).status).toBe(200);
    const id = await consent(stack, c.patient, { rule: 'OPTOUT' });
    const took = await until('the new consent takes effect', TTL_MS + 3000, async () => (await read()).status === 404);
    expect(took).toBeLessThanOrEqual(TTL_MS + 3000);
    expectError(await read(), 404, 'not-found');

    const stored = (await upstream(stack, 'GET', `/${id}`)).json;
    expect((await upstream(stack, 'PUT', `/${id}`, { ...stored, status: 'inactive' })).status).toBeLessThan(300);
    await until('the revoked consent stops', TTL_MS + 3000, async () => (await read()).status === 200);
    expect((await read()).status).toBe(200);
  }, 20_000);
});

// ---------------------------------------------------------------------------------------------

describe('an upstream that cannot answer the Consent search refuses (503 consent-unavailable), never answers', () => {
  let up: FaultyUpstream;
  let stack: Stack;
  const SECRET = 'CONSENT-FAULT-SECRET-2291';
  const patient = { resourceType: 'Patient', id: 'p-fault', name: [{ family: SECRET }] };
  const observation = { resourceType: 'Observation', id: 'o-fault', status: 'final', code: { text: SECRET }, subject: { reference: 'Patient/p-fault' } };

  beforeAll(async () => {
    up = await startFaultyUpstream();
    up.set('/Patient/p-fault', fhirJson(patient));
    up.set('/Observation', fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: [{ fullUrl: `${up.url}/Observation/o-fault`, resource: observation, search: { mode: 'match' } }] }));
    up.set('/Organization/org-1', fhirJson({ resourceType: 'Organization', id: 'org-1', name: 'Not patient data' }));
    up.set('/Consent', raw(500, { 'content-type': FHIR_JSON }, JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: SECRET }] })));
    stack = await startStack({ consent: true, upstreamUrl: up.url, policy: testPolicy() });
  }, 60_000);
  afterAll(async () => {
    await closeStack(stack);
    await up?.close();
  });

  it('refuses what names a patient, with nothing of it; the record says why', async () => {
    for (const path of ['/Patient/p-fault', '/Observation?patient=p-fault']) {
      const r = await get(stack, reyes, path);
      expectError(r, 503, 'consent-unavailable');
      expectAbsent(r, [SECRET, 'p-fault', 'o-fault']);
      const record = await auditFor(stack, r.requestId);
      expect(record.decision).toBe('error');
      expect(record.rule).toContain('consent-unavailable');
      expect(record.disclosed.resources).toEqual([]);
    }
    const consentSearch = up.requests.find((x) => x.url.startsWith('/Consent?'));
    expect(consentSearch?.url).toMatch(/patient=Patient%2Fp-fault|patient=Patient\/p-fault/);
    // What names no patient needs no consent.
    expect((await get(stack, reyes, '/Organization/org-1')).status).toBe(200);
    // Later: the upstream answers again.
    up.set('/Consent', fhirJson({ resourceType: 'Bundle', type: 'searchset', entry: [] }));
    expect((await get(stack, reyes, '/Patient/p-fault')).status).toBe(200);
  });
});
