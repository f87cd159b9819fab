// Receipts, read markers and typing notifications: POST /rooms/{roomId}/receipt/…,
// /read_markers and PUT /rooms/{roomId}/typing/{userId}; m.receipt and m.typing in the
// `ephemeral` section of a member's /sync (waking its long-poll at once), and in a room
// preview's GET /events together with the members' presence (sytest's history-visibility
// test "non-joined user can call /events on world_readable room").
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, registerGuest, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';
import { twoHttpProcesses } from '../helpers/splitDeployment.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let bob: TestUser;
let carol: TestUser;
let room: string;
let first: string;
let second: string;

const v3 = (path: string) => `/_matrix/client/v3${path}`;
const receiptPath = (roomId: string, type: string, eventId: string) => v3(`/rooms/${enc(roomId)}/receipt/${enc(type)}/${enc(eventId)}`);
const typingPath = (roomId: string, userId: string) => v3(`/rooms/${enc(roomId)}/typing/${enc(userId)}`);
const ephemeralOf = (body: any, roomId: string) => (body.rooms?.join?.[roomId]?.ephemeral?.events ?? []) as any[];
const receiptIn = (body: any, roomId: string) => ephemeralOf(body, roomId).find((e) => e.type === 'm.receipt');
const typingIn = (body: any, roomId: string) => ephemeralOf(body, roomId).find((e) => e.type === 'm.typing');

beforeAll(async () => {
  hs = await startTestPeekd();
  [alice, bob, carol] = (await Promise.all(['alice', 'bob', 'carol'].map((n) => TestUser.register(hs.url, n)))) as [TestUser, TestUser, TestUser];
  room = (await alice.createRoom({ preset: 'public_chat' })).room_id;
  expect((await bob.join(room)).status).toBe(200);
  first = await alice.send(room, 'first');
  second = await alice.send(room, 'second');
});

afterAll(async () => {
  await hs?.dropAll();
});

/** Starts a long-poll for `u` from `since`; resolves, once it waits in the notifier, with its answer to come (wrapped: not awaited here). */
async function longPoll(u: TestUser, since: string): Promise<{ answer: Promise<any> }> {
  const waiting = hs.peekd.notifier.waiting;
  const answer = u.sync({ since, timeout: 20_000 });
  await until(`${u.userId} to long-poll`, () => hs.peekd.notifier.waiting > waiting);
  return { answer };
}

