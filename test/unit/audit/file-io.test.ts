/** nodeFileIo: the plain-fd append handle under the file sink (src/audit/file-sink.ts). */
import { constants } from 'node:fs';
import { mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeFileIo } from '../../../src/audit/file-sink.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'phi-audit-io-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('nodeFileIo', () => {
  it('appends (never overwrites), creates the file 0600, truncates and syncs', async () => {
    const path = join(dir, 'a.ndjson');
    const h = await nodeFileIo.openAppend(path);
    await h.append(Buffer.from('one\n'));
    await h.datasync();
    await h.close();
    // A second handle on the same file appends after what is there.
    const h2 = await nodeFileIo.openAppend(path);
    const big = Buffer.alloc(3 * 1024 * 1024, 0x61);
    await h2.append(big);
    await h2.append(Buffer.alloc(0));
    h2.appendSync!(Buffer.from('sync\n')); // on the calling thread, also at the end
    h2.appendSync!(Buffer.alloc(0));
    await h2.datasync();
    expect((await stat(path)).size).toBe(4 + big.length + 5);
    expect((await readFile(path, 'utf8')).endsWith('aaasync\n')).toBe(true);
    await h2.truncate(4);
    await h2.datasync();
    await h2.close();
    expect(await readFile(path, 'utf8')).toBe('one\n');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('a closed handle fails with EBADF and never writes into a file that reused its fd number', async () => {
    const h = await nodeFileIo.openAppend(join(dir, 'old.ndjson'));
    await h.close();
    await h.close(); // idempotent
    // The next open typically gets the freed descriptor number.
    const other = await nodeFileIo.openAppend(join(dir, 'other.ndjson'));
    await expect(h.append(Buffer.from('stray\n'))).rejects.toMatchObject({ code: 'EBADF' });
    await expect(h.datasync()).rejects.toMatchObject({ code: 'EBADF' });
    await expect(h.truncate(0)).rejects.toMatchObject({ code: 'EBADF' });
    expect(() => h.appendSync!(Buffer.from('stray\n'))).toThrow(expect.objectContaining({ code: 'EBADF' }));
    await other.append(Buffer.from('mine\n'));
    await other.close();
    expect(await readFile(join(dir, 'other.ndjson'), 'utf8')).toBe('mine\n');
    expect(await readFile(join(dir, 'old.ndjson'), 'utf8')).toBe('');
  });

  it.runIf(process.platform === 'linux')('opens the file O_DSYNC, so an append is durable when it resolves', async () => {
    const path = join(dir, 'dsync.ndjson');
    const h = await nodeFileIo.openAppend(path);
    expect(h.durableWrites).toBe(true);
    // The kernel's own record of the descriptor's flags (octal): O_DSYNC is 010000 on Linux.
    let flags: number | undefined;
    for (const fd of await readdir('/proc/self/fd')) {
      if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) !== path) continue;
      const m = /^flags:\s+([0-7]+)$/m.exec(await readFile(`/proc/self/fdinfo/${fd}`, 'utf8'));
      flags = m ? Number.parseInt(m[1], 8) : undefined;
    }
    await h.close();
    expect(flags).toBeDefined();
    expect(flags! & constants.O_DSYNC).toBe(constants.O_DSYNC);
    expect(flags! & constants.O_APPEND).toBe(constants.O_APPEND);
  });

  it('reports open errors (no such directory) instead of creating anything', async () => {
    await expect(nodeFileIo.openAppend(join(dir, 'missing', 'a.ndjson'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
