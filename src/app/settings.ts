import { parseOutboundAllow } from '../lib/outbound.js';
import { markupBp } from '../config/catalogue.js';
import { parseClusterNodes, parseRedisUrl } from '../coord/redis-url.js';
import { type TracingSettings, tracingFromEnv } from '../observability/tracing.js';

/** Every setting, read once from the environment. The README's configuration reference mirrors this. */
export interface Settings {
  host: string;
  port: number;
  /** PostgreSQL URL; unset = embedded PGlite in dataDir. */
  databaseUrl: string | undefined;
  dataDir: string;
  /** Redis URL; unset = in-process coordination (one instance only). */
  redisUrl: string | undefined;
  redisPrefix: string;
  /** Redis Cluster seed nodes (REDIS_CLUSTER_NODES=host:port,host:port); takes precedence over redisUrl. */
  redisClusterNodes: string[] | undefined;
  logLevel: string;
  /** ANIMA_LOG_FORMAT: 'json' (one object a line) or 'pretty' (for a terminal); default pretty on a TTY. */
  logFormat: 'json' | 'pretty';
  /** ANIMA_REQUEST_LOG=0 turns the request log off (observability/request-log.ts); on by default. */
  requestLog: boolean;
  /** ANIMA_REQUEST_LOG_RETENTION_DAYS: whole days of request log kept (default 14). */
  requestLogRetentionDays: number;
  bodyLimit: number;
  /** A client must send its whole request within this (slow-loris guard). */
  requestTimeoutMs: number;
  configRefreshMs: number;
  breakerSyncMs: number;
  dbPoolSize: number;
  /** Bootstrap admin token (stored hashed on first start). */
  adminToken: string | undefined;
  /** Concurrency leases expire after this unless renewed (a dead instance's slots come back by then). */
  leaseTtlMs: number;
  /** Instances sharing one Redis: with Redis down, each keeps 1/N of every protective limit. */
  instanceCount: number;
  /**
   * ANIMA_QUOTA_SLICES (default on; 0 = off): with Redis, admit requests of keys far from their limits from
   * slices of their quota leased by this instance, without a Redis call per request (src/quota/slices.ts).
   */
  quotaSlices?: boolean;
  /** ASYNC tasks: how often idle workers look for work, their claim lease, and how long a task may wait. */
  taskPollMs: number;
  taskLeaseMs: number;
  taskDeadlineMs: number;
  /** SIGTERM: how long in-flight requests and streams may take to finish before connections are cut. */
  drainMs: number;
  /** First webhook retry delay (doubles per attempt, capped at 5 min). */
  webhookBackoffMs: number;
  /** Encrypts upstream credentials at rest (AES-256-GCM); unset = stored as given. */
  secretKey: string | undefined;
  /** ANIMA_SECRET_KEY_PREVIOUS (comma-separated): older keys that still open sealed values (rotation). */
  secretKeyPrevious?: string[];
  /** ANIMA_ALLOW_PLAINTEXT_CREDENTIALS=1: production mode may start without ANIMA_SECRET_KEY (and warns). */
  allowPlaintextCredentials?: boolean;
  /** ANIMA_MANAGEMENT_PORT: metrics and readiness details on a listener of their own (unset = main port). */
  managementPort?: number | undefined;
  managementHost?: string;
  /** ANIMA_MANAGEMENT_TOKEN: bearer asked for metrics and readiness details (an admin token also works). */
  managementToken?: string | undefined;
  /** Book every served request in the ledger (off only to measure what billing costs). */
  billing: boolean;
  /**
   * ANIMA_DEFAULT_SALE_MARKUP: sale = catalogue list price x this for aliases without a price row ('1.2'),
   * unless the `default_sale_markup` gateway setting or the app's own `sale_markup` says otherwise
   * (config/catalogue.ts). Unset: x1.
   */
  defaultSaleMarkup?: string;
  /** ANIMA_CURRENCY: the ISO 4217 code of the account currency money is kept in (micro-units); default USD. */
  currency?: string;
  /** Journal writer: records per transaction; a record another instance holds this long unwritten is taken over. */
  billingBatch: number;
  /**
   * Journal writer: after a batch, wait this long for more records before the next transaction. Records
   * are durable in the queue meanwhile; a longer wait makes fewer, larger transactions (per journal, a
   * batch of 200 costs the database about half what a batch of 25 does), at the price of journals
   * showing up in the ledger that much later.
   */
  billingLingerMs: number;
  billingStaleMs: number;
  /** A prepaid reservation of a request whose instance died is released after this. */
  billingHoldTtlMs: number;
  /** Settled records an instance keeps until it sees them in the ledger (see BillingOptions.unconfirmedMax). */
  billingUnconfirmedMax?: number;
  /** A settled record not in the ledger after this long marks the journal writer stuck (readiness DEGRADED). */
  billingStuckAfterMs?: number;
  /** false: the latency histogram folds its app label into "other" (a cardinality cap; README "Operations"). */
  metricsAppLabel?: boolean;
  /** Media tasks: first poll delay (doubling per poll up to the cap), per-kind deadlines, one upstream call's limit. */
  mediaPollMs: number;
  mediaPollCapMs: number;
  mediaDeadlineMs: { image: number; video: number; music: number };
  mediaCallTimeoutMs: number;
  /**
   * ANIMA_OUTBOUND_ALLOW: CIDRs and host names that operator-set URLs (channel base_url, key webhook_url)
   * may reach besides public addresses. Cloud metadata addresses stay unreachable whatever it says, and
   * tenant-supplied URLs (callbacks) only ever reach public addresses (src/lib/outbound.ts).
   */
  outboundAllow: string[];
  /**
   * OpenTelemetry traces from the standard OTEL_* variables (src/observability/tracing.ts); null or absent
   * = off (the default). On with OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
   */
  tracing?: TracingSettings | null;
}

