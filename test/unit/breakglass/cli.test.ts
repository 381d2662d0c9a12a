// `phi-gateway break-glass list|review` against the embedded store and the file audit sink.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../../src/audit/index.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { FileSessionStore } from '../../../src/breakglass/file-store.js';
import { run } from '../../../src/cli/break-glass.js';

let dir: string;
let env: NodeJS.ProcessEnv;
const NOW = new Date('2025-03-01T10:30:00Z');

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

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bg-cli-'));
  env = { PHI_GATEWAY_CONFIG: fileURLToPath(new URL('../../../config/gateway.yaml', import.meta.url)), PHI_GATEWAY_AUDIT: `file:${join(dir, 'audit')}` };
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
    const r = await cli('review', 'sess-dr-a', '--reviewer', 'po-1', '--outcome', 'unjustified', '--note', 'no ED record');
    expect(r).toMatchObject({ code: 0, out: 'session sess-dr-a: unjustified by po-1\n' });
    const list = await cli('list', '--unreviewed', '--json');
    expect(list.out.trim().split('\n').map((l) => JSON.parse(l).id)).toEqual(['sess-dr-b']);
    const records = await auditRecords();
    const review = records.find((x) => x.kind === 'break-glass-review');
    expect(review).toMatchObject({
      actor: { sub: 'po-1' },
      purpose: 'HCOMPL',
      disclosed: { patients: ['p0'] },
      details: { via: 'cli', session: 'sess-dr-a', outcome: 'unjustified', note: 'no ED record', sessionActor: 'dr-a' },
    });
    const store = await FileSessionStore.open(join(dir, 'break-glass'));
    expect((await store.get('sess-dr-a'))?.reviews).toMatchObject([{ auditId: review?.id, outcome: 'unjustified', via: 'cli' }]);
  });

  it('refuses the actor reviewing their own session, and unknown sessions (exit 1, nothing written)', async () => {
    await seed();
    const own = await cli('review', 'sess-dr-a', '--reviewer', 'dr-a', '--outcome', 'justified');
    expect(own.code).toBe(1);
    expect(own.err).toContain('separation of duties');
    const missing = await cli('review', 'nope', '--reviewer', 'po-1', '--outcome', 'justified');
    expect(missing.code).toBe(1);
    // Nothing was audited: the audit directory was never even created.
    await expect(auditRecords()).rejects.toThrow(/ENOENT/);
  });

  it('usage errors exit 2', async () => {
    expect((await cli('review', 'sess-dr-a', '--outcome', 'justified')).code).toBe(2);
    expect((await cli('review', 'sess-dr-a', '--reviewer', 'po', '--outcome', 'maybe')).code).toBe(2);
    expect((await cli('review', '--reviewer', 'po', '--outcome', 'justified')).code).toBe(2);
    expect((await cli('list', '--bogus')).code).toBe(2);
    expect((await cli('frobnicate')).code).toBe(2);
  });
});
