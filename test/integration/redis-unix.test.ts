/**
 * REDIS_URL naming a unix socket: a redis-server of the test's own that listens on a socket only (no TCP
 * port), so a client that fell back to a default address would land on the shared Redis at
 * 127.0.0.1:6379 instead. Both clients (ioredis and the hot path's RespConnection) reach the socket, in the
 * database the URL names, and a governed request is admitted and settled through it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { RedisCoordinator } from '../../src/coord/redis.js';
import {
  REDIS_URL,
  type TestDatabase,
  assertServicesAllowed,
  createTestDatabase,
  openTestDb,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

let dir: string;
let sock: string;
let server: ChildProcess;
let tdb: TestDatabase;
let up: FakeUpstream;
let sk: string;

/** redis-cli on the test's socket (database `db`), its output trimmed. */
const cli = (db: number, ...args: string[]) =>
  spawnSync('redis-cli', ['-s', sock, '-n', String(db), ...args], { encoding: 'utf8' }).stdout.trim();
/** Commands the test's server has run, by name (INFO commandstats). */
const calls = (name: string) =>
  Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(cli(0, 'INFO', 'commandstats'))?.[1] ?? 0);

beforeAll(async () => {
  assertServicesAllowed('redis-server on a unix socket');
  dir = mkdtempSync(join(tmpdir(), 'anima-redis-unix-'));
  sock = join(dir, 'redis.sock');
  server = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--unixsocket',
      sock,
      '--unixsocketperm',
      '700',
      '--save',
      '',
      '--appendonly',
      'no',
      '--daemonize',
      'no',
    ],
    { stdio: 'ignore' },
  );
  await waitFor(
    () =>
      new Promise((res) => {
        const s = connect(sock, () => {
          s.destroy();
          res(true);
        });
        s.on('error', () => res(false));
      }),
    10_000,
    50,
  );
  tdb = await createTestDatabase();
  up = await startFakeOpenAI({ name: 'unix' });
  const dbh = await openTestDb(tdb.url);
  await insertChannel(dbh.db, { code: 'c', provider: 'openai', baseUrl: up.url + '/v1', credential: 'k' });
  await insertAlias(dbh.db, { name: 'main', tiers: [[{ channel: 'c', model: 'm' }]] });
  const app = await insertApp(dbh.db, 'unix');
  const k = await insertKey(dbh.db, app);
  sk = k.sk;
  // A limit, so the admission runs its script in Redis.
  await dbh.db.insertInto('quota').values({ scope: 'key', scope_id: k.id, max_concurrency: 4 }).execute();
  await dbh.close();
}, 60_000);

afterAll(async () => {
  server?.kill('SIGKILL');
  await up?.close();
  await tdb?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('REDIS_URL on a unix socket', () => {
  it('both connections reach the socket, in the database the URL names', async () => {
    const prefix = testRedisPrefix();
    const coord = new RedisCoordinator({ url: `unix://${sock}?db=3`, prefix });
    try {
      await coord.ready(5_000);
      expect(await coord.ping()).toBe(true);
      await coord.setValue('probe', 'v', 60_000);
      expect(cli(3, 'GET', `${prefix}probe`)).toBe('v');
      // The hot path's own connection: a script call goes out on it and its answer comes back.
      const evalshaBefore = calls('evalsha');
      coord.tick.define('unixIncr', `return redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))`, 1);
      const results = await Promise.all([
        coord.tick.call<number>('unixIncr', [`${prefix}n`, 2]),
        coord.tick.call<number>('unixIncr', [`${prefix}n`, 3]),
      ]);
      expect(results).toEqual([2, 5]);
      expect(cli(3, 'GET', `${prefix}n`)).toBe('5');
      expect(calls('evalsha')).toBeGreaterThan(evalshaBefore);
      // Every client on the server came through the socket, and sits in db 3 (redis-cli itself is in db 0).
      const clients = cli(0, 'CLIENT', 'LIST')
        .split('\n')
        .filter((l) => !/ cmd=client\|list /.test(l));
      expect(clients.length).toBeGreaterThanOrEqual(2);
      for (const c of clients) expect(c).toMatch(/ db=3 /);
    } finally {
      await coord.close();
    }
  });

  it('a gateway admits and settles through it, and nothing of its state reaches the default Redis', async () => {
    const prefix = testRedisPrefix();
    const G = await startTestGateway({
      databaseUrl: tdb.url,
      redisUrl: `redis+unix://${sock}`,
      redisPrefix: prefix,
    });
    const shared = new Redis(REDIS_URL);
    try {
      const evalshaBefore = calls('evalsha');
      const chat = () =>
        fetch(G.url + '/v1/chat/completions', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
          body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'hi' }] }),
        });
      for (let i = 0; i < 3; i++) expect((await chat()).status).toBe(200);
      // Admitted by Redis, not by the local fallback.
      expect((await G.metrics.degradedAdmissions.get()).values.reduce((a, v) => a + v.value, 0)).toBe(0);
      // Admissions and settlements ran as scripts on the socket's server.
      await waitFor(() => calls('evalsha') >= evalshaBefore + 6);
      expect(cli(0, '--scan', '--pattern', `${prefix}*`).split('\n').filter(Boolean).length).toBeGreaterThan(
        0,
      );
      expect(await shared.keys(`${prefix}*`)).toEqual([]);
      const ready = (await (await fetch(G.url + '/actuator/health/readiness')).json()) as { status: string };
      expect(ready.status).toBe('UP');
    } finally {
      shared.disconnect();
      await G.close();
    }
  });
});
