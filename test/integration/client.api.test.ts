// The rest of the client-server API a Matrix client relies on, over real HTTP against a
// running peekd: accounts and devices, rooms (create, send, state, read, join, leave,
// aliases), authorisation, and bad input — every error with its Matrix status and
// errcode, and nothing written.
import { jetstreamManager } from '@nats-io/jetstream';
import http from 'node:http';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { throughSeq } from '../../src/events/envelope.ts';
import { rowsOf } from '../../src/store/db.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, expectError, request, roomsIn, TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let alice: TestUser;
let n = 0;
const user = (name: string) => TestUser.register(url, `${name}${++n}`);
const v3 = (path: string) => `/_matrix/client/v3${path}`;

beforeAll(async () => {
  hs = await startTestPeekd({
    env: { PEEKD_PEEK_RATE_BURST: '6', PEEKD_PEEK_RATE_PER_SECOND: '2', PEEKD_MAX_PEEKS_PER_DEVICE: '3' },
  });
  url = hs.url;
  alice = await TestUser.register(url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

/** Row counts of every table a client request may write, and the message counts of both streams. */
async function footprint(): Promise<Record<string, number>> {
  // Everything in the log so far, projected by every projection, the audit included (writes
  // answer before their rows exist, and the PEEKS projections commit in groups).
  const out: Record<string, number> = {};
  const jsm = await jetstreamManager(hs.peekd.nc);
  for (const kind of ['rooms', 'peeks'] as const) {
    const { state } = await jsm.streams.info(hs.peekd.naming.streamName(kind));
    out[`stream:${kind}`] = state.messages;
    if (state.last_seq > 0) await hs.peekd.waitForProjections(kind, throughSeq(state.last_seq), 'all');
  }
  for (const t of ['accounts', 'devices', 'access_tokens', 'filters', 'room_aliases', 'syncapi_room_events', 'syncapi_peeks', 'peek_audit']) {
    const [row] = rowsOf<{ n: string | number }>(await hs.peekd.database.db.execute(sql.raw(`select count(*) as n from ${t}`)));
    out[t] = Number(row!.n);
  }
  return out;
}

describe('accounts and devices', () => {
  it('registers with m.login.dummy in one call and the token works as a bearer header and as ?access_token=', async () => {
    const name = `reg${++n}`;
    const r = await request(url, 'POST', v3('/register'), { body: { username: name, password: 'pw-1', auth: { type: 'm.login.dummy' } } });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ user_id: `@${name}:${hs.serverName}`, access_token: expect.any(String), device_id: expect.any(String), home_server: hs.serverName });
    const token: string = r.body.access_token;
    const who = await request(url, 'GET', v3('/account/whoami'), { token });
    expect(who.status).toBe(200);
    expect(who.body).toMatchObject({ user_id: r.body.user_id, device_id: r.body.device_id });
    const viaQuery = await request(url, 'GET', v3(`/account/whoami?access_token=${enc(token)}`));
    expect(viaQuery.status).toBe(200);
    expect(viaQuery.body.user_id).toBe(r.body.user_id);
    const r0 = await request(url, 'GET', `/_matrix/client/r0/account/whoami`, { token });
    expect(r0.status).toBe(200);
  });

  it('a register call without auth answers 401 with the m.login.dummy flow, and the second call completes it', async () => {
    const name = `uia${++n}`;
    const first = await request(url, 'POST', v3('/register'), { body: { username: name, password: 'pw' } });
    expect(first.status).toBe(401);
    expect(first.body.flows).toEqual([{ stages: ['m.login.dummy'] }]);
    expect(typeof first.body.session).toBe('string');
    const second = await request(url, 'POST', v3('/register'), { body: { username: name, password: 'pw', auth: { type: 'm.login.dummy', session: first.body.session } } });
    expect(second.status).toBe(200);
    expect(second.body.user_id).toBe(`@${name}:${hs.serverName}`);
    const wrongStage = await request(url, 'POST', v3('/register'), { body: { username: `${name}x`, password: 'pw', auth: { type: 'm.login.recaptcha' } } });
    expect(wrongStage.status).toBe(401);
    expect(wrongStage.body.flows).toEqual([{ stages: ['m.login.dummy'] }]);
    expect(wrongStage.body.errcode).toMatch(/^M_/);
  });

  it('issues random access tokens of at least 128 bits, stores only their hashes, and hashes passwords with a memory-hard function', async () => {
    const a = await user('tok');
    const b = await a.login();
    const tokens = [a.token, b.token];
    expect(new Set(tokens).size).toBe(2);
    for (const t of tokens) {
      const secret = t.replace(/^[a-z]+_/, '');
      expect(Buffer.from(secret, 'base64url').length).toBeGreaterThanOrEqual(16);
    }
    const stored = rowsOf<{ token_hash: string }>(await hs.peekd.database.db.execute(sql`select token_hash from access_tokens where user_id = ${a.userId}`));
    expect(stored).toHaveLength(2);
    for (const row of stored) expect(tokens).not.toContain(row.token_hash);
    const [acct] = rowsOf<{ password_hash: string }>(await hs.peekd.database.db.execute(sql`select password_hash from accounts where user_id = ${a.userId}`));
    expect(acct!.password_hash).not.toContain('correct horse');
    expect(acct!.password_hash).toMatch(/^(scrypt|argon2)/);
  });

  it('refuses a taken or invalid user name', async () => {
    const taken = await request(url, 'POST', v3('/register'), { body: { username: 'alice', password: 'x', auth: { type: 'm.login.dummy' } } });
    expectError(taken, 400, 'M_USER_IN_USE');
    // A name is taken in lowercase: 'ALICE' is alice, taken.
    expectError(await request(url, 'POST', v3('/register'), { body: { username: 'ALICE', password: 'x', auth: { type: 'm.login.dummy' } } }), 400, 'M_USER_IN_USE');
    for (const username of ['has space', 'a:b', 'x'.repeat(250), 'y'.repeat(300), '']) {
      const before = await footprint();
      const r = await request(url, 'POST', v3('/register'), { body: { username, password: 'x', auth: { type: 'm.login.dummy' } } });
      expectError(r, 400, 'M_INVALID_USERNAME');
      expect(await footprint()).toEqual(before);
    }
  });

  it('registers a requested name with capitals in lowercase', async () => {
    const r = await request(url, 'POST', v3('/register'), { body: { username: 'user-UPPER', password: 'x', auth: { type: 'm.login.dummy' } } });
    expect(r.status).toBe(200);
    expect(r.body.user_id).toBe(`@user-upper:${hs.serverName}`);
  });

  it('logs in with identifier.user as localpart or full user ID, and with the legacy top-level user', async () => {
    const name = `login${++n}`;
    const u = await TestUser.register(url, name, 's3cret');
    const bodies = [
      { type: 'm.login.password', identifier: { type: 'm.id.user', user: name }, password: 's3cret' },
      { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.userId }, password: 's3cret' },
      { type: 'm.login.password', user: name, password: 's3cret' },
      { type: 'm.login.password', user: u.userId, password: 's3cret' },
      { type: 'm.login.password', identifier: { type: 'm.id.user', user: name.toUpperCase() }, password: 's3cret' },
    ];
    const devices = new Set<string>([u.deviceId]);
    for (const body of bodies) {
      const r = await request(url, 'POST', v3('/login'), { body });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ user_id: u.userId, access_token: expect.any(String), device_id: expect.any(String), home_server: hs.serverName });
      devices.add(r.body.device_id);
      const who = await request(url, 'GET', v3('/account/whoami'), { token: r.body.access_token });
      expect(who.body.user_id).toBe(u.userId);
    }
    expect(devices.size).toBe(6);
    const flows = await request(url, 'GET', v3('/login'));
    expect(flows.body.flows).toContainEqual({ type: 'm.login.password' });
  });

  it('403 M_FORBIDDEN for a wrong password or an unknown user; 400 for a missing password or an unknown login type', async () => {
    const u = await user('pw');
    const wrong = await request(url, 'POST', v3('/login'), { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.userId }, password: 'nope' } });
    expectError(wrong, 403, 'M_FORBIDDEN');
    const nobody = await request(url, 'POST', v3('/login'), { body: { type: 'm.login.password', user: 'nobody-here', password: 'x' } });
    expectError(nobody, 403, 'M_FORBIDDEN');
    const missing = await request(url, 'POST', v3('/login'), { body: { type: 'm.login.password', user: u.userId } });
    expect(missing.status).toBe(400);
    const unknownType = await request(url, 'POST', v3('/login'), { body: { type: 'm.login.token', token: 'x' } });
    expect(unknownType.status).toBe(400);
    expect(unknownType.body.errcode).toMatch(/^M_/);
  });

  it('logs a device in again with its device_id: the old token stops working, the device stays the same', async () => {
    const u = await user('relog');
    const r = await request(url, 'POST', v3('/login'), { body: { type: 'm.login.password', user: u.userId, password: 'correct horse', device_id: u.deviceId } });
    expect(r.status).toBe(200);
    expect(r.body.device_id).toBe(u.deviceId);
    expect((await request(url, 'GET', v3('/account/whoami'), { token: r.body.access_token })).body.device_id).toBe(u.deviceId);
    expectError(await u.whoami(), 401, 'M_UNKNOWN_TOKEN');
  });

  it('logout ends only that device: its token gets 401 M_UNKNOWN_TOKEN, the other device goes on', async () => {
    const phone = await user('out');
    const laptop = await phone.login();
    const r = await phone.logout();
    expect(r.status).toBe(200);
    expect(r.body).toEqual({});
    expectError(await phone.whoami(), 401, 'M_UNKNOWN_TOKEN');
    expectError(await phone.req('GET', v3('/sync')), 401, 'M_UNKNOWN_TOKEN');
    expect((await laptop.whoami()).status).toBe(200);
  });

  it('a token logged out while its /peek is still arriving is refused: the rate limit took its key from the token, the auth check still asks the cache', async () => {
    const { room_id: roomId } = await alice.createRoom({ initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }] });
    const peeker = await user('mid');
    expect((await peeker.whoami()).status).toBe(200); // its session now in the token cache, as for any busy client
    const body = '{}';
    const target = new URL(url);
    const req = http.request({
      host: target.hostname,
      port: target.port,
      method: 'POST',
      path: v3(`/peek/${enc(roomId)}`),
      headers: { authorization: `Bearer ${peeker.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    const answer = new Promise<{ status: number; body: any; headers: Headers }>((resolve, reject) => {
      req.on('response', (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(data), headers: new Headers(res.headers as Record<string, string>) }));
      });
      req.on('error', reject);
    });
    // The headers are in (the per-device rate limit keys on the token when they arrive); the body is not.
    req.flushHeaders();
    expect((await peeker.logout()).status).toBe(200);
    req.end(body);
    expectError(await answer, 401, 'M_UNKNOWN_TOKEN');
    // No peek was started: nothing of the device's in the log's projection, once it has caught up.
    await footprint();
    const rows = rowsOf(await hs.peekd.database.db.execute(sql`select room_id from syncapi_peeks where user_id = ${peeker.userId}`));
    expect(rows).toEqual([]);
  });

  it('logout/all ends every device of the user', async () => {
    const a = await user('all');
    const b = await a.login();
    const other = await user('other');
    expect((await a.req('POST', v3('/logout/all'), {})).status).toBe(200);
    expectError(await a.whoami(), 401, 'M_UNKNOWN_TOKEN');
    expectError(await b.whoami(), 401, 'M_UNKNOWN_TOKEN');
    expect((await other.whoami()).status).toBe(200);
  });

  it('401 M_MISSING_TOKEN without a token and M_UNKNOWN_TOKEN with a bad one, on every authenticated endpoint', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const endpoints: [string, string, unknown?][] = [
      ['GET', v3('/account/whoami')],
      ['GET', v3('/sync')],
      ['POST', v3('/createRoom'), {}],
      ['PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/t1`), { msgtype: 'm.text', body: 'x' }],
      ['PUT', v3(`/rooms/${enc(roomId)}/state/m.room.topic/`), { topic: 'x' }],
      ['GET', v3(`/rooms/${enc(roomId)}/messages?dir=b`)],
      ['POST', v3(`/peek/${enc(roomId)}`), {}],
      ['POST', v3(`/rooms/${enc(roomId)}/unpeek`), {}],
      ['POST', v3(`/join/${enc(roomId)}`), {}],
      ['POST', v3('/logout'), {}],
    ];
    const before = await footprint();
    for (const [method, path, body] of endpoints) {
      const none = await request(url, method, path, { body });
      expect({ path, status: none.status, errcode: none.body?.errcode }).toEqual({ path, status: 401, errcode: 'M_MISSING_TOKEN' });
      const bad = await request(url, method, path, { body, token: 'pkd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' });
      expect({ path, status: bad.status, errcode: bad.body?.errcode }).toEqual({ path, status: 401, errcode: 'M_UNKNOWN_TOKEN' });
      const badQuery = await request(url, method, `${path}${path.includes('?') ? '&' : '?'}access_token=nope`, { body });
      expect({ path, status: badQuery.status, errcode: badQuery.body?.errcode }).toEqual({ path, status: 401, errcode: 'M_UNKNOWN_TOKEN' });
    }
    expect(await footprint()).toEqual(before);
  });
});

