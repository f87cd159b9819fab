// Outbound peeks (MSC2444) against a scripted host: A is a real peekd whose user peeks
// rooms hosted by F, a fake remote made of our own crypto module. What A sends (the PUT
// and its `ver`s, renewals, the fallback to a repeated PUT, DELETE), how it checks the
// snapshot and each PDU the host sends, the renewal interval clamped to a sane range, and
// expired_peeks from the host.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { computeContentHash, eventIdForPdu, generateSigningKey } from '../../src/crypto/index.ts';
import { MAX_RENEWAL_INTERVAL_MS, MIN_RENEWAL_INTERVAL_MS, SUPPORTED_ROOM_VERSIONS } from '../../src/federation/outboundPeeks.ts';
import {
  expiries,
  expiriesOnce,
  FakeRoom,
  holdsFor,
  outboundPeeks,
  startFederation,
  SyncFollower,
  waitFor,
  type FakeServer,
  type Federation,
  type FedServer,
  type RecordedRequest,
  roomCopy,
} from '../helpers/federation.ts';
import { roomsIn, TestUser } from '../helpers/matrix.ts';

let fed: Federation;
let A: FedServer;
let F: FakeServer;
let G: FakeServer;
let n = 0;

interface Hosted {
  room: FakeRoom;
  renewalMs: number;
  /** Scripted answers; undefined = the normal one. */
  onPut?: (r: RecordedRequest) => { status: number; body?: unknown } | undefined;
  onRenew?: (r: RecordedRequest) => { status: number; body?: unknown } | undefined;
  /** Peek IDs A holds on the room, as the host sees them. */
  live: Set<string>;
}
const hosted = new Map<string, Hosted>();

interface PeekRequest {
  kind: 'put' | 'renew' | 'delete';
  roomId: string;
  peekId: string;
  ver: string[];
  req: RecordedRequest;
}

function parsePeekRequest(r: RecordedRequest): PeekRequest | undefined {
  const url = new URL(r.uri, 'http://x');
  const m = url.pathname.match(/^\/_matrix\/federation\/v1\/peek\/([^/]+)\/([^/]+)(\/renew)?$/);
  if (!m) return undefined;
  const kind = m[3] ? 'renew' : r.method === 'PUT' ? 'put' : r.method === 'DELETE' ? 'delete' : undefined;
  if (!kind) return undefined;
  return { kind, roomId: decodeURIComponent(m[1]!), peekId: decodeURIComponent(m[2]!), ver: url.searchParams.getAll('ver'), req: r };
}

/** The peek requests F received for `roomId`, in order. */
function peekRequests(roomId: string, kind?: PeekRequest['kind']): PeekRequest[] {
  return F.requests.map(parsePeekRequest).filter((p): p is PeekRequest => p !== undefined && p.roomId === roomId && (!kind || p.kind === kind));
}

beforeAll(async () => {
  fed = await startFederation({ servers: 1, fakes: 2, env: { PEEKD_OUTBOUND_IDLE_MS: '30000' } });
  [A] = fed.servers as [FedServer];
  [F, G] = fed.fakes as [FakeServer, FakeServer];
  F.handler = (r) => {
    const p = parsePeekRequest(r);
    if (!p || r.verifiedOrigin !== A.name) return p ? { status: 401, body: { errcode: 'M_UNAUTHORIZED', error: 'unsigned' } } : undefined;
    const h = hosted.get(p.roomId);
    if (!h) return { status: 404, body: { errcode: 'M_NOT_FOUND', error: 'unknown room' } };
    if (p.kind === 'put') {
      const scripted = h.onPut?.(r);
      if (scripted) return scripted;
      h.live.add(p.peekId);
      return { status: 200, body: h.room.snapshot(h.renewalMs) };
    }
    if (p.kind === 'renew') {
      const scripted = h.onRenew?.(r);
      if (scripted) return scripted;
      if (!h.live.has(p.peekId)) return { status: 404, body: { errcode: 'M_NOT_FOUND', error: 'unknown peek' } };
      return { status: 200, body: { renewal_interval: h.renewalMs } };
    }
    if (!h.live.delete(p.peekId)) return { status: 404, body: { errcode: 'M_NOT_FOUND', error: 'unknown peek' } };
    return { status: 200, body: {} };
  };
});

