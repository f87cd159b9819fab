// Devices that ask /sync the same question at the same positions share one computed answer
// (src/syncapi/sync.ts). Sharing must never hand a device an answer that is not its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, request, roomsIn, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;

beforeAll(async () => {
  hs = await startTestPeekd();
  alice = await TestUser.register(hs.url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

describe('shared /sync answers', () => {
  it('one event wakes peekers with the same question to the same answer, and each other device to its own', async () => {
    const { room_id: room } = await alice.createWorldReadableRoom();
    const { room_id: other } = await alice.createWorldReadableRoom();
    await alice.send(other, 'only in the other room');
    const [p1, p2, wide, member, late] = await Promise.all(['p1', 'p2', 'wide', 'member', 'late'].map((n) => TestUser.register(hs.url, n)));
    for (const u of [p1!, p2!, wide!]) expect((await u.peek(room)).status).toBe(200);
    expect((await wide!.peek(other)).status).toBe(200);
    expect((await member!.join(room)).status).toBe(200);
    // One position for everyone, then everyone long-polls from it.
    const since = (await p1!.sync()).next_batch as string;
    // A device whose peek starts after that position asks a different question: it gets the
    // whole room (from m.room.create), the others only what is new.
    expect((await late!.peek(room)).status).toBe(200);
    const lateAnswer = await late!.sync({ since });
    expect(lateAnswer.rooms.peek[room].timeline.events[0].type).toBe('m.room.create');
    const polls = [p1!, p2!, wide!, member!].map((u) => u.sync({ since, timeout: 10_000 }));
    await until('the four long-polls to wait', () => hs.peekd.notifier.waiting >= 4);
    await alice.send(room, 'wake up');
    const [a1, a2, aw, am] = await Promise.all(polls);
    // Same question, same answer, to the byte (ages included: computed once) — although
    // p1 and p2 began peeking at different moments.
    expect(JSON.stringify(a1)).toBe(JSON.stringify(a2));
    expect(a1.rooms.peek[room].timeline.events.map((e: any) => e.content.body)).toEqual(['wake up']);
    // A device that peeks more rooms is not handed the narrower answer, nor a member the peekers'.
    expect(roomsIn(aw, 'peek')).toEqual([room]);
    expect(aw.rooms.peek[room].timeline.events.map((e: any) => e.content.body)).toEqual(['wake up']);
    expect(roomsIn(am, 'join')).toEqual([room]);
    expect(roomsIn(am, 'peek')).toEqual([]);
  });

  it('a device asking, at the same positions, a question already answered gets that answer at once; its own client data still lands on it', async () => {
    const { room_id: room } = await alice.createWorldReadableRoom();
    const { room_id: other } = await alice.createWorldReadableRoom();
    const [q1, q2, q3, wide] = await Promise.all(['q1', 'q2', 'q3', 'qwide'].map((n) => TestUser.register(hs.url, n)));
    for (const u of [q1!, q2!, q3!, wide!]) expect((await u.peek(room)).status).toBe(200);
    expect((await wide!.peek(other)).status).toBe(200);
    // Each device has synced before (what it peeks and its memberships are in memory), from one position.
    const since = (await q1!.sync()).next_batch as string;
    for (const u of [q2!, q3!, wide!]) await u.sync();
    await alice.send(room, 'said once');
    await alice.send(other, 'said elsewhere');
    const a1 = await q1!.sync({ since });
    expect(a1.rooms.peek[room].timeline.events.map((e: any) => e.content.body)).toEqual(['said once']);
    // Nothing moved: q2 asks the same question at the same positions and gets the same bytes.
    const a2 = await q2!.sync({ since });
    expect(JSON.stringify(a2)).toBe(JSON.stringify(a1));
    // A device that peeks one more room asks another question, and gets its own answer.
    const aw = await wide!.sync({ since });
    expect(roomsIn(aw, 'peek').sort()).toEqual([room, other].sort());
    expect(aw.next_batch).toBe(a1.next_batch);
    // q3 stores account data after `since`; then q2 asks again, then q3 (the same question
    // but for its data): q3's answer carries its data over the same rooms, q2's does not.
    const put = await request(hs.url, 'PUT', `/_matrix/client/v3/user/${enc(q3!.userId)}/account_data/org.example.note`, { token: q3!.token, body: { n: 3 } });
    expect(put.status).toBe(200);
    const again = await q2!.sync({ since });
    expect(again.account_data.events).toEqual([]);
    expect(again.rooms).toEqual(a1.rooms);
    const a3 = await q3!.sync({ since });
    expect(a3.account_data.events).toEqual([{ type: 'org.example.note', content: { n: 3 } }]);
    expect(a3.rooms).toEqual(a1.rooms);
  });
});
