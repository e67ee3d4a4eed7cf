/**
 * The per-request metrics (src/observability/fast-metrics.ts, as Metrics.request uses them: one lookup
 * per request for all of its series) against prom-client's Counter and Histogram doing the same updates
 * through `labels(...).inc()` / `.observe()`: CPU per request's worth of updates (a request line, its
 * duration, TTFB and overhead histograms, tokens in and out, sale and cost, one upstream attempt), over
 * 4 aliases × 3 channels × 8 apps. Both registries must scrape to the same text before timing.
 *
 *   node dist/bench/micro/metrics.js [--requests N] [--rounds R] [--json]
 */
import client from 'prom-client';
import {
  type CounterSeries,
  FastCounter,
  FastHistogram,
  type HistogramSeries,
} from '../../src/observability/fast-metrics.js';
import { ab, arg, type Impl, report, sameOutput } from './ab.js';

const REQUESTS = arg('requests', 200_000);
const B_DURATION = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const B_TTFB = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const B_OVERHEAD = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
const B_UPSTREAM = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

const ALIASES = ['gpt-4o-mini', 'gpt-4o', 'claude-sonnet', 'embed-small'];
const CHANNELS = ['ch_primary', 'ch_backup', 'ch_azure'];
const APPS = Array.from({ length: 8 }, (_, i) => `app_${i}`);

/** The i-th request's label values and figures (the same for both sides). */
function req(i: number) {
  return {
    alias: ALIASES[i % 4]!,
    channel: CHANNELS[(i >> 2) % 3]!,
    app: APPS[(i >> 4) % 8]!,
    totalS: (i % 997) / 1000,
    ttfbS: (i % 331) / 1000,
    overheadS: (i % 17) / 10_000,
    upstreamS: (i % 900) / 1000,
    tokensIn: 12 + (i % 7),
    tokensOut: 20 + (i % 13),
    sale: 300 + (i % 50),
    cost: 200 + (i % 40),
  };
}

const names = {
  requests: ['dialect', 'alias', 'channel', 'app', 'status_class', 'outcome'],
  duration: ['dialect', 'alias', 'channel', 'app', 'outcome'],
  money: ['alias', 'channel', 'app'],
} as const;

interface Bundle {
  requests: CounterSeries;
  duration: HistogramSeries;
  ttfb: HistogramSeries;
  overhead: HistogramSeries;
  tokensIn: CounterSeries;
  tokensOut: CounterSeries;
  sale: CounterSeries;
  cost: CounterSeries;
}

