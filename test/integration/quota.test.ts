/**
 * Per-key quotas on real Redis (and PostgreSQL for config), two gateway instances sharing them.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { hashKey } from '../../src/config/repo.js';
import { RedisQuota } from '../../src/quota/redis.js';
import type { ScopeLimits } from '../../src/quota/types.js';
import { REDIS_URL, adminApi, spawnGateway, startTestGateway, waitFor } from '../helpers.js';
import { ServiceSuite, type TestGateway, keyScope, keyWithQuota, startQuotaPair } from '../helpers-suite.js';

let S: ServiceSuite;
let A: TestGateway;
let B: TestGateway;
let up: FakeUpstream;
let appId: string;

const admin = adminApi(() => A.url);

/** A fresh key with its own quota, visible to both instances. */
const keyWith = (quota: Record<string, unknown>, key: Record<string, unknown> = {}) =>
  keyWithQuota(admin, [A, B], appId, 'q', quota, key);

function chat(g: TestGateway, sk: string, extra: Record<string, unknown> = {}, signal?: AbortSignal) {
  return fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'hello quota' }], ...extra }),
    ...(signal ? { signal } : {}),
  });
}

const scopeOf = (id: string) => keyScope(id, { maxConcurrency: 1 });

beforeAll(async () => {
  S = await ServiceSuite.open();
  ({ up, A, B, appId } = await startQuotaPair(S, 'quota'));
}, 60_000);

afterAll(() => S?.close(up));

describe('concurrency', () => {
  it('limit 3, 50 parallel requests over two instances (WAIT): the upstream never sees more than 3, all complete, no lease left', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 3 }, { queue_mode: 'WAIT', wait_timeout_ms: 20_000 });
    up.setFault({ latencyMs: 150 });
    up.resetStats();
    const res = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        chat(i % 2 ? A : B, sk).then(async (r) => (await r.arrayBuffer(), r.status)),
      ),
    );
    up.setFault(null);
    expect(res.filter((s) => s === 200)).toHaveLength(50);
    expect(up.stats.maxInFlight).toBeLessThanOrEqual(3);
    expect(up.stats.maxInFlight).toBe(3);
    console.log(`concurrency 3: 50 requests served, upstream max in flight ${up.stats.maxInFlight}`);
    expect(await A.quota.inFlight(appId, { ...scopeOf(id), maxConcurrency: 3 })).toBe(0);
    expect(await A.quota.queueLength(appId, id)).toBe(0);
  }, 30_000);

  it('three instances hold one global limit: concurrency 4 and 20 QPS across A, B and C, as one instance would', async () => {
    const C = await startTestGateway(S.settings);
    try {
      const { sk, id } = await keyWith(
        { max_concurrency: 4 },
        { queue_mode: 'WAIT', wait_timeout_ms: 20_000 },
      );
      await waitFor(() => !!C.config.quota('key', id), 2_000, 5);
      up.setFault({ latencyMs: 100 });
      up.resetStats();
      const gws = [A, B, C];
      const res = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          chat(gws[i % 3]!, sk).then(async (r) => (await r.arrayBuffer(), r.status)),
        ),
      );
      up.setFault(null);
      expect(res.filter((s) => s === 200)).toHaveLength(60);
      expect(up.stats.maxInFlight).toBe(4);
      const q = await keyWith({ qps: 20, qps_burst: 1 });
      await waitFor(() => !!C.config.quota('key', q.id), 2_000, 5);
      const t0 = Date.now();
      let ok = 0;
      while (Date.now() - t0 < 2_000) {
        const rs = await Promise.all(gws.map((g) => chat(g, q.sk)));
        ok += rs.filter((r) => r.status === 200).length;
        await Promise.all(rs.map((r) => r.arrayBuffer()));
        await new Promise((r) => setTimeout(r, 20)); // pacing the offered load: a rate over real time is under test
      }
      console.log(
        `three instances: concurrency 4 -> upstream max in flight ${up.stats.maxInFlight}; qps 20 for 2 s -> ${ok} admitted`,
      );
      expect(ok).toBeLessThanOrEqual(20 * 2 + 2);
      expect(ok).toBeGreaterThan(20);
    } finally {
      await C.close();
    }
  }, 30_000);

  it('REJECT: beyond the limit, 429 concurrency_limit_exceeded at once', async () => {
    const { sk } = await keyWith({ max_concurrency: 2 });
    up.setFault({ latencyMs: 300 });
    const res = await Promise.all(Array.from({ length: 6 }, () => chat(A, sk)));
    up.setFault(null);
    const codes = await Promise.all(
      res.map(async (r) =>
        r.status === 200 ? 'ok' : ((await r.json()) as { error: { code: string } }).error.code,
      ),
    );
    expect(codes.filter((c) => c === 'ok')).toHaveLength(2);
    expect(codes.filter((c) => c === 'concurrency_limit_exceeded')).toHaveLength(4);
    expect(res.find((r) => r.status === 429)!.headers.get('retry-after')).toBeTruthy();
  });
});

