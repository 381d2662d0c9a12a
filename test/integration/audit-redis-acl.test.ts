/**
 * The Redis ACL docs/production.md tells administrators to give the gateway: append and read on
 * the audit stream, nothing that could remove a record; full use of its own other keys. The gateway
 * runs under exactly that line (parsed from the document) against a real Redis: requests, a
 * break-glass session with its alert and anomaly windows, and access requests with their grants
 * all work, and every way of removing audit records (XDEL, XTRIM, DEL, UNLINK, EXPIRE, RENAME, and
 * the same from a script) is refused. SIEM delivery works as a consumer group under the same line.
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import { verifyChains } from '../../src/audit/verify.js';
import { RedisTrailSource } from '../../src/siem/cursor-redis.js';
import { SiemForwarder } from '../../src/siem/forwarder.js';
import { DEMO } from '../../src/demo/data.js';
import { openRelationshipResolver } from '../../src/relationships/resolver.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

const redis: RedisHandle | undefined = await startRedis();
const suite = redis ? describe : describe.skip;
const STREAM = 'phi-gateway:audit';
const PASSWORD = 'acl-test-password-0123456789';

/** The `user phi-gateway ...` line of the ```acl block in docs/production.md, as SETUSER arguments. */
function documentedAcl(): string[] {
  const doc = readFileSync(new URL('../../docs/production.md', import.meta.url), 'utf8');
  const block = /```acl\n([\s\S]*?)```/.exec(doc)?.[1];
  const line = block?.split('\n').find((l) => l.startsWith('user phi-gateway '));
  if (!line) throw new Error('docs/production.md has no ```acl block with a `user phi-gateway` line');
  // Words, with a parenthesized selector kept as one argument.
  const args = line.slice('user phi-gateway '.length).match(/\([^)]*\)|\S+/g) ?? [];
  return args.map((a) => (a === '>CHANGE-ME' ? `>${PASSWORD}` : a));
}

