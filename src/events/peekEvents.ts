// The peek event contract (v1). Events are never edited: a new shape is a new `v`,
// and readers keep reading the old ones. This file and subjects.ts are the whole
// contract between the room actors and every projection.

/** Who is peeking. */
export type PeekRef =
  | { kind: 'device'; userId: string; deviceId: string } // MSC2753, a local device
  | { kind: 'inbound'; server: string; peekId: string } // MSC2444, a remote server peeks us
  | { kind: 'outbound'; server: string; peekId: string }; // MSC2444, we peek a remote room

export const PEEK_END_REASONS = [
  'unpeeked',
  'timed_out',
  'joined',
  'visibility_changed',
  'encrypted',
  'device_removed',
  'remote_deleted',
  'no_active_peekers',
  'rejected',
] as const;
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
  /** ROOMS stream sequence of the room's latest PDU when the peek started (0: none). */
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
  /** ROOMS stream sequence of the room's latest PDU when the peek ended (incl. the PDU that ended it). */
  roomSeq?: number;
}

export type PeekEvent = PeekStarted | PeekRenewed | PeekExpired;

/** A peek event as read back from the log, with its PEEKS stream sequence. */
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

export function encodePeekEvent(event: PeekEvent): Uint8Array {
  return Buffer.from(JSON.stringify(event), 'utf8');
}

/** Decodes a stored peek event; returns null for shapes this version does not know. */
export function decodePeekEvent(data: Uint8Array): PeekEvent | null {
  const value = JSON.parse(Buffer.from(data).toString('utf8')) as Partial<PeekEvent>;
  if (value.v !== 1) return null;
  if (value.type !== 'PeekStarted' && value.type !== 'PeekRenewed' && value.type !== 'PeekExpired') return null;
  return value as PeekEvent;
}
