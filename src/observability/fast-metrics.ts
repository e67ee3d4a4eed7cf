import type { MetricValue, Registry } from 'prom-client';

/**
 * Counters and histograms for the per-request metrics, registered in a prom-client Registry and exposed
 * exactly as prom-client's own (same names, types, label order, `_bucket`/`_sum`/`_count` lines).
 *
 * Why not prom-client's: every `labels(...).inc()` there builds a label object and hashes it, per update.
 * A request updates ten series, so that was paid ten times per request (measured by bench/overhead.ts
 * --only json with bench/profile-diff.ts; figures in bench/HISTORY.md). Here a series is looked up once by
 * its label values and kept (see Metrics.request: one lookup per request for all of its series); an
 * update is then a number added to a field. The registry reads the series at scrape time.
 */
abstract class FastMetric<S> {
  private readonly series = new Map<string, { labels: Record<string, string>; s: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    registers: Registry[],
  ) {
    for (const r of registers) r.registerMetric(this as never);
  }

  /** The series for these label values, in labelNames order. Keep it: looking it up is the costly part. */
  with(...values: string[]): S {
    const k = values.join('\u0000');
    let e = this.series.get(k);
    if (!e) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => (labels[n] = values[i] ?? ''));
      e = { labels, s: this.create() };
      this.series.set(k, e);
    }
    return e.s;
  }

  protected abstract create(): S;
  protected abstract values(labels: Record<string, string>, s: S): MetricValue<string>[];
  abstract readonly type: 'counter' | 'histogram';

  /** What the registry calls at scrape time. */
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: 'sum';
    values: MetricValue<string>[];
  }> {
    const values: MetricValue<string>[] = [];
    for (const { labels, s } of this.series.values()) values.push(...this.values(labels, s));
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: 'sum', values });
  }

  /** Zeroes every series in place (held references stay valid). */
  reset(): void {
    for (const { s } of this.series.values()) this.zero(s);
  }
  protected abstract zero(s: S): void;
}

export class CounterSeries {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = 'counter' as const;
  protected create(): CounterSeries {
    return new CounterSeries();
  }
  protected values(labels: Record<string, string>, s: CounterSeries): MetricValue<string>[] {
    return [{ value: s.value, labels }];
  }
  protected zero(s: CounterSeries): void {
    s.value = 0;
  }
}

export class HistogramSeries {
  /** Per bucket (not cumulative), the last one for +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = 'histogram' as const;
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    private readonly bounds: readonly number[],
    registers: Registry[],
  ) {
    super(name, help, labelNames, registers);
  }
  protected create(): HistogramSeries {
    return new HistogramSeries(this.bounds);
  }
  protected values(labels: Record<string, string>, s: HistogramSeries): MetricValue<string>[] {
    const out: MetricValue<string>[] = [];
    let acc = 0;
    this.bounds.forEach((b, i) => {
      acc += s.counts[i]!;
      out.push({
        value: acc,
        labels: { le: b as unknown as string, ...labels },
        metricName: `${this.name}_bucket`,
      } as MetricValue<string>);
    });
    acc += s.counts[this.bounds.length]!;
    out.push({
      value: acc,
      labels: { le: '+Inf', ...labels },
      metricName: `${this.name}_bucket`,
    } as MetricValue<string>);
    out.push({ value: s.sum, labels, metricName: `${this.name}_sum` } as MetricValue<string>);
    out.push({ value: s.count, labels, metricName: `${this.name}_count` } as MetricValue<string>);
    return out;
  }
  protected zero(s: HistogramSeries): void {
    s.counts.fill(0);
    s.sum = 0;
    s.count = 0;
  }
}
