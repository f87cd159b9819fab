// Profiles over real HTTP against a running peekd: reading (no token needed), setting one's
// own display name and avatar, the errors for anything else, and a profile carried into
// member events — of the rooms a user is in when it changes, and of every later join, with
// the custom keys a client put in its join.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, memberEvent, request, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let n = 0;
const user = (name: string) => TestUser.register(url, `${name}${++n}`);
const v3 = (path: string) => `/_matrix/client/v3${path}`;
const profilePath = (userId: string, field?: string) => v3(`/profile/${enc(userId)}${field ? `/${field}` : ''}`);

beforeAll(async () => {
  hs = await startTestPeekd();
  url = hs.url;
});

afterAll(async () => {
  await hs?.dropAll();
});

/** The m.room.member events of `userId` in the room's timeline, oldest first. */
async function memberEventsOf(reader: TestUser, roomId: string, userId: string): Promise<any[]> {
  return (await reader.messages(roomId)).filter((e) => e.type === 'm.room.member' && e.state_key === userId).reverse();
}

describe('reading a profile', () => {
  it('a new account has its localpart as display name and no avatar (200, empty); no access token is needed, one is accepted', async () => {
    const bob = await user('bob');
    const localpart = bob.userId.slice(1, bob.userId.indexOf(':'));
    const anonymous = await request(url, 'GET', profilePath(bob.userId));
    expect(anonymous.status).toBe(200);
    expect(anonymous.body).toEqual({ displayname: localpart });
    expect(await bob.ok('GET', profilePath(bob.userId))).toEqual({ displayname: localpart });
    expect((await request(url, 'GET', profilePath(bob.userId, 'displayname'))).body).toEqual({ displayname: localpart });
    // No avatar set: 200 with nothing in it (as Synapse answers), not 404.
    const noAvatar = await request(url, 'GET', profilePath(bob.userId, 'avatar_url'));
    expect([noAvatar.status, noAvatar.body]).toEqual([200, {}]);
    expect((await request(url, 'GET', `/_matrix/client/r0/profile/${enc(bob.userId)}/displayname`)).body).toEqual({ displayname: localpart });
  });

  it('an unknown local user and a user of another server are 404 M_NOT_FOUND; a malformed user ID is 400 M_INVALID_PARAM', async () => {
    for (const path of [profilePath(`@nobody:${hs.serverName}`), profilePath(`@nobody:${hs.serverName}`, 'displayname'), profilePath('@someone:elsewhere.example', 'avatar_url')]) {
      expectError(await request(url, 'GET', path), 404, 'M_NOT_FOUND');
    }
    expectError(await request(url, 'GET', profilePath('not-a-user-id', 'displayname')), 400, 'M_INVALID_PARAM');
  });
});

