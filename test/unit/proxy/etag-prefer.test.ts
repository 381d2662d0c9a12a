import { describe, expect, it } from 'vitest';
import { gatewayEtag, ifNoneMatchHits, upstreamVersionTag } from '../../../src/proxy/etag.js';
import { returnPreference } from '../../../src/proxy/prefer.js';

describe('gatewayEtag', () => {
  it('is a strong tag of 27 base64url characters, equal for equal bytes and different otherwise', () => {
    const a = gatewayEtag(Buffer.from('{"resourceType":"Patient"}'));
    expect(a).toMatch(/^"[A-Za-z0-9_-]{27}"$/);
    expect(gatewayEtag(Buffer.from('{"resourceType":"Patient"}'))).toBe(a);
    expect(gatewayEtag(Buffer.from('{"resourceType":"Patient" }'))).not.toBe(a);
  });
});

describe('ifNoneMatchHits (weak comparison)', () => {
  const tag = '"abc"';
  it.each([
    ['"abc"', true],
    ['W/"abc"', true],
    ['"x", "abc"', true],
    ['"x",W/"abc"', true],
    ['*', true],
    [' * ', true],
    ['"abcd"', false],
    ['abc', false],
    ['W/abc', false],
    ['"x", *', false],
    ['', false],
  ])('%s -> %s', (header, hit) => {
    expect(ifNoneMatchHits(header, tag)).toBe(hit);
  });
  it('no header, no hit', () => {
    expect(ifNoneMatchHits(undefined, tag)).toBe(false);
  });
});

describe('upstreamVersionTag', () => {
  it.each([
    ['W/"3"', 'W/"3"'],
    ['W/"a.b-C"', 'W/"a.b-C"'],
    ['"3"', undefined],
    ['W/"3 4"', undefined],
    [undefined, undefined],
  ])('%s -> %s', (etag, out) => {
    expect(upstreamVersionTag(etag)).toBe(out);
  });
});

describe('returnPreference', () => {
  it.each([
    ['return=minimal', 'minimal'],
    ['return=representation', 'representation'],
    ['return=OperationOutcome', 'OperationOutcome'],
    ['handling=strict, return=minimal', 'minimal'],
    ['respond-async; return="minimal"', 'minimal'],
    ['RETURN=minimal', 'minimal'],
    ['return=operationoutcome', undefined],
    ['return=everything', undefined],
    ['handling=lenient', undefined],
    [undefined, undefined],
  ])('%s -> %s', (header, pref) => {
    expect(returnPreference(header)).toBe(pref);
  });
});
