/**
 * The real demo upstream (medplum, test/helpers/upstream.ts) behind a small front that pages the
 * way the servers hospitals run do, and writes its links under another address than the one the
 * gateway connects to (HAPI's `server_address`, Azure's public host name):
 *
 *   const up = await startStyledUpstream('hapi');
 *   startStack({ upstreamUrl: up.url, env: { PHI_GATEWAY_UPSTREAM_LINK_BASES: up.advertisedBase } });
 *
 * - `hapi`: a search runs once and its result is kept under a search id; the first page links on
 *   with `<advertisedBase>?_getpages=<id>&_getpagesoffset=N&_count=N&_bundletype=searchset` (no
 *   search parameter survives in that link), later pages are cut from the kept result. An unknown
 *   or expired id answers 410 Gone with an OperationOutcome, as HAPI's paging provider does.
 *   `expire()` forgets every kept search (HAPI's cache expiring).
 * - `azure`: no state; the next link repeats the query and adds `ct=<base64 continuation>` (a
 *   Cosmos-style `[{"token":"+RID:~...","range":{...}}]`, URL-encoded); a `ct` that does not
 *   decode answers 400.
 *
 * Every other answer is medplum's, with its base URL (in bodies, `Location`, `Content-Location`)
 * replaced by the advertised base: `fullUrl`s, `self` links and `Location`s all name that host.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { DemoRepository } from '../../src/demo/upstream.js';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import type { Bundle, BundleEntry, BundleLink, Resource } from 'fhir/r4.js';
import { request as undiciRequest } from 'undici';
import { withUpstream } from './upstream.js';

export type UpstreamStyle = 'hapi' | 'azure';

export interface StyledUpstream {
  readonly style: UpstreamStyle;
  /** Base the gateway connects to, e.g. `http://127.0.0.1:41234/fhir`. */
  readonly url: string;
  /** Base the upstream writes in links, fullUrls and Locations (another host name). */
  readonly advertisedBase: string;
  /** The wrapped medplum server's own base (the front rewrites it away). */
  readonly innerUrl: string;
  readonly repo: DemoRepository;
  /** Method, path and query of every request the front received, in order. */
  readonly requests: string[];
  /** GET `${url}/${path}` through the front and parse the FHIR JSON answer. */
  get<T = Resource>(path: string): Promise<{ status: number; headers: Headers; body: T }>;
  /** HAPI: forgets every kept search (their `_getpages` links answer 410 from now on). */
  expire(): void;
  close(): Promise<void>;
}

export interface StyledUpstreamOptions {
  advertisedBase?: string;
  /** Load the demo data (default true). */
  seed?: boolean;
}

const DEFAULT_BASES: Record<UpstreamStyle, string> = {
  hapi: 'http://hapi.hospital.internal:8080/fhir',
  azure: 'https://phi-workspace-fhirsvc.fhir.azurehealthcareapis.com',
};
/** HAPI's and Azure's default page sizes when a search names no `_count`. */
const DEFAULT_COUNT: Record<UpstreamStyle, number> = { hapi: 20, azure: 10 };
const FHIR_JSON = 'application/fhir+json;charset=utf-8';
const BASE_PATH = '/fhir';

type Obj = Record<string, unknown>;

interface KeptSearch {
  readonly type: Bundle['type'];
  readonly matches: BundleEntry[];
  readonly includes: BundleEntry[];
  readonly others: BundleEntry[];
  /** The first page's self link (the search as asked, under the advertised base). */
  readonly self: string;
  readonly pretty: boolean;
}

