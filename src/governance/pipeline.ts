/**
 * The governance pipeline every data-plane route passes: admit → serve → settle.
 *
 *   admit(request)     the key's quotas (one admission call: concurrency lease, QPS, token and cost
 *                      windows) and the prepaid wallet hold, sent side by side so they cost one round trip
 *                      of latency. Returns a decision, never throws for a refusal: Admitted (its lease and
 *                      hold), Deferred (an ASYNC key over its limits: the request was queued as a task by
 *                      the route's `defer`) or Rejected (a GatewayError code; the status comes from
 *                      core/errors.ts, the one place codes map to statuses). A short-circuit (Deferred,
 *                      Rejected) leaves nothing behind: a lease or hold taken by the half that succeeded is
 *                      given back before admit returns, and `settle` is not called.
 *   serve              the route's business (the relay, a cached answer, a media job). The relay gets the
 *                      Admitted as its completion hook: `beforeEnd` starts the booking once the answer is
 *                      complete and resolves when it has been written to Redis's socket, so no answer's last
 *                      bytes leave ahead of its bill (the reply comes back off the latency path).
 *   settle(a)          called exactly once per Admitted (in the route's `finally`), success or not; the
 *                      outcome is what the route wrote on the request's context `a.ctx` (usage, channel,
 *                      status, served / client gone) — no second record of it. Books billing (or releases the
 *                      hold when nothing billable was produced), trues the lease up by one rule (tokens =
 *                      input + output used, cost = the sale price booked), then records the request's
 *                      metrics. A second call returns the first one's promise.
 *
 * Requests never admitted (a bad key or body, Rejected, Deferred) are counted with `record`.
 * Media jobs outlive their HTTP request: their hold (`hold`) and booking (`bookJob`) run in the worker.
 */
import type { ConfigCache } from '../config/cache.js';
import { type ErrorCode, GatewayError } from '../core/errors.js';
import { redactSecrets } from '../core/redact.js';
import type { Abort } from '../lib/abort.js';
import type { Metrics } from '../observability/metrics.js';
import type { RequestTracer } from '../observability/tracing.js';
import type { Admission, Lease } from '../quota/admission.js';
import { estimateCost, estimateTokens } from '../quota/estimate.js';
import { cacheHitReservation, priceRequest, reservationFor, settleRequest } from '../billing/request.js';
import type { Billing } from '../billing/service.js';
import type { BillingRecord } from '../billing/types.js';
import { written } from '../coord/tick-pipeline.js';
import type { RequestContext, Routed } from '../core/context.js';
import type { CompletionHook } from '../relay/relay.js';

export interface GovernanceDeps {
  config: ConfigCache;
  /** Quota admission (absent = no quotas). */
  admission?: Admission | null;
  /** Billing (absent = requests are priced for metrics but not booked). */
  billing?: Billing | null;
  metrics?: Pick<Metrics, 'request' | 'booked'> | null;
  log: { warn(o: object, msg: string): void; error(o: object, msg: string): void };
  /** Settlements whose answer has gone out and whose Redis reply hasn't come back: a graceful stop waits for them. */
  settlements?: Set<Promise<void>>;
}

export interface AdmitRequest<T> {
  /** Authenticated, alias resolved. */
  ctx: Routed;
  /** The request as stored and estimated (tokens, reservation, an estimate of usage a stream never reported). */
  body: Record<string, unknown>;
  abort: Abort;
  now: number;
  /** A response-cache hit's channel: admitted for what it uses (no tokens), holding only the cache price. */
  cachedFrom?: string | null;
  /** A job priced by units, not tokens (media): the sale it may reach, for the cost budget. No wallet hold here. */
  jobSale?: number;
  /** The exactly-once key of the booking (default: the request id) and the task it belongs to. */
  recordId?: string;
  taskId?: string;
  /** A queued task's run never waits nor defers again: over a limit is "try later". */
  rejectOnly?: boolean;
  /**
   * How the route queues the request as a task when its ASYNC key is over a limit (a GatewayError thrown
   * says why it can't: a stream, say). Absent: the route can't defer, the request gets the 429.
   */
  defer?: ((ctx: Routed, body: Record<string, unknown>, retryAfterMs: number) => Promise<T>) | null;
}

export interface Deferred<T> {
  kind: 'deferred';
  task: T;
}

