// Ban, unban and kick over real HTTP against a running peekd: the member events they write,
// what a ban stops and a kick does not, the power levels the room's rules ask for, and the
// spec's errors for everything else — with nothing written.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, memberEvent, request, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let n = 0;
const user = (name: string) => TestUser.register(url, `${name}${++n}`);
const v3 = (path: string) => `/_matrix/client/v3${path}`;
const room = (roomId: string, action: string) => v3(`/rooms/${enc(roomId)}/${action}`);

beforeAll(async () => {
  hs = await startTestPeekd();
  url = hs.url;
});

afterAll(async () => {
  await hs?.dropAll();
});

/** A public room by a new alice (power 100), with bob (moderator, 50) and carol (0) joined. */
async function moderatedRoom() {
  const [alice, bob, carol] = await Promise.all([user('alice'), user('bob'), user('carol')]);
  const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat', power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 50 } } });
  for (const u of [bob, carol]) expect((await u.join(roomId)).status).toBe(200);
  return { alice, bob, carol, roomId };
}

describe('ban and unban', () => {
  it('a ban writes membership ban with the reason; the banned user cannot join or be invited; unban lets them join again', async () => {
    const { alice, bob, carol, roomId } = await moderatedRoom();
    expect(await bob.ok('POST', room(roomId, 'ban'), { user_id: carol.userId, reason: 'spam' })).toEqual({});
    const ban = await memberEvent(alice, roomId, carol.userId);
    expect(ban).toMatchObject({ sender: bob.userId, state_key: carol.userId, content: { membership: 'ban', reason: 'spam' } });
    expect((await carol.ok('GET', v3('/joined_rooms'))).joined_rooms).not.toContain(roomId);
    expect(Object.keys((await alice.ok('GET', room(roomId, 'joined_members'))).joined).sort()).toEqual([alice.userId, bob.userId].sort());

    expectError(await carol.join(roomId), 403, 'M_FORBIDDEN');
    expectError(await carol.req('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/b1`), { msgtype: 'm.text', body: 'let me in' }), 403, 'M_FORBIDDEN');
    expectError(await alice.req('POST', room(roomId, 'invite'), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    expect((await memberEvent(alice, roomId, carol.userId)).event_id).toBe(ban.event_id);

    expect(await bob.ok('POST', room(roomId, 'unban'), { user_id: carol.userId, reason: 'served their time' })).toEqual({});
    expect((await memberEvent(alice, roomId, carol.userId)).content).toEqual({ membership: 'leave', reason: 'served their time' });
    expect((await carol.join(roomId)).status).toBe(200);
  });

  it('a user who never was in the room can be banned (and then cannot join)', async () => {
    const { bob, roomId } = await moderatedRoom();
    const dave = await user('dave');
    await bob.ok('POST', room(roomId, 'ban'), { user_id: dave.userId });
    expect((await memberEvent(bob, roomId, dave.userId)).content).toEqual({ membership: 'ban' });
    expectError(await dave.join(roomId), 403, 'M_FORBIDDEN');
  });

  it('unbanning a user who is not banned is 403 M_FORBIDDEN, and writes nothing', async () => {
    const { alice, bob, carol, roomId } = await moderatedRoom();
    const before = await memberEvent(alice, roomId, carol.userId);
    expectError(await bob.req('POST', room(roomId, 'unban'), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    expectError(await bob.req('POST', room(roomId, 'unban'), { user_id: `@stranger:${hs.serverName}` }), 403, 'M_FORBIDDEN');
    expect((await memberEvent(alice, roomId, carol.userId)).event_id).toBe(before.event_id);
  });
});

describe('kick', () => {
  it('a kick writes membership leave with the reason, sent by the kicker; the kicked user may join the public room again', async () => {
    const { alice, bob, carol, roomId } = await moderatedRoom();
    expect(await bob.ok('POST', room(roomId, 'kick'), { user_id: carol.userId, reason: 'cool down' })).toEqual({});
    expect(await memberEvent(alice, roomId, carol.userId)).toMatchObject({ sender: bob.userId, content: { membership: 'leave', reason: 'cool down' } });
    expect((await carol.ok('GET', v3('/joined_rooms'))).joined_rooms).not.toContain(roomId);
    expectError(await carol.req('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/k1`), { msgtype: 'm.text', body: 'still here?' }), 403, 'M_FORBIDDEN');
    expect((await carol.join(roomId)).status).toBe(200);
    expect((await memberEvent(alice, roomId, carol.userId)).content.membership).toBe('join');
  });

  it('an invited user may be kicked (the invite is withdrawn); a user not in the room may not (403 M_FORBIDDEN)', async () => {
    const { alice, bob, roomId } = await moderatedRoom();
    const [dave, erin] = await Promise.all([user('dave'), user('erin')]);
    await alice.ok('POST', room(roomId, 'invite'), { user_id: dave.userId });
    await bob.ok('POST', room(roomId, 'kick'), { user_id: dave.userId });
    expect((await memberEvent(alice, roomId, dave.userId)).content).toEqual({ membership: 'leave' });
    expectError(await bob.req('POST', room(roomId, 'kick'), { user_id: erin.userId }), 403, 'M_FORBIDDEN');
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/state/m.room.member/${enc(erin.userId)}`)), 404, 'M_NOT_FOUND');
  });
});

describe('who may', () => {
  it('without enough power, against higher power, or from outside the room: 403 M_FORBIDDEN and nothing written', async () => {
    const { alice, bob, carol, roomId } = await moderatedRoom();
    const outsider = await user('outsider');
    const before = await alice.messages(roomId);
    // carol (0) below the ban and kick levels (50).
    expectError(await carol.req('POST', room(roomId, 'ban'), { user_id: bob.userId }), 403, 'M_FORBIDDEN');
    expectError(await carol.req('POST', room(roomId, 'kick'), { user_id: bob.userId }), 403, 'M_FORBIDDEN');
    // bob (50) against alice (100).
    expectError(await bob.req('POST', room(roomId, 'ban'), { user_id: alice.userId }), 403, 'M_FORBIDDEN');
    expectError(await bob.req('POST', room(roomId, 'kick'), { user_id: alice.userId }), 403, 'M_FORBIDDEN');
    // Not in the room at all.
    expectError(await outsider.req('POST', room(roomId, 'ban'), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    expectError(await outsider.req('POST', room(roomId, 'kick'), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    expectError(await outsider.req('POST', room(roomId, 'unban'), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    expect(await alice.messages(roomId)).toEqual(before.map((e) => ({ ...e, unsigned: expect.any(Object) })));
  });

  it('unban needs the ban level: a moderator below it cannot lift a ban', async () => {
    const { alice, bob, carol, roomId } = await moderatedRoom();
    await alice.ok('POST', room(roomId, 'ban'), { user_id: carol.userId });
    const levels = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/state/m.room.power_levels/`));
    await alice.setState(roomId, 'm.room.power_levels', { ...levels, ban: 75 });
    expectError(await bob.req('POST', room(roomId, 'unban'), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    expect((await memberEvent(alice, roomId, carol.userId)).content.membership).toBe('ban');
    expect((await alice.req('POST', room(roomId, 'unban'), { user_id: carol.userId })).status).toBe(200);
  });
});

describe('bad input', () => {
  it('missing user_id is 400 M_MISSING_PARAM, a malformed one 400 M_INVALID_PARAM, a bad body 400 M_BAD_JSON / M_NOT_JSON; nothing written', async () => {
    const { alice, carol, roomId } = await moderatedRoom();
    const before = await alice.messages(roomId);
    for (const action of ['ban', 'unban', 'kick']) {
      expectError(await alice.req('POST', room(roomId, action), {}), 400, 'M_MISSING_PARAM');
      expectError(await alice.req('POST', room(roomId, action), { reason: 'no one' }), 400, 'M_MISSING_PARAM');
      expectError(await alice.req('POST', room(roomId, action), { user_id: 'carol' }), 400, 'M_INVALID_PARAM');
      expectError(await alice.req('POST', room(roomId, action), { user_id: 42 }), 400, 'M_BAD_JSON');
      expectError(await alice.req('POST', room(roomId, action), { user_id: carol.userId, reason: 7 }), 400, 'M_BAD_JSON');
      expectError(await alice.req('POST', room(roomId, action), [carol.userId]), 400, 'M_BAD_JSON');
    }
    expectError(await request(url, 'POST', room(roomId, 'ban'), { token: alice.token, rawBody: '{"user_id":' }), 400, 'M_NOT_JSON');
    expect(await alice.messages(roomId)).toEqual(before.map((e) => ({ ...e, unsigned: expect.any(Object) })));
  });

  it('an unknown room is 404 M_NOT_FOUND, a room of another server 403 M_FORBIDDEN, a malformed room ID 400 M_INVALID_PARAM; no token 401', async () => {
    const { alice, carol } = await moderatedRoom();
    for (const action of ['ban', 'unban', 'kick']) {
      expectError(await alice.req('POST', room(`!nowhere:${hs.serverName}`, action), { user_id: carol.userId }), 404, 'M_NOT_FOUND');
      expectError(await alice.req('POST', room('!far:elsewhere.example', action), { user_id: carol.userId }), 403, 'M_FORBIDDEN');
      expectError(await alice.req('POST', room('not-a-room', action), { user_id: carol.userId }), 400, 'M_INVALID_PARAM');
      const anonymous = await fetch(`${url}${room(`!nowhere:${hs.serverName}`, action)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: carol.userId }),
      });
      expect(anonymous.status).toBe(401);
    }
  });
});
