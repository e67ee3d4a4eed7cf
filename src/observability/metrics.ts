import client from 'prom-client';
import type { SharedBreakerState } from '../coord/types.js';
import { DEFERRED_TASK_KINDS } from '../core/dialects.js';
import type { RequestContext } from '../core/context.js';
import { TrafficStats } from './stats.js';
import { type CounterSeries, FastCounter, FastHistogram, type HistogramSeries } from './fast-metrics.js';

const BREAKER_VALUE: Record<SharedBreakerState['state'], number> = {
  closed: 0,
  half_open: 1,
  open: 2,
  forced_open: 3,
};

/**
 * The label values the dashboards query, created at 0 so `rate()` and `increase()` have a first sample
 * from the first scrape (a series born at 1 has no increase Prometheus can see). Listed here rather than
 * imported: these are closed sets in quota/, billing/, coord/ and tasks/, which sit beside or above this
 * folder. A value missing here only starts at its first event, as before.
 */
const KNOWN = {
  limits: ['concurrency', 'qps', 'tokens_minute', 'tokens_day', 'cost_day', 'cost_month', 'queue_full'],
  modes: ['REJECT', 'WAIT', 'ASYNC'],
  refusals: ['insufficient_balance', 'unavailable'],
  dataLoss: ['epoch', 'server'],
  // the deferrable dialects' task kinds (core/dialects.ts), then tasks/store.ts MEDIA_KINDS
  taskKinds: [...DEFERRED_TASK_KINDS, 'image', 'video', 'music'],
  taskStates: ['queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired'],
  webhookResults: ['delivered', 'retry', 'failed'],
  // observability/notify.ts: operator notifications; budget-watch.ts: the scopes and windows of cost limits
  notifyResults: ['delivered', 'retry', 'failed', 'folded', 'duplicate'],
  budgetScopes: ['key', 'app', 'token_group'],
  budgetWindows: ['day', 'month'],
  budgetThresholds: ['80', '100'],
  waitOutcomes: ['admitted', 'timeout', 'left'],
} as const;

/**
 * Every Anima metric is prefixed `anima_`. Labels are bounded: alias only when it is a configured alias,
 * channel codes from config, app ids; never request ids, raw client model names or secrets.
 *
 * anima_request_duration_seconds is the widest family: series = dialects × aliases × channels × apps ×
 * outcomes, each 17 lines (14 buckets, +Inf, _sum, _count). `appLabel: false` (ANIMA_METRICS_APP_LABEL=off)
 * folds its app into "other", dividing it by the number of apps; the counters keep their app label (one
 * line a series) so the money dashboards still split by app.
 */
