/**
 * Group commit shared by the audit sinks: writes queue up, one batch is committed at a time, and
 * whatever arrives while a commit is in flight goes into the next one. Each write's promise is
 * settled by the sink's commit (after the durable write that covers it), never by the queue.
 */
import type { AuditRecord } from './record.js';

export interface Pending {
  readonly record: AuditRecord;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

export interface GroupCommitOptions {
  /** Records per batch at most. */
  readonly maxBatch: number;
  /** Wait before a batch starts (0: the next turn of the event loop). */
  readonly delayMs?: number;
}

export class GroupCommitQueue {
  private pending: Pending[] = [];
  private flushing = false;
  private scheduled = false;
  private idleWaiters: Array<() => void> = [];

  /** `commit` must settle every promise of its batch. */
  constructor(
    private readonly commit: (batch: Pending[]) => Promise<void>,
    private readonly opts: GroupCommitOptions,
  ) {}

  /** Resolves once the commit covering `record` made it durable; rejects if it could not. */
  enqueue(record: AuditRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ record, resolve, reject });
      this.schedule();
    });
  }

  /** Resolves when nothing is queued or being committed. */
  idle(): Promise<void> {
    if (!this.flushing && !this.scheduled && this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.flushing || this.scheduled) return;
    this.scheduled = true;
    const run = (): void => {
      this.scheduled = false;
      void this.flush();
    };
    const delay = this.opts.delayMs ?? 0;
    if (delay > 0) setTimeout(run, delay);
    else setImmediate(run);
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    const batch = this.pending.splice(0, this.opts.maxBatch);
    try {
      await this.commit(batch);
    } catch (e) {
      // commit() settles every promise itself; this is a last guard against a bug leaving them hanging.
      for (const p of batch) p.reject(e instanceof Error ? e : new Error(String(e)));
    } finally {
      this.flushing = false;
      if (this.pending.length > 0) this.schedule();
      else {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    }
  }
}
