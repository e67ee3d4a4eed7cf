/**
 * The operator events (observability/notify.ts), built from what their sources report. Each has an id
 * every instance computes alike for the same happening, which is what dedups it across instances.
 */
import type { SharedBreakerState, BreakerStateName, ChannelHealth } from '../coord/types.js';
import type { BudgetCrossing } from '../quota/budget-watch.js';
import type { NotifyEvent } from './notify-format.js';

/**
 * Opened (from closed, or forced open by an operator) and closed again (from open, half-open or forced
 * open). Half-open and a failed probe's re-open are not news: the channel was already out. The id is the
 * breaker's generation, which every instance shares.
 */
export function breakerEvent(
  channel: string,
  from: BreakerStateName,
  to: SharedBreakerState,
): NotifyEvent | null {
  const opened =
    (to.state === 'open' && from === 'closed') || (to.state === 'forced_open' && from !== 'forced_open');
  const closed = to.state === 'closed' && from !== 'closed';
  if (!opened && !closed) return null;
  return {
    id: `breaker:${channel}:${to.gen}`,
    kind: opened ? 'breaker.opened' : 'breaker.closed',
    severity: opened ? 'warning' : 'info',
    at: to.since || Date.now(),
    summary: opened
      ? `channel ${channel} taken out of rotation: breaker ${to.state === 'forced_open' ? 'forced open' : 'open'} (${to.reason})`
      : `channel ${channel} back in rotation: breaker closed (${to.reason})`,
    subject: channel,
    details: {
      channel,
      from,
      to: to.state,
      reason: to.reason,
      generation: to.gen,
      open_until: to.state === 'open' ? new Date(to.openUntil).toISOString() : null,
    },
  };
}

/** `prev.updatedAt` is the health state replaced, the same on every instance: a reset makes a new id. */
export function credentialEvent(
  channel: string,
  status: 'exhausted' | 'invalid',
  prev: ChannelHealth,
): NotifyEvent {
  return {
    id: `credential:${channel}:${status}:${prev.updatedAt}`,
    kind: 'credential.out',
    severity: 'critical',
    at: Date.now(),
    summary: `channel ${channel}: credential taken out of rotation (${status === 'invalid' ? 'rejected by the upstream: 401/403' : 'upstream quota exhausted'}) until an operator resets its health`,
    subject: channel,
    details: { channel, status },
  };
}

export function budgetEvent(c: BudgetCrossing): NotifyEvent {
  const pct = c.used !== null && c.limit ? Math.floor((c.used * 100) / c.limit) : c.threshold;
  return {
    id: `budget:${c.scope}:${c.id}:${c.window}:${c.threshold}:${c.period}`,
    kind: c.threshold >= 100 ? 'budget.exhausted' : 'budget.warning',
    severity: c.threshold >= 100 ? 'critical' : 'warning',
    at: Date.now(),
    summary:
      c.threshold >= 100
        ? `${c.scope} ${c.id}: cost budget per ${c.window} spent; its requests are refused until the ${c.window} turns over`
        : `${c.scope} ${c.id}: ${pct} % of its cost budget per ${c.window} used`,
    subject: `${c.scope}:${c.id}`,
    details: {
      scope: c.scope,
      scope_id: c.id,
      window: c.window,
      threshold_percent: c.threshold,
      used_micros: c.used,
      limit_micros: c.limit,
    },
  };
}

export function dependencyEvent(dependency: 'db' | 'redis', up: boolean): NotifyEvent {
  const name = dependency === 'db' ? 'PostgreSQL' : 'Redis';
  return {
    id: `dependency:${dependency}:${up ? 'up' : 'down'}:${Date.now()}`,
    kind: up ? 'dependency.recovered' : 'dependency.down',
    severity: up ? 'info' : 'critical',
    at: Date.now(),
    summary: up
      ? `${name} answers again: degraded mode over`
      : `${name} does not answer: the gateway runs degraded (README, Degraded modes)`,
    subject: dependency,
    details: { dependency },
  };
}

export function journalEvent(stuck: boolean, oldestSeconds: number): NotifyEvent {
  return {
    id: `journal:${stuck ? 'stuck' : 'ok'}:${Date.now()}`,
    kind: stuck ? 'journal.stuck' : 'journal.recovered',
    severity: stuck ? 'critical' : 'info',
    at: Date.now(),
    summary: stuck
      ? `billing journals are not being written (oldest settled request waiting ${oldestSeconds} s): see /api/admin/v1/billing/status`
      : 'billing journals are being written again',
    subject: 'journal',
    details: { oldest_unjournaled_seconds: oldestSeconds },
  };
}

export function testEvent(targetId: string, by: string): NotifyEvent {
  return {
    id: `test:${targetId}:${Date.now()}`,
    kind: 'test',
    severity: 'info',
    at: Date.now(),
    summary: `test notification (sent by ${by})`,
    subject: 'test',
    details: { target: targetId, by },
  };
}
