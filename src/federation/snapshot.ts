// The room snapshot an inbound peek answers with: state after the latest event at the
// snapshot's ROOMS sequence, the auth chain of that state, and the latest event. Fields of
// both MSC2444 drafts are filled, so either kind of peer reads it.
import { and, eq, lte, desc } from 'drizzle-orm';
import { authChain } from './authChain.ts';
import type { Pdu } from '../events/roomEvents.ts';
import { rowsOf, type Db } from '../store/db.ts';
import { syncapiRoomEvents } from '../store/schema.ts';
import { sql } from 'drizzle-orm';

interface Row {
  seq: number;
  eventId: string;
  pdu: Pdu;
}

export interface PeekSnapshot {
  room_version: string;
  renewal_interval: number;
  latest_event: Pdu;
  latest_event_id: string;
  state: Pdu[];
  auth_chain: Pdu[];
  /**
   * The current draft's shape: each forward extremity's event ID → the IDs of the state
   * after it, less `common_state_ids`. A room hosted here has one extremity, its latest event.
   */
  latest_event_state_ids: Record<string, string[]>;
  common_state_ids: string[];
  events: Pdu[];
}

export async function buildSnapshot(db: Db, roomId: string, roomVersion: string, roomSeq: number, renewalIntervalMs: number): Promise<PeekSnapshot> {
  const [latest] = await db
    .select({ seq: syncapiRoomEvents.seq, eventId: syncapiRoomEvents.eventId, pdu: syncapiRoomEvents.pdu })
    .from(syncapiRoomEvents)
    .where(and(eq(syncapiRoomEvents.roomId, roomId), lte(syncapiRoomEvents.seq, roomSeq)))
    .orderBy(desc(syncapiRoomEvents.seq))
    .limit(1);
  if (!latest) throw new Error(`room ${roomId} has no events at ${roomSeq}`);
  const stateResult = await db.execute(sql`
    select distinct on (type, state_key) seq, event_id as "eventId", pdu
    from syncapi_room_events
    where room_id = ${roomId} and state_key is not null and seq <= ${roomSeq}
    order by type, state_key, seq desc`);
  const state = rowsOf<Row>(stateResult)
    .map((r) => ({ ...r, seq: Number(r.seq) }))
    .sort((a, b) => a.seq - b.seq);
  const stateIds = new Set(state.map((s) => s.eventId));

  // The auth chain: every event the state's auth_events reach, not already in the state.
  const chain: Row[] = await authChain(db, state, stateIds);
  const latestIsState = stateIds.has(latest.eventId);
  const events = [...new Map([...chain, ...state, latest as Row].sort((a, b) => a.seq - b.seq).map((r) => [r.eventId, r])).values()];
  return {
    room_version: roomVersion,
    renewal_interval: renewalIntervalMs,
    latest_event: latest.pdu as Pdu,
    latest_event_id: latest.eventId,
    state: state.map((s) => s.pdu),
    auth_chain: chain.map((a) => a.pdu),
    latest_event_state_ids: { [latest.eventId]: latestIsState ? [latest.eventId] : [] },
    common_state_ids: state.filter((s) => s.eventId !== latest.eventId).map((s) => s.eventId),
    events: events.map((e) => e.pdu),
  };
}
