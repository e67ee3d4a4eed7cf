import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The unit lane (`npm run test:unit`): the tests that need no PostgreSQL, Redis, Chromium, network or
 * build. ANIMA_TEST_NO_SERVICES makes test/helpers.ts refuse every helper that reaches a service, and
 * the service URLs point at a closed port, so a unit test that needs one fails in this lane instead of
 * passing only where the services happen to run. It runs from source: a case that spawns the built CLI
 * belongs in test/integration.
 */
export default defineConfig({
  test: {
    ...base.test,
    include: ['test/unit/**/*.test.ts'],
    env: {
      ANIMA_TEST_NO_SERVICES: '1',
      TEST_PG_ADMIN_URL: 'postgres://postgres@127.0.0.1:9/postgres',
      TEST_REDIS_URL: 'redis://127.0.0.1:9',
    },
  },
});
