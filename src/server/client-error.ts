/**
 * Requests Node's HTTP parser rejects before any route sees them: headers over the size limit
 * (431), an invalid method, header or request line (400), a client too slow to send its request
 * (408). Node (and Fastify's default) would answer with a JSON body of their own and no audit
 * record; these are answered like every other refusal: an OperationOutcome with an X-Request-Id,
 * after an audit record with the pipeline's reject kind and decision, through the same sink.
 *
 * The request's bytes are never read (Node attaches them to the error as `rawPacket`): the record
 * holds the peer address and the parser's reason code, the answer only catalogue text.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AuditSink } from '../audit/record.js';
import { type ErrorCode, ERRORS, operationOutcome } from '../errors.js';
import { toAuditRecord } from '../proxy/record.js';
import { jsonBytes } from '../utf8.js';

export interface ClientErrorDeps {
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** audit.failOpen: answer even when the record could not be written. */
  readonly failOpen: boolean;
  readonly policyVersion: () => string;
  readonly now?: (() => Date) | undefined;
}

/** How long an answered connection may take to take its answer before it is cut. */
const LINGER_MS = 5_000;

/** The catalogue code for a parser or timeout rejection. */
export function clientErrorCode(err: { code?: string | undefined }): ErrorCode {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT') return 'request-timeout';
  if (err.code === 'HPE_HEADER_OVERFLOW') return 'request-header-too-large';
  return 'bad-request';
}

/** Node's own, as opposed to anything a client sent: a reason code is kept only in this shape. */
function reasonOf(code: unknown): string {
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]{1,63}$/.test(code) ? code : 'unknown';
}

/**
 * Writes a catalogue answer straight on a socket that has no request object (a parser
 * rejection), then closes it; a client that never reads does not keep the socket past LINGER_MS.
 */
export function answerOnSocket(socket: Socket, code: ErrorCode, id: string): void {
  const linger = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  socket.end(rawAnswer(ERRORS[code].status, id, jsonBytes(operationOutcome(code))), () => {
    clearTimeout(linger);
    socket.destroy();
  });
}

/** A complete HTTP/1.1 answer that closes the connection. */
function rawAnswer(status: number, id: string, body: Buffer): Buffer {
  const head =
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    'content-type: application/fhir+json; charset=utf-8\r\n' +
    `content-length: ${body.length}\r\n` +
    'cache-control: no-store\r\n' +
    `x-request-id: ${id}\r\n` +
    'connection: close\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

/** Fastify's `clientErrorHandler` (Node's `clientError` event). */
export function createClientErrorHandler(deps: ClientErrorDeps): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    // A reset connection, or one already gone: nothing can be answered and nothing was refused.
    if (err.code === 'ECONNRESET' || socket.destroyed) {
      socket.destroy();
      return;
    }
    answer(deps, err, socket).catch((e: unknown) => {
      deps.logger.error({ err: e }, 'client error answer failed');
      socket.destroy();
    });
  };
}

async function answer(deps: ClientErrorDeps, err: Error & { code?: string }, socket: Socket): Promise<void> {
  let code = clientErrorCode(err);
  const id = randomUUID();
  const reason = reasonOf(err.code);
  // A response of a request already routed on this connection is being written (or awaited):
  // bytes written now would interleave with it. That request answers (and audits) itself;
  // this one is refused by closing the connection, and its record says it got no answer.
  const busy = (socket as Socket & { _httpMessage?: unknown })._httpMessage != null;
  let status: number = ERRORS[code].status;
  const record = toAuditRecord(
    {
      id,
      time: deps.now?.() ?? new Date(),
      started: process.hrtime.bigint(),
      // Not the method or path the client sent: those are the bytes that were refused.
      method: '',
      url: '',
      clientAddress: socket.remoteAddress ?? '',
      userAgent: undefined,
      policyVersion: deps.policyVersion(),
      details: busy ? { answered: false, reason } : { reason },
    },
    { status, decision: 'deny', rule: code },
  );
  try {
    await deps.audit.write(record);
  } catch (e) {
    if (deps.failOpen) {
      deps.logger.error({ reqId: id, err: e }, 'AUDIT WRITE FAILED: releasing response WITHOUT an audit record (audit.failOpen is on)');
    } else {
      deps.logger.error({ reqId: id, err: e }, 'audit write failed: response withheld (503)');
      code = 'audit-unavailable';
      status = ERRORS[code].status;
    }
  }
  deps.logger.info({ reqId: id, status, decision: 'deny', code, reason }, 'request refused before routing');
  if (busy || socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  answerOnSocket(socket, code, id);
}
