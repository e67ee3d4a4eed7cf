/**
 * The ledger on PGlite in memory: the examples of the billing issue, the invariants the database enforces
 * on its own, and a model-based property test (random fund / hold / post / void / sale sequences).
 */
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger, LedgerError, pgArray } from '../../src/billing/ledger.js';
import { type DbHandle, openDatabase } from '../../src/store/db.js';

let h: DbHandle;
let L: Ledger;

beforeAll(async () => {
  h = await openDatabase({ dataDir: 'memory://' });
  L = new Ledger(h.db);
  await L.ensureAccount({ code: 'funding', kind: 'equity' });
  await L.ensureAccount({ code: 'revenue', kind: 'revenue' });
  await L.ensureAccount({ code: 'cogs', kind: 'expense' });
  await L.ensureAccount({ code: 'payable:channel:c1', kind: 'liability', channelCode: 'c1' });
});
afterAll(async () => h?.close());

const wallet = (app: string) =>
  L.ensureAccount({ code: `wallet:${app}`, kind: 'wallet', appId: app, debitsMustNotExceedCredits: true });
const fund = (app: string, amount: bigint, idemKey: string) =>
  L.postJournal({
    idemKey,
    kind: 'fund',
    appId: app,
    entries: [
      { account: 'funding', debit: amount },
      { account: `wallet:${app}`, credit: amount },
    ],
  });
const holdOn = (app: string, amount: bigint, idemKey: string) =>
  L.hold({
    idemKey,
    appId: app,
    requestId: idemKey,
    entries: [
      { account: `wallet:${app}`, debit: amount },
      { account: 'revenue', credit: amount },
    ],
  });

/** The LedgerError code a promise rejects with. */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof LedgerError) return e.code;
    throw e;
  }
  throw new Error('expected a LedgerError');
}

