/**
 * Non-interference harness (SPEC 3.6). For one caller it runs three complete stacks, each a real
 * medplum upstream + its own OIDC provider + a gateway:
 *
 *   S   the demo seed plus the extra history (oracle.seedVersions)
 *   S2  an identical second S: S vs S2 must always agree, which guards the normalisation below
 *       against false alarms (if S vs S2 differs, the harness is wrong, not the gateway)
 *   S'  S without every resource the caller may not see (oracle.sPrimeVersions)
 *
 * Every request is sent as the same caller (same role, purpose, sub, patient and fhirUser claims;
 * tokens minted by each stack's own IdP) to all three; every `next` link is followed in each state
 * separately;
 * the answers are compared page by page after normalising ONLY:
 *   - headers: only content-type, location, content-location, etag, last-modified are compared
 *     (so X-Request-Id and Date never are); an etag that is the gateway's hash of the body it came
 *     with reads as a placeholder (it differs exactly where the raw body does);
 *   - any Bundle: id, meta.lastUpdated, timestamp;
 *   - the value of the opaque `_cursor` query parameter in links and Location headers (its length
 *     is kept and compared);
 *   - for break-glass-eligible roles, the announced hint: a searchset entry with search.mode =
 *     outcome whose issue code is `suppressed` is dropped, and a 403 break-glass-available or
 *     relationship-required (answer, or batch-response entry) reads as the gateway's 404 not-found:
 *     both tell such a caller, by design, that break-glass would reveal something there.
 * A caller with a fhirUser runs under the shipped policy's care-relationship requirements (every
 * other caller's stacks run without them, as the rest of the test suite does); a caller marked
 * `consent` runs under its `consent` section likewise.
 * Upstream pages are as small as the client's page allows (paging.minUpstreamCount 1), so the
 * small demo result sets still make the gateway refill pages across upstream pages.
 * Both gateways are configured with the same publicBaseUrl so fullUrl and links are comparable
 * byte for byte (links are mapped back to each gateway's real address only to follow them).
 */
import type { Resource } from 'fhir/r4.js';
import { ERROR_SYSTEM, operationOutcome } from '../../src/errors.js';
import { prepareFhirDefinitions, type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { pseudonymize } from '../../src/redact/pseudonym.js';
import { gatewayEtag } from '../../src/proxy/etag.js';
import { breakGlassEligible, type Caller, deidentifies, seedVersions, sPrimeVersions } from './oracle.js';

/** The public base both gateways announce (never dialled: links are mapped to the real port). */
export const PUBLIC_BASE = 'http://phi-gateway.noninterference.test/fhir';
/** The gateway's opaque continuation parameter; its value is replaced by this placeholder. */
export const CURSOR_PARAM = '_cursor';
export const CURSOR_PLACEHOLDER = '<cursor>';
export const COMPARED_HEADERS = ['content-type', 'location', 'content-location', 'etag', 'last-modified'] as const;
/** An ETag that is the gateway's hash of the very body it came with. */
export const ETAG_OF_BODY = '<hash of the body>';
const MAX_PAGES = 60;

export type StateName = 'S' | 'S2' | "S'";

export interface State {
  readonly name: StateName;
  readonly upstream: RunningUpstream;
  readonly stack: Stack;
  /** The access grant every request of this state carries (X-Access-Grant), for a caller with one. */
  readonly grant?: string | undefined;
  token(): Promise<string>;
  /** Number of versions the upstream holds (a write that reached it changes this). */
  versionCount(): number;
}

export interface World {
  readonly caller: Caller;
  readonly s: State;
  readonly s2: State;
  readonly sp: State;
  close(): Promise<void>;
}

async function seed(upstream: RunningUpstream, versions: readonly Resource[]): Promise<void> {
  for (const r of versions) {
    // Seeds keep their id, versionId and lastUpdated: S, S2 and S' are byte-for-byte reproducible.
    await upstream.repo.createResource(structuredClone(r) as never, { assignedId: true });
  }
}

/**
 * startStack picks its ports with freePort() (bind, close, reuse), which can race with another test
 * file starting stacks at the same moment: retry on EADDRINUSE.
 */
async function startStackRetrying(upstreamUrl: string, relationships: boolean, consent = false, now?: () => Date): Promise<Stack> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startStack({
        upstreamUrl,
        relationships,
        consent,
        now,
        configure: (c) => ({ ...c, publicBaseUrl: PUBLIC_BASE, paging: { ...c.paging, minUpstreamCount: 1 } }),
      });
    } catch (e) {
      if (attempt >= 4 || !String((e as { code?: string }).code ?? e).includes('EADDRINUSE')) throw e;
    }
  }
}

