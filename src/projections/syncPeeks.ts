// syncapi_peeks: every device peek (MSC2753), live and ended. /sync reads which peeks
// started, were renewed or ended after a device's position; the scheduler reads deadlines.
import { decodePeekEvents, type PeekEvent } from '../events/peekEvents.ts';
import { syncapiPeeks } from '../store/schema.ts';
import { chunks, insertRows, pipelined, selectByKeys } from '../store/sqlHelpers.ts';
import type { Tx } from '../store/db.ts';
import type { PeekProjection, Projected } from './projection.ts';

type Row = typeof syncapiPeeks.$inferSelect;

/**
 * A device peek's row after one more event about it (undefined: the event changes nothing).
 * The projection folds with it, and so does the sync cache, so memory and table agree.
 */
export function foldDevicePeek(row: Row | undefined, { seq, shard, event }: Projected<PeekEvent>): Row | undefined {
  if (event.peek.kind !== 'device') return undefined;
  if (row && seq <= row.updatedSeq) return undefined; // already folded in: a replayed event changes nothing
  switch (event.type) {
    case 'PeekStarted': {
      const replaced = row && row.endedSeq !== null ? row : undefined;
      return {
        roomId: event.roomId,
        userId: event.peek.userId,
        deviceId: event.peek.deviceId,
        shard,
        startedSeq: seq,
        startedAt: event.at,
        renewedAt: event.at,
        expiresAt: event.expiresAt ?? null,
        roomSeq: event.roomSeq ?? 0,
        updatedSeq: seq,
        endedSeq: null,
        endedAt: null,
        endReason: null,
        endedRoomSeq: null,
        prevStartedSeq: replaced?.startedSeq ?? null,
        prevEndedSeq: replaced?.endedSeq ?? null,
      };
    }
    case 'PeekRenewed':
      return row ? { ...row, renewedAt: event.at, expiresAt: event.expiresAt ?? null, updatedSeq: seq } : undefined;
    case 'PeekExpired':
      return row ? { ...row, endedSeq: seq, endedAt: event.at, endReason: event.reason, endedRoomSeq: event.roomSeq ?? null, updatedSeq: seq } : undefined;
  }
}

const key = (roomId: string, userId: string, deviceId: string) => `${roomId}\u0000${userId}\u0000${deviceId}`;

export const syncPeeksProjection: PeekProjection = {
  name: 'sync_peeks',
  stream: 'peeks',
  tables: ['syncapi_peeks'],
  decode: decodePeekEvents,
  async apply(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
    const mine = batch.filter((b) => b.event.peek.kind === 'device');
    if (mine.length === 0) return;
    const rows = new Map<string, Row>();
    // Rows we need the earlier state of: touched in this batch but not started in it.
    const startedHere = new Set<string>();
    const needed = new Map<string, [string, string, string]>();
    for (const { event } of mine) {
      if (event.peek.kind !== 'device') continue;
      const k = key(event.roomId, event.peek.userId, event.peek.deviceId);
      // Every touched row's earlier state is needed: a start keeps the ended peek it replaces.
      if (!startedHere.has(k)) needed.set(k, [event.roomId, event.peek.userId, event.peek.deviceId]);
      if (event.type === 'PeekStarted') startedHere.add(k);
    }
    const existing = await pipelined(chunks([...needed.values()], 1000).map((part) => selectByKeys(tx, syncapiPeeks, [syncapiPeeks.roomId, syncapiPeeks.userId, syncapiPeeks.deviceId], part)));
    for (const r of existing.flat()) rows.set(key(r.roomId, r.userId, r.deviceId), r);
    for (const p of mine) {
      if (p.event.peek.kind !== 'device') continue;
      const k = key(p.event.roomId, p.event.peek.userId, p.event.peek.deviceId);
      const next = foldDevicePeek(rows.get(k), p);
      if (next) rows.set(k, next);
    }
    await insertRows(tx, syncapiPeeks, [...rows.values()], { target: ['room_id', 'user_id', 'device_id'] });
  },
};
