/**
 * The consent resolver against the real demo FHIR upstream (medplum over a memory repository,
 * Consents created through its HTTP API): one search per chunk of at most 50 patients, every page
 * read, each consent attributed to its own patient and read by the parser (an unreadable one makes
 * its patient unevaluable, shown in stats, metrics and /readyz, logged once without the patient);
 * the cache follows the TTL (fresh and synchronous, refreshed in the background, looked up again
 * once expired: a consent created or revoked upstream counts within it) with one search per patient
 * at a time and at most `maxPatients` patients; any upstream failure refuses (`consent-unavailable`).
 * Time is a controlled clock, upstream requests are counted where they leave the dispatcher.
 */
import { createServer } from 'node:net';
import pino from 'pino';
import { Agent, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditSink } from '../../src/audit/record.js';
import type { GatewayConfig } from '../../src/config/types.js';
import {
  type ConsentResolver,
  type ConsentResolverOptions,
  createConsentResolver,
  fetchPatientConsents,
  MAX_PAGES,
  openConsentResolver,
} from '../../src/consent/resolver.js';
import type { CompiledConsent, PatientConsents } from '../../src/consent/types.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { GatewayError } from '../../src/errors.js';
import type { CompiledPolicy } from '../../src/policy/plan.js';
import { buildAdminApp } from '../../src/server/admin.js';
import { createMetrics } from '../../src/server/metrics.js';
import { type Behaviour, fhirJson, raw, stallBody, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const TTL = 60_000;

type R = Record<string, unknown>;

function consentPolicy(over: Partial<CompiledConsent> = {}): CompiledConsent {
  return {
    ttlMs: TTL,
    maxPatients: 1000,
    overlap: 'deny-wins',
    exemptPurposes: new Set(['PATRQT']),
    breakGlassOverrides: false,
    part2: { labels: [], notice: 'notice', breakGlass: false },
    ...over,
  };
}

const CONSENT = consentPolicy();

/** A dispatcher that counts the requests leaving it (path and query). */
function countingDispatcher(): { dispatcher: Dispatcher; sent: string[]; close(): Promise<void> } {
  const sent: string[] = [];
  const agent = new Agent();
  const dispatcher = agent.compose((dispatch) => (opts, handler) => {
    sent.push(String(opts.path));
    return dispatch(opts, handler);
  });
  return { dispatcher, sent, close: () => agent.close() };
}

interface Harness {
  readonly resolver: ConsentResolver;
  readonly sent: string[];
  readonly logs: string[];
  readonly clock: { t: number };
  close(): Promise<void>;
}

const harnesses = new Set<Harness>();

function harness(upstreamUrl: string, over: Partial<ConsentResolverOptions> = {}): Harness {
  const counting = countingDispatcher();
  const logs: string[] = [];
  const clock = { t: Date.now() };
  const resolver = createConsentResolver({
    upstreamUrl,
    dispatcher: counting.dispatcher,
    upstreamAuthorization: async () => 'Bearer gateway-own-token',
    logger: pino({ level: 'debug' }, { write: (l: string) => void logs.push(l) }),
    now: () => clock.t,
    ...over,
  });
  const h: Harness = {
    resolver,
    sent: counting.sent,
    logs,
    clock,
    async close() {
      harnesses.delete(h);
      await resolver.close();
      await counting.close();
    },
  };
  harnesses.add(h);
  return h;
}

/** Consent ids per patient, sorted. */
function idsOf(found: ReadonlyMap<string, PatientConsents>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [p, c] of found) out[p] = c.consents.map((x) => x.id).sort();
  return out;
}

/** The search parameters of a request the resolver sent. */
function paramsOf(path: string): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(path.slice(path.indexOf('?') + 1)));
}

async function refused(p: unknown): Promise<GatewayError> {
  const e = await Promise.resolve(p).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(GatewayError);
  expect((e as GatewayError).code).toBe('consent-unavailable');
  return e as GatewayError;
}

let up: RunningUpstream;
let seq = 0;

