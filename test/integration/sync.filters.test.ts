// The sync filter shapes /sync: room.timeline and room.state types, not_types (with `*`
// wildcards) and limits, inline or by filter ID, for joined and peeked rooms alike; the
// room lists (room.rooms / not_rooms, and per section) choose the rooms.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, TestUser, timelineOf } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let bob: TestUser;
let room: string;

const sendEvent = (u: TestUser, roomId: string, type: string, content: Record<string, unknown>) =>
  u.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/${enc(type)}/t${Math.random().toString(36).slice(2)}`, content);

beforeAll(async () => {
  hs = await startTestPeekd();
  [alice, bob] = (await Promise.all(['alice', 'bob'].map((n) => TestUser.register(hs.url, n)))) as [TestUser, TestUser];
  room = (await alice.createWorldReadableRoom({ name: 'Filtered' })).room_id;
  expect((await bob.join(room)).status).toBe(200);
  await alice.send(room, 'one');
  await sendEvent(alice, room, 'org.example.ping', { n: 1 });
  await alice.setState(room, 'm.room.topic', { topic: 'filters' });
  await alice.send(room, 'two');
  await sendEvent(alice, room, 'org.example.ping', { n: 2 });
  await alice.send(room, 'three');
});

afterAll(async () => {
  await hs?.dropAll();
});

const sync = (u: TestUser, filter: unknown, since?: string) => u.sync({ filter: JSON.stringify(filter), since });
const types = (events: any[]) => events.map((e) => e.type);

describe('room.timeline', () => {
  it('types keeps only those types, and the limit counts the events kept', async () => {
    const body = await sync(bob, { room: { timeline: { types: ['m.room.message'], limit: 2 } } });
    const section = body.rooms.join[room];
    expect(timelineOf(section)).toEqual([
      { type: 'm.room.message', body: 'two' },
      { type: 'm.room.message', body: 'three' },
    ]);
    expect(section.timeline.limited).toBe(true);
    // What the timeline left out is in the state: the topic, the name, the members.
    expect(types(section.state.events)).toEqual(expect.arrayContaining(['m.room.create', 'm.room.name', 'm.room.topic', 'm.room.member']));
  });

  it('not_types and wildcards', async () => {
    const noRoom = await sync(bob, { room: { timeline: { not_types: ['m.room.*'], limit: 10 } } });
    expect(types(noRoom.rooms.join[room].timeline.events)).toEqual(['org.example.ping', 'org.example.ping']);
    const pings = await sync(bob, { room: { timeline: { types: ['org.*.ping'] } } });
    expect(pings.rooms.join[room].timeline.events.map((e: any) => e.content.n)).toEqual([1, 2]);
    const none = await sync(bob, { room: { timeline: { types: [] } } });
    expect(none.rooms.join[room].timeline.events).toEqual([]);
    const messagesOrPings = await sync(bob, { room: { timeline: { types: ['m.room.message', 'org.example.*'], not_types: ['org.example.ping'], limit: 50 } } });
    expect(timelineOf(messagesOrPings.rooms.join[room]).map((e) => e.body)).toEqual(['one', 'two', 'three']);
  });

  it('an incremental sync: an event the filter leaves out does not end the long-poll; the next kept one does; a left-out state change is in the state section', async () => {
    const filter = { room: { timeline: { types: ['m.room.message'] } } };
    const since = (await sync(bob, filter)).next_batch as string;
    const longPoll = bob.sync({ since, timeout: 20_000, filter: JSON.stringify(filter) });
    await until('bob to long-poll', () => hs.peekd.notifier.waiting >= 1);
    await sendEvent(alice, room, 'org.example.ping', { n: 3 });
    await alice.setState(room, 'm.room.topic', { topic: 'changed' });
    // The ping alone does not answer the long-poll; the topic (a state change the client must learn) does, in the state section.
    const woken = await longPoll;
    expect(woken.rooms.join[room].timeline.events).toEqual([]);
    expect(woken.rooms.join[room].state.events.map((e: any) => [e.type, e.content.topic])).toEqual([['m.room.topic', 'changed']]);
    await sendEvent(alice, room, 'org.example.ping', { n: 4 });
    await alice.send(room, 'four');
    const { body, seen } = await bob.syncUntil(woken.next_batch, (b) => room in (b.rooms?.join ?? {}), 10_000, { filter: JSON.stringify(filter) });
    expect(seen).toHaveLength(1);
    expect(timelineOf(body.rooms.join[room])).toEqual([{ type: 'm.room.message', body: 'four' }]);
    expect(body.rooms.join[room].state.events).toEqual([]);
  });
});

describe('room.state', () => {
  it('types, not_types (with wildcards) and limit shape the state section', async () => {
    const only = await sync(bob, { room: { state: { types: ['m.room.name', 'm.room.topic'] }, timeline: { limit: 1 } } });
    expect(types(only.rooms.join[room].state.events).sort()).toEqual(['m.room.name', 'm.room.topic']);
    const noMembers = await sync(bob, { room: { state: { not_types: ['m.room.member', 'm.room.power*'] }, timeline: { limit: 1 } } });
    const kept = types(noMembers.rooms.join[room].state.events);
    expect(kept).toContain('m.room.create');
    expect(kept).not.toContain('m.room.member');
    expect(kept).not.toContain('m.room.power_levels');
    const one = await sync(bob, { room: { state: { limit: 1 }, timeline: { limit: 1 } } });
    expect(one.rooms.join[room].state.events).toHaveLength(1);
  });

  it('a stored filter (by ID) works the same as an inline one', async () => {
    const { filter_id } = await bob.ok('POST', `/_matrix/client/v3/user/${enc(bob.userId)}/filter`, { room: { timeline: { types: ['org.example.ping'], limit: 1 }, state: { types: [] } } });
    const body = await bob.sync({ filter: filter_id });
    expect(types(body.rooms.join[room].timeline.events)).toEqual(['org.example.ping']);
    expect(body.rooms.join[room].state.events).toEqual([]);
  });
});

describe('peeked rooms', () => {
  it('peekers with different filters each get their own answer (shared answers key on the filter)', async () => {
    const [p1, p2] = await Promise.all(['p1', 'p2'].map((n) => TestUser.register(hs.url, n)));
    for (const p of [p1!, p2!]) expect((await p.peek(room)).status).toBe(200);
    const f1 = { room: { timeline: { types: ['m.room.message'], limit: 50 } } };
    const f2 = { room: { timeline: { types: ['org.example.ping'], limit: 50 } } };
    const [b1, b2] = await Promise.all([sync(p1!, f1), sync(p2!, f2)]);
    expect(types(b1.rooms.peek[room].timeline.events).every((t) => t === 'm.room.message')).toBe(true);
    expect(types(b2.rooms.peek[room].timeline.events).every((t) => t === 'org.example.ping')).toBe(true);
    expect(b2.rooms.peek[room].timeline.events.length).toBeGreaterThan(0);
    // And incrementally, woken by the same event.
    const polls = [p1!.sync({ since: b1.next_batch, timeout: 20_000, filter: JSON.stringify(f1) }), p2!.sync({ since: b2.next_batch, timeout: 20_000, filter: JSON.stringify(f2) })];
    await until('both peekers to long-poll', () => hs.peekd.notifier.waiting >= 2);
    await sendEvent(alice, room, 'org.example.ping', { n: 9 });
    const p2Body = await polls[1]!;
    expect(p2Body.rooms.peek[room].timeline.events.map((e: any) => e.content.n)).toEqual([9]);
    await alice.send(room, 'for p1');
    const p1Body = await polls[0]!;
    expect(timelineOf(p1Body.rooms.peek[room])).toEqual([{ type: 'm.room.message', body: 'for p1' }]);
  });
});

describe('room lists', () => {
  it('room.rooms and room.not_rooms choose the joined and peeked rooms in the response, and what a long-poll waits for', async () => {
    const carol = await TestUser.register(hs.url, 'carol');
    const other = (await alice.createWorldReadableRoom({ name: 'Other' })).room_id;
    const peeked = (await alice.createWorldReadableRoom({ name: 'Peeked' })).room_id;
    expect((await carol.join(room)).status).toBe(200);
    expect((await carol.join(other)).status).toBe(200);
    expect((await carol.peek(peeked)).status).toBe(200);
    const sections = (b: any) => ({ join: Object.keys(b.rooms.join).sort(), peek: Object.keys(b.rooms.peek).sort() });

    expect(sections(await sync(carol, {}))).toEqual({ join: [room, other].sort(), peek: [peeked] });
    expect(sections(await sync(carol, { room: { rooms: [other, peeked] } }))).toEqual({ join: [other], peek: [peeked] });
    expect(sections(await sync(carol, { room: { not_rooms: [other, peeked] } }))).toEqual({ join: [room], peek: [] });
    // not_rooms wins over rooms.
    expect(sections(await sync(carol, { room: { rooms: [room, other], not_rooms: [room] } }))).toEqual({ join: [other], peek: [] });

    // A long-poll filtered to one room is not ended by events in the others.
    const filter = { room: { rooms: [other] } };
    const since = (await sync(carol, filter)).next_batch as string;
    const waiting = hs.peekd.notifier.waiting;
    const longPoll = carol.sync({ since, timeout: 20_000, filter: JSON.stringify(filter) });
    await until('carol to long-poll', () => hs.peekd.notifier.waiting > waiting);
    await alice.send(room, 'not for this filter');
    await alice.send(peeked, 'nor this');
    await alice.send(other, 'this one');
    const woken = await longPoll;
    expect(sections(woken)).toEqual({ join: [other], peek: [] });
    expect(timelineOf(woken.rooms.join[other])).toEqual([{ type: 'm.room.message', body: 'this one' }]);
  });

  it('room.timeline.not_rooms and room.state.rooms empty one section of a room and keep the other', async () => {
    const noTimeline = await sync(bob, { room: { timeline: { not_rooms: [room] } } });
    expect(noTimeline.rooms.join[room].timeline.events).toEqual([]);
    // What the timeline would have shown is in the state section instead.
    expect(types(noTimeline.rooms.join[room].state.events)).toEqual(expect.arrayContaining(['m.room.create', 'm.room.topic', 'm.room.member']));
    const noState = await sync(bob, { room: { state: { rooms: ['!elsewhere:example.org'] }, timeline: { limit: 3 } } });
    expect(noState.rooms.join[room].state.events).toEqual([]);
    expect(noState.rooms.join[room].timeline.events).toHaveLength(3);
  });
});
