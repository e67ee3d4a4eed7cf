/**
 * Quota state survives Redis coming back empty (or older): day/month windows are seeded from the ledger,
 * in-flight leases and reservations are registered again by the instances holding them, and WAIT-mode
 * waiters take their queue places again.
 *
 * The Redis at 6379 is shared with other test files, so "Redis lost its data" is every key under this
 * file's prefix deleted (the epoch key with them), followed by the coordinator's check, which then reports
 * the loss (RedisCoordinator.checkDataset; its 1 s timer would too).
 */
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import type { ApiKey, Quota } from '../../src/core/model.js';
import { RedisCoordinator } from '../../src/coord/redis.js';
import { Abort } from '../../src/lib/abort.js';
import { Admission, type Lease } from '../../src/quota/admission.js';
import { RedisQuota } from '../../src/quota/redis.js';
import { LedgerSeed } from '../../src/quota/seed.js';
import { windowBounds } from '../../src/quota/types.js';
import { REDIS_URL, adminApi, cleanupRedis, startTestGateway, testRedisPrefix, waitFor } from '../helpers.js';
import {
  ServiceSuite,
  type TestGateway,
  chainAlias,
  keyScope,
  keyWithQuota,
  openaiChannel,
  startQuotaPair,
} from '../helpers-suite.js';

/**
 * Output tokens only are priced, 1,000 micro-units each; every request asks max_tokens 5 and the fake's
 * answer ("Hello from q: hello quota") is 5 words = 5 tokens: each request reserves and spends exactly
 * ONE = 5,000. A daily limit of 50,000 is then exactly 10 requests.
 */
const ONE = 5_000;
const LIMIT = 50_000;

let S: ServiceSuite;
let A: TestGateway;
let B: TestGateway;
let up: FakeUpstream;
let appId: string;
const admin = adminApi(() => A.url);

const keyWith = (quota: Record<string, unknown>, key: Record<string, unknown> = {}) =>
  keyWithQuota(admin, [A, B], appId, 'r', quota, key);

function chat(g: TestGateway, sk: string) {
  return fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({
      model: 'main',
      messages: [{ role: 'user', content: 'hello quota' }],
      max_tokens: 5,
    }),
  });
}

/** Status and error code of one answer (the body read to the end). */
async function outcome(r: Response): Promise<string> {
  if (r.status === 200) {
    await r.arrayBuffer();
    return 'ok';
  }
  return ((await r.json()) as { error: { code: string } }).error.code;
}

/** The key's sales in the ledger: count and sale micro-units. */
async function ledgerOf(keyId: string): Promise<{ n: number; sale: number }> {
  const r = await sql<{ n: string; sale: string }>`
    SELECT count(*)::text AS n, coalesce(sum((usage->>'sale_micros')::bigint), 0)::text AS sale
    FROM ledger_journal WHERE kind = 'sale' AND usage->>'key_id' = ${keyId}`.execute(A.dbh.db);
  return { n: Number(r.rows[0]!.n), sale: Number(r.rows[0]!.sale) };
}

/** Redis "forgets": every key of this file's prefix is gone, and A's coordinator is made to look now. */
async function loseRedisData(): Promise<void> {
  const before = (A.coord as RedisCoordinator).dataLosses;
  await cleanupRedis(S.prefix);
  await (A.coord as RedisCoordinator).checkDataset();
  expect((A.coord as RedisCoordinator).dataLosses).toBe(before + 1);
}

/** Sends requests one at a time through `gws` (alternating) until `n` were sent; returns their outcomes. */
async function sequential(gws: TestGateway[], sk: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await outcome(await chat(gws[i % gws.length]!, sk)));
  return out;
}

beforeAll(async () => {
  S = await ServiceSuite.open();
  ({ up, A, B, appId } = await startQuotaPair(S, 'rebuild'));
  await admin('POST', '/prices', {
    alias: 'main',
    sale_input_per_mtok: 0,
    sale_output_per_mtok: 1_000_000_000,
    cost_input_per_mtok: 0,
    cost_output_per_mtok: 500_000_000,
  });
  await waitFor(() => [A, B].every((g) => !!g.config.price('main', null)), 2_000, 5);
}, 60_000);

