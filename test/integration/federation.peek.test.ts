// Peeking over federation (MSC2444) between two real peekd instances on loopback, A
// hosting the rooms and B peeking them for its devices: the snapshot in B's rooms.peek,
// A's new events waking B's long-polls, B's DELETE when its last device unpeeks, the idle
// window (no_active_peekers) and the restart on the next sync, A expiring a peek B stopped
// renewing, the relayed event that ends world_readable, and remote errors as the client
// sees them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { syncapiRoomEvents, federationsenderOutbox, federationsenderPendingTxns } from '../../src/store/schema.ts';
import { freePort } from '../../src/nats/freePorts.ts';
import { expiries, expiriesOnce, holdsFor, inboundPeeks, outboundPeeks, startFederation, SyncFollower, waitFor, type Federation, type FedServer } from '../helpers/federation.ts';
import { TestUser } from '../helpers/matrix.ts';

const RENEWAL_MS = 2_000;
const IDLE_MS = 3_000;

let fed: Federation;
let A: FedServer;
let B: FedServer;
let alice: TestUser;
let deadServer: string;
let n = 0;

beforeAll(async () => {
  deadServer = `dead-${Date.now().toString(36)}.test`;
  fed = await startFederation({
    servers: 2,
    env: { PEEKD_INBOUND_RENEWAL_INTERVAL_MS: String(RENEWAL_MS), PEEKD_OUTBOUND_IDLE_MS: String(IDLE_MS) },
    // A server name that maps to a port nobody listens on: an unreachable peer.
    extraDestinations: { [deadServer]: `http://127.0.0.1:${await freePort()}` },
  });
  [A, B] = fed.servers as [FedServer, FedServer];
  alice = await TestUser.register(A.url, 'alice');
});

afterAll(async () => {
  await fed?.cleanup();
});

/** A world_readable room on A with an alias and one message. */
async function hostedRoom(extra: Record<string, unknown> = {}) {
  const alias = `room${++n}`;
  const room = await alice.createWorldReadableRoom({ room_alias_name: alias, name: `Room ${n}`, ...extra });
  const hello = await alice.send(room.room_id, 'hello');
  return { roomId: room.room_id, alias: `#${alias}:${A.name}`, hello };
}

/** B's copy of the room: the event IDs in B's ROOMS projection, in order. */
async function copyAtB(roomId: string): Promise<string[]> {
  const rows = await B.peekd.database.db.select().from(syncapiRoomEvents).where(eq(syncapiRoomEvents.roomId, roomId));
  return rows.sort((a, b) => a.seq - b.seq).map((r) => r.eventId);
}

