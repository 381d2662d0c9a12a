import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ConfigWatcher, watchConfigFiles } from '../../../src/config/watch.js';

let dir: string;
let watcher: ConfigWatcher | undefined;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'phi-watch-'));
});
afterEach(() => {
  watcher?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await sleep(20);
}

describe('watchConfigFiles', () => {
  it('fires once per burst of writes, naming the changed file', async () => {
    const a = join(dir, 'policy.yaml');
    writeFileSync(a, 'v: 1\n');
    const calls: string[][] = [];
    watcher = watchConfigFiles([a], (changed) => calls.push([...changed]), { debounceMs: 80 });
    for (let i = 2; i <= 5; i++) {
      writeFileSync(a, `v: ${i}\n`);
      await sleep(10);
    }
    await until(() => calls.length > 0);
    await sleep(200);
    expect(calls).toEqual([[a]]);
  });

  it('follows a file replaced by rename (editor save) and ignores other files and unchanged rewrites', async () => {
    const a = join(dir, 'gateway.yaml');
    writeFileSync(a, 'x: 1\n');
    const calls: string[][] = [];
    watcher = watchConfigFiles([a], (changed) => calls.push([...changed]), { debounceMs: 50 });
    writeFileSync(join(dir, 'unrelated.txt'), 'hello');
    writeFileSync(a, 'x: 1\n'); // same bytes
    await sleep(250);
    expect(calls).toEqual([]);
    const tmp = join(dir, '.gateway.yaml.swp');
    writeFileSync(tmp, 'x: 2\n');
    renameSync(tmp, a);
    await until(() => calls.length > 0);
    expect(calls).toEqual([[a]]);
    // Still watching after the inode changed.
    writeFileSync(a, 'x: 3\n');
    await until(() => calls.length > 1);
    expect(calls).toHaveLength(2);
  });

  it('reports a deleted file as a change, and stops after close()', async () => {
    const a = join(dir, 'policy.yaml');
    writeFileSync(a, 'v: 1\n');
    const calls: string[][] = [];
    watcher = watchConfigFiles([a], (changed) => calls.push([...changed]), { debounceMs: 50 });
    unlinkSync(a);
    await until(() => calls.length > 0);
    expect(calls).toEqual([[a]]);
    watcher.close();
    writeFileSync(a, 'v: 2\n');
    await sleep(200);
    expect(calls).toHaveLength(1);
  });

  it('setFiles moves the watch to a new path (policy file renamed in gateway.yaml)', async () => {
    const a = join(dir, 'a.yaml');
    const sub = mkdtempSync(join(dir, 'sub-'));
    const b = join(sub, 'b.yaml');
    writeFileSync(a, '1');
    writeFileSync(b, '1');
    const calls: string[][] = [];
    watcher = watchConfigFiles([a], (changed) => calls.push([...changed]), { debounceMs: 50 });
    watcher.setFiles([b]);
    writeFileSync(a, '2');
    await sleep(200);
    expect(calls).toEqual([]);
    writeFileSync(b, '2');
    await until(() => calls.length > 0);
    expect(calls).toEqual([[b]]);
  });
});