async function startState(name: StateName, caller: Caller, versions: readonly Resource[]): Promise<State> {
  const upstream = await startFhirUpstream({ seed: false });
  await seed(upstream, versions);
  // The gateway's clock: a caller with an expired grant has it approved now, then lives past it.
  let skew = 0;
  const stack = await startStackRetrying(upstream.url, caller.fhirUser !== undefined, caller.consent === true, () => new Date(Date.now() + skew));
  const claims = {
    ...(caller.patient === undefined ? {} : { patient: caller.patient }),
    ...(caller.fhirUser === undefined ? {} : { fhirUser: caller.fhirUser }),
  };
  let token: Promise<string> | undefined;
  const tokenOf = () => {
    // Same role client (so the same sub), same claims, from this stack's own IdP.
    token ??= stack.token(caller.role, Object.keys(claims).length === 0 ? undefined : claims);
    return token;
  };
  let grant: string | undefined;
  if (caller.grant !== undefined) {
    grant = await approvedGrant(stack, caller, await tokenOf());
    skew = (caller.grant.minutes + 1) * 60_000;
  }
  return {
    name,
    upstream,
    stack,
    grant,
    token: tokenOf,
    versionCount: () => upstream.repo.readTypeHistory(undefined, { limit: 1 }).total ?? -1,
  };
}

/**
 * Asks for the caller's grant over the gateway's own API and has the privacy officer approve it:
 * the same request in every state (ids differ; the requests naming them are refused alike).
 */
