/**
 * Break-glass sessions (SPEC 3.3): what is stored, what the review queue shows, what alerts carry.
 * A session belongs to one actor (iss + sub) and one patient, and never widens beyond that patient.
 */

export interface SessionActor {
  readonly iss: string;
  readonly sub: string;
  readonly clientId?: string | undefined;
  readonly roles: readonly string[];
}

export type ReviewOutcome = 'justified' | 'unjustified';

export interface BreakGlassReview {
  readonly reviewer: { readonly iss: string | undefined; readonly sub: string };
  readonly outcome: ReviewOutcome;
  readonly note: string | undefined;
  /** ISO 8601. */
  readonly at: string;
  /** `http` or `cli`. */
  readonly via: 'http' | 'cli';
  /** X-Request-Id (http) or audit record id (cli) of the review. */
  readonly auditId: string;
}

export interface BreakGlassSession {
  readonly id: string;
  readonly actor: SessionActor;
  readonly patient: string;
  /** The attested reason, as given when the session opened. */
  readonly reason: string;
  /** The coded part (`CODE: text`) when the policy lists reason codes. */
  readonly reasonCode: string | undefined;
  /** ISO 8601 start and expiry. */
  readonly startedAt: string;
  readonly expiresAt: string;
  /** X-Request-Id of the request that opened the session. */
  readonly openedBy: string;
  /** Set once the end (expiry) Security Alert has been audited. */
  readonly endedAt: string | undefined;
  /** Append-only: a later review never erases an earlier one. */
  readonly reviews: readonly BreakGlassReview[];
}

export interface BreakGlassStats {
  /** Sessions not yet expired. */
  readonly open: number;
  /** Sessions (open or not) without any review. */
  readonly awaitingReview: number;
  /** Age of the oldest unreviewed session, seconds (0 when none). */
  readonly oldestUnreviewedAgeSec: number;
}

export interface OpenRequest {
  readonly id: string;
  readonly actor: SessionActor;
  readonly patient: string;
  readonly reason: string;
  readonly reasonCode: string | undefined;
  readonly requestId: string;
  readonly now: Date;
  readonly sessionMs: number;
  readonly maxSessionsPerDay: number;
}

export type OpenResult =
  | { readonly kind: 'opened' | 'reused'; readonly session: BreakGlassSession }
  | { readonly kind: 'limited'; readonly count: number };

/** Where sessions live: Redis (shared by replicas) or an embedded JSON-lines file. */
export interface SessionStore {
  /**
   * Atomically: reuse the actor's unexpired session for the patient, or (if the actor started fewer
   * than `maxSessionsPerDay` sessions in the last 24 h) open a new one.
   */
  open(req: OpenRequest): Promise<OpenResult>;
  get(id: string): Promise<BreakGlassSession | undefined>;
  /** Every session, oldest first. */
  list(): Promise<BreakGlassSession[]>;
  /** Appends a review; undefined when the session does not exist. */
  addReview(id: string, review: BreakGlassReview): Promise<BreakGlassSession | undefined>;
  /**
   * Marks as ended the sessions expired at `now` and not yet ended, and returns them. Across
   * replicas each session is returned by exactly one call (so its end is audited once).
   */
  endExpired(now: Date): Promise<BreakGlassSession[]>;
  /** Undoes endExpired for one session whose end record could not be written (retried later). */
  unend(id: string): Promise<void>;
  close(): Promise<void>;
}

export function isOpen(s: BreakGlassSession, now: Date): boolean {
  return Date.parse(s.expiresAt) > now.getTime();
}