describe('receipts', () => {
  it("a member's m.read receipt wakes the other members' long-polls and shows in their ephemeral section, without room_id; an initial sync has it too", async () => {
    const since = (await alice.sync()).next_batch as string;
    const poll = await longPoll(alice, since);
    expect(await bob.ok('POST', receiptPath(room, 'm.read', first), {})).toEqual({});
    const woken = await poll.answer;
    const receipt = receiptIn(woken, room);
    expect(receipt.room_id).toBeUndefined();
    expect(Object.keys(receipt.content)).toEqual([first]);
    expect(receipt.content[first]['m.read'][bob.userId].ts).toBeGreaterThan(0);

    // Moving on to a later event replaces it; an initial sync shows only the latest.
    await bob.ok('POST', receiptPath(room, 'm.read', second), {});
    const latest = receiptIn(await alice.sync(), room);
    expect(latest.content[second]['m.read'][bob.userId].thread_id).toBeUndefined();
    expect(latest.content[first]?.['m.read']?.[bob.userId]).toBeUndefined();
    // A threaded receipt (here the main timeline's) is one of its own, beside the unthreaded one.
    await bob.ok('POST', receiptPath(room, 'm.read', first), { thread_id: 'main' });
    const both = receiptIn(await alice.sync(), room);
    expect(both.content[first]['m.read'][bob.userId]).toMatchObject({ thread_id: 'main' });
    expect(both.content[second]['m.read'][bob.userId]).toEqual({ ts: expect.any(Number) });
  });

  it('a receipt only moves forward: one for an earlier event changes nothing', async () => {
    const later = await alice.send(room, 'later');
    expect((await carol.join(room)).status).toBe(200);
    await carol.ok('POST', receiptPath(room, 'm.read', later), {});
    const since = (await alice.sync()).next_batch as string;
    expect(await carol.ok('POST', receiptPath(room, 'm.read', first), {})).toEqual({});
    const after = await alice.sync({ since, timeout: 0 });
    expect(receiptIn(after, room)).toBeUndefined();
    const now = receiptIn(await alice.sync(), room);
    expect(now.content[later]['m.read'][carol.userId]).toBeDefined();
    expect(now.content[first]?.['m.read']?.[carol.userId]).toBeUndefined();
  });

  it('a thread_id must fit the event: main for one in no thread, the root for the root or an event of its thread', async () => {
    const root = await alice.send(room, 'a thread root');
    const reply = await alice.ok('PUT', v3(`/rooms/${enc(room)}/send/m.room.message/t${Date.now()}`), {
      msgtype: 'm.text',
      body: 'in the thread',
      'm.relates_to': { rel_type: 'm.thread', event_id: root },
    });
    expect((await bob.req('POST', receiptPath(room, 'm.read', reply.event_id), { thread_id: root })).status).toBe(200);
    expect((await bob.req('POST', receiptPath(room, 'm.read', root), { thread_id: root })).status).toBe(200);
    expect((await bob.req('POST', receiptPath(room, 'm.read', root), { thread_id: 'main' })).status).toBe(200);
    expectError(await bob.req('POST', receiptPath(room, 'm.read', reply.event_id), { thread_id: 'main' }), 400, 'M_INVALID_PARAM');
    expectError(await bob.req('POST', receiptPath(room, 'm.read', first), { thread_id: root }), 400, 'M_INVALID_PARAM');
    expectError(await bob.req('POST', receiptPath(room, 'm.read', first), { thread_id: 'elsewhere' }), 400, 'M_INVALID_PARAM');
  });

  it('a private receipt reaches only its owner', async () => {
    const since = (await bob.sync()).next_batch as string;
    await bob.ok('POST', receiptPath(room, 'm.read.private', first), {});
    const { body } = await bob.syncUntil(since, (b) => receiptIn(b, room) !== undefined);
    expect(receiptIn(body, room).content[first]['m.read.private'][bob.userId]).toBeDefined();
    const others = receiptIn(await alice.sync(), room);
    expect(JSON.stringify(others)).not.toContain('m.read.private');
  });

  it('POST /read_markers sets m.fully_read (room account data) and m.read at once', async () => {
    const third = await alice.send(room, 'third');
    const since = (await bob.sync()).next_batch as string;
    expect(await bob.ok('POST', v3(`/rooms/${enc(room)}/read_markers`), { 'm.fully_read': first, 'm.read': third })).toEqual({});
    // Both changes are committed before the answer: the next sync carries both.
    const body = await bob.sync({ since, timeout: 0 });
    expect(body.rooms.join[room].account_data.events).toEqual([{ type: 'm.fully_read', content: { event_id: first } }]);
    expect(Object.keys(receiptIn(body, room).content)).toEqual([third]);
  });

  it('refuses bad input with the spec errors, and writes nothing', async () => {
    const other = (await alice.createRoom({ preset: 'public_chat' })).room_id;
    const elsewhere = await alice.send(other, 'elsewhere');
    const since = (await alice.sync()).next_batch as string;
    expectError(await bob.req('POST', receiptPath(room, 'm.unknown', first), {}), 400, 'M_INVALID_PARAM');
    expectError(await bob.req('POST', receiptPath(room, 'm.read', first), { thread_id: 5 }), 400, 'M_INVALID_PARAM');
    expectError(await bob.req('POST', receiptPath(room, 'm.fully_read', first), { thread_id: 'main' }), 400, 'M_INVALID_PARAM');
    expectError(await bob.req('POST', receiptPath(room, 'm.read', elsewhere), {}), 404, 'M_NOT_FOUND');
    expectError(await bob.req('POST', receiptPath(room, 'm.read', '$nosuchevent'), {}), 404, 'M_NOT_FOUND');
    const outsider = await TestUser.register(hs.url, 'outsider1');
    expectError(await outsider.req('POST', receiptPath(room, 'm.read', first), {}), 403, 'M_FORBIDDEN');
    expectError(await bob.req('POST', receiptPath('not-a-room', 'm.read', first), {}), 400, 'M_INVALID_PARAM');
    // One bad marker: neither is written.
    expectError(await bob.req('POST', v3(`/rooms/${enc(room)}/read_markers`), { 'm.fully_read': first, 'm.read': elsewhere }), 404, 'M_NOT_FOUND');
    expectError(await bob.req('POST', v3(`/rooms/${enc(room)}/read_markers`), { 'm.read': 7 }), 400, 'M_INVALID_PARAM');
    const after = await alice.sync({ since, timeout: 0 });
    expect(receiptIn(after, room)).toBeUndefined();
  });
});

