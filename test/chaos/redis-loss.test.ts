/**
 * "Redis is a cache, not a record": a real redis-server WITHOUT persistence (--save "" --appendonly no)
 * comes back empty under two running gateway instances and a bounded load, and no gateway is restarted.
 * Two events: SHUTDOWN NOSAVE + restart on the same port, and FLUSHALL. After each, with the load stopped:
 *   (a) the failing channel 'bad' opens on every instance within its minCalls calls (counted at the fake);
 *   (b) POST /circuits/bad/open on A answers 2xx and B reports it within 1 s (B's admin API, polled);
 *   (c) every request answered 200 has its journal (x-request-id = ledger_journal.request_id) within 30 s,
 *       exactly once;
 *   (d) the trial balance is zero, without mismatches;
 *   (e) a key with a daily cost budget is not overspent across the event (see BUDGET for the exact bound).
 * Assertions are soft (each scenario reports every check) and printed with their figures ("[redis-loss]").
 * The long version, with real gateway processes, kill -9, AOF, failover and PostgreSQL outages, is
 * bench/chaos-redis.ts (`npm run chaos`).
 *
 *   npx vitest run test/chaos/redis-loss.test.ts      (also part of `npm test`)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeMediaUpstream } from '../../fakes/index.js';
import { RedisCoordinator } from '../../src/coord/redis.js';
import {
  ADMIN_TOKEN,
  type TestDatabase,
  adminApi,
  createTestDatabase,
  freePort,
  startTestGateway,
  testPool,
  testRedisPrefix,
  waitFor,
  startRedisServer,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;

/** The failing channel's breaker: it must open after at most MIN_CALLS calls on each instance. */
const MIN_CALLS = 5;
/**
 * The budget key: output tokens only are priced, 1,000 micros each; every request asks max_tokens 5, so
 * its admission reserves 5,000 and the fake's 4-word answer costs 4,000 (the reservation bounds the
 * sale). With a daily limit of 50,000 exactly 12 requests pass (11 x 4,000 + 5,000 <= 50,000), 48,000
 * spent, and the key is refused before the event. Its requests go ONE AT A TIME, so when Redis forgets,
 * at most one admitted budget request is in flight, whose spend a correct rebuild (from the ledger) may
 * not see yet: the bound asserted is sale <= LIMIT + ONE_REQUEST = 55,000 (one reservation's worth).
 * A window that restarts from zero lets another 12 through (96,000).
 */
const BUDGET = { limit: 50_000, maxTokens: 5, outputPerMtok: 1_000_000_000, oneRequest: 5_000 };
const RPS = 50;

let tdb: TestDatabase;
let db: pg.Pool;
let redisPort = 0;
let redisDir = '';
let redis: ChildProcess | null = null;
let A: TGateway;
let B: TGateway;
let one: FakeMediaUpstream;
let bad: FakeMediaUpstream;
let sk: string;
/** One budget app + key per scenario, so each scenario's spend is its own (journals carry the app id). */
const budgets: Record<string, { appId: string; keyId: string; sk: string }> = {};
const admin = adminApi(() => A.url);

async function startRedis(): Promise<void> {
  redis = await startRedisServer(redisPort, ['--dir', redisDir, '--save', '', '--appendonly', 'no']);
}

async function exited(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  await new Promise((r) => c.once('exit', r));
}

/** A short-lived client of our own server (no retries: a SHUTDOWN must not be resent). */
async function redisCall(...args: string[]): Promise<unknown> {
  const r = new Redis({
    port: redisPort,
    host: '127.0.0.1',
    lazyConnect: true,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
  });
  r.on('error', () => {});
  try {
    await r.connect();
    return await r.call(args[0]!, ...args.slice(1)).catch((e: unknown) => e);
  } finally {
    r.disconnect();
  }
}

const dataLosses = (g: TGateway) => (g.coord instanceof RedisCoordinator ? g.coord.dataLosses : -1);

