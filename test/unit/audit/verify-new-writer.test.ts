/**
 * A live writer signs its first checkpoint up to audit.checkpoint.everySeconds after it starts. A
 * scheduled `audit verify --public-key --allow-unsealed` catching it in that window reports its
 * records as unprotected rather than failing; past the grace, or dated in the future, a writer
 * with no checkpoint fails as before.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chainRecords, genesisHead } from '../../../src/audit/chain.js';
import { verifyChains } from '../../../src/audit/verify.js';
import { sampleRecord } from './fixtures.js';

const { publicKey } = generateKeyPairSync('ed25519');
const NOW = new Date('2026-12-06T12:00:00Z');

function writerStartedAt(time: Date) {
  const records = [0, 1, 2].map((i) => sampleRecord(i, { time: new Date(time.getTime() + i * 1000).toISOString() }));
  return chainRecords(genesisHead('w-new'), records).chained;
}

const verify = (time: Date, requireSeal = false) =>
  verifyChains(writerStartedAt(time), { publicKeys: [publicKey], requireSeal, newWriterGraceMs: 120_000, now: NOW });

describe('a writer too new to have a checkpoint', () => {
  it('started a minute ago: unprotected, not a failure, under --allow-unsealed', async () => {
    const r = await verify(new Date(NOW.getTime() - 60_000));
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => w.kind)).toContain('unprotected');
    expect(r.warnings.find((w) => w.kind === 'unprotected')?.message).toMatch(/no checkpoint yet: its 3 record/);
  });

  it('started ten minutes ago: nothing vouches for it, a failure', async () => {
    const r = await verify(new Date(NOW.getTime() - 600_000));
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => p.kind)).toContain('no-checkpoint');
  });

  it('dated in the future: a failure (it would otherwise stay new for ever)', async () => {
    const r = await verify(new Date(NOW.getTime() + 3_600_000));
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => p.kind)).toContain('no-checkpoint');
  });

  it('when seals are required (a closed trail), no grace', async () => {
    const r = await verify(new Date(NOW.getTime() - 60_000), true);
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => p.kind)).toEqual(expect.arrayContaining(['no-checkpoint', 'unsealed']));
  });
});
