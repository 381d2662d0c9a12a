/**
 * The clientError handler on a real Node HTTP server with short timeouts (the gateway's server has
 * Node's defaults: a 60 s headers timeout, checked every 30 s): a slowloris client gets a 408
 * OperationOutcome after its audit record; an audit sink that cannot write turns the answer into
 * 503 audit-unavailable (unless audit.failOpen); the request's bytes reach neither.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import type { AuditRecord, AuditSink } from '../../../src/audit/record.js';
import { clientErrorCode, createClientErrorHandler } from '../../../src/server/client-error.js';
import { createLogger } from '../../../src/server/logger.js';
import { readAll, recordsOf } from '../../helpers/audit.js';

const MARKER = 'PHI-MARKER-0815';
const cleanup: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function serve(audit: AuditSink, failOpen = false): Promise<{ port: number; logs: string[] }> {
  const logs: string[] = [];
  const server: Server = createServer({ headersTimeout: 200, requestTimeout: 300, connectionsCheckingInterval: 50 }, (_req, res) => {
    res.end('routed');
  });
  server.on(
    'clientError',
    createClientErrorHandler({
      audit,
      logger: createLogger('info', { write: (l: string) => void logs.push(l) }),
      failOpen,
      policyVersion: () => 'policy-v1',
    }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, logs };
}

/** Sends `bytes` and returns what the server sent until it closed the connection. */
function exchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(port, '127.0.0.1', () => s.write(bytes));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('error', reject);
    s.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

async function fileSink(): Promise<{ sink: FileAuditSink; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'phi-client-error-'));
  const sink = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'client-error-test' });
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  cleanup.push(() => sink.close());
  return { sink, dir };
}

function statusOf(raw: string): number {
  return Number(raw.split(' ')[1]);
}

function headerOf(raw: string, name: string): string | undefined {
  const m = new RegExp(`^${name}: (.*)$`, 'im').exec(raw.slice(0, raw.indexOf('\r\n\r\n')));
  return m?.[1].trim();
}

function codeOf(raw: string): string {
  const oo = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { issue: Array<{ details: { coding: Array<{ code: string }> } }> };
  return oo.issue[0].details.coding[0].code;
}

describe('clientErrorCode', () => {
  it('maps Node codes to catalogue codes', () => {
    expect(clientErrorCode({ code: 'ERR_HTTP_REQUEST_TIMEOUT' })).toBe('request-timeout');
    expect(clientErrorCode({ code: 'HPE_HEADER_OVERFLOW' })).toBe('request-header-too-large');
    expect(clientErrorCode({ code: 'HPE_INVALID_METHOD' })).toBe('bad-request');
    expect(clientErrorCode({})).toBe('bad-request');
  });
});

describe('clientError handler', () => {
  it('answers a slowloris client 408 after writing its audit record', async () => {
    const { sink, dir } = await fileSink();
    const { port, logs } = await serve(sink);
    const t0 = Date.now();
    // Headers never finished: Node's headers timeout fires.
    const raw = await exchange(port, `GET /fhir/Patient/${MARKER} HTTP/1.1\r\nHost: gw\r\nX-Slow: ${MARKER}`);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(statusOf(raw), raw).toBe(408);
    expect(codeOf(raw)).toBe('request-timeout');
    expect(raw).not.toContain(MARKER);
    const id = headerOf(raw, 'x-request-id');
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(headerOf(raw, 'cache-control')).toBe('no-store');
    await sink.close();
    const records = recordsOf(await readAll(`file:${dir}`));
    const r = records.find((x) => x.id === id);
    expect(r).toMatchObject({
      kind: 'fhir',
      decision: 'deny',
      status: 408,
      rule: 'request-timeout',
      policyVersion: 'policy-v1',
      client: { address: '127.0.0.1' },
      request: { method: '', path: '' },
      details: { reason: 'ERR_HTTP_REQUEST_TIMEOUT' },
    });
    expect(JSON.stringify(records)).not.toContain(MARKER);
    expect(logs.join('\n')).not.toContain(MARKER);
  });

  it('withholds the answer as 503 audit-unavailable when the record cannot be written', async () => {
    const written: AuditRecord[] = [];
    const failing: AuditSink = {
      write: async (r) => {
        written.push(r);
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      },
      ready: async () => false,
      close: async () => {},
    };
    const { port, logs } = await serve(failing);
    const raw = await exchange(port, `GET /fhir/Patient HTTP/1.1\r\nHost: gw\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`);
    expect(statusOf(raw)).toBe(503);
    expect(codeOf(raw)).toBe('audit-unavailable');
    expect(written).toHaveLength(1);
    expect(written[0].status).toBe(431);
    // The log says why, with the error's code and message.
    const line = logs.find((l) => l.includes('audit write failed'));
    expect(JSON.parse(line!).err).toMatchObject({ code: 'ENOSPC', message: 'ENOSPC: no space left on device, write' });
  });

  it('answers anyway when audit.failOpen is on', async () => {
    const failing: AuditSink = { write: async () => Promise.reject(new Error('down')), ready: async () => false, close: async () => {} };
    const { port } = await serve(failing, true);
    const raw = await exchange(port, `GET /fhir/Patient HTTP/1.1\r\nHost: gw\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`);
    expect(statusOf(raw)).toBe(431);
    expect(codeOf(raw)).toBe('request-header-too-large');
  });
});