export interface Rejected {
  kind: 'rejected';
  code: ErrorCode;
  error: GatewayError;
}

export type Decision<T> = Admitted | Deferred<T> | Rejected;

const RESOLVED = Promise.resolve();

/** An admitted request: its lease and hold, until `settle`. Also the relay's completion hook. */
export class Admitted implements CompletionHook {
  readonly kind = 'admitted' as const;
  /** The booking started (by the completion hook, or by settle). */
  booking: Promise<void> | null = null;
  settled: Promise<void> | null = null;
  /** The request's trace (set by the route when it has one): the booking gets a settlement span. */
  trace: Pick<RequestTracer, 'settlement'> | null = null;
  constructor(
    private readonly gov: Governance,
    readonly ctx: Routed,
    readonly body: Record<string, unknown>,
    readonly lease: Lease | null,
    readonly holdId: string | null,
    readonly recordId: string,
    readonly taskId: string | undefined,
    /** False for a media submission: its job is billed by the worker when it finishes. */
    readonly bill: boolean,
  ) {}

  beforeEnd(): Promise<void> {
    this.gov.book(this);
    // Billing and the true-up leave in this tick, pipelined: the last bytes wait for that write only.
    return this.gov.billing ? written() : RESOLVED;
  }
}

export class Governance {
  readonly billing: Billing | null;
  constructor(private readonly d: GovernanceDeps) {
    this.billing = d.billing ?? null;
  }

