import { describe, expect, it } from 'vitest';
import { SLOT_MS, SLOTS, TrafficStats, bucketOf, bucketValue } from '../../src/observability/stats.js';

const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 60_000); // a minute boundary

describe('traffic stats ring (console overview)', () => {
  it('buckets latencies on a log scale within ~10%', () => {
    for (const ms of [0.05, 0.3, 1, 7, 42, 250, 1_000, 30_000]) {
      const v = bucketValue(bucketOf(ms));
      expect(Math.abs(v - ms) / ms).toBeLessThan(0.1);
    }
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(-1)).toBe(0);
    expect(bucketOf(1e12)).toBe(bucketOf(1e13)); // clamped to the last bucket
  });

  it('counts by status class, sums money exactly, reads p50/p99 per step', () => {
    const s = new TrafficStats();
    for (let i = 1; i <= 100; i++) s.record(T0 + 1_000, 200, i, i / 10, 1_000_001n, 400_000n); // latencies 1..100 ms
    s.record(T0 + 2_000, 502, 5, 1, null, null);
    s.record(T0 + 2_000, 429, 1, -1, null, null);
    s.record(T0 + 2_000, 404, 1, -1, null, null);
    const r = s.series(T0 + 30_000, 1, 60);
    expect(r.points).toHaveLength(1);
    const p = r.points[0]!;
    expect(p.t).toBe(T0);
    expect(p).toMatchObject({
      requests: 103,
      ok: 100,
      client_errors: 2,
      rate_limited: 1,
      server_errors: 1,
      sale_micros: '100000100',
      cost_micros: '40000000',
    });
    expect(p.error_rate).toBeCloseTo(1 / 103, 6);
    expect(p.p50_ms!).toBeGreaterThan(45);
    expect(p.p50_ms!).toBeLessThan(55);
    expect(p.p99_ms!).toBeGreaterThan(90);
    expect(p.p99_ms!).toBeLessThan(110);
    expect(p.overhead_p50_ms!).toBeGreaterThan(4.5);
    expect(p.overhead_p50_ms!).toBeLessThan(5.5);
    expect(r.totals.requests).toBe(103);
  });

  it('aligns points on the step, leaves empty periods empty, and forgets what is older than the hour', () => {
    const s = new TrafficStats();
    s.record(T0, 200, 10, 1, null, null);
    s.record(T0 + 25_000, 200, 10, 1, null, null);
    s.record(T0 + 65_000, 200, 10, 1, null, null);
    const r10 = s.series(T0 + 65_000, 2, 10);
    expect(r10.step_s).toBe(10);
    expect(r10.points).toHaveLength(12);
    expect(r10.points.at(-1)).toMatchObject({ t: T0 + 60_000, requests: 1 });
    expect(r10.points.reduce((a, p) => a + p.requests, 0)).toBe(3);
    expect(r10.points.filter((p) => p.requests === 0).every((p) => p.p50_ms === null)).toBe(true);
    const r60 = s.series(T0 + 65_000, 60, 60);
    expect(r60.points).toHaveLength(60);
    expect(r60.points.at(-2)).toMatchObject({ t: T0, requests: 2 });
    // An hour and more later the slots are reused: the old traffic is gone, not mixed in.
    const later = T0 + 65_000 + SLOT_MS * SLOTS; // the slot that held T0+65s
    s.record(later, 500, 10, 1, null, null);
    const r = s.series(later, 60, 60);
    expect(r.totals.requests).toBe(1);
    expect(r.totals.server_errors).toBe(1);
  });
});