describe('rooms', () => {
  it('createRoom applies the preset, alias, name, topic and initial_state; the alias resolves in the directory', async () => {
    const alias = `room${++n}`;
    const r = await alice.createRoom({
      preset: 'public_chat',
      room_alias_name: alias,
      name: 'The Room',
      topic: 'Things',
      initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }],
    });
    expect(r.room_id).toMatch(new RegExp(`^!.+:${hs.serverName.replace(/\./g, '\\.')}$`));
    expect(r.room_alias).toBe(`#${alias}:${hs.serverName}`);
    const state: any[] = await alice.ok('GET', v3(`/rooms/${enc(r.room_id)}/state`));
    const content = (type: string) => state.find((e) => e.type === type && e.state_key === '')?.content;
    expect(content('m.room.create')).toMatchObject({ room_version: '10' });
    expect(content('m.room.join_rules')).toEqual({ join_rule: 'public' });
    expect(content('m.room.history_visibility')).toEqual({ history_visibility: 'world_readable' });
    expect(content('m.room.name')).toEqual({ name: 'The Room' });
    expect(content('m.room.topic')).toEqual({ topic: 'Things' });
    expect(content('m.room.canonical_alias')).toEqual({ alias: r.room_alias });
    expect(content('m.room.power_levels').users).toEqual({ [alice.userId]: 100 });
    expect(state.find((e) => e.type === 'm.room.member' && e.state_key === alice.userId)?.content.membership).toBe('join');
    const dir = await request(url, 'GET', v3(`/directory/room/${enc(r.room_alias!)}`));
    expect(dir.status).toBe(200);
    expect(dir.body).toEqual({ room_id: r.room_id, servers: [hs.serverName] });
    const encoded = await request(url, 'GET', `/_matrix/client/v3/directory/room/%23${alias}:${hs.serverName}`);
    expect(encoded.body.room_id).toBe(r.room_id);
    // The alias is taken now.
    const again = await alice.req('POST', v3('/createRoom'), { room_alias_name: alias });
    expectError(again, 400, 'M_ROOM_IN_USE');
    expectError(await request(url, 'GET', v3(`/directory/room/${enc(`#nope${n}:${hs.serverName}`)}`)), 404, 'M_NOT_FOUND');
    expectError(await request(url, 'GET', v3('/directory/room/notanalias')), 400, 'M_INVALID_PARAM');
    // The private_chat preset: invite-only.
    const priv = await alice.createRoom({ preset: 'private_chat' });
    expect(await alice.ok('GET', v3(`/rooms/${enc(priv.room_id)}/state/m.room.join_rules/`))).toEqual({ join_rule: 'invite' });
  });

  it('send is idempotent per device and txnId', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const a = await alice.send(roomId, 'once', 'txn-1');
    const b = await alice.send(roomId, 'once', 'txn-1');
    expect(b).toBe(a);
    const other = await alice.login();
    const c = await other.send(roomId, 'once', 'txn-1');
    expect(c).not.toBe(a);
    const bodies = (await alice.messages(roomId)).filter((e) => e.type === 'm.room.message').map((e) => e.event_id);
    expect(bodies.sort()).toEqual([a, c].sort());
  });

  it('the sending device gets its transaction ID back in unsigned.transaction_id, other devices do not', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const other = await alice.login();
    const eventId = await alice.send(roomId, 'echo', 'txn-echo');
    const mine = (await alice.sync()).rooms.join[roomId].timeline.events.find((e: any) => e.event_id === eventId);
    expect(mine.unsigned.transaction_id).toBe('txn-echo');
    const theirs = (await other.sync()).rooms.join[roomId].timeline.events.find((e: any) => e.event_id === eventId);
    expect(theirs.unsigned.transaction_id).toBeUndefined();
  });

  it('state put and get, with and without a state key; /event/{eventId}', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const slash = await alice.ok('PUT', v3(`/rooms/${enc(roomId)}/state/m.room.topic/`), { topic: 'with slash' });
    expect(slash.event_id).toMatch(/^\$/);
    expect(await alice.ok('GET', v3(`/rooms/${enc(roomId)}/state/m.room.topic`))).toEqual({ topic: 'with slash' });
    await alice.ok('PUT', v3(`/rooms/${enc(roomId)}/state/m.room.topic`), { topic: 'no slash' });
    expect(await alice.ok('GET', v3(`/rooms/${enc(roomId)}/state/m.room.topic/`))).toEqual({ topic: 'no slash' });
    const keyed = await alice.setState(roomId, 'org.example.thing', { v: 1 }, 'some key');
    expect(await alice.ok('GET', v3(`/rooms/${enc(roomId)}/state/org.example.thing/${enc('some key')}`))).toEqual({ v: 1 });
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/state/org.example.missing/`)), 404, 'M_NOT_FOUND');
    const ev = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/event/${enc(keyed)}`));
    expect(ev).toMatchObject({ event_id: keyed, room_id: roomId, type: 'org.example.thing', state_key: 'some key', sender: alice.userId, content: { v: 1 } });
    expectError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/event/${enc('$nope')}`)), 404, 'M_NOT_FOUND');
  });

  it('/messages pages backwards and forwards; non-members read only world_readable rooms', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await alice.send(roomId, `p${i}`));
    const bob = await user('bob');
    const page1 = await bob.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&limit=3`));
    expect(page1.chunk.map((e: any) => e.event_id)).toEqual([ids[4], ids[3], ids[2]]);
    expect(typeof page1.end).toBe('string');
    const page2 = await bob.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&limit=2&from=${enc(page1.end)}`));
    expect(page2.chunk.map((e: any) => e.event_id)).toEqual([ids[1], ids[0]]);
    // Forwards from the start of the room: a member sees m.room.create first; a non-member
    // starts where the room became world_readable (history visibility judged per event).
    const fwdMember = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=f&limit=1&from=t0`));
    expect(fwdMember.chunk[0].type).toBe('m.room.create');
    const fwd = await bob.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=f&limit=1&from=t0`));
    expect(fwd.chunk[0]).toMatchObject({ type: 'm.room.history_visibility', content: { history_visibility: 'world_readable' } });
    // A sync token is a valid pagination token.
    const s = await bob.sync();
    const fromSync = await bob.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&limit=1&from=${enc(s.next_batch)}`));
    expect(fromSync.chunk.map((e: any) => e.event_id)).toEqual([ids[4]]);

    const shared = await alice.createRoom({ preset: 'public_chat' });
    expectError(await bob.req('GET', v3(`/rooms/${enc(shared.room_id)}/messages?dir=b`)), 403, 'M_FORBIDDEN');
    expectError(await bob.req('GET', v3(`/rooms/${enc(shared.room_id)}/state`)), 403, 'M_FORBIDDEN');
    expectError(await bob.req('GET', v3(`/rooms/${enc(shared.room_id)}/state/m.room.create/`)), 403, 'M_FORBIDDEN');
    expect((await alice.req('GET', v3(`/rooms/${enc(shared.room_id)}/messages?dir=b`))).status).toBe(200);
    expectError(await bob.req('GET', v3(`/rooms/${enc(roomId)}/messages?dir=x`)), 400, 'M_INVALID_PARAM');
  });

  it('join and leave a public room; an invite-only room refuses the join; joined users show in sync', async () => {
    const pub = await alice.createRoom({ preset: 'public_chat', room_alias_name: `pub${++n}` });
    const bob = await user('bob');
    const s0 = await bob.sync();
    const j = await bob.join(pub.room_alias!);
    expect(j.status).toBe(200);
    expect(j.body).toEqual({ room_id: pub.room_id });
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'join')).toEqual([pub.room_id]);
    expect((await bob.ok('GET', v3('/joined_rooms'))).joined_rooms).toEqual([pub.room_id]);
    // A joined member may send messages, but not change state that needs power.
    await bob.send(pub.room_id, 'hi from bob');
    expectError(await bob.req('PUT', v3(`/rooms/${enc(pub.room_id)}/state/m.room.name/`), { name: 'mine' }), 403, 'M_FORBIDDEN');
    expectError(await bob.req('PUT', v3(`/rooms/${enc(pub.room_id)}/state/m.room.power_levels/`), { users: { [bob.userId]: 100 } }), 403, 'M_FORBIDDEN');
    const l = await bob.leave(pub.room_id);
    expect(l.status).toBe(200);
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'leave')).toEqual([pub.room_id]);
    expect(roomsIn(s2, 'join')).toEqual([]);
    // After leaving, bob may not send.
    expectError(await bob.req('PUT', v3(`/rooms/${enc(pub.room_id)}/send/m.room.message/t9`), { msgtype: 'm.text', body: 'x' }), 403, 'M_FORBIDDEN');

    const priv = await alice.createRoom({ preset: 'private_chat' });
    const before = await footprint();
    expectError(await bob.join(priv.room_id), 403, 'M_FORBIDDEN');
    expectError(await bob.req('POST', v3(`/rooms/${enc(priv.room_id)}/join`), {}), 403, 'M_FORBIDDEN');
    expect(await footprint()).toEqual(before);
    // Invited, bob may join.
    await alice.ok('POST', v3(`/rooms/${enc(priv.room_id)}/invite`), { user_id: bob.userId });
    expect((await bob.req('POST', v3(`/rooms/${enc(priv.room_id)}/join`), {})).status).toBe(200);
    expectError(await bob.join(`!unknown:${hs.serverName}`), 404, 'M_NOT_FOUND');
  });

  it('only members send, and only users with enough power change state', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const before = await footprint();
    expectError(await bob.req('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/x1`), { msgtype: 'm.text', body: 'intruder' }), 403, 'M_FORBIDDEN');
    expectError(await bob.req('PUT', v3(`/rooms/${enc(roomId)}/state/m.room.topic/`), { topic: 'intruder' }), 403, 'M_FORBIDDEN');
    expectError(await bob.req('PUT', v3(`/rooms/${enc(roomId)}/state/m.room.member/${enc(alice.userId)}`), { membership: 'leave' }), 403, 'M_FORBIDDEN');
    expect(await footprint()).toEqual(before);
  });

  it('aliases: PUT, GET, DELETE in the directory, and /join by alias', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const alias = `#extra${++n}:${hs.serverName}`;
    expect((await alice.req('PUT', v3(`/directory/room/${enc(alias)}`), { room_id: roomId })).status).toBe(200);
    expectError(await alice.req('PUT', v3(`/directory/room/${enc(alias)}`), { room_id: roomId }), 409, 'M_UNKNOWN');
    expect((await request(url, 'GET', v3(`/directory/room/${enc(alias)}`))).body.room_id).toBe(roomId);
    const bob = await user('bob');
    expect((await bob.peek(alias)).status).toBe(200);
    expect((await alice.req('DELETE', v3(`/directory/room/${enc(alias)}`))).status).toBe(200);
    expectError(await request(url, 'GET', v3(`/directory/room/${enc(alias)}`)), 404, 'M_NOT_FOUND');
  });
});

