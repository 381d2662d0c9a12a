/**
 * Signed checkpoints end to end, through the CLI's main(): a trail written by the real file sink,
 * by the real Redis sink against a real redis-server, and by a running gateway, attacked the ways
 * someone with write access to the store (but not the signing key) would, and judged by
 * `phi-gateway audit verify --public-key`.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { recordHash } from '../../src/audit/chain.js';
import { createSigner, loadSigningKey } from '../../src/audit/checkpoint.js';
import { FileAuditSink } from '../../src/audit/file-sink.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { RedisAuditSink } from '../../src/audit/redis-sink.js';
import { main } from '../../src/cli/main.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object ? Mutable<T[K]> : T[K] };
type Rec = Mutable<ChainedRecord> & { details?: Record<string, unknown> };

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  return cliEnv({}, ...argv);
}
async function cliEnv(env: NodeJS.ProcessEnv, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await main(argv, { stdout, stderr, env });
  return { code, out, err };
}

let keys: string;
let priv: string;
let pub: string;
let otherPub: string;

beforeAll(async () => {
  keys = await mkdtemp(join(tmpdir(), 'phi-audit-keys-'));
  const made = await cli('audit', 'keygen', '--out', join(keys, 'k'));
  expect(made.code).toBe(0);
  priv = join(keys, 'k', 'audit-signing-key.pem');
  pub = join(keys, 'k', 'audit-signing-key.pub.pem');
  expect(await cli('audit', 'keygen', '--out', join(keys, 'other'))).toMatchObject({ code: 0 });
  otherPub = join(keys, 'other', 'audit-signing-key.pub.pem');
});
afterAll(async () => {
  await rm(keys, { recursive: true, force: true });
});

describe('audit keygen', () => {
  it('writes an Ed25519 key pair, the private half mode 0600, and never overwrites it', async () => {
    expect((await stat(priv)).mode & 0o777).toBe(0o600);
    expect(loadSigningKey(priv).asymmetricKeyType).toBe('ed25519');
    expect(readFileSync(pub, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const before = readFileSync(priv, 'utf8');
    const again = await cli('audit', 'keygen', '--out', join(keys, 'k'));
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/not overwriting/);
    expect(readFileSync(priv, 'utf8')).toBe(before);
  });
});

describe('verify --public-key on a file-sink trail', () => {
  let dir: string;
  let file: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'phi-audit-cpfile-'));
    const checkpoint = { signer: createSigner(loadSigningKey(priv)), everyRecords: 4, everySeconds: 3600 };
    // Two writers, interleaved: 10 + 5 records, checkpoints every 4, both sealed.
    const a = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'gw-a', checkpoint });
    const b = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'gw-b', checkpoint });
    for (let i = 0; i < 15; i++) await (i % 3 === 2 ? b : a).write(sampleRecord(i));
    await a.close();
    await b.close();
    file = join(dir, (await readdir(dir))[0]);
  });
  const source = (): string => `file:${dir}`;
  const lines = async (): Promise<Rec[]> => (await readFile(file, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Rec);
  const save = (recs: Rec[]): Promise<void> => writeFile(file, recs.map((r) => `${JSON.stringify(r)}\n`).join(''));

  /** What someone with write access but no key does: renumber and re-hash one writer's chain so every link holds. */
  function rechain(recs: Rec[], writer: string, fixVouchers: boolean): Rec[] {
    let seq = 0;
    let prev = '0'.repeat(64);
    for (const r of recs) {
      if (r.chain.writer !== writer) continue;
      r.chain.seq = ++seq;
      r.chain.prev = prev;
      if (fixVouchers && (r.kind === 'writer-checkpoint' || r.kind === 'writer-seal')) r.details = { ...r.details, records: seq - 1, lastHash: prev };
      r.chain.hash = recordHash(r as ChainedRecord);
      prev = r.chain.hash;
    }
    return recs;
  }

  it('an intact trail: exit 0, signatures valid, and the latest checkpoints printed as anchors', async () => {
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/intact: 20 records, 2 writer chain\(s\).*signatures valid/);
    expect(r.out).toMatch(/writer gw-a: 13 records, sealed, signed through seq 13, 0 unprotected/);
    expect(r.out.match(/^checkpoint \{.*"seal":true\}$/gm)).toHaveLength(2);
    // Without the key it still passes, and says what that is worth.
    const unkeyed = await cli('audit', 'verify', '--source', source());
    expect(unkeyed.code).toBe(0);
    expect(unkeyed.out).toMatch(/unkeyed and cannot prove itself/);
  });

  it('a rewritten chain (a record edited, every hash and prev recomputed, no key): exit 1 under the public key', async () => {
    const recs = await lines();
    // Hide that an access happened: gw-a's third request record now discloses nothing.
    const target = recs.filter((r) => r.chain.writer === 'gw-a' && r.kind === 'fhir')[2];
    target.disclosed = { ...target.disclosed, patients: [], resources: [] };
    await save(rechain(recs, 'gw-a', false));
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/BROKEN: first problem: .*writer gw-a, seq 5\): checkpoint vouches for a last hash that is not the chain's/);
  });

  it('the same rewrite with the checkpoints and seal patched to the new hashes: passes unkeyed, fails on the signatures', async () => {
    const recs = await lines();
    const target = recs.filter((r) => r.chain.writer === 'gw-a' && r.kind === 'fhir')[2];
    target.disclosed = { ...target.disclosed, patients: [], resources: [] };
    await save(rechain(recs, 'gw-a', true));
    const unkeyed = await cli('audit', 'verify', '--source', source());
    expect(unkeyed.code).toBe(0);
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/checkpoint signature does not verify/);
    expect(r.out).toMatch(/seal signature does not verify/);
    expect(r.out).toMatch(/no checkpoint or seal signed by the given key/);
  });

  it('the checkpoints deleted and the seal unsigned, chain renumbered: exit 1 (nothing vouches for the writer)', async () => {
    const recs = (await lines()).filter((r) => !(r.chain.writer === 'gw-a' && r.kind === 'writer-checkpoint'));
    for (const r of recs) if (r.chain.writer === 'gw-a' && r.kind === 'writer-seal') r.details = { sealed: true };
    await save(rechain(recs, 'gw-a', true));
    expect((await cli('audit', 'verify', '--source', source())).code).toBe(0);
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/seal carries no signature/);
  });

  it('a truncated tail (last records and the seal removed): exit 1, with or without the key', async () => {
    const recs = await lines();
    // gw-a's last two records (its last request and its seal) cut off.
    const aAt = recs.flatMap((r, i) => (r.chain.writer === 'gw-a' ? [i] : []));
    const drop = new Set(aAt.slice(-2));
    const cut = recs.filter((_, i) => !drop.has(i));
    expect(cut.filter((r) => r.chain.writer === 'gw-a').at(-1)).toMatchObject({ kind: 'fhir', chain: { seq: 11 } });
    await save(cut);
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/writer gw-a ends at seq \d+ .*without a seal/);
    expect(r.out).toMatch(/--allow-unsealed/);
    expect((await cli('audit', 'verify', '--source', source())).code).toBe(1);
    // Allowed as a live trail, the cut is reported: the writer is unsealed, its tail unprotected.
    const live = await cli('audit', 'verify', '--source', source(), '--public-key', pub, '--allow-unsealed');
    expect(live.code).toBe(0);
    expect(live.out).toMatch(/warning: writer gw-a ends at seq 11/);
    expect(live.out).toMatch(/writer gw-a: 1 record\(s\) after its last signed checkpoint \(seq 10\) are unprotected/);
  });

  it('the file itself truncated (its last three lines gone): exit 1', async () => {
    const recs = await lines();
    await save(recs.slice(0, -3));
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/BROKEN/);
  });

  it('a tail cut right after a checkpoint, accepted with --allow-unsealed, is caught by the anchor kept elsewhere', async () => {
    const intact = await cli('audit', 'verify', '--source', source(), '--public-key', pub);
    const anchorFile = join(dir, '..', `${dir.split('/').pop()}-anchor.txt`);
    await writeFile(anchorFile, intact.out);
    try {
      const recs = await lines();
      const lastCp = recs.map((r) => `${r.chain.writer}/${r.kind}`).lastIndexOf('gw-a/writer-checkpoint');
      await save(recs.filter((r, i) => r.chain.writer !== 'gw-a' || i <= lastCp));
      const live = await cli('audit', 'verify', '--source', source(), '--public-key', pub, '--allow-unsealed');
      expect(live.code).toBe(0); // what a checkpoint cannot see by itself
      const anchored = await cli('audit', 'verify', '--source', source(), '--public-key', pub, '--allow-unsealed', '--anchor', anchorFile);
      expect(anchored.code).toBe(1);
      expect(anchored.out).toMatch(/anchor writer gw-a seq 12: the trail ends before it/);
      expect(anchored.out).toMatch(/anchors: 1 of 2 found/);
    } finally {
      await rm(anchorFile, { force: true });
    }
  });

  it('signed by another key: exit 1', async () => {
    const r = await cli('audit', 'verify', '--source', source(), '--public-key', otherPub);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/signed by key [0-9a-f]{16}, not by any public key given/);
    // Both keys given (a rotation): passes.
    expect((await cli('audit', 'verify', '--source', source(), '--public-key', otherPub, '--public-key', pub)).code).toBe(0);
  });

  it('a missing or unusable key file is a usage error (exit 2)', async () => {
    expect((await cli('audit', 'verify', '--source', source(), '--public-key', join(dir, 'nope.pem'))).code).toBe(2);
    expect((await cli('audit', 'verify', '--source', source(), '--anchor', file, '--public-key', pub)).code).toBe(0);
    const noAnchors = join(keys, 'empty.txt');
    await writeFile(noAnchors, 'nothing\n');
    expect((await cli('audit', 'verify', '--source', source(), '--anchor', noAnchors)).code).toBe(2);
  });
});

