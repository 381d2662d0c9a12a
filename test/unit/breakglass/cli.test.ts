// `phi-gateway break-glass list|review` against the embedded store and the file audit sink. The
// reviewer is the subject of an access token verified with the config's auth section (a JWKS file).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../../src/audit/index.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { FileSessionStore } from '../../../src/breakglass/file-store.js';
import { run } from '../../../src/cli/break-glass.js';
import { makeKeyPair, signToken, type TestKeyPair } from '../../helpers/keys.js';

let dir: string;
let env: NodeJS.ProcessEnv;
const NOW = new Date('2025-03-01T10:30:00Z');
const ISS = 'https://idp.test';
const AUD = 'phi-gateway';
let key: TestKeyPair;
let otherKey: TestKeyPair;

/** Writes a token for `sub` to a file (mode 0600, as a reviewer would keep it) and returns the path. */
async function tokenFile(sub: string, roles: string[] = ['privacy-officer'], over: Record<string, unknown> = {}, signer = key): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const token = await signToken(signer, { iss: ISS, aud: AUD, sub, roles, iat: now, exp: now + 600, ...over });
  const path = join(dir, `token-${sub}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  return path;
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(argv, { stdout, stderr, env, now: () => NOW });
  return { code, out, err };
}

async function seed(): Promise<string[]> {
  const store = await FileSessionStore.open(join(dir, 'break-glass'));
  const ids: string[] = [];
  for (const [i, sub] of ['dr-a', 'dr-b'].entries()) {
    const r = await store.open({
      id: `sess-${sub}`,
      actor: { iss: 'https://idp.test', sub, roles: ['clinician'] },
      patient: `p${i}`,
      reason: 'Unconscious patient\tin the ED, chart restricted',
      reasonCode: undefined,
      requestId: `r${i}`,
      now: new Date(Date.parse('2025-03-01T10:00:00Z') - i * 3600_000),
      sessionMs: 3600_000,
      maxSessionsPerDay: 5,
    });
    if (r.kind !== 'limited') ids.push(r.session.id);
  }
  await store.close();
  return ids;
}

async function auditRecords(): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  for await (const item of openAuditSource(`file:${join(dir, 'audit')}`)) if ('record' in item) out.push(item.record as ChainedRecord);
  return out;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bg-cli-'));
  key ??= await makeKeyPair('ES256');
  otherKey ??= await makeKeyPair('ES256', key.kid);
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [key.publicJwk] }));
  const policy = fileURLToPath(new URL('../../../config/policy.yaml', import.meta.url));
  writeFileSync(
    join(dir, 'gateway.yaml'),
    `policy: ${policy}\nupstream:\n  url: http://127.0.0.1:8103/fhir\nauth:\n  issuer: ${ISS}\n  audience: ${AUD}\n  jwksFile: jwks.json\naudit:\n  sink: file\n  path: audit\n`,
  );
  env = { PHI_GATEWAY_CONFIG: join(dir, 'gateway.yaml'), PHI_GATEWAY_AUDIT: `file:${join(dir, 'audit')}` };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('break-glass CLI', () => {
  it('lists sessions with actor, patient, state and review, one line each', async () => {
    await seed();
    const { code, out } = await cli('list');
    expect(code).toBe(0);
    const lines = out.trim().split('\n');
    expect(lines[0].split('\t')).toEqual(['SESSION', 'ACTOR', 'PATIENT', 'STARTED', 'EXPIRES', 'STATE', 'REVIEW', 'REASON']);
    // Oldest first; the tab inside the reason does not add a column.
    expect(lines.slice(1).map((l) => l.split('\t'))).toEqual([
      ['sess-dr-b', 'dr-b', 'p1', '2025-03-01T09:00:00.000Z', '2025-03-01T10:00:00.000Z', 'expired', 'UNREVIEWED', 'Unconscious patient in the ED, chart restricted'],
      ['sess-dr-a', 'dr-a', 'p0', '2025-03-01T10:00:00.000Z', '2025-03-01T11:00:00.000Z', 'open', 'UNREVIEWED', 'Unconscious patient in the ED, chart restricted'],
    ]);
  });

  it('reviews: audited first, then stored; gone from --unreviewed', async () => {
    await seed();
    const r = await cli('review', 'sess-dr-a', '--token-file', await tokenFile('po-1'), '--outcome', 'unjustified', '--note', 'no ED record');
    expect(r).toMatchObject({ code: 0, out: 'session sess-dr-a: unjustified by po-1\n' });
    const list = await cli('list', '--unreviewed', '--json');
    expect(list.out.trim().split('\n').map((l) => JSON.parse(l).id)).toEqual(['sess-dr-b']);
    const records = await auditRecords();
    const review = records.find((x) => x.kind === 'break-glass-review');
    expect(review).toMatchObject({
      actor: { iss: ISS, sub: 'po-1', roles: ['privacy-officer'] },
      role: 'privacy-officer',
      purpose: 'HCOMPL',
      disclosed: { patients: ['p0'] },
      details: { via: 'cli', session: 'sess-dr-a', outcome: 'unjustified', note: 'no ED record', sessionActor: 'dr-a' },
    });
    const store = await FileSessionStore.open(join(dir, 'break-glass'));
    expect((await store.get('sess-dr-a'))?.reviews).toMatchObject([{ reviewer: { iss: ISS, sub: 'po-1' }, auditId: review?.id, outcome: 'unjustified', via: 'cli' }]);
  });

  it('refuses the actor reviewing their own session, and unknown sessions (exit 1, nothing written)', async () => {
    await seed();
    // dr-a holds a reviewer role too, but the token says it is dr-a.
    const own = await cli('review', 'sess-dr-a', '--token-file', await tokenFile('dr-a', ['clinician', 'privacy-officer']), '--outcome', 'justified');
    expect(own.code).toBe(1);
    expect(own.err).toContain('separation of duties');
    const missing = await cli('review', 'nope', '--token-file', await tokenFile('po-1'), '--outcome', 'justified');
    expect(missing.code).toBe(1);
    // Nothing was audited: the audit directory was never even created.
    await expect(auditRecords()).rejects.toThrow(/ENOENT/);
  });

  it('refuses --reviewer (a typed name proves nothing), pointing at --token-file and the HTTP route', async () => {
    await seed();
    const r = await cli('review', 'sess-dr-a', '--reviewer', 'po-1', '--outcome', 'justified');
    expect(r.code).toBe(2);
    expect(r.err).toContain('--reviewer is no longer accepted');
    expect(r.err).toContain('--token-file');
    expect(r.err).toContain('PHI_GATEWAY_TOKEN_FILE');
    expect(r.err).toContain('POST /break-glass/sessions/ID/review');
    // Even alongside a valid token: the flag is refused, nothing is written.
    expect((await cli('review', 'sess-dr-a', '--token-file', await tokenFile('po-1'), '--reviewer', 'po-1', '--outcome', 'justified')).code).toBe(2);
    await expect(auditRecords()).rejects.toThrow(/ENOENT/);
  });

  it('takes the token file from PHI_GATEWAY_TOKEN_FILE', async () => {
    await seed();
    env = { ...env, PHI_GATEWAY_TOKEN_FILE: await tokenFile('po-2') };
    const r = await cli('review', 'sess-dr-b', '--outcome', 'justified');
    expect(r).toMatchObject({ code: 0, out: 'session sess-dr-b: justified by po-2\n' });
    expect((await auditRecords()).find((x) => x.kind === 'break-glass-review')).toMatchObject({ actor: { sub: 'po-2' } });
  });

  it.each([
    ['a role without break-glass-review', () => tokenFile('billing-1', ['billing']), /billing-1 has no role with capability break-glass-review for HCOMPL/],
    ['an auditor (audit-export only)', () => tokenFile('aud-1', ['auditor']), /no role with capability break-glass-review/],
    ['another key (same kid)', () => tokenFile('po-1', ['privacy-officer'], {}, otherKey), /access token was not accepted/],
    ['an expired token', () => tokenFile('po-1', ['privacy-officer'], { exp: Math.floor(Date.now() / 1000) - 120 }), /access token was not accepted/],
    ['another audience', () => tokenFile('po-1', ['privacy-officer'], { aud: 'some-other-api' }), /access token was not accepted/],
    ['another issuer', () => tokenFile('po-1', ['privacy-officer'], { iss: 'https://evil.test' }), /access token was not accepted/],
    ['purposes that do not cover HCOMPL', () => tokenFile('po-1', ['privacy-officer'], { purpose_of_use: ['TREAT'] }), /purposes of use do not cover HCOMPL/],
  ])('refuses %s (exit 1, nothing written, no token bytes echoed)', async (_name, make, message) => {
    await seed();
    const file = await make();
    const r = await cli('review', 'sess-dr-a', '--token-file', file, '--outcome', 'justified');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(message);
    const token = readFileSync(file, 'utf8').trim();
    expect(r.err).not.toContain(token.split('.')[1]);
    await expect(auditRecords()).rejects.toThrow(/ENOENT/);
    const store = await FileSessionStore.open(join(dir, 'break-glass'));
    expect((await store.get('sess-dr-a'))?.reviews).toEqual([]);
    await store.close();
  });

  it('refuses an unreadable or empty token file', async () => {
    await seed();
    const missing = await cli('review', 'sess-dr-a', '--token-file', join(dir, 'nope'), '--outcome', 'justified');
    expect(missing).toMatchObject({ code: 1 });
    expect(missing.err).toContain('cannot read the token file (ENOENT)');
    writeFileSync(join(dir, 'empty'), '\n');
    expect((await cli('review', 'sess-dr-a', '--token-file', join(dir, 'empty'), '--outcome', 'justified')).err).toContain('the token file is empty');
  });

  it('usage errors exit 2', async () => {
    expect((await cli('review', 'sess-dr-a', '--outcome', 'justified')).code).toBe(2);
    const tf = await tokenFile('po');
    expect((await cli('review', 'sess-dr-a', '--token-file', tf, '--outcome', 'maybe')).code).toBe(2);
    expect((await cli('review', '--token-file', tf, '--outcome', 'justified')).code).toBe(2);
    expect((await cli('list', '--bogus')).code).toBe(2);
    expect((await cli('frobnicate')).code).toBe(2);
  });
});
