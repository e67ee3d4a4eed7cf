/**
 * Double-entry ledger, after TigerBeetle: accounts carry posted and pending debit/credit totals, money
 * moves only in balanced journals, two-phase transfers reserve (hold) then post or void, and every write
 * carries an idempotency key. Amounts are bigint micro-units, always > 0; numbers are refused.
 *
 * Model. A journal is immutable and owns entries (one side each, amount > 0). `postJournal` writes
 * posted entries; `hold` writes pending entries (state 'pending') and raises the accounts' *_pending
 * totals; `postHold` / `voidHold` write a 'post' / 'void' journal naming the hold (`pending_of`), release
 * the held pending amounts, post the actual amounts as new posted entries, and flip the hold's state —
 * the only column that ever changes. So, from the entries alone:
 *   *_posted  = sum of posted entries;   *_pending = sum of pending entries of holds still 'pending'.
 * `trialBalance` recomputes exactly that and compares it with the stored totals.
 *
 * Concurrency. One transaction per call; account rows are locked in ascending id order before they
 * are updated (no deadlocks between journals touching the same accounts in any order); a hold row is
 * locked before its accounts. Balance flags are CHECK constraints, so the database refuses an overdraft
 * even under races; the violation comes back as LedgerError('insufficient_funds') and nothing is written.
 */
import { type Kysely, type Transaction, sql } from 'kysely';
import type { Database } from '../store/schema.js';
import { toJson } from './types.js';
import { pgArray } from '../lib/pg-array.js';
import { NamedStatement } from '../store/named-statement.js';

import {
  type AccountSpec,
  type Balance,
  type EntrySpec,
  type HoldSpec,
  type JournalKind,
  type JournalMeta,
  type JournalSpec,
  type JournalView,
  LedgerError,
  type Totals,
  type TrialBalance,
  type WriteResult,
} from './ledger-types.js';

export * from './ledger-types.js';
export { pgArray };

const MAX_BIGINT = 2n ** 63n - 1n;
const POSTED_KINDS = new Set<string>(['fund', 'sale', 'cost', 'correction']);
const ACCOUNT_KINDS = new Set<string>(['wallet', 'revenue', 'expense', 'liability', 'hold', 'equity']);
const FIELDS = ['debitsPending', 'debitsPosted', 'creditsPending', 'creditsPosted'] as const;

/** One resolved entry: exactly one of debit / credit is > 0. */
interface Leg {
  accountId: bigint;
  debit: bigint;
  credit: bigint;
}

type Tx = Transaction<Database>;
const zero = (): Totals => ({ debitsPending: 0n, debitsPosted: 0n, creditsPending: 0n, creditsPosted: 0n });
const min = (a: bigint, b: bigint) => (a < b ? a : b);

function amountOf(v: unknown, what: string): bigint {
  if (typeof v !== 'bigint')
    throw new LedgerError('invalid_amount', `${what} must be a bigint, got ${typeof v}`);
  if (v <= 0n || v > MAX_BIGINT)
    throw new LedgerError('invalid_amount', `${what} must be in 1..2^63-1, got ${v}`);
  return v;
}

/** Validates amounts and balance: each entry one side > 0, sum(debit) == sum(credit) > 0. */
function checkEntries(
  entries: EntrySpec[] | undefined,
): Array<{ account: string; debit: bigint; credit: bigint }> {
  if (!Array.isArray(entries) || entries.length === 0)
    throw new LedgerError('unbalanced', 'a journal needs entries');
  let debits = 0n;
  let credits = 0n;
  const out = entries.map((e, i) => {
    if ((e.debit === undefined) === (e.credit === undefined)) {
      throw new LedgerError(
        'invalid_amount',
        `entry ${i} (${e.account}) must have exactly one of debit or credit`,
      );
    }
    const debit = e.debit === undefined ? 0n : amountOf(e.debit, `entry ${i} debit`);
    const credit = e.credit === undefined ? 0n : amountOf(e.credit, `entry ${i} credit`);
    debits += debit;
    credits += credit;
    return { account: e.account, debit, credit };
  });
  if (debits !== credits)
    throw new LedgerError('unbalanced', `debits ${debits} != credits ${credits}`, { debits, credits });
  return out;
}

function checkIdemKey(k: unknown): string {
  if (typeof k !== 'string' || k.length === 0 || k.length > 400)
    throw new TypeError('idemKey must be a non-empty string (<= 400 chars)');
  return k;
}

