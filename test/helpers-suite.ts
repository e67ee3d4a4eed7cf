/**
 * Setup shared by the integration files that run gateways on real PostgreSQL and Redis: the services a
 * file owns (database, Redis prefix, gateways, a pool) and the apps, aliases and ledger reads their tests
 * build on. Each file keeps only its own channels, aliases and prices.
 */
import type OpenAI from 'openai';
import type pg from 'pg';
import { expect } from 'vitest';
import type { FakeUpstream } from '../fakes/common.js';
import { startFakeOpenAI } from '../fakes/index.js';
import type { ScopeLimits } from '../src/quota/types.js';
import {
  REDIS_URL,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testPool,
  testRedisPrefix,
  waitFor,
} from './helpers.js';

export type TestGateway = Awaited<ReturnType<typeof startTestGateway>>;
export type AdminApi = ReturnType<typeof adminApi>;

/** Token prices in micro-units per million tokens: sale 2/4 micro per input/output token, cost 1/2. */
export const TOKEN_PRICES = {
  sale_input_per_mtok: 2_000_000,
  sale_output_per_mtok: 4_000_000,
  cost_input_per_mtok: 1_000_000,
  cost_output_per_mtok: 2_000_000,
};

/** A breaker that stays closed through a file's deliberate failures: 20 calls at 90 % before it opens. */
export const LENIENT_BREAKER = { minCalls: 20, failureRate: 0.9, openMs: 60_000, windowMs: 60_000 };

/**
 * One test file's services: a fresh database and Redis prefix, the gateways started on them and the
 * file's pool, all released by `close()` (gateways first, the database last).
 */
export class ServiceSuite {
  private readonly gateways: TestGateway[] = [];
  private readonly pools: pg.Pool[] = [];
  private constructor(
    readonly tdb: TestDatabase,
    readonly prefix: string,
  ) {}

  static async open(): Promise<ServiceSuite> {
    return new ServiceSuite(await createTestDatabase(), testRedisPrefix());
  }

  /** The settings that put a gateway on this file's database and Redis prefix. */
  get settings(): { databaseUrl: string; redisUrl: string; redisPrefix: string } {
    return { databaseUrl: this.tdb.url, redisUrl: REDIS_URL, redisPrefix: this.prefix };
  }

  /** A gateway on the file's database and Redis, closed by `close()`. */
  async gateway(): Promise<TestGateway> {
    const g = await startTestGateway(this.settings);
    this.gateways.push(g);
    return g;
  }

  /** A pool of 2 on the file's database for its own queries, ended by `close()`. */
  pool(): pg.Pool {
    const p = testPool(this.tdb.url, 2);
    this.pools.push(p);
    return p;
  }

  /** Closes the gateways, the pools and `others` (the fakes), then removes the Redis keys and the database. */
  async close(...others: Array<{ close(): Promise<unknown> } | undefined>): Promise<void> {
    for (const g of this.gateways) await g.close();
    for (const p of this.pools) await p.end();
    await Promise.all(others.map((o) => o?.close()));
    await cleanupRedis(this.prefix);
    await this.tdb.drop();
  }
}

/** A new app (`app` is its body: name, billing) with one key named `keyName`. */
export async function newAppKey(
  admin: AdminApi,
  app: Record<string, unknown>,
  keyName = 'k',
): Promise<{ app: string; sk: string; keyId: string }> {
  const id = (await admin('POST', '/apps', app)).id as string;
  const k = await admin('POST', `/apps/${id}/keys`, { name: keyName });
  return { app: id, sk: k.sk as string, keyId: k.key.id as string };
}

/** An alias whose chain has one tier per [channel, model], tried in that order. */
export function chainAlias(
  admin: AdminApi,
  name: string,
  ...tiers: Array<[string, string]>
): Promise<unknown> {
  return admin('POST', '/aliases', {
    name,
    chain: tiers.map(([channel, model]) => ({ targets: [{ channel, model }] })),
  });
}

/** An OpenAI channel `code` on the fake `upstream` (its /v1), credential `k`, with `settings` if given. */
export function openaiChannel(
  admin: AdminApi,
  code: string,
  upstream: { url: string },
  settings?: Record<string, unknown>,
): Promise<unknown> {
  return admin('POST', '/channels', {
    code,
    provider: 'openai',
    base_url: upstream.url + '/v1',
    credential: 'k',
    ...(settings ? { settings } : {}),
  });
}

/** Closes the breakers and clears the health state of `channels`, so one test's faults stay its own. */
export async function resetChannels(g: TestGateway, channels: readonly string[]): Promise<void> {
  for (const ch of channels) {
    await g.breakers.reset(ch);
    await g.health.reset(ch);
  }
}

/** Integer division rounded up, as prices are rounded to a micro-unit. */
export const ceilDiv = (a: bigint, b: bigint): bigint => (a + b - 1n) / b;

/**
 * One chat of `model` on `sk` (max_tokens 40) that must answer 200, and what its journal booked once the
 * writer has flushed: the tokens, the sale to `app`, the revenue, the cost and payable of `channel`, and
 * the total debits and credits.
 */
