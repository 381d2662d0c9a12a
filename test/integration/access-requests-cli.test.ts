// `phi-gateway access ...` is a client of the running gateway's access-request routes: the real
// gateway (real IdP, real FHIR upstream, a file audit directory) verifies the token, judges roles
// and separation of duties, audits and stores. The CLI's own config decides only where the gateway
// is: a forged token signed with a key an attacker's gateway.yaml trusts is refused.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessDir } from '../../src/access/index.js';
import { run } from '../../src/cli/access.js';
import { main } from '../../src/cli/main.js';
import { DEMO } from '../../src/demo/data.js';
import { freePort, type Stack, startStack } from '../helpers/gateway.js';
import { makeKeyPair, signToken } from '../helpers/keys.js';

const ALICE = DEMO.patients.alice;
const BRIAN = DEMO.patients.brian;
const JUSTIFICATION = 'Payer requested the progress note as a claim attachment for claim 2024-311';

async function cli(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(['access', ...argv], { stdout, stderr, env });
  return { code, out, err };
}

describe('phi-gateway access, through the running gateway', () => {
  let stack: Stack;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let billingToken: string;
  let officerToken: string;
  let id = '';

  function tokenFile(token: string): string {
    const path = join(dir, `token-${Math.random().toString(36).slice(2)}`);
    writeFileSync(path, `${token}\n`, { mode: 0o600 });
    return path;
  }

  beforeAll(async () => {
    stack = await startStack();
    dir = mkdtempSync(join(tmpdir(), 'access-cli-'));
    env = { PHI_GATEWAY_URL: stack.url.replace(/\/fhir$/, ''), PHI_GATEWAY_CONFIG: join(dir, 'none.yaml') };
    billingToken = tokenFile(await stack.token('billing', { sub: 'bill-cli' }));
    officerToken = tokenFile(await stack.token('privacy-officer', { sub: 'po-cli' }));
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    if (stack) rmSync(accessDir(stack.config)!, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('request: the gateway stores and audits it; the CLI prints the id and the link', async () => {
    const r = await cli(
      ['request', '--data-set', 'claim-attachment', '--patient', ALICE, '--type', 'DocumentReference', '--from', '2024-01-01', '--to', '2024-12-31', '--justification', JUSTIFICATION, '--minutes', '90', '--token-file', billingToken, '--purpose', 'HPAYMT'],
      env,
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const m = /^request ([0-9a-f-]{36}): pending, claim-attachment for pat-alice \((http:\/\/[^)]+)\)\n$/.exec(r.out);
    expect(m).not.toBeNull();
    id = m![1];
    expect(m![2]).toBe(`${env.PHI_GATEWAY_URL}/access-requests/${id}`);
    const record = (await stack.auditRecords()).find((x) => x.kind === 'access-request' && x.details?.request === id && x.details?.action === 'request');
    expect(record).toMatchObject({
      decision: 'allow',
      actor: { iss: stack.idp.issuer, sub: 'bill-cli' },
      purpose: 'HPAYMT',
      request: { method: 'POST', path: '/access-requests' },
      details: { scope: { patients: [ALICE], types: ['DocumentReference'], period: { start: '2024-01-01', end: '2024-12-31' } }, minutes: 90 },
    });
    // The OS account that ran the CLI travels as the user agent.
    expect(record?.client.userAgent).toMatch(/^phi-gateway-cli \(/);
  });

  it('refusals come from the gateway: the requester approving, a wider approval, an unknown id (exit 1)', async () => {
    const own = await cli(['approve', id, '--token-file', billingToken, '--purpose', 'HPAYMT'], env);
    expect(own.code).toBe(1);
    expect(own.err).toContain('refused by the gateway: HTTP 403 approval-not-permitted');
    const wider = await cli(['approve', id, '--patient', BRIAN, '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(wider.code).toBe(1);
    expect(wider.err).toContain('HTTP 400 access-request-invalid');
    const unknown = await cli(['deny', '6f1c0d9e-0000-4000-8000-000000000000', '--note', 'no', '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('HTTP 404 access-request-not-found');
  });

  it('list: a table of what the token may see, or JSON lines', async () => {
    const table = await cli(['list', '--status', 'pending', '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(table.code).toBe(0);
    const lines = table.out.trimEnd().split('\n');
    expect(lines[0].split('\t')).toEqual(['REQUEST', 'REQUESTER', 'ROLE', 'DATA SET', 'PURPOSE', 'PATIENTS', 'REQUESTED', 'STATE', 'DECIDED BY', 'EXPIRES', 'USES', 'JUSTIFICATION']);
    expect(lines).toHaveLength(2);
    expect(lines[1].split('\t')).toEqual([id, 'bill-cli', 'billing', 'claim-attachment', 'HPAYMT', ALICE, expect.any(String), 'pending', '', '', '0', JUSTIFICATION]);
    expect(table.err).toBe('1 request(s)\n');

    const other = await cli(['list', '--format', 'json', '--token-file', tokenFile(await stack.token('billing', { sub: 'bill-other' })), '--purpose', 'HPAYMT'], env);
    expect(other).toEqual({ code: 0, out: '', err: '' });
    const json = await cli(['list', '--format', 'json', '--token-file', billingToken, '--purpose', 'HPAYMT'], env);
    expect(json.code).toBe(0);
    expect(json.out.trimEnd().split('\n').map((l) => JSON.parse(l))).toMatchObject([{ id, status: 'pending', active: false }]);
  });

  it('approve (narrower), use, revoke: as for any HTTP call', async () => {
    const approved = await cli(['approve', id, '--minutes', '30', '--note', 'Payer letter on file', '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(approved.err).toBe('');
    expect(approved.code).toBe(0);
    expect(approved.out).toMatch(new RegExp(`^request ${id}: approved by po-cli \\(narrowed\\), until \\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z\\n$`));

    const token = readFileSync(billingToken, 'utf8').trim();
    const use = await fetch(`${stack.url}/DocumentReference?patient=${ALICE}`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'HPAYMT', 'x-access-grant': id } });
    expect(use.status).toBe(200);

    const active = await cli(['list', '--status', 'active', '--format', 'table', '--token-file', billingToken, '--purpose', 'HPAYMT'], env);
    expect(active.out.split('\n')[1].split('\t').slice(7, 11)).toEqual(['active', 'po-cli', expect.stringMatching(/Z$/), '1']);

    // The requester gives it up early.
    const revoked = await cli(['revoke', id, '--token-file', billingToken, '--purpose', 'HPAYMT', '--format', 'json'], env);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.out)).toMatchObject({ id, active: false, revoked: { by: { sub: 'bill-cli' }, via: 'http' } });
    const after = await fetch(`${stack.url}/DocumentReference?patient=${ALICE}`, { headers: { authorization: `Bearer ${token}`, 'x-purpose-of-use': 'HPAYMT', 'x-access-grant': id } });
    expect(after.status).toBe(403);

    const steps = (await stack.auditRecords()).filter((r) => r.kind === 'access-request' && r.details?.request === id && r.decision === 'allow').map((r) => r.details?.action);
    expect(steps).toEqual(['request', 'approve', 'revoke']);
  });

  it('deny needs a note; the denial is the gateway’s', async () => {
    const asked = await cli(['request', '--data-set', 'claim-attachment', '--patient', BRIAN, '--justification', JUSTIFICATION, '--minutes', '60', '--token-file', billingToken, '--purpose', 'HPAYMT', '--format', 'json'], env);
    expect(asked.code).toBe(0);
    const second = (JSON.parse(asked.out) as { id: string }).id;
    const bare = await cli(['deny', second, '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(bare.code).toBe(2);
    const denied = await cli(['deny', second, '--note', 'No payer request on file', '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(denied).toEqual({ code: 0, out: `request ${second}: denied by po-cli\n`, err: '' });
  });

  it("a config naming the attacker's JWKS changes nothing: the forged approver is refused by the gateway", async () => {
    const jwks = (await (await fetch(stack.idp.jwksUri)).json()) as { keys: { kid: string }[] };
    const forger = await makeKeyPair('RS256', jwks.keys[0].kid);
    writeFileSync(join(dir, 'evil-jwks.json'), JSON.stringify({ keys: [forger.publicJwk] }));
    const policy = fileURLToPath(new URL('../../config/policy.yaml', import.meta.url));
    writeFileSync(
      join(dir, 'evil.yaml'),
      `policy: ${policy}\npublicBaseUrl: ${stack.url}\nupstream:\n  url: ${stack.upstreamUrl}\nauth:\n  issuer: ${stack.idp.issuer}\n  audience: ${stack.idp.audience}\n  jwksFile: evil-jwks.json\naudit:\n  sink: file\n  path: ${stack.auditDir}\n`,
    );
    const asked = await cli(['request', '--data-set', 'claim-attachment', '--patient', ALICE, '--justification', JUSTIFICATION, '--minutes', '60', '--token-file', billingToken, '--purpose', 'HPAYMT', '--format', 'json'], env);
    const target = (JSON.parse(asked.out) as { id: string }).id;
    const now = Math.floor(Date.now() / 1000);
    const forged = await signToken(forger, { iss: stack.idp.issuer, aud: stack.idp.audience, sub: 'po-forged', client_id: 'privacy-officer', roles: ['privacy-officer'], iat: now, exp: now + 600, jti: `j-${now}` });
    const file = tokenFile(forged);
    const r = await cli(['approve', target, '--token-file', file, '--purpose', 'HCOMPL'], { PHI_GATEWAY_CONFIG: join(dir, 'evil.yaml') });
    expect(r.code).toBe(1);
    expect(r.err).toContain('HTTP 401 invalid-token');
    expect(r.err).toContain('the access token was not accepted');
    // No token bytes in what the CLI says.
    expect(r.err).not.toContain(forged.split('.')[1]);
    const view = await cli(['list', '--status', 'pending', '--format', 'json', '--token-file', officerToken, '--purpose', 'HCOMPL'], env);
    expect(view.out).toContain(target);
  });

  it('through the phi-gateway entry point; a gateway that does not answer is "gateway unreachable" (exit 1)', async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    stdout.on('data', (d) => (out += d));
    const code = await main(['access', 'list', '--token-file', officerToken, '--purpose', 'HCOMPL', '--format', 'json'], { stdout, stderr, env });
    expect(code).toBe(0);
    expect(out.trim().split('\n').length).toBeGreaterThanOrEqual(2);

    const port = await freePort();
    const r = await cli(['approve', id, '--gateway', `http://127.0.0.1:${port}`, '--token-file', officerToken, '--purpose', 'HCOMPL'], {});
    expect(r.code).toBe(1);
    expect(r.err).toContain(`gateway unreachable at http://127.0.0.1:${port} (ECONNREFUSED); nothing was recorded`);
  });
});
