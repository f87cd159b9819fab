// The public room directory as a Matrix client sees it, over real HTTP against a running
// peekd (real NATS JetStream, real Postgres): GET and POST /publicRooms, GET and PUT
// /directory/list/room/{roomId}, GET /rooms/{roomId}/aliases, and a world_readable room
// found in the directory and previewed by MSC2753 peeking.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, request, roomsIn, TestUser, type MatrixResponse } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let alice: TestUser;
let n = 0;

const v3 = (path: string) => `/_matrix/client/v3${path}`;
/** A fresh user (every test gets its own). */
const user = (name: string) => TestUser.register(url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd();
  url = hs.url;
  alice = await TestUser.register(url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

function expectMatrixError(r: MatrixResponse, status: number, errcode: string) {
  expect({ status: r.status, errcode: r.body?.errcode }).toEqual({ status, errcode });
  expect(typeof r.body.error).toBe('string');
}

/** GET /publicRooms without an access token. */
async function getPublicRooms(query: Record<string, string> = {}): Promise<any> {
  const r = await request(url, 'GET', v3(`/publicRooms?${new URLSearchParams(query)}`));
  expect(r.status).toBe(200);
  return r.body;
}

/** POST /publicRooms as `who`. */
async function postPublicRooms(who: TestUser, body: Record<string, unknown>): Promise<any> {
  return who.ok('POST', v3('/publicRooms'), body);
}

const worldReadable = { type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } };
const guestsCanJoin = { type: 'm.room.guest_access', state_key: '', content: { guest_access: 'can_join' } };

async function visibilityOf(roomId: string): Promise<MatrixResponse> {
  return request(url, 'GET', v3(`/directory/list/room/${enc(roomId)}`));
}

async function setVisibility(who: TestUser, roomId: string, body: unknown): Promise<MatrixResponse> {
  return who.req('PUT', v3(`/directory/list/room/${enc(roomId)}`), body);
}

/** Joins `count` fresh users to the (public) room. */
async function addMembers(roomId: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const u = await user('member');
    expect((await u.join(roomId)).status).toBe(200);
  }
}

