/**
 * Per-channel circuit breakers: closed -> open -> half-open -> closed | open, plus forced-open.
 *
 * Who decides what:
 * - Each instance counts the outcomes it sees in a local sliding window (time buckets). When the failure
 *   rate or slow-call rate passes its threshold (with at least minCalls calls), that instance trips the
 *   breaker by a compare-and-swap on the shared state (generation gen -> gen+1) and publishes it.
 * - The shared state (coordination backend) is the truth every instance follows: pub/sub carries each
 *   transition at once, and a periodic sync (1 s) heals a lost message.
 * - Half-open probes are permits counted in the backend per generation, so across all instances at most
 *   `halfOpenProbes` calls reach the upstream. A probe failure reopens; enough successes close. A probe
 *   that never reports (its instance died) leaves a stale half-open state that the next caller replaces
 *   with a fresh generation after probeTimeoutMs, so the breaker never stays half-open for good.
 * - Closed-state checks are a map read: no I/O on the hot path.
 */
import type { BreakerSettings } from '../core/model.js';
import type { Clock } from '../lib/clock.js';
import {
  type BreakerStore,
  type SharedBreakerState,
  type BreakerStateName,
  CLOSED_INITIAL,
} from '../coord/types.js';

export interface BreakerPermit {
  channel: string;
  gen: number;
  probe: boolean;
}

export type AcquireResult =
  | { ok: true; permit: BreakerPermit }
  | { ok: false; reason: 'breaker_open' | 'breaker_forced_open' | 'breaker_half_open' };

export interface CallOutcome {
  /** Counts against health (5xx, timeouts, resets...). */
  failure: boolean;
  /** Time to first byte, for the slow-call rate. */
  durationMs: number;
  /** Neither success nor failure (client cancelled, client error): only frees a probe. */
  neutral?: boolean;
}

const BUCKETS = 10;

/** Time-bucketed counts over the last windowMs. */
class SlidingWindow {
  private readonly starts = new Float64Array(BUCKETS);
  private readonly calls = new Uint32Array(BUCKETS);
  private readonly fails = new Uint32Array(BUCKETS);
  private readonly slows = new Uint32Array(BUCKETS);
  record(
    now: number,
    windowMs: number,
    failed: boolean,
    slow: boolean,
  ): { calls: number; fails: number; slows: number } {
    const width = Math.max(1, windowMs / BUCKETS);
    const slot = Math.floor(now / width);
    const i = slot % BUCKETS;
    if (this.starts[i] !== slot) {
      this.starts[i] = slot;
      this.calls[i] = 0;
      this.fails[i] = 0;
      this.slows[i] = 0;
    }
    this.calls[i]!++;
    if (failed) this.fails[i]!++;
    if (slow) this.slows[i]!++;
    let calls = 0;
    let fails = 0;
    let slows = 0;
    for (let j = 0; j < BUCKETS; j++) {
      if (slot - this.starts[j]! < BUCKETS) {
        calls += this.calls[j]!;
        fails += this.fails[j]!;
        slows += this.slows[j]!;
      }
    }
    return { calls, fails, slows };
  }
  clear(): void {
    this.starts.fill(-1);
  }
  totals(now: number, windowMs: number): { calls: number; failures: number; slow: number } {
    const slot = Math.floor(now / Math.max(1, windowMs / BUCKETS));
    let calls = 0;
    let failures = 0;
    let slow = 0;
    for (let j = 0; j < BUCKETS; j++) {
      if (slot - this.starts[j]! < BUCKETS) {
        calls += this.calls[j]!;
        failures += this.fails[j]!;
        slow += this.slows[j]!;
      }
    }
    return { calls, failures, slow };
  }
}

export type TransitionListener = (channel: string, from: BreakerStateName, to: SharedBreakerState) => void;

export class BreakerRegistry {
  private readonly shared = new Map<string, SharedBreakerState>();
  private readonly windows = new Map<string, SlidingWindow>();
  private readonly listeners: TransitionListener[] = [];
  private readonly windowMsByChannel = new Map<string, number>();

  constructor(
    private readonly store: BreakerStore,
    private readonly clock: Clock,
    /** Tells the other instances (pub/sub); the message is the new state. */
    private readonly broadcast: (channel: string, state: SharedBreakerState) => void,
  ) {}

  onTransition(l: TransitionListener): void {
    this.listeners.push(l);
  }

  state(channel: string): SharedBreakerState {
    return this.shared.get(channel) ?? CLOSED_INITIAL;
  }

  states(): Map<string, SharedBreakerState> {
    return new Map(this.shared);
  }

  /** This instance's counts in the channel's current window (what the trip decision looks at). */
  windowCounts(channel: string, windowMs = 30_000): { calls: number; failures: number; slow: number } {
    const w = this.windows.get(channel);
    const ms = this.windowMsByChannel.get(channel) ?? windowMs;
    return w ? w.totals(this.clock.now(), ms) : { calls: 0, failures: 0, slow: 0 };
  }

  /** A cheap, synchronous "would this channel refuse right now?" for routing and listings. */
  refusesNow(channel: string, now = this.clock.now()): 'breaker_open' | 'breaker_forced_open' | null {
    const s = this.shared.get(channel);
    if (!s) return null;
    if (s.state === 'forced_open') return 'breaker_forced_open';
    if (s.state === 'open' && now < s.openUntil) return 'breaker_open';
    return null;
  }

