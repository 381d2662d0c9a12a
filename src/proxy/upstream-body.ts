/**
 * Reads the upstream's answer into memory under hard limits and decides whether it is something the
 * gateway can filter. Anything else is a typed error: the client never receives upstream bytes the
 * response pipeline has not parsed and filtered.
 */
import type { Readable } from 'node:stream';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { GatewayError } from '../errors.js';
import { parseStrictJson } from './strict-json.js';

export interface BodyLimits {
  /** Bytes accepted from the wire (compressed or not). */
  readonly responseBodyBytes: number;
  /** Bytes accepted after decompression. */
  readonly decompressedBytes: number;
}

export type UpstreamBody =
  | { readonly kind: 'empty' }
  | {
      readonly kind: 'json';
      readonly value: unknown;
      /** The decoded (decompressed) body: what `value` was parsed from. */
      readonly raw: Buffer;
    };

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/**
 * The process-wide allowance for upstream bytes held in memory by requests in flight. Each
 * request takes from it through a lease as its body arrives and gives everything back when its
 * response is released. When the allowance is spent the request is refused at once (503
 * gateway-busy) instead of growing the heap: peak memory follows the configured limit, not the
 * number of clients. An answer that declares its Content-Length reserves all of it when its head
 * arrives: otherwise many large answers arriving together each take a share, together pass the
 * allowance part-way, and all are refused (seen in the bench: 64 clients of a 5 MB Bundle against
 * 32 MiB, none answered); reserved up front, the first that fit are answered and the rest refused
 * before their bodies are read.
 */
export class BufferBudget {
  private used = 0;
  constructor(readonly limit: number) {
    if (!(limit > 0)) throw new Error('buffer budget must be positive');
  }

  /** Bytes currently held by leases. */
  get inUse(): number {
    return this.used;
  }

  lease(): BufferLease {
    /** Charged to the budget (taken or reserved). */
    let held = 0;
    /** Accounted by take(); held - spent is the unspent reservation. */
    let spent = 0;
    /** Set by release(reason): the request was cut, and nothing more is buffered for it. */
    let closed: GatewayError | undefined;
    const charge = (n: number): void => {
      if (closed) throw closed;
      if (this.used + n > this.limit) throw new GatewayError('gateway-busy', `buffer budget of ${this.limit} bytes spent`);
      this.used += n;
      held += n;
    };
    return {
      reserve: (n: number) => {
        if (n > held - spent) charge(n - (held - spent));
      },
      take: (n: number) => {
        const unspent = held - spent;
        if (n > unspent) charge(n - unspent);
        spent += n;
      },
      release: (reason?: GatewayError) => {
        this.used -= held;
        held = 0;
        spent = 0;
        closed ??= reason;
      },
    };
  }
}

/** One request's share of a BufferBudget. `release` is idempotent. */
export interface BufferLease {
  /** Charges enough that `n` bytes can be taken from this lease's reservation, or throws GatewayError gateway-busy (nothing charged). */
  reserve(n: number): void;
  /** Accounts `n` more bytes (from the reservation first), or throws GatewayError gateway-busy (nothing taken). */
  take(n: number): void;
  /**
   * Gives back everything held. With a reason (the client left while its request still runs), the
   * share is freed now and the lease closed: a later reserve or take throws that reason instead of
   * charging the budget again.
   */
  release(reason?: GatewayError): void;
}

/**
 * A transport failure talking to the upstream as the gateway's error: a timeout is
 * `upstream-timeout` (504), anything else `upstream-unavailable` (502) — a reset or stall is the
 * upstream's failure, not the gateway's (500). GatewayErrors (limits, budget) pass unchanged.
 */
export function upstreamTransportError(e: unknown, phase: string): GatewayError {
  if (e instanceof GatewayError) return e;
  const code = String((e as { code?: unknown } | undefined)?.code ?? '');
  if (code.includes('TIMEOUT')) return new GatewayError('upstream-timeout', `${phase}: ${code}`, { cause: e });
  return new GatewayError('upstream-unavailable', `${phase}: ${code || 'connection error'}`, { cause: e });
}

