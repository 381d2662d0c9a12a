// `phi-gateway break-glass review` is a client of the running gateway's HTTP review route: the real
// gateway (real IdP, real FHIR upstream) verifies the token, checks the role and separation of
// duties, audits and stores. Whatever config the CLI is given decides only where the gateway is:
// an attacker's gateway.yaml naming their own JWKS and a policy that lets billing review changes
// nothing.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { type BreakGlassService, breakGlassDir, isBreakGlassService } from '../../src/breakglass/index.js';
import { run } from '../../src/cli/break-glass.js';
import { DEMO } from '../../src/demo/data.js';
import { freePort, type Stack, startStack } from '../helpers/gateway.js';
import { makeKeyPair, signToken, type TestKeyPair } from '../helpers/keys.js';
import { createTestPki, HAS_OPENSSL } from '../helpers/pki.js';

const VIP = DEMO.patients.vip;
const ALICE = DEMO.patients.alice;
const REASON = 'Unconscious patient in the ED, restricted chart needed';
const house = { sub: 'dr-house' };

async function cli(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(['break-glass', ...argv], { stdout, stderr, env });
  return { code, out, err };
}

function service(stack: Stack): BreakGlassService {
  const s = stack.gateway.breakGlass;
  if (!isBreakGlassService(s)) throw new Error('the gateway did not build the break-glass service');
  return s;
}

