// Account data: GET/PUT /user/{userId}/account_data/{type} and the per-room form, and
// their place in /sync — global and per room, incrementally, waking long-polls at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, request, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let bob: TestUser;
let room: string;

beforeAll(async () => {
  hs = await startTestPeekd();
  [alice, bob] = (await Promise.all(['alice', 'bob'].map((n) => TestUser.register(hs.url, n)))) as [TestUser, TestUser];
  room = (await alice.createRoom({ preset: 'public_chat' })).room_id;
});

afterAll(async () => {
  await hs?.dropAll();
});

const global = (u: TestUser, type: string, user = u.userId) => `/_matrix/client/v3/user/${enc(user)}/account_data/${enc(type)}`;
const inRoom = (u: TestUser, roomId: string, type: string, user = u.userId) => `/_matrix/client/v3/user/${enc(user)}/rooms/${enc(roomId)}/account_data/${enc(type)}`;
const globalEvents = (body: any) => (body.account_data?.events ?? []) as any[];
const roomEvents = (body: any, roomId: string, section = 'join') => (body.rooms?.[section]?.[roomId]?.account_data?.events ?? []) as any[];

describe('GET and PUT account data', () => {
  it('stores global and per-room account data, each under its own key, and replaces it on a second PUT', async () => {
    expect(await alice.ok('PUT', global(alice, 'org.example.config'), { theme: 'dark' })).toEqual({});
    expect(await alice.ok('PUT', inRoom(alice, room, 'org.example.config'), { pinned: true })).toEqual({});
    expect(await alice.ok('GET', global(alice, 'org.example.config'))).toEqual({ theme: 'dark' });
    expect(await alice.ok('GET', inRoom(alice, room, 'org.example.config'))).toEqual({ pinned: true });
    await alice.ok('PUT', global(alice, 'org.example.config'), { theme: 'light', nested: { a: [1, 2] } });
    expect(await alice.ok('GET', global(alice, 'org.example.config'))).toEqual({ theme: 'light', nested: { a: [1, 2] } });
    // Another device of the same user reads the same.
    const phone = await alice.login();
    expect(await phone.ok('GET', global(alice, 'org.example.config'))).toEqual({ theme: 'light', nested: { a: [1, 2] } });
  });

  it('404 M_NOT_FOUND for a type never set (globally, or in that room)', async () => {
    for (const path of [global(alice, 'org.example.never'), inRoom(alice, room, 'org.example.never'), inRoom(alice, '!other:example.org', 'org.example.config')]) {
      const r = await alice.req('GET', path);
      expect([r.status, r.body.errcode], path).toEqual([404, 'M_NOT_FOUND']);
    }
  });

  it("another user's account data is 403 M_FORBIDDEN, to read or to write", async () => {
    for (const [method, path] of [
      ['GET', global(bob, 'org.example.config', alice.userId)],
      ['PUT', global(bob, 'org.example.config', alice.userId)],
      ['GET', inRoom(bob, room, 'org.example.config', alice.userId)],
      ['PUT', inRoom(bob, room, 'org.example.config', alice.userId)],
    ] as const) {
      const r = await bob.req(method, path, method === 'PUT' ? { stolen: true } : undefined);
      expect([r.status, r.body.errcode], `${method} ${path}`).toEqual([403, 'M_FORBIDDEN']);
    }
    expect(await alice.ok('GET', global(alice, 'org.example.config'))).toEqual({ theme: 'light', nested: { a: [1, 2] } });
  });

  it('bad input: not an object, not JSON, malformed IDs, server-controlled types — and nothing is written', async () => {
    for (const body of [[1, 2], 'text', 5, null]) {
      const r = await request(hs.url, 'PUT', global(alice, 'org.example.bad'), { token: alice.token, rawBody: JSON.stringify(body) });
      expect([r.status, r.body.errcode], JSON.stringify(body)).toEqual([400, 'M_BAD_JSON']);
    }
    // A number beyond any float (JSON.parse reads Infinity) would be stored as null.
    for (const rawBody of ['{"a":1e999}', '{"a":[{"b":-1e999}]}']) {
      const r = await request(hs.url, 'PUT', global(alice, 'org.example.bad'), { token: alice.token, rawBody });
      expect([r.status, r.body.errcode], rawBody).toEqual([400, 'M_BAD_JSON']);
    }
    const notJson = await request(hs.url, 'PUT', global(alice, 'org.example.bad'), { token: alice.token, rawBody: '{"a":' });
    expect([notJson.status, notJson.body.errcode]).toEqual([400, 'M_NOT_JSON']);
    for (const [method, path] of [
      ['PUT', inRoom(alice, room, 'org.example.bad', 'not-a-user')],
      ['GET', global(alice, 'org.example.bad', 'not-a-user')],
      ['PUT', inRoom(alice, 'not-a-room', 'org.example.bad')],
      ['GET', inRoom(alice, '@alice:example.org', 'org.example.bad')],
      ['PUT', global(alice, 'x'.repeat(300))],
    ] as const) {
      const r = await alice.req(method, path, method === 'PUT' ? {} : undefined);
      expect([r.status, r.body.errcode], `${method} ${path}`).toEqual([400, 'M_INVALID_PARAM']);
    }
    for (const path of [inRoom(alice, room, 'm.fully_read'), global(alice, 'm.push_rules'), global(alice, 'm.fully_read')]) {
      const r = await alice.req('PUT', path, { event_id: '$x' });
      expect([r.status, r.body.errcode], path).toEqual([405, 'M_BAD_JSON']);
    }
    const r = await alice.req('GET', global(alice, 'org.example.bad'));
    expect(r.status).toBe(404);
    expect((await alice.req('GET', inRoom(alice, room, 'm.fully_read'))).status).toBe(404);
  });
});

