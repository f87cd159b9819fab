// A bounded memo for reads whose answers never change: everything at or before a committed
// stream position is immutable, so the same (room, range) read is answered once while a
// burst of woken long-polls all ask for it.
export class ImmutableReadCache<V> {
  private readonly entries = new Map<string, Promise<V>>();

  constructor(private readonly max = 1000) {}

  get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit) {
      // Refresh its place: the map's order is the eviction order.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const p = load();
    this.entries.set(key, p);
    p.catch(() => this.entries.delete(key)); // never remember a failure
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
    return p;
  }
}
