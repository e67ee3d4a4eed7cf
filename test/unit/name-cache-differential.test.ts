/**
 * NameCache against building each name anew (what it replaces; bench/micro/name-cache.ts measures both):
 * for any sequence of lookups, with a bound small enough to start over often, every lookup gives the name
 * that building it would.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NameCache } from '../../src/lib/name-cache.js';

describe('NameCache against building names anew', () => {
  it('every lookup gives the name built from its parts (property)', () => {
    const part = fc.constantFrom('a', 'b', 'app_1', 'key:2', '', '{x}');
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.tuple(part, part, part), { maxLength: 60 }),
        (max, seq) => {
          const c = new NameCache<[string, string]>(max);
          const build = (a: string, b: string, d: string): [string, string] => [
            `p:{q:${a}}:c:${b}:${d}`,
            `p:{q:${a}}:s:${b}:${d}`,
          ];
          for (const [a, b, d] of seq) expect(c.get(a, b, d, () => build(a, b, d))).toEqual(build(a, b, d));
        },
      ),
    );
  });
});