describe('break-glass review from the CLI, through the running gateway', () => {
  let stack: Stack;
  let dir: string;
  let base: string;
  let env: NodeJS.ProcessEnv;
  /** A key the gateway does not know, with the kid of the IdP's real key. */
  let forger: TestKeyPair;
  let vipSession: string;
  let aliceSession: string;

  async function tokenFile(token: string): Promise<string> {
    const path = join(dir, `token-${Math.random().toString(36).slice(2)}`);
    writeFileSync(path, `${token}\n`, { mode: 0o600 });
    return path;
  }

  async function forged(claims: Record<string, unknown> = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return signToken(forger, { iss: stack.idp.issuer, aud: stack.idp.audience, sub: 'po-jones', client_id: 'privacy-officer', roles: ['privacy-officer'], iat: now, exp: now + 600, jti: `j-${now}-${Math.random()}`, ...claims });
  }

  async function openSession(patient: string): Promise<string> {
    const res = await stack.get(`/Patient/${patient}`, { role: 'clinician', purpose: 'BTG', tokenClaims: house, headers: { 'x-break-glass-reason': REASON } });
    expect(res.status).toBe(200);
    return res.headers.get('x-break-glass-session') ?? '';
  }

  async function reviewsOf(id: string) {
    return (await service(stack).get(id))?.reviews ?? [];
  }

  beforeAll(async () => {
    stack = await startStack();
    dir = mkdtempSync(join(tmpdir(), 'bg-cli-review-'));
    base = stack.url.replace(/\/fhir$/, '');
    env = { PHI_GATEWAY_URL: base, PHI_GATEWAY_CONFIG: join(dir, 'none.yaml') };
    const jwks = (await (await fetch(stack.idp.jwksUri)).json()) as { keys: { kid: string; alg?: string }[] };
    forger = await makeKeyPair('RS256', jwks.keys[0].kid);
    vipSession = await openSession(VIP);
    aliceSession = await openSession(ALICE);
    expect(vipSession).toMatch(/^[0-9a-f-]{36}$/);
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses billing (403), the session actor (403) and a forged token (401): nothing stored, every refusal audited by the gateway', async () => {
    const before = (await stack.auditRecords()).filter((r) => r.kind === 'break-glass-review').length;
    const billing = await cli(['review', vipSession, '--token-file', await tokenFile(await stack.token('billing', { sub: 'bill-1' })), '--outcome', 'justified'], env);
    expect(billing.code).toBe(1);
    expect(billing.err).toMatch(/refused by the gateway: HTTP 403 (interaction-denied|purpose-not-permitted)/);

    const self = await stack.token('privacy-officer', { sub: 'dr-house', roles: ['clinician', 'privacy-officer'] });
    const own = await cli(['review', vipSession, '--token-file', await tokenFile(self), '--outcome', 'justified'], env);
    expect(own.code).toBe(1);
    expect(own.err).toContain('HTTP 403 interaction-denied');
    expect(own.err).toContain('nobody reviews their own session');

    const forgedFile = await tokenFile(await forged());
    const fake = await cli(['review', vipSession, '--token-file', forgedFile, '--outcome', 'justified'], env);
    expect(fake.code).toBe(1);
    expect(fake.err).toContain('HTTP 401');
    expect(fake.err).toContain('the access token was not accepted');
    // No token bytes in what the CLI says.
    expect(fake.err).not.toContain(readFileSync(forgedFile, 'utf8').trim().split('.')[1]);

    expect(await reviewsOf(vipSession)).toEqual([]);
    const reviews = (await stack.auditRecords()).filter((r) => r.kind === 'break-glass-review').slice(before);
    expect(reviews.map((r) => [r.decision, r.status])).toEqual([
      ['deny', 403],
      ['deny', 403],
      ['deny', 401],
    ]);
    expect(reviews[1].rule).toContain('separation of duties');
  });

  it("a --config naming the attacker's JWKS and a policy letting billing review has no effect: the gateway decides", async () => {
    // What an insider with OS access writes: their own key in the JWKS, billing given the capability.
    const attackerKey = forger;
    writeFileSync(join(dir, 'evil-jwks.json'), JSON.stringify({ keys: [attackerKey.publicJwk] }));
    const policy = parseYaml(readFileSync(fileURLToPath(new URL('../../config/policy.yaml', import.meta.url)), 'utf8')) as { roles: Record<string, Record<string, unknown>> };
    policy.roles.billing = { ...policy.roles.billing, purposes: { HPAYMT: 'billing', HCOMPL: 'none' }, capabilities: ['audit-export', 'break-glass-review'] };
    writeFileSync(join(dir, 'evil-policy.yaml'), stringifyYaml(policy));
    writeFileSync(
      join(dir, 'evil.yaml'),
      `policy: evil-policy.yaml\npublicBaseUrl: ${stack.url}\nupstream:\n  url: ${stack.upstreamUrl}\nauth:\n  issuer: ${stack.idp.issuer}\n  audience: ${stack.idp.audience}\n  jwksFile: evil-jwks.json\naudit:\n  sink: file\n  path: ${stack.auditDir}\n`,
    );
    // No --gateway, no PHI_GATEWAY_URL: the attacker's config is all the CLI has.
    const viaConfig = { PHI_GATEWAY_CONFIG: join(dir, 'evil.yaml') };

    const billing = await cli(['review', vipSession, '--token-file', await tokenFile(await stack.token('billing', { sub: 'bill-1' })), '--outcome', 'justified', '--note', 'justified by po-jones'], viaConfig);
    expect(billing.code).toBe(1);
    expect(billing.err).toContain('HTTP 403');

    // Signed with the key the attacker's JWKS names, claiming to be the privacy officer.
    const asOfficer = await cli(['review', vipSession, '--token-file', await tokenFile(await forged()), '--outcome', 'justified'], viaConfig);
    expect(asOfficer.code).toBe(1);
    expect(asOfficer.err).toContain('HTTP 401');
    const explicit = await cli(['review', vipSession, '--config', join(dir, 'evil.yaml'), '--token-file', await tokenFile(await forged({ sub: 'po-2' })), '--outcome', 'justified'], {});
    expect(explicit.code).toBe(1);

    expect(await reviewsOf(vipSession)).toEqual([]);
    const list = await fetch(`${base}/break-glass/sessions?unreviewed=true`, {
      headers: { authorization: `Bearer ${await stack.token('privacy-officer', { sub: 'po-check' })}`, 'x-purpose-of-use': 'HCOMPL' },
    });
    expect(((await list.json()) as { sessions: { id: string }[] }).sessions.map((s) => s.id)).toContain(vipSession);
  });

  it('a privacy officer reviews: the gateway audits and stores it as an HTTP review; the CLI prints who', async () => {
    const token = await stack.token('privacy-officer', { sub: 'po-jones' });
    const r = await cli(['review', vipSession, '--token-file', await tokenFile(`Bearer ${token}`), '--outcome', 'unjustified', '--note', 'no ED record'], env);
    expect(r).toMatchObject({ code: 0, out: `session ${vipSession}: unjustified by po-jones\n` });

    const reviews = await reviewsOf(vipSession);
    expect(reviews).toMatchObject([{ reviewer: { iss: stack.idp.issuer, sub: 'po-jones' }, outcome: 'unjustified', note: 'no ED record', via: 'http' }]);
    const record = (await stack.auditRecords()).find((x) => x.id === reviews[0].auditId);
    expect(record).toMatchObject({
      kind: 'break-glass-review',
      decision: 'allow',
      actor: { iss: stack.idp.issuer, sub: 'po-jones', roles: ['privacy-officer'] },
      purpose: 'HCOMPL',
      request: { method: 'POST', path: `/break-glass/sessions/${vipSession}/review` },
      disclosed: { patients: [VIP] },
      details: { action: 'review', session: vipSession, outcome: 'unjustified', note: 'no ED record', sessionActor: 'dr-house' },
    });
    // The OS account that ran the CLI travels as the user agent.
    expect(record?.client.userAgent).toMatch(/^phi-gateway-cli \(/);
  });

  it('takes the token from PHI_GATEWAY_TOKEN_FILE and the gateway from the config (publicBaseUrl without /fhir)', async () => {
    writeFileSync(
      join(dir, 'gateway.yaml'),
      `policy: ${fileURLToPath(new URL('../../config/policy.yaml', import.meta.url))}\npublicBaseUrl: ${stack.url}\nupstream:\n  url: ${stack.upstreamUrl}\nauth:\n  issuer: ${stack.idp.issuer}\n  audience: ${stack.idp.audience}\n  jwksUri: ${stack.idp.jwksUri}\naudit:\n  sink: file\n  path: ${stack.auditDir}\n`,
    );
    const token = await tokenFile(await stack.token('privacy-officer', { sub: 'po-2' }));
    const r = await cli(['review', aliceSession, '--outcome', 'justified'], { PHI_GATEWAY_CONFIG: join(dir, 'gateway.yaml'), PHI_GATEWAY_TOKEN_FILE: token });
    expect(r).toMatchObject({ code: 0, out: `session ${aliceSession}: justified by po-2\n` });
    expect(await reviewsOf(aliceSession)).toMatchObject([{ reviewer: { sub: 'po-2' }, outcome: 'justified' }]);
  });

  it('an unknown session is 404 from the gateway (exit 1)', async () => {
    const r = await cli(['review', 'no-such-session', '--token-file', await tokenFile(await stack.token('privacy-officer', { sub: 'po-3' })), '--outcome', 'justified'], env);
    expect(r.code).toBe(1);
    expect(r.err).toContain('HTTP 404 not-found');
  });

  it('a gateway that does not answer: "gateway unreachable", exit 1', async () => {
    const port = await freePort();
    const r = await cli(['review', vipSession, '--gateway', `http://127.0.0.1:${port}`, '--token-file', await tokenFile(await stack.token('privacy-officer')), '--outcome', 'justified'], {});
    expect(r.code).toBe(1);
    expect(r.err).toContain(`gateway unreachable at http://127.0.0.1:${port} (ECONNREFUSED)`);
  });

  it('never sends the token in clear text beyond this machine (usage error, exit 2)', async () => {
    const r = await cli(['review', vipSession, '--gateway', 'http://gateway.example-hospital.org', '--token-file', await tokenFile('x.y.z'), '--outcome', 'justified'], {});
    expect(r.code).toBe(2);
    expect(r.err).toContain('must use https');
  });
});

describe.skipIf(!HAS_OPENSSL)('break-glass review from the CLI over TLS', () => {
  let stack: Stack;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bg-cli-tls-'));
    createTestPki(dir, [{ name: 'gateway', cn: 'gateway', san: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth' }]);
    stack = await startStack({ configure: (c) => ({ ...c, tls: { cert: join(dir, 'gateway.pem'), key: join(dir, 'gateway-key.pem') } }) });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    if (stack) rmSync(breakGlassDir(stack.config)!, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('verifies the certificate: refused without the private CA, reviewed with --ca', async () => {
    expect(stack.url).toMatch(/^https:/);
    const base = stack.url.replace(/\/fhir$/, '');
    const dispatcher = new Agent({ connect: { ca: readFileSync(join(dir, 'ca.pem')) } });
    const clinician = await stack.token('clinician', house);
    const open = await undiciFetch(`${stack.url}/Patient/${VIP}`, {
      headers: { authorization: `Bearer ${clinician}`, 'x-purpose-of-use': 'BTG', 'x-break-glass-reason': REASON },
      dispatcher,
    });
    expect(open.status).toBe(200);
    const id = open.headers.get('x-break-glass-session') ?? '';
    const tokenPath = join(dir, 'token');
    writeFileSync(tokenPath, await stack.token('privacy-officer', { sub: 'po-tls' }), { mode: 0o600 });

    const untrusted = await cli(['review', id, '--gateway', base, '--token-file', tokenPath, '--outcome', 'justified'], {});
    expect(untrusted.code).toBe(1);
    expect(untrusted.err).toContain('gateway unreachable');
    expect(untrusted.err).toContain('--ca F');
    expect(await service(stack).get(id)).toMatchObject({ reviews: [] });

    const trusted = await cli(['review', id, '--gateway', base, '--ca', join(dir, 'ca.pem'), '--token-file', tokenPath, '--outcome', 'justified'], {});
    expect(trusted).toMatchObject({ code: 0, out: `session ${id}: justified by po-tls\n` });
    expect((await service(stack).get(id))?.reviews).toMatchObject([{ reviewer: { sub: 'po-tls' }, via: 'http' }]);
  });
});
