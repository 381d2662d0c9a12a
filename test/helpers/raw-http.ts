/**
 * HTTP written byte for byte on raw sockets (node:net), for requests fetch would refuse or
 * normalize (bad methods, oversized headers, no Host, odd Expect), and the answer parsed back.
 */
import { connect, type Socket } from 'node:net';

export interface RawAnswer {
  readonly raw: string;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function parseAnswer(raw: string): RawAnswer {
  const split = raw.indexOf('\r\n\r\n');
  const head = raw.slice(0, split).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { raw, status: Number(head[0].split(' ')[1]), headers, body: raw.slice(split + 4) };
}

export function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything the server sends until it closes the connection. */
export function readAll(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('error', reject);
    s.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

/** Writes `bytes` on a new connection and returns the answer the server sends before closing it. */
export async function raw(port: number, bytes: string | Buffer): Promise<RawAnswer> {
  const s = await open(port);
  const answer = readAll(s);
  s.write(bytes);
  return parseAnswer(await answer);
}
