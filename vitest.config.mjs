import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.{ts,mjs}'],
    // Native addons and worker threads do not mix: one process per test file.
    pool: 'forks',
    // removes every test session from the shared Redis, PostgreSQL and MariaDB afterwards; starts
    // (and stops) the run's own Redis Cluster
    globalSetup: ['./__test__/support/cleanup.mjs', './__test__/support/cluster-setup.mjs'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
