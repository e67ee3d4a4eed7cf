import type { Alias, ChainTarget } from '../core/model.js';
import { weightedPickIndex } from '../lib/weighted.js';

/**
 * The order in which one request tries its alias's channels: tiers in order; inside a tier, a weighted
 * random order (each pick removes the target, so a failed channel is not tried twice). The caller skips
 * targets that are unavailable right now; `weightOf` folds in the channel's own weight.
 */
export function* candidates(
  alias: Alias,
  weightOf: (t: ChainTarget) => number,
  rnd: () => number = Math.random,
): Generator<{ target: ChainTarget; tier: number }> {
  const seen = new Set<string>();
  for (let tier = 0; tier < alias.tiers.length; tier++) {
    const remaining = alias.tiers[tier]!.filter((t) => !seen.has(t.channel + '\0' + t.model));
    while (remaining.length > 0) {
      const i = weightedPickIndex(remaining, weightOf, rnd);
      const [t] = remaining.splice(i, 1);
      seen.add(t!.channel + '\0' + t!.model);
      yield { target: t!, tier };
    }
  }
}