describe('setting a profile', () => {
  it('sets the display name and the avatar; /profile answers both; an empty string clears a field', async () => {
    const bob = await user('bob');
    expect(await bob.ok('PUT', profilePath(bob.userId, 'displayname'), { displayname: 'Bob the Builder' })).toEqual({});
    // Any URL: the specification does not require mxc:// (nor does Synapse, nor sytest).
    expect(await bob.ok('PUT', profilePath(bob.userId, 'avatar_url'), { avatar_url: 'http://somewhere/my-pic.jpg' })).toEqual({});
    expect((await request(url, 'GET', profilePath(bob.userId, 'avatar_url'))).body).toEqual({ avatar_url: 'http://somewhere/my-pic.jpg' });
    expect(await bob.ok('PUT', profilePath(bob.userId, 'avatar_url'), { avatar_url: 'mxc://example.org/bobface' })).toEqual({});
    expect((await request(url, 'GET', profilePath(bob.userId))).body).toEqual({ displayname: 'Bob the Builder', avatar_url: 'mxc://example.org/bobface' });
    expect((await request(url, 'GET', profilePath(bob.userId, 'avatar_url'))).body).toEqual({ avatar_url: 'mxc://example.org/bobface' });
    // r0 too, and a second change replaces the first.
    expect((await bob.req('PUT', `/_matrix/client/r0/profile/${enc(bob.userId)}/displayname`, { displayname: 'Bob' })).status).toBe(200);
    expect((await request(url, 'GET', profilePath(bob.userId, 'displayname'))).body).toEqual({ displayname: 'Bob' });

    await bob.ok('PUT', profilePath(bob.userId, 'displayname'), { displayname: '' });
    expect((await request(url, 'GET', profilePath(bob.userId))).body).toEqual({ avatar_url: 'mxc://example.org/bobface' });
    const cleared = await request(url, 'GET', profilePath(bob.userId, 'displayname'));
    expect([cleared.status, cleared.body]).toEqual([200, {}]);
  });

  it('a display name of 256 characters is accepted (counted in characters, not bytes)', async () => {
    const bob = await user('bob');
    const name = '\u{1F600}'.repeat(256);
    await bob.ok('PUT', profilePath(bob.userId, 'displayname'), { displayname: name });
    expect((await request(url, 'GET', profilePath(bob.userId, 'displayname'))).body).toEqual({ displayname: name });
  });

  it("another user's profile is 403 M_FORBIDDEN; without a token 401 M_MISSING_TOKEN; nothing changes", async () => {
    const [bob, carol] = await Promise.all([user('bob'), user('carol')]);
    const before = (await request(url, 'GET', profilePath(bob.userId))).body;
    expectError(await carol.req('PUT', profilePath(bob.userId, 'displayname'), { displayname: 'hijacked' }), 403, 'M_FORBIDDEN');
    expectError(await carol.req('PUT', profilePath(bob.userId, 'avatar_url'), { avatar_url: 'mxc://example.org/evil' }), 403, 'M_FORBIDDEN');
    expectError(await carol.req('PUT', profilePath(`@bob:elsewhere.example`, 'displayname'), { displayname: 'remote' }), 403, 'M_FORBIDDEN');
    expectError(await request(url, 'PUT', profilePath(bob.userId, 'displayname'), { body: { displayname: 'anonymous' } }), 401, 'M_MISSING_TOKEN');
    expect((await request(url, 'GET', profilePath(bob.userId))).body).toEqual(before);
  });

  it('bad bodies get the spec errcodes and change nothing', async () => {
    const bob = await user('bob');
    const { room_id: roomId } = await bob.createRoom({ preset: 'public_chat' });
    const before = (await request(url, 'GET', profilePath(bob.userId))).body;
    const eventsBefore = (await bob.messages(roomId)).length;
    const cases: [string, unknown, number, string][] = [
      ['displayname', {}, 400, 'M_MISSING_PARAM'],
      ['displayname', { avatar_url: 'mxc://example.org/x' }, 400, 'M_MISSING_PARAM'],
      ['displayname', { displayname: 42 }, 400, 'M_INVALID_PARAM'],
      ['displayname', { displayname: null }, 400, 'M_INVALID_PARAM'],
      ['displayname', { displayname: ['a'] }, 400, 'M_INVALID_PARAM'],
      ['displayname', { displayname: 'x'.repeat(257) }, 400, 'M_INVALID_PARAM'],
      ['displayname', ['displayname'], 400, 'M_BAD_JSON'],
      ['avatar_url', {}, 400, 'M_MISSING_PARAM'],
      ['avatar_url', { avatar_url: 7 }, 400, 'M_INVALID_PARAM'],
      ['avatar_url', { avatar_url: `mxc://example.org/${'x'.repeat(1000)}` }, 400, 'M_INVALID_PARAM'],
    ];
    for (const [field, body, status, errcode] of cases) {
      const r = await bob.req('PUT', profilePath(bob.userId, field), body);
      expect({ field, body, status: r.status, errcode: r.body?.errcode }).toEqual({ field, body, status, errcode });
    }
    const notJson = await request(url, 'PUT', profilePath(bob.userId, 'displayname'), { token: bob.token, rawBody: '{"displayname": ' });
    expectError(notJson, 400, 'M_NOT_JSON');
    expect((await request(url, 'GET', profilePath(bob.userId))).body).toEqual(before);
    expect((await bob.messages(roomId)).length).toBe(eventsBefore);
  });

  it('capabilities say the display name and the avatar may be changed', async () => {
    const bob = await user('bob');
    const { capabilities } = await bob.ok('GET', v3('/capabilities'));
    expect(capabilities['m.set_displayname']).toEqual({ enabled: true });
    expect(capabilities['m.set_avatar_url']).toEqual({ enabled: true });
  });
});