describe('account data in /sync', () => {
  it('an initial sync carries all global account data, and the room’s under the joined room', async () => {
    const body = await alice.sync();
    expect(globalEvents(body)).toContainEqual({ type: 'org.example.config', content: { theme: 'light', nested: { a: [1, 2] } } });
    expect(roomEvents(body, room)).toEqual([{ type: 'org.example.config', content: { pinned: true } }]);
    // Nobody else's.
    const other = await bob.sync();
    expect(globalEvents(other)).toEqual([]);
  });

  it('a PUT wakes the user’s long-poll at once; an incremental sync carries only what changed, a room with no new events too', async () => {
    const since = (await alice.sync()).next_batch as string;
    const poll = alice.sync({ since, timeout: 20_000 });
    await until('alice to long-poll', () => hs.peekd.notifier.waiting >= 1);
    const started = Date.now();
    await alice.ok('PUT', global(alice, 'org.example.second'), { n: 1 });
    const woken = await poll;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(globalEvents(woken)).toEqual([{ type: 'org.example.second', content: { n: 1 } }]);
    expect(woken.rooms.join[room]).toBeUndefined();

    const poll2 = alice.sync({ since: woken.next_batch, timeout: 20_000 });
    await until('alice to long-poll again', () => hs.peekd.notifier.waiting >= 1);
    await alice.ok('PUT', inRoom(alice, room, 'm.tag'), { tags: { 'm.favourite': { order: 0.5 } } });
    const woken2 = await poll2;
    expect(globalEvents(woken2)).toEqual([]);
    expect(roomEvents(woken2, room)).toEqual([{ type: 'm.tag', content: { tags: { 'm.favourite': { order: 0.5 } } } }]);
    expect(woken2.rooms.join[room].timeline.events).toEqual([]);

    // Nothing since: nothing.
    const quiet = await alice.sync({ since: woken2.next_batch });
    expect(globalEvents(quiet)).toEqual([]);
    expect(Object.keys(quiet.rooms.join)).toEqual([]);
  });

  it('a write is in the very next /sync of another device (read your writes), and the other user’s long-poll is not woken', async () => {
    const phone = await alice.login();
    const since = (await phone.sync()).next_batch as string;
    const bobSince = (await bob.sync()).next_batch as string;
    const bobPoll = bob.sync({ since: bobSince, timeout: 1_500 });
    await alice.ok('PUT', global(alice, 'org.example.third'), { n: 3 });
    expect(globalEvents(await phone.sync({ since }))).toEqual([{ type: 'org.example.third', content: { n: 3 } }]);
    expect(globalEvents(await bobPoll)).toEqual([]);
  });

  it('a peeked room carries the user’s account data for it', async () => {
    const { room_id: open } = await bob.createWorldReadableRoom();
    await alice.ok('PUT', inRoom(alice, open, 'org.example.peeknote'), { note: 'watching' });
    expect((await alice.peek(open)).status).toBe(200);
    const { body } = await alice.syncUntil(undefined, (b) => open in (b.rooms?.peek ?? {}));
    expect(roomEvents(body, open, 'peek')).toEqual([{ type: 'org.example.peeknote', content: { note: 'watching' } }]);
  });

  it('filters: account_data and room.account_data types, not_types, wildcards, rooms and limit', async () => {
    const sync = (filter: unknown) => alice.sync({ filter: JSON.stringify(filter) });
    const types = (body: any) =>
      globalEvents(body)
        .map((e) => e.type)
        .sort();
    expect(types(await sync({ account_data: { types: ['org.example.config'] } }))).toEqual(['org.example.config']);
    expect(types(await sync({ account_data: { types: ['org.example.*'] } }))).toEqual(['org.example.config', 'org.example.second', 'org.example.third']);
    expect(types(await sync({ account_data: { not_types: ['*.second', '*.third'] } }))).toEqual(['org.example.config']);
    expect(types(await sync({ account_data: { types: [] } }))).toEqual([]);
    expect(types(await sync({ account_data: { limit: 2 } }))).toHaveLength(2);
    const roomTypes = (body: any) =>
      roomEvents(body, room)
        .map((e) => e.type)
        .sort();
    expect(roomTypes(await sync({}))).toEqual(['m.tag', 'org.example.config']);
    expect(roomTypes(await sync({ room: { account_data: { types: ['m.tag'] } } }))).toEqual(['m.tag']);
    expect(roomTypes(await sync({ room: { account_data: { not_types: ['*'] } } }))).toEqual([]);
    expect(roomTypes(await sync({ room: { account_data: { not_rooms: [room] } } }))).toEqual([]);
    expect(roomTypes(await sync({ room: { account_data: { limit: 1 } } }))).toHaveLength(1);
  });
});