afterAll(() => S?.close(up));

describe('cost windows seeded from the ledger', () => {
  it('a key spends 6 of its 10 requests a day, Redis loses everything: 4 more pass, through old and new instances alike', async () => {
    const { sk, id } = await keyWith({ cost_per_day: LIMIT });
    expect(await sequential([A, B], sk, 6)).toEqual(Array(6).fill('ok'));
    // Journaled before the loss (what isn't yet is the documented bound: the billing stream's backlog).
    await waitFor(async () => (await ledgerOf(id)).n === 6, 10_000, 20);
    expect(await A.quota.usage(appId, keyScope(id, { costPerDay: LIMIT }))).toMatchObject({
      costDay: 6 * ONE,
    });

    await loseRedisData();
    // An instance that starts after the loss saw no loss at all: its first admission seeds all the same.
    const C = await startTestGateway(S.settings);
    try {
      await waitFor(() => !!C.config.quota('key', id) && !!C.config.price('main', null), 2_000, 5);
      const after = await sequential([C, A, B], sk, 8);
      console.log(`cost/day ${LIMIT} across the loss: after it ${after.join(' ')}`);
      expect(after.filter((o) => o === 'ok')).toHaveLength(4);
      expect(after.slice(4)).toEqual(Array(4).fill('budget_exceeded'));
    } finally {
      await C.close();
    }
    await waitFor(async () => (await ledgerOf(id)).n === 10, 10_000, 20);
    expect((await ledgerOf(id)).sale).toBe(LIMIT); // not a micro-unit beyond the budget across the event
    expect(await A.quota.usage(appId, keyScope(id, { costPerDay: LIMIT }))).toMatchObject({ costDay: LIMIT });
  }, 60_000);

  it('a window that survived with stale figures (failover to a lagging replica): seeded again on the signal, never lowered', async () => {
    const { sk, id } = await keyWith({ cost_per_day: LIMIT });
    expect(await sequential([A], sk, 6)).toEqual(Array(6).fill('ok'));
    await waitFor(async () => (await ledgerOf(id)).n === 6, 10_000, 20);
    // An older copy of the dataset: the state hash is there, seeded, but knows of nothing spent today; the
    // epoch key is another one (as a replica's would be once promoted).
    const r = new Redis(REDIS_URL);
    try {
      const sk1 = `${S.prefix}{q:${appId}}:s:key:${id}`;
      expect(await r.hget(sk1, 'sv')).toBe('1');
      await r.hset(sk1, 'du', '0', 'dc', '0', 'mc', '0');
      await r.del(`${S.prefix}epoch`);
      await (A.coord as RedisCoordinator).checkDataset();
      await waitFor(async () => (await r.hget(sk1, 'sv')) === null, 5_000, 10);
    } finally {
      r.disconnect();
    }
    const after = await sequential([A, B], sk, 6);
    expect(after.filter((o) => o === 'ok')).toHaveLength(4);
    await waitFor(async () => (await ledgerOf(id)).n === 10, 10_000, 20);
    expect((await ledgerOf(id)).sale).toBe(LIMIT);

    // A seed where nothing was lost changes nothing: the marker cleared again, Redis holds the spend of
    // today (the ledger's figure is the same), so the next admission is refused as before.
    await (A.quota as RedisQuota).reseed();
    expect(await outcome(await chat(A, sk))).toBe('budget_exceeded');
    expect(await A.quota.usage(appId, keyScope(id, { costPerDay: LIMIT }))).toMatchObject({ costDay: LIMIT });
  }, 60_000);
});

