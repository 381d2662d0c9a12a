/**
 * Break-glass alerts: a `warn` log line at once, then delivery (webhook POST, Redis PUBLISH) from a
 * persisted outbox with exponential backoff, retried until delivered. Delivery never blocks the
 * clinician; every failed attempt is audited (kind `alert`) and so is a late success.
 *
 * Webhook POSTs are signed when a secret is configured, as Stripe signs its webhooks:
 *
 *   X-Phi-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 *
 * A receiver recomputes the HMAC over the raw body bytes (before any JSON parsing), compares in
 * constant time and refuses a timestamp more than 5 minutes from its clock: see
 * `verifyWebhookSignature`. Each attempt is signed afresh; `alertId` in the body identifies retries.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../audit/record.js';
import type { AlertPayload, AlertTarget, Outbox, OutboxItem } from './outbox.js';

export interface AlerterOptions {
  readonly outbox: Outbox;
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly webhook: string | undefined;
  /** Signs each webhook POST (X-Phi-Gateway-Signature); undefined: unsigned. */
  readonly webhookSecret?: string | undefined;
  /** PUBLISH on this channel (when Redis is configured). */
  readonly redis?: { readonly channel: string; publish(channel: string, message: string): Promise<unknown> } | undefined;
  readonly policyVersion: () => string;
  readonly now: () => Date;
  readonly newId: () => string;
  /** First retry delay (default 1 s), doubled per attempt up to maxDelayMs (default 5 min). */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Per webhook attempt (default 5 s). */
  readonly timeoutMs?: number;
  /** How often due retries are looked for (default 1 s). */
  readonly pollMs?: number;
  readonly fetch?: typeof fetch;
}

const ALERT_MESSAGES: Record<AlertPayload['type'], string> = {
  'break-glass-start': 'BREAK-GLASS session opened',
  'break-glass-limit': 'BREAK-GLASS daily session limit exceeded',
  anomaly: 'ANOMALY rule fired',
  'access-request': 'ACCESS REQUEST awaiting approval',
  'grant-misuse': 'ACCESS GRANT used outside its scope',
};

function describeError(e: unknown): string {
  const err = e as { name?: string; code?: string; cause?: { code?: string } };
  // Codes only: messages can echo the URL, which may carry a webhook secret.
  return err?.cause?.code ?? err?.code ?? err?.name ?? 'error';
}

export class Alerter {
  private readonly base: number;
  private readonly max: number;
  private readonly timeout: number;
  private readonly fetchImpl: typeof fetch;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(private readonly o: AlerterOptions) {
    this.base = o.baseDelayMs ?? 1000;
    this.max = o.maxDelayMs ?? 300_000;
    this.timeout = o.timeoutMs ?? 5000;
    this.fetchImpl = o.fetch ?? fetch;
  }

  /** Starts the retry loop (also delivers what a previous process left in the outbox). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.deliverDue(), this.o.pollMs ?? 1000);
    this.timer.unref();
    void this.deliverDue();
  }

  targets(): AlertTarget[] {
    const t: AlertTarget[] = [];
    if (this.o.webhook) t.push('webhook');
    if (this.o.redis) t.push('redis');
    return t;
  }

  /** Logs, persists and kicks off delivery. Never throws: alerting must not block care. */
  async raise(payload: AlertPayload): Promise<void> {
    this.o.logger.warn(
      // No patient id in logs (PHI); the session id leads the privacy office to it in the audit trail.
      { alert: { type: payload.type, id: payload.alertId, session: payload.session, actor: payload.actor.sub, rule: payload.anomaly?.rule } },
      ALERT_MESSAGES[payload.type],
    );
    const targets = this.targets();
    if (targets.length === 0) return;
    const item: OutboxItem = { id: payload.alertId, payload, targets, attempts: 0, nextAt: Date.now() };
    try {
      await this.o.outbox.add(item);
    } catch (e) {
      this.o.logger.error({ alert: { id: payload.alertId }, err: e }, 'break-glass alert could not be persisted; delivering once from memory');
      await this.attempt(item, false);
      return;
    }
    void this.deliverDue();
  }

  /** Attempts every due item once. Concurrent calls coalesce. */
  deliverDue(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        let items: OutboxItem[];
        try {
          items = await this.o.outbox.pending();
        } catch (e) {
          this.o.logger.error({ err: e }, 'break-glass alert outbox unreadable');
          return;
        }
        const now = Date.now();
        for (const item of items) {
          if (this.closed) return;
          if (item.nextAt > now) continue;
          if (!(await this.o.outbox.claim(item.id, this.timeout * 3).catch(() => false))) continue;
          await this.attempt(item, true);
        }
      } while (this.again && !this.closed);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async attempt(item: OutboxItem, persisted: boolean): Promise<void> {
    const remaining: AlertTarget[] = [];
    const attempt = item.attempts + 1;
    const delay = Math.min(this.max, this.base * 2 ** Math.min(item.attempts, 30));
    for (const target of item.targets) {
      try {
        await this.send(target, item.payload);
        if (item.attempts > 0) await this.auditAlert(item.payload, target, attempt, 'delivered', undefined);
      } catch (e) {
        remaining.push(target);
        const error = describeError(e);
        this.o.logger.warn({ alert: { id: item.id, target, attempt, error } }, 'break-glass alert delivery failed; will retry');
        await this.auditAlert(item.payload, target, attempt, 'failed', error, new Date(Date.now() + delay).toISOString());
      }
    }
    if (!persisted) return;
    try {
      if (remaining.length === 0) await this.o.outbox.done(item.id);
      else await this.o.outbox.update({ ...item, targets: remaining, attempts: attempt, nextAt: Date.now() + delay });
    } catch (e) {
      this.o.logger.error({ alert: { id: item.id }, err: e }, 'break-glass alert outbox update failed');
    }
  }

