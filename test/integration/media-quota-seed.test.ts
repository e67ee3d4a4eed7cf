/**
 * A key's media spend survives Redis forgetting: the day/month cost windows are seeded again from the
 * ledger's sale journals (src/quota/seed.ts), media jobs' included (booked by the media worker with the
 * key's id, src/tasks/media.ts). As in quota-rebuild.test.ts, "Redis lost its data" is every key under
 * this file's prefix deleted, then the coordinator's check, which reports the loss.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeMediaUpstream, startFakeOpenAI } from '../../fakes/index.js';
import type { RedisCoordinator } from '../../src/coord/redis.js';
import { LedgerSeed } from '../../src/quota/seed.js';
import { type ScopeLimits, windowBounds } from '../../src/quota/types.js';
import {
  REDIS_URL,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;

/** One image sells for 40,000: a day's budget of 100,000 is two images and change. */
const IMAGE = 40_000;
const LIMIT = 100_000;

let tdb: TestDatabase;
let prefix: string;
let G: TGateway;
let up: FakeMediaUpstream;
let appId: string;
const admin = adminApi(() => G.url);

const image = (sk: string, prompt: string) =>
  fetch(G.url + '/v1/images/generations', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model: 'img', prompt }),
  });

/** The key's sales in the ledger: count and sale micro-units. */
async function ledgerOf(keyId: string): Promise<{ n: number; sale: number }> {
  await G.billing!.writer.flush();
  const r = await sql<{ n: string; sale: string }>`
    SELECT count(*)::text AS n, coalesce(sum((usage->>'sale_micros')::bigint), 0)::text AS sale
    FROM ledger_journal WHERE kind = 'sale' AND usage->>'key_id' = ${keyId}`.execute(G.dbh.db);
  return { n: Number(r.rows[0]!.n), sale: Number(r.rows[0]!.sale) };
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  up = await startFakeOpenAI({ name: 'seed-img' });
  G = await startTestGateway({ databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix });
  await admin('POST', '/channels', {
    code: 'oai',
    provider: 'openai',
    base_url: up.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', {
    name: 'img',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-image-1' }] }],
  });
  await admin('POST', '/prices', { alias: 'img', sale_per_image: IMAGE, cost_per_image: 20_000 });
  appId = (await admin('POST', '/apps', { name: 'media-seed' })).id as string;
  await waitFor(() => !!G.config.price('img', null) && !!G.config.app(appId), 3_000, 5);
}, 60_000);

afterAll(async () => {
  await G?.close();
  await up?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('media spend in the quota seed', () => {
  it("a key's image spend survives Redis losing everything: the next image past the day's budget is refused", async () => {
    const k = await admin('POST', `/apps/${appId}/keys`, { name: 'm' });
    const id = k.key.id as string;
    await admin('POST', '/quotas', { scope: 'key', scope_id: id, cost_per_day: LIMIT });
    await waitFor(() => !!G.config.quota('key', id), 3_000, 5);
    const scope: ScopeLimits = {
      scope: 'key',
      id,
      maxConcurrency: 0,
      qps: 0,
      qpsBurst: 0,
      tokensPerMinute: 0,
      tokensPerDay: 0,
      costPerDay: LIMIT,
      costPerMonth: 0,
    };
    for (const p of ['one', 'two']) expect((await image(k.sk, p)).status).toBe(200);
    await waitFor(async () => (await ledgerOf(id)).n === 2, 10_000, 20);
    expect((await ledgerOf(id)).sale).toBe(2 * IMAGE);
    await waitFor(async () => (await G.quota.usage(appId, scope)).costDay === 2 * IMAGE, 5_000, 10);

    // What the seed reads for this key: the two media sales (no tokens: a media job has none).
    const seed = await new LedgerSeed(G.dbh.db).figures(
      'key',
      id,
      windowBounds(Math.floor(Date.now() / 86_400_000)),
    );
    expect(seed).toEqual({ tokensDay: 0, costDay: 2 * IMAGE, costMonth: 2 * IMAGE });

    // Redis forgets.
    const coord = G.coord as RedisCoordinator;
    const losses = coord.dataLosses;
    await cleanupRedis(prefix);
    await coord.checkDataset();
    expect(coord.dataLosses).toBe(losses + 1);

    // A third image would take the day to 120,000: refused, before any upstream call.
    up.resetStats();
    const r = await image(k.sk, 'three');
    expect(r.status).toBe(429);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('budget_exceeded');
    expect(up.stats.requests).toBe(0);
    expect((await G.quota.usage(appId, scope)).costDay).toBe(2 * IMAGE);
    expect((await ledgerOf(id)).n).toBe(2);
  }, 30_000);
});
