import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type UnitPrices, priceOf as priceOfCore } from '../../src/core/pricing.js';
import type { Usage } from '../../src/core/usage.js';

const priceOf = (
  p: UnitPrices,
  u: Usage,
  m: { images?: number; videoSeconds?: number; tracks?: number } = {},
  mult?: bigint,
) => priceOfCore(p, { ...u, ...m }, mult);

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
  cacheWriteTokens: 0,
});

describe('priceOf (integer micro-units)', () => {
  it('bills cached prompt tokens at the cached rate and rounds up, never down', () => {
    const p = {
      ...zero,
      inputPerMTok: 2_500_000n,
      cachedPerMTok: 1_250_000n,
      outputPerMTok: 10_000_000n,
      perRequest: 7n,
    };
    // 1000 input of which 400 cached, 100 output: 600*2.5 + 400*1.25 + 100*10 = 1500 + 500 + 1000 = 3000, + 7
    expect(priceOf(p, u(1000, 100, 400))).toBe(3007n);
    expect(priceOf({ ...zero, inputPerMTok: 1n }, u(1, 0))).toBe(1n); // 0.000001 micro rounds up to 1
    expect(
      priceOf({ ...zero, perImage: 40_000n, perVideoSecond: 1_000n, perTrack: 5n }, u(0, 0), {
        images: 2,
        videoSeconds: 2.1,
        tracks: 1,
      }),
    ).toBe(80_000n + 3_000n + 5n);
    expect(priceOf({ ...zero, perRequest: 3n }, u(0, 0), {}, 1_500_000n)).toBe(5n); // 4.5 -> 5
  });

  it('is monotonic in every usage figure and never negative (property)', () => {
    const big = fc.bigInt({ min: 0n, max: 10n ** 12n });
    fc.assert(
      fc.property(
        big,
        big,
        big,
        big,
        fc.nat(1e7),
        fc.nat(1e7),
        fc.nat(1e7),
        fc.nat(1e7),
        (a, b, c, d, i, o, extraI, extraO) => {
          const p = { ...zero, inputPerMTok: a, outputPerMTok: b, cachedPerMTok: c, perRequest: d };
          const x = priceOf(p, u(i, o));
          expect(x >= 0n).toBe(true);
          expect(priceOf(p, u(i + extraI, o)) >= x).toBe(true);
          expect(priceOf(p, u(i, o + extraO)) >= x).toBe(true);
        },
      ),
    );
  });
});