/** Folds legs into per-account deltas: phase picks *_pending or *_posted, sign adds or releases. */
function addLegs(
  into: Map<bigint, Totals>,
  legs: Leg[],
  phase: 'Pending' | 'Posted',
  sign: 1n | -1n,
): Map<bigint, Totals> {
  for (const l of legs) {
    const t = into.get(l.accountId) ?? zero();
    if (phase === 'Pending') {
      t.debitsPending += sign * l.debit;
      t.creditsPending += sign * l.credit;
    } else {
      t.debitsPosted += sign * l.debit;
      t.creditsPosted += sign * l.credit;
    }
    into.set(l.accountId, t);
  }
  return into;
}

/** Sums legs per (account, side), so a hold's legs can be compared with the amounts posted against it. */
function aggregate(legs: Leg[]): Leg[] {
  const m = new Map<string, Leg>();
  for (const l of legs) {
    const k = `${l.accountId}:${l.debit > 0n ? 'd' : 'c'}`;
    const cur = m.get(k);
    if (cur) {
      cur.debit += l.debit;
      cur.credit += l.credit;
    } else m.set(k, { ...l });
  }
  return [...m.values()];
}

/** Database errors that mean something to a caller become LedgerErrors; others pass through. */
function mapDbError(e: unknown): unknown {
  const err = e as { code?: string; constraint?: string; message?: string } | null;
  if (
    err?.code === '23514' &&
    /^ledger_account_(debits_within_credits|credits_within_debits)$/.test(err.constraint ?? '')
  ) {
    return new LedgerError(
      'insufficient_funds',
      'an account balance constraint refused the journal',
      { constraint: err.constraint },
      e,
    );
  }
  if (err?.code === '23514' && err.constraint === 'ledger_journal_balanced')
    return new LedgerError('unbalanced', err.message ?? 'unbalanced', {}, e);
  if (err?.code === '22003')
    return new LedgerError('invalid_amount', 'an account total would overflow BIGINT', {}, e);
  return e;
}

type PlanResult = { kind: 'post' | 'void'; legs: Leg[]; usage?: unknown; memo?: string };

export class Ledger {
  /** code -> account; accounts are never deleted and their kind/flags never change, so caching is safe. */
  private readonly accounts = new Map<string, { id: bigint; sig: string }>();

  constructor(private readonly db: Kysely<Database>) {}

  /** Creates the account if missing (idempotent, race-safe); refuses a spec that contradicts the stored one. */
  async ensureAccount(spec: AccountSpec): Promise<bigint> {
    if (typeof spec.code !== 'string' || !spec.code) throw new TypeError('account code required');
    if (!ACCOUNT_KINDS.has(spec.kind)) throw new TypeError(`unknown account kind ${spec.kind}`);
    const sig = signature(
      spec.kind,
      spec.appId ?? null,
      spec.channelCode ?? null,
      !!spec.debitsMustNotExceedCredits,
      !!spec.creditsMustNotExceedDebits,
    );
    let acct = this.accounts.get(spec.code);
    if (!acct) {
      await this.db
        .insertInto('ledger_account')
        .values({
          code: spec.code,
          kind: spec.kind,
          app_id: spec.appId ?? null,
          channel_code: spec.channelCode ?? null,
          debits_must_not_exceed_credits: !!spec.debitsMustNotExceedCredits,
          credits_must_not_exceed_debits: !!spec.creditsMustNotExceedDebits,
        })
        .onConflict((oc) => oc.column('code').doNothing())
        .execute();
      await this.load([spec.code]);
      acct = this.accounts.get(spec.code)!;
    }
    if (acct.sig !== sig)
      throw new LedgerError('account_conflict', `account ${spec.code} exists as ${acct.sig}, not ${sig}`, {
        code: spec.code,
      });
    return acct.id;
  }

  /** Writes a posted journal (fund | sale | cost | correction). Replaying its idemKey writes nothing. */
  async postJournal(j: JournalSpec): Promise<WriteResult> {
    if (!POSTED_KINDS.has(j.kind))
      throw new TypeError(`postJournal writes fund | sale | cost | correction, not ${j.kind}`);
    return this.write(j, j.kind, await this.legs(checkEntries(j.entries)), false);
  }

  /** Reserves: pending entries, *_pending totals, journal state 'pending'. Flags count pending debits. */
  async hold(j: HoldSpec): Promise<WriteResult> {
    return this.write(j, 'hold', await this.legs(checkEntries(j.entries)), true);
  }

