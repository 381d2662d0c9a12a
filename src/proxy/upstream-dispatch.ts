/**
 * Sends one UpstreamCall and collects the whole answer in memory, under the response limit and the
 * shared buffer budget, straight from undici's dispatch handler: no stream objects, no async
 * iteration, one Buffer at the end. (It replaced @fastify/reply-from, whose per-request stream
 * plumbing cost more than the gateway's own policy work on a small read.)
 *
 * Every failure is a GatewayError: before the answer's head, a timeout is `upstream-timeout` and
 * anything else `upstream-unavailable`; mid-body the same (a reset or stall is the upstream's
 * failure, not the gateway's); a body over the limit is `upstream-too-large` (the transfer is
 * aborted at once, memory stays bounded); a spent budget is `gateway-busy`. When the request's
 * `signal` aborts (its UpstreamScope: the total deadline, or the client gone) the call fails at
 * once with the signal's reason and the upstream request is cancelled: its connection closed if it
 * was on one, dropped before it is written if it still waits for one.
 */
import type { Dispatcher } from 'undici';
import { GatewayError } from '../errors.js';
import { type BufferLease, upstreamTransportError as transportError } from './upstream-body.js';
import type { UpstreamCall } from './upstream-request.js';

export interface UpstreamAnswer {
  readonly statusCode: number;
  /** Lower-case names; a repeated header is an array. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body as received (still content-encoded, if the upstream ignored `accept-encoding`). */
  readonly body: Buffer;
}

/**
 * One client request's hold on the upstream, across all of its exchanges (the compartment check's
 * read, the forwarded call, every upstream page of a search the gateway pages): a single
 * wall-clock deadline of `totalMs` from the first exchange, whatever the idle timeouts allow (an
 * upstream that drips a byte at a time resets those), and an end when the client goes away. Either
 * aborts `signal` with the GatewayError the request is answered (and audited) with.
 */
export class UpstreamScope {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly totalMs: number) {}

  /** For the next exchange; the first use starts the deadline. */
  get signal(): AbortSignal {
    if (this.timer === undefined && !this.controller.signal.aborted) {
      this.timer = setTimeout(() => this.end(new GatewayError('upstream-timeout', `total deadline of ${this.totalMs} ms`)), this.totalMs);
    }
    return this.controller.signal;
  }

  /** The client closed its connection before its answer was sent. */
  clientClosed(): void {
    this.end(new GatewayError('client-closed', 'client closed the connection'));
  }

  /** Why the exchanges were cut, once they were. */
  get reason(): GatewayError | undefined {
    return this.controller.signal.aborted ? (this.controller.signal.reason as GatewayError) : undefined;
  }

  /** The request is done: no deadline left running. */
  dispose(): void {
    clearTimeout(this.timer);
  }

  private end(reason: GatewayError): void {
    clearTimeout(this.timer);
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }
}

/** The signal's reason as the gateway's error (an AbortSignal of someone else's: upstream-unavailable). */
function abortReason(signal: AbortSignal): GatewayError {
  return transportError(signal.reason, 'upstream aborted');
}

/** A single, plain decimal Content-Length, or undefined (absent, repeated or malformed: then only the bytes as they arrive count). */
function contentLength(v: string | string[] | undefined): number | undefined {
  if (typeof v !== 'string' || !/^\d{1,15}$/.test(v)) return undefined;
  return Number(v);
}

export function dispatchUpstream(
  dispatcher: Dispatcher,
  call: UpstreamCall,
  opts: { readonly limit: number; readonly lease?: BufferLease | undefined; readonly signal?: AbortSignal | undefined },
): Promise<UpstreamAnswer> {
  const signal = opts.signal;
  // Already cut (the client left, the deadline passed between two pages): nothing is sent.
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise<UpstreamAnswer>((resolve, reject) => {
    let settled = false;
    let controller: Dispatcher.DispatchController | undefined;
    let statusCode = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    let started = false;
    const chunks: Buffer[] = [];
    let size = 0;
    const onAbort = (): void => {
      const e = abortReason(signal!);
      fail(e);
      // Not on a connection yet: undici calls onRequestStart when one is free, which aborts it there.
      controller?.abort(e);
    };
    const fail = (e: GatewayError): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      chunks.length = 0;
      reject(e);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const handler: Dispatcher.DispatchHandler = {
      // Also what makes undici treat this as a handler of its current API (it checks for this method).
      onRequestStart(c) {
        controller = c;
        // Settled before it reached a connection (aborted while queued): never written.
        if (settled) c.abort(signal?.reason ?? new Error('abandoned'));
      },
      onResponseStart(controller, status, responseHeaders) {
        started = true;
        statusCode = status;
        headers = responseHeaders as Record<string, string | string[] | undefined>;
        // A declared length is checked and reserved before any of the body is read (BufferBudget).
        const declared = contentLength(headers['content-length']);
        if (declared === undefined) return;
        let refusal: GatewayError | undefined;
        if (declared > opts.limit) refusal = new GatewayError('upstream-too-large', `upstream body of ${declared} bytes over ${opts.limit}`);
        else {
          try {
            opts.lease?.reserve(declared);
          } catch (e) {
            refusal = transportError(e, 'upstream body');
          }
        }
        if (refusal) {
          fail(refusal);
          controller.abort(refusal);
        }
      },
      onResponseData(controller, chunk) {
        if (settled) return;
        size += chunk.length;
        if (size > opts.limit) {
          const e = new GatewayError('upstream-too-large', `upstream body over ${opts.limit} bytes`);
          fail(e);
          controller.abort(e);
          return;
        }
        try {
          opts.lease?.take(chunk.length);
        } catch (e) {
          const g = transportError(e, 'upstream body');
          fail(g);
          controller.abort(g);
          return;
        }
        chunks.push(chunk);
      },
      onResponseEnd() {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
        resolve({ statusCode, headers, body });
      },
      onResponseError(_controller, error) {
        fail(transportError(error, started ? 'upstream body' : 'upstream'));
      },
    };
    try {
      dispatcher.dispatch(
        {
          path: call.query ? `${call.path}?${call.query}` : call.path,
          method: call.method,
          headers: call.headers,
          body: call.body ?? null,
        },
        handler,
      );
    } catch (e) {
      fail(transportError(e, 'upstream'));
    }
  });
}
