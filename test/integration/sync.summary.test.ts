// The `summary` of /sync's room sections (client-server spec, "Room summary"): heroes and
// member counts for a peeked room and a joined one, again when the membership changes, and
// not when it did not.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let n = 0;
const user = (name: string) => TestUser.register(hs.url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd();
});

afterAll(async () => {
  await hs?.dropAll();
});

describe('/sync room summary', () => {
  it('gives heroes and counts in a new peek and a new join, and again with the next membership change only', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const carol = await user('carol');
    const dave = await user('dave');
    const { room_id: roomId } = await alice.createWorldReadableRoom({ preset: 'public_chat', invite: [carol.userId] });
    expect((await bob.join(roomId)).status).toBe(200);

    // dave peeks: no membership of his own, so every member may be a hero.
    expect((await dave.peek(roomId)).status).toBe(200);
    const peeked = await dave.sync();
    expect(peeked.rooms.peek[roomId].summary).toEqual({ 'm.heroes': [alice.userId, carol.userId, bob.userId], 'm.joined_member_count': 2, 'm.invited_member_count': 1 });

    // bob's own join: he is never his own hero.
    const joined = await bob.sync();
    expect(joined.rooms.join[roomId].summary).toEqual({ 'm.heroes': [alice.userId, carol.userId], 'm.joined_member_count': 2, 'm.invited_member_count': 1 });

    // A message changes no membership: the summary is left out (empty).
    await alice.send(roomId, 'hello');
    const quiet = await bob.syncUntil(joined.next_batch, (b) => (b.rooms?.join?.[roomId]?.timeline?.events ?? []).length > 0);
    expect(quiet.body.rooms.join[roomId].summary).toEqual({});
    const peekQuiet = await dave.syncUntil(peeked.next_batch, (b) => (b.rooms?.peek?.[roomId]?.timeline?.events ?? []).length > 0);
    expect(peekQuiet.body.rooms.peek[roomId].summary).toEqual({});

    // carol accepts the invitation: the new counts come with the join.
    expect((await carol.join(roomId)).status).toBe(200);
    const after = await bob.syncUntil(quiet.body.next_batch, (b) => (b.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e: any) => e.type === 'm.room.member' && e.state_key === carol.userId));
    expect(after.body.rooms.join[roomId].summary).toEqual({ 'm.heroes': [alice.userId, carol.userId], 'm.joined_member_count': 3, 'm.invited_member_count': 0 });
    const peekAfter = await dave.syncUntil(peekQuiet.body.next_batch, (b) => (b.rooms?.peek?.[roomId]?.timeline?.events ?? []).some((e: any) => e.state_key === carol.userId));
    // Heroes go by the position of their membership event: carol's join is the newest.
    expect(peekAfter.body.rooms.peek[roomId].summary).toEqual({ 'm.heroes': [alice.userId, bob.userId, carol.userId], 'm.joined_member_count': 3, 'm.invited_member_count': 0 });
  });
});
