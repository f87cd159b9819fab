// The ROOMS stream contract (v1): one record per accepted PDU, in room order.
// Local rooms: written by their room actor. Peeked remote rooms: copies received over
// federation, appended only after their hashes and signatures checked out. One decision's
// events travel in one envelope (envelope.ts).
import { decodeEnvelope, type Envelope } from './envelope.ts';

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
  /**
   * 'local': created by this server's room actor; 'federation': received from a peer as
   * the room went on; 'backfill': history fetched from a peer, older than what was held —
   * it is read by /messages but never changes the room's current state, and /sync never
   * shows it as new.
   */
  origin: 'local' | 'federation' | 'backfill';
  /** For local events: the sending device and transaction ID (idempotent sends). */
  txn?: { deviceId: string; txnId: string };
}

export type RoomEvent = RoomPduAppended;

/** A room event as read back from the log, with its ROOMS position (see envelope.ts). */
export interface StoredRoomEvent {
  seq: number;
  event: RoomEvent;
}

/** One bare event, as written before envelopes (tests and benchmarks still write these). */
export function encodeRoomEvent(event: RoomEvent): Uint8Array {
  return Buffer.from(JSON.stringify(event), 'utf8');
}

/** Checks one decoded room event; null for shapes this version does not know. */
export function roomEventOf(value: unknown): RoomEvent | null {
  const v = value as Partial<RoomEvent> | null;
  if (v === null || typeof v !== 'object' || v.v !== 1 || v.type !== 'RoomPdu') return null;
  return v as RoomEvent;
}

/** The room events of one ROOMS message (an envelope, or one bare event from before them). */
export function decodeRoomEnvelope(data: Uint8Array): Envelope<RoomEvent> {
  return decodeEnvelope(data, roomEventOf);
}

/** The room events of one ROOMS message by index (null: a shape this version does not know). */
export function decodeRoomEvents(data: Uint8Array): (RoomEvent | null)[] {
  return decodeRoomEnvelope(data).events;
}
