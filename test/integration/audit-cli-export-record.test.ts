// `phi-gateway audit export` leaves its own record (kind audit-export) in the trail it read: a real
// file trail and a real Redis stream. When that record cannot be written the export fails non-zero
// and says so (and removes its output file).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAuditSink, openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { verifyChains } from '../../src/audit/verify.js';
import { run } from '../../src/cli/audit.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(['audit', ...argv], { stdout, stderr, env });
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

/** Five request records, two about patient p1, written by a real sink and sealed. */
async function fill(source: string | Parameters<typeof createAuditSink>[0]): Promise<void> {
  const cfg =
    typeof source === 'string' ? ({ sink: 'file', path: source, failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 } as const) : source;
  const sink = await createAuditSink(cfg);
  for (let i = 0; i < 5; i++) await sink.write(sampleRecord(i, { disclosed: { resources: [], patients: [i === 0 || i === 2 ? 'p1' : `q${i}`], elementsRemoved: 0, resourcesWithheld: 0 } }));
  await sink.close();
}

describe('audit export from the CLI, file trail', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'phi-cli-export-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes an audit-export record (OS user, host, filters, format, count, output path) to the trail it read', async () => {
    const trail = join(dir, 'audit');
    await fill(trail);
    const out = join(dir, 'p1.csv');
    const r = await cli(['export', '--source', `file:${trail}`, '--patient', 'p1', '--format', 'csv', '--out', out]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/2 of \d+ records exported .* \(recorded as [0-9a-f-]{36}\)/);
    expect(readFileSync(out, 'utf8').trim().split('\n')).toHaveLength(3); // header + 2

    const all = await records(`file:${trail}`);
    const exports = all.filter((x) => x.kind === 'audit-export');
    expect(exports).toHaveLength(1);
    const rec = exports[0];
    expect(r.err).toContain(rec.id);
    expect(rec).toMatchObject({
      actor: { sub: userInfo().username, roles: [] },
      decision: 'allow',
      status: 200,
      request: { method: 'CLI', path: 'audit export' },
      disclosed: { patients: ['p1'] },
      details: { via: 'cli', osUser: userInfo().username, host: hostname(), filter: { patient: 'p1' }, format: 'csv', exported: 2, out, source: `file:${trail}` },
    });
    expect(Date.parse(rec.time)).toBeGreaterThan(Date.now() - 60_000);
    expect(Date.parse(rec.details?.finishedAt as string)).toBeGreaterThanOrEqual(Date.parse(rec.time));
    // The trail stays verifiable: the CLI wrote as its own sealed writer chain.
    const report = await verifyChains(openAuditSource(`file:${trail}`));
    expect(report.problems).toEqual([]);
    expect(report.writers).toBe(2);

    // A second export sees the first one's record (and records itself).
    const again = await cli(['export', '--source', trail]);
    expect(again.code).toBe(0);
    const lines = again.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.kind === 'audit-export').map((l) => l.id)).toEqual([rec.id]);
    expect((await records(`file:${trail}`)).filter((x) => x.kind === 'audit-export')).toHaveLength(2);
  });

  it('records an export to stdout as out: stdout', async () => {
    const trail = join(dir, 'audit');
    await fill(trail);
    const r = await cli(['export', '--source', trail, '--decision', 'allow'], { PHI_GATEWAY_CONFIG: join(dir, 'none.yaml') });
    expect(r.code).toBe(0);
    const rec = (await records(trail)).find((x) => x.kind === 'audit-export');
    expect(rec?.details).toMatchObject({ out: 'stdout', format: 'ndjson', filter: { decision: 'allow' }, exported: 5 });
  });

  it('refuses a trail that does not exist, creating nothing', async () => {
    const r = await cli(['export', '--source', `file:${join(dir, 'typo')}`]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('no audit trail at');
    expect(existsSync(join(dir, 'typo'))).toBe(false);
  });
});

describe('audit export from the CLI, redis trail', () => {
  let redis: RedisHandle | undefined;
  let admin: Redis;
  let dir: string;
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
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phi-cli-export-'));
    await admin?.flushall();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('appends the audit-export record to the stream it exported', async (ctx) => {
    if (!redis) return ctx.skip();
    const stream = 'phi-gateway:audit-export-test';
    await fill({ sink: 'redis', url: redis.url, stream, failOpen: false });
    const source = `${redis.url}/0?stream=${encodeURIComponent(stream)}`;
    const r = await cli(['export', '--source', source, '--patient', 'p1']);
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n')).toHaveLength(2);
    const all = await records(source);
    expect(all.filter((x) => x.kind === 'audit-export')).toMatchObject([{ details: { exported: 2, filter: { patient: 'p1' }, out: 'stdout' } }]);
    expect((await verifyChains(openAuditSource(source))).problems).toEqual([]);
  });

  it('fails non-zero, says so and removes its output when the record cannot be written', async (ctx) => {
    if (!redis) return ctx.skip();
    const stream = 'phi-gateway:audit';
    await fill({ sink: 'redis', url: redis.url, stream, failOpen: false });
    const before = await admin.xlen(stream);
    const out = join(dir, 'export.ndjson');
    const source = `redis://reader:reader-pass@127.0.0.1:${redis.port}`;
    const r = await cli(['export', '--out', out], { PHI_GATEWAY_AUDIT: source });
    expect(r.code).toBe(1);
    expect(r.err).toContain("FAILED: the export's own audit record could not be written");
    expect(r.err).toContain('the output file was removed');
    expect(r.err).not.toContain('reader-pass');
    expect(existsSync(out)).toBe(false);
    expect(await admin.xlen(stream)).toBe(before);
    // To stdout: the bytes are gone, the exit status and the message say it was not recorded.
    const toStdout = await cli(['export'], { PHI_GATEWAY_AUDIT: source });
    expect(toStdout.code).toBe(1);
    expect(toStdout.out.trim().split('\n').length).toBeGreaterThan(0);
    expect(toStdout.err).toContain('what was written to stdout is not accounted for in the trail');
  });
});
