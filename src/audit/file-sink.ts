/**
 * The file audit sink: append-only NDJSON files `audit-YYYY-MM-DD-NNN.ndjson` in one directory,
 * one ChainedRecord per line, group-committed: writes arriving while a batch is being made durable
 * are batched into the next one, and every write() resolves only once its line is on stable
 * storage (an O_DSYNC write where the platform has it, else write + fdatasync). One batch is in
 * flight at a time, so lines land in chain order. Small batches are written on the event loop
 * itself, larger ones through libuv's thread pool (INLINE_BATCH_MAX).
 *
 * Start-up recovery: a torn final line of the last file (no trailing newline: it was never
 * acknowledged) is truncated away; this process then starts a NEW writer chain (the previous
 * process's chain is complete as written). Rotation by size (`rotateBytes`) or UTC day never
 * breaks a chain: chains are per writer and span files; readers go through files in name order.
 *
 * Failures: a failed write or fdatasync rejects every write of the batch (-> 503) and the chain
 * head is not advanced. The file is truncated back to its size before the batch so no partial
 * line stays behind; if even that fails the sink is poisoned (all later writes reject, ready() is
 * false) until the process restarts: after a failed fsync the kernel's view of the file can no
 * longer be trusted, and failing closed is the only safe answer.
 *
 * One gateway process per directory: start-up recovery truncates an unterminated last line, which
 * would cut a concurrent writer's batch in flight. Replicas share the Redis sink instead.
 */
