/**
 * /metrics on the admin listener after real traffic (issue 7): every series family is exposed with
 * values that follow from the requests made, and no label carries an id, a path or a name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditSink } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

let stack: Stack;
let unreachable: Stack;
let failingAudit: Stack;

const admin = (s: Stack): string => `http://${s.config.admin.host}:${s.config.admin.port}`;

async function scrape(s: Stack): Promise<string> {
  const res = await fetch(`${admin(s)}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Sum of every sample of a metric whose labels include all of `labels`. */
function sum(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) total += Number(m[3]);
  }
  return total;
}

beforeAll(async () => {
  stack = await startStack();
  // A closed port: every forwarded request fails as upstream-unavailable.
  unreachable = await startStack({ upstreamUrl: 'http://127.0.0.1:9/fhir' });
  const refusing: AuditSink = {
    write: async () => {
      throw new Error('disk full');
    },
    ready: async () => false,
    close: async () => {},
  };
  failingAudit = await startStack({ audit: refusing });
}, 60_000);

afterAll(async () => {
  await stack?.close();
  await unreachable?.close();
  await failingAudit?.close();
});

describe('/metrics after traffic', () => {
  it('exposes requests, latency, break-glass and audit series, and no count of what was withheld or redacted', async () => {
    const before = await scrape(stack);
    expect(sum(before, 'phi_gateway_requests_total')).toBe(0);
    for (let i = 0; i < 3; i++) {
      expect((await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'billing', purpose: 'HPAYMT' })).status).toBe(200);
    }
    // Billing may not see PSY-labelled conditions: withheld from the search.
    const search = await stack.get(`/Condition?patient=${DEMO.patients.paula}`, { role: 'billing', purpose: 'HPAYMT' });
    expect(search.status).toBe(200);
    expect((await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' })).status).toBe(200);
    expect((await stack.get(`/Patient/${DEMO.patients.alice}`, { token: 'not-a-jwt', purpose: 'TREAT' })).status).toBe(401);
    expect((await stack.get('/Observation', { role: 'front-desk', purpose: 'HOPERAT' })).status).toBe(403);

    const text = await scrape(stack);
    expect(value(text, 'phi_gateway_requests_total{decision="allow",role="billing",purpose="HPAYMT",status="200"}')).toBe(4);
    expect(value(text, 'phi_gateway_requests_total{decision="allow",role="clinician",purpose="TREAT",status="200"}')).toBe(1);
    // Authentication comes first: a refused token never gets as far as its purpose.
    expect(value(text, 'phi_gateway_requests_total{decision="deny",role="none",purpose="none",status="401"}')).toBe(1);
    expect(sum(text, 'phi_gateway_requests_total', { decision: 'deny', status: '403' })).toBe(1);
    expect(sum(text, 'phi_gateway_requests_total')).toBe(7);
    expect(value(text, 'phi_gateway_request_duration_seconds_count{decision="allow"}')).toBe(5);
    expect(sum(text, 'phi_gateway_upstream_duration_seconds_count')).toBe(5);
    expect(value(text, 'phi_gateway_upstream_duration_seconds_count{interaction="read"}')).toBe(4);
    // Billing lost elements and had a resource withheld above, yet no series says so: read before
    // and after one request (found by a red-team session on the researcher view), a withheld count
    // told how many hidden records matched a search.
    expect(text).not.toMatch(/^phi_gateway_\w*(withheld|redacted)/m);
    // One audit write per request, each timed; none failed.
    expect(value(text, 'phi_gateway_audit_write_duration_seconds_count')).toBeGreaterThanOrEqual(7);
    expect(value(text, 'phi_gateway_audit_write_failures_total')).toBe(0);
    expect(value(text, 'phi_gateway_break_glass_sessions_open')).toBe(0);
    expect(value(text, 'phi_gateway_break_glass_sessions_awaiting_review')).toBe(0);
    expect(value(text, 'phi_gateway_break_glass_oldest_unreviewed_age_seconds')).toBe(0);
    expect(text).toContain('phi_gateway_config_reloads_total');
    expect(text).toContain('phi_gateway_process_resident_memory_bytes');
    expect(text).toContain('phi_gateway_nodejs_eventloop_lag_seconds');
    // Bounded labels: no patient id, name, token or path anywhere in the exposition.
    expect(text).not.toContain(DEMO.patients.alice);
    expect(text).not.toContain(DEMO.names.alice);
    expect(text).not.toContain('/Patient');
  });

  it('counts break-glass sessions opened through the proxy', async () => {
    const res = await stack.get(`/Patient/${DEMO.patients.alice}`, {
      role: 'clinician',
      purpose: 'BTG',
      headers: { 'x-break-glass-reason': 'unconscious patient in the emergency department, no chart access' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-break-glass-session')).toBeTruthy();
    const text = await scrape(stack);
    expect(value(text, 'phi_gateway_break_glass_sessions_open')).toBe(1);
    expect(value(text, 'phi_gateway_break_glass_sessions_awaiting_review')).toBe(1);
  });

  it('counts upstream errors by kind', async () => {
    const res = await unreachable.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(res.status).toBe(502);
    const text = await scrape(unreachable);
    expect(value(text, 'phi_gateway_upstream_errors_total{kind="unavailable"}')).toBe(1);
    expect(value(text, 'phi_gateway_requests_total{decision="error",role="clinician",purpose="TREAT",status="502"}')).toBe(1);
    const ready = await fetch(`${admin(unreachable)}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ status: 'not-ready', upstream: false, audit: true, config: true });
  });

  it('counts audit write failures (and the 503 they cause)', async () => {
    const res = await failingAudit.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(res.status).toBe(503);
    const text = await scrape(failingAudit);
    expect(value(text, 'phi_gateway_audit_write_failures_total')).toBe(1);
    expect(value(text, 'phi_gateway_audit_write_duration_seconds_count')).toBe(1);
    expect(value(text, 'phi_gateway_requests_total{decision="allow",role="clinician",purpose="TREAT",status="503"}')).toBe(1);
    const ready = await fetch(`${admin(failingAudit)}/readyz`);
    expect(await ready.json()).toMatchObject({ status: 'not-ready', audit: false });
  });
});
