// syncapi_room_events and syncapi_current_state: every accepted PDU in ROOMS order, and
// each room's current state. /sync, /messages and the state endpoints read these.
import { sql } from 'drizzle-orm';
import { decodeRoomEvent, type RoomEvent } from '../events/roomEvents';
import { syncapiCurrentState, syncapiRoomEvents } from '../store/schema';
import { chunks } from '../store/sqlHelpers';
import type { Tx } from '../store/db';
import type { Projected, RoomProjection } from './projection';

type StateRow = typeof syncapiCurrentState.$inferInsert;

export const syncRoomsProjection: RoomProjection = {
  name: 'sync_rooms',
  stream: 'rooms',
  tables: ['syncapi_room_events', 'syncapi_current_state'],
  decode: decodeRoomEvent,
  async apply(tx: Tx, batch: Projected<RoomEvent>[]): Promise<void> {
    const events = batch.map(({ seq, event }) => ({
      seq,
      roomId: event.roomId,
      eventId: event.eventId,
      type: event.pdu.type,
      stateKey: typeof event.pdu.state_key === 'string' ? event.pdu.state_key : null,
      sender: event.pdu.sender,
      originServerTs: event.pdu.origin_server_ts,
      pdu: event.pdu,
      txnDeviceId: event.txn?.deviceId ?? null,
      txnId: event.txn?.txnId ?? null,
    }));
    for (const part of chunks(events, 300)) {
      await tx.insert(syncapiRoomEvents).values(part).onConflictDoNothing();
    }
    // Current state: the last state event per (room, type, state key) in this batch wins,
    // and never overwrites a later one (a replayed batch changes nothing).
    const state = new Map<string, StateRow>();
    for (const { seq, event } of batch) {
      const { pdu } = event;
      if (typeof pdu.state_key !== 'string') continue;
      const membership = pdu.type === 'm.room.member' && typeof pdu.content.membership === 'string' ? pdu.content.membership : null;
      state.set(`${event.roomId}\u0000${pdu.type}\u0000${pdu.state_key}`, {
        roomId: event.roomId,
        type: pdu.type,
        stateKey: pdu.state_key,
        eventId: event.eventId,
        seq,
        membership,
        content: pdu.content,
      });
    }
    for (const part of chunks([...state.values()], 300)) {
      await tx
        .insert(syncapiCurrentState)
        .values(part)
        .onConflictDoUpdate({
          target: [syncapiCurrentState.roomId, syncapiCurrentState.type, syncapiCurrentState.stateKey],
          set: {
            eventId: sql`excluded.event_id`,
            seq: sql`excluded.seq`,
            membership: sql`excluded.membership`,
            content: sql`excluded.content`,
          },
          setWhere: sql`${syncapiCurrentState.seq} < excluded.seq`,
        });
    }
  },
};
