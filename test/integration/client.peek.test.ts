// MSC2753 peeking as a Matrix client sees it, over real HTTP against a running peekd
// (real NATS JetStream, real Postgres): /peek, /unpeek and the peek, join and leave
// sections of /sync, exactly as MATRIX.md describes them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { audit, auditUntil, enc, request, roomsIn, TestUser, timelineOf } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

const ADMIN = 'admin-secret-peek-tests';
let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let alice: TestUser;
let n = 0;

/** A fresh user (every test gets its own, so nothing leaks between tests). */
const user = (name: string) => TestUser.register(url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: ADMIN } });
  url = hs.url;
  alice = await TestUser.register(url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

/** A world_readable room with one message, and a peeker who synced once before peeking. */
async function peekedRoom(extra: Record<string, unknown> = {}) {
  const room = await alice.createWorldReadableRoom(extra);
  await alice.send(room.room_id, 'hello');
  const bob = await user('bob');
  const s0 = await bob.sync();
  const p = await bob.peek(room.room_id);
  expect(p.status).toBe(200);
  const s1 = await bob.sync({ since: s0.next_batch });
  expect(roomsIn(s1, 'peek')).toEqual([room.room_id]);
  return { roomId: room.room_id, alias: room.room_alias, bob, since: s1.next_batch as string };
}

describe('POST /peek by room ID, then /sync', () => {
  it('answers room_id and peek_expiry_ts, and the next sync shows the whole room like a new join', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom({ name: 'Peekable', topic: 'about peeking' });
    const helloId = await alice.send(roomId, 'hello');
    const bob = await user('bob');
    const s0 = await bob.sync();
    expect(roomsIn(s0, 'peek')).toEqual([]);

    const before = Date.now();
    const p = await bob.peek(roomId);
    const after = Date.now();
    expect(p.status).toBe(200);
    expect(p.headers.get('content-type')).toMatch(/^application\/json/);
    expect(p.body.room_id).toBe(roomId);
    expect(p.body.peek_expiry_ts).toBeGreaterThanOrEqual(before + hs.peekd.config.peekLifetimeMs);
    expect(p.body.peek_expiry_ts).toBeLessThanOrEqual(after + hs.peekd.config.peekLifetimeMs);

    // Read your writes: the very next sync shows the room.
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'peek')).toEqual([roomId]);
    expect(roomsIn(s1, 'join')).toEqual([]);
    expect(roomsIn(s1, 'leave')).toEqual([]);
    const section = s1.rooms.peek[roomId];
    expect(Object.keys(section)).toEqual(expect.arrayContaining(['state', 'timeline', 'ephemeral', 'account_data']));
    // Like a new join: the whole history fits, so the timeline starts at m.room.create
    // (sent before the room was world_readable: state is shown to a peeker whatever the
    // visibility it was sent under) and the state section is empty.
    expect(section.state.events).toEqual([]);
    const tl = section.timeline.events;
    expect(tl[0]).toMatchObject({ type: 'm.room.create' });
    expect(tl.map((e: any) => e.type)).toEqual(expect.arrayContaining(['m.room.member', 'm.room.power_levels', 'm.room.join_rules']));
    expect(tl.at(-1)).toMatchObject({ type: 'm.room.message', event_id: helloId, sender: alice.userId, content: { body: 'hello' } });
    expect(tl.map((e: any) => e.type)).toEqual(expect.arrayContaining(['m.room.history_visibility', 'm.room.name', 'm.room.topic']));
    expect(section.timeline.limited).toBe(false);
    expect(typeof section.timeline.prev_batch).toBe('string');
    for (const e of tl) {
      expect(e.event_id).toMatch(/^\$/);
      expect(e).not.toHaveProperty('room_id');
      expect(typeof e.origin_server_ts).toBe('number');
    }

    // Unchanged: the next incremental sync omits the room.
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'peek')).toEqual([]);
    expect(roomsIn(s2, 'leave')).toEqual([]);

    // A new message: the room is back with just that message.
    const byeId = await alice.send(roomId, 'second');
    const s3 = await bob.sync({ since: s2.next_batch });
    expect(roomsIn(s3, 'peek')).toEqual([roomId]);
    expect(s3.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([byeId]);
    expect(s3.rooms.peek[roomId].state.events).toEqual([]);
    expect(s3.rooms.peek[roomId].timeline.limited).toBe(false);
  });

  it('a room made world_readable after it began: the peek still starts at m.room.create, without what was said before (sytest 31sync/17peeking)', async () => {
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat', name: 'Opened later' });
    const secret = await alice.send(roomId, 'said while the history was shared');
    const opened = await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'world_readable' });
    const bob = await user('bob');
    const s0 = await bob.sync();
    expect((await bob.peek(roomId)).status).toBe(200);
    const said = await alice.send(roomId, 'something to peek');
    // The first sync that shows the peek, taken from the same token until it holds Alice's message.
    let section: any;
    await until('the peek with the message', async () => {
      const body = await bob.sync({ since: s0.next_batch });
      expect(roomsIn(body, 'join')).toEqual([]);
      section = body.rooms.peek[roomId];
      return (section?.timeline.events ?? []).some((e: any) => e.event_id === said);
    });
    const tl = section.timeline.events;
    expect(tl[0].type).toBe('m.room.create');
    expect(tl.at(-1)).toMatchObject({ event_id: said, type: 'm.room.message', content: { body: 'something to peek' } });
    expect(section.state.events).toEqual([]);
    // The state events still in force, wherever they fall (the room's name among them); not
    // the `shared` visibility since replaced, nor the message sent under it.
    const ids = tl.map((e: any) => e.event_id);
    expect(ids).toContain(opened);
    expect(ids).not.toContain(secret);
    expect(tl.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body)).toEqual(['something to peek']);
    expect(tl.map((e: any) => e.type)).toEqual(expect.arrayContaining(['m.room.member', 'm.room.power_levels', 'm.room.join_rules', 'm.room.name']));
    expect(tl.filter((e: any) => e.type === 'm.room.history_visibility').map((e: any) => e.content.history_visibility)).toEqual(['world_readable']);
    // Paging back from the timeline finds nothing more.
    const older = await bob.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=10&from=${enc(section.timeline.prev_batch)}`);
    expect(older.chunk).toEqual([]);
  });

  it('shows the room on the first sync after /peek even without a since token, and that sync does not end the peek', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    expect((await bob.peek(roomId)).status).toBe(200);
    const s0 = await bob.sync();
    expect(roomsIn(s0, 'peek')).toEqual([roomId]);
    expect(s0.rooms.peek[roomId].timeline.events[0].type).toBe('m.room.create');
    const id = await alice.send(roomId, 'after an initial sync');
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'peek')).toEqual([roomId]);
    expect(s1.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([id]);
    expect(roomsIn(s1, 'leave')).toEqual([]);
  });

  it('wakes a long-polling peeker within milliseconds of a new message', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const poll = bob.sync({ since, timeout: 20_000 });
    // Let the long-poll reach the server and settle into its wait.
    await new Promise((r) => setTimeout(r, 150));
    const start = Date.now();
    const id = await alice.send(roomId, 'wake up');
    const body = await poll;
    const elapsed = Date.now() - start;
    expect(roomsIn(body, 'peek')).toEqual([roomId]);
    expect(body.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([id]);
    expect(elapsed).toBeLessThan(1_000);
  });

  it('wakes a device that was already long-polling when it starts a peek', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const s0 = await bob.sync();
    const poll = bob.sync({ since: s0.next_batch, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 150));
    const start = Date.now();
    expect((await bob.peek(roomId)).status).toBe(200);
    const body = await poll;
    expect(Date.now() - start).toBeLessThan(1_000);
    expect(roomsIn(body, 'peek')).toEqual([roomId]);
    expect(body.rooms.peek[roomId].timeline.events[0].type).toBe('m.room.create');
  });

  it('waits out the timeout when nothing happens in the peeked room', async () => {
    const { bob, since } = await peekedRoom();
    const start = Date.now();
    const body = await bob.sync({ since, timeout: 400 });
    expect(Date.now() - start).toBeGreaterThanOrEqual(380);
    expect(roomsIn(body, 'peek')).toEqual([]);
  });

  it('renews a live peek when /peek is called again, returning a later expiry and not re-sending the room', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const first = await bob.peek(roomId);
    await new Promise((r) => setTimeout(r, 20));
    const second = await bob.peek(roomId);
    expect(second.status).toBe(200);
    expect(second.body.room_id).toBe(roomId);
    expect(second.body.peek_expiry_ts).toBeGreaterThan(first.body.peek_expiry_ts);
    const s = await bob.sync({ since });
    expect(roomsIn(s, 'peek')).toEqual([]);
    expect(roomsIn(s, 'leave')).toEqual([]);
  });

  it('with a filter limiting the timeline, gives the latest events and the state before them', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom({ name: 'Filtered' });
    for (let i = 0; i < 4; i++) await alice.send(roomId, `m${i}`);
    const bob = await user('bob');
    expect((await bob.peek(roomId)).status).toBe(200);
    const { filter_id } = await bob.ok('POST', `/_matrix/client/v3/user/${enc(bob.userId)}/filter`, { room: { timeline: { limit: 2 } } });
    const byId = await bob.sync({ filter: filter_id });
    const inline = await bob.sync({ filter: JSON.stringify({ room: { timeline: { limit: 2 } } }) });
    for (const s of [byId, inline]) {
      const section = s.rooms.peek[roomId];
      expect(timelineOf(section)).toEqual([
        { type: 'm.room.message', body: 'm2' },
        { type: 'm.room.message', body: 'm3' },
      ]);
      expect(section.timeline.limited).toBe(true);
      const state = section.state.events.map((e: any) => e.type);
      expect(state).toEqual(expect.arrayContaining(['m.room.create', 'm.room.power_levels', 'm.room.history_visibility', 'm.room.name', 'm.room.member']));
    }
    // prev_batch pages back through /messages to the start of the room, as the peeker.
    const older = await bob.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=3&from=${enc(byId.rooms.peek[roomId].timeline.prev_batch)}`);
    expect(older.chunk.map((e: any) => e.content?.body ?? e.type)).toEqual(['m1', 'm0', 'm.room.name']);
    // The stored filter can be read back.
    const got = await bob.ok('GET', `/_matrix/client/v3/user/${enc(bob.userId)}/filter/${filter_id}`);
    expect(got).toEqual({ room: { timeline: { limit: 2 } } });
  });

  it('full_state=true re-sends the peeked room state on an incremental sync', async () => {
    const { roomId, bob, since } = await peekedRoom({ name: 'Full state' });
    const s = await bob.sync({ since, full_state: true });
    expect(roomsIn(s, 'peek')).toEqual([roomId]);
    const types = s.rooms.peek[roomId].state.events.map((e: any) => e.type);
    expect(types).toEqual(expect.arrayContaining(['m.room.create', 'm.room.name', 'm.room.history_visibility']));
    expect(s.rooms.peek[roomId].timeline.events).toEqual([]);
  });

  it('answers under the r0 and the unstable msc2753 prefixes too', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const r0 = await request(url, 'POST', `/_matrix/client/r0/peek/${enc(roomId)}`, { token: bob.token, body: {} });
    expect(r0.status).toBe(200);
    expect(r0.body.room_id).toBe(roomId);
    const unstable = await request(url, 'POST', `/_matrix/client/unstable/org.matrix.msc2753/rooms/${enc(roomId)}/unpeek`, { token: bob.token, body: {} });
    expect(unstable.status).toBe(200);
    expect(unstable.body).toEqual({});
    const again = await request(url, 'POST', `/_matrix/client/unstable/org.matrix.msc2753/peek/${enc(roomId)}`, { token: bob.token });
    expect(again.status).toBe(200);
  });
});

