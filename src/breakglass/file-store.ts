/**
 * The embedded session store: an append-only JSON-lines log (`sessions.jsonl`) of open, review,
 * end and un-end events, replayed into memory. Survives restarts; shared with the CLI (which
 * appends reviews) through the log. One gateway process per store: replicas need Redis.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { JsonLinesLog, serialQueue } from './jsonl.js';
import type { BreakGlassReview, BreakGlassSession, OpenRequest, OpenResult, SessionStore } from './types.js';

type Event =
  | { readonly t: 'open'; readonly session: BreakGlassSession }
  | { readonly t: 'review'; readonly id: string; readonly review: BreakGlassReview }
  | { readonly t: 'end'; readonly id: string; readonly at: string }
  | { readonly t: 'unend'; readonly id: string };

const DAY_MS = 86_400_000;

export class FileSessionStore implements SessionStore {
  private readonly sessions = new Map<string, BreakGlassSession>();
  /** Serializes operations: read-check-append must not interleave within this process. */
  private readonly serial = serialQueue();

  private constructor(private readonly log: JsonLinesLog) {}

  /** `dir` holds `sessions.jsonl`, e.g. `data/break-glass`. */
  static async open(dir: string, logger?: Logger): Promise<FileSessionStore> {
    const store = new FileSessionStore(await JsonLinesLog.open(join(dir, 'sessions.jsonl'), logger));
    await store.catchUp();
    return store;
  }


  private async catchUp(): Promise<void> {
    for (const e of (await this.log.readNew()) as Event[]) this.apply(e);
  }

  private apply(e: Event): void {
    if (e === null || typeof e !== 'object') return;
    if (e.t === 'open' && e.session && typeof e.session.id === 'string') {
      this.sessions.set(e.session.id, { ...e.session, endedAt: undefined, reviews: [] });
      return;
    }
    const s = typeof (e as { id?: unknown }).id === 'string' ? this.sessions.get((e as { id: string }).id) : undefined;
    if (!s) return;
    if (e.t === 'review') this.sessions.set(s.id, { ...s, reviews: [...s.reviews, e.review] });
    else if (e.t === 'end') this.sessions.set(s.id, { ...s, endedAt: e.at });
    else if (e.t === 'unend') this.sessions.set(s.id, { ...s, endedAt: undefined });
  }

  private async write(e: Event): Promise<void> {
    await this.log.append(e);
    // Our own line comes back through catchUp (with anything the CLI appended before it).
    await this.catchUp();
  }

  open(req: OpenRequest): Promise<OpenResult> {
    return this.serial(async () => {
      await this.catchUp();
      const now = req.now.getTime();
      let startedToday = 0;
      for (const s of this.sessions.values()) {
        if (s.actor.iss !== req.actor.iss || s.actor.sub !== req.actor.sub) continue;
        if (s.patient === req.patient && Date.parse(s.expiresAt) > now && Date.parse(s.startedAt) <= now) {
          return { kind: 'reused', session: s };
        }
        const started = Date.parse(s.startedAt);
        if (started > now - DAY_MS && started <= now) startedToday++;
      }
      if (startedToday >= req.maxSessionsPerDay) return { kind: 'limited', count: startedToday };
      const session: BreakGlassSession = {
        id: req.id,
        actor: req.actor,
        patient: req.patient,
        reason: req.reason,
        reasonCode: req.reasonCode,
        startedAt: req.now.toISOString(),
        expiresAt: new Date(now + req.sessionMs).toISOString(),
        openedBy: req.requestId,
        endedAt: undefined,
        reviews: [],
      };
      await this.write({ t: 'open', session });
      return { kind: 'opened', session: this.sessions.get(session.id) ?? session };
    });
  }

  get(id: string): Promise<BreakGlassSession | undefined> {
    return this.serial(async () => {
      await this.catchUp();
      return this.sessions.get(id);
    });
  }

  list(): Promise<BreakGlassSession[]> {
    return this.serial(async () => {
      await this.catchUp();
      return [...this.sessions.values()].sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt));
    });
  }

  addReview(id: string, review: BreakGlassReview): Promise<BreakGlassSession | undefined> {
    return this.serial(async () => {
      await this.catchUp();
      if (!this.sessions.has(id)) return undefined;
      await this.write({ t: 'review', id, review });
      return this.sessions.get(id);
    });
  }

  endExpired(now: Date): Promise<BreakGlassSession[]> {
    return this.serial(async () => {
      await this.catchUp();
      const ended: BreakGlassSession[] = [];
      for (const s of this.sessions.values()) {
        if (s.endedAt !== undefined || Date.parse(s.expiresAt) > now.getTime()) continue;
        await this.write({ t: 'end', id: s.id, at: now.toISOString() });
        ended.push(this.sessions.get(s.id) ?? s);
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
