// Every command-line read of the trail or of the break-glass sessions leaves its own record in the
// trail (kind audit-export, details.command naming the verb): audit export, the three reports,
// policy diff and break-glass list, each against a real file trail written by a real sink. A trail
// that cannot take the record (a read-only Redis account) gets nothing released.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAuditSink, openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { verifyChains } from '../../src/audit/verify.js';
import { FileSessionStore } from '../../src/breakglass/file-store.js';
import { run as auditCli } from '../../src/cli/audit.js';
import { run as breakGlassCli } from '../../src/cli/break-glass.js';
import { run as policyCli } from '../../src/cli/policy.js';
import { run as reportCli } from '../../src/cli/report.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

type Run = (argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; env: NodeJS.ProcessEnv }) => Promise<number>;

const POLICY = fileURLToPath(new URL('../../config/policy.yaml', import.meta.url));

async function cli(run: Run, argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(argv, { stdout, stderr, env });
  return { code, out, err };
}

async function records(source: string): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  const src = openAuditSource(source);
  try {
    for await (const item of src) if ('record' in item) out.push(item.record as ChainedRecord);
  } finally {
    await src.close();
  }
  return out;
}

/** The CLI records of the trail: kind audit-export, written from the command line. */
async function cliRecords(source: string): Promise<ChainedRecord[]> {
  return (await records(source)).filter((r) => r.kind === 'audit-export' && r.request.method === 'CLI');
}

describe('CLI reads of a file trail are recorded in it', () => {
  let dir: string;
  let trail: string;
  let env: NodeJS.ProcessEnv;
  const me = userInfo().username;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phi-cli-record-'));
    trail = join(dir, 'audit');
    // Six request records by billing, two about patient p1, and a break-glass review: a real sink, sealed.
    const sink = await createAuditSink({ sink: 'file', path: trail, failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 });
    for (let i = 0; i < 6; i++) await sink.write(sampleRecord(i, { disclosed: { resources: [`Patient/p${i % 2}`], patients: [`p${i % 2}`], elementsRemoved: 0, resourcesWithheld: 0 } }));
    await sink.close();
    writeFileSync(
      join(dir, 'gateway.yaml'),
      `policy: ${POLICY}\nupstream:\n  url: http://127.0.0.1:8103/fhir\nauth:\n  issuer: https://idp.test\n  audience: phi-gateway\n  jwksUri: https://idp.test/jwks\naudit:\n  sink: file\n  path: audit\n`,
    );
    env = { PHI_GATEWAY_CONFIG: join(dir, 'gateway.yaml'), PHI_GATEWAY_POLICY: POLICY };
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  async function expectVerifiable(): Promise<void> {
    const report = await verifyChains(openAuditSource(`file:${trail}`));
    expect(report.problems).toEqual([]);
  }

  it('audit export', async () => {
    const r = await cli(auditCli, ['export', '--patient', 'p1', '--format', 'csv'], env);
    expect(r.code).toBe(0);
    const recs = await cliRecords(trail);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      actor: { sub: me, roles: [] },
      decision: 'allow',
      request: { method: 'CLI', path: 'audit export' },
      disclosed: { patients: ['p1'] },
      details: { via: 'cli', command: 'audit export', osUser: me, host: hostname(), filter: { patient: 'p1' }, format: 'csv', exported: 3, out: 'stdout', source: `file:${trail}` },
    });
    expect(r.err).toContain(`recorded as ${recs[0].id}`);
    await expectVerifiable();
  });

  it.each(['usage', 'access', 'break-glass'] as const)('report %s', async (kind) => {
    const out = join(dir, `${kind}.csv`);
    const r = await cli(reportCli as Run, [kind, '--format', 'csv', '--out', out, '--from', '2025-01-01T00:00:00Z'], env);
    expect(r.code).toBe(0);
    expect(readFileSync(out, 'utf8').length).toBeGreaterThan(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const recs = await cliRecords(trail);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      actor: { sub: me },
      decision: 'allow',
      status: 200,
      request: { path: `report ${kind}` },
      details: { via: 'cli', command: `report ${kind}`, osUser: me, host: hostname(), format: 'csv', out, from: '2025-01-01T00:00:00Z', records: 6, source: `file:${trail}` },
    });
    // A second report reads the first one's record: it counts as a record of the trail.
    const again = await cli(reportCli as Run, [kind, '--format', 'csv'], env);
    expect(again.code).toBe(0);
    expect((await cliRecords(trail)).map((x) => x.details?.records)).toEqual([6, 7]);
    await expectVerifiable();
  });

  it('policy diff', async () => {
    const r = await cli(policyCli, ['diff', '--candidate', POLICY, '--format', 'csv'], env);
    expect(r.code).toBe(0);
    const recs = await cliRecords(trail);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      decision: 'allow',
      request: { path: 'policy diff' },
      details: { command: 'policy diff', osUser: me, candidate: POLICY, replayed: 6, changed: 0, out: 'stdout', source: `file:${trail}` },
    });
    expect(recs[0].policyVersion).toMatch(/\S/);
    await expectVerifiable();
  });

  it('break-glass list: names the patients and sessions it showed', async () => {
    const store = await FileSessionStore.open(join(dir, 'break-glass'));
    for (const [i, sub] of ['dr-a', 'dr-b'].entries()) {
      await store.open({
        id: `sess-${sub}`,
        actor: { iss: 'https://idp.test', sub, roles: ['clinician'] },
        patient: `vip-${i}`,
        reason: 'Unconscious patient in the ED',
        reasonCode: undefined,
        requestId: `r${i}`,
        now: new Date(Date.now() - i * 60_000),
        sessionMs: 3600_000,
        maxSessionsPerDay: 5,
      });
    }
    await store.close();
    const r = await cli(breakGlassCli as Run, ['list'], env);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Unconscious patient in the ED');
    const recs = await cliRecords(trail);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      actor: { sub: me },
      request: { path: 'break-glass list' },
      disclosed: { patients: expect.arrayContaining(['vip-0', 'vip-1']) },
      details: { command: 'break-glass list', osUser: me, unreviewed: false, count: 2, sessions: expect.arrayContaining(['sess-dr-a', 'sess-dr-b']) },
    });
    expect(recs[0].disclosed.patients).toHaveLength(2);
    await expectVerifiable();
  });

  it('break-glass list with no trail where the config says: refused, nothing shown, nothing created', async () => {
    rmSync(trail, { recursive: true });
    const r = await cli(breakGlassCli as Run, ['list'], env);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toContain('no audit trail at');
    expect(existsSync(trail)).toBe(false);
  });
});