describe('POST /peek by alias', () => {
  it('resolves a percent-encoded alias (%23) and shows the room', async () => {
    const name = `lobby${++n}`;
    const room = await alice.createWorldReadableRoom({ room_alias_name: name });
    expect(room.room_alias).toBe(`#${name}:${hs.serverName}`);
    const bob = await user('bob');
    const s0 = await bob.sync();
    const raw = `/_matrix/client/v3/peek/%23${name}:${hs.serverName}`;
    const p = await request(url, 'POST', raw, { token: bob.token, body: {} });
    expect(p.status).toBe(200);
    expect(p.body.room_id).toBe(room.room_id);
    expect(typeof p.body.peek_expiry_ts).toBe('number');
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'peek')).toEqual([room.room_id]);
  });

  it('accepts servers in the body and as ?server_name= (older draft), with no body at all', async () => {
    const room = await alice.createWorldReadableRoom({ room_alias_name: `plaza${++n}` });
    const bob = await user('bob');
    const withBody = await bob.peek(room.room_alias!, { servers: [hs.serverName] });
    expect(withBody.status).toBe(200);
    expect(withBody.body.room_id).toBe(room.room_id);
    const bob2 = await user('bob');
    const withQuery = await request(url, 'POST', `/_matrix/client/v3/peek/${enc(room.room_alias!)}?server_name=${enc(hs.serverName)}&server_name=other.example`, { token: bob2.token });
    expect(withQuery.status).toBe(200);
    expect(withQuery.body.room_id).toBe(room.room_id);
  });
});