  private async send(target: AlertTarget, payload: AlertPayload): Promise<void> {
    const body = JSON.stringify(payload);
    if (target === 'redis') {
      if (!this.o.redis) throw new Error('no redis');
      await this.o.redis.publish(this.o.redis.channel, body);
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-phi-gateway-alert-id': payload.alertId };
    // Wall-clock time, not the injectable clock: the receiver checks freshness against its own.
    if (this.o.webhookSecret !== undefined) headers[SIGNATURE_HEADER] = signWebhook(this.o.webhookSecret, body, Date.now());
    const res = await this.fetchImpl(this.o.webhook!, {
      method: 'POST',
      headers,
      body,
      // A redirect would send the payload somewhere nobody configured.
      redirect: 'manual',
      signal: AbortSignal.timeout(this.timeout),
    });
    await res.body?.cancel().catch(() => {});
    if (res.status < 200 || res.status >= 300) throw Object.assign(new Error('webhook status'), { code: `HTTP ${res.status}` });
  }

  private async auditAlert(
    p: AlertPayload,
    target: AlertTarget,
    attempt: number,
    result: 'delivered' | 'failed',
    error: string | undefined,
    nextAttemptAt?: string,
  ): Promise<void> {
    const record: AuditRecord = {
      id: this.o.newId(),
      time: this.o.now().toISOString(),
      kind: 'alert',
      // The user the alert is about: auditors find it with the actor's other records.
      actor: { iss: p.actor.iss, sub: p.actor.sub, clientId: p.actor.clientId, roles: p.actor.roles },
      purpose: p.type === 'anomaly' ? undefined : 'BTG',
      breakGlass: p.session !== undefined ? { session: p.session, reason: p.reason ?? '' } : undefined,
      client: { address: '' },
      request: { method: 'POST', path: target === 'webhook' ? 'alert:webhook' : 'alert:redis', interaction: undefined, resourceType: undefined },
      decision: result === 'delivered' ? 'allow' : 'error',
      rule: `alerts.${target === 'webhook' ? 'webhook' : 'redisChannel'}: ${result}${error ? ` (${error})` : ''}`,
      disclosed: { resources: [], patients: p.patient ? [p.patient] : [], elementsRemoved: 0, resourcesWithheld: 0 },
      status: result === 'delivered' ? 200 : 502,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion: this.o.policyVersion(),
      details: { alertId: p.alertId, alertType: p.type, target, attempt, result, error, nextAttemptAt },
    };
    try {
      await this.o.audit.write(record);
    } catch (e) {
      this.o.logger.error({ alert: { id: p.alertId }, err: e }, 'audit write for a break-glass alert failed');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
    await this.o.outbox.close();
  }
}

/** The header carrying the signature (lower case, as Node's http module presents it). */
export const SIGNATURE_HEADER = 'x-phi-gateway-signature';
/** How far a signature's timestamp may be from the receiver's clock (either way). */
export const SIGNATURE_TOLERANCE_SEC = 300;

function hmacHex(secret: string, t: string, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');
}

/** The X-Phi-Gateway-Signature value for `body` sent at `nowMs`. */
export function signWebhook(secret: string, body: string, nowMs: number): string {
  const t = String(Math.floor(nowMs / 1000));
  return `t=${t},v1=${hmacHex(secret, t, body)}`;
}

export type SignatureCheck = { readonly ok: true; readonly timestamp: number } | { readonly ok: false; readonly reason: string };

/**
 * For webhook receivers: whether `header` (the X-Phi-Gateway-Signature value) signs `rawBody` (the
 * request body exactly as received, before any parsing) with `secret`, within 5 minutes of `now`.
 * Several `v1=` entries are accepted if any matches (a receiver rotating its secret).
 *
 *   const check = verifyWebhookSignature(secret, req.headers['x-phi-gateway-signature'], raw);
 *   if (!check.ok) return res.writeHead(401).end();
 *
 * Deduplicate on the body's `alertId`: a retried alert is signed again with a new timestamp.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | readonly string[] | undefined,
  rawBody: string | Uint8Array,
  now: Date | number = Date.now(),
): SignatureCheck {
  if (typeof header !== 'string') return { ok: false, reason: header === undefined ? 'no signature header' : 'more than one signature header' };
  let t: string | undefined;
  const v1: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't') t = v;
    else if (k === 'v1') v1.push(v);
  }
  if (t === undefined || !/^\d{1,12}$/.test(t)) return { ok: false, reason: 'no timestamp' };
  if (v1.length === 0) return { ok: false, reason: 'no v1 signature' };
  const nowSec = (typeof now === 'number' ? now : now.getTime()) / 1000;
  if (Math.abs(nowSec - Number(t)) > SIGNATURE_TOLERANCE_SEC) return { ok: false, reason: 'timestamp outside the tolerance' };
  const expected = Buffer.from(hmacHex(secret, t, rawBody), 'hex');
  for (const sig of v1) {
    if (!/^[0-9a-f]{64}$/i.test(sig)) continue;
    if (timingSafeEqual(expected, Buffer.from(sig, 'hex'))) return { ok: true, timestamp: Number(t) };
  }
  return { ok: false, reason: 'signature mismatch' };
}
