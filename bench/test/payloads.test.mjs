import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  BENCH_PRACTITIONER,
  buildPayloads,
  CONFIDENTIALITY,
  createPagedSearch,
  makePatient,
  RELATED_PATIENT,
  RELATIONSHIP_TYPES,
  RESULT_SIZE,
  relationshipSearch,
} from '../lib/payloads.mjs';
import { measure, median } from '../lib/timing.mjs';

const base = 'http://127.0.0.1:9/fhir';

describe('payloads', () => {
  const p = buildPayloads(base);
  it('has the sizes SPEC 7 names: ~4 KB read, ~400 KB searchset, ~5 MB Bundle', () => {
    assert.ok(p.patient.length > 3000 && p.patient.length < 5000, `patient ${p.patient.length}`);
    assert.ok(p.searchset.length > 350_000 && p.searchset.length < 450_000, `searchset ${p.searchset.length}`);
    assert.ok(p.big.length >= 5 * 1024 * 1024 && p.big.length < 6 * 1024 * 1024, `big ${p.big.length}`);
  });
  it('is deterministic, so two revisions are measured on the same bytes', () => {
    assert.ok(buildPayloads(base).searchset.equals(p.searchset));
  });
  it('is a 100-entry searchset of distinct Patients with upstream URLs to rewrite', () => {
    const b = JSON.parse(p.searchset.toString());
    assert.equal(b.type, 'searchset');
    assert.equal(b.entry.length, 100);
    assert.equal(new Set(b.entry.map((e) => e.resource.id)).size, 100);
    assert.ok(b.entry.every((e) => e.fullUrl === `${base}/Patient/${e.resource.id}`));
    assert.ok(b.link.every((l) => l.url.startsWith(`${base}/`)));
  });
  it('carries what the shipped policy acts on', () => {
    const pt = makePatient(10);
    assert.ok(pt.identifier.some((i) => i.system === 'http://hl7.org/fhir/sid/us-ssn'));
    assert.ok(pt.identifier.some((i) => i.type.coding[0].code === 'MR'));
    assert.ok(pt.telecom.length > 0 && pt.text.div.includes(pt.name[0].family));
    // index 10 is one of the over-89 patients (age90 transform)
    assert.ok(Number(pt.birthDate.slice(0, 4)) < 1935);
  });
});

describe('paged search (the upstream)', () => {
  const search = createPagedSearch(base);
  const page = (q) => {
    const r = search.page(new URLSearchParams(q));
    return { status: r.status, body: r.status === 200 ? JSON.parse(r.body.toString()) : undefined, bytes: r.body };
  };
  const next = (b) => b.link.find((l) => l.relation === 'next')?.url;
  const ids = (b) => (b.entry ?? []).map((e) => e.resource.id);
  const isR = (e) => e.resource.meta.security.some((c) => c.system === CONFIDENTIALITY && c.code === 'R');

  it('honours _count (default 100, at most 1000) and reports the result size as total', () => {
    assert.equal(RESULT_SIZE, 1000);
    for (const [q, n] of [['', 100], ['_count=100', 100], ['_count=101', 101], ['_count=7', 7], ['_count=5000', 1000]]) {
      const { body } = page(q);
      assert.equal(body.type, 'searchset');
      assert.equal(body.total, 1000, q);
      assert.equal(body.entry.length, n, q);
    }
    assert.deepEqual(ids(page('_count=3').body), ['pat-00001', 'pat-00002', 'pat-00003']);
  });
  it('honours _offset and links next (absolute, _count and _offset) only while more remain', () => {
    const first = page('_count=101').body;
    assert.equal(next(first), `${base}/Patient?_count=101&_offset=101`);
    const second = page(next(first).slice(`${base}/Patient?`.length)).body;
    assert.deepEqual(ids(second).slice(0, 2), ['pat-00102', 'pat-00103']);
    assert.ok(second.link.every((l) => l.url.startsWith(`${base}/Patient?`)));
    assert.ok(second.entry.every((e) => e.fullUrl === `${base}/Patient/${e.resource.id}`));
    const last = page('_count=100&_offset=900').body;
    assert.equal(last.entry.length, 100);
    assert.equal(next(last), undefined);
    const tail = page('_count=101&_offset=909').body;
    assert.equal(tail.entry.length, 91);
    assert.equal(next(tail), undefined);
    const past = page('_offset=1000').body;
    assert.equal(past.entry, undefined);
    assert.equal(past.total, 1000);
    // Walking the next links visits every Patient once.
    const seen = [];
    for (let q = '_count=333'; q !== undefined; ) {
      const b = page(q).body;
      seen.push(...ids(b));
      q = next(b)?.slice(`${base}/Patient?`.length);
    }
    assert.equal(seen.length, 1000);
    assert.equal(new Set(seen).size, 1000);
  });
  it('refuses a malformed _count or _offset', () => {
    assert.equal(page('_count=-1').status, 400);
    assert.equal(page('_offset=x').status, 400);
    assert.equal(page('_count=1&_count=2').status, 400);
  });
  it('keeps other parameters in the links; name=halfwithheld labels exactly every other entry R', () => {
    const a = page('name=halfwithheld&_count=101').body;
    assert.equal(a.total, 1000);
    assert.equal(next(a), `${base}/Patient?name=halfwithheld&_count=101&_offset=101`);
    const b = page('name=halfwithheld&_count=101&_offset=101').body;
    const all = [...a.entry, ...b.entry];
    assert.equal(all.length, 202);
    assert.deepEqual(
      all.map(isR),
      all.map((_, k) => k % 2 === 1),
    );
    // 101 visible in two upstream pages of 101: what the billing gateway needs for a page of 100 plus one.
    assert.equal(all.filter((e) => !isR(e)).length, 101);
    // The plain set labels nothing R.
    assert.equal(page('_count=1000').body.entry.filter(isR).length, 0);
  });
  it('serves cached bytes, bounded', () => {
    const small = createPagedSearch(base, { maxPages: 3 });
    const x = small.page(new URLSearchParams('_count=10'));
    assert.equal(small.page(new URLSearchParams('_count=10')).body, x.body);
    for (let o = 0; o < 10; o++) small.page(new URLSearchParams(`_count=10&_offset=${o * 10}`));
    assert.ok(small.cached().pages <= 3);
    assert.ok(small.stats.evicted > 0 && small.stats.hits >= 1);
    const tiny = createPagedSearch(base, { maxBytes: 1 });
    tiny.page(new URLSearchParams('_count=2'));
    tiny.page(new URLSearchParams('_count=3'));
    assert.equal(tiny.cached().pages, 1);
  });
  it('the searchset payload is the first page of 100', () => {
    assert.ok(page('_count=100').bytes.equals(buildPayloads(base).searchset));
  });
});

