/**
 * The identity-provider keys of gateway.yaml: rolesClaim lists, roleMap (shape here, policy roles in
 * check-config), patientClaims, scopelessTokens, and the top-level trustedProxies (with its
 * environment override).
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, checkConfig, loadGatewayConfig } from '../../src/config/load.js';
import { proxyAddressProblem } from '../../src/config/gateway.js';

const POLICY = resolve('config/policy.yaml');

function tmpConfig(authExtra: string, top = ''): string {
  const dir = mkdtempSync(join(tmpdir(), 'phi-gw-idp-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `policy: ${POLICY}
upstream:
  url: http://127.0.0.1:8103/fhir
auth:
  issuer: https://kc.example.org/realms/clinical
  audience: phi-gateway
  jwksUri: https://kc.example.org/realms/clinical/protocol/openid-connect/certs
${authExtra}${top}`,
  );
  return file;
}

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('auth keys for identity providers', () => {
  it('reads a rolesClaim list, a roleMap (targets as lists), patientClaims and scopelessTokens', () => {
    const file = tmpConfig(`  rolesClaim: [realm_access.roles, groups]
  roleMap:
    /clinician: clinician
    /hospital/coder: [coder, billing]
    Clinician.ReadWrite: clinician
  patientClaims: [patient, fhirUser]
  scopelessTokens: roles-only
`);
    const c = loadGatewayConfig(file, {});
    expect(c.auth.rolesClaim).toEqual(['realm_access.roles', 'groups']);
    expect({ ...c.auth.roleMap }).toEqual({ '/clinician': ['clinician'], '/hospital/coder': ['coder', 'billing'], 'Clinician.ReadWrite': ['clinician'] });
    expect(c.auth.patientClaims).toEqual(['patient', 'fhirUser']);
    expect(c.auth.scopelessTokens).toBe('roles-only');
    expect(checkConfig(file, {})).toEqual([]);
  });

  it('leaves them unset by default (roles claim `roles`, patient claim `patient`, scopeless refused)', () => {
    const c = loadGatewayConfig(tmpConfig(''), {});
    expect(c.auth.rolesClaim).toBe('roles');
    expect(c.auth.roleMap).toBeUndefined();
    expect(c.auth.patientClaims).toBeUndefined();
    expect(c.auth.scopelessTokens).toBeUndefined();
    expect(c.trustedProxies).toBeUndefined();
  });

  it.each<[string, string, RegExp]>([
    ['a scopelessTokens value that does not exist', '  scopelessTokens: allow\n', /scopelessTokens/],
    ['an empty rolesClaim list', '  rolesClaim: []\n', /rolesClaim/],
    ['a roleMap target that is not a string', '  roleMap:\n    /clinician: 7\n', /roleMap/],
    ['an empty roleMap', '  roleMap: {}\n', /roleMap/],
    ['a roleMap target that cannot be a role name', '  roleMap:\n    /clinician: "clinician staff"\n', /'clinician staff' cannot be a policy role name/],
    ['an empty patientClaims', '  patientClaims: []\n', /patientClaims/],
  ])('refuses %s', (_name, extra, pattern) => {
    const problems = problemsOf(() => loadGatewayConfig(tmpConfig(extra), {}));
    expect(problems.join('\n')).toMatch(pattern);
  });

  it('check-config names a roleMap target that is not a role of the policy, where it is written', () => {
    const file = tmpConfig(`  roleMap:
    /clinician: clinician
    /nurses: [clinician, nurse]
    Billing.Read: biller
`);
    // The file itself loads: the policy is another file, checked by check-config.
    expect(() => loadGatewayConfig(file, {})).not.toThrow();
    const problems = checkConfig(file, {});
    expect(problems).toHaveLength(2);
    const lines = readFileSync(file, 'utf8').split('\n');
    const nurse = lines.findIndex((l) => l.includes('/nurses')) + 1;
    const biller = lines.findIndex((l) => l.includes('Billing.Read')) + 1;
    expect(problems[0]).toMatch(new RegExp(`gateway\\.yaml:${nurse}:\\d+ auth\\.roleMap\\./nurses: 'nurse' is not a role of the policy`));
    expect(problems[1]).toMatch(new RegExp(`gateway\\.yaml:${biller}:\\d+ auth\\.roleMap\\.Billing\\.Read: 'biller' is not a role of the policy`));
  });
});

describe('trustedProxies', () => {
  it('reads IPs and CIDRs', () => {
    const c = loadGatewayConfig(tmpConfig('', 'trustedProxies: [10.0.0.5, 10.0.1.0/24, "fd00::/8", "::1"]\n'), {});
    expect(c.trustedProxies).toEqual(['10.0.0.5', '10.0.1.0/24', 'fd00::/8', '::1']);
  });

  it('PHI_GATEWAY_TRUSTED_PROXIES (comma list) replaces the file value', () => {
    const c = loadGatewayConfig(tmpConfig('', 'trustedProxies: [10.0.0.5]\n'), { PHI_GATEWAY_TRUSTED_PROXIES: ' 192.168.1.10 , 192.168.2.0/24,' });
    expect(c.trustedProxies).toEqual(['192.168.1.10', '192.168.2.0/24']);
  });

  it.each([
    ['a host name', 'lb.example.org', /not an IP address/],
    ['an IPv4 prefix beyond 32', '10.0.0.0/33', /prefix length must be 0\.\.32/],
    ['a netmask instead of a prefix', '10.0.0.0/255.0.0.0', /prefix length/],
    ['everyone', '0.0.0.0/0', /trusts every address/],
    ['everyone (IPv6)', '::/0', /trusts every address/],
  ])('refuses %s', (_name, value, pattern) => {
    expect(proxyAddressProblem(value)).toMatch(pattern);
    const problems = problemsOf(() => loadGatewayConfig(tmpConfig('', `trustedProxies: ["${value}"]\n`), {}));
    expect(problems.join('\n')).toMatch(/trustedProxies\[0\]/);
    const envProblems = problemsOf(() => loadGatewayConfig(tmpConfig(''), { PHI_GATEWAY_TRUSTED_PROXIES: value }));
    expect(envProblems.join('\n')).toMatch(/^PHI_GATEWAY_TRUSTED_PROXIES: /);
  });
});
