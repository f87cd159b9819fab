// Wakes long-polling /sync requests: indexed by room, by user and by device, so a new
// event wakes exactly the requests that may care, in O(waiters of that room).
import type { PeekEvent } from '../events/peekEvents.ts';
import type { RoomEvent } from '../events/roomEvents.ts';
import type { Projected } from '../projections/projection.ts';
import type { Hangup } from './hangup.ts';
import { wakingBegins, wakingEnds } from './writeSlices.ts';

/**
 * How many long-polls are woken before the event loop gets a turn. Small: the first woken
 * computes the answer the others share, and its database answers wait behind each slice
 * (at 10,000 devices the first answer went out after 40–60 ms with 200, 20–33 ms with 50).
 */
const WAKE_SLICE = 50;

export interface WaitInterest {
  userId: string;
  deviceId: string;
  roomIds: Iterable<string>;
  /**
   * Rooms whose client data (receipts, typing, members' presence) the waiter reads: a
   * member's joined rooms, a preview's room. Not a peeker's /sync, which shows none of it,
   * so that a room's typing does not wake its thousands of peekers.
   */
  clientDataRoomIds?: readonly string[];
}

interface Waiter {
  /** `at`: when the batch that wakes it was committed (performance.now()). */
  wake(at: number): void;
  /** Ends the wait as if it timed out (shutdown). */
  release(): void;
}

function add<K>(map: Map<K, Set<Waiter>>, key: K, w: Waiter) {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(w);
}

function remove<K>(map: Map<K, Set<Waiter>>, key: K, w: Waiter) {
  const set = map.get(key);
  if (set && set.delete(w) && set.size === 0) map.delete(key);
}

export class SyncNotifier {
  private readonly byRoom = new Map<string, Set<Waiter>>();
  private readonly byUser = new Map<string, Set<Waiter>>();
  private readonly byDevice = new Map<string, Set<Waiter>>();
  private readonly byClientDataRoom = new Map<string, Set<Waiter>>();

  get waiting(): number {
    let n = 0;
    for (const s of this.byUser.values()) n += s.size;
    return n;
  }

  /** Resolves with when the waking batch was committed (performance.now()), or false on timeout or abort. */
  wait(interest: WaitInterest, timeoutMs: number, signal?: Hangup): Promise<number | false> {
    return new Promise((resolve) => {
      // Not copied: often the room list of a shared answer, which nothing changes.
      const rooms: readonly string[] = Array.isArray(interest.roomIds) ? (interest.roomIds as string[]) : [...interest.roomIds];
      const clientDataRooms: readonly string[] = interest.clientDataRoomIds ?? [];
      const deviceKey = `${interest.userId}\u0000${interest.deviceId}`;
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      // Once only: a waiter may sit in the slices of two wake-ups (its room's and its user's).
      const done = (woken: number | false) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        signal?.onAbort(undefined);
        for (const r of rooms) remove(this.byRoom, r, waiter);
        for (const r of clientDataRooms) remove(this.byClientDataRoom, r, waiter);
        remove(this.byUser, interest.userId, waiter);
        remove(this.byDevice, deviceKey, waiter);
        resolve(woken);
      };
      const waiter: Waiter = { wake: (at) => done(at), release: () => done(false) };
      const onAbort = () => done(false);
      for (const r of rooms) add(this.byRoom, r, waiter);
      for (const r of clientDataRooms) add(this.byClientDataRoom, r, waiter);
      add(this.byUser, interest.userId, waiter);
      add(this.byDevice, deviceKey, waiter);
      timer = setTimeout(() => done(false), timeoutMs);
      signal?.onAbort(onAbort);
    });
  }

  /**
   * Wakes a set of waiters in slices, yielding to the event loop between them, so that
   * thousands of long-polls woken by one event do not hold it: the answers of one slice
   * are written to their sockets before the next slice is computed.
   */
  private wakeAll<K>(map: Map<K, Set<Waiter>>, key: K, at: number) {
    const set = map.get(key);
    if (!set || set.size === 0) return;
    // All of them wake: drop the index entry at once rather than one waiter at a time.
    map.delete(key);
    const waiters = [...set];
    let i = 0;
    // A wake-up of more than one slice is a burst: new /sync requests wait until its
    // answers are out (src/syncapi/writeSlices.ts).
    const burst = waiters.length > WAKE_SLICE;
    if (burst) wakingBegins();
    const slice = () => {
      const end = Math.min(i + WAKE_SLICE, waiters.length);
      for (; i < end; i++) waiters[i]!.wake(at);
      if (i < waiters.length) setImmediate(slice);
      else if (burst) wakingEnds();
    };
    slice();
  }

  /** Ends every wait now, as if it timed out: each long-poll answers with what it has (shutdown). */
  releaseAll(): void {
    for (const set of [...this.byUser.values()]) for (const w of [...set]) w.release();
  }

  onRoomEvents(batch: Projected<RoomEvent>[]): void {
    const at = performance.now();
    for (const { event } of batch) {
      this.wakeAll(this.byRoom, event.roomId, at);
      if (event.pdu.type === 'm.room.member' && typeof event.pdu.state_key === 'string') {
        this.wakeAll(this.byUser, event.pdu.state_key, at);
      }
    }
  }

  onPeekEvents(batch: Projected<PeekEvent>[]): void {
    const at = performance.now();
    for (const { event } of batch) {
      if (event.peek.kind === 'device') this.wakeAll(this.byDevice, `${event.peek.userId}\u0000${event.peek.deviceId}`, at);
    }
  }

  /**
   * Client data changed (src/syncapi/clientData.ts): wakes the long-polls of these users,
   * and of those reading these rooms' client data (receipts, typing, a member's presence:
   * the members, and the previews of the room; not its peekers' /sync).
   */
  onClientData(userIds: Iterable<string>, roomIds: Iterable<string> = []): void {
    const at = performance.now();
    for (const userId of userIds) this.wakeAll(this.byUser, userId, at);
    for (const roomId of roomIds) this.wakeAll(this.byClientDataRoom, roomId, at);
  }
}
