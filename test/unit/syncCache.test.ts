// The sync cache's invalidation: a value is kept until a committed batch touches its key,
// changed in place by update, and a read in flight while its key changes is not kept.
import { describe, expect, it } from 'vitest';
import { InvalidatedCache } from '../../src/syncapi/syncCache.ts';

describe('InvalidatedCache', () => {
  it('loads once, then serves the cached value until the key is invalidated', async () => {
    const cache = new InvalidatedCache<{ v: number }>();
    let loads = 0;
    const load = async () => ({ v: ++loads });
    expect(await cache.get('a', load)).toEqual({ v: 1 });
    expect(await cache.get('a', load)).toEqual({ v: 1 });
    cache.invalidate('a');
    expect(await cache.get('a', load)).toEqual({ v: 2 });
    expect(loads).toBe(2);
  });

  it('update changes the cached value without a load, and leaves an uncached key uncached', async () => {
    const cache = new InvalidatedCache<{ v: number }>();
    let loads = 0;
    const load = async () => ({ v: 10 * ++loads });
    await cache.get('a', load);
    cache.update('a', (x) => ({ v: x.v + 1 }));
    expect(await cache.get('a', load)).toEqual({ v: 11 });
    cache.update('b', (x) => ({ v: x.v + 1 }));
    expect(await cache.get('b', load)).toEqual({ v: 20 });
    expect(loads).toBe(2);
  });

  it('does not keep a read that was in flight while its key was invalidated or updated', async () => {
    const cache = new InvalidatedCache<{ v: number }>();
    for (const change of [(c: InvalidatedCache<{ v: number }>) => c.invalidate('a'), (c: InvalidatedCache<{ v: number }>) => c.update('a', (x) => x)]) {
      let release!: () => void;
      const slow = cache.get('a', () => new Promise((r) => (release = () => r({ v: 1 }))));
      change(cache);
      release();
      expect(await slow).toEqual({ v: 1 });
      // Not kept: the next read loads again.
      expect(await cache.get('a', async () => ({ v: 2 }))).toEqual({ v: 2 });
      cache.invalidate('a');
    }
  });

  it('a lone key invalidated many times stays correct (entries are overwritten, never deleted)', async () => {
    const cache = new InvalidatedCache<{ v: number }>();
    for (let i = 0; i < 1_000; i++) {
      cache.invalidate('only');
      expect(await cache.get('only', async () => ({ v: i }))).toEqual({ v: i });
      cache.update('only', (x) => ({ v: x.v + 0.5 }));
      expect(await cache.get('only', async () => ({ v: -1 }))).toEqual({ v: i + 0.5 });
    }
  });
});
