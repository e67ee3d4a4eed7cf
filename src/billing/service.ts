import type { Logger } from 'pino';
import { sql, type Kysely } from 'kysely';
import { GatewayError } from '../core/errors.js';
import type { Database } from '../store/schema.js';
import { type Ledger, LedgerError } from './ledger.js';
import { FUNDING, walletAccount } from './journal.js';
import type { BillingBackend, BillingRecord } from './types.js';
import type { JournalWriter } from './writer.js';

export interface BillingHooks {
  onRefused?: (reason: 'insufficient_balance' | 'unavailable') => void;
  onUncollected?: (appId: string, micros: bigint) => void;
  onSpilled?: () => void;
}

/**
 * The billing façade the data plane calls: reserve a prepaid wallet before the upstream is called,
 * settle exactly once when the answer is known, release on failure. One Redis round trip each; the
 * database is touched only to seed a wallet's mirror the first time it is used, and, with Redis down,
 * to read the wallet's balance (degraded mode: each instance then guards against its own reservations
 * only; the writer's overdraft check still keeps the ledger's wallet from going below zero).
 */
export class Billing {
  /** Degraded-mode reservations of this instance: app -> hold -> amount. */
  private readonly localHolds = new Map<string, Map<string, bigint>>();

  constructor(
    readonly backend: BillingBackend,
    readonly ledger: Ledger,
    readonly writer: JournalWriter,
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
    private readonly opts: { holdTtlMs: number },
    private readonly hooks: BillingHooks = {},
  ) {}

  /** New billable requests are refused while settled records can reach neither Redis nor the database. */
  blocked(): boolean {
    return this.writer.blocked();
  }

  /** Reserves `amount` of a prepaid wallet: 402 insufficient_balance when it can't cover it. */
  async reserve(appId: string, holdId: string, amount: bigint, ttlMs = this.opts.holdTtlMs): Promise<void> {
    if (amount <= 0n) return;
    let r;
    try {
      r = await this.backend.reserve(appId, holdId, amount, ttlMs);
      if (!r.ok && r.reason === 'unknown') {
        const b = await this.ledgerBalance(appId);
        await this.backend.initWallet(appId, b.available, b.version);
        r = await this.backend.reserve(appId, holdId, amount, ttlMs);
      }
    } catch (e) {
      if (e instanceof GatewayError) throw e;
      return this.reserveDegraded(appId, holdId, amount);
    }
    if (r.ok) return;
    if (r.reason === 'insufficient') {
      this.hooks.onRefused?.('insufficient_balance');
      throw new GatewayError(
        'insufficient_balance',
        `The app's prepaid balance (${r.available} micro-units available) cannot cover this request (up to ${amount} micro-units). Top up the wallet or lower max_tokens.`,
      );
    }
    throw new GatewayError('service_unavailable', 'The wallet balance could not be read.');
  }

  private async reserveDegraded(appId: string, holdId: string, amount: bigint): Promise<void> {
    let b;
    try {
      b = await this.ledgerBalance(appId);
    } catch {
      this.hooks.onRefused?.('unavailable');
      throw new GatewayError(
        'service_unavailable',
        'Billing is unavailable (neither Redis nor the database answers); the request was not served.',
      );
    }
    const mine = this.localHolds.get(appId) ?? new Map<string, bigint>();
    let held = 0n;
    for (const v of mine.values()) held += v;
    if (amount > b.available - held) {
      this.hooks.onRefused?.('insufficient_balance');
      throw new GatewayError(
        'insufficient_balance',
        `The app's prepaid balance (${b.available - held} micro-units available) cannot cover this request (up to ${amount} micro-units).`,
      );
    }
    mine.set(holdId, amount);
    this.localHolds.set(appId, mine);
  }

  async release(appId: string, holdId: string): Promise<void> {
    if (this.localHolds.get(appId)?.delete(holdId)) return;
    await this.backend
      .release(appId, holdId)
      .catch((e: unknown) =>
        this.log.warn(
          { err: { message: String((e as Error)?.message) }, app: appId },
          'billing: releasing a reservation failed; it expires by TTL',
        ),
      );
  }

  /**
   * Settles a served request exactly once (by record id). Never throws: when Redis can't take the record
   * it goes to the writer directly (and waits in memory while the database is down as well).
   */
  async settle(rec: BillingRecord, holdId: string | null): Promise<{ charged: bigint }> {
    const local = holdId !== null && this.localHolds.get(rec.appId)?.delete(holdId) === true;
    try {
      const r = await this.backend.settle(rec, local ? null : holdId);
      if (!r.duplicate && r.charged < rec.sale) this.hooks.onUncollected?.(rec.appId, rec.sale - r.charged);
      if (!r.duplicate) this.writer.wake();
      return { charged: r.charged };
    } catch (e) {
      this.log.warn(
        { err: { message: String((e as Error)?.message) }, record: rec.id },
        'billing: queue unreachable; writing the journal directly',
      );
      this.hooks.onSpilled?.();
      this.writer.spill({ ...rec, charged: rec.sale });
      return { charged: rec.sale };
    }
  }