describe('a user on B peeks #alias:A', () => {
  it("starts a federated peek, serves the snapshot in rooms.peek, and A's next message wakes the long-poll", async () => {
    const { roomId, alias, hello } = await hostedRoom({ topic: 'federated peeking' });
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const s0 = await bob.sync();

    const p = await bob.peek(alias);
    expect(p.status).toBe(200);
    expect(p.body.room_id).toBe(roomId);
    expect(typeof p.body.peek_expiry_ts).toBe('number');

    // One outbound peek at B, an 8-character peek ID, and the matching inbound peek at A.
    const [out] = await outboundPeeks(B, roomId);
    expect(out).toMatchObject({ serverName: A.name, renewalIntervalMs: RENEWAL_MS });
    expect(out!.peekId).toMatch(/^[0-9A-Za-z.=_-]{8}$/);
    const inbound = await inboundPeeks(A, roomId);
    expect(inbound).toHaveLength(1);
    expect(inbound[0]).toMatchObject({ serverName: B.name, peekId: out!.peekId, renewalIntervalMs: RENEWAL_MS });

    // The device's next sync shows the whole room, like a new join.
    const s1 = await bob.sync({ since: s0.next_batch });
    const section = s1.rooms.peek[roomId];
    expect(section).toBeDefined();
    expect(s1.rooms.join).toEqual({});
    // Like a new join: the whole history B holds fits, so the timeline starts at
    // m.room.create (state events are shown to a peeker whatever the visibility they were
    // sent under) and the state section is empty.
    expect(section.state.events).toEqual([]);
    const tl = section.timeline.events;
    expect(tl[0]).toMatchObject({ type: 'm.room.create' });
    expect(tl.map((e: any) => e.type)).toEqual(expect.arrayContaining(['m.room.member', 'm.room.power_levels']));
    expect(tl.at(-1)).toMatchObject({ type: 'm.room.message', event_id: hello, sender: alice.userId, content: { body: 'hello' } });
    expect(tl.map((e: any) => e.type)).toEqual(expect.arrayContaining(['m.room.history_visibility', 'm.room.name', 'm.room.topic']));
    // A's events with the same IDs, in A's order: the current state and the latest event
    // (the snapshot does not carry state that was since replaced, here the room's first
    // history_visibility).
    const atA = (await alice.messages(roomId)).map((e) => e.event_id).reverse();
    const stateAtA = new Set((await alice.ok('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`)).map((e: any) => e.event_id));
    const expected = atA.filter((id) => stateAtA.has(id) || id === hello);
    expect(expected.length).toBe(atA.length - 1);
    expect([...section.state.events, ...tl].map((e: any) => e.event_id)).toEqual(expected);

    // The device keeps syncing in the background (as a client does), so it never idles.
    const f = new SyncFollower(bob, 250);
    f.since = s1.next_batch;
    const stopSyncing = f.keepSyncing();
    try {
      // A long-poll is woken by A's next message (well before its timeout).
      const poll = bob.sync({ since: s1.next_batch, timeout: 2_500 });
      const next = await alice.send(roomId, 'next');
      const sentAt = Date.now();
      const s2 = await poll;
      // Woken by the event, not by the timeout: it reached B's device within moments.
      expect(Date.now() - sentAt).toBeLessThan(1_500);
      const events = s2.rooms.peek[roomId]?.timeline.events ?? [];
      expect(events.map((e: any) => e.event_id)).toEqual([next]);
      expect(events[0].content.body).toBe('next');
      expect(s2.rooms.peek[roomId].timeline.limited).toBe(false);

      // Several messages in a row: each once, in order.
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(await alice.send(roomId, `m${i}`));
      await f.until('m4 at B', () => f.messages(roomId).includes('m4'));
      expect(f.eventIds(roomId)).toEqual([next, ...ids]);
      expect(await copyAtB(roomId)).toEqual([...expected, next, ...ids]);
    } finally {
      await stopSyncing();
    }
  });

  it("peeks by room ID through `servers`, falling back to the room ID's server when the first is unreachable", async () => {
    const { roomId } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const p = await bob.peek(roomId, { servers: [deadServer] });
    expect(p.status).toBe(200);
    const [out] = await outboundPeeks(B, roomId);
    expect(out?.serverName).toBe(A.name);
    expect(await inboundPeeks(A, roomId)).toHaveLength(1);
  });

  it('gives the client a remote 404 or 403 unchanged, and 502 when the host is unreachable', async () => {
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const unknownRoom = await bob.peek(`!nosuchroom:${A.name}`);
    expect(unknownRoom.status).toBe(404);
    expect(unknownRoom.body.errcode).toBe('M_NOT_FOUND');

    const unknownAlias = await bob.peek(`#nosuchalias:${A.name}`);
    expect(unknownAlias.status).toBe(404);
    expect(unknownAlias.body.errcode).toBe('M_NOT_FOUND');

    const shared = await alice.createRoom({ preset: 'public_chat', room_alias_name: `shared${++n}` });
    const forbidden = await bob.peek(shared.room_id);
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.errcode).toBe('M_FORBIDDEN');

    const unreachable = await bob.peek(`!somewhere:${deadServer}`);
    expect(unreachable.status).toBe(502);
    expect(unreachable.body.errcode).toBe('M_UNKNOWN');
    expect(unreachable.body.error).toEqual(expect.any(String));

    expect(await inboundPeeks(A, shared.room_id)).toEqual([]);
    expect(await outboundPeeks(B, shared.room_id)).toEqual([]);
  });
});

describe('ending the federated peek', () => {
  it('sends DELETE only when the last local peek on the room ends, and A stops sending', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const bob2 = await bob.login();
    expect((await bob.peek(alias)).status).toBe(200);
    expect((await bob2.peek(alias)).status).toBe(200);
    const [out] = await outboundPeeks(B, roomId);
    expect(await inboundPeeks(A, roomId)).toHaveLength(1);

    // One device unpeeks: the other (syncing, so not idle) still needs the room, so A
    // keeps the peek.
    const f2 = new SyncFollower(bob2, 250);
    await f2.once(0);
    const stopSyncing = f2.keepSyncing();
    try {
      expect((await bob.unpeek(roomId)).status).toBe(200);
      await holdsFor('A keeps the peek while bob2 peeks', async () => (await inboundPeeks(A, roomId)).length === 1, 2_000);
      await alice.send(roomId, 'still peeking');
      await f2.until('bob2 sees the message', () => f2.messages(roomId).includes('still peeking'));
    } finally {
      await stopSyncing();
    }

    // The last one unpeeks: B sends DELETE within seconds, A records remote_deleted.
    const unpeekedAt = Date.now();
    expect((await bob2.unpeek(roomId)).status).toBe(200);
    await waitFor('A drops the inbound peek', async () => (await inboundPeeks(A, roomId)).length === 0, 10_000);
    expect(Date.now() - unpeekedAt).toBeLessThan(8_000);
    const atA = await expiriesOnce(A, roomId, 'inbound');
    expect(atA.map((r) => [r.serverName, r.peekId, r.reason])).toEqual([[B.name, out!.peekId, 'remote_deleted']]);
    const atB = await expiriesOnce(B, roomId, 'outbound');
    expect(atB.map((r) => r.reason)).toEqual(['unpeeked']);
    expect(await outboundPeeks(B, roomId)).toEqual([]);

    // A stops sending: its next message never reaches B.
    const before = await copyAtB(roomId);
    const after = await alice.send(roomId, 'after the end');
    await holdsFor('B receives nothing more', async () => (await copyAtB(roomId)).length === before.length, 1_500);
    expect(await copyAtB(roomId)).not.toContain(after);
  });

  it('ends the peek after the idle window when no peeking device syncs, and restarts it on the next sync', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const f = new SyncFollower(bob, 500);
    await f.once(0);
    expect((await bob.peek(alias)).status).toBe(200);
    const [first] = await outboundPeeks(B, roomId);
    await f.until('the room', () => f.messages(roomId).includes('hello'));
    await alice.send(roomId, 'while syncing');
    await f.until('a new message', () => f.messages(roomId).includes('while syncing'));

    // The device stops syncing: B ends its peek (no_active_peekers) after the idle window.
    const lastSync = Date.now();
    await f.once(0);
    await waitFor('B ends the idle peek', async () => (await outboundPeeks(B, roomId)).length === 0, IDLE_MS + 8_000);
    expect(Date.now() - lastSync).toBeGreaterThanOrEqual(IDLE_MS - 50);
    expect((await expiriesOnce(B, roomId, 'outbound')).map((r) => r.reason)).toEqual(['no_active_peekers']);
    await waitFor('A records the DELETE', async () => (await expiries(A, roomId, 'inbound')).some((r) => r.reason === 'remote_deleted' && r.peekId === first!.peekId), 5_000);
    await waitFor('A drops the peek', async () => (await inboundPeeks(A, roomId)).length === 0, 5_000);
    // The device's own peek is still live: no leave entry.
    expect(await expiries(B, roomId, 'device')).toEqual([]);

    // A message while nobody watches, then the device syncs again: the peek restarts.
    await alice.send(roomId, 'while idle');
    await f.once(0);
    const [second] = await waitFor(
      'B restarts the peek',
      async () => {
        const rows = await outboundPeeks(B, roomId);
        return rows.length === 1 ? rows : undefined;
      },
      5_000,
    );
    expect(second!.peekId).not.toBe(first!.peekId);
    const inbound = await inboundPeeks(A, roomId);
    expect(inbound.map((r) => [r.serverName, r.peekId])).toEqual([[B.name, second!.peekId]]);
    await f.until('the latest event from the new snapshot', () => f.messages(roomId).includes('while idle'));
    await alice.send(roomId, 'back');
    await f.until('new messages again', () => f.messages(roomId).includes('back'));
    expect(f.left.has(roomId)).toBe(false);
    // Nothing was shown twice.
    const ids = f.eventIds(roomId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('relays the event that ends world_readable, after which B ends its local peeks and its federated peek', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const f = new SyncFollower(bob, 500);
    await f.once(0);
    expect((await bob.peek(alias)).status).toBe(200);
    const stopSyncing = f.keepSyncing();
    try {
      await f.until('the room', () => f.messages(roomId).includes('hello'));

      const hidden = await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'shared' });
      const secret = await alice.send(roomId, 'not for peekers');
      // B receives the visibility event, the device's peek ends (leave), the federated peek ends.
      await waitFor('B has the visibility event', async () => (await copyAtB(roomId)).includes(hidden), 10_000);
      await f.until('the leave entry', () => f.left.has(roomId), 10_000);
      await waitFor('B ends its federated peek', async () => (await outboundPeeks(B, roomId)).length === 0, 10_000);
      await waitFor('A has no peek of B', async () => (await inboundPeeks(A, roomId)).length === 0, 10_000);
      expect((await expiriesOnce(A, roomId, 'inbound')).map((r) => r.reason)).toEqual(['visibility_changed']);
      // What followed is never sent.
      await holdsFor('the later message stays on A', async () => !(await copyAtB(roomId)).includes(secret), 1_000);
    } finally {
      await stopSyncing();
    }
  });
});

