/**
 * The CLI as a client of the running gateway's own routes (break-glass review, access requests):
 * where the gateway is, one call with the token, and a refusal put into words. The gateway verifies,
 * judges, audits and stores; the CLI only carries the call, so nothing written on this machine (a
 * gateway.yaml naming another JWKS, a policy making a role an approver) can make it accept anyone.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { hostname, userInfo } from 'node:os';
import { rootCertificates } from 'node:tls';
import type { GatewayConfig } from '../config/types.js';

/** A command-line mistake (exit 2). */
export class UsageError extends Error {}

export async function loadConfig(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<GatewayConfig> {
  const { resolveConfigPath } = await import('../config/env.js');
  const { loadGatewayConfig } = await import('../config/gateway.js');
  return loadGatewayConfig(resolveConfigPath(flag, env), env);
}

/**
 * The gateway's base URL without `/fhir` (its own routes sit beside the FHIR API on the proxy
 * port): --gateway, PHI_GATEWAY_URL, or the config's publicBaseUrl; https unless on loopback, since
 * the access token must not cross the network in clear text.
 */
export async function gatewayBase(flag: string | undefined, configFlag: string | undefined, env: NodeJS.ProcessEnv): Promise<string> {
  let raw = flag?.trim() || env.PHI_GATEWAY_URL?.trim();
  let from = flag?.trim() ? '--gateway' : 'PHI_GATEWAY_URL';
  if (!raw) {
    try {
      raw = (await loadConfig(configFlag, env)).publicBaseUrl;
      from = 'the config (publicBaseUrl)';
    } catch (e) {
      throw new UsageError(`where is the gateway? pass --gateway URL or set PHI_GATEWAY_URL (the config could not be read: ${(e as Error).message.split('\n')[0]})`);
    }
  }
  const { parseHttpUrl } = await import('../config/env.js');
  const u = parseHttpUrl(raw, { httpsUnlessLoopback: true });
  if (!u.ok) throw new UsageError(`gateway URL from ${from}: ${u.message} (the access token must not cross the network in clear text)`);
  return u.value.replace(/\/+$/, '').replace(/\/fhir$/, '');
}

export interface GatewayAnswer {
  readonly status: number;
  readonly body: string;
  /** WWW-Authenticate of a 401 (which check of the token failed). */
  readonly challenge: string | undefined;
}

/**
 * One call: `headers` (the token, the purpose) plus what every CLI call sends (JSON, and a user
 * agent naming the OS account and host, which lands in the gateway's audit record beside the
 * token's subject). The answer is bounded to `maxAnswerBytes`; the call to `timeoutMs`.
 */
export function callGateway(
  url: URL,
  method: string,
  body: string | undefined,
  headers: Record<string, string>,
  opts: { readonly ca: string[] | undefined; readonly timeoutMs: number; readonly maxAnswerBytes: number },
): Promise<GatewayAnswer> {
  const all: Record<string, string | number> = {
    ...headers,
    accept: 'application/json, application/fhir+json',
    'user-agent': `phi-gateway-cli (${userInfo().username}@${hostname()})`,
    ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
  };
  return new Promise((resolve, reject) => {
    const onAnswer = (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > opts.maxAnswerBytes) res.destroy(Object.assign(new Error('answer too large'), { code: 'EANSWERTOOLARGE' }));
        else chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => {
        const challenge = res.headers['www-authenticate'];
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), challenge: typeof challenge === 'string' ? challenge : undefined });
      });
    };
    const req =
      url.protocol === 'https:'
        ? httpsRequest(url, { method, headers: all, ca: opts.ca, rejectUnauthorized: true, timeout: opts.timeoutMs }, onAnswer)
        : httpRequest(url, { method, headers: all, timeout: opts.timeoutMs }, onAnswer);
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(body);
  });
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The gateway's refusal in words: HTTP status, the OperationOutcome's code and text, and what it
 * usually means (a 401's failed check; `hint` for the caller's own routes).
 */
export function refusal(status: number, body: unknown, challenge: string | undefined, hint?: (status: number, code: string | undefined) => string | undefined): string {
  const issue = (body as { resourceType?: unknown; issue?: { details?: { coding?: { code?: unknown }[]; text?: unknown } }[] } | undefined)?.issue?.[0];
  const code = typeof issue?.details?.coding?.[0]?.code === 'string' ? issue.details.coding[0].code : undefined;
  const text = typeof issue?.details?.text === 'string' ? issue.details.text : undefined;
  const described = /error_description="([^"]*)"/.exec(challenge ?? '')?.[1];
  const meaning = status === 401 ? `the access token was not accepted${described ? ` (${described})` : ''}` : hint?.(status, code);
  return [`HTTP ${status}${code ? ` ${code}` : ''}`, text, meaning].filter((x) => x !== undefined).join(': ');
}

/** `--ca F`: a private CA for the gateway, added to the usual roots (the public ones still trusted). */
export function trustedCa(file: string | undefined): string[] | undefined {
  if (file === undefined) return undefined;
  try {
    return [...rootCertificates, readFileSync(file, 'utf8')];
  } catch (e) {
    throw new UsageError(`--ca ${file}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

/** The access token in a token file (a leading `Bearer ` dropped); throws a plain Error (exit 1) in fixed words. */
export function readTokenFile(file: string): string {
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim().replace(/^Bearer\s+/i, '');
  } catch (e) {
    throw new Error(`cannot read the token file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (token === '' || /[\s\0]/.test(token)) throw new Error(`the token file ${token === '' ? 'is empty' : 'does not hold one access token'}`);
  return token;
}
