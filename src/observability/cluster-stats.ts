/**
 * Cluster-wide console figures. Each instance keeps its own traffic ring (stats.ts) and per-channel window
 * (channel-stats.ts) in memory; with a shared store (Redis) it publishes both every few seconds under its
 * own key with a TTL, and the console's reads merge every live instance's latest dump with this instance's
 * current one. An instance that stops publishing drops out when its key expires (TTL = 3 intervals), so a
 * crashed instance's last minute is lost from the figures, never counted twice. Without a shared store
 * (the embedded mode: one process) this instance is the cluster.
 */
import { ChannelStats, type ChannelDump, type ChannelFigures } from './channel-stats.js';
import { TrafficStats, type StatsSeries, type TrafficDump } from './stats.js';

/** Where instances leave their dumps (coord/stats-share.ts implements it on Redis). */
export interface StatsShare {
  put(instance: string, json: string, ttlMs: number): Promise<void>;
  /** Every live instance's latest dump. */
  all(): Promise<Array<{ instance: string; json: string }>>;
  remove(instance: string): Promise<void>;
}

export interface Scope {
  /** 'cluster': summed over `instances` live instances; 'instance': this one only (the store didn't answer). */
  scope: 'cluster' | 'instance';
  instances: number;
}

interface Dump {
  at: number;
  traffic: TrafficDump;
  channels: ChannelDump;
}

export const PUBLISH_MS = 5_000;

export class ClusterStats {
  private timer: NodeJS.Timeout | null = null;
  /** The merged dumps, read at most once a second whatever the number of console viewers. */
  private cache: { at: number; p: Promise<{ others: Dump[]; ok: boolean }> } | null = null;

  constructor(
    readonly traffic: TrafficStats,
    readonly channels: ChannelStats,
    readonly instance: string,
    private readonly share: StatsShare | null,
    private readonly publishMs = PUBLISH_MS,
  ) {}

  start(): void {
    if (!this.share || this.timer) return;
    void this.publish();
    this.timer = setInterval(() => void this.publish(), this.publishMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // A stopping instance leaves at once rather than at its key's expiry (its traffic leaves with it).
    await this.share?.remove(this.instance).catch(() => {});
  }

  /** Writes this instance's dump now (also called by tests to skip the wait). */
  async publish(): Promise<void> {
    if (!this.share) return;
    const now = Date.now();
    const d: Dump = { at: now, traffic: this.traffic.dump(now), channels: this.channels.dump(now) };
    try {
      await this.share.put(this.instance, JSON.stringify(d), this.publishMs * 3);
    } catch {
      // Redis away: the console shows this instance's own figures and says so (scope 'instance').
    }
  }

  private async others(): Promise<{ others: Dump[]; ok: boolean }> {
    if (!this.share) return { others: [], ok: true };
    const now = Date.now();
    if (this.cache && now - this.cache.at < 1_000) return this.cache.p;
    const p = this.share.all().then(
      (rows) => ({
        others: rows
          .filter((r) => r.instance !== this.instance)
          .flatMap((r) => {
            try {
              return [JSON.parse(r.json) as Dump];
            } catch {
              return [];
            }
          }),
        ok: true,
      }),
      () => ({ others: [], ok: false }),
    );
    this.cache = { at: now, p };
    return p;
  }

  async series(now: number, minutes: number, stepS: number): Promise<StatsSeries & Scope> {
    const { others, ok } = await this.others();
    if (!others.length)
      return {
        scope: ok ? 'cluster' : 'instance',
        instances: 1,
        ...this.traffic.series(now, minutes, stepS),
      };
    const sum = new TrafficStats();
    sum.absorb(this.traffic.dump(now), now);
    for (const d of others) sum.absorb(d.traffic, now);
    return { scope: 'cluster', instances: others.length + 1, ...sum.series(now, minutes, stepS) };
  }

  async channelFigures(now: number, minutes: number): Promise<Scope & { data: ChannelFigures[] }> {
    const { others, ok } = await this.others();
    if (!others.length)
      return { scope: ok ? 'cluster' : 'instance', instances: 1, data: this.channels.figures(now, minutes) };
    const sum = new ChannelStats();
    sum.absorb(this.channels.dump(now), now);
    for (const d of others) sum.absorb(d.channels, now);
    return { scope: 'cluster', instances: others.length + 1, data: sum.figures(now, minutes) };
  }
}
