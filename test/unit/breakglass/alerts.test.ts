// Alert delivery against a real HTTP receiver: retries with backoff, audited failures, a persisted
// outbox that survives a restart, and no redirects followed.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Alerter } from '../../../src/breakglass/alerts.js';
import { type AlertPayload, FileOutbox } from '../../../src/breakglass/outbox.js';
import { capturingLogger, MemorySink } from './helpers.js';

interface Receiver {
  server: Server;
  url: string;
  got: { body: AlertPayload; at: number; headers: IncomingMessage['headers'] }[];
  answer: (n: number) => number;
  close(): Promise<void>;
}

async function receiver(answer: (n: number) => number, port = 0): Promise<Receiver> {
  const r = { got: [], answer } as unknown as Receiver;
  r.server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      r.got.push({ body: JSON.parse(data), at: Date.now(), headers: req.headers });
      const status = r.answer(r.got.length);
      res.writeHead(status, status === 302 ? { location: 'http://127.0.0.1:1/elsewhere' } : {}).end();
    });
  });
  await new Promise<void>((ok) => r.server.listen(port, '127.0.0.1', ok));
  r.url = `http://127.0.0.1:${(r.server.address() as AddressInfo).port}/hook`;
  r.close = () => new Promise((ok) => r.server.close(() => ok()));
  return r;
}

const payload = (id: string): AlertPayload => ({
  type: 'break-glass-start',
  alertId: id,
  time: '2025-03-01T10:00:00.000Z',
  actor: { iss: 'https://idp.test', sub: 'dr-a', roles: ['clinician'] },
  patient: 'vip',
  session: 'sess-1',
  reason: 'Unconscious patient in the ED, chart restricted',
  reviewUrl: 'https://gw.example/break-glass/sessions/sess-1',
});

let dir: string;
let audit: MemorySink;
const open: { close(): Promise<void> }[] = [];

async function alerter(webhook: string, over: Partial<ConstructorParameters<typeof Alerter>[0]> = {}) {
  const { logger, lines } = capturingLogger();
  const a = new Alerter({
    outbox: await FileOutbox.open(dir),
    audit,
    logger,
    webhook,
    policyVersion: () => 'v1',
    now: () => new Date(),
    newId: () => crypto.randomUUID(),
    baseDelayMs: 50,
    maxDelayMs: 400,
    pollMs: 10,
    timeoutMs: 1000,
    ...over,
  });
  open.push(a);
  return { a, lines };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bg-alert-'));
  audit = new MemorySink();
});
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('webhook alerts', () => {
  it('retries with exponential backoff until delivered, auditing each failure and the late success', async () => {
    const rx = await receiver((n) => (n < 4 ? 503 : 204));
    open.push(rx);
    const { a, lines } = await alerter(rx.url);
    a.start();
    await a.raise(payload('al-1'));
    await expect.poll(() => rx.got.length, { timeout: 5000 }).toBe(4);
    expect(rx.got.every((g) => g.body.alertId === 'al-1' && g.headers['x-phi-gateway-alert-id'] === 'al-1')).toBe(true);
    const gaps = rx.got.slice(1).map((g, i) => g.at - rx.got[i].at);
    // 50, 100, 200 ms nominal: each wait at least the backoff, and growing.
    expect(gaps[0]).toBeGreaterThanOrEqual(45);
    expect(gaps[1]).toBeGreaterThanOrEqual(95);
    expect(gaps[2]).toBeGreaterThanOrEqual(195);
    await expect.poll(() => audit.records.length).toBe(4);
    expect(audit.records.map((r) => [r.kind, r.details?.result, r.details?.attempt])).toEqual([
      ['alert', 'failed', 1],
      ['alert', 'failed', 2],
      ['alert', 'failed', 3],
      ['alert', 'delivered', 4],
    ]);
    expect(audit.records[0]).toMatchObject({ decision: 'error', status: 502, rule: 'alerts.webhook: failed (HTTP 503)', breakGlass: { session: 'sess-1' }, disclosed: { patients: ['vip'] } });
    // Delivered: nothing left to send after a restart. Stop this alerter first: the outbox entry is
    // removed after the 'delivered' record is written (a crash in between resends rather than
    // loses), and opening compacts the file, which only one live process may do.
    await a.close();
    expect(await (await FileOutbox.open(dir)).pending()).toEqual([]);
    expect(lines.join('')).not.toContain('Unconscious');
    expect(lines.join('')).not.toContain(rx.url);
  });

  it('keeps an undelivered alert across a restart and delivers it when the receiver comes back', async () => {
    const rx = await receiver(() => 204);
    const port = (rx.server.address() as AddressInfo).port;
    await rx.close(); // the receiver is down
    const first = await alerter(rx.url);
    first.a.start();
    await first.a.raise(payload('al-2'));
    await expect.poll(() => audit.records.length).toBeGreaterThanOrEqual(1);
    expect(audit.records[0].details).toMatchObject({ result: 'failed', error: 'ECONNREFUSED' });
    await first.a.close();

    const back = await receiver(() => 204, port);
    open.push(back);
    const second = await alerter(back.url);
    second.a.start();
    await expect.poll(() => back.got.map((g) => g.body.alertId), { timeout: 5000 }).toEqual(['al-2']);
    await expect.poll(() => audit.records.at(-1)?.details?.result).toBe('delivered');
    await second.a.close(); // a restart: only one live process owns (and compacts) the outbox file
    expect(await (await FileOutbox.open(dir)).pending()).toEqual([]);
  });

  it('does not follow redirects (the payload would go where nobody configured)', async () => {
    const rx = await receiver(() => 302);
    open.push(rx);
    const { a } = await alerter(rx.url, { baseDelayMs: 10_000 });
    await a.raise(payload('al-3'));
    await expect.poll(() => audit.records.length).toBe(1);
    expect(audit.records[0].rule).toBe('alerts.webhook: failed (HTTP 302)');
    expect(rx.got).toHaveLength(1);
    await a.close();
    expect((await (await FileOutbox.open(dir)).pending()).map((i) => i.attempts)).toEqual([1]);
  });

  it('retries only the targets that failed', async () => {
    const rx = await receiver((n) => (n === 1 ? 500 : 200));
    open.push(rx);
    const published: string[] = [];
    const { a } = await alerter(rx.url, { redis: { channel: 'c', publish: async (_c, m) => void published.push(m) } });
    a.start();
    await a.raise(payload('al-4'));
    await expect.poll(() => rx.got.length, { timeout: 3000 }).toBe(2);
    expect(published).toHaveLength(1);
  });
});
