/** Whether the audit sink appended its seal on close, read from the chain head before and after. */
import { describe, expect, it } from 'vitest';
import { chainSealed } from '../../../src/server/runtime.js';

describe('chainSealed', () => {
  it('is true when the writer committed something during close (its seal)', () => {
    expect(chainSealed({ writer: 'w1', seq: 12 }, { writer: 'w1', seq: 13 })).toBe(true);
  });
  it('is false when nothing was committed: the seal was refused (disk full, Redis OOM) or never tried (Redis down)', () => {
    expect(chainSealed({ writer: 'w1', seq: 12 }, { writer: 'w1', seq: 12 })).toBe(false);
  });
  it('is false when the head moved to another writer (a reconnect started a new chain, unsealed)', () => {
    expect(chainSealed({ writer: 'w1', seq: 12 }, { writer: 'w2', seq: 13 })).toBe(false);
  });
  it('is true for a writer without records (nothing to seal) and for sinks without a chain head', () => {
    expect(chainSealed({ writer: 'w1', seq: 0 }, { writer: 'w1', seq: 0 })).toBe(true);
    expect(chainSealed(undefined, undefined)).toBe(true);
  });
});