describe('profiles in member events', () => {
  it('a change shows in a new join event in every room the user is in, other keys kept; rooms the user left are untouched', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const [r1, r2, gone] = await Promise.all([alice.createRoom({ preset: 'public_chat' }), alice.createRoom({ preset: 'public_chat' }), alice.createRoom({ preset: 'public_chat' })]);
    await bob.ok('POST', v3(`/rooms/${enc(r1.room_id)}/join`), { reason: 'curious', 'org.example.badge': 'gold' });
    await bob.ok('POST', v3(`/join/${enc(r2.room_id)}`), {});
    await bob.ok('POST', v3(`/rooms/${enc(gone.room_id)}/join`), {});
    await bob.leave(gone.room_id);
    const goneBefore = await memberEvent(alice, gone.room_id, bob.userId);

    await bob.ok('PUT', profilePath(bob.userId, 'displayname'), { displayname: 'Robert' });
    await bob.ok('PUT', profilePath(bob.userId, 'avatar_url'), { avatar_url: 'mxc://example.org/robert' });

    const e1 = await memberEvent(alice, r1.room_id, bob.userId);
    expect(e1).toMatchObject({ sender: bob.userId, state_key: bob.userId, type: 'm.room.member', room_id: r1.room_id });
    expect(e1.content).toEqual({ membership: 'join', displayname: 'Robert', avatar_url: 'mxc://example.org/robert', reason: 'curious', 'org.example.badge': 'gold' });
    const e2 = await memberEvent(alice, r2.room_id, bob.userId);
    expect(e2.content).toEqual({ membership: 'join', displayname: 'Robert', avatar_url: 'mxc://example.org/robert' });
    // One new join event per change in each room: the join, then the name, then the avatar.
    expect((await memberEventsOf(alice, r2.room_id, bob.userId)).map((e) => e.content.displayname ?? null)).toEqual([expect.any(String), 'Robert', 'Robert']);
    expect(await memberEvent(alice, gone.room_id, bob.userId)).toEqual({ ...goneBefore, unsigned: expect.any(Object) });

    // /joined_members answers the names and avatars from the member events.
    const joined = await alice.ok('GET', v3(`/rooms/${enc(r1.room_id)}/joined_members`));
    expect(joined.joined[bob.userId]).toEqual({ display_name: 'Robert', avatar_url: 'mxc://example.org/robert' });
    expect(Object.keys(joined.joined).sort()).toEqual([alice.userId, bob.userId].sort());

    // Setting the same name again writes nothing anywhere.
    const count = (await memberEventsOf(alice, r1.room_id, bob.userId)).length;
    await bob.ok('PUT', profilePath(bob.userId, 'displayname'), { displayname: 'Robert' });
    expect((await memberEventsOf(alice, r1.room_id, bob.userId)).length).toBe(count);

    // Clearing the avatar removes it from the member events.
    await bob.ok('PUT', profilePath(bob.userId, 'avatar_url'), { avatar_url: '' });
    expect((await memberEvent(alice, r2.room_id, bob.userId)).content).toEqual({ membership: 'join', displayname: 'Robert' });
    expect((await alice.ok('GET', v3(`/rooms/${enc(r2.room_id)}/joined_members`))).joined[bob.userId]).toEqual({ display_name: 'Robert', avatar_url: null });
  });

  it('a join carries the profile; the join body adds a reason and custom keys, and may give a per-room name', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    await bob.ok('PUT', profilePath(bob.userId, 'displayname'), { displayname: 'Bobby' });
    await bob.ok('PUT', profilePath(bob.userId, 'avatar_url'), { avatar_url: 'mxc://example.org/bobby' });
    const [plain, custom, alias] = await Promise.all([
      alice.createRoom({ preset: 'public_chat' }),
      alice.createRoom({ preset: 'public_chat' }),
      alice.createRoom({ preset: 'public_chat', room_alias_name: `prof${++n}` }),
    ]);
    await bob.ok('POST', v3(`/rooms/${enc(plain.room_id)}/join`));
    expect((await memberEvent(alice, plain.room_id, bob.userId)).content).toEqual({ membership: 'join', displayname: 'Bobby', avatar_url: 'mxc://example.org/bobby' });

    await bob.ok('POST', v3(`/rooms/${enc(custom.room_id)}/join`), { reason: 'invited by a friend', 'org.example.pronouns': 'he/him', displayname: 'Bob (work)', membership: 'leave' });
    expect((await memberEvent(alice, custom.room_id, bob.userId)).content).toEqual({
      membership: 'join',
      displayname: 'Bob (work)',
      avatar_url: 'mxc://example.org/bobby',
      reason: 'invited by a friend',
      'org.example.pronouns': 'he/him',
    });

    await bob.ok('POST', v3(`/join/${enc(alias.room_alias!)}`), { reason: 'by alias' });
    expect((await memberEvent(alice, alias.room_id, bob.userId)).content).toEqual({ membership: 'join', displayname: 'Bobby', avatar_url: 'mxc://example.org/bobby', reason: 'by alias' });

    // Joining again with the same body writes no new event.
    const before = (await memberEventsOf(alice, alias.room_id, bob.userId)).length;
    await bob.ok('POST', v3(`/join/${enc(alias.room_alias!)}`), { reason: 'by alias' });
    expect((await memberEventsOf(alice, alias.room_id, bob.userId)).length).toBe(before);
  });

  it('a leave keeps its reason; a join body with a non-string reason is 400 M_BAD_JSON and writes nothing', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    expectError(await bob.req('POST', v3(`/rooms/${enc(roomId)}/join`), { reason: 5 }), 400, 'M_BAD_JSON');
    expectError(await bob.req('POST', v3(`/join/${enc(roomId)}`), { reason: { why: 'x' } }), 400, 'M_BAD_JSON');
    expect(await memberEventsOf(alice, roomId, bob.userId)).toEqual([]);
    await bob.ok('POST', v3(`/rooms/${enc(roomId)}/join`), {});
    await bob.ok('POST', v3(`/rooms/${enc(roomId)}/leave`), { reason: 'going home' });
    expect((await memberEvent(alice, roomId, bob.userId)).content).toEqual({ membership: 'leave', reason: 'going home' });
  });

  it('PUT /state/m.room.member/{own user ID} keeps custom keys', async () => {
    const alice = await user('alice');
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const content = { membership: 'join', displayname: 'Alice in this room', 'org.example.status': { busy: true } };
    const eventId = await alice.setState(roomId, 'm.room.member', content, alice.userId);
    const event = await memberEvent(alice, roomId, alice.userId);
    expect(event).toMatchObject({ event_id: eventId, content });
  });
});