export async function startStyledUpstream(style: UpstreamStyle, opts: StyledUpstreamOptions = {}): Promise<StyledUpstream> {
  const inner = await withUpstream({ seed: opts.seed ?? true });
  const innerBase = inner.url.replace(/\/+$/, '');
  const advertised = (opts.advertisedBase ?? DEFAULT_BASES[style]).replace(/\/+$/, '');
  const kept = new Map<string, KeptSearch>();
  const requests: string[] = [];

  /** medplum's base -> the advertised one, wherever it appears in text. */
  const advertise = (text: string) => text.split(innerBase).join(advertised);

  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024 });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  /** A call to medplum; `pathAndQuery` is relative to its base (`/Observation?...`). */
  async function innerCall(method: string, pathAndQuery: string, headers: Obj, body?: Buffer) {
    const res = await undiciRequest(`${innerBase}${pathAndQuery}`, {
      method: method as 'GET',
      headers: headers as Record<string, string>,
      body: body && body.length > 0 ? body : undefined,
    });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, bytes };
  }

  /** Every entry of a search, reading medplum's pages to the end (HAPI runs the whole search once). */
  async function readAll(first: Bundle): Promise<Bundle> {
    const entries: BundleEntry[] = [...(first.entry ?? [])];
    let next = linkOf(first, 'next');
    for (let guard = 0; next !== undefined && guard < 1000; guard++) {
      const r = await innerCall('GET', next.slice(innerBase.length), { accept: 'application/fhir+json' });
      if (r.status !== 200) throw new Error(`inner page ${r.status}`);
      const page = JSON.parse(r.bytes.toString('utf8')) as Bundle;
      entries.push(...(page.entry ?? []));
      next = linkOf(page, 'next');
    }
    return { ...first, entry: entries };
  }

  function hapiPage(id: string, search: KeptSearch, offset: number, count: number, self: string): Bundle {
    const slice = search.matches.slice(offset, offset + count);
    const entry = [...slice, ...tiedIncludes(slice, search.includes), ...(offset === 0 ? search.others : [])];
    const pageUrl = (o: number) =>
      `${advertised}?_getpages=${id}&_getpagesoffset=${o}&_count=${count}${search.pretty ? '&_pretty=true' : ''}&_bundletype=${search.type}`;
    const link: BundleLink[] = [{ relation: 'self', url: self }];
    if (offset + count < search.matches.length) link.push({ relation: 'next', url: pageUrl(offset + count) });
    if (offset > 0) link.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
    return {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: new Date().toISOString() },
      type: search.type,
      total: search.matches.length,
      link,
      ...(entry.length > 0 ? { entry: entry.map(advertisedEntry) } : {}),
    };
  }

  /** A medplum searchset/history answer, re-paged HAPI-style (kept under a search id when it has more pages). */
  async function hapiStyle(bundle: Bundle): Promise<Bundle> {
    const self = linkOf(bundle, 'self');
    if (self === undefined) return bundle;
    const selfUrl = new URL(self);
    const count = intOf(selfUrl.searchParams.get('_count')) ?? DEFAULT_COUNT.hapi;
    const pretty = selfUrl.searchParams.get('_pretty') === 'true';
    const shownSelf = advertised + self.slice(innerBase.length);
    const entries = bundle.entry ?? [];
    const single = linkOf(bundle, 'next') === undefined && entries.filter(isMatch).length <= count;
    const all = single ? bundle : await readAll(bundle);
    const search: KeptSearch = {
      type: bundle.type,
      matches: (all.entry ?? []).filter(isMatch),
      includes: (all.entry ?? []).filter((e) => e.search?.mode === 'include'),
      others: (all.entry ?? []).filter((e) => e.search?.mode !== undefined && e.search.mode !== 'match' && e.search.mode !== 'include'),
      self: shownSelf,
      pretty,
    };
    const id = randomUUID();
    if (!single) kept.set(id, search);
    return hapiPage(id, search, 0, count, shownSelf);
  }

  /** A medplum searchset/history answer with Azure's links: the query again, plus `ct`. */
  function azureStyle(bundle: Bundle): Bundle {
    const self = linkOf(bundle, 'self');
    if (self === undefined) return bundle;
    const selfUrl = new URL(self);
    const query = new URLSearchParams(selfUrl.searchParams);
    query.delete('_offset');
    query.delete('ct');
    const path = advertised + selfUrl.pathname.slice(new URL(innerBase).pathname.length);
    const shown = query.toString() === '' ? path : `${path}?${query.toString()}`;
    const link: BundleLink[] = [{ relation: 'self', url: shown }];
    const next = linkOf(bundle, 'next');
    if (next !== undefined) {
      const to = intOf(new URL(next).searchParams.get('_offset'));
      if (to !== undefined) {
        const q = new URLSearchParams(query);
        q.set('ct', continuation(to));
        link.unshift({ relation: 'next', url: `${path}?${q.toString()}` });
      }
    }
    // Azure gives `total` only when asked (_total=accurate); the entries keep medplum's order.
    const { total: _total, link: _link, ...rest } = bundle;
    return { ...rest, id: randomUUID(), meta: { lastUpdated: new Date().toISOString() }, link, ...(bundle.entry ? { entry: bundle.entry.map(advertisedEntry) } : {}) };
  }

  /** Restyles a searchset/history Bundle, and the ones nested in a batch/transaction response. */
  async function restyle(bundle: Bundle): Promise<Bundle> {
    if (bundle.type === 'searchset' || bundle.type === 'history') {
      return style === 'hapi' ? hapiStyle(bundle) : azureStyle(bundle);
    }
    if (bundle.type === 'batch-response' || bundle.type === 'transaction-response') {
      const entry: BundleEntry[] = [];
      for (const e of bundle.entry ?? []) {
        const r = e.resource as Bundle | undefined;
        entry.push(r?.resourceType === 'Bundle' ? { ...e, resource: await restyle(r) } : e);
      }
      return { ...bundle, entry };
    }
    return bundle;
  }

  function advertisedEntry(e: BundleEntry): BundleEntry {
    return JSON.parse(advertise(JSON.stringify(e))) as BundleEntry;
  }

  function outcome(reply: FastifyReply, status: number, code: string, diagnostics: string): FastifyReply {
    return reply
      .code(status)
      .type(FHIR_JSON)
      .send({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] });
  }

  async function handler(req: FastifyRequest, reply: FastifyReply) {
    requests.push(`${req.method} ${req.url}`);
    const full = req.url.slice(BASE_PATH.length);
    const q = full.indexOf('?');
    const path = q < 0 ? full : full.slice(0, q);
    const params = new URLSearchParams(q < 0 ? '' : full.slice(q + 1));

    // HAPI's paging provider: `[base]?_getpages=...` on the server root.
    if (style === 'hapi' && (path === '' || path === '/') && params.has('_getpages')) {
      const id = params.get('_getpages') ?? '';
      const search = kept.get(id);
      if (search === undefined || req.method !== 'GET') {
        return outcome(reply, 410, 'processing', `HAPI-0417: Search ID "${id}" does not exist and may have expired`);
      }
      const offset = intOf(params.get('_getpagesoffset')) ?? 0;
      const count = intOf(params.get('_count')) ?? DEFAULT_COUNT.hapi;
      const self = `${advertised}?${params.toString()}`;
      return reply.code(200).type(FHIR_JSON).send(hapiPage(id, search, offset, count, self));
    }

    let forward = full;
    if (style === 'azure' && params.has('ct')) {
      const at = offsetOf(params.get('ct') ?? '');
      if (at === undefined) return outcome(reply, 400, 'invalid', 'Invalid continuation token.');
      params.delete('ct');
      params.set('_offset', String(at));
      forward = `${path}?${params.toString()}`;
    }

    const headers: Obj = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (['host', 'connection', 'content-length', 'accept-encoding', 'transfer-encoding', 'keep-alive'].includes(k)) continue;
      if (v !== undefined) headers[k] = v;
    }
    const answer = await innerCall(req.method, forward, headers, Buffer.isBuffer(req.body) ? req.body : undefined);
    for (const name of ['location', 'content-location', 'etag', 'last-modified'] as const) {
      const v = answer.headers[name];
      if (typeof v === 'string') void reply.header(name, name.includes('location') ? advertise(v) : v);
    }
    const type = answer.headers['content-type'];
    void reply.code(answer.status);
    if (typeof type === 'string') void reply.type(type);
    if (answer.bytes.length === 0) return reply.send();
    let value: unknown;
    try {
      value = JSON.parse(answer.bytes.toString('utf8'));
    } catch {
      return reply.send(answer.bytes);
    }
    if (isBundle(value) && answer.status === 200) value = await restyle(value);
    return reply.send(advertise(JSON.stringify(value)));
  }

  app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url: BASE_PATH, handler });
  app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url: `${BASE_PATH}/*`, handler });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const url = `http://127.0.0.1:${port}${BASE_PATH}`;

  return {
    style,
    url,
    advertisedBase: advertised,
    innerUrl: innerBase,
    repo: inner.repo,
    requests,
    async get<T = Resource>(p: string) {
      const res = await fetch(`${url}/${p.replace(/^\//, '')}`, { headers: { accept: 'application/fhir+json' } });
      return { status: res.status, headers: res.headers, body: (await res.json()) as T };
    },
    expire: () => kept.clear(),
    async close() {
      await app.close();
      await inner.close();
    },
  };
}

