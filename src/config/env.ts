/**
 * Value parsers shared by the config file and the environment overrides of SPEC 2 (pure, but for
 * withSecretFiles, which reads the files it is told to). Each returns a value or a message; the
 * caller decides where the message points.
 */
import { readFileSync } from 'node:fs';
import type { HostPort } from './types.js';

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly message: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(message: string): Parsed<T> => ({ ok: false, message });

/** The gateway file to load: `--config` beats PHI_GATEWAY_CONFIG beats the default. */
export function resolveConfigPath(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag ?? nonEmpty(env.PHI_GATEWAY_CONFIG) ?? 'config/gateway.yaml';
}

export function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

/** `host:port` or `[v6]:port`; the port is mandatory and in 0..65535 (0 = any, for tests). */
export function parseHostPort(raw: string): Parsed<HostPort> {
  let host: string;
  let port: string;
  const v6 = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(raw);
  if (v6) {
    host = v6[1];
    port = v6[2];
  } else {
    const m = /^([A-Za-z0-9.-]+):(\d+)$/.exec(raw);
    if (!m) return bad(`'${raw}' is not host:port`);
    host = m[1];
    port = m[2];
  }
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) return bad(`port ${port} is out of range`);
  return ok({ host, port: n });
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.has(host.toLowerCase()) || /^127\./.test(host);
}

/**
 * An absolute http(s) URL without credentials, query or fragment. `httpsUnlessLoopback`: key
 * material and alerts must not travel in clear text beyond this machine.
 */
export function parseHttpUrl(raw: string, opts: { httpsUnlessLoopback?: boolean } = {}): Parsed<string> {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return bad(`'${raw}' is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return bad(`URL must be http or https, not ${u.protocol}`);
  // Never echo credentials back into an error line (it may end up in a log).
  if (u.username !== '' || u.password !== '') return bad('URL must not contain credentials');
  if (u.search !== '' || u.hash !== '') return bad('URL must not have a query or fragment');
  if (opts.httpsUnlessLoopback && u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
    return bad(`'${raw}' must use https (http is only allowed for loopback)`);
  }
  return ok(raw.replace(/\/+$/, ''));
}

/** PHI_GATEWAY_AUDIT: `file:PATH` or `redis://...` / `rediss://...`. */
export function parseAuditTarget(raw: string): Parsed<{ sink: 'file'; path: string } | { sink: 'redis'; url: string }> {
  if (raw.startsWith('file:')) {
    const path = raw.slice('file:'.length);
    if (path === '') return bad("'file:' needs a path");
    return ok({ sink: 'file', path });
  }
  if (raw.startsWith('redis://') || raw.startsWith('rediss://')) {
    try {
      new URL(raw);
    } catch {
      return bad('not a valid redis URL');
    }
    return ok({ sink: 'redis', url: raw });
  }
  return bad("must be 'file:PATH' or a redis:// or rediss:// URL");
}

export function isRedisUrl(raw: string): boolean {
  if (!raw.startsWith('redis://') && !raw.startsWith('rediss://')) return false;
  try {
    new URL(raw);
    return true;
  } catch {
    return false;
  }
}

/** Minimum pseudonym key length: a short key makes HMAC pseudonyms brute-forceable back to ids. */
export const MIN_PSEUDONYM_KEY_LENGTH = 32;

/**
 * Environment variables holding secrets. Each may instead name a file in `<NAME>_FILE` (as Docker
 * and Kubernetes secrets are mounted): its contents are the value, one trailing newline stripped.
 */
export const SECRET_VARIABLES = [
  'PHI_GATEWAY_PSEUDONYM_KEY',
  'PHI_GATEWAY_PAGING_KEY',
  // A redis URL may hold a password.
  'PHI_GATEWAY_AUDIT',
  'PHI_GATEWAY_ALERT_WEBHOOK',
  'PHI_GATEWAY_ALERT_WEBHOOK_SECRET',
] as const;

export type SecretVariable = (typeof SECRET_VARIABLES)[number];

/**
 * The environment with every `<SECRET>_FILE` read into `<SECRET>`, and a `VARIABLE: message` line
 * per problem: both set (which one wins would be a guess), a file that cannot be read or is empty.
 * Messages name variables and paths, never contents.
 */
export function withSecretFiles(
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): { readonly env: NodeJS.ProcessEnv; readonly problems: readonly string[] } {
  const problems: string[] = [];
  let out: NodeJS.ProcessEnv | undefined;
  for (const name of SECRET_VARIABLES) {
    const fileVar = `${name}_FILE`;
    const path = nonEmpty(env[fileVar]);
    if (path === undefined) continue;
    out ??= { ...env };
    if (nonEmpty(env[name]) !== undefined) {
      problems.push(`${name}, ${fileVar}: both are set; set one or the other`);
      delete out[name];
      continue;
    }
    let text: string;
    try {
      text = readFile(path);
    } catch (e) {
      problems.push(`${fileVar}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      continue;
    }
    const value = text.replace(/\r?\n$/, '');
    if (value.trim() === '') problems.push(`${fileVar}: ${path} is empty`);
    else out[name] = value;
  }
  return { env: out ?? env, problems };
}
