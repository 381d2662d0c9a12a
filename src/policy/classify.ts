/**
 * classify(): THE place where the gateway decides what a request is. Pure and synchronous. It
 * returns a ClassifiedRequest (src/policy/request.ts) or throws a GatewayError with one of
 * `method-not-allowed`, `request-unclassified`, `request-body-invalid`, `unsupported-media-type`,
 * `request-too-large`, `not-acceptable`; never anything else for any request (a non-finite `maxBodyBytes` is a
 * configuration bug and answers `internal`). What is forwarded upstream is rebuilt
 * from its output (upstreamMethod(), upstreamPath, upstreamQuery, body), never from the raw URL,
 * so the upstream sees exactly what the decision layer judged. Fixed check order: method ->
 * override headers -> Accept -> If-None-Exist -> URL (path shape, then query, `_format`) -> body.
 *
 * Contracts and choices (docs/design.md repeats them):
 * - `POST Type/_search` and `POST /_search` merge the form body into the URL parameters (URL
 *   first) and are recorded with method POST, interaction search-type / search-system, no body.
 *   They are forwarded as `GET /Type?<merged>` (see upstreamMethod()), so the upstream cannot see
 *   a parameter that was not decided (BYPASSES 7). HEAD is classified like GET and forwarded as
 *   GET: the gateway needs the filtered body to answer the headers truthfully.
 * - A POST operation with a form body is handled the same way: its parameters join `params` and
 *   `upstreamQuery`, and `body` is undefined. A JSON operation body must be a Parameters resource
 *   (kept in `body`; its parameters are not copied into `params`).
 * - Conditional create (`If-None-Exist` on `POST /Type`, or `request.ifNoneExist` in a Bundle
 *   entry) is a create plus a search: its criteria become the create's `params` (a plain create
 *   takes no URL parameters, so `params` on a create always are If-None-Exist criteria), and the
 *   decision layer judges them as a search of that type, because whether the server answers 200 or
 *   201 tells the caller if a match exists (BYPASSES 3). The criteria go upstream only in the
 *   If-None-Exist header or entry field (src/proxy/upstream-request.ts), never as a URL query.
 *   Result-shaping parameters (`_count`, `_include`...) mean nothing there and are refused.
 *   Conditional update, patch
 *   and delete (`PUT Type?criteria`) are classified without an id, so the decision layer can deny
 *   them; without criteria they are refused (a criteria-less conditional delete could match all).
 * - The answer is FHIR JSON only: an `Accept` header or `_format` that asks only for something
 *   else (XML, Turtle, HTML) is refused with `not-acceptable` rather than answered in JSON.
 * - Method overrides (the X-HTTP-Method-Override family, or a `_method` parameter) are refused,
 *   never honoured or ignored. `_format` and `_pretty` are dropped; every other parameter is kept.
 * - Only the Patient compartment is classified (`Patient/id/Type`, GET/HEAD).
 * - Batch/transaction entries are classified with the same rules (urls relative to the base; an
 *   absolute url is refused since the gateway cannot tell a foreign base from its own). The
 *   returned `body` is a rebuilt Bundle whose every `entry.request` carries the canonical method
 *   and url, so the upstream executes what was classified. Bundles nest at most MAX_BUNDLE_DEPTH.
 */
import { GatewayError } from '../errors.js';
import type { ClassifiedRequest, HttpMethod, Interaction } from './request.js';
import { parseStrictJson } from './classify/json.js';
import { type BodyMedia, bodyMedia, checkAccept, checkFormatParam } from './classify/media.js';
import { ID, resolveTarget, type Target } from './classify/target.js';
import { dropFormatting, encodeParams, type Param, parseForm, pathSegments, splitTarget } from './classify/url.js';

export interface RawRequest {
  /** As received (any case). */
  readonly method: string;
  /** Path + query as received, relative to the FHIR base (`/fhir` removed), e.g. `/Patient/123?_format=xml`. */
  readonly url: string;
  /** Lower-case names, as node gives them. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Raw request body bytes (undefined for none). */
  readonly body: Buffer | undefined;
}

