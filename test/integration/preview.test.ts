// The legacy room preview over real HTTP against a running peekd (real NATS JetStream, real
// Postgres): GET /rooms/{roomId}/initialSync and the GET /events?room_id=… long-poll after
// it, as matrix-js-sdk's peekInRoom drives them. For a reader who is not joined the preview
// is a device peek in the log: started by initialSync, kept alive by the polls, timed out
// when they stop, and audited like any peek.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientDataStore } from '../../src/syncapi/clientData.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { audit, auditUntil, enc, request, roomsIn, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

const ADMIN = 'admin-secret-preview-tests';
/** Short, so that a preview's peek runs out within the test once its polls stop. */
const LIFETIME_MS = 3_000;

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let n = 0;
const user = (name: string) => TestUser.register(hs.url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: ADMIN, PEEKD_PEEK_LIFETIME_MS: String(LIFETIME_MS) } });
  alice = await TestUser.register(hs.url, 'alice');
});

afterAll(async () => {
  await hs?.dropAll();
});

const initialSync = (u: TestUser, roomId: string, query = '') => u.req('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/initialSync${query}`);

function events(u: TestUser, params: Record<string, string | number | undefined>) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  return u.req('GET', `/_matrix/client/v3/events?${q}`);
}

/** The audit entries of one device's peeks of a room, oldest first. */
const peeksOf = (roomId: string, u: TestUser) => audit(hs.url, ADMIN, { room_id: roomId, user_id: u.userId, device_id: u.deviceId });

