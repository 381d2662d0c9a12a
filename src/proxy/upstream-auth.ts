/**
 * The gateway's own credentials towards the FHIR server (SPEC 3.5): never the client's token.
 * Client-credentials tokens are fetched once and refreshed shortly before they expire; concurrent
 * requests share one refresh.
 */
import { request } from 'undici';
import type { UpstreamConfig } from '../config/types.js';
import { GatewayError } from '../errors.js';

export type UpstreamAuthorization = () => Promise<string | undefined>;

export function createUpstreamAuthorization(auth: UpstreamConfig['auth'], now: () => number = Date.now): UpstreamAuthorization {
  if (auth.type === 'none') return async () => undefined;
  if (auth.type === 'bearer') {
    const value = `Bearer ${auth.token}`;
    return async () => value;
  }
  let cached: { value: string; refreshAt: number } | undefined;
  let inflight: Promise<string> | undefined;
  const fetchToken = async (): Promise<string> => {
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (auth.scope) form.set('scope', auth.scope);
    const basic = Buffer.from(`${encodeURIComponent(auth.clientId)}:${encodeURIComponent(auth.clientSecret)}`).toString('base64');
    const res = await request(auth.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}`, accept: 'application/json' },
      body: form.toString(),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const json = (await res.body.json().catch(() => undefined)) as { access_token?: unknown; expires_in?: unknown } | undefined;
    if (res.statusCode !== 200 || typeof json?.access_token !== 'string') {
      throw new GatewayError('upstream-unavailable', `upstream token endpoint answered ${res.statusCode}`);
    }
    const ttl = typeof json.expires_in === 'number' ? json.expires_in : 300;
    const value = `Bearer ${json.access_token}`;
    cached = { value, refreshAt: now() + Math.max(5, ttl - 30) * 1000 };
    return value;
  };
  return async () => {
    if (cached && now() < cached.refreshAt) return cached.value;
    inflight ??= fetchToken().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };
}
