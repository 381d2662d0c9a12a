/**
 * A file sink's trail read from a persisted cursor. The cursor is per file: how far each audit
 * file (`audit-YYYY-MM-DD-NNN.ndjson`, and the command-line writers' own files beside them,
 * files.ts) has been delivered, as a byte offset after a whole line, with the id of the last
 * delivered record and where its line starts. Files are read in chain order; a file the cursor
 * has not seen is read from its start (a new segment after rotation, a command-line writer's file
 * that appeared later, or everything on the first run).
 *
 * Only whole lines are read (a line is complete with its newline): the gateway's write in flight
 * is left for the next round. A line can be visible before its fsync completes; if that write then
 * fails the sink truncates it away and the next record takes its place. So before reading on in a
 * file that changed size, the line before the offset is checked to still be the record delivered
 * last; if it is not, the cursor goes back to that line's start, and whatever stands there now is
 * delivered. (The truncated record may thus have reached a receiver although the trail lost it
 * and its request was answered 503.)
 *
 * The cursor file `<stateDir>/<target>.cursor.json` is replaced atomically (cursor.ts) after each
 * delivered batch. A file that can no longer grow (a gateway file followed by a later one, fully
 * read; a command-line writer's file fully read and untouched for SIDECAR_QUIET_MS) is marked done
 * and only looked at again by the periodic sweep (SWEEP_MS).
 */
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type AuditFileName, listAuditFiles } from '../audit/files.js';
import type { ChainedRecord } from '../audit/record.js';
import { type CursorLock, lockCursor, type ReadBatch, type TrailSource, writeFileAtomic } from './cursor.js';

/** How long a command-line writer's file must be quiet, fully read, before it is taken as finished. */
export const SIDECAR_QUIET_MS = 10 * 60_000;
/** How often files marked done are looked at again anyway. */
export const SWEEP_MS = 60_000;
const CHUNK = 256 * 1024;

/** The persisted position in one audit file. */
export interface FilePosition {
  /** Bytes delivered: the offset just after the last delivered line. */
  readonly offset: number;
  /** The last delivered record's id and its line's start (absent at offset 0). */
  readonly id?: string | undefined;
  readonly start?: number | undefined;
  /** Fully read and can no longer grow. */
  readonly done?: boolean | undefined;
}

export interface FileCursorState {
  readonly version: 1;
  readonly files: Readonly<Record<string, FilePosition>>;
}

export interface FileSourceOptions {
  /** The audit directory. */
  readonly dir: string;
  /** Where `<target>.cursor.json` and `<target>.lock` live. */
  readonly stateDir: string;
  readonly target: string;
  readonly logger?: Logger | undefined;
  readonly now?: () => number;
}

export function cursorPath(stateDir: string, target: string): string {
  return join(stateDir, `${target}.cursor.json`);
}

/** The cursor as persisted (an absent file: nothing delivered yet). */
export async function loadFileCursor(stateDir: string, target: string): Promise<FileCursorState> {
  let text: string;
  try {
    text = await readFile(cursorPath(stateDir, target), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, files: {} };
    throw e;
  }
  const v = JSON.parse(text) as FileCursorState;
  if (v?.version !== 1 || typeof v.files !== 'object' || v.files === null) throw new Error(`unreadable SIEM cursor file for target '${target}'`);
  return v;
}

interface Line {
  readonly file: string;
  readonly start: number;
  readonly end: number;
  readonly record: ChainedRecord | undefined;
}

/** Lag bookkeeping per file (memory only): complete lines counted between the offset and `scanned`. */
interface Counted {
  scanned: number;
  pending: number;
}

export class FileTrailSource implements TrailSource {
  readonly description: string;
  private readonly positions = new Map<string, FilePosition>();
  private readonly counted = new Map<string, Counted>();
  /** Size and mtime of each file when last verified (a rewrite of the same length changes the mtime). */
  private readonly verified = new Map<string, string>();
  private lastSweep = 0;
  private readonly now: () => number;
  private closed = false;

  private constructor(
    private readonly opts: FileSourceOptions,
    private readonly lock: CursorLock,
    state: FileCursorState,
  ) {
    this.description = `file:${opts.dir}`;
    this.now = opts.now ?? Date.now;
    for (const [name, p] of Object.entries(state.files)) this.positions.set(name, p);
  }