describe('what clients ask for at start-up', () => {
  it('versions, capabilities, push rules, filters', async () => {
    const versions = await request(url, 'GET', '/_matrix/client/versions');
    expect(versions.status).toBe(200);
    expect(versions.body.versions).toEqual(expect.arrayContaining(['r0.6.1', 'v1.1']));
    const caps = await alice.ok('GET', v3('/capabilities'));
    expect(caps.capabilities['m.room_versions'].default).toBe('10');
    const rules = await alice.ok('GET', v3('/pushrules/'));
    expect(rules.global).toBeDefined();
    const f = await alice.ok('POST', v3(`/user/${enc(alice.userId)}/filter`), { room: { timeline: { limit: 5 } } });
    expect(typeof f.filter_id).toBe('string');
    expect(await alice.ok('GET', v3(`/user/${enc(alice.userId)}/filter/${f.filter_id}`))).toEqual({ room: { timeline: { limit: 5 } } });
    const bob = await user('bob');
    expectError(await bob.req('GET', v3(`/user/${enc(alice.userId)}/filter/${f.filter_id}`)), 403, 'M_FORBIDDEN');
    expectError(await bob.req('POST', v3(`/user/${enc(alice.userId)}/filter`), {}), 403, 'M_FORBIDDEN');
    expectError(await alice.req('GET', v3(`/user/${enc(alice.userId)}/filter/999999999999`)), 404, 'M_NOT_FOUND');
    expectError(await alice.req('POST', v3(`/user/${enc(alice.userId)}/filter`), { room: { timeline: { limit: 'ten' } } }), 400, 'M_BAD_JSON');
  });

  it('unknown endpoints answer 404 M_UNRECOGNIZED in JSON', async () => {
    expectError(await alice.req('GET', v3('/no/such/endpoint')), 404, 'M_UNRECOGNIZED');
  });
});

