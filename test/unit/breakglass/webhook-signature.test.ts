// The X-Phi-Gateway-Signature scheme (t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>):
// what the Alerter sends, what verifyWebhookSignature accepts and refuses, the failed-delivery
// counter in /metrics, and the warning `serve` logs for an unsigned webhook.
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Alerter, SIGNATURE_HEADER, signWebhook, verifyWebhookSignature } from '../../../src/breakglass/alerts.js';
import { openBreakGlass } from '../../../src/breakglass/index.js';
import { type AlertPayload, FileOutbox } from '../../../src/breakglass/outbox.js';
import { loadGatewayConfig, UNSIGNED_WEBHOOK_WARNING } from '../../../src/config/gateway.js';
import { createMetrics } from '../../../src/server/metrics.js';
import { capturingLogger, MemorySink, shippedPolicy } from './helpers.js';

const SECRET = 'whsec-unit-0123456789abcdef0123456789abcdef';
const BODY = '{"type":"break-glass-start","patient":"vip","reason":"Unconscious patient"}';
const T = 1_740_823_200; // 2025-03-01T10:00:00Z

describe('verifyWebhookSignature', () => {
  const header = signWebhook(SECRET, BODY, T * 1000);

  it('signs as documented: HMAC-SHA256 over "<t>.<raw body>", hex', () => {
    const expected = createHmac('sha256', SECRET).update(`${T}.${BODY}`).digest('hex');
    expect(header).toBe(`t=${T},v1=${expected}`);
  });

  it('accepts the genuine signature within 5 minutes either way, over a string or the raw bytes', () => {
    expect(verifyWebhookSignature(SECRET, header, BODY, T * 1000)).toEqual({ ok: true, timestamp: T });
    expect(verifyWebhookSignature(SECRET, header, Buffer.from(BODY), new Date((T + 300) * 1000)).ok).toBe(true);
    expect(verifyWebhookSignature(SECRET, header, BODY, (T - 300) * 1000).ok).toBe(true);
  });

  it('refuses a changed body, another secret, a stale or future timestamp', () => {
    expect(verifyWebhookSignature(SECRET, header, BODY.replace('vip', 'vip2'), T * 1000)).toEqual({ ok: false, reason: 'signature mismatch' });
    expect(verifyWebhookSignature(`${SECRET}x`, header, BODY, T * 1000)).toEqual({ ok: false, reason: 'signature mismatch' });
    expect(verifyWebhookSignature(SECRET, header, BODY, (T + 301) * 1000)).toEqual({ ok: false, reason: 'timestamp outside the tolerance' });
    expect(verifyWebhookSignature(SECRET, header, BODY, (T - 301) * 1000)).toEqual({ ok: false, reason: 'timestamp outside the tolerance' });
    // Moving the timestamp to a fresh one breaks the signature: it covers t.
    const moved = header.replace(`t=${T}`, `t=${T + 600}`);
    expect(verifyWebhookSignature(SECRET, moved, BODY, (T + 600) * 1000)).toEqual({ ok: false, reason: 'signature mismatch' });
  });

  it('refuses missing, duplicated and malformed headers', () => {
    expect(verifyWebhookSignature(SECRET, undefined, BODY, T * 1000).ok).toBe(false);
    expect(verifyWebhookSignature(SECRET, [header, header], BODY, T * 1000).ok).toBe(false);
    expect(verifyWebhookSignature(SECRET, '', BODY, T * 1000).ok).toBe(false);
    expect(verifyWebhookSignature(SECRET, header.replace(/t=\d+,/, ''), BODY, T * 1000)).toEqual({ ok: false, reason: 'no timestamp' });
    expect(verifyWebhookSignature(SECRET, `t=${T}`, BODY, T * 1000)).toEqual({ ok: false, reason: 'no v1 signature' });
    expect(verifyWebhookSignature(SECRET, `t=${T},v1=abc`, BODY, T * 1000)).toEqual({ ok: false, reason: 'signature mismatch' });
    expect(verifyWebhookSignature(SECRET, `t=1e9,${header.split(',')[1]}`, BODY, T * 1000).ok).toBe(false);
  });

  it('accepts any matching v1 (a receiver rotating its secret lists both)', () => {
    const other = signWebhook('old-secret-0123456789abcdef0123456789', BODY, T * 1000).split(',')[1];
    expect(verifyWebhookSignature(SECRET, `${header},${other}`, BODY, T * 1000).ok).toBe(true);
    expect(verifyWebhookSignature(SECRET, `t=${T},${other}`, BODY, T * 1000).ok).toBe(false);
  });
});