describe('leases and reservations of requests in flight', () => {
  it('max concurrency 2, two slow requests in flight when Redis forgets: their leases still count, their reservations true up', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 2, cost_per_day: LIMIT });
    const scope = keyScope(id, { maxConcurrency: 2, costPerDay: LIMIT });
    up.setFault({ latencyMs: 1_500 });
    up.resetStats();
    const slow = [chat(A, sk), chat(B, sk)];
    try {
      await waitFor(async () => (await A.quota.inFlight(appId, scope)) === 2, 5_000, 5);
      await loseRedisData();
      // Each instance puts back its own requests' leases: B's when B notices too (its timer would within 1 s).
      await (B.coord as RedisCoordinator).checkDataset();
      await waitFor(async () => (await A.quota.inFlight(appId, scope)) === 2, 5_000, 5);
      const third = await chat(A, sk);
      expect(third.status).toBe(429);
      expect(await outcome(third)).toBe('concurrency_limit_exceeded');
      // The two reservations (5,000 each, not journaled: in flight) are in the day window again.
      expect((await A.quota.usage(appId, scope)).costDay).toBe(2 * ONE);
    } finally {
      up.setFault(null);
    }
    expect(await Promise.all(slow.map(async (p) => outcome(await p)))).toEqual(['ok', 'ok']);
    expect(up.stats.maxInFlight).toBe(2);
    // Settled against their restored reservations: the window holds what they spent, and the leases are gone.
    await waitFor(async () => (await A.quota.inFlight(appId, scope)) === 0, 5_000, 5);
    await waitFor(async () => (await A.quota.usage(appId, scope)).costDay === 2 * ONE, 5_000, 5);
    expect(await outcome(await chat(B, sk))).toBe('ok');
    await waitFor(async () => (await ledgerOf(id)).n === 3, 10_000, 20);
    await waitFor(async () => (await A.quota.usage(appId, scope)).costDay === 3 * ONE, 5_000, 5);
  }, 30_000);
});

