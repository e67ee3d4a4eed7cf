import type { Clock } from '../lib/clock.js';
import { type BreakerStore, type ChannelHealth, HEALTHY } from '../coord/types.js';

export type HealthRefusal = 'cooldown' | 'credential_exhausted' | 'credential_invalid';

/**
 * Channel health that is not a breaker: a 429 with Retry-After rests the channel for that long without
 * counting as a failure; `insufficient_quota` and 401/403 take the channel's credential out until an
 * operator resets it. Shared like breaker state: written to the backend, broadcast, synced.
 */
/** A credential this instance took out: `prev` is the health it replaced (the same on every instance). */
export type CredentialListener = (
  channel: string,
  status: 'exhausted' | 'invalid',
  prev: ChannelHealth,
) => void;

export class ChannelHealthRegistry {
  private readonly health = new Map<string, ChannelHealth>();
  private readonly credentialListeners: CredentialListener[] = [];
  constructor(
    private readonly store: BreakerStore,
    private readonly clock: Clock,
    private readonly broadcast: (channel: string, h: ChannelHealth) => void,
  ) {}

  onCredentialOut(l: CredentialListener): void {
    this.credentialListeners.push(l);
  }

  get(channel: string): ChannelHealth {
    return this.health.get(channel) ?? HEALTHY;
  }

  all(): Map<string, ChannelHealth> {
    return new Map(this.health);
  }

  refusesNow(channel: string, now = this.clock.now()): HealthRefusal | null {
    const h = this.health.get(channel);
    if (!h) return null;
    if (h.credential === 'exhausted') return 'credential_exhausted';
    if (h.credential === 'invalid') return 'credential_invalid';
    if (now < h.cooldownUntil) return 'cooldown';
    return null;
  }

  async cooldown(channel: string, ms: number): Promise<void> {
    const until = this.clock.now() + ms;
    const cur = this.get(channel);
    if (cur.cooldownUntil >= until) return;
    await this.write(channel, { ...cur, cooldownUntil: until });
  }

  async markCredential(channel: string, status: 'exhausted' | 'invalid'): Promise<void> {
    const cur = this.get(channel);
    if (cur.credential === status) return;
    try {
      await this.write(channel, { ...cur, credential: status, credentialSince: this.clock.now() });
    } finally {
      // Out of rotation here even when the shared store didn't take the write: tell the listeners.
      for (const l of this.credentialListeners) l(channel, status, cur);
    }
  }

  async reset(channel: string): Promise<void> {
    await this.write(channel, { ...HEALTHY });
  }

  applyRemote(channel: string, h: ChannelHealth): void {
    if ((h.updatedAt ?? 0) > this.get(channel).updatedAt) this.health.set(channel, h);
  }

  async sync(): Promise<void> {
    const all = await this.store.getHealth();
    for (const [ch, h] of all) this.applyRemote(ch, h);
  }

  private async write(channel: string, next: ChannelHealth): Promise<void> {
    const h = { ...next, updatedAt: Math.max(this.clock.now(), this.get(channel).updatedAt + 1) };
    this.health.set(channel, h);
    try {
      await this.store.setHealth(channel, h);
    } finally {
      this.broadcast(channel, h);
    }
  }
}