describe('the Alerter signs what it posts', () => {
  let dir: string;
  let server: Server;
  let url: string;
  const got: { raw: string; headers: IncomingMessage['headers'] }[] = [];
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bg-sign-'));
    got.length = 0;
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        got.push({ raw: Buffer.concat(chunks).toString('utf8'), headers: req.headers });
        res.writeHead(got.length === 1 ? 500 : 204).end();
      });
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  });
  afterEach(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
    rmSync(dir, { recursive: true, force: true });
  });

  const payload: AlertPayload = {
    type: 'break-glass-start',
    alertId: 'alert-1',
    time: '2025-03-01T10:00:00.000Z',
    actor: { iss: 'https://idp.test', sub: 'dr-a', roles: ['clinician'] },
    patient: 'vip',
    session: 'sess-1',
    reason: 'Unconscious patient in the ED',
    reviewUrl: 'https://gw.example/break-glass/sessions/sess-1',
  };

  async function deliver(webhookSecret: string | undefined, audit = new MemorySink()) {
    const { logger } = capturingLogger();
    const a = new Alerter({
      outbox: await FileOutbox.open(dir),
      audit,
      logger,
      webhook: url,
      webhookSecret,
      policyVersion: () => 'v1',
      // A fake clock far in the past: signatures use wall-clock time regardless.
      now: () => new Date('2020-01-01T00:00:00Z'),
      newId: () => crypto.randomUUID(),
      baseDelayMs: 20,
      pollMs: 10,
    });
    a.start();
    await a.raise(payload);
    await expect.poll(() => got.length, { timeout: 5000 }).toBe(2);
    await a.close();
    return audit;
  }

  it('every attempt carries a fresh signature over the exact bytes sent', async () => {
    await deliver(SECRET);
    for (const g of got) {
      expect(verifyWebhookSignature(SECRET, g.headers[SIGNATURE_HEADER], g.raw, Date.now())).toMatchObject({ ok: true });
      expect(JSON.parse(g.raw)).toEqual(payload);
    }
  });

  it('without a secret, no signature header', async () => {
    await deliver(undefined);
    expect(got.map((g) => g.headers[SIGNATURE_HEADER])).toEqual([undefined, undefined]);
  });

  it('counts each failed attempt in phi_gateway_alert_deliveries_failed_total{target}', async () => {
    const metrics = createMetrics({ policy: () => shippedPolicy(), processMetrics: false });
    const before = await metrics.render();
    expect(before).toContain('phi_gateway_alert_deliveries_failed_total{target="webhook"} 0');
    expect(before).toContain('phi_gateway_alert_deliveries_failed_total{target="redis"} 0');
    const sink = new MemorySink();
    await deliver(SECRET, metrics.timeAudit(sink));
    expect(sink.records.map((r) => r.details?.result)).toEqual(['failed', 'delivered']);
    expect(await metrics.render()).toContain('phi_gateway_alert_deliveries_failed_total{target="webhook"} 1');
    // Counted as the record is handed over, even when the audit write then fails.
    sink.failing = true;
    const failing = metrics.timeAudit(sink);
    await failing.write({ ...sink.records[0], id: 'x' }).catch(() => {});
    expect(await metrics.render()).toContain('phi_gateway_alert_deliveries_failed_total{target="webhook"} 2');
  });
});

describe('serve warns about an unsigned webhook', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bg-warn-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  async function warnings(env: NodeJS.ProcessEnv): Promise<string[]> {
    const config = loadGatewayConfig('config/gateway.yaml', { PHI_GATEWAY_AUDIT: `file:${join(dir, 'audit')}`, ...env });
    const { logger, lines } = capturingLogger();
    const bg = await openBreakGlass(config, { audit: new MemorySink(), logger, policy: () => shippedPolicy(), dir: join(dir, 'bg') });
    await (bg as { close(): Promise<void> }).close();
    return lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40).map((l) => l.msg);
  }

  it('logs the warning when alerts.webhook has no secret, and not when it has one', async () => {
    expect(await warnings({ PHI_GATEWAY_ALERT_WEBHOOK: 'http://127.0.0.1:1/hook' })).toContain(UNSIGNED_WEBHOOK_WARNING);
    expect(await warnings({ PHI_GATEWAY_ALERT_WEBHOOK: 'http://127.0.0.1:1/hook', PHI_GATEWAY_ALERT_WEBHOOK_SECRET: SECRET })).not.toContain(UNSIGNED_WEBHOOK_WARNING);
  });
});