  /**
   * Posts a pending hold: in full, or `actual` amounts — the hold's own (account, side) pairs, each at most
   * what was held, balanced — releasing the rest. The post journal copies the hold's request/app metadata.
   * A hold already posted or voided: hold_already_resolved, unless idemKey was used already (duplicate).
   */
  async postHold(
    holdJournalId: bigint,
    idemKey: string,
    actual?: EntrySpec[],
    meta: Pick<JournalMeta, 'usage' | 'memo'> = {},
  ): Promise<WriteResult> {
    const wanted = actual === undefined ? undefined : await this.legs(checkEntries(actual));
    return this.resolve(holdJournalId, idemKey, (held) => {
      if (!wanted) return { kind: 'post', legs: held, ...meta };
      for (const w of aggregate(wanted)) {
        const h = held.find((x) => x.accountId === w.accountId && x.debit > 0n === w.debit > 0n);
        if (!h || w.debit > h.debit || w.credit > h.credit) {
          throw new LedgerError('invalid_amount', `posting exceeds the hold on account ${w.accountId}`, {
            holdJournalId,
            accountId: w.accountId,
          });
        }
      }
      return { kind: 'post', legs: wanted, ...meta };
    });
  }

  /** Releases a pending hold entirely; the void journal has no entries. */
  async voidHold(
    holdJournalId: bigint,
    idemKey: string,
    meta: Pick<JournalMeta, 'usage' | 'memo'> = {},
  ): Promise<WriteResult> {
    const r = await this.resolve(holdJournalId, idemKey, () => ({ kind: 'void', legs: [], ...meta }));
    return { journalId: r.journalId, duplicate: r.duplicate };
  }

  /**
   * Settles a two-legged hold (one debit account, one credit account, amount H) for `wanted` micro-units:
   * posts min(wanted, H) and releases the rest; wanted == 0 voids the hold. A settlement larger than its
   * hold is never silently dropped: the excess goes into the journal's usage (`excess_micros`, a decimal
   * string) and memo, and is returned. Collecting it is the caller's call — a separate 'correction'
   * journal through postJournal, which the wallet's balance flag may refuse.
   */
  async postHoldCapped(
    holdJournalId: bigint,
    idemKey: string,
    wanted: bigint,
    meta: Pick<JournalMeta, 'usage' | 'memo'> = {},
  ): Promise<WriteResult & { posted: bigint; excess: bigint }> {
    if (typeof wanted !== 'bigint' || wanted < 0n)
      throw new LedgerError('invalid_amount', 'wanted must be a bigint >= 0');
    const r = await this.resolve(holdJournalId, idemKey, (held) => {
      const debit = held.filter((l) => l.debit > 0n);
      const credit = held.filter((l) => l.credit > 0n);
      if (debit.length !== 1 || credit.length !== 1)
        throw new LedgerError('invalid_amount', 'postHoldCapped needs a two-legged hold', { holdJournalId });
      const posted = min(wanted, debit[0]!.debit);
      const excess = wanted - posted;
      let { usage, memo } = meta;
      if (excess > 0n) {
        const u =
          usage === undefined
            ? {}
            : typeof usage === 'object' && usage !== null && !Array.isArray(usage)
              ? usage
              : { usage };
        usage = { ...u, excess_micros: excess.toString() };
        memo =
          `excess ${excess} micro-units over hold ${holdJournalId} not posted` + (memo ? `; ${memo}` : '');
      }
      if (posted === 0n) return { kind: 'void', legs: [], usage, memo };
      const legs = [
        { ...debit[0]!, debit: posted },
        { ...credit[0]!, credit: posted },
      ];
      return { kind: 'post', legs, usage, memo };
    });
    // Posted and excess are read back from what was stored, so a replay answers the same as the first call.
    return { journalId: r.journalId, duplicate: r.duplicate, ...(await this.settled(r.journalId)) };
  }

  /** Which of these idempotency keys have a journal (one indexed lookup per key, in one query). */
  async journaled(idemKeys: string[]): Promise<Set<string>> {
    if (idemKeys.length === 0) return new Set();
    const { rows } = await sql<{ idem_key: string }>`
      SELECT idem_key FROM ledger_journal WHERE idem_key = ANY(${idemKeys}::text[])`.execute(this.db);
    return new Set(rows.map((r) => r.idem_key));
  }