describe('listing published rooms', () => {
  it('lists a room created with visibility public and one published by PUT, with what their state says, and not a private room', async () => {
    const bob = await user('bob');
    const lobby = await alice.createRoom({
      visibility: 'public',
      preset: 'public_chat',
      name: 'Aardvark Lobby',
      topic: 'Where aardvarks meet',
      room_alias_name: 'aardvark-lobby',
      initial_state: [worldReadable, guestsCanJoin],
    });
    expect((await bob.join(lobby.room_id)).status).toBe(200);
    const den = await alice.createRoom({ preset: 'public_chat', name: 'Aardvark Den', topic: 'quieter', creation_content: { type: 'org.example.den' } });
    const secret = await alice.createRoom({ preset: 'private_chat', name: 'Aardvark Secret', initial_state: [worldReadable] });

    // createRoom published the first room; the others are not listed yet.
    expect((await visibilityOf(lobby.room_id)).body).toEqual({ visibility: 'public' });
    expect((await visibilityOf(den.room_id)).body).toEqual({ visibility: 'private' });
    expect((await visibilityOf(secret.room_id)).body).toEqual({ visibility: 'private' });
    let listed = (await getPublicRooms()).chunk.map((r: any) => r.room_id);
    expect(listed).toContain(lobby.room_id);
    expect(listed).not.toContain(den.room_id);

    await alice.setState(den.room_id, 'm.room.avatar', { url: 'mxc://example.org/den' });
    const put = await setVisibility(alice, den.room_id, { visibility: 'public' });
    expect(put.status).toBe(200);
    expect(put.body).toEqual({});
    expect((await visibilityOf(den.room_id)).body).toEqual({ visibility: 'public' });

    const lobbyEntry = {
      room_id: lobby.room_id,
      name: 'Aardvark Lobby',
      topic: 'Where aardvarks meet',
      canonical_alias: `#aardvark-lobby:${hs.serverName}`,
      num_joined_members: 2,
      world_readable: true,
      guest_can_join: true,
      join_rule: 'public',
    };
    const denEntry = {
      room_id: den.room_id,
      name: 'Aardvark Den',
      topic: 'quieter',
      avatar_url: 'mxc://example.org/den',
      num_joined_members: 1,
      world_readable: false,
      guest_can_join: false,
      join_rule: 'public',
      room_type: 'org.example.den',
    };
    // GET, no access token: the whole directory, largest room first.
    const all = await getPublicRooms();
    expect(all.chunk.filter((r: any) => r.name?.startsWith('Aardvark'))).toEqual([lobbyEntry, denEntry]);
    expect(all.total_room_count_estimate).toBe(all.chunk.length);
    expect(all).not.toHaveProperty('next_batch');
    expect(all).not.toHaveProperty('prev_batch');
    // POST, filtered to these rooms.
    const found = await postPublicRooms(bob, { filter: { generic_search_term: 'aardvark' } });
    expect(found).toEqual({ chunk: [lobbyEntry, denEntry], total_room_count_estimate: 2 });

    // The directory follows current state: a join, a new name, guests shut out.
    await addMembers(den.room_id, 2);
    await alice.setState(lobby.room_id, 'm.room.guest_access', { guest_access: 'forbidden' });
    await alice.setState(lobby.room_id, 'm.room.name', { name: 'Aardvark Hall' });
    const after = await postPublicRooms(bob, { filter: { generic_search_term: 'aardvark' } });
    expect(after.chunk).toEqual([
      { ...denEntry, num_joined_members: 3 },
      { ...lobbyEntry, name: 'Aardvark Hall', guest_can_join: false },
    ]);

    // Unlisting takes a room out; listing it again brings it back.
    expect((await setVisibility(alice, den.room_id, { visibility: 'private' })).status).toBe(200);
    expect((await visibilityOf(den.room_id)).body).toEqual({ visibility: 'private' });
    listed = (await getPublicRooms()).chunk.map((r: any) => r.room_id);
    expect(listed).toContain(lobby.room_id);
    expect(listed).not.toContain(den.room_id);
    expect(listed).not.toContain(secret.room_id);
    expect((await postPublicRooms(bob, { filter: { generic_search_term: 'aardvark' } })).chunk.map((r: any) => r.room_id)).toEqual([lobby.room_id]);
    // The body's visibility defaults to public.
    expect((await setVisibility(alice, den.room_id, {})).status).toBe(200);
    expect((await visibilityOf(den.room_id)).body).toEqual({ visibility: 'public' });
    expect((await postPublicRooms(bob, { filter: { generic_search_term: 'aardvark' } })).chunk.map((r: any) => r.room_id)).toEqual([den.room_id, lobby.room_id]);
  });

  it('filters by generic_search_term in name, topic and canonical alias, case-insensitively, and by room_types', async () => {
    const bob = await user('bob');
    const byName = await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: 'The Platypus Club' });
    const byTopic = await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: 'Monotremes', topic: 'all about PLATYPUSES' });
    const byAlias = await alice.createRoom({ visibility: 'public', preset: 'public_chat', room_alias_name: 'platypus-corner' });
    const space = await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: 'Platypus Space', creation_content: { type: 'm.space' } });
    const other = await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: 'Echidna Club', topic: 'spiny' });
    await addMembers(byTopic.room_id, 3);
    await addMembers(byAlias.room_id, 2);
    await addMembers(byName.room_id, 1);

    const search = async (term: string, extra: Record<string, unknown> = {}) => {
      const r = await postPublicRooms(bob, { filter: { generic_search_term: term, ...extra } });
      expect(r.total_room_count_estimate).toBe(r.chunk.length);
      return r.chunk.map((e: any) => e.room_id);
    };
    // Largest first: 4, 3, 2 and 1 joined members.
    expect(await search('platypus')).toEqual([byTopic.room_id, byAlias.room_id, byName.room_id, space.room_id]);
    expect(await search('PlAtYpUs')).toEqual([byTopic.room_id, byAlias.room_id, byName.room_id, space.room_id]);
    expect(await search('platypuses')).toEqual([byTopic.room_id]);
    expect(await search('PLATYPUS-CORNER')).toEqual([byAlias.room_id]);
    expect(await search('the platypus club')).toEqual([byName.room_id]);
    expect(await search('spiny')).toEqual([other.room_id]);
    expect(await search('no room is called this')).toEqual([]);

    expect(await search('platypus', { room_types: ['m.space'] })).toEqual([space.room_id]);
    expect(await search('platypus', { room_types: [null] })).toEqual([byTopic.room_id, byAlias.room_id, byName.room_id]);
    expect(await search('platypus', { room_types: [null, 'm.space'] })).toEqual([byTopic.room_id, byAlias.room_id, byName.room_id, space.room_id]);
    expect(await search('platypus', { room_types: [] })).toEqual([]);
    const spaceEntry = (await postPublicRooms(bob, { filter: { generic_search_term: 'platypus space' } })).chunk[0];
    expect(spaceEntry).toMatchObject({ room_id: space.room_id, room_type: 'm.space' });
  });
});