async function journalCount(): Promise<number> {
  const r = await h.db
    .selectFrom('ledger_journal')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

/** A sale through either write path: postJournal (ledger_entry rows) or postBatch (entries on the row). */
async function saleBy(
  path: 'journal' | 'batch',
  j: Parameters<Ledger['postJournal']>[0],
): Promise<{ journalId: bigint; duplicate: boolean }> {
  if (path === 'journal') return L.postJournal(j);
  const r = await L.postBatch([j]);
  const [row] = await L.journals({ kind: j.kind, limit: 1 });
  if (r.written.length !== 1 || row?.idemKey !== j.idemKey) throw new Error('batch sale not written');
  return { journalId: row.id, duplicate: false };
}

async function expectSound() {
  const tb = await L.trialBalance();
  expect(tb.mismatches).toEqual([]);
  expect(tb.balanced).toBe(true);
  expect(tb.debits - tb.credits).toBe(0n);
}

describe('ledger', () => {
  it('ensureAccount is idempotent and refuses a contradicting spec', async () => {
    const a = await wallet('acct');
    expect(await wallet('acct')).toBe(a);
    expect(
      await new Ledger(h.db).ensureAccount({
        code: 'wallet:acct',
        kind: 'wallet',
        appId: 'acct',
        debitsMustNotExceedCredits: true,
      }),
    ).toBe(a);
    expect(await codeOf(L.ensureAccount({ code: 'wallet:acct', kind: 'wallet', appId: 'acct' }))).toBe(
      'account_conflict',
    );
  });

  it('postBatch: many journals in one transaction, duplicates skipped, balances read back, overdraft refuses the batch', async () => {
    await wallet('batch');
    await L.postJournal({
      idemKey: 'fund-batch',
      kind: 'fund',
      entries: [
        { account: 'funding', debit: 1_000n },
        { account: 'wallet:batch', credit: 1_000n },
      ],
    });
    const sale = (i: number, amt: bigint) => ({
      idemKey: `batch-sale-${i}`,
      kind: 'sale' as const,
      requestId: `r${i}`,
      appId: 'batch',
      alias: 'a',
      channel: 'c1',
      usage: { n: i, big: 12345678901234567890n },
      occurredAt: new Date('2026-11-25T12:00:00Z'),
      entries: [
        { account: 'wallet:batch', debit: amt },
        { account: 'revenue', credit: amt },
      ],
    });
    const r = await L.postBatch([sale(1, 100n), sale(2, 200n), sale(1, 100n)], ['wallet:batch']);
    expect(r.written).toEqual(['batch-sale-1', 'batch-sale-2']);
    expect(r.balances.get('wallet:batch')).toEqual({ available: 700n, version: 1_300n });
    const again = await L.postBatch([sale(2, 200n), sale(3, 50n)], ['wallet:batch']);
    expect(again.written).toEqual(['batch-sale-3']);
    expect(again.duplicates).toEqual(['batch-sale-2']);
    const [j] = await L.journals({ requestId: 'r1' });
    expect(j!.usage).toEqual({ n: 1, big: '12345678901234567890' });
    await expect(L.postBatch([sale(4, 100n), sale(5, 10_000n)])).rejects.toMatchObject({
      code: 'insufficient_funds',
    });
    expect(await L.journals({ requestId: 'r4' })).toEqual([]); // all or nothing
    expect((await L.balance('wallet:batch')).available).toBe(650n);
    const tb = await L.trialBalance();
    expect(tb.balanced).toBe(true);
    expect(tb.mismatches).toEqual([]);
  });

  it("postBatch puts a journal's entries on its row; readers see them beside ledger_entry rows", async () => {
    await wallet('inline');
    await fund('inline', 500n, 'inline:fund'); // entries as ledger_entry rows
    const r = await L.postBatch([
      {
        idemKey: 'inline:sale',
        kind: 'sale',
        requestId: 'inline-r1',
        appId: 'inline',
        channel: 'c1',
        entries: [
          { account: 'wallet:inline', debit: 120n },
          { account: 'revenue', credit: 120n },
          { account: 'cogs', debit: 80n },
          { account: 'payable:channel:c1', credit: 80n },
        ],
      },
    ]);
    expect(r.written).toEqual(['inline:sale']);
    const stored = await sql<{ a: string; d: string; c: string; rows: number }>`
      SELECT j.entry_account::text AS a, j.entry_debit::text AS d, j.entry_credit::text AS c,
        (SELECT count(*)::int FROM ledger_entry e WHERE e.journal_id = j.id) AS rows
      FROM ledger_journal j WHERE idem_key = 'inline:sale'`.execute(h.db);
    expect(stored.rows[0]).toMatchObject({ d: '{120,0,80,0}', c: '{0,120,0,80}', rows: 0 });
    const [sale] = await L.journals({ requestId: 'inline-r1' });
    expect(sale!.entries).toEqual([
      { account: 'wallet:inline', debit: 120n, credit: 0n, pending: false },
      { account: 'revenue', debit: 0n, credit: 120n, pending: false },
      { account: 'cogs', debit: 80n, credit: 0n, pending: false },
      { account: 'payable:channel:c1', debit: 0n, credit: 80n, pending: false },
    ]);
    const both = await L.journals({ appId: 'inline' });
    expect(both.map((j) => [j.kind, j.entries.length])).toEqual([
      ['sale', 4],
      ['fund', 2],
    ]);
    // The view operators query holds both forms.
    const view = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ledger_posting e JOIN ledger_journal j ON j.id = e.journal_id
      WHERE j.app_id = 'inline'`.execute(h.db);
    expect(view.rows[0]!.n).toBe(6);
    expect((await L.balance('wallet:inline')).available).toBe(380n);
    await expectSound();
  });

  it('the database refuses entries on a row that are unbalanced, one-sided wrong, of unknown accounts or doubled', async () => {
    const db = h.db;
    const accounts = await sql<{ id: bigint }>`SELECT id FROM ledger_account ORDER BY id LIMIT 2`.execute(db);
    const [a1, a2] = accounts.rows.map((r) => r.id.toString());
    const row = (key: string, kind: string, a: string, d: string, c: string) =>
      sql`INSERT INTO ledger_journal (idem_key, kind, entry_account, entry_debit, entry_credit)
        VALUES (${key}, ${kind}, ${a}::bigint[], ${d}::bigint[], ${c}::bigint[])`.execute(db);
    const fails = async (q: Promise<unknown>, re: RegExp) => expect(q).rejects.toThrow(re);
    const check = /ledger_journal_inline_entries/;
    await fails(row('in:lopsided', 'fund', `{${a1},${a2}}`, '{5,0}', '{0,4}'), check);
    await fails(row('in:two-sided', 'fund', `{${a1},${a2}}`, '{5,5}', '{5,5}'), check);
    await fails(row('in:zero', 'fund', `{${a1},${a2}}`, '{0,0}', '{0,0}'), check);
    await fails(row('in:negative', 'fund', `{${a1},${a2}}`, '{-5,0}', '{0,-5}'), check);
    await fails(row('in:one-leg', 'fund', `{${a1}}`, '{0}', '{0}'), check);
    await fails(row('in:short', 'fund', `{${a1},${a2}}`, '{5,0}', '{0}'), check);
    await fails(row('in:null-leg', 'fund', `{${a1},NULL}`, '{5,0}', '{0,5}'), check);
    await fails(row('in:2d', 'fund', `{{${a1},${a2}}}`, '{{5,0}}', '{{0,5}}'), check);
    await fails(row('in:hold', 'hold', `{${a1},${a2}}`, '{5,0}', '{0,5}'), check);
    await fails(
      sql`INSERT INTO ledger_journal (idem_key, kind, entry_account) VALUES ('in:partial', 'fund', ${`{${a1},${a2}}`}::bigint[])`.execute(
        db,
      ),
      check,
    );
    await fails(
      row('in:no-account', 'fund', `{${a1},999999}`, '{5,0}', '{0,5}'),
      /account 999999, which does not exist/,
    );
    // Accepted when sound (rolled back: a raw row moves no account totals).
    await fails(
      db.transaction().execute(async (trx) => {
        await sql`INSERT INTO ledger_journal (idem_key, kind, entry_account, entry_debit, entry_credit)
          VALUES ('in:ok', 'fund', ${`{${a1},${a2}}`}::bigint[], '{5,0}', '{0,5}')`.execute(trx);
        throw new Error('accepted');
      }),
      /^accepted$/,
    );
    // A journal with entries on its row takes no ledger_entry rows besides, balanced or not.
    await fails(
      db.transaction().execute(async (trx) => {
        const { rows } = await sql<{ id: bigint }>`
          INSERT INTO ledger_journal (idem_key, kind, entry_account, entry_debit, entry_credit)
          VALUES ('in:doubled', 'fund', ${`{${a1},${a2}}`}::bigint[], '{5,0}', '{0,5}') RETURNING id`.execute(
          trx,
        );
        await sql`INSERT INTO ledger_entry (journal_id, account_id, debit, credit)
          VALUES (${rows[0]!.id.toString()}::bigint, ${a1}::bigint, 5, 0), (${rows[0]!.id.toString()}::bigint, ${a2}::bigint, 0, 5)`.execute(
          trx,
        );
      }),
      /does not fit its fund journal/,
    );
    // And a written row's entries can't be edited.
    await fails(
      sql`UPDATE ledger_journal SET entry_debit = '{121,0,80,0}' WHERE idem_key = 'inline:sale'`.execute(db),
      /append-only/,
    );
    await expectSound();
  });

  it('posts a balanced journal across four accounts', async () => {
    await wallet('bal');
    const rev0 = await L.balance('revenue');
    await fund('bal', 1_000n, 'bal:fund');
    const sale = await L.postJournal({
      idemKey: 'req_bal:sale',
      kind: 'sale',
      appId: 'bal',
      requestId: 'req_bal',
      usage: { inputTokens: 10, micros: 300n },
      entries: [
        { account: 'wallet:bal', debit: 300n },
        { account: 'revenue', credit: 300n },
        { account: 'cogs', debit: 120n },
        { account: 'payable:channel:c1', credit: 120n },
      ],
    });
    expect(sale.duplicate).toBe(false);
    expect(await L.balance('wallet:bal')).toEqual({
      debitsPending: 0n,
      debitsPosted: 300n,
      creditsPending: 0n,
      creditsPosted: 1_000n,
      available: 700n,
    });
    expect((await L.balance('revenue')).creditsPosted - rev0.creditsPosted).toBe(300n);
    const [j] = await L.journals({ requestId: 'req_bal' });
    expect(j).toMatchObject({
      id: sale.journalId,
      kind: 'sale',
      state: 'posted',
      usage: { inputTokens: 10, micros: '300' },
    });
    expect(j!.entries).toHaveLength(4);
  });

  it('refuses unbalanced, non-bigint, zero, two-sided and unknown-account entries, writing nothing', async () => {
    await wallet('bad');
    const n = await journalCount();
    const post = (entries: any[]) => L.postJournal({ idemKey: 'bad:x', kind: 'fund', entries });
    expect(
      await codeOf(
        post([
          { account: 'funding', debit: 5n },
          { account: 'wallet:bad', credit: 4n },
        ]),
      ),
    ).toBe('unbalanced');
    expect(await codeOf(post([]))).toBe('unbalanced');
    expect(
      await codeOf(
        post([
          { account: 'funding', debit: 5 },
          { account: 'wallet:bad', credit: 5 },
        ]),
      ),
    ).toBe('invalid_amount');
    expect(
      await codeOf(
        post([
          { account: 'funding', debit: 0n },
          { account: 'wallet:bad', credit: 0n },
        ]),
      ),
    ).toBe('invalid_amount');
    expect(
      await codeOf(
        post([
          { account: 'funding', debit: -5n },
          { account: 'wallet:bad', credit: -5n },
        ]),
      ),
    ).toBe('invalid_amount');
    expect(await codeOf(post([{ account: 'funding', debit: 5n, credit: 5n }]))).toBe('invalid_amount');
    expect(
      await codeOf(
        post([
          { account: 'funding', debit: 5n },
          { account: 'wallet:nobody', credit: 5n },
        ]),
      ),
    ).toBe('account_not_found');
    expect(await journalCount()).toBe(n);
  });

  it('an idempotent replay posts nothing new, even with different content', async () => {
    await wallet('idem');
    const first = await fund('idem', 500n, 'idem:fund');
    const before = await L.balance('wallet:idem');
    const n = await journalCount();
    expect(await fund('idem', 500n, 'idem:fund')).toEqual({ journalId: first.journalId, duplicate: true });
    expect(await fund('idem', 999n, 'idem:fund')).toEqual({ journalId: first.journalId, duplicate: true });
    expect(await L.balance('wallet:idem')).toEqual(before);
    expect(await journalCount()).toBe(n);
  });

  it('a prepaid wallet cannot go below zero: hold and sale refused, nothing written, key reusable', async () => {
    await wallet('poor');
    await fund('poor', 100n, 'poor:fund');
    const n = await journalCount();
    expect(await codeOf(holdOn('poor', 101n, 'poor:hold'))).toBe('insufficient_funds');
    const sale = {
      idemKey: 'poor:sale',
      kind: 'sale' as const,
      entries: [
        { account: 'wallet:poor', debit: 101n },
        { account: 'revenue', credit: 101n },
      ],
    };
    expect(await codeOf(L.postJournal(sale))).toBe('insufficient_funds');
    expect(await journalCount()).toBe(n);
    expect(await L.balance('wallet:poor')).toMatchObject({
      debitsPending: 0n,
      debitsPosted: 0n,
      available: 100n,
    });
    // Pending debits count against the wallet too.
    const h60 = await holdOn('poor', 60n, 'poor:hold-60');
    expect(await codeOf(holdOn('poor', 41n, 'poor:hold-41'))).toBe('insufficient_funds');
    await L.voidHold(h60.journalId, 'poor:void-60');
    // The refused key wrote nothing, so it can be used once the money is there.
    await fund('poor', 1n, 'poor:fund-1');
    expect((await L.postJournal(sale)).duplicate).toBe(false);
    expect((await L.balance('wallet:poor')).available).toBe(0n);
  });

  it('hold -> partial post releases the rest; hold -> void releases everything', async () => {
    await wallet('two');
    await fund('two', 1_000n, 'two:fund');
    const hold = await holdOn('two', 500n, 'req_two:hold');
    expect(await L.balance('wallet:two')).toMatchObject({
      debitsPending: 500n,
      debitsPosted: 0n,
      available: 500n,
    });
    const rev0 = (await L.balance('revenue')).creditsPosted;
    const post = await L.postHold(hold.journalId, 'req_two:post', [
      { account: 'wallet:two', debit: 200n },
      { account: 'revenue', credit: 200n },
    ]);
    expect(await L.balance('wallet:two')).toMatchObject({
      debitsPending: 0n,
      debitsPosted: 200n,
      available: 800n,
    });
    expect((await L.balance('revenue')).creditsPosted - rev0).toBe(200n);
    const js = await L.journals({ requestId: 'req_two:hold' });
    expect(js.map((j) => [j.kind, j.state, j.pendingOf])).toEqual([
      ['post', 'posted', hold.journalId],
      ['hold', 'posted', null],
    ]);
    expect(js[0]!.id).toBe(post.journalId);
    // Replaying the hold after it was posted reserves nothing again.
    expect(await holdOn('two', 500n, 'req_two:hold')).toEqual({ journalId: hold.journalId, duplicate: true });
    expect((await L.balance('wallet:two')).debitsPending).toBe(0n);

    const h2 = await holdOn('two', 300n, 'req_two2:hold');
    await L.voidHold(h2.journalId, 'req_two2:void');
    expect(await L.balance('wallet:two')).toMatchObject({
      debitsPending: 0n,
      debitsPosted: 200n,
      available: 800n,
    });
    expect((await L.journals({ requestId: 'req_two2:hold', kind: 'hold' }))[0]!.state).toBe('voided');
    await expectSound();
  });

  it('refuses a second resolution, except a replay of the same idemKey', async () => {
    await wallet('dbl');
    await fund('dbl', 1_000n, 'dbl:fund');
    const hold = await holdOn('dbl', 100n, 'dbl:hold');
    const first = await L.postHold(hold.journalId, 'dbl:post');
    expect(await L.postHold(hold.journalId, 'dbl:post')).toEqual({
      journalId: first.journalId,
      duplicate: true,
    });
    expect(await codeOf(L.postHold(hold.journalId, 'dbl:post-2'))).toBe('hold_already_resolved');
    expect(await codeOf(L.voidHold(hold.journalId, 'dbl:void'))).toBe('hold_already_resolved');
    expect(await codeOf(L.postHold(first.journalId, 'dbl:post-3'))).toBe('hold_not_found');
    expect(await codeOf(L.voidHold(999_999_999n, 'dbl:void-x'))).toBe('hold_not_found');
    expect(await L.balance('wallet:dbl')).toMatchObject({ debitsPending: 0n, debitsPosted: 100n });

    const h2 = await holdOn('dbl', 100n, 'dbl:hold-2');
    const over = [
      { account: 'wallet:dbl', debit: 101n },
      { account: 'revenue', credit: 101n },
    ];
    expect(await codeOf(L.postHold(h2.journalId, 'dbl:over', over))).toBe('invalid_amount');
    const elsewhere = [
      { account: 'wallet:dbl', debit: 10n },
      { account: 'cogs', credit: 10n },
    ];
    expect(await codeOf(L.postHold(h2.journalId, 'dbl:elsewhere', elsewhere))).toBe('invalid_amount');
    expect((await L.balance('wallet:dbl')).debitsPending).toBe(100n);
  });

  it('postHoldCapped posts min(wanted, held) and records the excess', async () => {
    await wallet('cap');
    await fund('cap', 1_000n, 'cap:fund');
    const a = await holdOn('cap', 100n, 'cap:hold-a');
    const r = await L.postHoldCapped(a.journalId, 'cap:post-a', 150n, { usage: { outputTokens: 9 } });
    expect(r).toMatchObject({ duplicate: false, posted: 100n, excess: 50n });
    const [j] = await L.journals({ kind: 'post', appId: 'cap' });
    expect(j).toMatchObject({ id: r.journalId, usage: { outputTokens: 9, excess_micros: '50' } });
    expect(j!.memo).toContain('excess 50 micro-units');
    expect(await L.postHoldCapped(a.journalId, 'cap:post-a', 150n)).toEqual({ ...r, duplicate: true });

    const b = await holdOn('cap', 100n, 'cap:hold-b');
    expect(await L.postHoldCapped(b.journalId, 'cap:post-b', 30n)).toMatchObject({ posted: 30n, excess: 0n });
    const c = await holdOn('cap', 100n, 'cap:hold-c');
    expect(await L.postHoldCapped(c.journalId, 'cap:post-c', 0n)).toMatchObject({ posted: 0n, excess: 0n });
    expect((await L.journals({ requestId: 'cap:hold-c', kind: 'hold' }))[0]!.state).toBe('voided');
    expect(await L.balance('wallet:cap')).toMatchObject({
      debitsPending: 0n,
      debitsPosted: 130n,
      available: 870n,
    });
  });

  it('the database itself refuses overdrafts, unbalanced journals and edits of history', async () => {
    const db = h.db;
    const fails = async (q: Promise<unknown>, re: RegExp) => expect(q).rejects.toThrow(re);
    await fails(
      sql`UPDATE ledger_account SET debits_posted = credits_posted + 1 WHERE code = 'wallet:bal'`.execute(db),
      /ledger_account_debits_within_credits/,
    );
    await fails(
      sql`UPDATE ledger_entry SET debit = debit + 1 WHERE id = (SELECT min(id) FROM ledger_entry)`.execute(
        db,
      ),
      /append-only/,
    );
    await fails(sql`DELETE FROM ledger_journal WHERE idem_key = 'bal:fund'`.execute(db), /append-only/);
    await fails(
      sql`UPDATE ledger_journal SET state = 'pending' WHERE idem_key = 'dbl:hold'`.execute(db),
      /append-only/,
    );
    await fails(
      sql`UPDATE ledger_journal SET memo = 'x' WHERE idem_key = 'dbl:hold-2'`.execute(db),
      /append-only/,
    );
    await fails(
      db.transaction().execute(async (trx) => {
        const { rows } = await sql<{
          id: bigint;
        }>`INSERT INTO ledger_journal (idem_key, kind) VALUES ('raw:unbalanced', 'fund') RETURNING id`.execute(
          trx,
        );
        await sql`INSERT INTO ledger_entry (journal_id, account_id, debit) VALUES (${rows[0]!.id.toString()}::bigint, 1, 5)`.execute(
          trx,
        );
      }),
      /unbalanced/,
    );
    // The entry checks run per statement: each of these is one INSERT, and each is refused whole (the
    // balanced entries beside the bad one don't go in either).
    const raw = async (idemKey: string, kind: string, entries: string) =>
      db.transaction().execute(async (trx) => {
        const { rows } = await sql<{
          id: bigint;
        }>`INSERT INTO ledger_journal (idem_key, kind) VALUES (${idemKey}, ${kind}) RETURNING id`.execute(
          trx,
        );
        await sql`INSERT INTO ledger_entry (journal_id, account_id, debit, credit, pending)
          SELECT ${rows[0]!.id.toString()}::bigint, a, d, c, p FROM (VALUES ${sql.raw(entries)}) AS v (a, d, c, p)`.execute(
          trx,
        );
        // Rolled back even when accepted: raw entries move no account totals, and the trial balance at
        // the end would (rightly) find them.
        throw new Error('accepted');
      });
    const accounts = await sql<{ id: bigint }>`SELECT id FROM ledger_account ORDER BY id LIMIT 2`.execute(db);
    const [a1, a2] = accounts.rows.map((r) => r.id.toString());
    await fails(raw('raw:balanced', 'fund', `(${a1}, 5, 0, false), (${a2}, 0, 5, false)`), /^accepted$/); // the control
    await fails(
      raw('raw:no-account', 'fund', `(${a1}, 5, 0, false), (999999, 0, 5, false)`),
      /account 999999, which does not exist/,
    );
    await fails(
      raw('raw:pending-fund', 'fund', `(${a1}, 5, 0, true), (${a2}, 0, 5, true)`),
      /does not fit its fund journal/,
    );
    await fails(
      raw('raw:lopsided', 'fund', `(${a1}, 5, 0, false), (${a2}, 0, 4, false)`),
      /unbalanced: debits 5 <> credits 4/,
    );
    await fails(
      sql`INSERT INTO ledger_entry (journal_id, account_id, debit) VALUES (999999, ${a1}::bigint, 5)`.execute(
        db,
      ),
      /journal 999999, which does not exist/,
    );
    // What entries refer to can't go away.
    await fails(sql`DELETE FROM ledger_account WHERE code = 'cogs'`.execute(db), /accounts are permanent/);
    await fails(
      sql`UPDATE ledger_account SET id = id + 1000 WHERE code = 'cogs'`.execute(db),
      /accounts are permanent/,
    );
    for (const t of ['ledger_entry', 'ledger_journal', 'ledger_account']) {
      await fails(sql`TRUNCATE ${sql.raw(t)} CASCADE`.execute(db), /append-only \(TRUNCATE refused\)/);
    }
    const hold = (await L.journals({ requestId: 'dbl:hold', kind: 'hold' }))[0]!;
    await fails(
      sql`INSERT INTO ledger_journal (idem_key, kind, pending_of) VALUES ('raw:post-again', 'void', ${hold.id.toString()}::bigint)`.execute(
        db,
      ),
      /ledger_journal_resolves/,
    );
    await expectSound();
  });

  it('lists journals by app, request and kind, newest first, paged', async () => {
    const all = await L.journals({ appId: 'cap' });
    expect(all.map((j) => j.kind)).toEqual(['void', 'hold', 'post', 'hold', 'post', 'hold', 'fund']);
    expect((await L.journals({ appId: 'cap', limit: 2, offset: 1 })).map((j) => j.id)).toEqual([
      all[1]!.id,
      all[2]!.id,
    ]);
    expect(
      (await L.journals({ appId: 'cap', kind: 'hold' })).every((j) => j.entries.every((e) => e.pending)),
    ).toBe(true);
  });
});

describe('pgArray', () => {
  it('PostgreSQL reads back exactly the strings and nulls it was given (property)', async () => {
    const tricky = fc.constantFrom(
      '',
      'NULL',
      'null',
      '"',
      '\\',
      '\\"',
      '{a,b}',
      'a,b',
      ' lead',
      'trail ',
      'é€𝄞',
      "it's",
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.option(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), tricky), { nil: null }), {
          maxLength: 20,
        }),
        async (values) => {
          const { rows } = await sql<{
            a: Array<string | null>;
          }>`SELECT ${pgArray(values)}::text[] AS a`.execute(h.db);
          expect(rows[0]!.a).toEqual(values);
        },
      ),
      { numRuns: 200 },
    );
  });
});

// --- model-based property test ---

type Op =
  | { t: 'fund'; w: number; amt: bigint }
  | { t: 'hold'; w: number; amt: bigint }
  | { t: 'sale'; w: number; amt: bigint }
  | { t: 'post'; pick: number; part: bigint | null }
  | { t: 'capped'; pick: number; wanted: bigint }
  | { t: 'void'; pick: number }
  | { t: 'replay'; pick: number };

const amount = fc.bigInt({ min: 1n, max: 20_000n });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('fund' as const), w: fc.nat(2), amt: amount }),
  fc.record({ t: fc.constant('hold' as const), w: fc.nat(2), amt: amount }),
  fc.record({ t: fc.constant('sale' as const), w: fc.nat(2), amt: amount }),
  fc.record({
    t: fc.constant('post' as const),
    pick: fc.nat(),
    part: fc.option(fc.bigInt({ min: 1n, max: 25_000n })),
  }),
  fc.record({
    t: fc.constant('capped' as const),
    pick: fc.nat(),
    wanted: fc.bigInt({ min: 0n, max: 25_000n }),
  }),
  fc.record({ t: fc.constant('void' as const), pick: fc.nat() }),
  fc.record({ t: fc.constant('replay' as const), pick: fc.nat() }),
);

describe('ledger properties', () => {
  it('random fund/hold/post/void/sale sequences keep every invariant and match a model', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        const r = `p${run++}`;
        const apps = [0, 1, 2].map((i) => `${r}-${i}`);
        for (const a of apps) await wallet(a);
        // The model: what each wallet should hold, and every hold made in this run.
        const m = apps.map(() => ({ credits: 0n, posted: 0n, pending: 0n }));
        const holds: Array<{ id: bigint; w: number; amt: bigint; open: boolean }> = [];
        const done: Array<{ key: string; id: bigint }> = [];
        for (const [i, op] of ops.entries()) {
          const key = `${r}:${i}`;
          let expected: string | null = null;
          if (op.t === 'fund') {
            done.push({ key, id: (await fund(apps[op.w]!, op.amt, key)).journalId });
            m[op.w]!.credits += op.amt;
          } else if (op.t === 'hold' || op.t === 'sale') {
            const w = m[op.w]!;
            expected = op.amt > w.credits - w.posted - w.pending ? 'insufficient_funds' : null;
            const call =
              op.t === 'hold'
                ? holdOn(apps[op.w]!, op.amt, key)
                : saleBy(i % 2 === 0 ? 'journal' : 'batch', {
                    idemKey: key,
                    kind: 'sale',
                    entries: [
                      { account: `wallet:${apps[op.w]}`, debit: op.amt },
                      { account: 'revenue', credit: op.amt },
                    ],
                  });
            if (expected) expect(await codeOf(call)).toBe(expected);
            else {
              const { journalId } = await call;
              if (op.t === 'hold') holds.push({ id: journalId, w: op.w, amt: op.amt, open: true });
              w[op.t === 'hold' ? 'pending' : 'posted'] += op.amt;
            }
          } else if (op.t === 'replay') {
            const d = done[op.pick % Math.max(1, done.length)];
            if (d) expect(await fund(apps[0]!, 1n, d.key)).toEqual({ journalId: d.id, duplicate: true });
          } else {
            const hd = holds[op.pick % Math.max(1, holds.length)];
            if (!hd) continue;
            const app = apps[hd.w]!;
            const posted =
              op.t === 'void'
                ? 0n
                : op.t === 'capped'
                  ? op.wanted < hd.amt
                    ? op.wanted
                    : hd.amt
                  : (op.part ?? hd.amt);
            expected = !hd.open ? 'hold_already_resolved' : posted > hd.amt ? 'invalid_amount' : null;
            const call =
              op.t === 'void'
                ? L.voidHold(hd.id, key)
                : op.t === 'capped'
                  ? L.postHoldCapped(hd.id, key, op.wanted)
                  : L.postHold(
                      hd.id,
                      key,
                      op.part === null
                        ? undefined
                        : [
                            { account: `wallet:${app}`, debit: op.part },
                            { account: 'revenue', credit: op.part },
                          ],
                    );
            if (expected) expect(await codeOf(call)).toBe(expected);
            else {
              const res = await call;
              if ('excess' in res)
                expect(res).toMatchObject({ posted, excess: op.t === 'capped' ? op.wanted - posted : 0n });
              hd.open = false;
              m[hd.w]!.pending -= hd.amt;
              m[hd.w]!.posted += posted;
            }
          }
          // After every op: the wallets equal the model, no flagged account is overdrawn, the books balance.
          const rows = await h.db
            .selectFrom('ledger_account')
            .select(['code', 'credits_posted', 'debits_posted', 'debits_pending'])
            .where(
              'code',
              'in',
              apps.map((a) => `wallet:${a}`),
            )
            .orderBy('id')
            .execute();
          expect(rows.map((x) => [x.credits_posted, x.debits_posted, x.debits_pending])).toEqual(
            m.map((w) => [w.credits, w.posted, w.pending]),
          );
          const { rows: over } =
            await sql`SELECT code FROM ledger_account WHERE debits_must_not_exceed_credits AND debits_posted + debits_pending > credits_posted`.execute(
              h.db,
            );
          expect(over).toEqual([]);
          await expectSound();
        }
      }),
      { numRuns: 30 },
    );
  });
});