async function send<T extends R>(method: string, path: string, resource: T): Promise<T & { id: string }> {
  const res = await fetch(`${up.url}/${path}`, { method, headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(resource) });
  const body = (await res.json()) as T & { id: string };
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const ref = (reference: string) => ({ reference });
const PRIVACY = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };

/** A Consent resource (not yet created): an opt-out by default. */
function consentOf(patient: string, over: R = {}): R {
  return {
    resourceType: 'Consent',
    status: 'active',
    scope: PRIVACY,
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: ref(`Patient/${patient}`),
    dateTime: '2025-01-01T00:00:00Z',
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
    ...over,
  };
}

async function consent(patient: string, over: R = {}): Promise<string> {
  const created = await send('POST', 'Consent', consentOf(patient, over));
  return `Consent/${created.id}`;
}

/** A patient id no other test uses. */
function patient(name: string): string {
  return `${name}-pat-${++seq}`;
}

beforeAll(async () => {
  up = await startFhirUpstream({ seed: false });
});
afterAll(async () => {
  for (const h of [...harnesses]) await h.close();
  await up?.close();
});

describe('against the real upstream', () => {
  it('a cold lookup of 3 patients is one search; each consent goes to its own patient', async () => {
    const [a, b, c] = [patient('cold-a'), patient('cold-b'), patient('cold-c')];
    const a1 = await consent(a);
    const a2 = await consent(a, { policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] } });
    const b1 = await consent(b);
    // Not counted: inactive, another scope, someone else's.
    await consent(c, { status: 'inactive' });
    await consent(c, { scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'research' }] } });
    await consent(patient('someone-else'));

    const h = harness(up.url);
    const found = await h.resolver.lookup([a, b, c], CONSENT);
    expect(idsOf(found)).toEqual({ [a]: [a1, a2].sort(), [b]: [b1], [c]: [] });
    expect(found.get(a)?.patient).toBe(a);
    expect(found.get(a)?.unevaluable).toEqual([]);
    expect(h.sent).toHaveLength(1);
    expect(h.sent[0]).toMatch(/^\/fhir\/Consent\?/);
    expect(paramsOf(h.sent[0])).toEqual({ patient: `Patient/${a},Patient/${b},Patient/${c}`, status: 'active', _count: '1000' });
    expect(h.resolver.stats()).toMatchObject({ patients: 3, hits: 0, misses: 3, refreshes: 0, failures: 0, unevaluablePatients: 0, unevaluable: [] });

    // Logs name counts, never a patient.
    const logged = h.logs.join('\n');
    expect(logged).toContain('consents looked up');
    expect(logged).not.toMatch(/-pat-/);
  });

  it('a cached patient is answered synchronously, without asking the upstream', async () => {
    const [a, b] = [patient('sync-a'), patient('sync-b')];
    const a1 = await consent(a);
    const h = harness(up.url);
    await h.resolver.lookup([a, b], CONSENT);
    const again = h.resolver.lookup([b, a, a], CONSENT);
    expect(again).toBeInstanceOf(Map);
    expect(again instanceof Promise).toBe(false);
    expect(idsOf(again as ReadonlyMap<string, PatientConsents>)).toEqual({ [a]: [a1], [b]: [] });
    expect(h.sent).toHaveLength(1);
    expect(h.resolver.stats()).toMatchObject({ hits: 2, misses: 2 });
    // One cached, one not: only the other is searched for.
    const c = patient('sync-c');
    const mixed = await h.resolver.lookup([a, c], CONSENT);
    expect(idsOf(mixed)).toEqual({ [a]: [a1], [c]: [] });
    expect(h.sent).toHaveLength(2);
    expect(paramsOf(h.sent[1]).patient).toBe(`Patient/${c}`);
  });

  it('ids that cannot name an upstream patient have no consents and are never sent', async () => {
    const h = harness(up.url);
    const odd = ['bad_id', '../Consent', 'a,b', 'x'.repeat(65), ''];
    const found = h.resolver.lookup(odd, CONSENT);
    expect(found).toBeInstanceOf(Map);
    expect(idsOf(found as ReadonlyMap<string, PatientConsents>)).toEqual(Object.fromEntries(odd.map((p) => [p, []])));
    expect(h.sent).toEqual([]);
    const ok = patient('with-odd');
    await h.resolver.lookup([ok, 'bad_id'], CONSENT);
    expect(paramsOf(h.sent[0]).patient).toBe(`Patient/${ok}`);
  });

  it('searches at most 50 patients at once', async () => {
    const many = Array.from({ length: 120 }, (_, i) => patient(`chunk-${i}`));
    const last = await consent(many[119]);
    const h = harness(up.url);
    const found = await h.resolver.lookup(many, CONSENT);
    expect(found.size).toBe(120);
    expect(found.get(many[119])?.consents.map((c) => c.id)).toEqual([last]);
    expect(h.sent).toHaveLength(3);
    const named = h.sent.map((p) => paramsOf(p).patient.split(','));
    expect(named.map((n) => n.length).sort((x, y) => x - y)).toEqual([20, 50, 50]);
    expect(new Set(named.flat())).toEqual(new Set(many.map((p) => `Patient/${p}`)));
  });

  it("follows the upstream's next links", async () => {
    // An upstream of its own: a thousand consents would slow every other test's searches.
    const own = await startFhirUpstream({ seed: false });
    try {
      const p = patient('paged');
      // One more than a page (_count=1000): the upstream answers on two pages.
      for (let i = 0; i < 1001; i++) await own.repo.createResource(consentOf(p, { id: `paged-${i}` }) as never, { assignedId: true });
      const h = harness(own.url);
      const found = await h.resolver.lookup([p], CONSENT);
      expect(found.get(p)?.consents).toHaveLength(1001);
      expect(h.sent).toHaveLength(2);
      expect(paramsOf(h.sent[1])).toMatchObject({ _offset: '1000' });
      await h.close();
    } finally {
      await own.close();
    }
  });

  it('an unreadable consent makes only its patient unevaluable: stats, metrics and /readyz show it, logged once', async () => {
    const [bad, fine] = [patient('unevaluable'), patient('fine')];
    const broken = await consent(bad, { provision: { dataPeriod: { start: '2020-01-01' } } });
    const ok = await consent(fine);
    const h = harness(up.url);
    const found = await h.resolver.lookup([bad, fine], CONSENT);
    expect(found.get(bad)?.unevaluable.map((u) => u.id)).toEqual([broken]);
    expect(found.get(bad)?.unevaluable[0].reason).toEqual(expect.any(String));
    expect(found.get(fine)?.unevaluable).toEqual([]);
    expect(found.get(fine)?.consents.map((c) => c.id)).toEqual([ok]);

    const stats = h.resolver.stats();
    expect(stats.unevaluablePatients).toBe(1);
    expect(stats.unevaluable).toEqual([{ id: broken, reason: found.get(bad)!.unevaluable[0].reason }]);

    const warned = () => h.logs.map((l) => JSON.parse(l) as R).filter((l) => l.consent === broken);
    expect(warned()).toHaveLength(1);
    expect(warned()[0]).toMatchObject({ level: 40, consent: broken, reason: stats.unevaluable[0].reason });
    expect(JSON.stringify(warned()[0])).not.toContain(bad);
    // Looked up again (expired): the same consent is not logged again.
    h.clock.t += TTL;
    await h.resolver.lookup([bad], CONSENT);
    expect(h.sent).toHaveLength(2);
    expect(warned()).toHaveLength(1);

    // Metrics.
    const policy = { version: 'test', roles: new Map(), purposes: new Map() } as unknown as CompiledPolicy;
    const metrics = createMetrics({ policy: () => policy, processMetrics: false, consents: () => h.resolver.stats() });
    const text = await metrics.render();
    expect(value(text, 'phi_gateway_consent_unevaluable_patients')).toBe(1);
    // Per-patient counts are not exported (they follow withheld records): none of these series exist.
    expect(text).not.toContain('phi_gateway_consent_patients_cached');
    expect(text).not.toContain('phi_gateway_consent_lookups_total');
    expect(value(text, 'phi_gateway_consent_requests_total{result="judged"}')).toBe(0);
    // Ids are never labels.
    expect(text).not.toContain(broken);
    expect(text).not.toContain(bad);

    // /readyz: detail only, readiness unchanged.
    const audit: AuditSink = { write: async () => {}, ready: async () => true, close: async () => {} };
    const admin = await buildAdminApp({ logger: pino({ level: 'silent' }), audit, upstreamUrl: up.url, policyVersion: () => 'sha256:test', consents: () => h.resolver.stats() });
    try {
      const res = await admin.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({
        status: 'ready',
        upstream: true,
        audit: true,
        config: true,
        policyVersion: 'sha256:test',
        consent: { unevaluablePatients: 1, unevaluable: [{ id: broken, reason: stats.unevaluable[0].reason }] },
      });
      expect(res.body).not.toContain(bad);
    } finally {
      await admin.close();
    }

    // Fixed upstream: once looked up again, the patient is evaluable.
    await send('PUT', broken, consentOf(bad, { id: broken.slice('Consent/'.length) }));
    h.clock.t += TTL;
    expect((await h.resolver.lookup([bad], CONSENT)).get(bad)?.unevaluable).toEqual([]);
    expect(h.resolver.stats()).toMatchObject({ unevaluablePatients: 0, unevaluable: [] });
  });

  it('lists at most 20 unevaluable consents', async () => {
    const patients = Array.from({ length: 25 }, (_, i) => patient(`many-unevaluable-${i}`));
    for (const p of patients) await consent(p, { modifierExtension: [{ url: 'https://example.org/fhir/StructureDefinition/unknown', valueBoolean: true }] });
    const h = harness(up.url);
    await h.resolver.lookup(patients, CONSENT);
    const stats = h.resolver.stats();
    expect(stats.unevaluablePatients).toBe(25);
    expect(stats.unevaluable).toHaveLength(20);
  });
});

