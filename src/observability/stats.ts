/**
 * The operator console's overview charts: this instance's data-plane traffic over the last hour, in
 * 10-second slots of a fixed ring (no allocation after construction). Each slot counts requests by status
 * class, sums sale and cost, and keeps two log-scale histograms (total latency and gateway overhead) from
 * which p50/p99 are read at query time.
 *
 * Recording is O(1): find the slot for `now` (clearing it first if it still holds an older period), bump
 * a few typed-array cells. Queries merge slots into points of any multiple of 10 s.
 *
 * Money here is integer micro-units summed in a float64, exact below 2^53 micro-units per slot (about
 * 9 billion currency units in 10 s); it only feeds charts and is reported as decimal strings. The ledger
 * stays the source of truth for money.
 */
export const SLOT_MS = 10_000;
/** One hour of 10-second slots. */
export const SLOTS = 360;
/** Histogram: bucket i holds values in [BASE·2^(i/4), BASE·2^((i+1)/4)) ms; ~9% error at the bucket's middle. */
export const BUCKETS = 100;
const BASE_MS = 0.01;
const PER_OCTAVE = 4;

/** Counter columns per slot. */
const C_REQ = 0;
const C_2XX = 1;
const C_4XX = 2;
const C_5XX = 3;
const C_429 = 4;
const C_OVH_N = 5;
const COLS = 6;

export interface StatsPoint {
  /** Start of the point's period (ms since epoch). */
  t: number;
  requests: number;
  ok: number;
  client_errors: number;
  rate_limited: number;
  server_errors: number;
  /** server_errors / requests (0 when no requests). */
  error_rate: number;
  p50_ms: number | null;
  p99_ms: number | null;
  overhead_p50_ms: number | null;
  overhead_p99_ms: number | null;
  sale_micros: string;
  cost_micros: string;
}

export interface StatsSeries {
  step_s: number;
  minutes: number;
  from: number;
  to: number;
  points: StatsPoint[];
  totals: Omit<StatsPoint, 't'>;
}

/** A ring's non-empty slots as JSON (see TrafficStats.dump). */
export interface TrafficDump {
  slots: Array<{
    p: number;
    c: number[];
    sale: number;
    cost: number;
    lat: Array<[number, number]>;
    ovh: Array<[number, number]>;
  }>;
}

/** A histogram's non-zero buckets from `at` as [bucket, count] pairs. */
export function sparse(h: Uint32Array, at: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let b = 0; b < BUCKETS; b++) if (h[at + b]) out.push([b, h[at + b]!]);
  return out;
}

export function bucketOf(ms: number): number {
  if (!(ms > BASE_MS)) return 0;
  const i = Math.floor(Math.log2(ms / BASE_MS) * PER_OCTAVE);
  return i >= BUCKETS ? BUCKETS - 1 : i;
}

/** The value reported for a bucket: its geometric middle. */
export function bucketValue(i: number): number {
  return BASE_MS * 2 ** ((i + 0.5) / PER_OCTAVE);
}

export function quantile(h: Uint32Array, n: number, q: number): number | null {
  if (n === 0) return null;
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (let i = 0; i < BUCKETS; i++) {
    seen += h[i]!;
    if (seen >= rank) return Math.round(bucketValue(i) * 100) / 100;
  }
  return Math.round(bucketValue(BUCKETS - 1) * 100) / 100;
}

export class TrafficStats {
  /** The 10-second period (now / SLOT_MS) each slot currently holds; -1 = never used. */
  private readonly period = new Float64Array(SLOTS).fill(-1);
  private readonly counts = new Float64Array(SLOTS * COLS);
  private readonly sale = new Float64Array(SLOTS);
  private readonly cost = new Float64Array(SLOTS);
  private readonly latency = new Uint32Array(SLOTS * BUCKETS);
  private readonly overhead = new Uint32Array(SLOTS * BUCKETS);

  private slot(now: number): number {
    const p = Math.floor(now / SLOT_MS);
    const s = p % SLOTS;
    if (this.period[s] !== p) {
      this.period[s] = p;
      this.counts.fill(0, s * COLS, (s + 1) * COLS);
      this.sale[s] = 0;
      this.cost[s] = 0;
      this.latency.fill(0, s * BUCKETS, (s + 1) * BUCKETS);
      this.overhead.fill(0, s * BUCKETS, (s + 1) * BUCKETS);
    }
    return s;
  }

  /**
   * One finished request. `overheadMs` < 0 when no upstream was called (nothing to subtract from);
   * `saleMicros`/`costMicros` null when the request was not priced.
   */
  record(
    now: number,
    status: number,
    totalMs: number,
    overheadMs: number,
    saleMicros: bigint | null,
    costMicros: bigint | null,
  ): void {
    const s = this.slot(now);
    const c = s * COLS;
    this.counts[c + C_REQ]!++;
    if (status >= 500) this.counts[c + C_5XX]!++;
    else if (status >= 400 || status === 0) {
      this.counts[c + C_4XX]!++;
      if (status === 429) this.counts[c + C_429]!++;
    } else this.counts[c + C_2XX]!++;
    this.latency[s * BUCKETS + bucketOf(totalMs)]!++;
    if (overheadMs >= 0) {
      this.counts[c + C_OVH_N]!++;
      this.overhead[s * BUCKETS + bucketOf(overheadMs)]!++;
    }
    if (saleMicros !== null) this.sale[s]! += Number(saleMicros);
    if (costMicros !== null) this.cost[s]! += Number(costMicros);
  }

