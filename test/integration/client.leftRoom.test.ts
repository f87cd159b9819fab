// A user who left a room (or was kicked or banned) reads its state and members as they
// were when they went — "If the user has left the room then the state is taken from the
// state of the room when they left" (client-server API, GET /rooms/{roomId}/state and
// /members) — as Complement's TestLeftRoomFixture checks; a re-join reads the current
// state again, and a user who never was a member reads only a world_readable room. An
// initial /sync with include_leave lists the rooms left.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let n = 0;
const user = (name: string) => TestUser.register(url, `${name}${++n}`);
const v3 = (path: string) => `/_matrix/client/v3${path}`;
const roomPath = (roomId: string, rest: string) => v3(`/rooms/${enc(roomId)}${rest}`);

beforeAll(async () => {
  hs = await startTestPeekd();
  url = hs.url;
});

afterAll(async () => {
  await hs?.dropAll();
});

/** A public room by a new alice whose history visibility is `visibility`. */
async function roomOf(visibility: string) {
  const alice = await user('alice');
  const { room_id: roomId } = await alice.createRoom({
    preset: 'public_chat',
    power_level_content_override: { users: { [alice.userId]: 100 } },
    initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: visibility } }],
  });
  return { alice, roomId };
}

/** `user_id=membership` of each member event GET /members answers with `query`, sorted. */
async function members(reader: TestUser, roomId: string, query = ''): Promise<string[]> {
  const body = await reader.ok('GET', roomPath(roomId, `/members${query}`));
  return body.chunk.map((e: any) => `${e.state_key}=${e.content.membership}`).sort();
}

/** The event IDs of GET /state, sorted. */
async function stateIds(reader: TestUser, roomId: string): Promise<string[]> {
  return (await reader.ok('GET', roomPath(roomId, '/state'))).map((e: any) => e.event_id).sort();
}

describe('a user who left', () => {
  // Complement's TestLeftRoomFixture: history visibility `joined`; alice sets state, bob
  // leaves, alice changes it afterwards (and carol joins).
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  let roomId: string;
  let madeUpBefore: string;
  let stateAtLeave: string[];
  let whileJoined: string;
  let afterChanges: string;

  beforeAll(async () => {
    ({ alice, roomId } = await roomOf('joined'));
    [bob, carol] = await Promise.all([user('bob'), user('carol')]);
    expect((await bob.join(roomId)).status).toBe(200);
    madeUpBefore = await alice.setState(roomId, 'madeup.test.state', { my_key: 'before_leave' });
    await alice.setState(roomId, 'm.room.name', { name: 'Pre-leave room name' });
    await bob.send(roomId, 'Before we left');
    whileJoined = (await bob.sync()).next_batch;
    expect((await bob.leave(roomId)).status).toBe(200);
    stateAtLeave = await stateIds(alice, roomId);

    await alice.send(roomId, 'After we left');
    await alice.setState(roomId, 'madeup.test.state', { my_key: 'after_leave' });
    await alice.setState(roomId, 'm.room.name', { name: 'Post-leave room name' });
    expect((await carol.join(roomId)).status).toBe(200);
    afterChanges = (await alice.sync()).next_batch;
  });

  it('reads one state event as it was when they left (content and ?format=event)', async () => {
    expect(await bob.ok('GET', roomPath(roomId, '/state/madeup.test.state'))).toEqual({ my_key: 'before_leave' });
    expect(await bob.ok('GET', roomPath(roomId, '/state/madeup.test.state/'))).toEqual({ my_key: 'before_leave' });
    const event = await bob.ok('GET', roomPath(roomId, '/state/madeup.test.state?format=event'));
    expect(event).toMatchObject({ event_id: madeUpBefore, type: 'madeup.test.state', state_key: '', sender: alice.userId, content: { my_key: 'before_leave' } });
    // The member still reads the current one.
    expect(await alice.ok('GET', roomPath(roomId, '/state/madeup.test.state'))).toEqual({ my_key: 'after_leave' });
  });

  it('reads the room name as it was when they left', async () => {
    expect(await bob.ok('GET', roomPath(roomId, '/state/m.room.name'))).toEqual({ name: 'Pre-leave room name' });
    expect((await bob.ok('GET', roomPath(roomId, '/state/m.room.name/?format=event'))).content).toEqual({ name: 'Pre-leave room name' });
  });

  it('reads their own leave; state that did not exist when they left is 404', async () => {
    expect(await bob.ok('GET', roomPath(roomId, `/state/m.room.member/${enc(bob.userId)}`))).toMatchObject({ membership: 'leave' });
    expectError(await bob.req('GET', roomPath(roomId, `/state/m.room.member/${enc(carol.userId)}`)), 404, 'M_NOT_FOUND');
    expectError(await bob.req('GET', roomPath(roomId, `/state/m.room.member/${enc(carol.userId)}?format=event`)), 404, 'M_NOT_FOUND');
  });

  it('reads the whole state as it was just after their leave', async () => {
    expect(await stateIds(bob, roomId)).toEqual(stateAtLeave);
    expect(await stateIds(alice, roomId)).not.toEqual(stateAtLeave);
    const state = await bob.ok('GET', roomPath(roomId, '/state'));
    expect(state.find((e: any) => e.type === 'madeup.test.state').content).toEqual({ my_key: 'before_leave' });
    expect(state.find((e: any) => e.type === 'm.room.name').content).toEqual({ name: 'Pre-leave room name' });
    expect(state.find((e: any) => e.type === 'm.room.member' && e.state_key === bob.userId).content.membership).toBe('leave');
  });

  it('reads the members as they were when they left, their leave included; membership filters apply to those', async () => {
    expect(await members(bob, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`].sort());
    expect(await members(bob, roomId, '?membership=join')).toEqual([`${alice.userId}=join`]);
    expect(await members(bob, roomId, '?membership=leave')).toEqual([`${bob.userId}=leave`]);
    expect(await members(bob, roomId, '?not_membership=join')).toEqual([`${bob.userId}=leave`]);
    expect(await members(bob, roomId, '?not_membership=leave')).toEqual([`${alice.userId}=join`]);
    expect(await members(alice, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`, `${carol.userId}=join`].sort());
  });

  it('reads /members?at= no later than their leave: an earlier position as it was, a later one as at the leave', async () => {
    expect(await members(bob, roomId, `?at=${enc(whileJoined)}`)).toEqual([`${alice.userId}=join`, `${bob.userId}=join`].sort());
    expect(await members(bob, roomId, `?at=${enc(afterChanges)}`)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`].sort());
    expect(await members(alice, roomId, `?at=${enc(afterChanges)}`)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`, `${carol.userId}=join`].sort());
  });
});