  /**
   * Posts many journals in ONE statement, the journal writer's path: journals whose idemKey exists are
   * skipped (reported as duplicates), the others are inserted with their entries, and each account's
   * totals move once per batch. All or nothing: a balance flag refusing any journal refuses the batch
   * (LedgerError 'insufficient_funds'); the caller then posts them one by one to find it. `balancesOf`
   * names accounts whose balances to read back (what the batch left them at), with a version that only
   * grows (debits + credits posted).
   *
   * One statement (data-modifying CTEs, autocommitted), not a transaction of seven: on loopback each
   * round trip costs the server about as much CPU as a small statement, so BEGIN, the lock, the update,
   * the balance read and a separate COMMIT were ~1-2 ms of PostgreSQL CPU per batch whatever its size
   * (measured with bench/journal-writer.ts). A single statement is atomic on its own. The accounts are
   * locked in ascending id order by the `locked` CTE (rows are locked as its sorted scan emits them, and
   * the UPDATE only reaches a row through it), the order every writer shares, so concurrent batches
   * can't deadlock (their journals go in by idempotency key, also one shared order, and before any
   * account is locked); under READ COMMITTED the UPDATE adds to the newest committed totals.
   */
  async postBatch(
    journals: Array<JournalSpec & { occurredAt?: Date }>,
    balancesOf: string[] = [],
  ): Promise<{
    written: string[];
    duplicates: string[];
    balances: Map<string, { available: bigint; version: bigint }>;
  }> {
    const seen = new Set<string>();
    const prepared: Array<{ j: JournalSpec & { occurredAt?: Date }; legs: Leg[] }> = [];
    for (const j of journals) {
      if (!POSTED_KINDS.has(j.kind))
        throw new TypeError(`postBatch writes fund | sale | cost | correction, not ${j.kind}`);
      const k = checkIdemKey(j.idemKey);
      if (seen.has(k)) continue;
      seen.add(k);
      prepared.push({ j, legs: await this.legs(checkEntries(j.entries)) });
    }
    const balances = new Map<string, { available: bigint; version: bigint }>();
    if (prepared.length === 0) return { written: [], duplicates: [], balances };
    // Each column goes as one array literal built here (pgArray): node-postgres would serialize arrays
    // element by element with two regex passes each, per journal, on the gateway's CPU (seen in its
    // profile under bench/overhead.ts; figures in bench/HISTORY.md).
    const col = (f: (j: JournalSpec & { occurredAt?: Date }) => string | null) =>
      pgArray(prepared.map(({ j }) => f(j)));
    // Each journal's entries go on its row (migration 0023): a bigint array literal per journal and column
    // (digits only, so joined as they are), sent as one text array per column.
    const entryAccount: string[] = [];
    const entryDebit: string[] = [];
    const entryCredit: string[] = [];
    const accounts = new Set<bigint>();
    for (const { legs } of prepared) {
      const a: string[] = [];
      const d: string[] = [];
      const c: string[] = [];
      for (const l of legs) {
        a.push(l.accountId.toString());
        d.push(l.debit.toString());
        c.push(l.credit.toString());
        accounts.add(l.accountId);
      }
      entryAccount.push('{' + a.join(',') + '}');
      entryDebit.push('{' + d.join(',') + '}');
      entryCredit.push('{' + c.join(',') + '}');
    }
    const ids = [...accounts].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(String);
    try {
      const { rows } = await POST_BATCH.execute(
        this.db,
        sql`
        WITH src AS (
          SELECT * FROM unnest(${col((j) => j.idemKey)}::text[], ${col((j) => j.kind)}::text[], ${col((j) => j.requestId ?? null)}::text[],
            ${col((j) => j.taskId ?? null)}::text[], ${col((j) => j.appId ?? null)}::text[], ${col((j) => j.alias ?? null)}::text[],
            ${col((j) => j.channel ?? null)}::text[], ${col((j) => (j.usage === undefined ? null : toJson(j.usage)))}::text[],
            ${col((j) => j.memo ?? null)}::text[], ${col((j) => (j.occurredAt ? j.occurredAt.toISOString() : null))}::timestamptz[],
            ${pgArray(entryAccount)}::text[], ${pgArray(entryDebit)}::text[], ${pgArray(entryCredit)}::text[])
            AS t (k, kind, rid, tid, app, alias, ch, u, memo, at, ea, ed, ec)
        ), j AS (
          -- In idempotency key order: two writers inserting the same keys wait on each other in one order.
          INSERT INTO ledger_journal (idem_key, kind, request_id, task_id, app_id, alias, channel, usage, memo, state, occurred_at,
            entry_account, entry_debit, entry_credit)
          SELECT k, kind, rid, tid, app, alias, ch, u::jsonb, memo, 'posted', coalesce(at, now()), ea::bigint[], ed::bigint[], ec::bigint[]
          FROM src ORDER BY k
          ON CONFLICT (idem_key) DO NOTHING
          RETURNING idem_key, entry_account, entry_debit, entry_credit
        ), delta AS (
          SELECT x.a AS id, sum(x.d) AS d, sum(x.c) AS c
          FROM j, unnest(j.entry_account, j.entry_debit, j.entry_credit) AS x (a, d, c)
          GROUP BY x.a
        ), locked AS (
          -- The count reads j to its end in a one-time filter: every journal is in before any account is locked.
          SELECT id FROM ledger_account WHERE id = ANY(${pgArray(ids)}::bigint[]) AND (SELECT count(*) FROM j) > 0
          ORDER BY id FOR NO KEY UPDATE
        ), u AS (
          UPDATE ledger_account a SET debits_posted = a.debits_posted + delta.d, credits_posted = a.credits_posted + delta.c
          FROM locked JOIN delta ON delta.id = locked.id
          WHERE a.id = locked.id
          RETURNING a.code, a.credits_posted - a.debits_posted - a.debits_pending AS available, a.debits_posted + a.credits_posted AS version
        )
        SELECT 'j' AS t, idem_key AS k, NULL::bigint AS available, NULL::bigint AS version FROM j
        UNION ALL
        SELECT 'b', code, available, version FROM u WHERE code = ANY(${pgArray(balancesOf)}::text[])
        UNION ALL
        SELECT 'b', code, credits_posted - debits_posted - debits_pending, debits_posted + credits_posted
        FROM ledger_account WHERE code = ANY(${pgArray(balancesOf)}::text[]) AND code NOT IN (SELECT code FROM u)`.compile(
          this.db,
        ),
      );
      const done = new Set<string>();
      for (const r of rows) {
        if (r.t === 'j') done.add(r.k);
        else balances.set(r.k, { available: BigInt(r.available!), version: BigInt(r.version!) });
      }
      const written: string[] = [];
      const duplicates: string[] = [];
      for (const { j } of prepared) (done.has(j.idemKey) ? written : duplicates).push(j.idemKey);
      return { written, duplicates, balances };
    } catch (e) {
      throw mapDbError(e);
    }
  }

