/**
 * The embedded default's admission (in-process) follows the same rules as the Redis script.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/lib/clock.js';
import { MemoryQuota } from '../../src/quota/memory.js';
import { type ScopeLimits, monthIndex } from '../../src/quota/types.js';

const base: ScopeLimits = {
  scope: 'key',
  id: 'k',
  maxConcurrency: 0,
  qps: 0,
  qpsBurst: 1,
  tokensPerMinute: 0,
  tokensPerDay: 0,
  costPerDay: 0,
  costPerMonth: 0,
};
const req = (scopes: ScopeLimits[], i: number, tokens = 0, cost = 0) => ({
  tag: 'app',
  scopes,
  leaseId: 'l' + i,
  leaseTtlMs: 1000,
  tokens,
  cost,
  queue: 'k',
});

describe('in-process quota backend', () => {
  it('GCRA: 10 rps admits 1 + burst at once, then one per 100 ms', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const q = new MemoryQuota(clock);
    const s = [{ ...base, qps: 10, qpsBurst: 1 }];
    let ok = 0;
    for (let t = 0; t < 3000; t += 10) {
      clock.set(1_700_000_000_000 + t);
      if ((await q.admit(req(s, t))).ok) ok++;
    }
    expect(ok).toBe(31); // 30 paced + 1 of tolerance
    const r = await q.admit(req(s, 9999));
    expect(r.ok).toBe(false);
    if (!r.ok && !r.queued) expect(r.limit).toBe('qps');
  });

  it('concurrency leases expire by TTL and settle releases them exactly once', async () => {
    const clock = new ManualClock();
    const q = new MemoryQuota(clock);
    const s = [{ ...base, maxConcurrency: 2 }];
    const a = await q.admit(req(s, 1));
    const b = await q.admit(req(s, 2));
    expect(a.ok && b.ok).toBe(true);
    expect((await q.admit(req(s, 3))).ok).toBe(false);
    if (a.ok) {
      await q.settle(a.reservation, 0, 0);
      await q.settle(a.reservation, 0, 0);
    }
    expect(await q.inFlight('app', s[0]!)).toBe(1);
    clock.advance(1001); // b's lease expires: its instance "died"
    expect(await q.inFlight('app', s[0]!)).toBe(0);
  });

  it('tokens: reserve the estimate, true up to actual usage in the same window', async () => {
    const clock = new ManualClock();
    const q = new MemoryQuota(clock);
    const s = [{ ...base, tokensPerDay: 100 }];
    const a = await q.admit(req(s, 1, 60));
    expect(a.ok).toBe(true);
    expect((await q.admit(req(s, 2, 60))).ok).toBe(false); // 60 + 60 > 100
    if (a.ok) await q.settle(a.reservation, 10, 0);
    expect((await q.usage('app', s[0]!)).tokensDay).toBe(10);
    expect((await q.admit(req(s, 3, 60))).ok).toBe(true);
  });

  it('a reservation never settled (its instance died) is refunded once its lease runs out', async () => {
    const clock = new ManualClock();
    const q = new MemoryQuota(clock);
    const s = [{ ...base, tokensPerDay: 100 }];
    expect((await q.admit({ ...req(s, 1, 80), leaseTtlMs: 500 })).ok).toBe(true);
    expect((await q.admit(req(s, 2, 30))).ok).toBe(false);
    clock.advance(501);
    expect((await q.admit(req(s, 3, 30))).ok).toBe(true); // the dead 80 came back
    expect((await q.usage('app', s[0]!)).tokensDay).toBe(30);
  });

  it('month index follows the civil calendar', () => {
    const day = (iso: string) => Math.floor(Date.parse(iso) / 86_400_000);
    expect(monthIndex(day('1970-01-31T00:00:00Z'))).toBe(0);
    expect(monthIndex(day('1970-02-01T00:00:00Z'))).toBe(1);
    expect(monthIndex(day('2024-02-29T12:00:00Z'))).toBe((2024 - 1970) * 12 + 1);
    expect(monthIndex(day('2026-12-31T23:59:59Z'))).toBe((2026 - 1970) * 12 + 11);
  });
});