describe('cache', () => {
  it('a consent created upstream counts once the entry expires, not before', async () => {
    const p = patient('ttl');
    const h = harness(up.url);
    const t0 = h.clock.t;
    expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: [] });
    const created = await consent(p);
    h.clock.t = t0 + TTL / 2 - 1;
    expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: [] });
    expect(h.sent).toHaveLength(1);
    h.clock.t = t0 + TTL;
    expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: [created] });
    expect(h.sent).toHaveLength(2);
    expect(h.resolver.stats()).toMatchObject({ hits: 1, misses: 2, refreshes: 0, failures: 0 });
  });

  it('a revoked consent (status inactive) stops counting once the entry expires', async () => {
    const p = patient('revoked');
    const id = await consent(p);
    const h = harness(up.url);
    const t0 = h.clock.t;
    expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: [id] });
    await send('PUT', id, consentOf(p, { id: id.slice('Consent/'.length), status: 'inactive' }));
    h.clock.t = t0 + TTL - 1;
    expect(idsOf((await h.resolver.lookup([p], CONSENT)) as ReadonlyMap<string, PatientConsents>)).toEqual({ [p]: [id] });
    h.clock.t = t0 + TTL;
    expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: [] });
  });

  it('past half the TTL the entry is served and refreshed in the background, once', async () => {
    const [a, b] = [patient('refresh-a'), patient('refresh-b')];
    const h = harness(up.url);
    const t0 = h.clock.t;
    await h.resolver.lookup([a, b], CONSENT);
    const created = await consent(a);
    h.clock.t = t0 + TTL / 2;
    const served = Array.from({ length: 10 }, () => h.resolver.lookup([a, b], CONSENT));
    // The old entries answer at once; one refresh (one search for both) runs behind them.
    for (const s of served) expect(idsOf(s as ReadonlyMap<string, PatientConsents>)).toEqual({ [a]: [], [b]: [] });
    await expect.poll(() => h.resolver.stats().refreshes).toBe(2);
    expect(h.sent).toHaveLength(2);
    const after = h.resolver.lookup([a, b], CONSENT);
    expect(after).toBeInstanceOf(Map);
    expect(idsOf(after as ReadonlyMap<string, PatientConsents>)).toEqual({ [a]: [created], [b]: [] });
    // The refresh counts from when it was made.
    h.clock.t = t0 + TTL / 2 + TTL - 1;
    h.resolver.lookup([a], CONSENT);
    await expect.poll(() => h.resolver.stats().refreshes).toBe(3);
    expect(h.sent).toHaveLength(3);
  });

  it('concurrent lookups share one search per patient', async () => {
    const [a, b, c] = [patient('single-a'), patient('single-b'), patient('single-c')];
    const id = await consent(b);
    const h = harness(up.url);
    const all = await Promise.all([
      ...Array.from({ length: 10 }, () => h.resolver.lookup([a, b], CONSENT)),
      h.resolver.lookup([b, c], CONSENT),
    ]);
    // a and b in one search; c (not under way yet) in a second; b's lookup shared.
    expect(h.sent).toHaveLength(2);
    expect(paramsOf(h.sent[0]).patient).toBe(`Patient/${a},Patient/${b}`);
    expect(paramsOf(h.sent[1]).patient).toBe(`Patient/${c}`);
    for (const r of all.slice(0, 10)) expect(idsOf(r)).toEqual({ [a]: [], [b]: [id] });
    expect(idsOf(all[10])).toEqual({ [b]: [id], [c]: [] });
    expect(all[10].get(b)).toBe(all[0].get(b));
    // Expired: again one search for all of them.
    h.clock.t += TTL;
    await Promise.all(Array.from({ length: 10 }, () => h.resolver.lookup([a, b, c], CONSENT)));
    expect(h.sent).toHaveLength(3);
  });

  it('holds at most maxPatients patients, the least recently used dropped', async () => {
    const config = consentPolicy({ maxPatients: 2 });
    const [a, b, c] = [patient('lru-a'), patient('lru-b'), patient('lru-c')];
    const h = harness(up.url);
    await h.resolver.lookup([a], config);
    await h.resolver.lookup([b], config);
    await h.resolver.lookup([a], config); // a is now the most recently used
    expect(h.sent).toHaveLength(2);
    await h.resolver.lookup([c], config); // drops b
    expect(h.resolver.stats().patients).toBe(2);
    await h.resolver.lookup([a, c], config);
    expect(h.sent).toHaveLength(3);
    await h.resolver.lookup([b], config);
    expect(h.sent).toHaveLength(4);
    expect(h.resolver.stats().patients).toBe(2);
  });

  it('fetchPatientConsents reads one patient directly, every time', async () => {
    const p = patient('direct');
    const id = await consent(p);
    const counting = countingDispatcher();
    try {
      const opts: ConsentResolverOptions = { upstreamUrl: up.url, dispatcher: counting.dispatcher, upstreamAuthorization: async () => undefined, logger: pino({ level: 'silent' }) };
      expect((await fetchPatientConsents(p, opts)).consents.map((c) => c.id)).toEqual([id]);
      expect((await fetchPatientConsents(p, opts)).consents.map((c) => c.id)).toEqual([id]);
      expect(counting.sent).toHaveLength(2);
      expect(await fetchPatientConsents('not an id', opts)).toEqual({ patient: 'not an id', consents: [], unevaluable: [] });
      expect(counting.sent).toHaveLength(2);
    } finally {
      await counting.close();
    }
  });

  it('openConsentResolver takes the upstream, limits and timeout from the gateway config', async () => {
    const p = patient('opened');
    const id = await consent(p);
    const config = {
      upstream: { url: up.url, totalTimeoutMs: 5000 },
      limits: { responseBodyBytes: 1024 * 1024 },
    } as unknown as GatewayConfig;
    const counting = countingDispatcher();
    const resolver = await openConsentResolver(config, { logger: pino({ level: 'silent' }), dispatcher: counting.dispatcher, upstreamAuthorization: async () => undefined });
    try {
      expect(resolver).toBeDefined();
      expect(idsOf(await resolver!.lookup([p], CONSENT))).toEqual({ [p]: [id] });
      expect(counting.sent).toHaveLength(1);
    } finally {
      await resolver?.close();
      await counting.close();
    }
  });
});

