// Signed break-glass webhooks end to end: a real gateway (demo data, real IdP) posts its alert to a
// node:http receiver that accepts only what verifyWebhookSignature accepts with the shared secret.
// The receiver refuses the first delivery, so the failed attempt shows in /metrics and the retry
// (signed afresh) is what gets through; forged alerts sent to the same receiver are refused.
import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIGNATURE_HEADER, signWebhook, verifyWebhookSignature } from '../../src/breakglass/alerts.js';
import { breakGlassDir } from '../../src/breakglass/index.js';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const SECRET = 'whsec-integration-0123456789abcdef0123456789abcdef';
const REASON = 'Unconscious patient in the ED, restricted chart needed';

interface Delivery {
  readonly raw: string;
  readonly signature: string | undefined;
  readonly verdict: ReturnType<typeof verifyWebhookSignature>;
  readonly status: number;
}

interface Receiver {
  readonly url: string;
  readonly deliveries: Delivery[];
  /** Answer this status to the next N valid deliveries (a receiver outage). */
  failNext: number;
  close(): Promise<void>;
}

async function receiver(): Promise<Receiver> {
  const rx: Receiver = {
    url: '',
    deliveries: [],
    failNext: 0,
    close: async () => {},
  };
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      // Verify over the raw bytes, before any JSON parsing: exactly what a receiver must do.
      const raw = Buffer.concat(chunks);
      const signature = req.headers[SIGNATURE_HEADER];
      const verdict = verifyWebhookSignature(SECRET, signature, raw, Date.now());
      let status = verdict.ok ? 204 : 401;
      if (verdict.ok && rx.failNext > 0) {
        rx.failNext--;
        status = 503;
      }
      rx.deliveries.push({ raw: raw.toString('utf8'), signature: typeof signature === 'string' ? signature : undefined, verdict, status });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(rx, {
    url: `http://127.0.0.1:${port}/hooks/break-glass`,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  });
}

function failedDeliveries(metrics: string, target: string): number | undefined {
  const line = metrics.split('\n').find((l) => l.startsWith(`phi_gateway_alert_deliveries_failed_total{target="${target}"} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

describe('signed break-glass webhooks', () => {
  let stack: Stack;
  let rx: Receiver;
  const admin = () => `http://${stack.config.admin.host}:${stack.config.admin.port}`;
  const scrape = async () => (await fetch(`${admin()}/metrics`)).text();

  beforeAll(async () => {
    rx = await receiver();
    stack = await startStack({ env: { PHI_GATEWAY_ALERT_WEBHOOK: rx.url, PHI_GATEWAY_ALERT_WEBHOOK_SECRET: SECRET } });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    await rx?.close();
    if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
  });

  it('starts with no failed deliveries and no unsigned-webhook warning', async () => {
    const text = await scrape();
    expect(failedDeliveries(text, 'webhook')).toBe(0);
    expect(failedDeliveries(text, 'redis')).toBe(0);
    expect(stack.logs.join('\n')).not.toContain('alerts.webhook has no secret');
  });

  it('delivers a real break-glass alert the receiver verifies; a refused attempt is counted and retried', async () => {
    rx.failNext = 1;
    const res = await stack.get(`/Patient/${DEMO.patients.vip}`, {
      role: 'clinician',
      purpose: 'BTG',
      tokenClaims: { sub: 'dr-house' },
      headers: { 'x-break-glass-reason': REASON },
    });
    expect(res.status).toBe(200);
    const session = res.headers.get('x-break-glass-session');
    // First attempt refused by the receiver (503), the retry accepted (204).
    await expect.poll(() => rx.deliveries.map((d) => d.status), { timeout: 15_000 }).toEqual([503, 204]);
    for (const d of rx.deliveries) {
      expect(d.verdict.ok).toBe(true);
      expect(d.signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    }
    const alert = JSON.parse(rx.deliveries[1].raw);
    expect(alert).toMatchObject({ type: 'break-glass-start', session, patient: DEMO.patients.vip, reason: REASON, actor: { sub: 'dr-house' } });
    // Same alert both times (the receiver dedupes on alertId).
    expect(JSON.parse(rx.deliveries[0].raw).alertId).toBe(alert.alertId);
    expect(failedDeliveries(await scrape(), 'webhook')).toBe(1);
    // The failure is in the audit trail too, with the receiver's status.
    const records = await stack.auditRecords();
    expect(records.filter((r) => r.kind === 'alert').map((r) => r.details?.result)).toEqual(['failed', 'delivered']);
  });

  it('refuses forged alerts: changed body, wrong secret, stale or future timestamp, no signature', async () => {
    const genuine = rx.deliveries.at(-1)!;
    const before = rx.deliveries.length;
    const post = (body: string, signature?: string) =>
      fetch(rx.url, { method: 'POST', headers: { 'content-type': 'application/json', ...(signature ? { [SIGNATURE_HEADER]: signature } : {}) }, body });
    const changed = genuine.raw.replace('dr-house', 'dr-other');
    expect(changed).not.toBe(genuine.raw);
    const now = Date.now();
    const forged: Array<[string, Response]> = [
      ['body changed, original signature', await post(changed, genuine.signature)],
      ['wrong secret', await post(genuine.raw, signWebhook('not-the-shared-secret-0123456789abcdef', genuine.raw, now))],
      ['timestamp 6 minutes old', await post(genuine.raw, signWebhook(SECRET, genuine.raw, now - 6 * 60_000))],
      ['timestamp 6 minutes ahead', await post(genuine.raw, signWebhook(SECRET, genuine.raw, now + 6 * 60_000))],
      ['no signature', await post(genuine.raw)],
    ];
    for (const [, res] of forged) expect(res.status).toBe(401);
    expect(rx.deliveries.slice(before).map((d) => (d.verdict.ok ? 'ok' : d.verdict.reason))).toEqual([
      'signature mismatch',
      'signature mismatch',
      'timestamp outside the tolerance',
      'timestamp outside the tolerance',
      'no signature header',
    ]);
    // A fresh signature over the same bytes with the shared secret passes: the rejections above are about the forgery.
    expect((await post(genuine.raw, signWebhook(SECRET, genuine.raw, Date.now()))).status).toBe(204);
  });
});
