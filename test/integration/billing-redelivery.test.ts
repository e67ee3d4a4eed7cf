/**
 * The journal writer's exactly-once and the ledger's balance invariant on the batched write path, on real
 * PostgreSQL and Redis:
 *  - a batch committed whose acknowledgement never reached Redis (the writer died between the two) is
 *    delivered again, to the same consumer after a restart and to another one that takes it over, and
 *    each record still has exactly one journal; the wallet mirrors and markers end as if nothing happened;
 *  - writers posting overlapping batches at once (the same records in several batches, shared hot
 *    accounts, a prepaid wallet that runs dry) leave every journal balanced and every account's totals
 *    equal to the sum of its entries.
 */
import { Redis } from 'ioredis';
import pino from 'pino';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomId } from '../../src/core/ids.js';
import { FUNDING, saleJournal, walletAccount } from '../../src/billing/journal.js';
import { Ledger, LedgerError } from '../../src/billing/ledger.js';
import { MemoryBilling } from '../../src/billing/memory.js';
import { RedisBilling } from '../../src/billing/redis.js';
import { systemClock } from '../../src/lib/clock.js';
import type { BillingBackend, BillingRecord, Drained } from '../../src/billing/types.js';
import { JournalWriter } from '../../src/billing/writer.js';
import { type DbHandle, openDatabase } from '../../src/store/db.js';
import {
  REDIS_URL,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  testRedisPrefix,
} from '../helpers.js';

let tdb: TestDatabase;
let h: DbHandle;
let redis: Redis;
const prefixes: string[] = [];
const log = pino({ level: 'silent' });
const FUND = 1_000_000n;

beforeAll(async () => {
  tdb = await createTestDatabase();
  h = await openDatabase({
    databaseUrl: tdb.url,
    dataDir: 'memory://',
    poolSize: 8,
    connectTimeoutMs: 60_000,
  });
  redis = new Redis(REDIS_URL);
  await new Ledger(h.db).ensureAccount(FUNDING);
});

afterAll(async () => {
  for (const p of prefixes) await cleanupRedis(p);
  redis?.disconnect();
  await h?.close();
  await tdb?.drop();
});

async function fund(ledger: Ledger, appId: string, amount: bigint): Promise<void> {
  const w = walletAccount(appId);
  await ledger.ensureAccount(w);
  await ledger.postJournal({
    idemKey: `fund:${appId}`,
    kind: 'fund',
    entries: [
      { account: FUNDING.code, debit: amount },
      { account: w.code, credit: amount },
    ],
  });
}

const record = (i: number, appId: string, prepaid: boolean): BillingRecord => ({
  id: `req_${randomId(10)}_${i}`,
  requestId: `req_${i}`,
  appId,
  prepaid,
  alias: 'gpt',
  channel: `ch${i % 3}`,
  sale: 100n + BigInt(i % 7),
  cost: 60n + BigInt(i % 5),
  usage: { input_tokens: 10, output_tokens: 20, key_id: `key_${appId}` },
  at: Date.now(),
});

/** The backend as a writer sees it, except that the first `failAcks` acknowledgements die on the way. */
function ackDies(b: BillingBackend, failAcks: number): BillingBackend & { acksLost: number } {
  let left = failAcks;
  const wrapped = Object.create(b) as BillingBackend & { acksLost: number };
  wrapped.acksLost = 0;
  wrapped.ack = async (d: Drained) => {
    if (left > 0) {
      left--;
      wrapped.acksLost++;
      throw new Error('the process died before acknowledging');
    }
    return b.ack(d);
  };
  return wrapped;
}

async function journalsPerRecord(ids: string[]): Promise<Map<string, number>> {
  const { rows } = await sql<{ idem_key: string; n: number }>`
    SELECT idem_key, count(*)::int AS n FROM ledger_journal WHERE idem_key = ANY(${ids.map((id) => `sale:${id}`)}::text[])
    GROUP BY idem_key`.execute(h.db);
  return new Map(rows.map((r) => [r.idem_key.slice('sale:'.length), r.n]));
}

