// Read your writes without making writes wait. A write answers as soon as the log has
// acknowledged it; what it appended becomes visible in the Postgres tables a moment later.
// Instead of every write waiting for that moment, the reads wait: this process remembers
// the highest ROOMS and PEEKS positions it acknowledged to any client, and a read waits
// until the sync projections have committed them (nearly always they have already, and the
// wait is a comparison). So a client that got 200 from /peek, /unpeek or /send sees the
// change in its next /sync — and so does any other client whose request starts afterwards,
// as before.
//
// Writes that read the tables themselves (the per-device peek cap, logout ending a device's
// peeks) wait only for that device's own earlier writes: its position is kept per session.
import { LRUCache } from 'lru-cache';
import type { CommandResult } from '../actors/roomActor.ts';
import type { WaitForProjections } from './settled.ts';

export interface Positions {
  rooms: number;
  peeks: number;
}

interface SessionWrites extends Positions {
  /** PEEKS positions of the session's latest writes there (the newest RECENT_PEEK_WRITES). */
  recentPeeks: number[];
}

/**
 * Past this many of its own writes not yet visible, a device's next peek waits for them
 * before the cap is counted (the wait hurries the commit). The PEEKS projections commit in
 * groups, at most once per PEEKD_PROJECTION_LINGER_MS (100 by default) while nobody waits, so
 * a device writing fast has dozens in flight: 64 keeps most of its peeks from waiting, and
 * one that does wait makes the group commit at once (at most 512 bytes per remembered session).
 */
export const RECENT_PEEK_WRITES = 64;

/** Sessions whose last write position is remembered; an evicted one falls back to the process's. */
const MAX_SESSIONS = 100_000;

export class ReadBarrier {
  private readonly written: Positions = { rooms: 0, peeks: 0 };
  private readonly sessions = new LRUCache<string, SessionWrites>({ max: MAX_SESSIONS });

  constructor(
    private readonly waitFor: WaitForProjections,
    /** What reads see now: the positions the sync projections have committed. */
    private readonly visible: () => Positions,
  ) {}

  /** Records what a write acknowledged to a client appended (and, given a session, by whom). */
  wrote(result: Pick<CommandResult, 'roomEvents' | 'peekEvents'>, session?: { userId: string; deviceId: string }): void {
    const rooms = result.roomEvents.at(-1)?.seq ?? 0;
    const peeks = result.peekEvents.at(-1)?.seq ?? 0;
    if (rooms === 0 && peeks === 0) return;
    if (rooms > this.written.rooms) this.written.rooms = rooms;
    if (peeks > this.written.peeks) this.written.peeks = peeks;
    if (!session) return;
    const key = sessionKey(session.userId, session.deviceId);
    const mine = this.sessions.get(key);
    const recentPeeks = mine?.recentPeeks ?? [];
    if (peeks > 0) {
      recentPeeks.push(peeks);
      if (recentPeeks.length > RECENT_PEEK_WRITES) recentPeeks.shift();
    }
    this.sessions.set(key, { rooms: Math.max(mine?.rooms ?? 0, rooms), peeks: Math.max(mine?.peeks ?? 0, peeks), recentPeeks });
  }

  /**
   * How many of this session's PEEKS writes reads cannot see yet: an upper bound on how
   * far a read of its peeks may be behind (each write starts at most one peek). Infinity
   * when this process cannot tell (it remembers too few of them).
   */
  unseenPeekWrites(userId: string, deviceId: string): number {
    const mine = this.sessions.get(sessionKey(userId, deviceId));
    const seen = this.visible().peeks;
    // Not remembered (evicted): any write not yet visible may be its own.
    if (!mine) return this.written.peeks > seen ? Infinity : 0;
    if (mine.peeks <= seen) return 0;
    const unseen = mine.recentPeeks.filter((p) => p > seen).length;
    return unseen >= RECENT_PEEK_WRITES ? Infinity : unseen;
  }

  /**
   * Counts everything in the log at start-up as acknowledged: a write answered just before
   * a restart (by this process or another) is then visible to the first reads after it.
   */
  seed(p: Positions): void {
    if (p.rooms > this.written.rooms) this.written.rooms = p.rooms;
    if (p.peeks > this.written.peeks) this.written.peeks = p.peeks;
  }

  /** The highest positions this process has acknowledged to a client (or found in the log at start-up). */
  acknowledged(): Positions {
    return { ...this.written };
  }

  /** Resolves once every write acknowledged so far is visible to reads (503 if that takes too long). */
  forReads(): Promise<void> {
    return this.reach(this.written);
  }

  /**
   * `forReads()` for a caller that would rather not make a promise when nothing is missing
   * (the common case, asked on every client request): undefined if every write
   * acknowledged so far is already visible to reads, else the wait.
   */
  pendingReads(): Promise<void> | undefined {
    const seen = this.visible();
    return this.written.rooms <= seen.rooms && this.written.peeks <= seen.peeks ? undefined : this.reach(this.written);
  }

  /**
   * Resolves once this session's own writes are visible. A session this process does not
   * remember (evicted, or its writes went through another process) waits for everything.
   */
  forSession(userId: string, deviceId: string): Promise<void> {
    return this.reach(this.sessions.get(sessionKey(userId, deviceId)) ?? this.written);
  }

  private reach(p: Positions): Promise<void> {
    const { rooms, peeks } = p;
    const seen = this.visible();
    // Every request asks: the common answer, "already visible", costs two comparisons.
    if (rooms <= seen.rooms && peeks <= seen.peeks) return Promise.resolve();
    if (peeks <= seen.peeks) return this.waitFor('rooms', rooms);
    if (rooms <= seen.rooms) return this.waitFor('peeks', peeks);
    return Promise.all([this.waitFor('rooms', rooms), this.waitFor('peeks', peeks)]).then(() => undefined);
  }
}

const sessionKey = (userId: string, deviceId: string) => `${userId}\u0000${deviceId}`;
