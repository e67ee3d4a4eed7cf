/**
 * Admin routes the operator console reads beside the config CRUD: who am I, the last hour of traffic,
 * queue lengths, tasks across apps (list, inspect, cancel), and one live stream of breaker states and
 * queue lengths (server-sent events). Registered inside the admin plugin, so the same bearer token and
 * role checks apply (viewers read, only admins cancel).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { GatewayError } from '../core/errors.js';
import type { ClusterStats } from '../observability/cluster-stats.js';
import type { TrafficStats } from '../observability/stats.js';
import type { ChannelTestResult } from '../relay/channel-test.js';
import type { QuotaBackend } from '../quota/types.js';
import { cancelTask } from '../tasks/media.js';
import { ACTIVE, type TaskRow, type TaskStore, taskView } from '../tasks/store.js';
import type { AdminDeps } from './admin.js';

export interface ConsoleDeps {
  /** This instance's traffic ring (absent: /stats/timeseries answers 404). */
  stats?: TrafficStats;
  /** Tasks across apps; `afterCancel` forwards a cancel upstream and releases the task's hold. */
  tasks?: { store: TaskStore; afterCancel: (t: TaskRow) => Promise<void>; wake: () => void };
  /** WAIT queues (shared, in Redis or in process) and the requests waiting on this instance. */
  queues?: { backend: QuotaBackend; waitingHere: () => number };
  /** Traffic and per-channel figures summed over every live instance (absent: this instance's `stats`). */
  cluster?: ClusterStats;
  /** The Test-channel action: one small real request through the channel (relay/channel-test.ts). */
  testChannel?: (
    code: string,
    opts: { model?: string; operation?: 'chat' | 'embeddings' },
  ) => Promise<ChannelTestResult | null>;
  /** The account currency money is kept in (ANIMA_CURRENCY, ISO 4217), for the console's formatting. */
  currency?: string;
}

/** How often the live stream sends a snapshot, and how many streams may be open at once per instance. */
const LIVE_INTERVAL_MS = 1_000;
const MAX_STREAMS = 64;
/** A stream whose client stopped reading is dropped once this much is buffered for it. */
const MAX_BUFFERED = 1 << 20;
/** Task counts come from the database: read at most this often, whatever the number of viewers. */
const TASK_COUNTS_TTL_MS = 2_000;
/** Queue lengths read per snapshot at most (one ZCARD each on Redis). */
const MAX_QUEUES = 500;

const TASK_STATUSES = ['queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired'];

const iso = (d: Date | string | null) => (d ? new Date(d).toISOString() : null);

/** A task as operators see it: the app's view plus who owns it, where it ran and its lease. */
export function adminTaskView(t: TaskRow, withRequest = false): Record<string, unknown> {
  return {
    ...taskView(t),
    app_id: t.app_id,
    key_id: t.key_id,
    alias: t.alias,
    channel: t.channel,
    upstream_id: t.upstream_id,
    progress: t.progress,
    not_before: iso(t.not_before),
    deadline: iso(t.deadline),
    updated_at: iso(t.updated_at),
    lease_owner: t.lease_owner,
    lease_until: iso(t.lease_until),
    cancel_requested_at: iso(t.cancel_requested_at),
    billing_state: t.billing_state,
    transitions: t.transitions,
    ...(withRequest
      ? { request: t.request, webhook_url: t.webhook_url, idempotency_key: t.idempotency_key, polls: t.polls }
      : {}),
  };
}

interface QueueSnapshot {
  at: string;
  /** Requests waiting in a WAIT queue on this instance right now. */
  waiting_here: number;
  /** Every WAIT-mode key with a limit: its shared queue length (null = the backend didn't answer). */
  keys: Array<{ key_id: string; app_id: string; name: string; key_prefix: string; waiting: number | null }>;
  truncated: boolean;
  /** Active tasks by status (ASYNC requests and media generations); null = the database didn't answer. */
  tasks: Record<string, number> | null;
  tasks_by_kind: Record<string, number> | null;
}

