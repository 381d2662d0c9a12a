// The warning at start when the Redis audit sink's server can lose acknowledged records: against a
// real redis-server, with AOF fsync always (no warning), fsync everysec, AOF off, and with an ACL
// account that may not run CONFIG (INFO persistence instead) or neither (cannot be checked).
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAuditSink } from '../../src/audit/index.js';
import { durabilityWarning, readRedisDurability } from '../../src/audit/redis-durability.js';
import { createLogger } from '../../src/server/logger.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

let redis: RedisHandle | undefined;
let admin: Redis;

beforeAll(async () => {
  redis = await startRedis();
  if (!redis) return;
  admin = new Redis(redis.url);
  // May write the stream and read INFO, not CONFIG (a least-privilege gateway account).
  await admin.call('ACL', 'SETUSER', 'gw-noconfig', 'on', '>pw-noconfig', '~*', '+@all', '-config');
  // Neither CONFIG nor INFO.
  await admin.call('ACL', 'SETUSER', 'gw-blind', 'on', '>pw-blind', '~*', '+@all', '-config', '-info');
}, 30_000);
afterAll(async () => {
  admin?.disconnect();
  await redis?.dispose();
});
beforeEach(async () => {
  if (!admin) return;
  await admin.config('SET', 'appendonly', 'yes');
  await admin.config('SET', 'appendfsync', 'always');
});

/** Starts a Redis audit sink with a capturing logger and returns its warn lines (level 40). */
async function startWarnings(url: string): Promise<string[]> {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (l: string) => void lines.push(l) });
  const sink = await createAuditSink({ sink: 'redis', url, stream: 'phi-gateway:durability-test', failOpen: false }, { logger });
  await sink.close();
  logger.flush();
  return lines
    .flatMap((l) => l.split('\n'))
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l))
    .filter((l) => l.level === 40)
    .map((l) => l.msg as string);
}

const user = (name: string, pw: string) => `redis://${name}:${pw}@127.0.0.1:${redis!.port}`;

describe('audit redis durability check at start', () => {
  it('says nothing when AOF is on with appendfsync always', async (ctx) => {
    if (!redis) return ctx.skip();
    expect(await readRedisDurability(admin)).toEqual({ via: 'config', appendonly: true, appendfsync: 'always' });
    expect((await startWarnings(redis.url)).filter((m) => m.startsWith('audit redis:'))).toEqual([]);
  });

  it('warns when appendfsync is everysec', async (ctx) => {
    if (!redis) return ctx.skip();
    await admin.config('SET', 'appendfsync', 'everysec');
    expect(await startWarnings(redis.url)).toContain('audit redis: appendfsync is everysec, not always: up to a second of acknowledged audit records can be lost in a crash');
  });

  it('warns when AOF is off', async (ctx) => {
    if (!redis) return ctx.skip();
    await admin.config('SET', 'appendonly', 'no');
    const warnings = await startWarnings(redis.url);
    expect(warnings.filter((m) => m.startsWith('audit redis: AOF is off (appendonly no)'))).toHaveLength(1);
  });

  it('falls back to INFO persistence when CONFIG is refused by ACL', async (ctx) => {
    if (!redis) return ctx.skip();
    const url = user('gw-noconfig', 'pw-noconfig');
    await admin.config('SET', 'appendonly', 'no');
    const off = await startWarnings(url);
    expect(off.filter((m) => m.startsWith('audit redis: AOF is off'))).toHaveLength(1);
    await admin.config('SET', 'appendonly', 'yes');
    const on = await startWarnings(url);
    expect(on).toContain(
      'audit redis: AOF is on, but appendfsync could not be read (CONFIG refused): make sure it is always, or up to a second of acknowledged audit records can be lost in a crash',
    );
    // And the sink still works for that account: the check never stands in the way.
    const client = new Redis(url);
    try {
      expect(await readRedisDurability(client)).toEqual({ via: 'info', appendonly: true, appendfsync: undefined });
      const sink = await createAuditSink({ sink: 'redis', url, stream: 'phi-gateway:durability-write', failOpen: false });
      await sink.write(sampleRecord(1));
      await sink.close();
      expect(await client.xlen('phi-gateway:durability-write')).toBeGreaterThan(0);
    } finally {
      client.disconnect();
    }
  });

  it('says durability could not be checked when neither CONFIG nor INFO is allowed', async (ctx) => {
    if (!redis) return ctx.skip();
    const url = user('gw-blind', 'pw-blind');
    const warnings = await startWarnings(url);
    const line = warnings.find((m) => m.startsWith('audit redis: durability could not be checked'));
    expect(line).toBe(
      'audit redis: durability could not be checked (CONFIG NOPERM, INFO NOPERM): make sure the server runs with appendonly yes and appendfsync always, or acknowledged audit records can be lost in a crash',
    );
    // The account name and password never reach the log.
    expect(warnings.join('\n')).not.toContain('pw-blind');
    expect(warnings.join('\n')).not.toContain('gw-blind');
  });
});

describe('durabilityWarning', () => {
  it('is silent only for AOF with fsync always', () => {
    expect(durabilityWarning({ via: 'config', appendonly: true, appendfsync: 'always' })).toBeUndefined();
    expect(durabilityWarning({ via: 'config', appendonly: true, appendfsync: 'no' })).toMatch(/appendfsync is no, not always/);
    expect(durabilityWarning({ via: 'config', appendonly: false, appendfsync: 'always' })).toMatch(/AOF is off/);
    expect(durabilityWarning({ via: 'info', appendonly: true, appendfsync: undefined })).toMatch(/appendfsync could not be read/);
    expect(durabilityWarning({ via: 'none', error: 'x' })).toMatch(/could not be checked \(x\)/);
  });
});
