// What a hostile remote server can try against the federation API, and what A (a real
// peekd) does: forged, misdirected and replayed requests are 401 with nothing written;
// PDUs whose sender's server did not sign them are refused; PDUs of rooms A does not
// peek through the sender are refused without fetching anybody's keys; one server cannot
// renew or end another's peek; a flood of peeks stops at the per-server cap; and
// oversized transactions are refused whole. The remote servers are FakeServers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, signingKeyFromSeed, keyVersionOf } from '../../src/crypto/index.ts';
import { randomBytes } from 'node:crypto';
import {
  auditRows,
  FakeRoom,
  holdsFor,
  inboundPeeks,
  peekPath,
  startFederation,
  waitFor,
  type FakeServer,
  type Federation,
  type FedServer,
  hostPeeksOf,
  roomCopy,
  peekedRoomOn,
} from '../helpers/federation.ts';
import { enc, TestUser } from '../helpers/matrix.ts';

const CAP = 4;
const MAX_BODY_BYTES = 256 * 1024;

let fed: Federation;
let A: FedServer;
/** The server A peeks rooms through, and the one most attacks come from. */
let F: FakeServer;
/** Another remote server: the victim of impersonation, or the intruder. */
let G: FakeServer;
/** A remote server that only floods peeks. */
let H: FakeServer;
/** A server no request should make A fetch keys from. */
let T: FakeServer;
let alice: TestUser;
let n = 0;
/** Rooms F hosts, by room ID. */
const hosted = new Map<string, FakeRoom>();

beforeAll(async () => {
  fed = await startFederation({
    servers: 1,
    fakes: 4,
    env: { PEEKD_MAX_INBOUND_PEEKS_PER_SERVER: String(CAP), PEEKD_MAX_FEDERATION_BODY_BYTES: String(MAX_BODY_BYTES), PEEKD_INBOUND_RENEWAL_INTERVAL_MS: '60000' },
  });
  [A] = fed.servers as [FedServer];
  [F, G, H, T] = fed.fakes as [FakeServer, FakeServer, FakeServer, FakeServer];
  alice = await TestUser.register(A.url, 'alice');
  // F hosts FakeRooms: PUT /peek answers the snapshot, /renew and DELETE succeed.
  F.handler = hostPeeksOf(hosted);
});

afterAll(async () => {
  await fed?.cleanup();
});

async function worldReadableRoom(): Promise<string> {
  const room = await alice.createWorldReadableRoom({ name: `Room ${++n}` });
  await alice.send(room.room_id, 'hello');
  return room.room_id;
}

/** Nothing about peeks was ever written for the room: no PEEKS events, no rows, no audit. */
async function untouched(roomId: string) {
  expect(await A.peekd.log.lastSeq('peeks', roomId)).toBe(0);
  expect(await inboundPeeks(A, roomId)).toEqual([]);
  expect(await auditRows(A, roomId)).toEqual([]);
}

/** A's copy of a remote room: its event IDs in order. */
const copyAtA = (roomId: string) => roomCopy(A, roomId);

/** A room F hosts that a device on A peeks: A accepts its PDUs from F. */
async function peekedRoomOfF(): Promise<FakeRoom> {
  return (await peekedRoomOn(A, F, hosted)).room;
}

function txn(from: FakeServer, pdus: unknown[], edus: unknown[] = []) {
  return { origin: from.name, origin_server_ts: Date.now(), pdus, edus };
}

const sendPath = () => `/_matrix/federation/v1/send/atk${++n}`;

function expect401(r: { status: number; body: any }) {
  expect(r.status).toBe(401);
  expect(r.body.errcode).toBe('M_UNAUTHORIZED');
}

