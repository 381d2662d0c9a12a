// Secrets from files: every secret variable PHI_GATEWAY_X also as PHI_GATEWAY_X_FILE (Docker and
// Kubernetes secrets), the webhook signing secret, and the warnings check-config and serve give.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { run as checkConfigCli } from '../../../src/cli/check-config.js';
import { SECRET_VARIABLES, withSecretFiles } from '../../../src/config/env.js';
import { NO_CHECKPOINT_KEY_WARNING } from '../../../src/audit/checkpoint.js';
import { configWarnings, readGatewayConfig, UNSIGNED_WEBHOOK_WARNING } from '../../../src/config/gateway.js';

const SHIPPED = 'config/gateway.yaml';
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'phi-secrets-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function secretFile(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content, { mode: 0o600 });
  return path;
}

function load(env: NodeJS.ProcessEnv, file = SHIPPED) {
  return readGatewayConfig(file, env);
}

const KEY = 'k'.repeat(24) + '-0123456789abcdef';
const SECRET = 'whsec-0123456789abcdef0123456789abcdef';

describe('PHI_GATEWAY_<SECRET>_FILE', () => {
  it('covers exactly the secret variables', () => {
    expect([...SECRET_VARIABLES].sort()).toEqual([
      'PHI_GATEWAY_ALERT_WEBHOOK',
      'PHI_GATEWAY_ALERT_WEBHOOK_SECRET',
      'PHI_GATEWAY_AUDIT',
      'PHI_GATEWAY_PAGING_KEY',
      'PHI_GATEWAY_PSEUDONYM_KEY',
    ]);
  });

  it('reads each one into the configuration, one trailing newline stripped', () => {
    const r = load({
      PHI_GATEWAY_PSEUDONYM_KEY_FILE: secretFile('pseudonym', `${KEY}\n`),
      PHI_GATEWAY_PAGING_KEY_FILE: secretFile('paging', `paging-${KEY}\r\n`),
      PHI_GATEWAY_AUDIT_FILE: secretFile('audit', 'redis://gw:s3cret@127.0.0.1:6379/0\n'),
      PHI_GATEWAY_ALERT_WEBHOOK_FILE: secretFile('webhook', 'https://hooks.example.org/T0/B1/x\n'),
      PHI_GATEWAY_ALERT_WEBHOOK_SECRET_FILE: secretFile('webhook-secret', `${SECRET}\n`),
    });
    expect(r.problems).toEqual([]);
    expect(r.config).toMatchObject({
      pseudonymKey: KEY,
      paging: { key: `paging-${KEY}` },
      audit: { sink: 'redis', url: 'redis://gw:s3cret@127.0.0.1:6379/0' },
      alerts: { webhook: 'https://hooks.example.org/T0/B1/x', webhookSecret: SECRET },
    });
  });

  it('keeps everything but the last newline (a key is its exact bytes)', () => {
    const r = load({ PHI_GATEWAY_PSEUDONYM_KEY_FILE: secretFile('pseudonym', ` ${KEY}\n\n`) });
    // " KEY\n" remains, then treated exactly as the variable's value (which is trimmed).
    expect(r.config?.pseudonymKey).toBe(KEY);
    const { env } = withSecretFiles({ PHI_GATEWAY_PAGING_KEY_FILE: secretFile('paging', 'abc\n\n') });
    expect(env.PHI_GATEWAY_PAGING_KEY).toBe('abc\n');
  });

  it.each(SECRET_VARIABLES)('%s and %s_FILE both set: an error naming both', (name) => {
    const value = name === 'PHI_GATEWAY_AUDIT' ? 'file:/tmp/x' : name === 'PHI_GATEWAY_ALERT_WEBHOOK' ? 'https://hooks.example.org/a' : KEY;
    const r = load({ [name]: value, [`${name}_FILE`]: secretFile('both', `${value}\n`) });
    expect(r.config).toBeUndefined();
    expect(r.problems).toContain(`${name}, ${name}_FILE: both are set; set one or the other`);
  });

  it.each(SECRET_VARIABLES)('%s_FILE unreadable or empty: an error naming the variable, never the content', (name) => {
    const missing = load({ [`${name}_FILE`]: join(dir, 'no-such-file') });
    expect(missing.config).toBeUndefined();
    expect(missing.problems).toEqual([`${name}_FILE: cannot read ${join(dir, 'no-such-file')} (ENOENT)`]);
    const isDir = load({ [`${name}_FILE`]: dir });
    expect(isDir.problems).toEqual([`${name}_FILE: cannot read ${dir} (EISDIR)`]);
    const empty = load({ [`${name}_FILE`]: secretFile('empty', '\n') });
    expect(empty.problems).toEqual([`${name}_FILE: ${join(dir, 'empty')} is empty`]);
  });

  it('an unreadable file (permissions) names the variable and the errno only', () => {
    // Injected: these tests may run as root, which reads a mode-000 file anyway.
    const path = secretFile('locked', `${KEY}\n`);
    const readFile = (p: string): string => {
      if (p === path) throw Object.assign(new Error(`EACCES: permission denied, open '${p}'`), { code: 'EACCES' });
      return '';
    };
    const r = withSecretFiles({ PHI_GATEWAY_PSEUDONYM_KEY_FILE: path }, readFile);
    expect(r.problems).toEqual([`PHI_GATEWAY_PSEUDONYM_KEY_FILE: cannot read ${path} (EACCES)`]);
    expect(r.env.PHI_GATEWAY_PSEUDONYM_KEY).toBeUndefined();
  });

  it('a value from a file is validated as the variable, and the message never echoes it', () => {
    const short = 'short-but-secret-value';
    const r = load({ PHI_GATEWAY_PSEUDONYM_KEY_FILE: secretFile('pseudonym', `${short}\n`) });
    expect(r.problems).toEqual(['PHI_GATEWAY_PSEUDONYM_KEY: must be at least 32 characters']);
    expect(r.problems.join('\n')).not.toContain(short);
    const url = load({ PHI_GATEWAY_AUDIT_FILE: secretFile('audit', 'mysql://root:hunter2@db\n') });
    expect(url.problems.join('\n')).not.toContain('hunter2');
  });

  it('leaves the environment alone when no _FILE variable is set', () => {
    const env = { PHI_GATEWAY_PSEUDONYM_KEY: KEY };
    expect(withSecretFiles(env)).toEqual({ env, problems: [] });
  });
});

