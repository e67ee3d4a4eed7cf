/**
 * The quota backends' contract, written once and run against the in-process backend (the embedded
 * default, and every Redis gateway's fallback) and the Redis script, on real Redis with a key prefix of
 * this file's own. The cases are what Admission (src/quota/admission.ts) relies on: all-or-nothing
 * admission over several scopes, concurrency leases that a settlement or their TTL gives back, GCRA
 * pacing, token and cost windows trued up at settlement exactly once, the WAIT queue, and windows seeded
 * from the ledger. Both backends run on real time (Redis's TIME, the system clock), so a case reads the
 * same for both; a case that waits for time to pass waits for the state it changes (waitFor).
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { randomId, uniqueId } from '../../src/core/ids.js';
import { GatewayError } from '../../src/core/errors.js';
import { MemoryQuota } from '../../src/quota/memory.js';
import { RedisQuota } from '../../src/quota/redis.js';
import {
  type AdmitRequest,
  type AdmitResult,
  type QuotaBackend,
  type QuotaSeedSource,
  type Reservation,
  type ScopeLimits,
  monthIndex,
} from '../../src/quota/types.js';
import { REDIS_URL, cleanupRedis, testRedisPrefix, waitFor } from '../helpers.js';

const prefix = testRedisPrefix();
afterAll(() => cleanupRedis(prefix));

/** What lasts longer than any month, so time `PAST_MS` ago is in an earlier month. */
const PAST_MS = 40 * 86_400_000;

interface Opened {
  q: QuotaBackend;
  close(): void;
  /** Leaves `cost` spent in the scope's windows PAST_MS ago, as that day's admissions would have. */
  spentInThePast(tag: string, s: ScopeLimits, cost: number): Promise<void>;
}
type Make = (seed?: QuotaSeedSource) => Opened;
const BACKENDS: Array<[string, Make]> = [
  [
    'memory',
    (seed) => {
      // The system clock, which spentInThePast turns back for one admission.
      let shift = 0;
      const q = new MemoryQuota({ now: () => Date.now() + shift }, seed);
      return {
        q,
        close() {},
        async spentInThePast(tag, s, cost) {
          shift = -PAST_MS;
          try {
            await q.settle(admitted(await q.admit(request(tag, [s], { cost }))), 0, cost);
          } finally {
            shift = 0;
          }
        },
      };
    },
  ],
  [
    'redis',
    (seed) => {
      const r = new Redis(REDIS_URL);
      const q = new RedisQuota(r, prefix, undefined, seed);
      return {
        q,
        close() {
          q.close();
          r.disconnect();
        },
        // Redis's TIME can't be turned back: the scope's state hash is written as ADMIT_LUA leaves it.
        async spentInThePast(tag, s, cost) {
          const day = Math.floor((Date.now() - PAST_MS) / 86_400_000);
          await r.hset(`${prefix}{q:${tag}}:s:${s.scope}:${s.id}`, {
            m: day * 1440,
            mu: 0,
            d: day,
            du: 0,
            dc: cost,
            mo: monthIndex(day),
            mc: cost,
          });
        },
      };
    },
  ],
];