export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new FastCounter(
    'anima_requests_total',
    'Data-plane requests by outcome',
    ['dialect', 'alias', 'channel', 'app', 'status_class', 'outcome'],
    [this.registry],
  );
  readonly duration = new FastHistogram(
    'anima_request_duration_seconds',
    'Request latency, receipt to last byte',
    ['dialect', 'alias', 'channel', 'app', 'outcome'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    [this.registry],
  );
  readonly ttfb = new FastHistogram(
    'anima_request_ttfb_seconds',
    'Receipt to first byte written to the client',
    ['dialect', 'alias'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    [this.registry],
  );
  readonly responseCache = new client.Counter({
    name: 'anima_response_cache_total',
    help: 'Exact-match response cache lookups by result (hit: served without an upstream call; miss: went upstream)',
    labelNames: ['alias', 'result'] as const,
    registers: [this.registry],
  });
  readonly overhead = new FastHistogram(
    'anima_gateway_overhead_seconds',
    'Time spent in the gateway itself: total minus time waiting on upstreams',
    ['dialect'],
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    [this.registry],
  );
  readonly attempts = new FastCounter(
    'anima_upstream_attempts_total',
    'Upstream attempts by channel and result (ok or a failure kind)',
    ['channel', 'result'],
    [this.registry],
  );
  readonly upstreamTime = new FastHistogram(
    'anima_upstream_duration_seconds',
    'One upstream attempt, start to end',
    ['channel'],
    [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    [this.registry],
  );
  readonly tokens = new FastCounter(
    'anima_tokens_total',
    'Tokens by direction',
    ['alias', 'channel', 'direction'],
    [this.registry],
  );
  /**
   * Read at scrape time for anima_breaker_state: every configured channel with its state. The gauge is
   * rebuilt from it on each scrape, so a channel shows (closed = 0) from start, one added by a config
   * reload appears and a removed one disappears, without this instance having seen a transition.
   */
  breakerSource: () => Iterable<readonly [string, SharedBreakerState['state']]> = () => [];
  readonly breakerState: client.Gauge<'channel'> = new client.Gauge({
    name: 'anima_breaker_state',
    help: 'Circuit breaker state per channel: 0 closed, 1 half-open, 2 open, 3 forced open',
    labelNames: ['channel'] as const,
    registers: [this.registry],
    collect: (): void => {
      this.breakerState.reset();
      for (const [channel, state] of this.breakerSource())
        this.breakerState.labels(channel).set(BREAKER_VALUE[state]);
    },
  });
  /** Read at scrape time for anima_channel_credential_out: channels whose credential is out of rotation. */
  credentialSource: () => Iterable<string> = () => [];
  readonly credentialOut: client.Gauge<'channel'> = new client.Gauge({
    name: 'anima_channel_credential_out',
    help: 'Channels whose credential was taken out of rotation (upstream 401/403 or quota exhausted) until reset: 1 each',
    labelNames: ['channel'] as const,
    registers: [this.registry],
    collect: (): void => {
      this.credentialOut.reset();
      for (const channel of this.credentialSource()) this.credentialOut.labels(channel).set(1);
    },
  });
  readonly breakerTransitions = new client.Counter({
    name: 'anima_breaker_transitions_total',
    help: 'Breaker transitions seen by this instance',
    labelNames: ['channel', 'to'] as const,
    registers: [this.registry],
  });

  readonly invalidations = new client.Counter({
    name: 'anima_config_invalidations_total',
    help: 'Config invalidation events received, by table',
    labelNames: ['table'] as const,
    registers: [this.registry],
  });
  readonly invalidationDelay = new client.Histogram({
    name: 'anima_config_invalidation_delay_seconds',
    help: 'From the write being published to this instance having reloaded the table',
    labelNames: ['table'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly configReloads = new client.Counter({
    name: 'anima_config_reloads_total',
    help: 'Config table reloads by source (db, or l2 when the database was unreadable)',
    labelNames: ['table', 'source'] as const,
    registers: [this.registry],
  });
  readonly killSwitch = new client.Gauge({
    name: 'anima_kill_switch',
    help: '1 while the global kill switch stops the data plane',
    registers: [this.registry],
  });

  readonly quotaRejections = new client.Counter({
    name: 'anima_quota_rejections_total',
    help: 'Requests refused by quota admission, by limit kind and queue mode',
    labelNames: ['limit', 'mode'] as const,
    registers: [this.registry],
  });
  readonly queueWait = new client.Histogram({
    name: 'anima_queue_wait_seconds',
    help: 'Time spent in the WAIT queue, by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly queued = new client.Counter({
    name: 'anima_queued_total',
    help: 'Requests that joined a queue, by queue mode',
    labelNames: ['mode'] as const,
    registers: [this.registry],
  });
  readonly degradedAdmissions = new client.Counter({
    name: 'anima_quota_degraded_admissions_total',
    help: "Requests admitted on this instance's local share because the shared quota backend was unreachable",
    registers: [this.registry],
  });
  /** Read at scrape time for the slice metrics below (quota/slices.ts keeps the counts). */
  sliceSource: () => { local: number; exact: number; calls: number; held: number } | null = () => null;
  readonly sliceAdmissions: client.Counter<'path'> = new client.Counter({
    name: 'anima_quota_slice_admissions_total',
    help: 'Quota admissions by path: local (from a slice this instance leased, no Redis round trip) or exact (the admission script)',
    labelNames: ['path'] as const,
    registers: [this.registry],
    collect: (): void => {
      const s = this.sliceSource();
      if (!s) return;
      this.sliceAdmissions.reset();
      this.sliceAdmissions.labels('local').inc(s.local);
      this.sliceAdmissions.labels('exact').inc(s.exact);
    },
  });
  readonly sliceCalls: client.Counter = new client.Counter({
    name: 'anima_quota_slice_calls_total',
    help: 'Slice lease, renewal and give-back script calls to Redis',
    registers: [this.registry],
    collect: (): void => {
      const s = this.sliceSource();
      if (!s) return;
      this.sliceCalls.reset();
      this.sliceCalls.inc(s.calls);
    },
  });
  readonly slicesHeld: client.Gauge = new client.Gauge({
    name: 'anima_quota_slices_held',
    help: 'Quota slices this instance holds now (one per scope it admits locally)',
    registers: [this.registry],
    collect: (): void => this.slicesHeld.set(this.sliceSource()?.held ?? 0),
  });

  readonly tasks = new client.Counter({
    name: 'anima_tasks_total',
    help: 'Async task state transitions, by kind and state',
    labelNames: ['kind', 'state'] as const,
    registers: [this.registry],
  });
  /** Read at scrape time for anima_queue_waiting. */
  waitingSource: () => number = () => 0;
  readonly sale = new FastCounter(
    'anima_sale_micros_total',
    'Sale price of served requests (micro-units), by alias, channel and app',
    ['alias', 'channel', 'app'],
    [this.registry],
  );
  readonly cost = new FastCounter(
    'anima_cost_micros_total',
    'Upstream cost of served requests (micro-units), by alias, channel and app',
    ['alias', 'channel', 'app'],
    [this.registry],
  );
  readonly billingJournals = new client.Counter({
    name: 'anima_billing_journals_written_total',
    help: 'Journals the writer committed to the ledger',
    registers: [this.registry],
  });
  readonly billingCommit = new client.Histogram({
    name: 'anima_billing_commit_seconds',
    help: 'One journal batch: build, insert and commit',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly billingCommitFailures = new client.Counter({
    name: 'anima_billing_commit_failures_total',
    help: 'Journal batches the database refused or could not take (records stay queued)',
    registers: [this.registry],
  });
  readonly billingBacklog = new client.Gauge({
    name: 'anima_billing_backlog',
    help: 'Settled records not yet written to the ledger (queue + spilled), sampled every 5 s',
    registers: [this.registry],
  });
  readonly billingRefused = new client.Counter({
    name: 'anima_billing_refusals_total',
    help: 'Requests refused by billing: insufficient_balance (402) or unavailable (503)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly billingUncollected = new client.Counter({
    name: 'anima_billing_uncollected_micros_total',
    help: 'Sale amounts a prepaid wallet could not cover, booked as bad debt',
    labelNames: ['app'] as const,
    registers: [this.registry],
  });
  readonly billingSpilled = new client.Counter({
    name: 'anima_billing_spilled_total',
    help: 'Settlements that could not reach Redis and went to the database directly',
    registers: [this.registry],
  });
  readonly billingUnconfirmed = new client.Gauge({
    name: 'anima_billing_unconfirmed',
    help: 'Records this instance settled into Redis and has not yet seen in the ledger (kept to resend if Redis loses them)',
    registers: [this.registry],
  });
  readonly billingOldestUnjournaled = new client.Gauge({
    name: 'anima_billing_oldest_unjournaled_seconds',
    help: "Age of the oldest record this instance settled that the ledger doesn't have yet (0 = none); a stuck journal writer shows here",
    registers: [this.registry],
  });
  readonly billingResent = new client.Counter({
    name: 'anima_billing_resent_total',
    help: 'Settled records sent to Redis again because Redis lost them before they were journaled',
    registers: [this.registry],
  });
  readonly redisDataLoss = new client.Counter({
    name: 'anima_redis_data_loss_total',
    help: 'Times this instance found Redis had lost its data (epoch: the epoch key vanished; server: another server or run)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly webhooks = new client.Counter({
    name: 'anima_webhook_deliveries_total',
    help: 'Webhook delivery attempts by result (delivered, retry, failed)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly budgetCrossed = new client.Counter({
    name: 'anima_budget_threshold_crossed_total',
    help: 'Cost budgets (cost_day / cost_month limits) seen crossing 80 % or 100 %, by scope kind, window and threshold (no scope id: bounded)',
    labelNames: ['scope', 'window', 'threshold'] as const,
    registers: [this.registry],
  });
  readonly notifications = new client.Counter({
    name: 'anima_notifications_total',
    help: 'Operator notifications by result: delivered, retry, failed, folded (into a summary), duplicate (another instance sends it)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly waiting: client.Gauge = new client.Gauge({
    name: 'anima_queue_waiting',
    help: 'Requests waiting in a WAIT queue on this instance',
    registers: [this.registry],
    collect: (): void => this.waiting.set(this.waitingSource()),
  });
  readonly cacheLookups = new client.Counter({
    name: 'anima_cache_lookups_total',
    help: 'API key lookups by cache layer and result (l1 = in-process snapshot, db = fallback read)',
    labelNames: ['layer', 'result'] as const,
    registers: [this.registry],
  });
  readonly dependencyUp = new client.Gauge({
    name: 'anima_dependency_up',
    help: '1 when the dependency answered its last health probe (every 5 s)',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });
  readonly degraded = new client.Gauge({
    name: 'anima_degraded',
    help: '1 while the gateway runs in a degraded mode (a dependency down)',
    registers: [this.registry],
  });

  /** The last hour of this instance's traffic in 10-second slots, for the console's overview charts. */
  readonly stats = new TrafficStats();

  /** False folds the app label of anima_request_duration_seconds into "other" (the cardinality cap). */
  private readonly appLabel: boolean;

  constructor(opts: { defaultMetrics?: boolean; appLabel?: boolean } = {}) {
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
    this.appLabel = opts.appLabel !== false;
    for (const l of KNOWN.limits) for (const m of KNOWN.modes) this.quotaRejections.labels(l, m).inc(0);
    for (const m of KNOWN.modes) this.queued.labels(m).inc(0);
    for (const o of KNOWN.waitOutcomes) this.queueWait.zero({ outcome: o });
    for (const r of KNOWN.refusals) this.billingRefused.labels(r).inc(0);
    for (const r of KNOWN.dataLoss) this.redisDataLoss.labels(r).inc(0);
    for (const k of KNOWN.taskKinds) for (const st of KNOWN.taskStates) this.tasks.labels(k, st).inc(0);
    for (const r of KNOWN.webhookResults) this.webhooks.labels(r).inc(0);
    for (const r of KNOWN.notifyResults) this.notifications.labels(r).inc(0);
    for (const sc of KNOWN.budgetScopes)
      for (const w of KNOWN.budgetWindows)
        for (const t of KNOWN.budgetThresholds) this.budgetCrossed.labels(sc, w, t).inc(0);
  }

  /** A transition this instance saw (the state itself is read at scrape time: breakerSource). */
  breaker(channel: string, st: SharedBreakerState): void {
    this.breakerTransitions.labels(channel, st.state).inc();
  }

  /** A request's series, by its label values: looked up once per request, not once per metric. */
  private readonly bundles = new Map<string, RequestSeries>();
  private readonly attemptSeries = new Map<string, { n: CounterSeries; t: HistogramSeries }>();

  private bundle(
    dialect: string,
    alias: string,
    channel: string,
    app: string,
    status: string,
    outcome: string,
  ): RequestSeries {
    const k = `${dialect}\u0000${alias}\u0000${channel}\u0000${app}\u0000${status}\u0000${outcome}`;
    let b = this.bundles.get(k);
    if (!b) {
      b = {
        requests: this.requests.with(dialect, alias, channel, app, status, outcome),
        // Same one lookup per request: channel and app are already in the bundle key.
        duration: this.duration.with(dialect, alias, channel, this.appLabel ? app : 'other', outcome),
        ttfb: this.ttfb.with(dialect, alias),
        overhead: this.overhead.with(dialect),
        tokensIn: this.tokens.with(alias, channel, 'in'),
        tokensOut: this.tokens.with(alias, channel, 'out'),
        sale: this.sale.with(alias, channel, app),
        cost: this.cost.with(alias, channel, app),
      };
      this.bundles.set(k, b);
    }
    return b;
  }

  /** Sale and cost booked after their request's line (a media job, when it finishes). */
  booked(alias: string, channel: string, app: string, sale: bigint, cost: bigint): void {
    this.sale.with(alias, channel, app).inc(Number(sale));
    this.cost.with(alias, channel, app).inc(Number(cost));
  }

  /** One upstream attempt's outcome and duration. */
  attempt(channel: string, result: string, ms: number): void {
    const k = `${channel}\u0000${result}`;
    let a = this.attemptSeries.get(k);
    if (!a)
      this.attemptSeries.set(
        k,
        (a = { n: this.attempts.with(channel, result), t: this.upstreamTime.with(channel) }),
      );
    a.n.inc();
    a.t.observe(ms / 1000);
  }

  /** `dialect`: the route's label when it is not a relayed dialect (a media submission). */
  request(ctx: RequestContext, dialect: string = ctx.dialect): void {
    const alias = ctx.alias?.name ?? '_none';
    const totalS = ctx.elapsedMs() / 1000;
    const status = ctx.status || 499;
    const b = this.bundle(
      dialect,
      alias,
      ctx.channel ?? '_none',
      ctx.app?.id ?? '_none',
      `${Math.floor(status / 100)}xx`,
      ctx.outcome,
    );
    b.requests.inc();
    b.duration.observe(totalS);
    if (ctx.ttfbMs !== null) b.ttfb.observe(ctx.ttfbMs / 1000);
    const overheadS = ctx.attempts > 0 ? Math.max(0, totalS - ctx.upstreamMs / 1000) : -1;
    if (overheadS >= 0) b.overhead.observe(overheadS);
    this.stats.record(
      Date.now(),
      status,
      totalS * 1000,
      overheadS < 0 ? -1 : overheadS * 1000,
      ctx.channel ? ctx.saleMicros : null,
      ctx.channel ? ctx.costMicros : null,
    );
    if (ctx.cacheHit) this.responseCache.labels(alias, 'hit').inc();
    else if (ctx.extraHeaders['x-anima-cache'] === 'miss') this.responseCache.labels(alias, 'miss').inc();
    if (ctx.usage && ctx.channel && !ctx.cacheHit) {
      b.tokensIn.inc(ctx.usage.inputTokens);
      b.tokensOut.inc(ctx.usage.outputTokens);
    }
    if (ctx.channel && ctx.saleMicros !== null) b.sale.inc(Number(ctx.saleMicros));
    if (ctx.channel && ctx.costMicros !== null) b.cost.inc(Number(ctx.costMicros));
  }
}

interface RequestSeries {
  requests: CounterSeries;
  duration: HistogramSeries;
  ttfb: HistogramSeries;
  overhead: HistogramSeries;
  tokensIn: CounterSeries;
  tokensOut: CounterSeries;
  sale: CounterSeries;
  cost: CounterSeries;
}