function isBundle(v: unknown): v is Bundle {
  return typeof v === 'object' && v !== null && (v as Obj).resourceType === 'Bundle';
}

function isMatch(e: BundleEntry): boolean {
  return e.search?.mode === undefined || e.search.mode === 'match';
}

function linkOf(b: Bundle, relation: string): string | undefined {
  return b.link?.find((l) => l.relation === relation)?.url;
}

function intOf(v: string | null): number | undefined {
  return v !== null && /^\d{1,7}$/.test(v) ? Number(v) : undefined;
}

/** An opaque Cosmos-style continuation token for position `offset` (base64 of its JSON, as Azure sends it). */
function continuation(offset: number): string {
  const rid = randomBytes(18).toString('base64');
  const token = `+RID:~${rid}#RT:${Math.max(1, offset)}#TRC:${offset}#ISV:2#IEO:65551`;
  return Buffer.from(JSON.stringify([{ token, range: { min: '', max: 'FF' } }]), 'utf8').toString('base64');
}

function offsetOf(ct: string): number | undefined {
  try {
    const parsed = JSON.parse(Buffer.from(ct, 'base64').toString('utf8')) as Array<{ token?: unknown }>;
    const token = Array.isArray(parsed) && typeof parsed[0]?.token === 'string' ? parsed[0].token : '';
    const m = /#TRC:(\d{1,7})#/.exec(token);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** `Type/id` of every `reference` anywhere in a value. */
function referencesIn(v: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(v)) for (const x of v) referencesIn(x, out);
  else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'reference' && typeof x === 'string') {
        const m = /([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(\/_history\/[^/]+)?$/.exec(x);
        if (m) out.add(m[1]);
      } else referencesIn(x, out);
    }
  }
  return out;
}

function keyOf(e: BundleEntry): string | undefined {
  const r = e.resource;
  return r?.id ? `${r.resourceType}/${r.id}` : undefined;
}

/** The includes HAPI would put on a page: those its matches reference, or that reference them. */
function tiedIncludes(page: readonly BundleEntry[], includes: readonly BundleEntry[]): BundleEntry[] {
  if (includes.length === 0) return [];
  const referenced = referencesIn(page.map((e) => e.resource));
  const keys = new Set(page.map(keyOf).filter((k): k is string => k !== undefined));
  return includes.filter((inc) => {
    const k = keyOf(inc);
    if (k !== undefined && referenced.has(k)) return true;
    for (const r of referencesIn(inc.resource)) if (keys.has(r)) return true;
    return false;
  });
}
