// Two gateway replicas sharing one Redis (audit sink and request store): a grant approved on one is
// in force on the other, and a revocation on either refuses the very next request on both.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { DEMO } from '../../src/demo/data.js';
import { createLogger } from '../../src/server/logger.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const redis: RedisHandle | undefined = await startRedis();
const suite = redis ? describe : describe.skip;
const ALICE = DEMO.patients.alice;
const JUSTIFICATION = 'Payer requested the progress note as a claim attachment for claim 2024-207';

async function code(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { issue?: { details?: { coding?: { code?: string }[] } }[] };
  return body.issue?.[0]?.details?.coding?.[0]?.code;
}

suite('access grants across replicas (Redis)', () => {
  let stack: Stack;
  let second: RunningGateway;
  /** The proxy ports' origins: A (the stack) and B. */
  let a: string;
  let b: string;

  beforeAll(async () => {
    stack = await startStack({ env: { PHI_GATEWAY_AUDIT: redis!.url } });
    second = await startGateway({ ...stack.config, listen: { host: '127.0.0.1', port: 0 } }, { admin: false, logger: createLogger('silent') });
    a = stack.url.replace(/\/fhir$/, '');
    b = second.url.replace(/\/fhir$/, '');
  }, 60_000);
  afterAll(async () => {
    await second?.close();
    await stack?.close();
    await redis?.dispose();
  });

  async function call(origin: string, method: 'GET' | 'POST', path: string, who: { role: string; sub: string; purpose: string }, body?: unknown): Promise<Response> {
    const token = await stack.token(who.role, { sub: who.sub });
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'x-purpose-of-use': who.purpose };
    if (body !== undefined) headers['content-type'] = 'application/json';
    return fetch(`${origin}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  const requester = { role: 'billing', sub: 'bill-redis', purpose: 'HPAYMT' };
  const officer = { role: 'privacy-officer', sub: 'po-redis', purpose: 'HCOMPL' };

  async function fetchWithGrant(origin: string, grant: string): Promise<Response> {
    const token = await stack.token('billing', { sub: requester.sub });
    return fetch(`${origin}/fhir/DocumentReference?patient=${ALICE}`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'HPAYMT', 'x-access-grant': grant } });
  }

  it('approved on A, used on B, revoked on B: the next request on A and on B is refused', async () => {
    const asked = await call(a, 'POST', '/access-requests', requester, { dataSet: 'claim-attachment', patients: [ALICE], justification: JUSTIFICATION, minutes: 60 });
    expect(asked.status).toBe(201);
    const id = ((await asked.json()) as { id: string }).id;

    // B sees the request A stored, for the approver to decide on either.
    const pending = await call(b, 'GET', '/access-requests?status=pending', officer);
    expect(((await pending.json()) as { requests: { id: string }[] }).requests.map((r) => r.id)).toEqual([id]);

    const approved = await call(a, 'POST', `/access-requests/${id}/approve`, officer, {});
    expect(approved.status).toBe(200);

    const onB = await fetchWithGrant(b, id);
    expect(onB.status).toBe(200);
    expect(onB.headers.get('x-access-grant')).toBe(id);
    const onA = await fetchWithGrant(a, id);
    expect(onA.status).toBe(200);

    const revoked = await call(b, 'POST', `/access-requests/${id}/revoke`, officer, { note: 'Attachment sent' });
    expect(revoked.status).toBe(200);
    expect(await revoked.json()).toMatchObject({ id, active: false, revoked: { by: { sub: 'po-redis' } } });

    for (const origin of [a, b]) {
      const next = await fetchWithGrant(origin, id);
      expect([origin === a ? 'A' : 'B', next.status, await code(next)]).toEqual([origin === a ? 'A' : 'B', 403, 'grant-inactive']);
    }
    // A shows the revocation B made.
    const view = await call(a, 'GET', `/access-requests/${id}`, requester);
    expect(await view.json()).toMatchObject({ id, active: false, uses: 2, revoked: { by: { sub: 'po-redis' } } });

    // One trail in Redis: each step audited by the replica that took it.
    const records: ChainedRecord[] = [];
    const source = openAuditSource(redis!.url);
    for await (const item of source) if ('record' in item) records.push(item.record as ChainedRecord);
    await source.close();
    const steps = records.filter((r) => r.kind === 'access-request' && r.details?.request === id && r.decision === 'allow');
    expect(steps.map((r) => r.details?.action)).toEqual(['request', 'approve', 'revoke', 'get']);
    expect(new Set(steps.map((r) => r.chain.writer)).size).toBe(2);
    const used = records.filter((r) => r.kind === 'fhir' && r.grant?.id === id);
    expect(used).toHaveLength(2);
    expect(new Set(used.map((r) => r.chain.writer)).size).toBe(2);
  });

});
