/**
 * The relationship sources' own checks, on Bundles as an upstream might send them. The searches
 * narrow on the server, but an upstream that ignores a parameter (or reads it otherwise) must only
 * ever make the gateway find fewer relationships: every condition is checked again on what came
 * back. The integration test (test/integration/relationship-resolver.test.ts) runs the same sources
 * against the real demo upstream.
 */
import { describe, expect, it } from 'vitest';
import type { RelationshipSource } from '../../../src/policy/plan.js';
import {
  type Caller,
  endOf,
  localReferences,
  MAX_PLACES,
  parseCaller,
  readSearchBundle,
  readSource,
  type Search,
} from '../../../src/relationships/sources.js';

const BASE = 'https://fhir.example.org/r4';
const local = localReferences([BASE, 'https://public.example.org/fhir/']);
const NOW = Date.parse('2026-06-15T12:00:00Z');
const DAY = 86_400_000;
const prac = parseCaller('Practitioner/prac-1')!;
const other = 'Practitioner/prac-2';

type R = Record<string, unknown>;

function bundle(matches: R[], opts: { include?: R[]; next?: boolean } = {}): R {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    entry: [
      ...matches.map((resource) => ({ resource, search: { mode: 'match' } })),
      ...(opts.include ?? []).map((resource) => ({ resource, search: { mode: 'include' } })),
    ],
    link: [{ relation: 'self', url: `${BASE}/X` }, ...(opts.next ? [{ relation: 'next', url: `${BASE}/X?page=2` }] : [])],
  };
}

/** Answers each search with the Bundle the test gives for its type (as an upstream that ignores every parameter), recording the queries. */
function upstream(byType: Record<string, R | ((params: URLSearchParams) => R)>): { search: Search; queries: string[] } {
  const queries: string[] = [];
  const search: Search = async (type, params) => {
    const q = new URLSearchParams(params as [string, string][]);
    queries.push(`${type}?${q}`);
    const answer = byType[type];
    if (answer === undefined) throw new Error(`unexpected search of ${type}`);
    return readSearchBundle(typeof answer === 'function' ? answer(q) : answer, type);
  };
  return { search, queries };
}

async function run(kind: RelationshipSource['kind'], byType: Parameters<typeof upstream>[0], opts: { caller?: Caller; days?: number } = {}) {
  const up = upstream(byType);
  const result = await readSource(
    { name: 'src', kind, ...(opts.days === undefined ? {} : { days: opts.days }) },
    { caller: opts.caller ?? prac, count: 1000, now: NOW, local, search: up.search },
  );
  return { ...result, patients: [...new Set(result.links.map((l) => l.patient))].sort(), queries: up.queries };
}

const ref = (reference: string) => ({ reference });

describe('parseCaller', () => {
  it('accepts Practitioner and PractitionerRole references only', () => {
    expect(parseCaller('Practitioner/prac-1')).toEqual({ type: 'Practitioner', id: 'prac-1', ref: 'Practitioner/prac-1' });
    expect(parseCaller('PractitionerRole/r.1')).toEqual({ type: 'PractitionerRole', id: 'r.1', ref: 'PractitionerRole/r.1' });
    for (const bad of ['Patient/p1', 'RelatedPerson/x', 'Practitioner/', 'Practitioner', 'Practitioner/a/b', 'Practitioner/a_b', `Practitioner/${'a'.repeat(65)}`, '']) {
      expect(parseCaller(bad), bad).toBeUndefined();
    }
  });
});

