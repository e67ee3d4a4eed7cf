/**
 * Which limits quota slices leave to the exact path (src/quota/slices.ts, "Exact mode"): the thresholds
 * as a table.
 */
import { describe, expect, it } from 'vitest';
import { sliceable } from '../../src/quota/slices.js';
import type { ScopeLimits } from '../../src/quota/types.js';

const scope = (over: Partial<ScopeLimits>): ScopeLimits => ({
  scope: 'key',
  id: 'k',
  maxConcurrency: 0,
  qps: 0,
  qpsBurst: 1,
  tokensPerMinute: 0,
  tokensPerDay: 0,
  costPerDay: 0,
  costPerMonth: 0,
  ...over,
});

describe('sliceable', () => {
  const table: Array<[string, Partial<ScopeLimits>, boolean]> = [
    ['no limit at all', {}, true],
    ['token and cost limits only', { tokensPerMinute: 1000, costPerDay: 5 }, true],
    ['max concurrency 31', { maxConcurrency: 31 }, false],
    ['max concurrency 32', { maxConcurrency: 32 }, true],
    ['qps 49 with a large burst', { qps: 49, qpsBurst: 100 }, false],
    ['qps 1000 with the default burst of 1', { qps: 1000, qpsBurst: 1 }, false],
    ['qps 1000, burst 14 (15 emissions: under 2 per slice of 8)', { qps: 1000, qpsBurst: 14 }, false],
    ['qps 1000, burst 15 (16 emissions)', { qps: 1000, qpsBurst: 15 }, true],
  ];
  for (const [name, over, want] of table)
    it(name, () => {
      expect(sliceable(scope(over))).toBe(want);
    });

  it('a smaller fleet factor slices smaller bursts', () => {
    expect(sliceable(scope({ qps: 1000, qpsBurst: 3 }), 2)).toBe(true);
    expect(sliceable(scope({ qps: 1000, qpsBurst: 2 }), 2)).toBe(false);
  });
});