async function expectBooksBalance(): Promise<void> {
  const tb = await new Ledger(h.db).trialBalance();
  expect(tb.mismatches).toEqual([]);
  expect(tb.balanced).toBe(true);
  const { rows } = await sql<{ journal_id: string }>`
    SELECT journal_id::text FROM ledger_posting GROUP BY journal_id HAVING sum(debit) <> sum(credit)`.execute(
    h.db,
  );
  expect(rows).toEqual([]);
}

describe('a batch committed but not acknowledged is delivered again', () => {
  it.each([
    ['the same consumer, restarted', 'c1'],
    ['another consumer, taking it over', 'c2'],
  ])(
    'to %s: each record has exactly one journal, mirrors and markers end clean',
    async (_name, second) => {
      const prefix = testRedisPrefix();
      prefixes.push(prefix);
      const ledger = new Ledger(h.db);
      const apps = ['pre_' + randomId(6), 'post_' + randomId(6), 'pre_' + randomId(6)];
      for (const a of apps) if (a.startsWith('pre_')) await fund(ledger, a, FUND);
      const first = new RedisBilling(redis, prefix, 'c1', 0);
      for (const a of apps) {
        const b = await ledger.balance(walletAccount(a).code).catch(() => null);
        if (b) await first.initWallet(a, b.available, b.debitsPosted + b.creditsPosted);
      }
      const recs = Array.from({ length: 240 }, (_, i) =>
        record(i, apps[i % 3]!, apps[i % 3]!.startsWith('pre_')),
      );
      for (const r of recs) expect((await first.settle(r, null)).duplicate).toBe(false);

      // The first writer commits one batch, then dies before its acknowledgement reaches Redis.
      const dying = ackDies(first, 1);
      const w1 = new JournalWriter(dying, ledger, log, { batch: 100, idleMs: 10, retryMs: 10 });
      await expect(w1.drainOnce()).rejects.toThrow(/died before acknowledging/);
      expect(dying.acksLost).toBe(1);
      const committed = [...(await journalsPerRecord(recs.map((r) => r.id))).keys()];
      expect(committed.length).toBe(100);
      expect(await first.backlog()).toBe(240);

      // A writer after the restart (or on another instance, staleMs 0: the dead consumer's records are stale
      // at once) reads the committed-but-unacknowledged records again and writes everything.
      const b2 =
        second === 'c1'
          ? new RedisBilling(redis, prefix, 'c1', 0)
          : new RedisBilling(redis, prefix, second, 0);
      const w2 = new JournalWriter(b2, ledger, log, { batch: 100, idleMs: 10, retryMs: 10 });
      await w2.flush(60_000);
      expect(await b2.backlog()).toBe(0);

      const counts = await journalsPerRecord(recs.map((r) => r.id));
      expect(counts.size).toBe(recs.length);
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
      // No exactly-once marker left behind, and no record left in any stream.
      expect(await redis.keys(`${prefix}*:done:*`)).toEqual([]);
      for (const a of apps.filter((x) => x.startsWith('pre_'))) {
        const m = (await b2.wallet(a))!;
        const charged = recs.filter((r) => r.appId === a).reduce((s, r) => s + r.sale, 0n);
        // Every charge left 'unwritten' exactly once, and the mirror shows the ledger's balance.
        expect(m.unwritten).toBe(0n);
        expect(m.ledger).toBe(FUND - charged);
        expect((await ledger.balance(walletAccount(a).code)).available).toBe(FUND - charged);
      }
      b2.close();
      first.close();
      await expectBooksBalance();
    },
    120_000,
  );
});

