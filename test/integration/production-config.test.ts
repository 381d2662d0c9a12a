/**
 * config/gateway.production.yaml is the complete production configuration docs/production.md
 * shows: check-config accepts it (with every secret file it names present, here generated under a
 * temp dir in place of /run/secrets), and the document shows exactly that file.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { createTestPki, HAS_OPENSSL } from '../helpers/pki.js';

const SOURCE = new URL('../../config/gateway.production.yaml', import.meta.url);
const POLICY = new URL('../../config/policy.yaml', import.meta.url);
const DOC = new URL('../../docs/production.md', import.meta.url);

async function checkConfig(file: string): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = {
    stdout: {
      write: (s: string) => {
        out += s;
        return true;
      },
    } as unknown as NodeJS.WritableStream,
    stderr: {
      write: (s: string) => {
        err += s;
        return true;
      },
    } as unknown as NodeJS.WritableStream,
    env: {},
  };
  const code = await main(['check-config', '--config', file], io);
  return { code, out, err };
}

(HAS_OPENSSL ? describe : describe.skip)('the production gateway.yaml', () => {
  let dir: string;
  let secrets: string;
  let file: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'phi-prod-config-'));
    secrets = join(dir, 'secrets');
    mkdirSync(secrets);
    createTestPki(secrets, [
      { name: 'gateway-tls', cn: 'fhir.example-hospital.org', san: 'DNS:fhir.example-hospital.org', usage: 'serverAuth' },
      { name: 'gateway-client', cn: 'phi-gateway', san: 'DNS:phi-gateway', usage: 'clientAuth' },
    ]);
    // The file names the production config uses, from what the PKI wrote.
    copyFileSync(join(secrets, 'gateway-tls.pem'), join(secrets, 'gateway-tls.crt'));
    copyFileSync(join(secrets, 'gateway-tls-key.pem'), join(secrets, 'gateway-tls.key'));
    copyFileSync(join(secrets, 'gateway-client.pem'), join(secrets, 'gateway-client.crt'));
    copyFileSync(join(secrets, 'gateway-client-key.pem'), join(secrets, 'gateway-client.key'));
    copyFileSync(join(secrets, 'ca.pem'), join(secrets, 'fhir-ca.pem'));
    const secret = (): string => `${randomBytes(32).toString('base64url')}\n`;
    writeFileSync(join(secrets, 'fhir-client-secret'), secret(), { mode: 0o600 });
    writeFileSync(join(secrets, 'paging-key'), secret(), { mode: 0o600 });
    writeFileSync(join(secrets, 'pseudonym-key'), secret(), { mode: 0o600 });
    writeFileSync(join(secrets, 'pseudonym-previous-keys'), `# rotated 2026-06-01\n${secret()}`, { mode: 0o600 });
    writeFileSync(join(secrets, 'alert-webhook-secret'), secret(), { mode: 0o600 });
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(secrets, 'audit-signing-key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    file = join(dir, 'gateway.yaml');
    writeFileSync(file, readFileSync(SOURCE, 'utf8').replaceAll('/run/secrets/', `${secrets}/`));
    copyFileSync(POLICY, join(dir, 'policy.yaml'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('passes check-config with its secret files in place', async () => {
    const r = await checkConfig(file);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ok: /);
  });

  it('fails check-config when a secret file it names is missing', async () => {
    rmSync(join(secrets, 'paging-key'));
    const r = await checkConfig(file);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/paging/);
    writeFileSync(join(secrets, 'paging-key'), `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
  });

  it('is the file docs/production.md shows, verbatim', () => {
    const doc = readFileSync(DOC, 'utf8');
    const shown = /## A complete production gateway\.yaml[\s\S]*?```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(shown).toBe(readFileSync(SOURCE, 'utf8'));
  });
});
