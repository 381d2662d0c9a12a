/**
 * Chain verification over a stored stream of records (any interleaving of writers). Detects an
 * edited record (hash mismatch), a removed or inserted record (sequence gap, prev mismatch,
 * duplicate), reordered records (sequence going backwards), unparsable lines, records after a seal
 * and seals whose count disagrees. Names the FIRST problem by position, writer and seq.
 *
 * Checkpoints and seals (checkpoint.ts) must agree with the chain they cover (count and last hash).
 * With public keys, their signatures are checked too, and a writer with records but no valid
 * signature at all is a problem: that is what catches a chain rewritten consistently by someone
 * without the key. Records after a writer's last valid checkpoint are reported as unprotected.
 * Anchors (checkpoints kept off the machine) must each be found in the trail, which catches a
 * rewrite that dropped whole writers. An unsealed writer (crash, live, or a cut tail) is a warning
 * unless `requireSeal`; a torn final line is a warning.
 */
import type { KeyObject } from 'node:crypto';
import { GENESIS, hashMatches } from './chain.js';
import { type CheckpointLog, checkpointOf, checkSignature, keyIdOf } from './checkpoint.js';
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
  | 'seal-count'
  /** A checkpoint or seal whose count or last hash is not the chain's (or that carries none). */
  | 'checkpoint-mismatch'
  /** A checkpoint or seal not signed by any of the public keys given (wrong key, bad or no signature). */
  | 'bad-signature'
  /** Under public keys: a writer with records but no valid signed checkpoint or seal. */
  | 'no-checkpoint'
  /** `requireSeal`: a writer that ends without a seal. */
  | 'unsealed'
  /** An anchored checkpoint the trail does not contain (its writer or record missing, or another hash). */
  | 'anchor-missing';

export interface Problem {
  readonly kind: ProblemKind;
  readonly position: string;
  readonly writer: string | undefined;
  readonly seq: number | undefined;
  readonly message: string;
}

export interface Warning {
  readonly kind: 'unsealed' | 'torn-tail' | 'unprotected';
  readonly position: string | undefined;
  readonly writer: string | undefined;
  readonly message: string;
}

/** One writer's chain as verified. */
export interface WriterSummary {
  readonly writer: string;
  /** seq of its last record. */
  readonly lastSeq: number;
  readonly sealed: boolean;
  /** seq of its last checkpoint (or seal) record that passed every check (0 = none). */
  readonly protectedTo: number;
  /** Records after that one, which no checkpoint vouches for (with public keys; else every record). */
  readonly unprotected: number;
  /** That last good checkpoint or seal, as an anchor to keep elsewhere. */
  readonly latest: CheckpointLog | undefined;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly records: number;
  readonly writers: number;
  /** The first problem found, or undefined when intact. */
  readonly first: Problem | undefined;
  /** Problems in stream order (end-of-trail findings last), capped at `maxProblems`. */
  readonly problems: readonly Problem[];
  readonly warnings: readonly Warning[];
  /** True when signatures were checked (public keys given). */
  readonly keyed: boolean;
  readonly writerSummaries: readonly WriterSummary[];
  /** Distinct anchors given (writer and seq), and how many of them the trail holds. */
  readonly anchorsGiven: number;
  readonly anchorsChecked: number;
}

/** A checkpoint kept outside the machine: the trail must hold this writer's record `seq` with `hash`. */
export interface Anchor {
  readonly writer: string;
  readonly seq: number;
  readonly hash: string;
}

export interface VerifyOptions {
  readonly maxProblems?: number;
  /** Ed25519 public keys checkpoints may be signed with (several during a key rotation). */
  readonly publicKeys?: readonly KeyObject[];
  /** A writer without a seal is a problem, not a warning (a live trail: leave false). */
  readonly requireSeal?: boolean;
  readonly anchors?: readonly Anchor[];
  /**
   * Without requireSeal: an unsealed writer whose first record is younger than this (before `now`)
   * may have no checkpoint yet (one is due within audit.checkpoint.everySeconds of its start); its
   * records are reported as unprotected instead of failing. A forged writer gains nothing lasting:
   * once it is older, it fails.
   */
  readonly newWriterGraceMs?: number;
  readonly now?: Date;
}