describe('GET /rooms/{roomId}/initialSync', () => {
  it('gives a member the room: membership, the latest messages with tokens for /messages, current state, directory visibility, account data and presence', async () => {
    const { room_id: roomId } = await alice.createRoom({ preset: 'private_chat', name: 'Members only' });
    const ids: string[] = [];
    for (const body of ['one', 'two', 'three']) ids.push(await alice.send(roomId, body, `txn-${body}`));
    const data = new ClientDataStore(hs.peekd.client!.db);
    await data.putAccountData(alice.userId, roomId, 'm.tag', { tags: { 'u.work': { order: 0.5 } } });
    await data.putAccountData(alice.userId, '', 'org.example.global', { not: 'per room' });
    await data.setPresence(alice.userId, 'online', 'previewing', Date.now());

    const r = await initialSync(alice, roomId, '?limit=2');
    expect(r.status).toBe(200);
    const body = r.body;
    expect(body.room_id).toBe(roomId);
    expect(body.membership).toBe('join');
    expect(body.visibility).toBe('private');
    // The newest two, oldest first, in the client format (room_id included), with the
    // sender's own transaction ID.
    expect(body.messages.chunk.map((e: any) => e.event_id)).toEqual(ids.slice(1));
    expect(body.messages.chunk[1]).toMatchObject({ type: 'm.room.message', room_id: roomId, sender: alice.userId, content: { body: 'three' }, unsigned: { transaction_id: 'txn-three' } });
    const state: any[] = body.state;
    expect(state.map((e) => e.type)).toEqual(expect.arrayContaining(['m.room.create', 'm.room.power_levels', 'm.room.join_rules', 'm.room.name']));
    expect(state.find((e) => e.type === 'm.room.member' && e.state_key === alice.userId)?.content.membership).toBe('join');
    for (const e of state) expect(e.room_id).toBe(roomId);
    expect(body.account_data).toEqual([{ type: 'm.tag', content: { tags: { 'u.work': { order: 0.5 } } } }]);
    expect(body.presence).toHaveLength(1);
    expect(body.presence[0]).toMatchObject({ type: 'm.presence', sender: alice.userId, content: { presence: 'online', status_msg: 'previewing', user_id: alice.userId } });

    // `start` pages back from before the chunk, `end` from after it.
    const before = await alice.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1&from=${enc(body.messages.start)}`);
    expect(before.chunk.map((e: any) => e.event_id)).toEqual([ids[0]]);
    const back = await alice.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=3&from=${enc(body.messages.end)}`);
    expect(back.chunk.map((e: any) => e.event_id)).toEqual([ids[2], ids[1], ids[0]]);
    const after = await alice.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=f&from=${enc(body.messages.end)}`);
    expect(after.chunk).toEqual([]);

    // A member reads without a peek.
    expect(roomsIn(await alice.sync(), 'peek')).toEqual([]);
    expect(await hs.peekd.client!.sync.devicePeeks(alice.userId, alice.deviceId, 0)).toEqual([]);
  });

  it('answers `public` for a room published in the directory', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    await alice.ok('PUT', `/_matrix/client/v3/directory/list/room/${enc(roomId)}`, { visibility: 'public' });
    expect((await initialSync(alice, roomId)).body.visibility).toBe('public');
  });

  it('previews a world_readable room for a non-member: no membership, what history visibility shows, and a device peek that the log and /sync know', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom({ name: 'Open to all' });
    const hello = await alice.send(roomId, 'hello');
    await new ClientDataStore(hs.peekd.client!.db).setPresence(alice.userId, 'unavailable', null, Date.now());
    const bob = await user('bob');
    const s0 = await bob.sync();

    const r = await initialSync(bob, roomId);
    expect(r.status).toBe(200);
    const body = r.body;
    expect(body.room_id).toBe(roomId);
    expect(body).not.toHaveProperty('membership');
    const chunk: any[] = body.messages.chunk;
    // Judged per event: a stranger sees the room from the event that made it world_readable.
    expect(chunk[0]).toMatchObject({ type: 'm.room.history_visibility', content: { history_visibility: 'world_readable' } });
    expect(chunk.map((e) => e.type)).not.toContain('m.room.create');
    expect(chunk.at(-1)).toMatchObject({ event_id: hello, room_id: roomId, content: { body: 'hello' } });
    expect(body.state.map((e: any) => e.type)).toEqual(expect.arrayContaining(['m.room.create', 'm.room.member', 'm.room.name', 'm.room.history_visibility']));
    expect(body.state.find((e: any) => e.type === 'm.room.name').content.name).toBe('Open to all');
    expect(body.visibility).toBe('private');
    expect(body.account_data).toEqual([]);
    expect(body.presence.map((p: any) => [p.sender, p.content.presence])).toEqual([[alice.userId, 'unavailable']]);
    expect(typeof body.messages.end).toBe('string');

    // It is the device peek POST /peek would have started: in the audit, and in /sync.
    const entries = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.length >= 1);
    expect(entries).toEqual([expect.objectContaining({ event: 'PeekStarted', kind: 'device', user_id: bob.userId, device_id: bob.deviceId, room_id: roomId })]);
    const s1 = await bob.sync({ since: s0.next_batch });
    expect(roomsIn(s1, 'peek')).toEqual([roomId]);
    // A second initialSync while it is live renews it.
    expect((await initialSync(bob, roomId)).status).toBe(200);
    const again = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.length >= 2);
    expect(again.map((e) => e.event)).toEqual(['PeekStarted', 'PeekRenewed']);
    // And /unpeek ends it, as it ends any peek.
    expect((await bob.unpeek(roomId)).status).toBe(200);
  });

  it('refuses a non-member of a room that is not world_readable, and an unknown room, with 403 M_FORBIDDEN; starts no peek', async () => {
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const bob = await user('bob');
    const r = await initialSync(bob, roomId);
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe('M_FORBIDDEN');
    const e = await events(bob, { room_id: roomId, timeout: 0 });
    expect(e.status).toBe(403);
    expect(e.body.errcode).toBe('M_FORBIDDEN');
    const unknown = await initialSync(bob, `!nosuchroom:${hs.serverName}`);
    expect(unknown.status).toBe(403);
    expect(unknown.body.errcode).toBe('M_FORBIDDEN');
    expect(await hs.peekd.client!.sync.devicePeeks(bob.userId, bob.deviceId, 0)).toEqual([]);
  });

  it('gives a user who left a room that is not world_readable the room up to their leave', async () => {
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const bob = await user('bob');
    expect((await bob.join(roomId)).status).toBe(200);
    const seen = await alice.send(roomId, 'while bob was here');
    expect((await bob.leave(roomId)).status).toBe(200);
    await alice.send(roomId, 'after bob left');
    const r = await initialSync(bob, roomId);
    expect(r.status).toBe(200);
    expect(r.body.membership).toBe('leave');
    const chunk: any[] = r.body.messages.chunk;
    expect(chunk.map((e) => e.content.body).filter(Boolean)).toEqual(['while bob was here']);
    expect(chunk.some((e) => e.event_id === seen)).toBe(true);
    expect(chunk.at(-1)).toMatchObject({ type: 'm.room.member', state_key: bob.userId, content: { membership: 'leave' } });
    expect(r.body.state.find((e: any) => e.type === 'm.room.member' && e.state_key === bob.userId).content.membership).toBe('leave');
    expect(r.body.presence).toEqual([]);
  });

  it('gives a user who left a world_readable room the room as it was when they left, and starts no peek (as Synapse)', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom({ name: 'Before' });
    const carol = await user('carol');
    expect((await carol.join(roomId)).status).toBe(200);
    expect((await carol.leave(roomId)).status).toBe(200);
    await alice.setState(roomId, 'm.room.name', { name: 'After' });
    await alice.send(roomId, 'after carol left');
    const r = await initialSync(carol, roomId);
    expect(r.status).toBe(200);
    expect(r.body.membership).toBe('leave');
    expect(r.body.state.find((e: any) => e.type === 'm.room.name').content.name).toBe('Before');
    const chunk: any[] = r.body.messages.chunk;
    expect(chunk.some((e) => e.content.body === 'after carol left' || e.content.name === 'After')).toBe(false);
    expect(chunk.at(-1)).toMatchObject({ type: 'm.room.member', state_key: carol.userId, content: { membership: 'leave' } });
    expect(await peeksOf(roomId, carol)).toEqual([]);
  });

  it('answers bad input with the spec error codes', async () => {
    const bob = await user('bob');
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    expect((await initialSync(bob, 'not-a-room')).body.errcode).toBe('M_INVALID_PARAM');
    for (const limit of ['-1', 'ten', '1.5', '']) {
      const r = await initialSync(bob, roomId, `?limit=${limit}`);
      expect(r.status, limit).toBe(400);
      expect(r.body.errcode).toBe('M_INVALID_PARAM');
    }
    const anonymous = await request(hs.url, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/initialSync`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.errcode).toBe('M_MISSING_TOKEN');
  });
});

