/**
 * The composition root: the only module that knows every other. Builds a gateway from Settings, starts
 * it, and stops it in the reverse order.
 */
import { PROVIDER_KINDS } from '../providers/registry.js';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type pino from 'pino';
import { BreakerRegistry } from '../breaker/breaker.js';
import { ChannelHealthRegistry } from '../breaker/health.js';
import { type Invalidation, ConfigAdmin } from '../config/admin.js';
import { AdminTokens } from '../config/admin-tokens.js';
import { setSecretKey } from '../config/secrets.js';
import { answerManagementOverIpc, startManagementListener } from './management.js';
import {
  StartupRefused,
  mainListenerAccess,
  managementExposure,
  managementListenerAccess,
  secretsAtRest,
} from './security.js';
import { ConfigCache } from '../config/cache.js';
import { MemoryCoordinator } from '../coord/memory.js';
import { RedisCoordinator } from '../coord/redis.js';
import { parseClusterNodes, parseRedisUrl } from '../coord/redis-url.js';
import type { ChannelHealth, Coordinator, SharedBreakerState, Unsubscribe } from '../coord/types.js';
import { buildServer } from '../http/server.js';
import type { Readiness } from '../http/management.js';
import { ResponseCache } from '../relay/response-cache.js';
import { type Clock, systemClock } from '../lib/clock.js';
import { createLogger } from '../observability/log.js';
import { Metrics } from '../observability/metrics.js';
import { Tracing } from '../observability/tracing.js';
import { Transport } from '../providers/transport.js';
import { type OutboundResolver, OutboundPolicy, setOutboundPolicy } from '../lib/outbound.js';
import { Relay } from '../relay/relay.js';
import { testChannel } from '../relay/channel-test.js';
import { ChannelStats, channelTestCounter } from '../observability/channel-stats.js';
import { ClusterStats } from '../observability/cluster-stats.js';
import { redisStatsShare } from '../coord/stats-share.js';
import { Admission } from '../quota/admission.js';
import { Governance } from '../governance/pipeline.js';
import { taskRunner } from '../tasks/runner.js';
import { TaskStore } from '../tasks/store.js';
import { TaskWorker } from '../tasks/worker.js';
import { WebhookDeliverer } from '../tasks/webhooks.js';
import { MediaRunner } from '../tasks/media.js';
import type { QuotaBackend } from '../quota/types.js';
import { MemoryQuota } from '../quota/memory.js';
import { RedisQuota } from '../quota/redis.js';
import { SlicedQuota } from '../quota/slices.js';
import { LedgerSeed } from '../quota/seed.js';
import { type DbHandle, openDatabase } from '../store/db.js';
import { hostname } from 'node:os';
import {
  REQUEST_LOG_DEFAULTS,
  RequestLog,
  type RequestQuery,
  queryRequests,
  summarizeRequests,
} from '../observability/request-log.js';
import { randomBytes } from 'node:crypto';
import { Ledger } from '../billing/ledger.js';
import { MemoryBilling } from '../billing/memory.js';
import { RedisBilling } from '../billing/redis.js';
import { Billing } from '../billing/service.js';
import { JournalWriter } from '../billing/writer.js';
import type { Settings } from './settings.js';
import { type NotifyWiringOptions, startNotifications, watchJournal } from './notify-wiring.js';
import type { Notifier } from '../observability/notify.js';

export const TOPIC_CONFIG = 'config';
export const TOPIC_BREAKER = 'breaker';
export const TOPIC_HEALTH = 'health';
export const TOPIC_TASKS = 'tasks';

export interface Gateway {
  readonly url: string;
  readonly port: number;
  readonly settings: Settings;
  readonly log: Logger;
  readonly dbh: DbHandle;
  readonly coord: Coordinator;
  readonly config: ConfigCache;
  readonly breakers: BreakerRegistry;
  readonly health: ChannelHealthRegistry;
  readonly metrics: Metrics;
  readonly quota: QuotaBackend;
  /** The request log's writer, null when it is off (ANIMA_REQUEST_LOG=0). */
  readonly requestLog: RequestLog | null;
  readonly server: FastifyInstance;
  readonly admin: ConfigAdmin;
  readonly billing: Billing | null;
  /** Operator notifications (webhook targets): tests wait on its deliveries. */
  readonly notifier: Notifier;
  /** OpenTelemetry traces, null when off (the default). */
  readonly tracing: Tracing | null;
  /** The console's traffic and per-channel figures, shared with the other instances through Redis. */
  readonly clusterStats: ClusterStats;
  /** The management listener's URL (ANIMA_MANAGEMENT_PORT), null when there is none in this process. */
  readonly managementUrl: string | null;
  /** Tells every instance (this one included) to reload a config table. Call after a direct DB write. */
  publishConfigChange(table?: string): Promise<void>;
  /** Test seam: drop incoming invalidation events, as if pub/sub delivery were lost. */
  pauseInvalidations(paused: boolean): void;
  close(drainMs?: number): Promise<void>;
}

