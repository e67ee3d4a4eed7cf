/**
 * The billing backends' contract, written once and run against the embedded default's in-process queue
 * and the Redis scripts and streams, on real Redis with a key prefix of this file's own. The cases are
 * what BillingService and the journal writer (src/billing/service.ts, writer.ts) rely on: wallet mirrors
 * seeded once and moved only forward, reservations that are idempotent and expire, a settlement that
 * releases its hold, charges a prepaid wallet at most what it has and queues the record exactly once, and
 * a queue that redelivers until acknowledged and acknowledges once.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { randomId } from '../../src/core/ids.js';
import { systemClock } from '../../src/lib/clock.js';
import { MemoryBilling } from '../../src/billing/memory.js';
import { RedisBilling, shardOf } from '../../src/billing/redis.js';
import type { BillingBackend, BillingRecord, Drained, QueuedRecord } from '../../src/billing/types.js';
import { REDIS_URL, cleanupRedis, testRedisPrefix, waitFor } from '../helpers.js';

afterAll(async () => {
  for (const p of prefixes) await cleanupRedis(p);
});
const prefixes: string[] = [];

type Make = () => { b: BillingBackend; close(): void };
const BACKENDS: Array<[string, Make]> = [
  ['memory', () => ({ b: new MemoryBilling(systemClock), close() {} })],
  [
    'redis',
    () => {
      // A prefix per case: the streams are per shard, not per app, so a case's reads see only its own records.
      const prefix = testRedisPrefix();
      prefixes.push(prefix);
      const r = new Redis(REDIS_URL);
      const b = new RedisBilling(r, prefix, 'c1');
      return {
        b,
        close() {
          b.close();
          r.disconnect();
        },
      };
    },
  ],
];

const record = (appId: string, over: Partial<BillingRecord> = {}): BillingRecord => ({
  id: 'req_' + randomId(10),
  requestId: 'req_x',
  appId,
  prepaid: true,
  alias: 'gpt',
  channel: 'oai',
  sale: 100n,
  cost: 60n,
  usage: { input: 10, output: 20 },
  at: 1_700_000_000_000,
  ...over,
});

/** Acknowledgements as the writer makes them once the records' journals are committed: one per shard. */
const drained = (
  recs: QueuedRecord[],
  wallets: Array<{ appId: string; available: bigint; version: bigint }> = [],
): Drained[] =>
  [...new Set(recs.map((q) => q.shard))].map((shard) => ({
    shard,
    records: recs
      .filter((q) => q.shard === shard)
      .map((q) => ({
        handle: q.handle,
        id: q.record.id,
        appId: q.record.appId,
        charged: q.record.charged!,
        marked: q.marked,
      })),
    wallets,
  }));
const ack = async (b: BillingBackend, ds: Drained[]) => {
  for (const d of ds) await b.ack(d);
};

/** A task's record: settled by whichever instance finishes or sweeps the task, so checked for replays. */
const taskRecord = (appId: string, over: Partial<BillingRecord> = {}): BillingRecord => {
  const t = 'task_' + randomId(10);
  return record(appId, { id: `task:${t}`, taskId: t, requestId: undefined, ...over });
};