describe('bad input gets the right Matrix error and writes nothing', () => {
  it('malformed JSON is 400 M_NOT_JSON', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const before = await footprint();
    const cases: [string, string][] = [
      ['POST', v3('/createRoom')],
      ['PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/bad1`)],
      ['PUT', v3(`/rooms/${enc(roomId)}/state/m.room.topic/`)],
      ['POST', v3(`/peek/${enc(roomId)}`)],
      ['POST', v3(`/user/${enc(alice.userId)}/filter`)],
    ];
    for (const [method, path] of cases) {
      for (const rawBody of ['{"msgtype": "m.text", "body": ', 'not json at all', '{"a":1}}']) {
        const r = await request(url, method, path, { token: alice.token, rawBody });
        expect({ path, rawBody, status: r.status, errcode: r.body?.errcode }).toEqual({ path, rawBody, status: 400, errcode: 'M_NOT_JSON' });
      }
    }
    const reg = await request(url, 'POST', v3('/register'), { rawBody: '{"username": "x' });
    expectError(reg, 400, 'M_NOT_JSON');
    const login = await request(url, 'POST', v3('/login'), { rawBody: '{' });
    expectError(login, 400, 'M_NOT_JSON');
    expect(await footprint()).toEqual(before);
  });

  it('valid JSON of the wrong shape is 400 M_BAD_JSON', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const before = await footprint();
    const cases: [string, string, string][] = [
      ['POST', v3('/createRoom'), '{"name": 5}'],
      ['POST', v3('/createRoom'), '{"initial_state": {"type": "x"}}'],
      ['POST', v3('/createRoom'), '{"preset": "everyone_in"}'],
      ['POST', v3('/createRoom'), '[]'],
      ['PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/bad2`), '"just a string"'],
      ['PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/bad3`), '[1,2]'],
      ['POST', v3(`/peek/${enc(roomId)}`), '{"servers": "example.org"}'],
      ['POST', v3(`/peek/${enc(roomId)}`), '{"servers": [1]}'],
      ['POST', v3('/login'), '{"type": "m.login.password", "user": 5, "password": "x"}'],
    ];
    for (const [method, path, rawBody] of cases) {
      const r = await request(url, method, path, { token: alice.token, rawBody });
      expect({ path, rawBody, status: r.status, errcode: r.body?.errcode }).toEqual({ path, rawBody, status: 400, errcode: 'M_BAD_JSON' });
    }
    const reg = await request(url, 'POST', v3('/register'), { body: { username: 7, password: 'x', auth: { type: 'm.login.dummy' } } });
    expectError(reg, 400, 'M_BAD_JSON');
    expect(await footprint()).toEqual(before);
  });

  // `null` is valid JSON of the wrong shape: M_BAD_JSON, unlike a missing body (M_NOT_JSON).
  it('a JSON null body is 400 M_BAD_JSON (not M_NOT_JSON)', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const r = await request(url, 'PUT', v3(`/rooms/${enc(roomId)}/state/m.room.topic/`), { token: alice.token, rawBody: 'null' });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe('M_BAD_JSON');
  });

  it('a U+0000 character in content is 400 M_BAD_JSON and nothing is written (Postgres cannot store it)', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const before = await footprint();
    const r = await request(url, 'PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/nul`), { token: alice.token, body: { msgtype: 'm.text', body: 'a\u0000b' } });
    expectError(r, 400, 'M_BAD_JSON');
    expect(await footprint()).toEqual(before);
    // The room goes on working: the projection was never given an event it cannot store.
    expect(typeof (await alice.send(roomId, 'after'))).toBe('string');
  });

  it('a body over the limit is 413 M_TOO_LARGE', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const before = await footprint();
    const big = JSON.stringify({ msgtype: 'm.text', body: 'x'.repeat(hs.peekd.config.maxClientBodyBytes + 10) });
    const send = await request(url, 'PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/big`), { token: alice.token, rawBody: big });
    expectError(send, 413, 'M_TOO_LARGE');
    const create = await request(url, 'POST', v3('/createRoom'), { token: alice.token, rawBody: big });
    expectError(create, 413, 'M_TOO_LARGE');
    const reg = await request(url, 'POST', v3('/register'), { rawBody: big });
    expectError(reg, 413, 'M_TOO_LARGE');
    expect(await footprint()).toEqual(before);
  });

  it('malformed room and user IDs are 400 M_INVALID_PARAM', async () => {
    const long = `!${'r'.repeat(256)}:${hs.serverName}`;
    const cases: [string, string, unknown?][] = [
      ['PUT', v3('/rooms/notaroom/send/m.room.message/t1'), { msgtype: 'm.text', body: 'x' }],
      ['PUT', v3(`/rooms/${enc(long)}/send/m.room.message/t1`), { msgtype: 'm.text', body: 'x' }],
      ['PUT', v3('/rooms/notaroom/state/m.room.topic/'), { topic: 'x' }],
      ['GET', v3('/rooms/notaroom/state')],
      ['GET', v3('/rooms/notaroom/messages?dir=b')],
      ['POST', v3('/join/notaroom'), {}],
      ['POST', v3(`/join/${enc(long)}`), {}],
      ['POST', v3('/rooms/notaroom/leave'), {}],
      ['POST', v3('/rooms/notaroom/unpeek'), {}],
      ['POST', v3(`/peek/${enc(long)}`), {}],
      ['POST', v3(`/peek/${enc(`#${'a'.repeat(256)}:${hs.serverName}`)}`), {}],
      ['POST', v3(`/peek/${enc(`!abc:${hs.serverName}`)}`), { servers: ['not a server'] }],
      ['POST', v3('/createRoom'), { invite: ['not-a-user'] }],
      ['POST', v3('/createRoom'), { room_alias_name: 'has space' }],
    ];
    // A fresh device: /peek is rate-limited per device, and alice's has peeked a lot already.
    const dave = await alice.login();
    const before = await footprint();
    for (const [method, path, body] of cases) {
      const r = await dave.req(method, path, body);
      expect({ path, status: r.status, errcode: r.body?.errcode }).toEqual({ path, status: 400, errcode: 'M_INVALID_PARAM' });
    }
    expect(await footprint()).toEqual(before);
  });

  it('unknown since tokens are refused, and a bad timeout or filter too', async () => {
    expect((await alice.req('GET', v3('/sync?since=garbage'))).status).toBe(400);
    expect((await alice.req('GET', v3('/sync?timeout=soon'))).status).toBe(400);
    expect((await alice.req('GET', v3(`/sync?filter=${enc('{"room":')}`))).status).toBe(400);
    expect((await alice.req('GET', v3(`/sync?filter=${enc('{"room":{"timeline":{"limit":"x"}}}')}`))).status).toBe(400);
  });
});

describe('limits on /peek', () => {
  it('rate-limits /peek per device with 429 M_LIMIT_EXCEEDED and retry_after_ms; other devices are not limited', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const statuses: number[] = [];
    let limited: any;
    for (let i = 0; i < 10 && !limited; i++) {
      const r = await bob.peek(roomId);
      statuses.push(r.status);
      if (r.status === 429) limited = r;
    }
    expect(limited).toBeDefined();
    expectError(limited, 429, 'M_LIMIT_EXCEEDED');
    expect(limited.body.retry_after_ms).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(6);
    // One budget per device, whichever prefix the request comes by.
    for (const prefix of ['/_matrix/client/r0', '/_matrix/client/unstable/org.matrix.msc2753']) {
      expectError(await bob.req('POST', `${prefix}/peek/${encodeURIComponent(roomId)}`, {}), 429, 'M_LIMIT_EXCEEDED');
    }
    const laptop = await bob.login();
    expect((await laptop.peek(roomId)).status).toBe(200);
    const carol = await user('carol');
    expect((await carol.peek(roomId)).status).toBe(200);
  });

  it('caps the number of live peeks per device (429 M_LIMIT_EXCEEDED), renewals still pass, and an unpeek frees a place', async () => {
    const rooms = [];
    for (let i = 0; i < 4; i++) rooms.push((await alice.createWorldReadableRoom()).room_id);
    const bob = await user('bob');
    for (const r of rooms.slice(0, 3)) expect((await bob.peek(r)).status).toBe(200);
    const before = await footprint();
    const over = await bob.peek(rooms[3]!);
    expectError(over, 429, 'M_LIMIT_EXCEEDED');
    expect(over.body.retry_after_ms).toBeGreaterThan(0);
    expect(await footprint()).toEqual(before);
    expect((await bob.peek(rooms[0]!)).status).toBe(200);
    expect((await bob.unpeek(rooms[1]!)).status).toBe(200);
    expect((await bob.peek(rooms[3]!)).status).toBe(200);
    expect(roomsIn(await bob.sync(), 'peek').sort()).toEqual([rooms[0], rooms[2], rooms[3]].sort());
  });
});