describe('A expires a peek B stopped renewing', () => {
  it('expires it within two renewal intervals (timed_out), stops sending, and tells B once it is back', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const f = new SyncFollower(bob, 500);
    await f.once(0);
    expect((await bob.peek(alias)).status).toBe(200);
    await f.until('the room', () => f.messages(roomId).includes('hello'));
    const [out] = await outboundPeeks(B, roomId);

    // B is killed: no more renewals.
    await B.stop();
    const [row] = await inboundPeeks(A, roomId);
    const lastRenewal = row!.renewedAt;
    await waitFor('A expires the peek', async () => (await inboundPeeks(A, roomId)).length === 0, 3 * RENEWAL_MS + 3_000);
    const [expiry] = await expiriesOnce(A, roomId, 'inbound');
    expect(expiry).toMatchObject({ kind: 'inbound', serverName: B.name, peekId: out!.peekId, reason: 'timed_out' });
    expect(expiry!.at - lastRenewal).toBeLessThanOrEqual(2 * RENEWAL_MS);
    expect(expiry!.at - lastRenewal).toBeGreaterThanOrEqual(RENEWAL_MS);

    // B must hear of it: an expired_peeks entry waits for B.
    const outbox = await A.peekd.database.db.select().from(federationsenderOutbox).where(eq(federationsenderOutbox.destination, B.name));
    const pending = await A.peekd.database.db.select().from(federationsenderPendingTxns).where(eq(federationsenderPendingTxns.destination, B.name));
    const told = [
      ...outbox.filter((o) => o.kind === 'expired_peek').map((o) => ({ room_id: o.roomId, peek_id: o.peekId })),
      ...pending.flatMap((p) => ((p.body as any).expired_peeks ?? []) as unknown[]),
    ];
    expect(told).toContainEqual({ room_id: roomId, peek_id: out!.peekId });

    // A stops sending: messages after the expiry are queued for nobody.
    const late = [await alice.send(roomId, 'after the expiry 1'), await alice.send(roomId, 'after the expiry 2')];
    await holdsFor(
      'nothing queued for B',
      async () => {
        const p = await A.peekd.database.db.select().from(federationsenderPendingTxns).where(eq(federationsenderPendingTxns.destination, B.name));
        return !p.some((t) => JSON.stringify(t.body).includes('after the expiry'));
      },
      1_000,
    );

    // B comes back: A's transaction (expired_peeks) is delivered, and B's device, still
    // peeking, gets a fresh peek with a new ID.
    await B.start();
    const stopSyncing = f.keepSyncing();
    try {
      await waitFor(
        'A delivered the expired_peeks transaction',
        async () => {
          const o = await A.peekd.database.db.select().from(federationsenderOutbox).where(eq(federationsenderOutbox.destination, B.name));
          const p = await A.peekd.database.db.select().from(federationsenderPendingTxns).where(eq(federationsenderPendingTxns.destination, B.name));
          return o.length === 0 && !p.some((t) => JSON.stringify(t.body).includes(out!.peekId));
        },
        40_000,
      );
      const [fresh] = await waitFor(
        'B peeks again',
        async () => {
          const rows = await outboundPeeks(B, roomId);
          return rows.length === 1 && rows[0]!.peekId !== out!.peekId ? rows : undefined;
        },
        10_000,
      );
      await waitFor(
        'A knows only the new peek',
        async () => {
          const rows = await inboundPeeks(A, roomId);
          return rows.length === 1 && rows[0]!.peekId === fresh!.peekId;
        },
        10_000,
      );
      // The old peek ended at B too.
      expect((await expiriesOnce(B, roomId, 'outbound')).map((r) => r.peekId)).toContain(out!.peekId);
      const again = await alice.send(roomId, 'peeking again');
      await f.until('new messages after the fresh peek', () => f.messages(roomId).includes('peeking again'), 10_000);
      // What was sent while B's peek had lapsed reaches the device too, in order: the new
      // snapshot ends with the latest of it, and B asks A for the events between.
      expect(f.messages(roomId)).toEqual(['hello', 'after the expiry 1', 'after the expiry 2', 'peeking again']);
      expect((await copyAtB(roomId)).slice(-3)).toEqual([...late, again]);
    } finally {
      await stopSyncing();
    }
  });
});

