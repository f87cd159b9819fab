// The sync cache's invalidation: a value is kept until a committed batch touches its key,
// changed in place by update, and a read in flight while its key changes is not kept.
import { describe, expect, it } from 'vitest';
import type { PeekEvent } from '../../src/events/peekEvents.ts';
import type { Projected } from '../../src/projections/projection.ts';
import { foldDevicePeek } from '../../src/projections/syncPeeks.ts';
import type { DevicePeekRow } from '../../src/syncapi/peekReader.ts';
import { devicePeekEntry, InvalidatedCache, liveRows, mattersAfter, MAX_ENDED_KEPT, PRUNE_ENDED_AT, SyncCache, type DevicePeekEntry } from '../../src/syncapi/syncCache.ts';

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

// A device's peek rows in the cache: a device that peeked many rooms over its life keeps
// only what a sync can still show, and what it keeps equals the table (folded from the
// same events) for every sync the cache answers.
describe('SyncCache device peek entries', () => {
  type Row = DevicePeekRow;
  const USER = '@dev:example.org';
  const DEVICE = 'D';
  const KEY = `${USER}\u0000${DEVICE}`;

  /** A small deterministic generator (the same sequence every run). */
  function random(seed: number): () => number {
    let s = seed;
    return () => {
      s = (s * 1103515245 + 12345) % 2147483648;
      return s / 2147483648;
    };
  }

  /** Folds the events into the whole table (one row per room), as the projection does. */
  function tableOf(events: Projected<PeekEvent>[]): Map<string, Row> {
    const table = new Map<string, Row>();
    for (const p of events) {
      const next = foldDevicePeek(table.get(p.event.roomId), p);
      if (next) table.set(p.event.roomId, next);
    }
    return table;
  }

  /** The rooms of the live rows among `rows`, sorted. */
  const liveRoomsOf = (rows: readonly Row[]) =>
    rows
      .filter((r) => r.endedSeq === null)
      .map((r) => r.roomId)
      .sort();

  /** What a sync past `after` can observe of a row: its `prev…` only when that peek ended after it. */
  const observed = (r: Row, after: number) => (r.prevEndedSeq !== null && r.prevEndedSeq <= after ? { ...r, prevStartedSeq: null, prevEndedSeq: null } : r);
  const sorted = (rows: readonly Row[], after: number) => rows.map((r) => observed(r, after)).sort((a, b) => (a.roomId < b.roomId ? -1 : 1));

  /** For syncs from the entry's floor to `last` (every `step`), the entry shows what the table shows. */
  function expectSameFromFloor(entry: DevicePeekEntry, table: readonly Row[], last: number, step: number): void {
    for (let after = entry.floor; after <= last; after += step) {
      expect(
        sorted(
          entry.rows.filter((r) => mattersAfter(r, after)),
          after,
        ),
      ).toEqual(
        sorted(
          table.filter((r) => mattersAfter(r, after)),
          after,
        ),
      );
    }
  }

  /** Peeks across `rooms` rooms: starts, renewals and ends (some by a join), in random order. */
  function history(rooms: number, steps: number, seed: number): Projected<PeekEvent>[] {
    const next = random(seed);
    const live = new Set<string>();
    const events: Projected<PeekEvent>[] = [];
    for (let i = 1; i <= steps; i++) {
      const roomId = `!r${Math.floor(next() * rooms)}:example.org`;
      const peek = { kind: 'device' as const, userId: USER, deviceId: DEVICE };
      const seq = i * 1000;
      let event: PeekEvent;
      if (!live.has(roomId)) {
        event = { type: 'PeekStarted', v: 1, roomId, peek, at: i, expiresAt: i + 3_600_000, roomSeq: i };
        live.add(roomId);
      } else if (next() < 0.3) {
        event = { type: 'PeekRenewed', v: 1, roomId, peek, at: i, expiresAt: i + 3_600_000 };
      } else {
        event = { type: 'PeekExpired', v: 1, roomId, peek, at: i, reason: next() < 0.1 ? 'joined' : 'unpeeked', roomSeq: i };
        live.delete(roomId);
      }
      events.push({ seq, roomId, shard: 0, event });
    }
    return events;
  }

  it('keeps every live and join-ended row, and at most the latest ended ones past PRUNE_ENDED_AT', async () => {
    for (const seed of [1, 2, 3]) {
      const events = history(500, 3000, seed);
      const cache = new SyncCache();
      await cache.devicePeeks.get(KEY, async () => devicePeekEntry([]));
      // In batches, as the projection commits them.
      for (let i = 0; i < events.length; i += 7) cache.onPeekEvents(events.slice(i, i + 7));
      const entry = await cache.devicePeeks.get(KEY, async () => expect.unreachable('a cached device is not loaded again'));
      const table = [...tableOf(events).values()];
      const ended = entry.rows.filter((r) => r.endedSeq !== null && r.endReason !== 'joined');
      expect(ended.length).toBeLessThanOrEqual(PRUNE_ENDED_AT);
      expect(entry.floor).toBeGreaterThan(0);
      expect(table.filter((r) => r.endedSeq !== null && r.endReason !== 'joined').length).toBeGreaterThan(2 * PRUNE_ENDED_AT);
      // Live and join-ended rows are all there, whatever their age.
      const kept = (r: Row) => r.endedSeq === null || r.endReason === 'joined';
      expect(sorted(entry.rows.filter(kept), entry.floor)).toEqual(sorted(table.filter(kept), entry.floor));
      expect(liveRoomsOf(liveRows(entry))).toEqual(liveRoomsOf(table));
    }
  });

  it('folds each device of a shared batch into its own entry, as the table does, and loads no device it does not hold', async () => {
    // Three devices' histories interleaved event by event, committed in batches of 40: each
    // batch holds several events of every device (a commit under load).
    const other = (deviceId: string, events: Projected<PeekEvent>[]) => events.map((p) => ({ ...p, event: { ...p.event, peek: { kind: 'device' as const, userId: USER, deviceId } } }));
    const histories = { D: history(300, 1500, 21), E: other('E', history(300, 1500, 22)), F: other('F', history(300, 1500, 23)) };
    const merged: Projected<PeekEvent>[] = [];
    for (let i = 0; i < 1500; i++) for (const h of Object.values(histories)) merged.push({ ...h[i]!, seq: merged.length * 1000 + 1000 });
    const cache = new SyncCache();
    for (const device of ['D', 'E']) await cache.devicePeeks.get(`${USER}\u0000${device}`, async () => devicePeekEntry([]));
    for (let i = 0; i < merged.length; i += 40) cache.onPeekEvents(merged.slice(i, i + 40));
    for (const device of ['D', 'E']) {
      const entry = await cache.devicePeeks.get(`${USER}\u0000${device}`, async () => expect.unreachable('cached'));
      const table = [...tableOf(merged.filter((p) => p.event.peek.kind === 'device' && p.event.peek.deviceId === device)).values()];
      expect(liveRoomsOf(liveRows(entry))).toEqual(liveRoomsOf(table));
      expect(entry.rows.every((r) => r.deviceId === device)).toBe(true);
      expectSameFromFloor(entry, table, merged.at(-1)!.seq, 7000);
    }
    // F was never loaded: its events put nothing in the cache.
    expect(cache.devicePeeks.peek(`${USER}\u0000F`)).toBeUndefined();
    // A batch that changes no row (events folded already) leaves the entry as it was.
    const before = cache.devicePeeks.peek(KEY);
    cache.onPeekEvents(merged.slice(-40));
    expect(cache.devicePeeks.peek(KEY)).toBe(before);
  });

  it('for every position a sync may ask from at or past the floor, the entry shows what the table shows', async () => {
    const events = history(200, 2000, 7);
    const cache = new SyncCache();
    await cache.devicePeeks.get(KEY, async () => devicePeekEntry([]));
    for (let i = 0; i < events.length; i += 5) cache.onPeekEvents(events.slice(i, i + 5));
    const entry = await cache.devicePeeks.get(KEY, async () => expect.unreachable('cached'));
    const table = [...tableOf(events).values()];
    const last = events.at(-1)!.seq;
    let compared = 0;
    for (let after = entry.floor; after <= last; after += 1000) {
      const fromTable = table.filter((r) => mattersAfter(r, after));
      const fromEntry = entry.rows.filter((r) => mattersAfter(r, after));
      expect(sorted(fromEntry, after)).toEqual(sorted(fromTable, after));
      compared++;
    }
    expect(compared).toBeGreaterThan(50);
    // Before the floor, the entry no longer has everything: SyncService reads the table then.
    expect(table.filter((r) => mattersAfter(r, entry.floor - 1000)).length).toBeGreaterThan(entry.rows.filter((r) => mattersAfter(r, entry.floor - 1000)).length);
  });

  it('an entry loaded from a table that already holds batches it then folds again (a load racing their commit) still shows what the table shows', async () => {
    // A load can read the table after a batch committed and be kept before the batch is
    // folded into the cache, which then folds it once more. Rows the load pruned must not
    // come back live: the batches folded again hold each pruned peek's end as well as its
    // start (they run on from the load's snapshot), so the fold ends it again.
    const events = history(400, 3000, 5);
    const BATCH = 45;
    const batches: Projected<PeekEvent>[][] = [];
    for (let i = 0; i < events.length; i += BATCH) batches.push(events.slice(i, i + BATCH));
    const table = [...tableOf(events).values()];
    const last = events.at(-1)!.seq;
    // Rooms the load pruned whose start is folded again: the case this is about.
    let revisited = 0;
    for (const [foldedUpTo, loadedUpTo] of [
      [5, 15],
      [20, 30],
      [30, 30],
      [40, 55],
      [0, 60],
    ] as const) {
      const snapshot = [...tableOf(batches.slice(0, loadedUpTo).flat()).values()];
      const loaded = devicePeekEntry(snapshot);
      const kept = new Set(loaded.rows.map((r) => r.roomId));
      const again = batches.slice(foldedUpTo, loadedUpTo).flat();
      revisited += snapshot.filter((r) => !kept.has(r.roomId) && again.some((p) => p.roomId === r.roomId && p.event.type === 'PeekStarted')).length;
      const cache = new SyncCache();
      await cache.devicePeeks.get(KEY, async () => loaded);
      for (const batch of batches.slice(foldedUpTo)) cache.onPeekEvents(batch);
      const entry = await cache.devicePeeks.get(KEY, async () => expect.unreachable('cached'));
      expect(liveRoomsOf(liveRows(entry))).toEqual(liveRoomsOf(table));
      expectSameFromFloor(entry, table, last, 3000);
    }
    expect(revisited).toBeGreaterThan(10);
  });

  it('a device loaded from the table with a long history is pruned at load, with the same floor rule', () => {
    const table = [...tableOf(history(400, 3000, 11)).values()];
    const entry = devicePeekEntry(table);
    expect(entry.rows.filter((r) => r.endedSeq !== null && r.endReason !== 'joined').length).toBe(MAX_ENDED_KEPT);
    // The newest ended rows are the ones kept.
    const endedSeqs = table.filter((r) => r.endedSeq !== null && r.endReason !== 'joined').map((r) => r.endedSeq!);
    expect(entry.floor).toBe(endedSeqs.sort((a, b) => a - b).at(-MAX_ENDED_KEPT - 1));
    // A short history is kept whole.
    const few = table.slice(0, 20);
    expect(devicePeekEntry(few)).toEqual({ rows: few, floor: 0 });
  });
});
