import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildPayloads, makePatient } from '../lib/payloads.mjs';
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