describe('guests', () => {
  it('a guest previews a world_readable room (initialSync, /events, its peek in the log) and is refused elsewhere', async () => {
    const g = await request(hs.url, 'POST', '/_matrix/client/v3/register?kind=guest', { body: {} });
    expect(g.status).toBe(200);
    const guest = new TestUser(hs.url, g.body.user_id, g.body.device_id, g.body.access_token);
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const snapshot = await initialSync(guest, roomId);
    expect(snapshot.status).toBe(200);
    expect(snapshot.body).not.toHaveProperty('membership');
    const id = await alice.send(roomId, 'for the guest');
    const r = await events(guest, { room_id: roomId, from: snapshot.body.messages.end, timeout: 10_000 });
    expect(r.status).toBe(200);
    expect(r.body.chunk.map((e: any) => e.event_id)).toEqual([id]);
    const entries = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: guest.userId }, (es) => es.length >= 1);
    expect(entries[0]).toMatchObject({ event: 'PeekStarted', device_id: guest.deviceId });
    // MSC2753 peeking is open to guests too (the same peek).
    expect((await guest.peek(roomId)).status).toBe(200);
    const { room_id: closed } = await alice.createRoom({ preset: 'public_chat' });
    expect((await initialSync(guest, closed)).body.errcode).toBe('M_FORBIDDEN');
  });
});

