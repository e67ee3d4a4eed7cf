/**
 * Budget thresholds (quota/budget-watch.ts): a scope's cost windows read after settlements, at most once
 * per interval per scope; 80 % and 100 % of cost_day / cost_month reported once per period, the next
 * period again; a refusal for a spent budget says 100 % at once; scopes without a cost limit are never read.
 */
import { describe, expect, it } from 'vitest';
import { BudgetWatch, type BudgetCrossing, periodOf } from '../../src/quota/budget-watch.js';
import type { QuotaBackend, Reservation, ScopeLimits } from '../../src/quota/types.js';
import { budgetEvent } from '../../src/observability/notify-events.js';
import { waitFor } from '../wait.js';

const scope = (over: Partial<ScopeLimits> = {}): ScopeLimits => ({
  scope: 'app',
  id: 'app_1',
  maxConcurrency: 0,
  qps: 0,
  qpsBurst: 0,
  tokensPerMinute: 0,
  tokensPerDay: 0,
  costPerDay: 1_000_000,
  costPerMonth: 0,
  ...over,
});
const reservation = (scopes: ScopeLimits[]): Reservation =>
  ({
    tag: 'app_1',
    scopes,
    leaseId: 'l',
    queue: 'q',
    tokens: 0,
    cost: 0,
    minute: 0,
    day: 0,
    month: 0,
    at: 0,
  }) as Reservation;

function setup(intervalMs = 0) {
  let costDay = 0;
  let costMonth = 0;
  let reads = 0;
  let now = Date.UTC(2026, 11, 2, 12);
  const backend = {
    usage: async () => {
      reads++;
      return { tokensMinute: 0, tokensDay: 0, costDay, costMonth };
    },
  } as unknown as QuotaBackend;
  const seen: BudgetCrossing[] = [];
  const w = new BudgetWatch(
    backend,
    (c) => seen.push(c),
    intervalMs,
    () => now,
  );
  return {
    w,
    seen,
    reads: () => reads,
    set: (d: number, m = 0) => {
      costDay = d;
      costMonth = m;
    },
    advance: (ms: number) => (now += ms),
  };
}

describe('budget watch', () => {
  it('80 % then 100 % of a daily budget, each once; the next day again', async () => {
    const t = setup();
    const r = [reservation([scope()])];
    t.set(799_999);
    t.w.settled(r);
    await waitFor(() => t.reads() === 1);
    expect(t.seen).toEqual([]);
    t.set(800_000);
    t.w.settled(r);
    await waitFor(() => t.seen.length === 1);
    t.w.settled(r);
    await waitFor(() => t.reads() === 3);
    expect(t.seen.map((c) => c.threshold)).toEqual([80]);
    t.set(1_000_000);
    t.w.settled(r);
    await waitFor(() => t.seen.length === 2);
    expect(t.seen[1]).toMatchObject({
      scope: 'app',
      id: 'app_1',
      window: 'day',
      threshold: 100,
      used: 1_000_000,
      limit: 1_000_000,
    });
    t.advance(86_400_000);
    t.set(900_000);
    t.w.settled(r);
    await waitFor(() => t.seen.length === 3);
    expect(t.seen[2]!.threshold).toBe(80);
    expect(t.seen[2]!.period).toBe(t.seen[0]!.period + 1);
    // The notification ids differ by threshold and period: each is its own event.
    expect(new Set(t.seen.map((c) => budgetEvent(c).id)).size).toBe(3);
    expect(budgetEvent(t.seen[1]!).kind).toBe('budget.exhausted');
    expect(budgetEvent(t.seen[0]!).kind).toBe('budget.warning');
  });

  it('a jump straight past 100 % reports 100 only; monthly budgets are watched apart', async () => {
    const t = setup();
    t.set(2_000_000, 900_000);
    t.w.settled([reservation([scope({ costPerMonth: 1_000_000 })])]);
    await waitFor(() => t.seen.length === 2);
    expect(t.seen.map((c) => `${c.window} ${c.threshold}`).sort()).toEqual(['day 100', 'month 80']);
    expect(t.seen.find((c) => c.window === 'month')!.period).toBe(periodOf('month', Date.UTC(2026, 11, 2)));
  });

  it('reads a scope at most once per interval, and never one without a cost limit', async () => {
    const t = setup(5_000);
    const r = [reservation([scope(), scope({ scope: 'key', id: 'k1', costPerDay: 0, costPerMonth: 0 })])];
    for (let i = 0; i < 50; i++) t.w.settled(r);
    await waitFor(() => t.reads() === 1);
    t.advance(5_000);
    t.w.settled(r);
    await waitFor(() => t.reads() === 2);
    expect(t.reads()).toBe(2);
  });

  it('a refusal for a spent budget reports 100 % at once (once); other limits are not budgets', () => {
    const t = setup();
    t.w.refused('cost_month', 'token_group:tg1');
    t.w.refused('cost_month', 'token_group:tg1');
    t.w.refused('qps', 'app:app_1');
    t.w.refused('tokens_day', 'app:app_1');
    expect(t.seen).toEqual([
      expect.objectContaining({
        scope: 'token_group',
        id: 'tg1',
        window: 'month',
        threshold: 100,
        used: null,
      }),
    ]);
    expect(t.reads()).toBe(0);
  });
});
