// syncapi_room_events and syncapi_current_state: every accepted PDU in ROOMS order, and
// each room's current state. /sync, /messages and the state endpoints read these.
import { sql } from 'drizzle-orm';
import { decodeRoomEvents, type RoomEvent } from '../events/roomEvents.ts';
import { chunks, columnList, jsonRecordset, pipelined } from '../store/sqlHelpers.ts';
import type { Tx } from '../store/db.ts';
import type { Projected, RoomProjection } from './projection.ts';

const EVENT_COLUMNS: [string, string][] = [
  ['seq', 'bigint'],
  ['room_id', 'text'],
  ['event_id', 'text'],
  ['type', 'text'],
  ['state_key', 'text'],
  ['sender', 'text'],
  ['origin_server_ts', 'bigint'],
  ['pdu', 'jsonb'],
  ['txn_device_id', 'text'],
  ['txn_id', 'text'],
  ['depth', 'bigint'],
  ['backfilled', 'boolean'],
];

const STATE_COLUMNS: [string, string][] = [
  ['room_id', 'text'],
  ['type', 'text'],
  ['state_key', 'text'],
  ['event_id', 'text'],
  ['seq', 'bigint'],
  ['membership', 'text'],
  ['content', 'jsonb'],
];

export const syncRoomsProjection: RoomProjection = {
  name: 'sync_rooms',
  stream: 'rooms',
  tables: ['syncapi_room_events', 'syncapi_current_state'],
  decode: decodeRoomEvents,
  async apply(tx: Tx, batch: Projected<RoomEvent>[]): Promise<void> {
    const events = batch.map(({ seq, event }) => ({
      seq,
      room_id: event.roomId,
      event_id: event.eventId,
      type: event.pdu.type,
      state_key: typeof event.pdu.state_key === 'string' ? event.pdu.state_key : null,
      sender: event.pdu.sender,
      origin_server_ts: event.pdu.origin_server_ts,
      pdu: event.pdu,
      txn_device_id: event.txn?.deviceId ?? null,
      txn_id: event.txn?.txnId ?? null,
      depth: Number.isSafeInteger(event.pdu.depth) ? event.pdu.depth : 0,
      backfilled: event.origin === 'backfill',
    }));
    const statements = chunks(events, 1000).map((part) => tx.execute(sql`insert into syncapi_room_events (${columnList(EVENT_COLUMNS)}) ${jsonRecordset(part, EVENT_COLUMNS)} on conflict do nothing`));
    // Current state: the last state event per (room, type, state key) in this batch wins,
    // and never overwrites a later one (a replayed batch changes nothing).
    const state = new Map<string, object>();
    for (const { seq, event } of batch) {
      const { pdu } = event;
      // History (backfill) is older than the state already held: it never changes it.
      if (typeof pdu.state_key !== 'string' || event.origin === 'backfill') continue;
      const membership = pdu.type === 'm.room.member' && typeof pdu.content.membership === 'string' ? pdu.content.membership : null;
      state.set(`${event.roomId}\u0000${pdu.type}\u0000${pdu.state_key}`, {
        room_id: event.roomId,
        type: pdu.type,
        state_key: pdu.state_key,
        event_id: event.eventId,
        seq,
        membership,
        content: pdu.content,
      });
    }
    for (const part of chunks([...state.values()], 1000)) {
      statements.push(
        tx.execute(sql`
          insert into syncapi_current_state (${columnList(STATE_COLUMNS)}) ${jsonRecordset(part, STATE_COLUMNS)}
          on conflict (room_id, type, state_key) do update
            set event_id = excluded.event_id, seq = excluded.seq, membership = excluded.membership, content = excluded.content
            where syncapi_current_state.seq < excluded.seq`),
      );
    }
    // Timeline and state are different tables (and the state's keys unique): one round trip for all.
    await pipelined(statements);
  },
};
