/**
 * Tamper-evident hash chains over audit records (pure: no I/O, no clock, no randomness).
 *
 * Why one chain per writer: several gateway replicas append to one Redis stream (or several
 * processes to one directory over time). A single global chain would need a global lock around
 * "read head, hash, append" on every request; instead each writer (one gateway process) keeps its
 * own chain, assigned in-process, and a stream is an interleaving of chains. `verify` groups by
 * writer. A process restart is a new writer id, so no chain ever has to be resumed from disk.
 *
 * Each record gets `chain = { writer, seq, prev, hash }`: seq counts from 1 per writer, prev is the
 * writer's previous hash (GENESIS for seq 1), and hash = sha256 hex of the canonical JSON of the
 * record including `chain.writer/seq/prev` but without `chain.hash`.
 *
 * What the chain cannot see by itself: a writer's tail cut off (the last records simply end).
 * Mitigation: on a clean close the sink appends a `writer-seal` record carrying the number of
 * records before it and the last hash; `verify` reports writers without a seal (a crash, or the
 * live writer, also ends unsealed; `--allow-unsealed` accepts those) and a seal whose count
 * disagrees as an error. sha256 is unkeyed: someone able to rewrite the whole store can recompute
 * every hash. With a signing key configured, sinks therefore also append signed `writer-checkpoint`
 * records and sign the seal (checkpoint.ts), and log each one (writer, seq, hash, signature: no PHI)
 * as an external anchor that a tail truncation or a wholesale re-hash would contradict.
 */
import { hash as oneShotHash } from 'node:crypto';
import { canonicalSplit } from './canonical.js';
import type { CheckpointSigner } from './checkpoint.js';
import { quoteString, splitKnownRecord } from './record-text.js';
import type { AuditRecord, ChainedRecord } from './record.js';

export const GENESIS = '0'.repeat(64);

/** A writer's chain head: the state needed to append the next record. Immutable. */
export interface ChainHead {
  readonly writer: string;
  /** seq of the last record appended (0 = none yet). */
  readonly seq: number;
  /** hash of the last record appended (GENESIS = none yet). */
  readonly hash: string;
}

export function genesisHead(writer: string): ChainHead {
  if (!writer || /\s/.test(writer)) throw new Error('writer id must be a non-empty string without whitespace');
  return { writer, seq: 0, hash: GENESIS };
}

/**
 * The canonical JSON of a record's chain position without its hash (keys in sorted order), less
 * the opening brace: `"prev":…,"seq":…,"writer":…}`. The hash covers `{` + this; the stored line
 * has `{"hash":"…",` + this (`hash` sorts first). One writer for both, so they cannot drift apart.
 */
function chainMembers(writer: string, seq: number, prev: string): string {
  return `"prev":${quoteString(prev)},"seq":${seq},"writer":${quoteString(writer)}}`;
}

// The one-shot form skips creating a Hash object: about half the cost for a record-sized input.
function sha256(text: string): string {
  return oneShotHash('sha256', text, 'hex');
}

/** sha256 hex over the canonical JSON of the record with `chain.hash` left out. */
export function recordHash(record: AuditRecord & { readonly chain: { writer: string; seq: number; prev: string } }): string {
  const { chain } = record;
  const { before, after } = canonicalSplit(record, 'chain');
  return sha256(`${before}{${chainMembers(chain.writer, chain.seq, chain.prev)}${after}`);
}

/** One record chained after `head`: the stored line (canonical JSON, no newline) and the head after it. */
export interface ChainedLine {
  readonly line: string;
  readonly next: ChainHead;
}

/**
 * Chains one record after `head` and returns the line to store. One serialization pass: the
 * canonical text is hashed, and the stored line is that same text with `chain.hash` spliced in
 * (so it is itself canonical). Records of toAuditRecord's shape (every request) are written by
 * the dedicated single-pass writer (record-text.ts), any other by the generic canonicalSplit;
 * both give the same bytes. Any `chain` field on the input is replaced, never trusted; the
 * input is not modified. Throws when the record is not JSON-serializable (nothing consumed).
 */