describe('a live trail', () => {
  it('--allow-unsealed: exit 0 while the writer runs (its unsigned tail reported); without it exit 1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'phi-audit-cplive-'));
    const sink = await FileAuditSink.open({
      dir,
      rotateBytes: 1 << 20,
      groupCommitMs: 0,
      writerId: 'live',
      checkpoint: { signer: createSigner(loadSigningKey(priv)), everyRecords: 5, everySeconds: 3600 },
    });
    try {
      for (let i = 0; i < 7; i++) await sink.write(sampleRecord(i));
      const ok = await cli('audit', 'verify', '--source', `file:${dir}`, '--public-key', pub, '--allow-unsealed');
      expect(ok.code).toBe(0);
      expect(ok.out).toMatch(/writer live: 8 records, unsealed, signed through seq 6, 2 unprotected/);
      expect(ok.out).toMatch(/2 record\(s\) after its last signed checkpoint \(seq 6\) are unprotected/);
      expect((await cli('audit', 'verify', '--source', `file:${dir}`, '--public-key', pub)).code).toBe(1);
    } finally {
      await sink.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('verify --public-key on a Redis trail', () => {
  let redis: RedisHandle | undefined;
  let admin: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    if (redis) admin = new Redis(redis.url);
  }, 30_000);
  afterAll(async () => {
    await admin?.quit();
    await redis?.dispose();
  });

  async function trail(stream: string): Promise<string[]> {
    const sink = await RedisAuditSink.open({
      url: redis!.url,
      stream,
      writerId: `gw-${stream}`,
      newWriterId: () => `gw-${stream}-2`,
      checkpoint: { signer: createSigner(loadSigningKey(priv)), everyRecords: 3, everySeconds: 3600 },
    });
    for (let i = 0; i < 8; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const entries = (await admin.xrange(stream, '-', '+')) as Array<[string, string[]]>;
    return entries.map(([id]) => id);
  }
  const verify = (stream: string, ...extra: string[]) => cli('audit', 'verify', '--source', `${redis!.url}?stream=${stream}`, '--public-key', pub, ...extra);

  it('intact: exit 0', async () => {
    if (!redis) return;
    const ids = await trail('intact');
    expect(ids).toHaveLength(8 + 2 + 1);
    const r = await verify('intact');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/intact: 11 records, 1 writer chain/);
  });

  it('XDEL of an entry in the middle: exit 1', async () => {
    if (!redis) return;
    const ids = await trail('middle');
    expect(await admin.xdel('middle', ids[5])).toBe(1);
    const r = await verify('middle');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/expected seq 6 .*records removed/);
  });

  it('XDEL of the last entry (the seal): exit 1', async () => {
    if (!redis) return;
    const ids = await trail('last');
    expect(await admin.xdel('last', ids.at(-1)!)).toBe(1);
    const r = await verify('last');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/without a seal/);
  });
});