type Phase = 'before' | 'during' | 'after';
interface Figures {
  sent: number;
  served: number;
  servedAfter: number;
  refused: Record<string, number>;
  rids: string[];
}
const emptyFigures = (): Figures => ({ sent: 0, served: 0, servedAfter: 0, refused: {}, rids: [] });
/** The first answer body seen for each refusal code (printed with the figures). */
const messages: Record<string, string> = {};

async function chat(
  url: string,
  key: string,
  body: Record<string, unknown>,
): Promise<{ status: number; code: string; rid: string | null; completion: number }> {
  try {
    const r = await fetch(url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'chaos' }], ...body }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await r.text();
    if (r.status === 200) {
      const completion = (JSON.parse(text) as { usage?: { completion_tokens?: number } }).usage
        ?.completion_tokens;
      return { status: 200, code: '200', rid: r.headers.get('x-request-id'), completion: completion ?? 0 };
    }
    let code = String(r.status);
    try {
      code = (JSON.parse(text) as { error: { code: string } }).error.code ?? code;
    } catch {
      /* not JSON */
    }
    messages[code] ??= text.slice(0, 300);
    return { status: r.status, code, rid: null, completion: 0 };
  } catch (e) {
    const code = (e as Error).name === 'TimeoutError' ? 'client_timeout' : 'connection_error';
    return { status: 0, code, rid: null, completion: 0 };
  }
}

/**
 * Two loads until stop(): the main key at RPS (open loop, alternating A and B), and the budget key one
 * request at a time every 100 ms. Each is bounded by `maxMs` as well. `phase()` tags each request.
 */
function startLoad(budgetSk: string, phase: () => Phase, maxMs = 30_000) {
  const main = emptyFigures();
  const budget = { ...emptyFigures(), saleMicros: 0 };
  let stopped = false;
  const t0 = Date.now();
  const inflight: Array<Promise<void>> = [];
  const mainLoop = (async () => {
    while (!stopped && Date.now() - t0 < maxMs) {
      const due = Math.floor(((Date.now() - t0) / 1000) * RPS);
      while (main.sent < due) {
        const url = (main.sent % 2 ? B : A).url;
        main.sent++;
        const p = phase();
        inflight.push(
          chat(url, sk, { model: 'main' }).then((r) => {
            if (r.status === 200 && r.rid) {
              main.served++;
              if (p === 'after') main.servedAfter++;
              main.rids.push(r.rid);
            } else main.refused[r.code] = (main.refused[r.code] ?? 0) + 1;
          }),
        );
      }
      await new Promise((r) => setTimeout(r, 5)); // the load's pacing
    }
  })();
  const budgetLoop = (async () => {
    for (let i = 0; !stopped && Date.now() - t0 < maxMs && i < maxMs / 100; i++) {
      const next = Date.now() + 100;
      budget.sent++;
      const p = phase();
      const r = await chat((i % 2 ? B : A).url, budgetSk, { model: 'budget', max_tokens: BUDGET.maxTokens });
      if (r.status === 200 && r.rid) {
        budget.served++;
        if (p === 'after') budget.servedAfter++;
        budget.rids.push(r.rid);
        budget.saleMicros += (r.completion * BUDGET.outputPerMtok) / 1_000_000;
      } else budget.refused[r.code] = (budget.refused[r.code] ?? 0) + 1;
      await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now()))); // the load's pacing
    }
  })();
  return {
    main,
    budget,
    async stop() {
      stopped = true;
      await Promise.all([mainLoop, budgetLoop]);
      await Promise.all(inflight);
    },
  };
}

/** (a): calls the failing channel through each instance not yet open, one call at a time, counting the fake's calls. */
async function tripBad(): Promise<{ opened: boolean; calls: [number, number]; ms: number }> {
  const gws = [A, B] as const;
  const calls: [number, number] = [0, 0];
  const t0 = Date.now();
  for (let round = 0; round < 3 * MIN_CALLS; round++) {
    let pending = false;
    for (let i = 0; i < 2; i++) {
      if (gws[i]!.breakers.state('bad').state === 'open') continue;
      pending = true;
      const before = bad.stats.requests;
      await chat(gws[i]!.url, sk, { model: 'flaky' });
      calls[i]! += bad.stats.requests - before;
    }
    if (!pending) break;
  }
  // The last trip reaches the other instance by pub/sub (or its next sync).
  const opened = await waitFor(() => gws.every((g) => g.breakers.state('bad').state === 'open'), 2_000, 10)
    .then(() => true)
    .catch(() => false);
  return { opened, calls, ms: Date.now() - t0 };
}