describe('QPS (GCRA on Redis time)', () => {
  it('10 rps for 3 s: admitted within ±1 of 30, the rest 429 rate_limit_exceeded with retry-after', async () => {
    const { sk } = await keyWith({ qps: 10 });
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    let code = '';
    const t0 = Date.now();
    const inflight: Promise<void>[] = [];
    // Offer ~65 rps for 3 s. The last send leaves 50 ms before the 3 s mark so the run spans 3 s of
    // arrivals; GCRA with its one-interval tolerance then admits 1 + 1 + 29 = 31 (and 30 at a late start).
    while (Date.now() - t0 < 2_950) {
      inflight.push(
        chat(Date.now() % 2 ? A : B, sk).then(async (r) => {
          statuses.push(r.status);
          if (r.status === 429) {
            retryAfter = r.headers.get('retry-after');
            code = ((await r.json()) as { error: { code: string } }).error.code;
          } else await r.arrayBuffer();
        }),
      );
      await new Promise((r) => setTimeout(r, 15)); // pacing the offered load: a rate over real time is under test
    }
    await Promise.all(inflight);
    const ok = statuses.filter((s) => s === 200).length;
    console.log(`qps 10 for 3 s: ${ok} admitted of ${statuses.length}`);
    expect(Math.abs(ok - 30)).toBeLessThanOrEqual(1);
    expect(code).toBe('rate_limit_exceeded');
    expect(retryAfter).toBeTruthy();
  });

  it('6,000/s straight against the script: never more than the rate allows over the Redis-time span', async () => {
    const r = new Redis(REDIS_URL, { enableAutoPipelining: true });
    const q = new RedisQuota(r, S.prefix);
    const scope: ScopeLimits = { ...scopeOf('fast'), maxConcurrency: 0, qps: 6_000, qpsBurst: 1 };
    let ok = 0;
    let first = Infinity;
    let last = 0;
    const N = 12_000;
    await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const res = await q.admit({
          tag: 'gcra',
          scopes: [scope],
          leaseId: 'l' + i,
          leaseTtlMs: 1000,
          tokens: 0,
          cost: 0,
          queue: 'x',
        });
        if (res.ok) {
          ok++;
          first = Math.min(first, res.reservation.at);
          last = Math.max(last, res.reservation.at);
        }
      }),
    );
    q.close();
    r.disconnect();
    const allowed = Math.floor(((last - first + 1) * 6_000) / 1000) + 2; // + burst 1
    console.log(
      `gcra 6000/s: ${ok} admitted of ${N} over ${last - first} ms of Redis time (ceiling ${allowed})`,
    );
    // Not far below either: a millisecond clock would admit ~1/ms, 17% of this rate. The rest of the gap
    // is the client's own batching leaving Redis idle for longer than the tolerance, which grows when the
    // machine is busy (seen: 41% of the ceiling beside a headless browser test, 29% in a loaded CI run),
    // so the floor sits just above the millisecond clock's share.
    expect(ok).toBeGreaterThan(0.2 * allowed);
    expect(ok).toBeLessThanOrEqual(allowed + 6); // +1 ms of Redis TIME granularity at each end
  });
});