describe('WAIT queues', () => {
  it('through the gateway: a waiter queued before the loss is answered, ahead of one who came after it', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'WAIT', wait_timeout_ms: 20_000 });
    const scope = keyScope(id, { maxConcurrency: 1 });
    up.setFault({ latencyMs: 1_000 });
    const done: string[] = [];
    const track = (name: string, p: Promise<Response>) =>
      p.then(async (r) => {
        const o = await outcome(r);
        done.push(name);
        return o;
      });
    const t0 = Date.now();
    try {
      const holder = track('holder', chat(A, sk));
      await waitFor(async () => (await A.quota.inFlight(appId, scope)) === 1, 5_000, 5);
      const waiter = track('waiter', chat(B, sk));
      await waitFor(async () => (await A.quota.queueLength(appId, id)) === 1, 5_000, 5);
      await loseRedisData();
      await (B.coord as RedisCoordinator).checkDataset();
      // The waiter is back in its queue, the holder's lease back in its set: one arriving now queues
      // behind the waiter instead of taking the slot or jumping ahead. (The waiter polls every 250 ms: a
      // poll landing in the few ms between the keys' deletion and the holder's lease coming back admits
      // it at once, which counts here too: it is answered either way.)
      await waitFor(
        async () => (await A.quota.queueLength(appId, id)) + (await A.quota.inFlight(appId, scope)) === 2,
        5_000,
        5,
      );
      const later = track('later', chat(A, sk));
      expect(await Promise.all([holder, waiter, later])).toEqual(['ok', 'ok', 'ok']);
    } finally {
      up.setFault(null);
    }
    const ms = Date.now() - t0;
    console.log(
      `WAIT across the loss: answered in order ${done.join(', ')} within ${ms} ms (timeout 20,000)`,
    );
    expect(done).toEqual(['holder', 'waiter', 'later']);
    expect(ms).toBeLessThan(10_000);
    expect(await A.quota.queueLength(appId, id)).toBe(0);
  }, 30_000);

  it('a waiter relying on wake-ups alone (no polling) is woken after the loss: put back in its queue, the release that frees the slot wakes it', async () => {
    // An Admission of its own with polling out of the picture (60 s): only a wake-up can admit the waiter
    // before its 8 s timeout. Before the rebuild existed the release found the (lost) queue empty and
    // published nothing: the waiter hung until its timeout.
    const pfx = testRedisPrefix();
    const coord = new RedisCoordinator({ url: REDIS_URL, prefix: pfx, epochCheckMs: 60_000 });
    await coord.ready();
    const q = new RedisQuota(coord.cmd, pfx, coord.tick, new LedgerSeed(A.dbh.db));
    const key: ApiKey = {
      id: 'k_wait',
      appId: 'a_wait',
      name: '',
      keyHash: 'h',
      keyPrefix: 'sk',
      enabled: true,
      allowedAliases: null,
      queueMode: 'WAIT',
      waitTimeoutMs: 8_000,
      maxQueue: 10,
      tokenGroupId: null,
      webhookUrl: null,
      webhookSecret: null,
      versionNo: 1,
      effectiveFrom: 0,
      effectiveTo: null,
    };
    const quota: Quota = {
      id: '1',
      scope: 'key',
      scopeId: key.id,
      maxConcurrency: 1,
      qps: 0,
      qpsBurst: 0,
      tokensPerMinute: 0,
      tokensPerDay: 0,
      costPerDay: 0,
      costPerMonth: 0,
      versionNo: 1,
      effectiveFrom: 0,
      effectiveTo: null,
    };
    const adm = new Admission(
      q,
      { quota: (s, i) => (s === 'key' && i === key.id ? quota : undefined) },
      {
        leaseTtlMs: 30_000,
        pollMs: 60_000,
      },
    );
    coord.onDataLoss(() => void adm.rebuild());
    const est = () => ({ tokens: 0, cost: 0 });
    try {
      const holder = (await adm.admit(key, est, new Abort())) as Lease;
      const t0 = Date.now();
      const waiting = adm.admit(key, est, new Abort());
      await waitFor(async () => (await q.queueLength(key.appId, key.id)) === 1, 5_000, 5);
      await cleanupRedis(pfx);
      await coord.checkDataset();
      expect(coord.dataLosses).toBe(1);
      await waitFor(async () => (await q.queueLength(key.appId, key.id)) === 1, 5_000, 5);
      expect(await q.inFlight(key.appId, keyScope(key.id, { maxConcurrency: 1 }))).toBe(1);
      await holder.settle(0, 0);
      const admitted = (await waiting) as Lease;
      const ms = Date.now() - t0;
      console.log(`wake-only waiter across the loss: admitted ${ms} ms after queueing (timeout 8,000)`);
      expect(admitted.reservations).toHaveLength(1);
      expect(ms).toBeLessThan(5_000);
      await admitted.settle(0, 0);
    } finally {
      q.close();
      await coord.close();
      await cleanupRedis(pfx);
    }
  }, 30_000);

  it('the lazy path: a waiter whose entry vanished learns it at its next try and takes its old place, ahead of a newer arrival', async () => {
    const pfx = testRedisPrefix();
    const r = new Redis(REDIS_URL);
    const q = new RedisQuota(r, pfx);
    try {
      const old = await q.enqueue('t', 'k', 'w_old', Date.now() + 10_000, 10);
      expect(old.score).toBeTruthy();
      await cleanupRedis(pfx);
      await q.enqueue('t', 'k', 'w_new', Date.now() + 10_000, 10);
      const scope = keyScope('k', { maxConcurrency: 1 });
      const req = { tag: 't', scopes: [scope], leaseTtlMs: 30_000, tokens: 0, cost: 0, queue: 'k' };
      const lost = await q.admit({ ...req, leaseId: 'l1', waiter: { queue: 'k', id: 'w_old' } });
      expect(lost).toMatchObject({ ok: false, queued: true, missing: true });
      // The newer arrival is the head meanwhile, and is told so plainly (not "missing").
      const behind = await q.admit({ ...req, leaseId: 'l2', waiter: { queue: 'k', id: 'w_new' } });
      expect(behind.ok).toBe(true);
      if (behind.ok) await q.settle(behind.reservation, 0, 0);
      await q.enqueue('t', 'k', 'w_newer', Date.now() + 10_000, 10);
      expect(await q.requeue('t', 'k', 'w_old', Date.now() + 10_000, old.score)).toBe(true);
      // Its old score puts it ahead of the one queued after the loss.
      const newer = await q.admit({ ...req, leaseId: 'l3', waiter: { queue: 'k', id: 'w_newer' } });
      expect(newer).toMatchObject({ ok: false, queued: true });
      expect((newer as { missing?: boolean }).missing).toBeUndefined();
      const back = await q.admit({ ...req, leaseId: 'l4', waiter: { queue: 'k', id: 'w_old' } });
      expect(back.ok).toBe(true);
      // Past its deadline it is not put back.
      expect(await q.requeue('t', 'k', 'w_gone', Date.now() - 1_000)).toBe(false);
    } finally {
      q.close();
      r.disconnect();
      await cleanupRedis(pfx);
    }
  });
});

