/** Each tamper case applied to a real file written by the file sink, and the first bad record named. */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chainRecords } from '../../../src/audit/chain.js';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import { readFileRecords } from '../../../src/audit/read.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { verifyChains } from '../../../src/audit/verify.js';
import { sampleRecord } from './fixtures.js';

let dir: string;
let file: string;
let name: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phi-audit-tamper-'));
  // Two interleaved writers, both sealed: 5 + 5 records + 2 seals = 12 lines.
  const a = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'wa' });
  const b = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'wb' });
  for (let i = 0; i < 10; i++) await (i % 2 ? b : a).write(sampleRecord(i));
  await a.close();
  await b.close();
  name = (await readdir(dir))[0];
  file = join(dir, name);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function lines(): Promise<string[]> {
  return (await readFile(file, 'utf8')).split('\n').slice(0, -1);
}
async function save(ls: string[]): Promise<void> {
  await writeFile(file, ls.map((l) => l + '\n').join(''));
}
const verify = () => verifyChains(readFileRecords(dir));

describe('audit verify on a real sink file', () => {
  it('the untouched file is intact, with no warnings', async () => {
    const r = await verify();
    expect(r).toMatchObject({ ok: true, records: 12, writers: 2 });
    expect(r.warnings).toEqual([]);
  });

  it('an edited field: hash mismatch at that line', async () => {
    const ls = await lines();
    const rec = JSON.parse(ls[4]) as ChainedRecord;
    ls[4] = JSON.stringify({ ...rec, status: 404 });
    await save(ls);
    const r = await verify();
    expect(r.ok).toBe(false);
    expect(r.first).toMatchObject({ kind: 'hash-mismatch', position: `${name}:5`, writer: rec.chain.writer, seq: rec.chain.seq });
    // Resynchronised: the edit is the only problem reported.
    expect(r.problems).toHaveLength(1);
  });

  it('a deleted line: sequence gap at the next record of that writer', async () => {
    const ls = await lines();
    const removed = JSON.parse(ls[2]) as ChainedRecord; // wa seq 2
    ls.splice(2, 1); // lines now: wa1, wb1, wb2, wa3 ...
    await save(ls);
    const r = await verify();
    expect(r.first).toMatchObject({ kind: 'seq-gap', writer: removed.chain.writer, seq: removed.chain.seq + 1, position: `${name}:4` });
  });

  it('two lines of one writer swapped: named at the first displaced line', async () => {
    const ls = await lines();
    // lines 0,2 are wa seq 1,2: swap them.
    [ls[0], ls[2]] = [ls[2], ls[0]];
    await save(ls);
    const r = await verify();
    expect(r.ok).toBe(false);
    expect(r.first).toMatchObject({ kind: 'seq-gap', writer: 'wa', seq: 2, position: `${name}:1` });
    expect(r.problems.map((p) => p.kind)).toContain('seq-backwards');
  });

  it('the tail truncated (last records and seals removed): unsealed warnings, still no error', async () => {
    const ls = await lines();
    await save(ls.slice(0, 7));
    const r = await verify();
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => w.writer).sort()).toEqual(['wa', 'wb']);
    expect(r.warnings.every((w) => w.kind === 'unsealed')).toBe(true);
  });

  it('records removed before a seal: the seal contradicts them', async () => {
    const ls = await lines();
    // Drop wa's last request record and re-forge nothing: the seal follows a gap.
    const waLines = ls.map((l, i) => [i, JSON.parse(l) as ChainedRecord] as const).filter(([, r]) => r.chain.writer === 'wa');
    const lastRequest = waLines[waLines.length - 2][0];
    ls.splice(lastRequest, 1);
    await save(ls);
    expect((await verify()).ok).toBe(false);
  });

  it('a forged line inserted with a correctly computed hash: prev/seq contradiction at the next record', async () => {
    const ls = await lines();
    const r1 = JSON.parse(ls[0]) as ChainedRecord; // wa seq 1
    // The forger knows the algorithm and chains a record after wa seq 1.
    const forged = chainRecords({ writer: 'wa', seq: 1, hash: r1.chain.hash }, [sampleRecord(99, { id: 'forged' })]).chained[0];
    ls.splice(1, 0, JSON.stringify(forged));
    await save(ls);
    const r = await verify();
    expect(r.ok).toBe(false);
    // The real wa seq 2 is now at line 4 (after the forgery at line 2 and wb's line 3).
    expect(r.first).toMatchObject({ kind: 'seq-backwards', writer: 'wa', seq: 2, position: `${name}:4` });
  });

  it('a forged line appended after a seal is an error', async () => {
    const ls = await lines();
    const last = JSON.parse(ls[ls.length - 1]) as ChainedRecord;
    const forged = chainRecords({ writer: last.chain.writer, seq: last.chain.seq, hash: last.chain.hash }, [sampleRecord(99)]).chained[0];
    ls.push(JSON.stringify(forged));
    await save(ls);
    expect((await verify()).first).toMatchObject({ kind: 'after-seal', position: `${name}:13` });
  });

  it('an unparsable line is named by file and line', async () => {
    const ls = await lines();
    ls[6] = ls[6].slice(0, 20);
    await save(ls);
    const r = await verify();
    expect(r.first).toMatchObject({ kind: 'unparsable', position: `${name}:7` });
  });
});
