/**
 * `phi-gateway access`: usage errors (exit 2) before anything is sent, what each verb sends to the
 * gateway (method, path, headers, JSON body), and answers that are not the gateway's (exit 1). The
 * gateway's own judgement is tested end to end in test/integration/access-requests-cli.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, USAGE } from '../../../src/cli/access.js';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(['access', ...argv], { stdout, stderr, env: { PHI_GATEWAY_CONFIG: '/nonexistent/gateway.yaml', ...env } });
  return { code, out, err };
}

const VIEW = {
  id: '0f8e2a64-3b1c-4d2e-9a7f-5c6b8d9e0a1b',
  requester: { iss: 'https://idp.example', sub: 'bill-1' },
  role: 'billing',
  dataSet: 'claim-attachment',
  purpose: 'HPAYMT',
  scope: { patients: ['pat-alice'] },
  justification: 'Payer asked\tfor the note',
  minutes: 60,
  requestedAt: '2026-01-05T10:00:00.000Z',
  status: 'pending',
  uses: 0,
  active: false,
  url: 'http://127.0.0.1/access-requests/0f8e2a64-3b1c-4d2e-9a7f-5c6b8d9e0a1b',
};

describe('phi-gateway access', () => {
  let dir: string;
  let token: string;
  let server: Server;
  let gateway: string;
  const seen: Seen[] = [];
  /** What the stand-in gateway answers next: status and body text. */
  let answer: { status: number; body: string; type?: string } = { status: 200, body: JSON.stringify(VIEW) };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'access-cli-unit-'));
    token = join(dir, 'token');
    writeFileSync(token, 'Bearer aaa.bbb.ccc\n', { mode: 0o600 });
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        res.writeHead(answer.status, { 'content-type': answer.type ?? 'application/json' }).end(answer.body);
      });
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    gateway = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
    rmSync(dir, { recursive: true, force: true });
  });

  const conn = () => ['--token-file', token, '--purpose', 'HPAYMT', '--gateway', gateway];

  it('--help prints the usage; a missing or unknown command is a usage error', async () => {
    expect(await cli(['--help'])).toEqual({ code: 0, out: USAGE, err: '' });
    for (const argv of [[], ['grant'], ['request', '--bogus']]) {
      const r = await cli(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toContain(USAGE);
    }
  });

  it('refuses incomplete or malformed options before sending anything (exit 2)', async () => {
    const before = seen.length;
    const cases: [string[], string][] = [
      [['request', '--patient', 'pat-alice', '--justification', 'x', '--minutes', '5', ...conn()], '--data-set D is required'],
      [['request', '--data-set', 'claim-attachment', '--justification', 'x', '--minutes', '5', ...conn()], '--patient ID is required'],
      [['request', '--data-set', 'claim-attachment', '--patient', 'p', '--minutes', '5', ...conn()], '--justification T is required'],
      [['request', '--data-set', 'claim-attachment', '--patient', 'p', '--justification', 'x', ...conn()], '--minutes N is required'],
      [['request', '--data-set', 'claim-attachment', '--patient', 'p', '--justification', 'x', '--minutes', '1.5', ...conn()], '--minutes must be a whole number'],
      [['request', '--data-set', 'claim-attachment', '--patient', 'p', '--justification', 'x', '--minutes', '0', ...conn()], '--minutes must be a whole number'],
      [['approve', ...conn()], 'exactly one request ID'],
      [['approve', 'a', 'b', ...conn()], 'exactly one request ID'],
      [['deny', 'a', ...conn()], '--note T is required'],
      [['deny', 'a', '--note', 'n'.repeat(2001), ...conn()], '--note is limited to 2000'],
      [['deny', 'a', '--note', 'no', '--patient', 'p', ...conn()], "Unknown option '--patient'"],
      [['list', '--status', 'open', ...conn()], '--status must be one of pending, approved, denied, active'],
      [['list', '--format', 'xml', ...conn()], '--format must be table or json'],
      [['list', '--token-file', token, '--gateway', gateway], '--purpose P is required'],
      [['list', '--purpose', 'HPAYMT', '--gateway', gateway], '--token-file F (or PHI_GATEWAY_TOKEN_FILE) is required'],
      [['list', '--token-file', token, '--purpose', 'HPAYMT'], 'where is the gateway?'],
      [['list', '--token-file', token, '--purpose', 'HPAYMT', '--gateway', 'http://gateway.example-hospital.org'], 'must use https'],
    ];
    for (const [argv, message] of cases) {
      const r = await cli(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toContain(message);
    }
    expect(seen.length).toBe(before);
  });

  it('a token file that cannot be read or holds no token: exit 1, nothing sent', async () => {
    const before = seen.length;
    const missing = await cli(['list', '--token-file', join(dir, 'nope'), '--purpose', 'HPAYMT', '--gateway', gateway]);
    expect(missing).toMatchObject({ code: 1, err: 'phi-gateway access: cannot read the token file (ENOENT)\n' });
    writeFileSync(join(dir, 'two'), 'aaa.bbb.ccc ddd.eee.fff');
    const two = await cli(['list', '--token-file', join(dir, 'two'), '--purpose', 'HPAYMT', '--gateway', gateway]);
    expect(two).toMatchObject({ code: 1, err: 'phi-gateway access: the token file does not hold one access token\n' });
    expect(seen.length).toBe(before);
  });

  it('request sends the scope as the JSON body, the token, purpose and role as headers', async () => {
    answer = { status: 201, body: JSON.stringify(VIEW) };
    const r = await cli([
      'request',
      '--data-set',
      'claim-attachment',
      '--patient',
      'pat-alice',
      '--patient',
      'pat-brian',
      '--encounter',
      'enc-1',
      '--type',
      'DocumentReference',
      '--from',
      '2024-01-01',
      '--justification',
      'Payer asked for the note',
      '--minutes',
      '60',
      '--role',
      'billing',
      ...conn(),
    ]);
    expect(r).toEqual({ code: 0, out: `request ${VIEW.id}: pending, claim-attachment for pat-alice (${VIEW.url})\n`, err: '' });
    const s = seen.at(-1)!;
    expect([s.method, s.url]).toEqual(['POST', '/access-requests']);
    expect(s.headers).toMatchObject({ authorization: 'Bearer aaa.bbb.ccc', 'x-purpose-of-use': 'HPAYMT', 'x-role': 'billing', 'content-type': 'application/json' });
    expect(s.headers['user-agent']).toMatch(/^phi-gateway-cli \(/);
    expect(JSON.parse(s.body)).toEqual({
      dataSet: 'claim-attachment',
      patients: ['pat-alice', 'pat-brian'],
      encounters: ['enc-1'],
      types: ['DocumentReference'],
      period: { start: '2024-01-01' },
      justification: 'Payer asked for the note',
      minutes: 60,
    });
  });

  it('approve, deny and revoke post to the request id (escaped); approve may narrow', async () => {
    const decided = { ...VIEW, status: 'approved', decision: { by: { sub: 'po-1' }, outcome: 'approved', narrowed: true }, granted: { scope: { patients: ['pat-alice'] }, expiresAt: '2026-01-05T11:00:00.000Z' } };
    answer = { status: 200, body: JSON.stringify(decided) };
    const approve = await cli(['approve', VIEW.id, '--minutes', '30', '--patient', 'pat-alice', '--to', '2024-06-30', '--note', 'ok', ...conn()]);
    expect(approve).toEqual({ code: 0, out: `request ${VIEW.id}: approved by po-1 (narrowed), until 2026-01-05T11:00:00.000Z\n`, err: '' });
    expect([seen.at(-1)!.method, seen.at(-1)!.url]).toEqual(['POST', `/access-requests/${VIEW.id}/approve`]);
    expect(JSON.parse(seen.at(-1)!.body)).toEqual({ minutes: 30, patients: ['pat-alice'], period: { end: '2024-06-30' }, note: 'ok' });

    await cli(['deny', '../x?y', '--note', 'no letter', ...conn()]);
    expect(seen.at(-1)!.url).toBe('/access-requests/..%2Fx%3Fy/deny');
    expect(JSON.parse(seen.at(-1)!.body)).toEqual({ note: 'no letter' });

    answer = { status: 200, body: JSON.stringify({ ...decided, revoked: { by: { sub: 'bill-1' }, at: '2026-01-05T10:30:00.000Z' } }) };
    const revoke = await cli(['revoke', VIEW.id, ...conn()]);
    expect(revoke.out).toBe(`request ${VIEW.id}: revoked by bill-1\n`);
    expect(JSON.parse(seen.at(-1)!.body)).toEqual({});
  });

  it('list prints a table (tabs in values flattened) or JSON lines; the filter is a query parameter', async () => {
    answer = { status: 200, body: JSON.stringify({ requests: [VIEW] }) };
    const table = await cli(['list', '--status', 'pending', ...conn()]);
    expect(table.code).toBe(0);
    expect(seen.at(-1)!.url).toBe('/access-requests?status=pending');
    expect(seen.at(-1)!.method).toBe('GET');
    expect(seen.at(-1)!.headers['content-type']).toBeUndefined();
    const rows = table.out.trimEnd().split('\n');
    expect(rows).toHaveLength(2);
    expect(rows[1].split('\t')).toEqual([VIEW.id, 'bill-1', 'billing', 'claim-attachment', 'HPAYMT', 'pat-alice', VIEW.requestedAt, 'pending', '', '', '0', 'Payer asked for the note']);
    const json = await cli(['list', '--format', 'json', ...conn()]);
    expect(json).toEqual({ code: 0, out: `${JSON.stringify(VIEW)}\n`, err: '' });
  });

  it('a refusal is told with its code; an answer that is not the gateway’s is exit 1', async () => {
    answer = {
      status: 403,
      type: 'application/fhir+json',
      body: JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ details: { coding: [{ code: 'approval-not-permitted' }], text: 'You may not decide or revoke this access request.' } }] }),
    };
    const refused = await cli(['approve', VIEW.id, ...conn()]);
    expect(refused).toEqual({ code: 1, out: '', err: 'phi-gateway access: refused by the gateway: HTTP 403 approval-not-permitted: You may not decide or revoke this access request.\n' });

    answer = { status: 200, body: '<html>proxy login</html>', type: 'text/html' };
    const html = await cli(['list', ...conn()]);
    expect(html.code).toBe(1);
    expect(html.err).toContain('without JSON: is it the gateway?');
    answer = { status: 200, body: '{"requests": [{"id": 1}]}' };
    const odd = await cli(['list', ...conn()]);
    expect(odd.code).toBe(1);
    expect(odd.err).toContain('without a list of requests');
    answer = { status: 201, body: '{}' };
    const empty = await cli(['request', '--data-set', 'd', '--patient', 'p', '--justification', 'j', '--minutes', '1', ...conn()]);
    expect(empty.code).toBe(1);
    expect(empty.err).toContain('without an access request');
  });
});