describe('tokens', () => {
  it('a day budget is not overshot by more than one request under 50 parallel; after settlement it holds actual usage', async () => {
    const limit = 1_000;
    const { sk, id } = await keyWith({ tokens_per_day: limit });
    // A slow upstream keeps all 50 in flight together, so their reservations (prompt + max_tokens) pile up
    // before any settles: admission must refuse on reservations, not on settled usage alone.
    up.setFault({ latencyMs: 200 });
    const res = await Promise.all(
      Array.from({ length: 50 }, (_, i) => chat(i % 2 ? A : B, sk, { max_tokens: 30 })),
    ).finally(() => up.setFault(null));
    let used = 0;
    let maxOne = 0;
    let refused = 0;
    for (const r of res) {
      if (r.status === 200) {
        const j = (await r.json()) as { usage: { total_tokens: number } };
        used += j.usage.total_tokens;
        maxOne = Math.max(maxOne, j.usage.total_tokens);
      } else {
        refused++;
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('tokens_limit_exceeded');
      }
    }
    expect(refused).toBeGreaterThan(0);
    expect(used).toBeLessThanOrEqual(limit + maxOne);
    // Settlement runs right after each answer is written: give the last ones a moment.
    await waitFor(
      async () => (await A.quota.usage(appId, { ...scopeOf(id), tokensPerDay: limit })).tokensDay === used,
      2_000,
      10,
    );
    console.log(
      `tokens/day ${limit}: ${50 - refused} served using ${used} tokens; Redis holds the same after settlement`,
    );
  });
});

describe('reservations of a dead instance', () => {
  it('a reservation never settled gives its tokens and cost back once its lease expires; its late settlement changes nothing', async () => {
    const r = new Redis(REDIS_URL);
    const q = new RedisQuota(r, S.prefix);
    try {
      const scope: ScopeLimits = {
        ...scopeOf('reap'),
        maxConcurrency: 0,
        tokensPerMinute: 1_000,
        tokensPerDay: 1_000,
        costPerDay: 5_000,
      };
      const admit = (leaseId: string, tokens: number, cost: number, leaseTtlMs = 30_000) =>
        q.admit({ tag: 'reap', scopes: [scope], leaseId, leaseTtlMs, tokens, cost, queue: 'reap' });
      // Admitted and never settled: its instance "dies" holding 600 tokens and 3,000 micro-units.
      const dead = await admit('dead', 600, 3_000, 300);
      if (!dead.ok) throw new Error('the first admission was refused');
      // While its lease lives, the reservation counts.
      expect((await admit('early', 600, 0)).ok).toBe(false);
      // Past the lease (300 ms), an admission finds it dead and gives it back (the reaper runs at most once a
      // second): empty admissions until the windows are back to zero, then this one fits.
      let probes = 0;
      await waitFor(
        async () => {
          const p = await admit(`probe-${probes++}`, 0, 0);
          if (p.ok) await q.settle(p.reservation, 0, 0);
          return (await q.usage('reap', scope)).tokensDay === 0;
        },
        5_000,
        50,
      );
      const next = await admit('next', 600, 3_000);
      expect(next.ok).toBe(true);
      expect(await q.usage('reap', scope)).toMatchObject({ tokensDay: 600, costDay: 3_000 });
      // The dead instance's settlement, arriving late after all, finds its reservation gone: no change.
      await q.settle(dead.reservation, 10, 10);
      expect(await q.usage('reap', scope)).toMatchObject({ tokensDay: 600, costDay: 3_000 });
      // A live one trues up as usual.
      if (next.ok) await q.settle(next.reservation, 100, 500);
      expect(await q.usage('reap', scope)).toMatchObject({ tokensDay: 100, costDay: 500 });
    } finally {
      q.close();
      r.disconnect();
    }
  });
});