  async balance(code: string): Promise<Balance> {
    const r = await this.db
      .selectFrom('ledger_account')
      .selectAll()
      .where('code', '=', code)
      .executeTakeFirst();
    if (!r) throw new LedgerError('account_not_found', `no ledger account ${code}`, { code });
    const t: Totals = {
      debitsPending: r.debits_pending,
      debitsPosted: r.debits_posted,
      creditsPending: r.credits_pending,
      creditsPosted: r.credits_posted,
    };
    const available =
      r.kind === 'expense'
        ? t.debitsPosted - t.creditsPosted - t.creditsPending
        : t.creditsPosted - t.debitsPosted - t.debitsPending;
    return { ...t, available };
  }

  /** Recomputes every account from its entries (one statement, one snapshot) and checks the stored totals. O(entries). */
  async trialBalance(): Promise<TrialBalance> {
    const { rows } = await sql<Record<string, string>>`
      SELECT a.code, a.kind, a.debits_pending::text AS s_dpe, a.debits_posted::text AS s_dpo,
        a.credits_pending::text AS s_cpe, a.credits_posted::text AS s_cpo,
        coalesce(e.dpe, 0)::text AS e_dpe, coalesce(e.dpo, 0)::text AS e_dpo,
        coalesce(e.cpe, 0)::text AS e_cpe, coalesce(e.cpo, 0)::text AS e_cpo
      FROM ledger_account a LEFT JOIN (
        SELECT en.account_id,
          sum(en.debit) FILTER (WHERE en.pending AND en.state = 'pending') AS dpe,
          sum(en.debit) FILTER (WHERE NOT en.pending) AS dpo,
          sum(en.credit) FILTER (WHERE en.pending AND en.state = 'pending') AS cpe,
          sum(en.credit) FILTER (WHERE NOT en.pending) AS cpo
        FROM (
          SELECT en.account_id, en.debit, en.credit, en.pending, j.state
          FROM ledger_entry en JOIN ledger_journal j ON j.id = en.journal_id
          UNION ALL
          -- Entries on their journal's row (0023) are posted entries of posted journals.
          SELECT x.account_id, x.debit, x.credit, false, 'posted'
          FROM ledger_journal j, unnest(j.entry_account, j.entry_debit, j.entry_credit) AS x (account_id, debit, credit)
          WHERE j.entry_account IS NOT NULL
        ) en
        GROUP BY en.account_id
      ) e ON e.account_id = a.id
      ORDER BY a.id`.execute(this.db);
    const out: TrialBalance = {
      debits: 0n,
      credits: 0n,
      pendingDebits: 0n,
      pendingCredits: 0n,
      balanced: false,
      byAccount: [],
      mismatches: [],
    };
    const pick = (r: Record<string, string>, p: string): Totals => ({
      debitsPending: BigInt(r[`${p}_dpe`]!),
      debitsPosted: BigInt(r[`${p}_dpo`]!),
      creditsPending: BigInt(r[`${p}_cpe`]!),
      creditsPosted: BigInt(r[`${p}_cpo`]!),
    });
    for (const r of rows) {
      const fromEntries = pick(r, 'e');
      const stored = pick(r, 's');
      out.debits += fromEntries.debitsPosted;
      out.credits += fromEntries.creditsPosted;
      out.pendingDebits += fromEntries.debitsPending;
      out.pendingCredits += fromEntries.creditsPending;
      out.byAccount.push({ code: r.code!, kind: r.kind!, fromEntries, stored });
      for (const f of FIELDS)
        if (stored[f] !== fromEntries[f])
          out.mismatches.push({ code: r.code!, field: f, stored: stored[f], fromEntries: fromEntries[f] });
    }
    out.balanced = out.debits === out.credits && out.pendingDebits === out.pendingCredits;
    return out;
  }

