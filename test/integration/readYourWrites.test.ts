// Read your writes, carried by the reads: a write answers once the log holds it, without
// waiting for Postgres; a request that starts afterwards waits until the projections have
// what was acknowledged (src/projections/readBarrier.ts). Here the sync projections are
// held back on purpose, so that "the write did not wait" and "the read did" are both certain.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { roomsIn, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let n = 0;
const user = (name: string) => TestUser.register(hs.url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd({ env: { PEEKD_MAX_PEEKS_PER_DEVICE: '3' } });
  alice = await TestUser.register(hs.url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

/** Stops a sync projection, runs `during`, and starts it again once `during` has made a request wait for it. */
async function heldBack<T>(name: 'sync_rooms' | 'sync_peeks', during: (release: () => Promise<void>) => Promise<T>): Promise<T> {
  const runner = hs.peekd.projections.get(name)!;
  await runner.stop();
  let started = false;
  const release = async () => {
    // Only once a request is really waiting: otherwise "it waited" would prove nothing.
    await until(`a request waiting for ${name}`, () => runner.waiting > 0);
    started = true;
    await runner.start();
  };
  try {
    return await during(release);
  } finally {
    if (!started) await runner.start();
  }
}

describe('read your writes', () => {
  it('/peek answers while the sync projection is stopped, and the device’s next /sync waits for it and shows the room', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    await alice.send(roomId, 'hello');
    const bob = await user('bob');
    const s0 = await bob.sync();
    await heldBack('sync_peeks', async (release) => {
      // Before: a write waited for its projection, so this would have hung until 503.
      expect((await bob.peek(roomId)).status).toBe(200);
      const next = bob.sync({ since: s0.next_batch });
      await release();
      const s1 = await next;
      expect(roomsIn(s1, 'peek')).toEqual([roomId]);
      expect(s1.rooms.peek[roomId].timeline.events.map((e: any) => e.content.body).filter(Boolean)).toContain('hello');
    });
  });

  it('/send answers while the room projection is stopped; another user’s /messages started afterwards shows the message', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const carol = await user('carol');
    await heldBack('sync_rooms', async (release) => {
      const eventId = await alice.send(roomId, 'sent while the projection was stopped');
      const reading = carol.messages(roomId);
      await release();
      expect((await reading).map((e: any) => e.event_id)).toContain(eventId);
    });
  });

  it('/unpeek answers at once, and the next /sync shows the room left', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const dave = await user('dave');
    expect((await dave.peek(roomId)).status).toBe(200);
    const s0 = await dave.sync();
    expect(roomsIn(s0, 'peek')).toEqual([roomId]);
    await heldBack('sync_peeks', async (release) => {
      expect((await dave.unpeek(roomId)).status).toBe(200);
      const next = dave.sync({ since: s0.next_batch });
      await release();
      const s1 = await next;
      expect(roomsIn(s1, 'leave')).toEqual([roomId]);
      expect(roomsIn(s1, 'peek')).toEqual([]);
    });
  });

  it('the per-device peek cap counts peeks the projection has not shown yet', async () => {
    const rooms = await Promise.all([0, 1, 2, 3].map(async () => (await alice.createWorldReadableRoom()).room_id));
    const erin = await user('erin');
    expect((await erin.peek(rooms[0]!)).status).toBe(200);
    expect((await erin.peek(rooms[1]!)).status).toBe(200);
    await heldBack('sync_peeks', async (release) => {
      // The third fits even counted pessimistically: no wait.
      expect((await erin.peek(rooms[2]!)).status).toBe(200);
      // The fourth would be over the cap if the third counts: the cap waits to count exactly.
      const fourth = erin.peek(rooms[3]!);
      await release();
      const r = await fourth;
      expect({ status: r.status, errcode: r.body.errcode }).toEqual({ status: 429, errcode: 'M_LIMIT_EXCEEDED' });
    });
    // Renewing a room already peeked is never refused by the cap.
    expect((await erin.peek(rooms[2]!)).status).toBe(200);
  });
});
