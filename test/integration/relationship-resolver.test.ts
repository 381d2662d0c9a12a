/**
 * The care-relationship resolver against the real demo FHIR upstream (medplum over a memory
 * repository, resources created through its HTTP API) and a real Redis: every source kind finds its
 * patient and none of the near misses; the cache follows the TTL (fresh, refreshed in the
 * background, looked up again once expired) with one upstream lookup per caller at a time and at
 * most `maxCallers` callers; any upstream failure refuses (`relationship-unavailable`); replicas
 * share entries through Redis, and a Redis that is down or stalled only costs upstream lookups.
 * Time is a controlled clock, upstream requests are counted where they leave the dispatcher.
 */
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Agent, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failFastRedisOptions } from '../../src/audit/redis-options.js';
import type { GatewayConfig } from '../../src/config/types.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { GatewayError } from '../../src/errors.js';
import type { CompiledRelationships, RelationshipKind } from '../../src/policy/plan.js';
import {
  type CallerRelationships,
  createRelationshipResolver,
  openRelationshipResolver,
  type RelationshipResolver,
  type RelationshipResolverOptions,
} from '../../src/relationships/resolver.js';
import { type Behaviour, fhirJson, raw, stallBody, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const TTL = 60_000;
const DAY = 86_400_000;

type R = Record<string, unknown>;

function relationships(sources: Record<string, { kind: RelationshipKind; days?: number }>, over: Partial<CompiledRelationships> = {}): CompiledRelationships {
  return {
    ttlMs: TTL,
    maxCallers: 100,
    maxPatients: 1000,
    searchPatients: 100,
    sources: new Map(Object.entries(sources).map(([name, s]) => [name, { name, ...s }])),
    ...over,
  };
}

const ALL = relationships({
  'care-team': { kind: 'CareTeam' },
  encounter: { kind: 'Encounter', days: 30 },
  episode: { kind: 'EpisodeOfCare' },
  department: { kind: 'PractitionerRole' },
  'work-queue': { kind: 'Task' },
});
const CARE_TEAM = relationships({ 'care-team': { kind: 'CareTeam' } });

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
  readonly resolver: RelationshipResolver;
  readonly sent: string[];
  readonly logs: string[];
  readonly clock: { t: number };
  close(): Promise<void>;
}

const harnesses = new Set<Harness>();

