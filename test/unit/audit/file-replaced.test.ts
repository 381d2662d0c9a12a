/**
 * An insider with write access to the audit directory replaced the live file with a copy cut back
 * to an earlier checkpoint (`head -n N f > t && mv t f`): the gateway kept appending to the deleted
 * inode, so everything it wrote afterwards, signed checkpoints and seal included, vanished with
 * it, and verify of the directory saw only an unsealed writer, as after a crash. The sink now
 * checks before each batch that its open file is still the file at its path, and fails closed.
 */
import { readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import { sampleRecord } from './fixtures.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'phi-replaced-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function sinkWithRecords(n: number): Promise<{ sink: FileAuditSink; file: string }> {
  const sink = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'gw' });
  for (let i = 0; i < n; i++) await sink.write(sampleRecord(i));
  return { sink, file: join(dir, readdirSync(dir)[0]) };
}

describe('the live audit file replaced under the gateway', () => {
  it('replaced by a cut copy (new inode): the next write is refused, and every one after, until restart', async () => {
    const { sink, file } = await sinkWithRecords(4);
    const cut = readFileSync(file, 'utf8').split('\n').slice(0, 2).join('\n') + '\n';
    writeFileSync(join(dir, '.t'), cut);
    renameSync(join(dir, '.t'), file);
    await expect(sink.write(sampleRecord(10))).rejects.toThrow(/replaced or removed/);
    await expect(sink.write(sampleRecord(11))).rejects.toThrow();
    expect(await sink.ready()).toBe(false);
    // Nothing went to the deleted inode or to the copy.
    expect(readFileSync(file, 'utf8')).toBe(cut);
    await sink.close();
  });

  it('deleted: refused', async () => {
    const { sink, file } = await sinkWithRecords(2);
    unlinkSync(file);
    await expect(sink.write(sampleRecord(5))).rejects.toThrow(/replaced or removed/);
    expect(await sink.ready()).toBe(false);
    await sink.close();
  });

  it('left alone: writes go on (the check does not refuse the sink its own file)', async () => {
    const { sink, file } = await sinkWithRecords(3);
    await sink.write(sampleRecord(3));
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(4);
    await sink.close();
  });
});