describe('forged, misdirected and replayed requests', () => {
  let roomId: string;
  beforeAll(async () => {
    roomId = await worldReadableRoom();
  });

  it.each<[string, (uri: string) => Promise<{ status: number; body: any }>]>([
    ['a key F never published', (uri) => F.send(A.name, 'PUT', uri, {}, { key: generateSigningKey() })],
    ["F's key ID with another secret", (uri) => F.send(A.name, 'PUT', uri, {}, { key: signingKeyFromSeed(keyVersionOf(F.key), randomBytes(32)) })],
    ["G's name signed with F's key", (uri) => F.send(A.name, 'PUT', uri, {}, { authorization: F.authorization(A.name, 'PUT', uri, {}, F.key, G.name) })],
    [
      "G's name and key ID over F's signature",
      (uri) => F.send(A.name, 'PUT', uri, {}, { authorization: F.authorization(A.name, 'PUT', uri, {}, signingKeyFromSeed(keyVersionOf(G.key), randomBytes(32)), G.name) }),
    ],
  ])('a forged signature (%s) on PUT /peek: 401, nothing written', async (_what, attempt) => {
    expect401(await attempt(peekPath(roomId, `f${++n}`)));
    await untouched(roomId);
  });

  it('a request signed for another destination, or relabelled for us: 401, nothing written', async () => {
    const uri = peekPath(roomId, 'dst1');
    expect401(await F.send(A.name, 'PUT', uri, {}, { authorization: F.authorization(G.name, 'PUT', uri, {}) }));
    const relabelled = F.authorization(G.name, 'PUT', uri, {}).replace(`destination="${G.name}"`, `destination="${A.name}"`);
    expect401(await F.send(A.name, 'PUT', uri, {}, { authorization: relabelled }));
    // A header without destination (older servers) is checked against our own name: one
    // signed for G does not pass for us.
    const missing = F.authorization(G.name, 'PUT', uri, {}).replace(/destination="[^"]*",/, '');
    expect401(await F.send(A.name, 'PUT', uri, {}, { authorization: missing }));
    await untouched(roomId);
  });

  it('a valid header replayed with another body or on another URI: 401, nothing written', async () => {
    const uri = peekPath(roomId, 'rp1');
    const header = F.authorization(A.name, 'PUT', uri, {});
    expect401(await F.send(A.name, 'PUT', uri, {}, { authorization: header, rawBody: '{"x":1}' }));
    expect401(await F.send(A.name, 'PUT', peekPath(roomId, 'rp2'), {}, { authorization: header }));
    expect401(await F.send(A.name, 'PUT', peekPath(await worldReadableRoom(), 'rp1'), {}, { authorization: header }));
    expect401(await F.send(A.name, 'POST', `${peekPath(roomId, 'rp1', [])}/renew`, {}, { authorization: header }));
    await untouched(roomId);
    // The header is good for exactly what it signed.
    expect((await F.send(A.name, 'PUT', uri, {}, { authorization: header })).status).toBe(200);
    expect((await F.send(A.name, 'DELETE', peekPath(roomId, 'rp1', []))).status).toBe(200);
  });

  it('a forged or replayed /send: 401, the room copy unchanged', async () => {
    const room = await peekedRoomOfF();
    const before = await copyAtA(room.roomId);
    const e = room.build('m.room.message', { msgtype: 'm.text', body: 'smuggled' });
    const body = txn(F, [e.pdu]);
    const path = sendPath();
    expect401(await F.send(A.name, 'PUT', path, body, { key: generateSigningKey() }));
    expect401(await F.send(A.name, 'PUT', path, body, { authorization: F.authorization(A.name, 'PUT', path, txn(F, [])) }));
    expect401(await F.send(A.name, 'PUT', sendPath(), body, { authorization: F.authorization(A.name, 'PUT', path, body) }));
    expect401(await F.send(A.name, 'PUT', path, body, { authorization: F.authorization(G.name, 'PUT', path, body) }));
    await holdsFor('nothing reaches the copy', async () => (await copyAtA(room.roomId)).length === before.length, 500);
  });
});

