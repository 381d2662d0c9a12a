/**
 * Signed checkpoints: what lets the audit trail prove itself to someone who does not trust the
 * machine it is stored on.
 *
 * The hash chain (chain.ts) is unkeyed: anyone able to write the files or the Redis stream can edit
 * a record and recompute every hash after it. So each writer also signs its chain head with an
 * Ed25519 key every N records or S seconds (whichever comes first, only when there were new
 * records) and when it seals: a chained record of kind `writer-checkpoint` whose details hold
 * `{records, lastHash, keyId, signature}`; the seal carries the same fields. Whoever holds only the
 * PUBLIC key can then check that the chain up to each checkpoint is the one the gateway wrote.
 *
 * The signed text is fixed and domain-separated, one field per line:
 *   "phi-gateway audit checkpoint v1\n<writer>\n<seq of last covered>\n<hash>\n<time>"
 * and for a seal the same with "phi-gateway audit seal v1" as first line: a seal says "nothing
 * follows", so a checkpoint's signature must never pass as one (else a tail cut right after a
 * checkpoint could be dressed up as a clean close by rewriting that record's kind).
 *
 * What a checkpoint does not protect: records written after the writer's last checkpoint (up to N
 * records or S seconds of them) until the next checkpoint or the seal. `audit verify` reports those
 * as unprotected.
 *
 * Signing costs ~50 µs; it happens in the sink's group commit (once per checkpoint, appended to the
 * batch being written), never per request.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, randomUUID, sign, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { type ChainHead, chainLine, chainMaintenanceRecord, sealRecord } from './chain.js';
import type { AuditRecord } from './record.js';

export const CHECKPOINT_DOMAIN = 'phi-gateway audit checkpoint v1';
export const SEAL_DOMAIN = 'phi-gateway audit seal v1';

/** Defaults of `audit.checkpoint.everyRecords` / `everySeconds`. */
export const DEFAULT_CHECKPOINT_RECORDS = 1000;
export const DEFAULT_CHECKPOINT_SECONDS = 60;

/** What check-config and `serve` say when no signing key is configured. */
export const NO_CHECKPOINT_KEY_WARNING =
  'audit.checkpoint.keyFile is not set: the audit trail is not signed, so it cannot prove to an outsider that it was not rewritten (phi-gateway audit keygen --out DIR)';

/** The text a checkpoint (or seal) signature covers. */
export function checkpointText(kind: 'checkpoint' | 'seal', writer: string, seq: number, hash: string, time: string): string {
  return `${kind === 'seal' ? SEAL_DOMAIN : CHECKPOINT_DOMAIN}\n${writer}\n${seq}\n${hash}\n${time}`;
}

/** sha256 of the public key's SPKI DER, hex, first 16 characters: names the key in each checkpoint. */
export function keyIdOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Signs chain heads with one Ed25519 private key. */
export interface CheckpointSigner {
  readonly keyId: string;
  /** base64 Ed25519 signature over `checkpointText(...)`. */
  sign(kind: 'checkpoint' | 'seal', writer: string, seq: number, hash: string, time: string): string;
}

export function createSigner(privateKey: KeyObject): CheckpointSigner {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') throw new Error('the audit signing key must be an Ed25519 private key');
  const keyId = keyIdOf(privateKey);
  return {
    keyId,
    sign: (kind, writer, seq, hash, time) => sign(null, Buffer.from(checkpointText(kind, writer, seq, hash, time), 'utf8'), privateKey).toString('base64'),
  };
}

/** Reads a PKCS#8 PEM Ed25519 private key; throws a message without the key's content. */
export function loadSigningKey(path: string): KeyObject {
  const pem = readFileSync(path);
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new Error('not a PEM private key (expected PKCS#8, as written by phi-gateway audit keygen)');
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`an ${String(key.asymmetricKeyType)} key; the audit signing key must be Ed25519`);
  return key;
}

