import { describe, expect, it } from 'vitest';
import { NameCache } from '../../src/lib/name-cache.js';

describe('NameCache', () => {
  it('builds a name once per parts, and starts over past its bound', () => {
    const c = new NameCache<string[]>(3);
    let made = 0;
    const get = (a: string, b: string, cc: string) => c.get(a, b, cc, () => (made++, [`${a}:${b}:${cc}`]));
    const first = get('app', 'key', 'k1');
    expect(get('app', 'key', 'k1')).toBe(first); // the same object, not an equal one
    expect(first).toEqual(['app:key:k1']);
    get('app', 'key', 'k2');
    get('app2', 'key', 'k1');
    expect(made).toBe(3);
    get('app3', 'key', 'k1'); // the 4th name: the cache starts over
    expect(made).toBe(4);
    expect(get('app', 'key', 'k1')).not.toBe(first);
    expect(made).toBe(5);
  });
});
