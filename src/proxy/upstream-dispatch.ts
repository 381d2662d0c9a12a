/**
 * Sends one UpstreamCall and collects the whole answer in memory, under the response limit and the
 * shared buffer budget, straight from undici's dispatch handler: no stream objects, no async
 * iteration, one Buffer at the end. (It replaced @fastify/reply-from, whose per-request stream
 * plumbing cost more than the gateway's own policy work on a small read.)
 *
 * Every failure is a GatewayError: before the answer's head, a timeout is `upstream-timeout` and
 * anything else `upstream-unavailable`; mid-body the same (a reset or stall is the upstream's
 * failure, not the gateway's); a body over the limit is `upstream-too-large` (the transfer is
 * aborted at once, memory stays bounded); a spent budget is `gateway-busy`.
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

/** A single, plain decimal Content-Length, or undefined (absent, repeated or malformed: then only the bytes as they arrive count). */
function contentLength(v: string | string[] | undefined): number | undefined {
  if (typeof v !== 'string' || !/^\d{1,15}$/.test(v)) return undefined;
  return Number(v);
}

export function dispatchUpstream(
  dispatcher: Dispatcher,
  call: UpstreamCall,
  opts: { readonly limit: number; readonly lease?: BufferLease | undefined },
): Promise<UpstreamAnswer> {
  return new Promise<UpstreamAnswer>((resolve, reject) => {
    let settled = false;
    let statusCode = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    let started = false;
    const chunks: Buffer[] = [];
    let size = 0;
    const fail = (e: GatewayError): void => {
      if (settled) return;
      settled = true;
      chunks.length = 0;
      reject(e);
    };
    const handler: Dispatcher.DispatchHandler = {
      // Present so undici treats this as a handler of its current API (it checks for this method).
      onRequestStart() {},
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
