// The room actor's state: what the room's two subjects say, folded. Pure data.
import type { PeekRef } from '../events/peekEvents.ts';
import type { Pdu } from '../events/roomEvents.ts';

export interface LivePeek {
  peek: PeekRef;
  startedAt: number;
  renewedAt: number;
  /** Deadline: a device peek expires here; an inbound peek expires here unless renewed. */
  expiresAt?: number;
  renewalIntervalMs?: number;
  /** PEEKS position of the PeekStarted event. */
  startedSeq: number;
}

export interface StateEntry {
  eventId: string;
  pdu: Pdu;
  /** ROOMS position of the event (envelope.ts). */
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
  /** Last PEEKS stream sequence (envelope) on this room's subject (0: none). */
  peeksSeq: number;
  /** Last ROOMS stream sequence on this room's subject (0: none). */
  roomsSeq: number;
  /** null until the room's m.room.create is known. */
  room: RoomFacts | null;
  peeks: ReadonlyMap<string, LivePeek>;
  /**
   * The room's most recent commands per stream (bounded, in log order), command ID → the
   * stream sequence of its envelope: a retried command is answered from the log, never
   * decided twice.
   */
  commands: { peeks: ReadonlyMap<string, number>; rooms: ReadonlyMap<string, number> };
}

export interface CommandRecord {
  /** Stream sequence of the command's PEEKS envelope, if it appended one. */
  peeks?: number;
  /** Stream sequence of the command's ROOMS envelope, if it appended one. */
  rooms?: number;
}

/** How many recent command IDs a room remembers per stream (JetStream's duplicate window backs it up). */
export const RECENT_COMMANDS = 128;

export function initialState(roomId: string): RoomState {
  return { roomId, peeksSeq: 0, roomsSeq: 0, room: null, peeks: new Map(), commands: { peeks: new Map(), rooms: new Map() } };
}

/** Where the log holds `commandId`'s envelopes, or undefined when this room has not seen it. */
export function commandRecord(state: RoomState, commandId: string): CommandRecord | undefined {
  const peeks = state.commands.peeks.get(commandId);
  const rooms = state.commands.rooms.get(commandId);
  return peeks === undefined && rooms === undefined ? undefined : { peeks, rooms };
}

/** Remembers that `commandId` appended its `stream` envelope at `seq` (copy-on-write unless inPlace). */
export function recordCommand(commands: RoomState['commands'], commandId: string | undefined, stream: 'peeks' | 'rooms', seq: number, inPlace = false): RoomState['commands'] {
  if (!commandId) return commands;
  const next = inPlace ? (commands[stream] as Map<string, number>) : new Map(commands[stream]);
  next.set(commandId, seq);
  if (next.size > RECENT_COMMANDS) next.delete(next.keys().next().value!);
  return inPlace ? commands : { ...commands, [stream]: next };
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
