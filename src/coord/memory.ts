import { EventEmitter } from 'node:events';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import {
  type BreakerStore,
  type ChannelHealth,
  type Coordinator,
  type SharedBreakerState,
  type Unsubscribe,
  CLOSED_INITIAL,
} from './types.js';

/** Per-generation counters with an expiry, like the Redis keys they stand in for. */
class ExpiringCounters {
  private readonly m = new Map<string, { n: number; exp: number }>();
  constructor(private readonly clock: Clock) {}
  incr(key: string, ttlMs: number): number {
    const now = this.clock.now();
    const cur = this.m.get(key);
    if (!cur || cur.exp <= now) {
      this.m.set(key, { n: 1, exp: now + ttlMs });
      if (this.m.size > 10_000) for (const [k, v] of this.m) if (v.exp <= now) this.m.delete(k);
      return 1;
    }
    cur.n++;
    return cur.n;
  }
}

class MemoryBreakerStore implements BreakerStore {
  private readonly states = new Map<string, SharedBreakerState>();
  private readonly health = new Map<string, ChannelHealth>();
  private readonly counters: ExpiringCounters;
  constructor(clock: Clock) {
    this.counters = new ExpiringCounters(clock);
  }
  async getAll() {
    return new Map(this.states);
  }
  async cas(channel: string, expectedGen: number, next: SharedBreakerState) {
    const cur = this.states.get(channel);
    // As in Redis: a stored generation below the writer's means the store forgot (see CAS_LUA).
    const gen = cur?.gen ?? -1;
    if (gen > expectedGen) return { ok: false, current: cur ?? CLOSED_INITIAL };
    this.states.set(channel, next);
    return { ok: true, current: next };
  }
  async acquireProbe(channel: string, gen: number, max: number, ttlMs: number) {
    return this.counters.incr(`probe:${channel}:${gen}`, ttlMs) <= max;
  }
  async probeSucceeded(channel: string, gen: number, ttlMs: number) {
    return this.counters.incr(`ok:${channel}:${gen}`, ttlMs);
  }
  async getHealth() {
    return new Map(this.health);
  }
  async setHealth(channel: string, h: ChannelHealth) {
    this.health.set(channel, h);
  }
  async restore(states: Map<string, SharedBreakerState>, health: Map<string, ChannelHealth>) {
    let n = 0;
    for (const [ch, st] of states) {
      if ((this.states.get(ch)?.gen ?? -1) >= st.gen) continue;
      this.states.set(ch, st);
      n++;
    }
    for (const [ch, h] of health) {
      if ((this.health.get(ch)?.updatedAt ?? -1) >= h.updatedAt) continue;
      this.health.set(ch, h);
      n++;
    }
    return n;
  }
}

/** The embedded default: one process, so shared state is just memory and pub/sub an EventEmitter. */
export class MemoryCoordinator implements Coordinator {
  readonly kind = 'memory' as const;
  readonly breakers: BreakerStore;
  private readonly bus = new EventEmitter();
  constructor(private readonly clock: Clock = systemClock) {
    this.breakers = new MemoryBreakerStore(clock);
    this.bus.setMaxListeners(0);
  }
  async publish(topic: string, message: string) {
    // Asynchronous like a real broker: a publisher never re-enters its own handler synchronously.
    setImmediate(() => this.bus.emit(topic, message));
  }
  async subscribe(topic: string, handler: (m: string) => void): Promise<Unsubscribe> {
    this.bus.on(topic, handler);
    return async () => void this.bus.off(topic, handler);
  }
  private readonly kv = new Map<string, { v: string; exp: number }>();
  async getValue(key: string) {
    const e = this.kv.get(key);
    return e && e.exp > this.clock.now() ? e.v : null;
  }
  async setValue(key: string, v: string, ttlMs: number) {
    // Bounded (the response cache writes here too): past the cap, drop expired entries, then the oldest.
    if (this.kv.size >= 10_000 && !this.kv.has(key)) {
      const now = this.clock.now();
      for (const [k, e] of this.kv) if (e.exp <= now) this.kv.delete(k);
      for (const k of this.kv.keys()) {
        if (this.kv.size < 10_000) break;
        this.kv.delete(k);
      }
    }
    this.kv.delete(key);
    this.kv.set(key, { v, exp: this.clock.now() + ttlMs });
  }
  async delValue(key: string) {
    this.kv.delete(key);
  }
  async time() {
    return this.clock.now();
  }
  async ping() {
    return true;
  }
  onDataLoss(): void {
    // Memory is the process itself: it can't forget while the process lives.
  }
  async close() {
    this.bus.removeAllListeners();
  }
}
