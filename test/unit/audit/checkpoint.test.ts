/** Signed checkpoints: the schedule, the signatures, and what a real file sink writes and logs. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chainRecords, isChainRecord } from '../../../src/audit/chain.js';
import { CheckpointSchedule, checkpointText, checkSignature, createSigner, keyIdOf, loadPublicKeys } from '../../../src/audit/checkpoint.js';
import { FileAuditSink, type FileSinkOptions } from '../../../src/audit/file-sink.js';
import { readFileRecords } from '../../../src/audit/read.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { parseAnchors, verifyChains } from '../../../src/audit/verify.js';
import { sampleRecord } from './fixtures.js';

function keyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ed25519');
}

describe('CheckpointSchedule', () => {
  it('is due after everyRecords new records, or everySeconds with at least one new record', () => {
    const s = new CheckpointSchedule({ everyRecords: 3, everySeconds: 10 }, 0);
    expect(s.due(0, 60_000)).toBe(false); // nothing new, however long
    expect(s.due(2, 1000)).toBe(false);
    expect(s.due(3, 1000)).toBe(true);
    expect(s.due(1, 10_000)).toBe(true);
    expect(s.due(1, 1000, true)).toBe(true);
    // The checkpoint record itself (seq 4) is not a new record to cover.
    s.committed(4, 2000);
    expect(s.due(4, 999_999, true)).toBe(false);
    expect(s.due(6, 3000)).toBe(false);
    expect(s.due(7, 3000)).toBe(true);
    expect(s.due(5, 12_000)).toBe(true);
  });
});

describe('signatures', () => {
  const { privateKey, publicKey } = keyPair();
  const signer = createSigner(privateKey);
  const keys = new Map([[keyIdOf(publicKey), publicKey]]);
  const h = 'a'.repeat(64);
  const t = '2026-01-01T00:00:00.000Z';

  it('keyId is the first 16 hex of sha256 over the SPKI, the same from either half', () => {
    expect(signer.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keyIdOf(publicKey)).toBe(signer.keyId);
    expect(keyIdOf(keyPair().publicKey)).not.toBe(signer.keyId);
  });

  it('verifies what was signed and nothing else', () => {
    const signature = signer.sign('checkpoint', 'w', 5, h, t);
    const f = { writer: 'w', seq: 5, hash: h, time: t, keyId: signer.keyId, signature };
    expect(checkSignature(keys, 'checkpoint', f)).toBe('ok');
    expect(checkSignature(keys, 'checkpoint', { ...f, seq: 6 })).toBe('bad-signature');
    expect(checkSignature(keys, 'checkpoint', { ...f, writer: 'v' })).toBe('bad-signature');
    expect(checkSignature(keys, 'checkpoint', { ...f, hash: 'b'.repeat(64) })).toBe('bad-signature');
    expect(checkSignature(keys, 'checkpoint', { ...f, time: '2026-01-01T00:00:01.000Z' })).toBe('bad-signature');
    expect(checkSignature(keys, 'checkpoint', { ...f, signature: undefined })).toBe('unsigned');
    const other = keyPair().publicKey;
    expect(checkSignature(new Map([[keyIdOf(other), other]]), 'checkpoint', f)).toBe('unknown-key');
    // The keyId claimed is not trusted: another key under this id still fails.
    expect(checkSignature(new Map([[signer.keyId, other]]), 'checkpoint', f)).toBe('bad-signature');
  });

  it("a checkpoint's signature never passes as a seal's (domain separation)", () => {
    expect(checkpointText('checkpoint', 'w', 1, h, t)).toBe(`phi-gateway audit checkpoint v1\nw\n1\n${h}\n${t}`);
    const signature = signer.sign('checkpoint', 'w', 5, h, t);
    expect(checkSignature(keys, 'seal', { writer: 'w', seq: 5, hash: h, time: t, keyId: signer.keyId, signature })).toBe('bad-signature');
  });

  it('loadPublicKeys reads SPKI PEM (several blocks) and refuses other key types', () => {
    const second = keyPair().publicKey;
    const pem = `${publicKey.export({ type: 'spki', format: 'pem' })}${second.export({ type: 'spki', format: 'pem' })}`;
    expect(loadPublicKeys(pem).map(keyIdOf)).toEqual([keyIdOf(publicKey), keyIdOf(second)]);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(() => loadPublicKeys(rsa)).toThrow(/Ed25519/);
    expect(() => loadPublicKeys('nothing here')).toThrow(/no PEM/);
  });
});

describe('a file sink with a signing key', () => {
  let dir: string;
  const { privateKey, publicKey } = keyPair();
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'phi-audit-cp-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function stored(): Promise<ChainedRecord[]> {
    const out: ChainedRecord[] = [];
    for await (const i of readFileRecords(dir)) if ('record' in i) out.push(i.record);
    return out;
  }
  function open(over: Partial<FileSinkOptions> = {}): Promise<FileAuditSink> {
    return FileAuditSink.open({
      dir,
      rotateBytes: 1 << 20,
      groupCommitMs: 0,
      writerId: 'w1',
      checkpoint: { signer: createSigner(privateKey), everyRecords: 3, everySeconds: 3600 },
      ...over,
    });
  }

  it('appends a signed checkpoint every N records and signs the seal; verify with the public key passes', async () => {
    const sink = await open();
    for (let i = 1; i <= 7; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const recs = await stored();
    expect(recs.map((r) => (r.kind === 'fhir' ? r.id : r.kind))).toEqual([
      'req-1',
      'req-2',
      'req-3',
      'writer-checkpoint',
      'req-4',
      'req-5',
      'req-6',
      'writer-checkpoint',
      'req-7',
      'writer-seal',
    ]);
    expect(recs[3].details).toMatchObject({ records: 3, lastHash: recs[2].chain.hash, keyId: keyIdOf(publicKey) });
    expect(recs[9].details).toMatchObject({ sealed: true, records: 9, lastHash: recs[8].chain.hash, keyId: keyIdOf(publicKey) });
    expect(recs.filter(isChainRecord)).toHaveLength(3);
    const report = await verifyChains(readFileRecords(dir), { publicKeys: [publicKey], requireSeal: true });
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.writerSummaries).toEqual([expect.objectContaining({ writer: 'w1', lastSeq: 10, sealed: true, protectedTo: 10, unprotected: 0 })]);
  });

  it('signs within everySeconds when writes stop (timer), and reports only later records as unprotected', async () => {
    const sink = await open({ checkpoint: { signer: createSigner(privateKey), everyRecords: 1000, everySeconds: 1 } });
    await sink.write(sampleRecord(1));
    await sink.write(sampleRecord(2));
    const deadline = Date.now() + 5000;
    while (!(await stored()).some((r) => r.kind === 'writer-checkpoint') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await sink.write(sampleRecord(3));
    const live = await verifyChains(readFileRecords(dir), { publicKeys: [publicKey] });
    expect(live.ok).toBe(true);
    expect(live.writerSummaries[0]).toMatchObject({ lastSeq: 4, protectedTo: 3, unprotected: 1, sealed: false });
    expect(live.warnings.map((w) => w.kind).sort()).toEqual(['unprotected', 'unsealed']);
    // No new records: the timer writes no further checkpoint.
    await new Promise((r) => setTimeout(r, 1300));
    const recs = await stored();
    expect(recs.filter((r) => r.kind === 'writer-checkpoint')).toHaveLength(2);
    expect(recs.at(-1)!.kind).toBe('writer-checkpoint');
    await sink.close();
    expect((await verifyChains(readFileRecords(dir), { publicKeys: [publicKey], requireSeal: true })).ok).toBe(true);
  });

  it('logs every checkpoint and the seal (no PHI) in a form --anchor reads back', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const sink = await open({ logger });
    for (let i = 1; i <= 4; i++) await sink.write(sampleRecord(i));
    await sink.close();
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; audit?: { checkpoint?: Record<string, unknown> } }).filter((l) => l.audit?.checkpoint);
    expect(logged.map((l) => l.msg)).toEqual(['audit checkpoint', 'audit chain sealed']);
    const recs = await stored();
    expect(logged[0].audit!.checkpoint).toMatchObject({ writer: 'w1', seq: 3, hash: recs[2].chain.hash, keyId: keyIdOf(publicKey) });
    expect(logged[1].audit!.checkpoint).toMatchObject({ writer: 'w1', seq: 5, hash: recs[4].chain.hash, seal: true });
    // Nothing of the records themselves: no patient ids, paths or actors.
    for (const l of lines) expect(l).not.toMatch(/p[1-4]\b|Patient|user-/);
    expect(parseAnchors(lines.join(''))).toEqual([
      { writer: 'w1', seq: 3, hash: recs[2].chain.hash },
      { writer: 'w1', seq: 5, hash: recs[4].chain.hash },
    ]);
  });

  it('a failed batch loses its checkpoint with it; the next durable batch carries one', async () => {
    let fail = false;
    const { nodeFileIo } = await import('../../../src/audit/file-sink.js');
    const io = {
      syncDir: nodeFileIo.syncDir,
      openAppend: async (p: string) => {
        const real = await nodeFileIo.openAppend(p);
        return {
          durableWrites: real.durableWrites,
          append: (b: Buffer) => (fail ? Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) : real.append(b)),
          datasync: () => real.datasync(),
          truncate: (n: number) => real.truncate(n),
          close: () => real.close(),
        };
      },
    };
    const sink = await open({ io, inlineBatchMax: 0 });
    await sink.write(sampleRecord(1));
    await sink.write(sampleRecord(2));
    fail = true;
    await expect(sink.write(sampleRecord(3))).rejects.toThrow(/EIO/);
    fail = false;
    await sink.write(sampleRecord(4));
    await sink.close();
    const recs = await stored();
    expect(recs.map((r) => (r.kind === 'fhir' ? r.id : r.kind))).toEqual(['req-1', 'req-2', 'req-4', 'writer-checkpoint', 'writer-seal']);
    expect((await verifyChains(readFileRecords(dir), { publicKeys: [publicKey], requireSeal: true })).ok).toBe(true);
  });
});

describe('verify under a public key (crafted trails)', () => {
  const { privateKey, publicKey } = keyPair();
  const signer = createSigner(privateKey);

  it('an unkeyed trail (no checkpoint at all) is a problem under --public-key, fine without', async () => {
    const { chained } = chainRecords({ writer: 'u', seq: 0, hash: '0'.repeat(64) }, [sampleRecord(1), sampleRecord(2)]);
    expect((await verifyChains(chained)).ok).toBe(true);
    const r = await verifyChains(chained, { publicKeys: [publicKey] });
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => p.kind)).toContain('no-checkpoint');
  });

  it('anchors: a writer removed entirely is caught, a present one passes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'phi-audit-anchor-'));
    try {
      const cp = { signer, everyRecords: 2, everySeconds: 3600 };
      const a = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'wa', checkpoint: cp });
      const b = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'wb', checkpoint: cp });
      for (let i = 0; i < 6; i++) await (i % 2 ? b : a).write(sampleRecord(i));
      await a.close();
      await b.close();
      const all: ChainedRecord[] = [];
      for await (const i of readFileRecords(dir)) if ('record' in i) all.push(i.record);
      const anchorText = all.filter((r) => r.kind === 'writer-seal').map((r) => JSON.stringify(r)).join('\n');
      const anchors = parseAnchors(anchorText);
      expect(anchors.map((x) => x.writer).sort()).toEqual(['wa', 'wb']);
      expect((await verifyChains(all, { publicKeys: [publicKey], anchors, requireSeal: true })).ok).toBe(true);
      // wb deleted wholesale: every remaining chain is intact and signed, only the anchor notices.
      const [name] = await readdir(dir);
      const kept = (await readFile(join(dir, name), 'utf8')).split('\n').filter((l) => l && !l.includes('"writer":"wb"'));
      await writeFile(join(dir, name), kept.map((l) => `${l}\n`).join(''));
      const without = await verifyChains(readFileRecords(dir), { publicKeys: [publicKey], requireSeal: true });
      expect(without.ok).toBe(true);
      const anchored = await verifyChains(readFileRecords(dir), { publicKeys: [publicKey], requireSeal: true, anchors });
      expect(anchored.ok).toBe(false);
      expect(anchored.first).toMatchObject({ kind: 'anchor-missing', writer: 'wb' });
      expect(anchored.anchorsChecked).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('parseAnchors refuses a file without a checkpoint line', () => {
    expect(() => parseAnchors('{"msg":"request"}\nnot json\n')).toThrow(/no checkpoint/);
  });
});