  /** Admits, defers or rejects a request (see the contract above). Throws only on an unexpected failure. */
  async admit<T>(r: AdmitRequest<T>): Promise<Decision<T>> {
    const { ctx, body, now } = r;
    const billing = this.billing;
    if (billing?.blocked())
      return rejected(
        new GatewayError(
          'service_unavailable',
          'Billing can reach neither Redis nor the database; requests are refused rather than served unbilled.',
        ),
      );
    const key = ctx.key;
    const cached = !!r.cachedFrom;
    const hold =
      billing && r.jobSale === undefined
        ? cached
          ? cacheHitReservation(this.d.config, ctx, r.cachedFrom!)
          : reservationFor(this.d.config, ctx, body)
        : 0n;
    // The quota admission and the wallet reservation go to Redis side by side: one round trip of latency
    // instead of two (each is one pipelined call; neither needs the other's answer).
    const [adm, res] = await Promise.allSettled([
      this.d.admission
        ? this.d.admission.admit(
            r.rejectOnly ? { ...key, queueMode: 'REJECT' } : key,
            (needTokens, needCost) => {
              if ((!needTokens && !needCost) || cached) return { tokens: 0, cost: 0 };
              if (r.jobSale !== undefined) return { tokens: 0, cost: needCost ? r.jobSale : 0 };
              const t = estimateTokens(body, ctx.dialect);
              return {
                tokens: t.total,
                cost: needCost
                  ? estimateCost(this.d.config, ctx.alias, key.tokenGroupId, t, now, ctx.app.id)
                  : 0,
              };
            },
            r.abort,
            now,
          )
        : null,
      hold > 0n ? billing!.reserve(ctx.app.id, ctx.id, hold) : undefined,
    ]);
    const holdId = res.status === 'fulfilled' && hold > 0n ? ctx.id : null;
    const got = adm.status === 'fulfilled' ? adm.value : null;
    const lease = got && !('deferred' in got) ? got : null;
    if (adm.status === 'rejected' || res.status === 'rejected' || (got && 'deferred' in got)) {
      // Short-circuit: give back what the other half took.
      if (lease) await this.trueUp(lease, ctx, 0, 0);
      if (holdId) await billing!.release(ctx.app.id, holdId);
      const err: unknown =
        adm.status === 'rejected' ? adm.reason : res.status === 'rejected' ? res.reason : null;
      if (err !== null) {
        if (err instanceof GatewayError) return rejected(err);
        throw err;
      }
      const retryAfterMs = (got as { retryAfterMs: number }).retryAfterMs;
      if (!r.defer)
        return rejected(
          new GatewayError(
            'rate_limit_exceeded',
            'This key is over its limits and this operation cannot be deferred as a task: retry later.',
            { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) } },
          ),
        );
      try {
        return { kind: 'deferred', task: await r.defer(ctx, body, retryAfterMs) };
      } catch (e) {
        if (e instanceof GatewayError) return rejected(e);
        throw e;
      }
    }
    return new Admitted(
      this,
      ctx,
      body,
      lease,
      holdId,
      r.recordId ?? ctx.id,
      r.taskId,
      r.jobSale === undefined,
    );
  }

  /** Starts the booking (billing and the lease true-up, in the same tick) once; settle awaits it. */
  book(a: Admitted): Promise<void> {
    if (a.booking) return a.booking;
    const ctx = a.ctx;
    const billing = this.billing;
    // settleRequest prices the request synchronously before its first await, so the true-up below reads
    // the sale it books.
    let b: Promise<void> | null = null;
    if (billing && a.bill)
      b = settleRequest(billing, this.d.config, ctx, a.body, a); // a carries recordId, holdId, taskId
    else priceRequest(this.d.config, ctx);
    const l = a.lease ? this.trueUp(a.lease, ctx, usedTokens(ctx), usedSale(ctx)) : null;
    const p = b && l ? Promise.all([b, l]).then(noop) : (b ?? l ?? RESOLVED);
    a.booking = p;
    const span = a.trace ? a.trace.settlement(ctx) : null;
    if (span) p.then(() => span(), span);
    const set = this.d.settlements;
    if (set && p !== RESOLVED) {
      set.add(p);
      void p.finally(() => set.delete(p)).catch(noop); // a failure surfaces where settle awaits it
    }
    return p;
  }

  /** Settles an admitted request exactly once (see the contract), then records its metrics. */
  settle(a: Admitted): Promise<void> {
    return (a.settled ??= this.settleOnce(a));
  }

  private async settleOnce(a: Admitted): Promise<void> {
    try {
      await this.book(a);
    } catch (e) {
      this.d.log.error({ err: errOf(e), reqId: a.ctx.id }, 'settling a request failed');
    }
    this.d.metrics?.request(a.ctx, a.ctx.label ?? a.ctx.dialect);
  }

  /** Counts a request that was never admitted (refused, or deferred as a task): it has nothing to settle. */
  record(ctx: RequestContext): void {
    priceRequest(this.d.config, ctx);
    this.d.metrics?.request(ctx, ctx.label ?? ctx.dialect);
  }

  /** A media job's wallet hold, for as long as the job may run. Rejected when the wallet can't cover it. */
  async hold(appId: string, holdId: string, amount: bigint, ttlMs: number): Promise<Rejected | null> {
    if (!this.billing || amount <= 0n) return null;
    try {
      await this.billing.reserve(appId, holdId, amount, ttlMs);
      return null;
    } catch (e) {
      if (e instanceof GatewayError) return rejected(e);
      throw e;
    }
  }

  /** Gives a media job's hold back (failed, expired, cancelled). */
  async release(appId: string, holdId: string): Promise<void> {
    await this.billing?.release(appId, holdId);
  }

  /** Books a finished media job (idempotent by its record id) and counts its sale and cost. */
  async bookJob(rec: BillingRecord, holdId: string): Promise<void> {
    if (!this.billing) return;
    await this.billing.settle(rec, holdId);
    this.d.metrics?.booked(rec.alias, rec.channel, rec.appId, rec.sale, rec.cost);
  }

  private trueUp(lease: Lease, ctx: RequestContext, tokens: number, cost: number): Promise<void> {
    return lease
      .settle(tokens, cost)
      .catch((err: unknown) =>
        this.d.log.warn(
          { err: errOf(err), reqId: ctx.id },
          'quota settlement failed; the lease expires by TTL',
        ),
      );
  }
}

/** The one rule for a lease's true-up: the tokens the upstream used, the sale booked (a job's estimate until it is). */
function usedTokens(ctx: RequestContext): number {
  return ctx.usage ? ctx.usage.inputTokens + ctx.usage.outputTokens : 0;
}
function usedSale(ctx: RequestContext): number {
  return ctx.saleMicros !== null ? Number(ctx.saleMicros) : (ctx.jobSaleMicros ?? 0);
}

function rejected(error: GatewayError): Rejected {
  return { kind: 'rejected', code: error.code, error };
}

function noop(): void {}

/** Message only, redacted: driver errors can carry credentials in their parameters. */
function errOf(e: unknown): { message: string } {
  return { message: redactSecrets(String((e as Error)?.message ?? e)) };
}
