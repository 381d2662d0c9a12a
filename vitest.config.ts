import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // expect.poll waits for background work (alert delivery, sweeps); on a loaded 2-core CI machine
    // the 1 s default is too tight to tell slow from broken.
    expect: { poll: { timeout: 10_000 } },
    reporters: ['default'],
  },
});