/** (b): forced open on A; how long until B's admin API says so (-1: not within 1 s). */
async function forceOpenPropagation(): Promise<{ status: number; seenOnBMs: number; body: string }> {
  const r = await fetch(`${A.url}/api/admin/v1/circuits/bad/open`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'redis-loss chaos' }),
  });
  const body = await r.text();
  const t0 = Date.now();
  const seen = await waitFor(
    async () =>
      (
        (await adminApi(() => B.url)('GET', '/circuits')).data as Array<{ channel: string; state: string }>
      ).find((c) => c.channel === 'bad')?.state === 'forced_open',
    1_000,
    20,
  )
    .then(() => Date.now() - t0)
    .catch(() => -1);
  return { status: r.status, seenOnBMs: seen, body: body.slice(0, 300) };
}

/** The breaker of 'bad' closed (with a generation > 0, as after any real incident) on both instances. */
async function resetBad(): Promise<void> {
  await admin('POST', '/circuits/bad/reset', { reason: 'redis-loss chaos baseline' });
  const gen = A.breakers.state('bad').gen;
  await waitFor(
    () =>
      [A, B].every((g) => g.breakers.state('bad').state === 'closed' && g.breakers.state('bad').gen >= gen),
    5_000,
    10,
  );
}

async function journals(rids: string[]): Promise<{ n: number; d: number }> {
  const { rows } = await db.query<{ n: number; d: number }>(
    'SELECT count(*)::int AS n, count(DISTINCT request_id)::int AS d FROM ledger_journal WHERE request_id = ANY($1)',
    [rids],
  );
  return rows[0]!;
}

