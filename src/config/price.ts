/**
 * Prices: what the upstream charges us (cost) and what we charge the app (sale), per alias and optionally
 * per channel, in integer micro-units. The price in force at the request's time is the one used.
 */
import type { UnitPrices } from '../core/pricing.js';

export type { UnitPrices } from '../core/pricing.js';

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

export const PRICE_UNITS = [
  'input_per_mtok',
  'output_per_mtok',
  'cached_per_mtok',
  'per_request',
  'per_image',
  'per_video_second',
  'per_track',
  'per_mchar',
  'per_audio_second',
  'per_cache_hit',
] as const;
const UNITS = PRICE_UNITS;

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
    perMChar: b(UNITS[7]),
    perAudioSecond: b(UNITS[8]),
    perCacheHit: b(UNITS[9]),
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
