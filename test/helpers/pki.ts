/**
 * A throwaway PKI for TLS tests, made with the openssl command: a CA (`ca.pem`, `ca-key.pem`) and
 * certificates it signs (`NAME.pem`, `NAME-key.pem`), all in `dir`, valid for one day.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const HAS_OPENSSL = hasOpenssl();

export interface CertSpec {
  /** File stem: NAME.pem and NAME-key.pem. */
  readonly name: string;
  readonly cn: string;
  /** subjectAltName, e.g. `IP:127.0.0.1,DNS:localhost`. */
  readonly san: string;
  readonly usage: 'serverAuth' | 'clientAuth';
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA in `dir`, and the certificates it signs. */
export function createTestPki(dir: string, certs: readonly CertSpec[]): void {
  openssl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=phi-gateway test CA');
  for (const c of certs) issueCert(dir, c);
}

/** One more certificate from the CA already in `dir` (e.g. to test rotation). */
export function issueCert(dir: string, { name, cn, san, usage }: CertSpec): void {
  openssl(dir, 'req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
  openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
}