describe('a user who was kicked or banned', () => {
  it('a banned user reads the state and members as they were at the ban', async () => {
    const { alice, roomId } = await roomOf('shared');
    const bob = await user('bob');
    expect((await bob.join(roomId)).status).toBe(200);
    await alice.setState(roomId, 'm.room.topic', { topic: 'before the ban' });
    expect(await alice.ok('POST', roomPath(roomId, '/ban'), { user_id: bob.userId, reason: 'spam' })).toEqual({});
    const atBan = await stateIds(alice, roomId);
    await alice.setState(roomId, 'm.room.topic', { topic: 'after the ban' });

    expect(await bob.ok('GET', roomPath(roomId, '/state/m.room.topic'))).toEqual({ topic: 'before the ban' });
    expect(await stateIds(bob, roomId)).toEqual(atBan);
    expect(await members(bob, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=ban`].sort());
    expect(await members(bob, roomId, '?membership=ban')).toEqual([`${bob.userId}=ban`]);
  });

  it('a kicked user reads the state and members as they were at the kick', async () => {
    const { alice, roomId } = await roomOf('joined');
    const bob = await user('bob');
    expect((await bob.join(roomId)).status).toBe(200);
    await alice.setState(roomId, 'm.room.topic', { topic: 'before the kick' });
    expect(await alice.ok('POST', roomPath(roomId, '/kick'), { user_id: bob.userId })).toEqual({});
    await alice.setState(roomId, 'm.room.topic', { topic: 'after the kick' });

    expect(await bob.ok('GET', roomPath(roomId, '/state/m.room.topic'))).toEqual({ topic: 'before the kick' });
    expect(await members(bob, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`].sort());
  });
});

describe('a user who left and joined again', () => {
  it('reads the current state while joined, and after leaving again the state at their latest leave', async () => {
    const { alice, roomId } = await roomOf('joined');
    const bob = await user('bob');
    const name = async () => (await bob.ok('GET', roomPath(roomId, '/state/m.room.name'))).name;
    await alice.setState(roomId, 'm.room.name', { name: 'first' });
    expect((await bob.join(roomId)).status).toBe(200);
    expect((await bob.leave(roomId)).status).toBe(200);
    await alice.setState(roomId, 'm.room.name', { name: 'second' });
    expect(await name()).toBe('first');

    expect((await bob.join(roomId)).status).toBe(200);
    expect(await name()).toBe('second');
    await alice.setState(roomId, 'm.room.name', { name: 'third' });
    expect(await name()).toBe('third');
    expect(await stateIds(bob, roomId)).toEqual(await stateIds(alice, roomId));
    expect(await members(bob, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=join`].sort());

    expect((await bob.leave(roomId)).status).toBe(200);
    await alice.setState(roomId, 'm.room.name', { name: 'fourth' });
    expect(await name()).toBe('third');
    expect(await members(bob, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`].sort());
  });
});