describe('A restarted mid-peek, with a renewal interval not much longer than the restart', () => {
  it("loses and doubles no event at B, whether or not B's peek lapsed meanwhile", async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const f = new SyncFollower(bob, 250);
    await f.once(0);
    expect((await bob.peek(alias)).status).toBe(200);
    const stopSyncing = f.keepSyncing();
    try {
      await f.until('the room', () => f.messages(roomId).includes('hello'));
      const sent: string[] = [];
      for (let i = 0; i < 4; i++) sent.push(await alice.send(roomId, `before restart ${i}`));
      await A.restart();
      for (let i = 0; i < 4; i++) sent.push(await alice.send(roomId, `after restart ${i}`));
      await f.until('every message', () => f.messages(roomId).includes('after restart 3'), 20_000);
      expect(f.messages(roomId)).toEqual(['hello', ...[0, 1, 2, 3].map((i) => `before restart ${i}`), ...[0, 1, 2, 3].map((i) => `after restart ${i}`)]);
      expect(f.eventIds(roomId).slice(-8)).toEqual(sent);
      const copy = await copyAtB(roomId);
      expect(new Set(copy).size).toBe(copy.length);
      expect(copy.slice(-8)).toEqual(sent);
      // B still peeks (the same peek, or a new one if its own lapsed while A was away).
      await waitFor('B peeks the room', async () => (await outboundPeeks(B, roomId)).length === 1, 10_000);
      expect(f.left.has(roomId)).toBe(false);
    } finally {
      await stopSyncing();
    }
  });
});