describe('WAIT queue', () => {
  it('waiters complete in FIFO order as slots free', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'WAIT', wait_timeout_ms: 10_000 });
    up.setFault({ latencyMs: 120 });
    const order: number[] = [];
    const all = [];
    for (let i = 0; i < 5; i++) {
      all.push(chat(i % 2 ? A : B, sk).then(async (r) => (await r.arrayBuffer(), order.push(i), r.status)));
      // Each arrives after the one before it is in place: the first at the upstream, the others queued.
      if (i === 0) await waitFor(() => up.stats.inFlight === 1, 5_000, 5);
      else await waitFor(async () => (await A.quota.queueLength(appId, id)) === i, 5_000, 5);
    }
    const st = await Promise.all(all);
    up.setFault(null);
    expect(st).toEqual([200, 200, 200, 200, 200]);
    expect(order).toEqual([0, 1, 2, 3, 4]);
  });

  it('a waiter past its timeout gets 429 queue_timeout (within 100 ms); a client that leaves is gone from the queue at once', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'WAIT', wait_timeout_ms: 300 });
    up.setFault({ latencyMs: 1_500 });
    const holder = chat(A, sk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the slot
    const t0 = Date.now();
    const w = await chat(B, sk);
    const waited = Date.now() - t0;
    expect(w.status).toBe(429);
    expect(((await w.json()) as { error: { code: string } }).error.code).toBe('queue_timeout');
    console.log(`queue timeout 300 ms: answered after ${waited} ms`);
    expect(Math.abs(waited - 300)).toBeLessThan(100);

    const ac = new AbortController();
    const leaving = chat(B, sk, {}, ac.signal).catch(() => null);
    await waitFor(async () => (await A.quota.queueLength(appId, id)) === 1, 1_000, 5);
    ac.abort();
    await leaving;
    const ms = await waitFor(async () => (await A.quota.queueLength(appId, id)) === 0, 1_000, 5);
    console.log(`a waiter that disconnected left the queue after ${ms} ms`);
    up.setFault(null);
    await (await holder).arrayBuffer();
  });

  it('switching a key from REJECT to WAIT takes effect on the next request, no restart', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 1 });
    up.setFault({ latencyMs: 300 });
    const holder = chat(A, sk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the slot
    expect((await chat(B, sk)).status).toBe(429);
    const k = await admin('GET', `/apps/${appId}/keys/${id}`);
    await admin('PATCH', `/apps/${appId}/keys/${id}`, { queue_mode: 'WAIT' }, k.version_no);
    const ms = await waitFor(
      async () => (await B.config.keyByHash(hashKey(sk)))?.queueMode === 'WAIT',
      1_000,
      5,
    );
    console.log(`queue mode REJECT -> WAIT live on the other instance after ${ms} ms`);
    const waited = await chat(B, sk);
    expect(waited.status).toBe(200);
    up.setFault(null);
    await (await holder).arrayBuffer();
  });
});

describe('rate-limit headers and leases', () => {
  it('answers carry x-ratelimit-* headers', async () => {
    const { sk } = await keyWith({ qps: 5, qps_burst: 4, tokens_per_minute: 100_000 });
    const r = await chat(A, sk);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-ratelimit-limit-requests')).toBe('5');
    expect(Number(r.headers.get('x-ratelimit-remaining-requests'))).toBe(4);
    expect(r.headers.get('x-ratelimit-limit-tokens')).toBe('100000');
    expect(Number(r.headers.get('x-ratelimit-remaining-tokens'))).toBeLessThan(100_000);
    expect(r.headers.get('x-ratelimit-reset-requests')).toMatch(/ms$/);
  });

  it('kill -9 of an instance holding leases: the slots come back within the lease TTL', async () => {
    const { sk, id } = await keyWith({ max_concurrency: 2, tokens_per_day: 1_000_000 });
    const g = spawnGateway({
      DATABASE_URL: S.tdb.url,
      REDIS_URL,
      ANIMA_REDIS_PREFIX: S.prefix,
      ANIMA_LEASE_TTL_MS: '1500',
    });
    const child = g.child;
    const url = await g.url;
    up.setFault({ hang: true });
    for (let i = 0; i < 2; i++)
      void fetch(url + '/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
        body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'x' }] }),
      }).catch(() => {});
    const scope = { ...scopeOf(id), maxConcurrency: 2, tokensPerDay: 1_000_000 };
    await waitFor(async () => (await A.quota.inFlight(appId, scope)) === 2, 5_000, 10);
    const reserved = (await A.quota.usage(appId, scope)).tokensDay;
    expect(reserved).toBeGreaterThan(2 * 1024); // two requests' estimates, held by the instance about to die
    child.kill('SIGKILL');
    const t0 = Date.now();
    expect((await chat(A, sk)).status).toBe(429); // both slots still held by the dead instance
    await waitFor(async () => (await A.quota.inFlight(appId, scope)) === 0, 3_000, 20);
    console.log(`leases of a killed instance returned after ${Date.now() - t0} ms (TTL 1500 ms)`);
    up.setFault(null);
    const ok = await chat(A, sk);
    expect(ok.status).toBe(200);
    const used = ((await ok.json()) as { usage: { total_tokens: number } }).usage.total_tokens;
    // The reaper gave the dead instance's unsettled token reservations back: only this request remains.
    expect((await A.quota.usage(appId, scope)).tokensDay).toBe(used);
    console.log(`reservations of the killed instance (${reserved} tokens) refunded; day usage now ${used}`);
  }, 20_000);
});