describe('a running gateway with audit.checkpoint', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: { PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: priv },
      configure: (c) => ({ ...c, audit: { ...c.audit, checkpoint: { ...c.audit.checkpoint!, everyRecords: 3 } } }),
    });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
  });

  it('signs as it serves; /readyz is unaffected; export leaves chain records out; verify passes live and after the seal', async () => {
    expect(stack.config.audit.checkpoint).toMatchObject({ keyFile: priv, everyRecords: 3, everySeconds: 60 });
    for (let i = 0; i < 7; i++) {
      const res = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
      expect(res.status).toBe(200);
    }
    const ready = await fetch(`http://${stack.config.admin.host}:${stack.config.admin.port}/readyz`);
    expect(ready.status).toBe(200);
    const stored = await stack.auditRecords();
    expect(stored.filter((r) => r.kind === 'writer-checkpoint').length).toBeGreaterThanOrEqual(2);
    // Every checkpoint is logged (writer, seq, hash, signature), without PHI.
    const logged = stack.logs.filter((l) => l.includes('"checkpoint"'));
    expect(logged.length).toBeGreaterThanOrEqual(2);
    for (const l of logged) expect(l).not.toContain(DEMO.patients.alice);

    const live = await cli('audit', 'verify', '--source', `file:${stack.auditDir}`, '--public-key', pub, '--allow-unsealed');
    expect(live.code).toBe(0);
    const anchors = join(stack.auditDir, '..', `${stack.auditDir.split('/').pop()}-log.txt`);
    await writeFile(anchors, stack.logs.join(''));
    try {
      expect((await cli('audit', 'verify', '--source', `file:${stack.auditDir}`, '--public-key', pub, '--allow-unsealed', '--anchor', anchors)).out).toMatch(
        /anchors: (\d+) of \1 found/,
      );
    } finally {
      await rm(anchors, { force: true });
    }

    // A filtered export (CLI) has no chain record. The export's own audit record is signed with the
    // key from the environment, so the trail still verifies under the public key.
    const out = join(stack.auditDir, '..', `${stack.auditDir.split('/').pop()}-export.ndjson`);
    try {
      const exp = await cliEnv({ PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: priv }, 'audit', 'export', '--source', `file:${stack.auditDir}`, '--decision', 'allow', '--out', out);
      expect(exp.code).toBe(0);
      const exported = (await readFile(out, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as ChainedRecord);
      expect(exported.length).toBeGreaterThanOrEqual(7);
      expect(exported.filter((r) => r.kind === 'writer-checkpoint' || r.kind === 'writer-seal')).toEqual([]);
    } finally {
      await rm(out, { force: true });
    }

    await stack.gateway.close();
    const sealed = await cli('audit', 'verify', '--source', `file:${stack.auditDir}`, '--public-key', pub);
    expect(sealed.code).toBe(0);
    expect(sealed.out).toMatch(/sealed, signed through seq (\d+), 0 unprotected/);
    expect(sealed.out).not.toMatch(/unsealed/);
  }, 60_000);
});