  /** Newest first, with entries. limit defaults to 100 (at most 1000). */
  async journals(
    f: {
      appId?: string;
      requestId?: string;
      kind?: JournalKind;
      alias?: string;
      channel?: string;
      limit?: number;
      offset?: number;
    } = {},
  ): Promise<JournalView[]> {
    let q = this.db.selectFrom('ledger_journal').selectAll();
    if (f.alias !== undefined) q = q.where('alias', '=', f.alias);
    if (f.channel !== undefined) q = q.where('channel', '=', f.channel);
    if (f.appId !== undefined) q = q.where('app_id', '=', f.appId);
    if (f.requestId !== undefined) q = q.where('request_id', '=', f.requestId);
    if (f.kind !== undefined) q = q.where('kind', '=', f.kind);
    const limit = Math.min(Math.max(1, Math.trunc(f.limit ?? 100)), 1000);
    const rows = await q
      .orderBy('id', 'desc')
      .limit(limit)
      .offset(Math.max(0, Math.trunc(f.offset ?? 0)))
      .execute();
    if (rows.length === 0) return [];
    // ledger_posting (0023) holds both places entries live; the id filter reaches each branch's primary key.
    const { rows: entries } = await sql<{
      journal_id: string;
      code: string;
      debit: string;
      credit: string;
      pending: boolean;
    }>`
      SELECT e.journal_id::text, a.code, e.debit::text, e.credit::text, e.pending
      FROM ledger_posting e JOIN ledger_account a ON a.id = e.account_id
      WHERE e.journal_id = ANY(${pgArray(rows.map((r) => r.id.toString()))}::bigint[])
      ORDER BY e.journal_id, e.seq`.execute(this.db);
    const byJournal = new Map<string, JournalView['entries']>();
    for (const e of entries) {
      let list = byJournal.get(e.journal_id);
      if (!list) byJournal.set(e.journal_id, (list = []));
      list.push({ account: e.code, debit: BigInt(e.debit), credit: BigInt(e.credit), pending: e.pending });
    }
    return rows.map((r) => ({
      id: r.id,
      idemKey: r.idem_key,
      kind: r.kind,
      state: r.state,
      pendingOf: r.pending_of,
      requestId: r.request_id,
      taskId: r.task_id,
      appId: r.app_id,
      alias: r.alias,
      channel: r.channel,
      usage: r.usage,
      memo: r.memo,
      createdAt: r.created_at,
      entries: byJournal.get(r.id.toString()) ?? [],
    }));
  }

  // --- internals ---

  /** Loads accounts by code into the cache (one query). */
  private async load(codes: string[]): Promise<void> {
    const rows = await this.db.selectFrom('ledger_account').selectAll().where('code', 'in', codes).execute();
    for (const r of rows) {
      const sig = signature(
        r.kind,
        r.app_id,
        r.channel_code,
        r.debits_must_not_exceed_credits,
        r.credits_must_not_exceed_debits,
      );
      this.accounts.set(r.code, { id: r.id, sig });
    }
  }

