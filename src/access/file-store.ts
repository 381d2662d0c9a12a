/**
 * The embedded access-request store: an append-only JSON-lines log (`requests.jsonl`) of create,
 * decide, revoke, use, expire and un-expire events, replayed into memory. Survives restarts; shared
 * with the CLI through the log. One gateway process per store: replicas need Redis.
 *
 * Every event carries what its condition needs (the pending limit, the revocation time), and replay
 * applies it only if the condition still holds at that point of the log. A writer appends, catches
 * up, and then looks whether its own event took effect: two processes appending at once (the
 * gateway and the CLI) both replay the log in the same order, so exactly one of two decisions wins.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { JsonLinesLog, serialQueue } from '../breakglass/jsonl.js';
import { type AccessDecision, type AccessRequestRecord, type AccessRevocation, type AccessStore, isActive, type StoreDecision } from './types.js';

type Event =
  | { readonly t: 'create'; readonly record: AccessRequestRecord; readonly maxPending: number }
  | { readonly t: 'decide'; readonly id: string; readonly decision: AccessDecision; readonly granted: AccessRequestRecord['granted'] }
  | { readonly t: 'revoke'; readonly id: string; readonly revocation: AccessRevocation; readonly now: string }
  | { readonly t: 'use'; readonly id: string; readonly at: string }
  | { readonly t: 'expire'; readonly id: string; readonly at: string; readonly claim: string }
  | { readonly t: 'unend'; readonly id: string };

/** Whose pending requests a limit counts: the requester's issuer and subject. */
function ownerOf(r: AccessRequestRecord): string {
  return JSON.stringify([r.requester.iss ?? '', r.requester.sub]);
}

export class FileAccessStore implements AccessStore {
  private readonly records = new Map<string, AccessRequestRecord>();
  /** Undecided requests per requester (the pending limit). */
  private readonly pendingBy = new Map<string, number>();
  /** The expire event that marked each grant (which writer's sweep audits it). */
  private readonly claims = new Map<string, string>();
  /** Serializes operations: read-check-append must not interleave within this process. */
  private readonly serial = serialQueue();

  private constructor(private readonly log: JsonLinesLog) {}

  /** `dir` holds `requests.jsonl`, e.g. `data/access-requests`. */
  static async open(dir: string, logger?: Logger): Promise<FileAccessStore> {
    const store = new FileAccessStore(await JsonLinesLog.open(join(dir, 'requests.jsonl'), logger));
    await store.catchUp();
    return store;
  }


  private async catchUp(): Promise<void> {
    for (const e of (await this.log.readNew()) as Event[]) this.apply(e);
  }

  private pending(owner: string, delta: number): void {
    const n = (this.pendingBy.get(owner) ?? 0) + delta;
    if (n > 0) this.pendingBy.set(owner, n);
    else this.pendingBy.delete(owner);
  }

  private apply(e: Event): void {
    if (e === null || typeof e !== 'object') return;
    if (e.t === 'create') {
      const r = e.record;
      if (!r || typeof r.id !== 'string' || this.records.has(r.id)) return;
      const owner = ownerOf(r);
      if ((this.pendingBy.get(owner) ?? 0) >= e.maxPending) return;
      this.records.set(r.id, {
        ...r,
        status: 'pending',
        decision: undefined,
        granted: undefined,
        revoked: undefined,
        expiredAt: undefined,
        uses: 0,
        firstUsedAt: undefined,
        lastUsedAt: undefined,
      });
      this.pending(owner, 1);
      return;
    }
    const r = typeof (e as { id?: unknown }).id === 'string' ? this.records.get((e as { id: string }).id) : undefined;
    if (!r) return;
    switch (e.t) {
      case 'decide':
        if (r.status !== 'pending') return;
        this.records.set(r.id, { ...r, status: e.decision.outcome, decision: e.decision, granted: e.decision.outcome === 'approved' ? e.granted : undefined });
        this.pending(ownerOf(r), -1);
        return;
      case 'revoke':
        if (!isActive(r, new Date(e.now))) return;
        this.records.set(r.id, { ...r, revoked: e.revocation });
        return;
      case 'use':
        this.records.set(r.id, { ...r, uses: r.uses + 1, firstUsedAt: r.firstUsedAt ?? e.at, lastUsedAt: e.at });
        return;
      case 'expire':
        if (r.status !== 'approved' || r.revoked !== undefined || r.expiredAt !== undefined || r.granted === undefined) return;
        if (Date.parse(r.granted.expiresAt) > Date.parse(e.at)) return;
        this.records.set(r.id, { ...r, expiredAt: e.at });
        this.claims.set(r.id, e.claim);
        return;
      case 'unend':
        this.records.set(r.id, { ...r, expiredAt: undefined });
        this.claims.delete(r.id);
        return;
    }
  }