function int(v: string | undefined, dflt: number, name: string): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got '${v}'`);
  return n;
}

/** A comma-separated list, each entry checked now: a typo fails the start, not a request later. */
function outboundAllow(v: string | undefined): string[] {
  const list = (v ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  parseOutboundAllow(list);
  return list;
}

/** Checked now (src/coord/redis-url.ts): a form the Redis clients can't follow fails the start. */
function redisUrl(v: string | undefined): string | undefined {
  if (!v) return undefined;
  parseRedisUrl(v);
  return v;
}

function clusterNodes(v: string | undefined): string[] | undefined {
  if (!v) return undefined;
  const list = v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  parseClusterNodes(list);
  return list;
}

function managementToken(v: string | undefined): string | undefined {
  if (!v) return undefined;
  if (v.length < 16) throw new Error('ANIMA_MANAGEMENT_TOKEN must be at least 16 characters');
  return v;
}

function logFormat(v: string | undefined): 'json' | 'pretty' {
  if (v === undefined || v === '') return process.stdout.isTTY ? 'pretty' : 'json';
  if (v === 'json' || v === 'pretty') return v;
  throw new Error(`ANIMA_LOG_FORMAT must be json or pretty, not '${v}'`);
}

/** A three-letter ISO 4217 code (display only: the ledger's amounts carry no currency of their own). */
function currencyCode(v: string | undefined): string {
  const t = v?.trim().toUpperCase() || 'USD';
  if (!/^[A-Z]{3}$/.test(t)) throw new Error(`ANIMA_CURRENCY must be an ISO 4217 code like USD (got '${v}')`);
  return t;
}

/** Checked now: a markup the catalogue can't read fails the start, not every catalogue-priced request. */
function saleMarkup(v: string | undefined): string | undefined {
  const t = v?.trim();
  if (!t) return undefined;
  markupBp(t);
  return t;
}

export function settingsFromEnv(env: NodeJS.ProcessEnv = process.env): Settings {
  return {
    host: env.ANIMA_HOST ?? '127.0.0.1',
    port: int(env.ANIMA_PORT ?? env.PORT, 8787, 'ANIMA_PORT'),
    databaseUrl: env.DATABASE_URL || undefined,
    dataDir: env.ANIMA_DATA_DIR ?? '.anima-data/db',
    redisUrl: redisUrl(env.REDIS_URL),
    redisPrefix: env.ANIMA_REDIS_PREFIX ?? 'anima:',
    redisClusterNodes: clusterNodes(env.REDIS_CLUSTER_NODES),
    logLevel: env.ANIMA_LOG_LEVEL ?? 'info',
    logFormat: logFormat(env.ANIMA_LOG_FORMAT),
    requestLog: env.ANIMA_REQUEST_LOG !== '0' && env.ANIMA_REQUEST_LOG !== 'false',
    requestLogRetentionDays: int(
      env.ANIMA_REQUEST_LOG_RETENTION_DAYS,
      14,
      'ANIMA_REQUEST_LOG_RETENTION_DAYS',
    ),
    bodyLimit: int(env.ANIMA_BODY_LIMIT_BYTES, 20 * 1024 * 1024, 'ANIMA_BODY_LIMIT_BYTES'),
    requestTimeoutMs: int(env.ANIMA_REQUEST_TIMEOUT_MS, 30_000, 'ANIMA_REQUEST_TIMEOUT_MS'),
    configRefreshMs: int(env.ANIMA_CONFIG_REFRESH_MS, 30_000, 'ANIMA_CONFIG_REFRESH_MS'),
    breakerSyncMs: int(env.ANIMA_BREAKER_SYNC_MS, 1_000, 'ANIMA_BREAKER_SYNC_MS'),
    dbPoolSize: int(env.ANIMA_DB_POOL_SIZE, 10, 'ANIMA_DB_POOL_SIZE'),
    adminToken: env.ANIMA_ADMIN_TOKEN || undefined,
    leaseTtlMs: int(env.ANIMA_LEASE_TTL_MS, 30_000, 'ANIMA_LEASE_TTL_MS'),
    instanceCount: Math.max(1, int(env.ANIMA_INSTANCE_COUNT, 1, 'ANIMA_INSTANCE_COUNT')),
    quotaSlices: !/^(0|false|off|no)$/i.test(env.ANIMA_QUOTA_SLICES ?? ''),
    taskPollMs: int(env.ANIMA_TASK_POLL_MS, 1_000, 'ANIMA_TASK_POLL_MS'),
    taskLeaseMs: int(env.ANIMA_TASK_LEASE_MS, 60_000, 'ANIMA_TASK_LEASE_MS'),
    taskDeadlineMs: int(env.ANIMA_TASK_DEADLINE_MS, 24 * 3_600_000, 'ANIMA_TASK_DEADLINE_MS'),
    drainMs: int(env.ANIMA_DRAIN_MS, 30_000, 'ANIMA_DRAIN_MS'),
    webhookBackoffMs: int(env.ANIMA_WEBHOOK_BACKOFF_MS, 1_000, 'ANIMA_WEBHOOK_BACKOFF_MS'),
    secretKey: env.ANIMA_SECRET_KEY || undefined,
    // Comma-separated: a previous key can't contain a comma (generated keys are base64 or hex).
    secretKeyPrevious: (env.ANIMA_SECRET_KEY_PREVIOUS ?? '')
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean),
    allowPlaintextCredentials: /^(1|true|yes)$/i.test(env.ANIMA_ALLOW_PLAINTEXT_CREDENTIALS ?? ''),
    managementPort: env.ANIMA_MANAGEMENT_PORT
      ? int(env.ANIMA_MANAGEMENT_PORT, 0, 'ANIMA_MANAGEMENT_PORT')
      : undefined,
    managementHost: env.ANIMA_MANAGEMENT_HOST || '127.0.0.1',
    managementToken: managementToken(env.ANIMA_MANAGEMENT_TOKEN),
    billing: (env.ANIMA_BILLING ?? 'on') !== 'off',
    defaultSaleMarkup: saleMarkup(env.ANIMA_DEFAULT_SALE_MARKUP),
    currency: currencyCode(env.ANIMA_CURRENCY),
    billingBatch: int(env.ANIMA_BILLING_BATCH, 500, 'ANIMA_BILLING_BATCH'),
    billingLingerMs: int(env.ANIMA_BILLING_LINGER_MS, 20, 'ANIMA_BILLING_LINGER_MS'),
    billingStaleMs: int(env.ANIMA_BILLING_STALE_MS, 30_000, 'ANIMA_BILLING_STALE_MS'),
    billingHoldTtlMs: int(env.ANIMA_BILLING_HOLD_TTL_MS, 10 * 60_000, 'ANIMA_BILLING_HOLD_TTL_MS'),
    billingUnconfirmedMax: int(env.ANIMA_BILLING_UNCONFIRMED_MAX, 200_000, 'ANIMA_BILLING_UNCONFIRMED_MAX'),
    billingStuckAfterMs: int(env.ANIMA_BILLING_STUCK_AFTER_MS, 30_000, 'ANIMA_BILLING_STUCK_AFTER_MS'),
    metricsAppLabel: (env.ANIMA_METRICS_APP_LABEL ?? 'on') !== 'off',
    mediaPollMs: int(env.ANIMA_MEDIA_POLL_MS, 1_000, 'ANIMA_MEDIA_POLL_MS'),
    mediaPollCapMs: int(env.ANIMA_MEDIA_POLL_CAP_MS, 15_000, 'ANIMA_MEDIA_POLL_CAP_MS'),
    mediaDeadlineMs: {
      image: int(env.ANIMA_TASK_DEADLINE_IMAGE_MS, 10 * 60_000, 'ANIMA_TASK_DEADLINE_IMAGE_MS'),
      video: int(env.ANIMA_TASK_DEADLINE_VIDEO_MS, 60 * 60_000, 'ANIMA_TASK_DEADLINE_VIDEO_MS'),
      music: int(env.ANIMA_TASK_DEADLINE_MUSIC_MS, 30 * 60_000, 'ANIMA_TASK_DEADLINE_MUSIC_MS'),
    },
    mediaCallTimeoutMs: int(env.ANIMA_MEDIA_CALL_TIMEOUT_MS, 30_000, 'ANIMA_MEDIA_CALL_TIMEOUT_MS'),
    outboundAllow: outboundAllow(env.ANIMA_OUTBOUND_ALLOW),
    tracing: tracingFromEnv(env),
  };
}
