/**
 * Recent upstream figures per channel for the console's channel list: attempts, failures and a latency
 * histogram in one-minute slots over the last 15 minutes. Fed by every upstream attempt (the relay's
 * onAttempt: what the channel itself did, whichever request it served), merged across instances by
 * cluster-stats.ts like the overview's ring.
 */
import client from 'prom-client';
import { BUCKETS, bucketOf, quantile, sparse } from './stats.js';

const SLOT_MS = 60_000;
/** Fifteen one-minute slots: the longest window the console asks for. */
export const CHANNEL_SLOTS = 15;
/** More channels than this are not tracked (their figures show as missing): memory stays bounded. */
const MAX_CHANNELS = 2_000;

interface Ring {
  period: Float64Array;
  /** Per slot: attempts, failures. */
  counts: Float64Array;
  hist: Uint32Array;
}

export interface ChannelDump {
  [channel: string]: Array<{ p: number; n: number; f: number; h: Array<[number, number]> }>;
}

export interface ChannelFigures {
  channel: string;
  requests: number;
  errors: number;
  /** errors / requests (0 when none). */
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export class ChannelStats {
  private readonly rings = new Map<string, Ring>();

  private slot(channel: string, now: number): [Ring, number] | null {
    let r = this.rings.get(channel);
    if (!r) {
      if (this.rings.size >= MAX_CHANNELS) return null;
      r = {
        period: new Float64Array(CHANNEL_SLOTS).fill(-1),
        counts: new Float64Array(CHANNEL_SLOTS * 2),
        hist: new Uint32Array(CHANNEL_SLOTS * BUCKETS),
      };
      this.rings.set(channel, r);
    }
    const p = Math.floor(now / SLOT_MS);
    const s = p % CHANNEL_SLOTS;
    if (r.period[s] !== p) {
      r.period[s] = p;
      r.counts[s * 2] = 0;
      r.counts[s * 2 + 1] = 0;
      r.hist.fill(0, s * BUCKETS, (s + 1) * BUCKETS);
    }
    return [r, s];
  }

  /** One upstream attempt: `failed` for any outcome but a 2xx answer. */
  record(now: number, channel: string, failed: boolean, ms: number): void {
    const at = this.slot(channel, now);
    if (!at) return;
    const [r, s] = at;
    r.counts[s * 2]!++;
    if (failed) r.counts[s * 2 + 1]!++;
    r.hist[s * BUCKETS + bucketOf(ms)]!++;
  }

  dump(now: number): ChannelDump {
    const last = Math.floor(now / SLOT_MS);
    const out: ChannelDump = {};
    for (const [ch, r] of this.rings) {
      const slots: ChannelDump[string] = [];
      for (let s = 0; s < CHANNEL_SLOTS; s++) {
        const p = r.period[s]!;
        if (p <= last - CHANNEL_SLOTS || p > last || r.counts[s * 2] === 0) continue;
        slots.push({ p, n: r.counts[s * 2]!, f: r.counts[s * 2 + 1]!, h: sparse(r.hist, s * BUCKETS) });
      }
      if (slots.length) out[ch] = slots;
    }
    return out;
  }

  absorb(d: ChannelDump, now: number): void {
    const last = Math.floor(now / SLOT_MS);
    for (const [ch, slots] of Object.entries(d)) {
      for (const x of slots) {
        if (!(x.p > last - CHANNEL_SLOTS && x.p <= last)) continue;
        const at = this.slot(ch, x.p * SLOT_MS);
        if (!at) break;
        const [r, s] = at;
        r.counts[s * 2]! += x.n;
        r.counts[s * 2 + 1]! += x.f;
        for (const [b, n] of x.h) if (b >= 0 && b < BUCKETS) r.hist[s * BUCKETS + b]! += n;
      }
    }
  }

  /** Every channel seen in the last `minutes` (1..15, the minute in progress included). */
  figures(now: number, minutes: number): ChannelFigures[] {
    const last = Math.floor(now / SLOT_MS);
    const m = Math.min(CHANNEL_SLOTS, Math.max(1, minutes));
    const out: ChannelFigures[] = [];
    for (const [ch, r] of this.rings) {
      let n = 0;
      let f = 0;
      const h = new Uint32Array(BUCKETS);
      for (let s = 0; s < CHANNEL_SLOTS; s++) {
        const p = r.period[s]!;
        if (p <= last - m || p > last) continue;
        n += r.counts[s * 2]!;
        f += r.counts[s * 2 + 1]!;
        for (let b = 0; b < BUCKETS; b++) h[b]! += r.hist[s * BUCKETS + b]!;
      }
      if (n === 0) continue;
      out.push({
        channel: ch,
        requests: n,
        errors: f,
        error_rate: f / n,
        p50_ms: quantile(h, n, 0.5),
        p95_ms: quantile(h, n, 0.95),
      });
    }
    return out.sort((a, b) => a.channel.localeCompare(b.channel));
  }
}

/** The operator's Test-channel actions, by channel and result (ok, or the failure's code). */
export function channelTestCounter(registry: client.Registry): client.Counter<'channel' | 'result'> {
  return new client.Counter({
    name: 'anima_channel_tests_total',
    help: 'Test-channel actions from the admin API, by channel and result (ok or an error code)',
    labelNames: ['channel', 'result'] as const,
    registers: [registry],
  });
}
