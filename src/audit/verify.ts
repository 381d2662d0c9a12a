/**
 * Chain verification over a stored stream of records (any interleaving of writers). Detects an
 * edited record (hash mismatch), a removed or inserted record (sequence gap, prev mismatch,
 * duplicate), reordered records (sequence going backwards), unparsable lines, records after a seal
 * and seals whose count disagrees. Names the FIRST problem by position, writer and seq.
 * Unsealed writers (crash, live process, or a cut tail) and a torn final line are warnings.
 */
import { GENESIS, hashMatches } from './chain.js';
import type { ReadItem } from './read.js';
import type { ChainedRecord } from './record.js';

export type ProblemKind =
  | 'unparsable'
  | 'malformed'
  | 'hash-mismatch'
  | 'seq-gap'
  | 'seq-backwards'
  | 'prev-mismatch'
  | 'bad-genesis'
  | 'after-seal'
  | 'seal-count';

export interface Problem {
  readonly kind: ProblemKind;
  readonly position: string;
  readonly writer: string | undefined;
  readonly seq: number | undefined;
  readonly message: string;
}

export interface Warning {
  readonly kind: 'unsealed' | 'torn-tail';
  readonly position: string | undefined;
  readonly writer: string | undefined;
  readonly message: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly records: number;
  readonly writers: number;
  /** The first problem found, or undefined when intact. */
  readonly first: Problem | undefined;
  /** Problems in stream order, capped at `maxProblems`. */
  readonly problems: readonly Problem[];
  readonly warnings: readonly Warning[];
}

interface WriterState {
  seq: number;
  hash: string;
  position: string;
  sealed: boolean;
}

const HEX64 = /^[0-9a-f]{64}$/;

function isChained(r: ChainedRecord): boolean {
  const c = (r as { chain?: unknown }).chain as ChainedRecord['chain'] | undefined;
  return (
    !!c &&
    typeof c === 'object' &&
    typeof c.writer === 'string' &&
    c.writer.length > 0 &&
    Number.isSafeInteger(c.seq) &&
    c.seq >= 1 &&
    typeof c.prev === 'string' &&
    HEX64.test(c.prev) &&
    typeof c.hash === 'string' &&
    HEX64.test(c.hash)
  );
}

export async function verifyChains(
  items: AsyncIterable<ReadItem | ChainedRecord> | Iterable<ReadItem | ChainedRecord>,
  opts: { maxProblems?: number } = {},
): Promise<VerifyReport> {
  const maxProblems = opts.maxProblems ?? 100;
  const writers = new Map<string, WriterState>();
  const problems: Problem[] = [];
  const warnings: Warning[] = [];
  let first: Problem | undefined;
  let count = 0;
  let index = 0;
  const report = (p: Problem): void => {
    first ??= p;
    if (problems.length < maxProblems) problems.push(p);
  };

  for await (const item of items as AsyncIterable<ReadItem | ChainedRecord>) {
    index++;
    let position: string;
    let record: ChainedRecord;
    if ('position' in item && ('record' in item || 'corrupt' in item)) {
      position = item.position;
      if ('corrupt' in item) {
        if (item.torn) {
          warnings.push({ kind: 'torn-tail', position, writer: undefined, message: `${position}: torn final line (never acknowledged)` });
        } else {
          report({ kind: 'unparsable', position, writer: undefined, seq: undefined, message: `${position}: ${item.corrupt}` });
        }
        continue;
      }
      record = item.record;
    } else {
      position = `#${index}`;
      record = item as ChainedRecord;
    }
    count++;
    if (!isChained(record)) {
      report({ kind: 'malformed', position, writer: undefined, seq: undefined, message: `${position}: record without valid chain fields` });
      continue;
    }
    const { writer, seq, prev, hash } = record.chain;
    const at = `${position} (writer ${writer}, seq ${seq})`;
    if (!hashMatches(record)) {
      report({ kind: 'hash-mismatch', position, writer, seq, message: `${at}: hash mismatch, the record was edited` });
    }
    const state = writers.get(writer);
    if (!state) {
      if (seq !== 1) {
        report({ kind: 'seq-gap', position, writer, seq, message: `${at}: writer's first record has seq ${seq}, records 1..${seq - 1} are missing` });
      } else if (prev !== GENESIS) {
        report({ kind: 'bad-genesis', position, writer, seq, message: `${at}: first record does not start from the genesis hash` });
      }
    } else {
      if (state.sealed) {
        report({ kind: 'after-seal', position, writer, seq, message: `${at}: record after the writer's seal at ${state.position}` });
      }
      if (seq <= state.seq) {
        report({ kind: 'seq-backwards', position, writer, seq, message: `${at}: seq goes back from ${state.seq} (${state.position}), records reordered or duplicated` });
      } else if (seq !== state.seq + 1) {
        report({ kind: 'seq-gap', position, writer, seq, message: `${at}: expected seq ${state.seq + 1} after ${state.position}, records removed or reordered` });
      } else if (prev !== state.hash) {
        report({ kind: 'prev-mismatch', position, writer, seq, message: `${at}: prev does not match the hash of seq ${state.seq} (${state.position}), a record was replaced or inserted` });
      }
    }
    let sealed = state?.sealed ?? false;
    if (record.kind === 'writer-seal') {
      sealed = true;
      const n = (record.details as { records?: unknown } | undefined)?.records;
      if (n !== seq - 1) {
        report({ kind: 'seal-count', position, writer, seq, message: `${at}: seal counts ${String(n)} records but ${seq - 1} precede it` });
      }
    }
    // Resynchronise on what was found so one problem is reported once, not cascaded.
    if (!state || seq > state.seq) writers.set(writer, { seq, hash, position, sealed });
    else if (state) state.sealed = sealed;
  }

  for (const [writer, s] of writers) {
    if (!s.sealed) {
      warnings.push({
        kind: 'unsealed',
        position: s.position,
        writer,
        message: `writer ${writer} ends at seq ${s.seq} (${s.position}) without a seal: still running, crashed, or its tail was cut`,
      });
    }
  }
  return { ok: first === undefined, records: count, writers: writers.size, first, problems, warnings };
}
