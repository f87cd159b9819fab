// Which member events a device has received, for lazy-loaded members (client-server API,
// "Lazy-loading room members"): an incremental /sync carries the member events of the
// timeline's senders that the device has not had yet, and — unless the filter asks for
// `include_redundant_members` — not again the ones it has.
//
// What a device has belongs to one sync sequence: the answers from one initial sync on,
// each `since` the previous `next_batch`. A sequence has an ID of its own, made by the answer
// that starts it and carried in every sync token after (syncToken.ts), so a new initial sync —
// answered by whichever HTTP process — starts from nothing without telling anyone, and two
// sequences of one device (two tabs) do not mix.
//
// An answer may be lost on its way. So a member event an answer carries is only *pending*
// until the device syncs from that answer's position (its `next_batch`): then the device has
// it. An answer whose position the device never syncs from (it asked again from an older
// `since`, and moved on from another answer) was lost, and what it carried is sent again
// when it is needed.
//
// Kept in memory and bounded (least recently used dropped first), as Synapse keeps it: what
// is not here (dropped, a restart, another HTTP process answering) is only sent again, which
// the specification allows ("redundant" members).
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { StoredEvent, Viewer } from './roomReader.ts';

/** Member events remembered over all sequences (~0.4 KB each). */
const ENTRIES = 200_000;
/** Sequences whose unconfirmed answers are tracked. */
const SEQUENCES = 20_000;
/** Unconfirmed answers tracked per sequence (normally one: the answer on its way). */
const PENDING_ANSWERS = 8;

interface Sent {
  eventId: string;
  /** The ROOMS position of the answer that carried it (its next_batch). */
  pos: number;
  /** The device synced from `pos`: it has the event. */
  received: boolean;
}

const isMember = (e: StoredEvent) => e.pdu.type === 'm.room.member' && typeof e.pdu.state_key === 'string';

/** A new sync sequence's ID (what syncToken.ts accepts: lower-case letters and digits). */
export function newLazySeq(): string {
  return randomUUID().replace(/-/g, '').slice(0, 16);
}

export class SentMembers {
  private readonly sent: LRUCache<string, Sent>;
  /** Per sequence: answer position → the keys of the member events it carried, not yet received. */
  private readonly pending = new LRUCache<string, Map<number, string[]>>({ max: SEQUENCES });

  constructor(entries = ENTRIES) {
    this.sent = new LRUCache<string, Sent>({ max: entries });
  }

  /** The device, as well as the sequence: a token someone else learnt cannot touch the owner's record. */
  private static seqKey(viewer: Viewer, seq: string): string {
    return `${viewer.userId}\u0000${viewer.deviceId}\u0000${seq}`;
  }

  private static entryKey(seqKey: string, roomId: string, userId: string): string {
    return `${seqKey}\u0000${roomId}\u0000${userId}`;
  }

  /**
   * A sync from `since` in the sequence: the answer at that position was received (what it
   * carried is the device's now); answers at older positions never were.
   */
  syncedFrom(viewer: Viewer, seq: string, since: number): void {
    const answers = this.pending.get(SentMembers.seqKey(viewer, seq));
    if (!answers) return;
    for (const [pos, keys] of answers) {
      if (pos > since) continue; // an answer still on its way (or one a retry will match)
      if (pos === since) {
        for (const k of keys) {
          const entry = this.sent.get(k);
          if (entry && entry.pos === pos) entry.received = true;
        }
      }
      answers.delete(pos);
    }
  }

  /** Whether the device has this very member event (received in this sequence by `since`). */
  has(viewer: Viewer, seq: string, roomId: string, e: StoredEvent, since: number): boolean {
    const sent = this.sent.get(SentMembers.entryKey(SentMembers.seqKey(viewer, seq), roomId, e.pdu.state_key as string));
    return sent !== undefined && sent.received && sent.eventId === e.eventId && sent.pos <= since;
  }

  /** Records the member events among `events` as carried by an answer at ROOMS position `pos`. */
  record(viewer: Viewer, seq: string, roomId: string, events: readonly StoredEvent[], pos: number): void {
    const seqKey = SentMembers.seqKey(viewer, seq);
    let answers = this.pending.get(seqKey);
    for (const e of events) {
      if (!isMember(e)) continue;
      const k = SentMembers.entryKey(seqKey, roomId, e.pdu.state_key as string);
      const before = this.sent.get(k);
      if (before?.eventId === e.eventId && (before.received || before.pos === pos)) continue; // had, or already on its way
      this.sent.set(k, { eventId: e.eventId, pos, received: false });
      if (!answers) this.pending.set(seqKey, (answers = new Map()));
      let keys = answers.get(pos);
      if (!keys) {
        answers.set(pos, (keys = []));
        // Bounded: the oldest unconfirmed answer is forgotten (what it carried is sent again).
        if (answers.size > PENDING_ANSWERS) answers.delete(answers.keys().next().value as number);
      }
      keys.push(k);
    }
  }
}