describe('embedded mode (in-process quotas)', () => {
  it('a gateway restarted on the same database starts its windows from the ledger', async () => {
    const { sk, id } = await keyWith({ cost_per_day: LIMIT });
    const s = { databaseUrl: S.tdb.url };
    let E = await startTestGateway(s);
    try {
      await waitFor(() => !!E.config.quota('key', id) && !!E.config.price('main', null), 2_000, 5);
      expect(await sequential([E], sk, 7)).toEqual(Array(7).fill('ok'));
      await waitFor(async () => (await ledgerOf(id)).n === 7, 10_000, 20);
      await E.close();
      E = await startTestGateway(s);
      await waitFor(() => !!E.config.quota('key', id) && !!E.config.price('main', null), 2_000, 5);
      const after = await sequential([E], sk, 5);
      expect(after).toEqual(['ok', 'ok', 'ok', 'budget_exceeded', 'budget_exceeded']);
      await waitFor(async () => (await ledgerOf(id)).n === 10, 10_000, 20);
      expect((await ledgerOf(id)).sale).toBe(LIMIT);
    } finally {
      await E.close();
    }
  }, 60_000);

  it('on PGlite (the embedded database) too: the ledger query sums what the windows count', async () => {
    const E = await startTestGateway({});
    try {
      const api = adminApi(() => E.url);
      await openaiChannel(api, 'q', up);
      await chainAlias(api, 'main', ['q', 'm']);
      await api('POST', '/prices', { alias: 'main', sale_output_per_mtok: 1_000_000_000 });
      const app = (await api('POST', '/apps', { name: 'lite' })).id as string;
      const k = await api('POST', `/apps/${app}/keys`, { name: 'lite' });
      await api('POST', '/quotas', {
        scope: 'key',
        scope_id: k.key.id,
        cost_per_day: LIMIT,
        tokens_per_day: 1_000,
      });
      await waitFor(() => !!E.config.quota('key', k.key.id) && !!E.config.price('main', null), 2_000, 5);
      expect(await sequential([E], k.sk, 3)).toEqual(['ok', 'ok', 'ok']);
      const seed = new LedgerSeed(E.dbh.db);
      const w = windowBounds(Math.floor(Date.now() / 86_400_000));
      await waitFor(async () => (await seed.figures('key', k.key.id, w)).costDay === 3 * ONE, 10_000, 20);
      const usage = await E.quota.usage(app, keyScope(k.key.id));
      expect(await seed.figures('key', k.key.id, w)).toEqual({
        tokensDay: usage.tokensDay,
        costDay: usage.costDay,
        costMonth: usage.costMonth,
      });
      expect(await seed.figures('app', app, w)).toMatchObject({ costDay: 3 * ONE });
    } finally {
      await E.close();
    }
  }, 60_000);
});
