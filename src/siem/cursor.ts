/**
 * What the forwarder reads the trail through: a source that hands out the records after a
 * target's cursor and moves the cursor only once they were delivered (cursor-file.ts for a file
 * sink, cursor-redis.ts for a Redis stream with a consumer group). Also the cursor files' atomic
 * write and the lock that keeps two processes off one target's cursor.
 */
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { besideAuditDir } from '../audit/files.js';
import type { ChainedRecord } from '../audit/record.js';

/** Records read after the cursor, not yet delivered. */
export interface ReadBatch {
  /** In trail order. Unparsable lines are not here: they are counted in `skipped` and logged by position. */
  readonly records: readonly ChainedRecord[];
  readonly skipped: number;
  /** Moves the cursor past every record of this batch (durably: a file is written and fsynced, a Redis entry acknowledged). */
  commit(): Promise<void>;
}

export interface TrailSource {
  /** Where it reads from, for logs (no password). */
  readonly description: string;
  /**
   * Up to `max` records after the cursor. Until the previous batch is committed, the same
   * records come again (a batch that failed to deliver is retried, never skipped).
   */
  read(max: number): Promise<ReadBatch>;
  /** Records committed to the trail and not yet past this cursor (an estimate while the trail grows). */
  lag(): Promise<number>;
  close(): Promise<void>;
}

/**
 * Where cursors live when `siem.stateDir` is not set: beside the audit directory, `data/audit` ->
 * `data/siem`, any other `X` -> `X.siem`.
 */
export function defaultStateDir(auditDir: string): string {
  return besideAuditDir(auditDir, 'siem');
}

/**
 * Writes `text` to `path` so that a reader (or a crash) sees the old content or the new, never a
 * mix: a temporary file beside it, fsynced, renamed over it, and the directory fsynced.
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Another live process holds a target's cursor (`audit ship` beside `serve`, or two of either). */
export class CursorLockedError extends Error {
  readonly code = 'ECURSORLOCKED';
  constructor(
    readonly target: string,
    readonly holder: string,
  ) {
    super(`the cursor of SIEM target '${target}' is held by another process (${holder})`);
    this.name = 'CursorLockedError';
  }
}

export interface CursorLock {
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, under another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes `<dir>/<target>.lock` (created exclusively, holding `pid host`). A lock left by a process
 * that is gone (same host, pid not running) is taken over; one held by a live process, or by
 * another host (a shared state directory: its pids mean nothing here), refuses.
 */
export async function lockCursor(dir: string, target: string): Promise<CursorLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${target}.lock`);
  const me = `${process.pid} ${hostname()}`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await fh.writeFile(`${me}\n`, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      return {
        async release() {
          // Only our own lock: never one another process took over meanwhile.
          const now = await readFile(path, 'utf8').catch(() => '');
          if (now.trim() === me) await unlink(path).catch(() => {});
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const held = (await readFile(path, 'utf8').catch(() => '')).trim();
    const [pidText, host] = held.split(' ');
    const pid = Number(pidText);
    if (held !== '' && (host !== hostname() || !Number.isInteger(pid) || pid <= 0 || (pid !== process.pid && alive(pid)))) {
      throw new CursorLockedError(target, held);
    }
    if (held !== '' && pid === process.pid) throw new CursorLockedError(target, held);
    // Empty: a process between its create and its write, unless it is old (a crash right there).
    if (held === '' && Date.now() - (await stat(path).then((s) => s.mtimeMs, () => 0)) < 10_000) throw new CursorLockedError(target, 'starting');
    // Stale (its process is gone) or empty and old: take it over.
    await unlink(path).catch(() => {});
  }
  throw new CursorLockedError(target, 'unknown');
}
