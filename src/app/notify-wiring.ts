/**
 * Wires operator notifications (observability/notify.ts) to their sources: breaker transitions, credential
 * take-outs, cost budgets (quota/budget-watch.ts), the journal writer's health and the dependency probe.
 * Cross-instance dedup goes through Redis when there is one (SET NX PX for event ids, SET ... GET for
 * states), else in process. Targets are read from the database at start, on a `notify` pub/sub message
 * (an admin write anywhere) and every minute (a lost message heals).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { BreakerRegistry } from '../breaker/breaker.js';
import type { ChannelHealthRegistry } from '../breaker/health.js';
import type { Billing } from '../billing/service.js';
import { NotifyTargets } from '../config/notify-targets.js';
import { RedisCoordinator } from '../coord/redis.js';
import type { Coordinator } from '../coord/types.js';
import type { OutboundPolicy } from '../lib/outbound.js';
import type { Metrics } from '../observability/metrics.js';
import { Notifier, type NotifierOptions } from '../observability/notify.js';
import {
  breakerEvent,
  budgetEvent,
  credentialEvent,
  dependencyEvent,
  journalEvent,
} from '../observability/notify-events.js';
import { BudgetWatch } from '../quota/budget-watch.js';
import type { QuotaBackend, Reservation } from '../quota/types.js';
import type { Db } from '../store/db.js';

export const TOPIC_NOTIFY = 'notify';

/** The notifier's options, and how often a scope's cost windows are read at most (default 5 s). */
export interface NotifyWiringOptions extends Partial<NotifierOptions> {
  budgetCheckMs?: number;
}

export interface Notifications {
  notifier: Notifier;
  targets: NotifyTargets;
  outbound: OutboundPolicy;
  /** Admission events: a settled lease, a refusal (budget-watch.ts). */
  settled(r: readonly Reservation[]): void;
  refused(limit: string, scope?: string): void;
  /** The quota backend whose windows the budget watch reads (created after this). */
  watchBudgets(backend: QuotaBackend): void;
  /** The dependency probe's result (every 2 s). */
  dependencies(dbUp: boolean, redisUp: boolean | null): void;
  /** Tells every instance to read the targets again. */
  changed(): Promise<void>;
  close(): Promise<void>;
}

export async function startNotifications(o: {
  db: Db;
  coord: Coordinator;
  redisPrefix: string;
  breakers: BreakerRegistry;
  health: ChannelHealthRegistry;
  metrics: Metrics;
  log: Logger;
  outbound: OutboundPolicy;
  options?: NotifyWiringOptions;
}): Promise<Notifications> {
  const { coord, metrics, log } = o;
  const targets = new NotifyTargets(o.db);
  const redis = coord instanceof RedisCoordinator ? coord.cmd : null;
  const key = (k: string) => `${o.redisPrefix}notify:${k}`;
  const notifier = new Notifier(
    {
      targets: () => targets.load(),
      ...(redis
        ? {
            claim: async (k: string, ttl: number) => (await redis.set(key(k), '1', 'PX', ttl, 'NX')) === 'OK',
            // SET ... GET (Redis 6.2+): the state before, atomically with the write.
            swap: async (k: string, v: string, ttl: number) =>
              (await redis.call('SET', key(k), v, 'PX', String(ttl), 'GET')) as string | null,
          }
        : {}),
      policy: o.outbound,
      log,
      onResult: (r) => metrics.notifications.labels(r).inc(),
      instance: `${hostname()}-${process.pid}`,
    },
    o.options,
  );
  await notifier.reload();
  const unsub = await coord.subscribe(TOPIC_NOTIFY, () => void notifier.reload());
  const refresh = setInterval(() => void notifier.reload(), 60_000);
  refresh.unref();

  // Registered after the gateway's first breaker sync, so states read at start are not news.
  o.breakers.onTransition((channel, from, to) => {
    const ev = breakerEvent(channel, from, to);
    if (ev) notifier.emit(ev);
  });
  o.health.onCredentialOut((channel, status, prev) => notifier.emit(credentialEvent(channel, status, prev)));
  metrics.credentialSource = function* () {
    for (const [channel, h] of o.health.all()) if (h.credential !== 'ok') yield channel;
  };

  let budgets: BudgetWatch | null = null;
  const crossed = (c: Parameters<typeof budgetEvent>[0]) => {
    metrics.budgetCrossed.labels(c.scope, c.window, String(c.threshold)).inc();
    log.warn(
      {
        scope: c.scope,
        scopeId: c.id,
        window: c.window,
        threshold: c.threshold,
        used: c.used,
        limit: c.limit,
      },
      'cost budget threshold crossed',
    );
    notifier.emit(budgetEvent(c));
  };

  return {
    notifier,
    targets,
    outbound: o.outbound,
    settled: (r) => budgets?.settled(r),
    refused: (limit, scope) => {
      if (scope) budgets?.refused(limit, scope);
    },
    watchBudgets: (backend) => {
      budgets = new BudgetWatch(backend, crossed, o.options?.budgetCheckMs);
    },
    dependencies: (dbUp, redisUp) => {
      notifier.observe('dependency:db', dbUp ? 'up' : 'down', 'up', () => dependencyEvent('db', dbUp));
      if (redisUp !== null)
        notifier.observe('dependency:redis', redisUp ? 'up' : 'down', 'up', () =>
          dependencyEvent('redis', redisUp),
        );
    },
    changed: async () => {
      await notifier.reload(); // this instance at once, whatever pub/sub does
      await coord.publish(TOPIC_NOTIFY, '1').catch(() => {});
    },
    close: async () => {
      clearInterval(refresh);
      notifier.stop();
      await unsub().catch(() => {});
    },
  };
}

/** The journal writer's health, polled (Billing has no callback for "stuck"): every 5 s. */
export function watchJournal(
  n: Notifications,
  billing: Pick<Billing, 'stuck' | 'oldestUnjournaledMs'>,
  everyMs = 5_000,
): () => void {
  const t = setInterval(() => {
    const stuck = billing.stuck();
    const oldest = Math.round(billing.oldestUnjournaledMs() / 1000);
    n.notifier.observe('journal', stuck ? 'stuck' : 'ok', 'ok', () => journalEvent(stuck, oldest));
  }, everyMs);
  t.unref();
  return () => clearInterval(t);
}
