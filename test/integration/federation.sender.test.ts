// The federation sender: per destination, an ordered, durable queue. Fan-out to two
// peeking servers, one transaction per PDU per server however many peeks it holds, a peer
// that is down and back, and the host restarted mid-peek — every event arrives once, in
// order, and a transaction is never lost or repeated.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { eventIdForPdu } from '../../src/crypto/index.ts';
import { syncapiRoomEvents } from '../../src/store/schema.ts';
import { outboundPeeks, peekPath, inboundPeeks, startFederation, SyncFollower, waitFor, type Federation, type FakeServer, type FedServer } from '../helpers/federation.ts';
import { TestUser } from '../helpers/matrix.ts';

// Long enough that a peer (or the host) that is down for a moment keeps its peek.
const RENEWAL_MS = 6_000;

let fed: Federation;
let A: FedServer;
let B: FedServer;
let C: FedServer;
let F: FakeServer;
let alice: TestUser;
let n = 0;

beforeAll(async () => {
  fed = await startFederation({ servers: 3, fakes: 1, env: { PEEKD_INBOUND_RENEWAL_INTERVAL_MS: String(RENEWAL_MS), PEEKD_OUTBOUND_IDLE_MS: '30000' } });
  [A, B, C] = fed.servers as [FedServer, FedServer, FedServer];
  [F] = fed.fakes as [FakeServer];
  alice = await TestUser.register(A.url, 'alice');
});

afterAll(async () => {
  await fed?.cleanup();
});

async function hostedRoom() {
  const alias = `room${++n}`;
  const room = await alice.createWorldReadableRoom({ room_alias_name: alias });
  await alice.send(room.room_id, 'hello');
  return { roomId: room.room_id, alias: `#${alias}:${A.name}` };
}

async function copyAt(s: FedServer, roomId: string): Promise<string[]> {
  const rows = await s.peekd.database.db.select().from(syncapiRoomEvents).where(eq(syncapiRoomEvents.roomId, roomId));
  return rows.sort((a, b) => a.seq - b.seq).map((r) => r.eventId);
}

/** Bodies of the m.room.message PDUs among `pdus`. */
const bodies = (pdus: any[]) => pdus.filter((p) => p.type === 'm.room.message').map((p) => p.content.body);

describe('fan-out', () => {
  it('two remote servers peeking one room each receive every event once, in order', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const carol = await TestUser.register(C.url, `carol${++n}`);
    const fb = new SyncFollower(bob, 1_000);
    const fc = new SyncFollower(carol, 1_000);
    await Promise.all([fb.once(0), fc.once(0)]);
    expect((await bob.peek(alias)).status).toBe(200);
    expect((await carol.peek(roomId)).status).toBe(200);
    expect((await inboundPeeks(A, roomId)).map((r) => r.serverName).sort()).toEqual([B.name, C.name].sort());

    const sent: string[] = [];
    for (let i = 0; i < 12; i++) sent.push(await alice.send(roomId, `fan${i}`));
    await Promise.all([fb.until('all at B', () => fb.messages(roomId).includes('fan11')), fc.until('all at C', () => fc.messages(roomId).includes('fan11'))]);
    for (const f of [fb, fc]) {
      expect(f.messages(roomId)).toEqual(['hello', ...sent.map((_, i) => `fan${i}`)]);
      const ids = f.eventIds(roomId);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.slice(-12)).toEqual(sent);
    }
    const [atB, atC] = [await copyAt(B, roomId), await copyAt(C, roomId)];
    expect(atB).toEqual(atC);
    expect(atB.slice(-12)).toEqual(sent);
  });

  it('sends each PDU once to a server that holds several peeks on the room', async () => {
    const { roomId } = await hostedRoom();
    for (const peekId of ['one', 'two']) {
      const r = await F.send(A.name, 'PUT', peekPath(roomId, peekId), {});
      expect(r.status).toBe(200);
    }
    expect(await inboundPeeks(A, roomId)).toHaveLength(2);
    const stop = [F.keepRenewing(A.name, roomId, 'one', 1_500), F.keepRenewing(A.name, roomId, 'two', 1_500)];
    try {
      const before = F.transactions(A.name).length;
      const sent: string[] = [];
      for (let i = 0; i < 6; i++) sent.push(await alice.send(roomId, `twice${i}`));
      await waitFor('every PDU at F', () => bodies(F.pdus(A.name)).includes('twice5'), 10_000);
      const pdus = F.transactions(A.name)
        .slice(before)
        .flatMap((t) => t.body.pdus as any[])
        .filter((p) => p.room_id === roomId);
      expect(pdus.map((p) => eventIdForPdu(p))).toEqual(sent);
      for (const t of F.transactions(A.name).slice(before)) {
        expect(t.body).toMatchObject({ origin: A.name, origin_server_ts: expect.any(Number), edus: [] });
        for (const p of t.body.pdus) expect(p).not.toHaveProperty('event_id');
      }
    } finally {
      await Promise.all(stop.map((s) => s()));
    }
  });
});