describe('typing', () => {
  it('starting and stopping each wake the members’ long-polls with who types now; a spell ends by itself when its time runs out', async () => {
    let since = (await alice.sync()).next_batch as string;
    let poll = await longPoll(alice, since);
    expect(await bob.ok('PUT', typingPath(room, bob.userId), { typing: true, timeout: 60_000 })).toEqual({});
    let woken = await poll.answer;
    expect(typingIn(woken, room).content).toEqual({ user_ids: [bob.userId] });
    // An initial sync shows it too.
    expect(typingIn(await alice.sync(), room).content).toEqual({ user_ids: [bob.userId] });

    poll = await longPoll(alice, woken.next_batch);
    await bob.ok('PUT', typingPath(room, bob.userId), { typing: false });
    woken = await poll.answer;
    expect(typingIn(woken, room).content).toEqual({ user_ids: [] });

    // A short spell: nobody stops it; its end wakes the long-poll.
    since = woken.next_batch;
    await bob.ok('PUT', typingPath(room, bob.userId), { typing: true, timeout: 300 });
    const { body, seen } = await alice.syncUntil(since, (b) => typingIn(b, room)?.content.user_ids.length === 0, 10_000);
    expect(seen.some((b) => typingIn(b, room)?.content.user_ids.includes(bob.userId))).toBe(true);
    expect(typingIn(body, room).content).toEqual({ user_ids: [] });
  });

  it('a spell whose timer was lost (its process stopped) is ended by the next sweep, which wakes the long-polls', async () => {
    const since = (await alice.sync()).next_batch as string;
    // Written straight to the store, as a process that stopped before its timer fired leaves it.
    const streamId = await hs.peekd.client.sync.clientData.setTyping(room, bob.userId, Date.now() + 200, Date.now());
    expect(streamId).not.toBeNull();
    const { seen } = await alice.syncUntil(since, (b) => typingIn(b, room)?.content.user_ids.length === 0, 15_000);
    // The spell was visible while it ran (if a sync fell in it), and its end came without anyone typing.
    expect(seen.every((b) => typingIn(b, room) === undefined || typingIn(b, room).content.user_ids.every((u: string) => u === bob.userId))).toBe(true);
  });

  it('a filter leaving out m.typing leaves it out', async () => {
    const filter = { room: { ephemeral: { not_types: ['m.typing'] } } };
    const fresh = await alice.send(room, 'fresh');
    const since = (await alice.sync({ filter: JSON.stringify(filter) })).next_batch as string;
    await bob.ok('PUT', typingPath(room, bob.userId), { typing: true, timeout: 60_000 });
    await bob.ok('POST', receiptPath(room, 'm.read', fresh), {});
    const { body } = await alice.syncUntil(since, (b) => receiptIn(b, room) !== undefined, 10_000, { filter: JSON.stringify(filter) });
    expect(typingIn(body, room)).toBeUndefined();
    await bob.ok('PUT', typingPath(room, bob.userId), { typing: false });
  });

  it('refuses bad input with the spec errors', async () => {
    expectError(await bob.req('PUT', typingPath(room, alice.userId), { typing: true }), 403, 'M_FORBIDDEN');
    const outsider = await TestUser.register(hs.url, 'outsider2');
    expectError(await outsider.req('PUT', typingPath(room, outsider.userId), { typing: true }), 403, 'M_FORBIDDEN');
    expectError(await bob.req('PUT', typingPath(room, bob.userId), {}), 400, 'M_MISSING_PARAM');
    expectError(await bob.req('PUT', typingPath(room, bob.userId), { typing: 'yes' }), 400, 'M_INVALID_PARAM');
    expectError(await bob.req('PUT', typingPath(room, bob.userId), { typing: true, timeout: -1 }), 400, 'M_INVALID_PARAM');
  });
});