describe('webhook signing secret', () => {
  function config(alerts: string): string {
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `upstream:\n  url: http://127.0.0.1:8103/fhir\nauth:\n  issuer: https://idp.example.org\n  audience: phi-gateway\n  jwksUri: https://idp.example.org/jwks\npolicy: ${join(process.cwd(), 'config/policy.yaml')}\n${alerts}`,
    );
    return file;
  }

  it('alerts.webhookSecretFile is read relative to the config file', () => {
    secretFile('webhook.secret', `${SECRET}\n`);
    const r = load({}, config('alerts:\n  webhook: https://hooks.example.org/a\n  webhookSecretFile: webhook.secret\n'));
    expect(r.problems).toEqual([]);
    expect(r.config?.alerts).toMatchObject({ webhook: 'https://hooks.example.org/a', webhookSecret: SECRET });
    expect(configWarnings(r.config!)).toEqual([NO_CHECKPOINT_KEY_WARNING]);
  });

  it('PHI_GATEWAY_ALERT_WEBHOOK_SECRET overrides the file; a short secret is refused', () => {
    secretFile('webhook.secret', `${SECRET}\n`);
    const file = config('alerts:\n  webhook: https://hooks.example.org/a\n  webhookSecretFile: webhook.secret\n');
    expect(load({ PHI_GATEWAY_ALERT_WEBHOOK_SECRET: `${SECRET}-2` }, file).config?.alerts.webhookSecret).toBe(`${SECRET}-2`);
    expect(load({ PHI_GATEWAY_ALERT_WEBHOOK_SECRET: 'short' }, file).problems).toEqual(['PHI_GATEWAY_ALERT_WEBHOOK_SECRET: must be at least 32 characters']);
    secretFile('short.secret', 'tiny\n');
    const short = load({}, config('alerts:\n  webhook: https://hooks.example.org/a\n  webhookSecretFile: short.secret\n'));
    expect(short.problems).toHaveLength(1);
    expect(short.problems[0]).toMatch(/gateway\.yaml:\d+:\d+ .*alerts\.webhookSecretFile: webhook secret must be at least 32 characters$/);
    const missing = load({}, config('alerts:\n  webhook: https://hooks.example.org/a\n  webhookSecretFile: nope.secret\n'));
    expect(missing.problems[0]).toMatch(/alerts\.webhookSecretFile: cannot read secret file \(ENOENT\)$/);
  });

  it('a webhook without a secret is a warning, not an error', () => {
    const r = load({}, config('alerts:\n  webhook: https://hooks.example.org/a\n'));
    expect(r.problems).toEqual([]);
    expect(configWarnings(r.config!)).toEqual([UNSIGNED_WEBHOOK_WARNING, NO_CHECKPOINT_KEY_WARNING]);
    // No webhook at all: nothing to sign; the unsigned trail is still said.
    expect(configWarnings(load({}, config('alerts: {}\n')).config!)).toEqual([NO_CHECKPOINT_KEY_WARNING]);
  });

  it('check-config prints the warning and still exits 0', async () => {
    const file = config('alerts:\n  webhook: https://hooks.example.org/a\n');
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (d) => (out += d));
    stderr.on('data', (d) => (err += d));
    expect(await checkConfigCli(['--config', file], { stdout, stderr, env: {} })).toBe(0);
    expect(out).toMatch(/^ok: /);
    expect(err).toContain(`warning: ${UNSIGNED_WEBHOOK_WARNING}`);
    err = '';
    expect(await checkConfigCli(['--config', file], { stdout, stderr, env: { PHI_GATEWAY_ALERT_WEBHOOK_SECRET_FILE: secretFile('s', SECRET) } })).toBe(0);
    expect(err).not.toContain(UNSIGNED_WEBHOOK_WARNING);
    expect(err).toContain(`warning: ${NO_CHECKPOINT_KEY_WARNING}`);
  });
});
