// The room actor's state: what the room's two subjects say, folded. Pure data.
import type { PeekRef } from '../events/peekEvents';
import type { Pdu } from '../events/roomEvents';

export interface LivePeek {
  peek: PeekRef;
  startedAt: number;
  renewedAt: number;
  /** Deadline: a device peek expires here; an inbound peek expires here unless renewed. */
  expiresAt?: number;
  renewalIntervalMs?: number;
  /** PEEKS sequence of the PeekStarted event. */
  startedSeq: number;
}

export interface StateEntry {
  eventId: string;
  pdu: Pdu;
  /** ROOMS stream sequence of the event. */
  seq: number;
}

export interface RoomFacts {
  roomVersion: string;
  createEventId: string;
  /** Current state, keyed by stateKey(type, state_key). */
  state: ReadonlyMap<string, StateEntry>;
  /** The room's newest event (room order = ROOMS subject order). */
  latest: { eventId: string; depth: number; seq: number };
  /** Local (device, txnId) → event ID, for idempotent sends. */
  txns: ReadonlyMap<string, string>;
  /** The newest event IDs (bounded), so a PDU received twice is appended once. */
  recentEventIds: readonly string[];
  eventCount: number;
}

export interface RoomState {
  roomId: string;
  /** Last PEEKS stream sequence on this room's subject (0: none). */
  peeksSeq: number;
  /** Last ROOMS stream sequence on this room's subject (0: none). */
  roomsSeq: number;
  /** null until the room's m.room.create is known. */
  room: RoomFacts | null;
  peeks: ReadonlyMap<string, LivePeek>;
}

export function initialState(roomId: string): RoomState {
  return { roomId, peeksSeq: 0, roomsSeq: 0, room: null, peeks: new Map() };
}

/** Idempotency key of a client transaction: device IDs are unique per user only. */
export function txnKey(userId: string, deviceId: string, txnId: string): string {
  return `${userId}\u0000${deviceId}\u0000${txnId}`;
}

export function stateKey(type: string, key: string): string {
  return `${type}\u0000${key}`;
}

export function stateContent(room: RoomFacts, type: string, key = ''): Record<string, unknown> | undefined {
  return room.state.get(stateKey(type, key))?.pdu.content;
}

export function historyVisibility(room: RoomFacts): string {
  const v = stateContent(room, 'm.room.history_visibility')?.history_visibility;
  return typeof v === 'string' ? v : 'shared';
}

export function isWorldReadable(room: RoomFacts): boolean {
  return historyVisibility(room) === 'world_readable';
}

export function isEncrypted(room: RoomFacts): boolean {
  const c = stateContent(room, 'm.room.encryption');
  return c !== undefined && typeof c.algorithm === 'string';
}

export function membershipOf(room: RoomFacts, userId: string): string {
  const m = stateContent(room, 'm.room.member', userId)?.membership;
  return typeof m === 'string' ? m : 'leave';
}

export function joinRule(room: RoomFacts): string {
  const j = stateContent(room, 'm.room.join_rules')?.join_rule;
  return typeof j === 'string' ? j : 'invite';
}

export function creatorOf(room: RoomFacts): string {
  return room.state.get(stateKey('m.room.create', ''))?.pdu.sender ?? '';
}

export function roomServerOf(room: RoomFacts): string {
  const creator = creatorOf(room);
  return creator.slice(creator.indexOf(':') + 1);
}