describe('POST /peek errors', () => {
  it.each([
    ['shared', 'shared'],
    ['invited', 'invited'],
    ['joined', 'joined'],
  ])('403 M_FORBIDDEN when history visibility is %s, and nothing is peeked', async (_name, visibility) => {
    const { room_id: roomId } = await alice.createRoom({
      preset: 'public_chat',
      initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: visibility } }],
    });
    const bob = await user('bob');
    const s0 = await bob.sync();
    const r = await bob.peek(roomId);
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe('M_FORBIDDEN');
    expect(typeof r.body.error).toBe('string');
    await alice.send(roomId, 'not for bob');
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'peek')).toEqual([]);
    expect(await audit(url, ADMIN, { room_id: roomId })).toEqual([]);
  });

  it('403 M_FORBIDDEN for an encrypted world_readable room', async () => {
    const { room_id: roomId } = await alice.createRoom({
      preset: 'public_chat',
      initial_state: [
        { type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } },
        { type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } },
      ],
    });
    const bob = await user('bob');
    const r = await bob.peek(roomId);
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe('M_FORBIDDEN');
  });

  it('join rules do not matter: an invite-only world_readable room can be peeked', async () => {
    const { room_id: roomId } = await alice.createRoom({
      preset: 'private_chat',
      initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }],
    });
    const bob = await user('bob');
    expect((await bob.peek(roomId)).status).toBe(200);
    expect(roomsIn(await bob.sync(), 'peek')).toEqual([roomId]);
  });

  it('404 M_NOT_FOUND for an unknown room and an unknown alias', async () => {
    const bob = await user('bob');
    const room = await bob.peek(`!doesnotexist:${hs.serverName}`);
    expect(room.status).toBe(404);
    expect(room.body.errcode).toBe('M_NOT_FOUND');
    const alias = await request(url, 'POST', `/_matrix/client/v3/peek/%23nosuchalias:${hs.serverName}`, { token: bob.token, body: {} });
    expect(alias.status).toBe(404);
    expect(alias.body.errcode).toBe('M_NOT_FOUND');
    expect(roomsIn(await bob.sync(), 'peek')).toEqual([]);
  });

  it('400 M_INVALID_PARAM for malformed room IDs and aliases', async () => {
    const bob = await user('bob');
    for (const bad of ['notaroom', '!nocolon', '#nocolon', `!${'x'.repeat(260)}:${hs.serverName}`, `#${'y'.repeat(260)}:${hs.serverName}`, '!a:bad server']) {
      const r = await bob.peek(bad);
      expect({ bad, status: r.status, errcode: r.body?.errcode }).toEqual({ bad, status: 400, errcode: 'M_INVALID_PARAM' });
    }
  });

  it('400 M_BAD_STATE when the user is joined to the room', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const r = await alice.peek(roomId);
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe('M_BAD_STATE');
  });

  it('400 M_BAD_STATE for /unpeek of a room the device is not peeking, and 400 M_INVALID_PARAM for a malformed one', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const r = await bob.unpeek(roomId);
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe('M_BAD_STATE');
    const bad = await bob.unpeek('garbage');
    expect(bad.status).toBe(400);
    expect(bad.body.errcode).toBe('M_INVALID_PARAM');
  });

  it('401 without or with an unknown access token', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const none = await request(url, 'POST', `/_matrix/client/v3/peek/${enc(roomId)}`, { body: {} });
    expect(none.status).toBe(401);
    expect(none.body.errcode).toBe('M_MISSING_TOKEN');
    const unknown = await request(url, 'POST', `/_matrix/client/v3/peek/${enc(roomId)}`, { body: {}, token: 'pkd_not-a-real-token' });
    expect(unknown.status).toBe(401);
    expect(unknown.body.errcode).toBe('M_UNKNOWN_TOKEN');
    expect(await audit(url, ADMIN, { room_id: roomId })).toEqual([]);
  });
});