describe('GET /events?room_id=…', () => {
  // sytest 30rooms/60anonymousaccess.pl, "non-joined user doesn't get events before room
  // made world_readable": a message and a poll with no `from` sent at once. The poll reads
  // from where the room stood when it arrived, so its own checks do not let the message by.
  it('a poll with no from, sent together with a message, gets the message and nothing from before', async () => {
    for (let i = 0; i < 3; i++) {
      const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
      await alice.send(roomId, 'private');
      await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'world_readable' });
      const bob = await user('bob');
      const [sent, r] = await Promise.all([alice.send(roomId, 'public'), events(bob, { room_id: roomId, timeout: 10_000 })]);
      expect(r.status).toBe(200);
      // (The visibility change may come too, if the poll arrived before it was read back.)
      expect(r.body.chunk.map((e: any) => e.event_id)).toContain(sent);
      expect(r.body.chunk.every((e: any) => e.event_id === sent || e.type === 'm.room.history_visibility')).toBe(true);
    }
  });

  it('long-polls from the end of initialSync and answers a message sent afterwards promptly, then goes on from its own end', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const snapshot = (await initialSync(bob, roomId)).body;
    const from = snapshot.messages.end;

    const waiting = hs.peekd.notifier.waiting;
    const poll = events(bob, { room_id: roomId, from, timeout: 30_000 });
    // Sent once the poll is waiting, so that the message is what wakes it.
    await until('the /events poll to wait', () => hs.peekd.notifier.waiting > waiting, 5_000, 5);
    const sentAt = Date.now();
    const sent = await alice.send(roomId, 'live');
    const r = await poll;
    expect(r.status).toBe(200);
    expect(r.body.start).toBe(from);
    expect(r.body.chunk).toHaveLength(1);
    expect(r.body.chunk[0]).toMatchObject({ event_id: sent, room_id: roomId, type: 'm.room.message', sender: alice.userId, content: { body: 'live' } });
    // Woken by the event, not by the timeout (nor by the half-lifetime cap of a peeker's poll,
    // which would have answered an empty chunk).
    expect(Date.now() - sentAt).toBeLessThan(1_000);
    expect(r.body.end).not.toBe(from);

    // From its end: nothing new, so the poll times out empty and its end stays usable.
    const quiet = await events(bob, { room_id: roomId, from: r.body.end, timeout: 100 });
    expect(quiet.status).toBe(200);
    expect(quiet.body.chunk).toEqual([]);
    const second = await alice.send(roomId, 'second');
    const next = await events(bob, { room_id: roomId, from: quiet.body.end, timeout: 10_000 });
    expect(next.body.chunk.map((e: any) => e.event_id)).toEqual([second]);
    // The end of /events also pages /messages backwards.
    const back = await bob.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=2&from=${enc(next.body.end)}`);
    expect(back.chunk.map((e: any) => e.event_id)).toEqual([second, sent]);
  });

  it('without `timeout` long-polls (30 s by default, as Synapse): a first poll with neither `from` nor `timeout` answers the next message, never what came before the room was world_readable (sytest 30history-visibility)', async () => {
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    await alice.send(roomId, 'private');
    await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'world_readable' });
    const bob = await user('bob');
    const waiting = hs.peekd.notifier.waiting;
    const startedAt = Date.now();
    const poll = events(bob, { room_id: roomId, limit: 3, dir: 'b' });
    await until('the /events poll to wait', () => hs.peekd.notifier.waiting > waiting, 5_000, 5);
    const sent = await alice.send(roomId, 'public');
    const r = await poll;
    expect(r.status).toBe(200);
    expect(r.body.chunk.map((e: any) => e.event_id)).toEqual([sent]);
    expect(Date.now() - startedAt).toBeLessThan(10_000);
  });

  it("without `from` (matrix-js-sdk's first poll) goes on from where the device's initialSync ended", async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    expect((await initialSync(bob, roomId)).status).toBe(200);
    const between = await alice.send(roomId, 'sent before the first poll');
    const r = await events(bob, { room_id: roomId, timeout: 10_000 });
    expect(r.status).toBe(200);
    expect(r.body.chunk.map((e: any) => e.event_id)).toEqual([between]);
  });

  it('serves a member without a peek, and shows only what history visibility lets the reader see', async () => {
    const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' });
    const start = (await initialSync(alice, roomId)).body.messages.end;
    const mine = await alice.send(roomId, 'to the members');
    const r = await events(alice, { room_id: roomId, from: start, timeout: 10_000 });
    expect(r.body.chunk.map((e: any) => e.event_id)).toEqual([mine]);
    expect(await hs.peekd.client!.sync.devicePeeks(alice.userId, alice.deviceId, 0)).toEqual([]);

    // A world_readable room turned `shared`: the peeker gets the change, then 403.
    const { room_id: open } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const from = (await initialSync(bob, open)).body.messages.end;
    const last = await alice.send(open, 'last words for strangers');
    const closing = await alice.setState(open, 'm.room.history_visibility', { history_visibility: 'shared' });
    await alice.send(open, 'members only from now on');
    const seen = await events(bob, { room_id: open, from, timeout: 10_000 });
    expect(seen.status).toBe(200);
    expect(seen.body.chunk.map((e: any) => e.event_id)).toEqual([last, closing]);
    const after = await events(bob, { room_id: open, from: seen.body.end, timeout: 0 });
    expect(after.status).toBe(403);
    expect(after.body.errcode).toBe('M_FORBIDDEN');
  });

  it("keeps the preview's peek alive while the device polls, and lets it time out once polling stops", async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    let end = (await initialSync(bob, roomId)).body.messages.end;
    const started = Date.now();
    // Poll for more than two lifetimes. A peeker's poll waits at most half a lifetime, so
    // each of these answers (empty) early, and the device polls again at once.
    while (Date.now() - started < LIFETIME_MS * 2.5) {
      const t0 = Date.now();
      const r = await events(bob, { room_id: roomId, from: end, timeout: 30_000 });
      expect(r.status).toBe(200);
      expect(r.body.chunk).toEqual([]);
      expect(Date.now() - t0).toBeLessThan(LIFETIME_MS);
      end = r.body.end;
    }
    const polledUntil = Date.now();
    // Still live: a message reaches the next poll, and the audit shows no end yet.
    const id = await alice.send(roomId, 'still previewing');
    const live = await events(bob, { room_id: roomId, from: end, timeout: 10_000 });
    expect(live.body.chunk.map((e: any) => e.event_id)).toEqual([id]);
    const during = await peeksOf(roomId, bob);
    expect(during[0].event).toBe('PeekStarted');
    expect(during.filter((e) => e.event === 'PeekRenewed').length).toBeGreaterThanOrEqual(3);
    expect(during.filter((e) => e.event === 'PeekExpired')).toEqual([]);

    // The device stops polling: the peek runs out at its last deadline.
    const ended = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.at(-1)?.event === 'PeekExpired', LIFETIME_MS * 4);
    const last = ended.at(-1);
    expect(last).toMatchObject({ event: 'PeekExpired', reason: 'timed_out', device_id: bob.deviceId });
    const lastRenewal = ended.filter((e) => e.event !== 'PeekExpired').at(-1);
    expect(last.at).toBeGreaterThanOrEqual(lastRenewal.expires_at);
    expect(last.at).toBeGreaterThan(polledUntil);
    // Polling again starts a new peek, as a new preview.
    expect((await events(bob, { room_id: roomId, from: live.body.end, timeout: 0 })).status).toBe(200);
    const restarted = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.at(-1)?.event === 'PeekStarted');
    expect(restarted.at(-1).event).toBe('PeekStarted');
  });

  it('without room_id, long-polls the events of every room the caller joined (and no other)', async () => {
    const bob = await user('bob');
    const joined = (await alice.createRoom({ preset: 'public_chat' })).room_id;
    const other = (await alice.createWorldReadableRoom()).room_id;
    await bob.ok('POST', `/_matrix/client/v3/rooms/${enc(joined)}/join`, {});
    const first = await events(bob, { timeout: 0 });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ chunk: [] });
    expect(typeof first.body.end).toBe('string');
    const waiting = hs.peekd.notifier.waiting;
    const polling = events(bob, { from: first.body.end, timeout: 10_000 });
    await until('the /events poll to wait', () => hs.peekd.notifier.waiting > waiting, 5_000, 5);
    await alice.send(other, 'not for bob');
    const sent = await alice.send(joined, 'for bob');
    const woken = await polling;
    expect(woken.status).toBe(200);
    const ids = woken.body.chunk.map((e: { event_id: string }) => e.event_id);
    expect(ids).toContain(sent);
    expect(woken.body.chunk.every((e: { room_id: string }) => e.room_id === joined)).toBe(true);
    const bad = await events(bob, { from: 'garbage', timeout: 0 });
    expect([bad.status, bad.body.errcode]).toEqual([400, 'M_INVALID_PARAM']);
  });

  it('answers bad input with 400 M_INVALID_PARAM', async () => {
    const bob = await user('bob');
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const cases: Record<string, string | number>[] = [
      { room_id: 'not-a-room', timeout: 0 },
      { room_id: roomId, from: 'garbage', timeout: 0 },
      { room_id: roomId, from: 't12_34', timeout: 0 },
      { room_id: roomId, timeout: -1 },
      { room_id: roomId, timeout: 'soon' },
    ];
    for (const params of cases) {
      const r = await events(bob, params);
      expect(r.status, JSON.stringify(params)).toBe(400);
      expect(r.body.errcode, JSON.stringify(params)).toBe('M_INVALID_PARAM');
    }
    const anonymous = await request(hs.url, 'GET', `/_matrix/client/v3/events?room_id=${enc(roomId)}`);
    expect(anonymous.status).toBe(401);
  });
});
