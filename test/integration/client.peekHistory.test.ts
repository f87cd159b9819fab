// A device with a long peek history (MSC2753): one that peeked and left many more rooms
// than the sync cache keeps ended peeks for (src/syncapi/syncCache.ts). Its syncs still
// answer exactly as for a short history — from an old `since` (read from the table), from
// a recent one (from memory) — and an old room peeks again as a whole. Real HTTP, NATS
// JetStream and Postgres.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PRUNE_ENDED_AT } from '../../src/syncapi/syncCache.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { roomsIn, TestUser, timelineOf } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;

beforeAll(async () => {
  // One device peeks many rooms in a row here: the per-device /peek rate limit is not under test.
  hs = await startTestPeekd({ env: { PEEKD_PEEK_RATE_BURST: '10000', PEEKD_PEEK_RATE_PER_SECOND: '10000' } });
  alice = await TestUser.register(hs.url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

const sortedCopy = (xs: string[]) => [...xs].sort();

describe('a device that peeked many rooms', () => {
  it('gets every leave entry from a since before them, none from a later one, and an old room back whole when it peeks again', async () => {
    const count = PRUNE_ENDED_AT + 16;
    const rooms: string[] = [];
    while (rooms.length < count) {
      const batch = Math.min(8, count - rooms.length);
      rooms.push(...(await Promise.all(Array.from({ length: batch }, async () => (await alice.createWorldReadableRoom()).room_id))));
    }
    const bob = await TestUser.register(hs.url, 'bob');
    for (const roomId of rooms) expect((await bob.peek(roomId)).status).toBe(200);
    const seen = await bob.sync();
    expect(sortedCopy(roomsIn(seen, 'peek'))).toEqual(sortedCopy(rooms));

    for (const roomId of rooms) expect((await bob.unpeek(roomId)).status).toBe(200);
    // From before the unpeeks: every room once under leave, none under peek.
    const left = await bob.sync({ since: seen.next_batch });
    expect(sortedCopy(roomsIn(left, 'leave'))).toEqual(sortedCopy(rooms));
    expect(roomsIn(left, 'peek')).toEqual([]);
    // After them: nothing.
    const quiet = await bob.sync({ since: left.next_batch });
    expect(roomsIn(quiet, 'leave')).toEqual([]);
    expect(roomsIn(quiet, 'peek')).toEqual([]);

    // The first room, long ended, peeked again: back as a whole, with what was said meanwhile.
    const first = rooms[0]!;
    await alice.send(first, 'said while nobody peeked');
    expect((await bob.peek(first)).status).toBe(200);
    const again = await bob.sync({ since: quiet.next_batch });
    expect(roomsIn(again, 'peek')).toEqual([first]);
    expect(roomsIn(again, 'leave')).toEqual([]);
    expect(timelineOf(again.rooms.peek[first]).map((e) => e.body)).toContain('said while nobody peeked');
    // From before everything: the first room under peek (a new peek since), the rest under leave.
    const fromOld = await bob.sync({ since: seen.next_batch });
    expect(roomsIn(fromOld, 'peek')).toEqual([first]);
    expect(sortedCopy(roomsIn(fromOld, 'leave'))).toEqual(sortedCopy(rooms.slice(1)));
    // And it ends under leave again, from the sync that showed it.
    expect((await bob.unpeek(first)).status).toBe(200);
    const ended = await bob.sync({ since: again.next_batch });
    expect(roomsIn(ended, 'leave')).toEqual([first]);
  });
});
