/**
 * Redis comes back empty under two running gateways (simulated on the shared server by deleting every key
 * of this suite's prefix, the epoch key included, as a restart without persistence or FLUSHALL would):
 * breakers keep opening and manual opens keep propagating; a consumer group that vanished is made again;
 * records settled into Redis and lost before their journals were written are sent again by the instance
 * that settled them and journaled exactly once; a journal writer that stops is reported, not silent.
 * The same faults against real redis-server processes (restart, FLUSHALL, kill -9, failover) are in
 * test/chaos/redis-loss.test.ts and bench/chaos-redis.ts.
 */
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { RedisCoordinator } from '../../src/coord/redis.js';
import {
  REDIS_URL,
  TcpProxy,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testPool,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let prefix: string;
let A: TGateway;
let B: TGateway;
let good: FakeUpstream;
let bad: FakeUpstream;
let sk: string;
let db: pg.Pool;
const admin = adminApi(() => A.url);
const adminB = adminApi(() => B.url);

const BREAKER = {
  minCalls: 3,
  failureRate: 0.5,
  openMs: 60_000,
  halfOpenProbes: 1,
  probeTimeoutMs: 400,
  windowMs: 10_000,
};
const PRICE = {
  sale_input_per_mtok: 2_000_000,
  sale_output_per_mtok: 4_000_000,
  cost_input_per_mtok: 1_000_000,
  cost_output_per_mtok: 2_000_000,
};

function chat(g: TGateway, model: string) {
  return fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 20 }),
  });
}

/** Redis forgets everything of this deployment; both instances look (as their 1 s check would). */
async function forget(): Promise<void> {
  await cleanupRedis(prefix);
  await Promise.all([A, B].map((g) => (g.coord as RedisCoordinator).checkDataset()));
}

const state = async (g: TGateway, ch: string) =>
  ((await adminApi(() => g.url)('GET', '/circuits')).data as Array<{ channel: string; state: string }>).find(
    (c) => c.channel === ch,
  )?.state;

async function journalCount(requestIds: string[]): Promise<number> {
  const r = await db.query('SELECT count(*)::int AS n FROM ledger_journal WHERE request_id = ANY($1)', [
    requestIds,
  ]);
  return r.rows[0].n as number;
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  good = await startFakeOpenAI({ name: 'good' });
  bad = await startFakeOpenAI({ name: 'bad' });
  const s = { databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix, billingStuckAfterMs: 1_500 };
  A = await startTestGateway(s);
  B = await startTestGateway(s);
  db = testPool(tdb.url, 2);
  const settings = { breaker: BREAKER };
  await admin('POST', '/channels', {
    code: 'good',
    provider: 'openai',
    base_url: good.url + '/v1',
    credential: 'k',
    settings,
  });
  await admin('POST', '/channels', {
    code: 'bad',
    provider: 'openai',
    base_url: bad.url + '/v1',
    credential: 'k',
    settings,
  });
  await admin('POST', '/aliases', { name: 'main', chain: [{ targets: [{ channel: 'good', model: 'm' }] }] });
  await admin('POST', '/aliases', { name: 'flaky', chain: [{ targets: [{ channel: 'bad', model: 'm' }] }] });
  await admin('POST', '/prices', { alias: 'main', ...PRICE });
  const app = (await admin('POST', '/apps', { name: 'forgets', billing: 'postpaid' })).id as string;
  sk = (await admin('POST', `/apps/${app}/keys`, { name: 'k' })).sk as string;
  await waitFor(() => [A, B].every((g) => g.config.price('main', null) && g.config.alias('flaky')), 3_000, 5);
  bad.setFault({ status: 500 });
}, 60_000);