export function chainLine(head: ChainHead, record: AuditRecord): ChainedLine {
  const seq = head.seq + 1;
  const split = splitKnownRecord(record);
  const { before, after } = split ?? canonicalSplit(record, 'chain');
  const members = chainMembers(head.writer, seq, head.hash);
  const hash = sha256(`${before}{${members}${after}`);
  // `hash` sorts before prev/seq/writer, so it opens the chain object.
  const line = `${before}{"hash":"${hash}",${members}${after}`;
  return { line, next: { writer: head.writer, seq, hash } };
}

/**
 * Chains `records` after `head`. Returns the chained copies (plain JSON, frozen at top level) and the
 * head after them. Nothing is committed: the caller keeps `next` only once the batch is durable,
 * so a failed write never consumes sequence numbers. (Sinks that only need the stored text use
 * `chainLine`, which skips building these copies.)
 */
export function chainRecords(head: ChainHead, records: readonly AuditRecord[]): { chained: ChainedRecord[]; next: ChainHead } {
  const chained: ChainedRecord[] = [];
  let next = head;
  for (const r of records) {
    const c = chainLine(next, r);
    // Our own plain copy, parsed from exactly what a sink stores.
    const copy = JSON.parse(c.line) as ChainedRecord;
    Object.freeze(copy.chain);
    chained.push(Object.freeze(copy));
    next = c.next;
  }
  return { chained, next };
}

/** True when the stored hash matches the record's content. */
export function hashMatches(record: ChainedRecord): boolean {
  return recordHash(record) === record.chain.hash;
}

/**
 * The record a writer appends on clean close. `records` = how many records precede it in this
 * writer's chain (= head.seq), so verify can tell a sealed, complete chain from a cut one. With a
 * signer, the seal also signs the head (as a checkpoint does, under the seal's own domain text).
 */
export function sealRecord(head: ChainHead, id: string, time: string, signer?: CheckpointSigner): AuditRecord {
  const signed = signer ? { keyId: signer.keyId, signature: signer.sign('seal', head.writer, head.seq, head.hash, time) } : {};
  return chainMaintenanceRecord('writer-seal', id, time, { sealed: true, records: head.seq, lastHash: head.hash, ...signed });
}

/**
 * A retired writer's end, written in its successor's chain: after an ambiguous failure the old
 * chain ends either at `confirmed` (the batch was not applied) or at `pending` (it was). Verify then
 * treats the old writer as closed at one of those two heads, vouched for by the successor's
 * checkpoints, instead of as a chain that was cut.
 */
export function retirementRecord(confirmed: ChainHead, pending: ChainHead, id: string, time: string): AuditRecord {
  return chainMaintenanceRecord('writer-retired', id, time, {
    retired: confirmed.writer,
    confirmedSeq: confirmed.seq,
    confirmedHash: confirmed.hash,
    pendingSeq: pending.seq,
    pendingHash: pending.hash,
  });
}

/** The shape of a record the sink writes for the chain itself (seal, checkpoint): no actor, no request. */
export function chainMaintenanceRecord(kind: 'writer-seal' | 'writer-checkpoint' | 'writer-retired', id: string, time: string, details: Record<string, unknown> | undefined): AuditRecord {
  return {
    id,
    time,
    kind,
    actor: { roles: [] },
    purpose: undefined,
    client: { address: '' },
    request: { method: '', path: '', interaction: undefined, resourceType: undefined },
    decision: 'allow',
    rule: kind,
    disclosed: { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 },
    status: 0,
    upstreamStatus: undefined,
    durations: { totalMs: 0 },
    policyVersion: '',
    ...(details ? { details } : {}),
  };
}

/** Records the sink itself writes to maintain the chain (excluded from filtered exports). */
export function isChainRecord(record: AuditRecord): boolean {
  return record.kind === 'writer-seal' || record.kind === 'writer-checkpoint' || record.kind === 'writer-retired';
}
