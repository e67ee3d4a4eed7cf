/**
 * SIGTERM drains: the process stops taking requests, lets an in-flight stream finish, and exits 0.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import {
  REDIS_URL,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  openTestDb,
  spawnGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

let tdb: TestDatabase;
let prefix: string;
let up: FakeUpstream;
let sk: string;
let child: ChildProcess;
let url: string;
/** What the gateway process has written to stdout. */
let logged = '';

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  up = await startFakeOpenAI({ name: 'g' });
  const dbh = await openTestDb(tdb.url);
  await insertChannel(dbh.db, { code: 'g', provider: 'openai', baseUrl: up.url + '/v1', credential: 'k' });
  await insertAlias(dbh.db, { name: 'main', tiers: [[{ channel: 'g', model: 'm' }]] });
  ({ sk } = await insertKey(dbh.db, await insertApp(dbh.db, 'g')));
  await dbh.close();
  const g = spawnGateway({
    DATABASE_URL: tdb.url,
    REDIS_URL,
    ANIMA_REDIS_PREFIX: prefix,
    ANIMA_DRAIN_MS: '10000',
    ANIMA_LOG_LEVEL: 'info', // its "shutting down" line is what the test waits for
  });
  child = g.child;
  child.stdout!.on('data', (d: Buffer) => (logged += d.toString()));
  url = await g.url;
}, 60_000);

afterAll(async () => {
  if (child.exitCode === null) child.kill('SIGKILL');
  await up?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('SIGTERM', () => {
  it('lets an in-flight stream finish, refuses new work, exits 0', async () => {
    up.setFault({ chunks: 15, chunkDelayMs: 100 });
    const r = await fetch(url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
      body: JSON.stringify({
        model: 'main',
        stream: true,
        messages: [{ role: 'user', content: 'long story' }],
      }),
    });
    const reader = r.body!.getReader();
    await reader.read();
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const t0 = Date.now();
    child.kill('SIGTERM');
    // Logged as the close begins, before the server stops taking work: from then on new work is refused.
    await waitFor(() => logged.includes('shutting down'), 5_000, 5);
    const late = await fetch(url + '/v1/models', { headers: { authorization: `Bearer ${sk}` } }).then(
      (x) => x.status,
      () => 'refused',
    );
    expect(['refused', 503]).toContain(late);
    let text = '';
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
    }
    expect(text).toContain('[DONE]');
    expect(await exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5_000); // well before the 10 s drain deadline: it waited for the stream, not the clock
    console.log(`SIGTERM: in-flight stream completed, process exited 0 after ${Date.now() - t0} ms`);
  }, 30_000);
});
