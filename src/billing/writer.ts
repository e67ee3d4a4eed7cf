import type { Logger } from 'pino';
import { LedgerError, type Ledger } from './ledger.js';
import { type SaleJournal, saleJournal, walletAccount } from './journal.js';
import type { BillingBackend, BillingRecord, QueuedRecord } from './types.js';

export interface WriterOptions {
  /** Records per transaction. */
  batch: number;
  /** Pause when there is nothing to write. */
  idleMs: number;
  /** Pause after a failed commit (the database is down): records stay queued and are retried. */
  retryMs: number;
  /**
   * After a batch smaller than `batch`, or a wake-up from idle, wait this long for more records before
   * the next transaction (0 = write at once). The records are durable in the queue meanwhile; at
   * moderate load this turns many tiny transactions (each a queue read, a commit and an ack) into few.
   */
  lingerMs?: number;
  /**
   * The longest linger under load. A busy writer lingers until about `targetBatch` records should be
   * waiting at the rate it has been reading them, within [lingerMs, busyLingerMs]: PostgreSQL pays a
   * fixed cost per batch (~2-3 ms of CPU, bench/journal-writer.ts at batch 50 against 500), and every
   * instance's writer reads the one shared queue, so with N instances each reads 1/N of the records and
   * a fixed linger made batches N times smaller. Default 25 x lingerMs.
   */
  busyLingerMs?: number;
  /** The records a busy writer's linger aims at (default min(batch, 256)). */
  targetBatch?: number;
}

/**
 * A writer is busy when a full linger would gather at least this many records at its recent rate: below
 * that the load is light, PostgreSQL's per-batch cost doesn't matter, and journals go in after lingerMs.
 */
const BUSY_BATCH = 50;

export interface WriterHooks {
  onCommitted?: (journals: number, ms: number) => void;
  /** 'db': the database refused a commit; 'queue': the queue (Redis) could not be read or acknowledged. */
  onFailed?: (where: 'db' | 'queue') => void;
  onUncollected?: (appId: string, micros: bigint) => void;
  /** These records' journals are in the ledger now (written by this writer, or found there already). */
  onWritten?: (records: BillingRecord[]) => void;
}

/**
 * Turns queued billing records into ledger journals, in batches, off every request's path. A batch is
 * one database transaction; only after it commits are its records acknowledged in the queue, so a crash
 * or a database outage between the two re-delivers them, and the journals' idempotency keys make the
 * second write a no-op: each record becomes exactly one journal.
 *
 * `spill` takes records directly (the queue itself, Redis, was unreachable when they settled): they are
 * written with the next batch and, while the database is also down, held in memory. While spilled
 * records wait, `blocked()` is true and the gateway refuses new billable requests rather than serve
 * them unbilled.
 */
export class JournalWriter {
  private running = false;
  private loop: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  private readonly spilled: BillingRecord[] = [];
  private readonly ensured = new Set<string>();
  private lastError: unknown = null;
  /** The last write of spilled records failed (the database is down too). */
  private spillFailing = false;
  /** The last batch's database commit failed (as opposed to reading or acknowledging the queue). */
  private commitFailed = false;
  private draining: Promise<void> = Promise.resolve();
  /** Ends a linger early (stop). */
  private cutLinger: (() => void) | null = null;
  /** When the loop's last drain began: the span a batch's records arrived in (its rate). */
  private cycleStart = performance.now();
  written = 0;

  constructor(
    private readonly backend: BillingBackend,
    private readonly ledger: Ledger,
    private readonly log: Logger,
    private readonly opts: WriterOptions,
    private readonly hooks: WriterHooks = {},
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wakeUp?.();
    this.cutLinger?.();
    await this.loop;
    // One last pass: whatever settled during shutdown goes in now if the database takes it.
    await this.drainOnce().catch(() => {});
  }

  wake(): void {
    this.wakeUp?.();
  }

  spill(rec: BillingRecord): void {
    this.spilled.push(rec);
    this.wake();
  }

  /** Writes spilled records now (the request path calls this when Redis refused a settlement). */
  async writeSpilled(): Promise<void> {
    await this.drainOnce().catch(() => {});
  }

  /** Spilled records are waiting and the database refused the last attempt to write them. */
  blocked(): boolean {
    return this.spilled.length > 0 && this.spillFailing;
  }

  spilledCount(): number {
    return this.spilled.length;
  }

