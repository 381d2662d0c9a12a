/**
 * ioredis options for every Redis client a request waits on (the audit sink, break-glass sessions
 * and their alert outbox, the anomaly windows): a stalled or unreachable Redis must turn into a
 * prompt refusal, not a request that hangs.
 *
 * - `commandTimeout`: each command rejects after this long. It may still run on Redis later
 *   (a stopped server executes what it finds in its socket buffer when it resumes), so a caller
 *   that writes must treat a timeout as "maybe applied" (the audit sink retires its writer).
 * - `socketTimeout` (default: the command timeout): a connection that answers nothing this long
 *   after a write is destroyed and replaced, so the commands after a stalled one fail at once
 *   instead of each waiting out its own timeout behind it; until the new connection passes
 *   ioredis's ready check (INFO answered), commands reject. The audit sink sets a longer one and
 *   handles a stalled connection itself (redis-sink.ts).
 * - `enableOfflineQueue: false`: not connected means rejected now, not queued for later.
 * - `maxRetriesPerRequest: 0` and `autoResendUnfulfilledCommands: false`: a command whose
 *   connection dropped is rejected, never sent again on the next connection (a resent append
 *   could store a batch twice; ioredis resends by default).
 * - reconnect forever, backing off to 1 s.
 */
import { Redis, type RedisOptions } from 'ioredis';

/** Default `audit.commandTimeoutMs`. */
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 1000;

/** How long a client created at start waits for its first connection. */
export const DEFAULT_REDIS_CONNECT_WAIT_MS = 2000;

export function failFastRedisOptions(commandTimeoutMs: number = DEFAULT_REDIS_COMMAND_TIMEOUT_MS, extra: { socketTimeoutMs?: number } = {}): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
    socketTimeout: extra.socketTimeoutMs ?? commandTimeoutMs,
    retryStrategy: (times: number) => Math.min(50 * times, 1000),
    lazyConnect: false,
  };
}

/**
 * Waits (at most `ms`) for the client's first connection: without an offline queue, a command
 * sent before it is ready is refused. Not ready by then is not fatal (commands fail closed).
 * `untilRefused`: stop at the first failed attempt (Redis is down, not still starting), so that a
 * gateway started while Redis is away does not wait once per client.
 */
export async function waitUntilReady(client: Redis, ms: number = DEFAULT_REDIS_CONNECT_WAIT_MS, opts: { untilRefused?: boolean } = {}): Promise<boolean> {
  if (client.status === 'ready') return true;
  return new Promise<boolean>((resolve) => {
    const t = setTimeout(() => done(false), ms);
    const onReady = (): void => done(true);
    const onFailed = (): void => done(false);
    function done(ready: boolean): void {
      clearTimeout(t);
      client.off('ready', onReady);
      client.off('reconnecting', onFailed);
      resolve(ready);
    }
    client.once('ready', onReady);
    if (opts.untilRefused) client.once('reconnecting', onFailed);
  });
}

/**
 * A client for a store requests wait on (break-glass sessions, access requests, alert outboxes):
 * fail-fast options, connection errors surfacing as rejected commands (fail closed per request;
 * the event would only repeat them), and the first connection awaited (bounded), since without an
 * offline queue a command before it is refused.
 */
export async function connectFailFast(url: string, commandTimeoutMs?: number): Promise<Redis> {
  const client = new Redis(url, failFastRedisOptions(commandTimeoutMs));
  client.on('error', () => {});
  await waitUntilReady(client, undefined, { untilRefused: true });
  return client;
}
