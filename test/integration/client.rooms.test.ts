// Room events and reads over real HTTP against a running peekd: state set to what it
// already is writes nothing, a state event as a whole (?format=event), the r0 POST send
// without a transaction ID, /messages `end`, /members filters, the start-up endpoints
// (third-party protocols, TURN), and what guests may do with all of these.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, registerGuest, request, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let n = 0;
const user = (name: string) => TestUser.register(url, `${name}${++n}`);
const v3 = (path: string) => `/_matrix/client/v3${path}`;
const r0 = (path: string) => `/_matrix/client/r0${path}`;

beforeAll(async () => {
  hs = await startTestPeekd();
  url = hs.url;
});

afterAll(async () => {
  await hs?.dropAll();
});

describe('state', () => {
  it('setting state to exactly what it is writes nothing and answers the current event ID; another sender or content writes a new event', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat', power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 100 } } });
    await bob.join(roomId);
    const first = await alice.setState(roomId, 'm.room.topic', { topic: 'gardening' });
    const count = (await alice.messages(roomId)).length;
    expect(await alice.setState(roomId, 'm.room.topic', { topic: 'gardening' })).toBe(first);
    // Keys in another order are the same content.
    const keyed = await alice.setState(roomId, 'org.example.pair', { a: 1, b: 2 }, 'k');
    expect(await alice.setState(roomId, 'org.example.pair', { b: 2, a: 1 }, 'k')).toBe(keyed);
    expect((await alice.messages(roomId)).length).toBe(count + 1);

    const byBob = await bob.setState(roomId, 'm.room.topic', { topic: 'gardening' });
    expect(byBob).not.toBe(first);
    const changed = await alice.setState(roomId, 'm.room.topic', { topic: 'gardening!' });
    expect(changed).not.toBe(byBob);
    expect(await alice.setState(roomId, 'm.room.topic', { topic: 'gardening' })).not.toBe(first);
    expect((await alice.messages(roomId)).length).toBe(count + 4);
  });

  it('?format=event answers the whole state event; format=content (the default) its content; another format is 400 M_INVALID_PARAM', async () => {
    const alice = await user('alice');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat', name: 'Events' });
    const eventId = await alice.setState(roomId, 'org.example.thing', { v: 1 }, 'key');
    const event = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/state/org.example.thing/key?format=event`));
    expect(event).toEqual({
      event_id: eventId,
      type: 'org.example.thing',
      state_key: 'key',
      sender: alice.userId,
      // The sender again under its pre-r0 name, as Synapse's client format has it outside /sync.
      user_id: alice.userId,
      room_id: roomId,
      content: { v: 1 },
      origin_server_ts: expect.any(Number),
      unsigned: expect.any(Object),
    });
    // Without a state key, and under r0.
    const name = await alice.ok('GET', r0(`/rooms/${enc(roomId)}/state/m.room.name?format=event`));
    expect(name).toMatchObject({ type: 'm.room.name', state_key: '', content: { name: 'Events' }, sender: alice.userId, room_id: roomId });
    expect(await alice.ok('GET', v3(`/rooms/${enc(roomId)}/state/org.example.thing/key?format=content`))).toEqual({ v: 1 });
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/state/org.example.thing/key?format=xml`)), 400, 'M_INVALID_PARAM');
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/state/org.example.missing/key?format=event`)), 404, 'M_NOT_FOUND');
  });
});

describe('send', () => {
  it('takes POST /rooms/{id}/send/{type} without a transaction ID, under r0 and v3 (as Synapse): each is a new event', async () => {
    const alice = await user('alice');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const body = { msgtype: 'm.text', body: 'legacy' };
    const a = await alice.ok('POST', r0(`/rooms/${enc(roomId)}/send/m.room.message`), body);
    const b = await alice.ok('POST', v3(`/rooms/${enc(roomId)}/send/m.room.message`), body);
    expect(a.event_id).toMatch(/^\$/);
    expect(b.event_id).not.toBe(a.event_id);
    const [newest, before] = await alice.messages(roomId, 2);
    expect([newest.event_id, before.event_id]).toEqual([b.event_id, a.event_id]);
    expect(newest).toMatchObject({ type: 'm.room.message', sender: alice.userId, content: body });
    const outsider = await user('outsider');
    expectError(await outsider.req('POST', r0(`/rooms/${enc(roomId)}/send/m.room.message`), body), 403, 'M_FORBIDDEN');
    expectError(await alice.req('POST', r0(`/rooms/${enc(roomId)}/send/m.room.message`), ['not', 'an', 'object']), 400, 'M_BAD_JSON');
  });
});

describe('/messages end', () => {
  it('forwards, a page that reaches the newest event still carries end, and the next page from it holds what was sent since', async () => {
    const alice = await user('alice');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const sent = await alice.send(roomId, 'one');
    const all = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=f&from=t0&limit=100`));
    expect(all.chunk.at(-1).event_id).toBe(sent);
    expect(typeof all.end).toBe('string');
    // Nothing new yet: an empty chunk, and no end.
    const none = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=f&from=${enc(all.end)}&limit=100`));
    expect(none.chunk).toEqual([]);
    expect(none.end).toBeUndefined();
    const later = await alice.send(roomId, 'two');
    const next = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=f&from=${enc(all.end)}&limit=100`));
    expect(next.chunk.map((e: any) => e.event_id)).toEqual([later]);
  });

  it('backwards, the page that reaches the first event carries end; the page after it is empty and has none', async () => {
    const alice = await user('alice');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const all = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&limit=1000`));
    expect(all.chunk.at(-1).type).toBe('m.room.create');
    expect(typeof all.end).toBe('string');
    const after = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&limit=1000&from=${enc(all.end)}`));
    expect(after.chunk).toEqual([]);
    expect(after.end).toBeUndefined();
  });
});

