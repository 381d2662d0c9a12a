/**
 * What the gateway sends upstream: built from the classified request, never copied from the client.
 * Only an allow-list of client headers survives; Authorization, hop-by-hop, X-Forwarded-* and
 * method-override headers never do (SPEC 3.5). JSON is forced and compression refused.
 */
import { GatewayError } from '../errors.js';
import type { ClassifiedRequest } from '../policy/request.js';

export type HeaderMap = Record<string, string>;

/** Client headers that carry FHIR semantics the upstream needs; everything else is dropped. */
// Only If-Match (optimistic locking on writes). If-None-Match / If-Modified-Since are dropped: a 304 from
// the upstream would answer before the filter runs and reveal that a withheld resource exists.
const PASSTHROUGH = ['if-match'] as const;

export interface UpstreamCall {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Absolute path on the upstream origin, e.g. `/fhir/Patient/123`. */
  readonly path: string;
  readonly query: string;
  readonly headers: HeaderMap;
  readonly body: string | undefined;
}

function header(headers: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? undefined : v; // a repeated conditional header is dropped, not guessed at
}

/**
 * HEAD is forwarded as GET (the gateway must filter the body to compute what the client could
 * see); searches arriving as POST `_search` are forwarded as GET with the decided parameters.
 */
export function buildUpstreamCall(
  req: ClassifiedRequest,
  clientHeaders: Readonly<Record<string, string | string[] | undefined>>,
  opts: { basePath: string; requestId: string; authorization: string | undefined },
): UpstreamCall {
  const isSearch = req.interaction === 'search-type' || req.interaction === 'search-system' || req.interaction === 'search-compartment';
  let method: UpstreamCall['method'];
  if (req.method === 'HEAD' || isSearch) method = 'GET';
  else method = req.method;

  const headers: HeaderMap = {
    accept: 'application/fhir+json',
    'accept-encoding': 'identity',
    'x-request-id': opts.requestId,
  };
  if (opts.authorization) headers.authorization = opts.authorization;
  for (const name of PASSTHROUGH) {
    const v = header(clientHeaders, name);
    if (v !== undefined) headers[name] = v;
  }
  // `Prefer: handling=lenient` would let the upstream silently ignore a parameter the gateway
  // decided on; force strict handling for searches.
  if (isSearch) headers.prefer = 'handling=strict';
  // A write's answer is always asked for in full: the gateway filters it (is the written resource
  // the caller's to see?) and then shapes it to the client's own Prefer (src/proxy/prefer.ts).
  const write = req.interaction === 'create' || req.interaction === 'update' || req.interaction === 'patch';
  if (write) headers.prefer = 'return=representation';

  // A conditional create's criteria (its params, judged as a search) travel in If-None-Exist only.
  let query = req.upstreamQuery;
  if (req.interaction === 'create' && query !== '') {
    headers['if-none-exist'] = query;
    query = '';
  }

  let body: string | undefined;
  if (method !== 'GET' && method !== 'DELETE' && req.body !== undefined) {
    body = JSON.stringify(req.interaction === 'batch' || req.interaction === 'transaction' ? withEntryCriteria(req) : req.body);
    headers['content-type'] = req.method === 'PATCH' && Array.isArray(req.body) ? 'application/json-patch+json' : 'application/fhir+json';
  }
  return { method, path: opts.basePath + req.upstreamPath, query, headers, body };
}

type Obj = Record<string, unknown>;

/**
 * The Bundle to send, its create entries' `request` rebuilt from their decided entries: the url is
 * the type alone and `ifNoneExist` the decided criteria (translated, narrowed), or absent. Whatever
 * rewrote the entries' urls on the way (narrowing, pseudonym translation) wrote the criteria as a
 * url query; what the upstream executes is what was decided. Entries that do not line up with the
 * body are a bug upstream of here: refused, never guessed at.
 */
function withEntryCriteria(req: ClassifiedRequest): unknown {
  const body = req.body as { entry?: unknown } | undefined;
  const decided = req.entries ?? [];
  if (typeof body !== 'object' || body === null || !Array.isArray(body.entry)) return body;
  if (body.entry.length !== decided.length) throw new GatewayError('internal', 'Bundle body does not match its entries');
  if (!decided.some((e) => e.interaction === 'create')) return body;
  const entry = (body.entry as unknown[]).map((e, i) => {
    const d = decided[i]!;
    if (d.interaction !== 'create') return e;
    const { ifNoneExist: _, ...request } = (e as { request: Obj }).request;
    return { ...(e as Obj), request: { ...request, method: 'POST', url: d.upstreamPath.slice(1), ...(d.upstreamQuery === '' ? {} : { ifNoneExist: d.upstreamQuery }) } };
  });
  return { ...body, entry };
}