export interface ClassifyOptions {
  /** Exact R4 spelling, case-sensitive. */
  isResourceType(name: string): boolean;
  maxBodyBytes: number;
  /** Entries a batch or transaction may hold, nested Bundles' entries included (default DEFAULT_MAX_BUNDLE_ENTRIES). */
  maxBundleEntries?: number;
}

/**
 * Each entry is decided, forwarded, filtered and (for searches) paged by the gateway: a 1 MiB Bundle
 * of 17,000 searches held one client's request on the event loop for seconds after it hung up.
 */
export const DEFAULT_MAX_BUNDLE_ENTRIES = 100;

/** Entries of a batch/transaction body and of the batch/transaction Bundles its entries carry. */
function bundleEntryCount(v: unknown, level: number): number {
  if (!isObject(v) || !Array.isArray(v.entry) || level > MAX_BUNDLE_DEPTH) return 0;
  let n = v.entry.length;
  for (const e of v.entry) {
    const r = isObject(e) ? e.resource : undefined;
    if (isObject(r) && r.resourceType === 'Bundle') n += bundleEntryCount(r, level + 1);
  }
  return n;
}

/** A Bundle inside a Bundle inside a Bundle is the deepest nesting classified. */
export const MAX_BUNDLE_DEPTH = 3;
/** JSON nesting limit for request bodies: far beyond real resources, far below stack trouble. */
export const MAX_JSON_DEPTH = 100;

/** Headers that some servers and frameworks honour to change the method. */
export const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;

const METHODS: ReadonlySet<string> = new Set<HttpMethod>(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
const JSON_PATCH_OPS: ReadonlySet<string> = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

function unclassified(detail: string): GatewayError {
  return new GatewayError('request-unclassified', detail);
}
function bodyInvalid(detail: string): GatewayError {
  return new GatewayError('request-body-invalid', detail);
}

type JsonObject = Record<string, unknown>;
function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The method the upstream is called with: searches submitted by POST go as GET (their parameters
 * are all in upstreamQuery), HEAD goes as GET; everything else as classified.
 */
export function upstreamMethod(req: ClassifiedRequest): Exclude<HttpMethod, 'HEAD'> {
  if (req.method === 'HEAD') return 'GET';
  if (req.method === 'POST' && (req.interaction === 'search-type' || req.interaction === 'search-system')) return 'GET';
  return req.method;
}

/** `upstreamPath` plus `?upstreamQuery` when there is one. */
export function upstreamUrl(req: ClassifiedRequest): string {
  return req.upstreamQuery === '' ? req.upstreamPath : `${req.upstreamPath}?${req.upstreamQuery}`;
}

/**
 * URL params of the request or entry; a conditional update/patch/delete must carry criteria, a
 * create none (its criteria come in If-None-Exist). `checkFormat`: the request's own URL, whose
 * `_format` must ask for JSON (an entry's `_format` is dropped: the Bundle answers as a whole).
 */
function urlParams(query: string, t: Target, what: string, checkFormat = false): Param[] {
  const raw = parseForm(query, what);
  if (checkFormat) for (const [name, value] of raw) if (name.toLowerCase() === '_format') checkFormatParam(value);
  const params = dropFormatting(raw);
  if (t.conditional && params.length === 0) throw unclassified('conditional interaction without criteria');
  if (t.interaction === 'create' && params.length > 0) throw unclassified('create with URL parameters');
  return params;
}

/** Parameters that shape a result: meaningless as If-None-Exist criteria, which only match. */
const RESULT_PARAMS: ReadonlySet<string> = new Set([
  '_count', '_sort', '_include', '_revinclude', '_summary', '_elements', '_total', '_contained', '_containedType', '_offset', '_cursor', '_page',
]);

/**
 * The criteria of a conditional create: `If-None-Exist` (header or entry field) as a query, with
 * an optional leading `?` or `Type?` naming the created type. Empty, repeated or result-shaping
 * criteria are refused.
 */
function ifNoneExist(raw: unknown, t: Target): Param[] {
  if (t.interaction !== 'create') throw unclassified('If-None-Exist on a request other than create');
  if (typeof raw !== 'string') throw unclassified('If-None-Exist is not one string');
  let query = raw.trim();
  const q = query.indexOf('?');
  if (q >= 0) {
    const before = query.slice(0, q);
    if (before !== '' && before !== t.resourceType) throw unclassified('If-None-Exist names another type');
    query = query.slice(q + 1);
  }
  const params = dropFormatting(parseForm(query, 'If-None-Exist'));
  if (params.length === 0) throw unclassified('If-None-Exist without criteria');
  for (const [name] of params) {
    const colon = name.indexOf(':');
    if (RESULT_PARAMS.has(colon < 0 ? name : name.slice(0, colon))) throw unclassified('If-None-Exist with a result parameter');
  }
  return params;
}

function parseMethod(raw: unknown): HttpMethod {
  // ASCII letters only: 'poſt'.toUpperCase() is 'POST'.
  if (typeof raw !== 'string' || !/^[A-Za-z]{1,16}$/.test(raw)) throw new GatewayError('method-not-allowed', 'malformed method');
  const m = raw.toUpperCase();
  if (!METHODS.has(m)) throw new GatewayError('method-not-allowed', 'method not supported');
  return m as HttpMethod;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw bodyInvalid(`${what}: not UTF-8`);
  }
}