afterAll(async () => {
  await fed?.cleanup();
});

beforeEach(() => {
  F.requests.length = 0;
});

function host(room: FakeRoom, renewalMs = 60_000, script: Partial<Hosted> = {}): Hosted {
  const h: Hosted = { room, renewalMs, live: new Set(), ...script };
  hosted.set(room.roomId, h);
  return h;
}

const copyAtA = (roomId: string) => roomCopy(A, roomId);

async function peeker() {
  const bob = await TestUser.register(A.url, `bob${++n}`);
  const f = new SyncFollower(bob, 500);
  await f.once(0);
  return { bob, f };
}

/** A signed /send from `from` to A. */
function sendTxn(from: FakeServer, pdus: unknown[], extra: Record<string, unknown> = {}, txnId = `txn${++n}`) {
  return from.send(A.name, 'PUT', `/_matrix/federation/v1/send/${txnId}`, { origin: from.name, origin_server_ts: Date.now(), pdus, edus: [], ...extra });
}

describe('starting the peek', () => {
  it('PUTs {} under an 8-character peek ID with every room version it understands, signed, and serves the snapshot', async () => {
    const room = new FakeRoom(F);
    host(room);
    const { bob, f } = await peeker();
    const p = await bob.peek(room.roomId);
    expect(p.status).toBe(200);
    const [put] = peekRequests(room.roomId, 'put');
    expect(put!.req.verifiedOrigin).toBe(A.name);
    expect(put!.req.text).toBe('{}');
    expect(put!.req.headers['content-type']).toMatch(/application\/json/);
    expect(put!.peekId).toMatch(/^[0-9A-Za-z.=_-]{8}$/);
    expect([...put!.ver].sort()).toEqual([...SUPPORTED_ROOM_VERSIONS].sort());
    expect(put!.ver).toContain('10');

    await f.until('the room under peek', () => f.peeked.has(room.roomId));
    const tl = f.peeked.get(room.roomId)!;
    // Like a new join: the whole (short) history, from m.room.create on.
    expect(tl[0].type).toBe('m.room.create');
    expect(tl.map((e) => e.event_id)).toEqual(room.events.map((e) => e.id));
    expect(f.messages(room.roomId)).toEqual(['hello from the fake']);
    const [row] = await outboundPeeks(A, room.roomId);
    expect(row).toMatchObject({ serverName: F.name, peekId: put!.peekId, renewalIntervalMs: 60_000 });
  });

  // The second alias holds a character the URL parser percent-encodes on the wire (`'`
  // → %27): the request must be signed as it is sent, or G refuses the signature.
  it.each([
    ['a plain alias', ''],
    ["an alias with a ' in it", "it's-"],
  ])("peeks through the alias's server when the room ID names another: %s", async (_what, prefix) => {
    const room = new FakeRoom(F);
    host(room);
    const tag = `fake${++n}`;
    const alias = `#${prefix}${tag}:${G.name}`;
    G.handler = (r) => (r.uri.startsWith('/_matrix/federation/v1/query/directory') && r.verifiedOrigin === A.name ? { status: 200, body: { room_id: room.roomId, servers: [F.name] } } : undefined);
    try {
      const { bob } = await peeker();
      const p = await bob.peek(alias);
      expect(p.status).toBe(200);
      expect(p.body.room_id).toBe(room.roomId);
      const dir = G.requests.find((r) => r.uri.startsWith('/_matrix/federation/v1/query/directory') && r.uri.includes(tag))!;
      expect(dir.verifiedOrigin).toBe(A.name);
      expect(new URL(dir.uri, 'http://x').searchParams.get('room_alias')).toBe(alias);
      expect(peekRequests(room.roomId, 'put')).toHaveLength(1);
    } finally {
      G.handler = () => undefined;
    }
  });

  it("asks the servers given in `servers` or `server_name` before the room ID's server", async () => {
    // A room whose ID names G, which does not know it; F hosts it.
    for (const [i, via] of [
      (bob: TestUser, roomId: string) => bob.peek(roomId, { servers: [F.name] }),
      (bob: TestUser, roomId: string) => bob.req('POST', `/_matrix/client/v3/peek/${encodeURIComponent(roomId)}?server_name=${encodeURIComponent(F.name)}`, {}),
    ].entries()) {
      const room = new FakeRoom(F, { roomServer: G.name });
      host(room);
      G.requests.length = 0;
      const { bob, f } = await peeker();
      const p = await via(bob, room.roomId);
      expect(p.status, `variant ${i}`).toBe(200);
      expect(peekRequests(room.roomId, 'put')).toHaveLength(1);
      expect(G.requests.filter((r) => r.uri.startsWith('/_matrix/federation/v1/peek/'))).toEqual([]);
      expect((await outboundPeeks(A, room.roomId))[0]?.serverName).toBe(F.name);
      await f.until('the room', () => f.messages(room.roomId).includes('hello from the fake'));
    }
  });

  it("passes a host's 403, 404 and M_INCOMPATIBLE_ROOM_VERSION on to the client, keeping nothing", async () => {
    const { bob } = await peeker();
    const forbidden = new FakeRoom(F);
    host(forbidden, 60_000, { onPut: () => ({ status: 403, body: { errcode: 'M_FORBIDDEN', error: 'not world_readable' } }) });
    const r403 = await bob.peek(forbidden.roomId);
    expect([r403.status, r403.body.errcode]).toEqual([403, 'M_FORBIDDEN']);
    const r404 = await bob.peek(`!unknown${++n}:${F.name}`);
    expect([r404.status, r404.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    const incompatible = new FakeRoom(F);
    host(incompatible, 60_000, { onPut: () => ({ status: 400, body: { errcode: 'M_INCOMPATIBLE_ROOM_VERSION', error: 'v99', room_version: '99' } }) });
    const rVer = await bob.peek(incompatible.roomId);
    expect([rVer.status, rVer.body.errcode]).toEqual([400, 'M_INCOMPATIBLE_ROOM_VERSION']);
    const broken = new FakeRoom(F);
    host(broken, 60_000, { onPut: () => ({ status: 500, body: { errcode: 'M_UNKNOWN', error: 'oops' } }) });
    const r502 = await bob.peek(broken.roomId);
    expect([r502.status, r502.body.errcode]).toEqual([502, 'M_UNKNOWN']);
    for (const roomId of [forbidden.roomId, incompatible.roomId, broken.roomId]) {
      expect(await outboundPeeks(A, roomId)).toEqual([]);
      expect(await copyAtA(roomId)).toEqual([]);
    }
  });

  const forgeries: [string, (room: FakeRoom) => Record<string, unknown>][] = [
    [
      'an event whose signed fields were changed after signing',
      (room) => {
        const s = room.snapshot(60_000) as any;
        s.state = s.state.map((p: any) => (p.type === 'm.room.name' ? { ...p, origin_server_ts: p.origin_server_ts + 1 } : p));
        return s;
      },
    ],
    [
      'an event signed with a key the host does not publish',
      (room) => {
        const forged = room.build('m.room.topic', { topic: 'forged' }, '', { key: generateSigningKey() });
        const s = room.snapshot(60_000) as any;
        return { ...s, state: [...s.state, forged.pdu], common_state_ids: [...s.common_state_ids, forged.id] };
      },
    ],
    [
      "an event signed by another server for the host's user",
      (room) => {
        const forged = room.build('m.room.topic', { topic: 'forged' }, '', { key: G.key, signer: G.name });
        const s = room.snapshot(60_000) as any;
        return { ...s, state: [...s.state, forged.pdu] };
      },
    ],
    [
      'no create event',
      (room) => {
        const s = room.snapshot(60_000) as any;
        const noCreate = (list: any[]) => list.filter((p) => p.type !== 'm.room.create');
        return { ...s, state: noCreate(s.state), events: noCreate(s.events), auth_chain: [] };
      },
    ],
    [
      'an event of another room',
      (room) => {
        const other = new FakeRoom(F);
        const s = room.snapshot(60_000) as any;
        return { ...s, state: [...s.state, other.events[5]!.pdu] };
      },
    ],
    [
      'an event whose content does not match its hash (changed on the way, or passed on redacted)',
      (room) => {
        const changed = (p: any) => (p.type === 'm.room.name' ? { ...p, content: { name: 'changed on the way' } } : p);
        const s = room.snapshot(60_000) as any;
        return { ...s, state: s.state.map(changed), events: s.events.map(changed) };
      },
    ],
    ['a room version it does not understand', (room) => ({ ...room.snapshot(60_000), room_version: '99' })],
    ["a room version (understood) that is not its create event's", (room) => ({ ...room.snapshot(60_000), room_version: '9' })],
  ];

  it.each(forgeries)('refuses a snapshot with %s: 502 to the client, nothing kept', async (_what, forge) => {
    const room = new FakeRoom(F);
    host(room, 60_000, { onPut: () => ({ status: 200, body: forge(room) }) });
    const { bob, f } = await peeker();
    const r = await bob.peek(room.roomId);
    expect(r.status).toBe(502);
    expect(r.body.errcode).toBe('M_UNKNOWN');
    expect(await outboundPeeks(A, room.roomId)).toEqual([]);
    expect(await copyAtA(room.roomId)).toEqual([]);
    await f.once(0);
    expect(f.peeked.has(room.roomId)).toBe(false);
  });
});

describe('renewing', () => {
  it("clamps the host's renewal_interval to a sane range and renews through /renew with {}", async () => {
    const dendrite = new FakeRoom(F);
    host(dendrite, 3_600_000_000); // what Dendrite sends: about 41.7 days
    const eager = new FakeRoom(F);
    host(eager, 10);
    const { bob } = await peeker();
    expect((await bob.peek(dendrite.roomId)).status).toBe(200);
    expect((await bob.peek(eager.roomId)).status).toBe(200);
    expect((await outboundPeeks(A, dendrite.roomId))[0]!.renewalIntervalMs).toBe(MAX_RENEWAL_INTERVAL_MS);
    expect((await outboundPeeks(A, eager.roomId))[0]!.renewalIntervalMs).toBe(MIN_RENEWAL_INTERVAL_MS);
    // The 1 s floor: renewals come about twice a second, not a hundred times.
    const started = Date.now();
    await waitFor('renewals', () => peekRequests(eager.roomId, 'renew').length >= 2, 5_000);
    const renewals = peekRequests(eager.roomId, 'renew');
    expect(renewals.length).toBeLessThanOrEqual(Math.ceil((Date.now() - started) / 250) + 1);
    for (const r of renewals) {
      expect(r.req.method).toBe('POST');
      expect(r.req.text).toBe('{}');
      expect(r.req.verifiedOrigin).toBe(A.name);
    }
    expect(peekRequests(dendrite.roomId, 'renew')).toEqual([]);
  });

  it.each([
    ['404 M_UNRECOGNIZED', { status: 404, body: { errcode: 'M_UNRECOGNIZED', error: 'unrecognized request' } }],
    ['405', { status: 405, body: { errcode: 'M_UNRECOGNIZED', error: 'method not allowed' } }],
  ])('falls back to a repeated PUT of the same peek ID when /renew answers %s', async (_what, answer) => {
    const room = new FakeRoom(F);
    host(room, 2_000, { onRenew: () => answer });
    const { bob } = await peeker();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    await waitFor('a repeated PUT', () => peekRequests(room.roomId, 'put').length >= 2, 5_000);
    const puts = peekRequests(room.roomId, 'put');
    expect(new Set(puts.map((p) => p.peekId)).size).toBe(1);
    expect(puts[1]!.req.text).toBe('{}');
    expect(peekRequests(room.roomId, 'renew').length).toBeGreaterThanOrEqual(1);
    // Still one live peek, with the same ID, and no DELETE.
    const rows = await outboundPeeks(A, room.roomId);
    expect(rows.map((r) => r.peekId)).toEqual([puts[0]!.peekId]);
    expect(peekRequests(room.roomId, 'delete')).toEqual([]);
  });

  it('peeks again under a new ID when the host has forgotten the peek (404 M_NOT_FOUND on /renew)', async () => {
    const room = new FakeRoom(F);
    const h = host(room, 2_000);
    const { bob, f } = await peeker();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    const first = peekRequests(room.roomId, 'put')[0]!.peekId;
    h.live.clear(); // the host expires it
    await f.once(0);
    await waitFor('a new peek', () => peekRequests(room.roomId, 'put').some((p) => p.peekId !== first), 8_000);
    const second = peekRequests(room.roomId, 'put').find((p) => p.peekId !== first)!.peekId;
    await waitFor('the new peek is the live one', async () => (await outboundPeeks(A, room.roomId))[0]?.peekId === second, 5_000);
    expect((await expiriesOnce(A, room.roomId, 'outbound')).map((e) => [e.peekId, e.reason])).toEqual([[first, 'remote_deleted']]);
  });
});

describe('what the host sends', () => {
  it('accepts each checked PDU from the host, wakes the device, and refuses, under their event IDs, one whose content does not match its hash and forged ones', async () => {
    const room = new FakeRoom(F);
    host(room);
    const { bob, f } = await peeker();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    await f.until('the room', () => f.peeked.has(room.roomId));

    const good1 = room.add('m.room.message', { msgtype: 'm.text', body: 'good one' });
    // The signature covers the redacted event only, so it still holds for content changed
    // in transit; the content hash does not, and the event is refused in every form.
    const tampered = room.build('m.room.message', { msgtype: 'm.text', body: 'tampered' });
    tampered.pdu.content = { msgtype: 'm.text', body: 'changed in transit' };
    // A signed field changed and the content hash made again to match: the hash holds, the
    // signature no longer does.
    const forged = room.build('m.room.message', { msgtype: 'm.text', body: 'forged' });
    forged.pdu.origin_server_ts += 1;
    forged.pdu.hashes = { sha256: computeContentHash(forged.pdu) };
    const forgedId = eventIdForPdu(forged.pdu);
    const unknownKey = room.build('m.room.message', { msgtype: 'm.text', body: 'unknown key' }, undefined, { key: generateSigningKey() });
    const good2 = room.add('m.room.message', { msgtype: 'm.text', body: 'good two' });

    const poll = bob.sync({ since: f.since, timeout: 5_000 });
    const sentAt = Date.now();
    // A changed copy of good1 in the same transaction has good1's event ID (the ID hashes the
    // redacted form): it is refused, and good1's answer stays.
    const copyOfGood1 = { ...good1.pdu, content: { msgtype: 'm.text', body: 'a changed copy' } };
    expect(eventIdForPdu(copyOfGood1)).toBe(good1.id);
    const res = await sendTxn(F, [good1.pdu, copyOfGood1, tampered.pdu, forged.pdu, unknownKey.pdu, good2.pdu]);
    expect(res.status).toBe(200);
    // Every PDU is answered under its event ID, the refused ones with their reason.
    expect(res.body.pdus).toEqual({
      [good1.id]: {},
      [tampered.id]: { error: expect.stringMatching(/hash/) },
      [forgedId]: { error: expect.stringMatching(/signature/) },
      [unknownKey.id]: { error: expect.stringMatching(/signature/) },
      [good2.id]: {},
    });
    const woken = await poll;
    expect(Date.now() - sentAt).toBeLessThan(4_000);
    expect(roomsIn(woken, 'peek')).toEqual([room.roomId]);
    f.since = woken.next_batch;
    // One /send is one decision (one envelope): the wake-up may already carry both.
    f.peeked.get(room.roomId)!.push(...(woken.rooms.peek[room.roomId]?.timeline?.events ?? []));
    await f.until('both good messages', () => f.messages(room.roomId).includes('good two'));
    const copy = await copyAtA(room.roomId);
    expect(copy.slice(-2)).toEqual([good1.id, good2.id]);
    expect(copy).not.toContain(tampered.id);
    expect(copy).not.toContain(unknownKey.id);
    expect(copy).not.toContain(forgedId);
    expect(f.peeked.get(room.roomId)!.find((e) => e.event_id === tampered.id)).toBeUndefined();
    expect(f.messages(room.roomId)).not.toContain('changed in transit');
    expect(f.messages(room.roomId)).not.toContain('a changed copy');
    // The same transaction again changes nothing.
    const again = await sendTxn(F, [good1.pdu, good2.pdu], {}, 'repeat-me');
    expect(again.status).toBe(200);
    const repeated = await sendTxn(F, [good1.pdu, good2.pdu], {}, 'repeat-me');
    expect(repeated.status).toBe(200);
    expect(await copyAtA(room.roomId)).toEqual(copy);
  });

  it('refuses a PDU holding U+0000 (no read model can store it), and takes one whose text only spells \\u0000', async () => {
    const room = new FakeRoom(F);
    host(room);
    const { bob, f } = await peeker();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    await f.until('the room', () => f.peeked.has(room.roomId));
    const nul = room.build('m.room.message', { msgtype: 'm.text', body: 'a real \u0000 here' });
    const spelled = room.add('m.room.message', { msgtype: 'm.text', body: 'the text \\u0000, six characters' });
    const res = await sendTxn(F, [nul.pdu, spelled.pdu]);
    expect(res.status).toBe(200);
    expect(res.body.pdus[spelled.id]).toEqual({});
    expect(Object.values(res.body.pdus).filter((v: any) => typeof v.error === 'string')).toEqual([{ error: expect.stringMatching(/U\+0000/) }]);
    await f.until('the spelled-out one', () => f.messages(room.roomId).includes('the text \\u0000, six characters'));
    expect(await copyAtA(room.roomId)).not.toContain(nul.id);
  });

  it('refuses PDUs of the room from a server it does not peek through, and unsigned or replayed transactions', async () => {
    const room = new FakeRoom(F);
    host(room);
    const { bob, f } = await peeker();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    await f.until('the room', () => f.peeked.has(room.roomId));
    const before = await copyAtA(room.roomId);

    // G sends a validly signed event of its own user into F's room.
    const intruder = room.build('m.room.message', { msgtype: 'm.text', body: 'from G' }, undefined, { sender: `@mallory:${G.name}`, key: G.key, signer: G.name });
    const fromG = await sendTxn(G, [intruder.pdu]);
    expect(fromG.status).toBe(200);
    expect(fromG.body.pdus[intruder.id].error).toEqual(expect.any(String));

    // F's own event, but unsigned, or under a header signed for another body.
    const genuine = room.build('m.room.message', { msgtype: 'm.text', body: 'genuine' });
    const body = { origin: F.name, origin_server_ts: Date.now(), pdus: [genuine.pdu], edus: [] };
    const unsigned = await F.send(A.name, 'PUT', '/_matrix/federation/v1/send/u1', body, { authorization: null });
    expect([unsigned.status, unsigned.body.errcode]).toEqual([401, 'M_UNAUTHORIZED']);
    const replayed = await F.send(A.name, 'PUT', '/_matrix/federation/v1/send/u2', body, {
      authorization: F.authorization(A.name, 'PUT', '/_matrix/federation/v1/send/u2', { ...body, pdus: [] }),
    });
    expect([replayed.status, replayed.body.errcode]).toEqual([401, 'M_UNAUTHORIZED']);
    const forgedSig = await F.send(A.name, 'PUT', '/_matrix/federation/v1/send/u3', body, { key: generateSigningKey() });
    expect([forgedSig.status, forgedSig.body.errcode]).toEqual([401, 'M_UNAUTHORIZED']);

    // A room nobody here peeks.
    const stranger = new FakeRoom(F);
    const notPeeked = await sendTxn(F, [stranger.events.at(-1)!.pdu]);
    expect(notPeeked.body.pdus[stranger.events.at(-1)!.id].error).toEqual(expect.any(String));
    // An event claiming a room this server hosts: answered under its event ID, never taken.
    const hosted = { ...stranger.events.at(-1)!.pdu, room_id: `!hosted:${A.name}` };
    const hostedAnswer = await sendTxn(F, [hosted]);
    expect(hostedAnswer.body.pdus).toEqual({ [eventIdForPdu(hosted)]: { error: expect.stringMatching(/hosts/) } });

    await holdsFor('nothing was appended', async () => (await copyAtA(room.roomId)).length === before.length, 500);
    expect(await copyAtA(stranger.roomId)).toEqual([]);
  });

  it('ends the federated peek on expired_peeks from the host (not from anyone else), then peeks again for the active device', async () => {
    const room = new FakeRoom(F);
    host(room);
    const { bob, f } = await peeker();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    const [row] = await outboundPeeks(A, room.roomId);

    // Someone else, or the wrong peek ID: ignored.
    expect((await sendTxn(G, [], { expired_peeks: [{ room_id: room.roomId, peek_id: row!.peekId }] })).status).toBe(200);
    expect((await sendTxn(F, [], { expired_peeks: [{ room_id: room.roomId, peek_id: 'notours' }] })).status).toBe(200);
    expect((await outboundPeeks(A, room.roomId)).map((r) => r.peekId)).toEqual([row!.peekId]);

    // The host: the peek ends (remote_deleted), without a DELETE back.
    expect((await sendTxn(F, [], { expired_peeks: [{ room_id: room.roomId, peek_id: row!.peekId }] })).status).toBe(200);
    await waitFor('the peek ended', async () => (await expiries(A, room.roomId, 'outbound')).length === 1, 5_000);
    expect((await expiries(A, room.roomId, 'outbound'))[0]).toMatchObject({ peekId: row!.peekId, reason: 'remote_deleted' });
    // The device still peeks and syncs: a new federated peek, under a new ID.
    await f.once(0);
    await waitFor(
      'a new peek',
      async () => {
        const rows = await outboundPeeks(A, room.roomId);
        return rows.length === 1 && rows[0]!.peekId !== row!.peekId;
      },
      8_000,
    );
    expect(peekRequests(room.roomId, 'delete')).toEqual([]);
  });
});

describe('ending', () => {
  it('DELETEs (no body, same peek ID) when the last device unpeeks, and never before', async () => {
    const room = new FakeRoom(F);
    const h = host(room);
    const { bob } = await peeker();
    const bob2 = await bob.login();
    expect((await bob.peek(room.roomId)).status).toBe(200);
    expect((await bob2.peek(room.roomId)).status).toBe(200);
    const peekId = peekRequests(room.roomId, 'put')[0]!.peekId;
    expect(peekRequests(room.roomId, 'put')).toHaveLength(1); // one federated peek for both devices
    await bob.unpeek(room.roomId);
    await holdsFor('no DELETE while bob2 peeks', () => peekRequests(room.roomId, 'delete').length === 0, 1_500);
    const unpeekedAt = Date.now();
    await bob2.unpeek(room.roomId);
    await waitFor('the DELETE', () => peekRequests(room.roomId, 'delete').length === 1, 10_000);
    expect(Date.now() - unpeekedAt).toBeLessThan(8_000);
    const [del] = peekRequests(room.roomId, 'delete');
    expect(del!.peekId).toBe(peekId);
    expect(del!.req.text).toBe('');
    expect(del!.req.headers['content-type']).toBeUndefined();
    expect(del!.req.verifiedOrigin).toBe(A.name);
    expect(h.live.size).toBe(0);
    await waitFor('A dropped the peek', async () => (await outboundPeeks(A, room.roomId)).length === 0, 5_000);
    expect((await expiriesOnce(A, room.roomId, 'outbound')).map((e) => e.reason)).toEqual(['unpeeked']);
  });
});
