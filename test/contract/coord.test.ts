/**
 * The coordination backends' contract, written once and run against the embedded default (in-process)
 * and Redis, on real Redis with a key prefix of this file's own. The cases are what the breakers
 * (src/breaker/breaker.ts), the config cache and its invalidation, and the response cache rely on:
 * breaker state moved by compare-and-swap on its generation (and a store that forgot is overwritten),
 * probe permits and success counters per generation that expire, channel health, the rebuild after data
 * loss, pub/sub delivered asynchronously, in order, to every subscriber, and expiring values.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { randomId } from '../../src/core/ids.js';
import { systemClock } from '../../src/lib/clock.js';
import { MemoryCoordinator } from '../../src/coord/memory.js';
import { RedisCoordinator } from '../../src/coord/redis.js';
import {
  type ChannelHealth,
  type Coordinator,
  type SharedBreakerState,
  HEALTHY,
} from '../../src/coord/types.js';
import { REDIS_URL, cleanupRedis, testRedisPrefix, waitFor } from '../helpers.js';

const prefix = testRedisPrefix();
afterAll(() => cleanupRedis(prefix));

const BACKENDS: Array<[string, () => Promise<Coordinator>]> = [
  ['memory', async () => new MemoryCoordinator(systemClock)],
  [
    'redis',
    async () => {
      const c = new RedisCoordinator({ url: REDIS_URL, prefix, epochCheckMs: 60_000 });
      await c.ready();
      return c;
    },
  ],
];

const state = (gen: number, over: Partial<SharedBreakerState> = {}): SharedBreakerState => ({
  state: 'open',
  gen,
  since: 1_700_000_000_000 + gen,
  openUntil: 1_700_000_030_000 + gen,
  reason: `gen ${gen}`,
  ...over,
});

describe.each(BACKENDS)('coordination backend contract: %s', (name, make) => {
  const opened: Coordinator[] = [];
  const open = async () => {
    const c = await make();
    opened.push(c);
    return c;
  };
  afterEach(async () => {
    for (const c of opened.splice(0)) await c.close();
  });
  const channel = () => 'ch_' + randomId(8);

  it('says which kind it is, answers ping, and tells a shared time close to this clock', async () => {
    const c = await open();
    expect(c.kind).toBe(name);
    expect(await c.ping()).toBe(true);
    expect(Math.abs((await c.time()) - Date.now())).toBeLessThan(1_000);
  });

  describe('breaker state', () => {
    it('a channel never written is absent (closed); CAS on its generation moves it, a stale CAS loses', async () => {
      const c = await open();
      const ch = channel();
      expect((await c.breakers.getAll()).has(ch)).toBe(false);
      expect(await c.breakers.cas(ch, 0, state(1))).toEqual({ ok: true, current: state(1) });
      // Another instance read generation 0 too: its write loses and it learns the newer state.
      expect(await c.breakers.cas(ch, 0, state(1, { reason: 'other' }))).toEqual({
        ok: false,
        current: state(1),
      });
      expect(await c.breakers.cas(ch, 1, state(2, { state: 'half_open' }))).toMatchObject({ ok: true });
      expect((await c.breakers.getAll()).get(ch)).toEqual(state(2, { state: 'half_open' }));
    });

    it('of many concurrent CAS writes on one generation, exactly one wins', async () => {
      const c = await open();
      const ch = channel();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => c.breakers.cas(ch, 0, state(1, { reason: `writer ${i}` }))),
      );
      const winners = results.filter((r) => r.ok);
      expect(winners).toHaveLength(1);
      for (const r of results) expect(r.current).toEqual(winners[0]!.current);
    });

    it('a stored generation below the writer’s means the store forgot: the write wins', async () => {
      const c = await open();
      const ch = channel();
      expect((await c.breakers.cas(ch, 7, state(8))).ok).toBe(true);
      await c.breakers.cas(ch, 8, state(9));
      expect((await c.breakers.cas(ch, 12, state(13))).ok).toBe(true);
      expect((await c.breakers.getAll()).get(ch)!.gen).toBe(13);
    });
  });

  describe('probe permits and counters', () => {
    it('hands out `max` probe permits per generation, fresh ones for the next generation', async () => {
      const c = await open();
      const ch = channel();
      const take = () => c.breakers.acquireProbe(ch, 3, 2, 60_000);
      expect([await take(), await take(), await take()]).toEqual([true, true, false]);
      expect(await c.breakers.acquireProbe(ch, 4, 2, 60_000)).toBe(true);
    });

    it('concurrent probes never get more than `max` permits', async () => {
      const c = await open();
      const ch = channel();
      const got = await Promise.all(
        Array.from({ length: 30 }, () => c.breakers.acquireProbe(ch, 1, 3, 60_000)),
      );
      expect(got.filter(Boolean)).toHaveLength(3);
    });

    it('permits come back when their TTL passes (a probe that never reported)', async () => {
      const c = await open();
      const ch = channel();
      expect(await c.breakers.acquireProbe(ch, 1, 1, 150)).toBe(true);
      expect(await c.breakers.acquireProbe(ch, 1, 1, 150)).toBe(false);
      // The TTL is what is under test; the first take after it starts a new count.
      await waitFor(() => c.breakers.acquireProbe(ch, 1, 1, 150), 5_000, 20);
    });

    it('counts successful probes per generation', async () => {
      const c = await open();
      const ch = channel();
      expect(await c.breakers.probeSucceeded(ch, 5, 60_000)).toBe(1);
      expect(await c.breakers.probeSucceeded(ch, 5, 60_000)).toBe(2);
      expect(await c.breakers.probeSucceeded(ch, 6, 60_000)).toBe(1);
    });
  });

  describe('channel health and the rebuild after data loss', () => {
    it('health round-trips per channel', async () => {
      const c = await open();
      const ch = channel();
      const h: ChannelHealth = {
        cooldownUntil: 123,
        credential: 'invalid',
        credentialSince: 100,
        updatedAt: 200,
      };
      await c.breakers.setHealth(ch, h);
      await c.breakers.setHealth(channel(), HEALTHY);
      expect((await c.breakers.getHealth()).get(ch)).toEqual(h);
    });

    it('restore writes back only where the store holds nothing or something older, and counts what it wrote', async () => {
      const c = await open();
      const [kept, older, missing] = [channel(), channel(), channel()];
      await c.breakers.cas(kept, 0, state(5));
      await c.breakers.cas(older, 0, state(2));
      const newer: ChannelHealth = { ...HEALTHY, credential: 'exhausted', updatedAt: 500 };
      await c.breakers.setHealth(kept, newer);
      const n = await c.breakers.restore(
        new Map([
          [kept, state(4)],
          [older, state(3)],
          [missing, state(1)],
        ]),
        new Map([
          [kept, { ...HEALTHY, updatedAt: 400 }],
          [missing, { ...HEALTHY, cooldownUntil: 9, updatedAt: 10 }],
        ]),
      );
      expect(n).toBe(3);
      const all = await c.breakers.getAll();
      expect([all.get(kept)!.gen, all.get(older)!.gen, all.get(missing)!.gen]).toEqual([5, 3, 1]);
      const health = await c.breakers.getHealth();
      expect(health.get(kept)).toEqual(newer);
      expect(health.get(missing)!.cooldownUntil).toBe(9);
      // Run again (every instance does it on the signal): nothing left to write.
      expect(await c.breakers.restore(new Map([[older, state(3)]]), new Map())).toBe(0);
    });
  });

  describe('pub/sub', () => {
    it('delivers to every subscriber of the topic, in publish order, never inside publish()', async () => {
      const c = await open();
      const topic = 't_' + randomId(6);
      const a: string[] = [];
      const b: string[] = [];
      const other: string[] = [];
      await c.subscribe(topic, (m) => a.push(m));
      await c.subscribe(topic, (m) => b.push(m));
      await c.subscribe(topic + '_other', (m) => other.push(m));
      const sent = Array.from({ length: 20 }, (_, i) => `m${i}`);
      const publishing = sent.map((m) => c.publish(topic, m));
      expect(a).toEqual([]); // asynchronous like a broker: a publisher never re-enters its handler
      await Promise.all(publishing);
      await waitFor(() => a.length === 20 && b.length === 20, 5_000);
      expect(a).toEqual(sent);
      expect(b).toEqual(sent);
      expect(other).toEqual([]);
    });

    it('an unsubscribed handler hears nothing more; the others still do', async () => {
      const c = await open();
      const topic = 't_' + randomId(6);
      const gone: string[] = [];
      const stays: string[] = [];
      const unsubscribe = await c.subscribe(topic, (m) => gone.push(m));
      await c.subscribe(topic, (m) => stays.push(m));
      await unsubscribe();
      await c.publish(topic, 'after');
      // Both handlers are called from the same delivery, so once one has it the other would have too.
      await waitFor(() => stays.length === 1, 5_000);
      expect(gone).toEqual([]);
    });

    it('two coordinators on one store see each other’s messages (Redis only: in-process has one instance)', async () => {
      if (name === 'memory') {
        // One process is the whole deployment: there is no second instance to reach. The case still checks
        // that a second MemoryCoordinator is isolated, which is what makes tests with several gateways
        // on the embedded default independent.
        const one = await open();
        const two = await open();
        const heard: string[] = [];
        await two.subscribe('iso', (m) => heard.push(m));
        await one.publish('iso', 'x');
        await two.publish('iso', 'y');
        await waitFor(() => heard.length === 1, 5_000);
        expect(heard).toEqual(['y']);
        return;
      }
      const one = await open();
      const two = await open();
      const topic = 't_' + randomId(6);
      const heard: string[] = [];
      await two.subscribe(topic, (m) => heard.push(m));
      await one.publish(topic, 'from one');
      await waitFor(() => heard.length === 1, 5_000);
      expect(heard).toEqual(['from one']);
    });
  });

  describe('values', () => {
    it('set, get, delete; a value is gone once its TTL passes', async () => {
      const c = await open();
      const k = 'v_' + randomId(6);
      expect(await c.getValue(k)).toBeNull();
      await c.setValue(k, 'one', 60_000);
      await c.setValue(k, 'two', 60_000);
      expect(await c.getValue(k)).toBe('two');
      await c.delValue(k);
      expect(await c.getValue(k)).toBeNull();
      await c.setValue(k, 'short', 100);
      expect(await c.getValue(k)).toBe('short');
      // The TTL is what is under test.
      await waitFor(async () => (await c.getValue(k)) === null, 5_000, 20);
    });
  });
});