async function scenario(name: string, budgetName: string, event: () => Promise<void>): Promise<void> {
  const bk = budgets[budgetName]!;
  // A failed baseline (a breaker write that fails since an earlier loss) is reported; the checks still run.
  const baseline = await resetBad().then(
    () => 'ok',
    (e: unknown) => String(e).slice(0, 300),
  );
  const losses0 = [A, B].map(dataLosses);
  let phase: Phase = 'before';
  const load = startLoad(bk.sk, () => phase);
  try {
    // The event comes once the load is running and the budget key is spent (counts, not a fixed sleep).
    await waitFor(() => load.main.sent >= RPS * 2 && (load.budget.refused.budget_exceeded ?? 0) > 0, 15_000);
    phase = 'during';
    const e0 = Date.now();
    await event();
    const eventMs = Date.now() - e0;
    phase = 'after';
    const sentAtEnd = load.main.sent;
    await waitFor(() => load.main.sent >= sentAtEnd + RPS * 4, 15_000);
    await load.stop();
    const detected = await waitFor(() => [A, B].every((g, i) => dataLosses(g) > losses0[i]!), 5_000, 20)
      .then(() => true)
      .catch(() => false);
    const lossesSeen = [A, B].map((g, i) => dataLosses(g) - losses0[i]!);

    const trip = await tripBad();
    const forced = await forceOpenPropagation();
    await resetBad().catch((e: unknown) => console.log(`[redis-loss] ${name}: reset of 'bad' failed: ${e}`));

    // (c) every answered 200 (main and budget key) journaled once, within 30 s.
    const rids = [...load.main.rids, ...load.budget.rids];
    const t0 = Date.now();
    await waitFor(async () => (await journals(rids)).n >= rids.length, 30_000, 200).catch(() => {});
    const j = await journals(rids);
    const journalMs = Date.now() - t0;
    const tb = await admin('GET', '/billing/trial-balance');
    const imbalance = BigInt(tb.debits_micros) - BigInt(tb.credits_micros);
    const { rows } = await db.query<{ sale: string; one: string | null; n: number }>(
      `SELECT coalesce(sum((usage->>'sale_micros')::bigint), 0)::text AS sale,
              max((usage->>'sale_micros')::bigint)::text AS one, count(*)::int AS n
         FROM ledger_journal WHERE app_id = $1 AND kind = 'sale'`,
      [bk.appId],
    );
    const ledgerSale = Number(rows[0]!.sale);
    const bound = BUDGET.limit + BUDGET.oneRequest;
    console.log(
      `[redis-loss] ${name}: ${JSON.stringify({
        baseline,
        event_ms: eventMs,
        main: {
          sent: load.main.sent,
          served: load.main.served,
          served_after_event: load.main.servedAfter,
          refused: load.main.refused,
        },
        budget: {
          sent: load.budget.sent,
          served: load.budget.served,
          served_after_event: load.budget.servedAfter,
          refused: load.budget.refused,
          answered_sale: load.budget.saleMicros,
          ledger_sale: ledgerSale,
          ledger_journals: rows[0]!.n,
          largest_one: Number(rows[0]!.one ?? 0),
          limit: BUDGET.limit,
          bound,
        },
        data_losses_seen: lossesSeen,
        breaker: { opened_everywhere: trip.opened, fake_calls_per_instance: trip.calls, ms: trip.ms },
        forced_open: forced,
        journals: { answered_200: rids.length, journaled: j.n, distinct: j.d, waited_ms: journalMs },
        trial_balance: { imbalance: imbalance.toString(), mismatches: tb.mismatches.length },
        messages,
      })}`,
    );
    expect.soft(baseline, "baseline: 'bad' reset and closed on both instances").toBe('ok');
    // Not vacuous: the load was served after the event too.
    expect.soft(load.main.servedAfter, 'main key served after the event').toBeGreaterThan(0);
    expect.soft(detected, `both instances detected the data loss (${lossesSeen})`).toBe(true);
    // (a)
    expect.soft(trip.opened, "'bad' open on every instance after the event").toBe(true);
    expect
      .soft(trip.calls[0], `calls through A before it opened (minCalls ${MIN_CALLS})`)
      .toBeLessThanOrEqual(MIN_CALLS);
    expect
      .soft(trip.calls[1], `calls through B before it opened (minCalls ${MIN_CALLS})`)
      .toBeLessThanOrEqual(MIN_CALLS);
    // (b)
    expect.soft(forced.status, `POST /circuits/bad/open on A: ${forced.body}`).toBeLessThan(300);
    expect
      .soft(forced.seenOnBMs, 'B reports forced_open within 1 s (-1: not seen)')
      .toBeGreaterThanOrEqual(0);
    // (c)
    expect.soft(j.n, 'journals for the answered-200 request ids').toBe(rids.length);
    expect.soft(j.d, 'distinct request ids journaled').toBe(rids.length);
    // (d)
    expect.soft(imbalance, 'trial balance: debits - credits').toBe(0n);
    expect.soft(tb.mismatches, 'trial balance mismatches').toEqual([]);
    // (e)
    expect
      .soft(ledgerSale, `ledger sale of the budget key <= ${BUDGET.limit} + ${BUDGET.oneRequest}`)
      .toBeLessThanOrEqual(bound);
    expect
      .soft(load.budget.saleMicros, 'sale answered 200 to the budget key, same bound')
      .toBeLessThanOrEqual(bound);
  } finally {
    await load.stop();
  }
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  redisPort = await freePort();
  redisDir = mkdtempSync(join(tmpdir(), 'anima-redis-loss-'));
  await startRedis();
  [one, bad] = await Promise.all([
    startFakeOpenAI({ name: 'loss-one' }),
    startFakeOpenAI({ name: 'loss-bad' }),
  ]);
  bad.setFault({ status: 500 });
  const s = {
    databaseUrl: tdb.url,
    redisUrl: `redis://127.0.0.1:${redisPort}`,
    redisPrefix: testRedisPrefix(),
    instanceCount: 2,
    breakerSyncMs: 200,
    leaseTtlMs: 2_000,
    billingStaleMs: 2_000,
  };
  A = await startTestGateway(s);
  B = await startTestGateway(s);
  db = testPool(tdb.url, 2);
  await admin('POST', '/channels', {
    code: 'one',
    provider: 'openai',
    base_url: one.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/channels', {
    code: 'bad',
    provider: 'openai',
    base_url: bad.url + '/v1',
    credential: 'k',
    settings: { breaker: { minCalls: MIN_CALLS, failureRate: 0.5, openMs: 60_000, windowMs: 30_000 } },
  });
  await admin('POST', '/aliases', { name: 'main', chain: [{ targets: [{ channel: 'one', model: 'm' }] }] });
  await admin('POST', '/aliases', { name: 'budget', chain: [{ targets: [{ channel: 'one', model: 'm' }] }] });
  await admin('POST', '/aliases', { name: 'flaky', chain: [{ targets: [{ channel: 'bad', model: 'm' }] }] });
  await admin('POST', '/prices', {
    alias: 'main',
    sale_input_per_mtok: 2_000_000,
    sale_output_per_mtok: 4_000_000,
    cost_input_per_mtok: 1_000_000,
    cost_output_per_mtok: 2_000_000,
  });
  await admin('POST', '/prices', {
    alias: 'budget',
    sale_input_per_mtok: 0,
    sale_output_per_mtok: BUDGET.outputPerMtok,
    cost_input_per_mtok: 0,
    cost_output_per_mtok: BUDGET.outputPerMtok / 2,
  });
  const appId = (await admin('POST', '/apps', { name: 'loss-main' })).id as string;
  const k = await admin('POST', `/apps/${appId}/keys`, { name: 'main' });
  sk = k.sk;
  await admin('POST', '/quotas', {
    scope: 'app',
    scope_id: appId,
    max_concurrency: 200,
    qps: 2_000,
    qps_burst: 200,
  });
  for (const name of ['restart', 'flushall']) {
    const app = (await admin('POST', '/apps', { name: `loss-budget-${name}` })).id as string;
    const bkey = await admin('POST', `/apps/${app}/keys`, { name: 'budget' });
    await admin('POST', '/quotas', { scope: 'key', scope_id: bkey.key.id, cost_per_day: BUDGET.limit });
    budgets[name] = { appId: app, keyId: bkey.key.id, sk: bkey.sk };
  }
  await waitFor(
    () =>
      [A, B].every(
        (g) =>
          g.config.quota('app', appId) &&
          g.config.price('main', null) &&
          g.config.price('budget', null) &&
          g.config.keyById(k.key.id) &&
          Object.values(budgets).every((b) => g.config.keyById(b.keyId) && g.config.quota('key', b.keyId)),
      ),
    5_000,
    10,
  );
}, 60_000);

