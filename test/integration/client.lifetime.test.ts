// How device peeks end without an /unpeek, and what survives a restart, over real HTTP
// against a running peekd: expiry after PEEKD_PEEK_LIFETIME_MS (short here), renewal by a
// repeated /peek, and a restart on the same database, streams
// and data directory that keeps access tokens, sync tokens and live peeks valid.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { auditUntil, roomsIn, TestUser } from '../helpers/matrix.ts';

const ADMIN = 'admin-secret-lifetime-tests';
const LIFETIME_MS = 1500;

describe('peek lifetime', () => {
  let hs: Awaited<ReturnType<typeof startTestPeekd>>;
  let alice: TestUser;
  let n = 0;
  const user = (name: string) => TestUser.register(hs.url, `${name}${++n}`);

  beforeAll(async () => {
    hs = await startTestPeekd({ env: { PEEKD_PEEK_LIFETIME_MS: String(LIFETIME_MS), PEEKD_ADMIN_TOKEN: ADMIN } });
    alice = await TestUser.register(hs.url, 'alice');
  });
  afterAll(async () => {
    await hs?.dropAll();
  });

  it('peek_expiry_ts is the time of the call plus the configured lifetime', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const before = Date.now();
    const r = await bob.peek(roomId);
    const after = Date.now();
    expect(r.status).toBe(200);
    expect(r.body.peek_expiry_ts).toBeGreaterThanOrEqual(before + LIFETIME_MS);
    expect(r.body.peek_expiry_ts).toBeLessThanOrEqual(after + LIFETIME_MS);
  });

  it('an expired peek ends like an unpeek: a long-polling device is woken and gets the leave entry once', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    await alice.send(roomId, 'hello');
    const bob = await user('bob');
    const p = await bob.peek(roomId);
    const s0 = await bob.sync();
    expect(roomsIn(s0, 'peek')).toEqual([roomId]);
    const { body, seen } = await bob.syncUntil(s0.next_batch, (b) => roomId in b.rooms.leave, 10_000);
    const endedAt = Date.now();
    expect(endedAt).toBeGreaterThanOrEqual(p.body.peek_expiry_ts);
    // Ended promptly: within a couple of seconds of the deadline, not at some later sweep.
    expect(endedAt - p.body.peek_expiry_ts).toBeLessThan(2_500);
    expect(seen.length).toBeLessThanOrEqual(3);
    expect(roomsIn(body, 'peek')).toEqual([]);
    expect(body.rooms.leave[roomId]).toEqual({});
    // Never again: new messages do not bring it back.
    await alice.send(roomId, 'after the expiry');
    const later = await bob.sync({ since: body.next_batch });
    expect(roomsIn(later, 'peek')).toEqual([]);
    expect(roomsIn(later, 'leave')).toEqual([]);
    const a = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.length >= 2);
    expect(a.map((e) => e.reason ?? e.event)).toEqual(['PeekStarted', 'timed_out']);
    // And /unpeek of it is a bad state; /peek starts afresh.
    expect((await bob.unpeek(roomId)).body.errcode).toBe('M_BAD_STATE');
    expect((await bob.peek(roomId)).status).toBe(200);
    const again = await bob.sync({ since: later.next_batch });
    expect(roomsIn(again, 'peek')).toEqual([roomId]);
    expect(again.rooms.peek[roomId].timeline.events[0].type).toBe('m.room.create');
  });

  it('a repeated /peek renews: the peek outlives its first expiry and ends at the renewed one', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const bob = await user('bob');
    const first = await bob.peek(roomId);
    const s0 = await bob.sync();
    expect(roomsIn(s0, 'peek')).toEqual([roomId]);
    // Renew halfway through the first lifetime.
    await new Promise((r) => setTimeout(r, LIFETIME_MS / 2));
    const second = await bob.peek(roomId);
    expect(second.status).toBe(200);
    expect(second.body.peek_expiry_ts).toBeGreaterThanOrEqual(first.body.peek_expiry_ts + LIFETIME_MS / 2 - 50);
    // Long-poll until well past the first expiry: the peek must still be live.
    const untilPastFirst = first.body.peek_expiry_ts + 300 - Date.now();
    const mid = await bob.sync({ since: s0.next_batch, timeout: Math.max(0, untilPastFirst) });
    expect(Date.now()).toBeGreaterThan(first.body.peek_expiry_ts);
    expect(roomsIn(mid, 'leave')).toEqual([]);
    const id = await alice.send(roomId, 'still peeking after the first expiry');
    const live = await bob.sync({ since: mid.next_batch });
    expect(live.rooms.peek[roomId]?.timeline.events.map((e: any) => e.event_id)).toEqual([id]);
    const { body } = await bob.syncUntil(live.next_batch, (b) => roomId in b.rooms.leave, 10_000);
    expect(Date.now()).toBeGreaterThanOrEqual(second.body.peek_expiry_ts);
    expect(roomsIn(body, 'peek')).toEqual([]);
    const a = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.length >= 3);
    expect(a.map((e) => e.reason ?? e.event)).toEqual(['PeekStarted', 'PeekRenewed', 'timed_out']);
  });
});

