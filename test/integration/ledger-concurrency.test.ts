/**
 * The ledger under real concurrency on real PostgreSQL: ~1,000 ledger calls (sales touching four accounts
 * listed in random order, wallet-to-wallet corrections, holds then post / partial post / capped post /
 * void, racing resolutions, racing replays of one idemKey, top-ups) from a pool of 10 connections, many
 * refused for insufficient funds. Afterwards the books must balance to the micro-unit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { type EntrySpec, Ledger, LedgerError } from '../../src/billing/ledger.js';
import { type DbHandle, openDatabase } from '../../src/store/db.js';
import { type TestDatabase, createTestDatabase } from '../helpers.js';

const WALLETS = 10;
const CALLS = 1_000;
const START = 100_000n;

let tdb: TestDatabase;
let h: DbHandle;
let L: Ledger;

beforeAll(async () => {
  tdb = await createTestDatabase();
  // 1,000 calls queue for 10 connections: on a slow machine the last wait longer than the default 5 s for
  // one. This test is about the ledger's invariants under concurrency, not about pool wait limits.
  h = await openDatabase({
    databaseUrl: tdb.url,
    dataDir: 'memory://',
    poolSize: 10,
    connectTimeoutMs: 60_000,
  });
  L = new Ledger(h.db);
  await L.ensureAccount({ code: 'funding', kind: 'equity' });
  await L.ensureAccount({ code: 'revenue', kind: 'revenue' });
  await L.ensureAccount({ code: 'cogs', kind: 'expense' });
  for (let c = 0; c < 3; c++)
    await L.ensureAccount({ code: `payable:channel:c${c}`, kind: 'liability', channelCode: `c${c}` });
  for (let w = 0; w < WALLETS; w++) {
    await L.ensureAccount({
      code: `wallet:w${w}`,
      kind: 'wallet',
      appId: `w${w}`,
      debitsMustNotExceedCredits: true,
    });
    await L.postJournal({
      idemKey: `setup:w${w}`,
      kind: 'fund',
      entries: [
        { account: 'funding', debit: START },
        { account: `wallet:w${w}`, credit: START },
      ],
    });
  }
});

afterAll(async () => {
  await h?.close();
  await tdb?.drop();
});

/** mulberry32: a seeded PRNG, so a failing run can be replayed with LEDGER_SEED. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('ledger concurrency (PostgreSQL)', () => {
  it(
    `${CALLS} concurrent calls keep the books balanced, no wallet negative, every idemKey once`,
    { timeout: 120_000 },
    async () => {
      const seed = Number(process.env.LEDGER_SEED ?? Date.now() % 1e9);
      const rand = rng(seed);
      const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
      const amt = (lo: number, hi: number) => BigInt(int(lo, hi));
      const shuffle = <T>(xs: T[]) =>
        xs
          .map((x) => [rand(), x] as const)
          .sort((a, b) => a[0] - b[0])
          .map(([, x]) => x);

      const counts: Record<string, number> = {};
      const count = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
      const written = new Set<string>(); // idemKeys that must be in the ledger exactly once
      const refused = new Set<string>(); // idemKeys whose every attempt failed: must be absent
      let revenue = 0n; // expected revenue credits (sales + posted holds)
      let funded = START * BigInt(WALLETS);

      /** One ledger call: counts the outcome and returns a LedgerError rather than throwing it; anything else throws. */
      async function call<T>(kind: string, key: string, p: Promise<T>): Promise<T | LedgerError> {
        try {
          const r = await p;
          count(`${kind}:${(r as { duplicate?: boolean }).duplicate ? 'duplicate' : 'ok'}`);
          if (!(r as { duplicate?: boolean }).duplicate) written.add(key);
          return r;
        } catch (e) {
          count(`${kind}:${e instanceof LedgerError ? e.code : 'UNEXPECTED'}`);
          if (e instanceof LedgerError) return e;
          throw e; // a deadlock, a serialization failure, a bug: fails the run with the real error
        }
      }
      const ok = <T>(r: T | LedgerError): r is T => !(r instanceof LedgerError);

      const sale = (k: string, w: number, a: bigint, c: bigint): EntrySpec[] =>
        shuffle([
          { account: `wallet:w${w}`, debit: a },
          { account: 'revenue', credit: a },
          { account: 'cogs', debit: c },
          { account: `payable:channel:c${int(0, 2)}`, credit: c },
        ]);

      const tasks: Array<() => Promise<void>> = [];
      let budget = CALLS;
      for (let i = 0; budget > 0; i++) {
        const w = int(0, WALLETS - 1);
        const key = `t${i}`;
        const r = budget < 3 ? 0 : rand(); // the last call or two: plain sales, so exactly CALLS calls are made
        if (r < 0.3) {
          budget -= 1;
          tasks.push(async () => {
            const a = amt(1, 5_000);
            const res = await call(
              'sale',
              key,
              L.postJournal({
                idemKey: key,
                kind: 'sale',
                appId: `w${w}`,
                entries: sale(key, w, a, a / 2n + 1n),
              }),
            );
            if (ok(res)) revenue += a;
            else refused.add(key);
          });
        } else if (r < 0.4) {
          budget -= 1;
          tasks.push(async () => {
            const a = amt(1, 2_000);
            const to = (w + int(1, WALLETS - 1)) % WALLETS;
            const entries = shuffle([
              { account: `wallet:w${w}`, debit: a },
              { account: `wallet:w${to}`, credit: a },
            ]);
            if (
              !ok(await call('correction', key, L.postJournal({ idemKey: key, kind: 'correction', entries })))
            )
              refused.add(key);
          });
        } else if (r < 0.5) {
          budget -= 1;
          tasks.push(async () => {
            const a = amt(1, 3_000);
            await call(
              'fund',
              key,
              L.postJournal({
                idemKey: key,
                kind: 'fund',
                entries: [
                  { account: 'funding', debit: a },
                  { account: `wallet:w${w}`, credit: a },
                ],
              }),
            );
            funded += a;
          });
        } else if (r < 0.58) {
          // The same sale sent twice at once: at most one of them writes.
          budget -= 2;
          tasks.push(async () => {
            const a = amt(1, 5_000);
            const entries = sale(key, w, a, 1n);
            const rs = await Promise.all(
              [0, 1].map(() =>
                call('replay-race', key, L.postJournal({ idemKey: key, kind: 'sale', entries })),
              ),
            );
            const fresh = rs.filter((x) => ok(x) && !x.duplicate).length;
            expect(fresh).toBeLessThanOrEqual(1);
            if (rs.every(ok)) expect(fresh).toBe(1);
            if (fresh) revenue += a;
            else refused.add(key);
          });
        } else {
          // Hold, then resolve: full post, partial post, capped post (often over the hold), void, or two racing resolutions.
          const how = rand();
          const calls = how < 0.15 ? 3 : 2;
          budget -= calls;
          tasks.push(async () => {
            const held = amt(100, 6_000);
            const hk = `${key}:hold`;
            const hr = await call(
              'hold',
              hk,
              L.hold({
                idemKey: hk,
                appId: `w${w}`,
                entries: [
                  { account: `wallet:w${w}`, debit: held },
                  { account: 'revenue', credit: held },
                ],
              }),
            );
            if (!ok(hr)) {
              // Refused: the app tops its wallet up instead (one call for each call the resolution would have made).
              refused.add(hk);
              for (let t = 1; t < calls; t++) {
                const a = amt(1, 3_000);
                await call(
                  'fund',
                  `${key}:topup${t}`,
                  L.postJournal({
                    idemKey: `${key}:topup${t}`,
                    kind: 'fund',
                    entries: [
                      { account: 'funding', debit: a },
                      { account: `wallet:w${w}`, credit: a },
                    ],
                  }),
                );
                funded += a;
              }
              return;
            }
            // A random gap between the hold and its resolution: varied interleavings are what is under test.
            await new Promise((res) => setTimeout(res, int(0, 5)));
            const id = hr.journalId;
            if (how < 0.15) {
              const rs = await Promise.all([
                call('race-post', `${key}:post`, L.postHold(id, `${key}:post`)),
                call('race-void', `${key}:void`, L.voidHold(id, `${key}:void`)),
              ]);
              const winners = rs.filter(ok).length;
              expect(winners).toBe(1);
              for (const [j, x] of rs.entries()) {
                if (ok(x)) continue;
                expect(x.code).toBe('hold_already_resolved');
                refused.add(j === 0 ? `${key}:post` : `${key}:void`);
              }
              if (ok(rs[0]!)) revenue += held;
            } else if (how < 0.35) {
              if (ok(await call('post', `${key}:post`, L.postHold(id, `${key}:post`)))) revenue += held;
            } else if (how < 0.6) {
              const part = amt(1, Number(held));
              const entries = [
                { account: `wallet:w${w}`, debit: part },
                { account: 'revenue', credit: part },
              ];
              if (ok(await call('post-partial', `${key}:post`, L.postHold(id, `${key}:post`, entries))))
                revenue += part;
            } else if (how < 0.85) {
              const res = await call(
                'post-capped',
                `${key}:post`,
                L.postHoldCapped(id, `${key}:post`, amt(0, Number(held) * 2)),
              );
              if (ok(res)) revenue += res.posted;
            } else {
              await call('void', `${key}:void`, L.voidHold(id, `${key}:void`));
            }
          });
        }
      }

      const t0 = performance.now();
      const settled = await Promise.allSettled(tasks.map((t) => t()));
      const elapsed = performance.now() - t0;
      const calls = Object.values(counts).reduce((a, b) => a + b, 0);
      console.log(
        `[ledger-concurrency] seed=${seed} tasks=${tasks.length} calls=${calls} in ${elapsed.toFixed(0)} ms ` +
          `(${((calls / elapsed) * 1000).toFixed(0)} calls/s, pool 10)\n` +
          Object.entries(counts)
            .sort()
            .map(([k, v]) => `  ${k}: ${v}`)
            .join('\n'),
      );
      expect(settled.flatMap((x) => (x.status === 'rejected' ? [String(x.reason)] : []))).toEqual([]);
      expect(calls).toBe(CALLS);
      expect(counts['sale:insufficient_funds'] ?? 0).toBeGreaterThan(0); // the wallets did run dry

      const t1 = performance.now();
      const tb = await L.trialBalance();
      console.log(
        `[ledger-concurrency] trial balance over ${tb.byAccount.length} accounts in ${(performance.now() - t1).toFixed(0)} ms`,
      );
      expect(tb.mismatches).toEqual([]);
      expect(tb.balanced).toBe(true);
      expect(tb.debits - tb.credits).toBe(0n);
      expect([tb.pendingDebits, tb.pendingCredits]).toEqual([0n, 0n]); // every hold was resolved

      // No wallet negative; the money adds up to what the calls that succeeded moved.
      let walletTotal = 0n;
      for (let w = 0; w < WALLETS; w++) {
        const b = await L.balance(`wallet:w${w}`);
        expect(b.available).toBeGreaterThanOrEqual(0n);
        walletTotal += b.available;
      }
      const rev = await L.balance('revenue');
      expect(rev.creditsPosted).toBe(revenue);
      expect(walletTotal).toBe(funded - revenue);
      expect((await L.balance('funding')).debitsPosted).toBe(funded);

      // Every idemKey once; every refused one absent; every hold resolved by exactly one journal.
      const { rows: keys } = await sql<{
        idem_key: string;
      }>`SELECT idem_key FROM ledger_journal WHERE idem_key NOT LIKE 'setup:%'`.execute(h.db);
      const stored = keys.map((k) => k.idem_key);
      expect(new Set(stored).size).toBe(stored.length);
      expect([...stored].sort()).toEqual([...written].sort());
      expect([...refused].filter((k) => written.has(k))).toEqual([]);
      const { rows: open } = await sql`SELECT h.id FROM ledger_journal h WHERE h.kind = 'hold'
      AND (h.state = 'pending' OR (SELECT count(*) FROM ledger_journal r WHERE r.pending_of = h.id) <> 1)`.execute(
        h.db,
      );
      expect(open).toEqual([]);
    },
  );
});