describe('a room preview (GET /events?room_id=) carries presence, receipts and typing', () => {
  it.each([
    ['a guest', () => registerGuest(hs.url)],
    ['a full user', () => TestUser.register(hs.url, 'viewer')],
  ])('%s previewing a world_readable room gets a message, then only members’ presence, then a receipt, then typing (sytest 30history-visibility)', async (who, viewerOf) => {
    const viewer = await viewerOf();
    const tag = who.replace(/\W/g, '');
    const member = await TestUser.register(hs.url, `member${tag}`);
    const outsider = await TestUser.register(hs.url, `outsider${tag}`);
    const readable = (await member.createWorldReadableRoom()).room_id;
    const preview = await viewer.ok('GET', v3(`/rooms/${enc(readable)}/initialSync`));
    const poll = (from: string) => viewer.ok('GET', v3(`/events?room_id=${enc(readable)}&from=${enc(from)}&timeout=10000`));

    const messagePoll = poll(preview.messages.end);
    const sent = await member.send(readable, 'mice');
    let answer = await messagePoll;
    expect(answer.chunk.map((e: any) => e.event_id)).toContain(sent);

    const presencePoll = poll(answer.end);
    await outsider.ok('PUT', v3(`/presence/${enc(outsider.userId)}/status`), { presence: 'online', status_msg: 'not in the room' });
    await member.ok('PUT', v3(`/presence/${enc(member.userId)}/status`), { presence: 'online', status_msg: "Worshiping lemurs' tails" });
    answer = await presencePoll;
    let presence = answer.chunk.filter((e: any) => e.type === 'm.presence');
    // The outsider's change may have answered the poll first (with nothing for this room): poll on.
    while (presence.length === 0) {
      answer = await poll(answer.end);
      presence = answer.chunk.filter((e: any) => e.type === 'm.presence');
    }
    expect(presence.map((e: any) => e.content.user_id)).toEqual([member.userId]);
    expect(presence[0].content).toMatchObject({ presence: 'online', status_msg: "Worshiping lemurs' tails" });

    const receiptPoll = poll(answer.end);
    await member.ok('POST', receiptPath(readable, 'm.read', sent), {});
    answer = await receiptPoll;
    expect(answer.chunk).toEqual([{ type: 'm.receipt', room_id: readable, content: { [sent]: { 'm.read': { [member.userId]: { ts: expect.any(Number) } } } } }]);

    const typingPoll = poll(answer.end);
    await member.ok('PUT', typingPath(readable, member.userId), { typing: true, timeout: 5_000 });
    answer = await typingPoll;
    expect(answer.chunk).toEqual([{ type: 'm.typing', room_id: readable, content: { user_ids: [member.userId] } }]);
  });
});

describe('roles split: the process that takes the receipt or typing is not the one holding the long-poll', () => {
  it('a receipt and a typing notification sent through one HTTP process wake a member’s /sync and a preview’s /events held by another', async () => {
    const { split, two, alice: a, bobOnTwo: b, room: shared } = await twoHttpProcesses('ephemeral', async (alice) => (await alice.createWorldReadableRoom()).room_id);
    try {
      const viewer = await registerGuest(two.url!);
      const event = await a.send(shared, 'read me');
      // The second process has the message (else the long-polls below would answer with it).
      const { body: joined } = await b.syncUntil(undefined, (x) => (x.rooms?.join?.[shared]?.timeline?.events ?? []).some((e: any) => e.event_id === event));
      const preview = await viewer.ok('GET', `/_matrix/client/v3/rooms/${enc(shared)}/initialSync`);
      expect(preview.messages.chunk.map((e: any) => e.event_id)).toContain(event);

      const poll = b.sync({ since: joined.next_batch, timeout: 20_000 });
      const previewPoll = viewer.ok('GET', `/_matrix/client/v3/events?room_id=${enc(shared)}&from=${enc(preview.messages.end)}&timeout=20000`);
      await until('bob and the viewer to long-poll on the second process', () => two.notifier.waiting >= 2);
      const started = Date.now();
      await a.ok('POST', receiptPath(shared, 'm.read', event), {});
      const [woken, previewed] = await Promise.all([poll, previewPoll]);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(receiptIn(woken, shared).content[event]['m.read'][a.userId]).toBeDefined();
      expect(previewed.chunk.map((e: any) => e.type)).toEqual(['m.receipt']);

      const poll2 = b.sync({ since: woken.next_batch, timeout: 20_000 });
      await until('bob to long-poll again', () => two.notifier.waiting >= 1);
      await a.ok('PUT', typingPath(shared, a.userId), { typing: true, timeout: 30_000 });
      expect(typingIn(await poll2, shared).content).toEqual({ user_ids: [a.userId] });
    } finally {
      await split.close();
    }
  });
});
