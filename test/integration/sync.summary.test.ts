// The `summary` of /sync's room sections (client-server spec, "Room summary"): heroes and
// member counts for a peeked room and a joined one, again when the membership changes, and
// not when it did not. Lazy-loaded members (`lazy_load_members`) in /sync and /messages.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, TestUser } from '../helpers/matrix.ts';

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

  it('with lazy_load_members, a new room’s state holds only the member events of the senders, the heroes and the reader', async () => {
    const alice = await user('alice');
    const { room_id: roomId } = await alice.createWorldReadableRoom({ preset: 'public_chat' });
    const crowd = await Promise.all(Array.from({ length: 8 }, (_, i) => user(`m${i}`)));
    for (const m of crowd) expect((await m.join(roomId)).status).toBe(200);
    const [first, , , , , , speaker, last] = crowd as [TestUser, TestUser, TestUser, TestUser, TestUser, TestUser, TestUser, TestUser];
    await speaker.send(roomId, 'one');
    await last.send(roomId, 'two');
    const members = (section: any) =>
      section.state.events
        .filter((e: any) => e.type === 'm.room.member')
        .map((e: any) => e.state_key)
        .sort();
    const lazy = JSON.stringify({ room: { state: { lazy_load_members: true }, timeline: { limit: 2 } } });
    const eager = JSON.stringify({ room: { timeline: { limit: 2 } } });

    // A peeker: the two senders and the five heroes (alice and the first four to join).
    const peeker = await user('peeker');
    expect((await peeker.peek(roomId)).status).toBe(200);
    const lazyPeek = (await peeker.sync({ filter: lazy })).rooms.peek[roomId];
    const heroes = [alice.userId, ...crowd.slice(0, 4).map((m) => m.userId)];
    expect(lazyPeek.summary['m.heroes']).toEqual(heroes);
    expect(members(lazyPeek)).toEqual([...heroes, speaker.userId, last.userId].sort());
    // Without it, every member.
    const eagerPeek = (await peeker.sync({ filter: eager })).rooms.peek[roomId];
    expect(members(eagerPeek)).toEqual([alice.userId, ...crowd.map((m) => m.userId)].sort());
    // The state's other events are all there either way.
    const others = (section: any) =>
      section.state.events
        .filter((e: any) => e.type !== 'm.room.member')
        .map((e: any) => e.type)
        .sort();
    expect(others(lazyPeek)).toEqual(others(eagerPeek));

    // A member: its own member event too.
    const lazyJoin = (await first.sync({ filter: lazy })).rooms.join[roomId];
    expect(lazyJoin.summary['m.heroes']).not.toContain(first.userId);
    expect(members(lazyJoin)).toContain(first.userId);
    expect(members(lazyJoin)).toEqual([...new Set([first.userId, ...lazyJoin.summary['m.heroes'], speaker.userId, last.userId])].sort());

    // /messages with the same option: the member events of the chunk's senders.
    const page = await peeker.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=2&filter=${encodeURIComponent(JSON.stringify({ lazy_load_members: true }))}`);
    expect(page.chunk.map((e: any) => e.sender).sort()).toEqual([speaker.userId, last.userId].sort());
    expect(page.state.map((e: any) => [e.type, e.state_key]).sort()).toEqual([speaker.userId, last.userId].sort().map((u) => ['m.room.member', u]));
    expect((await peeker.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=2`)).state).toEqual([]);
  });
});
