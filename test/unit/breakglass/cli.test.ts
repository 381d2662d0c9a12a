// `phi-gateway break-glass list` against the embedded store and the file audit sink, and the
// review's argument checks (refused before any request leaves). The review itself goes through the
// running gateway: test/integration/break-glass-cli-review.test.ts.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

async function reviewsOfA(): Promise<readonly unknown[]> {
  const store = await FileSessionStore.open(join(dir, 'break-glass'));
  try {
    return (await store.get('sess-dr-a'))?.reviews ?? [];
  } finally {
    await store.close();
  }
}

async function auditRecords(): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  for await (const item of openAuditSource(`file:${join(dir, 'audit')}`)) if ('record' in item) out.push(item.record as ChainedRecord);
  return out;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bg-cli-'));
  key ??= await makeKeyPair('ES256');
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [key.publicJwk] }));
  const policy = fileURLToPath(new URL('../../../config/policy.yaml', import.meta.url));
  writeFileSync(
    join(dir, 'gateway.yaml'),
    `policy: ${policy}\nupstream:\n  url: http://127.0.0.1:8103/fhir\nauth:\n  issuer: ${ISS}\n  audience: ${AUD}\n  jwksFile: jwks.json\naudit:\n  sink: file\n  path: audit\n`,
  );
  // The trail the gateway would have created: `list` records itself there, and refuses without it.
  mkdirSync(join(dir, 'audit'));
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
    // The listing showed reasons and patients: it is in the trail.
    expect((await auditRecords()).filter((r) => r.kind === 'audit-export')).toMatchObject([
      { request: { method: 'CLI', path: 'break-glass list' }, disclosed: { patients: ['p1', 'p0'] }, details: { command: 'break-glass list', count: 2 } },
    ]);
  });

  it('--unreviewed shows only sessions without a review', async () => {
    await seed();
    const store = await FileSessionStore.open(join(dir, 'break-glass'));
    await store.addReview('sess-dr-a', { reviewer: { iss: ISS, sub: 'po-1' }, outcome: 'justified', note: undefined, at: NOW.toISOString(), via: 'http', auditId: 'a1' });
    await store.close();
    const list = await cli('list', '--unreviewed', '--json');
    expect(list.code).toBe(0);
    expect(list.out.trim().split('\n').map((l) => JSON.parse(l).id)).toEqual(['sess-dr-b']);
    const all = await cli('list');
    expect(all.out).toContain('justified by po-1');
  });

  it('refuses --reviewer (a typed name proves nothing), pointing at --token-file and the HTTP route; nothing is sent', async () => {
    await seed();
    const r = await cli('review', 'sess-dr-a', '--reviewer', 'po-1', '--outcome', 'justified');
    expect(r.code).toBe(2);
    expect(r.err).toContain('--reviewer is no longer accepted');
    expect(r.err).toContain('--token-file');
    expect(r.err).toContain('PHI_GATEWAY_TOKEN_FILE');
    expect(r.err).toContain('POST /break-glass/sessions/ID/review');
    expect((await cli('review', 'sess-dr-a', '--token-file', await tokenFile('po-1'), '--reviewer', 'po-1', '--outcome', 'justified')).code).toBe(2);
    expect(await reviewsOfA()).toEqual([]);
  });

  it('refuses an unreadable or empty token file before contacting the gateway', async () => {
    env = { ...env, PHI_GATEWAY_URL: 'http://127.0.0.1:9' };
    const missing = await cli('review', 'sess-dr-a', '--token-file', join(dir, 'nope'), '--outcome', 'justified');
    expect(missing).toMatchObject({ code: 1 });
    expect(missing.err).toContain('cannot read the token file (ENOENT)');
    writeFileSync(join(dir, 'empty'), '\n');
    expect((await cli('review', 'sess-dr-a', '--token-file', join(dir, 'empty'), '--outcome', 'justified')).err).toContain('the token file is empty');
  });

  it('finds the gateway: --gateway, else PHI_GATEWAY_URL, else the config; http only to loopback', async () => {
    const tf = await tokenFile('po');
    // Nothing listens on port 9 of this machine: each attempt names the address it tried.
    const flag = await cli('review', 'x', '--token-file', tf, '--outcome', 'justified', '--gateway', 'http://127.0.0.1:9/fhir/');
    expect(flag).toMatchObject({ code: 1 });
    expect(flag.err).toContain('gateway unreachable at http://127.0.0.1:9 (');
    env = { ...env, PHI_GATEWAY_URL: 'http://localhost:9' };
    expect((await cli('review', 'x', '--token-file', tf, '--outcome', 'justified')).err).toContain('gateway unreachable at http://localhost:9 (');
    delete env.PHI_GATEWAY_URL;
    writeFileSync(join(dir, 'gateway.yaml'), `${readFileSync(join(dir, 'gateway.yaml'), 'utf8')}publicBaseUrl: http://127.0.0.1:9/phi/fhir\n`);
    expect((await cli('review', 'x', '--token-file', tf, '--outcome', 'justified')).err).toContain('gateway unreachable at http://127.0.0.1:9/phi (');
    const clear = await cli('review', 'x', '--token-file', tf, '--outcome', 'justified', '--gateway', 'http://10.1.2.3:8080');
    expect(clear.code).toBe(2);
    expect(clear.err).toContain('must use https');
    const noCa = await cli('review', 'x', '--token-file', tf, '--outcome', 'justified', '--gateway', 'https://127.0.0.1:9', '--ca', join(dir, 'no-ca.pem'));
    expect(noCa.code).toBe(2);
    expect(noCa.err).toContain('--ca');
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