interface WriterState {
  seq: number;
  hash: string;
  position: string;
  sealed: boolean;
  /** seq of the last checkpoint/seal record that passed (0 = none). */
  protectedTo: number;
  latest: CheckpointLog | undefined;
  /** Time of the writer's first record (ms; NaN when unreadable). */
  firstAt: number;
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

const anchorKey = (writer: string, seq: number): string => `${seq}\n${writer}`;

export async function verifyChains(
  items: AsyncIterable<ReadItem | ChainedRecord> | Iterable<ReadItem | ChainedRecord>,
  opts: VerifyOptions = {},
): Promise<VerifyReport> {
  const maxProblems = opts.maxProblems ?? 100;
  const keys = new Map<string, KeyObject>((opts.publicKeys ?? []).map((k) => [keyIdOf(k), k]));
  const keyed = keys.size > 0;
  const retired = new Map<string, { by: string; seq: number; ends: Array<{ seq: number; hash: string }> }>();
  const writers = new Map<string, WriterState>();
  const problems: Problem[] = [];
  const warnings: Warning[] = [];
  // Anchors by writer+seq: matched as the records stream past (no record kept in memory).
  const anchors = new Map<string, { anchor: Anchor; found: 'no' | 'yes' | 'other-hash' }>();
  for (const a of opts.anchors ?? []) anchors.set(anchorKey(a.writer, a.seq), { anchor: a, found: 'no' });
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
    const intact = hashMatches(record);
    if (!intact) {
      report({ kind: 'hash-mismatch', position, writer, seq, message: `${at}: hash mismatch, the record was edited` });
    }
    if (anchors.size > 0) {
      const a = anchors.get(anchorKey(writer, seq));
      if (a && a.found !== 'yes') a.found = a.anchor.hash === hash && intact ? 'yes' : 'other-hash';
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
    let protectedTo = state?.protectedTo ?? 0;
    let latest = state?.latest;
    const isSeal = record.kind === 'writer-seal';
    if (isSeal || record.kind === 'writer-checkpoint') {
      const d = (record.details ?? {}) as { records?: unknown; lastHash?: unknown; keyId?: unknown; signature?: unknown };
      const what = isSeal ? 'seal' : 'checkpoint';
      if (isSeal) sealed = true;
      // What it vouches for must be the chain it sits in: the count before it and the hash it follows.
      // (A seal of an unkeyed gateway before checkpoints existed may lack lastHash: not required then.)
      let good = intact;
      if (d.records !== seq - 1) {
        good = false;
        const message = `${at}: ${what} counts ${String(d.records)} records but ${seq - 1} precede it`;
        report({ kind: isSeal ? 'seal-count' : 'checkpoint-mismatch', position, writer, seq, message });
      } else if (d.lastHash !== prev && (!isSeal || d.lastHash !== undefined || keyed)) {
        good = false;
        report({ kind: 'checkpoint-mismatch', position, writer, seq, message: `${at}: ${what} vouches for a last hash that is not the chain's: the records before it were rewritten` });
      }
      if (keyed) {
        const sig = checkSignature(keys, what, {
          writer,
          seq: typeof d.records === 'number' ? d.records : -1,
          hash: typeof d.lastHash === 'string' ? d.lastHash : '',
          time: typeof record.time === 'string' ? record.time : '',
          keyId: d.keyId,
          signature: d.signature,
        });
        if (sig !== 'ok') {
          good = false;
          const why =
            sig === 'unsigned'
              ? `${what} carries no signature`
              : sig === 'unknown-key'
                ? `${what} is signed by key ${String(d.keyId)}, not by any public key given`
                : `${what} signature does not verify: the ${what} was forged or altered`;
          report({ kind: 'bad-signature', position, writer, seq, message: `${at}: ${why}` });
        }
      }
      if (good) {
        protectedTo = seq;
        latest = checkpointOf(record);
      }
    }
    if (record.kind === 'writer-retired') {
      const d = record.details as Record<string, unknown> | undefined;
      if (d && typeof d.retired === 'string' && typeof d.confirmedSeq === 'number' && typeof d.pendingSeq === 'number') {
        retired.set(d.retired, {
          by: writer,
          seq,
          ends: [
            { seq: d.confirmedSeq, hash: String(d.confirmedHash) },
            { seq: d.pendingSeq, hash: String(d.pendingHash) },
          ],
        });
      }
    }
    // Resynchronise on what was found so one problem is reported once, not cascaded.
    if (!state || seq > state.seq) writers.set(writer, { seq, hash, position, sealed, protectedTo, latest, firstAt: state ? state.firstAt : Date.parse(String(record.time)) });
    else if (state) state.sealed = sealed;
  }

  // A writer its successor retired (an ambiguous Redis failure) is closed, not cut, when it ends
  // at one of the two heads the successor recorded; under keys, the successor's checkpoint covering
  // that note vouches for the old chain up to there.
  for (const [writer, s] of writers) {
    const note = retired.get(writer);
    if (!note || s.sealed) continue;
    if (note.ends.some((e) => e.seq === s.seq && e.hash === s.hash)) {
      s.sealed = true;
      if (keyed && (writers.get(note.by)?.protectedTo ?? 0) >= note.seq) s.protectedTo = s.seq;
    } else {
      report({
        kind: 'seal-count',
        position: s.position,
        writer,
        seq: s.seq,
        message: `writer ${writer} was retired by ${note.by} at seq ${note.ends.map((e) => e.seq).join(' or ')} but ends at seq ${s.seq} (${s.position}): records were cut or added`,
      });
    }
  }

  const summaries: WriterSummary[] = [];
  for (const [writer, s] of writers) {
    const unprotected = keyed ? s.seq - s.protectedTo : s.seq;
    summaries.push({ writer, lastSeq: s.seq, sealed: s.sealed, protectedTo: keyed ? s.protectedTo : 0, unprotected, latest: s.latest });
    const graceMs = opts.requireSeal ? 0 : (opts.newWriterGraceMs ?? 0);
    const nowMs = (opts.now ?? new Date()).getTime();
    // A first record dated in the future is no excuse: it would stay "young" for ever.
    const young = !s.sealed && graceMs > 0 && s.firstAt >= nowMs - graceMs && s.firstAt <= nowMs + 5000;
    if (keyed && s.protectedTo === 0 && young) {
      warnings.push({
        kind: 'unprotected',
        position: s.position,
        writer,
        message: `writer ${writer} started less than ${Math.round(graceMs / 1000)} s ago and has no checkpoint yet: its ${s.seq} record(s) are unprotected`,
      });
    } else if (keyed && s.protectedTo === 0) {
      report({
        kind: 'no-checkpoint',
        position: s.position,
        writer,
        seq: s.seq,
        message: `writer ${writer} has ${s.seq} records but no checkpoint or seal signed by the given key: nothing vouches for them`,
      });
    } else if (keyed && unprotected > 0) {
      warnings.push({
        kind: 'unprotected',
        position: s.position,
        writer,
        message: `writer ${writer}: ${unprotected} record(s) after its last signed checkpoint (seq ${s.protectedTo}) are unprotected: they could be cut or rewritten unnoticed`,
      });
    }
    if (!s.sealed) {
      const message = `writer ${writer} ends at seq ${s.seq} (${s.position}) without a seal: still running, crashed, or its tail was cut`;
      if (opts.requireSeal) report({ kind: 'unsealed', position: s.position, writer, seq: s.seq, message });
      else warnings.push({ kind: 'unsealed', position: s.position, writer, message });
    }
  }
  let anchorsChecked = 0;
  for (const { anchor: a, found } of anchors.values()) {
    if (found === 'yes') {
      anchorsChecked++;
      continue;
    }
    const why =
      found === 'other-hash'
        ? 'holds that record with another hash: the chain was rewritten'
        : writers.has(a.writer)
          ? `ends before it: records were removed`
          : 'has no record of that writer: the whole chain was removed';
    report({ kind: 'anchor-missing', position: 'anchor', writer: a.writer, seq: a.seq, message: `anchor writer ${a.writer} seq ${a.seq}: the trail ${why}` });
  }
  return { ok: first === undefined, records: count, writers: writers.size, first, problems, warnings, keyed, writerSummaries: summaries, anchorsGiven: anchors.size, anchorsChecked };
}

/**
 * Anchors from a file of checkpoint lines, one JSON object per line, any of: a gateway log line
 * (`{"audit":{"checkpoint":{writer, seq, hash, ...}}}`), a stored or exported checkpoint or seal
 * record, a bare `{writer, seq, hash}`, or a `checkpoint {...}` line of `audit verify` output. Other
 * lines (the rest of a log) are skipped; a file with no anchor at all is an error.
 */
export function parseAnchors(text: string): Anchor[] {
  const out: Anchor[] = [];
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf('{');
    if (i < 0) continue;
    let v: unknown;
    try {
      v = JSON.parse(line.slice(i));
    } catch {
      continue;
    }
    const a = anchorOf(v);
    if (a) out.push(a);
  }
  if (out.length === 0) throw new Error('no checkpoint line in the anchor file');
  return out;
}

function anchorOf(v: unknown): Anchor | undefined {
  if (v === null || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  const logged = (o.audit as { checkpoint?: unknown } | undefined)?.checkpoint;
  if (logged !== undefined) return anchorOf(logged);
  if (o.chain && typeof o.chain === 'object') {
    const cp = checkpointOf(o as unknown as ChainedRecord);
    return cp ? { writer: cp.writer, seq: cp.seq, hash: cp.hash } : undefined;
  }
  if (typeof o.writer === 'string' && Number.isSafeInteger(o.seq) && (o.seq as number) >= 1 && typeof o.hash === 'string' && HEX64.test(o.hash)) {
    return { writer: o.writer, seq: o.seq as number, hash: o.hash };
  }
  return undefined;
}
