/**
 * The chart of accounts Anima books requests in, and the journal a served request becomes.
 *
 *   wallet:<app>      prepaid balance (what we owe the app in service): funding credits it, sales debit it.
 *                     Flagged debits-must-not-exceed-credits: the database refuses an overdraft.
 *   receivable:<app>  a postpaid app's running bill: sales debit it, payments credit it.
 *   revenue           sale prices earned.
 *   bad_debt          the part of a sale a prepaid wallet could not cover (recorded, never dropped).
 *   cogs:<channel>    upstream cost of goods sold, per channel.
 *   payable:<channel> what we owe the channel's provider.
 *   funding           where wallet top-ups come from (cash received).
 *
 * A served request's journal (kind 'sale'), all in one balanced journal:
 *   Dr wallet|receivable  charged       Cr revenue          sale
 *   Dr bad_debt           sale-charged
 *   Dr cogs:<channel>     cost          Cr payable:<channel> cost
 * Spread = revenue - cogs, by any journal dimension (app, alias, channel, day).
 */
import type { AccountSpec, EntrySpec, JournalSpec } from './ledger.js';
import type { BillingRecord } from './types.js';

export const REVENUE: AccountSpec = { code: 'revenue', kind: 'revenue' };
export const BAD_DEBT: AccountSpec = { code: 'bad_debt', kind: 'expense' };
export const FUNDING: AccountSpec = { code: 'funding', kind: 'equity' };

export const walletAccount = (appId: string): AccountSpec => ({
  code: `wallet:${appId}`,
  kind: 'wallet',
  appId,
  debitsMustNotExceedCredits: true,
});
export const receivableAccount = (appId: string): AccountSpec => ({
  code: `receivable:${appId}`,
  kind: 'wallet',
  appId,
});
export const cogsAccount = (channel: string): AccountSpec => ({
  code: `cogs:${channel}`,
  kind: 'expense',
  channelCode: channel,
});
export const payableAccount = (channel: string): AccountSpec => ({
  code: `payable:${channel}`,
  kind: 'liability',
  channelCode: channel,
});

export const saleIdemKey = (recordId: string) => `sale:${recordId}`;

export interface SaleJournal {
  spec: JournalSpec & { occurredAt: Date };
  accounts: AccountSpec[];
}

/** The journal for a settled record, or null when it moves no money (no price set). */
export function saleJournal(
  rec: BillingRecord,
  charged: bigint = rec.charged ?? rec.sale,
): SaleJournal | null {
  if (charged < 0n || charged > rec.sale) throw new RangeError(`charged ${charged} outside 0..${rec.sale}`);
  const payer = rec.prepaid ? walletAccount(rec.appId) : receivableAccount(rec.appId);
  const entries: EntrySpec[] = [];
  const accounts: AccountSpec[] = [];
  if (rec.sale > 0n) {
    if (charged > 0n) entries.push({ account: payer.code, debit: charged });
    if (rec.sale > charged) entries.push({ account: BAD_DEBT.code, debit: rec.sale - charged });
    entries.push({ account: REVENUE.code, credit: rec.sale });
    accounts.push(payer, BAD_DEBT, REVENUE);
  }
  if (rec.cost > 0n) {
    const cogs = cogsAccount(rec.channel);
    const pay = payableAccount(rec.channel);
    entries.push({ account: cogs.code, debit: rec.cost }, { account: pay.code, credit: rec.cost });
    accounts.push(cogs, pay);
  }
  if (entries.length === 0) return null;
  // Copied field by field (a spread of the usage object was most of this function's cost).
  const usage: Record<string, unknown> = {};
  for (const k in rec.usage) usage[k] = rec.usage[k];
  if (rec.sale > charged) usage.uncollected_micros = (rec.sale - charged).toString();
  usage.sale_micros = rec.sale.toString();
  usage.cost_micros = rec.cost.toString();
  const spec: SaleJournal['spec'] = {
    idemKey: saleIdemKey(rec.id),
    kind: 'sale',
    entries,
    appId: rec.appId,
    alias: rec.alias,
    channel: rec.channel,
    usage,
    occurredAt: new Date(rec.at),
  };
  if (rec.requestId) spec.requestId = rec.requestId;
  if (rec.taskId) spec.taskId = rec.taskId;
  return { spec, accounts };
}
