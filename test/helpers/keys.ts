/**
 * Test keys, a rotatable JWKS server and token builders (valid, hostile and malformed).
 *
 *   const k = await makeKeyPair('RS256');
 *   const jwks = await startJwksServer([k.publicJwk]);       // jwks.uri -> http://127.0.0.1:PORT/jwks
 *   const t = await signToken(k, { iss, aud, sub: 'u1', roles: ['billing'] });
 *   jwks.setKeys([k2.publicJwk]);                          // rotation
 *   await jwks.close();
 */
import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

export type TestAlg = 'RS256' | 'PS256' | 'ES256' | 'EdDSA';

export interface TestKeyPair {
  readonly alg: TestAlg;
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** Public JWK with kid, alg and use, ready for a JWKS. */
  readonly publicJwk: JWK;
  /** SPKI PEM of the public key (the bytes a key-confusion attacker would use as an HMAC secret). */
  readonly publicPem: string;
}

export async function makeKeyPair(alg: TestAlg = 'RS256', kid: string = `${alg.toLowerCase()}-${randomUUID()}`): Promise<TestKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

export interface SignOptions {
  /** Extra or replacement protected-header fields (`typ`, a different `kid`...). */
  readonly header?: Record<string, unknown>;
  /** Omit the `kid` header (by default the key's kid is sent). */
  readonly noKid?: boolean;
}

/** Signs `payload` exactly as given (no defaults added), so tests can leave out any claim. */
export async function signToken(key: TestKeyPair, payload: JWTPayload, opts: SignOptions = {}): Promise<string> {
  const header = { alg: key.alg, ...(opts.noKid ? {} : { kid: key.kid }), ...opts.header };
  return new SignJWT(payload).setProtectedHeader(header as { alg: string }).sign(key.privateKey);
}

export function b64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An unsecured JWT (`alg: none`, empty signature segment). */
export function unsecuredToken(payload: JWTPayload, header: Record<string, unknown> = {}): string {
  return `${b64url({ alg: 'none', ...header })}.${b64url(payload)}.`;
}

/** An HMAC-signed JWT with an arbitrary secret, e.g. the RSA public key PEM (key confusion). */
export function hmacToken(secret: string | Buffer, payload: JWTPayload, header: Record<string, unknown> = {}, alg: 'HS256' | 'HS384' | 'HS512' = 'HS256'): string {
  const input = `${b64url({ alg, ...header })}.${b64url(payload)}`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  return `${input}.${createHmac(hash, secret).update(input).digest('base64url')}`;
}

/** Replaces the payload of a signed token, keeping its header and signature (a forgery). */
export function swapPayload(token: string, payload: JWTPayload): string {
  const [h, , s] = token.split('.');
  return `${h}.${b64url(payload)}.${s}`;
}

export interface JwksServer {
  /** Full JWKS URL, `http://127.0.0.1:PORT/jwks`. */
  readonly uri: string;
  /** Replace the published keys (rotation); takes effect for the next request. */
  setKeys(keys: readonly JWK[]): void;
  /** Make the endpoint answer this status with no JWKS (outage), or restore it with undefined. */
  setFailure(status: number | undefined): void;
  /** Number of JWKS requests served so far. */
  readonly requests: number;
  close(): Promise<void>;
}

export async function startJwksServer(initial: readonly JWK[]): Promise<JwksServer> {
  let keys = [...initial];
  let failure: number | undefined;
  let requests = 0;
  const server: Server = createServer((req, res) => {
    if (req.url !== '/jwks') {
      res.writeHead(404).end();
      return;
    }
    requests += 1;
    if (failure !== undefined) {
      res.writeHead(failure).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    uri: `http://127.0.0.1:${port}/jwks`,
    setKeys(next) {
      keys = [...next];
    },
    setFailure(status) {
      failure = status;
    },
    get requests() {
      return requests;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
