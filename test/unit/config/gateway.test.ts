import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, checkConfig, loadGatewayConfig } from '../../../src/config/load.js';

const SHIPPED = 'config/gateway.yaml';

function tmpConfig(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'phi-gw-config-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, yaml);
  return file;
}

const MINIMAL = `upstream:
  url: http://127.0.0.1:8103/fhir/
auth:
  issuer: https://idp.example.org
  audience: phi-gateway
  jwksUri: https://idp.example.org/jwks
`;

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('loadGatewayConfig: the shipped file', () => {
  it('loads with the documented values and resolves paths against its directory', () => {
    const c = loadGatewayConfig(SHIPPED, {});
    expect(c.file).toBe(resolve(SHIPPED));
    expect(c.policyFile).toBe(resolve('config/policy.yaml'));
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.admin).toEqual({ host: '127.0.0.1', port: 9090 });
    expect(c.upstream.url).toBe('http://127.0.0.1:8103/fhir');
    expect(c.audit).toMatchObject({ sink: 'file', path: resolve('data/audit'), failOpen: false });
    expect(c.auth.algorithms).toEqual(['RS256', 'PS256', 'ES256', 'EdDSA']);
  });

  it('is deeply frozen', () => {
    const c = loadGatewayConfig(SHIPPED, {});
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.upstream)).toBe(true);
    expect(Object.isFrozen(c.auth.algorithms)).toBe(true);
    expect(() => {
      (c.listen as { port: number }).port = 1;
    }).toThrow(TypeError);
  });

  it('passes check-config', () => {
    expect(checkConfig(SHIPPED, {})).toEqual([]);
  });
});

describe('defaults', () => {
  it('fills every default of the brief for a minimal file', () => {
    const file = tmpConfig(MINIMAL);
    const c = loadGatewayConfig(file, {});
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.admin).toEqual({ host: '127.0.0.1', port: 9090 });
    expect(c.publicBaseUrl).toBe('http://127.0.0.1:8080/fhir');
    expect(c.upstream).toMatchObject({
      url: 'http://127.0.0.1:8103/fhir',
      connectTimeoutMs: 5000,
      headersTimeoutMs: 30000,
      bodyTimeoutMs: 30000,
      connections: 64,
      auth: { type: 'none' },
    });
    expect(c.auth).toMatchObject({ rolesClaim: 'roles', clockToleranceSec: 30, tokenCacheSize: 10000, jwksFile: undefined });
    expect(c.limits).toEqual({ requestBodyBytes: 1048576, responseBodyBytes: 16777216, decompressedBytes: 33554432 });
    expect(c.audit).toMatchObject({ sink: 'file', path: join(file, '..', 'data', 'audit'), failOpen: false });
    expect(c.policyFile).toBe(join(file, '..', 'policy.yaml'));
    expect(c.pseudonymKey).toBeUndefined();
    expect(c.logLevel).toBe('info');
  });
});

describe('environment overrides (each beats the file)', () => {
  const file = () => tmpConfig(`${MINIMAL}listen: 127.0.0.1:1111\nlogLevel: warn\n`);

  it('applies every variable of SPEC 2', () => {
    const c = loadGatewayConfig(file(), {
      PHI_GATEWAY_POLICY: 'config/policy.yaml',
      PHI_GATEWAY_LISTEN: '0.0.0.0:8443',
      PHI_GATEWAY_ADMIN_LISTEN: '[::1]:9191',
      PHI_GATEWAY_UPSTREAM: 'https://fhir.internal:8443/r4/',
      PHI_GATEWAY_JWKS_URI: 'https://login.example.org/keys',
      PHI_GATEWAY_ISSUER: 'https://login.example.org',
      PHI_GATEWAY_AUDIENCE: 'api://gw',
      PHI_GATEWAY_AUDIT: 'rediss://audit.internal:6380/0',
      PHI_GATEWAY_ALERT_WEBHOOK: 'https://privacy.example.org/hook',
      PHI_GATEWAY_PSEUDONYM_KEY: 'k'.repeat(32),
      LOG_LEVEL: 'debug',
    });
    expect(c.policyFile).toBe(resolve('config/policy.yaml'));
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 8443 });
    // A wildcard bind address is not a URL clients can be sent to.
    expect(c.publicBaseUrl).toBe('http://localhost:8443/fhir');
    expect(c.admin).toEqual({ host: '::1', port: 9191 });
    expect(c.upstream.url).toBe('https://fhir.internal:8443/r4');
    expect(c.auth).toMatchObject({ jwksUri: 'https://login.example.org/keys', issuer: 'https://login.example.org', audience: 'api://gw' });
    expect(c.audit).toMatchObject({ sink: 'redis', url: 'rediss://audit.internal:6380/0', stream: 'phi-gateway:audit' });
    expect(c.alerts.webhook).toBe('https://privacy.example.org/hook');
    expect(c.pseudonymKey).toBe('k'.repeat(32));
    expect(c.logLevel).toBe('debug');
  });

  it('PHI_GATEWAY_AUDIT=file:PATH selects the file sink at that path', () => {
    const c = loadGatewayConfig(file(), { PHI_GATEWAY_AUDIT: 'file:/var/lib/phi/audit' });
    expect(c.audit).toMatchObject({ sink: 'file', path: '/var/lib/phi/audit' });
  });

  it('PHI_GATEWAY_JWKS_URI replaces a jwksFile named in the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'phi-gw-jwks-'));
    writeFileSync(join(dir, 'jwks.json'), '{"keys":[]}');
    const f = join(dir, 'gateway.yaml');
    writeFileSync(f, MINIMAL.replace('jwksUri: https://idp.example.org/jwks', 'jwksFile: ./jwks.json'));
    expect(loadGatewayConfig(f, {}).auth.jwksFile).toBe(join(dir, 'jwks.json'));
    const c = loadGatewayConfig(f, { PHI_GATEWAY_JWKS_URI: 'http://127.0.0.1:4000/jwks' });
    expect(c.auth).toMatchObject({ jwksUri: 'http://127.0.0.1:4000/jwks', jwksFile: undefined });
  });

  it('reports every invalid value, named by variable, without echoing secrets', () => {
    const problems = problemsOf(() =>
      loadGatewayConfig(file(), {
        PHI_GATEWAY_LISTEN: 'localhost',
        PHI_GATEWAY_ADMIN_LISTEN: '127.0.0.1:70000',
        PHI_GATEWAY_UPSTREAM: 'ftp://fhir',
        PHI_GATEWAY_JWKS_URI: 'http://idp.example.org/jwks',
        PHI_GATEWAY_AUDIT: 'mysql://x',
        PHI_GATEWAY_ALERT_WEBHOOK: 'https://user:pw@hooks.example.org/x',
        PHI_GATEWAY_PSEUDONYM_KEY: 'too-short-secret',
        LOG_LEVEL: 'verbose',
      }),
    );
    const vars = problems.map((p) => p.slice(0, p.indexOf(':')));
    expect(vars).toEqual([
      'PHI_GATEWAY_LISTEN',
      'PHI_GATEWAY_ADMIN_LISTEN',
      'PHI_GATEWAY_UPSTREAM',
      'PHI_GATEWAY_JWKS_URI',
      'PHI_GATEWAY_AUDIT',
      'PHI_GATEWAY_ALERT_WEBHOOK',
      'PHI_GATEWAY_PSEUDONYM_KEY',
      'LOG_LEVEL',
    ]);
    expect(problems.join('\n')).not.toContain('too-short-secret');
    expect(problems.join('\n')).not.toContain('pw@');
  });

  it('ignores empty variables (compose files often set VAR=)', () => {
    const c = loadGatewayConfig(file(), { PHI_GATEWAY_LISTEN: '', LOG_LEVEL: ' ' });
    expect(c.listen.port).toBe(1111);
    expect(c.logLevel).toBe('warn');
  });
});

