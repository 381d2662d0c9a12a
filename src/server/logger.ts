/**
 * The gateway's logger. Allow-list serializers only: no request URL, query, header or body is ever
 * logged (paths carry patient ids, queries carry names, headers carry tokens). Callers log ids,
 * codes and counts. Errors keep what tells one failure from another (message, code, errno, syscall,
 * the cause chain), with URLs cut to their origin and credentials removed.
 */
import { type DestinationStream, type Logger, pino } from 'pino';
import { type Collapser, createCollapser, LOG_COLLAPSE_MS } from './log-collapse.js';

export { LOG_COLLAPSE_MS } from './log-collapse.js';

/** Keys dropped from every log object and from the objects directly under it (a safety net). */
const SECRET_KEYS = new Set(['authorization', 'headers', 'token']);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Same effect as pino `redact` with paths `authorization, *.authorization, headers, *.headers,
 * token, *.token` and `remove: true`, at a fraction of its cost: a few key lookups per line, and a
 * copy only when something has to go (the caller's object is never modified). Exported for tests.
 */
export function dropSecrets(obj: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k in obj) {
    const v = obj[k];
    let keep: unknown = v;
    if (SECRET_KEYS.has(k)) keep = undefined;
    else if (isPlainObject(v)) {
      for (const inner in v) {
        if (SECRET_KEYS.has(inner)) {
          const copy: Record<string, unknown> = {};
          for (const ik in v) if (!SECRET_KEYS.has(ik)) copy[ik] = v[ik];
          keep = copy;
          break;
        }
      }
    }
    if (keep !== v && out === undefined) {
      // First change: copy what came before it.
      out = {};
      for (const pk in obj) {
        if (pk === k) break;
        out[pk] = obj[pk];
      }
    }
    if (out !== undefined && keep !== undefined) out[k] = keep;
  }
  return out ?? obj;
}

/**
 * Without a destination, stdout written asynchronously in blocks of at least LOG_BLOCK_BYTES: a
 * write system call per block, not per request line, and a slow reader of stdout (a container's
 * log pipe) never blocks request handling. Whoever creates the logger this way also flushes it
 * periodically (startGateway: every LOG_FLUSH_MS) and on a clean stop (`flushLogger`); pino
 * flushes what is buffered when the process exits. A SIGKILL can lose the last second of lines:
 * the audit trail, not this log, is the durable record of every request.
 */
export const LOG_BLOCK_BYTES = 4096;
export const LOG_FLUSH_MS = 1000;

export interface LoggerOptions {
  /** Window for collapsing repeated identical errors (ms); 0 logs every one. Default LOG_COLLAPSE_MS. */
  readonly collapseMs?: number;
}

export function createLogger(level: string, destination?: DestinationStream, opts: LoggerOptions = {}): Logger {
  const collapser = createCollapser(opts.collapseMs ?? LOG_COLLAPSE_MS);
  const logger = pino(
    {
      level,
      base: { service: 'phi-gateway' },
      // Even if someone logs a request or error object, only these fields survive.
      serializers: {
        req: (req: { id?: string; method?: string }) => ({ id: req.id, method: req.method }),
        res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
        err: serializeError,
      },
      formatters: { log: dropSecrets, bindings: dropSecrets },
      // An outage repeats the same error for every request: one line per window with a count.
      hooks: { logMethod: collapser.logMethod },
    },
    destination ?? pino.destination({ dest: 1, sync: false, minLength: LOG_BLOCK_BYTES }),
  );
  collapsers.set(logger, collapser);
  return logger;
}

const collapsers = new WeakMap<Logger, Collapser>();

/**
 * Resolves once buffered lines were handed to the destination (never rejects). Counts of
 * collapsed errors still waiting for the end of their window are written first.
 */
export function flushLogger(logger: Logger): Promise<void> {
  collapsers.get(logger)?.flushAll();
  return new Promise<void>((resolve) => {
    try {
      logger.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}

/** How deep a cause chain is followed, and how many errors of an AggregateError are kept. */
const MAX_CAUSES = 4;
const MAX_AGGREGATED = 3;
const MAX_MESSAGE = 300;

/**
 * Error messages that may quote request bytes are not logged: a JSON parser's quotes the body it
 * read, Fastify's (FST_*) the path or header it refused. Their name and code say what happened.
 */
function messageMayQuoteInput(name: unknown, code: unknown): boolean {
  return name === 'SyntaxError' || (typeof code === 'string' && code.startsWith('FST_'));
}

/**
 * An error message without what could carry PHI or secrets: a URL keeps its scheme and host only
 * (paths carry patient ids, queries names, userinfo passwords), a query string after a bare path is
 * cut, bearer/basic credentials and JWT-shaped strings are removed, and the length is bounded.
 * Exported for tests.
 */
export function scrubMessage(message: string): string {
  return message
    .slice(0, MAX_MESSAGE * 2)
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)(?:[^\s/?#@'"<>]*@)?([^\s/?#'"<>]*)([^\s'"<>]*)/gi, (_m, scheme: string, host: string, rest: string) => `${scheme}${host}${rest ? '/…' : ''}`)
    .replace(/(\/[^\s?'"<>]*)\?[^\s'"<>]*/g, '$1?…')
    .replace(/\b(bearer|basic)\s+[^\s,;'"]+/gi, '$1 …')
    .replace(/\beyJ[\w-]*\.[\w-]*\.?[\w-]*/g, '…')
    .slice(0, MAX_MESSAGE);
}

/**
 * The `err` serializer. Keeps name, message (scrubbed), code, errno, syscall, a GatewayError's
 * detail (log-only by contract), the cause chain and an AggregateError's first errors (a refused
 * dual-stack connect is an AggregateError with an empty message). Never request or response
 * objects, headers or bodies: only these fields are read. Exported for tests.
 */
export function serializeError(err: unknown, depth = 0): Record<string, unknown> | undefined {
  if (err === undefined || err === null) return undefined;
  if (typeof err !== 'object') return { message: scrubMessage(String(err)) };
  const e = err as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const name = e.name;
  const code = e.code;
  if (typeof name === 'string' && name.length > 0) out.name = name;
  if (typeof e.message === 'string' && e.message.length > 0 && !messageMayQuoteInput(name, code)) out.message = scrubMessage(e.message);
  if (typeof code === 'string' || typeof code === 'number') out.code = code;
  if (typeof e.errno === 'number' || typeof e.errno === 'string') out.errno = e.errno;
  if (typeof e.syscall === 'string') out.syscall = e.syscall;
  if (typeof e.status === 'number') out.status = e.status;
  if (name === 'GatewayError' && typeof e.detail === 'string') out.detail = scrubMessage(e.detail);
  if (depth < MAX_CAUSES) {
    if (e.cause !== undefined) out.cause = serializeError(e.cause, depth + 1);
    if (Array.isArray(e.errors) && e.errors.length > 0) {
      out.errors = e.errors.slice(0, MAX_AGGREGATED).map((x) => serializeError(x, depth + 1));
      if (e.errors.length > MAX_AGGREGATED) out.errorCount = e.errors.length;
    }
  }
  return out;
}
