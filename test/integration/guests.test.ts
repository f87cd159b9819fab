// Guest accounts (the client-server API's "Guest access" module), over real HTTP against a
// running peekd: registration without credentials, limited per client address; what a guest
// may do (read and peek world_readable rooms, sync, join rooms whose guest_access is
// can_join, set its display name) and the 403 M_GUEST_ACCESS_FORBIDDEN everywhere else;
// the upgrade to a full account that keeps the user ID; PEEKD_GUEST_ACCESS=off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, registerGuest, request, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let alice: TestUser;
const v3 = (path: string) => `/_matrix/client/v3${path}`;
const MSC2753 = '/_matrix/client/unstable/org.matrix.msc2753';

beforeAll(async () => {
  hs = await startTestPeekd();
  url = hs.url;
  alice = await TestUser.register(url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

describe('guest registration', () => {
  it('POST /register?kind=guest with no auth gives a guest account with an access token', async () => {
    const r = await request(url, 'POST', v3('/register?kind=guest'), { body: {} });
    expect(r.status).toBe(200);
    expect(r.body.user_id).toMatch(new RegExp(`^@[^:]+:${hs.serverName.replace(/\./g, '\\.')}$`));
    expect(typeof r.body.access_token).toBe('string');
    expect(typeof r.body.device_id).toBe('string');
    const whoami = await request(url, 'GET', v3('/account/whoami'), { token: r.body.access_token });
    expect(whoami.status).toBe(200);
    expect(whoami.body).toEqual({ user_id: r.body.user_id, device_id: r.body.device_id, is_guest: true });
    // A full account says it is not a guest.
    expect((await alice.ok('GET', v3('/account/whoami'))).is_guest).toBe(false);
  });

  it('POST /register?kind=guest takes no body at all as well', async () => {
    const r = await fetch(url + v3('/register?kind=guest'), { method: 'POST' });
    expect(r.status).toBe(200);
    expect(typeof ((await r.json()) as { access_token?: unknown }).access_token).toBe('string');
  });

  it('each guest is a new user', async () => {
    const [a, b] = await Promise.all([registerGuest(url), registerGuest(url)]);
    expect(a.userId).not.toBe(b.userId);
  });

  it('an unknown kind is 400 M_INVALID_PARAM', async () => {
    const r = await request(url, 'POST', v3('/register?kind=robot'), { body: {} });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe('M_INVALID_PARAM');
  });
});

describe('what a guest may do', () => {
  let guest: TestUser;
  let readable: string;
  let message: string;

  beforeAll(async () => {
    guest = await registerGuest(url);
    readable = (await alice.createWorldReadableRoom({ name: 'lobby' })).room_id;
    message = await alice.send(readable, 'hello, guests');
  });

  it('syncs', async () => {
    const r = await guest.req('GET', v3('/sync?timeout=0'));
    expect(r.status).toBe(200);
    expect(typeof r.body.next_batch).toBe('string');
  });

  it('reads a world_readable room: /messages, /state, /state/{type}/{key}, /members, /event', async () => {
    const messages = await guest.req('GET', v3(`/rooms/${enc(readable)}/messages?dir=b&limit=10`));
    expect(messages.status).toBe(200);
    expect(messages.body.chunk.map((e: { event_id: string }) => e.event_id)).toContain(message);
    const state = await guest.req('GET', v3(`/rooms/${enc(readable)}/state`));
    expect(state.status).toBe(200);
    expect(state.body.some((e: { type: string }) => e.type === 'm.room.create')).toBe(true);
    const name = await guest.req('GET', v3(`/rooms/${enc(readable)}/state/m.room.name/`));
    expect(name.status).toBe(200);
    expect(name.body).toEqual({ name: 'lobby' });
    const members = await guest.req('GET', v3(`/rooms/${enc(readable)}/members`));
    expect(members.status).toBe(200);
    expect(members.body.chunk.map((e: { state_key: string }) => e.state_key)).toEqual([alice.userId]);
    const event = await guest.req('GET', v3(`/rooms/${enc(readable)}/event/${enc(message)}`));
    expect(event.status).toBe(200);
    expect(event.body.content.body).toBe('hello, guests');
  });

  it('does not read a room that is not world_readable', async () => {
    const closed = (await alice.createRoom({ preset: 'public_chat' })).room_id;
    const r = await guest.req('GET', v3(`/rooms/${enc(closed)}/messages?dir=b`));
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe('M_FORBIDDEN');
  });

  it('peeks a world_readable room (MSC2753) and sees it in /sync, with a message sent afterwards', async () => {
    const room = (await alice.createWorldReadableRoom()).room_id;
    const peek = await guest.req('POST', `${MSC2753}/peek/${enc(room)}`, {});
    expect(peek.status).toBe(200);
    const sent = await alice.send(room, 'live for the guest');
    let since: string | undefined;
    const seen = new Set<string>();
    while (!seen.has(sent)) {
      const r = await guest.ok('GET', v3(`/sync?timeout=5000${since ? `&since=${enc(since)}` : ''}`));
      since = r.next_batch;
      for (const section of ['peek', 'join']) for (const e of r.rooms?.[section]?.[room]?.timeline?.events ?? []) seen.add(e.event_id);
    }
    expect(seen.has(sent)).toBe(true);
  });

  it('joins a room whose guest_access is can_join, and sends a message there', async () => {
    const room = (await alice.createRoom({ preset: 'public_chat', initial_state: [{ type: 'm.room.guest_access', state_key: '', content: { guest_access: 'can_join' } }] })).room_id;
    const join = await guest.req('POST', v3(`/rooms/${enc(room)}/join`), {});
    expect(join.status).toBe(200);
    const members = await alice.ok('GET', v3(`/rooms/${enc(room)}/joined_members`));
    expect(Object.keys(members.joined).sort()).toEqual([alice.userId, guest.userId].sort());
    const sent = await guest.req('PUT', v3(`/rooms/${enc(room)}/send/m.room.message/g1`), { msgtype: 'm.text', body: 'hi from a guest' });
    expect(sent.status).toBe(200);
    // sytest's "Guest users can send messages to guest_access rooms if joined" reads it back
    // through /messages with the pre-r0 user_id (Synapse's client format outside /sync).
    const [last] = (await alice.ok('GET', v3(`/rooms/${enc(room)}/messages?dir=b&limit=1`))).chunk;
    expect(last).toMatchObject({ type: 'm.room.message', room_id: room, sender: guest.userId, user_id: guest.userId, content: { body: 'hi from a guest' } });
    // /sync has neither room_id nor user_id in a room's events.
    const synced = (await alice.sync()).rooms.join[room].timeline.events.at(-1);
    expect(synced.event_id).toBe(sent.body.event_id);
    expect(synced.user_id).toBeUndefined();
    expect(synced.room_id).toBeUndefined();
  });

  it('is refused a room whose guest_access is not can_join: 403 M_GUEST_ACCESS_FORBIDDEN, no member event', async () => {
    const forbiddenRoom = (await alice.createRoom({ preset: 'public_chat' })).room_id;
    const withForbidden = (await alice.createRoom({ preset: 'public_chat', initial_state: [{ type: 'm.room.guest_access', state_key: '', content: { guest_access: 'forbidden' } }] })).room_id;
    for (const room of [forbiddenRoom, withForbidden]) {
      const r = await guest.req('POST', v3(`/rooms/${enc(room)}/join`), {});
      expect(r.status).toBe(403);
      expect(r.body.errcode).toBe('M_GUEST_ACCESS_FORBIDDEN');
      const viaAlias = await guest.req('POST', v3(`/join/${enc(room)}`), {});
      expect(viaAlias.status).toBe(403);
      expect(viaAlias.body.errcode).toBe('M_GUEST_ACCESS_FORBIDDEN');
      // Nor through the state endpoint, with its own member event.
      const viaState = await guest.req('PUT', v3(`/rooms/${enc(room)}/state/m.room.member/${enc(guest.userId)}`), { membership: 'join' });
      expect([viaState.status, viaState.body.errcode]).toEqual([403, 'M_GUEST_ACCESS_FORBIDDEN']);
      const members = await alice.ok('GET', v3(`/rooms/${enc(room)}/members`));
      expect(members.chunk.map((e: { state_key: string }) => e.state_key)).toEqual([alice.userId]);
    }
  });

  it('through the state endpoint, joins and leaves where the join endpoints let it, and sets no one else’s membership', async () => {
    const room = (await alice.createRoom({ preset: 'public_chat', initial_state: [{ type: 'm.room.guest_access', state_key: '', content: { guest_access: 'can_join' } }] })).room_id;
    const memberPath = (userId: string) => v3(`/rooms/${enc(room)}/state/m.room.member/${enc(userId)}`);
    expect((await guest.req('PUT', memberPath(guest.userId), { membership: 'join' })).status).toBe(200);
    for (const [target, membership] of [
      [alice.userId, 'leave'],
      [alice.userId, 'ban'],
      ['@someone:example.org', 'invite'],
      [guest.userId, 'invite'],
    ] as const) {
      const r = await guest.req('PUT', memberPath(target), { membership });
      expect([target, membership, r.status, r.body.errcode]).toEqual([target, membership, 403, 'M_GUEST_ACCESS_FORBIDDEN']);
    }
    expect((await guest.req('PUT', memberPath(guest.userId), { membership: 'leave' })).status).toBe(200);
    const members = await alice.ok('GET', v3(`/rooms/${enc(room)}/joined_members`));
    expect(Object.keys(members.joined)).toEqual([alice.userId]);
  });

  it('leaves the rooms whose guest_access stops being can_join (the server sets its membership to leave)', async () => {
    const room = (await alice.createRoom({ preset: 'public_chat', initial_state: [{ type: 'm.room.guest_access', state_key: '', content: { guest_access: 'can_join' } }] })).room_id;
    const other = await registerGuest(url);
    await other.ok('POST', v3(`/rooms/${enc(room)}/join`), {});
    const bob = await TestUser.register(url, `bob${Date.now()}`);
    await bob.ok('POST', v3(`/rooms/${enc(room)}/join`), {});
    await alice.setState(room, 'm.room.guest_access', { guest_access: 'forbidden' });
    const members = await alice.ok('GET', v3(`/rooms/${enc(room)}/joined_members`));
    expect(Object.keys(members.joined).sort()).toEqual([alice.userId, bob.userId].sort());
    const left = await alice.ok('GET', v3(`/rooms/${enc(room)}/state/m.room.member/${enc(other.userId)}?format=event`));
    expect(left.content.membership).toBe('leave');
    expect(left.sender).toBe(other.userId);
    const again = await other.req('POST', v3(`/rooms/${enc(room)}/join`), {});
    expect(again.status).toBe(403);
    expect(again.body.errcode).toBe('M_GUEST_ACCESS_FORBIDDEN');
  });

  it('sets its display name (having none before: 200, empty)', async () => {
    const fresh = await registerGuest(url);
    const before = await request(url, 'GET', v3(`/profile/${enc(fresh.userId)}/displayname`));
    expect([before.status, before.body]).toEqual([200, {}]);
    const r = await guest.req('PUT', v3(`/profile/${enc(guest.userId)}/displayname`), { displayname: 'Visitor' });
    expect(r.status).toBe(200);
    const p = await request(url, 'GET', v3(`/profile/${enc(guest.userId)}/displayname`));
    expect(p.body).toEqual({ displayname: 'Visitor' });
  });
});

describe('what a guest may not do: 403 M_GUEST_ACCESS_FORBIDDEN, nothing changed', () => {
  let guest: TestUser;
  let room: string;

  beforeAll(async () => {
    guest = await registerGuest(url);
    room = (await alice.createWorldReadableRoom()).room_id;
  });

  const refusals: [string, string, (g: TestUser, room: string) => string, unknown][] = [
    ['create a room', 'POST', () => v3('/createRoom'), {}],
    ['invite', 'POST', (_g, r) => v3(`/rooms/${enc(r)}/invite`), { user_id: '@someone:example.org' }],
    ['kick', 'POST', (_g, r) => v3(`/rooms/${enc(r)}/kick`), { user_id: '@someone:example.org' }],
    ['ban', 'POST', (_g, r) => v3(`/rooms/${enc(r)}/ban`), { user_id: '@someone:example.org' }],
    ['create a room alias', 'PUT', () => v3(`/directory/room/${enc(`#guestalias:${hs.serverName}`)}`), { room_id: '!x:example.org' }],
    ['publish a room in the directory', 'PUT', (_g, r) => v3(`/directory/list/room/${enc(r)}`), { visibility: 'public' }],
    ['set an avatar', 'PUT', (g) => v3(`/profile/${enc(g.userId)}/avatar_url`), { avatar_url: 'mxc://example.org/abc' }],
    ['log out every device', 'POST', () => v3('/logout/all'), {}],
    // /events is for room previews: a guest must name the room (and is answered at once).
    ['call /events globally', 'GET', () => v3('/events?timeout=20000'), undefined],
  ];

  for (const [what, method, path, body] of refusals) {
    it(what, async () => {
      const r = await guest.req(method, path(guest, room), body);
      expect(r.status).toBe(403);
      expect(r.body.errcode).toBe('M_GUEST_ACCESS_FORBIDDEN');
    });
  }

  it('nothing a refused request asked for happened', async () => {
    const aliases = await request(url, 'GET', v3(`/directory/room/${enc(`#guestalias:${hs.serverName}`)}`));
    expect(aliases.status).toBe(404);
    const visibility = await request(url, 'GET', v3(`/directory/list/room/${enc(room)}`));
    expect(visibility.body.visibility).toBe('private');
    expect((await guest.req('GET', v3('/account/whoami'))).status).toBe(200); // still logged in
  });
});

describe('upgrading a guest to a full account', () => {
  it('registering with guest_access_token keeps the user ID; the guest is a full account from then on', async () => {
    const guest = await registerGuest(url);
    const localpart = guest.userId.slice(1, guest.userId.indexOf(':'));
    const r = await request(url, 'POST', v3('/register'), { body: { username: localpart, password: 'a new password', guest_access_token: guest.token, auth: { type: 'm.login.dummy' } } });
    expect(r.status).toBe(200);
    expect(r.body.user_id).toBe(guest.userId);
    const full = new TestUser(url, r.body.user_id, r.body.device_id, r.body.access_token);
    expect((await full.ok('GET', v3('/account/whoami'))).is_guest).toBe(false);
    // The guest's own token now acts as the full account too.
    expect((await guest.ok('GET', v3('/account/whoami'))).is_guest).toBe(false);
    expect((await guest.req('POST', v3('/createRoom'), {})).status).toBe(200);
    // The password works.
    const login = await request(url, 'POST', v3('/login'), { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: guest.userId }, password: 'a new password' } });
    expect(login.status).toBe(200);
    expect(login.body.user_id).toBe(guest.userId);
    // Once only.
    const again = await request(url, 'POST', v3('/register'), { body: { username: localpart, password: 'x', guest_access_token: guest.token, auth: { type: 'm.login.dummy' } } });
    expect(again.status).toBe(403);
  });

  it('refuses another user name (400 M_INVALID_PARAM), an unknown token (401 M_UNKNOWN_TOKEN), and leaves the guest a guest', async () => {
    const guest = await registerGuest(url);
    const other = await request(url, 'POST', v3('/register'), { body: { username: 'someoneelse', password: 'pw', guest_access_token: guest.token, auth: { type: 'm.login.dummy' } } });
    expect(other.status).toBe(400);
    expect(other.body.errcode).toBe('M_INVALID_PARAM');
    const unknown = await request(url, 'POST', v3('/register'), { body: { password: 'pw', guest_access_token: 'not-a-token', auth: { type: 'm.login.dummy' } } });
    expect(unknown.status).toBe(401);
    expect(unknown.body.errcode).toBe('M_UNKNOWN_TOKEN');
    expect((await guest.ok('GET', v3('/account/whoami'))).is_guest).toBe(true);
    expect((await request(url, 'GET', v3('/register/available?username=someoneelse'))).status).toBe(200);
  });
});

describe('limits and PEEKD_GUEST_ACCESS', () => {
  it('guest registrations are limited per address (429 M_LIMIT_EXCEEDED); off refuses guests, their old tokens included', async () => {
    const other = await startTestPeekd({ env: { PEEKD_GUEST_REGISTRATION_BURST: '2', PEEKD_GUEST_REGISTRATION_REFILL_MS: '600000' } });
    let restarted: Awaited<ReturnType<typeof startTestPeekd>> | undefined;
    try {
      const first = await registerGuest(other.url);
      await registerGuest(other.url);
      const third = await request(other.url, 'POST', v3('/register?kind=guest'), { body: {} });
      expect(third.status).toBe(429);
      expect(third.body.errcode).toBe('M_LIMIT_EXCEEDED');
      expect(third.body.retry_after_ms).toBeGreaterThan(0);
      // Full registrations are not limited by it.
      await TestUser.register(other.url, 'bob');

      await other.close();
      restarted = await startTestPeekd({ reuse: { databaseUrl: other.databaseUrl, prefix: other.prefix, dataDir: other.dataDir }, env: { PEEKD_GUEST_ACCESS: 'off' } });
      const refused = await request(restarted.url, 'POST', v3('/register?kind=guest'), { body: {} });
      expect(refused.status).toBe(403);
      expect(refused.body.errcode).toBe('M_GUEST_ACCESS_FORBIDDEN');
      for (const path of ['/sync?timeout=0', '/account/whoami']) {
        const r = await request(restarted.url, 'GET', v3(path), { token: first.token });
        expect(r.status).toBe(403);
        expect(r.body.errcode).toBe('M_GUEST_ACCESS_FORBIDDEN');
      }
    } finally {
      if (restarted) await restarted.close();
      await other.dropAll();
    }
  });
});
