/**
 * The admission stage: which limits apply to this key (its own, its app's, its token group's), one
 * backend call to check and reserve them all, and what the key's queue mode does when a limit is hit:
 *   REJECT  429 at once, with the limit that was hit and retry-after
 *   WAIT    join the key's FIFO queue (shared across instances); woken when a lease is released; admitted
 *           only at the head; 429 queue_timeout when the wait passes the key's timeout; a client that goes
 *           away leaves the queue at once. Only concurrency and QPS wait: a spent token or cost budget
 *           does not come back by waiting, so those always answer 429 at once.
 * Every admitted request holds a Lease, renewed while it runs, settled exactly once in the caller's
 * `finally` with the actual usage.
 *
 * When the shared backend loses its data (`rebuild`, on the coordinator's data-loss signal), this instance
 * puts back what only it knows: the leases and reservations of its requests in flight (else a key's
 * concurrency limit would admit that many more at once), and the queue places of its waiters (else a waiter
 * behind a new arrival would never be the head, and settlements wake nobody in an empty queue). The
 * backend's windows are seeded from the ledger at each scope's next admission (see redis.ts).
 */
import { type ErrorCode, GatewayError } from '../core/errors.js';
import { uniqueId } from '../core/ids.js';
import type { ApiKey, Quota } from '../core/model.js';
import type { AdmitResult, LimitKind, QuotaBackend, Remaining, Reservation, ScopeLimits } from './types.js';
import type { Abort } from '../lib/abort.js';

export interface QuotaSource {
  quota(scope: Quota['scope'], id: string, now?: number): Quota | undefined;
}

/** ASYNC mode hit a limit: the request is to be queued as a task and run when there is room. */
export interface Deferred {
  deferred: true;
  retryAfterMs: number;
  limit: LimitKind;
}

export interface Lease {
  reservations: Reservation[];
  remaining: Remaining | null;
  waitedMs: number;
  settle(actualTokens: number, actualCost: number): Promise<void>;
}

const CODES: Record<LimitKind, ErrorCode> = {
  concurrency: 'concurrency_limit_exceeded',
  qps: 'rate_limit_exceeded',
  tokens_minute: 'tokens_limit_exceeded',
  tokens_day: 'tokens_limit_exceeded',
  cost_day: 'budget_exceeded',
  cost_month: 'budget_exceeded',
  queue_full: 'queue_full',
};

const WAITABLE = new Set<LimitKind>(['concurrency', 'qps']);

function toScope(q: Quota): ScopeLimits {
  return {
    scope: q.scope,
    id: q.scopeId,
    maxConcurrency: q.maxConcurrency,
    qps: q.qps,
    qpsBurst: q.qpsBurst,
    tokensPerMinute: q.tokensPerMinute,
    tokensPerDay: q.tokensPerDay,
    costPerDay: q.costPerDay,
    costPerMonth: q.costPerMonth,
  };
}

export interface AdmissionEvents {
  /** `scope`: the scope whose limit was hit, as the backend names it (`app:app_1`). */
  onRejected?(limit: LimitKind, mode: string, scope?: string): void;
  /** A lease settled (budget-watch.ts reads the cost windows of its scopes, off the request path). */
  onSettled?(reservations: readonly Reservation[]): void;
  onQueued?(mode: string): void;
  onWaited?(ms: number, outcome: 'admitted' | 'timeout' | 'left'): void;
  onDegraded?(): void;
}

/** A waiter queued from this instance: enough to put it back in its queue after data loss. */
interface Queued {
  tag: string;
  queue: string;
  id: string;
  deadline: number;
  score?: string;
  nudge: () => void;
}

export class Admission {
  private readonly waiters = new Map<string, Set<() => void>>();
  /** Every waiter of this instance, by waiter id. */
  private readonly queued = new Map<string, Queued>();
  /** Requests waiting in a queue on this instance right now. */
  waitingNow = 0;
  private wakeReady: Promise<void> | null = null;

  constructor(
    private readonly backend: QuotaBackend,
    private readonly quotas: QuotaSource,
    private readonly opts: { leaseTtlMs: number; pollMs?: number } = { leaseTtlMs: 30_000 },
    private readonly events: AdmissionEvents = {},
    /** Used when the shared backend is unreachable, with each limit scaled to this instance's share. */
    private readonly fallback: { backend: QuotaBackend; share: number } | null = null,
  ) {}

