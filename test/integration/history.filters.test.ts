// The `filter` of /messages and /context (a room event filter as JSON): types and senders
// choose the events (paging passes over the rest), lazy_load_members the member events in
// `state`; a filter that is not JSON, or not a filter, is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let bob: TestUser;
let roomId: string;
let aliceSaid: string[];
let bobSaid: string[];
let middle: string;

const messages = (reader: TestUser, query: Record<string, string>) => reader.req('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?${new URLSearchParams(query)}`);
const context = (reader: TestUser, eventId: string, query: Record<string, string>) =>
  reader.req('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/context/${enc(eventId)}?${new URLSearchParams(query)}`);
const f = (filter: unknown) => JSON.stringify(filter);

beforeAll(async () => {
  hs = await startTestPeekd();
  alice = await TestUser.register(hs.url, 'alice');
  bob = await TestUser.register(hs.url, 'bob');
  roomId = (await alice.createRoom({ preset: 'public_chat' })).room_id;
  expect((await bob.join(roomId)).status).toBe(200);
  aliceSaid = [];
  bobSaid = [];
  for (let i = 0; i < 4; i++) {
    aliceSaid.push(await alice.send(roomId, `alice ${i}`));
    bobSaid.push(await bob.send(roomId, `bob ${i}`));
    if (i === 1) middle = await alice.setState(roomId, 'm.room.topic', { topic: 'filters' });
  }
});

afterAll(async () => {
  await hs?.dropAll();
});

describe('/messages filter', () => {
  it('keeps the senders and types asked for, and pages on past the others', async () => {
    const first = await messages(alice, { dir: 'b', limit: '3', filter: f({ senders: [bob.userId] }) });
    expect(first.status).toBe(200);
    expect(first.body.chunk.map((e: any) => e.event_id)).toEqual([...bobSaid].reverse().slice(0, 3));
    const rest = await messages(alice, { dir: 'b', limit: '3', from: first.body.end, filter: f({ senders: [bob.userId] }) });
    // The rest of bob's events: his first message, then his join.
    expect(rest.body.chunk.map((e: any) => e.event_id)[0]).toBe(bobSaid[0]);
    expect(rest.body.chunk.slice(1).map((e: any) => [e.type, e.sender, e.content.membership])).toEqual([['m.room.member', bob.userId, 'join']]);

    const texts = await messages(alice, { dir: 'b', limit: '100', filter: f({ types: ['m.room.message'], not_senders: [bob.userId] }) });
    expect(texts.body.chunk.map((e: any) => e.event_id)).toEqual([...aliceSaid].reverse());
    const noMembers = await messages(alice, { dir: 'b', limit: '100', filter: f({ not_types: ['m.room.member', 'm.room.message'] }) });
    expect(noMembers.body.chunk.every((e: any) => e.type !== 'm.room.member' && e.type !== 'm.room.message')).toBe(true);
    expect(noMembers.body.chunk.map((e: any) => e.event_id)).toContain(middle);
    // Without a filter: everything, and no state.
    const all = await messages(alice, { dir: 'b', limit: '100' });
    expect(all.body.chunk.length).toBeGreaterThan(texts.body.chunk.length + first.body.chunk.length);
    expect(all.body.state).toEqual([]);
  });

  it('with lazy_load_members, gives the member events of the senders in state', async () => {
    const page = await messages(alice, { dir: 'b', limit: '1', filter: f({ lazy_load_members: true }) });
    expect(page.body.chunk.map((e: any) => e.sender)).toEqual([bob.userId]);
    expect(page.body.state.map((e: any) => [e.type, e.state_key, e.content.membership])).toEqual([['m.room.member', bob.userId, 'join']]);
  });

  it('with lazy_load_members, gives each sender’s member event as it stood at the page, not a later rename', async () => {
    const room = (await alice.createRoom({ preset: 'public_chat' })).room_id;
    const carol = await TestUser.register(hs.url, 'renamer');
    expect((await carol.join(room)).status).toBe(200);
    await carol.setState(room, 'm.room.member', { membership: 'join', displayname: 'Carol before' }, carol.userId);
    const said = await carol.send(room, 'hello');
    await carol.setState(room, 'm.room.member', { membership: 'join', displayname: 'Carol after' }, carol.userId);
    await alice.send(room, 'later');
    const around = await alice.req('GET', `/_matrix/client/v3/rooms/${enc(room)}/context/${enc(said)}?${new URLSearchParams({ limit: '0', filter: f({ lazy_load_members: true }) })}`);
    expect(around.status).toBe(200);
    expect(around.body.state.map((e: any) => [e.state_key, e.content.displayname])).toEqual([[carol.userId, 'Carol before']]);
    // Newest first, the page of the last two events: alice's message and carol's rename,
    // both senders as they stood at the newest of them.
    const page = await alice.req('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?${new URLSearchParams({ dir: 'b', limit: '2', filter: f({ lazy_load_members: true }) })}`);
    expect(page.status).toBe(200);
    const names = Object.fromEntries(page.body.state.map((e: any) => [e.state_key, e.content.displayname ?? null]));
    expect(names).toEqual({ [alice.userId]: alice.userId.slice(1).split(':')[0], [carol.userId]: 'Carol after' });
  });

  it('refuses a filter that is not JSON (400 M_NOT_JSON) or not a room event filter (400 M_BAD_JSON)', async () => {
    expectError(await messages(alice, { dir: 'b', filter: '{not json' }), 400, 'M_NOT_JSON');
    expectError(await messages(alice, { dir: 'b', filter: '[1]' }), 400, 'M_BAD_JSON');
    expectError(await messages(alice, { dir: 'b', filter: f({ types: 'm.room.message' }) }), 400, 'M_BAD_JSON');
    expectError(await messages(alice, { dir: 'b', filter: f({ lazy_load_members: 'yes' }) }), 400, 'M_BAD_JSON');
  });
});

describe('/context filter', () => {
  it('applies to the events around and to the state, never to the event itself', async () => {
    const around = aliceSaid[2]!;
    const onlyBob = await context(alice, around, { limit: '4', filter: f({ senders: [bob.userId] }) });
    expect(onlyBob.status).toBe(200);
    expect(onlyBob.body.event.event_id).toBe(around);
    for (const e of [...onlyBob.body.events_before, ...onlyBob.body.events_after]) expect(e.sender).toBe(bob.userId);
    expect(onlyBob.body.events_after.map((e: any) => e.event_id)).toEqual([bobSaid[2]]);

    const topicOnly = await context(alice, around, { limit: '2', filter: f({ types: ['m.room.topic'] }) });
    expect(topicOnly.body.state.map((e: any) => e.type)).toEqual(['m.room.topic']);
    const whole = await context(alice, around, { limit: '2' });
    expect(whole.body.state.length).toBeGreaterThan(3);

    const lazy = await context(alice, around, { limit: '2', filter: f({ lazy_load_members: true }) });
    const senders = new Set([lazy.body.event, ...lazy.body.events_before, ...lazy.body.events_after].map((e: any) => e.sender));
    expect(lazy.body.state.map((e: any) => e.state_key).sort()).toEqual([...senders].sort());
    expect(lazy.body.state.every((e: any) => e.type === 'm.room.member')).toBe(true);
    expectError(await context(alice, around, { filter: 'nope' }), 400, 'M_NOT_JSON');
  });
});

describe('contains_url', () => {
  it('keeps only events with a url in their content (true) or only the others (false), in /messages, /context and /sync', async () => {
    const carol = await TestUser.register(hs.url, 'carol');
    const room = (await carol.createRoom({ preset: 'public_chat' })).room_id;
    const send = async (content: Record<string, unknown>) =>
      (await carol.ok('PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/t${Math.random().toString(36).slice(2)}`, content)).event_id as string;
    const text1 = await send({ msgtype: 'm.text', body: 'hello' });
    const image = await send({ msgtype: 'm.image', body: 'cat.png', url: 'mxc://localhost/cat' });
    const text2 = await send({ msgtype: 'm.text', body: 'and' });
    const file = await send({ msgtype: 'm.file', body: 'notes.txt', url: 'mxc://localhost/notes' });
    const page = (filter: unknown) => carol.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?${new URLSearchParams({ dir: 'b', limit: '100', filter: f(filter) })}`);

    expect((await page({ contains_url: true })).chunk.map((e: any) => e.event_id)).toEqual([file, image]);
    const without = (await page({ contains_url: false })).chunk.map((e: any) => e.event_id);
    expect(without.slice(0, 2)).toEqual([text2, text1]);
    expect(without).not.toContain(image);
    expect(without.length).toBeGreaterThan(2); // the room's state events have no url either
    // Paged one at a time, the pages pass over the others.
    const one = await carol.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?${new URLSearchParams({ dir: 'b', limit: '1', filter: f({ contains_url: true }) })}`);
    expect(one.chunk.map((e: any) => e.event_id)).toEqual([file]);
    const two = await carol.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?${new URLSearchParams({ dir: 'b', limit: '1', from: one.end, filter: f({ contains_url: true }) })}`);
    expect(two.chunk.map((e: any) => e.event_id)).toEqual([image]);

    const ctx = await carol.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/context/${enc(text2)}?${new URLSearchParams({ limit: '10', filter: f({ contains_url: true }) })}`);
    expect(ctx.event.event_id).toBe(text2);
    expect(ctx.events_before.map((e: any) => e.event_id)).toEqual([image]);
    expect(ctx.events_after.map((e: any) => e.event_id)).toEqual([file]);

    const synced = await carol.sync({ filter: f({ room: { timeline: { contains_url: true, limit: 10 } } }) });
    expect(synced.rooms.join[room].timeline.events.map((e: any) => e.event_id)).toEqual([image, file]);

    const bad = await carol.req('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?${new URLSearchParams({ dir: 'b', filter: f({ contains_url: 'yes' }) })}`);
    expectError(bad, 400, 'M_BAD_JSON');
  });
});
