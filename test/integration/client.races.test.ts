// /sync while the two sync projections (ROOMS and PEEKS) are at different positions. They
// commit independently, so a sync can see a room event before the peek event it caused, or
// the other way round. Here one projection is held back on purpose (stopped, then started
// again from its checkpoint) to make each order happen for certain, and the client must
// still get exactly what MATRIX.md promises.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../../src/store/db.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { roomsIn, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let n = 0;
const user = (name: string) => TestUser.register(hs.url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd();
  alice = await TestUser.register(hs.url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

/** Runs `during` while the projection `name` is stopped, then starts it again. */
async function holdingBack<T>(name: 'sync_rooms' | 'sync_peeks', during: () => Promise<T>): Promise<T> {
  const runner = hs.peekd.projections.get(name)!;
  await runner.stop();
  try {
    return await during();
  } finally {
    await runner.start();
  }
}

/**
 * A room event sent through the command bus, not through this process's HTTP API: as a
 * write another HTTP process (or a federation peer) made. A read here does not wait for
 * it (read your writes covers this process's clients), which is how the two projections
 * can be seen at different positions at all.
 */
function sendElsewhere(roomId: string, sender: string, type: string, stateKey: string, content: Record<string, unknown>) {
  return hs.peekd.bus.send({ type: 'SendEvents', roomId, events: [{ type, sender, state_key: stateKey, content }] });
}

async function peekEndReason(roomId: string, u: TestUser): Promise<string | null> {
  const [row] = rowsOf<{ end_reason: string | null }>(
    await hs.peekd.database.db.execute(sql`select end_reason from syncapi_peeks where room_id = ${roomId} and user_id = ${u.userId} and device_id = ${u.deviceId}`),
  );
  return row?.end_reason ?? null;
}

async function peekedRoom() {
  const { room_id: roomId } = await alice.createWorldReadableRoom();
  await alice.send(roomId, 'hello');
  const bob = await user('bob');
  expect((await bob.peek(roomId)).status).toBe(200);
  const s0 = await bob.sync();
  expect(roomsIn(s0, 'peek')).toEqual([roomId]);
  return { roomId, bob, since: s0.next_batch as string };
}

describe('sync between the ROOMS and PEEKS projections', () => {
  it('a peeker never gets events from after the room stopped being world_readable, even before its peek is seen to end', async () => {
    const { roomId, bob, since } = await peekedRoom();
    let mid: any;
    let setting: Promise<unknown> | undefined;
    await holdingBack('sync_peeks', async () => {
      // The visibility change ends the peek (PEEKS) — held back — but its room events are projected.
      setting = sendElsewhere(roomId, alice.userId, 'm.room.history_visibility', '', { history_visibility: 'shared' });
      await until(
        'the visibility change in the room tables',
        async () => (await alice.ok('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.history_visibility/`)).history_visibility === 'shared',
      );
      await alice.send(roomId, 'secret while the peek is not yet ended');
      mid = await bob.sync({ since });
      expect(JSON.stringify(mid)).not.toContain('secret');
      // The change itself is shown (it is the last event the peek may see).
      const tl = mid.rooms.peek[roomId]?.timeline.events ?? [];
      expect(tl.map((e: any) => e.type)).toEqual(['m.room.history_visibility']);
    });
    await setting;
    await until('the peek to end', async () => (await peekEndReason(roomId, bob)) === 'visibility_changed');
    const after = await bob.sync({ since: mid.next_batch });
    expect(JSON.stringify(after)).not.toContain('secret');
    expect(roomsIn(after, 'leave')).toEqual([roomId]);
    expect(roomsIn(after, 'peek')).toEqual([]);
  });

  it('joining: when the peek is seen to end before the join is, the room still moves to join without the state again', async () => {
    const { roomId, bob, since } = await peekedRoom();
    let joining: ReturnType<typeof sendElsewhere> | undefined;
    let mid: any;
    await holdingBack('sync_rooms', async () => {
      joining = sendElsewhere(roomId, bob.userId, 'm.room.member', bob.userId, { membership: 'join' });
      await until('the peek to end (joined)', async () => (await peekEndReason(roomId, bob)) === 'joined');
      mid = await bob.sync({ since });
      // The join is not visible yet: the room is neither left nor dropped for good.
      expect(roomsIn(mid, 'leave')).toEqual([]);
    });
    const joined = await joining!;
    expect(joined.roomEvents.length).toBe(1);
    await hs.peekd.waitForProjections('rooms', joined.roomEvents.at(-1)!.seq); // caught up again
    const s = await bob.sync({ since: mid.next_batch });
    expect(roomsIn(s, 'join')).toEqual([roomId]);
    expect(roomsIn(s, 'leave')).toEqual([]);
    expect(roomsIn(s, 'peek')).toEqual([]);
    expect(s.rooms.join[roomId].state.events).toEqual([]);
    expect(s.rooms.join[roomId].timeline.events.map((e: any) => [e.type, e.state_key])).toEqual([['m.room.member', bob.userId]]);
  });

  it('joining: when the join is seen before the peek ends, the room moves to join once and never shows under leave', async () => {
    const { roomId, bob, since } = await peekedRoom();
    let joining: ReturnType<typeof sendElsewhere> | undefined;
    let mid: any;
    await holdingBack('sync_peeks', async () => {
      joining = sendElsewhere(roomId, bob.userId, 'm.room.member', bob.userId, { membership: 'join' });
      await until('the join in the room tables', async () => ((await bob.ok('GET', '/_matrix/client/v3/joined_rooms')).joined_rooms as string[]).includes(roomId));
      mid = await bob.sync({ since });
      expect(roomsIn(mid, 'join')).toEqual([roomId]);
      expect(roomsIn(mid, 'peek')).toEqual([]);
      expect(mid.rooms.join[roomId].state.events).toEqual([]);
    });
    expect((await joining!).roomEvents.length).toBe(1);
    const s = await bob.sync({ since: mid.next_batch });
    expect(roomsIn(s, 'leave')).toEqual([]);
    expect(roomsIn(s, 'peek')).toEqual([]);
  });

  it('rejoining after a join and a leave is an ordinary join with the full state', async () => {
    const { roomId, bob, since } = await peekedRoom();
    expect((await bob.join(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(s1.rooms.join[roomId].state.events).toEqual([]);
    expect((await bob.leave(roomId)).status).toBe(200);
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'leave')).toEqual([roomId]);
    expect((await bob.join(roomId)).status).toBe(200);
    const s3 = await bob.sync({ since: s2.next_batch });
    expect(roomsIn(s3, 'join')).toEqual([roomId]);
    const types = [...s3.rooms.join[roomId].state.events, ...s3.rooms.join[roomId].timeline.events].map((e: any) => e.type);
    expect(types).toContain('m.room.create');
  });
});
