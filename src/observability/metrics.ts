import client from 'prom-client';
import type { SharedBreakerState } from '../coord/types.js';
import type { RequestContext } from '../relay/context.js';
import { TrafficStats } from './stats.js';

const BREAKER_VALUE: Record<SharedBreakerState['state'], number> = { closed: 0, half_open: 1, open: 2, forced_open: 3 };

/**
 * Every Anima metric is prefixed `anima_`. Labels are bounded: alias only when it is a configured alias,
 * channel codes from config, app ids; never request ids, raw client model names or secrets.
 */
export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Counter({
    name: 'anima_requests_total',
    help: 'Data-plane requests by outcome',
    labelNames: ['dialect', 'alias', 'channel', 'app', 'status_class', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly duration = new client.Histogram({
    name: 'anima_request_duration_seconds',
    help: 'Request latency, receipt to last byte',
    labelNames: ['dialect', 'alias', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  readonly ttfb = new client.Histogram({
    name: 'anima_request_ttfb_seconds',
    help: 'Receipt to first byte written to the client',
    labelNames: ['dialect', 'alias'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly responseCache = new client.Counter({
    name: 'anima_response_cache_total',
    help: 'Exact-match response cache lookups by result (hit: served without an upstream call; miss: went upstream)',
    labelNames: ['alias', 'result'] as const,
    registers: [this.registry],
  });
  readonly overhead = new client.Histogram({
    name: 'anima_gateway_overhead_seconds',
    help: 'Time spent in the gateway itself: total minus time waiting on upstreams',
    labelNames: ['dialect'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });
  readonly attempts = new client.Counter({
    name: 'anima_upstream_attempts_total',
    help: 'Upstream attempts by channel and result (ok or a failure kind)',
    labelNames: ['channel', 'result'] as const,
    registers: [this.registry],
  });
  readonly upstreamTime = new client.Histogram({
    name: 'anima_upstream_duration_seconds',
    help: 'One upstream attempt, start to end',
    labelNames: ['channel'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  readonly tokens = new client.Counter({
    name: 'anima_tokens_total',
    help: 'Tokens by direction',
    labelNames: ['alias', 'channel', 'direction'] as const,
    registers: [this.registry],
  });
  readonly breakerState = new client.Gauge({
    name: 'anima_breaker_state',
    help: 'Circuit breaker state per channel: 0 closed, 1 half-open, 2 open, 3 forced open',
    labelNames: ['channel'] as const,
    registers: [this.registry],
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
    help: 'Requests admitted on this instance\'s local share because the shared quota backend was unreachable',
    registers: [this.registry],
  });

  readonly tasks = new client.Counter({
    name: 'anima_tasks_total',
    help: 'Async task state transitions, by kind and state',
    labelNames: ['kind', 'state'] as const,
    registers: [this.registry],
  });
  /** Read at scrape time for anima_queue_waiting. */
  waitingSource: () => number = () => 0;
  readonly sale = new client.Counter({
    name: 'anima_sale_micros_total',
    help: 'Sale price of served requests (micro-units), by alias, channel and app',
    labelNames: ['alias', 'channel', 'app'] as const,
    registers: [this.registry],
  });
  readonly cost = new client.Counter({
    name: 'anima_cost_micros_total',
    help: 'Upstream cost of served requests (micro-units), by alias, channel and app',
    labelNames: ['alias', 'channel', 'app'] as const,
    registers: [this.registry],
  });
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
  readonly webhooks = new client.Counter({
    name: 'anima_webhook_deliveries_total',
    help: 'Webhook delivery attempts by result (delivered, retry, failed)',
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

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
  }

  breaker(channel: string, st: SharedBreakerState): void {
    this.breakerState.labels(channel).set(BREAKER_VALUE[st.state]);
    this.breakerTransitions.labels(channel, st.state).inc();
  }

  request(ctx: RequestContext): void {
    const alias = ctx.alias?.name ?? '_none';
    const totalS = ctx.elapsedMs() / 1000;
    const status = ctx.status || 499;
    this.requests.labels(ctx.dialect, alias, ctx.channel ?? '_none', ctx.app?.id ?? '_none', `${Math.floor(status / 100)}xx`, ctx.outcome).inc();
    this.duration.labels(ctx.dialect, alias, ctx.outcome).observe(totalS);
    if (ctx.ttfbMs !== null) this.ttfb.labels(ctx.dialect, alias).observe(ctx.ttfbMs / 1000);
    const overheadS = ctx.attempts > 0 ? Math.max(0, totalS - ctx.upstreamMs / 1000) : -1;
    if (overheadS >= 0) this.overhead.labels(ctx.dialect).observe(overheadS);
    this.stats.record(Date.now(), status, totalS * 1000, overheadS < 0 ? -1 : overheadS * 1000, ctx.channel ? ctx.saleMicros : null, ctx.channel ? ctx.costMicros : null);
    if (ctx.cacheHit) this.responseCache.labels(alias, 'hit').inc();
    else if (ctx.extraHeaders['x-anima-cache'] === 'miss') this.responseCache.labels(alias, 'miss').inc();
    if (ctx.usage && ctx.channel && !ctx.cacheHit) {
      this.tokens.labels(alias, ctx.channel, 'in').inc(ctx.usage.inputTokens);
      this.tokens.labels(alias, ctx.channel, 'out').inc(ctx.usage.outputTokens);
    }
    if (ctx.channel && ctx.saleMicros !== null) this.sale.labels(alias, ctx.channel, ctx.app?.id ?? '_none').inc(Number(ctx.saleMicros));
    if (ctx.channel && ctx.costMicros !== null) this.cost.labels(alias, ctx.channel, ctx.app?.id ?? '_none').inc(Number(ctx.costMicros));
  }
}
