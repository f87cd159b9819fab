// The actor host's bound on active actors, on an in-memory stand-in for the event log: a
// new room past maxActors passivates idle actors, least recently used first, never one
// with commands queued; a host whose actors are all busy still takes the new room.
import { describe, expect, it } from 'vitest';
import { ActorHost, DEFAULT_MAX_ACTORS } from '../../src/actors/actorHost.ts';
import { NotFoundError } from '../../src/actors/errors.ts';
import type { ActorDeps } from '../../src/actors/roomActor.ts';
import type { PduFactory } from '../../src/actors/pduFactory.ts';
import type { EventLog } from '../../src/nats/eventLog.ts';

const SERVER = 'example.org';
const T0 = 1_700_000_000_000;

const room = (n: number | string) => `!r${n}:${SERVER}`;

/**
 * An empty log: every room is unknown, so a command activates its room's actor (two reads)
 * and is refused (no such room) without appending. A held room's reads wait until released,
 * keeping its command queued.
 */
function emptyLog() {
  const held = new Map<string, { released: Promise<void>; release: () => void }>();
  const log = {
    read: async (_kind: string, roomId: string) => {
      await held.get(roomId)?.released;
      return [];
    },
    lastSeq: async () => 0,
    get: async () => null,
    append: async () => {
      throw new Error('nothing is appended here');
    },
    naming: { roomSubject: (kind: string, roomId: string) => `${kind}.${roomId}` },
  };
  return {
    log: log as unknown as EventLog,
    hold(roomId: string): () => void {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      held.set(roomId, { released, release });
      return () => {
        held.delete(roomId);
        release();
      };
    },
  };
}

function hostOf(log: EventLog, maxActors?: number): ActorHost {
  const deps: ActorDeps = {
    log,
    clock: { now: () => T0 },
    pduFactory: {} as PduFactory,
    settings: { serverName: SERVER, peekLifetimeMs: 3_600_000, inboundRenewalIntervalMs: 3_600_000, maxConflictRetries: 2 },
    exclusive: true,
  };
  return new ActorHost(deps, { passivateAfterMs: 3_600_000, ...(maxActors === undefined ? {} : { maxActors }) });
}

/** A command for `roomId` that the empty log refuses (the room does not exist). */
function touch(host: ActorHost, roomId: string): Promise<unknown> {
  return host.send({ type: 'StartDevicePeek', roomId, userId: `@u:${SERVER}`, deviceId: 'D' }).then(
    () => Promise.reject(new Error('expected a refusal')),
    (err: unknown) => {
      expect(err).toBeInstanceOf(NotFoundError);
    },
  );
}

/** Which of `rooms` have an active actor. */
function active(host: ActorHost, rooms: string[]): string[] {
  return rooms.filter((r) => host.state(r) !== undefined);
}

describe('actor host: maxActors', () => {
  it('holds at most maxActors idle actors, passivating the least recently used first', async () => {
    const { log } = emptyLog();
    const host = hostOf(log, 3);
    try {
      const rooms = [1, 2, 3, 4, 5].map(room);
      await touch(host, rooms[0]!);
      await touch(host, rooms[1]!);
      await touch(host, rooms[2]!);
      expect(host.activeRooms).toBe(3);
      // r1 is used again, so r2 is now the least recently used.
      await touch(host, rooms[0]!);
      await touch(host, rooms[3]!);
      expect(host.activeRooms).toBe(3);
      expect(active(host, rooms)).toEqual([rooms[0], rooms[2], rooms[3]]);
      await touch(host, rooms[4]!);
      expect(active(host, rooms)).toEqual([rooms[0], rooms[3], rooms[4]]);
    } finally {
      await host.stop();
    }
  });

  it('never passivates an actor with a command queued: the idle ones go, even if used more recently', async () => {
    const { log, hold } = emptyLog();
    const host = hostOf(log, 3);
    try {
      const rooms = [1, 2, 3, 4].map(room);
      const release = hold(rooms[0]!);
      const busy = touch(host, rooms[0]!); // the least recently used, but its command waits
      await touch(host, rooms[1]!);
      await touch(host, rooms[2]!);
      await touch(host, rooms[3]!);
      expect(host.activeRooms).toBe(3);
      expect(active(host, rooms)).toEqual([rooms[0], rooms[2], rooms[3]]);
      release();
      await busy;
      expect(host.state(rooms[0]!)).toBeDefined();
    } finally {
      await host.stop();
    }
  });

  it('admits a new room when every actor is busy, and comes back under the bound once they are idle', async () => {
    const { log, hold } = emptyLog();
    const host = hostOf(log, 2);
    try {
      const rooms = [1, 2, 3, 4].map(room);
      const releases = rooms.slice(0, 3).map((r) => hold(r));
      const busy = rooms.slice(0, 3).map((r) => touch(host, r));
      // Nothing idle to passivate: all three are held, over the bound.
      expect(host.activeRooms).toBe(3);
      expect(active(host, rooms)).toEqual(rooms.slice(0, 3));
      // A second command for a busy room queues behind the first, on the same actor.
      const again = touch(host, rooms[1]!);
      expect(host.activeRooms).toBe(3);
      for (const release of releases) release();
      await Promise.all([...busy, again]);
      // The next new room passivates idle actors until it fits: r1 and r3 (r2 was used last).
      await touch(host, rooms[3]!);
      expect(host.activeRooms).toBe(2);
      expect(active(host, rooms)).toEqual([rooms[1], rooms[3]]);
    } finally {
      await host.stop();
    }
  });

  it('a command for an active room never passivates anything', async () => {
    const { log } = emptyLog();
    const host = hostOf(log, 2);
    try {
      await touch(host, room(1));
      await touch(host, room(2));
      for (let i = 0; i < 5; i++) await touch(host, room(1 + (i % 2)));
      expect(active(host, [room(1), room(2)])).toEqual([room(1), room(2)]);
    } finally {
      await host.stop();
    }
  });

  it('defaults to 100,000 actors, and refuses a bound below one', async () => {
    expect(DEFAULT_MAX_ACTORS).toBe(100_000);
    const { log } = emptyLog();
    expect(() => hostOf(log, 0)).toThrow(RangeError);
    await hostOf(log).stop();
  });
});