  async acquire(channel: string, cfg: BreakerSettings): Promise<AcquireResult> {
    let s = this.state(channel);
    if (s.state === 'closed') return { ok: true, permit: { channel, gen: s.gen, probe: false } };
    if (s.state === 'forced_open') return { ok: false, reason: 'breaker_forced_open' };
    const now = this.clock.now();
    if (s.state === 'open') {
      if (now < s.openUntil) return { ok: false, reason: 'breaker_open' };
      s = await this.transition(channel, s, {
        state: 'half_open',
        openUntil: 0,
        reason: 'open wait elapsed',
      });
    } else if (s.state === 'half_open' && now - s.since > cfg.probeTimeoutMs * 2) {
      // Probes of this generation never reported (their instance died): start a fresh round of probes.
      s = await this.transition(channel, s, { state: 'half_open', openUntil: 0, reason: 'stale half-open' });
    }
    if (s.state === 'closed') return { ok: true, permit: { channel, gen: s.gen, probe: false } };
    if (s.state !== 'half_open')
      return { ok: false, reason: s.state === 'forced_open' ? 'breaker_forced_open' : 'breaker_open' };
    const granted = await this.store.acquireProbe(channel, s.gen, cfg.halfOpenProbes, cfg.probeTimeoutMs * 4);
    return granted
      ? { ok: true, permit: { channel, gen: s.gen, probe: true } }
      : { ok: false, reason: 'breaker_half_open' };
  }

  async onResult(permit: BreakerPermit, cfg: BreakerSettings, outcome: CallOutcome): Promise<void> {
    const s = this.state(permit.channel);
    if (s.gen !== permit.gen) return; // a result from an older generation says nothing about this one
    const now = this.clock.now();
    if (permit.probe) {
      if (s.state !== 'half_open' || outcome.neutral) return;
      if (outcome.failure) {
        await this.transition(permit.channel, s, {
          state: 'open',
          openUntil: now + cfg.openMs,
          reason: 'probe failed',
        });
        return;
      }
      const n = await this.store.probeSucceeded(permit.channel, s.gen, cfg.probeTimeoutMs * 4);
      if (n >= cfg.halfOpenProbes)
        await this.transition(permit.channel, s, {
          state: 'closed',
          openUntil: 0,
          reason: 'probes succeeded',
        });
      return;
    }
    if (s.state !== 'closed' || outcome.neutral) return;
    let w = this.windows.get(permit.channel);
    if (!w) {
      w = new SlidingWindow();
      w.clear();
      this.windows.set(permit.channel, w);
    }
    this.windowMsByChannel.set(permit.channel, cfg.windowMs);
    const slow = outcome.durationMs >= cfg.slowCallMs;
    const t = w.record(now, cfg.windowMs, outcome.failure, slow);
    if (t.calls < cfg.minCalls) return;
    const failRate = t.fails / t.calls;
    const slowRate = t.slows / t.calls;
    if (failRate >= cfg.failureRate || slowRate >= cfg.slowCallRate) {
      const reason =
        failRate >= cfg.failureRate
          ? `failure rate ${Math.round(failRate * 100)}% over ${t.calls} calls`
          : `slow-call rate ${Math.round(slowRate * 100)}% over ${t.calls} calls`;
      w.clear();
      await this.transition(permit.channel, s, { state: 'open', openUntil: now + cfg.openMs, reason });
    }
  }

  /** Manual escape hatch: open until closed by hand, whatever the traffic says. */
  forceOpen(channel: string, reason = 'forced open by operator'): Promise<SharedBreakerState> {
    return this.force(channel, { state: 'forced_open', openUntil: Number.MAX_SAFE_INTEGER, reason });
  }

  /** Closes (from any state, forced-open included) and forgets the window. */
  reset(channel: string, reason = 'reset by operator'): Promise<SharedBreakerState> {
    this.windows.get(channel)?.clear();
    return this.force(channel, { state: 'closed', openUntil: 0, reason });
  }

  /** A state heard from another instance (pub/sub or sync): newer generations win. */
  applyRemote(channel: string, st: SharedBreakerState): void {
    const cur = this.state(channel);
    if (st.gen <= cur.gen) return;
    this.shared.set(channel, st);
    if (st.state === 'closed') this.windows.get(channel)?.clear();
    for (const l of this.listeners) l(channel, cur.state, st);
  }

  async sync(): Promise<void> {
    const all = await this.store.getAll();
    for (const [ch, st] of all) this.applyRemote(ch, st);
  }

  private async force(
    channel: string,
    next: Omit<SharedBreakerState, 'gen' | 'since'>,
  ): Promise<SharedBreakerState> {
    for (let i = 0; i < 20; i++) {
      const cur = this.state(channel);
      const res = await this.store.cas(channel, cur.gen, {
        ...next,
        gen: cur.gen + 1,
        since: this.clock.now(),
      });
      this.adopt(channel, cur, res.current, res.ok);
      if (res.ok) return res.current;
    }
    throw new Error(`breaker ${channel}: could not win the state update`);
  }

  /** CAS from `from` to `next`; whoever loses adopts the winner's state. Returns the state now in force. */
  private async transition(
    channel: string,
    from: SharedBreakerState,
    next: Omit<SharedBreakerState, 'gen' | 'since'>,
  ): Promise<SharedBreakerState> {
    const res = await this.store.cas(channel, from.gen, {
      ...next,
      gen: from.gen + 1,
      since: this.clock.now(),
    });
    this.adopt(channel, from, res.current, res.ok);
    return this.state(channel);
  }

  private adopt(channel: string, from: SharedBreakerState, st: SharedBreakerState, wrote: boolean): void {
    const cur = this.state(channel);
    if (st.gen > cur.gen) {
      this.shared.set(channel, st);
      for (const l of this.listeners) l(channel, from.state, st);
    }
    if (wrote) this.broadcast(channel, st);
  }
}