describe('pagination', () => {
  it('walks every room exactly once with limit and next_batch, in order, and prev_batch goes back', async () => {
    const bob = await user('bob');
    const rooms: string[] = [];
    for (let i = 0; i < 7; i++) rooms.push((await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: `Wombat ${i}` })).room_id);
    // Distinct sizes for some, ties (broken by room ID) for the rest.
    await addMembers(rooms[3]!, 3);
    await addMembers(rooms[5]!, 2);
    await addMembers(rooms[1]!, 1);
    const filter = { generic_search_term: 'wombat' };
    const whole = await postPublicRooms(bob, { filter });
    const order: string[] = whole.chunk.map((r: any) => r.room_id);
    expect(order.slice(0, 3)).toEqual([rooms[3], rooms[5], rooms[1]]);
    const ties = rooms
      .filter((_, i) => ![1, 3, 5].includes(i))
      // Room IDs are ASCII: code-unit order is byte order.
      .sort((a, b) => (a < b ? -1 : 1));
    expect(order.slice(3)).toEqual(ties);
    expect(whole.total_room_count_estimate).toBe(7);

    // Forwards, 3 at a time.
    const pages: any[] = [];
    let since: string | undefined;
    do {
      const page = await postPublicRooms(bob, { filter, limit: 3, ...(since ? { since } : {}) });
      expect(page.total_room_count_estimate).toBe(7);
      pages.push(page);
      since = page.next_batch;
    } while (since && pages.length < 10);
    expect(pages.map((p) => p.chunk.length)).toEqual([3, 3, 1]);
    expect(pages.flatMap((p) => p.chunk.map((r: any) => r.room_id))).toEqual(order);
    expect(pages[0]).not.toHaveProperty('prev_batch');
    expect(typeof pages[1].prev_batch).toBe('string');
    expect(typeof pages[2].prev_batch).toBe('string');
    expect(pages[2]).not.toHaveProperty('next_batch');

    // Backwards from the last page: the same pages again.
    const back1 = await postPublicRooms(bob, { filter, limit: 3, since: pages[2].prev_batch });
    expect(back1.chunk).toEqual(pages[1].chunk);
    expect(typeof back1.next_batch).toBe('string');
    const back0 = await postPublicRooms(bob, { filter, limit: 3, since: back1.prev_batch });
    expect(back0.chunk).toEqual(pages[0].chunk);
    expect(back0).not.toHaveProperty('prev_batch');
    // And forwards again from a page reached backwards.
    expect((await postPublicRooms(bob, { filter, limit: 3, since: back0.next_batch })).chunk).toEqual(pages[1].chunk);

    // A room that joins the directory mid-walk ahead of the walker does not make it repeat or skip one.
    const midWalk = await postPublicRooms(bob, { filter, limit: 3 });
    const newcomer = await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: 'Wombat newcomer' });
    await addMembers(newcomer.room_id, 5);
    const rest = await postPublicRooms(bob, { filter, limit: 10, since: midWalk.next_batch });
    expect(rest.chunk.map((r: any) => r.room_id)).toEqual(order.slice(3));
    expect(rest.total_room_count_estimate).toBe(8);
  });

  it('pages the unfiltered GET /publicRooms with limit and since, without an access token', async () => {
    for (let i = 0; i < 3; i++) await alice.createRoom({ visibility: 'public', preset: 'public_chat', name: `Quokka ${i}` });
    const whole = await getPublicRooms();
    const order = whole.chunk.map((r: any) => r.room_id);
    expect(order.length).toBeGreaterThanOrEqual(3);
    expect(whole.total_room_count_estimate).toBe(order.length);
    const seen: string[] = [];
    let since: string | undefined;
    let prev: any;
    let pages = 0;
    do {
      const page = await getPublicRooms({ limit: '2', ...(since ? { since } : {}) });
      expect(page.chunk.length).toBeLessThanOrEqual(2);
      if (pages > 0) expect(typeof page.prev_batch).toBe('string');
      seen.push(...page.chunk.map((r: any) => r.room_id));
      since = page.next_batch;
      prev = page;
      pages++;
    } while (since && pages < 100);
    expect(seen).toEqual(order);
    expect(new Set(seen).size).toBe(seen.length);
    const back = await getPublicRooms({ limit: '2', since: prev.prev_batch });
    expect(back.chunk.map((r: any) => r.room_id)).toEqual(order.slice(-prev.chunk.length - 2, -prev.chunk.length));
  });
});

