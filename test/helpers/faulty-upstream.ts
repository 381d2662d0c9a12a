/**
 * A hand-written, deliberately faulty FHIR "server" for the upstream-fault regression tests: each
 * request path (without the base) maps to a behaviour that real servers, proxies and attackers
 * have produced (XML, HTML error pages, gzip bombs, duplicate keys, resets, stalls, redirects...).
 * The gateway must answer every one with a clean OperationOutcome and never relay upstream bytes.
 *
 *   const up = await startFaultyUpstream({ '/Patient/xml': xml('<Patient/>') });
 *   startStack({ upstreamUrl: up.url, configure });
 *   up.requests  // what the gateway actually sent (method, url, headers)
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Behaviour = (req: IncomingMessage, res: ServerResponse) => void;

export interface SeenRequest {
  readonly method: string;
  /** Path and query as received, with the base path (`/fhir`) removed. */
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

export interface FaultyUpstream {
  /** FHIR base URL, e.g. http://127.0.0.1:PORT/fhir */
  readonly url: string;
  readonly requests: SeenRequest[];
  /** Replace or add a behaviour while running (keyed by path without query). */
  set(path: string, b: Behaviour): void;
  /** Connections the gateway opened to this server, and how many of them are closed by now. */
  readonly sockets: { readonly opened: number; readonly closed: number; readonly open: number };
  close(): Promise<void>;
}

const BASE = '/fhir';

/** Serves `body` (a string or bytes) with the given status and headers, exactly as given. */
export function raw(status: number, headers: Record<string, string | string[]>, body: string | Buffer): Behaviour {
  return (_req, res) => {
    res.writeHead(status, { 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
  };
}

/** A FHIR JSON answer, serialized as is (the caller may pass pre-built hostile text). */
export function fhirJson(value: unknown, status = 200, headers: Record<string, string> = {}): Behaviour {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return raw(status, { 'content-type': 'application/fhir+json; charset=utf-8', ...headers }, text);
}

/** Destroys the socket mid-answer: headers and part of the body are sent, then a reset. */
export function resetAfterHeaders(partial: string): Behaviour {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': String(partial.length * 10) });
    res.write(partial);
    setTimeout(() => res.socket?.destroy(), 20);
  };
}

/** Resets the connection before any answer. */
export const resetImmediately: Behaviour = (req) => {
  req.socket.destroy();
};

/** Never answers (until the server closes). */
export const stall: Behaviour = () => {};

/**
 * A dripping upstream: answers 200 at once, then sends one byte of a FHIR JSON body every
 * `everyMs`, never finishing (chunked, no length): every idle timeout keeps being reset. The
 * bytes stop when the connection closes (`dripping` counts answers still being dripped).
 */
export function drip(everyMs: number, counter?: { dripping: number }): Behaviour {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/fhir+json' });
    const head = '{"resourceType":"Patient","id":"drip"';
    let i = 0;
    if (counter) counter.dripping++;
    const timer = setInterval(() => {
      // After the head, JSON whitespace: still a valid prefix, whatever a parser makes of it.
      res.write(i < head.length ? head[i] : ' ');
      i++;
    }, everyMs);
    res.on('close', () => {
      clearInterval(timer);
      if (counter) counter.dripping--;
    });
  };
}

/** Sends headers, then stalls the body. */
export function stallBody(partial: string): Behaviour {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': String(partial.length + 1000) });
    res.write(partial);
  };
}

export async function startFaultyUpstream(routes: Record<string, Behaviour> = {}): Promise<FaultyUpstream> {
  const table = new Map(Object.entries(routes));
  const requests: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  let opened = 0;
  let closed = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const full = req.url ?? '/';
      const url = full.startsWith(BASE) ? full.slice(BASE.length) || '/' : full;
      requests.push({ method: req.method ?? '', url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const path = url.split('?')[0]!;
      const b = table.get(path);
      if (b === undefined) {
        res.writeHead(404, { 'content-type': 'application/fhir+json' });
        res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }));
        return;
      }
      b(req, res);
    });
  });
  server.on('connection', (s) => {
    opened++;
    sockets.add(s);
    s.on('close', () => {
      closed++;
      sockets.delete(s);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}${BASE}`,
    requests,
    set: (path, b) => void table.set(path, b),
    sockets: {
      get opened() {
        return opened;
      },
      get closed() {
        return closed;
      },
      get open() {
        return sockets.size;
      },
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