describe.each(BACKENDS)('billing backend contract: %s', (name, make) => {
  const opened: Array<{ close(): void }> = [];
  const open = () => {
    const x = make();
    opened.push(x);
    return x.b;
  };
  afterEach(() => {
    for (const x of opened.splice(0)) x.close();
  });
  const app = () => 'app_' + randomId(8);

  it('says which kind it is', () => {
    expect(open().kind).toBe(name);
  });

  describe('wallet mirror', () => {
    it('an unmirrored wallet is unknown; initWallet seeds it once; refreshWallet moves it only forward', async () => {
      const b = open();
      const a = app();
      expect(await b.wallet(a)).toBeNull();
      expect(await b.reserve(a, 'h1', 10n, 60_000)).toEqual({ ok: false, reason: 'unknown' });
      await b.refreshWallet(a, 500n, 9n); // not mirrored: nothing to move
      expect(await b.wallet(a)).toBeNull();
      await b.initWallet(a, 1_000n, 5n);
      await b.initWallet(a, 7n, 6n); // already mirrored: no-op
      expect(await b.wallet(a)).toEqual({ ledger: 1_000n, unwritten: 0n, reserved: 0n });
      await b.refreshWallet(a, 800n, 4n); // older
      expect((await b.wallet(a))!.ledger).toBe(1_000n);
      await b.refreshWallet(a, 800n, 6n);
      expect((await b.wallet(a))!.ledger).toBe(800n);
    });
  });

  describe('reservations', () => {
    it('reserve up to what is spendable; the same hold twice is one hold; release is idempotent', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 100n, 1n);
      expect(await b.reserve(a, 'h1', 60n, 60_000)).toEqual({ ok: true });
      expect(await b.reserve(a, 'h1', 60n, 60_000)).toEqual({ ok: true });
      expect(await b.reserve(a, 'h2', 60n, 60_000)).toEqual({
        ok: false,
        reason: 'insufficient',
        available: 40n,
      });
      expect((await b.wallet(a))!.reserved).toBe(60n);
      await b.release(a, 'h1');
      await b.release(a, 'h1');
      await b.release(a, 'never-held');
      expect((await b.wallet(a))!.reserved).toBe(0n);
      expect(await b.reserve(a, 'h2', 100n, 60_000)).toEqual({ ok: true });
    });

    it('a hold whose holder died expires after its TTL and is given back by the next reservation', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 100n, 1n);
      await b.reserve(a, 'dead', 100n, 150);
      expect((await b.reserve(a, 'h2', 1n, 60_000)).ok).toBe(false);
      // The TTL is what is under test: a refused reservation changes nothing, so it can be the poll.
      await waitFor(async () => (await b.reserve(a, 'h2', 100n, 60_000)).ok, 5_000, 20);
      expect((await b.wallet(a))!.reserved).toBe(100n);
    });
  });

  describe('settlement', () => {
    it('releases its hold, charges a prepaid wallet at most what it has, and queues the record once', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 100n, 1n);
      await b.reserve(a, 'h1', 30n, 60_000);
      const rec = taskRecord(a, { sale: 150n });
      // The hold is released first, so all 100 are spendable: charged 100, the other 50 uncollectable.
      expect(await b.settle(rec, 'h1')).toEqual({ duplicate: false, charged: 100n });
      expect(await b.wallet(a)).toEqual({ ledger: 100n, unwritten: 100n, reserved: 0n });
      expect(await b.settle(rec, 'h1')).toEqual({ duplicate: true, charged: 0n });
      expect(await b.wallet(a)).toEqual({ ledger: 100n, unwritten: 100n, reserved: 0n });
      expect(await b.backlog()).toBe(1);
      expect(await b.reserve(a, 'h3', 1n, 60_000)).toEqual({
        ok: false,
        reason: 'insufficient',
        available: 0n,
      });
    });

    it('a replayed settlement is refused but still releases the hold it names', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 1_000n, 1n);
      const rec = taskRecord(a, { sale: 100n });
      await b.settle(rec, null);
      await b.reserve(a, 'h2', 50n, 60_000);
      expect(await b.settle(rec, 'h2')).toEqual({ duplicate: true, charged: 0n });
      expect(await b.wallet(a)).toEqual({ ledger: 1_000n, unwritten: 100n, reserved: 0n });
    });

    // The pipeline never settles a request twice; if it did, the backend may queue the copy (Redis keeps no
    // marker for a request's record), but its charge may only wait in 'unwritten' until acknowledged.
    it("a request's record settled twice leaves the wallet whole once everything read is acknowledged", async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 1_000n, 1n);
      const rec = record(a, { sale: 100n });
      expect(await b.settle(rec, null)).toEqual({ duplicate: false, charged: 100n });
      const again = await b.settle(rec, null);
      const q = await b.read(10);
      expect(q.length).toBe(again.duplicate ? 1 : 2);
      expect(new Set(q.map((x) => x.record.id))).toEqual(new Set([rec.id]));
      await ack(b, drained(q, [{ appId: a, available: 900n, version: 2n }]));
      expect(await b.backlog()).toBe(0);
      expect(await b.wallet(a)).toEqual({ ledger: 900n, unwritten: 0n, reserved: 0n });
    });

    // A hold of zero (or less) is a no-op on both: nothing is held, so nothing can expire or be given back
    // later. Redis once stored it, and giving '0' back sent HINCRBY "-0", which Redis refuses.
    it('a hold of zero or less is a no-op, and releasing or settling it works', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 100n, 1n);
      expect(await b.reserve(a, 'z1', 0n, 60_000)).toEqual({ ok: true });
      expect(await b.reserve(a, 'z2', 0n, 60_000)).toEqual({ ok: true });
      expect(await b.reserve(a, 'z3', -5n, 60_000)).toEqual({ ok: true });
      expect(await b.wallet(a)).toEqual({ ledger: 100n, unwritten: 0n, reserved: 0n });
      await b.release(a, 'z1');
      await b.release(a, 'z3');
      expect(await b.settle(record(a, { sale: 10n }), 'z2')).toEqual({ duplicate: false, charged: 10n });
      expect(await b.wallet(a)).toEqual({ ledger: 100n, unwritten: 10n, reserved: 0n });
      expect(await b.reserve(a, 'h1', 90n, 60_000)).toEqual({ ok: true });
    });

    it('a postpaid record, or a prepaid one whose wallet is not mirrored, is charged its sale and touches no wallet', async () => {
      const b = open();
      const post = app();
      await b.initWallet(post, 10n, 1n);
      expect(await b.settle(record(post, { prepaid: false, sale: 500n }), null)).toEqual({
        duplicate: false,
        charged: 500n,
      });
      expect((await b.wallet(post))!.unwritten).toBe(0n);
      expect(await b.settle(record(app(), { sale: 70n }), null)).toEqual({ duplicate: false, charged: 70n });
    });

    it('a record read back carries every field and what it charged', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 1_000n, 1n);
      const rec = record(a, {
        taskId: 'task_1',
        sale: 123n,
        cost: 45n,
        usage: { input: 1, nested: { x: [1, 2] } },
      });
      await b.settle(rec, null);
      const [q] = await b.read(10);
      const { by, ...back } = q!.record;
      expect(back).toEqual({ ...rec, charged: 123n });
      // Redis's records say which instance settled them (its writer's messages go there); one process has no other.
      expect(by).toBe(name === 'redis' ? 'c1' : undefined);
    });

    // `charge` (a resend after Redis lost the record) is charged in place of the sale. Only Redis's
    // data-loss signal leads BillingService to resend, but the in-process backend keeps the same contract.
    it('a resend charges what the first settlement charged, not the sale', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 1_000n, 1n);
      expect(await b.settle(record(a, { sale: 100n }), null, 40n)).toEqual({
        duplicate: false,
        charged: 40n,
      });
      expect((await b.wallet(a))!.unwritten).toBe(40n);
    });
  });

  describe('the durable queue', () => {
    it('redelivers until acknowledged; an acknowledgement counts once; then the id may settle again', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 1_000n, 1n);
      const r1 = record(a, { sale: 100n });
      const r2 = record(a, { sale: 50n });
      await b.settle(r1, null);
      await b.settle(r2, null);
      expect(await b.backlog()).toBe(2);
      const first = await b.read(10);
      expect(first.map((q) => q.record.id).sort()).toEqual([r1.id, r2.id].sort());
      // Not acknowledged (the writer's commit failed): read again.
      const again = await b.read(10);
      expect(again.map((q) => q.handle).sort()).toEqual(first.map((q) => q.handle).sort());
      expect((await b.wallet(a))!.unwritten).toBe(150n);
      // Committed: the ledger now holds the charges (balance 850 at version 3).
      const d = drained(first, [{ appId: a, available: 850n, version: 3n }]);
      await ack(b, d);
      await ack(b, d);
      expect(await b.backlog()).toBe(0);
      expect(await b.read(10)).toEqual([]);
      expect(await b.wallet(a)).toEqual({ ledger: 850n, unwritten: 0n, reserved: 0n });
      // The journal's idempotency key guards the id from here on; the backend lets it through again.
      expect((await b.settle(r1, null)).duplicate).toBe(false);
    });

    it('a prepaid record charged nothing is acknowledged like any other', async () => {
      const b = open();
      const a = app();
      await b.initWallet(a, 0n, 1n);
      expect(await b.settle(record(a, { sale: 30n }), null)).toEqual({ duplicate: false, charged: 0n });
      expect(await b.settle(record(a, { sale: 0n }), null)).toEqual({ duplicate: false, charged: 0n });
      const q = await b.read(10);
      expect(q).toHaveLength(2);
      await ack(b, drained(q, [{ appId: a, available: 0n, version: 2n }]));
      expect(await b.backlog()).toBe(0);
      expect(await b.wallet(a)).toEqual({ ledger: 0n, unwritten: 0n, reserved: 0n });
    });

    it('read takes at most `count` records and leaves the rest for the next read', async () => {
      const b = open();
      const a = app();
      for (let i = 0; i < 5; i++) await b.settle(record(a, { prepaid: false }), null);
      const some = await b.read(3);
      expect(some).toHaveLength(3);
      await ack(b, drained(some));
      const rest = await b.read(10);
      expect(rest).toHaveLength(2);
      await ack(b, drained(rest));
      expect(await b.backlog()).toBe(0);
    });
  });
});