describe('the balance invariant under concurrent batches', () => {
  it('overlapping batches from several writers: every journal balances, every account equals its entries', async () => {
    const ledgers = Array.from({ length: 4 }, () => new Ledger(h.db));
    const rich = 'rich_' + randomId(6);
    const poor = 'poor_' + randomId(6);
    await fund(ledgers[0]!, rich, FUND);
    await fund(ledgers[0]!, poor, 5_000n);
    const post = 'post_' + randomId(6);
    const recs = Array.from({ length: 600 }, (_, i) =>
      i % 3 === 0 ? record(i, rich, true) : i % 3 === 1 ? record(i, poor, true) : record(i, post, false),
    );
    const journals = recs.map((r) => saleJournal(r)!);
    for (const j of journals) for (const a of j.accounts) await ledgers[0]!.ensureAccount(a);
    // Each writer posts every record once, in its own order and batch size: every record is raced by four
    // batches, and the batches share the revenue, cogs and payable accounts.
    let refused = 0;
    await Promise.all(
      ledgers.map(async (L, w) => {
        const order = [...journals].sort(() => Math.random() - 0.5);
        const size = 25 + 40 * w;
        for (let i = 0; i < order.length; i += size) {
          const batch = order.slice(i, i + size);
          try {
            await L.postBatch(
              batch.map((j) => j.spec),
              [walletAccount(rich).code, walletAccount(poor).code],
            );
          } catch (e) {
            // The poor wallet runs dry: the whole batch is refused; its records go one by one instead.
            if (!(e instanceof LedgerError && e.code === 'insufficient_funds')) throw e;
            refused++;
            for (const j of batch) {
              try {
                await L.postBatch([j.spec]);
              } catch (e1) {
                if (!(e1 instanceof LedgerError && e1.code === 'insufficient_funds')) throw e1;
              }
            }
          }
        }
      }),
    );
    expect(refused).toBeGreaterThan(0);
    const counts = await journalsPerRecord(recs.map((r) => r.id));
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    // Everything but the poor wallet's overdrafts was written.
    const poorWritten = recs.filter((r) => r.appId === poor && counts.has(r.id));
    expect(counts.size).toBe(recs.length - recs.filter((r) => r.appId === poor).length + poorWritten.length);
    const spent = poorWritten.reduce((s, r) => s + r.sale, 0n);
    expect(spent).toBeLessThanOrEqual(5_000n);
    expect((await ledgers[0]!.balance(walletAccount(poor).code)).available).toBe(5_000n - spent);
    await expectBooksBalance();
  }, 120_000);
});

describe('the embedded default (PGlite, in-process queue)', () => {
  it('the same batched write path: a batch written twice is journaled once, and the books balance', async () => {
    const lite = await openDatabase({ dataDir: 'memory://' });
    try {
      const ledger = new Ledger(lite.db);
      await ledger.ensureAccount(FUNDING);
      const app = 'pre_' + randomId(6);
      await fund(ledger, app, FUND);
      const b = new MemoryBilling(systemClock);
      const w = await ledger.balance(walletAccount(app).code);
      await b.initWallet(app, w.available, w.debitsPosted + w.creditsPosted);
      const recs = Array.from({ length: 120 }, (_, i) => record(i, i % 2 ? app : 'post_' + app, i % 2 === 1));
      for (const r of recs) await b.settle(r, null);
      // The first acknowledgement is lost: the batch stays queued and is written again.
      const dying = ackDies(b, 1);
      const w1 = new JournalWriter(dying, ledger, log, { batch: 50, idleMs: 10, retryMs: 10 });
      await expect(w1.drainOnce()).rejects.toThrow(/died before acknowledging/);
      await new JournalWriter(b, ledger, log, { batch: 50, idleMs: 10, retryMs: 10 }).flush(60_000);
      const { rows } = await sql<{ n: number; d: number }>`
        SELECT count(*)::int AS n, count(DISTINCT idem_key)::int AS d FROM ledger_journal WHERE kind = 'sale'`.execute(
        lite.db,
      );
      expect(rows[0]).toEqual({ n: recs.length, d: recs.length });
      const charged = recs.filter((r) => r.prepaid).reduce((s, r) => s + r.sale, 0n);
      expect((await ledger.balance(walletAccount(app).code)).available).toBe(FUND - charged);
      expect(await b.wallet(app)).toEqual({ ledger: FUND - charged, unwritten: 0n, reserved: 0n });
      const tb = await ledger.trialBalance();
      expect(tb.mismatches).toEqual([]);
      expect(tb.balanced).toBe(true);
    } finally {
      await lite.close();
    }
    // A fresh PGlite runs every migration first: tens of seconds on a loaded machine.
  }, 180_000);
});
