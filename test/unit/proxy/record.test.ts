// toAuditRecord: what the record says, and the key order that lets the chain take the native
// JSON fast path (src/audit/canonical.ts). The order is checked here because nothing else would
// notice it regressing: the stored text stays canonical either way, only slower.
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../../src/audit/canonical.js';
import type { Principal } from '../../../src/auth/principal.js';
import type { ClassifiedRequest } from '../../../src/policy/request.js';
import { type Exchange, toAuditRecord } from '../../../src/proxy/record.js';

const principal: Principal = {
  iss: 'https://idp.example',
  sub: 'user-1',
  clientId: 'app',
  jti: 'jti-1',
  roles: ['billing'],
  tokenPurposes: undefined,
  patient: undefined,
  scopes: undefined,
  familyName: undefined,
  exp: 2_000_000_000,
};

function exchange(over: Partial<Exchange> = {}): Exchange {
  return {
    id: 'req-1',
    time: new Date('2025-01-02T03:04:05.000Z'),
    started: process.hrtime.bigint(),
    method: 'GET',
    url: '/Patient?_count=2',
    clientAddress: '10.0.0.1',
    userAgent: 'test',
    policyVersion: 'v1',
    principal,
    purpose: 'HPAYMT',
    role: 'billing',
    request: { interaction: 'search-type', resourceType: 'Patient' } as ClassifiedRequest,
    upstreamStatus: 200,
    upstreamMs: 1.5,
    stats: {
      elementsRemoved: 4,
      resourcesWithheld: 1,
      resources: ['Patient/b', 'Patient/a'],
      patients: new Set(['b', 'a']),
      elements: new Map([
        ['Patient', new Set(['name', 'id'])],
        ['Account', new Set(['status'])],
        ['Empty', new Set<string>()],
      ]),
    },
    ...over,
  };
}

const outcome = { status: 200, decision: 'allow', rule: 'r' } as const;

/** Paths of plain objects whose own keys are not in sorted order. */
function unsorted(v: unknown, path = '$'): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => unsorted(x, `${path}[${i}]`));
  if (v === null || typeof v !== 'object') return [];
  const keys = Object.keys(v);
  const own = keys.some((k, i) => i > 0 && !(keys[i - 1] < k)) ? [path] : [];
  return [...own, ...keys.flatMap((k) => unsorted((v as Record<string, unknown>)[k], `${path}.${k}`))];
}

describe('toAuditRecord', () => {
  it('records who, why, what and what was disclosed', () => {
    const r = toAuditRecord(exchange(), outcome);
    expect(r).toMatchObject({
      id: 'req-1',
      time: '2025-01-02T03:04:05.000Z',
      kind: 'fhir',
      actor: { iss: 'https://idp.example', sub: 'user-1', clientId: 'app', jti: 'jti-1', roles: ['billing'] },
      purpose: 'HPAYMT',
      role: 'billing',
      client: { address: '10.0.0.1', userAgent: 'test' },
      request: { method: 'GET', path: '/Patient?_count=2', interaction: 'search-type', resourceType: 'Patient' },
      decision: 'allow',
      rule: 'r',
      status: 200,
      upstreamStatus: 200,
      policyVersion: 'v1',
      disclosed: {
        resources: ['Patient/b', 'Patient/a'],
        patients: ['b', 'a'],
        elementsRemoved: 4,
        resourcesWithheld: 1,
        // Types and names sorted; a type with no names left out.
        elements: { Account: ['status'], Patient: ['id', 'name'] },
      },
    });
    expect(r.durations.upstreamMs).toBe(1.5);
    expect(r.durations.totalMs).toBeGreaterThanOrEqual(0);
  });

  it('lists keys in sorted order at every level, so the chain can use the native serializer', () => {
    expect(unsorted(toAuditRecord(exchange(), outcome))).toEqual([]);
    const bare = toAuditRecord(exchange({ principal: undefined, stats: undefined, request: undefined, kind: 'export', details: { b: 1, a: 2 } }), outcome);
    // details is the caller's free-form object, passed through as given.
    expect(unsorted(bare)).toEqual(['$.details']);
    expect(canonicalJson(bare)).toContain('"details":{"a":2,"b":1}');
  });

  it('does not share or modify the exchange state', () => {
    const ex = exchange();
    const r = toAuditRecord(ex, outcome);
    expect(r.disclosed.patients).not.toBe(ex.stats?.patients);
    expect([...(ex.stats?.patients ?? [])]).toEqual(['b', 'a']);
    expect(ex.stats?.elements?.get('Patient')).toEqual(new Set(['name', 'id']));
  });
});
