// Issue 6: memory is bounded by configuration, not by the number of clients. Upstream bytes held by
// requests in flight share limits.bufferBytes, and limits.maxInflightRequests caps requests at once;
// past either, a request is refused at once with 503 gateway-busy + Retry-After (audited), and the
// allowance comes back when the holding response is released.
import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/types.js';
import { type FaultyUpstream, startFaultyUpstream } from '../helpers/faulty-upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const MiB = 1024 * 1024;

function patient(id: string, bytes: number): string {
  const pad = 'x'.repeat(bytes);
  return JSON.stringify({ resourceType: 'Patient', id, gender: 'other', name: [{ text: pad }] });
}

/** Sends the first `head` bytes, then holds the answer open until the returned release() is called. */
function held(body: string, head: number) {
  let res: ServerResponse | undefined;
  let sent!: () => void;
  const headSent = new Promise<void>((r) => (sent = r));
  return {
    behaviour: (_req: unknown, r: ServerResponse) => {
      res = r;
      r.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': String(Buffer.byteLength(body)) });
      r.write(body.slice(0, head), () => setTimeout(sent, 50));
    },
    headSent,
    release: () => res?.end(body.slice(head)),
  };
}

let up: FaultyUpstream | undefined;
let stack: Stack | undefined;
afterEach(async () => {
  await stack?.close();
  await up?.close();
  stack = undefined;
  up = undefined;
});

async function start(limits: Partial<GatewayConfig['limits']>, routes: Parameters<typeof startFaultyUpstream>[0]) {
  up = await startFaultyUpstream(routes);
  stack = await startStack({ upstreamUrl: up.url, configure: (c) => ({ ...c, limits: { ...c.limits, ...limits } }) });
  return stack;
}

const opts = { role: 'clinician', purpose: 'TREAT' };

describe('in-flight memory budget', () => {
  it('refuses a request whose body would pass bufferBytes while another holds it, then admits again', async () => {
    const a = held(patient('a', Math.round(1.5 * MiB)), MiB + MiB / 2);
    const s = await start({ bufferBytes: 2 * MiB, responseBodyBytes: 2 * MiB, decompressedBytes: 4 * MiB }, {
      '/Patient/a': a.behaviour,
      '/Patient/b': (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.end(patient('b', MiB));
      },
    });
    const first = s.get('/Patient/a', opts);
    await a.headSent;
    const busy = await s.get('/Patient/b', opts);
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('1');
    const oo = (await busy.json()) as { issue: Array<{ details: { coding: Array<{ code: string }> } }> };
    expect(oo.issue[0].details.coding[0].code).toBe('gateway-busy');
    a.release();
    const ok = await first;
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { id: string }).id).toBe('a');
    // The holder's allowance is back: the same request now fits.
    const again = await s.get('/Patient/b', opts);
    expect(again.status).toBe(200);
    await again.arrayBuffer();
    const records = await s.auditRecords();
    const refused = records.filter((r) => r.status === 503);
    expect(refused).toHaveLength(1);
    expect(refused[0].rule).toContain('gateway-busy');
  });

  it('refuses requests beyond maxInflightRequests before doing any work', async () => {
    const a = held(patient('a', 1000), 500);
    const s = await start({ maxInflightRequests: 1 }, { '/Patient/a': (req, res) => a.behaviour(req, res) });
    const first = s.get('/Patient/a', opts);
    await a.headSent;
    const seenBefore = up!.requests.length;
    const busy = await s.get('/Patient/a', opts);
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('1');
    await busy.arrayBuffer();
    expect(up!.requests.length).toBe(seenBefore);
    a.release();
    expect((await first).status).toBe(200);
    up!.set('/Patient/a', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.end(patient('a', 1000));
    });
    const next = await s.get('/Patient/a', opts);
    expect(next.status).toBe(200);
    await next.arrayBuffer();
  });
});
