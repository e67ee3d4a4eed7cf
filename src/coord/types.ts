/**
 * Coordination backend: the state gateway instances share. Two implementations: Redis (production,
 * N instances) and in-process (the embedded default, one instance). Later issues add quota admission
 * and wait queues here; this one needs shared breaker state, channel health and pub/sub.
 */
export type BreakerStateName = 'closed' | 'open' | 'half_open' | 'forced_open';

export interface SharedBreakerState {
  state: BreakerStateName;
  /** Bumped on every transition; probe permits and CAS writes are scoped to one generation. */
  gen: number;
  /** When this state began (ms since epoch). */
  since: number;
  /** open: when half-open probing may start. */
  openUntil: number;
  reason: string;
}

export const CLOSED_INITIAL: SharedBreakerState = {
  state: 'closed',
  gen: 0,
  since: 0,
  openUntil: 0,
  reason: '',
};

export interface ChannelHealth {
  /** Out of rotation until then (an upstream 429 with Retry-After). */
  cooldownUntil: number;
  /** 'exhausted' (insufficient_quota) and 'invalid' (401/403) take the credential out until reset. */
  credential: 'ok' | 'exhausted' | 'invalid';
  credentialSince: number;
  /** Last write (ms); a state older than the one held is ignored, so a late message can't undo a reset. */
  updatedAt: number;
}

export const HEALTHY: ChannelHealth = {
  cooldownUntil: 0,
  credential: 'ok',
  credentialSince: 0,
  updatedAt: 0,
};

export interface BreakerStore {
  /** Every channel's shared breaker state (channels never written are absent: closed). */
  getAll(): Promise<Map<string, SharedBreakerState>>;
  /**
   * Writes `next` (whose gen must be expectedGen + 1) if the stored gen is expectedGen.
   * Returns the state stored afterwards: `next` on success, the newer one otherwise.
   */
  cas(
    channel: string,
    expectedGen: number,
    next: SharedBreakerState,
  ): Promise<{ ok: boolean; current: SharedBreakerState }>;
  /** Takes one of `max` probe permits of generation `gen`; false once they are gone. */
  acquireProbe(channel: string, gen: number, max: number, ttlMs: number): Promise<boolean>;
  /** Counts a successful probe of generation `gen`; returns the count so far. */
  probeSucceeded(channel: string, gen: number, ttlMs: number): Promise<number>;
  getHealth(): Promise<Map<string, ChannelHealth>>;
  setHealth(channel: string, health: ChannelHealth): Promise<void>;
  /**
   * After the store lost data: writes back this instance's known states wherever the store holds nothing
   * or an older one (by generation, by updatedAt). Returns how many fields it wrote.
   */
  restore(states: Map<string, SharedBreakerState>, health: Map<string, ChannelHealth>): Promise<number>;
}

export type Unsubscribe = () => Promise<void>;

/**
 * Why the shared store may have forgotten state: 'epoch' (the epoch key is gone or was replaced: a restart
 * without persistence, FLUSHALL, eviction) or 'server' (the connection now reaches another server or
 * another run of it: a failover, or a restart that may have lost the last writes).
 */
export type DataLossReason = 'epoch' | 'server';

export interface Coordinator {
  readonly kind: 'redis' | 'memory';
  readonly breakers: BreakerStore;
  publish(topic: string, message: string): Promise<void>;
  subscribe(topic: string, handler: (message: string) => void): Promise<Unsubscribe>;
  /** A shared cache value (the config L2). */
  getValue(key: string): Promise<string | null>;
  setValue(key: string, value: string, ttlMs: number): Promise<void>;
  delValue(key: string): Promise<void>;
  /** Milliseconds since epoch by the shared clock (Redis TIME), so instances agree on time. */
  time(): Promise<number>;
  ping(): Promise<boolean>;
  /**
   * Called when the shared store may have lost data (not on a mere reconnect to the same dataset). Every
   * module that keeps state there rebuilds its part (see the README's table of Redis state). The in-process
   * backend never loses data and never calls it.
   */
  onDataLoss(handler: (reason: DataLossReason) => void): void;
  close(): Promise<void>;
}