// ---- body checks shared by the request body and Bundle entry resources ----

function checkResource(v: unknown, t: Target): JsonObject {
  if (!isObject(v)) throw bodyInvalid('body is not a resource');
  if (v.resourceType !== t.resourceType) throw bodyInvalid('resourceType does not match the path');
  if (t.id !== undefined) {
    if (v.id !== t.id) throw bodyInvalid('id does not match the path');
  } else if (v.id !== undefined && (typeof v.id !== 'string' || !ID.test(v.id))) {
    throw bodyInvalid('invalid id');
  }
  return v;
}

function checkParameters(v: unknown): JsonObject {
  if (!isObject(v) || v.resourceType !== 'Parameters') throw bodyInvalid('body is not a Parameters resource');
  if (v.parameter !== undefined && !Array.isArray(v.parameter)) throw bodyInvalid('Parameters.parameter is not an array');
  return v;
}

function checkJsonPatch(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw bodyInvalid('JSON Patch is not an array');
  for (const op of v) {
    if (!isObject(op) || typeof op.op !== 'string' || !JSON_PATCH_OPS.has(op.op)) throw bodyInvalid('invalid JSON Patch operation');
    if (typeof op.path !== 'string' || (op.path !== '' && !op.path.startsWith('/'))) throw bodyInvalid('invalid JSON Patch path');
    if ((op.op === 'move' || op.op === 'copy') && (typeof op.from !== 'string' || (op.from !== '' && !op.from.startsWith('/')))) {
      throw bodyInvalid('invalid JSON Patch from');
    }
    if ((op.op === 'add' || op.op === 'replace' || op.op === 'test') && !Object.hasOwn(op, 'value')) throw bodyInvalid('JSON Patch value missing');
  }
  return v;
}

/** A Bundle entry's PATCH: FHIRPath Patch (Parameters) or a Binary holding a JSON Patch. */
function checkEntryPatch(v: unknown): JsonObject {
  if (isObject(v) && v.resourceType === 'Binary') {
    const ct = v.contentType;
    if (typeof ct !== 'string' || bodyMedia(ct) !== 'json-patch') throw new GatewayError('unsupported-media-type', 'Binary patch content type');
    const data = v.data;
    if (typeof data !== 'string' || data.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(data)) throw bodyInvalid('Binary patch data is not base64');
    checkJsonPatch(parseStrictJson(decodeUtf8(Buffer.from(data, 'base64'), 'Binary patch'), MAX_JSON_DEPTH));
    return v;
  }
  return checkParameters(v);
}

// ---- assembly ----

interface Parts {
  readonly method: HttpMethod;
  readonly target: Target;
  readonly params: readonly Param[];
  readonly body: unknown;
  readonly interaction?: Interaction;
  readonly entries?: readonly ClassifiedRequest[];
}