function handWritten(): { impl: Impl; registry: client.Registry } {
  const r = new client.Registry();
  const requests = new FastCounter('m_requests_total', 'h', names.requests, [r]);
  const duration = new FastHistogram('m_duration_seconds', 'h', names.duration, B_DURATION, [r]);
  const ttfb = new FastHistogram('m_ttfb_seconds', 'h', ['dialect', 'alias'], B_TTFB, [r]);
  const overhead = new FastHistogram('m_overhead_seconds', 'h', ['dialect'], B_OVERHEAD, [r]);
  const tokens = new FastCounter('m_tokens_total', 'h', ['alias', 'channel', 'direction'], [r]);
  const sale = new FastCounter('m_sale_total', 'h', names.money, [r]);
  const cost = new FastCounter('m_cost_total', 'h', names.money, [r]);
  const attempts = new FastCounter('m_attempts_total', 'h', ['channel', 'result'], [r]);
  const upstream = new FastHistogram('m_upstream_seconds', 'h', ['channel'], B_UPSTREAM, [r]);
  // As Metrics.request: the request's series found once by its label values, then plain updates.
  const bundles = new Map<string, Bundle>();
  const attemptSeries = new Map<string, { n: CounterSeries; t: HistogramSeries }>();
  const one = (i: number) => {
    const q = req(i);
    const k = `openai\u0000${q.alias}\u0000${q.channel}\u0000${q.app}\u00002xx\u0000ok`;
    let b = bundles.get(k);
    if (!b) {
      b = {
        requests: requests.with('openai', q.alias, q.channel, q.app, '2xx', 'ok'),
        duration: duration.with('openai', q.alias, q.channel, q.app, 'ok'),
        ttfb: ttfb.with('openai', q.alias),
        overhead: overhead.with('openai'),
        tokensIn: tokens.with(q.alias, q.channel, 'in'),
        tokensOut: tokens.with(q.alias, q.channel, 'out'),
        sale: sale.with(q.alias, q.channel, q.app),
        cost: cost.with(q.alias, q.channel, q.app),
      };
      bundles.set(k, b);
    }
    const ak = `${q.channel}\u0000ok`;
    let a = attemptSeries.get(ak);
    if (!a) attemptSeries.set(ak, (a = { n: attempts.with(q.channel, 'ok'), t: upstream.with(q.channel) }));
    a.n.inc();
    a.t.observe(q.upstreamS);
    b.requests.inc();
    b.duration.observe(q.totalS);
    b.ttfb.observe(q.ttfbS);
    b.overhead.observe(q.overheadS);
    b.tokensIn.inc(q.tokensIn);
    b.tokensOut.inc(q.tokensOut);
    b.sale.inc(q.sale);
    b.cost.inc(q.cost);
  };
  return {
    registry: r,
    impl: {
      name: 'fast-metrics',
      run(n) {
        for (let i = 0; i < n; i++) one(i);
      },
    },
  };
}

function library(): { impl: Impl; registry: client.Registry } {
  const r = new client.Registry();
  const c = (name: string, labelNames: readonly string[]) =>
    new client.Counter({ name, help: 'h', labelNames, registers: [r] });
  const h = (name: string, labelNames: readonly string[], buckets: number[]) =>
    new client.Histogram({ name, help: 'h', labelNames, buckets, registers: [r] });
  const requests = c('m_requests_total', names.requests);
  const duration = h('m_duration_seconds', names.duration, B_DURATION);
  const ttfb = h('m_ttfb_seconds', ['dialect', 'alias'], B_TTFB);
  const overhead = h('m_overhead_seconds', ['dialect'], B_OVERHEAD);
  const tokens = c('m_tokens_total', ['alias', 'channel', 'direction']);
  const sale = c('m_sale_total', names.money);
  const cost = c('m_cost_total', names.money);
  const attempts = c('m_attempts_total', ['channel', 'result']);
  const upstream = h('m_upstream_seconds', ['channel'], B_UPSTREAM);
  const one = (i: number) => {
    const q = req(i);
    attempts.labels(q.channel, 'ok').inc();
    upstream.labels(q.channel).observe(q.upstreamS);
    requests.labels('openai', q.alias, q.channel, q.app, '2xx', 'ok').inc();
    duration.labels('openai', q.alias, q.channel, q.app, 'ok').observe(q.totalS);
    ttfb.labels('openai', q.alias).observe(q.ttfbS);
    overhead.labels('openai').observe(q.overheadS);
    tokens.labels(q.alias, q.channel, 'in').inc(q.tokensIn);
    tokens.labels(q.alias, q.channel, 'out').inc(q.tokensOut);
    sale.labels(q.alias, q.channel, q.app).inc(q.sale);
    cost.labels(q.alias, q.channel, q.app).inc(q.cost);
  };
  return {
    registry: r,
    impl: {
      name: 'prom-client',
      run(n) {
        for (let i = 0; i < n; i++) one(i);
      },
    },
  };
}

// The same updates scrape the same (series appear in first-use order on both sides).
const checkA = handWritten();
const checkB = library();
checkA.impl.run(10_000);
checkB.impl.run(10_000);
sameOutput('scrape after the same updates', await checkA.registry.metrics(), await checkB.registry.metrics());

const rows = [await ab('metrics', 'one request', handWritten().impl, library().impl, REQUESTS)];
report(rows);