describe('/members filters', () => {
  it('membership, not_membership and at', async () => {
    const alice = await user('alice');
    const [bob, carol, dave] = await Promise.all([user('bob'), user('carol'), user('dave')]);
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    await bob.join(roomId);
    await carol.join(roomId);
    const at = (await alice.sync()).next_batch;
    await carol.leave(roomId);
    await alice.ok('POST', v3(`/rooms/${enc(roomId)}/invite`), { user_id: dave.userId });
    const members = async (query: string) => (await alice.ok('GET', v3(`/rooms/${enc(roomId)}/members${query}`))).chunk.map((e: any) => `${e.state_key}=${e.content.membership}`).sort();
    expect(await members('')).toEqual([`${alice.userId}=join`, `${bob.userId}=join`, `${carol.userId}=leave`, `${dave.userId}=invite`].sort());
    expect(await members('?membership=join')).toEqual([`${alice.userId}=join`, `${bob.userId}=join`].sort());
    expect(await members('?not_membership=leave')).toEqual([`${alice.userId}=join`, `${bob.userId}=join`, `${dave.userId}=invite`].sort());
    expect(await members('?membership=invite&not_membership=join')).toEqual([`${dave.userId}=invite`]);
    expect(await members(`?at=${enc(at)}`)).toEqual([`${alice.userId}=join`, `${bob.userId}=join`, `${carol.userId}=join`].sort());
    expect(await members(`?at=${enc(at)}&not_membership=join`)).toEqual([]);
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/members?membership=joined`)), 400, 'M_INVALID_PARAM');
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/members?not_membership=x`)), 400, 'M_INVALID_PARAM');
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/members?at=nonsense`)), 400, 'M_INVALID_PARAM');
  });
});

describe('start-up endpoints', () => {
  it('third-party protocols are {} (no bridges); the TURN server answer is {} (none)', async () => {
    const alice = await user('alice');
    expect(await alice.ok('GET', v3('/thirdparty/protocols'))).toEqual({});
    expect(await alice.ok('GET', v3('/voip/turnServer'))).toEqual({});
    expectError(await request(url, 'GET', v3('/thirdparty/protocols')), 401, 'M_MISSING_TOKEN');
  });
});

describe('guests', () => {
  let alice: TestUser;
  let guest: TestUser;
  let open: string;
  let openAlias: string;
  let readable: string;

  beforeAll(async () => {
    alice = await user('alice');
    guest = await registerGuest(url);
    const created = await alice.createRoom({
      preset: 'public_chat',
      room_alias_name: `guests${++n}`,
      initial_state: [{ type: 'm.room.guest_access', state_key: '', content: { guest_access: 'can_join' } }],
    });
    open = created.room_id;
    openAlias = created.room_alias!;
    readable = (await alice.createWorldReadableRoom({ name: 'readable' })).room_id;
  });

  it('read state (also ?format=event), /members, /messages, /event and /context of a world_readable room', async () => {
    const sent = await alice.send(readable, 'for guests');
    expect((await guest.ok('GET', v3(`/rooms/${enc(readable)}/state/m.room.name/?format=event`))).content).toEqual({ name: 'readable' });
    expect((await guest.ok('GET', v3(`/rooms/${enc(readable)}/state`))).length).toBeGreaterThan(0);
    expect((await guest.ok('GET', v3(`/rooms/${enc(readable)}/members?membership=join`))).chunk.map((e: any) => e.state_key)).toEqual([alice.userId]);
    expect((await guest.ok('GET', v3(`/rooms/${enc(readable)}/messages?dir=b&limit=1`))).chunk[0].event_id).toBe(sent);
    expect((await guest.ok('GET', v3(`/rooms/${enc(readable)}/event/${enc(sent)}`))).content.body).toBe('for guests');
    expect((await guest.ok('GET', v3(`/rooms/${enc(readable)}/context/${enc(sent)}?limit=2`))).event.event_id).toBe(sent);
  });

  it('join a can_join room (by ID and by alias), send there, and leave', async () => {
    // A room without guest_access can_join (public_chat sets forbidden) refuses guests.
    expectError(await guest.req('POST', v3(`/rooms/${enc(readable)}/join`), {}), 403, 'M_GUEST_ACCESS_FORBIDDEN');
    expectError(await guest.req('POST', v3(`/join/${enc(readable)}`), {}), 403, 'M_GUEST_ACCESS_FORBIDDEN');
    expect((await guest.req('POST', v3(`/join/${enc(openAlias)}`), {})).status).toBe(200);
    expect((await guest.req('POST', v3(`/rooms/${enc(open)}/join`), {})).status).toBe(200);
    const sent = await guest.ok('PUT', v3(`/rooms/${enc(open)}/send/m.room.message/g1`), { msgtype: 'm.text', body: 'hello' });
    expect(sent.event_id).toMatch(/^\$/);
    expect((await guest.ok('POST', r0(`/rooms/${enc(open)}/send/m.room.message`), { msgtype: 'm.text', body: 'hello again' })).event_id).toMatch(/^\$/);
    // Since v1.2 of the spec guests may send any event type, and set state as far as the
    // power levels let them (a public_chat room's state needs power 50: 403 M_FORBIDDEN).
    expect((await guest.ok('PUT', v3(`/rooms/${enc(open)}/send/m.reaction/g2`), { body: 'x' })).event_id).toMatch(/^\$/);
    const before = (await alice.messages(open)).length;
    expectError(await guest.req('PUT', v3(`/rooms/${enc(open)}/state/m.room.topic/`), { topic: 'guest topic' }), 403, 'M_FORBIDDEN');
    expect((await alice.messages(open)).length).toBe(before);
    expect((await guest.req('POST', v3(`/rooms/${enc(open)}/leave`), {})).status).toBe(200);
    expect((await alice.ok('GET', v3(`/rooms/${enc(open)}/state/m.room.member/${enc(guest.userId)}`))).membership).toBe('leave');
  });

  it('a display name change shows in the member events of the rooms the guest is in; an avatar is refused', async () => {
    const other = await registerGuest(url);
    await other.ok('POST', v3(`/rooms/${enc(open)}/join`), {});
    expect(await other.ok('GET', v3(`/rooms/${enc(open)}/state/m.room.member/${enc(other.userId)}`))).toEqual({ membership: 'join' });
    await other.ok('PUT', v3(`/profile/${enc(other.userId)}/displayname`), { displayname: 'Visitor' });
    expect(await other.ok('GET', v3(`/rooms/${enc(open)}/state/m.room.member/${enc(other.userId)}`))).toEqual({ membership: 'join', displayname: 'Visitor' });
    expectError(await other.req('PUT', v3(`/profile/${enc(other.userId)}/avatar_url`), { avatar_url: 'mxc://example.org/x' }), 403, 'M_GUEST_ACCESS_FORBIDDEN');
    expect((await request(url, 'GET', v3(`/profile/${enc(other.userId)}`))).body).toEqual({ displayname: 'Visitor' });
  });

  it('capabilities, push rules and TURN answer guests; third-party protocols and moderation do not', async () => {
    expect((await guest.req('GET', v3('/capabilities'))).status).toBe(200);
    expect((await guest.req('GET', v3('/pushrules/'))).status).toBe(200);
    expect(await guest.ok('GET', v3('/voip/turnServer'))).toEqual({});
    expectError(await guest.req('GET', v3('/thirdparty/protocols')), 403, 'M_GUEST_ACCESS_FORBIDDEN');
    expectError(await guest.req('POST', v3(`/rooms/${enc(open)}/unban`), { user_id: alice.userId }), 403, 'M_GUEST_ACCESS_FORBIDDEN');
  });
});