export interface GatewayOptions {
  clock?: Clock;
  logDestination?: pino.DestinationStream;
  /** Reuse an open database (tests, the demo). */
  dbh?: DbHandle;
  defaultMetrics?: boolean;
  /** A `serve --workers` worker: the primary serves the management port and asks this process over IPC. */
  managementOverIpc?: boolean;
  /** Test seam: how outbound host names resolve (default: the system resolver). */
  outboundResolver?: OutboundResolver;
  /** Test seam: operator notification delivery (retries, backoff, rate window). */
  notify?: NotifyWiringOptions;
}

export async function startGateway(settings: Settings, opts: GatewayOptions = {}): Promise<Gateway> {
  // Refused before anything is opened (production mode without a key; see app/security.ts).
  const atRest = secretsAtRest(settings);
  if (atRest.refuse) throw new StartupRefused(atRest.refuse);
  if (settings.redisClusterNodes?.length) parseClusterNodes(settings.redisClusterNodes);
  else if (settings.redisUrl) parseRedisUrl(settings.redisUrl); // a form the clients can't follow: refused here
  let invalidationsPaused = false;
  setSecretKey(settings.secretKey, settings.secretKeyPrevious);
  // Every outbound URL (channels, webhooks, callbacks, result downloads) answers to one policy (SSRF).
  const outbound = new OutboundPolicy({
    allow: settings.outboundAllow,
    ...(opts.outboundResolver ? { resolve: opts.outboundResolver } : {}),
  });
  setOutboundPolicy(outbound);
  const clock = opts.clock ?? systemClock;
  const log = createLogger(settings.logLevel, opts.logDestination, settings.logFormat);
  if (atRest.warn) {
    // Every start, in the log (for alerting) and on stderr (for whoever starts it by hand).
    log.error({ alert: true, secretsAtRest: 'plaintext' }, atRest.warn);
    process.stderr.write(`anima: WARNING: ${atRest.warn}\n`);
  }
  const exposure = managementExposure(settings);
  if (exposure) log.warn(exposure);
  const dbh =
    opts.dbh ??
    (await openDatabase({
      databaseUrl: settings.databaseUrl,
      dataDir: settings.dataDir,
      poolSize: settings.dbPoolSize,
    }));
  const coord: Coordinator =
    settings.redisUrl || settings.redisClusterNodes?.length
      ? new RedisCoordinator({
          url: settings.redisUrl ?? '',
          prefix: settings.redisPrefix,
          clusterNodes: settings.redisClusterNodes,
        })
      : new MemoryCoordinator(clock);
  if (coord instanceof RedisCoordinator) await coord.ready();
  const metrics = new Metrics({
    defaultMetrics: opts.defaultMetrics ?? true,
    // The operator's cardinality cap on the latency histogram (README "Operations").
    appLabel: settings.metricsAppLabel !== false,
  });

  const config = new ConfigCache(dbh.db, clock, log, {
    refreshMs: settings.configRefreshMs,
    l2: coord,
    defaultSaleMarkup: settings.defaultSaleMarkup,
  });
  config.onReload = (table, source) => {
    metrics.configReloads.labels(table, source).inc();
    if (table === 'setting') metrics.killSwitch.set(config.killSwitch() ? 1 : 0);
  };
  await config.load();
  config.start();
  const tokens = new AdminTokens(dbh.db);
  await tokens.bootstrap(settings.adminToken);
  await tokens.load();
  const publishInvalidation = async (inv: Invalidation) => {
    await coord.publish(TOPIC_CONFIG, JSON.stringify({ ...inv, at: Date.now() }));
  };
  /** Reloads what an invalidation names on this instance (admin tokens live beside the config). */
  const reloadLocal = async (table: Invalidation['table']) => {
    if (table === 'admin_token' || table === 'all') await tokens.load().catch(() => {});
    if (table !== 'admin_token') await config.reload(table);
  };
  const admin = new ConfigAdmin(dbh.db, publishInvalidation, () => clock.now(), {
    refreshMs: settings.configRefreshMs,
    reloadLocal,
    log,
    outbound,
    providerKinds: PROVIDER_KINDS,
  });
  /** An invalidation names a table: reload just that one. */
  const onInvalidation = async (m: string) => {
    let inv: Invalidation & { at?: number };
    try {
      inv = JSON.parse(m) as Invalidation & { at?: number };
    } catch {
      inv = { table: 'all' };
    }
    const table = inv.table ?? 'all';
    metrics.invalidations.labels(table).inc();
    await reloadLocal(table);
    if (typeof inv.at === 'number')
      metrics.invalidationDelay.labels(table).observe(Math.max(0, Date.now() - inv.at) / 1000);
  };
  const refreshTokens = setInterval(() => void tokens.load().catch(() => {}), settings.configRefreshMs);
  refreshTokens.unref();

  const publish = (topic: string, msg: unknown) =>
    void coord.publish(topic, JSON.stringify(msg)).catch(() => {});
  const breakers = new BreakerRegistry(coord.breakers, clock, (channel, state) =>
    publish(TOPIC_BREAKER, { channel, state }),
  );
  const health = new ChannelHealthRegistry(coord.breakers, clock, (channel, h) =>
    publish(TOPIC_HEALTH, { channel, h }),
  );
  // Every configured channel, read at scrape time: in step with config reloads, closed until seen otherwise.
  metrics.breakerSource = () => config.channelCodes().map((c) => [c, breakers.state(c).state] as const);
  breakers.onTransition((channel, from, to) => {
    metrics.breaker(channel, to);
    log.warn({ channel, from, to: to.state, reason: to.reason, gen: to.gen }, 'breaker transition');
  });

  const unsubs = await Promise.all([
    coord.subscribe(TOPIC_CONFIG, (m) => void (invalidationsPaused ? undefined : onInvalidation(m))),
    coord.subscribe(TOPIC_BREAKER, (m) => {
      const { channel, state } = JSON.parse(m) as { channel: string; state: SharedBreakerState };
      breakers.applyRemote(channel, state);
    }),
    coord.subscribe(TOPIC_HEALTH, (m) => {
      const { channel, h } = JSON.parse(m) as { channel: string; h: ChannelHealth };
      health.applyRemote(channel, h);
    }),
  ]);
  const sync = async () => {
    try {
      await Promise.all([breakers.sync(), health.sync()]);
    } catch {
      // Backend unreachable: keep the last known states; the next sync heals.
    }
  };
  await sync();
  // Operator notifications (webhooks): breaker, credential, budget, journal and dependency events.
  const notifications = await startNotifications({
    db: dbh.db,
    coord,
    redisPrefix: settings.redisPrefix,
    breakers,
    health,
    metrics,
    log,
    outbound,
    ...(opts.notify ? { options: opts.notify } : {}),
  });
  // Redis forgot: write back the breaker and channel-health states this instance knows (newer ones win, so
  // every instance doing it at once converges), then read what the others wrote.
  coord.onDataLoss((reason) => {
    metrics.redisDataLoss.labels(reason).inc();
    log.error({ reason }, 'Redis lost its data (or is another server now): rebuilding the state kept there');
    // Invalidations published while Redis was away went nowhere: reload config from the database now
    // rather than at the next refresh (this also refills the L2 that vanished).
    void config.reload('all').catch(() => {});
    void tokens.load().catch(() => {});
    void coord.breakers
      .restore(breakers.states(), health.all())
      .then(sync)
      .catch((e: unknown) =>
        log.warn(
          { err: { message: String((e as Error)?.message) } },
          'breaker state rebuild failed; the next sync retries',
        ),
      );
  });
  const syncTimer = setInterval(() => void sync(), settings.breakerSyncMs);
  syncTimer.unref();

  // OpenTelemetry traces, off unless the OTEL_* settings ask (observability/tracing.ts).
  const tracing = settings.tracing ? new Tracing(settings.tracing, { log }) : null;
  if (settings.tracing) {
    const t = settings.tracing;
    // Never the exporter's headers: they often carry the collector's credential.
    log.info(
      { url: t.url, protocol: t.protocol, sampler: t.samplerName, service: t.serviceName },
      'tracing on: spans exported over OTLP/HTTP',
    );
  }
  const transport = new Transport(outbound);
  // The console's figures: this instance's, published for the others when Redis is shared.
  const channelStats = new ChannelStats();
  const clusterStats = new ClusterStats(
    metrics.stats,
    channelStats,
    `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    coord instanceof RedisCoordinator ? redisStatsShare(coord.cmd, settings.redisPrefix) : null,
  );
  clusterStats.start();
  const channelTests = channelTestCounter(metrics.registry);
  const relay = new Relay({
    config,
    breakers,
    health,
    transport,
    clock,
    onAttempt: (ctx, ch, result, ms) => {
      metrics.attempt(ch.code, result === 'ok' ? 'ok' : result.kind, ms);
      channelStats.record(Date.now(), ch.code, result !== 'ok', ms);
      if (result !== 'ok' && result.credential) {
        log.error(
          { alert: true, channel: ch.code, kind: result.kind, status: result.status, reqId: ctx.id },
          'channel credential taken out of rotation',
        );
      }
    },
  });

  // Day/month windows start from the ledger wherever they start empty (Redis lost them, this process
  // restarted, a new scope): see quota/seed.ts.
  const quotaSeed = new LedgerSeed(dbh.db);
  const quotaRedis =
    coord instanceof RedisCoordinator
      ? new RedisQuota(coord.cmd, settings.redisPrefix, coord.tick, quotaSeed)
      : null;
  // Slices: keys far from their limits are admitted without a Redis call each (quota/slices.ts).
  const quotaBackend: QuotaBackend =
    quotaRedis && coord instanceof RedisCoordinator
      ? settings.quotaSlices !== false
        ? new SlicedQuota(quotaRedis, settings.redisPrefix, coord.tick, {
            leaseTtlMs: settings.leaseTtlMs,
            seeded: true,
          })
        : quotaRedis
      : new MemoryQuota(clock, quotaSeed);
  if (quotaBackend instanceof SlicedQuota) {
    const sq = quotaBackend;
    metrics.sliceSource = () => ({
      local: sq.stats.local,
      exact: sq.stats.remote,
      calls: sq.stats.sliceCalls,
      held: sq.held(),
    });
  }
  const admission = new Admission(
    quotaBackend,
    config,
    { leaseTtlMs: settings.leaseTtlMs },
    {
      onRejected: (limit, mode, scope) => {
        metrics.quotaRejections.labels(limit, mode).inc();
        notifications.refused(limit, scope);
      },
      onSettled: (r) => notifications.settled(r),
      onQueued: (mode) => metrics.queued.labels(mode).inc(),
      onWaited: (ms, outcome) => metrics.queueWait.labels(outcome).observe(ms / 1000),
      onDegraded: () => metrics.degradedAdmissions.inc(),
    },
    coord instanceof RedisCoordinator
      ? { backend: new MemoryQuota(clock), share: 1 / settings.instanceCount }
      : null,
  );
  notifications.watchBudgets(quotaBackend);
  // Redis forgot: this instance's in-flight leases and queued waiters go back, and every scope's windows
  // are seeded from the ledger again at its next admission.
  coord.onDataLoss(() => {
    void admission
      .rebuild()
      .catch((e: unknown) =>
        log.warn(
          { err: { message: String((e as Error)?.message) } },
          'quota state rebuild after Redis data loss failed in part',
        ),
      );
  });

  let billing: Billing | null = null;
  let unsubConfirm: Unsubscribe | null = null;
  /** Last known database health (probe every 2 s; the journal writer's commits say it sooner). */
  let dbKnownUp = true;
  const redisLive = () => !(coord instanceof RedisCoordinator) || coord.isReady();
  if (settings.billing) {
    const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    const backend =
      coord instanceof RedisCoordinator
        ? new RedisBilling(coord.cmd, settings.redisPrefix, consumer, settings.billingStaleMs, coord.tick)
        : new MemoryBilling(clock);
    const ledger = new Ledger(dbh.db);
    const writer = new JournalWriter(
      backend,
      ledger,
      log,
      { batch: settings.billingBatch, idleMs: 100, retryMs: 500, lingerMs: settings.billingLingerMs },
      {
        onCommitted: (n, ms) => {
          dbKnownUp = true;
          metrics.billingJournals.inc(n);
          metrics.billingCommit.observe(ms / 1000);
        },
        onFailed: (where) => {
          if (where === 'db') dbKnownUp = false;
          metrics.billingCommitFailures.inc();
        },
        onUncollected: (app, micros) => metrics.billingUncollected.labels(app).inc(Number(micros)),
        onWritten: (records) => billing?.written(records),
      },
    );
    billing = new Billing(
      backend,
      ledger,
      writer,
      dbh.db,
      log,
      {
        holdTtlMs: settings.billingHoldTtlMs,
        unconfirmedMax: settings.billingUnconfirmedMax,
        stuckAfterMs: settings.billingStuckAfterMs,
        queueDown: () => !redisLive(),
        ...(coord instanceof RedisCoordinator
          ? {
              self: consumer,
              tell: (who: string, ids: string[]) =>
                void coord.publish(`billing:written:${who}`, ids.join('\n')).catch(() => {}),
            }
          : {}),
      },
      {
        onRefused: (reason) => metrics.billingRefused.labels(reason).inc(),
        onUncollected: (app, micros) => metrics.billingUncollected.labels(app).inc(Number(micros)),
        onSpilled: () => metrics.billingSpilled.inc(),
        onResent: (n) => metrics.billingResent.inc(n),
        onSwept: (n, oldest) => {
          metrics.billingUnconfirmed.set(n);
          metrics.billingOldestUnjournaled.set(oldest);
        },
      },
    );
    writer.start();
    billing.start();
    // Redis lost its data: the streams' consumer groups are made again, and every record this instance
    // settled that the ledger doesn't have yet goes to Redis again (exactly once by the journals' keys).
    const b = billing;
    coord.onDataLoss(() => {
      if (backend instanceof RedisBilling) backend.forgetGroups();
      void b.resendUnconfirmed().catch(() => {});
    });
    // Other instances' writers say when they journaled this instance's records (see BillingOptions.tell).
    if (coord instanceof RedisCoordinator)
      unsubConfirm = await coord.subscribe(`billing:written:${consumer}`, (m) => b.confirmed(m.split('\n')));
  }

  const stopJournalWatch = billing ? watchJournal(notifications, billing) : () => {};

  // Settlements whose answer has gone out and whose Redis reply hasn't come back: a graceful stop waits for them.
  const settlements = new Set<Promise<void>>();
  const governance = new Governance({ config, admission, billing, metrics, log, settlements });
  const taskStore = new TaskStore(dbh.db);
  const onTaskState = (kind: string, state: string) => metrics.tasks.labels(kind, state).inc();
  const media = new MediaRunner({
    outbound,
    store: taskStore,
    config,
    breakers,
    health,
    governance,
    log,
    settings: {
      pollMs: settings.mediaPollMs,
      pollCapMs: settings.mediaPollCapMs,
      deadlineMs: settings.mediaDeadlineMs,
      callTimeoutMs: settings.mediaCallTimeoutMs,
    },
    onState: onTaskState,
  });
  const worker = new TaskWorker(
    taskStore,
    taskRunner({ config, governance, relay, now: () => clock.now() }),
    log,
    {
      pollMs: Math.min(settings.taskPollMs, Math.max(settings.mediaPollMs, 100)),
      leaseMs: settings.taskLeaseMs,
      concurrency: 16,
    },
    onTaskState,
    media,
  );
  // Capacity freed anywhere, or a task queued anywhere: every worker looks for work.
  void quotaBackend.onWake(() => worker.wake());
  const unsubTasks = await coord.subscribe(TOPIC_TASKS, () => worker.wake());
  worker.start();
  const webhooks = new WebhookDeliverer(
    dbh.db,
    (keyId) => config.keyById(keyId)?.webhookSecret ?? null,
    log,
    {
      pollMs: settings.taskPollMs,
      maxAttempts: 10,
      backoffMs: settings.webhookBackoffMs,
      timeoutMs: 5_000,
      outbound,
    },
    (result) => metrics.webhooks.labels(result).inc(),
  );
  webhooks.start();

  /**
   * Dependency health, probed every 2 s for metrics (a scrape never waits on it), on readiness, and told
   * at once by the journal writer when the database refuses a commit.
   */
  const probe = async () => {
    let dbUp = true;
    try {
      await dbh.db.selectFrom('app').select('id').limit(1).execute();
    } catch {
      dbUp = false;
    }
    dbKnownUp = dbUp;
    const redisUp = await coord.ping();
    metrics.dependencyUp.labels('db').set(dbUp ? 1 : 0);
    metrics.dependencyUp.labels(coord.kind === 'redis' ? 'redis' : 'coordination').set(redisUp ? 1 : 0);
    metrics.degraded.set(dbUp && redisUp ? 0 : 1);
    notifications.dependencies(dbUp, coord.kind === 'redis' ? redisUp : null);
    if (billing) {
      const queued = await billing.backend.backlog().catch(() => 0);
      metrics.billingBacklog.set(queued + billing.writer.spilledCount());
    }
    return { dbUp, redisUp };
  };
  await probe();
  const probeTimer = setInterval(() => void probe(), 2_000);
  probeTimer.unref();
  metrics.waitingSource = () => admission.waitingNow;
  config.onKeyLookup = (layer, result) => metrics.cacheLookups.labels(layer, result).inc();

  /** Readiness (the data-plane listener's, and the management listener's or the cluster primary's). */
  const readiness = async (): Promise<Readiness> => {
    const { dbUp, redisUp } = await probe();
    const components: Record<string, { status: string; details?: unknown }> = {
      db: { status: dbUp ? 'UP' : 'DOWN', details: { kind: dbh.kind } },
      coordination: { status: redisUp ? 'UP' : 'DOWN', details: { kind: coord.kind } },
      migrations: { status: 'UP', details: { applied: true } },
      config: { status: 'UP', details: { loadedAt: new Date(config.loadedAt).toISOString() } },
    };
    // Journals not being written is a degraded gateway even with both stores answering (a writer that
    // can't read its queue, say): readiness says so rather than UP.
    const billingStuck = billing?.stuck() ?? false;
    if (billing) {
      components.billing = {
        status: billingStuck ? 'STUCK' : 'UP',
        details: { oldestUnjournaledSeconds: Math.round(billing.oldestUnjournaledMs() / 1000) },
      };
    }
    return { up: dbUp || redisUp, degraded: !(dbUp && redisUp) || billingStuck, components };
  };

  // One row per request, written in batches off the request path (observability/request-log.ts).
  const requestLog = settings.requestLog
    ? new RequestLog(dbh.db, log, {
        ...REQUEST_LOG_DEFAULTS,
        retentionDays: settings.requestLogRetentionDays,
        instance: `${hostname()}-${process.pid}`,
      })
    : null;

  const server = buildServer({
    requestLog,
    governance,
    tracing,
    tasks: {
      store: taskStore,
      wake: () => void coord.publish(TOPIC_TASKS, '1').catch(() => worker.wake()),
      deadlineMs: settings.taskDeadlineMs,
      onQueued: (kind: string) => metrics.tasks.labels(kind, 'queued').inc(),
    },
    media: {
      config,
      store: taskStore,
      runner: media,
      governance,
      clock,
      wake: () => void coord.publish(TOPIC_TASKS, '1').catch(() => worker.wake()),
      onQueued: (kind: string) => metrics.tasks.labels(kind, 'queued').inc(),
      outbound,
    },
    admin: {
      admin,
      ...(requestLog
        ? {
            requests: {
              list: (q: RequestQuery) => queryRequests(dbh.db, q),
              summary: (q: Omit<RequestQuery, 'limit' | 'cursor'>) => summarizeRequests(dbh.db, q),
            },
          }
        : {}),
      tokens,
      config,
      breakers,
      health,
      ...(billing ? { billing } : {}),
      notifications: {
        targets: notifications.targets,
        notifier: notifications.notifier,
        outbound,
        changed: notifications.changed,
      },
      console: {
        stats: metrics.stats,
        tasks: {
          store: taskStore,
          afterCancel: (t) => media.afterCancel(t),
          wake: () => void coord.publish(TOPIC_TASKS, '1').catch(() => worker.wake()),
        },
        queues: { backend: quotaBackend, waitingHere: () => admission.waitingNow },
        cluster: clusterStats,
        testChannel: async (code, opts) => {
          const ch = config.channel(code);
          if (!ch) return null;
          const r = await testChannel(ch, config, transport, opts);
          channelTests.labels(code, r.ok ? 'ok' : (r.error?.code ?? 'failed')).inc();
          return r;
        },
        currency: settings.currency ?? 'USD',
      },
    },
    config,
    relay,
    clock,
    log,
    metrics,
    bodyLimit: settings.bodyLimit,
    uploadLimit: Math.max(settings.bodyLimit, 26 * 1024 * 1024),
    responseCache: new ResponseCache(coord),
    requestTimeoutMs: settings.requestTimeoutMs,
    bothDown: () => !dbKnownUp && !redisLive(),
    readiness,
    actuator: mainListenerAccess(settings, tokens),
  });
  // A deep accept queue: a burst of thousands of new connections (clients queueing in WAIT mode) must
  // not overflow it and get reset.
  await server.listen({ host: settings.host, port: settings.port, backlog: 4096 });
  const port = (server.server.address() as AddressInfo).port;
  const host = settings.host === '0.0.0.0' || settings.host === '::' ? '127.0.0.1' : settings.host;
  // The management listener (metrics, readiness details); a cluster worker leaves it to the primary.
  const scrape = async () => ({
    contentType: metrics.registry.contentType,
    text: await metrics.registry.metrics(),
  });
  let management: { url: string | null; close(): Promise<void> } | null = null;
  if (settings.managementPort !== undefined) {
    management = opts.managementOverIpc
      ? (() => {
          const off = answerManagementOverIpc({ registry: metrics.registry, readiness });
          return { url: null, close: async () => off() };
        })()
      : await startManagementListener(
          settings.managementHost ?? '127.0.0.1',
          settings.managementPort,
          { scrape, readiness },
          managementListenerAccess(settings, tokens),
          log,
        ).catch(async (e: unknown) => {
          await server.close(); // the data-plane port is already bound: let it go before failing the start
          throw e;
        });
  }

  let closed = false;
  return {
    url: `http://${host}:${port}`,
    port,
    settings,
    log,
    dbh,
    coord,
    config,
    breakers,
    health,
    metrics,
    quota: quotaBackend,
    requestLog,
    server,
    admin,
    billing,
    notifier: notifications.notifier,
    clusterStats,
    tracing,
    managementUrl: management?.url ?? null,
    publishConfigChange: async (table = 'all') =>
      publishInvalidation({ table: table as Invalidation['table'] }),
    pauseInvalidations: (paused: boolean) => {
      invalidationsPaused = paused;
    },
    /**
     * Graceful stop: no new connections or requests (new ones get 503 while closing), in-flight requests
     * and streams finish up to `drainMs`, then remaining connections are cut (their leases settle in the
     * handlers' finally blocks); the task worker hands back what it holds; then everything else closes.
     */
    async close(drainMs = settings.drainMs) {
      if (closed) return;
      closed = true;
      const stopWorker = worker.stop(drainMs);
      const cut = setTimeout(() => server.server.closeAllConnections(), drainMs);
      // Connections whose last response just ended go idle: close them as they do, not at keep-alive timeout.
      const idle = setInterval(() => server.server.closeIdleConnections(), 100);
      await server.close();
      clearTimeout(cut);
      await requestLog?.close(); // the last requests' rows
      clearInterval(idle);
      // Answers already sent whose settlements Redis hasn't confirmed yet: their records are in Redis or,
      // on a failure, spilled to the writer, before the writer stops.
      await Promise.allSettled([...settlements]);
      await stopWorker;
      // Every settled request is in the queue; write what the database takes now (the rest stays queued).
      await billing?.writer.stop();
      billing?.stop();
      // Scrapes and probes were answered through the drain; the process is about to go now.
      await management?.close().catch(() => {});
      await unsubTasks().catch(() => {});
      await unsubConfirm?.().catch(() => {});
      webhooks.stop();
      await clusterStats.stop();
      stopJournalWatch();
      await notifications.close();
      clearInterval(syncTimer);
      clearInterval(probeTimer);
      clearInterval(refreshTokens);
      config.stop();
      await admin.close(); // audit rows queued during a database outage: a last try, else logged
      await Promise.all(unsubs.map((u) => u().catch(() => {})));
      await transport.close();
      await outbound.close();
      await tracing?.shutdown().catch(() => {}); // the last spans, after the last requests ended
      if (quotaBackend instanceof SlicedQuota) await quotaBackend.close().catch(() => {});
      else if (quotaBackend instanceof RedisQuota) quotaBackend.close();
      await coord.close();
      if (!opts.dbh) await dbh.close();
      log.flush?.();
    },
  };
}