afterAll(async () => {
  await A?.close();
  await B?.close();
  await db?.end();
  await good?.close();
  await bad?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('Redis comes back empty', () => {
  it('a failing channel still trips its breaker within minCalls, and the open reaches the other instance', async () => {
    // A history first, so both instances hold generations Redis then forgets.
    for (let i = 0; i < BREAKER.minCalls; i++)
      expect((await chat(A, 'flaky')).status).toBeGreaterThanOrEqual(500);
    await waitFor(async () => (await state(B, 'bad')) === 'open', 2_000);
    await admin('POST', '/circuits/bad/reset');
    await waitFor(async () => (await state(B, 'bad')) === 'closed', 2_000);

    await forget();
    expect(A.metrics.redisDataLoss.get).toBeDefined();
    const before = bad.stats.requests;
    for (let i = 0; i < BREAKER.minCalls; i++) await chat(A, 'flaky');
    expect(bad.stats.requests - before).toBe(BREAKER.minCalls);
    expect(await state(A, 'bad')).toBe('open');
    const ms = await waitFor(async () => (await state(B, 'bad')) === 'open', 1_000);
    console.log(`after Redis forgot: breaker open on A after ${BREAKER.minCalls} calls, on B ${ms} ms later`);
    // Further calls on either instance don't reach the failing upstream.
    const n = bad.stats.requests;
    await chat(B, 'flaky');
    await chat(A, 'flaky');
    expect(bad.stats.requests).toBe(n);
  });

  it('a manual open answers 2xx and reaches the other instance within 1 s after Redis forgot', async () => {
    await admin('POST', '/circuits/good/reset');
    await forget();
    const opened = await admin('POST', '/circuits/good/open', { reason: 'chaos drill' });
    expect(opened.state).toBe('forced_open');
    const ms = await waitFor(async () => (await state(B, 'good')) === 'forced_open', 1_000);
    console.log(`manual open after Redis forgot: on B within ${ms} ms`);
    await adminB('POST', '/circuits/good/close');
    await waitFor(async () => (await state(A, 'good')) === 'closed', 1_000);
    expect((await chat(A, 'main')).status).toBe(200);
  });

  it('a consumer group that vanished is made again and the records behind it are journaled', async () => {
    const r = new Redis(REDIS_URL);
    try {
      // Only the groups go (no epoch change, so nothing else notices): the writer must see NOGROUP itself.
      for (let s = 0; s < 8; s++) await r.xgroup('DESTROY', `${prefix}{b:${s}}:jr`, 'writers').catch(() => 0);
    } finally {
      r.disconnect();
    }
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await chat(i % 2 ? A : B, 'main');
      expect(res.status).toBe(200);
      ids.push(res.headers.get('x-request-id')!);
    }
    await waitFor(async () => (await journalCount(ids)) === ids.length, 10_000, 50);
    const st = await admin('GET', '/billing/status');
    expect(st.stuck).toBe(false);
  });

  it('records lost with Redis before their journals were written are sent again, journaled exactly once', async () => {
    // Journaled already (some perhaps not yet confirmed by the other instance's sweep): resending them
    // must not journal them twice.
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await chat(i % 2 ? A : B, 'main')).headers.get('x-request-id')!);
    await waitFor(async () => (await journalCount(ids)) === ids.length, 10_000, 50);

    // The writers stop: what is settled now lives only in Redis (and in the memory of who settled it).
    await A.billing!.writer.stop();
    await B.billing!.writer.stop();
    const lost: string[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await chat(i % 2 ? A : B, 'main');
      expect(res.status).toBe(200);
      lost.push(res.headers.get('x-request-id')!);
    }
    const st0 = await admin('GET', '/billing/status');
    expect(st0.queued).toBeGreaterThan(0);

    // Nothing is written, so the records age: billing says stuck, readiness DEGRADED, the metric shows it.
    await waitFor(async () => (await admin('GET', '/billing/status')).stuck === true, 5_000, 50);
    const ready = (await (await fetch(A.url + '/actuator/health/readiness')).json()) as {
      status: string;
      components: Record<string, { status: string }>;
    };
    expect(ready.status).toBe('DEGRADED');
    expect(ready.components.billing!.status).toBe('STUCK');
    await A.billing!.sweep();
    expect((await A.metrics.billingOldestUnjournaled.get()).values[0]!.value).toBeGreaterThan(1);
    const stuckLogs = A.logs
      .records()
      .filter((l) => String(l.msg).startsWith('billing: journals are not being written'));
    expect(stuckLogs).toHaveLength(1);
    expect(stuckLogs[0]!.level).toBe(50);

    await forget();
    expect(await await A.billing!.backend.backlog()).toBeGreaterThan(0); // sent again
    A.billing!.writer.start();
    B.billing!.writer.start();
    await waitFor(async () => (await journalCount(lost)) === lost.length, 15_000, 50);
    expect(await journalCount(ids)).toBe(ids.length);
    const dup = await db.query(
      'SELECT request_id FROM ledger_journal WHERE request_id = ANY($1) GROUP BY request_id HAVING count(*) > 1',
      [[...ids, ...lost]],
    );
    expect(dup.rows).toEqual([]);
    expect((await admin('GET', '/billing/trial-balance')).balanced).toBe(true);
    const resent = A.billing!.resent + B.billing!.resent;
    expect(resent).toBeGreaterThanOrEqual(lost.length);
    await waitFor(async () => (await admin('GET', '/billing/status')).stuck === false, 10_000, 50);
    await waitFor(
      () =>
        A.logs.records().some((l) => String(l.msg).startsWith('billing: journals are being written again')),
      5_000,
    );
  });
});