  /** Takes the target's lock (CursorLockedError when another process has it) and loads its cursor. */
  static async open(opts: FileSourceOptions): Promise<FileTrailSource> {
    const lock = await lockCursor(opts.stateDir, opts.target);
    try {
      return new FileTrailSource(opts, lock, await loadFileCursor(opts.stateDir, opts.target));
    } catch (e) {
      await lock.release();
      throw e;
    }
  }

  async read(max: number): Promise<ReadBatch> {
    const files = await this.files();
    const sweep = this.now() - this.lastSweep >= SWEEP_MS;
    if (sweep) this.lastSweep = this.now();
    const lines: Line[] = [];
    const lastMain = files.findLast((f) => f.sidecar === undefined)?.name;
    for (const f of files) {
      if (lines.length >= max) break;
      let pos = this.positions.get(f.name) ?? { offset: 0 };
      if (pos.done && !sweep) continue;
      const path = join(this.opts.dir, f.name);
      let size: number;
      let sig: string;
      try {
        const st = await stat(path);
        size = st.size;
        sig = `${st.size}:${st.mtimeMs}`;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      // Before reading on (or when the file shrank): the line before the offset must still be ours.
      if (size > pos.offset || sig !== this.verified.get(f.name)) {
        pos = await this.verify(f.name, path, pos, size);
        this.verified.set(f.name, sig);
      }
      if (size <= pos.offset) continue;
      if (pos.done) this.positions.set(f.name, { ...pos, done: undefined });
      for (const l of await readLines(path, pos.offset, max - lines.length)) lines.push({ file: f.name, ...l });
    }
    const records: ChainedRecord[] = [];
    let skipped = 0;
    for (const l of lines) {
      if (l.record) records.push(l.record);
      else {
        skipped++;
        // The position only: the line may hold identifiers.
        this.opts.logger?.warn({ siem: { target: this.opts.target, position: `${l.file}@${l.start}` } }, 'SIEM forwarder: unparsable audit line skipped (run audit verify)');
      }
    }
    return { records, skipped, commit: () => this.commit(lines, files, lastMain) };
  }

  async lag(): Promise<number> {
    let total = 0;
    for (const f of await this.files()) {
      const pos = this.positions.get(f.name) ?? { offset: 0 };
      if (pos.done) continue;
      let c = this.counted.get(f.name);
      if (!c || c.scanned < pos.offset) {
        c = { scanned: pos.offset, pending: 0 };
        this.counted.set(f.name, c);
      }
      const counted = await countLines(join(this.opts.dir, f.name), c.scanned);
      c.scanned = counted.end;
      c.pending += counted.lines;
      total += c.pending;
    }
    return total;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.lock.release();
  }

  private async files(): Promise<AuditFileName[]> {
    try {
      return await listAuditFiles(this.opts.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  /**
   * The line before `pos.offset` must still be the record delivered last; a file shorter than the
   * offset, or another record there, means the sink truncated a failed write: back to that line's
   * start (or the last line boundary the file still has).
   */
  private async verify(name: string, path: string, pos: FilePosition, size: number): Promise<FilePosition> {
    if (pos.offset === 0) return pos;
    let ok = false;
    if (size >= pos.offset && pos.id !== undefined && pos.start !== undefined) {
      const fh = await open(path, 'r');
      try {
        const buf = Buffer.alloc(pos.offset - pos.start);
        await fh.read(buf, 0, buf.length, pos.start);
        if (buf[buf.length - 1] === 0x0a) {
          const rec = parseRecord(buf.toString('utf8', 0, buf.length - 1));
          ok = rec?.id === pos.id;
        }
      } finally {
        await fh.close();
      }
    } else if (size >= pos.offset) {
      ok = true;
    }
    if (ok) return pos;
    const back = await lineBoundaryAtOrBefore(path, Math.min(pos.start ?? pos.offset, size));
    this.opts.logger?.warn({ siem: { target: this.opts.target, file: name, from: pos.offset, to: back } }, 'SIEM forwarder: audit file shrank under the cursor (a failed write was rolled back); reading again from the last whole line');
    const next = { offset: back };
    this.positions.set(name, next);
    this.counted.delete(name);
    return next;
  }

  private async commit(lines: readonly Line[], files: readonly AuditFileName[], lastMain: string | undefined): Promise<void> {
    if (this.closed) throw new Error('SIEM cursor is closed');
    const consumed = new Map<string, number>();
    for (const l of lines) {
      this.positions.set(l.file, { offset: l.end, ...(l.record ? { id: l.record.id, start: l.start } : {}) });
      consumed.set(l.file, (consumed.get(l.file) ?? 0) + 1);
    }
    // Files that can no longer grow, fully read: done.
    const present = new Set(files.map((f) => f.name));
    for (const f of files) {
      const pos = this.positions.get(f.name);
      if (!pos || pos.done) continue;
      if (f.sidecar === undefined && f.name === lastMain) continue;
      const st = await stat(join(this.opts.dir, f.name)).catch(() => undefined);
      if (!st || st.size !== pos.offset) continue;
      if (f.sidecar === undefined || this.now() - st.mtimeMs >= SIDECAR_QUIET_MS) this.positions.set(f.name, { ...pos, done: true });
    }
    const out: Record<string, FilePosition> = {};
    for (const [name, pos] of [...this.positions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      // Files gone from the directory (archived) are forgotten.
      if (present.has(name)) out[name] = pos;
      else this.positions.delete(name);
    }
    const state: FileCursorState = { version: 1, files: out };
    await writeFileAtomic(cursorPath(this.opts.stateDir, this.opts.target), `${JSON.stringify(state)}\n`);
    for (const [file, n] of consumed) {
      const c = this.counted.get(file);
      if (c) c.pending = Math.max(0, c.pending - n);
    }
  }
}

function parseRecord(text: string): ChainedRecord | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) && typeof (v as { id?: unknown }).id === 'string' ? (v as ChainedRecord) : undefined;
  } catch {
    return undefined;
  }
}

/** Up to `max` whole lines of `path` from byte `from` (a line boundary), each with its byte range. */
async function readLines(path: string, from: number, max: number): Promise<Array<Omit<Line, 'file'>>> {
  const out: Array<Omit<Line, 'file'>> = [];
  const fh = await open(path, 'r');
  try {
    let pending = Buffer.alloc(0);
    let pendingStart = from;
    let pos = from;
    const chunk = Buffer.alloc(CHUNK);
    while (out.length < max) {
      const { bytesRead } = await fh.read(chunk, 0, CHUNK, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      const buf = pending.length === 0 ? chunk.subarray(0, bytesRead) : Buffer.concat([pending, chunk.subarray(0, bytesRead)]);
      let s = 0;
      for (let i = buf.indexOf(0x0a); i !== -1 && out.length < max; i = buf.indexOf(0x0a, s)) {
        const text = buf.toString('utf8', s, i);
        out.push({ start: pendingStart + s, end: pendingStart + i + 1, record: text.length === 0 ? undefined : parseRecord(text) });
        s = i + 1;
      }
      if (out.length >= max) break;
      // The rest (no newline yet) is kept, copied: `chunk` is reused.
      pending = Buffer.from(buf.subarray(s));
      pendingStart += s;
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** Newlines in `path` from byte `from`, and the offset just after the last one (from, when none). */
async function countLines(path: string, from: number): Promise<{ lines: number; end: number }> {
  let lines = 0;
  let end = from;
  let pos = from;
  try {
    for await (const chunk of createReadStream(path, { start: from, highWaterMark: CHUNK })) {
      const buf = chunk as Buffer;
      for (let i = buf.indexOf(0x0a); i !== -1; i = buf.indexOf(0x0a, i + 1)) {
        lines++;
        end = pos + i + 1;
      }
      pos += buf.length;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return { lines, end };
}

/** The largest line boundary (0, or just after a newline) at or before `limit`. */
async function lineBoundaryAtOrBefore(path: string, limit: number): Promise<number> {
  if (limit <= 0) return 0;
  const fh = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(64 * 1024);
    let end = limit;
    // The byte before `limit` being a newline makes `limit` itself a boundary.
    while (end > 0) {
      const start = Math.max(0, end - chunk.length);
      const { bytesRead } = await fh.read(chunk, 0, end - start, start);
      const i = chunk.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (i !== -1) return start + i + 1;
      end = start;
    }
    return 0;
  } finally {
    await fh.close();
  }
}