describe('ASYNC mode', () => {
  async function until(g: TestGateway, sk: string, id: string, ms = 10_000): Promise<any> {
    let last: any;
    await waitFor(
      async () => {
        last = await (
          await fetch(`${g.url}/v1/tasks/${id}`, { headers: { authorization: `Bearer ${sk}` } })
        ).json();
        return ['succeeded', 'failed', 'expired'].includes(last.status);
      },
      ms,
      50,
    );
    return last;
  }

  it('over the limit: 202 with a task id at once; the task completes with the body a synchronous call returns; only the owner can read it', async () => {
    const { sk } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'ASYNC' });
    // The holder's answer takes long enough that "at once" can be checked by an event, not a stopwatch.
    up.setFault({ latencyMs: 1_500 });
    const holder = chat(A, sk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the slot
    const completedBefore = up.stats.completed;
    const r = await chat(B, sk, { messages: [{ role: 'user', content: 'later please' }] });
    // Answered while the holder still held the slot: the request did not wait for it.
    expect(up.stats.completed).toBe(completedBefore);
    expect(r.status).toBe(202);
    const j = (await r.json()) as { task_id: string; status: string };
    expect(j.status).toBe('queued');
    expect(r.headers.get('location')).toBe(`/v1/tasks/${j.task_id}`);
    const done = await until(A, sk, j.task_id);
    up.setFault(null);
    expect(done.status).toBe('succeeded');
    expect(done.result_status).toBe(200);
    expect(done.result.object).toBe('chat.completion');
    expect(done.result.model).toBe('main');
    expect(done.result.choices[0].message.content).toBe('Hello from q: later please');
    const sync = (await (await holder).json()) as { object: string; choices: unknown[] };
    expect(Object.keys(done.result).sort()).toEqual(Object.keys(sync).sort());

    const other = await admin('POST', '/apps', { name: 'other' });
    const ok = await admin('POST', `/apps/${other.id}/keys`, { name: 'o' });
    await waitFor(
      async () =>
        (await fetch(`${A.url}/v1/tasks`, { headers: { authorization: `Bearer ${ok.sk}` } })).status === 200,
      2_000,
      20,
    );
    expect(
      (await fetch(`${A.url}/v1/tasks/${j.task_id}`, { headers: { authorization: `Bearer ${ok.sk}` } }))
        .status,
    ).toBe(404);
    const mine = (await (
      await fetch(`${A.url}/v1/tasks?status=succeeded`, { headers: { authorization: `Bearer ${sk}` } })
    ).json()) as { data: Array<{ id: string }> };
    expect(mine.data.map((x) => x.id)).toContain(j.task_id);
  });

  it('a streaming request that would be queued is refused with a clear 400', async () => {
    const { sk } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'ASYNC' });
    up.setFault({ latencyMs: 200 });
    const holder = chat(A, sk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the slot
    const r = await chat(A, sk, { stream: true });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { param: string } }).error.param).toBe('stream');
    up.setFault(null);
    await (await holder).arrayBuffer();
  });

  it('kill -9 the gateway with tasks queued: after a restart every task completes exactly once', async () => {
    const { sk } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'ASYNC' });
    const env = {
      DATABASE_URL: S.tdb.url,
      REDIS_URL,
      ANIMA_REDIS_PREFIX: S.prefix,
      ANIMA_TASK_LEASE_MS: '1500',
      ANIMA_TASK_POLL_MS: '200',
      ANIMA_LEASE_TTL_MS: '1500',
    };
    const start = () => spawnGateway(env);
    const first = start();
    const url1 = await first.url;
    up.setFault({ latencyMs: 300 });
    up.resetStats();
    const post = () =>
      fetch(url1 + '/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
        body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'async job' }] }),
      });
    const answers = await Promise.all(Array.from({ length: 10 }, post));
    const ids: string[] = [];
    for (const a of answers)
      if (a.status === 202) ids.push(((await a.json()) as { task_id: string }).task_id);
    expect(ids.length).toBeGreaterThanOrEqual(8);
    // The synchronous answers are all in: a request at the upstream now is a task, so the kill lands mid-task.
    await waitFor(() => up.stats.inFlight >= 1, 5_000, 5);
    first.child.kill('SIGKILL');
    const second = start();
    await second.url;
    try {
      await waitFor(
        async () => {
          const rows = await A.dbh.db
            .selectFrom('task')
            .select(['id', 'status'])
            .where('id', 'in', ids)
            .execute();
          return rows.every((r) => r.status === 'succeeded');
        },
        20_000,
        100,
      );
      const rows = await A.dbh.db.selectFrom('task').selectAll().where('id', 'in', ids).execute();
      expect(rows).toHaveLength(ids.length);
      expect(rows.every((r) => r.completed_at !== null && r.result_status === 200)).toBe(true);
      const rerun = rows.filter((r) => r.attempts > 1).length;
      console.log(
        `restart: ${ids.length} tasks, all succeeded exactly once; ${rerun} claimed more than once (requeued for capacity or re-claimed after the kill); upstream saw ${up.stats.requests} requests for ${answers.length} submitted`,
      );
    } finally {
      up.setFault(null);
      second.child.kill('SIGTERM');
    }
  }, 40_000);
});

