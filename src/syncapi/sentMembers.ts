// Which member events a device has been sent, for lazy-loaded members (client-server API,
// "Lazy-loading room members"): an incremental /sync carries the member events of the
// timeline's senders that the device has not had yet, and — unless the filter asks for
// `include_redundant_members` — not again the ones it has.
//
// What a device has belongs to one sync sequence: the answers from one initial sync on,
// each `since` the previous `next_batch`. A sequence has an ID of its own, made by the answer
// that starts it and carried in every sync token after (syncToken.ts), so a new initial sync —
// answered by whichever HTTP process — starts from nothing without telling anyone, and two
// sequences of one device (two tabs) do not mix. Each member event is remembered with the
// position of the answer that carried it, and counts as the device's only once the device
// syncs from that position or later: a client that lost an answer and asks again from the
// same `since` is sent its members again.
//
// Kept in memory, bounded over all devices (least recently recorded dropped first), as
// Synapse keeps it: what is not here (dropped, a restart, another HTTP process answering) is
// only sent again, which the specification allows ("redundant" members).
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { StoredEvent } from './roomReader.ts';

/** Member events remembered over all sequences (~0.4 KB each). */
const ENTRIES = 200_000;

interface Sent {
  eventId: string;
  /** The ROOMS position of the first answer that carried it. */
  pos: number;
}

const isMember = (e: StoredEvent) => e.pdu.type === 'm.room.member' && typeof e.pdu.state_key === 'string';

/** A new sync sequence's ID (what syncToken.ts accepts: lower-case letters and digits). */
export function newLazySeq(): string {
  return randomUUID().replace(/-/g, '').slice(0, 16);
}

export class SentMembers {
  private readonly sent: LRUCache<string, Sent>;

  constructor(entries = ENTRIES) {
    this.sent = new LRUCache<string, Sent>({ max: entries });
  }

  private static key(seq: string, roomId: string, userId: string): string {
    return `${seq}\u0000${roomId}\u0000${userId}`;
  }

  /** Whether the sequence has had this very member event, from an answer at or before `since`. */
  has(seq: string, roomId: string, e: StoredEvent, since: number): boolean {
    const sent = this.sent.get(SentMembers.key(seq, roomId, e.pdu.state_key as string));
    return sent !== undefined && sent.eventId === e.eventId && sent.pos <= since;
  }

  /** Records the member events among `events` as sent in an answer at ROOMS position `pos`. */
  record(seq: string, roomId: string, events: readonly StoredEvent[], pos: number): void {
    for (const e of events) {
      if (!isMember(e)) continue;
      const k = SentMembers.key(seq, roomId, e.pdu.state_key as string);
      const before = this.sent.get(k);
      if (before?.eventId === e.eventId && before.pos <= pos) continue; // the first answer that carried it counts
      this.sent.set(k, { eventId: e.eventId, pos });
    }
  }
}
