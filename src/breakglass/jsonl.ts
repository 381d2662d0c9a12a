/**
 * An append-only JSON-lines file shared by the gateway and the CLI (the embedded store). Every
 * append is fsync'ed; readers catch up from the last offset they read, so a review written by the
 * CLI is seen by a running gateway. A torn final line (a crash mid-append) is ignored until it is
 * completed, and skipped with a warning once a later line follows it.
 */
import { constants } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

export class JsonLinesLog {
  private offset = 0;
  private pending = '';
  private constructor(
    readonly path: string,
    private readonly logger: Logger | undefined,
  ) {}

  /** Nothing is created until the first append: a gateway that never breaks glass leaves no files. */
  static async open(path: string, logger?: Logger): Promise<JsonLinesLog> {
    return new JsonLinesLog(path, logger);
  }

  /** Lines appended (by anyone) since the last call, parsed. */
  async readNew(): Promise<unknown[]> {
    let size: number;
    try {
      ({ size } = await stat(this.path));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && this.offset === 0) return [];
      throw e;
    }
    if (size < this.offset) throw new Error(`${this.path} shrank: the break-glass log was truncated`);
    if (size === this.offset) return [];
    const fh = await open(this.path, 'r');
    let text: string;
    try {
      const buf = Buffer.alloc(size - this.offset);
      let read = 0;
      while (read < buf.length) {
        const { bytesRead } = await fh.read(buf, read, buf.length - read, this.offset + read);
        if (bytesRead === 0) break;
        read += bytesRead;
      }
      this.offset += read;
      text = this.pending + buf.subarray(0, read).toString('utf8');
    } finally {
      await fh.close();
    }
    const lines = text.split('\n');
    this.pending = lines.pop() ?? '';
    const out: unknown[] = [];
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // A torn line from a crash, followed by later appends.
        this.logger?.warn({ file: this.path }, 'break-glass log: skipping an unparsable line');
      }
    }
    return out;
  }

  /** Appends one line and makes it durable. */
  async append(value: unknown): Promise<void> {
    const line = Buffer.from(`${JSON.stringify(value)}\n`, 'utf8');
    // Reasons and patient ids: readable by the gateway's user only.
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    const fh = await open(this.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    try {
      let off = 0;
      while (off < line.length) {
        const { bytesWritten } = await fh.write(line, off, line.length - off);
        off += bytesWritten;
      }
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }
}

/**
 * Runs the operations handed to it one after the other, a failure not stopping the next: a
 * store's read-check-append must not interleave within one process.
 */
export function serialQueue(): <T>(fn: () => Promise<T>) => Promise<T> {
  let queue: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };
}