describe('fail closed', () => {
  const bundle = { resourceType: 'Bundle', type: 'searchset' };

  it('an upstream that is down, answers 500 or sends garbage refuses the lookup', async () => {
    // A port nobody listens on.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const down = harness(`http://127.0.0.1:${port}/fhir`);
    const e = await refused(down.resolver.lookup([patient('down-a'), patient('down-b')], CONSENT));
    expect(e.status).toBe(503);
    expect(down.resolver.stats()).toMatchObject({ patients: 0, failures: 2 });
    expect(down.logs.join('\n')).toContain('consents could not be looked up');
    expect(down.logs.join('\n')).not.toMatch(/-pat-/);

    const cases: Array<[string, Behaviour]> = [
      ['500', fhirJson({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }, 500)],
      ['404', fhirJson({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }, 404)],
      ['not JSON', raw(200, { 'content-type': 'application/fhir+json' }, '<html>oops</html>')],
      ['HTML', raw(200, { 'content-type': 'text/html' }, '<html>oops</html>')],
      ['empty', raw(200, { 'content-type': 'application/fhir+json' }, '')],
      ['not a Bundle', fhirJson({ resourceType: 'Consent', id: 'c1' })],
      ['an OperationOutcome', fhirJson({ resourceType: 'OperationOutcome', issue: [] })],
      ['another Bundle type', fhirJson({ resourceType: 'Bundle', type: 'collection' })],
      ['a redirect', raw(302, { location: 'http://127.0.0.1:1/fhir/Consent' }, '')],
      ['a __proto__ key', raw(200, { 'content-type': 'application/fhir+json' }, '{"resourceType":"Bundle","type":"searchset","__proto__":{"x":1}}')],
      ['a duplicate key', raw(200, { 'content-type': 'application/fhir+json' }, '{"resourceType":"Bundle","type":"searchset","type":"searchset"}')],
      ['a next link elsewhere', fhirJson({ ...bundle, link: [{ relation: 'next', url: 'https://elsewhere.example.org/fhir/Consent?page=2' }] })],
      ['a next link without a url', fhirJson({ ...bundle, link: [{ relation: 'next' }] })],
    ];
    for (const [name, behaviour] of cases) {
      const faulty = await startFaultyUpstream({ '/Consent': behaviour });
      try {
        const h = harness(faulty.url);
        const e = await Promise.resolve(h.resolver.lookup([patient('garbage')], CONSENT)).then(() => undefined, (err: unknown) => err);
        expect((e as GatewayError | undefined)?.code, name).toBe('consent-unavailable');
        expect(h.resolver.stats().patients, name).toBe(0);
        expect(faulty.requests.length, name).toBe(1);
        await h.close();
      } finally {
        await faulty.close();
      }
    }
  });

  it('sends the gateway credentials, asks for strict handling, and follows next links on the upstream only', async () => {
    const p = patient('pages');
    const page = (n: number, next?: string): R => ({
      ...bundle,
      entry: [{ resource: { ...consentOf(p), id: `page-${n}` }, search: { mode: 'match' } }],
      ...(next === undefined ? {} : { link: [{ relation: 'next', url: next }] }),
    });
    let faultyUrl = '';
    const faulty = await startFaultyUpstream({
      '/Consent': (req, res) => {
        const n = Number(new URL(req.url ?? '', 'http://x').searchParams.get('page') ?? '1');
        // Absolute, then relative to the base.
        const next = n === 1 ? `${faultyUrl}/Consent?page=2` : n === 2 ? 'Consent?page=3' : undefined;
        fhirJson(page(n, next))(req, res);
      },
    });
    faultyUrl = faulty.url;
    try {
      const h = harness(faulty.url);
      const found = await h.resolver.lookup([p], CONSENT);
      expect(found.get(p)?.consents.map((c) => c.id).sort()).toEqual(['Consent/page-1', 'Consent/page-2', 'Consent/page-3']);
      expect(faulty.requests.map((r) => r.url.replace(/\?.*/, ''))).toEqual(['/Consent', '/Consent', '/Consent']);
      for (const r of faulty.requests) {
        expect(r.headers.authorization).toBe('Bearer gateway-own-token');
        expect(r.headers.prefer).toBe('handling=strict');
      }
    } finally {
      await faulty.close();
    }
  });

  it('a paging link under a link base is read on the upstream itself', async () => {
    const p = patient('link-base');
    const faulty = await startFaultyUpstream({
      '/Consent': (req, res) => {
        const second = (req.url ?? '').includes('page=2');
        fhirJson({
          ...bundle,
          entry: [{ resource: { ...consentOf(p), id: second ? 'lb-2' : 'lb-1' } }],
          ...(second ? {} : { link: [{ relation: 'next', url: 'https://fhir.internal.example/base/Consent?page=2' }] }),
        })(req, res);
      },
    });
    try {
      const h = harness(faulty.url, { linkBases: ['https://fhir.internal.example/base'] });
      const found = await h.resolver.lookup([p], CONSENT);
      expect(found.get(p)?.consents.map((c) => c.id).sort()).toEqual(['Consent/lb-1', 'Consent/lb-2']);
      expect(faulty.requests).toHaveLength(2);
    } finally {
      await faulty.close();
    }
  });

  it(`more than ${MAX_PAGES} pages refuses`, async () => {
    const faulty = await startFaultyUpstream({ '/Consent': fhirJson({ ...bundle, link: [{ relation: 'next', url: 'Consent?page=again' }] }) });
    try {
      const h = harness(faulty.url);
      const e = await refused(h.resolver.lookup([patient('endless')], CONSENT));
      expect(e.detail).toContain(`more than ${MAX_PAGES} pages`);
      expect(faulty.requests).toHaveLength(MAX_PAGES);
    } finally {
      await faulty.close();
    }
  });

  it('an upstream that stalls refuses within the timeout', async () => {
    const faulty = await startFaultyUpstream({ '/Consent': stallBody('{"resourceType":"Bundle",') });
    try {
      const h = harness(faulty.url, { timeoutMs: 300 });
      const started = Date.now();
      await refused(h.resolver.lookup([patient('stall')], CONSENT));
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await faulty.close();
    }
  });

  it('an answer over the response limit refuses', async () => {
    const big = { ...bundle, entry: Array.from({ length: 200 }, (_, i) => ({ resource: { resourceType: 'Consent', id: `c${i}`, status: 'active' } })) };
    const faulty = await startFaultyUpstream({ '/Consent': fhirJson(big) });
    try {
      const h = harness(faulty.url, { responseLimit: 1024 });
      await refused(h.resolver.lookup([patient('big')], CONSENT));
    } finally {
      await faulty.close();
    }
  });

  it('a failed background refresh keeps the entry until the TTL, then lookups refuse', async () => {
    const p = patient('refresh-fails');
    const answer = { ...bundle, entry: [{ resource: { ...consentOf(p), id: 'kept' } }] };
    const faulty = await startFaultyUpstream({ '/Consent': fhirJson(answer) });
    try {
      const h = harness(faulty.url);
      const t0 = h.clock.t;
      expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: ['Consent/kept'] });
      faulty.set('/Consent', fhirJson({ resourceType: 'OperationOutcome', issue: [] }, 500));
      h.clock.t = t0 + TTL / 2;
      expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: ['Consent/kept'] });
      await expect.poll(() => h.resolver.stats().failures).toBe(1);
      expect(h.logs.join('\n')).toContain('consents could not be refreshed');
      // No new refresh until the retry delay has passed.
      expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: ['Consent/kept'] });
      expect(faulty.requests).toHaveLength(2);
      h.clock.t = t0 + TTL - 1;
      expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: ['Consent/kept'] });
      await expect.poll(() => h.resolver.stats().failures).toBe(2);
      h.clock.t = t0 + TTL;
      await refused(h.resolver.lookup([p], CONSENT));
      // Back up: the next lookup succeeds.
      faulty.set('/Consent', fhirJson(answer));
      expect(idsOf(await h.resolver.lookup([p], CONSENT))).toEqual({ [p]: ['Consent/kept'] });
    } finally {
      await faulty.close();
    }
  });

  it('a request that gives up stops waiting, and the shared search still completes for the others', async () => {
    const faulty = await startFaultyUpstream({
      '/Consent': (req, res) => setTimeout(() => fhirJson(bundle)(req, res), 200),
    });
    try {
      const h = harness(faulty.url);
      const p = patient('abort');
      const controller = new AbortController();
      const gone = h.resolver.lookup([p], CONSENT, controller.signal);
      const stays = h.resolver.lookup([p], CONSENT);
      controller.abort(new GatewayError('client-closed', 'test'));
      await expect(gone).rejects.toMatchObject({ code: 'client-closed' });
      expect(idsOf(await stays)).toEqual({ [p]: [] });
      expect(faulty.requests).toHaveLength(1);
      expect(h.resolver.stats().failures).toBe(0);
    } finally {
      await faulty.close();
    }
  });

  it('a closed resolver refuses', async () => {
    const h = harness(up.url);
    await h.resolver.close();
    await refused(h.resolver.lookup([patient('closed')], CONSENT));
  });
});

