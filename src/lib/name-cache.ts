/**
 * Names (Redis keys) built once per (a, b, c) and reused. A request names the same few keys as every other
 * request of its app and key; a name built anew each time is a fresh rope string, and each use that needs
 * it whole (a Map lookup, the socket write) flattens and hashes it again. Looked up by its parts, which
 * come from the configuration and are themselves built once. Bounded: past `max` names it starts over.
 */
export class NameCache<V> {
  private readonly root = new Map<string, Map<string, Map<string, V>>>();
  private size = 0;

  constructor(private readonly max = 100_000) {}

  get(a: string, b: string, c: string, make: () => V): V {
    let m1 = this.root.get(a);
    if (!m1) this.root.set(a, (m1 = new Map()));
    let m2 = m1.get(b);
    if (!m2) m1.set(b, (m2 = new Map()));
    let v = m2.get(c);
    if (v === undefined) {
      if (this.size >= this.max) {
        this.root.clear();
        this.size = 0;
        return this.get(a, b, c, make);
      }
      v = make();
      m2.set(c, v);
      this.size++;
    }
    return v;
  }
}