describe('PDUs', () => {
  it("refuses a PDU whose sender's server did not sign it, whoever relays it", async () => {
    const room = await peekedRoomOfF();
    const before = await copyAtA(room.roomId);
    // Sender on G, signed by F only.
    const unsignedBySender = room.build('m.room.message', { msgtype: 'm.text', body: 'G never said this' }, undefined, { sender: `@mallory:${G.name}` });
    // Sender on F, signed only under G's name (with G's real key).
    const signedByOther = room.build('m.room.message', { msgtype: 'm.text', body: 'signed by G for F' }, undefined, { key: G.key, signer: G.name });
    // Sender on G, with F's key filed under G's name.
    const misfiled = room.build('m.room.message', { msgtype: 'm.text', body: 'F key as G' }, undefined, { sender: `@mallory:${G.name}`, signer: G.name });
    const good = room.build('m.room.message', { msgtype: 'm.text', body: 'genuine' });
    const r = await F.send(A.name, 'PUT', sendPath(), txn(F, [unsignedBySender.pdu, signedByOther.pdu, misfiled.pdu, good.pdu]));
    expect(r.status).toBe(200);
    expect(r.body.pdus[good.id]).toEqual({});
    const errors = Object.entries<any>(r.body.pdus).filter(([, v]) => typeof v.error === 'string');
    expect(errors).toHaveLength(3);
    for (const id of [unsignedBySender.id, signedByOther.id, misfiled.id]) expect(r.body.pdus[id]).not.toEqual({});
    await waitFor('the genuine PDU lands', async () => (await copyAtA(room.roomId)).includes(good.id));
    const after = await copyAtA(room.roomId);
    expect(after).toEqual([...before, good.id]);
  });

  it("refuses PDUs of a room A does not peek through the sender without fetching anybody's keys", async () => {
    // T "signs" events of a room nobody on A peeks; F and G relay them. Checking them
    // would mean fetching T's keys: A must refuse them first.
    const stranger = new FakeRoom(T);
    const peeked = await peekedRoomOfF();
    const intoPeeked = peeked.build('m.room.message', { msgtype: 'm.text', body: 'from T' }, undefined, { sender: `@t:${T.name}`, key: T.key, signer: T.name });
    T.keyFetches = 0;
    const viaF = await F.send(A.name, 'PUT', sendPath(), txn(F, [stranger.events.at(-1)!.pdu]));
    expect(viaF.status).toBe(200);
    expect(viaF.body.pdus[stranger.events.at(-1)!.id].error).toEqual(expect.any(String));
    // G relays into the room A peeks through F: not wanted from G either.
    const viaG = await G.send(A.name, 'PUT', sendPath(), txn(G, [intoPeeked.pdu, ...stranger.events.map((e) => e.pdu)]));
    expect(viaG.status).toBe(200);
    expect(viaG.body.pdus[intoPeeked.id].error).toEqual(expect.any(String));
    for (const e of stranger.events) expect(viaG.body.pdus[e.id].error).toEqual(expect.any(String));
    await holdsFor('T is never asked for its keys', () => T.keyFetches === 0, 500);
    expect(await copyAtA(stranger.roomId)).toEqual([]);
    expect(await copyAtA(peeked.roomId)).not.toContain(intoPeeked.id);
  });
});

describe("other servers' peeks", () => {
  it("G can neither renew nor delete F's peek (404 M_NOT_FOUND); F's peek is unchanged", async () => {
    const roomId = await worldReadableRoom();
    expect((await F.send(A.name, 'PUT', peekPath(roomId, 'mine'), {})).status).toBe(200);
    const [row] = await inboundPeeks(A, roomId);
    const audit = await auditRows(A, roomId);
    const renew = await G.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(roomId)}/mine/renew`, {});
    expect([renew.status, renew.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    const del = await G.send(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(roomId)}/mine`);
    expect([del.status, del.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    // G claiming F's name is a forgery: 401.
    expect401(
      await G.send(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(roomId)}/mine`, undefined, {
        authorization: G.authorization(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(roomId)}/mine`, undefined, G.key, F.name),
      }),
    );
    expect(await inboundPeeks(A, roomId)).toEqual([row]);
    expect(await auditRows(A, roomId)).toEqual(audit);
    expect((await F.send(A.name, 'DELETE', peekPath(roomId, 'mine', []))).status).toBe(200);
  });
});