function assemble(p: Parts): ClassifiedRequest {
  const t = p.target;
  const params = Object.freeze(p.params.map((pair) => Object.freeze([pair[0], pair[1]] as const)));
  return Object.freeze({
    method: p.method,
    interaction: p.interaction ?? t.interaction,
    resourceType: t.resourceType,
    id: t.id,
    versionId: t.versionId,
    operation: t.operation,
    compartment: t.compartment === undefined ? undefined : Object.freeze({ ...t.compartment }),
    params,
    upstreamPath: t.upstreamPath,
    upstreamQuery: encodeParams(params),
    body: p.body,
    entries: p.entries === undefined ? undefined : Object.freeze([...p.entries]),
  });
}

// ---- batch / transaction ----

function classifyBundle(v: unknown, level: number, opts: ClassifyOptions): { interaction: Interaction; body: JsonObject; entries: ClassifiedRequest[] } {
  if (!isObject(v) || v.resourceType !== 'Bundle') throw bodyInvalid('body is not a Bundle');
  if (v.type !== 'batch' && v.type !== 'transaction') throw bodyInvalid('Bundle type is not batch or transaction');
  if (v.entry !== undefined && !Array.isArray(v.entry)) throw bodyInvalid('Bundle.entry is not an array');
  const entries: ClassifiedRequest[] = [];
  const rebuilt: unknown[] = [];
  for (const e of (v.entry as unknown[] | undefined) ?? []) {
    const r = classifyEntry(e, level, opts);
    entries.push(r.classified);
    rebuilt.push(r.entry);
  }
  // A new Bundle: the parsed input is never modified, and the forwarded urls are the canonical ones.
  const body: JsonObject = v.entry === undefined ? { ...v } : { ...v, entry: rebuilt };
  return { interaction: v.type, body, entries };
}

function entryUrl(c: ClassifiedRequest): string {
  const path = c.upstreamPath.slice(1);
  const url = c.upstreamQuery === '' ? path : `${path}?${c.upstreamQuery}`;
  return url === '' ? '/' : url;
}

function classifyEntry(e: unknown, level: number, opts: ClassifyOptions): { classified: ClassifiedRequest; entry: JsonObject } {
  if (!isObject(e)) throw bodyInvalid('Bundle entry is not an object');
  const req = e.request;
  if (!isObject(req)) throw unclassified('Bundle entry without request');
  if (typeof req.method !== 'string') throw unclassified('Bundle entry without method');
  // Bundle.entry.request.method is a code: exact upper case, no normalization.
  if (!METHODS.has(req.method)) throw new GatewayError('method-not-allowed', 'Bundle entry method');
  const method = req.method as HttpMethod;
  if (typeof req.url !== 'string' || req.url === '') throw unclassified('Bundle entry without url');
  const { path, query } = splitTarget(req.url, 'optional');
  const t = resolveTarget(method, pathSegments(path), opts.isResourceType);
  const urlCriteria = urlParams(query, t, 'entry query');
  const params = req.ifNoneExist === undefined ? urlCriteria : ifNoneExist(req.ifNoneExist, t);
  const resource = e.resource;

  let body: unknown;
  let interaction: Interaction | undefined;
  let entries: ClassifiedRequest[] | undefined;
  switch (t.body) {
    case 'none':
    case 'form':
      // An entry has no form body: a search's parameters are all in its url.
      if (resource !== undefined) throw unclassified('Bundle entry carries a resource this request does not take');
      break;
    case 'resource':
      body = checkResource(resource, t);
      break;
    case 'patch':
      body = checkEntryPatch(resource);
      break;
    case 'operation':
      body = resource === undefined ? undefined : checkParameters(resource);
      break;
    case 'bundle': {
      if (level + 1 > MAX_BUNDLE_DEPTH) throw unclassified('Bundles nested too deeply');
      const nested = classifyBundle(resource, level + 1, opts);
      body = nested.body;
      interaction = nested.interaction;
      entries = nested.entries;
      break;
    }
  }
  const classified = assemble({ method, target: t, params, body, ...(interaction && { interaction }), ...(entries && { entries }) });
  const { ifNoneExist: _criteria, ...request } = req;
  const forwarded: JsonObject =
    classified.interaction === 'create' && classified.upstreamQuery !== ''
      ? { ...request, method: 'POST', url: classified.upstreamPath.slice(1), ifNoneExist: classified.upstreamQuery }
      : { ...request, method: upstreamMethod(classified), url: entryUrl(classified) };
  const entry: JsonObject = { ...e, request: forwarded };
  if (body !== undefined) entry.resource = body;
  return { classified, entry };
}

