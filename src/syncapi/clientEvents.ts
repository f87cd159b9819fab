// Room events in the client-server API's format.
import type { Pdu } from '../events/roomEvents.ts';

export interface ClientEvent {
  event_id: string;
  type: string;
  content: Record<string, unknown>;
  sender: string;
  origin_server_ts: number;
  room_id: string;
  /**
   * The sender again, under its pre-r0 name: Synapse's client format outside /sync keeps it
   * (its v1 format), and sytest's room tests read it (`assert_json_keys(... user_id ...)`).
   */
  user_id: string;
  state_key?: string;
  redacts?: string;
  unsigned: Record<string, unknown>;
}

export function toClientEvent(eventId: string, pdu: Pdu, now?: number): ClientEvent {
  const e: ClientEvent = {
    event_id: eventId,
    type: pdu.type,
    content: pdu.content,
    sender: pdu.sender,
    origin_server_ts: pdu.origin_server_ts,
    room_id: pdu.room_id,
    user_id: pdu.sender,
    unsigned: now !== undefined ? { age: Math.max(0, now - pdu.origin_server_ts) } : {},
  };
  if (typeof pdu.state_key === 'string') e.state_key = pdu.state_key;
  if (typeof pdu.redacts === 'string') e.redacts = pdu.redacts;
  return e;
}

/** Sync omits room_id inside a room's section, and has no user_id (Synapse's v2 format). */
export function withoutRoomId(e: ClientEvent): Omit<ClientEvent, 'room_id' | 'user_id'> {
  const { room_id: _r, user_id: _u, ...rest } = e;
  return rest;
}
