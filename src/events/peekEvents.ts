// The peek event contract (v1). Events are never edited: a new shape is a new `v`,
// and readers keep reading the old ones. This file and subjects.ts are the whole
// contract between the room actors and every projection; envelope.ts says how events
// travel in the log (one message per decision).
import { decodeEnvelope, position, type Envelope } from './envelope.ts';

/** Who is peeking. */
export type PeekRef =
  | { kind: 'device'; userId: string; deviceId: string } // MSC2753, a local device
  | { kind: 'inbound'; server: string; peekId: string } // MSC2444, a remote server peeks us
  | { kind: 'outbound'; server: string; peekId: string }; // MSC2444, we peek a remote room

export const PEEK_END_REASONS = ['unpeeked', 'timed_out', 'joined', 'visibility_changed', 'encrypted', 'device_removed', 'remote_deleted', 'no_active_peekers', 'rejected'] as const;
export type PeekEndReason = (typeof PEEK_END_REASONS)[number];

export interface PeekStarted {
  type: 'PeekStarted';
  v: 1;
  roomId: string;
  peek: PeekRef;
  /** Decision time, ms since the epoch, from the injected clock. */
  at: number;
  expiresAt?: number;
  renewalIntervalMs?: number;
  /** ROOMS position of the room's latest PDU when the peek started (0: none). */
  roomSeq?: number;
}

export interface PeekRenewed {
  type: 'PeekRenewed';
  v: 1;
  roomId: string;
  peek: PeekRef;
  at: number;
  expiresAt?: number;
  renewalIntervalMs?: number;
}

export interface PeekExpired {
  type: 'PeekExpired';
  v: 1;
  roomId: string;
  peek: PeekRef;
  at: number;
  reason: PeekEndReason;
  /** ROOMS position of the room's latest PDU when the peek ended (incl. the PDU that ended it). */
  roomSeq?: number;
}

export type PeekEvent = PeekStarted | PeekRenewed | PeekExpired;

/** A peek event as read back from the log, with its PEEKS position (see envelope.ts). */
export interface StoredPeekEvent {
  seq: number;
  event: PeekEvent;
}

/** A stable key for "the same peek": one live peek per key per room. */
export function peekKey(peek: PeekRef): string {
  switch (peek.kind) {
    case 'device':
      return `device\u0000${peek.userId}\u0000${peek.deviceId}`;
    case 'inbound':
      return `inbound\u0000${peek.server}\u0000${peek.peekId}`;
    case 'outbound':
      // One outbound peek per (room, target server), whatever its peek ID.
      return `outbound\u0000${peek.server}`;
  }
}

/** One bare event, as written before envelopes (tests and benchmarks still write these). */
export function encodePeekEvent(event: PeekEvent): Uint8Array {
  return Buffer.from(JSON.stringify(event), 'utf8');
}

/**
 * Checks one decoded peek event; null for shapes this version does not know. A bare
 * (pre-envelope) event's `roomSeq` was a raw ROOMS sequence of a one-event message:
 * it becomes that event's position.
 */
export function peekEventOf(value: unknown, legacy: boolean): PeekEvent | null {
  const v = value as Partial<PeekEvent> | null;
  if (v === null || typeof v !== 'object' || v.v !== 1) return null;
  if (v.type !== 'PeekStarted' && v.type !== 'PeekRenewed' && v.type !== 'PeekExpired') return null;
  if (legacy && v.type !== 'PeekRenewed') {
    const e = v as PeekStarted | PeekExpired;
    if (typeof e.roomSeq === 'number' && e.roomSeq > 0) return { ...e, roomSeq: position(e.roomSeq, 0) };
  }
  return v as PeekEvent;
}

/** The peek events of one PEEKS message (an envelope, or one bare event from before them). */
export function decodePeekEnvelope(data: Uint8Array): Envelope<PeekEvent> {
  return decodeEnvelope(data, peekEventOf);
}

/** The peek events of one PEEKS message by index (null: a shape this version does not know). */
export function decodePeekEvents(data: Uint8Array): (PeekEvent | null)[] {
  return decodePeekEnvelope(data).events;
}
