/**
 * Production mode for real: two `anima serve` processes on one PostgreSQL and one Redis share state.
 * (Requires the build: `npm test` builds first.)
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey, setKeyEnabled } from '../../src/config/repo.js';
import type { DbHandle } from '../../src/store/db.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
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

const CLI = 'dist/src/app/cli.js';
let tdb: TestDatabase;
let dbh: DbHandle;
let prefix: string;
let pri: FakeUpstream;
let sec: FakeUpstream;
let sk: string;
let keyId: string;
const procs: ChildProcess[] = [];
const urls: string[] = [];

function startProcess(): Promise<string> {
  const g = spawnGateway({ DATABASE_URL: tdb.url, REDIS_URL, ANIMA_REDIS_PREFIX: prefix });
  procs.push(g.child);
  return g.url;
}

const post = (url: string, model: string, key = sk) =>
  fetch(url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  });

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run "npm run build" (npm test does)`);
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  pri = await startFakeOpenAI({ name: 'primary' });
  sec = await startFakeOpenAI({ name: 'secondary' });
  dbh = await openTestDb(tdb.url);
  const settings = { breaker: { minCalls: 2, failureRate: 0.5, openMs: 60_000 } };
  await insertChannel(dbh.db, {
    code: 'pri',
    provider: 'openai',
    baseUrl: pri.url + '/v1',
    credential: 'k',
    settings,
  });
  await insertChannel(dbh.db, {
    code: 'sec',
    provider: 'openai',
    baseUrl: sec.url + '/v1',
    credential: 'k',
    settings,
  });
  await insertAlias(dbh.db, {
    name: 'main',
    tiers: [[{ channel: 'pri', model: 'm' }], [{ channel: 'sec', model: 'm' }]],
  });
  const app = await insertApp(dbh.db, 'procs');
  ({ sk, id: keyId } = await insertKey(dbh.db, app));
  urls.push(...(await Promise.all([startProcess(), startProcess()])));
}, 60_000);

afterAll(async () => {
  for (const p of procs) p.kill('SIGTERM');
  await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.on('exit', r)))));
  await dbh?.close();
  await pri?.close();
  await sec?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('two gateway processes on PostgreSQL + Redis', () => {
  it('both serve from the shared configuration', async () => {
    for (const u of urls) {
      const r = await post(u, 'main');
      expect(r.status).toBe(200);
      expect(r.headers.get('x-anima-channel')).toBe('pri');
    }
  });

  it('a breaker opened through process A keeps process B off that channel', async () => {
    pri.setFault({ status: 500 });
    for (let i = 0; i < 2; i++)
      expect((await post(urls[0]!, 'main')).headers.get('x-anima-channel')).toBe('sec');
    pri.resetStats();
    const r = await post(urls[1]!, 'main');
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    expect(r.headers.get('x-anima-route')).toContain('pri;skipped=breaker_open');
    expect(pri.stats.requests).toBe(0);
    pri.setFault(null);
  });

  it('a key disabled in the database is refused by both processes after the invalidation event', async () => {
    await setKeyEnabled(dbh.db, keyId, false);
    const pub = new Redis(REDIS_URL);
    await pub.publish(prefix + 'config', JSON.stringify({ what: 'api_key', id: keyId }));
    pub.disconnect();
    for (const u of urls) await waitFor(async () => (await post(u, 'main')).status === 403, 2_000, 50);
  });
});
