/**
 * Quota slices (src/quota/slices.ts) on real Redis: several instances (each a SlicedQuota + Admission
 * with its own connection and instance id) share one scope's limits. Checks the overshoot bound written
 * in the slices.ts header under random traffic (seeded PRNG: a failure prints its seed), under a burst
 * near the limit, the Redis calls a far-from-limit request costs, and Redis losing the slices' records.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { TickPipeline } from '../../src/coord/tick-pipeline.js';
import { GatewayError } from '../../src/core/errors.js';
import { uniqueId } from '../../src/core/ids.js';
import type { ApiKey, Quota } from '../../src/core/model.js';
import { Abort } from '../../src/lib/abort.js';
import { Admission, type Lease } from '../../src/quota/admission.js';
import { MemoryQuota } from '../../src/quota/memory.js';
import { RedisQuota } from '../../src/quota/redis.js';
import { HORIZON_MS, SlicedQuota } from '../../src/quota/slices.js';
import type { ScopeLimits } from '../../src/quota/types.js';
import { REDIS_URL, cleanupRedis, freePort, startRedisServer, testRedisPrefix, waitFor } from '../helpers.js';

const prefix = testRedisPrefix();
afterAll(() => cleanupRedis(prefix));

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function apiKey(id: string, appId: string): ApiKey {
  return {
    id,
    appId,
    name: '',
    keyHash: 'h',
    keyPrefix: 'sk',
    enabled: true,
    allowedAliases: null,
    queueMode: 'REJECT',
    waitTimeoutMs: 1000,
    maxQueue: 10,
    tokenGroupId: null,
    webhookUrl: null,
    webhookSecret: null,
    versionNo: 1,
    effectiveFrom: 0,
    effectiveTo: null,
  };
}

function quota(scopeId: string, over: Partial<Quota>): Quota {
  return {
    id: '1',
    scope: 'key',
    scopeId,
    maxConcurrency: 0,
    qps: 0,
    qpsBurst: 1,
    tokensPerMinute: 0,
    tokensPerDay: 0,
    costPerDay: 0,
    costPerMonth: 0,
    versionNo: 1,
    effectiveFrom: 0,
    effectiveTo: null,
    ...over,
  };
}

interface Instance {
  sq: SlicedQuota;
  adm: Admission;
  /** Script calls this instance sent to Redis (admissions, settlements, slice calls). */
  calls: () => number;
  /** Admissions made by Admission's fallback (Redis unreachable). */
  degraded: () => number;
  close(): Promise<void>;
}

function instance(
  q: Quota,
  url = REDIS_URL,
  pfx = prefix,
  o: { leaseTtlMs?: number; fallback?: boolean; cluster?: number[] } = {},
): Instance {
  const ttl = o.leaseTtlMs ?? 30_000;
  const redis = o.cluster
    ? (new Cluster(o.cluster.map((port) => ({ host: '127.0.0.1', port }))) as unknown as Redis)
    : new Redis(url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => {}); // the unreachable-Redis case expects connection errors
  const tick = new TickPipeline(redis);
  let calls = 0;
  let degraded = 0;
  const call = tick.call.bind(tick);
  tick.call = <T>(name: string, args: Array<string | number>): Promise<T> => {
    calls++;
    return call<T>(name, args);
  };
  const inner = new RedisQuota(redis, pfx, tick);
  const sq = new SlicedQuota(inner, pfx, tick, { leaseTtlMs: ttl });
  const adm = new Admission(
    sq,
    {
      quota: (s, id) => (s === 'key' && (id === q.scopeId || o.cluster) ? { ...q, scopeId: id } : undefined),
    },
    { leaseTtlMs: ttl },
    { onDegraded: () => degraded++ },
    o.fallback ? { backend: new MemoryQuota(), share: 1 / 2 } : null,
  );
  return {
    sq,
    adm,
    calls: () => calls,
    degraded: () => degraded,
    async close() {
      await sq.close();
      tick.close();
      redis.disconnect();
    },
  };
}