describe('CLI reads of a Redis trail that cannot take their record release nothing', () => {
  let redis: RedisHandle | undefined;
  let admin: Redis;
  let dir: string;
  const stream = 'phi-gateway:audit';
  beforeAll(async () => {
    redis = await startRedis();
    if (!redis) return;
    admin = new Redis(redis.url);
    // A read-only account: may read the stream, may not append to it.
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection', '+info', '+config|get', '+client');
  }, 30_000);
  afterAll(async () => {
    admin?.disconnect();
    await redis?.dispose();
  });
  beforeEach(async (ctx) => {
    if (!redis) return ctx.skip();
    dir = mkdtempSync(join(tmpdir(), 'phi-cli-record-'));
    await admin.flushall();
    const sink = await createAuditSink({ sink: 'redis', url: redis.url, stream, failOpen: false });
    for (let i = 0; i < 4; i++) await sink.write(sampleRecord(i));
    await sink.close();
  });
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the reports and policy diff fail with exit 1, print and write nothing, and leave the stream as it was', async () => {
    const before = await admin.xlen(stream);
    const env = { PHI_GATEWAY_AUDIT: `redis://reader:reader-pass@127.0.0.1:${redis!.port}`, PHI_GATEWAY_POLICY: POLICY };
    for (const kind of ['usage', 'access', 'break-glass']) {
      const out = join(dir, `${kind}.txt`);
      const r = await cli(reportCli as Run, [kind, '--out', out], env);
      expect(r.code, kind).toBe(1);
      expect(r.out).toBe('');
      expect(r.err).toMatch(/audit record could not be written/);
      expect(r.err).not.toContain('reader-pass');
      expect(existsSync(out)).toBe(false);
    }
    const diff = await cli(policyCli, ['diff', '--candidate', POLICY], env);
    expect(diff.code).toBe(1);
    expect(diff.out).toBe('');
    expect(diff.err).toMatch(/audit record could not be written/);
    expect(await admin.xlen(stream)).toBe(before);

    // The same commands with an account that may append: released, and recorded.
    const ok = await cli(reportCli as Run, ['access'], { ...env, PHI_GATEWAY_AUDIT: redis!.url });
    expect(ok.code).toBe(0);
    expect(ok.out.length).toBeGreaterThan(0);
    expect((await cliRecords(redis!.url)).map((r) => r.details?.command)).toEqual(['report access']);
  });
});
