import type { Clock } from '../lib/clock.js';
import type {
  BillingBackend,
  BillingRecord,
  Drained,
  QueuedRecord,
  ReserveResult,
  SettleResult,
} from './types.js';

interface Wallet {
  db: bigint;
  dbv: bigint;
  pend: bigint;
  held: bigint;
  holds: Map<string, { amount: bigint; expires: number }>;
}

/**
 * The embedded mode's billing backend (one process, no Redis): the same semantics as RedisBilling,
 * in memory. Records wait in an in-process queue until the writer commits them, so a crash of the
 * embedded gateway can lose the last few hundred milliseconds of journals; production runs on Redis.
 */
export class MemoryBilling implements BillingBackend {
  readonly kind = 'memory' as const;
  private readonly wallets = new Map<string, Wallet>();
  private readonly done = new Set<string>();
  private readonly queue = new Map<string, QueuedRecord>();
  private seq = 0;

  constructor(private readonly clock: Clock) {}

  private reap(w: Wallet): void {
    const now = this.clock.now();
    for (const [id, h] of w.holds) {
      if (h.expires <= now) {
        w.held -= h.amount;
        w.holds.delete(id);
      }
    }
  }

  async reserve(appId: string, holdId: string, amount: bigint, ttlMs: number): Promise<ReserveResult> {
    // Nothing to hold (a negative one would add to what is spendable): as RedisBilling, not stored.
    if (amount <= 0n) return { ok: true };
    const w = this.wallets.get(appId);
    if (!w) return { ok: false, reason: 'unknown' };
    this.reap(w);
    if (w.holds.has(holdId)) return { ok: true };
    const avail = w.db - w.pend - w.held;
    if (amount > avail) return { ok: false, reason: 'insufficient', available: avail };
    w.held += amount;
    w.holds.set(holdId, { amount, expires: this.clock.now() + ttlMs });
    return { ok: true };
  }

  async release(appId: string, holdId: string): Promise<void> {
    const w = this.wallets.get(appId);
    const h = w?.holds.get(holdId);
    if (w && h) {
      w.held -= h.amount;
      w.holds.delete(holdId);
    }
  }

  async settle(rec: BillingRecord, holdId: string | null, charge?: bigint): Promise<SettleResult> {
    if (holdId) await this.release(rec.appId, holdId);
    if (this.done.has(rec.id)) return { duplicate: true, charged: 0n };
    this.done.add(rec.id);
    // A resend charges what its first settlement charged (see BillingBackend.settle), not the sale.
    let charged = charge ?? rec.sale;
    const w = this.wallets.get(rec.appId);
    if (rec.prepaid && w) {
      let avail = w.db - w.pend - w.held;
      if (avail < 0n) avail = 0n;
      if (charged > avail) charged = avail;
      w.pend += charged;
    }
    const handle = String(++this.seq);
    this.queue.set(handle, { handle, shard: 0, record: { ...rec, charged } });
    return { duplicate: false, charged };
  }

  async initWallet(appId: string, available: bigint, version: bigint): Promise<void> {
    if (!this.wallets.has(appId))
      this.wallets.set(appId, { db: available, dbv: version, pend: 0n, held: 0n, holds: new Map() });
  }

  async refreshWallet(appId: string, available: bigint, version: bigint): Promise<void> {
    const w = this.wallets.get(appId);
    if (w && version > w.dbv) {
      w.db = available;
      w.dbv = version;
    }
  }

  async wallet(appId: string): Promise<{ ledger: bigint; unwritten: bigint; reserved: bigint } | null> {
    const w = this.wallets.get(appId);
    return w ? { ledger: w.db, unwritten: w.pend, reserved: w.held } : null;
  }

  async read(count: number): Promise<QueuedRecord[]> {
    return [...this.queue.values()].slice(0, count);
  }

  async ack(d: Drained): Promise<void> {
    for (const r of d.records) {
      // The journal is written and its key now refuses a replay: the marker need not outlive it.
      this.done.delete(r.id);
      if (!this.queue.delete(r.handle)) continue;
      const w = this.wallets.get(r.appId);
      if (w && r.charged > 0n) w.pend -= r.charged;
    }
    for (const x of d.wallets) {
      const w = this.wallets.get(x.appId);
      if (!w) continue;
      if (x.version > w.dbv) {
        w.db = x.available;
        w.dbv = x.version;
      }
    }
  }

  async backlog(): Promise<number> {
    return this.queue.size;
  }

  close(): void {}
}
