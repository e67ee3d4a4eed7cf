/**
 * Redis goes away under a running gateway (its own redis-server on a spare port, so other suites are
 * untouched): protective limits fall back to this instance's share and are counted; a cost budget fails
 * closed with 503; readiness says DEGRADED; when Redis returns, admission goes back to it by itself.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import type { RedisCoordinator } from '../../src/coord/redis.js';
import {
  type TestDatabase,
  createTestDatabase,
  freePort,
  openTestDb,
  startRedisServer,
  startTestGateway,
  waitFor,
} from '../helpers.js';

let tdb: TestDatabase;
let G: Awaited<ReturnType<typeof startTestGateway>>;
let up: FakeUpstream;
let redis: ChildProcess | null = null;
let port = 0;
let sk: string;
let costSk: string;

async function startRedis(): Promise<void> {
  redis = await startRedisServer(port, ['--save', '', '--appendonly', 'no']);
}
const chat = (key: string) =>
  fetch(G.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'hi' }] }),
  });
const degradedCount = async () =>
  (await G.metrics.degradedAdmissions.get()).values.reduce((a, v) => a + v.value, 0);

beforeAll(async () => {
  port = await freePort();
  await startRedis();
  tdb = await createTestDatabase();
  up = await startFakeOpenAI({ name: 'rd' });
  const dbh = await openTestDb(tdb.url);
  await insertChannel(dbh.db, { code: 'c', provider: 'openai', baseUrl: up.url + '/v1', credential: 'k' });
  await insertAlias(dbh.db, { name: 'main', tiers: [[{ channel: 'c', model: 'm' }]] });
  const app = await insertApp(dbh.db, 'rd');
  const k1 = await insertKey(dbh.db, app);
  const k2 = await insertKey(dbh.db, app);
  sk = k1.sk;
  costSk = k2.sk;
  await dbh.db.insertInto('quota').values({ scope: 'key', scope_id: k1.id, max_concurrency: 4 }).execute();
  await dbh.db
    .insertInto('quota')
    .values({ scope: 'key', scope_id: k2.id, max_concurrency: 4, cost_per_day: 1_000_000 })
    .execute();
  await dbh.close();
  G = await startTestGateway({
    databaseUrl: tdb.url,
    redisUrl: `redis://127.0.0.1:${port}`,
    instanceCount: 2,
  });
}, 60_000);

afterAll(async () => {
  await G?.close();
  redis?.kill('SIGKILL');
  await up?.close();
  await tdb?.drop();
});

describe('Redis down', () => {
  it("serves on this instance's share of each limit, fails cost budgets closed, reports DEGRADED, heals", async () => {
    expect((await chat(sk)).status).toBe(200);
    expect(await degradedCount()).toBe(0);
    redis!.kill('SIGKILL');
    // Both of the gateway's connections (commands, and the hot path's pipeline) have seen Redis go.
    const coord = G.coord as RedisCoordinator;
    const hotPath = (coord.tick as unknown as { conn: { isReady(): boolean } }).conn;
    await waitFor(() => !coord.isReady() && !hotPath.isReady(), 5_000, 5);
    up.setFault({ latencyMs: 400 });
    const t0 = Date.now();
    const res = await Promise.all(Array.from({ length: 6 }, () => chat(sk)));
    const statuses = res.map((r) => r.status).sort();
    console.log(
      `redis down: 6 parallel requests -> ${statuses.join(',')} in ${Date.now() - t0} ms (limit 4, this instance's share 2)`,
    );
    expect(statuses.filter((s) => s === 200)).toHaveLength(2);
    expect(statuses.filter((s) => s === 429)).toHaveLength(4);
    expect(Date.now() - t0).toBeLessThan(2_000); // no hanging on a dead Redis
    expect(await degradedCount()).toBe(6);
    const cost = await chat(costSk);
    expect(cost.status).toBe(503);
    expect(((await cost.json()) as { error: { code: string } }).error.code).toBe('service_unavailable');
    const ready = (await (await fetch(G.url + '/actuator/health/readiness')).json()) as {
      status: string;
      components: { coordination: { status: string } };
    };
    expect(ready.status).toBe('DEGRADED');
    expect(ready.components.coordination.status).toBe('DOWN');
    up.setFault(null);

    await startRedis();
    await waitFor(async () => (await chat(costSk)).status === 200, 10_000, 200);
    const before = await degradedCount();
    expect((await chat(sk)).status).toBe(200);
    expect(await degradedCount()).toBe(before); // admitted by Redis again
  }, 30_000);
});
