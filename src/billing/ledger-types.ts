/**
 * The ledger's public types and its error class (src/billing/ledger.ts re-exports them): what a caller
 * passes and gets back, apart from the implementation.
 */
export type AccountKind = 'wallet' | 'revenue' | 'expense' | 'liability' | 'hold' | 'equity';
/** Journal kinds `postJournal` writes; 'hold' | 'post' | 'void' belong to the two-phase methods. */
export type PostedKind = 'fund' | 'sale' | 'cost' | 'correction';
export type JournalKind = PostedKind | 'hold' | 'post' | 'void';

export type LedgerErrorCode =
  | 'unbalanced'
  | 'insufficient_funds'
  | 'hold_not_found'
  | 'hold_already_resolved'
  | 'invalid_amount'
  | 'account_not_found'
  /** ensureAccount with a spec (kind, flags, app, channel) that differs from the stored account. */
  | 'account_conflict';

export class LedgerError extends Error {
  readonly code: LedgerErrorCode;
  readonly details: Record<string, unknown>;
  constructor(
    code: LedgerErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'LedgerError';
    this.code = code;
    this.details = details;
  }
}

export interface AccountSpec {
  code: string;
  kind: AccountKind;
  appId?: string;
  channelCode?: string;
  /** Prepaid: debits_posted + debits_pending may never exceed credits_posted. */
  debitsMustNotExceedCredits?: boolean;
  creditsMustNotExceedDebits?: boolean;
}

export interface EntrySpec {
  /** Account code. Exactly one of debit / credit, a bigint > 0. */
  account: string;
  debit?: bigint;
  credit?: bigint;
}

export interface JournalMeta {
  requestId?: string;
  taskId?: string;
  appId?: string;
  alias?: string;
  channel?: string;
  /** Stored as jsonb; bigints inside are written as decimal strings. */
  usage?: unknown;
  memo?: string;
}

export interface JournalSpec extends JournalMeta {
  idemKey: string;
  kind: PostedKind;
  entries: EntrySpec[];
}

export type HoldSpec = Omit<JournalSpec, 'kind'>;

export interface WriteResult {
  journalId: bigint;
  /** true: the idemKey was already used; nothing was written and journalId is the earlier journal. */
  duplicate: boolean;
}

export interface Totals {
  debitsPending: bigint;
  debitsPosted: bigint;
  creditsPending: bigint;
  creditsPosted: bigint;
}

export interface Balance extends Totals {
  /** Credit-normal accounts (all but 'expense'): creditsPosted - debitsPosted - debitsPending. Expense: the mirror. */
  available: bigint;
}

export interface TrialBalance {
  /** Posted entries. */
  debits: bigint;
  credits: bigint;
  /** Pending entries of holds still pending. */
  pendingDebits: bigint;
  pendingCredits: bigint;
  /** debits == credits and pendingDebits == pendingCredits. */
  balanced: boolean;
  byAccount: Array<{ code: string; kind: string; fromEntries: Totals; stored: Totals }>;
  /** Accounts whose stored totals disagree with their entries (should always be empty). */
  mismatches: Array<{ code: string; field: keyof Totals; stored: bigint; fromEntries: bigint }>;
}

export interface JournalView {
  id: bigint;
  idemKey: string;
  kind: string;
  state: string;
  pendingOf: bigint | null;
  requestId: string | null;
  taskId: string | null;
  appId: string | null;
  alias: string | null;
  channel: string | null;
  usage: unknown;
  memo: string | null;
  createdAt: Date;
  entries: Array<{ account: string; debit: bigint; credit: bigint; pending: boolean }>;
}
