/**
 * Cluster-wide console figures: a traffic ring's dump merged into another gives the sums and the merged
 * histograms; per-channel windows keep 15 minutes; ClusterStats sums live instances through a share and
 * says when it could only count itself.
 */
import { describe, expect, it } from 'vitest';
import { ChannelStats } from '../../src/observability/channel-stats.js';
import { ClusterStats, type StatsShare } from '../../src/observability/cluster-stats.js';
import { TrafficStats } from '../../src/observability/stats.js';

const T0 = 1_800_000_000_000;

function memoryShare(): StatsShare & { rows: Map<string, string> } {
  const rows = new Map<string, string>();
  return {
    rows,
    put: async (i, json) => void rows.set(i, json),
    all: async () => [...rows].map(([instance, json]) => ({ instance, json })),
    remove: async (i) => void rows.delete(i),
  };
}

describe('traffic ring dump / absorb', () => {
  it('sums counts and money, merges latency histograms, keeps the slots apart', () => {
    const a = new TrafficStats();
    const b = new TrafficStats();
    for (let i = 0; i < 10; i++) a.record(T0 - 30_000, 200, 10, 1, 100n, 40n);
    for (let i = 0; i < 10; i++) b.record(T0, 500, 1_000, 2, 5n, 1n);
    b.record(T0, 429, 1_000, -1, null, null);
    const sum = new TrafficStats();
    sum.absorb(a.dump(T0), T0);
    sum.absorb(b.dump(T0), T0);
    const s = sum.series(T0, 10, 10);
    expect(s.totals).toMatchObject({
      requests: 21,
      ok: 10,
      server_errors: 10,
      rate_limited: 1,
      sale_micros: '1050',
      cost_micros: '410',
    });
    // p50 falls in b's 1 s bucket (11 of 21 at 1 s), p99 too; a's point alone is 10 ms.
    expect(s.totals.p50_ms!).toBeGreaterThan(900);
    const aPoint = s.points.find((p) => p.t === Math.floor((T0 - 30_000) / 10_000) * 10_000)!;
    expect(aPoint.requests).toBe(10);
    expect(aPoint.p50_ms!).toBeGreaterThan(9);
    expect(aPoint.p50_ms!).toBeLessThan(11);
    // Round trip through JSON (what Redis holds) changes nothing.
    const again = new TrafficStats();
    again.absorb(JSON.parse(JSON.stringify(a.dump(T0))), T0);
    again.absorb(JSON.parse(JSON.stringify(b.dump(T0))), T0);
    expect(again.series(T0, 10, 10)).toEqual(s);
  });

  it('drops slots older than the hour, and an empty ring dumps nothing', () => {
    const a = new TrafficStats();
    a.record(T0 - 3_700_000, 200, 5, 1, 1n, 1n);
    expect(a.dump(T0).slots).toEqual([]);
    const sum = new TrafficStats();
    sum.absorb(
      {
        slots: [
          {
            p: Math.floor((T0 - 3_700_000) / 10_000),
            c: [1, 1, 0, 0, 0, 1],
            sale: 1,
            cost: 1,
            lat: [[3, 1]],
            ovh: [],
          },
        ],
      },
      T0,
    );
    expect(sum.series(T0, 60, 60).totals.requests).toBe(0);
  });
});

describe('per-channel window', () => {
  it('counts attempts and failures, reads p50 / p95, forgets after 15 minutes', () => {
    const c = new ChannelStats();
    for (let i = 0; i < 95; i++) c.record(T0, 'a', false, 20);
    for (let i = 0; i < 5; i++) c.record(T0, 'a', true, 2_000);
    c.record(T0 - 16 * 60_000, 'b', false, 1);
    const [a, ...rest] = c.figures(T0, 15);
    expect(rest).toEqual([]);
    expect(a).toMatchObject({ channel: 'a', requests: 100, errors: 5, error_rate: 0.05 });
    expect(a!.p50_ms!).toBeGreaterThan(18);
    expect(a!.p50_ms!).toBeLessThan(22);
    expect(a!.p95_ms!).toBeLessThan(22); // the 95th of 100 is still a fast one
    const merged = new ChannelStats();
    merged.absorb(c.dump(T0), T0);
    merged.absorb(c.dump(T0), T0);
    expect(merged.figures(T0, 15)[0]).toMatchObject({ requests: 200, errors: 10 });
    // A 1-minute window sees only the minute in progress.
    c.record(T0 + 60_000, 'a', true, 5);
    expect(c.figures(T0 + 60_000, 1)[0]).toMatchObject({ requests: 1, errors: 1 });
  });
});

describe('ClusterStats', () => {
  it('sums every instance that published, and counts them', async () => {
    const share = memoryShare();
    const one = new ClusterStats(new TrafficStats(), new ChannelStats(), 'one', share);
    const two = new ClusterStats(new TrafficStats(), new ChannelStats(), 'two', share);
    const now = Date.now();
    one.traffic.record(now, 200, 5, 1, 10n, 5n);
    two.traffic.record(now, 200, 5, 1, 10n, 5n);
    two.traffic.record(now, 502, 5, 1, null, null);
    two.channels.record(now, 'x', true, 50);
    await one.publish();
    await two.publish();
    const s = await one.series(Date.now(), 10, 10);
    expect(s).toMatchObject({ scope: 'cluster', instances: 2 });
    expect(s.totals.requests).toBe(3);
    const f = await one.channelFigures(Date.now(), 15);
    expect(f.instances).toBe(2);
    expect(f.data).toEqual([expect.objectContaining({ channel: 'x', requests: 1, errors: 1 })]);
    await two.stop(); // leaves the share at once
    expect(share.rows.has('two')).toBe(false);
  });

  it('says when only this instance could be counted (the share did not answer)', async () => {
    const broken: StatsShare = {
      put: async () => {
        throw new Error('down');
      },
      all: async () => {
        throw new Error('down');
      },
      remove: async () => {},
    };
    const c = new ClusterStats(new TrafficStats(), new ChannelStats(), 'solo', broken);
    c.traffic.record(Date.now(), 200, 5, 1, null, null);
    await c.publish(); // swallowed
    expect(await c.series(Date.now(), 10, 10)).toMatchObject({ scope: 'instance', instances: 1 });
    // No share at all (the embedded mode): this instance is the cluster.
    const embedded = new ClusterStats(new TrafficStats(), new ChannelStats(), 'e', null);
    expect(await embedded.series(Date.now(), 10, 10)).toMatchObject({ scope: 'cluster', instances: 1 });
  });
});