describe('delivery while a peer is down', () => {
  it('retries with backoff and delivers every queued event once, in order, when the peer is back', async () => {
    const { roomId } = await hostedRoom();
    expect((await F.send(A.name, 'PUT', peekPath(roomId, 'down1'), {})).status).toBe(200);
    const stop = F.keepRenewing(A.name, roomId, 'down1', 1_500);
    try {
      const txnsBefore = F.transactions(A.name).length;
      F.down = true;
      const refusedBefore = F.refused.length;
      const sent: string[] = [];
      for (let i = 0; i < 8; i++) sent.push(await alice.send(roomId, `queued${i}`));
      // A keeps trying while F is down, and backs off.
      await waitFor('A retried at least three times', () => F.refused.slice(refusedBefore).filter((r) => r.uri.startsWith('/_matrix/federation/v1/send/')).length >= 3, 10_000);
      const attempts = F.refused.slice(refusedBefore).filter((r) => r.uri.startsWith('/_matrix/federation/v1/send/'));
      // The same transaction is retried (same ID and body), not rebuilt.
      expect(new Set(attempts.map((a) => a.uri)).size).toBe(1);
      F.down = false;
      await waitFor('every queued event at F', () => bodies(F.pdus(A.name)).includes('queued7'), 40_000);
      const txns = F.transactions(A.name).slice(txnsBefore);
      expect(txns[0]!.uri).toBe(attempts[0]!.uri);
      const pdus = txns.flatMap((t) => t.body.pdus as any[]).filter((p) => p.room_id === roomId);
      expect(pdus.map((p) => eventIdForPdu(p))).toEqual(sent);
      // No transaction ID was accepted twice.
      const ids = F.transactions(A.name).map((t) => t.uri);
      expect(new Set(ids).size).toBe(ids.length);
    } finally {
      F.down = false;
      await stop();
    }
  });

  it('a real peer that was down for a moment gets what it missed, once and in order', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const f = new SyncFollower(bob, 1_000);
    await f.once(0);
    expect((await bob.peek(alias)).status).toBe(200);
    await f.until('the room', () => f.messages(roomId).includes('hello'));
    await B.stop();
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.send(roomId, `missed${i}`));
    await B.start();
    for (let i = 5; i < 8; i++) sent.push(await alice.send(roomId, `missed${i}`));
    await f.until('every missed message', () => f.messages(roomId).includes('missed7'), 40_000);
    expect(f.messages(roomId)).toEqual(['hello', ...sent.map((_, i) => `missed${i}`)]);
    expect(f.eventIds(roomId).slice(-8)).toEqual(sent);
    const copy = await copyAt(B, roomId);
    expect(new Set(copy).size).toBe(copy.length);
    expect(copy.slice(-8)).toEqual(sent);
  });
});

describe('the host restarted mid-peek', () => {
  it('loses and doubles no event at the peeking server', async () => {
    const { roomId, alias } = await hostedRoom();
    const bob = await TestUser.register(B.url, `bob${++n}`);
    const f = new SyncFollower(bob, 1_000);
    await f.once(0);
    expect((await bob.peek(alias)).status).toBe(200);
    await f.until('the room', () => f.messages(roomId).includes('hello'));
    const [peek] = await outboundPeeks(B, roomId);

    // Messages, then A stops at once: some may not have gone out yet.
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.send(roomId, `r${i}`));
    await A.restart();
    for (let i = 5; i < 10; i++) sent.push(await alice.send(roomId, `r${i}`));
    await f.until('every message', () => f.messages(roomId).includes('r9'), 30_000);
    expect(f.messages(roomId)).toEqual(['hello', ...sent.map((_, i) => `r${i}`)]);
    expect(f.eventIds(roomId).slice(-10)).toEqual(sent);
    const copy = await copyAt(B, roomId);
    expect(new Set(copy).size).toBe(copy.length);
    expect(copy.slice(-10)).toEqual(sent);
    // The same federated peek carried on.
    expect((await outboundPeeks(B, roomId)).map((r) => r.peekId)).toEqual([peek!.peekId]);
  });

  it('re-sends a pending transaction with the same ID after a restart, and never repeats one', async () => {
    const { roomId } = await hostedRoom();
    expect((await F.send(A.name, 'PUT', peekPath(roomId, 'rst'), {})).status).toBe(200);
    const stop = F.keepRenewing(A.name, roomId, 'rst', 1_500);
    try {
      const txnsBefore = F.transactions(A.name).length;
      F.down = true;
      const refusedBefore = F.refused.length;
      const sent: string[] = [];
      for (let i = 0; i < 3; i++) sent.push(await alice.send(roomId, `p${i}`));
      const attempt = await waitFor(
        'a refused attempt',
        () => F.refused.slice(refusedBefore).find((r) => r.uri.startsWith('/_matrix/federation/v1/send/') && bodies(r.body?.pdus ?? []).includes('p0')),
        10_000,
      );
      const pendingUri = attempt.uri;
      await A.restart();
      F.down = false;
      for (let i = 3; i < 5; i++) sent.push(await alice.send(roomId, `p${i}`));
      await waitFor('all at F', () => bodies(F.pdus(A.name)).includes('p4'), 30_000);
      const txns = F.transactions(A.name).slice(txnsBefore);
      expect(txns.map((t) => t.uri)).toContain(pendingUri);
      const pdus = txns.flatMap((t) => t.body.pdus as any[]).filter((p) => p.room_id === roomId);
      expect(pdus.map((p) => eventIdForPdu(p))).toEqual(sent);
      const ids = F.transactions(A.name).map((t) => t.uri);
      expect(new Set(ids).size).toBe(ids.length);
    } finally {
      F.down = false;
      await stop();
    }
  });
});