/** Collects the stream, aborting it as soon as the limit is crossed (memory stays bounded). */
async function collect(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const buf = chunk as Buffer;
      size += buf.length;
      if (size > limit) {
        stream.destroy();
        throw new GatewayError('upstream-too-large', `upstream body over ${limit} bytes`);
      }
      chunks.push(buf);
    }
  } catch (e) {
    throw upstreamTransportError(e, 'upstream body');
  }
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
}

function single(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  if (Array.isArray(v)) {
    if (v.length !== 1) throw new GatewayError('upstream-bad-response', `repeated ${name} header`);
    return v[0];
  }
  return v;
}

function decode(raw: Buffer, encoding: string | undefined, limits: BodyLimits): Buffer {
  const enc = (encoding ?? 'identity').trim().toLowerCase();
  const opts = { maxOutputLength: limits.decompressedBytes };
  try {
    switch (enc) {
      case '':
      case 'identity':
        return raw;
      case 'gzip':
      case 'x-gzip':
        return gunzipSync(raw, opts);
      case 'deflate':
        return inflateSync(raw, opts);
      case 'br':
        return brotliDecompressSync(raw, opts);
      default:
        throw new GatewayError('upstream-bad-response', `content-encoding ${enc.slice(0, 20)}`);
    }
  } catch (e) {
    if (e instanceof GatewayError) throw e;
    if (e instanceof RangeError || (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new GatewayError('upstream-too-large', 'decompressed body over limit', { cause: e });
    }
    throw new GatewayError('upstream-bad-response', 'undecodable compressed body', { cause: e });
  }
}

const JSON_TYPES = new Set(['application/fhir+json', 'application/json']);

/** Verdicts per Content-Type value seen: an upstream sends the same few, so parse each once. */
const contentTypeVerdicts = new Map<string, boolean>();

/** True when the content type is FHIR JSON (or plain JSON) in UTF-8. */
export function isJsonContentType(ct: string | undefined): boolean {
  if (!ct) return false;
  let v = contentTypeVerdicts.get(ct);
  if (v === undefined) {
    v = parseJsonContentType(ct);
    // Bounded: a hostile upstream varying the header must not grow memory.
    if (contentTypeVerdicts.size < 64) contentTypeVerdicts.set(ct, v);
  }
  return v;
}

function parseJsonContentType(ct: string): boolean {
  const [type, ...params] = ct.split(';');
  if (!JSON_TYPES.has(type.trim().toLowerCase())) return false;
  for (const p of params) {
    const [k, v] = p.split('=');
    if (k.trim().toLowerCase() === 'charset' && v !== undefined && v.trim().replace(/"/g, '').toLowerCase() !== 'utf-8') return false;
  }
  return true;
}

/**
 * A body read through a stream (the compartment write check's own upstream read): bounded by
 * `responseBodyBytes`, not accounted in the proxy's BufferBudget, whose answers go through
 * dispatchUpstream and decodeUpstreamBody.
 */
export async function readUpstreamBody(stream: Readable, headers: Headers, limits: BodyLimits): Promise<UpstreamBody> {
  return decodeUpstreamBody(await collect(stream, limits.responseBodyBytes), headers, limits);
}

/** The checks and parse of `readUpstreamBody` for a body already collected under the wire limit. */
export function decodeUpstreamBody(raw: Buffer, headers: Headers, limits: BodyLimits, lease?: BufferLease): UpstreamBody {
  const decoded = decode(raw, single(headers, 'content-encoding'), limits);
  if (decoded !== raw) lease?.take(decoded.length);
  if (decoded.length > limits.decompressedBytes) throw new GatewayError('upstream-too-large', 'body over limit');
  if (decoded.length === 0) return { kind: 'empty' };
  if (!isJsonContentType(single(headers, 'content-type'))) {
    throw new GatewayError('upstream-bad-response', 'non-JSON upstream content type');
  }
  const value = parseStrictJson(decoded, 'upstream-bad-response');
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new GatewayError('upstream-bad-response', 'upstream JSON is not a resource');
  }
  return { kind: 'json', value, raw: decoded };
}