describe('file problems, located', () => {
  it('reports every problem of a broken file as file:line:col', () => {
    const problems = checkConfig('test/fixtures/config/bad-gateway.yaml', {});
    expect(problems).toEqual([
      "test/fixtures/config/bad-gateway.yaml:1:9 listen: '127.0.0.1' is not host:port",
      "test/fixtures/config/bad-gateway.yaml:4:3 upstream: unknown property 'colour'",
      "test/fixtures/config/bad-gateway.yaml:8:12 auth.jwksUri: 'http://idp.example.org/jwks' must use https (http is only allowed for loopback)",
      expect.stringMatching(/^test\/fixtures\/config\/bad-gateway\.yaml:9:23 auth\.algorithms\[1\]: 'HS256': symmetric algorithms and none are refused/),
      "test/fixtures/config/bad-gateway.yaml:11:3 audit: the redis audit sink needs 'url'",
    ]);
  });

  it.each([
    ['alg none', `${MINIMAL}  algorithms: [none]\n`, /:7:16 auth\.algorithms\[0\]: 'none': symmetric/],
    ['missing issuer', MINIMAL.replace('  issuer: https://idp.example.org\n', ''), /:4:3 auth: missing required property 'issuer'/],
    ['both jwks sources', `${MINIMAL}  jwksFile: ./jwks.json\n`, /:7:3 auth\.jwksFile: set exactly one of 'jwksUri' or 'jwksFile'/],
    ['short pseudonym key', `${MINIMAL}pseudonymKey: abc\n`, /:7:15 pseudonymKey: pseudonym key must be at least 32/],
    ['bearer without token', `${MINIMAL.replace('upstream:\n', 'upstream:\n  auth: { type: bearer }\n')}`, /:2:9 upstream\.auth: set exactly one of 'token' or 'tokenFile'/],
    ['option of another auth type', `${MINIMAL.replace('upstream:\n', 'upstream:\n  auth: { type: none, token: x }\n')}`, /:2:23 upstream\.auth\.token: 'token' does not apply/],
    ['unknown top-level key', `${MINIMAL}colour: blue\n`, /:7:1 unknown property 'colour'/],
    ['yaml syntax: at the bracket left open', `${MINIMAL}limits: [1, 2\n`, /:7:9 YAML syntax: this '\[' list is never closed/],
    ['same port for admin', `${MINIMAL}listen: 127.0.0.1:8080\nadminListen: 127.0.0.1:8080\n`, /:8:14 adminListen: admin listener must not share/],
  ])('%s', (_name, yaml, expected) => {
    const file = tmpConfig(yaml);
    const problems = problemsOf(() => loadGatewayConfig(file, {}));
    expect(problems.some((p) => p.startsWith(file) && expected.test(p)), problems.join('\n')).toBe(true);
  });

  it('names an unreadable file instead of throwing something else', () => {
    expect(checkConfig('test/fixtures/config/does-not-exist.yaml', {})).toEqual([
      'test/fixtures/config/does-not-exist.yaml:1:1 cannot read gateway config (ENOENT)',
    ]);
  });
});
