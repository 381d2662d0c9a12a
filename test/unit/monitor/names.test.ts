import { describe, expect, it } from 'vitest';
import { createUpstreamFamilyLookup } from '../../../src/monitor/names.js';

/** An upstream that knows a few patients' family names and counts its reads. */
function upstream(names: Record<string, string[]>) {
  const reads: string[] = [];
  const fetch = (async (url: string) => {
    const id = String(url).split('/Patient/')[1];
    reads.push(id);
    const family = names[id];
    if (!family) return new Response('{}', { status: 404 });
    return new Response(JSON.stringify({ resourceType: 'Patient', id, name: family.map((f) => ({ family: f })) }), { status: 200 });
  }) as typeof globalThis.fetch;
  return { reads, lookup: createUpstreamFamilyLookup({ url: 'http://fhir.test/fhir/', authorization: async () => undefined, fetch }) };
}

describe('family-name lookup', () => {
  const names = { p1: ['Müller'], p2: ['Smith', 'Jones'], p3: [] };

  it('matcher(family) judges like matches(patient, family), case, accents and space aside', async () => {
    const { lookup } = upstream(names);
    for (const family of ['MULLER ', 'müller', 'jones', 'Smith', 'Doe', '   ', '']) {
      const test = lookup.matcher!(family);
      for (const id of ['p1', 'p2', 'p3', 'p4', 'bad id!']) {
        expect(await test(id)).toBe(await lookup.matches(id, family));
      }
    }
    expect(await lookup.matcher!('  mULLer')('p1')).toBe(true);
    expect(await lookup.matcher!('Jones')('p2')).toBe(true);
    expect(await lookup.matcher!('Jones')('p1')).toBe(false);
  });

  it('reads each patient once while cached, and never for an empty name or a malformed id', async () => {
    const { lookup, reads } = upstream(names);
    const test = lookup.matcher!('Smith');
    await test('p1');
    await test('p2');
    await test('p1');
    expect(reads).toEqual(['p1', 'p2']);
    await lookup.matcher!(' ')('p3');
    await test('../Patient/p1');
    expect(reads).toEqual(['p1', 'p2']);
  });
});