  private async write(e: Event): Promise<void> {
    await this.log.append(e);
    // Our own line comes back through catchUp (with anything the CLI appended before it).
    await this.catchUp();
  }

  create(record: AccessRequestRecord, maxPending: number): Promise<{ ok: true } | { ok: false; pending: number }> {
    return this.serial(async () => {
      await this.catchUp();
      const owner = ownerOf(record);
      const held = this.pendingBy.get(owner) ?? 0;
      if (this.records.has(record.id)) throw new Error('access request id already stored');
      if (held >= maxPending) return { ok: false, pending: held };
      await this.write({ t: 'create', record, maxPending });
      // Another process may have filled the limit just before our line.
      return this.records.has(record.id) ? { ok: true } : { ok: false, pending: this.pendingBy.get(owner) ?? 0 };
    });
  }

  get(id: string): Promise<AccessRequestRecord | undefined> {
    return this.serial(async () => {
      await this.catchUp();
      return this.records.get(id);
    });
  }

  list(): Promise<AccessRequestRecord[]> {
    return this.serial(async () => {
      await this.catchUp();
      return [...this.records.values()].sort((a, b) => Date.parse(a.requestedAt) - Date.parse(b.requestedAt));
    });
  }

  decide(id: string, decision: AccessDecision, granted: AccessRequestRecord['granted']): Promise<StoreDecision> {
    return this.serial(async () => {
      await this.catchUp();
      const r = this.records.get(id);
      if (!r) return { ok: false, why: 'not-found' };
      if (r.status !== 'pending') return { ok: false, why: 'not-pending' };
      await this.write({ t: 'decide', id, decision, granted });
      const after = this.records.get(id)!;
      return after.decision?.auditId === decision.auditId && after.decision.at === decision.at ? { ok: true, record: after } : { ok: false, why: 'not-pending' };
    });
  }

  revoke(id: string, revocation: AccessRevocation, now: Date): Promise<StoreDecision> {
    return this.serial(async () => {
      await this.catchUp();
      const r = this.records.get(id);
      if (!r) return { ok: false, why: 'not-found' };
      if (!isActive(r, now)) return { ok: false, why: 'not-active' };
      await this.write({ t: 'revoke', id, revocation, now: now.toISOString() });
      const after = this.records.get(id)!;
      return after.revoked?.auditId === revocation.auditId && after.revoked.at === revocation.at ? { ok: true, record: after } : { ok: false, why: 'not-active' };
    });
  }

  noteUse(id: string, at: string): Promise<void> {
    return this.serial(async () => {
      await this.catchUp();
      if (this.records.has(id)) await this.write({ t: 'use', id, at });
    });
  }

  endExpired(now: Date): Promise<AccessRequestRecord[]> {
    return this.serial(async () => {
      await this.catchUp();
      const ended: AccessRequestRecord[] = [];
      for (const r of [...this.records.values()]) {
        if (r.status !== 'approved' || r.revoked !== undefined || r.expiredAt !== undefined || r.granted === undefined) continue;
        if (Date.parse(r.granted.expiresAt) > now.getTime()) continue;
        const claim = randomUUID();
        await this.write({ t: 'expire', id: r.id, at: now.toISOString(), claim });
        // Ours only if no other writer's expire event came first.
        if (this.claims.get(r.id) === claim) ended.push(this.records.get(r.id)!);
      }
      return ended;
    });
  }

  unend(id: string): Promise<void> {
    return this.serial(() => this.write({ t: 'unend', id }));
  }

  async close(): Promise<void> {
    // Once every operation already queued has run.
    await this.serial(async () => {});
  }
}
