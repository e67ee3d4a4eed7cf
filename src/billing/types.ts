/**
 * What the hot path hands to billing, and the backend that takes it there in one Redis round trip.
 *
 * A served request becomes one BillingRecord: the sale price (what the app pays), the upstream cost (what
 * the channel's provider is owed), and, for a prepaid app, what its wallet could actually be charged
 * (`charged` <= sale; the rest is recorded as uncollectable, never dropped). The backend makes the record
 * durable at once (a Redis stream, or the in-process queue of the embedded mode); the journal writer
 * turns records into ledger journals in batches, off the request's path.
 */

export interface BillingRecord {
  /** Request id, or `task:<id>` for a task; the journal's idempotency key derives from it. */
  id: string;
  requestId?: string;
  taskId?: string;
  appId: string;
  prepaid: boolean;
  alias: string;
  channel: string;
  /** Micro-units, >= 0. */
  sale: bigint;
  cost: bigint;
  /** Prepaid: what the wallet was charged (<= sale). Postpaid: = sale. Filled in by the backend. */
  charged?: bigint;
  /** Usage figures, failed attempts, estimation flags: stored as the journal's usage (jsonb). */
  usage: Record<string, unknown>;
  /** When the request arrived (ms): the journal's occurred_at and the report's day. */
  at: number;
  /**
   * The instance that settled it into the queue (read back from the queue; not part of the journal): the
   * writer that journals it tells that instance so, which then needn't look it up in the ledger.
   */
  by?: string;
}

/** A record read back from the durable queue, with the handle that acknowledges it. */
export interface QueuedRecord {
  handle: string;
  /** The queue shard it came from (acknowledgements go back per shard). */
  shard: number;
  record: BillingRecord;
  /** It was queued with an exactly-once marker (see BillingBackend.settle), which its acknowledgement drops. */
  marked?: boolean;
}

export type ReserveResult =
  | { ok: true }
  | { ok: false; reason: 'insufficient'; available: bigint }
  /** The wallet's balance isn't mirrored yet: load it from the ledger, then `initWallet`, then retry. */
  | { ok: false; reason: 'unknown' };

export interface SettleResult {
  /** The record was settled before (same id): nothing new was queued. */
  duplicate: boolean;
  charged: bigint;
}

/**
 * After the writer commits records: each record's handle with what it charged its (prepaid) wallet, and
 * each prepaid wallet's balance as the commit left it. A record's charge leaves the mirror's "unwritten"
 * sum only when its handle is acknowledged for the first time, so a redelivered record can't subtract twice.
 */
export interface Drained {
  shard: number;
  /** `id`: the record's id, whose exactly-once marker (if `marked`) the acknowledgement drops (the journal's key guards it from then on). */
  records: Array<{ handle: string; id: string; appId: string; charged: bigint; marked?: boolean }>;
  wallets: Array<{ appId: string; available: bigint; version: bigint }>;
}

export interface BillingBackend {
  readonly kind: 'redis' | 'memory';
  /** Reserves `amount` of a prepaid app's wallet for a request, until settle/release or `ttlMs`. */
  reserve(appId: string, holdId: string, amount: bigint, ttlMs: number): Promise<ReserveResult>;
  /** Releases a reservation without charging (failure, refusal, cancellation). Idempotent. */
  release(appId: string, holdId: string): Promise<void>;
  /**
   * Atomically: releases the reservation `holdId` (if any), charges the wallet min(sale, what it has),
   * and appends the record to the durable queue. One journal per record id, always: its unique key refuses
   * a second. A task's record (`taskId`) and a resend (`charge`: what the first settlement charged, charged
   * again in place of the sale, after Redis lost the record or it is long overdue) are also refused here
   * while the first is queued (`duplicate`). A request's record is not checked here (Redis keeps no marker
   * for it): the pipeline settles each admitted request once; a copy would only hold its charge in the
   * wallet's unwritten sum until the writer reaches it and the journal's key refuses it.
   */
  settle(rec: BillingRecord, holdId: string | null, charge?: bigint): Promise<SettleResult>;
  /** Seeds a wallet's mirror from the ledger (no-op when present). */
  initWallet(appId: string, available: bigint, version: bigint): Promise<void>;
  /** Moves a wallet's mirror to a newer ledger balance (funding, corrections). Older versions are ignored. */
  refreshWallet(appId: string, available: bigint, version: bigint): Promise<void>;
  /** What the mirror says: ledger balance, charged but not yet written, reserved. null = not mirrored. */
  wallet(appId: string): Promise<{ ledger: bigint; unwritten: bigint; reserved: bigint } | null>;
  /** Up to `count` records not yet written: first those this consumer holds, then new ones, then stale ones of dead consumers. */
  read(count: number): Promise<QueuedRecord[]>;
  /** The records are in the ledger: acknowledge them and true the wallet mirrors up. */
  ack(d: Drained): Promise<void>;
  /** Records queued and not yet acknowledged. */
  backlog(): Promise<number>;
  close(): void;
}

export const toJson = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));

/**
 * The record as queued (its charge travels beside it). Amounts as decimal strings, set directly: a replacer
 * function slows JSON.stringify several-fold. Encoded and decoded field by field, not by spreading the
 * record: spreads of a dozen fields were most of the cost.
 */
export function encodeRecord(r: BillingRecord, by?: string): string {
  return JSON.stringify({
    id: r.id,
    requestId: r.requestId,
    taskId: r.taskId,
    appId: r.appId,
    prepaid: r.prepaid,
    alias: r.alias,
    channel: r.channel,
    sale: r.sale.toString(),
    cost: r.cost.toString(),
    usage: r.usage,
    at: r.at,
    by,
  });
}

export function decodeRecord(s: string, charged: string | undefined): BillingRecord {
  const o = JSON.parse(s) as Record<string, unknown>;
  const sale = BigInt(String(o.sale));
  const r: BillingRecord = {
    id: String(o.id),
    appId: String(o.appId),
    prepaid: o.prepaid === true,
    alias: String(o.alias),
    channel: String(o.channel),
    sale,
    cost: BigInt(String(o.cost)),
    charged: charged === undefined ? sale : BigInt(charged),
    usage: (o.usage ?? {}) as Record<string, unknown>,
    at: Number(o.at),
  };
  if (o.requestId) r.requestId = String(o.requestId);
  if (o.taskId) r.taskId = String(o.taskId);
  if (typeof o.by === 'string') r.by = o.by;
  return r;
}