  /**
   * The slots of the last hour that hold anything, for other instances to merge (cluster-wide figures,
   * observability/cluster-stats.ts): histograms sparse as [bucket, count] pairs, money as numbers.
   */
  dump(now: number): TrafficDump {
    const last = Math.floor(now / SLOT_MS);
    const slots: TrafficDump['slots'] = [];
    for (let s = 0; s < SLOTS; s++) {
      const p = this.period[s]!;
      if (p < 0 || p <= last - SLOTS || p > last || this.counts[s * COLS + C_REQ] === 0) continue;
      slots.push({
        p,
        c: Array.from(this.counts.subarray(s * COLS, (s + 1) * COLS)),
        sale: this.sale[s]!,
        cost: this.cost[s]!,
        lat: sparse(this.latency, s * BUCKETS),
        ovh: sparse(this.overhead, s * BUCKETS),
      });
    }
    return { slots };
  }

  /** Adds another instance's dump into this ring (slots older than this ring's hour are dropped). */
  absorb(d: TrafficDump, now: number): void {
    const last = Math.floor(now / SLOT_MS);
    for (const x of d.slots) {
      if (!(x.p > last - SLOTS && x.p <= last) || x.c.length !== COLS) continue;
      const s = this.slot(x.p * SLOT_MS);
      for (let j = 0; j < COLS; j++) this.counts[s * COLS + j]! += x.c[j]!;
      this.sale[s]! += x.sale;
      this.cost[s]! += x.cost;
      for (const [b, n] of x.lat) if (b >= 0 && b < BUCKETS) this.latency[s * BUCKETS + b]! += n;
      for (const [b, n] of x.ovh) if (b >= 0 && b < BUCKETS) this.overhead[s * BUCKETS + b]! += n;
    }
  }

  /**
   * The last `minutes` (1..60) as points of `stepS` seconds (a multiple of 10), oldest first; the last
   * point holds the period in progress.
   */
  series(now: number, minutes: number, stepS: number): StatsSeries {
    const per = Math.max(1, Math.round(stepS / (SLOT_MS / 1000)));
    const total = Math.min(SLOTS, Math.ceil((minutes * 60) / (SLOT_MS / 1000)));
    const n = Math.max(1, Math.ceil(total / per));
    const lastPeriod = Math.floor(now / SLOT_MS);
    // Points are aligned on multiples of the step, so a chart refreshed later keeps the same columns.
    const lastStart = lastPeriod - (lastPeriod % per);
    const firstStart = lastStart - (n - 1) * per;
    const points: StatsPoint[] = [];
    const all = {
      c: new Float64Array(COLS),
      sale: 0,
      cost: 0,
      lat: new Uint32Array(BUCKETS),
      ovh: new Uint32Array(BUCKETS),
    };
    for (let k = 0; k < n; k++) {
      const start = firstStart + k * per;
      const c = new Float64Array(COLS);
      const lat = new Uint32Array(BUCKETS);
      const ovh = new Uint32Array(BUCKETS);
      let sale = 0;
      let cost = 0;
      for (let p = start; p < start + per && p <= lastPeriod; p++) {
        if (p < 0) continue;
        const s = p % SLOTS;
        if (this.period[s] !== p) continue;
        for (let j = 0; j < COLS; j++) c[j]! += this.counts[s * COLS + j]!;
        for (let b = 0; b < BUCKETS; b++) {
          lat[b]! += this.latency[s * BUCKETS + b]!;
          ovh[b]! += this.overhead[s * BUCKETS + b]!;
        }
        sale += this.sale[s]!;
        cost += this.cost[s]!;
      }
      for (let j = 0; j < COLS; j++) all.c[j]! += c[j]!;
      for (let b = 0; b < BUCKETS; b++) {
        all.lat[b]! += lat[b]!;
        all.ovh[b]! += ovh[b]!;
      }
      all.sale += sale;
      all.cost += cost;
      points.push({ t: start * SLOT_MS, ...view(c, lat, ovh, sale, cost) });
    }
    return {
      step_s: (per * SLOT_MS) / 1000,
      minutes,
      from: firstStart * SLOT_MS,
      to: (lastStart + per) * SLOT_MS,
      points,
      totals: view(all.c, all.lat, all.ovh, all.sale, all.cost),
    };
  }
}

function view(
  c: Float64Array,
  lat: Uint32Array,
  ovh: Uint32Array,
  sale: number,
  cost: number,
): Omit<StatsPoint, 't'> {
  const req = c[C_REQ]!;
  return {
    requests: req,
    ok: c[C_2XX]!,
    client_errors: c[C_4XX]!,
    rate_limited: c[C_429]!,
    server_errors: c[C_5XX]!,
    error_rate: req ? c[C_5XX]! / req : 0,
    p50_ms: quantile(lat, req, 0.5),
    p99_ms: quantile(lat, req, 0.99),
    overhead_p50_ms: quantile(ovh, c[C_OVH_N]!, 0.5),
    overhead_p99_ms: quantile(ovh, c[C_OVH_N]!, 0.99),
    sale_micros: BigInt(Math.round(sale)).toString(),
    cost_micros: BigInt(Math.round(cost)).toString(),
  };
}