  /** The limits that apply to a key now, grouped by the hash tag of their Redis keys. */
  limitsFor(key: ApiKey, now?: number): Array<{ tag: string; scopes: ScopeLimits[] }> {
    const own: ScopeLimits[] = [];
    const k = this.quotas.quota('key', key.id, now);
    if (k) own.push(toScope(k));
    const a = this.quotas.quota('app', key.appId, now);
    if (a) own.push(toScope(a));
    const out = own.length ? [{ tag: key.appId, scopes: own }] : [];
    if (key.tokenGroupId) {
      const g = this.quotas.quota('token_group', key.tokenGroupId, now);
      if (g) out.push({ tag: 'tg:' + key.tokenGroupId, scopes: [toScope(g)] });
    }
    return out;
  }

  needsTokenEstimate(groups: Array<{ scopes: ScopeLimits[] }>): boolean {
    return groups.some((g) => g.scopes.some((s) => s.tokensPerMinute > 0 || s.tokensPerDay > 0));
  }

  /**
   * Admits or refuses. Returns null when no limit applies (no backend call at all). `signal` aborts a
   * wait (client gone). Throws the 429 for REJECT, or after a WAIT timed out.
   */
  async admit(
    key: ApiKey,
    estimate: (needTokens: boolean, needCost: boolean) => { tokens: number; cost: number },
    signal: Abort,
    now?: number,
  ): Promise<Lease | Deferred | null> {
    const groups = this.limitsFor(key, now);
    if (groups.length === 0) return null;
    const needCost = groups.some((g) => g.scopes.some((s) => s.costPerDay > 0 || s.costPerMonth > 0));
    const est = estimate(this.needsTokenEstimate(groups), needCost);
    const t0 = Date.now();
    const reservations: Reservation[] = [];
    const owners = new Map<Reservation, QuotaBackend>();
    let remaining: Remaining | null = null;
    try {
      for (const g of groups) {
        const leaseId = uniqueId('l_');
        const req = {
          tag: g.tag,
          scopes: g.scopes,
          leaseId,
          leaseTtlMs: this.opts.leaseTtlMs,
          tokens: est.tokens,
          cost: est.cost,
          queue: key.id,
          mayQueue: key.queueMode === 'WAIT',
        };
        let backend = this.backend;
        let res: AdmitResult;
        try {
          res = await this.backend.admit(req);
        } catch (err) {
          // A refusal the backend made itself (windows it could not rebuild from the ledger) stands.
          if (err instanceof GatewayError) throw err;
          // The shared backend is unreachable: protective limits fall back to this instance's share;
          // money limits can't be checked, so they fail closed.
          if (!this.fallback || g.scopes.some((s) => s.costPerDay > 0 || s.costPerMonth > 0)) {
            throw new GatewayError(
              'service_unavailable',
              'Quota backend unreachable; this key has a cost budget that cannot be checked.',
              { cause: err },
            );
          }
          backend = this.fallback.backend;
          this.events.onDegraded?.();
          const share = this.fallback.share;
          const scaled = g.scopes.map((s) => ({
            ...s,
            maxConcurrency: s.maxConcurrency > 0 ? Math.max(1, Math.floor(s.maxConcurrency * share)) : 0,
            qps: s.qps > 0 ? Math.max(share, s.qps * share) : 0,
            tokensPerMinute: s.tokensPerMinute > 0 ? Math.max(1, Math.floor(s.tokensPerMinute * share)) : 0,
            tokensPerDay: s.tokensPerDay > 0 ? Math.max(1, Math.floor(s.tokensPerDay * share)) : 0,
          }));
          res = await backend.admit({ ...req, scopes: scaled });
        }
        if (
          !res.ok &&
          !res.queued &&
          key.queueMode === 'WAIT' &&
          WAITABLE.has(res.limit) &&
          backend === this.backend
        ) {
          res = await this.wait(key, req, signal).catch((err: unknown) => {
            if (err instanceof GatewayError) throw err;
            // The shared backend failed mid-wait: a retryable 503, not an internal error.
            const why = String((err as Error)?.message ?? err).slice(0, 120);
            throw new GatewayError(
              'service_unavailable',
              `The quota backend failed while this request waited (${why}); retry.`,
              { cause: err, headers: { 'retry-after': '1' } },
            );
          });
        }
        if (!res.ok && !res.queued && key.queueMode === 'ASYNC' && WAITABLE.has(res.limit)) {
          for (const r of reservations) this.live.delete(r);
          await Promise.all(
            reservations.map((r) =>
              owners
                .get(r)!
                .settle(r, 0, 0)
                .catch(() => {}),
            ),
          );
          this.events.onQueued?.('ASYNC');
          return { deferred: true, retryAfterMs: res.retryAfterMs, limit: res.limit };
        }
        if (!res.ok) throw this.refusal(res, key.queueMode);
        owners.set(res.reservation, backend);
        reservations.push(res.reservation);
        // Live from now, not from when every group is through: a later group may wait its turn for a
        // while, and this one's lease must be renewed, and restored after data loss, meanwhile.
        this.live.set(res.reservation, backend);
        this.startRenewing();
        remaining ??= res.remaining;
      }
    } catch (e) {
      for (const r of reservations) this.live.delete(r);
      await Promise.all(
        reservations.map((r) =>
          owners
            .get(r)!
            .settle(r, 0, 0)
            .catch(() => {}),
        ),
      );
      throw e;
    }
    return this.lease(reservations, owners, remaining, Date.now() - t0);
  }