const scopeOf = (q: Quota): ScopeLimits => ({
  scope: 'key',
  id: q.scopeId,
  maxConcurrency: q.maxConcurrency,
  qps: q.qps,
  qpsBurst: q.qpsBurst,
  tokensPerMinute: q.tokensPerMinute,
  tokensPerDay: q.tokensPerDay,
  costPerDay: q.costPerDay,
  costPerMonth: q.costPerMonth,
});

/** Admits, or null on a 429 (any other error fails the test). */
async function tryAdmit(i: Instance, key: ApiKey, tokens: number, cost: number): Promise<Lease | null> {
  try {
    const l = await i.adm.admit(key, () => ({ tokens, cost }), new Abort());
    return l as Lease;
  } catch (e) {
    if (e instanceof GatewayError && e.status === 429) return null;
    throw e;
  }
}

/** Most admissions inside any window of `w` ms. */
function maxInWindow(times: number[], w: number): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    while (t[i]! - t[j]! >= w) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

describe('quota slices', () => {
  it('far from its limits, a request costs far less than one Redis script call', async () => {
    const id = uniqueId('key_');
    const q = quota(id, {
      maxConcurrency: 1000,
      qps: 1_000_000,
      qpsBurst: 100_000,
      tokensPerMinute: 1_000_000_000,
      tokensPerDay: 10_000_000_000,
      costPerDay: 1_000_000_000_000,
    });
    const a = instance(q);
    const key = apiKey(id, uniqueId('app_'));
    const run = async (n: number) => {
      for (let done = 0; done < n; done += 30) {
        const leases = await Promise.all(Array.from({ length: 30 }, () => tryAdmit(a, key, 100, 10)));
        expect(leases.every((l) => l !== null)).toBe(true);
        await Promise.all(leases.map((l) => l!.settle(90, 9)));
      }
    };
    // Until the first slice is leased, requests take the exact path (admission + settlement each).
    const W = 300;
    await run(W);
    const warm = a.calls();
    console.log(`far from limits, warm-up: ${W} requests -> ${warm} script calls`);
    const N = 3000;
    const s0 = { ...a.sq.stats };
    await run(N);
    const calls = a.calls() - warm;
    console.log(
      `far from limits: ${N} requests -> ${calls} script calls (${a.sq.stats.local - s0.local} local, ` +
        `${a.sq.stats.remote - s0.remote} exact admissions, ${a.sq.stats.sliceCalls - s0.sliceCalls} slice calls)`,
    );
    expect(calls).toBeLessThan(N / 20);
    // A key used at a modest steady rate (~150/s, one at a time): renewals are what it costs.
    const paced0 = a.calls();
    const P = 300;
    for (let k = 0; k < P; k++) {
      await (await tryAdmit(a, key, 100, 10))!.settle(90, 9);
      await sleep(5);
    }
    const paced = a.calls() - paced0;
    console.log(`far from limits, one at a time: ${P} requests -> ${paced} script calls`);
    expect(paced).toBeLessThan(P / 10);
    // What was spent is in Redis's windows once the slice is renewed (90 tokens each) or given back.
    await waitFor(() => a.sq.held() === 0, 5_000, 50);
    const u = await a.sq.usage(key.appId, scopeOf(q));
    expect(u.tokensDay).toBe((W + N + P) * 90);
    expect(u.costDay).toBe((W + N + P) * 9);
    expect(await a.sq.inFlight(key.appId, scopeOf(q))).toBe(0);
    await a.close();
  });

  // Two shapes: limits close to the demand (mostly exact mode, slices now and then), and limits far
  // from it at first (mostly slices) with a cost budget that runs out halfway (slices shrink, then exact).
  const SHAPES: Array<[string, Partial<Quota>, number]> = [
    [
      'near',
      { maxConcurrency: 40, qps: 400, qpsBurst: 100, tokensPerMinute: 60_000, costPerDay: 500_000 },
      0,
    ],
    [
      'far, then out of budget',
      { maxConcurrency: 200, qps: 2000, qpsBurst: 1000, tokensPerMinute: 1_000_000, costPerDay: 800_000 },
      1,
    ],
  ];
  it.each(SHAPES)(
    'random traffic from 3 instances (%s) never passes the limits beyond the documented bound',
    async (_name, limits, salt) => {
      const seed = Number(process.env.SLICES_SEED ?? Date.now() % 1_000_000) + salt;
      const rnd = prng(seed);
      const id = uniqueId('key_');
      const q = quota(id, limits);
      const key = apiKey(id, uniqueId('app_'));
      const inst = [instance(q), instance(q), instance(q)];
      const EST_T = 100;
      const EST_C = 1000;
      let inFlight = 0;
      let maxInFlight = 0;
      let maxLatency = 0;
      const admittedAt: number[] = [];
      /** Per Redis minute / day of the reservation: actual usage and what went above the estimate. */
      const tokensByMinute = new Map<number, { actual: number; over: number }>();
      const costByDay = new Map<number, { actual: number; over: number }>();
      const tasks: Promise<void>[] = [];
      const until = Date.now() + 3_000;
      for (const [n, i] of inst.entries()) {
        tasks.push(
          (async () => {
            const mine: Promise<void>[] = [];
            while (Date.now() < until) {
              // First far from the limits (~70 arrivals/s per instance), then well past them (~250/s).
              await sleep(Math.floor(rnd() * (Date.now() < until - 1_500 ? 30 : 8)));
              const hold = Math.floor(rnd() * 300);
              const actualT = 50 + Math.floor(rnd() * 80);
              const actualC = 500 + Math.floor(rnd() * 700);
              mine.push(
                (async () => {
                  const s = performance.now();
                  const l = await tryAdmit(i, key, EST_T, EST_C);
                  maxLatency = Math.max(maxLatency, performance.now() - s);
                  if (!l) return;
                  admittedAt.push(performance.now());
                  inFlight++;
                  maxInFlight = Math.max(maxInFlight, inFlight);
                  const r = l.reservations[0]!;
                  await sleep(hold);
                  const m = tokensByMinute.get(r.minute) ?? { actual: 0, over: 0 };
                  m.actual += actualT;
                  m.over += Math.max(0, actualT - EST_T);
                  tokensByMinute.set(r.minute, m);
                  const d = costByDay.get(r.day) ?? { actual: 0, over: 0 };
                  d.actual += actualC;
                  d.over += Math.max(0, actualC - EST_C);
                  costByDay.set(r.day, d);
                  inFlight--;
                  await l.settle(actualT, actualC);
                })(),
              );
            }
            await Promise.all(mine);
            void n;
          })(),
        );
      }
      await Promise.all(tasks);
      const local = inst.reduce((s, i) => s + i.sq.stats.local, 0);
      const T = 1000 / q.qps;
      const tau = T * q.qpsBurst;
      // The bound in slices.ts: GCRA's in any 1 s window with the horizon a slice may hold an emission,
      // plus the admissions a measurement taken up to maxLatency late can move into a window.
      const qpsBound =
        Math.floor((1000 + tau + Math.max(HORIZON_MS, tau)) / T) + 1 + Math.ceil(maxLatency / T);
      const worstQps = maxInWindow(admittedAt, 1000);
      console.log(
        `seed ${seed}: ${admittedAt.length} admitted (${local} local), max in flight ${maxInFlight}, ` +
          `max in 1 s ${worstQps} (bound ${qpsBound}), tokens/minute ${JSON.stringify([...tokensByMinute])}, ` +
          `cost/day ${JSON.stringify([...costByDay])}`,
      );
      expect(local, `seed ${seed}`).toBeGreaterThan(0);
      expect(maxInFlight, `seed ${seed}`).toBeLessThanOrEqual(q.maxConcurrency);
      expect(worstQps, `seed ${seed}`).toBeLessThanOrEqual(qpsBound);
      for (const [, m] of tokensByMinute)
        expect(m.actual, `seed ${seed}`).toBeLessThanOrEqual(q.tokensPerMinute + m.over);
      for (const [, d] of costByDay)
        expect(d.actual, `seed ${seed}`).toBeLessThanOrEqual(q.costPerDay + d.over);
      await Promise.all(inst.map((i) => i.close()));
    },
    30_000,
  );

  it('a burst from 3 instances holding slices, on a key near its limits, stays within them', async () => {
    const id = uniqueId('key_');
    const q = quota(id, { maxConcurrency: 64, costPerDay: 200_000 });
    const key = apiKey(id, uniqueId('app_'));
    const inst = [instance(q), instance(q), instance(q)];
    let admitted = 0;
    const one = async (i: Instance) => {
      const l = await tryAdmit(i, key, 0, 1000);
      if (l) admitted++;
      return l;
    };
    // Warm up: every instance admits from a slice of its own.
    for (const i of inst) {
      for (let k = 0; k < 200 && i.sq.stats.local < 5; k++) await (await one(i))?.settle(0, 1000);
      expect(i.sq.stats.local).toBeGreaterThanOrEqual(5);
    }
    // The burst: 100 at once from each, all held: never more than maxConcurrency at once.
    const burst = (await Promise.all(inst.flatMap((i) => Array.from({ length: 100 }, () => one(i))))).filter(
      (l): l is Lease => l !== null,
    );
    expect(burst.length).toBeLessThanOrEqual(q.maxConcurrency);
    expect(burst.length).toBeGreaterThan(0);
    await Promise.all(burst.map((l) => l.settle(0, 1000)));
    // Bursts until the day's budget is gone (each request costs exactly its estimate: no true-up).
    for (let empty = 0; empty < 3;) {
      const r = (await Promise.all(inst.flatMap((i) => Array.from({ length: 30 }, () => one(i))))).filter(
        (l): l is Lease => l !== null,
      );
      await Promise.all(r.map((l) => l.settle(0, 1000)));
      if (r.length === 0) {
        empty++;
        // idle slices are given back: the budget they held returns to the pool before the next try
        await waitFor(() => inst.every((i) => i.sq.held() === 0), 5_000, 10);
      } else empty = 0;
    }
    console.log(`burst near the limit: ${admitted} admitted at 1000 each, budget ${q.costPerDay}`);
    expect(admitted * 1000).toBeLessThanOrEqual(q.costPerDay);
    // Exact mode near the limit lets the budget be spent down to the last requests' worth.
    expect(admitted * 1000).toBeGreaterThanOrEqual(q.costPerDay * 0.9);
    await Promise.all(inst.map((i) => i.close()));
    const r = new Redis(REDIS_URL);
    const after = await new RedisQuota(r, prefix).usage(key.appId, scopeOf(q));
    r.disconnect();
    expect(after.costDay).toBe(admitted * 1000);
  }, 30_000);

  it('a QPS burst from 3 instances holding slices stays within the documented bound', async () => {
    const id = uniqueId('key_');
    const q = quota(id, { qps: 1000, qpsBurst: 200 });
    const key = apiKey(id, uniqueId('app_'));
    const inst = [instance(q), instance(q), instance(q)];
    for (const i of inst) {
      for (let k = 0; k < 500 && i.sq.stats.local < 5; k++) {
        await (await tryAdmit(i, key, 0, 0))?.settle(0, 0);
        await sleep(2);
      }
      expect(i.sq.stats.local).toBeGreaterThanOrEqual(5);
    }
    const t0 = performance.now();
    const got = await Promise.all(
      inst.flatMap((i) => Array.from({ length: 400 }, () => tryAdmit(i, key, 0, 0))),
    );
    const span = performance.now() - t0;
    const n = got.filter((l) => l !== null).length;
    await Promise.all(got.map((l) => l?.settle(0, 0)));
    const T = 1000 / q.qps;
    const tau = T * q.qpsBurst;
    const exact = Math.floor((span + tau) / T) + 1;
    const bound = Math.floor((span + tau + Math.max(HORIZON_MS, tau)) / T) + 1;
    console.log(
      `QPS burst: ${n} of 1200 admitted in ${span.toFixed(0)} ms (exact GCRA ${exact}, bound ${bound})`,
    );
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThanOrEqual(bound);
    await Promise.all(inst.map((i) => i.close()));
  }, 30_000);

  it('Redis loses everything while slices are held: after the rebuild, limits still count them', async () => {
    const port = await freePort();
    const server = await startRedisServer(port, ['--save', '', '--appendonly', 'no']);
    const url = `redis://127.0.0.1:${port}`;
    try {
      const id = uniqueId('key_');
      const q = quota(id, { maxConcurrency: 64, tokensPerDay: 1_000_000 });
      const key = apiKey(id, uniqueId('app_'));
      const a = instance(q, url);
      const b = instance(q, url);
      // A holds a slice and 20 requests admitted from it, in flight.
      for (let k = 0; k < 200 && a.sq.stats.local < 3; k++)
        await (await tryAdmit(a, key, 100, 0))?.settle(100, 0);
      const held: Lease[] = [];
      while (held.length < 20) {
        const l = await tryAdmit(a, key, 100, 0);
        if (l?.reservations[0]!.local) held.push(l);
        else await l?.settle(100, 0);
      }
      const r = new Redis(url);
      await r.flushall();
      expect(await a.sq.inFlight(key.appId, scopeOf(q))).toBe(0);
      // The data-loss signal (the coordinator's): A registers what it holds again.
      await a.adm.rebuild();
      expect(await a.sq.inFlight(key.appId, scopeOf(q))).toBeGreaterThanOrEqual(20);
      expect((await a.sq.usage(key.appId, scopeOf(q))).tokensDay).toBeGreaterThanOrEqual(20 * 100);
      // B can't get more than what is left of the concurrency limit.
      const got = (await Promise.all(Array.from({ length: 100 }, () => tryAdmit(b, key, 100, 0)))).filter(
        (l): l is Lease => l !== null,
      );
      expect(got.length + held.length).toBeLessThanOrEqual(q.maxConcurrency);
      expect(got.length).toBeGreaterThan(0);
      await Promise.all([...got, ...held].map((l) => l.settle(100, 0)));
      await Promise.all([a.close(), b.close()]);
      // Everything given back: nothing left counted, and the day's window holds what was settled since.
      expect(await new RedisQuota(r, 'x').inFlight(key.appId, scopeOf(q))).toBe(0);
      r.disconnect();
    } finally {
      server.kill('SIGKILL');
    }
  }, 30_000);

  it('Redis unreachable: slices held are spent until they expire, then the fallback share admits', async () => {
    const port = await freePort();
    const server = await startRedisServer(port, ['--save', '', '--appendonly', 'no']);
    const id = uniqueId('key_');
    const q = quota(id, { maxConcurrency: 100, tokensPerMinute: 10_000_000 });
    const key = apiKey(id, uniqueId('app_'));
    // A lease TTL of 2 s: a slice is spent locally for at most 1 s after its last renewal.
    const a = instance(q, `redis://127.0.0.1:${port}`, prefix, { leaseTtlMs: 2_000, fallback: true });
    try {
      for (let k = 0; k < 200 && a.sq.stats.local < 3; k++)
        await (await tryAdmit(a, key, 10, 0))?.settle(10, 0);
      expect(a.sq.stats.local).toBeGreaterThanOrEqual(3);
      server.kill('SIGKILL');
      await waitFor(() => server.exitCode !== null || server.signalCode !== null, 5_000, 10);
      const local0 = a.sq.stats.local;
      // At once: the slice still has room, so requests are admitted here without Redis.
      await (await tryAdmit(a, key, 10, 0))!.settle(10, 0);
      expect(a.sq.stats.local).toBe(local0 + 1);
      expect(a.degraded()).toBe(0);
      // Once it expired, the exact path fails and Admission's fallback (this instance's share) answers.
      await waitFor(
        async () => {
          const l = await tryAdmit(a, key, 10, 0);
          await l?.settle(10, 0);
          return a.degraded() > 0;
        },
        5_000,
        50,
      );
      expect(a.degraded()).toBeGreaterThan(0);
    } finally {
      server.kill('SIGKILL');
      await a.close().catch(() => {});
    }
  }, 30_000);

  it('on a three-master Redis Cluster: keys of apps in different slots, slices hold the limits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anima-slices-cluster-'));
    const ports: number[] = [];
    const nodes = [];
    try {
      for (let i = 0; i < 3; i++) {
        const port = await freePort();
        ports.push(port);
        const d = join(dir, String(port));
        spawnSync('mkdir', ['-p', d]);
        const args = ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes'];
        args.push(
          '--cluster-config-file',
          join(d, 'nodes.conf'),
          '--dir',
          d,
          '--save',
          '',
          '--appendonly',
          'no',
        );
        nodes.push(spawn('redis-server', args, { stdio: 'ignore' }));
      }
      const cli = (p: number, ...a: string[]) =>
        spawnSync('redis-cli', ['-p', String(p), ...a], { encoding: 'utf8', timeout: 30_000 });
      await waitFor(() => ports.every((p) => cli(p, 'ping').stdout.trim() === 'PONG'), 10_000, 100);
      const hosts = ports.map((p) => `127.0.0.1:${p}`);
      const create = cli(
        ports[0]!,
        '--cluster',
        'create',
        ...hosts,
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      );
      expect(create.status, create.stdout + create.stderr).toBe(0);
      await waitFor(
        () => ports.every((p) => cli(p, 'cluster', 'info').stdout.includes('cluster_state:ok')),
        20_000,
        100,
      );
      const q = quota('any', { maxConcurrency: 64, costPerDay: 300_000 });
      const inst = [instance(q, '', prefix, { cluster: ports }), instance(q, '', prefix, { cluster: ports })];
      // Six apps with random ids: their hash tags ({q:<app>}) spread over the three masters.
      const keys = Array.from({ length: 6 }, () => apiKey(uniqueId('key_'), uniqueId('app_')));
      for (const key of keys) {
        let admitted = 0;
        for (let empty = 0; empty < 3;) {
          const got = (
            await Promise.all(
              inst.flatMap((i) => Array.from({ length: 40 }, () => tryAdmit(i, key, 0, 1000))),
            )
          ).filter((l): l is Lease => l !== null);
          expect(got.length).toBeLessThanOrEqual(q.maxConcurrency);
          admitted += got.length;
          await Promise.all(got.map((l) => l.settle(0, 1000)));
          if (got.length === 0) {
            empty++;
            await waitFor(() => inst.every((i) => i.sq.held() === 0), 5_000, 10);
          } else empty = 0;
        }
        expect(admitted * 1000).toBeLessThanOrEqual(q.costPerDay);
        expect(admitted * 1000).toBeGreaterThanOrEqual(q.costPerDay * 0.9);
      }
      const local = inst.reduce((n, i) => n + i.sq.stats.local, 0);
      console.log(`cluster: ${local} local admissions over ${keys.length} apps`);
      expect(local).toBeGreaterThan(0);
      await Promise.all(inst.map((i) => i.close()));
    } finally {
      for (const n of nodes) n.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
