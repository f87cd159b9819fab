// The ROOMS stream contract (v1): one record per accepted PDU, in room order.
// Local rooms: written by their room actor. Peeked remote rooms: copies received over
// federation, appended only after their hashes and signatures checked out.

/** A room version 10 PDU as it travels over federation (no `event_id` field). */
export interface Pdu {
  type: string;
  room_id: string;
  sender: string;
  content: Record<string, unknown>;
  state_key?: string;
  origin_server_ts: number;
  depth: number;
  prev_events: string[];
  auth_events: string[];
  hashes: { sha256: string };
  signatures: Record<string, Record<string, string>>;
  unsigned?: Record<string, unknown>;
  redacts?: string;
  [key: string]: unknown;
}

export interface RoomPduAppended {
  type: 'RoomPdu';
  v: 1;
  roomId: string;
  eventId: string;
  roomVersion: string;
  pdu: Pdu;
  /** 'local': created by this server's room actor; 'federation': received from a peer. */
  origin: 'local' | 'federation';
  /** For local events: the sending device and transaction ID (idempotent sends). */
  txn?: { deviceId: string; txnId: string };
}

export type RoomEvent = RoomPduAppended;

export interface StoredRoomEvent {
  seq: number;
  event: RoomEvent;
}

export function encodeRoomEvent(event: RoomEvent): Uint8Array {
  return Buffer.from(JSON.stringify(event), 'utf8');
}

export function decodeRoomEvent(data: Uint8Array): RoomEvent | null {
  const value = JSON.parse(Buffer.from(data).toString('utf8')) as Partial<RoomEvent>;
  if (value.v !== 1 || value.type !== 'RoomPdu') return null;
  return value as RoomEvent;
}
