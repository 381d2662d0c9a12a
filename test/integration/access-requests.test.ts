// Elevated access on request end to end on the demo data: the real FHIR upstream, the real IdP, the
// gateway with the shipped policy (claim-attachment: billing asks, the privacy officer approves),
// the embedded request store and a real webhook receiver. Every call is checked in the audit trail.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, DocumentReference } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessDir } from '../../src/access/index.js';
import { type AccessService, isAccessService } from '../../src/access/types.js';
import { FileAuditSink } from '../../src/audit/file-sink.js';
import type { AuditRecord, AuditSink, ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const ALICE = DEMO.patients.alice;
const BRIAN = DEMO.patients.brian;
const JUSTIFICATION = 'Payer requested the progress note as a claim attachment for claim 2024-118';

interface Receiver {
  readonly url: string;
  readonly got: Record<string, unknown>[];
  close(): Promise<void>;
}

async function receiver(): Promise<Receiver> {
  const got: Record<string, unknown>[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const p = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${p}/hooks/alerts`, got, close: () => new Promise((ok) => server.close(() => ok())) };
}

class Clock {
  t = Date.now();
  readonly now = () => new Date(this.t);
}

async function code(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { issue?: { details?: { coding?: { code?: string }[] } }[] };
  return body.issue?.[0]?.details?.coding?.[0]?.code;
}

function service(stack: Stack): AccessService {
  const s = (stack.gateway as unknown as { access?: unknown }).access as AccessService | undefined;
  if (!isAccessService(s)) throw new Error('the gateway did not build the access-request service');
  return s;
}

interface View {
  id: string;
  status: string;
  active: boolean;
  url: string;
  role: string;
  requester: { sub: string };
  scope: { patients: string[] };
  granted?: { scope: { patients: string[] }; expiresAt: string };
  decision?: { by: { sub: string }; outcome: string; narrowed: boolean; note?: string };
  revoked?: { by: { sub: string } };
  uses: number;
}

describe('access requests on the demo data', () => {
  let stack: Stack;
  let rx: Receiver;
  let base: string;
  const clock = new Clock();

  beforeAll(async () => {
    rx = await receiver();
    stack = await startStack({
      env: { PHI_GATEWAY_ALERT_WEBHOOK: rx.url },
      now: clock.now,
      configure: (c) => ({ ...c, limits: { ...c.limits, requestBodyBytes: 64 * 1024 } }),
    });
    base = stack.url.replace(/\/fhir$/, '');
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    await rx?.close();
    if (stack) rmSync(accessDir(stack.config)!, { recursive: true, force: true });
  });

  /** A call to the access-request routes as `sub` holding `role` (or `claims.roles`). */
  async function call(
    method: 'GET' | 'POST',
    path: string,
    o: { role: string; sub: string; purpose?: string | undefined; body?: unknown; raw?: string; headers?: Record<string, string>; claims?: Record<string, unknown> },
  ): Promise<Response> {
    const token = await stack.token(o.role, { sub: o.sub, ...o.claims });
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...o.headers };
    if (o.purpose !== undefined) headers['x-purpose-of-use'] = o.purpose;
    const body = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
    if (body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    return fetch(`${base}${path}`, { method, headers, body });
  }

  const billing = (sub: string, more: Partial<Parameters<typeof call>[2]> = {}) => ({ role: 'billing', sub, purpose: 'HPAYMT', ...more });
  const officer = (sub = 'po-1', more: Partial<Parameters<typeof call>[2]> = {}) => ({ role: 'privacy-officer', sub, purpose: 'HCOMPL', ...more });
  const ask = (more: Record<string, unknown> = {}) => ({ dataSet: 'claim-attachment', patients: [ALICE], justification: JUSTIFICATION, minutes: 120, ...more });

  /** A FHIR read by billing with HPAYMT, with or without a grant. */
  function read(path: string, sub: string, grant?: string): Promise<Response> {
    return stack.get(path, { role: 'billing', purpose: 'HPAYMT', tokenClaims: { sub }, headers: grant === undefined ? {} : { 'x-access-grant': grant } });
  }

  /** The requests `sub` sees (GET /access-requests as billing). */
  async function listOf(sub: string): Promise<View[]> {
    const res = await call('GET', '/access-requests', billing(sub));
    expect(res.status).toBe(200);
    return ((await res.json()) as { requests: View[] }).requests;
  }

  async function recordOf(res: Response): Promise<ChainedRecord | undefined> {
    const id = res.headers.get('x-request-id');
    const all = (await stack.auditRecords()).filter((r) => r.id === id);
    // Exactly one record per call: the service's or the route's, never both.
    expect(all).toHaveLength(1);
    return all[0];
  }

  async function audited(res: Response, action: string, decision: 'allow' | 'deny', rule?: string | RegExp): Promise<ChainedRecord> {
    const r = await recordOf(res);
    expect(r).toMatchObject({ kind: 'access-request', decision, status: res.status, details: { action } });
    if (typeof rule === 'string') expect(r?.rule).toBe(rule);
    else if (rule) expect(r?.rule).toMatch(rule);
    return r!;
  }

  let requestId = '';

  it('refuses calls before the service (token, purpose, parameters, body) and audits each of them itself', async () => {
    const noToken = await fetch(`${base}/access-requests`, { method: 'POST', headers: { 'x-purpose-of-use': 'HPAYMT', 'content-type': 'application/json' }, body: JSON.stringify(ask()) });
    expect([noToken.status, noToken.headers.get('www-authenticate')]).toEqual([401, 'Bearer realm="phi-gateway"']);
    expect(noToken.headers.get('cache-control')).toBe('no-store');
    expect(noToken.headers.get('content-type')).toContain('application/fhir+json');
    expect(await code(noToken)).toBe('invalid-token');
    expect(await audited(noToken, 'request', 'deny', 'invalid-token')).toMatchObject({ actor: { roles: [] }, request: { method: 'POST', path: '/access-requests' } });

    const badToken = await fetch(`${base}/access-requests`, { headers: { authorization: 'Bearer not.a.token', 'x-purpose-of-use': 'HPAYMT' } });
    expect(badToken.status).toBe(401);
    expect(badToken.headers.get('www-authenticate')).toContain('error="invalid_token"');
    await audited(badToken, 'list', 'deny', 'invalid-token');

    const noPurpose = await call('POST', '/access-requests', billing('bill-1', { purpose: undefined, body: ask() }));
    expect([noPurpose.status, await code(noPurpose)]).toEqual([400, 'purpose-missing']);
    const unpurposed = await audited(noPurpose, 'request', 'deny', 'purpose-missing');
    expect(unpurposed).toMatchObject({ actor: { sub: 'bill-1', roles: ['billing'] } });
    expect(unpurposed.purpose).toBeUndefined();

    const unknownPurpose = await call('POST', '/access-requests', billing('bill-1', { purpose: 'NOPE', body: ask() }));
    expect([unknownPurpose.status, await code(unknownPurpose)]).toEqual([400, 'purpose-unknown']);
    await audited(unknownPurpose, 'request', 'deny', 'purpose-unknown');

    // A token limited to TREAT may not declare HPAYMT.
    const tokenPurpose = await call('POST', '/access-requests', billing('bill-1', { body: ask(), claims: { purpose_of_use: ['TREAT'] } }));
    expect([tokenPurpose.status, await code(tokenPurpose)]).toEqual([403, 'purpose-not-in-token']);
    expect(await audited(tokenPurpose, 'request', 'deny', 'purpose-not-in-token')).toMatchObject({ purpose: 'HPAYMT' });

    const malformed = await call('POST', '/access-requests', billing('bill-1', { raw: '{"dataSet": "claim-attachment",' }));
    expect([malformed.status, await code(malformed)]).toEqual([400, 'bad-request']);
    await audited(malformed, 'request', 'deny', 'bad-request');
    const proto = await call('POST', '/access-requests', billing('bill-1', { raw: '{"__proto__": {"admin": true}}' }));
    expect([proto.status, await code(proto)]).toEqual([400, 'bad-request']);
    const array = await call('POST', '/access-requests', billing('bill-1', { raw: '[]' }));
    expect([array.status, await code(array)]).toEqual([400, 'bad-request']);
    const form = await call('POST', '/access-requests', billing('bill-1', { raw: 'dataSet=claim-attachment', headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
    expect([form.status, await code(form)]).toEqual([415, 'unsupported-media-type']);
    await audited(form, 'request', 'deny', 'unsupported-media-type');
    const outcome = await call('POST', '/access-requests/00000000-0000-4000-8000-000000000000/approve', officer('po-1', { body: { outcome: 'denied' } }));
    expect([outcome.status, await code(outcome)]).toEqual([400, 'bad-request']);
    expect(await audited(outcome, 'approve', 'deny', 'bad-request')).toMatchObject({ details: { request: '00000000-0000-4000-8000-000000000000' } });

    const tooLarge = await call('POST', '/access-requests', billing('bill-1', { body: ask({ justification: 'x'.repeat(70 * 1024) }) }));
    expect([tooLarge.status, await code(tooLarge)]).toEqual([413, 'request-too-large']);
    expect(tooLarge.headers.get('x-request-id')).toBeTruthy();
    await audited(tooLarge, 'request', 'deny', 'request-too-large');

    const param = await call('GET', '/access-requests?status=closed', billing('bill-1'));
    expect([param.status, await code(param)]).toEqual([400, 'bad-request']);
    await audited(param, 'list', 'deny', 'bad-request');
    const extra = await call('GET', '/access-requests?patient=pat-alice', billing('bill-1'));
    expect(extra.status).toBe(400);
    const record = await audited(extra, 'list', 'deny');
    // The audit record's path never carries the query.
    expect(record.request.path).toBe('/access-requests');

    // Node joins repeated X-Role headers into one value: a role nobody holds.
    const repeatedRole = await call('POST', '/access-requests', billing('bill-1', { body: ask(), headers: { 'x-role': 'billing, coder' } }));
    expect([repeatedRole.status, await code(repeatedRole)]).toEqual([403, 'access-request-not-permitted']);
    await audited(repeatedRole, 'request', 'deny', 'access-request-not-permitted');

    // Nothing was stored, and no alert went out.
    expect(await listOf('bill-1')).toEqual([]);
    expect(rx.got).toEqual([]);
  });

  it('the service refuses an invalid request (audited once, by the service): over the cap, no justification, a data set billing may not ask', async () => {
    const long = await call('POST', '/access-requests', billing('bill-1', { body: ask({ minutes: 481 }) }));
    expect([long.status, await code(long)]).toEqual([400, 'access-request-invalid']);
    expect(await audited(long, 'request', 'deny', 'access-request-invalid')).toMatchObject({ details: { why: 'minutes: at most 480' } });

    const short = await call('POST', '/access-requests', billing('bill-1', { body: ask({ justification: 'payer' }) }));
    expect([short.status, await code(short)]).toEqual([400, 'access-request-invalid']);
    const unknown = await call('POST', '/access-requests', billing('bill-1', { body: ask({ patients: [ALICE], extra: 1 }) }));
    expect([unknown.status, await code(unknown)]).toEqual([400, 'access-request-invalid']);
    const empty = await call('POST', '/access-requests', billing('bill-1'));
    expect([empty.status, await code(empty)]).toEqual([400, 'access-request-invalid']);

    const chart = await call('POST', '/access-requests', billing('bill-1', { body: ask({ dataSet: 'compliance-chart' }) }));
    expect([chart.status, await code(chart)]).toEqual([403, 'access-request-not-permitted']);
    await audited(chart, 'request', 'deny', 'access-request-not-permitted');
  });

  it('billing asks for a claim attachment: 201, Location, the view, an alert, an audit record', async () => {
    const res = await call('POST', '/access-requests', billing('bill-1', { body: ask(), headers: { 'x-role': 'billing' } }));
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-store');
    // Not a browser route: no CORS headers.
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const view = (await res.json()) as View;
    requestId = view.id;
    expect(view).toMatchObject({
      status: 'pending',
      active: false,
      role: 'billing',
      dataSet: 'claim-attachment',
      purpose: 'HPAYMT',
      requester: { iss: stack.idp.issuer, sub: 'bill-1' },
      scope: { patients: [ALICE] },
      justification: JUSTIFICATION,
      minutes: 120,
      requestId: res.headers.get('x-request-id'),
      url: `${base}/access-requests/${view.id}`,
      uses: 0,
    });
    expect(res.headers.get('location')).toBe(view.url);

    expect(await audited(res, 'request', 'allow', 'accessRequests.dataSets.claim-attachment: requested')).toMatchObject({
      actor: { sub: 'bill-1', roles: ['billing'] },
      purpose: 'HPAYMT',
      role: 'billing',
      request: { method: 'POST', path: '/access-requests' },
      disclosed: { patients: [ALICE] },
      details: { request: requestId, dataSet: 'claim-attachment', minutes: 120, scope: { patients: [ALICE] } },
    });
    await expect.poll(() => rx.got.length, { timeout: 10_000 }).toBe(1);
    expect(rx.got[0]).toMatchObject({ type: 'access-request', actor: { sub: 'bill-1' }, access: { request: requestId, dataSet: 'claim-attachment', purpose: 'HPAYMT', decideUrl: view.url } });
    // The alert holds ids and codes, never the justification.
    expect(JSON.stringify(rx.got[0])).not.toContain('claim 2024-118');
  });

  it('shows a request to its requester and the approvers only', async () => {
    const own = await call('GET', `/access-requests/${requestId}`, billing('bill-1'));
    expect(own.status).toBe(200);
    expect(await own.json()).toMatchObject({ id: requestId, status: 'pending' });
    await audited(own, 'get', 'allow');

    const other = await call('GET', `/access-requests/${requestId}`, billing('bill-2'));
    expect([other.status, await code(other)]).toEqual([404, 'access-request-not-found']);
    await audited(other, 'get', 'deny', 'access-request-not-found');
    const otherList = await call('GET', '/access-requests', billing('bill-2'));
    expect(((await otherList.json()) as { requests: View[] }).requests).toEqual([]);
    await audited(otherList, 'list', 'allow');

    const po = await call('GET', '/access-requests?status=pending', officer());
    expect(po.status).toBe(200);
    const listed = ((await po.json()) as { requests: View[] }).requests;
    expect(listed.map((r) => r.id)).toEqual([requestId]);
    expect(listed[0]).toMatchObject({ active: false, url: `${base}/access-requests/${requestId}` });
    expect(await audited(po, 'list', 'allow')).toMatchObject({ actor: { sub: 'po-1' }, purpose: 'HCOMPL', disclosed: { patients: [ALICE] } });
    const none = await call('GET', '/access-requests?status=approved', officer());
    expect(((await none.json()) as { requests: View[] }).requests).toEqual([]);
  });

  it('without a grant billing may not read documents; a pending grant is not in force', async () => {
    const plain = await read(`/DocumentReference?patient=${ALICE}`, 'bill-1');
    expect([plain.status, await code(plain)]).toEqual([403, 'type-denied']);
    const pending = await read(`/DocumentReference?patient=${ALICE}`, 'bill-1', requestId);
    expect([pending.status, await code(pending)]).toEqual([403, 'grant-inactive']);
  });

  it('nobody approves their own request, nor without an approver role', async () => {
    // The requester's own subject, holding the privacy-officer role as well.
    const self = await call('POST', `/access-requests/${requestId}/approve`, officer('bill-1', { claims: { roles: ['billing', 'privacy-officer'] } }));
    expect([self.status, await code(self)]).toEqual([403, 'approval-not-permitted']);
    expect(await audited(self, 'approve', 'deny', 'approval-not-permitted')).toMatchObject({ details: { why: 'own request', request: requestId } });

    // A colleague who may not see the request is told nothing of it, as on GET.
    const colleague = await call('POST', `/access-requests/${requestId}/approve`, billing('bill-2'));
    expect([colleague.status, await code(colleague)]).toEqual([404, 'access-request-not-found']);
    await audited(colleague, 'approve', 'deny', 'access-request-not-found');

    const wider = await call('POST', `/access-requests/${requestId}/approve`, officer('po-1', { body: { patients: [ALICE, BRIAN] } }));
    expect([wider.status, await code(wider)]).toEqual([400, 'access-request-invalid']);
    const longer = await call('POST', `/access-requests/${requestId}/approve`, officer('po-1', { body: { minutes: 121 } }));
    expect([longer.status, await code(longer)]).toEqual([400, 'access-request-invalid']);
    const unknown = await call('POST', '/access-requests/9a1f3c2e-0000-4000-8000-000000000000/approve', officer());
    expect([unknown.status, await code(unknown)]).toEqual([404, 'access-request-not-found']);

    expect(await listOf('bill-1')).toMatchObject([{ id: requestId, status: 'pending' }]);
  });

  it('the privacy officer approves (narrower in time): 200, the grant in force', async () => {
    const res = await call('POST', `/access-requests/${requestId}/approve`, officer('po-1', { body: { minutes: 60, note: 'Payer letter on file' } }));
    expect(res.status).toBe(200);
    const view = (await res.json()) as View;
    expect(view).toMatchObject({ id: requestId, status: 'approved', active: true, decision: { by: { sub: 'po-1' }, outcome: 'approved', narrowed: true, note: 'Payer letter on file' }, granted: { scope: { patients: [ALICE] } } });
    expect(Date.parse(view.granted!.expiresAt)).toBe(clock.t + 60 * 60_000);
    expect(await audited(res, 'approve', 'allow', 'accessRequests.dataSets.claim-attachment: approved')).toMatchObject({
      actor: { sub: 'po-1', roles: ['privacy-officer'] },
      purpose: 'HCOMPL',
      role: 'privacy-officer',
      request: { method: 'POST', path: `/access-requests/${requestId}/approve` },
      disclosed: { patients: [ALICE] },
      details: { request: requestId, minutes: 60, narrowed: true, note: 'Payer letter on file' },
    });
    const again = await call('POST', `/access-requests/${requestId}/deny`, officer('po-2', { body: { note: 'too late' } }));
    expect([again.status, await code(again)]).toEqual([409, 'access-request-decided']);
    await audited(again, 'deny', 'deny', 'access-request-decided');
  });

  it('the grant widens billing to the documents of the granted patient, named in the audit record', async () => {
    const res = await read(`/DocumentReference?patient=${ALICE}`, 'bill-1', requestId);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-access-grant')).toBe(requestId);
    const bundle = (await res.json()) as Bundle<DocumentReference>;
    const docs = (bundle.entry ?? []).map((e) => e.resource!).filter((r) => r.resourceType === 'DocumentReference');
    expect(docs.map((d) => d.id)).toContain(DEMO.documentReference);
    expect(Buffer.from(docs.find((d) => d.id === DEMO.documentReference)!.content[0].attachment.data!, 'base64').toString('utf8')).toBe(DEMO.documentText);
    const record = (await stack.auditRecords()).find((r) => r.id === res.headers.get('x-request-id'));
    expect(record).toMatchObject({ kind: 'fhir', decision: 'allow', actor: { sub: 'bill-1' }, grant: { id: requestId, approvedBy: 'po-1', dataSet: 'claim-attachment', patient: ALICE }, disclosed: { patients: [ALICE] } });

    // Billing's own data set still applies to everything else the grant does not name.
    const patient = await read(`/Patient/${ALICE}`, 'bill-1', requestId);
    expect(patient.status).toBe(200);
    expect(await listOf('bill-1')).toMatchObject([{ id: requestId, uses: 2 }]);
  });

  it('refuses the grant for another patient (alerted) and to another billing user (alerted)', async () => {
    const before = rx.got.length;
    const brian = await read(`/DocumentReference?patient=${BRIAN}`, 'bill-1', requestId);
    expect([brian.status, await code(brian)]).toEqual([403, 'grant-out-of-scope']);
    const stolen = await read(`/DocumentReference?patient=${ALICE}`, 'bill-2', requestId);
    expect([stolen.status, await code(stolen)]).toEqual([403, 'grant-invalid']);
    const made = await read(`/DocumentReference?patient=${ALICE}`, 'bill-1', 'not-a-grant');
    expect([made.status, await code(made)]).toEqual([403, 'grant-invalid']);
    await expect.poll(() => rx.got.slice(before).map((a) => a.type), { timeout: 10_000 }).toEqual(['grant-misuse', 'grant-misuse']);
    expect(rx.got.slice(before)).toMatchObject([
      { actor: { sub: 'bill-1' }, patient: BRIAN, access: { grant: requestId, why: 'patient', dataSet: 'claim-attachment' } },
      { actor: { sub: 'bill-2' }, access: { grant: requestId, why: 'not-requester' } },
    ]);
    const records = await stack.auditRecords();
    for (const res of [brian, stolen, made]) expect(records.find((r) => r.id === res.headers.get('x-request-id'))).toMatchObject({ kind: 'fhir', decision: 'deny' });
  });

  it('revocation takes effect on the next request; revoking twice is 409', async () => {
    const outsider = await call('POST', `/access-requests/${requestId}/revoke`, billing('bill-2', { body: {} }));
    expect([outsider.status, await code(outsider)]).toEqual([404, 'access-request-not-found']);
    const res = await call('POST', `/access-requests/${requestId}/revoke`, officer('po-2', { body: { note: 'Attachment sent' } }));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id: requestId, status: 'approved', active: false, revoked: { by: { sub: 'po-2' } } });
    expect(await audited(res, 'revoke', 'allow', 'accessRequests.dataSets.claim-attachment: revoked')).toMatchObject({ details: { request: requestId, note: 'Attachment sent', by: 'approver' } });
    const next = await read(`/DocumentReference?patient=${ALICE}`, 'bill-1', requestId);
    expect([next.status, await code(next)]).toEqual([403, 'grant-inactive']);
    const twice = await call('POST', `/access-requests/${requestId}/revoke`, officer('po-1'));
    expect([twice.status, await code(twice)]).toEqual([409, 'access-request-decided']);
    await audited(twice, 'revoke', 'deny', 'access-request-decided');
  });

  it('a denial: 200 with the note; the grant never in force', async () => {
    const asked = await call('POST', '/access-requests', billing('bill-3', { body: ask({ patients: [BRIAN] }) }));
    expect(asked.status).toBe(201);
    const id = ((await asked.json()) as View).id;
    const res = await call('POST', `/access-requests/${id}/deny`, officer('po-1', { body: { note: 'No payer request on file' } }));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: 'denied', active: false, decision: { outcome: 'denied', by: { sub: 'po-1' }, note: 'No payer request on file' } });
    expect(await audited(res, 'deny', 'allow', 'accessRequests.dataSets.claim-attachment: denied')).toMatchObject({ details: { request: id, note: 'No payer request on file' } });
    const use = await read(`/DocumentReference?patient=${BRIAN}`, 'bill-3', id);
    expect([use.status, await code(use)]).toEqual([403, 'grant-inactive']);
  });

  it('expires on time: in force until its expiry, inactive from then on, the expiry audited once', async () => {
    const asked = await call('POST', '/access-requests', billing('bill-4', { body: ask({ minutes: 1 }) }));
    expect(asked.status).toBe(201);
    const id = ((await asked.json()) as View).id;
    const approved = await call('POST', `/access-requests/${id}/approve`, officer());
    expect(approved.status).toBe(200);
    expect(await read(`/DocumentReference?patient=${ALICE}`, 'bill-4', id)).toMatchObject({ status: 200 });

    clock.t += 60_000 - 1;
    expect((await read(`/DocumentReference?patient=${ALICE}`, 'bill-4', id)).status).toBe(200);
    clock.t += 1;
    const expired = await read(`/DocumentReference?patient=${ALICE}`, 'bill-4', id);
    expect([expired.status, await code(expired)]).toEqual([403, 'grant-inactive']);

    const svc = service(stack);
    await svc.sweep();
    await svc.sweep();
    const ends = (await stack.auditRecords()).filter((r) => r.kind === 'access-grant-expired');
    expect(ends.map((r) => r.details?.request)).toEqual([id]);
    expect(ends[0]).toMatchObject({ actor: { sub: 'bill-4' }, details: { dataSet: 'claim-attachment', uses: 2 } });
    // The requester sees it as no longer active.
    const view = await call('GET', `/access-requests/${id}`, billing('bill-4'));
    expect(await view.json()).toMatchObject({ id, active: false, status: 'approved' });
  });

  it('every call is in the trail as an access-request record, and the log holds no justification or token', async () => {
    const records = (await stack.auditRecords()).filter((r) => r.kind === 'access-request');
    const byAction = (action: string, decision: string) => records.filter((r) => r.details?.action === action && r.decision === decision).length;
    expect(byAction('request', 'allow')).toBe(3);
    expect(byAction('approve', 'allow')).toBe(2);
    expect(byAction('deny', 'allow')).toBe(1);
    expect(byAction('revoke', 'allow')).toBe(1);
    expect(byAction('request', 'deny')).toBe(15);
    expect(byAction('approve', 'deny')).toBe(6);
    for (const r of records) expect(JSON.stringify(r)).not.toMatch(/eyJ[A-Za-z0-9_-]+\./);
    const logs = stack.logs.join('');
    expect(logs).not.toContain('claim 2024-118');
    expect(logs).not.toMatch(/eyJ[A-Za-z0-9_-]+\.eyJ/);
  });
});

describe('access requests while the audit trail cannot be written', () => {
  let stack: Stack;
  let inner: FileAuditSink;
  let dir: string;
  let broken = false;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'access-audit-'));
    inner = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'gw-access' });
    const sink: AuditSink = {
      write: (r: AuditRecord) => (broken ? Promise.reject(new Error('disk gone')) : inner.write(r)),
      ready: () => inner.ready(),
      close: () => inner.close(),
    };
    // Fail-open is for FHIR reads the admin chose to keep serving: an access-request call never goes unrecorded.
    stack = await startStack({ audit: sink, configure: (c) => ({ ...c, audit: { ...c.audit, failOpen: true } }) });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    if (stack) rmSync(accessDir(stack.config)!, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers 503 audit-unavailable, refusals before the service included, and stores nothing', async () => {
    const base = stack.url.replace(/\/fhir$/, '');
    const body = JSON.stringify({ dataSet: 'claim-attachment', patients: [ALICE], justification: JUSTIFICATION, minutes: 60 });
    broken = true;
    const unauthenticated = await fetch(`${base}/access-requests`, { method: 'POST', headers: { 'x-purpose-of-use': 'HPAYMT', 'content-type': 'application/json' }, body });
    expect([unauthenticated.status, await code(unauthenticated)]).toEqual([503, 'audit-unavailable']);
    const token = await stack.token('billing', { sub: 'bill-9' });
    const headers = { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'HPAYMT', 'content-type': 'application/json' };
    const asked = await fetch(`${base}/access-requests`, { method: 'POST', headers, body });
    expect([asked.status, await code(asked)]).toEqual([503, 'audit-unavailable']);
    broken = false;
    const list = await fetch(`${base}/access-requests`, { headers });
    expect(list.status).toBe(200);
    expect(await list.json()).toEqual({ requests: [] });
  });
});
