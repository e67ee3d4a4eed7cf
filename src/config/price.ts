/**
 * Prices: what the upstream charges us (cost) and what we charge the app (sale), per alias and optionally
 * per channel, in integer micro-units. The price in force at the request's time is the one used.
 */
import type { Usage } from '../core/usage.js';

export interface UnitPrices {
  inputPerMTok: bigint;
  outputPerMTok: bigint;
  cachedPerMTok: bigint;
  perRequest: bigint;
  perImage: bigint;
  perVideoSecond: bigint;
  perTrack: bigint;
}

export interface Price {
  id: string;
  alias: string;
  /** null = any channel of the alias (a channel-specific row wins). */
  channel: string | null;
  cost: UnitPrices;
  sale: UnitPrices;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

const UNITS = ['input_per_mtok', 'output_per_mtok', 'cached_per_mtok', 'per_request', 'per_image', 'per_video_second', 'per_track'] as const;

function units(r: Record<string, unknown>, side: 'cost' | 'sale'): UnitPrices {
  const b = (u: string) => BigInt(String(r[`${side}_${u}`] ?? 0));
  return {
    inputPerMTok: b(UNITS[0]),
    outputPerMTok: b(UNITS[1]),
    cachedPerMTok: b(UNITS[2]),
    perRequest: b(UNITS[3]),
    perImage: b(UNITS[4]),
    perVideoSecond: b(UNITS[5]),
    perTrack: b(UNITS[6]),
  };
}

export function toPrice(r: any): Price {
  return {
    id: String(r.id),
    alias: r.alias,
    channel: r.channel ?? null,
    cost: units(r, 'cost'),
    sale: units(r, 'sale'),
    versionNo: r.version_no,
    effectiveFrom: new Date(r.effective_from).getTime(),
    effectiveTo: r.effective_to ? new Date(r.effective_to).getTime() : null,
  };
}

export const PRICE_COLUMNS = (['cost', 'sale'] as const).flatMap((side) => UNITS.map((u) => `${side}_${u}`));

const M = 1_000_000n;
const ceilDiv = (a: bigint, b: bigint) => (a + b - 1n) / b;

export interface Metered {
  images?: number;
  videoSeconds?: number;
  tracks?: number;
}

/**
 * The price of one request's usage, in micro-units, integer arithmetic only. Cached prompt tokens are
 * billed at the cached rate, the rest of the prompt at the input rate. Per-million-token prices round
 * UP to the next micro-unit (never undercharge); a multiplier (parts per million, 1_000_000 = x1) applies
 * to the total, rounding up as well.
 */
export function priceOf(p: UnitPrices, u: Usage, m: Metered = {}, multiplierPpm = 1_000_000n): bigint {
  const cached = BigInt(Math.max(0, Math.min(u.cachedTokens, u.inputTokens)));
  const input = BigInt(Math.max(0, u.inputTokens)) - cached;
  const output = BigInt(Math.max(0, u.outputTokens));
  const tokens = input * p.inputPerMTok + cached * p.cachedPerMTok + output * p.outputPerMTok;
  const total =
    ceilDiv(tokens, M) +
    p.perRequest +
    BigInt(m.images ?? 0) * p.perImage +
    BigInt(Math.ceil(m.videoSeconds ?? 0)) * p.perVideoSecond +
    BigInt(m.tracks ?? 0) * p.perTrack;
  return multiplierPpm === 1_000_000n ? total : ceilDiv(total * multiplierPpm, M);
}