// ---- the request body ----

interface BodyResult {
  readonly extraParams: readonly Param[];
  readonly body: unknown;
  readonly interaction?: Interaction;
  readonly entries?: readonly ClassifiedRequest[];
}

function requestBody(input: RawRequest, t: Target, opts: ClassifyOptions): BodyResult {
  const bytes = input.body;
  if (bytes !== undefined && bytes.length > opts.maxBodyBytes) throw new GatewayError('request-too-large', 'request body over the limit');
  if (bytes === undefined || bytes.length === 0) {
    if (t.body === 'resource' || t.body === 'patch' || t.body === 'bundle') throw bodyInvalid('body required');
    return { extraParams: [], body: undefined };
  }
  // A body where the interaction takes none (GET, DELETE...) has no agreed meaning: refuse it.
  if (t.body === 'none') throw unclassified('request carries a body this interaction does not take');
  const encoding = input.headers['content-encoding'];
  if (encoding !== undefined && (typeof encoding !== 'string' || encoding.trim().toLowerCase() !== 'identity')) {
    throw new GatewayError('unsupported-media-type', 'encoded request body');
  }
  const media: BodyMedia = bodyMedia(input.headers['content-type']);
  const text = decodeUtf8(bytes, 'request body');
  const json = (): unknown => parseStrictJson(text, MAX_JSON_DEPTH);
  const wrongMedia = (): GatewayError => new GatewayError('unsupported-media-type', 'media type not accepted for this interaction');

  switch (t.body) {
    case 'form':
      if (media !== 'form') throw wrongMedia();
      return { extraParams: dropFormatting(parseForm(text, 'form body')), body: undefined };
    case 'operation':
      if (media === 'form') return { extraParams: dropFormatting(parseForm(text, 'form body')), body: undefined };
      if (media !== 'json') throw wrongMedia();
      return { extraParams: [], body: checkParameters(json()) };
    case 'resource':
      if (media !== 'json') throw wrongMedia();
      return { extraParams: [], body: checkResource(json(), t) };
    case 'patch':
      if (media === 'json-patch') return { extraParams: [], body: checkJsonPatch(json()) };
      if (media !== 'json') throw wrongMedia();
      return { extraParams: [], body: checkParameters(json()) };
    case 'bundle': {
      if (media !== 'json') throw wrongMedia();
      const parsed = json();
      const max = opts.maxBundleEntries ?? DEFAULT_MAX_BUNDLE_ENTRIES;
      const count = bundleEntryCount(parsed, 1);
      if (count > max) throw new GatewayError('bundle-too-large', `the Bundle holds ${count} entries; at most ${max} are accepted (limits.bundleEntries)`);
      const b = classifyBundle(parsed, 1, opts);
      return { extraParams: [], body: b.body, interaction: b.interaction, entries: b.entries };
    }
  }
}

/** Classifies one client request; see the module comment for the contract. */
export function classify(input: RawRequest, opts: ClassifyOptions): ClassifiedRequest {
  // A misconfigured limit must not turn into "no limit".
  if (!(Number.isFinite(opts.maxBodyBytes) && opts.maxBodyBytes >= 0)) throw new GatewayError('internal', 'maxBodyBytes is not a finite size');
  const method = parseMethod(input.method);
  for (const h of METHOD_OVERRIDE_HEADERS) {
    if (input.headers[h] !== undefined) throw unclassified('method override header');
  }
  checkAccept(input.headers.accept);
  const criteria = input.headers['if-none-exist'];
  const { path, query } = splitTarget(input.url, 'required');
  const t = resolveTarget(method, pathSegments(path), opts.isResourceType);
  const urlCriteria = urlParams(query, t, 'query', true);
  const params = criteria === undefined ? urlCriteria : ifNoneExist(criteria, t);
  const b = requestBody(input, t, opts);
  return assemble({
    method,
    target: t,
    params: b.extraParams.length === 0 ? params : [...params, ...b.extraParams],
    body: b.body,
    ...(b.interaction && { interaction: b.interaction }),
    ...(b.entries && { entries: b.entries }),
  });
}
