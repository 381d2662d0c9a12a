import { describe, expect, it } from 'vitest';
import type { AuditRecord, AuditSink } from '../../../src/audit/record.js';
import { loadPolicy } from '../../../src/config/load.js';
import type { Exchange } from '../../../src/proxy/record.js';
import { createMetrics, upstreamErrorKind } from '../../../src/server/metrics.js';

const policy = loadPolicy(new URL('../../../config/policy.yaml', import.meta.url).pathname).policy;

function exchange(over: Partial<Exchange> = {}): Exchange {
  return {
    id: 'req-1',
    time: new Date(),
    started: process.hrtime.bigint() - 5_000_000n,
    method: 'GET',
    url: '/Patient/pat-alice',
    clientAddress: '127.0.0.1',
    userAgent: undefined,
    policyVersion: policy.version,
    ...over,
  };
}

/** The value of one series in the text exposition, or undefined when absent. */
function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe('upstreamErrorKind', () => {
  it('reads the error code at the end of a rule, alone or after the rule', () => {
    expect(upstreamErrorKind('upstream-timeout')).toBe('timeout');
    expect(upstreamErrorKind('roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]: upstream-unavailable')).toBe('unavailable');
    expect(upstreamErrorKind('x: upstream-bad-response')).toBe('bad-response');
    expect(upstreamErrorKind('x: upstream-too-large')).toBe('too-large');
    expect(upstreamErrorKind('x: upstream-error')).toBe('error');
  });
  it('ignores other codes and upstream-like words elsewhere in the rule', () => {
    expect(upstreamErrorKind('roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]')).toBeUndefined();
    expect(upstreamErrorKind('upstream-timeout: type-denied')).toBeUndefined();
    expect(upstreamErrorKind('x: upstream-made-up')).toBeUndefined();
    expect(upstreamErrorKind('audit-unavailable')).toBeUndefined();
  });
});

