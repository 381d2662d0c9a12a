/**
 * Filtered, streaming audit export (CLI `audit export`, and `GET /audit/export` in the proxy).
 * Constant memory: records are read, filtered, formatted and written one at a time, output is
 * buffered in ~64 KB chunks and the writer's backpressure is honoured.
 *
 * Formats: `ndjson` (stored records as they are, chain fields included), `csv` (fixed columns,
 * see csv.ts), `fhir` (NDJSON of BALP AuditEvents, see fhir.ts; with `bundle: true` a single
 * `collection` Bundle, still streamed). The chain's own `writer-seal` records are exported only in
 * ndjson without filters, i.e. when the export is a full copy that can be verified offline.
 * Unparsable stored lines are skipped and counted (`audit verify` is what judges them).
 */
import type { Writable } from 'node:stream';
import { isChainRecord } from './chain.js';
import { csvHeader, csvRow } from './csv.js';
import { toAuditEvents } from './fhir.js';
import type { ReadItem } from './read.js';
import type { ChainedRecord } from './record.js';

export type ExportFormat = 'ndjson' | 'csv' | 'fhir';
export const EXPORT_FORMATS: readonly ExportFormat[] = ['ndjson', 'csv', 'fhir'];

export interface ExportFilter {
  /** Inclusive lower bound on `time` (ISO 8601). */
  readonly from?: string | undefined;
  /** Exclusive upper bound on `time`. */
  readonly to?: string | undefined;
  /** actor.sub */
  readonly actor?: string | undefined;
  /** A patient id in disclosed.patients. */
  readonly patient?: string | undefined;
  readonly purpose?: string | undefined;
  /** true: only records in a break-glass session (or break-glass events); false: only others. */
  readonly breakGlass?: boolean | undefined;
  readonly decision?: 'allow' | 'deny' | 'error' | undefined;
}

export interface ExportOptions {
  readonly format: ExportFormat;
  readonly filter?: ExportFilter;
  /** fhir only: one Bundle (type collection) instead of NDJSON. */
  readonly bundle?: boolean;
  /** Called every `progressEvery` scanned records and once at the end. */
  readonly onProgress?: (p: ExportProgress) => void;
  readonly progressEvery?: number;
}

export interface ExportProgress {
  readonly scanned: number;
  readonly exported: number;
  readonly skippedCorrupt: number;
  readonly done: boolean;
}

/** Parses a filter time bound; throws on an unparsable value (fail loudly, never export everything). */
export function parseTimeBound(s: string, name: string): number {
  const t = Date.parse(s);
  if (!Number.isFinite(t)) throw new Error(`${name}: not a date/time: ${JSON.stringify(s.slice(0, 40))}`);
  return t;
}

/** A compiled filter predicate. */
export function compileFilter(f: ExportFilter = {}): (r: ChainedRecord) => boolean {
  const from = f.from !== undefined ? parseTimeBound(f.from, 'from') : undefined;
  const to = f.to !== undefined ? parseTimeBound(f.to, 'to') : undefined;
  const hasFilter = Object.values(f).some((v) => v !== undefined);
  return (r) => {
    if (isChainRecord(r)) return !hasFilter;
    if (from !== undefined || to !== undefined) {
      const t = Date.parse(r.time);
      if (!Number.isFinite(t)) return false;
      if (from !== undefined && t < from) return false;
      if (to !== undefined && t >= to) return false;
    }
    if (f.actor !== undefined && r.actor?.sub !== f.actor) return false;
    if (f.patient !== undefined && !(r.disclosed?.patients ?? []).includes(f.patient)) return false;
    if (f.purpose !== undefined && r.purpose !== f.purpose) return false;
    if (f.decision !== undefined && r.decision !== f.decision) return false;
    if (f.breakGlass !== undefined) {
      const bg = r.breakGlass !== undefined || r.kind === 'break-glass-start' || r.kind === 'break-glass-end';
      if (bg !== f.breakGlass) return false;
    }
    return true;
  };
}

/** Buffered writes with backpressure. */
class ChunkWriter {
  private buf = '';
  constructor(
    private readonly out: Writable,
    private readonly limit = 64 * 1024,
  ) {}
  async push(s: string): Promise<void> {
    this.buf += s;
    if (this.buf.length >= this.limit) await this.flush();
  }
  async flush(): Promise<void> {
    if (!this.buf) return;
    const chunk = this.buf;
    this.buf = '';
    if (!this.out.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          this.out.off('error', onError);
          resolve();
        };
        const onError = (e: Error): void => {
          this.out.off('drain', onDrain);
          reject(e);
        };
        this.out.once('drain', onDrain);
        this.out.once('error', onError);
      });
    }
  }
}

/** Streams the matching records of `source` to `out` (which is not ended). */
export async function exportRecords(
  source: AsyncIterable<ReadItem | ChainedRecord> | Iterable<ReadItem | ChainedRecord>,
  out: Writable,
  opts: ExportOptions,
): Promise<ExportProgress> {
  const match = compileFilter(opts.filter);
  const w = new ChunkWriter(out);
  const every = opts.progressEvery ?? 100_000;
  let scanned = 0;
  let exported = 0;
  let skippedCorrupt = 0;
  let firstInBundle = true;

  if (opts.format === 'csv') await w.push(csvHeader());
  if (opts.format === 'fhir' && opts.bundle) await w.push('{"resourceType":"Bundle","type":"collection","entry":[');

  for await (const item of source as AsyncIterable<ReadItem | ChainedRecord>) {
    scanned++;
    if (opts.onProgress && scanned % every === 0) opts.onProgress({ scanned, exported, skippedCorrupt, done: false });
    let r: ChainedRecord;
    let raw: string | undefined;
    if ('position' in item && ('record' in item || 'corrupt' in item)) {
      if ('corrupt' in item) {
        skippedCorrupt++;
        continue;
      }
      r = item.record;
      raw = item.raw;
    } else {
      r = item as ChainedRecord;
    }
    if (!match(r)) continue;
    switch (opts.format) {
      case 'ndjson':
        // The stored line verbatim when available: byte-identical to what was hashed and stored.
        await w.push((raw ?? JSON.stringify(r)) + '\n');
        exported++;
        break;
      case 'csv':
        if (isChainRecord(r)) continue;
        await w.push(csvRow(r));
        exported++;
        break;
      case 'fhir':
        if (isChainRecord(r)) continue;
        for (const ev of toAuditEvents(r)) {
          if (opts.bundle) {
            await w.push((firstInBundle ? '' : ',') + '{"resource":' + JSON.stringify(ev) + '}');
            firstInBundle = false;
          } else {
            await w.push(JSON.stringify(ev) + '\n');
          }
        }
        exported++;
        break;
    }
  }
  if (opts.format === 'fhir' && opts.bundle) await w.push(']}\n');
  await w.flush();
  const final = { scanned, exported, skippedCorrupt, done: true };
  opts.onProgress?.(final);
  return final;
}
