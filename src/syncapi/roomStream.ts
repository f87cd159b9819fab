// One room's events in stream order from a position on — the legacy /events long-poll of a
// room preview reads forwards, oldest first, where /sync reads the newest of a range.
import { and, asc, eq, gt, lte } from 'drizzle-orm';
import type { Db } from '../store/db.ts';
import { syncapiRoomEvents } from '../store/schema.ts';
import type { StoredEvent } from './roomReader.ts';

/**
 * The oldest `limit` events of the room with afterSeq < seq ≤ uptoSeq, oldest first, as the
 * room went on (not history fetched later, which /messages reads in place).
 */
export async function roomEventsAfter(db: Db, roomId: string, afterSeq: number, uptoSeq: number, limit: number): Promise<StoredEvent[]> {
  if (afterSeq >= uptoSeq || limit <= 0) return [];
  const rows = await db
    .select({
      seq: syncapiRoomEvents.seq,
      eventId: syncapiRoomEvents.eventId,
      pdu: syncapiRoomEvents.pdu,
      txnDeviceId: syncapiRoomEvents.txnDeviceId,
      txnId: syncapiRoomEvents.txnId,
    })
    .from(syncapiRoomEvents)
    .where(and(eq(syncapiRoomEvents.roomId, roomId), gt(syncapiRoomEvents.seq, afterSeq), lte(syncapiRoomEvents.seq, uptoSeq), eq(syncapiRoomEvents.backfilled, false)))
    .orderBy(asc(syncapiRoomEvents.seq))
    .limit(limit);
  return rows as StoredEvent[];
}
