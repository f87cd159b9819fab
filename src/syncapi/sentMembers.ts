// Which member events a device has been sent, for lazy-loaded members (client-server API,
// "Lazy-loading room members"): an incremental /sync carries the member events of the
// timeline's senders that the device has not had yet, and — unless the filter asks for
// `include_redundant_members` — not again the ones it has. Kept in memory per device, as
// Synapse keeps it: what falls out (an evicted device, a restart, another HTTP process
// answering) is only sent again, which the specification allows ("redundant" members).
//
// Each member event is remembered with the position of the answer that carried it, and it
// counts as the device's only once the device syncs from that position or later: a client
// that lost an answer and asks again from the same `since` is sent its members again.
import { LRUCache } from 'lru-cache';
import type { StoredEvent, Viewer } from './roomReader.ts';

/** Devices remembered (least recently synced dropped first). */
const DEVICES = 10_000;
/** Member events remembered per device, over all its rooms. */
const PER_DEVICE = 1_000;

interface Sent {
  eventId: string;
  /** The ROOMS position of the first answer that carried it. */
  pos: number;
}

const isMember = (e: StoredEvent) => e.pdu.type === 'm.room.member' && typeof e.pdu.state_key === 'string';

export class SentMembers {
  // Per device a plain Map in insertion order, the oldest dropped past `perDevice` (an
  // LRUCache per device would allocate its full-size arrays up front, for every device).
  private readonly devices = new LRUCache<string, Map<string, Sent>>({ max: DEVICES });

  constructor(private readonly perDevice = PER_DEVICE) {}

  private static key(viewer: Viewer): string {
    return `${viewer.userId}\u0000${viewer.deviceId}`;
  }

  /** An initial sync: the device starts again from nothing (it may have lost what it had). */
  forget(viewer: Viewer): void {
    this.devices.delete(SentMembers.key(viewer));
  }

  /** Whether the device has this very member event, from an answer at or before `since`. */
  has(viewer: Viewer, roomId: string, e: StoredEvent, since: number): boolean {
    const sent = this.devices.get(SentMembers.key(viewer))?.get(`${roomId}\u0000${e.pdu.state_key as string}`);
    return sent !== undefined && sent.eventId === e.eventId && sent.pos <= since;
  }

  /**
   * Whether the device has a member event of `userId` in the room from an answer at or before
   * `since`. Every membership change after a device's initial sync reaches it (in a timeline,
   * or in the state of a gap) and is recorded here as it goes out, so what the device has is
   * the room's member event as of `since`: an incremental answer need not look it up.
   */
  knows(viewer: Viewer, roomId: string, userId: string, since: number): boolean {
    const sent = this.devices.get(SentMembers.key(viewer))?.get(`${roomId}\u0000${userId}`);
    return sent !== undefined && sent.pos <= since;
  }

  /** Records the member events among `events` as sent in an answer at ROOMS position `pos`. */
  record(viewer: Viewer, roomId: string, events: readonly StoredEvent[], pos: number): void {
    const key = SentMembers.key(viewer);
    let sent = this.devices.get(key);
    for (const e of events) {
      if (!isMember(e)) continue;
      if (!sent) this.devices.set(key, (sent = new Map()));
      const k = `${roomId}\u0000${e.pdu.state_key as string}`;
      const before = sent.get(k);
      if (before?.eventId === e.eventId && before.pos <= pos) continue; // the first answer that carried it counts
      sent.delete(k); // re-inserted as the newest
      sent.set(k, { eventId: e.eventId, pos });
      if (sent.size > this.perDevice) sent.delete(sent.keys().next().value as string);
    }
  }
}