describe('peek flood', () => {
  it('stops at the per-server cap with 429 M_LIMIT_EXCEEDED, writing nothing for the refused', async () => {
    const rooms = [await worldReadableRoom(), await worldReadableRoom(), await worldReadableRoom()];
    const attempts: { roomId: string; peekId: string }[] = [];
    for (const roomId of rooms) for (let i = 0; i < 4; i++) attempts.push({ roomId, peekId: `fl${i}` });
    const answers = [];
    for (const a of attempts) answers.push(await H.send(A.name, 'PUT', peekPath(a.roomId, a.peekId), {}));
    const ok = answers.filter((r) => r.status === 200);
    const refused = answers.filter((r) => r.status !== 200);
    expect(ok).toHaveLength(CAP);
    expect(refused).toHaveLength(attempts.length - CAP);
    for (const r of refused) expect([r.status, r.body.errcode]).toEqual([429, 'M_LIMIT_EXCEEDED']);
    const live = (await Promise.all(rooms.map((r) => inboundPeeks(A, r)))).flat().filter((p) => p.serverName === H.name);
    expect(live).toHaveLength(CAP);
    const started = (await Promise.all(rooms.map((r) => auditRows(A, r)))).flat().filter((a) => a.eventType === 'PeekStarted' && a.serverName === H.name);
    expect(started).toHaveLength(CAP);
    // Another server is not affected by H's flood.
    expect((await G.send(A.name, 'PUT', peekPath(rooms[2]!, 'g1'), {})).status).toBe(200);
    for (const p of live) await H.send(A.name, 'DELETE', peekPath(p.roomId, p.peekId, []));
    await G.send(A.name, 'DELETE', peekPath(rooms[2]!, 'g1', []));
  });

  // New peeks of one server start one at a time, so a concurrent burst meets the cap too.
  it('holds the cap against a concurrent burst too', async () => {
    const rooms = [await worldReadableRoom(), await worldReadableRoom()];
    const attempts = rooms.flatMap((roomId) => Array.from({ length: 6 }, (_, i) => ({ roomId, peekId: `cb${i}` })));
    const answers = await Promise.all(attempts.map((a) => H.send(A.name, 'PUT', peekPath(a.roomId, a.peekId), {})));
    const live = (await Promise.all(rooms.map((r) => inboundPeeks(A, r)))).flat().filter((p) => p.serverName === H.name);
    try {
      expect(answers.filter((r) => r.status === 200)).toHaveLength(CAP);
      for (const r of answers.filter((r) => r.status !== 200)) expect([r.status, r.body.errcode]).toEqual([429, 'M_LIMIT_EXCEEDED']);
      expect(live).toHaveLength(CAP);
    } finally {
      for (const p of live) await H.send(A.name, 'DELETE', peekPath(p.roomId, p.peekId, []));
    }
  });
});

describe('oversized transactions', () => {
  it.each<[string, (room: FakeRoom) => { pdus: unknown[]; edus: unknown[] }, number, string]>([
    ['51 PDUs', (room) => ({ pdus: Array.from({ length: 51 }, (_, i) => room.build('m.room.message', { msgtype: 'm.text', body: `p${i}` }).pdu), edus: [] }), 400, 'M_BAD_JSON'],
    [
      '101 EDUs',
      (room) => ({ pdus: [room.build('m.room.message', { msgtype: 'm.text', body: 'with edus' }).pdu], edus: Array.from({ length: 101 }, () => ({ edu_type: 'm.typing', content: {} })) }),
      400,
      'M_BAD_JSON',
    ],
    ['a body over the size limit', (room) => ({ pdus: [room.build('m.room.message', { msgtype: 'm.text', body: 'big', padding: 'x'.repeat(MAX_BODY_BYTES) }).pdu], edus: [] }), 413, 'M_TOO_LARGE'],
  ])('%s: refused whole, nothing written', async (_what, build, status, errcode) => {
    const room = await peekedRoomOfF();
    const before = await copyAtA(room.roomId);
    const { pdus, edus } = build(room);
    const r = await F.send(A.name, 'PUT', sendPath(), txn(F, pdus, edus));
    expect([r.status, r.body.errcode]).toEqual([status, errcode]);
    await holdsFor('nothing reaches the copy', async () => (await copyAtA(room.roomId)).length === before.length, 500);
    // (Just under the limits is fine.)
    const fits = room.build('m.room.message', { msgtype: 'm.text', body: 'fits' });
    expect((await F.send(A.name, 'PUT', sendPath(), txn(F, [fits.pdu]))).body.pdus[fits.id]).toEqual({});
  });

  it('50 PDUs and 100 EDUs are accepted', async () => {
    const room = await peekedRoomOfF();
    const pdus = Array.from({ length: 50 }, (_, i) => room.add('m.room.message', { msgtype: 'm.text', body: `ok${i}` }));
    const r = await F.send(
      A.name,
      'PUT',
      sendPath(),
      txn(
        F,
        pdus.map((p) => p.pdu),
        Array.from({ length: 100 }, () => ({ edu_type: 'm.typing', content: {} })),
      ),
    );
    expect(r.status).toBe(200);
    for (const p of pdus) expect(r.body.pdus[p.id]).toEqual({});
  });
});