// Not a contract case (only Redis keeps holds across versions): a zero hold an older version stored must
// not, when it expires, break the wallet's later reservations (giving '0' back once sent HINCRBY "-0").
describe('redis billing: a zero hold left by an older version', () => {
  it('expires without harm, and the wallet reserves as before', async () => {
    const prefix = testRedisPrefix();
    prefixes.push(prefix);
    const r = new Redis(REDIS_URL);
    const b = new RedisBilling(r, prefix, 'c1');
    try {
      const a = 'app_' + randomId(8);
      await b.initWallet(a, 100n, 1n);
      const t = `${prefix}{b:${shardOf(a)}}`;
      await r.hset(`${t}:wa:${a}`, 'old', '0');
      await r.zadd(`${t}:wh:${a}`, 0, 'old');
      expect(await b.reserve(a, 'h1', 60n, 60_000)).toEqual({ ok: true });
      expect(await r.zscore(`${t}:wh:${a}`, 'old')).toBeNull();
      expect(await b.wallet(a)).toEqual({ ledger: 100n, unwritten: 0n, reserved: 60n });
      await b.release(a, 'h1');
      expect((await b.wallet(a))!.reserved).toBe(0n);
    } finally {
      b.close();
      r.disconnect();
    }
  });
});

// Not a contract case: how the Redis backend lays records out in its streams.
describe('redis billing: streams', () => {
  const opened: Array<{ b: RedisBilling; r: Redis }> = [];
  afterEach(() => {
    for (const { b, r } of opened.splice(0)) {
      b.close();
      r.disconnect();
    }
  });
  const open = () => {
    const prefix = testRedisPrefix();
    prefixes.push(prefix);
    const r = new Redis(REDIS_URL);
    const b = new RedisBilling(r, prefix, 'c1');
    opened.push({ b, r });
    return { b, r, prefix };
  };

  it("one turn's settlements share one stream entry, read whole, acknowledged once, markers dropped", async () => {
    const { b, r, prefix } = open();
    const a = 'app_' + randomId(8);
    await b.initWallet(a, 1_000n, 1n);
    await b.reserve(a, 'h1', 200n, 60_000);
    const task = taskRecord(a, { sale: 40n });
    const recs = [record(a, { sale: 100n }), record(a, { sale: 30n }), task, record(a, { sale: 20n })];
    const results = await Promise.all([
      b.settle(recs[0]!, 'h1'),
      b.settle(recs[1]!, null),
      b.settle(recs[2]!, null),
      b.settle(task, null), // the same task twice in one turn: the second is refused
      b.settle(recs[3]!, null),
    ]);
    expect(results.map((x) => [x.duplicate, x.charged])).toEqual([
      [false, 100n],
      [false, 30n],
      [false, 40n],
      [true, 0n],
      [false, 20n],
    ]);
    expect(await b.backlog()).toBe(1);
    expect(await b.wallet(a)).toEqual({ ledger: 1_000n, unwritten: 190n, reserved: 0n });
    expect(await r.keys(`${prefix}*:done:*`)).toHaveLength(1);
    // Fewer than the entry carries: the entry comes whole (its records are acknowledged together).
    const q = await b.read(2);
    expect(q.map((x) => x.record.id)).toEqual(recs.map((x) => x.id));
    expect(new Set(q.map((x) => x.handle)).size).toBe(1);
    expect(q.map((x) => x.marked)).toEqual([false, false, true, false]);
    expect(q.map((x) => x.record.charged)).toEqual([100n, 30n, 40n, 20n]);
    const d = drained(q, [{ appId: a, available: 810n, version: 4n }]);
    await ack(b, d);
    await ack(b, d); // a second acknowledgement subtracts nothing
    expect(await b.wallet(a)).toEqual({ ledger: 810n, unwritten: 0n, reserved: 0n });
    expect(await b.backlog()).toBe(0);
    expect(await r.keys(`${prefix}*:done:*`)).toEqual([]);
  });

  it("a busy postpaid app's records spread over every shard, each turn's in one entry", async () => {
    const { b } = open();
    const a = 'app_' + randomId(8);
    for (let turn = 0; turn < 8; turn++)
      await Promise.all(Array.from({ length: 5 }, () => b.settle(record(a, { prepaid: false }), null)));
    expect(await b.backlog()).toBe(8);
    const q = await b.read(100);
    expect(q).toHaveLength(40);
    expect(new Set(q.map((x) => x.shard)).size).toBe(8);
    expect(new Set(q.map((x) => `${x.shard} ${x.handle}`)).size).toBe(8); // entry ids are per stream
    await ack(b, drained(q));
    expect(await b.backlog()).toBe(0);
  });

  it('records an instance of the previous version queued (one per entry, in the old stream) are read and acknowledged', async () => {
    const { b, r, prefix } = open();
    const a = 'app_' + randomId(8);
    await b.initWallet(a, 1_000n, 1n);
    const old = `${prefix}{b:${shardOf(a)}}:j`;
    await r.xgroup('CREATE', old, 'writers', '0', 'MKSTREAM');
    const rec = record(a, { sale: 70n });
    const enc = JSON.stringify({ ...rec, sale: '70', cost: '60' });
    await r.set(`${prefix}{b:${shardOf(a)}}:done:${rec.id}`, '1');
    await r.hincrby(`${prefix}{b:${shardOf(a)}}:w:${a}`, 'pend', 70);
    await r.xadd(old, '*', 'r', enc, 'c', '70');
    const q = await b.read(10);
    expect(q.map((x) => [x.record.id, x.record.sale, x.record.charged])).toEqual([[rec.id, 70n, 70n]]);
    // Records of that version all had markers: they are dropped as that version did.
    expect(q[0]!.marked).toBe(true);
    await ack(b, drained(q, [{ appId: a, available: 930n, version: 2n }]));
    expect(await r.xlen(old)).toBe(0);
    expect(await b.wallet(a)).toEqual({ ledger: 930n, unwritten: 0n, reserved: 0n });
    expect(await r.keys(`${prefix}*:done:*`)).toEqual([]);
  });
});