  /** Writes until the queue is empty (tests, shutdown). Throws if the database refuses. */
  async flush(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const n = await this.drainOnce();
      if (n === 0 && (await this.backend.backlog()) === 0 && this.spilled.length === 0) return;
      if (Date.now() > until) throw new Error('billing queue did not drain in time');
      if (n === 0) await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async run(): Promise<void> {
    while (this.running) {
      let n = 0;
      let failed = false;
      try {
        n = await this.drainOnce();
        this.lastError = null;
      } catch (e) {
        failed = true;
        if (this.lastError === null)
          this.log.error(
            { err: { message: String((e as Error)?.message ?? e) } },
            'journal writer: commit failed; records stay queued and will be retried',
          );
        this.lastError = e;
        this.hooks.onFailed?.(this.commitFailed ? 'db' : 'queue');
      }
      const now = performance.now();
      const cycleMs = now - this.cycleStart;
      this.cycleStart = now;
      if (n >= this.opts.batch && !failed) continue; // a backlog: the next batch at once
      const linger = this.opts.lingerMs ?? 0;
      if (n > 0 && !failed) {
        if (linger > 0) await this.linger(this.lingerFor(n, cycleMs, linger));
        continue;
      }
      let woken = false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, failed ? this.opts.retryMs : this.opts.idleMs);
        this.wakeUp = () => {
          woken = true;
          clearTimeout(t);
          resolve();
        };
      });
      this.wakeUp = null;
      if (woken && !failed && linger > 0 && this.running) await this.linger(linger);
    }
  }

  /** How long to wait after a batch of n records read `cycleMs` after the one before (see busyLingerMs). */
  lingerFor(n: number, cycleMs: number, linger: number): number {
    const busyLinger = this.opts.busyLingerMs ?? linger * 25;
    const rate = n / Math.max(cycleMs, 1); // records per ms
    if (rate * busyLinger < BUSY_BATCH) return linger;
    const target = this.opts.targetBatch ?? Math.min(this.opts.batch, 256);
    return Math.min(busyLinger, Math.max(linger, target / rate));
  }

  private async linger(ms: number): Promise<void> {
    if (!this.running) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.cutLinger = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.cutLinger = null;
  }

  /** One batch at a time per writer (the loop, a wake-up and flush() may all ask at once). */
  async drainOnce(): Promise<number> {
    const run = this.draining.then(() => this.drainBatch());
    this.draining = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  /** One batch: spilled records first, then the queue. Returns how many records it wrote. */
  private async drainBatch(): Promise<number> {
    let n = 0;
    if (this.spilled.length) {
      const batch = this.spilled.slice(0, this.opts.batch);
      try {
        await this.commit(batch.map((record) => ({ handle: '', shard: -1, record })));
        this.spillFailing = false;
      } catch (e) {
        this.spillFailing = true;
        throw e;
      }
      this.spilled.splice(0, batch.length);
      n += batch.length;
    }
    let queued: QueuedRecord[];
    try {
      queued = await this.backend.read(this.opts.batch);
    } catch (e) {
      if (n > 0) return n; // the queue is unreachable; spilled records were still written
      throw e;
    }
    if (queued.length === 0) return n;
    const wallets = await this.commit(queued);
    const shards = new Map<number, QueuedRecord[]>();
    for (const q of queued) {
      const list = shards.get(q.shard);
      if (list) list.push(q);
      else shards.set(q.shard, [q]);
    }
    for (const [shard, qs] of shards) {
      const apps = new Set(qs.filter((q) => q.record.prepaid).map((q) => q.record.appId));
      await this.backend.ack({
        shard,
        records: qs.map((q) => ({
          handle: q.handle,
          id: q.record.id,
          appId: q.record.appId,
          charged: q.record.prepaid ? (q.record.charged ?? q.record.sale) : 0n,
          marked: q.marked,
        })),
        wallets: wallets.filter((w) => apps.has(w.appId)),
      });
    }
    return n + queued.length;
  }

  /** Writes the records' journals; returns, per prepaid app, what was charged and its balance now. */
  private async commit(
    items: QueuedRecord[],
  ): Promise<Array<{ appId: string; available: bigint; version: bigint }>> {
    const t0 = performance.now();
    this.commitFailed = true; // until the commit below succeeds: any failure from here on is the database's
    const journals: SaleJournal[] = [];
    const charged = new Map<string, bigint>();
    for (const { record } of items) {
      if (record.prepaid)
        charged.set(record.appId, (charged.get(record.appId) ?? 0n) + (record.charged ?? record.sale));
      const j = saleJournal(record);
      if (j) journals.push(j);
    }
    for (const j of journals) {
      for (const a of j.accounts) {
        if (this.ensured.has(a.code)) continue;
        await this.ledger.ensureAccount(a);
        this.ensured.add(a.code);
      }
    }
    const walletCodes = [...charged.keys()].map((id) => walletAccount(id).code);
    let balances: Map<string, { available: bigint; version: bigint }>;
    try {
      balances = (
        await this.ledger.postBatch(
          journals.map((j) => j.spec),
          walletCodes,
        )
      ).balances;
    } catch (e) {
      if (!(e instanceof LedgerError && e.code === 'insufficient_funds')) throw e;
      // A wallet can't cover a record (its mirror was behind the ledger): find it, one journal at a time.
      balances = new Map();
      for (const { record } of items) await this.postCapped(record, balances);
    }
    this.commitFailed = false;
    this.written += journals.length;
    this.hooks.onWritten?.(items.map((q) => q.record));
    this.hooks.onCommitted?.(journals.length, performance.now() - t0);
    return [...charged.keys()].map((appId) => ({
      appId,
      ...(balances.get(walletAccount(appId).code) ?? { available: 0n, version: -1n }),
    }));
  }

  /** Posts one record; if its wallet can't cover it, charges what the wallet has and books the rest as bad debt. */
  private async postCapped(
    record: BillingRecord,
    balances: Map<string, { available: bigint; version: bigint }>,
  ): Promise<void> {
    const j = saleJournal(record);
    if (!j) return;
    const code = walletAccount(record.appId).code;
    const codes = record.prepaid ? [code] : [];
    try {
      const r = await this.ledger.postBatch([j.spec], codes);
      for (const [k, v] of r.balances) balances.set(k, v);
      return;
    } catch (e) {
      if (!(e instanceof LedgerError && e.code === 'insufficient_funds') || !record.prepaid) throw e;
    }
    const have = (await this.ledger.balance(code)).available;
    const charge =
      have <= 0n ? 0n : have < (record.charged ?? record.sale) ? have : (record.charged ?? record.sale);
    const capped = saleJournal(record, charge)!;
    const r = await this.ledger.postBatch([capped.spec], codes);
    for (const [k, v] of r.balances) balances.set(k, v);
    this.hooks.onUncollected?.(record.appId, record.sale - charge);
    this.log.warn(
      { app: record.appId, record: record.id, sale: record.sale.toString(), charged: charge.toString() },
      'wallet could not cover a settled request; the rest is booked as bad debt',
    );
  }
}
