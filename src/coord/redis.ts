import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { TickPipeline } from './tick-pipeline.js';
import {
  type BreakerStore,
  type ChannelHealth,
  type Coordinator,
  type SharedBreakerState,
  type Unsubscribe,
  CLOSED_INITIAL,
} from './types.js';

/**
 * Breaker keys share one hash tag ({...brk}) so each script touches a single slot on Redis Cluster.
 * Breaker traffic is tiny (transitions and probes only), so one slot for all of it is no hot spot.
 */
const CAS_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local gen = 0
if cur then gen = cjson.decode(cur).gen end
if gen == tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {1, ARGV[3]}
end
return {0, cur}
`;

const INCR_TTL_LUA = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`;

type Cmds = {
  animaCas(key: string, field: string, gen: number, next: string): Promise<[number, string | null]>;
  animaIncrTtl(key: string, ttl: number): Promise<number>;
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
  url: string;
  /** Redis Cluster seed nodes (host:port); when set, `url` is ignored. */
  clusterNodes?: string[];
  /** Prepended to every key and pub/sub channel, so several deployments (or test runs) can share a server. */
  prefix?: string;
  /** A command unanswered this long fails (default 5 s: far above any healthy Redis, well below a stuck request). */
  commandTimeoutMs?: number;
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
    // Every multi-key script names keys of one hash tag ({brk}, {q:<app>}), so it runs unchanged on a Cluster.
    this.cmd = (opts.clusterNodes?.length
      ? new Cluster(
          opts.clusterNodes.map((n) => {
            const [host, port] = n.split(':');
            return { host: host!, port: Number(port) };
          }),
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
      : new Redis(opts.url, base)) as unknown as Redis & Cmds;
    this.cmd.on('error', () => {}); // reconnects on its own; health is read through ping()
    this.cmd.defineCommand('animaCas', { numberOfKeys: 1, lua: CAS_LUA });
    this.cmd.defineCommand('animaIncrTtl', { numberOfKeys: 1, lua: INCR_TTL_LUA });
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
    this.sub?.disconnect();
    this.tick.close();
    this.cmd.disconnect();
  }
}