  private async legs(entries: Array<{ account: string; debit: bigint; credit: bigint }>): Promise<Leg[]> {
    const missing = [...new Set(entries.map((e) => e.account))].filter((c) => !this.accounts.has(c));
    if (missing.length) await this.load(missing);
    return entries.map((e) => {
      const a = this.accounts.get(e.account);
      if (!a)
        throw new LedgerError('account_not_found', `no ledger account ${e.account}`, { code: e.account });
      return { accountId: a.id, debit: e.debit, credit: e.credit };
    });
  }

  /** postJournal and hold: insert the journal (idempotently), then its entries, then move the account totals. */
  private async write(
    j: JournalMeta & { idemKey: string },
    kind: JournalKind,
    legs: Leg[],
    pending: boolean,
  ): Promise<WriteResult> {
    const idemKey = checkIdemKey(j.idemKey);
    try {
      return await this.db.transaction().execute(async (trx) => {
        const id = await insertJournal(trx, idemKey, kind, j, null, pending ? 'pending' : 'posted');
        if (id === null) return { journalId: await existingId(trx, idemKey), duplicate: true };
        // Entries first, accounts last: the account rows (hot ones like 'revenue') stay locked only for
        // the UPDATE and the COMMIT.
        await insertEntries(trx, id, legs, pending);
        await applyDeltas(trx, addLegs(new Map(), legs, pending ? 'Pending' : 'Posted', 1n));
        return { journalId: id, duplicate: false };
      });
    } catch (e) {
      throw mapDbError(e);
    }
  }

  /** postHold / voidHold / postHoldCapped: lock the hold, check it, let `plan` decide what to post. */
  private async resolve(
    holdId: bigint,
    idemKey: string,
    plan: (held: Leg[]) => PlanResult,
  ): Promise<WriteResult> {
    checkIdemKey(idemKey);
    if (typeof holdId !== 'bigint') throw new TypeError('holdJournalId must be a bigint');
    try {
      return await this.db.transaction().execute(async (trx) => {
        // NO KEY UPDATE: conflicts with other resolutions, not with the FK check of our own post journal.
        const hold = await trx
          .selectFrom('ledger_journal')
          .selectAll()
          .where('id', '=', holdId)
          .forNoKeyUpdate()
          .executeTakeFirst();
        if (!hold || hold.kind !== 'hold')
          throw new LedgerError('hold_not_found', `no hold journal ${holdId}`, { holdJournalId: holdId });
        const prior = await trx
          .selectFrom('ledger_journal')
          .select('id')
          .where('idem_key', '=', idemKey)
          .executeTakeFirst();
        if (prior) return { journalId: prior.id, duplicate: true };
        if (hold.state !== 'pending') {
          throw new LedgerError('hold_already_resolved', `hold ${holdId} is already ${hold.state}`, {
            holdJournalId: holdId,
            state: hold.state,
          });
        }
        const rows = await trx
          .selectFrom('ledger_entry')
          .select(['account_id', 'debit', 'credit'])
          .where('journal_id', '=', holdId)
          .execute();
        const held = aggregate(
          rows.map((r) => ({ accountId: r.account_id, debit: r.debit, credit: r.credit })),
        );
        const p = plan(held);
        const meta = {
          requestId: hold.request_id,
          taskId: hold.task_id,
          appId: hold.app_id,
          alias: hold.alias,
          channel: hold.channel,
          usage: p.usage,
          memo: p.memo,
        };
        const id = await insertJournal(trx, idemKey, p.kind, meta, holdId, 'posted');
        if (id === null) return { journalId: await existingId(trx, idemKey), duplicate: true };
        await insertEntries(trx, id, p.legs, false);
        await trx
          .updateTable('ledger_journal')
          .set({ state: p.kind === 'post' ? 'posted' : 'voided' })
          .where('id', '=', holdId)
          .execute();
        await applyDeltas(trx, addLegs(addLegs(new Map(), held, 'Pending', -1n), p.legs, 'Posted', 1n));
        return { journalId: id, duplicate: false };
      });
    } catch (e) {
      throw mapDbError(e);
    }
  }