describe('timing', () => {
  it('median of odd and even lists, without sorting the input', () => {
    const xs = [5, 1, 3];
    assert.equal(median(xs), 3);
    assert.deepEqual(xs, [5, 1, 3]);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.throws(() => median([]));
  });
  it('measures a slower function as slower', async () => {
    const spin = (n) => () => {
      let x = 0;
      for (let i = 0; i < n; i++) x += i;
      return x;
    };
    const fast = await measure('fast', spin(100), { rounds: 3, roundMs: 10 });
    const slow = await measure('slow', spin(10_000), { rounds: 3, roundMs: 10 });
    assert.ok(slow.nsPerOp > fast.nsPerOp * 5, `${slow.nsPerOp} vs ${fast.nsPerOp}`);
  });
});

describe('care relationships (the upstream)', () => {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const search = (type, q) => JSON.parse(relationshipSearch(base, type, new URLSearchParams(q)).toString());
  it('relate the bench practitioner to the patient every read returns, through one active CareTeam', () => {
    assert.equal(JSON.parse(buildPayloads(base).patient.toString()).id, RELATED_PATIENT);
    for (const member of [BENCH_PRACTITIONER, `${base}/${BENCH_PRACTITIONER}`]) {
      const b = search('CareTeam', `participant=${encodeURIComponent(member)}&status=active&_count=1000`);
      assert.equal(b.type, 'searchset');
      assert.deepEqual(
        b.entry.map((e) => [e.resource.subject.reference, e.resource.status]),
        [[`Patient/${RELATED_PATIENT}`, 'active']],
      );
    }
  });
  it('relate nobody else, and hold nothing for the other sources', () => {
    assert.equal(search('CareTeam', 'participant=Practitioner/someone-else&status=active').entry.length, 0);
    assert.equal(search('CareTeam', `participant=${BENCH_PRACTITIONER}&status=inactive`).entry.length, 0);
    for (const type of RELATIONSHIP_TYPES.filter((t) => t !== 'CareTeam')) {
      const b = search(type, `participant=${BENCH_PRACTITIONER}`);
      assert.deepEqual([b.resourceType, b.type, b.entry.length], ['Bundle', 'searchset', 0], type);
    }
  });
  it("are read by the gateway's own relationship sources as that one link", async () => {
    // Built dist/ (`npm test` builds first): the code the gateway looks relationships up with.
    const { readSearchBundle, readSource, localReferences, parseCaller } = await import(pathToFileURL(join(root, 'dist', 'relationships', 'sources.js')).href);
    const input = {
      caller: parseCaller(BENCH_PRACTITIONER),
      count: 1000,
      now: Date.now(),
      local: localReferences([base]),
      search: async (type, params) => readSearchBundle(JSON.parse(relationshipSearch(base, type, new URLSearchParams(params)).toString()), type),
    };
    const links = [];
    for (const kind of RELATIONSHIP_TYPES) links.push(...(await readSource({ name: kind, kind, days: 30 }, input)).links);
    assert.deepEqual(links, [{ patient: RELATED_PATIENT, resource: 'CareTeam/bench-careteam' }]);
  });
});