export async function chatBooked(
  g: TestGateway,
  db: pg.Pool,
  sk: string,
  model: string,
  app: string,
  channel: string,
) {
  const r = await fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'price me' }], max_tokens: 40 }),
  });
  expect(r.status).toBe(200);
  const body = (await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
  await g.billing!.writer.flush();
  const { rows } = await db.query<{ a: string; d: string; c: string }>(
    `SELECT a.code AS a, e.debit::text AS d, e.credit::text AS c FROM ledger_journal j
       JOIN ledger_posting e ON e.journal_id = j.id JOIN ledger_account a ON a.id = e.account_id
      WHERE j.request_id = $1`,
    [r.headers.get('x-request-id')],
  );
  // Debits minus credits on one account.
  const amount = (code: string) =>
    rows.filter((e) => e.a === code).reduce((s, e) => s + BigInt(e.d) - BigInt(e.c), 0n);
  return {
    i: BigInt(body.usage.prompt_tokens),
    o: BigInt(body.usage.completion_tokens),
    sale: amount(`receivable:${app}`),
    revenue: -amount('revenue'),
    cost: amount(`cogs:${channel}`),
    payable: -amount(`payable:${channel}`),
    debits: rows.reduce((s, e) => s + BigInt(e.d), 0n),
    credits: rows.reduce((s, e) => s + BigInt(e.c), 0n),
  };
}

/**
 * A gateway that prices from the catalogue: one fake OpenAI upstream (named `fakeName`) as channel `oai`,
 * the alias `mini` on gpt-4o-mini with no price row, and the suite's pool.
 */
export async function startCatalogueGateway(S: ServiceSuite, fakeName: string) {
  const up = await startFakeOpenAI({ name: fakeName });
  const G = await S.gateway();
  const db = S.pool();
  const admin = adminApi(() => G.url);
  await openaiChannel(admin, 'oai', up);
  await chainAlias(admin, 'mini', ['oai', 'gpt-4o-mini']);
  return { up, G, db };
}

/**
 * The quota files' pair: gateways A and B on the suite's services, one fake OpenAI upstream as channel
 * `q` under the alias `main` (model `m`), and an app named `appName` for the file's keys.
 */
export async function startQuotaPair(S: ServiceSuite, appName: string) {
  const up = await startFakeOpenAI({ name: 'q' });
  const A = await S.gateway();
  const B = await S.gateway();
  const admin = adminApi(() => A.url);
  await openaiChannel(admin, 'q', up);
  await chainAlias(admin, 'main', ['q', 'm']);
  const appId = (await admin('POST', '/apps', { name: appName })).id as string;
  return { up, A, B, appId };
}

/**
 * A fresh key of `appId` (named `name`, with `key`'s fields) and its own `quota`, once every gateway in
 * `gws` sees the quota.
 */
export async function keyWithQuota(
  admin: AdminApi,
  gws: TestGateway[],
  appId: string,
  name: string,
  quota: Record<string, unknown>,
  key: Record<string, unknown> = {},
): Promise<{ sk: string; id: string }> {
  const k = await admin('POST', `/apps/${appId}/keys`, { name, ...key });
  await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, ...quota });
  await waitFor(() => gws.every((g) => !!g.config.quota('key', k.key.id)), 2_000, 5);
  return { sk: k.sk, id: k.key.id };
}

/** A key's limits as the quota engine takes them: none set but `over`. */
export const keyScope = (id: string, over: Partial<ScopeLimits> = {}): ScopeLimits => ({
  scope: 'key',
  id,
  maxConcurrency: 0,
  qps: 0,
  qpsBurst: 0,
  tokensPerMinute: 0,
  tokensPerDay: 0,
  costPerDay: 0,
  costPerMonth: 0,
  ...over,
});

/**
 * Fallback both ways between a provider's channel and an OpenAI one: `status` once from the provider
 * (alias `there`: provider, then OpenAI) is served by OpenAI and is one breaker failure of `channel`; a
 * 500 once from OpenAI (alias `back`: OpenAI, then provider) is served by the provider, answered under
 * the alias and billed to `channel`.
 */
export async function expectFallbackBothWays(o: {
  g: TestGateway;
  openai: () => OpenAI;
  journalOf: (requestId: string | null) => Promise<{ channel: string }>;
  /** The fakes with the names they answer with ("Hello from <name>: ..."). */
  provider: { fake: FakeUpstream; name: string };
  oa: { fake: FakeUpstream; name: string };
  status: number;
  channel: string;
  there: string;
  back: string;
}): Promise<void> {
  o.provider.fake.setFault({ status: o.status, times: 1 });
  const a = await o.openai().chat.completions.create({
    model: o.there,
    messages: [{ role: 'user', content: 'fall back' }],
  });
  expect(a.choices[0]!.message.content).toBe(`Hello from ${o.oa.name}: fall back`);
  expect(o.g.breakers.windowCounts(o.channel).failures).toBe(1);

  o.oa.fake.setFault({ status: 500, times: 1 });
  const { data: b, response } = await o
    .openai()
    .chat.completions.create({ model: o.back, messages: [{ role: 'user', content: 'and back' }] })
    .withResponse();
  expect(b.choices[0]!.message.content).toBe(`Hello from ${o.provider.name}: and back`);
  expect(b.model).toBe(o.back);
  expect((await o.journalOf(response.headers.get('x-request-id'))).channel).toBe(o.channel);
}