async function approvedGrant(stack: Stack, caller: Caller, token: string): Promise<string> {
  const g = caller.grant!;
  const asked = await fetch(`${stack.url.replace(/\/fhir$/, '')}/access-requests`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': caller.purpose, 'content-type': 'application/json' },
    body: JSON.stringify({ dataSet: g.dataSet, patients: g.patients, justification: 'Payer requested the discharge summary for claim review', minutes: g.minutes }),
  });
  if (asked.status !== 201) throw new Error(`harness: access request answered ${asked.status} ${await asked.text()}`);
  const id = ((await asked.json()) as { id: string }).id;
  const approved = await fetch(`${stack.url.replace(/\/fhir$/, '')}/access-requests/${id}/approve`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await stack.token('privacy-officer')}`, 'x-purpose-of-use': 'HCOMPL', 'content-type': 'application/json' },
    body: JSON.stringify({ note: 'approved for the payer request' }),
  });
  if (approved.status !== 200) throw new Error(`harness: approval answered ${approved.status} ${await approved.text()}`);
  return id;
}

/**
 * Starts S, S2 and S' for the caller. `sPrime` replaces the oracle's S' (only for the harness's own
 * sensitivity test, which must see a difference when S' lacks something the caller may see).
 */
export async function startWorld(caller: Caller, opts: { sPrime?: readonly Resource[] } = {}): Promise<World> {
  prepareFhirDefinitions();
  // One after the other: concurrent freePort() calls in one process could hand out the same port.
  const s = await startState('S', caller, seedVersions());
  const s2 = await startState('S2', caller, seedVersions());
  const sp = await startState("S'", caller, opts.sPrime ?? sPrimeVersions(caller));
  return {
    caller,
    s,
    s2,
    sp,
    async close() {
      for (const st of [s, s2, sp]) {
        await st.stack.close();
        await st.upstream.close();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

export interface RequestSpec {
  /** Request family, for grouping failures (`read`, `search-param`, `batch`...). */
  readonly family: string;
  readonly method: string;
  /** Relative to the FHIR base, starting with `/` (`/Patient?name=x`). */
  readonly path: string;
  readonly body?: string;
  readonly contentType?: string;
  /** A write that must be refused: fail if either upstream changed or the answer is 2xx. */
  readonly write?: boolean;
  /** Extra request headers for every page of the exchange (`If-None-Match`, `Prefer`, `Accept`...). */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface Page {
  readonly status: number;
  readonly headers: Record<string, string | null>;
  readonly body: unknown;
}

export interface Exchange {
  readonly pages: Page[];
  /** Set when a write reached the upstream (versions before -> after). */
  readonly executed?: string;
}

function describe(spec: RequestSpec): string {
  return `${spec.method} ${spec.path}${spec.body ? ` body=${spec.body.length > 300 ? `${spec.body.slice(0, 300)}...` : spec.body}` : ''}`;
}

function replaceCursor(url: string): string {
  // The value is opaque, its length is not: a token that grows with the upstream position read
  // would count the withheld resources skipped (found from outside), so the length is compared.
  return url.replace(new RegExp(`([?&]${CURSOR_PARAM}=)([^&#]*)`, 'g'), (_m, p: string, v: string) => `${p}${CURSOR_PLACEHOLDER}:${v.length}`);
}

function errorCodeOf(json: unknown): string | undefined {
  const oo = json as { resourceType?: string; issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
  if (oo?.resourceType !== 'OperationOutcome') return undefined;
  return oo.issue?.[0]?.details?.coding?.find((c) => c.system === ERROR_SYSTEM)?.code;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** What a break-glass-eligible caller is told where break-glass would reveal something. */
const ANNOUNCED = new Set(['break-glass-available', 'relationship-required']);

function isSuppressedOutcome(e: unknown): boolean {
  if (!isObj(e) || !isObj(e.search) || e.search.mode !== 'outcome') return false;
  const r = e.resource as { resourceType?: string; issue?: Array<{ code?: string }> } | undefined;
  return r?.resourceType === 'OperationOutcome' && (r.issue ?? []).some((i) => i.code === 'suppressed');
}

/** The normalisation of SPEC 3.6's comparison, nothing more (see the file comment). */
function normaliseValue(v: unknown, bg: boolean): unknown {
  if (Array.isArray(v)) return v.map((x) => normaliseValue(x, bg));
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) out[k] = normaliseValue(x, bg);
  if (out.resourceType === 'Bundle') {
    delete out.id;
    delete out.timestamp;
    if (isObj(out.meta)) {
      const meta = { ...out.meta };
      delete meta.lastUpdated;
      out.meta = meta;
    }
    if (Array.isArray(out.link)) {
      out.link = out.link.map((l) => (isObj(l) && typeof l.url === 'string' ? { ...l, url: replaceCursor(l.url) } : l));
    }
    if (bg && Array.isArray(out.entry)) {
      const kept = out.entry
        .filter((e) => !isSuppressedOutcome(e))
        .map((e) => {
          if (isObj(e) && isObj(e.response) && ANNOUNCED.has(errorCodeOf(e.response.outcome) ?? '')) {
            return { ...e, response: { status: '404 Not Found', outcome: operationOutcome('not-found') } };
          }
          return e;
        });
      if (kept.length > 0) out.entry = kept;
      else delete out.entry;
    }
  }
  return out;
}

export function normalisePage(p: Page, caller: Caller): Page {
  const bg = breakGlassEligible(caller);
  const headers: Record<string, string | null> = {};
  for (const h of COMPARED_HEADERS) {
    const v = p.headers[h] ?? null;
    headers[h] = v !== null && (h === 'location' || h === 'content-location') ? replaceCursor(v) : v;
  }
  if (bg && p.status === 403 && ANNOUNCED.has(errorCodeOf(p.body) ?? '')) {
    return { status: 404, headers, body: normaliseValue(operationOutcome('not-found'), bg) };
  }
  return { status: p.status, headers, body: normaliseValue(p.body, bg) };
}

async function fetchPage(
  state: State,
  caller: Caller,
  method: string,
  path: string,
  body?: string,
  contentType?: string,
  extra?: Readonly<Record<string, string>>,
): Promise<Page> {
  const headers: Record<string, string> = {
    accept: 'application/fhir+json',
    ...extra,
    authorization: `Bearer ${await state.token()}`,
    'x-purpose-of-use': caller.purpose,
    ...(state.grant === undefined ? {} : { 'x-access-grant': state.grant }),
  };
  if (contentType) headers['content-type'] = contentType;
  const res = await fetch(`${state.stack.url}${path}`, { method, headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = text === '' ? '' : JSON.parse(text);
  } catch {
    json = { nonJsonBody: text };
  }
  const h: Record<string, string | null> = {};
  for (const name of COMPARED_HEADERS) h[name] = res.headers.get(name);
  // The gateway's ETag is a hash of the bytes it released (src/proxy/etag.ts), so it differs
  // wherever the body does (the sealed cursor above all): when it is exactly that hash it says
  // nothing the body does not, and reads as a placeholder; any other value is compared as it is.
  if (h.etag !== null && h.etag === gatewayEtag(Buffer.from(text, 'utf8'))) h.etag = ETAG_OF_BODY;
  // A 304 carries the tag of the body it did not send (the one a 200 would have released, whose
  // bytes the generated searches compare without If-None-Match): its status is what is compared.
  if (h.etag !== null && res.status === 304) h.etag = ETAG_OF_BODY;
  return { status: res.status, headers: h, body: json };
}

/** The `next` link of a page, as a path on this state's gateway, or undefined (not followable = not followed). */
function nextPath(state: State, page: Page): string | undefined {
  const b = page.body as { resourceType?: string; link?: Array<{ relation?: string; url?: string }> };
  if (b?.resourceType !== 'Bundle') return undefined;
  const url = b.link?.find((l) => l.relation === 'next')?.url;
  if (typeof url !== 'string') return undefined;
  for (const base of [PUBLIC_BASE, state.stack.url]) {
    if (url.startsWith(`${base}/`) || url.startsWith(`${base}?`)) return url.slice(base.length);
  }
  return undefined;
}

/** Real id -> resource type, over every version the worlds are seeded with (ids are unique across types). */
let realIds: Map<string, string> | undefined;
function idTypes(): Map<string, string> {
  if (realIds === undefined) {
    realIds = new Map();
    for (const r of seedVersions()) if (typeof r.id === 'string') realIds.set(r.id, r.resourceType);
  }
  return realIds;
}

/**
 * A de-identified caller names resources by the pseudonyms it is given: each known real id in the
 * path or body (a path segment, a reference, a parameter value) becomes its pseudonym, so its
 * reads, compartment searches and reference searches are exercised, not merely refused.
 */
function asPseudonyms(text: string, key: Uint8Array): string {
  return text.replace(/[A-Za-z0-9\-.]+/g, (token) => {
    const type = idTypes().get(token);
    return type === undefined ? token : (pseudonymize(key, type, token) ?? token);
  });
}

function forCaller(spec: RequestSpec, caller: Caller, state: State): RequestSpec {
  if (!deidentifies(caller)) return spec;
  const key = new TextEncoder().encode(state.stack.config.pseudonymKey!);
  return { ...spec, path: asPseudonyms(spec.path, key), ...(spec.body === undefined ? {} : { body: asPseudonyms(spec.body, key) }) };
}

/** Sends the request as the caller to one state and follows every `next` link. Pages are raw (not normalised). */
export async function exchange(state: State, caller: Caller, request: RequestSpec): Promise<Exchange> {
  const spec = forCaller(request, caller, state);
  const before = state.versionCount();
  const first = await fetchPage(state, caller, spec.method, spec.path, spec.body, spec.contentType, spec.headers);
  const pages = [first];
  let next = nextPath(state, first);
  while (next !== undefined && pages.length < MAX_PAGES) {
    const p = await fetchPage(state, caller, 'GET', next, undefined, undefined, spec.headers);
    pages.push(p);
    next = nextPath(state, p);
  }
  const after = state.versionCount();
  let executed: string | undefined;
  if (after !== before) executed = `upstream versions ${before} -> ${after}`;
  else if (spec.write && first.status >= 200 && first.status < 300) executed = `answered ${first.status}`;
  return executed === undefined ? { pages } : { pages, executed };
}

// ---------------------------------------------------------------------------------------------
// Comparison

/** The first path where a and b differ, with both values, or undefined when deep-equal. */
export function firstDiff(a: unknown, b: unknown, path = ''): { path: string; a: unknown; b: unknown } | undefined {
  if (Object.is(a, b)) return undefined;
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const d = firstDiff(a[i], b[i], `${path}[${i}]`);
      if (d) return d;
    }
    return a.length === b.length ? undefined : { path: `${path}.length`, a: a.length, b: b.length };
  }
  if (isObj(a) && isObj(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const k of keys) {
      if (!(k in a) || !(k in b)) return { path: `${path}.${k}`, a: k in a ? a[k] : '<absent>', b: k in b ? b[k] : '<absent>' };
      const d = firstDiff(a[k], b[k], `${path}.${k}`);
      if (d) return d;
    }
    return undefined;
  }
  return { path: path || '<root>', a, b };
}

function compact(v: unknown, max = 400): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

/** Compares two exchanges after normalisation; undefined when they agree. */
export function compareExchanges(caller: Caller, a: Exchange, b: Exchange): { path: string; a: unknown; b: unknown } | undefined {
  const na = a.pages.map((p) => normalisePage(p, caller));
  const nb = b.pages.map((p) => normalisePage(p, caller));
  for (let i = 0; i < Math.min(na.length, nb.length); i++) {
    const d = firstDiff(na[i], nb[i], `page[${i}]`);
    if (d) return d;
  }
  if (na.length !== nb.length) return { path: 'pages.length', a: na.length, b: nb.length };
  return undefined;
}

export interface Verdict {
  readonly spec: RequestSpec;
  readonly caller: Caller;
  /** S vs S2: a harness false alarm if set. */
  readonly selfDiff?: string;
  /** S vs S': the gateway interferes if set. */
  readonly diff?: string;
  /** A write that was executed in some state. */
  readonly executed?: string;
}

function explain(caller: Caller, spec: RequestSpec, left: string, right: string, d: { path: string; a: unknown; b: unknown }): string {
  return `[${caller.name}] ${spec.family}: ${describe(spec)}\n    first difference at ${d.path}\n      ${left}: ${compact(d.a)}\n      ${right}: ${compact(d.b)}`;
}

/** Runs one request in S, S2 and S' at once and judges it. */
export async function judge(world: World, spec: RequestSpec): Promise<Verdict> {
  const { caller } = world;
  const [a, a2, b] = await Promise.all([world.s, world.s2, world.sp].map((st) => exchange(st, caller, spec)));
  const self = compareExchanges(caller, a!, a2!);
  const diff = compareExchanges(caller, a!, b!);
  const executed = [
    ['S', a!],
    ['S2', a2!],
    ["S'", b!],
  ]
    .filter(([, x]) => (x as Exchange).executed !== undefined)
    .map(([n, x]) => `${n as string}: ${(x as Exchange).executed}`);
  return {
    spec,
    caller,
    ...(self ? { selfDiff: explain(caller, spec, 'S ', 'S2', self) } : {}),
    ...(diff ? { diff: explain(caller, spec, 'S ', "S'", diff) } : {}),
    ...(executed.length > 0 ? { executed: `[${caller.name}] ${spec.family}: ${describe(spec)}\n    write EXECUTED: ${executed.join('; ')}` } : {}),
  };
}

/** Runs `fn` over `items` with at most `limit` in flight, keeping order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const k = i++;
      out[k] = await fn(items[k]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** A failure report: the first `max` messages and a count, for expect messages. */
export function report(title: string, messages: readonly string[], max = 5): string {
  return `${title}: ${messages.length} failing request(s)\n${messages.slice(0, max).join('\n')}${messages.length > max ? `\n  ... and ${messages.length - max} more` : ''}`;
}