describe('access and errors', () => {
  it('GET /publicRooms needs no access token; POST needs one', async () => {
    const r = await request(url, 'GET', v3('/publicRooms'));
    expect(r.status).toBe(200);
    expect(Array.isArray(r.body.chunk)).toBe(true);
    expect(typeof r.body.total_room_count_estimate).toBe('number');
    expect((await request(url, 'GET', `/_matrix/client/r0/publicRooms?server=${enc(hs.serverName)}`)).status).toBe(200);
    expectMatrixError(await request(url, 'POST', v3('/publicRooms'), { body: {} }), 401, 'M_MISSING_TOKEN');
    expectMatrixError(await request(url, 'PUT', v3(`/directory/list/room/${enc('!x:' + hs.serverName)}`), { body: {} }), 401, 'M_MISSING_TOKEN');
  });

  it('lets only members with power over m.room.canonical_alias change a room’s visibility', async () => {
    const room = await alice.createRoom({ preset: 'public_chat', name: 'Bilby burrow' });
    const outsider = await user('outsider');
    expectMatrixError(await setVisibility(outsider, room.room_id, { visibility: 'public' }), 403, 'M_FORBIDDEN');
    const member = await user('member');
    expect((await member.join(room.room_id)).status).toBe(200);
    expectMatrixError(await setVisibility(member, room.room_id, { visibility: 'public' }), 403, 'M_FORBIDDEN');
    expect((await visibilityOf(room.room_id)).body).toEqual({ visibility: 'private' });
    expect((await postPublicRooms(member, { filter: { generic_search_term: 'bilby' } })).chunk).toEqual([]);

    // Given power 50 (what m.room.canonical_alias needs), the member may.
    const levels = await alice.ok('GET', v3(`/rooms/${enc(room.room_id)}/state/m.room.power_levels/`));
    await alice.setState(room.room_id, 'm.room.power_levels', { ...levels, users: { ...levels.users, [member.userId]: 50 } });
    expect((await setVisibility(member, room.room_id, { visibility: 'public' })).status).toBe(200);
    expect((await postPublicRooms(member, { filter: { generic_search_term: 'bilby' } })).chunk.map((r: any) => r.room_id)).toEqual([room.room_id]);
  });

  it('answers bad input with the spec’s errors and changes nothing', async () => {
    const bob = await user('bob');
    const room = await alice.createRoom({ preset: 'public_chat', name: 'Numbat nest' });
    const unknown = `!nosuchroom:${hs.serverName}`;

    expectMatrixError(await setVisibility(alice, room.room_id, { visibility: 'hidden' }), 400, 'M_INVALID_PARAM');
    expectMatrixError(await setVisibility(alice, room.room_id, { visibility: 1 }), 400, 'M_BAD_JSON');
    expectMatrixError(await setVisibility(alice, room.room_id, ['public']), 400, 'M_BAD_JSON');
    expect((await visibilityOf(room.room_id)).body).toEqual({ visibility: 'private' });
    expectMatrixError(await setVisibility(alice, unknown, { visibility: 'public' }), 404, 'M_NOT_FOUND');
    expectMatrixError(await visibilityOf(unknown), 404, 'M_NOT_FOUND');
    expectMatrixError(await visibilityOf('not-a-room-id'), 400, 'M_INVALID_PARAM');

    for (const body of [
      { limit: '10' },
      { limit: true },
      { since: 5 },
      { filter: 'platypus' },
      { filter: { generic_search_term: 5 } },
      { filter: { room_types: 'm.space' } },
      { filter: { room_types: [1] } },
      { include_all_networks: 'yes' },
      { third_party_instance_id: 3 },
      [],
    ]) {
      expectMatrixError(await bob.req('POST', v3('/publicRooms'), body), 400, 'M_BAD_JSON');
    }
    const forged = Buffer.from(JSON.stringify(['x', 1, room.room_id])).toString('base64url');
    for (const since of ['not a token!', 'bm90IGEgdG9rZW4', forged]) {
      expectMatrixError(await bob.req('POST', v3('/publicRooms'), { since }), 400, 'M_INVALID_PARAM');
      expectMatrixError(await request(url, 'GET', v3(`/publicRooms?since=${enc(since)}`)), 400, 'M_INVALID_PARAM');
    }
    for (const limit of ['-1', '0', 'ten', '1.5']) expectMatrixError(await request(url, 'GET', v3(`/publicRooms?limit=${limit}`)), 400, 'M_INVALID_PARAM');
    expectMatrixError(await bob.req('POST', v3('/publicRooms'), { limit: 0 }), 400, 'M_INVALID_PARAM');
    expectMatrixError(await bob.req('POST', v3('/publicRooms'), { include_all_networks: true, third_party_instance_id: 'irc' }), 400, 'M_INVALID_PARAM');
    // Another server's directory is not fetched here: said so, not answered with an empty list.
    expectMatrixError(await request(url, 'GET', v3('/publicRooms?server=other.example')), 404, 'M_NOT_FOUND');
  });
});

