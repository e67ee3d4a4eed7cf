import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { TickPipeline } from './tick-pipeline.js';
import { parseClusterNodes, parseRedisUrl } from './redis-url.js';
import { respOptionsFor } from './resp.js';
import { randomBytes } from 'node:crypto';
import {
  type BreakerStore,
  type ChannelHealth,
  type Coordinator,
  type DataLossReason,
  type SharedBreakerState,
  type Unsubscribe,
  CLOSED_INITIAL,
} from './types.js';

/**
 * Breaker keys share one hash tag ({...brk}) so each script touches a single slot on Redis Cluster.
 * Breaker traffic is tiny (transitions and probes only), so one slot for all of it is no hot spot.
 */
// A stored generation below the writer's can only mean Redis forgot (generations only grow, and an
// instance only knows generations Redis held): the writer's view is the newer one, so the write wins. A
// missing key is a fresh closed breaker of generation 0 in the same way.
const CAS_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local gen = -1
if cur then gen = cjson.decode(cur).gen end
if gen <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {1, ARGV[3]}
end
return {0, cur}
`;

// Rebuild after data loss: each instance writes back what it knows, field by field, where Redis has
// nothing or something older (ARGV: field, json, order value; KEYS[1] the hash; ARGV[#] the JSON field
// compared: 'gen' for breakers, 'updatedAt' for channel health).
const RESTORE_LUA = `
local by = ARGV[#ARGV]
local n = 0
for i = 1, #ARGV - 1, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or (cjson.decode(cur)[by] or -1) < tonumber(ARGV[i + 2]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
`;

const INCR_TTL_LUA = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`;

type Cmds = {
  animaCas(key: string, field: string, gen: number, next: string): Promise<[number, string | null]>;
  animaIncrTtl(key: string, ttl: number): Promise<number>;
  animaRestore(key: string, ...args: string[]): Promise<number>;
};

class RedisBreakerStore implements BreakerStore {
  constructor(
    private readonly r: Redis & Cmds,
    private readonly prefix: string,
  ) {}
  private get stateKey() {
    return `${this.prefix}{brk}:state`;
  }
  private get healthKey() {
    return `${this.prefix}{brk}:health`;
  }
  async getAll() {
    const all = await this.r.hgetall(this.stateKey);
    const m = new Map<string, SharedBreakerState>();
    for (const [k, v] of Object.entries(all)) m.set(k, JSON.parse(v) as SharedBreakerState);
    return m;
  }
  async cas(channel: string, expectedGen: number, next: SharedBreakerState) {
    const [ok, cur] = await this.r.animaCas(this.stateKey, channel, expectedGen, JSON.stringify(next));
    return { ok: ok === 1, current: cur ? (JSON.parse(cur) as SharedBreakerState) : CLOSED_INITIAL };
  }
  async acquireProbe(channel: string, gen: number, max: number, ttlMs: number) {
    const n = await this.r.animaIncrTtl(`${this.prefix}{brk}:probe:${channel}:${gen}`, Math.ceil(ttlMs));
    return n <= max;
  }
  async probeSucceeded(channel: string, gen: number, ttlMs: number) {
    return this.r.animaIncrTtl(`${this.prefix}{brk}:ok:${channel}:${gen}`, Math.ceil(ttlMs));
  }
  async getHealth() {
    const all = await this.r.hgetall(this.healthKey);
    const m = new Map<string, ChannelHealth>();
    for (const [k, v] of Object.entries(all)) m.set(k, JSON.parse(v) as ChannelHealth);
    return m;
  }
  async setHealth(channel: string, h: ChannelHealth) {
    await this.r.hset(this.healthKey, channel, JSON.stringify(h));
  }
  async restore(states: Map<string, SharedBreakerState>, health: Map<string, ChannelHealth>) {
    const args = (m: Map<string, SharedBreakerState | ChannelHealth>, by: 'gen' | 'updatedAt') => {
      const out: string[] = [];
      for (const [ch, v] of m)
        out.push(ch, JSON.stringify(v), String((v as unknown as Record<string, number>)[by]));
      out.push(by);
      return out;
    };
    let n = 0;
    if (states.size) n += await this.r.animaRestore(this.stateKey, ...args(states, 'gen'));
    if (health.size) n += await this.r.animaRestore(this.healthKey, ...args(health, 'updatedAt'));
    return n;
  }
}

/** A second connection for subscriptions (Redis and Cluster name their duplicate() arguments differently). */
export function subscriberOf(client: Redis): Redis {
  // A subscriber re-subscribes by itself after a reconnect, with a SUBSCRIBE ioredis sends and never
  // awaits: it must be resent if the connection drops again before the reply, or its rejection would be
  // unhandled (the command connection's autoResendUnfulfilledCommands: false must not carry over).
  const opts = {
    enableAutoPipelining: false,
    enableOfflineQueue: true,
    autoResendUnfulfilledCommands: true,
    maxRetriesPerRequest: null,
  };
  return client instanceof Cluster
    ? ((client as unknown as Cluster).duplicate([], opts) as unknown as Redis)
    : client.duplicate(opts);
}

export interface RedisCoordinatorOptions {
  /** REDIS_URL: the forms accepted and refused are listed in redis-url.ts. */
  url: string;
  /** Redis Cluster seed nodes (host:port); when set, `url` is ignored. */
  clusterNodes?: string[];
  /** Prepended to every key and pub/sub channel, so several deployments (or test runs) can share a server. */
  prefix?: string;
  /** A command unanswered this long fails (default 5 s: far above any healthy Redis, well below a stuck request). */
  commandTimeoutMs?: number;
  /** How often the epoch key is read to notice that Redis lost its data (default 1 s). */
  epochCheckMs?: number;
}

export class RedisCoordinator implements Coordinator {
  readonly kind = 'redis' as const;
  readonly breakers: BreakerStore;
  readonly cmd: Redis & Cmds;
  /** Quota admissions and settlements and billing settlements, batched per event-loop turn (see TickPipeline). */
  readonly tick: TickPipeline;
  private sub: Redis | null = null;
  private readonly handlers = new Map<string, Set<(m: string) => void>>();
  private readonly prefix: string;
  /** The dataset this instance works with: the epoch key's value, and the server's run id (not on a Cluster). */
  private epoch: string | null = null;
  private runId: string | null = null;
  /** A (re)connect happened since the run id was last read. */
  private serverCheckDue = true;
  private readonly lossHandlers: Array<(reason: DataLossReason) => void> = [];
  private epochTimer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;
  /** Data-loss events seen by this instance (health, tests). */
  dataLosses = 0;

  constructor(private readonly opts: RedisCoordinatorOptions) {
    this.prefix = opts.prefix ?? 'anima:';
    const base: RedisOptions = {
      enableAutoPipelining: true,
      maxRetriesPerRequest: 2,
      connectTimeout: 2_000,
      // A command in flight when the connection drops fails (the caller degrades) instead of waiting to be
      // resent after a reconnect that may never come; a Redis that stops answering (no RST: a partition)
      // fails a command after commandTimeoutMs instead of hanging the request that sent it.
      autoResendUnfulfilledCommands: false,
      commandTimeout: opts.commandTimeoutMs ?? 5_000,
      retryStrategy: (n) => Math.min(50 * 2 ** Math.min(n, 6), 2_000),
    };
    // Read (and refused when neither client could follow it) before any connection is made.
    const seeds = opts.clusterNodes?.length ? parseClusterNodes(opts.clusterNodes) : null;
    const standalone: RedisOptions | null = seeds ? null : { ...parseRedisUrl(opts.url), ...base };
    if (standalone) respOptionsFor(standalone);
    // Every multi-key script names keys of one hash tag ({brk}, {q:<app>}), so it runs unchanged on a Cluster.
    this.cmd = (seeds
      ? new Cluster(
          seeds,
          // No auto-pipelining on a Cluster: ioredis routes an auto-pipelined EVALSHA by its first
          // argument (the script's sha, not a key), so scripts land in pipelines of the wrong slot group
          // and fail with "All keys in the pipeline should belong to the same slots allocation group"
          // (redis/ioredis#2109).
          {
            enableAutoPipelining: false,
            redisOptions: { ...base, enableAutoPipelining: false },
            clusterRetryStrategy: (n) => Math.min(100 * 2 ** Math.min(n, 5), 2_000),
          },
        )
      : new Redis(standalone!)) as unknown as Redis & Cmds;
    this.cmd.on('error', () => {}); // reconnects on its own; health is read through ping()
    this.cmd.defineCommand('animaCas', { numberOfKeys: 1, lua: CAS_LUA });
    this.cmd.defineCommand('animaIncrTtl', { numberOfKeys: 1, lua: INCR_TTL_LUA });
    this.cmd.defineCommand('animaRestore', { numberOfKeys: 1, lua: RESTORE_LUA });
    this.breakers = new RedisBreakerStore(this.cmd, this.prefix);
    this.tick = new TickPipeline(this.cmd);
  }

  /**
   * Waits for the first connection, then stops queueing commands while disconnected: with Redis down a
   * call fails at once (and the caller takes its degraded path) instead of hanging in a retry queue.
   */
  async ready(timeoutMs = 10_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    if (this.cmd.status !== 'ready') {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`Redis not reachable at start within ${timeoutMs} ms`)),
          timeoutMs,
        );
        this.cmd.once('ready', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    // The tick pipeline's own connection, within the same deadline.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.tick.ready(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`Redis not reachable at start within ${timeoutMs} ms (hot-path connection)`)),
          Math.max(0, until - Date.now()),
        );
      }),
    ]).finally(() => clearTimeout(timer));
    this.cmd.options.enableOfflineQueue = false;
    await this.checkDataset();
    // A reconnect may reach a server that restarted empty or a promoted replica: look at once, not only
    // at the next tick. The timer catches what a reconnect doesn't show (FLUSHALL, eviction).
    this.cmd.on('ready', () => {
      this.serverCheckDue = true;
      void this.checkDataset().catch(() => {});
    });
    this.epochTimer = setInterval(
      () => void this.checkDataset().catch(() => {}),
      this.opts.epochCheckMs ?? 1_000,
    );
    this.epochTimer.unref();
  }

  onDataLoss(handler: (reason: DataLossReason) => void): void {
    this.lossHandlers.push(handler);
  }

  /**
   * Is this still the dataset we started with? The epoch key (no TTL, written once by whichever instance
   * finds it missing) vanishes with a restart without persistence, FLUSHALL or eviction; the server's run id
   * changes on a restart or a failover, which may have lost the last writes though the epoch survived. Either
   * change tells every handler to rebuild its state. The first look only records what it sees.
   */
  checkDataset(): Promise<void> {
    this.checking ??= this.lookAtDataset().finally(() => (this.checking = null));
    return this.checking;
  }

  private async lookAtDataset(): Promise<void> {
    const key = `${this.prefix}epoch`;
    let epoch = await this.cmd.get(key);
    if (epoch === null) {
      await this.cmd.set(key, `${Date.now()}-${randomBytes(6).toString('hex')}`, 'NX');
      epoch = await this.cmd.get(key);
    }
    // The server can only change under a reconnect, so its run id is read then (and at start), not on
    // every tick; a look already past this point leaves the flag set for the next tick.
    let runId: string | null = null;
    if (this.serverCheckDue && !(this.cmd instanceof Cluster)) {
      const m = /run_id:([0-9a-f]+)/.exec(await this.cmd.info('server'));
      runId = m?.[1] ?? null;
      this.serverCheckDue = false;
    }
    const first = this.epoch === null;
    const reason: DataLossReason | null = first
      ? null
      : epoch !== this.epoch
        ? 'epoch'
        : runId !== null && this.runId !== null && runId !== this.runId
          ? 'server'
          : null;
    this.epoch = epoch;
    if (runId !== null) this.runId = runId;
    if (!reason) return;
    this.dataLosses++;
    for (const h of this.lossHandlers) {
      try {
        h(reason);
      } catch {
        // a handler's failure is its own; the others still rebuild
      }
    }
  }

  /** The command connection is up right now (no round trip). */
  isReady(): boolean {
    return this.cmd.status === 'ready';
  }

  async publish(topic: string, message: string) {
    await this.cmd.publish(this.prefix + topic, message);
  }

  async subscribe(topic: string, handler: (m: string) => void): Promise<Unsubscribe> {
    const channel = this.prefix + topic;
    if (!this.sub) {
      this.sub = subscriberOf(this.cmd);
      this.sub.on('error', () => {});
      this.sub.on('message', (ch: string, msg: string) => {
        for (const h of this.handlers.get(ch) ?? []) h(msg);
      });
    }
    let set = this.handlers.get(channel);
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
      await this.sub.subscribe(channel);
    }
    set.add(handler);
    return async () => {
      set.delete(handler);
      if (set.size === 0) {
        this.handlers.delete(channel);
        await this.sub?.unsubscribe(channel).catch(() => {});
      }
    };
  }

  async getValue(key: string) {
    return this.cmd.get(this.prefix + key);
  }
  async setValue(key: string, v: string, ttlMs: number) {
    await this.cmd.set(this.prefix + key, v, 'PX', Math.max(1, Math.ceil(ttlMs)));
  }
  async delValue(key: string) {
    await this.cmd.del(this.prefix + key);
  }
  async time() {
    const [s, us] = await this.cmd.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  async ping() {
    try {
      return (await this.cmd.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async close() {
    if (this.epochTimer) clearInterval(this.epochTimer);
    this.sub?.disconnect();
    this.tick.close();
    this.cmd.disconnect();
  }
}