  /** What a post/void journal posted (sum of its debits) and the excess it recorded. */
  private async settled(journalId: bigint): Promise<{ posted: bigint; excess: bigint }> {
    const j = await this.db
      .selectFrom('ledger_journal')
      .select('usage')
      .where('id', '=', journalId)
      .executeTakeFirstOrThrow();
    const s = await this.db
      .selectFrom('ledger_entry')
      .select(sql<string>`coalesce(sum(debit), 0)::text`.as('d'))
      .where('journal_id', '=', journalId)
      .executeTakeFirstOrThrow();
    const ex = (j.usage as { excess_micros?: unknown } | null)?.excess_micros;
    return { posted: BigInt(s.d), excess: typeof ex === 'string' ? BigInt(ex) : 0n };
  }
}

function signature(
  kind: string,
  appId: string | null,
  channel: string | null,
  dmnec: boolean,
  cmned: boolean,
): string {
  return JSON.stringify({
    kind,
    appId,
    channel,
    debitsMustNotExceedCredits: dmnec,
    creditsMustNotExceedDebits: cmned,
  });
}

/**
 * postBatch's statement, named: its text is the same for every batch (each column is one parameter), and
 * parsing and planning it unnamed cost ~1 ms of PostgreSQL CPU per batch, as much as ~50 journals' rows
 * (bench/journal-writer.ts at batch 10 and 100, named against unnamed).
 */
const POST_BATCH = new NamedStatement<{
  t: 'j' | 'b';
  k: string;
  available: bigint | null;
  version: bigint | null;
}>('anima_ledger_post_batch');

/** INSERT ... ON CONFLICT (idem_key) DO NOTHING: the id, or null when the key is taken (a concurrent writer is waited for). */
async function insertJournal(
  trx: Tx,
  idemKey: string,
  kind: JournalKind,
  m: {
    requestId?: string | null;
    taskId?: string | null;
    appId?: string | null;
    alias?: string | null;
    channel?: string | null;
    usage?: unknown;
    memo?: string | null;
  },
  pendingOf: bigint | null,
  state: 'pending' | 'posted',
): Promise<bigint | null> {
  const r = await trx
    .insertInto('ledger_journal')
    .values({
      idem_key: idemKey,
      kind,
      request_id: m.requestId ?? null,
      task_id: m.taskId ?? null,
      app_id: m.appId ?? null,
      alias: m.alias ?? null,
      channel: m.channel ?? null,
      usage: m.usage === undefined ? null : toJson(m.usage),
      memo: m.memo ?? null,
      pending_of: pendingOf === null ? null : pendingOf.toString(),
      state,
    })
    .onConflict((oc) => oc.column('idem_key').doNothing())
    .returning('id')
    .executeTakeFirst();
  return r?.id ?? null;
}

async function existingId(trx: Tx, idemKey: string): Promise<bigint> {
  const r = await trx
    .selectFrom('ledger_journal')
    .select('id')
    .where('idem_key', '=', idemKey)
    .executeTakeFirstOrThrow();
  return r.id;
}

/**
 * Locks the accounts in ascending id order (the deadlock-free order every writer shares), then adds the
 * deltas in one UPDATE. The balance-flag CHECKs are evaluated on the new rows.
 */
async function applyDeltas(trx: Tx, deltas: Map<bigint, Totals>): Promise<void> {
  const ids = [...deltas.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (ids.length === 0) return;
  await sql`SELECT id FROM ledger_account WHERE id IN (${sql.join(ids.map(String))}) ORDER BY id FOR NO KEY UPDATE`.execute(
    trx,
  );
  const values = ids.map((id) => {
    const t = deltas.get(id)!;
    return sql`(${String(id)}::bigint, ${String(t.debitsPending)}::bigint, ${String(t.debitsPosted)}::bigint, ${String(t.creditsPending)}::bigint, ${String(t.creditsPosted)}::bigint)`;
  });
  await sql`UPDATE ledger_account a SET
      debits_pending = a.debits_pending + v.dpe, debits_posted = a.debits_posted + v.dpo,
      credits_pending = a.credits_pending + v.cpe, credits_posted = a.credits_posted + v.cpo
    FROM (VALUES ${sql.join(values)}) AS v (id, dpe, dpo, cpe, cpo)
    WHERE a.id = v.id`.execute(trx);
}

async function insertEntries(trx: Tx, journalId: bigint, legs: Leg[], pending: boolean): Promise<void> {
  if (legs.length === 0) return;
  await trx
    .insertInto('ledger_entry')
    .values(
      legs.map((l) => ({
        journal_id: journalId.toString(),
        account_id: l.accountId.toString(),
        debit: l.debit.toString(),
        credit: l.credit.toString(),
        pending,
      })),
    )
    .execute();
}
