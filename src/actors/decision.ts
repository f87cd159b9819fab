// The shape of a decision, and the peek endings a room's facts imply. Shared by the
// peek decider (decide.ts) and the room-event decider (roomDecide.ts). Pure.
import type { PeekEndReason, PeekEvent, PeekExpired, PeekRef } from '../events/peekEvents.ts';
import type { PduDraft, ReceivedPdu } from './commands.ts';
import { isEncrypted, isWorldReadable, membershipOf, type RoomFacts, type RoomState } from './state.ts';

export interface Decision {
  /** New local events to author, in order (the shell builds, hashes and signs them). */
  drafts: PduDraft[];
  /** Verified PDUs from federation to append as they are, in order. */
  received: ReceivedPdu[];
  /** Peek events, appended after the room events. */
  peeks: PeekEvent[];
  /** For an idempotent send that was already done: the event it produced. */
  existingEventId?: string;
}

export function decision(partial: Partial<Decision>): Decision {
  return { drafts: [], received: [], peeks: [], ...partial };
}

export function expired(roomId: string, peek: PeekRef, at: number, reason: PeekEndReason): PeekExpired {
  return { type: 'PeekExpired', v: 1, roomId, peek, at, reason };
}

/** Why the room's facts no longer allow this peek, or null when they do. */
export function endReasonFor(room: RoomFacts | null, peek: PeekRef): PeekEndReason | null {
  if (room === null) return null;
  if (isEncrypted(room)) return 'encrypted';
  if (!isWorldReadable(room)) return 'visibility_changed';
  if (peek.kind === 'device' && membershipOf(room, peek.userId) === 'join') return 'joined';
  return null;
}

/** PeekExpired events for every live peek the room's facts no longer allow. */
export function impliedEndings(room: RoomFacts | null, state: RoomState, now: number): PeekExpired[] {
  const out: PeekExpired[] = [];
  for (const live of state.peeks.values()) {
    const reason = endReasonFor(room, live.peek);
    if (reason) out.push(expired(state.roomId, live.peek, now, reason));
  }
  return out;
}