describe('in a running gateway', () => {
  let plain: Stack | undefined;
  let enforcing: Stack | undefined;
  afterAll(async () => {
    await plain?.close();
    await enforcing?.close();
  });

  const adminUrl = (s: Stack) => `http://${s.config.admin.host}:${s.config.admin.port}`;

  it('/readyz shows unevaluable consents while the policy enforces consent; metrics count requests, never patients', async () => {
    enforcing = await startStack({
      policy: (p) => {
        p.consent = { cacheSeconds: 60 };
      },
    });
    const ready = await fetch(`${adminUrl(enforcing)}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', consent: { unevaluablePatients: 0, unevaluable: [] } });
    let text = await (await fetch(`${adminUrl(enforcing)}/metrics`)).text();
    expect(value(text, 'phi_gateway_consent_requests_total{result="judged"}')).toBe(0);
    expect(value(text, 'phi_gateway_consent_unevaluable_patients')).toBe(0);

    // A read of a patient's record asks the gateway's resolver about that patient, once.
    for (let i = 0; i < 2; i++) {
      const res = await enforcing.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
      expect(res.status).toBe(200);
    }
    text = await (await fetch(`${adminUrl(enforcing)}/metrics`)).text();
    expect(value(text, 'phi_gateway_consent_requests_total{result="judged"}')).toBe(2);
    expect(value(text, 'phi_gateway_consent_requests_total{result="refused"}')).toBe(0);
    expect(text).not.toContain(DEMO.patients.alice);
    const after = (await (await fetch(`${adminUrl(enforcing)}/readyz`)).json()) as R;
    expect(after.consent).toEqual({ unevaluablePatients: 0, unevaluable: [] });

    // Without a consent section: no consent detail.
    plain = await startStack({
      policy: (p) => {
        delete p.consent;
        for (const ds of Object.values(p.dataSets)) delete ds.consent;
      },
    });
    const body = (await (await fetch(`${adminUrl(plain)}/readyz`)).json()) as R;
    expect(body.status).toBe('ready');
    expect(body).not.toHaveProperty('consent');
  });
});

function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}