const limits = (id: string, over: Partial<ScopeLimits> = {}): ScopeLimits => ({
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

const request = (tag: string, scopes: ScopeLimits[], over: Partial<AdmitRequest> = {}): AdmitRequest => ({
  tag,
  scopes,
  leaseId: uniqueId('l_'),
  leaseTtlMs: 30_000,
  tokens: 0,
  cost: 0,
  queue: 'k1',
  ...over,
});

function admitted(res: AdmitResult): Reservation {
  if (!res.ok) throw new Error(`expected an admission, got ${JSON.stringify(res)}`);
  return res.reservation;
}

function refused(res: AdmitResult): { limit: string; scope: string; retryAfterMs: number } {
  if (res.ok || res.queued) throw new Error(`expected a refusal, got ${JSON.stringify(res)}`);
  return res;
}

/**
 * Token windows are per minute: a case that reads one is not started in the last seconds of a minute, so
 * its window can't roll over (and give its budget back) halfway. Waiting here is for time itself.
 */
async function awayFromMinuteEdge(): Promise<void> {
  if (60_000 - (Date.now() % 60_000) < 5_000) await waitFor(() => Date.now() % 60_000 < 55_000, 10_000, 50);
}

describe.each(BACKENDS)('quota backend contract: %s', (name, make) => {
  const opened: Opened[] = [];
  const openFull = (seed?: QuotaSeedSource) => {
    const b = make(seed);
    opened.push(b);
    return b;
  };
  const open = (seed?: QuotaSeedSource) => openFull(seed).q;
  afterEach(() => {
    for (const b of opened.splice(0)) b.close();
  });
  const tag = () => 't' + randomId(8);

  describe('concurrency leases', () => {
    it('admits up to the limit, refuses the next with its scope and a retry time, and a settlement frees a slot', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { maxConcurrency: 2 });
      const a = admitted(await q.admit(request(t, [s])));
      admitted(await q.admit(request(t, [s])));
      const no = refused(await q.admit(request(t, [s])));
      expect(no).toMatchObject({ limit: 'concurrency', scope: 'key:k1' });
      expect(no.retryAfterMs).toBeGreaterThan(0);
      expect(await q.inFlight(t, s)).toBe(2);
      await q.settle(a, 0, 0);
      expect(await q.inFlight(t, s)).toBe(1);
      admitted(await q.admit(request(t, [s])));
      expect(await q.inFlight(t, s)).toBe(2);
    });

    it('a lease never settled (its instance died) stops counting once its TTL passes; a renewed one keeps counting', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { maxConcurrency: 2 });
      admitted(await q.admit(request(t, [s], { leaseTtlMs: 300 })));
      const kept = admitted(await q.admit(request(t, [s], { leaseTtlMs: 300 })));
      await q.renew(kept, 30_000);
      // The TTL is what is under test: wait for the unrenewed lease to stop counting.
      await waitFor(async () => (await q.inFlight(t, s)) === 1, 5_000, 20);
      admitted(await q.admit(request(t, [s])));
      refused(await q.admit(request(t, [s])));
    });

    it('is all or nothing over scopes: a refusal by the app scope takes nothing from the key scope', async () => {
      const q = open();
      const t = tag();
      const key = limits('k1', { maxConcurrency: 5, tokensPerDay: 10_000 });
      const app = { ...limits('a1', { maxConcurrency: 1 }), scope: 'app' as const };
      admitted(await q.admit(request(t, [key, app], { tokens: 10 })));
      expect(refused(await q.admit(request(t, [key, app], { tokens: 10 })))).toMatchObject({
        limit: 'concurrency',
        scope: 'app:a1',
      });
      expect(await q.inFlight(t, key)).toBe(1);
      expect((await q.usage(t, key)).tokensDay).toBe(10);
    });

    it('restoring a reservation the store still holds changes nothing (idempotent rebuild)', async () => {
      await awayFromMinuteEdge();
      const q = open();
      const t = tag();
      const s = limits('k1', { maxConcurrency: 3, tokensPerMinute: 1_000 });
      const r = admitted(await q.admit(request(t, [s], { tokens: 100 })));
      await q.restore([r], 30_000);
      await q.restore([r], 30_000);
      expect(await q.inFlight(t, s)).toBe(1);
      expect((await q.usage(t, s)).tokensMinute).toBe(100);
    });
  });

  describe('QPS (GCRA)', () => {
    it('paces at the rate after a burst of burst + 1, says how many are left, and admits again once the interval passes', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { qps: 5, qpsBurst: 2 });
      const left: number[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await q.admit(request(t, [s]));
        admitted(res);
        if (res.ok) {
          expect(res.remaining.requestsLimit).toBe(3);
          left.push(res.remaining.requestsRemaining);
        }
      }
      expect(left).toEqual([2, 1, 0]);
      const no = refused(await q.admit(request(t, [s])));
      expect(no.limit).toBe('qps');
      // One emission interval (200 ms) at most.
      expect(no.retryAfterMs).toBeGreaterThan(0);
      expect(no.retryAfterMs).toBeLessThanOrEqual(200);
      // A refusal spends nothing: polling admissions until one passes is the wait.
      const waited = await waitFor(async () => (await q.admit(request(t, [s]))).ok, 2_000, 10);
      expect(waited).toBeLessThan(1_000);
    });

    it('burst 0 paces strictly: the second request at once is refused', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { qps: 2, qpsBurst: 0 });
      admitted(await q.admit(request(t, [s])));
      expect(refused(await q.admit(request(t, [s]))).limit).toBe('qps');
    });
  });

  describe('token and cost windows', () => {
    it('reserves the estimate, refuses what would pass the minute limit, and trues up to actual usage', async () => {
      await awayFromMinuteEdge();
      const q = open();
      const t = tag();
      const s = limits('k1', { tokensPerMinute: 100 });
      const res = await q.admit(request(t, [s], { tokens: 60 }));
      const r = admitted(res);
      if (res.ok) expect(res.remaining).toMatchObject({ tokensLimit: 100, tokensRemaining: 40 });
      const no = refused(await q.admit(request(t, [s], { tokens: 60 })));
      expect(no.limit).toBe('tokens_minute');
      expect(no.retryAfterMs).toBeLessThanOrEqual(60_000);
      // The refused request took nothing.
      expect((await q.usage(t, s)).tokensMinute).toBe(60);
      await q.settle(r, 20, 0);
      expect((await q.usage(t, s)).tokensMinute).toBe(20);
      admitted(await q.admit(request(t, [s], { tokens: 60 })));
    });

    it('a settlement above the estimate takes the difference; a replayed settlement changes nothing', async () => {
      await awayFromMinuteEdge();
      const q = open();
      const t = tag();
      const s = limits('k1', { tokensPerMinute: 1_000, tokensPerDay: 1_000, costPerDay: 1_000 });
      const r = admitted(await q.admit(request(t, [s], { tokens: 10, cost: 10 })));
      await q.settle(r, 50, 70);
      await q.settle(r, 50, 70);
      expect(await q.usage(t, s)).toEqual({ tokensMinute: 50, tokensDay: 50, costDay: 70, costMonth: 70 });
    });

    it('day and month cost budgets refuse what would pass them', async () => {
      const q = open();
      const t = tag();
      const day = limits('kd', { costPerDay: 1_000 });
      const month = limits('km', { costPerMonth: 500 });
      const r = admitted(await q.admit(request(t, [day], { cost: 600 })));
      expect(refused(await q.admit(request(t, [day], { cost: 600 }))).limit).toBe('cost_day');
      await q.settle(r, 0, 100);
      expect(await q.usage(t, day)).toMatchObject({ costDay: 100, costMonth: 100 });
      admitted(await q.admit(request(t, [day], { cost: 600 })));
      expect(refused(await q.admit(request(t, [month], { cost: 600 }))).limit).toBe('cost_month');
      expect(
        refused(await q.admit(request(t, [limits('kt', { tokensPerDay: 50 })], { tokens: 60 }))).limit,
      ).toBe('tokens_day');
    });

    it("spending of an earlier month is not this month's: usage reads zero and the budget is whole again", async () => {
      const b = openFull();
      const t = tag();
      const s = limits('k1', { costPerMonth: 500 });
      await b.spentInThePast(t, s, 400);
      expect(await b.q.usage(t, s)).toEqual({ tokensMinute: 0, tokensDay: 0, costDay: 0, costMonth: 0 });
      admitted(await b.q.admit(request(t, [s], { cost: 450 })));
      expect((await b.q.usage(t, s)).costMonth).toBe(450);
    });

    it('a reservation never settled gives its tokens and cost back once its lease expires', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { tokensPerDay: 1_000, costPerDay: 5_000 });
      admitted(await q.admit(request(t, [s], { tokens: 600, cost: 3_000, leaseTtlMs: 200 })));
      expect(await q.usage(t, s)).toMatchObject({ tokensDay: 600, costDay: 3_000 });
      // Expired reservations are refunded by an admission on the tag (Redis: at most once a second), so
      // the wait admits empty requests until the windows are back to zero.
      await waitFor(
        async () => {
          const res = await q.admit(request(t, [s]));
          if (res.ok) await q.settle(res.reservation, 0, 0);
          return (await q.usage(t, s)).tokensDay === 0;
        },
        5_000,
        50,
      );
      expect(await q.usage(t, s)).toMatchObject({ tokensDay: 0, costDay: 0 });
    });

    // Once the lease expired and an admission gave the whole reservation back, a late settlement must not
    // true up again (it would give tokens and cost back twice and leave others' usage uncounted): both
    // backends true up only while the reservation is open (Redis: while its record is live).
    it('a late settlement of a reservation already refunded by its expiry changes nothing', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { tokensPerDay: 10_000 });
      const dead = admitted(await q.admit(request(t, [s], { tokens: 600, leaseTtlMs: 200 })));
      const other = admitted(await q.admit(request(t, [s], { tokens: 100 })));
      await waitFor(
        async () => {
          const res = await q.admit(request(t, [s]));
          if (res.ok) await q.settle(res.reservation, 0, 0);
          return (await q.usage(t, s)).tokensDay === 100;
        },
        5_000,
        50,
      );
      await q.settle(dead, 0, 0);
      expect((await q.usage(t, s)).tokensDay).toBe(100);
      await q.settle(other, 100, 0);
      expect((await q.usage(t, s)).tokensDay).toBe(100);
    });

    it('windows seeded from the ledger before the first admission: a restart does not give the day budget again', async () => {
      const seed: QuotaSeedSource = {
        figures: async () => ({ tokensDay: 900, costDay: 0, costMonth: 400 }),
      };
      const q = open(seed);
      const t = tag();
      const s = limits('k1', { tokensPerDay: 1_000, costPerMonth: 500 });
      expect(refused(await q.admit(request(t, [s], { tokens: 200 }))).limit).toBe('tokens_day');
      expect(refused(await q.admit(request(t, [s], { tokens: 10, cost: 200 }))).limit).toBe('cost_month');
      admitted(await q.admit(request(t, [s], { tokens: 50, cost: 50 })));
      expect(await q.usage(t, s)).toMatchObject({ tokensDay: 950, costMonth: 450 });
    });

    it('a ledger that does not answer while windows need seeding is a retryable 503, not an admission', async () => {
      const seed: QuotaSeedSource = {
        figures: async () => {
          throw new Error('ledger down');
        },
      };
      const q = open(seed);
      const err = await q.admit(request(tag(), [limits('k1', { costPerDay: 100 })])).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('service_unavailable');
    });
  });

  describe('the WAIT queue', () => {
    it('FIFO: only the head is admitted, a newcomer cannot jump the queue, leaving and a full queue behave', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { maxConcurrency: 5 });
      const far = Date.now() + 60_000;
      expect(await q.enqueue(t, 'k1', 'w1', far, 2)).toMatchObject({ ok: true, position: 0 });
      expect(await q.enqueue(t, 'k1', 'w2', far, 2)).toMatchObject({ ok: true, position: 1 });
      expect((await q.enqueue(t, 'k1', 'w3', far, 2)).ok).toBe(false);
      expect(await q.queueLength(t, 'k1')).toBe(2);
      // Free slots, but others are waiting: a request without a place in the queue is refused.
      expect(refused(await q.admit(request(t, [s]))).limit).toBe('concurrency');
      expect(await q.admit(request(t, [s], { waiter: { queue: 'k1', id: 'w2' } }))).toMatchObject({
        ok: false,
        queued: true,
      });
      const head = await q.admit(request(t, [s], { waiter: { queue: 'k1', id: 'w1' } }));
      admitted(head);
      expect(await q.queueLength(t, 'k1')).toBe(1);
      await q.leave(t, 'k1', 'w2');
      expect(await q.queueLength(t, 'k1')).toBe(0);
      admitted(await q.admit(request(t, [s])));
    });

    it('a waiter whose entry vanished is told so (missing), and requeue puts it back at its old place', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { maxConcurrency: 5 });
      const far = Date.now() + 60_000;
      const first = await q.enqueue(t, 'k1', 'w1', far, 10);
      await q.enqueue(t, 'k1', 'w2', far, 10);
      await q.leave(t, 'k1', 'w1'); // as if the store had lost w1's entry
      // w2 is the head now; w1 is not in the queue at all.
      expect(await q.admit(request(t, [s], { waiter: { queue: 'k1', id: 'w1' } }))).toMatchObject({
        ok: false,
        queued: true,
        missing: true,
      });
      expect(await q.requeue(t, 'k1', 'w1', far, first.score)).toBe(true);
      expect(await q.requeue(t, 'k1', 'w1', far, first.score)).toBe(true); // already queued: left as is
      expect(await q.queueLength(t, 'k1')).toBe(2);
      // Back at its old score: ahead of w2.
      admitted(await q.admit(request(t, [s], { waiter: { queue: 'k1', id: 'w1' } })));
      // Past its deadline: not queued again.
      expect(await q.requeue(t, 'k1', 'w9', Date.now() - 1_000)).toBe(false);
      expect(await q.queueLength(t, 'k1')).toBe(1);
    });

    it('an expired waiter at the head is dropped by the next enqueue and by the next waiter admission', async () => {
      const q = open();
      const t = tag();
      const s = limits('k1', { maxConcurrency: 5 });
      await q.enqueue(t, 'k1', 'gone', Date.now() - 1_000, 10);
      expect(await q.enqueue(t, 'k1', 'w1', Date.now() + 60_000, 10)).toMatchObject({
        ok: true,
        position: 0,
      });
      await q.leave(t, 'k1', 'w1');
      const deadline = Date.now() + 100;
      await q.enqueue(t, 'k1', 'late', deadline, 10);
      await q.enqueue(t, 'k1', 'w2', Date.now() + 60_000, 10);
      expect(await q.admit(request(t, [s], { waiter: { queue: 'k1', id: 'w2' } }))).toMatchObject({
        queued: true,
      });
      // The deadline passing is what is under test.
      await waitFor(() => Date.now() > deadline + 5, 2_000);
      admitted(await q.admit(request(t, [s], { waiter: { queue: 'k1', id: 'w2' } })));
      expect(await q.queueLength(t, 'k1')).toBe(0);
    });

    it('a settlement wakes the queue when someone waits in it', async () => {
      const q = open();
      const t = tag();
      const woken: string[] = [];
      await q.onWake((queue) => woken.push(queue));
      const s = limits('k1', { maxConcurrency: 1 });
      const queue = 'k' + randomId(6);
      const r = admitted(await q.admit(request(t, [s], { queue })));
      await q.enqueue(t, queue, 'w1', Date.now() + 60_000, 10);
      await q.settle(r, 0, 0);
      await waitFor(() => woken.includes(queue), 5_000);
    });

    // A key switched from WAIT to REJECT/ASYNC keeps its leftover waiters until they time out; "no jumping
    // the queue" holds only for a request that may queue, or every request of that key would be refused
    // with 'concurrency' for up to the wait timeout although slots are free.
    it('a key not in WAIT mode (mayQueue false) is admitted past a leftover queue', async () => {
      const q = open();
      const t = tag();
      await q.enqueue(t, 'k1', 'w1', Date.now() + 60_000, 10);
      admitted(await q.admit(request(t, [limits('k1', { maxConcurrency: 5 })], { mayQueue: false })));
    });
  });
});
