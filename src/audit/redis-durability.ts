/**
 * Whether the Redis holding the audit stream keeps what it acknowledged. A write the sink waited
 * for is only as durable as the server makes it: with AOF off (`appendonly no`, the default) or
 * `appendfsync everysec` (the AOF default) a crash or power loss drops acknowledged records, and the
 * hash chain then only proves that something is missing. Checked once when the sink connects; a
 * finding is a warn log line, never a refusal to start (managed Redis may replicate instead).
 */
import type { Logger } from 'pino';

/** What could be read: via CONFIG GET (both settings) or, with CONFIG refused, INFO persistence (AOF only). */
export type RedisDurability =
  | { readonly via: 'config'; readonly appendonly: boolean; readonly appendfsync: string }
  | { readonly via: 'info'; readonly appendonly: boolean; readonly appendfsync: undefined }
  | { readonly via: 'none'; readonly error: string };

/** The two commands used (an ioredis client has both). */
export interface DurabilityClient {
  config(op: 'GET', parameter: string): Promise<unknown>;
  info(section: string): Promise<string>;
}

function errorCode(e: unknown): string {
  // The first word of a Redis error (NOPERM, ERR...): never the message, which may name the ACL user.
  const m = /^([A-Z]+)\b/.exec((e as Error)?.message ?? '');
  return m?.[1] ?? (e as { code?: string })?.code ?? 'error';
}

/** CONFIG GET reply `[name, value]` (or a map in RESP3) -> value. */
function configValue(reply: unknown, name: string): string | undefined {
  if (Array.isArray(reply)) {
    const i = reply.findIndex((x) => String(x).toLowerCase() === name);
    return i >= 0 && i + 1 < reply.length ? String(reply[i + 1]) : undefined;
  }
  if (reply !== null && typeof reply === 'object') {
    const v = (reply as Record<string, unknown>)[name];
    return v === undefined ? undefined : String(v);
  }
  return undefined;
}

export async function readRedisDurability(client: DurabilityClient): Promise<RedisDurability> {
  let configError: string;
  try {
    const appendonly = configValue(await client.config('GET', 'appendonly'), 'appendonly');
    const appendfsync = configValue(await client.config('GET', 'appendfsync'), 'appendfsync');
    if (appendonly !== undefined && appendfsync !== undefined) {
      return { via: 'config', appendonly: appendonly.toLowerCase() === 'yes', appendfsync: appendfsync.toLowerCase() };
    }
    configError = 'empty reply';
  } catch (e) {
    // NOPERM (ACL), ERR unknown command (renamed or disabled on managed Redis).
    configError = errorCode(e);
  }
  try {
    const m = /^aof_enabled:(\d+)/m.exec(await client.info('persistence'));
    if (m) return { via: 'info', appendonly: m[1] !== '0', appendfsync: undefined };
    return { via: 'none', error: `CONFIG ${configError}, INFO without aof_enabled` };
  } catch (e) {
    return { via: 'none', error: `CONFIG ${configError}, INFO ${errorCode(e)}` };
  }
}

/** The warn line for a reading, or undefined when the server fsyncs every write to its AOF. */
export function durabilityWarning(d: RedisDurability): string | undefined {
  if (d.via === 'none') {
    return `audit redis: durability could not be checked (${d.error}): make sure the server runs with appendonly yes and appendfsync always, or acknowledged audit records can be lost in a crash`;
  }
  if (!d.appendonly) {
    return 'audit redis: AOF is off (appendonly no): acknowledged audit records are lost if Redis crashes or restarts; set appendonly yes and appendfsync always';
  }
  if (d.via === 'info') {
    return 'audit redis: AOF is on, but appendfsync could not be read (CONFIG refused): make sure it is always, or up to a second of acknowledged audit records can be lost in a crash';
  }
  if (d.appendfsync !== 'always') {
    return `audit redis: appendfsync is ${d.appendfsync}, not always: up to ${d.appendfsync === 'no' ? 'the OS flush interval' : 'a second'} of acknowledged audit records can be lost in a crash`;
  }
  return undefined;
}

/** Reads the server's settings and logs a warn line when acknowledged records could be lost. Never throws. */
export async function warnIfRedisNotDurable(client: DurabilityClient, logger: Logger | undefined): Promise<RedisDurability | undefined> {
  if (!logger) return undefined;
  try {
    const d = await readRedisDurability(client);
    const warning = durabilityWarning(d);
    if (warning !== undefined) logger.warn({ audit: { redisDurability: d } }, warning);
    return d;
  } catch {
    return undefined;
  }
}