/** Reads one or more Ed25519 public keys (SPKI PEM; a private key file is accepted and its public half used). */
export function loadPublicKeys(pemText: string): KeyObject[] {
  const blocks = pemText.match(/-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----/g) ?? [];
  if (blocks.length === 0) throw new Error('no PEM key in the file');
  return blocks.map((b) => {
    const key = /PRIVATE KEY/.test(b) ? createPublicKey(createPrivateKey(b)) : createPublicKey(b);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`an ${String(key.asymmetricKeyType)} key; audit checkpoints are signed with Ed25519`);
    return key;
  });
}

/** Checks a signature against the keys given (by keyId). */
export function checkSignature(
  keys: ReadonlyMap<string, KeyObject>,
  kind: 'checkpoint' | 'seal',
  fields: { writer: string; seq: number; hash: string; time: string; keyId: unknown; signature: unknown },
): 'ok' | 'unknown-key' | 'bad-signature' | 'unsigned' {
  if (typeof fields.keyId !== 'string' || typeof fields.signature !== 'string') return 'unsigned';
  const key = keys.get(fields.keyId);
  if (!key) return 'unknown-key';
  const sig = Buffer.from(fields.signature, 'base64');
  if (sig.length !== 64) return 'bad-signature';
  const text = checkpointText(kind, fields.writer, fields.seq, fields.hash, fields.time);
  return verify(null, Buffer.from(text, 'utf8'), key, sig) ? 'ok' : 'bad-signature';
}

export interface CheckpointOptions {
  readonly signer: CheckpointSigner;
  /** A checkpoint after at most this many new records. */
  readonly everyRecords: number;
  /** ... or once this long has passed since the last one and there are new records. */
  readonly everySeconds: number;
}

/** The record a writer appends to sign its chain head (`head` = the last record it covers). */
export function checkpointRecord(head: ChainHead, signer: CheckpointSigner, id: string, time: string): AuditRecord {
  return chainMaintenanceRecord('writer-checkpoint', id, time, {
    records: head.seq,
    lastHash: head.hash,
    keyId: signer.keyId,
    signature: signer.sign('checkpoint', head.writer, head.seq, head.hash, time),
  });
}

/** What the gateway logs for each checkpoint and seal (no PHI): an anchor to keep off the machine. */
export interface CheckpointLog {
  readonly writer: string;
  /** seq of the last record covered. */
  readonly seq: number;
  readonly hash: string;
  readonly time: string;
  readonly keyId: string;
  readonly signature: string;
  readonly seal?: true;
}

/** The anchor a checkpoint or seal record carries, or undefined when it is not one. */
export function checkpointOf(record: AuditRecord & { chain: { writer: string } }): CheckpointLog | undefined {
  if (record.kind !== 'writer-checkpoint' && record.kind !== 'writer-seal') return undefined;
  const d = record.details as { records?: unknown; lastHash?: unknown; keyId?: unknown; signature?: unknown } | undefined;
  if (typeof d?.records !== 'number' || typeof d.lastHash !== 'string' || typeof d.keyId !== 'string' || typeof d.signature !== 'string') return undefined;
  return {
    writer: record.chain.writer,
    seq: d.records,
    hash: d.lastHash,
    time: record.time,
    keyId: d.keyId,
    signature: d.signature,
    ...(record.kind === 'writer-seal' ? { seal: true as const } : {}),
  };
}

/**
 * When a writer owes a checkpoint. Pure bookkeeping over the committed head: the sink asks `due`
 * with the head after a batch, appends `checkpointRecord` to that batch if so, and calls
 * `committed` once the batch (checkpoint included) is durable.
 */
export class CheckpointSchedule {
  private coveredSeq = 0;
  private lastAt: number;

  constructor(
    private readonly opts: Pick<CheckpointOptions, 'everyRecords' | 'everySeconds'>,
    nowMs: number,
  ) {
    this.lastAt = nowMs;
  }

  /** The writer's seq right after its last durable checkpoint (the checkpoint record's own; 0 = none). */
  get covered(): number {
    return this.coveredSeq;
  }

