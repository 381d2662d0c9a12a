import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose';

/** Issuer and audience of the embedded demo's stand-in identity provider. */
export const DEMO_ISSUER = 'https://demo-idp.phi-gateway.local';
export const DEMO_AUDIENCE = 'phi-gateway';
export const DEMO_CLIENT_ID = 'phi-gateway-demo';
const ALG = 'ES256';
const PRIVATE_FILE = 'demo-signing-key.json';
const JWKS_FILE = 'demo-jwks.json';

export interface DemoKeys {
  /** Public JWKS to configure as `auth.jwksFile`. */
  readonly jwksFile: string;
  readonly privateJwk: JWK;
  readonly kid: string;
  readonly issuer: string;
  readonly audience: string;
}

export interface DemoTokenOptions {
  readonly role: string;
  readonly sub?: string;
  readonly purpose?: readonly string[];
  readonly patient?: string;
  /** Lifetime in seconds (default 3600). */
  readonly ttlSec?: number;
  readonly scope?: string;
  readonly familyName?: string;
  /**
   * The caller's own FHIR resource (`fhirUser` claim), e.g. `Practitioner/prac-reyes`: whose care
   * relationships a data set with a relationship requirement uses.
   */
  readonly fhirUser?: string;
}

/**
 * The demo signing key: an ES256 pair generated on first use and reused afterwards. The private
 * JWK is written mode 0600 and refused if others can read it; the JWKS beside it holds only the
 * public half. Demo only: production verifies tokens from a real IdP.
 */
export async function ensureDemoKeys(dir: string): Promise<DemoKeys> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const privateFile = join(dir, PRIVATE_FILE);
  const jwksFile = join(dir, JWKS_FILE);

  let privateJwk = await readPrivateKey(privateFile);
  if (privateJwk === undefined) {
    const { privateKey } = await generateKeyPair(ALG, { extractable: true });
    const exported = await exportJWK(privateKey);
    const kid = await calculateJwkThumbprint(exported);
    const candidate: JWK = { ...exported, kid, alg: ALG, use: 'sig' };
    try {
      // `wx`: if a concurrent start won the race, use its key rather than overwrite it.
      await writeFile(privateFile, `${JSON.stringify(candidate, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
      privateJwk = candidate;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      privateJwk = await readPrivateKey(privateFile);
      if (privateJwk === undefined) throw new Error(`demo key ${privateFile} vanished while being created`);
    }
  }

  const publicJwk = toPublic(privateJwk);
  const jwks = `${JSON.stringify({ keys: [publicJwk] }, null, 2)}\n`;
  // Rewritten whenever it differs, so the JWKS always matches the signing key; atomically, because
  // a running gateway may be reading it.
  const current = await readFile(jwksFile, 'utf8').catch(() => undefined);
  if (current !== jwks) {
    const tmp = `${jwksFile}.${process.pid}.${randomUUID()}.tmp`;
    await writeFile(tmp, jwks, { mode: 0o644 });
    await rename(tmp, jwksFile);
  }
  return Object.freeze({
    jwksFile,
    privateJwk,
    kid: privateJwk.kid as string,
    issuer: DEMO_ISSUER,
    audience: DEMO_AUDIENCE,
  });
}

/** `Type/id`, or an absolute URL ending in it: what the gateway accepts in the fhirUser claim. */
export function isFhirUserReference(value: string): boolean {
  return /^(?:https?:\/\/[^\s?#]+\/)?[A-Z][A-Za-z]{0,63}\/[A-Za-z0-9\-.]{1,64}$/.test(value);
}

/** Mints an RFC 9068 style access token (`typ: at+jwt`) signed with the demo key. */
export async function mintDemoToken(key: DemoKeys, opts: DemoTokenOptions): Promise<string> {
  if (typeof opts.role !== 'string' || opts.role === '') throw new Error('role is required');
  const ttl = opts.ttlSec ?? 3600;
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error('ttlSec must be a positive integer');
  const claims: Record<string, unknown> = { roles: [opts.role], client_id: DEMO_CLIENT_ID };
  if (opts.purpose !== undefined && opts.purpose.length > 0) claims.purpose_of_use = [...opts.purpose];
  if (opts.patient !== undefined) claims.patient = opts.patient;
  if (opts.scope !== undefined) claims.scope = opts.scope;
  if (opts.familyName !== undefined) claims.family_name = opts.familyName;
  if (opts.fhirUser !== undefined) {
    if (!isFhirUserReference(opts.fhirUser)) throw new Error(`fhirUser must be a reference like Practitioner/prac-1, not '${opts.fhirUser}'`);
    claims.fhirUser = opts.fhirUser;
  }
  const signingKey = await importJWK(key.privateJwk, ALG);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: ALG, kid: key.kid, typ: 'at+jwt' })
    .setIssuer(key.issuer)
    .setAudience(key.audience)
    .setSubject(opts.sub ?? `demo-${opts.role}`)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime(`${ttl}s`)
    .sign(signingKey);
}

async function readPrivateKey(file: string): Promise<JWK | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (process.platform !== 'win32') {
    const { mode } = await stat(file);
    // Like ssh: a signing key others can read is no longer a secret, so it is not used.
    if ((mode & 0o077) !== 0) {
      throw new Error(`demo key ${file} is readable by other users (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
    }
  }
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch {
    throw new Error(`demo key ${file} is not valid JSON; delete it to generate a new one`);
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string' || typeof jwk.kid !== 'string') {
    throw new Error(`demo key ${file} is not an ES256 private JWK with a kid; delete it to generate a new one`);
  }
  return jwk;
}

function toPublic(jwk: JWK): JWK {
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, kid: jwk.kid, alg: ALG, use: 'sig' };
}