suite('the documented Redis ACL for the gateway', () => {
  let admin: Redis;
  let asGateway: Redis;
  let stack: Stack;

  beforeAll(async () => {
    admin = new Redis(redis!.url);
    await admin.call('ACL', 'SETUSER', 'phi-gateway', ...documentedAcl());
    const url = `redis://phi-gateway:${PASSWORD}@127.0.0.1:${redis!.port}`;
    asGateway = new Redis(url);
    stack = await startStack({
      env: { PHI_GATEWAY_AUDIT: url },
      configure: (c) => ({ ...c, alerts: { ...c.alerts, redisChannel: 'phi-gateway:alerts' } }),
    });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    asGateway?.disconnect();
    admin?.disconnect();
    await redis?.dispose();
  });

  it('is enough for the gateway: reads, searches, break-glass with its alert', async () => {
    const read = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(read.status).toBe(200);
    const search = await stack.get(`/Observation?patient=${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(search.status).toBe(200);
    const btg = await stack.get(`/Patient/${DEMO.patients.vip}`, {
      role: 'clinician',
      purpose: 'BTG',
      headers: { 'x-break-glass-reason': 'Unconscious patient in the ED, restricted chart needed' },
    });
    expect(btg.status).toBe(200);
    expect(btg.headers.get('x-break-glass-session')).toBeTruthy();
    // The session is stored under the gateway's own keys.
    expect((await admin.keys('phi-gateway:bg:*')).length).toBeGreaterThan(0);

    const items = [];
    for await (const item of openAuditSource(redis!.url)) items.push(item);
    const ids = new Set(items.flatMap((i) => ('record' in i ? [i.record.id] : [])));
    for (const r of [read, search, btg]) expect(ids.has(r.headers.get('x-request-id')!)).toBe(true);
    expect((await verifyChains(items)).ok).toBe(true);
  });

  it('lets replicas share care relationships under phi-gateway:rel:*', async () => {
    const lines: string[] = [];
    const sent: string[] = [];
    const agent = new Agent();
    const opts = {
      logger: pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) }),
      dispatcher: agent.compose((dispatch) => (o, handler) => {
        sent.push(String(o.path));
        return dispatch(o, handler);
      }),
      upstreamAuthorization: async () => undefined,
    };
    const relationships = { ttlMs: 60_000, maxCallers: 10, maxPatients: 100, searchPatients: 10, sources: new Map([['care-team', { name: 'care-team', kind: 'CareTeam' as const }]]) };
    // Two replicas' resolvers, each with its own client as the gateway's Redis user.
    const one = await openRelationshipResolver(stack.config, opts);
    const two = await openRelationshipResolver(stack.config, opts);
    try {
      await one.lookup('Practitioner/acl-check', relationships);
      expect(sent).toHaveLength(1);
      await expect.poll(async () => (await admin.keys('phi-gateway:rel:*')).length).toBe(1);
      await two.lookup('Practitioner/acl-check', relationships);
      expect(sent).toHaveLength(1);
      expect(lines.join('\n')).not.toMatch(/Redis/);
    } finally {
      await one.close();
      await two.close();
      await agent.close();
    }
  });

  it('keeps access requests and grants under phi-gateway:access:*: request, approval, use, revocation, sweep', async () => {
    const base = stack.url.replace(/\/fhir$/, '');
    const call = async (path: string, role: string, sub: string, purpose: string, body: unknown) =>
      fetch(`${base}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await stack.token(role, { sub })}`, 'x-purpose-of-use': purpose, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const asked = await call('/access-requests', 'billing', 'acl-billing', 'HPAYMT', {
      dataSet: 'claim-attachment',
      patients: [DEMO.patients.alice],
      justification: 'Payer requested the progress note as a claim attachment',
      minutes: 30,
    });
    expect(asked.status).toBe(201);
    const id = ((await asked.json()) as { id: string }).id;
    expect((await call(`/access-requests/${id}/approve`, 'privacy-officer', 'acl-officer', 'HCOMPL', {})).status).toBe(200);
    const read = (grant: string) =>
      stack.get(`/DocumentReference?patient=${DEMO.patients.alice}`, { role: 'billing', purpose: 'HPAYMT', tokenClaims: { sub: 'acl-billing' }, headers: { 'x-access-grant': grant } });
    expect((await read(id)).status).toBe(200);
    expect((await admin.keys('phi-gateway:access:*')).length).toBeGreaterThan(0);
    expect((await call(`/access-requests/${id}/revoke`, 'privacy-officer', 'acl-officer', 'HCOMPL', {})).status).toBe(200);
    expect((await read(id)).status).toBe(403);
    await stack.gateway.access!.sweep();
    expect(stack.logs.join('\n')).not.toMatch(/NOPERM|no permissions/i);
  });

  it('lets SIEM delivery run as a consumer group on the stream: create, read, pending, acknowledge', async () => {
    const url = `redis://phi-gateway:${PASSWORD}@127.0.0.1:${redis!.port}`;
    const audit = { sink: 'redis' as const, url, stream: STREAM, failOpen: false };
    const got: string[] = [];
    const target = { name: 'acl-soc', type: 'syslog' as const, deliver: async (rs: readonly { id: string }[]) => void got.push(...rs.map((r) => r.id)), close: async () => {} };
    // Claims entries idle for 1 ms: XAUTOCLAIM runs under the documented rights too.
    const source = await RedisTrailSource.open({ url, stream: STREAM, target: 'acl-soc', consumer: 'acl-host', claimIdleMs: 1 });
    const forwarder = new SiemForwarder({
      siem: { targets: [{ name: 'acl-soc', type: 'syslog', url: 'tls://127.0.0.1:6514', format: 'record' }] },
      audit,
      logger: pino({ level: 'silent' }),
      createTarget: () => target,
      openSource: async () => source,
    });
    try {
      expect(await forwarder.drain()).toBe(true);
    } finally {
      await forwarder.stop();
    }
    const ids = [];
    for await (const item of openAuditSource(redis!.url.replace(/\/?$/, `?stream=${STREAM}`))) if ('record' in item) ids.push(item.record.id);
    expect(got).toEqual(ids);
    expect(forwarder.status()[0]).toMatchObject({ failures: 0, lag: 0 });
    expect((await admin.xpending(STREAM, 'phi-gateway-siem:acl-soc'))[0]).toBe(0);
    // A group's position can move; the records stay.
    await expect(asGateway.xgroup('DESTROY', STREAM, 'phi-gateway-siem:acl-soc'), 'XGROUP DESTROY').rejects.toThrow(/NOPERM|no permissions/i);
    await expect(asGateway.xgroup('SETID', STREAM, 'phi-gateway-siem:acl-soc', '0'), 'XGROUP SETID').rejects.toThrow(/NOPERM|no permissions/i);
  });

  it('refuses the gateway every way of removing an audit record', async () => {
    const [[first]] = (await admin.xrange(STREAM, '-', '+', 'COUNT', 1)) as [[string, string[]]];
    const before = await admin.xlen(STREAM);
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['XDEL', () => asGateway.xdel(STREAM, first)],
      ['XTRIM', () => asGateway.xtrim(STREAM, 'MAXLEN', 0)],
      ['DEL', () => asGateway.del(STREAM)],
      ['UNLINK', () => asGateway.unlink(STREAM)],
      ['EXPIRE', () => asGateway.expire(STREAM, 1)],
      ['RENAME', () => asGateway.rename(STREAM, 'phi-gateway:bg:stolen')],
      ['XSETID', () => asGateway.call('XSETID', STREAM, '0-1')],
      ['script XDEL', () => asGateway.eval("return redis.call('XDEL', KEYS[1], ARGV[1])", 1, STREAM, first)],
      ['script DEL', () => asGateway.eval("return redis.call('DEL', KEYS[1])", 1, STREAM)],
      ['FLUSHALL', () => asGateway.flushall()],
      ['CONFIG SET', () => asGateway.config('SET', 'appendonly', 'no')],
    ];
    for (const [name, attempt] of attempts) {
      await expect(attempt(), name).rejects.toThrow(/NOPERM|no permissions|can't access/i);
    }
    expect(await admin.xlen(STREAM)).toBe(before);
    // Appending is still allowed: the same user keeps writing the trail.
    const after = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(after.status).toBe(200);
    expect(await admin.xlen(STREAM)).toBeGreaterThan(before);
  });
});