describe('restart', () => {
  it('keeps access tokens, sync tokens and live peeks valid across a restart', async () => {
    let hs = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: ADMIN } });
    const reuse = { databaseUrl: hs.databaseUrl, prefix: hs.prefix, dataDir: hs.dataDir };
    const dropAll = hs.dropAll;
    try {
      const alice = await TestUser.register(hs.url, 'alice');
      const bob = await TestUser.register(hs.url, 'bob');
      const { room_id: roomId } = await alice.createWorldReadableRoom({ room_alias_name: 'survivor' });
      await alice.send(roomId, 'before the restart');
      const p = await bob.peek(roomId);
      expect(p.status).toBe(200);
      const s0 = await bob.sync();
      expect(roomsIn(s0, 'peek')).toEqual([roomId]);
      const a0 = await alice.sync();

      await hs.close();
      hs = await startTestPeekd({ serverName: hs.serverName, reuse, env: { PEEKD_ADMIN_TOKEN: ADMIN } });
      const alice2 = new TestUser(hs.url, alice.userId, alice.deviceId, alice.token);
      const bob2 = new TestUser(hs.url, bob.userId, bob.deviceId, bob.token);

      // Access tokens still work, and the sync token still means "nothing new since".
      expect((await bob2.whoami()).body).toMatchObject({ user_id: bob.userId, device_id: bob.deviceId });
      const quiet = await bob2.sync({ since: s0.next_batch });
      expect(roomsIn(quiet, 'peek')).toEqual([]);
      expect(roomsIn(quiet, 'leave')).toEqual([]);
      // The peek is still live: a long-poll from the old token is woken by a new message.
      const poll = bob2.sync({ since: s0.next_batch, timeout: 10_000 });
      await new Promise((r) => setTimeout(r, 100));
      const id = await alice2.send(roomId, 'after the restart');
      const woken = await poll;
      expect(woken.rooms.peek[roomId]?.timeline.events.map((e: any) => e.event_id)).toEqual([id]);
      const a1 = await alice2.sync({ since: a0.next_batch });
      expect(a1.rooms.join[roomId]?.timeline.events.map((e: any) => e.event_id)).toEqual([id]);
      // Renewing answers a later expiry, the alias still resolves, and the password still logs in.
      const renewed = await bob2.peek('#survivor:' + hs.serverName);
      expect(renewed.status).toBe(200);
      expect(renewed.body.peek_expiry_ts).toBeGreaterThan(p.body.peek_expiry_ts);
      expect((await bob2.login()).userId).toBe(bob.userId);
      const a = await auditUntil(hs.url, ADMIN, { room_id: roomId }, (es) => es.length >= 2);
      expect(a.map((e) => e.event)).toEqual(['PeekStarted', 'PeekRenewed']);
    } finally {
      await hs.close().catch(() => undefined);
      await dropAll();
    }
  });

  it('a peek that runs out while peekd is down ends at the next start, with the leave entry on the next sync', async () => {
    let hs = await startTestPeekd({ env: { PEEKD_PEEK_LIFETIME_MS: String(LIFETIME_MS), PEEKD_ADMIN_TOKEN: ADMIN } });
    const reuse = { databaseUrl: hs.databaseUrl, prefix: hs.prefix, dataDir: hs.dataDir };
    const dropAll = hs.dropAll;
    try {
      const alice = await TestUser.register(hs.url, 'alice');
      const bob = await TestUser.register(hs.url, 'bob');
      const { room_id: roomId } = await alice.createWorldReadableRoom();
      const p = await bob.peek(roomId);
      const s0 = await bob.sync();
      expect(roomsIn(s0, 'peek')).toEqual([roomId]);
      await hs.close();
      // Down past the expiry.
      await new Promise((r) => setTimeout(r, Math.max(0, p.body.peek_expiry_ts - Date.now() + 100)));
      hs = await startTestPeekd({ serverName: hs.serverName, reuse, env: { PEEKD_PEEK_LIFETIME_MS: String(LIFETIME_MS), PEEKD_ADMIN_TOKEN: ADMIN } });
      const bob2 = new TestUser(hs.url, bob.userId, bob.deviceId, bob.token);
      const { body } = await bob2.syncUntil(s0.next_batch, (b) => roomId in b.rooms.leave, 10_000);
      expect(roomsIn(body, 'peek')).toEqual([]);
      const a = await auditUntil(hs.url, ADMIN, { room_id: roomId }, (es) => es.length >= 2);
      expect(a.map((e) => e.reason ?? e.event)).toEqual(['PeekStarted', 'timed_out']);
    } finally {
      await hs.close().catch(() => undefined);
      await dropAll();
    }
  });
});