export function registerConsoleRoutes(r: FastifyInstance, d: AdminDeps, circuits: () => unknown[]): void {
  const c = d.console ?? {};

  r.get('/whoami', async (req) => ({ id: req.actor!.id, name: req.actor!.name, role: req.actor!.role }));

  r.get('/stats/timeseries', async (req) => {
    if (!c.stats) throw new GatewayError('not_found', 'Traffic statistics are not kept on this gateway.');
    const q = req.query as Record<string, string>;
    const minutes = q.minutes === undefined ? 60 : Number(q.minutes);
    const step = q.step === undefined ? 60 : Number(q.step);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 60)
      throw new GatewayError('invalid_request', 'minutes must be an integer in [1, 60]', {
        param: 'minutes',
      });
    if (!Number.isInteger(step) || step < 10 || step > 600 || step % 10 !== 0)
      throw new GatewayError('invalid_request', 'step must be a multiple of 10 seconds in [10, 600]', {
        param: 'step',
      });
    if (c.cluster) return c.cluster.series(Date.now(), minutes, step);
    return { scope: 'instance', instances: 1, ...c.stats.series(Date.now(), minutes, step) };
  });

  // Recent upstream figures per channel (attempts, failures, p50/p95), for the channel list's columns.
  r.get('/stats/channels', async (req) => {
    if (!c.cluster) throw new GatewayError('not_found', 'Channel statistics are not kept on this gateway.');
    const q = req.query as Record<string, string>;
    const minutes = q.minutes === undefined ? 15 : Number(q.minutes);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 15)
      throw new GatewayError('invalid_request', 'minutes must be an integer in [1, 15]', {
        param: 'minutes',
      });
    return { minutes, ...(await c.cluster.channelFigures(Date.now(), minutes)) };
  });

  // What the console formats money with: integer micro-units of this currency.
  r.get('/console-settings', async () => ({ currency: c.currency ?? 'USD', micros_per_unit: 1_000_000 }));

  r.post('/channels/:code/test', async (req) => {
    if (!c.testChannel)
      throw new GatewayError('not_found', 'Channel tests are not available on this gateway.');
    const code = (req.params as { code: string }).code;
    const b = (req.body ?? {}) as Record<string, unknown>;
    if (b.model !== undefined && (typeof b.model !== 'string' || !b.model.trim() || b.model.length > 200))
      throw new GatewayError('invalid_request', 'model must be a non-empty string', { param: 'model' });
    if (b.operation !== undefined && b.operation !== 'chat' && b.operation !== 'embeddings')
      throw new GatewayError('invalid_request', "operation must be 'chat' or 'embeddings'", {
        param: 'operation',
      });
    const res = await c.testChannel(code, {
      ...(b.model === undefined ? {} : { model: b.model.trim() }),
      ...(b.operation === undefined ? {} : { operation: b.operation }),
    });
    if (!res) throw new GatewayError('not_found', `No channel '${code}'.`);
    // Audited like other admin actions: who tested what, and what came back (already redacted).
    const audit = await d.admin.record(
      req.actor!,
      'channel_test',
      'channel',
      code,
      null,
      {
        ok: res.ok,
        tested: res.tested,
        status: res.status,
        model: res.model,
        error: res.error?.code ?? null,
      },
      req.id,
    );
    return audit === 'written' ? res : { ...res, audit };
  });

  // ---- queues: WAIT queues (shared) and active tasks (database), cached briefly ----
  let taskCounts: {
    at: number;
    by: Record<string, number> | null;
    byKind: Record<string, number> | null;
    p: Promise<void> | null;
  } = { at: 0, by: null, byKind: null, p: null };
  const readTaskCounts = async () => {
    if (!c.tasks) return;
    if (Date.now() - taskCounts.at < TASK_COUNTS_TTL_MS) return;
    taskCounts.p ??= (async () => {
      try {
        const rows = await c.tasks!.store.activeCounts();
        const by: Record<string, number> = Object.fromEntries(ACTIVE.map((s) => [s, 0]));
        const byKind: Record<string, number> = {};
        for (const row of rows) {
          by[row.status] = (by[row.status] ?? 0) + row.n;
          byKind[row.kind] = (byKind[row.kind] ?? 0) + row.n;
        }
        taskCounts = { at: Date.now(), by, byKind, p: null };
      } catch {
        taskCounts = { at: Date.now(), by: null, byKind: null, p: null };
      }
    })();
    await taskCounts.p;
  };

  const queues = async (): Promise<QueueSnapshot> => {
    const now = Date.now();
    const keys: QueueSnapshot['keys'] = [];
    const waitKeys = d.config
      .allKeys()
      .filter(
        (k) =>
          k.queueMode === 'WAIT' &&
          k.enabled &&
          (d.config.quota('key', k.id, now) ||
            d.config.quota('app', k.appId, now) ||
            (k.tokenGroupId && d.config.quota('token_group', k.tokenGroupId, now))),
      );
    const shown = waitKeys.slice(0, MAX_QUEUES);
    const backend = c.queues?.backend;
    await Promise.all([
      readTaskCounts(),
      ...shown.map(async (k) => {
        let waiting: number | null = 0;
        if (backend) {
          try {
            // A key waits in its app's queue, or in its token group's when that limit was the one hit.
            const [a, g] = await Promise.all([
              backend.queueLength(k.appId, k.id),
              k.tokenGroupId ? backend.queueLength('tg:' + k.tokenGroupId, k.id) : Promise.resolve(0),
            ]);
            waiting = a + g;
          } catch {
            waiting = null;
          }
        }
        keys.push({ key_id: k.id, app_id: k.appId, name: k.name, key_prefix: k.keyPrefix, waiting });
      }),
    ]);
    keys.sort((x, y) => (y.waiting ?? -1) - (x.waiting ?? -1) || x.key_id.localeCompare(y.key_id));
    return {
      at: new Date(now).toISOString(),
      waiting_here: c.queues?.waitingHere() ?? 0,
      keys,
      truncated: waitKeys.length > shown.length,
      tasks: c.tasks ? taskCounts.by : null,
      tasks_by_kind: c.tasks ? taskCounts.byKind : null,
    };
  };
  r.get('/queues', async () => queues());

  // ---- tasks across apps ----
  const taskStore = () => {
    if (!c.tasks) throw new GatewayError('not_found', 'Tasks are not available on this gateway.');
    return c.tasks;
  };
  r.get('/tasks', async (req) => {
    const q = req.query as Record<string, string>;
    if (q.status !== undefined && !TASK_STATUSES.includes(q.status))
      throw new GatewayError('invalid_request', `status must be one of ${TASK_STATUSES.join(', ')}`, {
        param: 'status',
      });
    for (const p of ['limit', 'offset'])
      if (q[p] !== undefined && !/^\d{1,6}$/.test(q[p]))
        throw new GatewayError('invalid_request', `${p} must be a non-negative integer`, { param: p });
    const limit = Math.min(Math.max(q.limit ? Number(q.limit) : 50, 1), 500);
    const offset = q.offset ? Number(q.offset) : 0;
    const rows = await taskStore().store.listAll({
      status: q.status,
      appId: q.app_id || undefined,
      kind: q.kind || undefined,
      limit,
      offset,
    });
    return { data: rows.map((t) => adminTaskView(t)), limit, offset };
  });
  r.get('/tasks/:id', async (req) => {
    const t = await taskStore().store.byId((req.params as { id: string }).id);
    if (!t) throw new GatewayError('not_found', 'No such task.');
    return adminTaskView(t, true);
  });
  r.post('/tasks/:id/cancel', async (req) => {
    const ts = taskStore();
    const id = (req.params as { id: string }).id;
    const t = await ts.store.byId(id);
    if (!t) throw new GatewayError('not_found', 'No such task.');
    if (!ACTIVE.includes(t.status)) return adminTaskView(t, true);
    const res = await cancelTask(ts.store, t.id, t.app_id, ts);
    if (!res) throw new GatewayError('not_found', 'No such task.');
    await d.admin.record(
      req.actor!,
      'task_cancel',
      'task',
      t.id,
      { status: t.status },
      { status: res.status, cancel_requested: true },
      req.id,
    );
    return adminTaskView(res, true);
  });

  // ---- live stream: one snapshot per second shared by every open stream ----
  const streams = new Map<ServerResponse, string | undefined>();
  let timer: NodeJS.Timeout | null = null;
  let busy = false;
  const snapshot = async () => ({
    at: new Date().toISOString(),
    circuits: circuits(),
    queues: await queues(),
    kill_switch: d.config.killSwitch() ?? { enabled: false },
  });
  const send = (res: ServerResponse, data: unknown) =>
    res.write(`event: snapshot\ndata: ${JSON.stringify(data)}\n\n`);
  const tick = async () => {
    if (busy) return; // the previous snapshot is still being read: skip rather than pile up
    busy = true;
    try {
      const snap = await snapshot();
      for (const [res, auth] of streams) {
        // A token revoked while its stream is open: the stream ends.
        try {
          d.tokens.authenticate(auth);
        } catch {
          res.end('event: signed_out\ndata: {}\n\n');
          continue;
        }
        if (res.writableLength > MAX_BUFFERED) res.destroy();
        else send(res, snap);
      }
    } finally {
      busy = false;
    }
  };
  r.get('/events', async (req: FastifyRequest, reply) => {
    if (streams.size >= MAX_STREAMS)
      throw new GatewayError(
        'service_unavailable',
        `At most ${MAX_STREAMS} live streams per instance; poll /circuits and /queues instead.`,
        { headers: { 'retry-after': '5' } },
      );
    const first = await snapshot();
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      'x-request-id': req.id,
    });
    res.write(`retry: 2000\n\n`);
    send(res, first);
    streams.set(res, req.headers.authorization);
    res.on('close', () => {
      streams.delete(res);
      if (streams.size === 0 && timer) {
        clearInterval(timer);
        timer = null;
      }
    });
    timer ??= setInterval(() => void tick().catch(() => {}), LIVE_INTERVAL_MS);
  });
  // Shutdown: end the streams so their connections go idle and the server can close.
  r.addHook('preClose', async () => {
    if (timer) clearInterval(timer);
    timer = null;
    for (const res of streams.keys()) res.end();
    streams.clear();
  });
}