import { randomUUID } from 'node:crypto';
import { constants, fdatasync, fstatSync, close as fsClose, open as fsOpen, write as fsWrite, writeSync as fsWriteSync, ftruncate, statSync } from 'node:fs';
import { access, mkdir, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { utf8Bytes } from '../utf8.js';
import { type ChainHead, chainLine, genesisHead, sealRecord } from './chain.js';
import { CHECKPOINT_TICK, type CheckpointOptions, Checkpointer, type PendingCheckpoint } from './checkpoint.js';
import { auditFileName, listAuditFiles, utcDay } from './files.js';
import { GroupCommitQueue, type Pending } from './group-commit.js';
import type { AuditRecord, AuditSink } from './record.js';

/** The few file operations the sink needs; injectable so tests can simulate disk errors. */
export interface AppendHandle {
  /** Appends the whole buffer (loops over partial writes). */
  append(buf: Buffer): Promise<void>;
  /**
   * True when `append` resolves only once its bytes are on stable storage (the file is open with
   * O_DSYNC), so a batch needs no separate `datasync`.
   */
  readonly durableWrites?: boolean;
  /**
   * Appends the whole buffer on the calling thread, durable on return when `durableWrites`;
   * throws on failure. Optional: without it every batch goes through `append`.
   */
  appendSync?(buf: Buffer): void;
  datasync(): Promise<void>;
  truncate(len: number): Promise<void>;
  close(): Promise<void>;
  /**
   * Device, inode and link count of the open file (fstat), to tell whether it is still the file
   * at its path. Optional: without it the check is skipped (test doubles).
   */
  identity?(): { dev: number; ino: number; nlink: number };
}

export interface FileIo {
  /** Opens (creating if needed, mode 0600) for O_APPEND writes. */
  openAppend(path: string): Promise<AppendHandle>;
  /** Makes a newly created directory entry durable. */
  syncDir(dir: string): Promise<void>;
}

/**
 * O_DSYNC where the platform has it (Linux, macOS; not Windows): each write(2) returns once its
 * data is durable, as write + fdatasync would, but in one system call and one trip through libuv's
 * thread pool instead of two, so a batch commits sooner; the kernel CPU per batch is the same
 * (~70 µs here either way). One early ablation run showed a large throughput gain that later
 * alternated A/B runs did not reproduce beyond the noise of this machine (README, Performance).
 */
const O_DSYNC: number | undefined = constants.O_DSYNC;

/**
 * Node's callback fs API on a plain fd rather than a FileHandle: a write + fdatasync through a
 * FileHandle cost the main thread 15-35% more per batch (measured, Node 20), and at a steady low
 * rate every record is its own batch. A plain fd number can be reused by the next open() once
 * closed, so every call after close() fails with EBADF here instead of touching whatever file
 * got the number.
 */
export const nodeFileIo: FileIo = {
  async openAppend(path) {
    const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | (O_DSYNC ?? 0);
    const fd = await new Promise<number>((resolve, reject) => fsOpen(path, flags, 0o600, (e, fd) => (e ? reject(e) : resolve(fd))));
    let closed = false;
    const badf = (): Promise<never> => Promise.reject(Object.assign(new Error('EBADF: audit file handle is closed'), { code: 'EBADF' }));
    return {
      durableWrites: O_DSYNC !== undefined,
      append(buf) {
        if (closed) return badf();
        return new Promise<void>((resolve, reject) => {
          // One write(2) per batch; the loop only runs again on a short write.
          const from = (off: number): void =>
            fsWrite(fd, buf, off, buf.length - off, null, (e, n) => {
              if (e) reject(e);
              else if (n === 0 && off < buf.length) reject(Object.assign(new Error('EIO: audit file write made no progress'), { code: 'EIO' }));
              else if (off + n < buf.length) from(off + n);
              else resolve();
            });
          from(0);
        });
      },
      appendSync(buf) {
        if (closed) throw Object.assign(new Error('EBADF: audit file handle is closed'), { code: 'EBADF' });
        for (let off = 0; off < buf.length; ) {
          const n = fsWriteSync(fd, buf, off, buf.length - off);
          if (n === 0) throw Object.assign(new Error('EIO: audit file write made no progress'), { code: 'EIO' });
          off += n;
        }
      },
      datasync() {
        if (closed) return badf();
        return new Promise<void>((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
      },
      truncate(len) {
        if (closed) return badf();
        return new Promise<void>((resolve, reject) => ftruncate(fd, len, (e) => (e ? reject(e) : resolve())));
      },
      identity() {
        const st = fstatSync(fd);
        return { dev: st.dev, ino: st.ino, nlink: st.nlink };
      },
      close() {
        if (closed) return Promise.resolve();
        closed = true;
        return new Promise<void>((resolve, reject) => fsClose(fd, (e) => (e ? reject(e) : resolve())));
      },
    };
  },
  async syncDir(dir) {
    const fh = await open(dir, constants.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
};

export interface FileSinkOptions {
  readonly dir: string;
  readonly rotateBytes: number;
  /**
   * Extra wait before starting a flush from idle (0, the default: flush on the next turn of the
   * event loop). Batching needs no timer: writes arriving while an fdatasync is in flight wait
   * for it and go out together; a timer only adds its own length to every answer at low load.
   */
  readonly groupCommitMs: number;
  readonly writerId: string;
  readonly logger?: Logger | undefined;
  readonly now?: () => Date;
  readonly io?: FileIo;
  /** Log the chain head every N records (an external anchor) when nothing is signed. Default 10000. */
  readonly checkpointEvery?: number;
  /** Signed checkpoints (checkpoint.ts); absent: the chain is unkeyed, as before. */
  readonly checkpoint?: CheckpointOptions | undefined;
  /** Max records per batch; the rest wait for the next one. Default 10000. */
  readonly maxBatch?: number;
  /**
   * Batches of at most this many records are written durably on the event loop itself (one
   * blocking O_DSYNC write) instead of through libuv's thread pool; larger batches, which form
   * when the disk is slow or the load high, still go through the pool so requests keep being
   * processed while the disk works. 0: always the pool. Default INLINE_BATCH_MAX.
   */
  readonly inlineBatchMax?: number;
  /**
   * A command-line writer beside a running gateway: write only to a file of its own
   * (files.ts), never repair or roll over another process's file, never rotate.
   */
  readonly sidecar?: string;
}

/**
 * Why small batches skip the thread pool: a pool round trip means waking a worker thread and then
 * the event loop again, and on a shared 2-vCPU VM those wake-ups had a long tail. Measured in the
 * gateway at a steady 400 req/s (one record per batch): the wait for a record on tmpfs, where the
 * write itself costs nothing, was p50 0.07 / p99 2.2 ms through the pool and p50 0.02 / p99 0.09 ms
 * inline; on the disk, p99 3.6 ms through the pool and 2.6 ms inline. Redis with `appendfsync
 * always` does the same (its fsync runs on the event loop, once per loop iteration). The cost: the
 * loop does nothing else during that write, so a disk that hangs stalls the whole process.
 * Why 2: at saturation (Patient read, 32 connections, this VM's disk) batches averaged 11 records;
 * with a limit of 4, 7% of them were written inline and the CPU profile showed the loop blocked in
 * those writes ~4% of its busy time (throughput moved within this machine's noise), while at a
 * steady 400 req/s nearly every batch is one record.
 */
export const INLINE_BATCH_MAX = 2;

interface CurrentFile {
  day: string;
  n: number;
  size: number;
  handle: AppendHandle | undefined;
}

/** Drops a torn final line (no trailing newline) from `path`; returns the bytes dropped. */
export async function dropTornTail(path: string): Promise<number> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    if (size === 0) return 0;
    const chunk = Buffer.alloc(64 * 1024);
    let end = size;
    let keep = 0;
    let lastByteChecked = false;
    while (end > 0) {
      const start = Math.max(0, end - chunk.length);
      const len = end - start;
      await fh.read(chunk, 0, len, start);
      if (!lastByteChecked) {
        if (chunk[len - 1] === 0x0a) return 0;
        lastByteChecked = true;
      }
      const i = chunk.subarray(0, len).lastIndexOf(0x0a);
      if (i !== -1) {
        keep = start + i + 1;
        break;
      }
      end = start;
    }
    await fh.truncate(keep);
    await fh.sync();
    return size - keep;
  } finally {
    await fh.close();
  }
}

const FAILED_NOT_READY_MS = 10_000;

export class FileAuditSink implements AuditSink {
  readonly writerId: string;
  private readonly sidecar: string | undefined;
  private readonly dir: string;
  private readonly rotateBytes: number;
  private readonly logger: Logger | undefined;
  private readonly now: () => Date;
  private readonly io: FileIo;
  private readonly checkpointEvery: number;
  private readonly inlineBatchMax: number;
  private readonly queue: GroupCommitQueue;
  private head: ChainHead;
  private current: CurrentFile | undefined;
  private closed = false;
  private poisoned: Error | undefined;
  private lastCheckpoint = 0;
  private readonly checkpoints: Checkpointer | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  /** When the last batch failed (0 = the last batch succeeded); readiness reflects it for a while. */
  private failedAt = 0;

  private constructor(opts: FileSinkOptions) {
    this.dir = opts.dir;
    this.rotateBytes = opts.rotateBytes;
    this.writerId = opts.writerId;
    this.sidecar = opts.sidecar;
    this.logger = opts.logger;
    this.now = opts.now ?? (() => new Date());
    this.io = opts.io ?? nodeFileIo;
    this.checkpointEvery = opts.checkpointEvery ?? 10_000;
    this.inlineBatchMax = opts.inlineBatchMax ?? INLINE_BATCH_MAX;
    this.queue = new GroupCommitQueue((batch) => this.commit(batch), { maxBatch: opts.maxBatch ?? 10_000, delayMs: opts.groupCommitMs });
    this.head = genesisHead(opts.writerId);
    if (opts.checkpoint) {
      const cps = new Checkpointer(opts.checkpoint, this.now, this.logger);
      this.checkpoints = cps;
      // Records written before a quiet spell still get signed within everySeconds.
      this.checkpointTimer = setInterval(() => {
        if (!this.closed && !this.poisoned && cps.owes(this.head)) this.queue.enqueue(CHECKPOINT_TICK).catch(() => {});
      }, cps.everySeconds * 1000).unref();
    }
  }

  /** Creates the directory if needed, repairs a torn tail, and returns a sink for a new writer. */
  static async open(opts: FileSinkOptions): Promise<FileAuditSink> {
    if (!(opts.rotateBytes > 0)) throw new Error('audit rotateBytes must be positive');
    const sink = new FileAuditSink(opts);
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    if (opts.sidecar) return sink;
    const files = (await listAuditFiles(opts.dir)).filter((f) => f.sidecar === undefined);
    const last = files[files.length - 1];
    if (last) {
      const path = join(opts.dir, last.name);
      const dropped = await dropTornTail(path);
      if (dropped > 0) sink.logger?.warn({ audit: { file: last.name, droppedBytes: dropped } }, 'audit file ended with a torn line; truncated it (never acknowledged)');
      const { size } = await stat(path);
      sink.current = { day: last.day, n: last.n, size, handle: undefined };
    }
    return sink;
  }

  /** The chain head as committed (for tests and checkpoints). */
  get chainHead(): ChainHead {
    return this.head;
  }

  write(record: AuditRecord): Promise<void> {
    if (this.closed) return Promise.reject(new Error('audit sink is closed'));
    if (this.poisoned) return Promise.reject(new Error('audit sink failed earlier; restart required', { cause: this.poisoned }));
    return this.queue.enqueue(record);
  }

  async ready(): Promise<boolean> {
    if (this.closed || this.poisoned) return false;
    // A recent failed batch (disk full, EIO) means not ready; after a quiet period /readyz lets
    // traffic back in so a healed disk is retried without a restart.
    if (this.failedAt > 0 && Date.now() - this.failedAt < FAILED_NOT_READY_MS) return false;
    try {
      await access(this.dir, constants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.checkpointTimer);
    await this.queue.idle();
    if (!this.poisoned && this.head.seq > 0) {
      const head = this.head;
      const time = this.now().toISOString();
      const seal = this.checkpoints ? this.checkpoints.seal(head, randomUUID(), time) : sealRecord(head, randomUUID(), time);
      await this.queue.enqueue(seal).then(
        () => this.checkpoints?.sealed(seal, head),
        (e: unknown) => this.logger?.error({ err: errInfo(e) }, 'audit seal could not be written'),
      );
      await this.queue.idle();
    }
    if (!this.checkpoints) this.logCheckpoint('audit chain closed');
    const h = this.current?.handle;
    if (this.current) this.current.handle = undefined;
    await h?.close();
  }

  private async commit(batch: Pending[]): Promise<void> {
    if (this.poisoned) {
      for (const p of batch) p.reject(new Error('audit sink failed earlier; restart required', { cause: this.poisoned }));
      return;
    }
    // Chain one by one so a record that cannot be serialized fails alone without consuming a seq.
    let next = this.head;
    const ok: Pending[] = [];
    const lines: string[] = [];
    const ticks: Pending[] = [];
    let sealing = false;
    for (const p of batch) {
      if (p.record === CHECKPOINT_TICK) {
        ticks.push(p);
        continue;
      }
      sealing ||= p.record.kind === 'writer-seal';
      try {
        const r = chainLine(next, p.record);
        lines.push(r.line, '\n');
        next = r.next;
        ok.push(p);
      } catch (e) {
        p.reject(new Error('audit record is not serializable', { cause: e }));
      }
    }
    // A due checkpoint joins this same durable write (a seal signs the head itself: nothing after it).
    let cp: PendingCheckpoint | undefined;
    if (this.checkpoints && !sealing) {
      cp = this.checkpoints.after(next, ticks.length > 0);
      if (cp) {
        lines.push(cp.line, '\n');
        next = cp.next;
      }
    }
    if (ok.length === 0 && !cp) {
      for (const t of ticks) t.resolve();
      return;
    }
    ok.push(...ticks);
    // Latin-1 when the batch is ASCII (checked): Buffer.from(text, 'utf8') is slow for long strings on Node 20.
    const buf = utf8Bytes(lines.join(''));
    let file: CurrentFile;
    try {
      file = await this.fileFor(buf.length);
    } catch (e) {
      this.failedAt = Date.now();
      for (const p of ok) p.reject(asError(e));
      return;
    }
    const replaced = this.replacedFile(file);
    if (replaced) {
      // Someone moved, deleted or swapped the live file: records written now would go to a file no
      // reader sees, and the chain in the directory would end quietly. Fail closed until restart.
      this.poisoned = replaced;
      this.logger?.fatal({ err: errInfo(replaced), audit: { writer: this.writerId } }, 'audit file replaced or removed under the gateway; sink disabled until restart');
      for (const p of ok) p.reject(replaced);
      return;
    }
    const before = file.size;
    try {
      const h = file.handle!;
      if (h.appendSync && h.durableWrites && ok.length <= this.inlineBatchMax) h.appendSync(buf);
      else {
        await h.append(buf);
        if (!h.durableWrites) await h.datasync();
      }
    } catch (e) {
      const err = asError(e);
      this.logger?.error({ err: errInfo(err), audit: { writer: this.writerId } }, 'audit write failed; rejecting the batch');
      await this.rollbackFile(file, before, err);
      this.failedAt = Date.now();
      for (const p of ok) p.reject(err);
      return;
    }
    file.size += buf.length;
    this.head = next;
    this.failedAt = 0;
    if (cp) this.checkpoints!.committed(cp);
    for (const p of ok) p.resolve();
    if (!this.checkpoints && this.head.seq - this.lastCheckpoint >= this.checkpointEvery) this.logCheckpoint('audit chain head');
  }

  /** An error when the open file is no longer the one at its path (unlinked, renamed or replaced). */
  private replacedFile(file: CurrentFile): Error | undefined {
    const h = file.handle;
    if (!h?.identity) return undefined;
    try {
      const open = h.identity();
      const onDisk = statSync(join(this.dir, auditFileName(file.day, file.n, this.sidecar)));
      if (open.nlink > 0 && open.dev === onDisk.dev && open.ino === onDisk.ino) return undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return asError(e);
    }
    return Object.assign(new Error('audit file was replaced or removed while open'), { code: 'EAUDITREPLACED' });
  }

  private async rollbackFile(file: CurrentFile, size: number, cause: Error): Promise<void> {
    try {
      await file.handle!.truncate(size);
      await file.handle!.datasync();
    } catch (e) {
      this.poisoned = cause;
      this.logger?.fatal({ err: errInfo(e), audit: { writer: this.writerId } }, 'audit file could not be rolled back; sink disabled until restart');
    }
  }

  /** The file the next batch goes to, rotating by day or size and opening it on first use. */
  private async fileFor(bytes: number): Promise<CurrentFile> {
    const today = utcDay(this.now());
    const cur = this.current;
    let target: CurrentFile;
    if (this.sidecar) {
      target = cur ?? { day: today, n: 0, size: 0, handle: undefined };
    } else if (!cur) {
      target = { day: today, n: 1, size: 0, handle: undefined };
    } else if (today > cur.day) {
      // A clock going backwards never reopens an earlier day: file order is chain order.
      target = { day: today, n: 1, size: 0, handle: undefined };
    } else if (cur.size > 0 && cur.size + bytes > this.rotateBytes) {
      target = { day: cur.day, n: cur.n + 1, size: 0, handle: undefined };
    } else {
      target = cur;
    }
    if (target !== cur && cur?.handle) {
      const h = cur.handle;
      cur.handle = undefined;
      await h.close();
    }
    if (!target.handle) {
      const name = auditFileName(target.day, target.n, this.sidecar);
      const path = join(this.dir, name);
      target.handle = await this.io.openAppend(path);
      if (target !== cur) {
        // A file for this (day, n) may already exist (a restart on the same day after rotation).
        target.size = (await stat(path)).size;
        await this.io.syncDir(this.dir);
      }
    }
    this.current = target;
    return target;
  }

  private logCheckpoint(msg: string): void {
    this.lastCheckpoint = this.head.seq;
    if (this.head.seq > 0) this.logger?.info({ audit: { writer: this.head.writer, seq: this.head.seq, hash: this.head.hash } }, msg);
  }
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** Error fields safe to log: code and message of a system error, never a record. */
export function errInfo(e: unknown): { code?: string; message: string } {
  const err = asError(e);
  const code = (err as NodeJS.ErrnoException).code;
  return code ? { code, message: err.message } : { message: err.message };
}
