// A bounded memo for reads whose answers never change: everything at or before a committed
// stream position is immutable, so the same (room, range) read is answered once while a
// burst of woken long-polls all ask for it.
import { LRUCache } from 'lru-cache';

export class ImmutableReadCache<V> {
  private readonly entries: LRUCache<string, Promise<V>>;

  constructor(max = 1000) {
    this.entries = new LRUCache<string, Promise<V>>({ max });
  }

  get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key); // a hit becomes the most recently used
    if (hit) return hit;
    const p = load();
    this.entries.set(key, p);
    // Never remember a failure (but leave alone a newer load of the key, should this one
    // have been evicted and the key loaded again meanwhile).
    p.catch(() => {
      if (this.entries.peek(key) === p) this.entries.delete(key);
    });
    return p;
  }

  /** Entries held (tests). */
  get size(): number {
    return this.entries.size;
  }
}