  /** The wallet's ledger balance and version (creates the account on first use). */
  async ledgerBalance(appId: string): Promise<{ available: bigint; version: bigint }> {
    const code = walletAccount(appId).code;
    await this.ledger.ensureAccount(walletAccount(appId));
    const b = await this.ledger.balance(code);
    return { available: b.available, version: b.debitsPosted + b.creditsPosted };
  }

  /** Tops a wallet up (idempotent by key) and moves the mirror to the new balance. */
  async fund(
    appId: string,
    amount: bigint,
    idemKey: string,
    memo?: string,
  ): Promise<{ journalId: bigint; duplicate: boolean; available: bigint }> {
    await this.ledger.ensureAccount(FUNDING);
    await this.ledger.ensureAccount(walletAccount(appId));
    const r = await this.ledger.postJournal({
      idemKey,
      kind: 'fund',
      appId,
      ...(memo ? { memo } : {}),
      entries: [
        { account: FUNDING.code, debit: amount },
        { account: walletAccount(appId).code, credit: amount },
      ],
    });
    const b = await this.ledgerBalance(appId);
    await this.backend.refreshWallet(appId, b.available, b.version).catch(() => {});
    return { ...r, available: b.available };
  }

  /** Ledger balance, what is charged but not yet written, and what is reserved by requests in flight. */
  async wallet(appId: string): Promise<Record<string, string | null>> {
    const b = await this.ledger.balance(walletAccount(appId).code).catch((e: unknown) => {
      if (e instanceof LedgerError && e.code === 'account_not_found') return null;
      throw e;
    });
    const m = await this.backend.wallet(appId).catch(() => null);
    const ledger = b?.available ?? 0n;
    const spendable = m ? m.ledger - m.unwritten - m.reserved : ledger;
    return {
      app_id: appId,
      ledger_balance_micros: ledger.toString(),
      funded_micros: (b?.creditsPosted ?? 0n).toString(),
      spent_micros: (b?.debitsPosted ?? 0n).toString(),
      unwritten_micros: m ? m.unwritten.toString() : null,
      reserved_micros: m ? m.reserved.toString() : null,
      spendable_micros: spendable.toString(),
    };
  }

  /**
   * Revenue, cost and spread from the posted entries, grouped by any of app / alias / channel / day
   * (the day the request happened, UTC), for journals that occurred in [from, to).
   */
  async report(f: {
    from?: Date;
    to?: Date;
    groupBy: Array<'app' | 'alias' | 'channel' | 'day'>;
  }): Promise<Array<Record<string, string | number | null>>> {
    const cols: Record<string, ReturnType<typeof sql>> = {
      app: sql`j.app_id`,
      alias: sql`j.alias`,
      channel: sql`j.channel`,
      day: sql`to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
    };
    const dims = [...new Set(f.groupBy)];
    const select = dims.map((d) => sql`${cols[d]} AS ${sql.ref(d)}`);
    const where = [sql`j.kind IN ('sale', 'correction', 'post')`];
    if (f.from) where.push(sql`j.occurred_at >= ${f.from}`);
    if (f.to) where.push(sql`j.occurred_at < ${f.to}`);
    const groupBy = dims.length
      ? sql`GROUP BY ${sql.join(dims.map((d) => cols[d]!))} ORDER BY ${sql.join(dims.map((d) => cols[d]!))}`
      : sql``;
    const { rows } = await sql<Record<string, string | null>>`
      SELECT ${sql.join([
        ...select,
        sql`count(DISTINCT j.id) AS journals`,
        sql`coalesce(sum(e.credit - e.debit) FILTER (WHERE a.kind = 'revenue'), 0)::text AS revenue_micros`,
        sql`coalesce(sum(e.debit - e.credit) FILTER (WHERE a.kind = 'expense' AND a.code LIKE 'cogs:%'), 0)::text AS cost_micros`,
        sql`coalesce(sum(e.debit - e.credit) FILTER (WHERE a.code = 'bad_debt'), 0)::text AS uncollected_micros`,
      ])}
      FROM ledger_journal j JOIN ledger_entry e ON e.journal_id = j.id JOIN ledger_account a ON a.id = e.account_id
      WHERE ${sql.join(where, sql` AND `)}
      ${groupBy}`.execute(this.db);
    return rows.map((r) => ({
      ...r,
      journals: Number(r.journals),
      spread_micros: (BigInt(r.revenue_micros ?? '0') - BigInt(r.cost_micros ?? '0')).toString(),
    }));
  }
}