describe('per-device peeks', () => {
  it('a second device of the same user never sees rooms.peek', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const phone = await user('bob');
    const laptop = await phone.login();
    expect(laptop.deviceId).not.toBe(phone.deviceId);
    const l0 = await laptop.sync();
    expect((await phone.peek(roomId)).status).toBe(200);
    // The laptop long-polls: a message in the room the phone peeks must not reach it.
    const poll = laptop.sync({ since: l0.next_batch, timeout: 1_000 });
    await alice.send(roomId, 'for the phone only');
    const l1 = await poll;
    expect(roomsIn(l1, 'peek')).toEqual([]);
    const l2 = await laptop.sync();
    expect(roomsIn(l2, 'peek')).toEqual([]);
    const p = await phone.sync();
    expect(roomsIn(p, 'peek')).toEqual([roomId]);
    // The laptop is not peeking: its /unpeek is refused and the phone's peek goes on.
    expect((await laptop.unpeek(roomId)).body.errcode).toBe('M_BAD_STATE');
    const id = await alice.send(roomId, 'still peeking');
    const p2 = await phone.sync({ since: p.next_batch });
    expect(p2.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([id]);
  });
});

describe('ending a peek', () => {
  it('unpeek: the next sync lists the room once under leave ({} with nothing unseen), and never again under peek', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const u = await bob.unpeek(roomId);
    expect(u.status).toBe(200);
    expect(u.body).toEqual({});
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([roomId]);
    expect(roomsIn(s1, 'peek')).toEqual([]);
    expect(s1.rooms.leave[roomId]).toEqual({});
    await alice.send(roomId, 'after the unpeek');
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'leave')).toEqual([]);
    expect(roomsIn(s2, 'peek')).toEqual([]);
    // Unpeeking again is a bad state.
    expect((await bob.unpeek(roomId)).body.errcode).toBe('M_BAD_STATE');
    // The audit shows what this server answered, without polling.
    const a = await audit(url, ADMIN, { room_id: roomId, user_id: bob.userId });
    expect(a.map((e) => [e.event, e.reason])).toEqual([
      ['PeekStarted', undefined],
      ['PeekExpired', 'unpeeked'],
    ]);
  });

  it('the admin audit shows every peek and unpeek the server answered 200 to, at once, however fast they came', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    // Faster than the PEEKS projections' group commit: the later events would still be
    // lingering in memory if the audit read the table without hurrying it.
    for (let i = 0; i < 3; i++) {
      expect((await bob.peek(roomId)).status).toBe(200);
      expect((await bob.unpeek(roomId)).status).toBe(200);
    }
    const entries = await audit(url, ADMIN, { room_id: roomId, user_id: bob.userId });
    expect(entries.map((e) => [e.event, e.device_id, e.reason])).toEqual(
      Array.from({ length: 3 }, () => [
        ['PeekStarted', bob.deviceId, undefined],
        ['PeekExpired', bob.deviceId, 'unpeeked'],
      ]).flat(),
    );
  });

  it('the admin audit answers at once, with what is committed, while the audit projection is stopped', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const runner = hs.peekd.projections.get('audit')!;
    await runner.stop();
    try {
      expect((await bob.peek(roomId)).status).toBe(200);
      const started = Date.now();
      const r = await request(url, 'GET', `/_peekd/admin/v1/audit?${new URLSearchParams({ room_id: roomId })}`, { token: ADMIN });
      expect(r.status).toBe(200);
      expect(r.body.events).toEqual([]);
      // It waited at most AUDIT_SETTLE_MS (1 s), not PEEKD_PROJECTION_WAIT_MS (10 s).
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await runner.start();
    }
    expect((await audit(url, ADMIN, { room_id: roomId })).map((e) => e.event)).toEqual(['PeekStarted']);
  });

  it('unpeek: the leave entry carries the events the device had not seen yet', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const unseen = await alice.send(roomId, 'unseen');
    expect((await bob.unpeek(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([roomId]);
    expect(roomsIn(s1, 'peek')).toEqual([]);
    expect(s1.rooms.leave[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([unseen]);
  });

  it('a peek that began and ended between two syncs still ends under leave, with the room up to its end', async () => {
    const room = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const s0 = await bob.sync();
    expect((await bob.peek(room.room_id)).status).toBe(200);
    const during = await alice.send(room.room_id, 'while peeking');
    expect((await bob.unpeek(room.room_id)).status).toBe(200);
    const after = await alice.send(room.room_id, 'after the unpeek');
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'leave')).toEqual([room.room_id]);
    expect(roomsIn(s1, 'peek')).toEqual([]);
    const left = s1.rooms.leave[room.room_id];
    const ids = left.timeline.events.map((e: any) => e.event_id);
    expect(ids.at(-1)).toBe(during);
    expect(ids).not.toContain(after);
    // The device never had the room: its start comes too, in the timeline or the state.
    expect([...left.state.events, ...left.timeline.events].map((e: any) => e.type)).toContain('m.room.create');
    // And only once.
    const s2 = await bob.sync({ since: s1.next_batch, timeout: 0 });
    expect(roomsIn(s2, 'leave')).toEqual([]);
  });

  it('unpeek after a gap: the leave entry is limited and its state has what changed in the gap', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const topic = await alice.setState(roomId, 'm.room.topic', { topic: 'changed in the gap' });
    for (let i = 0; i < 25; i++) await alice.send(roomId, `filler ${i}`);
    expect((await bob.unpeek(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    const left = s1.rooms.leave[roomId];
    expect(left.timeline.limited).toBe(true);
    expect(left.timeline.events.map((e: any) => e.event_id)).not.toContain(topic);
    expect(left.state.events.map((e: any) => [e.type, e.event_id])).toEqual([['m.room.topic', topic]]);
  });

  it('unpeek: the leave entry stops where the peek ended; later events are not delivered', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const seen = await alice.send(roomId, 'while peeking');
    expect((await bob.unpeek(roomId)).status).toBe(200);
    await alice.send(roomId, 'after the unpeek');
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([roomId]);
    expect(s1.rooms.leave[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([seen]);
  });

  it('visibility change followed by many private messages: the leave entry never carries events from after the change', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const hv = await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'joined' });
    for (let i = 0; i < 25; i++) await alice.send(roomId, `secret ${i}`);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([roomId]);
    expect(JSON.stringify(s1)).not.toContain('secret');
    expect(s1.rooms.leave[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([hv]);
    // Nor with a bigger timeline limit.
    const big = await bob.sync({ since, filter: JSON.stringify({ room: { timeline: { limit: 100 } } }) });
    expect(JSON.stringify(big)).not.toContain('secret');
  });

  it('wakes a long-polling device when its peek ends', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const other = await bob.login();
    const poll = bob.sync({ since, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 150));
    const start = Date.now();
    expect((await bob.unpeek(roomId)).status).toBe(200);
    const body = await poll;
    expect(Date.now() - start).toBeLessThan(1_000);
    expect(roomsIn(body, 'leave')).toEqual([roomId]);
    expect(roomsIn(await other.sync(), 'leave')).toEqual([]);
  });

  it('peek, unpeek, peek again: the room comes back under peek as a whole, not under leave', async () => {
    const { roomId, bob, since } = await peekedRoom();
    expect((await bob.unpeek(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([roomId]);
    const again = await bob.peek(roomId);
    expect(again.status).toBe(200);
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'peek')).toEqual([roomId]);
    expect(roomsIn(s2, 'leave')).toEqual([]);
    expect(s2.rooms.peek[roomId].timeline.events[0].type).toBe('m.room.create');
    expect(s2.rooms.peek[roomId].state.events).toEqual([]);
    // And it is live: new messages arrive.
    const id = await alice.send(roomId, 'welcome back');
    const s3 = await bob.sync({ since: s2.next_batch });
    expect(s3.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([id]);
  });

  it('peek, unpeek, peek again without a sync in between: the room stays under peek', async () => {
    const { roomId, bob, since } = await peekedRoom();
    expect((await bob.unpeek(roomId)).status).toBe(200);
    expect((await bob.peek(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([]);
    expect(roomsIn(s1, 'peek')).toEqual([roomId]);
    const id = await alice.send(roomId, 'still here');
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'peek')).toEqual([roomId]);
    expect(s2.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([id]);
  });

  it('logout ends the device’s peeks (device_removed) and nothing else', async () => {
    const r1 = (await alice.createWorldReadableRoom()).room_id;
    const r2 = (await alice.createWorldReadableRoom()).room_id;
    const phone = await user('bob');
    const laptop = await phone.login();
    for (const r of [r1, r2]) expect((await phone.peek(r)).status).toBe(200);
    expect((await laptop.peek(r1)).status).toBe(200);
    const l0 = await laptop.sync();
    expect((await phone.logout()).status).toBe(200);
    // A logged-out device cannot sync; the audit log shows how its peeks ended.
    // (The audit projection commits on its own schedule: wait for it.)
    const ended = (await auditUntil(url, ADMIN, { user_id: phone.userId, device_id: phone.deviceId }, (es) => es.filter((e) => e.event === 'PeekExpired').length >= 2)).filter(
      (e) => e.event === 'PeekExpired',
    );
    expect(ended.map((e) => [e.room_id, e.reason]).sort()).toEqual(
      [
        [r1, 'device_removed'],
        [r2, 'device_removed'],
      ].sort(),
    );
    expect((await phone.whoami()).body.errcode).toBe('M_UNKNOWN_TOKEN');
    // The laptop's peek goes on.
    expect(roomsIn(l0, 'peek')).toEqual([r1]);
    const id = await alice.send(r1, 'for the laptop');
    const l1 = await laptop.sync({ since: l0.next_batch });
    expect(l1.rooms.peek[r1]?.timeline.events.map((e: any) => e.event_id)).toEqual([id]);
    expect(roomsIn(l1, 'leave')).toEqual([]);
  });
  // syncapi_peeks keeps one row per (room, device): when a peek the device saw ends, a new
  // one starts and that ends too, all between two syncs, the row remembers the peek it
  // replaced, so the device still gets its leave entry.
  it('peek, unpeek, peek, unpeek between two syncs: the room still ends under leave', async () => {
    const { roomId, bob, since } = await peekedRoom();
    expect((await bob.unpeek(roomId)).status).toBe(200);
    expect((await bob.peek(roomId)).status).toBe(200);
    expect((await bob.unpeek(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'leave')).toEqual([roomId]);
  });

  it('visibility no longer world_readable: every peek ends, the leave entry ends with that event, and peeking again is refused', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const carol = await user('carol');
    expect((await carol.peek(roomId)).status).toBe(200);
    const c0 = await carol.sync();
    const poll = bob.sync({ since, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    const before = await alice.send(roomId, 'last public words');
    const hv = await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'shared' });
    await alice.send(roomId, 'private now');
    let body = await poll;
    // The long-poll may have woken for the first message already; follow it to the leave.
    const seen = [body];
    if (!(roomId in body.rooms.leave)) {
      const r = await bob.syncUntil(body.next_batch, (b) => roomId in b.rooms.leave);
      seen.push(...r.seen);
      body = r.body;
    }
    expect(roomsIn(body, 'peek')).toEqual([]);
    const delivered = seen.flatMap((b) => [...(b.rooms.peek[roomId]?.timeline.events ?? []), ...(b.rooms.leave[roomId]?.timeline?.events ?? [])]);
    expect(delivered.map((e: any) => e.event_id)).toEqual([before, hv]);
    expect(delivered.some((e: any) => e.content?.body === 'private now')).toBe(false);

    const c1 = await carol.syncUntil(c0.next_batch, (b) => roomId in b.rooms.leave);
    expect(roomsIn(c1.body, 'peek')).toEqual([]);
    const later = await bob.sync({ since: body.next_batch });
    expect(roomsIn(later, 'peek')).toEqual([]);
    expect(roomsIn(later, 'leave')).toEqual([]);
    const again = await bob.peek(roomId);
    expect(again.status).toBe(403);
    expect(again.body.errcode).toBe('M_FORBIDDEN');
    const expiredOf = (es: any[]) => es.filter((e) => e.event === 'PeekExpired');
    const reasons = expiredOf(await auditUntil(url, ADMIN, { room_id: roomId }, (es) => expiredOf(es).length >= 2)).map((e) => e.reason);
    expect(reasons).toEqual(['visibility_changed', 'visibility_changed']);
  });

  it('encryption turned on: the peek ends (encrypted) with a leave entry', async () => {
    const { roomId, bob, since } = await peekedRoom();
    await alice.setState(roomId, 'm.room.encryption', { algorithm: 'm.megolm.v1.aes-sha2' });
    const { body } = await bob.syncUntil(since, (b) => roomId in b.rooms.leave);
    expect(roomsIn(body, 'peek')).toEqual([]);
    expect(timelineOf(body.rooms.leave[roomId]).at(-1)?.type).toBe('m.room.encryption');
    const reasons = (await auditUntil(url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.length >= 2)).map((e) => e.reason ?? e.event);
    expect(reasons).toEqual(['PeekStarted', 'encrypted']);
    expect((await bob.peek(roomId)).body.errcode).toBe('M_FORBIDDEN');
  });
});

describe('joining a peeked room', () => {
  it('moves the room from peek to join on the peeking device without re-sending state; other devices get an ordinary join', async () => {
    const { roomId, bob, since } = await peekedRoom();
    const laptop = await bob.login();
    const l0 = await laptop.sync();
    const joined = await bob.join(roomId);
    expect(joined.status).toBe(200);
    expect(joined.body.room_id).toBe(roomId);

    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'join')).toEqual([roomId]);
    expect(roomsIn(s1, 'peek')).toEqual([]);
    expect(roomsIn(s1, 'leave')).toEqual([]);
    const j = s1.rooms.join[roomId];
    expect(j.state.events).toEqual([]);
    expect(timelineOf(j)).toEqual([{ type: 'm.room.member', state_key: bob.userId }]);

    const l1 = await laptop.sync({ since: l0.next_batch });
    expect(roomsIn(l1, 'join')).toEqual([roomId]);
    const all = [...l1.rooms.join[roomId].state.events, ...l1.rooms.join[roomId].timeline.events].map((e: any) => e.type);
    expect(all).toContain('m.room.create');

    // From now on it is an ordinary joined room for both devices, never again a peek.
    const id = await alice.send(roomId, 'welcome, bob');
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'join')).toEqual([roomId]);
    expect(roomsIn(s2, 'peek')).toEqual([]);
    expect(s2.rooms.join[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([id]);
    expect((await bob.peek(roomId)).body.errcode).toBe('M_BAD_STATE');
    const a = await auditUntil(url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.some((e) => e.event === 'PeekExpired'));
    expect(a.filter((e) => e.event === 'PeekExpired').map((e) => e.reason)).toEqual(['joined']);
  });

  it("ends the user's peeks on every device when the user joins from another one", async () => {
    const { roomId, bob, since } = await peekedRoom();
    const laptop = await bob.login();
    expect((await laptop.join(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'join')).toEqual([roomId]);
    expect(roomsIn(s1, 'peek')).toEqual([]);
    expect(roomsIn(s1, 'leave')).toEqual([]);
    expect(s1.rooms.join[roomId].state.events).toEqual([]);
    expect(timelineOf(s1.rooms.join[roomId])).toEqual([{ type: 'm.room.member', state_key: bob.userId }]);
  });

  it('leaving the joined room and peeking it again works, and the leave shows under leave', async () => {
    const { roomId, bob, since } = await peekedRoom();
    expect((await bob.join(roomId)).status).toBe(200);
    const s1 = await bob.sync({ since });
    expect(roomsIn(s1, 'join')).toEqual([roomId]);
    expect((await bob.leave(roomId)).status).toBe(200);
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(roomsIn(s2, 'leave')).toEqual([roomId]);
    expect(roomsIn(s2, 'join')).toEqual([]);
    expect((await bob.peek(roomId)).status).toBe(200);
    const s3 = await bob.sync({ since: s2.next_batch });
    expect(roomsIn(s3, 'peek')).toEqual([roomId]);
    expect(roomsIn(s3, 'join')).toEqual([]);
  });
});
