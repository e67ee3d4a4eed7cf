import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type UnitPrices, priceOf as priceUsage } from '../../src/core/pricing.js';

const zero: UnitPrices = {
  inputPerMTok: 0n,
  outputPerMTok: 0n,
  cachedPerMTok: 0n,
  perRequest: 0n,
  perImage: 0n,
  perVideoSecond: 0n,
  perTrack: 0n,
  perMChar: 0n,
  perAudioSecond: 0n,
  perCacheHit: 0n,
};
const u = (inputTokens: number, outputTokens: number, cachedTokens = 0) => ({
  inputTokens,
  outputTokens,
  cachedTokens,
});

const rate = fc.bigInt({ min: 0n, max: 10n ** 12n });
const prices: fc.Arbitrary<UnitPrices> = fc.record({
  inputPerMTok: rate,
  outputPerMTok: rate,
  cachedPerMTok: rate,
  perRequest: rate,
  perImage: rate,
  perVideoSecond: rate,
  perTrack: rate,
  perMChar: rate,
  perAudioSecond: rate,
  perCacheHit: rate,
});
const n = fc.nat(10_000_000);
const usage = fc.record({
  inputTokens: n,
  outputTokens: n,
  cachedTokens: n,
  images: fc.nat(100),
  videoSeconds: fc.double({ min: 0, max: 3600, noNaN: true }),
  tracks: fc.nat(100),
  characters: fc.nat(1_000_000),
  audioSeconds: fc.double({ min: 0, max: 3600, noNaN: true }),
});
const ppm = fc.bigInt({ min: 0n, max: 10_000_000n });

describe('priceUsage (integer micro-units)', () => {
  it('bills cached prompt tokens at the cached rate and the rest at the input rate', () => {
    const p = {
      ...zero,
      inputPerMTok: 2_500_000n,
      cachedPerMTok: 1_250_000n,
      outputPerMTok: 10_000_000n,
      perRequest: 7n,
    };
    // 600 uncached x 2.5 + 400 cached x 1.25 + 100 out x 10 = 1500 + 500 + 1000, + 7 per request
    expect(priceUsage(p, u(1000, 100, 400))).toBe(3007n);
    // More cached than prompt tokens: capped at the prompt.
    expect(priceUsage(p, u(1000, 0, 5000))).toBe(1250n + 7n);
  });

  it('rounds up to the next micro-unit, once for the tokens and once for the multiplier', () => {
    expect(priceUsage({ ...zero, inputPerMTok: 1n }, u(1, 0))).toBe(1n); // 0.000001 -> 1
    expect(priceUsage({ ...zero, inputPerMTok: 1n, outputPerMTok: 1n }, u(1, 1))).toBe(1n); // summed before rounding
    expect(priceUsage({ ...zero, inputPerMTok: 1_000_000n }, u(3, 0))).toBe(3n); // exact: no rounding
    expect(priceUsage({ ...zero, perRequest: 3n }, u(0, 0), 1_500_000n)).toBe(5n); // 4.5 -> 5
    expect(priceUsage({ ...zero, perRequest: 3n }, u(0, 0), 0n)).toBe(0n);
    expect(
      priceUsage(
        { ...zero, perImage: 40_000n, perVideoSecond: 1_000n, perTrack: 5n },
        { ...u(0, 0), images: 2, videoSeconds: 2.1, tracks: 1 },
      ),
    ).toBe(80_000n + 3_000n + 5n);
    // Speech per million characters (rounded up once), transcription per started second of audio.
    expect(priceUsage({ ...zero, perMChar: 15_000_000n }, { ...u(0, 0), characters: 1 })).toBe(15n);
    expect(priceUsage({ ...zero, perMChar: 1n }, { ...u(0, 0), characters: 3 })).toBe(1n);
    expect(priceUsage({ ...zero, perAudioSecond: 100n }, { ...u(0, 0), audioSeconds: 2.01 })).toBe(300n);
  });

  it('refuses negative, NaN and infinite figures and negative prices', () => {
    expect(() => priceUsage(zero, u(-1, 0))).toThrow(RangeError);
    expect(() => priceUsage(zero, u(Number.NaN, 0))).toThrow(RangeError);
    expect(() => priceUsage(zero, { ...u(0, 0), videoSeconds: Infinity })).toThrow(RangeError);
    expect(() => priceUsage({ ...zero, perRequest: -1n }, u(0, 0))).toThrow(RangeError);
    expect(() => priceUsage(zero, u(0, 0), -1n)).toThrow(RangeError);
  });

  it('never undercharges and overcharges tokens by less than one micro-unit (property)', () => {
    fc.assert(
      fc.property(prices, n, n, n, (p, i, o, c) => {
        const cached = BigInt(Math.min(c, i));
        const exact =
          (BigInt(i) - cached) * p.inputPerMTok + cached * p.cachedPerMTok + BigInt(o) * p.outputPerMTok; // in millionths
        const tokens = priceUsage(p, u(i, o, c)) - p.perRequest;
        expect(tokens * 1_000_000n >= exact).toBe(true);
        expect((tokens - 1n) * 1_000_000n < exact).toBe(true);
      }),
    );
  });

  it('is never negative and monotonic in every usage figure and the multiplier (property)', () => {
    const more = fc.nat(1_000_000);
    fc.assert(
      fc.property(
        prices,
        usage,
        ppm,
        more,
        fc.double({ min: 0, max: 100, noNaN: true }),
        fc.bigInt({ min: 0n, max: 1_000_000n }),
        (p, x, m, k, ks, km) => {
          const base = priceUsage(p, x, m);
          expect(base >= 0n).toBe(true);
          const grows = (y: typeof x) => expect(priceUsage(p, y, m) >= base).toBe(true);
          grows({ ...x, inputTokens: x.inputTokens + k });
          grows({ ...x, outputTokens: x.outputTokens + k });
          grows({ ...x, images: x.images + k });
          grows({ ...x, videoSeconds: x.videoSeconds + ks });
          grows({ ...x, tracks: x.tracks + k });
          // Cached tokens are prompt tokens: k more cached tokens means k more prompt tokens too.
          grows({
            ...x,
            inputTokens: x.inputTokens + k,
            cachedTokens: Math.min(x.cachedTokens, x.inputTokens) + k,
          });
          expect(priceUsage(p, x, m + km) >= base).toBe(true);
        },
      ),
    );
  });

  it('moving prompt tokens into the cache never costs more when the cached rate is the lower one (property)', () => {
    fc.assert(
      fc.property(prices, n, n, n, (p, i, c, k) => {
        const q = {
          ...p,
          cachedPerMTok: p.cachedPerMTok < p.inputPerMTok ? p.cachedPerMTok : p.inputPerMTok,
        };
        expect(priceUsage(q, u(i, 0, c + k)) <= priceUsage(q, u(i, 0, c))).toBe(true);
      }),
    );
  });
});