afterAll(async () => {
  // Every step runs even if one before it throws (a gateway that fails to close must not leave a
  // redis-server or a database behind); the first failure is rethrown at the end.
  const steps: Array<() => Promise<unknown> | unknown> = [
    () => A?.close(),
    () => B?.close(),
    () => db?.end(),
    () => one?.close(),
    () => bad?.close(),
    async () => {
      const r = redis;
      redis = null;
      if (r) {
        r.kill('SIGKILL');
        await exited(r);
      }
    },
    () => redisDir && rmSync(redisDir, { recursive: true, force: true }),
    () => tdb?.drop(),
  ];
  let first: unknown = null;
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      first ??= e;
    }
  }
  if (first) throw first;
});

describe('chaos: Redis comes back empty under load, no gateway restarted', () => {
  it('Redis restarted empty (SHUTDOWN NOSAVE, same port): breakers, forced open, journals, trial balance, budget', async () => {
    await scenario('restart empty', 'restart', async () => {
      const r = redis!;
      await redisCall('SHUTDOWN', 'NOSAVE');
      await exited(r);
      await startRedis();
    });
  }, 80_000);

  it('FLUSHALL under load: the same checks', async () => {
    await scenario('FLUSHALL', 'flushall', async () => {
      const res = await redisCall('FLUSHALL');
      if (res !== 'OK') throw new Error(`FLUSHALL answered ${String(res)}`);
    });
  }, 80_000);
});