describe('createMetrics', () => {
  it('counts requests by decision, role, purpose and status', async () => {
    const m = createMetrics({ policy: () => policy, processMetrics: false });
    const stats = { elementsRemoved: 7, resourcesWithheld: 2, resources: ['Patient/pat-alice'], patients: new Set(['pat-alice']) };
    m.observe(exchange({ role: 'billing', purpose: 'HPAYMT', stats, upstreamMs: 12, request: { interaction: 'read' } as Exchange['request'] }), {
      status: 200,
      decision: 'allow',
      rule: 'roles.billing.purposes.HPAYMT -> dataSets.billing.rules[0]',
    });
    m.observe(exchange({ role: 'billing', purpose: 'HPAYMT', stats }), { status: 200, decision: 'allow', rule: 'r' });
    m.observe(exchange(), { status: 401, decision: 'deny', rule: 'invalid-token' });
    const text = await m.render();
    expect(value(text, 'phi_gateway_requests_total{decision="allow",role="billing",purpose="HPAYMT",status="200"}')).toBe(2);
    expect(value(text, 'phi_gateway_requests_total{decision="deny",role="none",purpose="none",status="401"}')).toBe(1);
    // Nothing counts what was withheld or redacted: across one request it would be an oracle on
    // what that caller may not see, for anyone who can read the admin port.
    expect(text).not.toMatch(/^phi_gateway_\w*(withheld|redacted)/m);
    expect(value(text, 'phi_gateway_request_duration_seconds_count{decision="allow"}')).toBe(2);
    // The first request took at least the 5 ms its start time says.
    expect(value(text, 'phi_gateway_request_duration_seconds_bucket{le="0.001",decision="allow"}')).toBe(0);
    expect(value(text, 'phi_gateway_upstream_duration_seconds_count{interaction="read"}')).toBe(1);
    expect(value(text, 'phi_gateway_upstream_duration_seconds_bucket{le="0.01",interaction="read"}')).toBe(0);
    expect(value(text, 'phi_gateway_upstream_duration_seconds_bucket{le="0.025",interaction="read"}')).toBe(1);
  });

  it('counts a 404 under one decision, withheld (deny) or missing upstream (error) alike', async () => {
    // A red-team session told a consent-withheld record from a missing one by this label alone.
    const m = createMetrics({ policy: () => policy, processMetrics: false });
    m.observe(exchange({ role: 'clinician', purpose: 'TREAT' }), { status: 404, decision: 'deny', rule: 'r: withheld (consent)' });
    m.observe(exchange({ role: 'clinician', purpose: 'TREAT' }), { status: 404, decision: 'error', rule: 'not-found' });
    const text = await m.render();
    expect(value(text, 'phi_gateway_requests_total{decision="deny",role="clinician",purpose="TREAT",status="404"}')).toBe(2);
    expect(text).not.toMatch(/decision="error"[^\n]*status="404"/);
    expect(value(text, 'phi_gateway_request_duration_seconds_count{decision="deny"}')).toBe(2);
  });

  it('bounds label values: roles and purposes outside the policy become "other", statuses stay numeric', async () => {
    const m = createMetrics({ policy: () => policy, processMetrics: false });
    m.observe(exchange({ role: 'pat-alice', purpose: 'Alice Example' }), { status: 403, decision: 'deny', rule: 'purpose-unknown' });
    m.observe(exchange({ role: 'clinician', purpose: 'TREAT' }), { status: 9999, decision: 'error', rule: 'internal' });
    const text = await m.render();
    expect(text).not.toContain('pat-alice');
    expect(text).not.toContain('Alice');
    expect(value(text, 'phi_gateway_requests_total{decision="deny",role="other",purpose="other",status="403"}')).toBe(1);
    expect(value(text, 'phi_gateway_requests_total{decision="error",role="clinician",purpose="TREAT",status="other"}')).toBe(1);
    // No id or path label anywhere.
    expect(text).not.toMatch(/\b(id|path|url|patient|sub)="/);
  });

  it('counts every request exactly once across scrapes, whichever way the registry is read', async () => {
    const m = createMetrics({ policy: () => policy, processMetrics: false });
    const stats = { elementsRemoved: 3, resourcesWithheld: 1, resources: [], patients: new Set<string>() };
    const allow = (role: string, purpose: string) =>
      m.observe(exchange({ role, purpose, stats }), { status: 200, decision: 'allow', rule: 'r' });
    allow('billing', 'HPAYMT');
    allow('billing', 'HPAYMT');
    allow('clinician', 'TREAT');
    const first = await m.render();
    expect(value(first, 'phi_gateway_requests_total{decision="allow",role="billing",purpose="HPAYMT",status="200"}')).toBe(2);
    allow('billing', 'HPAYMT');
    // A direct read of the counter sees the pending count too, and a later scrape does not add it twice.
    const json = await m.registry.getSingleMetric('phi_gateway_requests_total')!.get();
    const billing = json.values.find((v) => v.labels.role === 'billing');
    expect(billing?.value).toBe(3);
    const second = await m.render();
    expect(value(second, 'phi_gateway_requests_total{decision="allow",role="billing",purpose="HPAYMT",status="200"}')).toBe(3);
    expect(value(second, 'phi_gateway_requests_total{decision="allow",role="clinician",purpose="TREAT",status="200"}')).toBe(1);
    expect(value(second, 'phi_gateway_request_duration_seconds_count{decision="allow"}')).toBe(4);
  });

  it('keeps label tuples apart even when role and purpose names could run together', async () => {
    const odd = { ...policy, roles: new Map([...policy.roles, ['a b', policy.roles.get('billing')!], ['a', policy.roles.get('billing')!]]), purposes: new Map([...policy.purposes, ['b c', policy.purposes.get('TREAT')!], ['c', policy.purposes.get('TREAT')!]]) };
    const m = createMetrics({ policy: () => odd, processMetrics: false });
    m.observe(exchange({ role: 'a b', purpose: 'c' }), { status: 200, decision: 'allow', rule: 'r' });
    m.observe(exchange({ role: 'a', purpose: 'b c' }), { status: 200, decision: 'allow', rule: 'r' });
    const text = await m.render();
    expect(value(text, 'phi_gateway_requests_total{decision="allow",role="a b",purpose="c",status="200"}')).toBe(1);
    expect(value(text, 'phi_gateway_requests_total{decision="allow",role="a",purpose="b c",status="200"}')).toBe(1);
  });

  it('counts upstream errors by kind from the rule', async () => {
    const m = createMetrics({ policy: () => policy, processMetrics: false });
    m.observe(exchange(), { status: 504, decision: 'error', rule: 'roles.x: upstream-timeout' });
    m.observe(exchange(), { status: 504, decision: 'error', rule: 'upstream-timeout' });
    m.observe(exchange(), { status: 502, decision: 'error', rule: 'r: upstream-too-large' });
    m.observe(exchange(), { status: 404, decision: 'deny', rule: 'r: not-found' });
    const text = await m.render();
    expect(value(text, 'phi_gateway_upstream_errors_total{kind="timeout"}')).toBe(2);
    expect(value(text, 'phi_gateway_upstream_errors_total{kind="too-large"}')).toBe(1);
    expect(text.match(/^phi_gateway_upstream_errors_total\{/gm)).toHaveLength(2);
  });

  it('times audit writes, counts failures, rethrows them and delegates everything else to the sink', async () => {
    const m = createMetrics({ policy: () => policy, processMetrics: false });
    let fail = false;
    const written: AuditRecord[] = [];
    const sink: AuditSink & { writerId: string } = {
      writerId: 'w-1',
      async write(r) {
        await new Promise((res) => setTimeout(res, 3));
        if (fail) throw new Error('disk full');
        written.push(r);
      },
      ready: async () => true,
      close: async () => {},
    };
    const timed = m.timeAudit(sink);
    expect(timed.writerId).toBe('w-1');
    expect(await timed.ready()).toBe(true);
    const record = { id: 'a' } as AuditRecord;
    await timed.write(record);
    fail = true;
    await expect(timed.write(record)).rejects.toThrow('disk full');
    expect(written).toEqual([record]);
    const text = await m.render();
    expect(value(text, 'phi_gateway_audit_write_duration_seconds_count')).toBe(2);
    expect(value(text, 'phi_gateway_audit_write_duration_seconds_bucket{le="0.001"}')).toBe(0);
    expect(value(text, 'phi_gateway_audit_write_failures_total')).toBe(1);
  });

  it('reads break-glass gauges at scrape time and tracks reloads with the policy version in force', async () => {
    let stats = { open: 1, awaitingReview: 3, oldestUnreviewedAgeSec: 120 };
    const m = createMetrics({ policy: () => policy, breakGlass: () => stats, processMetrics: false });
    let text = await m.render();
    expect(value(text, 'phi_gateway_break_glass_sessions_open')).toBe(1);
    expect(value(text, 'phi_gateway_break_glass_sessions_awaiting_review')).toBe(3);
    expect(value(text, 'phi_gateway_break_glass_oldest_unreviewed_age_seconds')).toBe(120);
    stats = { open: 0, awaitingReview: 2, oldestUnreviewedAgeSec: 60 };
    m.reloaded('failure', policy.version);
    m.reloaded('success', 'abcdef0123456789');
    text = await m.render();
    expect(value(text, 'phi_gateway_break_glass_sessions_open')).toBe(0);
    expect(value(text, 'phi_gateway_break_glass_oldest_unreviewed_age_seconds')).toBe(60);
    expect(value(text, 'phi_gateway_config_reloads_total{result="failure"}')).toBe(1);
    expect(value(text, 'phi_gateway_config_reloads_total{result="success"}')).toBe(1);
    expect(value(text, 'phi_gateway_config_last_reload_successful')).toBe(1);
    expect(value(text, 'phi_gateway_policy_info{version="abcdef0123456789"}')).toBe(1);
    expect(value(text, `phi_gateway_policy_info{version="${policy.version}"}`)).toBeUndefined();
  });

  it('reads access-request gauges at scrape time and counts access steps by action and outcome only', async () => {
    let stats: { pending: number; active: number; oldestPendingAgeSec: number } | undefined;
    const m = createMetrics({ policy: () => policy, access: () => stats, processMetrics: false });
    let text = await m.render();
    // No service yet: the gauges read 0, the counters start at zero for every label value.
    expect(value(text, 'phi_gateway_access_requests_pending')).toBe(0);
    expect(value(text, 'phi_gateway_access_requests_total{action="approve",outcome="refused"}')).toBe(0);
    expect(value(text, 'phi_gateway_access_grant_uses_total{outcome="out-of-scope"}')).toBe(0);
    stats = { pending: 2, active: 1, oldestPendingAgeSec: 900 };
    m.accessEvent({ action: 'request', outcome: 'allowed' });
    m.accessEvent({ action: 'request', outcome: 'allowed' });
    m.accessEvent({ action: 'request', outcome: 'refused' });
    m.accessEvent({ action: 'approve', outcome: 'allowed', decideSeconds: 1200 });
    m.accessEvent({ action: 'approve', outcome: 'refused', decideSeconds: 50 });
    m.accessEvent({ action: 'deny', outcome: 'allowed', decideSeconds: 30 });
    m.accessEvent({ action: 'revoke', outcome: 'allowed' });
    m.accessEvent({ action: 'use', outcome: 'allowed' });
    m.accessEvent({ action: 'use', outcome: 'allowed' });
    m.accessEvent({ action: 'use', outcome: 'out-of-scope' });
    m.accessEvent({ action: 'use', outcome: 'invalid' });
    m.accessEvent({ action: 'expire', outcome: 'allowed' });
    // Anything outside the contract is dropped, never a new label value, never thrown.
    m.accessEvent({ action: 'list', outcome: 'allowed' } as never);
    m.accessEvent({ action: 'use', outcome: 'pat-alice' } as never);
    m.accessEvent({ action: 'approve', outcome: 'allowed', decideSeconds: Number.NaN });
    m.accessEvent(undefined as never);
    text = await m.render();
    expect(value(text, 'phi_gateway_access_requests_pending')).toBe(2);
    expect(value(text, 'phi_gateway_access_grants_active')).toBe(1);
    expect(value(text, 'phi_gateway_access_requests_oldest_pending_age_seconds')).toBe(900);
    expect(value(text, 'phi_gateway_access_requests_total{action="request",outcome="allowed"}')).toBe(2);
    expect(value(text, 'phi_gateway_access_requests_total{action="request",outcome="refused"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_requests_total{action="approve",outcome="allowed"}')).toBe(2);
    expect(value(text, 'phi_gateway_access_requests_total{action="approve",outcome="refused"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_requests_total{action="deny",outcome="allowed"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_requests_total{action="revoke",outcome="allowed"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_requests_total{action="revoke",outcome="refused"}')).toBe(0);
    expect(text.match(/^phi_gateway_access_requests_total\{/gm)).toHaveLength(8);
    expect(value(text, 'phi_gateway_access_grant_uses_total{outcome="allowed"}')).toBe(2);
    expect(value(text, 'phi_gateway_access_grant_uses_total{outcome="out-of-scope"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_grant_uses_total{outcome="invalid"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_grant_uses_total{outcome="inactive"}')).toBe(0);
    expect(text.match(/^phi_gateway_access_grant_uses_total\{/gm)).toHaveLength(5);
    expect(value(text, 'phi_gateway_access_grants_expired_total')).toBe(1);
    // Time to decide: allowed decisions with a time only (the refused approval and the NaN are not observed).
    expect(value(text, 'phi_gateway_access_decision_seconds_count{action="approve"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_decision_seconds_sum{action="approve"}')).toBe(1200);
    expect(value(text, 'phi_gateway_access_decision_seconds_bucket{le="900",action="approve"}')).toBe(0);
    expect(value(text, 'phi_gateway_access_decision_seconds_bucket{le="1800",action="approve"}')).toBe(1);
    expect(value(text, 'phi_gateway_access_decision_seconds_bucket{le="60",action="deny"}')).toBe(1);
    expect(text).not.toContain('pat-alice');
    expect(text).not.toMatch(/^phi_gateway_access\w*\{[^}]*(list|patient|sub|grant|id)="/m);
    stats = undefined;
    text = await m.render();
    // The service gone (a reload without one): the last counts stay as they were, nothing throws.
    expect(value(text, 'phi_gateway_access_grants_active')).toBe(1);
  });

  it('keeps registries apart and includes process metrics unless disabled', async () => {
    const a = createMetrics({ policy: () => policy });
    const b = createMetrics({ policy: () => policy, processMetrics: false });
    a.observe(exchange(), { status: 401, decision: 'deny', rule: 'invalid-token' });
    expect(await a.render()).toContain('phi_gateway_process_resident_memory_bytes');
    const tb = await b.render();
    expect(tb).not.toContain('process_resident_memory_bytes');
    expect(tb).not.toMatch(/^phi_gateway_requests_total\{/m);
  });
});