describe('GET /rooms/{roomId}/aliases', () => {
  it('lists the room’s local aliases to members, to anyone when world_readable, and refuses others', async () => {
    const guarded = await alice.createRoom({ preset: 'public_chat', room_alias_name: 'dingo-den' });
    const extra = `#dingo-extra:${hs.serverName}`;
    expect((await alice.req('PUT', v3(`/directory/room/${enc(extra)}`), { room_id: guarded.room_id })).status).toBe(200);
    const aliasesOf = (who: TestUser, roomId: string) => who.req('GET', v3(`/rooms/${enc(roomId)}/aliases`));

    const mine = await aliasesOf(alice, guarded.room_id);
    expect(mine.status).toBe(200);
    expect(mine.body).toEqual({ aliases: [`#dingo-den:${hs.serverName}`, extra] });
    const stranger = await user('stranger');
    expectMatrixError(await aliasesOf(stranger, guarded.room_id), 403, 'M_FORBIDDEN');
    expect((await stranger.join(guarded.room_id)).status).toBe(200);
    expect((await aliasesOf(stranger, guarded.room_id)).body).toEqual(mine.body);

    const open = await alice.createRoom({ preset: 'public_chat', room_alias_name: 'dingo-open', initial_state: [worldReadable] });
    const passerby = await user('passerby');
    const seen = await aliasesOf(passerby, open.room_id);
    expect(seen.status).toBe(200);
    expect(seen.body).toEqual({ aliases: [`#dingo-open:${hs.serverName}`] });
    const bare = await alice.createRoom({ preset: 'public_chat', initial_state: [worldReadable] });
    expect((await aliasesOf(passerby, bare.room_id)).body).toEqual({ aliases: [] });

    expectMatrixError(await aliasesOf(passerby, `!nosuchroom:${hs.serverName}`), 403, 'M_FORBIDDEN');
    expectMatrixError(await aliasesOf(passerby, 'not-a-room-id'), 400, 'M_INVALID_PARAM');
    expectMatrixError(await request(url, 'GET', v3(`/rooms/${enc(open.room_id)}/aliases`)), 401, 'M_MISSING_TOKEN');
  });
});

describe('previewing a room found in the directory', () => {
  it('a client finds a world_readable room, peeks into it by MSC2753 and sees a message sent afterwards', async () => {
    const room = await alice.createRoom({
      visibility: 'public',
      preset: 'public_chat',
      name: 'Kookaburra Lookout',
      topic: 'birdsong, live',
      initial_state: [worldReadable],
    });
    await alice.send(room.room_id, 'before anyone peeked');

    const visitor = await user('visitor');
    const s0 = await visitor.sync();
    const found = await postPublicRooms(visitor, { filter: { generic_search_term: 'kookaburra' } });
    expect(found.chunk).toHaveLength(1);
    const entry = found.chunk[0];
    expect(entry).toMatchObject({ room_id: room.room_id, name: 'Kookaburra Lookout', world_readable: true, num_joined_members: 1 });

    const peek = await request(url, 'POST', `/_matrix/client/unstable/org.matrix.msc2753/peek/${enc(entry.room_id)}`, { token: visitor.token, body: {} });
    expect(peek.status).toBe(200);
    expect(peek.body.room_id).toBe(room.room_id);
    const s1 = await visitor.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'peek')).toEqual([room.room_id]);
    expect(roomsIn(s1, 'join')).toEqual([]);
    const section = s1.rooms.peek[room.room_id];
    const events = [...section.state.events, ...section.timeline.events];
    expect(events.find((e: any) => e.type === 'm.room.name')?.content).toEqual({ name: 'Kookaburra Lookout' });
    expect(section.timeline.events.at(-1)).toMatchObject({ type: 'm.room.message', content: { body: 'before anyone peeked' } });

    const id = await alice.send(room.room_id, 'the kookaburra laughs');
    const { body } = await visitor.syncUntil(s1.next_batch, (b) => roomsIn(b, 'peek').includes(room.room_id));
    expect(body.rooms.peek[room.room_id].timeline.events.map((e: any) => [e.event_id, e.content.body])).toEqual([[id, 'the kookaburra laughs']]);
    // Peeking is not joining: the directory still counts one member.
    expect((await postPublicRooms(visitor, { filter: { generic_search_term: 'kookaburra' } })).chunk[0].num_joined_members).toBe(1);
  });
});
