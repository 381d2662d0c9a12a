/**
 * Errors in the log tell one failure from another (a Redis OOM, a timeout and a refused connection
 * used to log the same `"err":{}`), without PHI or secrets: URLs cut to their origin, credentials
 * and JWTs removed, parser messages (which quote the input) dropped. Repeated identical errors are
 * collapsed into one line per window with a count; security alerts are never collapsed.
 */
import { connect } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { createCollapser } from '../../../src/server/log-collapse.js';
import { createLogger, flushLogger, scrubMessage, serializeError } from '../../../src/server/logger.js';

function capture(collapseMs?: number) {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (l: string) => void lines.push(l) }, collapseMs === undefined ? {} : { collapseMs });
  return { logger, lines, json: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** A real refused connection (a port nobody listens on). */
function refused(): Promise<Error> {
  return new Promise((resolve) => {
    const s = connect(1, '127.0.0.1');
    s.once('error', resolve);
  });
}

describe('serializeError', () => {
  it('keeps message, code, errno and syscall of a system error', async () => {
    const e = await refused();
    expect(serializeError(e)).toMatchObject({ name: 'Error', code: 'ECONNREFUSED', syscall: 'connect', errno: expect.any(Number), message: expect.stringContaining('ECONNREFUSED') });
  });

  it('tells a Redis OOM, a timeout and a refused connection apart in the log line', async () => {
    const { logger, json } = capture(0);
    const oom = Object.assign(new Error("OOM command not allowed when used memory > 'maxmemory'."), { name: 'ReplyError', command: { name: 'xadd', args: ['secret-arg'] } });
    const timeout = Object.assign(new Error('Headers Timeout Error'), { name: 'HeadersTimeoutError', code: 'UND_ERR_HEADERS_TIMEOUT' });
    logger.error({ err: oom }, 'write failed');
    logger.error({ err: timeout }, 'write failed');
    logger.error({ err: await refused() }, 'write failed');
    const errs = json().map((l) => l.err as Record<string, unknown>);
    expect(errs[0]).toEqual({ name: 'ReplyError', message: "OOM command not allowed when used memory > 'maxmemory'." });
    expect(errs[1]).toMatchObject({ name: 'HeadersTimeoutError', code: 'UND_ERR_HEADERS_TIMEOUT', message: 'Headers Timeout Error' });
    expect(errs[2]).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect' });
    // Only the listed fields: the command's arguments (record contents) are not logged.
    expect(JSON.stringify(errs)).not.toContain('secret-arg');
  });

  it('follows the cause chain, bounded, and the first errors of an AggregateError', () => {
    const root = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
    const wrapped = new Error('audit sink failed earlier; restart required', { cause: new Error('batch rejected', { cause: root }) });
    expect(serializeError(wrapped)).toEqual({
      name: 'Error',
      message: 'audit sink failed earlier; restart required',
      cause: { name: 'Error', message: 'batch rejected', cause: { name: 'Error', message: 'ENOSPC: no space left on device, write', code: 'ENOSPC', errno: -28, syscall: 'write' } },
    });
    const agg = new AggregateError([1, 2, 3, 4, 5].map((i) => Object.assign(new Error(`connect ECONNREFUSED 10.0.0.${i}:6379`), { code: 'ECONNREFUSED' })), '');
    const s = serializeError(agg)!;
    expect(s.message).toBeUndefined();
    expect(s.errors).toHaveLength(3);
    expect(s.errorCount).toBe(5);
    // A cycle ends at the depth bound.
    const a = new Error('a');
    (a as { cause?: unknown }).cause = a;
    expect(JSON.stringify(serializeError(a)).match(/"cause"/g)?.length).toBe(4);
  });

  it("keeps a GatewayError's code and log-only detail", () => {
    expect(serializeError(new GatewayError('upstream-timeout', 'headers timeout'))).toMatchObject({ name: 'GatewayError', code: 'upstream-timeout', status: 504, detail: 'headers timeout' });
  });

  it('drops the message of errors that quote their input (JSON parser, Fastify)', () => {
    let parseError: unknown;
    try {
      JSON.parse('{"name":"Alice Baker", ssn');
    } catch (e) {
      parseError = e;
    }
    expect(serializeError(parseError)).toEqual({ name: 'SyntaxError' });
    const bad = Object.assign(new Error("'/fhir/Patient/pat-alice%zz' is not a valid url component"), { code: 'FST_ERR_BAD_URL' });
    expect(serializeError(bad)).toEqual({ name: 'Error', code: 'FST_ERR_BAD_URL' });
  });

  it('handles what is not an Error', () => {
    expect(serializeError(undefined)).toBeUndefined();
    expect(serializeError('boom')).toEqual({ message: 'boom' });
    expect(serializeError({ code: 'EBADF', message: 'EBADF: audit file handle is closed' })).toEqual({ code: 'EBADF', message: 'EBADF: audit file handle is closed' });
  });
});

describe('scrubMessage', () => {
  it('cuts URLs to scheme and host, dropping userinfo, paths and queries', () => {
    expect(scrubMessage('GET https://fhir.example.org/fhir/Patient?name=Baker failed')).toBe('GET https://fhir.example.org/… failed');
    expect(scrubMessage('connect to redis://default:s3cret@10.0.0.2:6379/0 failed')).toBe('connect to redis://10.0.0.2:6379/… failed');
    expect(scrubMessage('connect ECONNREFUSED 127.0.0.1:8103')).toBe('connect ECONNREFUSED 127.0.0.1:8103');
    expect(scrubMessage('bad link /fhir/Patient?family=Baker&birthdate=1950')).toBe('bad link /fhir/Patient?…');
  });

  it('removes credentials and JWT-shaped strings, and bounds the length', () => {
    const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl';
    expect(scrubMessage(`token ${jwt} rejected`)).toBe('token … rejected');
    expect(scrubMessage('Authorization: Bearer abc.def.ghi')).toBe('Authorization: Bearer …');
    expect(scrubMessage('x'.repeat(5000))).toHaveLength(300);
  });
});

describe('collapsing repeated errors', () => {
  const refusal = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

  it('writes the first, counts the rest of the window, then one line with the count', () => {
    vi.useFakeTimers();
    try {
      const { logger, json } = capture(10_000);
      for (let i = 0; i < 500; i++) logger.error({ reqId: `r${i}`, err: refusal() }, 'audit write failed: response withheld (503)');
      expect(json()).toHaveLength(1);
      expect(json()[0]).toMatchObject({ reqId: 'r0', err: { code: 'ENOSPC' } });
      expect(json()[0].repeated).toBeUndefined();
      vi.advanceTimersByTime(10_000);
      expect(json()).toHaveLength(2);
      expect(json()[1]).toMatchObject({ msg: 'audit write failed: response withheld (503)', repeated: 499, reqId: 'r499', err: { code: 'ENOSPC' } });
      // The flood goes on: one line per window.
      for (let i = 0; i < 300; i++) logger.error({ err: refusal() }, 'audit write failed: response withheld (503)');
      vi.advanceTimersByTime(10_000);
      expect(json()).toHaveLength(3);
      expect(json()[2].repeated).toBe(300);
      // Quiet for a window, then a new failure is written at once.
      vi.advanceTimersByTime(20_000);
      logger.error({ err: refusal() }, 'audit write failed: response withheld (503)');
      expect(json()).toHaveLength(4);
      expect(json()[3].repeated).toBeUndefined();
    } finally {
      vi.useRealTimers();
    }
  });

  it('keeps different messages, codes and levels apart', () => {
    const { logger, json } = capture(10_000);
    logger.error({ err: refusal() }, 'audit write failed');
    logger.error({ err: Object.assign(new Error('x'), { code: 'EIO' }) }, 'audit write failed');
    logger.error({ err: refusal() }, 'another failure');
    logger.warn({ err: refusal() }, 'audit write failed');
    logger.error(refusal(), 'audit write failed');
    expect(json()).toHaveLength(4);
  });

  it('never collapses lines without an error (alerts) or below warn', () => {
    const { logger, json } = capture(10_000);
    for (let i = 0; i < 5; i++) logger.warn({ rule: 'probing' }, 'ANOMALY rule fired');
    for (let i = 0; i < 5; i++) logger.info({ err: refusal() }, 'request completed');
    expect(json()).toHaveLength(10);
  });

  it('writes the pending counts when the logger is flushed on shutdown', async () => {
    const { logger, json } = capture(60_000);
    for (let i = 0; i < 7; i++) logger.error({ err: refusal() }, 'audit write failed');
    await flushLogger(logger);
    expect(json().map((l) => l.repeated)).toEqual([undefined, 6]);
  });

  it('is off with a zero window', () => {
    const { logger, json } = capture(0);
    for (let i = 0; i < 5; i++) logger.error({ err: refusal() }, 'audit write failed');
    expect(json()).toHaveLength(5);
  });

  it('a window whose timer has not run yet reports before the next line (busy event loop)', () => {
    let t = 0;
    const out: unknown[][] = [];
    const c = createCollapser(1_000, () => t);
    const method = (...a: unknown[]) => void out.push(a);
    const call = () => c.logMethod.call({} as never, [{ err: refusal() }, 'm'] as never, method as never, 50);
    call();
    call();
    call();
    t = 1_500;
    call();
    expect(out.map((a) => (a[0] as { repeated?: number }).repeated)).toEqual([undefined, 2, undefined]);
  });
});
