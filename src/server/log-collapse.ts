/**
 * Collapsing repeated errors in the log. An outage (a full disk, Redis gone, the upstream down)
 * fails every request the same way, and one line per request buries the first, telling line under
 * thousands of copies. A warn/error line that carries an `err` is keyed by level, message and the
 * error's code (or name): the first of a key in a window is written as logged, the others within
 * the window are counted, and when the window ends one line with the last of them and `repeated: n`
 * (and `repeatedOverMs`) is written. Lines without an `err` (security alerts, break-glass,
 * anomalies) are never collapsed: each is an event of its own.
 */
import type { LogFn, Logger } from 'pino';

/** Default window (ms). */
export const LOG_COLLAPSE_MS = 10_000;

/** pino's numeric level for warn: warn, error and fatal lines are collapsed. */
const WARN = 40;
/** Keys tracked at once; beyond it, new keys are logged as they come (never dropped). */
const MAX_KEYS = 1_000;

interface Burst {
  start: number;
  suppressed: number;
  last?: Parameters<LogFn>;
  logger?: Logger;
  method?: LogFn;
  timer?: NodeJS.Timeout;
}

export interface Collapser {
  /** pino's `hooks.logMethod`. */
  logMethod(this: Logger, args: Parameters<LogFn>, method: LogFn, level: number): void;
  /** Writes the count of every window still open (before a flush on shutdown). */
  flushAll(): void;
}

function errorCodeOf(v: unknown): string | undefined {
  if (v === null || typeof v !== 'object') return undefined;
  const e = v as { code?: unknown; name?: unknown };
  if (typeof e.code === 'string' || typeof e.code === 'number') return String(e.code);
  return typeof e.name === 'string' ? e.name : '';
}

/** The collapse key of a log call, or undefined when the line is not an error to collapse. */
export function collapseKey(args: readonly unknown[], level: number): string | undefined {
  if (level < WARN) return undefined;
  const first = args[0];
  let code: string | undefined;
  let msg: unknown;
  if (first instanceof Error) {
    code = errorCodeOf(first);
    msg = args[1];
  } else if (first !== null && typeof first === 'object') {
    code = errorCodeOf((first as { err?: unknown }).err);
    msg = args[1];
  }
  if (code === undefined) return undefined;
  return `${level}\u0000${typeof msg === 'string' ? msg : ''}\u0000${code}`;
}

export function createCollapser(windowMs: number, now: () => number = Date.now): Collapser {
  const bursts = new Map<string, Burst>();

  function summarize(b: Burst): void {
    clearTimeout(b.timer);
    b.timer = undefined;
    if (b.suppressed === 0 || b.last === undefined || b.method === undefined) return;
    const [first, ...rest] = b.last;
    const counted = { repeated: b.suppressed, repeatedOverMs: now() - b.start };
    const obj = first instanceof Error ? { err: first, ...counted } : { ...(first as object), ...counted };
    const method = b.method;
    const logger = b.logger;
    b.suppressed = 0;
    b.last = undefined;
    // The summary opens the next window: a flood that goes on writes one line per window.
    b.start = now();
    (method as (...a: unknown[]) => void).apply(logger, [obj, ...rest]);
  }

  /** Forgets keys whose window ended with nothing counted, to make room. */
  function prune(t: number): void {
    for (const [k, b] of bursts) if (b.suppressed === 0 && t - b.start >= windowMs) bursts.delete(k);
  }

  return {
    logMethod(args, method, level) {
      const key = windowMs > 0 ? collapseKey(args, level) : undefined;
      if (key === undefined) return method.apply(this, args);
      const t = now();
      const b = bursts.get(key);
      if (b === undefined || t - b.start >= windowMs) {
        // A window that ended while its timer had not run yet (a busy event loop) reports first.
        if (b !== undefined) summarize(b);
        if (b === undefined && bursts.size >= MAX_KEYS) prune(t);
        if (b !== undefined || bursts.size < MAX_KEYS) bursts.set(key, { start: t, suppressed: 0 });
        return method.apply(this, args);
      }
      b.suppressed++;
      b.last = args;
      b.logger = this;
      b.method = method;
      b.timer ??= setTimeout(() => summarize(b), Math.max(0, b.start + windowMs - t)).unref();
    },
    flushAll() {
      for (const b of bursts.values()) summarize(b);
    },
  };
}
