/**
 * Cost budgets crossing 80 % and 100 %: after a request that reserved against a scope with a cost_day or
 * cost_month limit settles, that scope's window usage is read (one backend call, off the request path,
 * at most once per `intervalMs` per scope) and compared with its limits; a refusal for a spent budget
 * says 100 % at once. Each (scope, window, threshold, period) is reported once per instance; the notifier
 * dedups across instances by the same id, and the day/month index in it makes the next period report
 * again.
 *
 * Bounded: only scopes with a cost limit are read, the maps are pruned, and the metric this feeds has no
 * scope id (anima_budget_threshold_crossed_total{scope,window,threshold}).
 */
import type { QuotaBackend, Reservation, ScopeLimits } from './types.js';

export interface BudgetCrossing {
  scope: ScopeLimits['scope'];
  id: string;
  window: 'day' | 'month';
  threshold: 80 | 100;
  /** Micro-units used in the window (null: known only from a refusal). */
  used: number | null;
  limit: number | null;
  /** UTC day index, or year*12+month: part of the event's id. */
  period: number;
}

const MAX_TRACKED = 10_000;

export function periodOf(window: 'day' | 'month', now: number): number {
  if (window === 'day') return Math.floor(now / 86_400_000);
  const d = new Date(now);
  return d.getUTCFullYear() * 12 + d.getUTCMonth();
}

export class BudgetWatch {
  private readonly lastCheck = new Map<string, number>();
  /** `scope:id:window:period` -> the highest threshold reported. */
  private readonly reported = new Map<string, number>();

  constructor(
    private readonly backend: QuotaBackend,
    private readonly onCrossed: (c: BudgetCrossing) => void,
    private readonly intervalMs = 5_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** After a settlement: the reservations' scopes with a cost limit, read again if not read lately. */
  settled(reservations: readonly Reservation[]): void {
    for (const r of reservations)
      for (const s of r.scopes) {
        if (s.costPerDay <= 0 && s.costPerMonth <= 0) continue;
        const k = `${r.tag}\u0000${s.scope}:${s.id}`;
        const t = this.now();
        if (t - (this.lastCheck.get(k) ?? -Infinity) < this.intervalMs) continue;
        if (this.lastCheck.size >= MAX_TRACKED) this.lastCheck.clear();
        this.lastCheck.set(k, t);
        void this.check(r.tag, s).catch(() => {
          // The backend is unreachable: the next settlement after intervalMs reads again.
        });
      }
  }

  /** A request refused for a spent budget (`scope` as the backend names it: `app:app_1`). */
  refused(limit: string, scope: string): void {
    if (limit !== 'cost_day' && limit !== 'cost_month') return;
    const colon = scope.indexOf(':');
    const kind = scope.slice(0, colon) as ScopeLimits['scope'];
    if (kind !== 'key' && kind !== 'app' && kind !== 'token_group') return;
    this.report(kind, scope.slice(colon + 1), limit === 'cost_day' ? 'day' : 'month', 100, null, null);
  }

  async check(tag: string, s: ScopeLimits): Promise<void> {
    const u = await this.backend.usage(tag, s);
    for (const [window, used, limit] of [
      ['day', u.costDay, s.costPerDay],
      ['month', u.costMonth, s.costPerMonth],
    ] as const) {
      if (limit <= 0) continue;
      // Integer micro-units: used*100 >= limit*80 avoids a float ratio.
      const threshold = used * 100 >= limit * 100 ? 100 : used * 100 >= limit * 80 ? 80 : 0;
      if (threshold) this.report(s.scope, s.id, window, threshold, used, limit);
    }
  }

  private report(
    scope: ScopeLimits['scope'],
    id: string,
    window: 'day' | 'month',
    threshold: 80 | 100,
    used: number | null,
    limit: number | null,
  ): void {
    const period = periodOf(window, this.now());
    const k = `${scope}:${id}:${window}:${period}`;
    if ((this.reported.get(k) ?? 0) >= threshold) return;
    if (this.reported.size >= MAX_TRACKED) {
      // Old periods first; if all are current (10,000 budgets crossing today), start over (a repeat at worst).
      for (const key of this.reported.keys())
        if (
          !key.endsWith(`:${periodOf('day', this.now())}`) &&
          !key.endsWith(`:${periodOf('month', this.now())}`)
        )
          this.reported.delete(key);
      if (this.reported.size >= MAX_TRACKED) this.reported.clear();
    }
    this.reported.set(k, threshold);
    this.onCrossed({ scope, id, window, threshold, used, limit, period });
  }
}