  /**
   * After the shared backend lost data (the coordinator's signal): this instance's live leases and
   * reservations are registered again, its waiters take their queue places again and try at once, and
   * every scope's windows are marked for seeding from the ledger. Each part is idempotent, so a second
   * signal, or every instance doing it at once, is harmless.
   */
  async rebuild(): Promise<void> {
    const mine: Reservation[] = [];
    for (const [r, b] of this.live) if (b === this.backend) mine.push(r);
    const waiting = [...this.queued.values()];
    const results = await Promise.allSettled([
      this.backend.reseed(),
      mine.length ? this.backend.restore(mine, this.opts.leaseTtlMs) : undefined,
      ...waiting.map(async (w) => {
        await this.backend.requeue(w.tag, w.queue, w.id, w.deadline, w.score);
        w.nudge();
      }),
    ]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Live leases and their backends, renewed together by one timer (not one timer per request). */
  private readonly live = new Map<Reservation, QuotaBackend>();
  private renewTimer: NodeJS.Timeout | null = null;

  private startRenewing(): void {
    if (this.renewTimer) return;
    this.renewTimer = setInterval(
      () => {
        // Every ttl/3, each live lease older than ttl/3 is pushed forward: a lease admitted just after a
        // tick is renewed at the next-but-one, still within 2/3 of its TTL.
        const due = Date.now() - this.opts.leaseTtlMs / 3;
        for (const [r, b] of this.live)
          if (r.at <= due) void b.renew(r, this.opts.leaseTtlMs).catch(() => {});
        if (this.live.size === 0 && this.renewTimer) {
          clearInterval(this.renewTimer);
          this.renewTimer = null;
        }
      },
      Math.max(1_000, Math.floor(this.opts.leaseTtlMs / 3)),
    );
    this.renewTimer.unref();
  }

  private lease(
    reservations: Reservation[],
    owners: Map<Reservation, QuotaBackend>,
    remaining: Remaining | null,
    waitedMs: number,
  ): Lease {
    let settled = false;
    for (const r of reservations) this.live.set(r, owners.get(r)!);
    this.startRenewing();
    return {
      reservations,
      remaining,
      waitedMs,
      settle: async (tokens, cost) => {
        if (settled) return;
        settled = true;
        for (const r of reservations) this.live.delete(r);
        await Promise.all(reservations.map((r) => owners.get(r)!.settle(r, tokens, cost)));
        this.events.onSettled?.(reservations);
      },
    };
  }

  private refusal(res: Exclude<AdmitResult, { ok: true }>, mode: string): GatewayError {
    if (res.queued) return new GatewayError('queue_timeout', 'still queued');
    this.events.onRejected?.(res.limit, mode, res.scope);
    const secs = Math.max(1, Math.ceil(res.retryAfterMs / 1000));
    return new GatewayError(
      CODES[res.limit],
      `Quota exceeded: ${res.limit.replace('_', ' ')} limit of ${res.scope} reached. Retry after ${secs} s.`,
      {
        headers: { 'retry-after': String(secs), 'retry-after-ms': String(res.retryAfterMs) },
        details: { limit: res.limit, scope: res.scope },
      },
    );
  }

  private async ensureWake(): Promise<void> {
    // A freed slot wakes this instance's OLDEST waiter of the queue, not all of them: waking thousands
    // of waiters per release would cost thousands of admission calls for one slot. A waiter that finds
    // it is not the global head hands the wake to the next local one; one that is admitted wakes the
    // next, so several free slots fill at once.
    this.wakeReady ??= this.backend.onWake((queue) => {
      const first = this.waiters.get(queue)?.values().next().value;
      first?.();
    });
    await this.wakeReady;
  }

  /** WAIT mode: join the key's queue and try again whenever woken, until admitted, timed out or gone. */
  private async wait(
    key: ApiKey,
    req: Parameters<QuotaBackend['admit']>[0],
    signal: Abort,
  ): Promise<AdmitResult> {
    await this.ensureWake();
    const id = uniqueId('w_');
    const deadline = Date.now() + key.waitTimeoutMs;
    const q = await this.backend.enqueue(req.tag, key.id, id, deadline, key.maxQueue);
    if (!q.ok) {
      this.events.onRejected?.('queue_full', 'WAIT');
      throw new GatewayError('queue_full', `The wait queue of this key is full (${key.maxQueue}).`, {
        headers: { 'retry-after': '1' },
      });
    }
    this.events.onQueued?.('WAIT');
    const t0 = Date.now();
    let wake: () => void = () => {};
    const set = this.waiters.get(key.id) ?? new Set();
    this.waiters.set(key.id, set);
    let nudged = false;
    const nudge = () => {
      nudged = true;
      wake();
    };
    const me: Queued = { tag: req.tag, queue: key.id, id, deadline, nudge };
    if (q.score !== undefined) me.score = q.score;
    this.queued.set(id, me);
    let lostPlace = 0;
    /** Passes a wake on to the waiter queued after this one on this instance. */
    const passOn = () => {
      let seen = false;
      for (const w of set) {
        if (seen) return w();
        if (w === nudge) seen = true;
      }
    };
    set.add(nudge);
    signal.on(nudge);
    this.waitingNow++;
    try {
      let next = 0;
      for (;;) {
        if (signal.aborted) {
          this.events.onWaited?.(Date.now() - t0, 'left');
          throw new GatewayError('client_closed', 'client went away while queued');
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          this.events.onWaited?.(Date.now() - t0, 'timeout');
          throw new GatewayError(
            'queue_timeout',
            `Waited ${key.waitTimeoutMs} ms in the queue without a free slot.`,
            { headers: { 'retry-after': '1' } },
          );
        }
        const wasNudged = nudged;
        nudged = false;
        const res = await this.backend.admit({ ...req, waiter: { queue: key.id, id } });
        if (res.ok) {
          this.events.onWaited?.(Date.now() - t0, 'admitted');
          passOn();
          return res;
        }
        if (res.queued && res.missing) {
          // Our queue entry is gone (the backend lost data), so nobody would ever make us the head: take
          // our old place again and try at once. Twice in a row waits a poll first (a backend that keeps
          // losing it isn't hammered); so does a refusal (past the deadline by the backend's clock: the
          // check above times us out by ours).
          if ((await this.backend.requeue(req.tag, key.id, id, deadline, me.score)) && lostPlace++ === 0)
            continue;
        } else lostPlace = 0;
        if (!res.queued && !WAITABLE.has(res.limit)) return res;
        // Not the head: the head may be the next one here (an ordering inversion); one hop only, so a head
        // on another instance doesn't send a wake through every local waiter.
        if (res.queued && wasNudged && set.values().next().value === nudge) passOn();
        // Sleep until woken (a lease released), the limit's retry time, the poll fallback or the deadline.
        // Waiters behind the head poll slowly: they are woken when their turn comes.
        next =
          !res.queued && res.limit === 'qps'
            ? res.retryAfterMs
            : res.queued && !res.missing
              ? 2_000
              : (this.opts.pollMs ?? 250);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(1, Math.min(next, deadline - Date.now())));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    } finally {
      this.waitingNow--;
      this.queued.delete(id);
      set.delete(nudge);
      if (set.size === 0) this.waiters.delete(key.id);
      signal.off(nudge);
      // Leaving is a no-op when admission already removed us.
      await this.backend.leave(req.tag, key.id, id).catch(() => {});
    }
  }
}

/** x-ratelimit-* headers as OpenAI names them. */
export function rateLimitHeaders(r: Remaining | null): Record<string, string> {
  if (!r) return {};
  const h: Record<string, string> = {};
  if (r.requestsLimit >= 0) {
    h['x-ratelimit-limit-requests'] = String(r.requestsLimit);
    h['x-ratelimit-remaining-requests'] = String(r.requestsRemaining);
    h['x-ratelimit-reset-requests'] = `${Math.ceil(r.requestsResetMs)}ms`;
  }
  if (r.tokensLimit >= 0) {
    h['x-ratelimit-limit-tokens'] = String(r.tokensLimit);
    h['x-ratelimit-remaining-tokens'] = String(r.tokensRemaining);
    h['x-ratelimit-reset-tokens'] = `${Math.ceil(r.tokensResetMs)}ms`;
  }
  return h;
}