describe('localReferences', () => {
  it('reads relative references and absolute ones under the upstream bases', () => {
    expect(local(ref('Patient/p1'))).toBe('Patient/p1');
    expect(local('Patient/p1')).toBe('Patient/p1');
    expect(local(ref(`${BASE}/Patient/p1`))).toBe('Patient/p1');
    expect(local(ref('https://public.example.org/fhir/Patient/p1'))).toBe('Patient/p1');
    expect(local(ref('Patient/p1/_history/3'))).toBe('Patient/p1');
  });
  it('ignores everything else', () => {
    for (const bad of [
      ref('#contained'),
      ref('urn:uuid:0b7f5d2e-1111-2222-3333-444455556666'),
      ref('https://elsewhere.example.org/r4/Patient/p1'),
      ref(`${BASE}x/Patient/p1`),
      ref(`${BASE}/extra/Patient/p1`),
      ref('Patient/p1?x=1'),
      ref('Patient/'),
      ref('Unknown/p1'),
      ref('Patient/p_1'),
      { identifier: { value: 'p1' } },
      ref(''),
      undefined,
      42,
    ]) {
      expect(local(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });
});

describe('endOf', () => {
  it('is the end of the value at its precision', () => {
    expect(endOf('2026')).toBe(Date.UTC(2027, 0, 1));
    expect(endOf('2026-02')).toBe(Date.UTC(2026, 2, 1));
    expect(endOf('2026-12')).toBe(Date.UTC(2027, 0, 1));
    expect(endOf('2026-02-28')).toBe(Date.UTC(2026, 2, 1));
    expect(endOf('2026-02-28T10:00:00Z')).toBe(Date.UTC(2026, 1, 28, 10, 0, 1));
    expect(endOf('2026-02-28T10:00:00.5+02:00')).toBe(Date.UTC(2026, 1, 28, 8, 0, 1, 500));
  });
  it('is undefined for anything unparseable', () => {
    for (const bad of ['', 'yesterday', '2026-13-01T00:00:00Z', '26-01-01', '2026-01-01T10:00', 20260101, undefined]) {
      expect(endOf(bad), String(bad)).toBeUndefined();
    }
  });
});

describe('readSearchBundle', () => {
  it('splits matches from included resources and notices a next page', () => {
    const claim = { resourceType: 'Claim', id: 'c1' };
    const r = readSearchBundle(bundle([{ resourceType: 'Task', id: 't1' }], { include: [claim], next: true }), 'Task');
    expect(r.matches.map((m) => m.id)).toEqual(['t1']);
    expect(r.included.get('Claim/c1')).toEqual(claim);
    expect(r.truncated).toBe(true);
    expect(readSearchBundle({ resourceType: 'Bundle', type: 'searchset' }, 'Task')).toEqual({ matches: [], included: new Map(), truncated: false });
  });
  it('refuses what is not a searchset Bundle', () => {
    for (const bad of [null, [], 'x', { resourceType: 'OperationOutcome' }, { resourceType: 'Bundle', type: 'batch-response' }, { resourceType: 'Bundle', type: 'searchset', entry: {} }]) {
      expect(() => readSearchBundle(bad, 'Task'), JSON.stringify(bad)).toThrow();
    }
  });
  it('skips entries without a resource and OperationOutcome entries', () => {
    const r = readSearchBundle(
      { resourceType: 'Bundle', type: 'searchset', entry: [null, {}, { resource: 'x' }, { resource: { resourceType: 'OperationOutcome' }, search: { mode: 'outcome' } }] },
      'Task',
    );
    expect(r.matches).toEqual([]);
  });
});

describe('CareTeam', () => {
  const team = (id: string, over: R = {}): R => ({
    resourceType: 'CareTeam',
    id,
    status: 'active',
    subject: ref(`Patient/${id}-pat`),
    participant: [{ member: ref(prac.ref) }],
    ...over,
  });
  it('asks for active teams with the caller and keeps only those', async () => {
    const r = await run('CareTeam', {
      CareTeam: bundle([
        team('ok'),
        team('abs', { participant: [{ member: ref(`${BASE}/${prac.ref}`) }] }),
        team('inactive', { status: 'inactive' }),
        team('other', { participant: [{ member: ref(other) }] }),
        team('left', { participant: [{ member: ref(prac.ref), period: { end: '2026-01-01' } }] }),
        team('ended', { period: { end: '2026-06-01' } }),
        team('group', { subject: ref('Group/g1') }),
        team('foreign', { subject: ref('https://elsewhere.example.org/Patient/x') }),
      ]),
    });
    expect(r.queries).toEqual(['CareTeam?participant=Practitioner%2Fprac-1&status=active&_count=1000']);
    expect(r.patients).toEqual(['abs-pat', 'ok-pat']);
    expect(r.links).toContainEqual({ patient: 'ok-pat', resource: 'CareTeam/ok' });
    expect(r.truncated).toBe(false);
  });
  it('reports a next page as truncated', async () => {
    const r = await run('CareTeam', { CareTeam: bundle([team('ok')], { next: true }) });
    expect(r.truncated).toBe(true);
    expect(r.patients).toEqual(['ok-pat']);
  });
});

describe('Encounter', () => {
  const enc = (id: string, over: R = {}): R => ({
    resourceType: 'Encounter',
    id,
    status: 'finished',
    subject: ref(`Patient/${id}-pat`),
    participant: [{ individual: ref(prac.ref) }],
    ...over,
  });
  it('keeps current encounters and those ended within `days`, never cancelled ones', async () => {
    const r = await run(
      'Encounter',
      {
        Encounter: bundle([
          enc('open', { status: 'in-progress', period: { start: '2020-01-01' } }),
          enc('noend', { status: 'planned' }),
          enc('arrived-ended', { status: 'arrived', period: { end: '2020-01-01' } }),
          enc('recent', { period: { start: '2026-06-01', end: '2026-06-10T08:00:00Z' } }),
          enc('edge', { period: { end: new Date(NOW - 29 * DAY).toISOString() } }),
          enc('old', { period: { end: new Date(NOW - 31 * DAY).toISOString() } }),
          enc('garbled-end', { period: { end: 'soon' } }),
          enc('cancelled', { status: 'cancelled' }),
          enc('error', { status: 'entered-in-error', period: { start: '2026-06-14' } }),
          enc('nostatus', { status: undefined }),
          enc('other', { participant: [{ individual: ref(other) }] }),
        ]),
      },
      { days: 30 },
    );
    expect(r.patients).toEqual(['arrived-ended-pat', 'edge-pat', 'noend-pat', 'open-pat', 'recent-pat']);
    expect(r.queries).toEqual([`Encounter?participant=Practitioner%2Fprac-1&date=ge${encodeURIComponent('2026-05-16T12:00:00Z')}&_count=1000`]);
  });
  it('without `days`, current encounters only', async () => {
    const r = await run('Encounter', {
      Encounter: bundle([enc('open', { status: 'in-progress' }), enc('yesterday', { period: { end: new Date(NOW - DAY).toISOString() } })]),
    });
    expect(r.patients).toEqual(['open-pat']);
  });
});

describe('EpisodeOfCare', () => {
  const eoc = (id: string, over: R = {}): R => ({ resourceType: 'EpisodeOfCare', id, status: 'active', patient: ref(`Patient/${id}-pat`), careManager: ref(prac.ref), ...over });
  it('keeps active episodes the caller manages', async () => {
    const r = await run('EpisodeOfCare', {
      EpisodeOfCare: bundle([eoc('ok'), eoc('finished', { status: 'finished' }), eoc('other', { careManager: ref(other) }), eoc('ended', { period: { end: '2025' } })]),
    });
    expect(r.queries).toEqual(['EpisodeOfCare?care-manager=Practitioner%2Fprac-1&status=active&_count=1000']);
    expect(r.patients).toEqual(['ok-pat']);
  });
});

describe('PractitionerRole', () => {
  const role = (id: string, over: R = {}): R => ({ resourceType: 'PractitionerRole', id, active: true, practitioner: ref(prac.ref), ...over });
  const enc = (id: string, over: R = {}): R => ({ resourceType: 'Encounter', id, status: 'in-progress', subject: ref(`Patient/${id}-pat`), ...over });
  const at = (loc: string, over: R = {}) => ({ location: [{ location: ref(loc), ...over }] });

  it("finds in-progress encounters at the active roles' locations, or their organization when they name none", async () => {
    const r = await run('PractitionerRole', {
      PractitionerRole: bundle([
        role('ward', { location: [ref('Location/ward-5')], organization: ref('Organization/hospital') }),
        role('clinic', { organization: ref('Organization/clinic') }),
        role('inactive', { active: false, location: [ref('Location/icu')] }),
        role('ended', { period: { end: '2026-01-01' }, location: [ref('Location/er')] }),
        role('someone-else', { practitioner: ref(other), location: [ref('Location/psych')] }),
      ]),
      Encounter: bundle([
        enc('at-ward', at('Location/ward-5')),
        enc('at-clinic', { serviceProvider: ref('Organization/clinic') }),
        enc('moved-on', at('Location/ward-5', { status: 'completed' })),
        enc('left', at('Location/ward-5', { period: { end: '2026-06-01' } })),
        enc('finished', { ...at('Location/ward-5'), status: 'finished' }),
        enc('hospital-wide', { ...at('Location/other-ward'), serviceProvider: ref('Organization/hospital') }),
        enc('icu', at('Location/icu')),
        enc('psych', at('Location/psych')),
      ]),
    });
    expect(r.queries).toEqual([
      'PractitionerRole?practitioner=Practitioner%2Fprac-1&active=true&_count=1000',
      'Encounter?location=Location%2Fward-5&status=in-progress&_count=1000',
      'Encounter?service-provider=Organization%2Fclinic&status=in-progress&_count=1000',
    ]);
    expect(r.patients).toEqual(['at-clinic-pat', 'at-ward-pat']);
    expect(r.links).toContainEqual({ patient: 'at-ward-pat', resource: 'Encounter/at-ward' });
  });

  it('a PractitionerRole caller uses that role only', async () => {
    const caller = parseCaller('PractitionerRole/ward')!;
    const r = await run(
      'PractitionerRole',
      {
        PractitionerRole: bundle([role('ward', { location: [ref('Location/ward-5')] }), role('other-role', { location: [ref('Location/icu')] })]),
        Encounter: bundle([enc('at-ward', at('Location/ward-5')), enc('icu', at('Location/icu'))]),
      },
      { caller },
    );
    expect(r.queries[0]).toBe('PractitionerRole?_id=ward&active=true&_count=1000');
    expect(r.patients).toEqual(['at-ward-pat']);
  });

  it('no active role: no encounter search', async () => {
    const r = await run('PractitionerRole', { PractitionerRole: bundle([role('x', { active: false, location: [ref('Location/a')] })]) });
    expect(r.queries).toHaveLength(1);
    expect(r.links).toEqual([]);
  });

  it(`searches at most ${MAX_PLACES} locations and says it truncated`, async () => {
    const many = Array.from({ length: MAX_PLACES + 5 }, (_, i) => ref(`Location/l${i}`));
    const r = await run('PractitionerRole', { PractitionerRole: bundle([role('big', { location: many })]), Encounter: bundle([]) });
    expect(new URLSearchParams(r.queries[1].split('?')[1]).get('location')!.split(',')).toHaveLength(MAX_PLACES);
    expect(r.truncated).toBe(true);
  });
});

describe('Task', () => {
  const task = (id: string, over: R = {}): R => ({ resourceType: 'Task', id, status: 'requested', intent: 'order', owner: ref(prac.ref), ...over });
  it('takes Task.for, else the focus resource patient, for open tasks the caller owns', async () => {
    const r = await run('Task', {
      Task: bundle(
        [
          task('for', { for: ref('Patient/for-pat'), focus: ref('Claim/c-other') }),
          task('claim', { focus: ref('Claim/c1') }),
          task('account', { status: 'on-hold', focus: ref(`${BASE}/Account/a1`) }),
          task('condition', { status: 'draft', for: ref('Group/g'), focus: ref('Condition/cond-1') }),
          task('coverage', { status: 'in-progress', focus: ref('Coverage/cov-1') }),
          task('patient-focus', { status: 'ready', focus: ref('Patient/focus-pat') }),
          task('missing-focus', { focus: ref('Claim/not-included') }),
          task('completed', { status: 'completed', for: ref('Patient/done-pat') }),
          task('cancelled', { status: 'cancelled', for: ref('Patient/cancelled-pat') }),
          task('someone-else', { owner: ref(other), for: ref('Patient/other-pat') }),
        ],
        {
          include: [
            { resourceType: 'Claim', id: 'c1', patient: ref('Patient/claim-pat') },
            { resourceType: 'Claim', id: 'c-other', patient: ref('Patient/not-this') },
            { resourceType: 'Account', id: 'a1', subject: [ref('Device/d1'), ref('Patient/account-pat')] },
            { resourceType: 'Condition', id: 'cond-1', subject: ref('Patient/condition-pat') },
            { resourceType: 'Coverage', id: 'cov-1', beneficiary: ref('Patient/coverage-pat') },
          ],
        },
      ),
    });
    expect(r.queries).toEqual([
      'Task?owner=Practitioner%2Fprac-1&status=draft%2Crequested%2Creceived%2Caccepted%2Cready%2Cin-progress%2Con-hold&_include=Task%3Afocus&_count=1000',
    ]);
    expect(r.patients).toEqual(['account-pat', 'claim-pat', 'condition-pat', 'coverage-pat', 'focus-pat', 'for-pat']);
    expect(r.links).toContainEqual({ patient: 'claim-pat', resource: 'Task/claim' });
  });
});