describe('who else reads', () => {
  it('a user who never was a member (or is only invited) gets 403 M_FORBIDDEN in a room that is not world_readable, where one who left reads', async () => {
    const { alice, roomId } = await roomOf('shared');
    const [bob, carol, dave] = await Promise.all([user('bob'), user('carol'), user('dave')]);
    expect((await bob.join(roomId)).status).toBe(200);
    expect((await bob.leave(roomId)).status).toBe(200);
    expect(await alice.ok('POST', roomPath(roomId, '/invite'), { user_id: dave.userId })).toEqual({});

    expect((await bob.req('GET', roomPath(roomId, '/state'))).status).toBe(200);
    for (const stranger of [carol, dave]) {
      expectError(await stranger.req('GET', roomPath(roomId, '/state')), 403, 'M_FORBIDDEN');
      expectError(await stranger.req('GET', roomPath(roomId, '/state/m.room.create')), 403, 'M_FORBIDDEN');
      expectError(await stranger.req('GET', roomPath(roomId, '/state/m.room.create?format=event')), 403, 'M_FORBIDDEN');
      expectError(await stranger.req('GET', roomPath(roomId, '/members')), 403, 'M_FORBIDDEN');
    }
    expectError(await carol.req('GET', roomPath(roomId.replace(/^!\w+/, '!nosuchroom'), '/state')), 403, 'M_FORBIDDEN');
  });

  it('a leave or ban of someone never joined (a rejected invite, a ban in advance) gives no view: 403 M_FORBIDDEN', async () => {
    const { alice, roomId } = await roomOf('shared');
    const [erin, frank] = await Promise.all([user('erin'), user('frank')]);
    expect(await alice.ok('POST', roomPath(roomId, '/invite'), { user_id: erin.userId })).toEqual({});
    expect((await erin.leave(roomId)).status).toBe(200); // rejects the invite
    expect(await alice.ok('POST', roomPath(roomId, '/ban'), { user_id: frank.userId })).toEqual({});
    for (const stranger of [erin, frank]) {
      expectError(await stranger.req('GET', roomPath(roomId, '/state')), 403, 'M_FORBIDDEN');
      expectError(await stranger.req('GET', roomPath(roomId, '/state/m.room.create')), 403, 'M_FORBIDDEN');
      expectError(await stranger.req('GET', roomPath(roomId, '/members')), 403, 'M_FORBIDDEN');
    }
  });

  it('in a world_readable room a user who left reads the state at their leave (as Synapse); one who never was a member reads the current state', async () => {
    const { alice, roomId } = await roomOf('world_readable');
    const [bob, carol] = await Promise.all([user('bob'), user('carol')]);
    await alice.setState(roomId, 'm.room.topic', { topic: 'before' });
    expect((await bob.join(roomId)).status).toBe(200);
    expect((await bob.leave(roomId)).status).toBe(200);
    await alice.setState(roomId, 'm.room.topic', { topic: 'after' });

    expect(await bob.ok('GET', roomPath(roomId, '/state/m.room.topic'))).toEqual({ topic: 'before' });
    expect(await members(bob, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`].sort());
    expect(await carol.ok('GET', roomPath(roomId, '/state/m.room.topic'))).toEqual({ topic: 'after' });
    expect(await stateIds(carol, roomId)).toEqual(await stateIds(alice, roomId));
    expect(await members(carol, roomId)).toEqual([`${alice.userId}=join`, `${bob.userId}=leave`].sort());
  });
});

describe('include_leave', () => {
  it('an initial sync with include_leave has the rooms left, up to the leave; without it, none', async () => {
    const { alice, roomId } = await roomOf('shared');
    const bob = await user('bob');
    expect((await bob.join(roomId)).status).toBe(200);
    const before = await alice.send(roomId, 'while bob was here');
    expect((await bob.leave(roomId)).status).toBe(200);
    await alice.send(roomId, 'after bob left');

    const withLeave = await bob.sync({ filter: JSON.stringify({ room: { include_leave: true } }) });
    const left = withLeave.rooms.leave[roomId];
    const timeline = left.timeline.events;
    // Up to bob's own leave, and nothing after it.
    expect(timeline.at(-1)).toMatchObject({ type: 'm.room.member', state_key: bob.userId, content: { membership: 'leave' } });
    expect(timeline.map((e: any) => e.event_id)).toContain(before);
    expect(JSON.stringify(left)).not.toContain('after bob left');
    expect(withLeave.rooms.join[roomId]).toBeUndefined();

    const without = await bob.sync();
    expect(without.rooms.leave).toEqual({});
    // A room the user is still in is not a left room.
    expect((await alice.sync({ filter: JSON.stringify({ room: { include_leave: true } }) })).rooms.leave).toEqual({});
  });
});
