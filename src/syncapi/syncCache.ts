// Per-user memberships and per-device peeks, kept in memory between syncs and dropped the
// moment a committed batch touches them (before any long-poll is woken). A burst of woken
// devices then reads no database at all for what is theirs. Only used where the sync
// projections run in this process, so no change can reach a sync without passing here.
import { LRUCache } from 'lru-cache';
import type { PeekEvent } from '../events/peekEvents.ts';
import type { RoomEvent } from '../events/roomEvents.ts';
import type { Projected } from '../projections/projection.ts';
import { foldDevicePeek } from '../projections/syncPeeks.ts';
import type { DevicePeekRow } from './peekReader.ts';

/** Keys held per cache, and invalidation generations remembered: past it the least recently used go. */
const MAX_ENTRIES = 100_000;

/**
 * What an invalidated key holds. Entries are overwritten, never deleted: lru-cache clears
 * (fills) all of its `max`-sized arrays when its last entry is deleted, which made every
 * peek event of a lone busy device cost O(MAX_ENTRIES) (16 % of the hot room's CPU).
 */
const STALE = Object.freeze({ stale: true });

export class InvalidatedCache<V extends object> {
  private readonly values = new LRUCache<string, V | typeof STALE>({ max: MAX_ENTRIES });
  /**
   * The generation at which each recently invalidated key was last invalidated. Every value
   * here is at most `generation`, and an invalidation sets its key's above everything seen
   * before it: so a read that saw `generations.get(key) ?? generation` before loading sees
   * the same afterwards only if the key was not invalidated meanwhile, whether or not the
   * key's entry was evicted in between (an eviction can only make the two differ, and then
   * the read is just not cached).
   */
  private readonly generations = new LRUCache<string, number>({ max: MAX_ENTRIES });
  private generation = 0;

  /** The cached value, without loading: undefined when the key is not cached (or invalidated). */
  peek(key: string): V | undefined {
    const hit = this.values.get(key);
    return hit === undefined || hit === STALE ? undefined : (hit as V);
  }

  async get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.peek(key);
    if (hit !== undefined) return hit;
    const before = this.generations.get(key) ?? this.generation;
    const value = await load();
    // Only keep it if nothing invalidated the key while it was being read.
    if ((this.generations.get(key) ?? this.generation) === before) this.values.set(key, value);
    return value;
  }

  /**
   * Changes a cached value in place (a read in flight is not kept, as for invalidate):
   * what the next read would have loaded, without the load.
   */
  update(key: string, change: (value: V) => V): void {
    const hit = this.values.get(key);
    this.generations.set(key, ++this.generation);
    if (hit !== undefined && hit !== STALE) this.values.set(key, change(hit as V));
  }

  invalidate(key: string): void {
    if (this.values.has(key)) this.values.set(key, STALE);
    this.generations.set(key, ++this.generation);
  }
}

/**
 * A device's peek rows as the cache keeps them. The table keeps a row for every room the
 * device ever peeked; a device that peeked thousands over its life (a preview bot, a
 * crawler of the room directory) would make every peek command and every /sync of it cost
 * that many rows. The entry keeps what a sync can still show: every live row, every row a
 * join ended (the sync that shows the join reads it: `peekedAt` in sync.ts), and the other
 * ended rows from `floor` on, at most MAX_ENDED_KEPT of them once it has pruned.
 */
export interface DevicePeekEntry {
  readonly rows: readonly DevicePeekRow[];
  /** Rows ended (other than by a join) at or before this PEEKS position may be missing. */
  readonly floor: number;
}

/** The key of a device's entry. */
export function deviceKey(userId: string, deviceId: string): string {
  return `${userId}\u0000${deviceId}`;
}

/** Ended rows an entry holds before it prunes, and keeps (the latest) when it does. */
export const PRUNE_ENDED_AT = 64;
export const MAX_ENDED_KEPT = 32;

/** Whether a sync at PEEKS positions past `endedAfter` can show the row (sync.ts). */
export function mattersAfter(row: DevicePeekRow, endedAfter: number): boolean {
  return row.endedSeq === null || row.endedSeq > endedAfter || row.endReason === 'joined';
}

const prunable = (row: DevicePeekRow) => !mattersAfter(row, Infinity);

/** The entry for these rows: past PRUNE_ENDED_AT prunable rows, the older ones go and `floor` rises. */
export function devicePeekEntry(rows: readonly DevicePeekRow[], floor = 0): DevicePeekEntry {
  let ended = 0;
  for (const r of rows) if (prunable(r)) ended++;
  if (ended <= PRUNE_ENDED_AT) return { rows, floor };
  const seqs = rows
    .filter(prunable)
    .map((r) => r.endedSeq!)
    .sort((a, b) => a - b);
  const cut = Math.max(floor, seqs[seqs.length - MAX_ENDED_KEPT - 1]!);
  return { rows: rows.filter((r) => !prunable(r) || r.endedSeq! > cut), floor: cut };
}

/** The live rows of an entry, worked out once per entry (entries are replaced, never changed). */
const liveOf = new WeakMap<DevicePeekEntry, readonly DevicePeekRow[]>();
export function liveRows(entry: DevicePeekEntry): readonly DevicePeekRow[] {
  let live = liveOf.get(entry);
  if (!live) liveOf.set(entry, (live = entry.rows.filter((r) => r.endedSeq === null)));
  return live;
}

export class SyncCache {
  readonly memberships = new InvalidatedCache<object>();
  readonly devicePeeks = new InvalidatedCache<DevicePeekEntry>();

  onRoomEvents(batch: Projected<RoomEvent>[]): void {
    for (const { event } of batch) {
      if (event.pdu.type === 'm.room.member' && typeof event.pdu.state_key === 'string') this.memberships.invalidate(event.pdu.state_key);
    }
  }

  /**
   * A device's peek rows follow its committed events by the projection's own fold. A row
   * the entry pruned folds as if absent: a new start then lacks the `prev…` of the ended
   * peek it replaced, which only a sync from before `floor` could show — and such a sync
   * reads the table (SyncService.devicePeeks). A device's events of one batch are folded
   * together: its entry is looked up, copied and pruned once per batch, not once per event
   * (a commit holds up to PEEKD_PROJECTION_LINGER_MS of a busy device's peeks).
   */
  onPeekEvents(batch: Projected<PeekEvent>[]): void {
    const byDevice = new Map<string, Projected<PeekEvent>[]>();
    for (const p of batch) {
      const { peek } = p.event;
      if (peek.kind !== 'device') continue;
      const key = deviceKey(peek.userId, peek.deviceId);
      const mine = byDevice.get(key);
      if (mine) mine.push(p);
      else byDevice.set(key, [p]);
    }
    for (const [key, events] of byDevice) this.devicePeeks.update(key, (entry) => foldEntry(entry, events));
  }
}

/** The entry after a device's events, in order; the same entry when none changes a row. */
function foldEntry(entry: DevicePeekEntry, events: readonly Projected<PeekEvent>[]): DevicePeekEntry {
  // A new array (a read in flight may hold the old one), made at the first change.
  let rows: DevicePeekRow[] | undefined;
  for (const p of events) {
    const current = rows ?? entry.rows;
    const i = current.findIndex((r) => r.roomId === p.event.roomId);
    const next = foldDevicePeek(i < 0 ? undefined : current[i], p);
    if (!next) continue;
    rows ??= entry.rows.slice();
    rows[i < 0 ? rows.length : i] = next;
  }
  return rows ? devicePeekEntry(rows, entry.floor) : entry;
}
