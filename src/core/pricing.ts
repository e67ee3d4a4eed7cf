/**
 * Pricing: usage x unit prices -> integer micro-units. Pure, integer arithmetic only (no float touches
 * money; usage counts are numbers, converted to bigint once, after rounding up).
 *
 * Rounding, always up to the next micro-unit, never an undercharge:
 *  - the token part is (uncached input x input rate + cached x cached rate + output x output rate) / 10^6,
 *    summed exactly and rounded up ONCE (not per category), so it overcharges by less than 1 micro-unit;
 *  - fractional counts (video seconds, or a provider's odd token figure) are rounded up to whole units;
 *  - the multiplier (parts per million, 1_000_000 = x1) applies to the whole total, rounded up.
 *
 * Cached prompt tokens are a subset of inputTokens (src/core/usage.ts): billed at the cached rate, the rest
 * of the prompt at the input rate; cachedTokens above inputTokens are capped at inputTokens. So the price
 * never falls when any figure grows, except that moving prompt tokens into the cache (same inputTokens,
 * more cachedTokens) costs less when the cached rate is lower — the discount a cache is for.
 *
 */

export interface UnitPrices {
  inputPerMTok: bigint;
  outputPerMTok: bigint;
  cachedPerMTok: bigint;
  perRequest: bigint;
  perImage: bigint;
  perVideoSecond: bigint;
  perTrack: bigint;
  /** Per million characters of input (text to speech). */
  perMChar: bigint;
  /** Per second of audio (transcription, translation). */
  perAudioSecond: bigint;
  /** Per answer served from the response cache (instead of everything else). */
  perCacheHit: bigint;
}

export interface MeteredUsage {
  /** All prompt tokens, cached ones included. */
  inputTokens: number;
  outputTokens: number;
  /** Prompt tokens read from cache (a subset of inputTokens). */
  cachedTokens: number;
  images?: number;
  videoSeconds?: number;
  tracks?: number;
  /** Characters of input (speech). */
  characters?: number;
  /** Seconds of audio (transcription). */
  audioSeconds?: number;
}

export const ONE_MILLION = 1_000_000n;

/** ceil(a / b) for a >= 0, b > 0. */
export function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

/** A usage count as a whole bigint, rounded up; NaN, infinities and negatives are refused. */
function count(v: number | undefined, what: string): bigint {
  if (v === undefined) return 0n;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new RangeError(`${what} must be a finite number >= 0, got ${String(v)}`);
  return BigInt(Math.ceil(v));
}

function rate(v: bigint, what: string): bigint {
  if (typeof v !== 'bigint' || v < 0n) throw new RangeError(`${what} must be a bigint >= 0`);
  return v;
}

/** The price of one request's usage, in micro-units (>= 0). */
export function priceOf(p: UnitPrices, u: MeteredUsage, multiplierPpm: bigint = ONE_MILLION): bigint {
  const input = count(u.inputTokens, 'inputTokens');
  const cachedRaw = count(u.cachedTokens, 'cachedTokens');
  const cached = cachedRaw < input ? cachedRaw : input;
  const output = count(u.outputTokens, 'outputTokens');
  const tokenMillionths =
    (input - cached) * rate(p.inputPerMTok, 'inputPerMTok') +
    cached * rate(p.cachedPerMTok, 'cachedPerMTok') +
    output * rate(p.outputPerMTok, 'outputPerMTok');
  const total =
    ceilDiv(tokenMillionths, ONE_MILLION) +
    rate(p.perRequest, 'perRequest') +
    count(u.images, 'images') * rate(p.perImage, 'perImage') +
    count(u.videoSeconds, 'videoSeconds') * rate(p.perVideoSecond, 'perVideoSecond') +
    count(u.tracks, 'tracks') * rate(p.perTrack, 'perTrack') +
    ceilDiv(count(u.characters, 'characters') * rate(p.perMChar, 'perMChar'), ONE_MILLION) +
    count(u.audioSeconds, 'audioSeconds') * rate(p.perAudioSecond, 'perAudioSecond');
  const m = rate(multiplierPpm, 'multiplierPpm');
  return m === ONE_MILLION ? total : ceilDiv(total * m, ONE_MILLION);
}

/** The price of an answer served from the response cache: the cache-hit rate alone, multiplier applied. */
export function cacheHitPrice(p: UnitPrices, multiplierPpm: bigint = ONE_MILLION): bigint {
  const total = rate(p.perCacheHit, 'perCacheHit');
  const m = rate(multiplierPpm, 'multiplierPpm');
  return m === ONE_MILLION ? total : ceilDiv(total * m, ONE_MILLION);
}