describe('a loss nobody noticed', () => {
  it('a record Redis dropped without the epoch changing is sent again once overdue, and journaled once', async () => {
    await A.billing!.writer.stop();
    await B.billing!.writer.stop();
    const res = await chat(A, 'main');
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id')!;
    // Only the billing streams and markers go (one shard of a Cluster failing over, an eviction): the
    // epoch key stays, so no data-loss signal fires.
    const r = new Redis(REDIS_URL);
    try {
      const keys = [...(await r.keys(`${prefix}{b:*}:j*`)), ...(await r.keys(`${prefix}{b:*}:done:*`))];
      if (keys.length) await r.del(...keys);
    } finally {
      r.disconnect();
    }
    const losses = (A.coord as RedisCoordinator).dataLosses;
    A.billing!.writer.start();
    B.billing!.writer.start();
    await waitFor(async () => (await journalCount([id])) === 1, 15_000, 50);
    expect((A.coord as RedisCoordinator).dataLosses).toBe(losses);
    expect(A.billing!.resent).toBeGreaterThan(0);
  });
});

describe('breaker store', () => {
  it('a write over a key Redis forgot wins even before anyone noticed the loss (gen above what is stored)', async () => {
    await cleanupRedis(prefix); // no checkDataset: nobody has rebuilt anything yet
    const next = {
      state: 'open' as const,
      gen: 8,
      since: Date.now(),
      openUntil: Date.now() + 1_000,
      reason: 't',
    };
    const r = await A.coord.breakers.cas('lonely', 7, next);
    expect(r.ok).toBe(true);
    // ...while a stale writer (gen below the stored one) still loses, as a compare-and-swap must.
    const stale = await B.coord.breakers.cas('lonely', 3, { ...next, gen: 4 });
    expect(stale.ok).toBe(false);
    expect(stale.current.gen).toBe(8);
  });
});

describe('Redis unreachable for good', () => {
  it('records it held unjournaled are written to the database directly, once, and a Redis that returns adds nothing', async () => {
    const url = new URL(REDIS_URL);
    const proxy = await new TcpProxy({ host: url.hostname, port: Number(url.port || 6379) }).start();
    const p2 = testRedisPrefix();
    const C = await startTestGateway({
      databaseUrl: tdb.url,
      redisUrl: `redis://127.0.0.1:${proxy.port}`,
      redisPrefix: p2,
    });
    try {
      await waitFor(() => C.config.price('main', null), 3_000, 5);
      await C.billing!.writer.stop();
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) {
        const res = await chat(C, 'main');
        expect(res.status).toBe(200);
        ids.push(res.headers.get('x-request-id')!);
      }
      C.billing!.writer.start();
      // Settled into Redis; before the writer reads them, Redis goes away (and stays away).
      proxy.down();
      await waitFor(async () => (await journalCount(ids)) === ids.length, 15_000, 50);
      expect(
        C.logs.records().some((l) => String(l.msg).includes('settled records it held are written directly')),
      ).toBe(true);
      // Redis returns with the same records still queued: their journals exist, so nothing is written twice.
      proxy.up();
      await waitFor(async () => (await C.billing!.backend.backlog().catch(() => -1)) === 0, 15_000, 50);
      expect(await journalCount(ids)).toBe(ids.length);
      expect((await adminApi(() => C.url)('GET', '/billing/trial-balance')).balanced).toBe(true);
    } finally {
      await C.close();
      await proxy.close();
      await cleanupRedis(p2);
    }
  });
});