function harness(upstreamUrl: string, over: Partial<RelationshipResolverOptions> = {}): Harness {
  const counting = countingDispatcher();
  const logs: string[] = [];
  const clock = { t: Date.now() };
  const resolver = createRelationshipResolver({
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

function patientsOf(r: CallerRelationships): string[] {
  return [...r.patients.keys()].sort();
}

async function refused(p: unknown): Promise<GatewayError> {
  const e = await Promise.resolve(p).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(GatewayError);
  expect((e as GatewayError).code).toBe('relationship-unavailable');
  return e as GatewayError;
}

let up: RunningUpstream;
let seq = 0;

async function create<T extends R>(resource: T): Promise<T & { id: string }> {
  const res = await fetch(`${up.url}/${resource.resourceType}`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(resource),
  });
  const body = (await res.json()) as T & { id: string };
  if (res.status !== 201) throw new Error(`create ${String(resource.resourceType)}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

async function remove(type: string, id: string): Promise<void> {
  const res = await fetch(`${up.url}/${type}/${id}`, { method: 'DELETE' });
  await res.arrayBuffer();
  if (res.status >= 300) throw new Error(`delete ${type}/${id}: ${res.status}`);
}

/** A practitioner no other test uses. */
function practitioner(name: string): string {
  return `Practitioner/${name}-${++seq}`;
}

const ref = (reference: string) => ({ reference });
const careTeam = (member: string, patient: string, over: R = {}) =>
  create({ resourceType: 'CareTeam', status: 'active', subject: ref(`Patient/${patient}`), participant: [{ member: ref(member) }], ...over });
const encounter = (patient: string, over: R = {}) =>
  create({ resourceType: 'Encounter', status: 'in-progress', class: { code: 'AMB' }, subject: ref(`Patient/${patient}`), ...over });
const iso = (ms: number) => new Date(ms).toISOString();

beforeAll(async () => {
  up = await startFhirUpstream({ seed: false });
});
afterAll(async () => {
  for (const h of [...harnesses]) await h.close();
  await up?.close();
});

describe('sources, against the real upstream', () => {
  it('every source kind finds its patient and ignores the near misses', async () => {
    const me = practitioner('all');
    const someone = practitioner('someone-else');
    const now = Date.now();

    const ct = await careTeam(me, 'ct-pat');
    await careTeam(me, 'ct-abs-pat', { subject: ref(`${up.url}/Patient/ct-abs-pat`) });
    await careTeam(me, 'ct-foreign-pat', { subject: ref('https://elsewhere.example.org/fhir/Patient/ct-foreign-pat') });
    await careTeam(me, 'ct-inactive-pat', { status: 'inactive' });
    await careTeam(someone, 'ct-other-pat');

    const enc = await encounter('enc-open-pat', { participant: [{ individual: ref(me) }], period: { start: '2015-03-01' } });
    await encounter('enc-recent-pat', { status: 'finished', participant: [{ individual: ref(me) }], period: { start: iso(now - 4 * DAY), end: iso(now - 3 * DAY) } });
    await encounter('enc-old-pat', { status: 'finished', participant: [{ individual: ref(me) }], period: { start: iso(now - 61 * DAY), end: iso(now - 60 * DAY) } });
    await encounter('enc-cancelled-pat', { status: 'cancelled', participant: [{ individual: ref(me) }], period: { start: iso(now - DAY) } });
    await encounter('enc-other-pat', { participant: [{ individual: ref(someone) }], period: { start: iso(now - DAY) } });

    const eoc = await create({ resourceType: 'EpisodeOfCare', status: 'active', patient: ref('Patient/eoc-pat'), careManager: ref(me) });
    await create({ resourceType: 'EpisodeOfCare', status: 'finished', patient: ref('Patient/eoc-finished-pat'), careManager: ref(me) });

    const ward = `Location/ward-${seq}`;
    const icu = `Location/icu-${seq}`;
    const role = await create({ resourceType: 'PractitionerRole', active: true, practitioner: ref(me), location: [ref(ward)] });
    await create({ resourceType: 'PractitionerRole', active: false, practitioner: ref(me), location: [ref(icu)] });
    const atWard = await encounter('dept-pat', { location: [{ location: ref(ward) }], period: { start: iso(now - DAY) } });
    await encounter('dept-finished-pat', { status: 'finished', location: [{ location: ref(ward) }], period: { start: iso(now - DAY) } });
    await encounter('dept-inactive-role-pat', { location: [{ location: ref(icu) }], period: { start: iso(now - DAY) } });

    const claim = await create({
      resourceType: 'Claim',
      status: 'active',
      use: 'claim',
      type: { coding: [{ code: 'institutional' }] },
      patient: ref('Patient/task-claim-pat'),
      created: '2026-01-01',
      provider: ref('Organization/payer'),
      priority: { coding: [{ code: 'normal' }] },
      insurance: [{ sequence: 1, focal: true, coverage: ref('Coverage/cov') }],
    });
    const forTask = await create({ resourceType: 'Task', status: 'requested', intent: 'order', owner: ref(me), for: ref('Patient/task-for-pat') });
    const claimTask = await create({ resourceType: 'Task', status: 'in-progress', intent: 'order', owner: ref(me), focus: ref(`Claim/${claim.id}`) });
    await create({ resourceType: 'Task', status: 'completed', intent: 'order', owner: ref(me), for: ref('Patient/task-done-pat') });
    await create({ resourceType: 'Task', status: 'requested', intent: 'order', owner: ref(someone), for: ref('Patient/task-other-pat') });

    const h = harness(up.url);
    const found = await h.resolver.lookup(me, ALL);
    expect(patientsOf(found)).toEqual(['ct-abs-pat', 'ct-pat', 'dept-pat', 'enc-open-pat', 'enc-recent-pat', 'eoc-pat', 'task-claim-pat', 'task-for-pat']);
    expect(found.caller).toBe(me);
    expect(found.resolvedAt).toBe(h.clock.t);
    expect(found.patients.get('ct-pat')).toEqual([{ source: 'care-team', resource: `CareTeam/${ct.id}` }]);
    expect(found.patients.get('enc-open-pat')).toEqual([{ source: 'encounter', resource: `Encounter/${enc.id}` }]);
    expect(found.patients.get('eoc-pat')).toEqual([{ source: 'episode', resource: `EpisodeOfCare/${eoc.id}` }]);
    expect(found.patients.get('dept-pat')).toEqual([{ source: 'department', resource: `Encounter/${atWard.id}` }]);
    expect(found.patients.get('task-for-pat')).toEqual([{ source: 'work-queue', resource: `Task/${forTask.id}` }]);
    expect(found.patients.get('task-claim-pat')).toEqual([{ source: 'work-queue', resource: `Task/${claimTask.id}` }]);
    // One search per source, two for the department (roles, then encounters at their locations).
    expect(h.sent).toHaveLength(6);
    expect(h.sent.filter((p) => p.startsWith('/fhir/Encounter?'))).toHaveLength(2);

    // A PractitionerRole caller: that role's department.
    const asRole = await h.resolver.lookup(`PractitionerRole/${role.id}`, relationships({ department: { kind: 'PractitionerRole' } }));
    expect(patientsOf(asRole)).toEqual(['dept-pat']);

    // Logs name the caller and counts, never a patient.
    const logged = h.logs.join('\n');
    expect(logged).toContain(me);
    expect(logged).not.toMatch(/-pat\b/);
  });

  it('a relationship found by several sources keeps every piece of evidence', async () => {
    const me = practitioner('both');
    const ct = await careTeam(me, 'both-pat');
    const enc = await encounter('both-pat', { participant: [{ individual: ref(me) }], period: { start: iso(Date.now()) } });
    const h = harness(up.url);
    const found = await h.resolver.lookup(me, ALL);
    expect(found.patients.get('both-pat')).toEqual(
      expect.arrayContaining([
        { source: 'care-team', resource: `CareTeam/${ct.id}` },
        { source: 'encounter', resource: `Encounter/${enc.id}` },
      ]),
    );
  });

  it('reads one page of maxPatients per source and warns when there is more', async () => {
    const me = practitioner('truncated');
    await careTeam(me, 'page-1-pat');
    await careTeam(me, 'page-2-pat');
    const h = harness(up.url);
    const found = await h.resolver.lookup(me, relationships({ 'care-team': { kind: 'CareTeam' } }, { maxPatients: 1 }));
    expect(found.patients.size).toBe(1);
    expect(h.sent[0]).toContain('_count=1');
    const warning = h.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).includes('more than one page'));
    expect(warning).toMatchObject({ caller: me, source: 'care-team', maxPatients: 1 });
    expect(JSON.stringify(warning)).not.toContain('-pat');
  });

  it('callers other than practitioners and their roles have none, and nothing is asked', async () => {
    const h = harness(up.url);
    for (const caller of ['Patient/p1', 'RelatedPerson/r1', 'Practitioner/bad_id', 'nonsense']) {
      expect((await h.resolver.lookup(caller, ALL)).patients.size, caller).toBe(0);
    }
    expect(h.sent).toEqual([]);
  });

  it('sends the gateway credentials and asks for strict handling', async () => {
    const faulty = await startFaultyUpstream({ '/CareTeam': fhirJson({ resourceType: 'Bundle', type: 'searchset' }) });
    try {
      const h = harness(faulty.url);
      await h.resolver.lookup(practitioner('headers'), CARE_TEAM);
      expect(faulty.requests).toHaveLength(1);
      expect(faulty.requests[0].headers.authorization).toBe('Bearer gateway-own-token');
      expect(faulty.requests[0].headers.prefer).toBe('handling=strict');
    } finally {
      await faulty.close();
    }
  });
});

describe('cache', () => {
  it('a care team created upstream counts once the entry expires, not before', async () => {
    const me = practitioner('ttl');
    const h = harness(up.url);
    const t0 = h.clock.t;
    expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual([]);
    await careTeam(me, 'ttl-pat');
    h.clock.t = t0 + TTL / 2 - 1;
    expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual([]);
    expect(h.sent).toHaveLength(1);
    h.clock.t = t0 + TTL;
    expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['ttl-pat']);
    expect(h.sent).toHaveLength(2);
    expect(h.resolver.stats()).toMatchObject({ hits: 1, misses: 2, refreshes: 0, failures: 0 });
  });

  it('a deleted care team stops counting within the TTL', async () => {
    const me = practitioner('deleted');
    const ct = await careTeam(me, 'deleted-pat');
    const h = harness(up.url);
    const t0 = h.clock.t;
    expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['deleted-pat']);
    await remove('CareTeam', ct.id);
    h.clock.t = t0 + TTL;
    expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual([]);
  });

  it('past half the TTL the entry is served and refreshed in the background, once', async () => {
    const me = practitioner('refresh');
    const h = harness(up.url);
    const t0 = h.clock.t;
    await h.resolver.lookup(me, CARE_TEAM);
    await careTeam(me, 'refresh-pat');
    h.clock.t = t0 + TTL / 2;
    const served = await Promise.all(Array.from({ length: 10 }, () => h.resolver.lookup(me, CARE_TEAM)));
    // The old entry answers at once; the refresh runs behind it.
    for (const s of served) expect(patientsOf(s)).toEqual([]);
    await expect.poll(() => h.resolver.stats().refreshes).toBe(1);
    expect(h.sent).toHaveLength(2);
    const after = await h.resolver.lookup(me, CARE_TEAM);
    expect(patientsOf(after)).toEqual(['refresh-pat']);
    expect(after.resolvedAt).toBe(t0 + TTL / 2);
    expect(h.sent).toHaveLength(2);
  });

  it('concurrent lookups of one caller share one upstream lookup', async () => {
    const me = practitioner('single');
    await careTeam(me, 'single-pat');
    const h = harness(up.url);
    const all = await Promise.all(Array.from({ length: 20 }, () => h.resolver.lookup(me, ALL)));
    // CareTeam, Encounter, EpisodeOfCare, PractitionerRole (no role: no encounter search), Task.
    expect(h.sent).toHaveLength(5);
    for (const r of all) expect(r).toBe(all[0]);
    expect(patientsOf(all[0])).toEqual(['single-pat']);
    expect(h.resolver.stats()).toMatchObject({ callers: 1, misses: 20 });
    // Expired: again one lookup for all of them.
    h.clock.t += TTL;
    await Promise.all(Array.from({ length: 20 }, () => h.resolver.lookup(me, ALL)));
    expect(h.sent).toHaveLength(10);
  });

  it('holds at most maxCallers callers, the least recently used dropped', async () => {
    const config = relationships({ 'care-team': { kind: 'CareTeam' } }, { maxCallers: 2 });
    const [a, b, c] = [practitioner('lru-a'), practitioner('lru-b'), practitioner('lru-c')];
    const h = harness(up.url);
    await h.resolver.lookup(a, config);
    await h.resolver.lookup(b, config);
    await h.resolver.lookup(a, config); // a is now the most recently used
    expect(h.sent).toHaveLength(2);
    await h.resolver.lookup(c, config); // drops b
    expect(h.resolver.stats().callers).toBe(2);
    await h.resolver.lookup(a, config);
    await h.resolver.lookup(c, config);
    expect(h.sent).toHaveLength(3);
    await h.resolver.lookup(b, config);
    expect(h.sent).toHaveLength(4);
    expect(h.resolver.stats().callers).toBe(2);
  });

  it('other sources are another entry', async () => {
    const me = practitioner('signature');
    const h = harness(up.url);
    await h.resolver.lookup(me, CARE_TEAM);
    await h.resolver.lookup(me, relationships({ 'care-team': { kind: 'CareTeam' } }));
    expect(h.sent).toHaveLength(1);
    await h.resolver.lookup(me, relationships({ team: { kind: 'CareTeam' } }));
    expect(h.sent).toHaveLength(2);
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
    const e = await refused(down.resolver.lookup(practitioner('down'), ALL));
    expect(e.status).toBe(503);
    expect(down.resolver.stats()).toMatchObject({ callers: 0, failures: 1 });
    expect(down.logs.join('\n')).toContain('care relationships could not be looked up');

    const cases: Array<[string, Behaviour]> = [
      ['500', fhirJson({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }, 500)],
      ['404', fhirJson({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }, 404)],
      ['not JSON', raw(200, { 'content-type': 'application/fhir+json' }, '<html>oops</html>')],
      ['HTML', raw(200, { 'content-type': 'text/html' }, '<html>oops</html>')],
      ['empty', raw(200, { 'content-type': 'application/fhir+json' }, '')],
      ['not a Bundle', fhirJson({ resourceType: 'Patient', id: 'p1' })],
      ['an OperationOutcome', fhirJson({ resourceType: 'OperationOutcome', issue: [] })],
      ['another Bundle type', fhirJson({ resourceType: 'Bundle', type: 'collection' })],
      ['a redirect', raw(302, { location: 'http://127.0.0.1:1/fhir/CareTeam' }, '')],
      ['a __proto__ key', raw(200, { 'content-type': 'application/fhir+json' }, '{"resourceType":"Bundle","type":"searchset","__proto__":{"x":1}}')],
    ];
    for (const [name, behaviour] of cases) {
      const faulty = await startFaultyUpstream({ '/CareTeam': behaviour, '/Encounter': fhirJson(bundle) });
      try {
        const h = harness(faulty.url);
        const config = relationships({ 'care-team': { kind: 'CareTeam' }, encounter: { kind: 'Encounter' } });
        await refused(h.resolver.lookup(practitioner('garbage'), config));
        expect(h.resolver.stats().callers, name).toBe(0);
        await h.close();
      } finally {
        await faulty.close();
      }
    }
  });

  it('an upstream that stalls refuses within the lookup timeout', async () => {
    const faulty = await startFaultyUpstream({ '/CareTeam': stallBody('{"resourceType":"Bundle",') });
    try {
      const h = harness(faulty.url, { timeoutMs: 300 });
      const started = Date.now();
      await refused(h.resolver.lookup(practitioner('stall'), CARE_TEAM));
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await faulty.close();
    }
  });

  it('an answer over the response limit refuses', async () => {
    const big = { ...bundle, entry: Array.from({ length: 200 }, (_, i) => ({ resource: { resourceType: 'CareTeam', id: `ct${i}`, status: 'active' } })) };
    const faulty = await startFaultyUpstream({ '/CareTeam': fhirJson(big) });
    try {
      const h = harness(faulty.url, { responseLimit: 1024 });
      await refused(h.resolver.lookup(practitioner('big'), CARE_TEAM));
    } finally {
      await faulty.close();
    }
  });

  it('a failed background refresh keeps the entry until the TTL, then lookups refuse', async () => {
    const me = practitioner('refresh-fails');
    const answer = { ...bundle, entry: [{ resource: { resourceType: 'CareTeam', id: 'ct1', status: 'active', subject: ref('Patient/kept-pat'), participant: [{ member: ref(me) }] } }] };
    const faulty = await startFaultyUpstream({ '/CareTeam': fhirJson(answer) });
    try {
      const h = harness(faulty.url);
      const t0 = h.clock.t;
      expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['kept-pat']);
      faulty.set('/CareTeam', fhirJson({ resourceType: 'OperationOutcome', issue: [] }, 500));
      h.clock.t = t0 + TTL / 2;
      expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['kept-pat']);
      await expect.poll(() => h.resolver.stats().failures).toBe(1);
      h.clock.t = t0 + TTL - 1;
      expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['kept-pat']);
      h.clock.t = t0 + TTL;
      await refused(h.resolver.lookup(me, CARE_TEAM));
      // Back up: the next lookup succeeds.
      faulty.set('/CareTeam', fhirJson(answer));
      expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['kept-pat']);
    } finally {
      await faulty.close();
    }
  });

  it("a request that gives up stops waiting, and the shared lookup still completes for the others", async () => {
    const faulty = await startFaultyUpstream({
      '/CareTeam': (req, res) => setTimeout(() => fhirJson(bundle)(req, res), 200),
    });
    try {
      const h = harness(faulty.url);
      const me = practitioner('abort');
      const controller = new AbortController();
      const gone = h.resolver.lookup(me, CARE_TEAM, controller.signal);
      const stays = h.resolver.lookup(me, CARE_TEAM);
      controller.abort(new GatewayError('client-closed', 'test'));
      await expect(gone).rejects.toMatchObject({ code: 'client-closed' });
      expect((await stays).patients.size).toBe(0);
      expect(faulty.requests).toHaveLength(1);
    } finally {
      await faulty.close();
    }
  });

  it('a closed resolver refuses', async () => {
    const h = harness(up.url);
    await h.resolver.close();
    await refused(h.resolver.lookup(practitioner('closed'), CARE_TEAM));
  });
});

const redis: RedisHandle | undefined = await startRedis({ appendfsync: 'everysec' });
const withRedis = redis ? describe : describe.skip;

withRedis('shared through Redis', () => {
  const clients: Redis[] = [];
  const client = (url = redis!.url, commandTimeoutMs = 1000): Redis => {
    const c = new Redis(url, failFastRedisOptions(commandTimeoutMs));
    c.on('error', () => {});
    clients.push(c);
    return c;
  };
  const ready = (c: Redis) => (c.status === 'ready' ? Promise.resolve() : new Promise<void>((r) => c.once('ready', () => r())));
  /** The shared entry a lookup just wrote (the write is not awaited by the lookup). */
  const newKey = async (c: Redis, before: Set<string>): Promise<string> => {
    let key: string | undefined;
    await expect.poll(async () => (key = (await c.keys('phi-gateway:rel:*')).find((k) => !before.has(k)))).toBeDefined();
    return key!;
  };
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis?.dispose();
  });

  it('a second replica takes the first one entry and does not ask the upstream', async () => {
    const me = practitioner('shared');
    const ct = await careTeam(me, 'shared-pat');
    const [c1, c2] = [client(), client()];
    await Promise.all([ready(c1), ready(c2)]);
    const one = harness(up.url, { redis: c1 });
    const two = harness(up.url, { redis: c2 });
    two.clock.t = one.clock.t + 1000;
    const before = new Set(await c1.keys('phi-gateway:rel:*'));
    expect(patientsOf(await one.resolver.lookup(me, ALL))).toEqual(['shared-pat']);
    expect(one.sent.length).toBeGreaterThan(0);
    const key = await newKey(c1, before);
    expect(key).toMatch(/^phi-gateway:rel:[0-9a-f]{64}$/);
    const pttl = await c1.pttl(key);
    expect(pttl).toBeGreaterThan(TTL - 5000);
    expect(pttl).toBeLessThanOrEqual(TTL);

    const shared = await two.resolver.lookup(me, ALL);
    expect(two.sent).toEqual([]);
    expect(shared.patients.get('shared-pat')).toEqual([{ source: 'care-team', resource: `CareTeam/${ct.id}` }]);
    expect(shared.resolvedAt).toBe(one.clock.t);
    expect(two.resolver.stats()).toMatchObject({ hits: 1, misses: 0, callers: 1 });
    // Its age counts from the first replica's lookup: expired there, expired here.
    two.clock.t = one.clock.t + TTL;
    await two.resolver.lookup(me, ALL);
    expect(two.sent.length).toBeGreaterThan(0);
  });

  it('an entry made under other sources, or unreadable, is not used', async () => {
    const me = practitioner('shared-other');
    const [c1, c2] = [client(), client()];
    await Promise.all([ready(c1), ready(c2)]);
    const one = harness(up.url, { redis: c1 });
    const before = new Set(await c1.keys('phi-gateway:rel:*'));
    await one.resolver.lookup(me, CARE_TEAM);
    const key = await newKey(c1, before);
    const two = harness(up.url, { redis: c2 });
    await two.resolver.lookup(me, relationships({ team: { kind: 'CareTeam' } }));
    expect(two.sent).toHaveLength(1);
    // Corrupt every shared entry: a third replica asks the upstream.
    await c1.set(key, JSON.stringify({ v: 1, caller: me, resolvedAt: one.clock.t, patients: [['injected-pat', [['care-team', 'not a reference']]]] }), 'PX', TTL);
    const three = harness(up.url, { redis: client() });
    await ready(clients[clients.length - 1]);
    await three.resolver.lookup(me, CARE_TEAM);
    expect(three.sent).toHaveLength(1);
  });

  it('Redis down: lookups still work, from the upstream, and it is logged once', async () => {
    const dead = await startRedis({ appendfsync: 'everysec' });
    const c = client(dead!.url);
    await ready(c);
    await dead!.kill();
    await dead!.dispose();
    const me = practitioner('redis-down');
    await careTeam(me, 'redis-down-pat');
    const h = harness(up.url, { redis: c });
    expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['redis-down-pat']);
    expect(patientsOf(await h.resolver.lookup(practitioner('redis-down-2'), CARE_TEAM))).toEqual([]);
    expect(h.sent).toHaveLength(2);
    expect(h.logs.filter((l) => l.includes('Redis unavailable'))).toHaveLength(1);
  });

  it('Redis stalled: the lookup falls back to the upstream after the command timeout', async () => {
    const stalled = await startRedis({ appendfsync: 'everysec' });
    try {
      const c = client(stalled!.url, 200);
      await ready(c);
      stalled!.pause();
      const me = practitioner('redis-stalled');
      await careTeam(me, 'stalled-pat');
      const h = harness(up.url, { redis: c });
      const started = Date.now();
      expect(patientsOf(await h.resolver.lookup(me, CARE_TEAM))).toEqual(['stalled-pat']);
      expect(Date.now() - started).toBeLessThan(2000);
      stalled!.resume();
    } finally {
      await stalled?.dispose();
    }
  });

  it('openRelationshipResolver gives a gateway with a Redis audit sink its own shared client', async () => {
    const me = practitioner('opened');
    await careTeam(me, 'opened-pat');
    const config = {
      upstream: { url: up.url, totalTimeoutMs: 5000 },
      limits: { responseBodyBytes: 1024 * 1024 },
      audit: { sink: 'redis', url: redis!.url, stream: 'phi-gateway:audit', failOpen: false, commandTimeoutMs: 1000 },
    } as unknown as GatewayConfig;
    const counting = countingDispatcher();
    const opts = { logger: pino({ level: 'silent' }), dispatcher: counting.dispatcher, upstreamAuthorization: async () => undefined };
    const one = await openRelationshipResolver(config, opts);
    const two = await openRelationshipResolver(config, opts);
    const admin = client();
    await ready(admin);
    try {
      const before = new Set(await admin.keys('phi-gateway:rel:*'));
      expect(patientsOf(await one.lookup(me, CARE_TEAM))).toEqual(['opened-pat']);
      expect(counting.sent).toHaveLength(1);
      await newKey(admin, before);
      expect(patientsOf(await two.lookup(me, CARE_TEAM))).toEqual(['opened-pat']);
      expect(counting.sent).toHaveLength(1);
    } finally {
      await one.close();
      await two.close();
      await counting.close();
    }
  });
});