  /** True when the chain up to `seq` owes a checkpoint (`force`: the timer fired). */
  due(seq: number, nowMs: number, force = false): boolean {
    const fresh = seq - this.coveredSeq;
    if (fresh <= 0) return false;
    return force || fresh >= this.opts.everyRecords || nowMs - this.lastAt >= this.opts.everySeconds * 1000;
  }

  /** A checkpoint record is durable at `seq` (its own seq: it is not a new record to cover). */
  committed(seq: number, nowMs: number): void {
    this.coveredSeq = seq;
    this.lastAt = nowMs;
  }

  /** A new writer chain (the Redis sink retires one after an ambiguous failure). */
  reset(nowMs: number): void {
    this.coveredSeq = 0;
    this.lastAt = nowMs;
  }
}

/**
 * A stand-in the sinks' timers enqueue to ask the next group commit for a checkpoint (when there
 * are new records since the last one); never chained or stored itself.
 */
export const CHECKPOINT_TICK: AuditRecord = Object.freeze(chainMaintenanceRecord('writer-checkpoint', 'checkpoint-tick', '', undefined));

/** A checkpoint chained after a batch, not yet durable. */
export interface PendingCheckpoint {
  /** The stored line (canonical JSON, no newline). */
  readonly line: string;
  /** The chain head after the checkpoint record. */
  readonly next: ChainHead;
  readonly log: CheckpointLog;
}

/**
 * A sink's checkpointing: asked once per group commit with the head after the batch's records, it
 * returns the signed checkpoint to append to that same write when one is due. The schedule only
 * advances once the sink reports the write durable (a failed batch loses its checkpoint too, and
 * the next batch owes one again).
 */
export class Checkpointer {
  private readonly schedule: CheckpointSchedule;

  constructor(
    private readonly opts: CheckpointOptions,
    private readonly now: () => Date,
    private readonly logger: Logger | undefined,
  ) {
    if (!(opts.everyRecords >= 1) || !(opts.everySeconds > 0)) throw new Error('audit checkpoint everyRecords and everySeconds must be positive');
    this.schedule = new CheckpointSchedule(opts, now().getTime());
  }

  get everySeconds(): number {
    return this.opts.everySeconds;
  }

  /** True when the writer has records no checkpoint covers yet. */
  owes(head: ChainHead): boolean {
    return head.seq > this.schedule.covered;
  }

  /** The checkpoint to append after `head` (the batch's last record), or undefined when none is due. */
  after(head: ChainHead, force: boolean): PendingCheckpoint | undefined {
    const t = this.now();
    if (!this.schedule.due(head.seq, t.getTime(), force)) return undefined;
    const time = t.toISOString();
    const record = checkpointRecord(head, this.opts.signer, randomUUID(), time);
    const { line, next } = chainLine(head, record);
    const { keyId, signature } = record.details as { keyId: string; signature: string };
    return { line, next, log: { writer: head.writer, seq: head.seq, hash: head.hash, time, keyId, signature } };
  }

  /** The checkpoint is durable: the schedule restarts from it, and it is logged as an anchor. */
  committed(cp: PendingCheckpoint): void {
    this.schedule.committed(cp.next.seq, this.now().getTime());
    this.logger?.info({ audit: { checkpoint: cp.log } }, 'audit checkpoint');
  }

  /** The signed seal record for `head`. */
  seal(head: ChainHead, id: string, time: string): AuditRecord {
    return sealRecord(head, id, time, this.opts.signer);
  }

  /** The seal is durable: log it as the writer's final anchor. */
  sealed(seal: AuditRecord, head: ChainHead): void {
    const d = seal.details as { keyId: string; signature: string };
    this.logger?.info({ audit: { checkpoint: { writer: head.writer, seq: head.seq, hash: head.hash, time: seal.time, keyId: d.keyId, signature: d.signature, seal: true } } }, 'audit chain sealed');
  }

  /** A new writer chain (the Redis sink retires one after an ambiguous failure). */
  reset(): void {
    this.schedule.reset(this.now().getTime());
  }
}