describe('cost budgets (sale price of the alias)', () => {
  it('a day budget in micro-units is not overshot by more than one request; after settlement it holds the actual cost', async () => {
    await admin('POST', '/prices', {
      alias: 'main',
      sale_input_per_mtok: 2_000_000,
      sale_output_per_mtok: 4_000_000,
      cost_input_per_mtok: 1_000_000,
      cost_output_per_mtok: 2_000_000,
    });
    await waitFor(() => !!A.config.price('main', null) && !!B.config.price('main', null), 2_000, 5);
    const limit = 2_000;
    const { sk, id } = await keyWith({ cost_per_day: limit });
    // As in the tokens test: a slow upstream keeps all 50 in flight together, so their reservations (prompt +
    // max_tokens at the sale price) pile up before any settles. 50 answers cost less than the budget, so
    // without the overlap nothing would be refused and the reservation path would go untested.
    up.setFault({ latencyMs: 200 });
    const res = await Promise.all(
      Array.from({ length: 50 }, (_, i) => chat(i % 2 ? A : B, sk, { max_tokens: 30 })),
    ).finally(() => up.setFault(null));
    let spent = 0;
    let maxOne = 0;
    let refused = 0;
    for (const r of res) {
      if (r.status === 200) {
        const u = ((await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
        const c = Math.ceil((u.prompt_tokens * 2_000_000 + u.completion_tokens * 4_000_000) / 1_000_000);
        spent += c;
        maxOne = Math.max(maxOne, c);
      } else {
        refused++;
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('budget_exceeded');
      }
    }
    expect(refused).toBeGreaterThan(0);
    expect(spent).toBeLessThanOrEqual(limit + maxOne);
    await waitFor(
      async () => (await A.quota.usage(appId, { ...scopeOf(id), costPerDay: limit })).costDay === spent,
      2_000,
      10,
    );
    console.log(
      `cost/day ${limit} micro-units: ${50 - refused} served for ${spent}; Redis holds the same after settlement`,
    );
    const p = await admin('GET', '/prices?alias=main');
    await admin('DELETE', `/prices/${p.data[0].id}?version_no=${p.data[0].version_no}`);
  });
});

describe('ASYNC results by webhook', () => {
  it('signed delivery, retried until the receiver answers (3 failures then success: one success recorded); an unreachable receiver never blocks the task', async () => {
    const { createServer } = await import('node:http');
    const { createHmac } = await import('node:crypto');
    let calls = 0;
    const got: Array<{ sig: string; ts: string; body: string }> = [];
    const recv = createServer((req, res) => {
      let b = '';
      req.on('data', (c: Buffer) => (b += c.toString()));
      req.on('end', () => {
        calls++;
        if (calls <= 3) {
          res.writeHead(503).end();
          return;
        }
        got.push({
          sig: String(req.headers['x-anima-signature']),
          ts: String(req.headers['x-anima-timestamp']),
          body: b,
        });
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((r) => recv.listen(0, '127.0.0.1', r));
    const hook = `http://127.0.0.1:${(recv.address() as { port: number }).port}/hook`;
    const secret = 'whsec-test-0123456789';
    const { sk, id } = await keyWith(
      { max_concurrency: 1 },
      { queue_mode: 'ASYNC', webhook_url: hook, webhook_secret: secret },
    );
    up.setFault({ latencyMs: 150 });
    const holder = chat(A, sk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the slot
    const q = await chat(B, sk);
    expect(q.status).toBe(202);
    const { task_id } = (await q.json()) as { task_id: string };
    await (await holder).arrayBuffer();
    up.setFault(null);
    await waitFor(() => got.length === 1, 10_000, 50);
    // Recorded as delivered, the delivery is never tried again: once the row says so, one call it stays.
    await waitFor(
      async () =>
        (
          await A.dbh.db
            .selectFrom('webhook_delivery')
            .select('status')
            .where('task_id', '=', task_id)
            .executeTakeFirst()
        )?.status === 'delivered',
      5_000,
      20,
    );
    expect(got).toHaveLength(1); // delivered once, not again
    expect(calls).toBe(4);
    const expected = `t=${got[0]!.ts},v1=${createHmac('sha256', secret).update(`${got[0]!.ts}.${got[0]!.body}`).digest('hex')}`;
    expect(got[0]!.sig).toBe(expected);
    const payload = JSON.parse(got[0]!.body) as { type: string; task: { id: string; status: string } };
    expect(payload).toMatchObject({ type: 'task.succeeded', task: { id: task_id, status: 'succeeded' } });
    const rows = await A.dbh.db
      .selectFrom('webhook_delivery')
      .selectAll()
      .where('task_id', '=', task_id)
      .execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status: 'delivered', attempts: 4, last_status: 200 });
    recv.close();

    // An unreachable receiver: the task still completes; its delivery stays pending with the error recorded.
    const k = await admin('GET', `/apps/${appId}/keys/${id}`);
    await admin(
      'PATCH',
      `/apps/${appId}/keys/${id}`,
      { webhook_url: 'http://127.0.0.1:9/unreachable' },
      k.version_no,
    );
    await waitFor(
      async () => (await B.config.keyByHash(hashKey(sk)))?.webhookUrl?.includes(':9/') === true,
      2_000,
      10,
    );
    up.setFault({ latencyMs: 150 });
    const h2 = chat(A, sk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the slot
    const q2 = await chat(B, sk);
    const t2 = ((await q2.json()) as { task_id: string }).task_id;
    await (await h2).arrayBuffer();
    up.setFault(null);
    await waitFor(
      async () =>
        (await A.dbh.db.selectFrom('task').select('status').where('id', '=', t2).executeTakeFirst())
          ?.status === 'succeeded',
      10_000,
      50,
    );
    await waitFor(
      async () =>
        !!(
          await A.dbh.db
            .selectFrom('webhook_delivery')
            .select('last_error')
            .where('task_id', '=', t2)
            .executeTakeFirst()
        )?.last_error,
      5_000,
      50,
    );
    const d2 = await A.dbh.db
      .selectFrom('webhook_delivery')
      .selectAll()
      .where('task_id', '=', t2)
      .executeTakeFirstOrThrow();
    expect(d2.status).toBe('pending');
    expect(d2.last_error).toBeTruthy();
  }, 30_000);
});
