/**
 * Weighted random pick. Items with weight <= 0 are never picked unless every candidate has weight <= 0,
 * in which case the pick is uniform. Returns the index into `items`, or -1 when `items` is empty.
 */
export function weightedPickIndex<T>(
  items: readonly T[],
  weight: (t: T) => number,
  rnd: () => number = Math.random,
): number {
  if (items.length === 0) return -1;
  if (items.length === 1) return 0;
  let total = 0;
  for (const it of items) total += Math.max(0, weight(it));
  if (total <= 0) return Math.min(items.length - 1, Math.floor(rnd() * items.length));
  let r = rnd() * total;
  for (let i = 0; i < items.length; i++) {
    r -= Math.max(0, weight(items[i]!));
    if (r < 0) return i;
  }
  return items.length - 1;
}
