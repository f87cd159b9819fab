// The federation API as a remote server sees it: X-Matrix request authentication (and
// what A refuses: unsigned, forged, wrong-destination and replayed requests, all 401 with
// nothing written), remote key fetching and caching, and inbound peeks (MSC2444) — PUT,
// renew, DELETE, the snapshot's fields, every error MATRIX.md lists, the per-server cap,
// and the expiry of a peek that is not renewed, told to the peer in expired_peeks. The
// remote servers are fakes made of our own crypto module and a tiny node:http server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkContentHash,
  decodeBase64,
  encodeBase64Unpadded,
  eventIdForPdu,
  generateSigningKey,
  signingKeyFromSeed,
  keyVersionOf,
  verifyJsonSignature,
  verifyPduSignature,
} from '../../src/crypto/index.ts';
import { KeyRing } from '../../src/federation/keyRing.ts';
import { ServerResolver } from '../../src/federation/resolver.ts';
import { randomBytes } from 'node:crypto';
import { auditRows, holdsFor, inboundPeeks, peekPath, startFederation, waitFor, type FakeServer, type Federation, type FedServer } from '../helpers/federation.ts';
import { enc, request, TestUser } from '../helpers/matrix.ts';

const RENEWAL_MS = 2_000;
const CAP = 3;

let fed: Federation;
let A: FedServer;
/** The remote server most tests speak as. */
let F: FakeServer;
/** A second remote server (impersonation, ACLs). */
let G: FakeServer;
/** A remote server used only by the cap test. */
let H: FakeServer;
/** A remote server whose key responses the tests script. */
let K: FakeServer;
let alice: TestUser;
let n = 0;

beforeAll(async () => {
  fed = await startFederation({
    servers: 1,
    fakes: 4,
    env: { PEEKD_INBOUND_RENEWAL_INTERVAL_MS: String(RENEWAL_MS), PEEKD_MAX_INBOUND_PEEKS_PER_SERVER: String(CAP) },
  });
  [A] = fed.servers as [FedServer];
  [F, G, H, K] = fed.fakes as [FakeServer, FakeServer, FakeServer, FakeServer];
  alice = await TestUser.register(A.url, 'alice');
});

afterAll(async () => {
  await fed?.cleanup();
});

async function worldReadableRoom(extra: Record<string, unknown> = {}) {
  const room = await alice.createWorldReadableRoom({ name: `Room ${++n}`, ...extra });
  await alice.send(room.room_id, 'hello');
  return room.room_id;
}

/** A's published key (fetched and checked like a peer would). */
async function keyOfA(): Promise<{ keyId: string; key: Uint8Array }> {
  const r = await request(A.url, 'GET', '/_matrix/key/v2/server');
  const [keyId, v] = Object.entries<any>(r.body.verify_keys)[0]!;
  return { keyId, key: decodeBase64(v.key) };
}

/** Nothing about peeks was ever written for the room: no PEEKS events, no rows. */
async function untouched(roomId: string) {
  expect(await A.peekd.log.lastSeq('peeks', roomId)).toBe(0);
  expect(await inboundPeeks(A, roomId)).toEqual([]);
}

describe('request authentication', () => {
  /** A room nobody ever peeks: every refused request below targets it. */
  let roomId: string;
  beforeAll(async () => {
    roomId = await worldReadableRoom();
  });

  const put = (peekId: string) => peekPath(roomId, peekId);

  it('accepts a correctly signed request, and a header in any order, with any case and bare values', async () => {
    const open = await worldReadableRoom();
    const ok = await F.send(A.name, 'PUT', peekPath(open, 'okay'), {});
    expect(ok.status).toBe(200);
    const uri = peekPath(open, 'lenient');
    const signed = F.authorization(A.name, 'PUT', uri, {});
    const params = Object.fromEntries([...signed.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    const reordered = `x-matrix   SIG="${params.sig}" , Key="${params.key}",destination=${params.destination},ORIGIN=${params.origin}`;
    const r = await F.send(A.name, 'PUT', uri, {}, { authorization: reordered });
    expect(r.status).toBe(200);
    // A header without destination (servers before v1.3 of the spec sent none), over a
    // signature made for this server: accepted.
    const older = peekPath(open, 'older');
    const noDestination = F.authorization(A.name, 'PUT', older, {}).replace(/destination="[^"]*",/, '');
    expect(noDestination).not.toContain('destination');
    expect((await F.send(A.name, 'PUT', older, {}, { authorization: noDestination })).status).toBe(200);
    expect((await inboundPeeks(A, open)).map((p) => p.peekId).sort()).toEqual(['lenient', 'okay', 'older']);
    for (const id of ['okay', 'lenient', 'older']) expect((await F.send(A.name, 'DELETE', peekPath(open, id, []))).status).toBe(200);
  });

  const cases: [string, () => Promise<{ status: number; body: any }>][] = [
    ['no Authorization header', () => F.send(A.name, 'PUT', put('x1'), {}, { authorization: null })],
    ['another scheme', () => F.send(A.name, 'PUT', put('x2'), {}, { authorization: 'Bearer sometoken' })],
    ['a header without sig', () => F.send(A.name, 'PUT', put('x3'), {}, { authorization: `X-Matrix origin="${F.name}",destination="${A.name}",key="${F.key.keyId}"` })],
    ['a key the origin does not publish', () => F.send(A.name, 'PUT', put('x4'), {}, { key: generateSigningKey() })],
    ['the published key ID with another secret', () => F.send(A.name, 'PUT', put('x5'), {}, { key: signingKeyFromSeed(keyVersionOf(F.key), randomBytes(32)) })],
    [
      'a tampered signature',
      async () => {
        const header = F.authorization(A.name, 'PUT', put('x6'), {});
        const sig = header.match(/sig="([^"]+)"/)![1]!;
        const bytes = decodeBase64(sig);
        bytes[0] = bytes[0]! ^ 0xff;
        return F.send(A.name, 'PUT', put('x6'), {}, { authorization: header.replace(sig, encodeBase64Unpadded(bytes)) });
      },
    ],
    ['a request signed for another destination', () => F.send(A.name, 'PUT', put('x7'), {}, { authorization: F.authorization(G.name, 'PUT', put('x7'), {}) })],
    [
      'a request signed for another destination, its header naming none',
      () => F.send(A.name, 'PUT', put('x17'), {}, { authorization: F.authorization(G.name, 'PUT', put('x17'), {}).replace(/destination="[^"]*",/, '') }),
    ],
    [
      'a header naming another destination over a signature for this one',
      async () => F.send(A.name, 'PUT', put('x8'), {}, { authorization: F.authorization(A.name, 'PUT', put('x8'), {}).replace(`destination="${A.name}"`, `destination="${G.name}"`) }),
    ],
    ['a replayed header with another body', () => F.send(A.name, 'PUT', put('x9'), {}, { authorization: F.authorization(A.name, 'PUT', put('x9'), {}), rawBody: '{"extra":true}' })],
    ['a replayed header with a body where none was signed', () => F.send(A.name, 'PUT', put('x10'), {}, { authorization: F.authorization(A.name, 'PUT', put('x10')) })],
    ['a replayed header on another URI', () => F.send(A.name, 'PUT', put('x11'), {}, { authorization: F.authorization(A.name, 'PUT', put('other'), {}) })],
    ['a replayed header with another method', () => F.send(A.name, 'PUT', put('x12'), {}, { authorization: F.authorization(A.name, 'POST', put('x12'), {}) })],
    ['a replayed header with another query', () => F.send(A.name, 'PUT', put('x13'), {}, { authorization: F.authorization(A.name, 'PUT', peekPath(roomId, 'x13', ['9', '10']), {}) })],
    ["another server's origin with our key", () => F.send(A.name, 'PUT', put('x14'), {}, { authorization: F.authorization(A.name, 'PUT', put('x14'), {}, F.key, G.name) })],
    ['an origin whose keys cannot be fetched', () => F.send(A.name, 'PUT', put('x15'), {}, { authorization: F.authorization(A.name, 'PUT', put('x15'), {}, F.key, 'nowhere.invalid') })],
    ['this server as the origin', () => F.send(A.name, 'PUT', put('x16'), {}, { authorization: F.authorization(A.name, 'PUT', put('x16'), {}, F.key, A.name) })],
    [
      'a good X-Matrix header beside a forged one (every signature by a known key must hold)',
      async () => {
        const good = F.authorization(A.name, 'PUT', put('x18'), {});
        return F.send(A.name, 'PUT', put('x18'), {}, { authorization: [good, F.authorization(A.name, 'PUT', put('x18'), { other: 1 })] });
      },
    ],
    // The signature is judged before the body: a request that is not signed learns nothing of it.
    ['no Authorization header and a body that is not JSON', () => F.send(A.name, 'PUT', put('x20'), {}, { authorization: null, rawBody: '{not json' })],
    ['no Authorization header and a body that is JSON but no object', () => F.send(A.name, 'PUT', put('x21'), {}, { authorization: null, rawBody: '[]' })],
    ['a forged signature over a body that is not JSON', () => F.send(A.name, 'PUT', put('x22'), {}, { key: generateSigningKey(), rawBody: '{not json' })],
    [
      'X-Matrix headers from two origins',
      async () => F.send(A.name, 'PUT', put('x19'), {}, { authorization: [F.authorization(A.name, 'PUT', put('x19'), {}), G.authorization(A.name, 'PUT', put('x19'), {})] }),
    ],
  ];

  it('reads every Authorization header: another scheme beside X-Matrix is passed over, and so is a signature by a key it cannot find', async () => {
    const open = await worldReadableRoom();
    const uri = peekPath(open, 'multi');
    const good = F.authorization(A.name, 'PUT', uri, {});
    const byUnknownKey = F.authorization(A.name, 'PUT', uri, {}, generateSigningKey());
    expect((await F.send(A.name, 'PUT', uri, {}, { authorization: ['Bearer sometoken', good] })).status).toBe(200);
    expect((await F.send(A.name, 'PUT', uri, {}, { authorization: [byUnknownKey, good] })).status).toBe(200);
    expect((await F.send(A.name, 'DELETE', peekPath(open, 'multi', []))).status).toBe(200);
  });

  it.each(cases)('refuses %s with 401 M_UNAUTHORIZED and writes nothing', async (_what, attempt) => {
    const r = await attempt();
    expect(r.status).toBe(401);
    expect(r.body.errcode).toBe('M_UNAUTHORIZED');
    expect(typeof r.body.error).toBe('string');
    await untouched(roomId);
  });

  it('refuses a forged /send (unsigned, replayed with other PDUs) and a forged DELETE', async () => {
    const roomId = await worldReadableRoom();
    for (const id of ['okay', 'lenient']) expect((await F.send(A.name, 'PUT', peekPath(roomId, id), {})).status).toBe(200);
    const renewing = [F.keepRenewing(A.name, roomId, 'okay', 600), F.keepRenewing(A.name, roomId, 'lenient', 600)];
    try {
      const body = { origin: F.name, origin_server_ts: Date.now(), pdus: [], edus: [] };
      const unsigned = await F.send(A.name, 'PUT', '/_matrix/federation/v1/send/t1', body, { authorization: null });
      expect(unsigned.status).toBe(401);
      const replayed = await F.send(A.name, 'PUT', '/_matrix/federation/v1/send/t2', body, {
        authorization: F.authorization(A.name, 'PUT', '/_matrix/federation/v1/send/t2', body),
        rawBody: JSON.stringify({ ...body, expired_peeks: [{ room_id: roomId, peek_id: 'okay' }] }),
      });
      expect(replayed.status).toBe(401);
      const path = `/_matrix/federation/v1/peek/${enc(roomId)}/okay`;
      const del = await F.send(A.name, 'DELETE', path, undefined, { authorization: F.authorization(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(roomId)}/lenient`) });
      expect(del.status).toBe(401);
      const delByOther = await G.send(A.name, 'DELETE', path);
      expect(delByOther.status).toBe(404); // G holds no such peek; F's is untouched
      expect((await inboundPeeks(A, roomId)).map((p) => p.peekId).sort()).toEqual(['lenient', 'okay']);
      expect((await auditRows(A, roomId)).filter((a) => a.eventType !== 'PeekRenewed').map((a) => [a.eventType, a.peekId])).toEqual([
        ['PeekStarted', 'okay'],
        ['PeekStarted', 'lenient'],
      ]);
    } finally {
      await Promise.all(renewing.map((stop) => stop()));
    }
    for (const id of ['okay', 'lenient']) await F.send(A.name, 'DELETE', peekPath(roomId, id, []));
  });

  it('refuses a request whose origin serves keys without a valid self-signature', async () => {
    const roomId2 = await worldReadableRoom();
    K.keyResponse = () => {
      const body = K.keyBody();
      const sigs = (body.signatures as Record<string, Record<string, string>>)[K.name]!;
      sigs[K.key.keyId] = encodeBase64Unpadded(randomBytes(64));
      return body;
    };
    try {
      const r = await K.send(A.name, 'PUT', peekPath(roomId2, 'badkeys'), {});
      expect(r.status).toBe(401);
      expect(r.body.errcode).toBe('M_UNAUTHORIZED');
      await untouched(roomId2);
    } finally {
      K.keyResponse = undefined;
    }
  });

  it('caches remote keys until valid_until_ts, and refetches when a new key ID appears', async () => {
    const roomId2 = await worldReadableRoom();
    let validUntil = 0;
    K.keyResponse = () => {
      validUntil = Date.now() + 1_500;
      return K.keyBody(validUntil);
    };
    K.keyFetches = 0;
    // (K's earlier answer was refused and is not cached as keys; A retries after a short back-off.)
    await waitFor("A fetches K's keys again", async () => (await K.send(A.name, 'PUT', peekPath(roomId2, 'k1'), {})).status === 200, 10_000, 250);
    const fetched = K.keyFetches;
    expect((await K.send(A.name, 'PUT', peekPath(roomId2, 'k2'), {})).status).toBe(200);
    expect((await K.send(A.name, 'POST', `${peekPath(roomId2, 'k2', [])}/renew`, {})).status).toBe(200);
    expect(K.keyFetches).toBe(fetched);
    // Once valid_until_ts has passed, the next request makes A fetch them again.
    await waitFor('the key response runs out', () => Date.now() > validUntil + 50, 5_000);
    expect((await K.send(A.name, 'POST', `${peekPath(roomId2, 'k2', [])}/renew`, {})).status).toBe(200);
    expect(K.keyFetches).toBe(fetched + 1);
    K.keyResponse = undefined;
    // A rotated key: an unknown key ID makes A look again at once.
    const rotated = generateSigningKey();
    K.keyResponse = () => K.keyBody(Date.now() + 86_400_000, rotated);
    const r = await K.send(A.name, 'POST', `${peekPath(roomId2, 'k2', [])}/renew`, {}, { key: rotated });
    expect(r.status).toBe(200);
    expect(K.keyFetches).toBe(fetched + 2);
    K.keyResponse = undefined;
    await K.send(A.name, 'DELETE', peekPath(roomId2, 'k1', []), undefined, { key: rotated });
    await K.send(A.name, 'DELETE', peekPath(roomId2, 'k2', []), undefined, { key: rotated });
  });

  it('caps the key cache at seven days whatever valid_until_ts says', async () => {
    let now = Date.now();
    const ring = new KeyRing(new ServerResolver(fed.destinations, () => now), () => now);
    K.keyResponse = () => K.keyBody(now + 30 * 86_400_000);
    K.keyFetches = 0;
    try {
      expect(await ring.requestKey(K.name, K.key.keyId)).toEqual(K.key.publicKey);
      now += 6 * 86_400_000;
      expect(await ring.requestKey(K.name, K.key.keyId)).toEqual(K.key.publicKey);
      expect(K.keyFetches).toBe(1);
      now += 86_400_000 + 1;
      expect(await ring.requestKey(K.name, K.key.keyId)).toEqual(K.key.publicKey);
      expect(K.keyFetches).toBe(2);
      // And a key response whose self-signature fails is not trusted at all.
      const other = new KeyRing(new ServerResolver(fed.destinations, () => now), () => now);
      K.keyResponse = () => ({ ...K.keyBody(now + 86_400_000), valid_until_ts: now + 2 * 86_400_000 });
      expect(await other.requestKey(K.name, K.key.keyId)).toBeNull();
    } finally {
      K.keyResponse = undefined;
    }
  });

  it('does not verify a request with a key whose valid_until_ts has passed, even in a key response fetched just now', async () => {
    let now = Date.now();
    const ring = new KeyRing(new ServerResolver(fed.destinations, () => now), () => now, undefined, { refetchIntervalMs: 0 });
    K.keyFetches = 0;
    try {
      K.keyResponse = () => K.keyBody(now - 60_000);
      expect(await ring.requestKey(K.name, K.key.keyId)).toBeNull();
      // Fetched once more in case the server has extended it.
      expect(K.keyFetches).toBe(2);
      // Then remembered as a failure for a few seconds: the next requests fetch nothing.
      K.keyResponse = () => K.keyBody(now + 60_000);
      expect(await ring.requestKey(K.name, K.key.keyId)).toBeNull();
      expect(K.keyFetches).toBe(2);
      now += 5_001;
      expect(await ring.requestKey(K.name, K.key.keyId)).toEqual(K.key.publicKey);
      expect(K.keyFetches).toBe(3);
    } finally {
      K.keyResponse = undefined;
    }
  });

  it('in room versions 5 and later, verifies an event only with a key whose valid_until_ts reaches it (refetching once), in earlier ones with any current key', async () => {
    const now = Date.now();
    const ring = new KeyRing(new ServerResolver(fed.destinations, () => now), () => now, undefined, { refetchIntervalMs: 0 });
    let validUntil = now + 3_600_000;
    K.keyResponse = () => K.keyBody(validUntil);
    K.keyFetches = 0;
    try {
      expect(await ring.eventKey(K.name, K.key.keyId, now, '10')).toEqual(K.key.publicKey);
      expect(await ring.eventKey(K.name, K.key.keyId, validUntil, '5')).toEqual(K.key.publicKey);
      expect(K.keyFetches).toBe(1);
      // An event stamped after the key's validity: refused in v5+ (after one refetch), not in v4.
      const later = now + 30 * 86_400_000;
      expect(await ring.eventKey(K.name, K.key.keyId, later, '10')).toBeNull();
      expect(K.keyFetches).toBe(2);
      expect(await ring.eventKey(K.name, K.key.keyId, later, '4')).toEqual(K.key.publicKey);
      // The server extends the validity: the refetch finds it, but never past seven days from now.
      validUntil = now + 60 * 86_400_000;
      expect(await ring.eventKey(K.name, K.key.keyId, now + 6 * 86_400_000, '10')).toEqual(K.key.publicKey);
      expect(await ring.eventKey(K.name, K.key.keyId, later, '10')).toBeNull();
    } finally {
      K.keyResponse = undefined;
    }
  });
});

describe('inbound peeks', () => {
  it('answers PUT with the fields of both drafts and a consistent snapshot', async () => {
    const roomId = await worldReadableRoom({ topic: 'snapshots' });
    await alice.send(roomId, 'second');
    const newest = await alice.send(roomId, 'newest');
    const r = await F.send(A.name, 'PUT', peekPath(roomId, 'snap1'), {});
    expect(r.status).toBe(200);
    const s = r.body;
    expect(Object.keys(s)).toEqual(expect.arrayContaining(['room_version', 'renewal_interval', 'latest_event', 'state', 'auth_chain', 'latest_event_state_ids', 'common_state_ids', 'events']));
    expect(s.room_version).toBe('10');
    expect(s.renewal_interval).toBe(RENEWAL_MS);

    // latest_event is the room's newest event.
    expect(eventIdForPdu(s.latest_event)).toBe(newest);
    // latest_event_state_ids is an object keyed by the forward extremity (the current draft);
    // common_state_ids plus its values name exactly the state, disjoint.
    const stateIds = (s.state as any[]).map((p) => eventIdForPdu(p));
    expect(new Set(stateIds).size).toBe(stateIds.length);
    expect(Object.keys(s.latest_event_state_ids)).toEqual([newest]);
    const common = new Set<string>(s.common_state_ids);
    const latest = new Set<string>(Object.values(s.latest_event_state_ids as Record<string, string[]>).flat());
    expect([...common].filter((id) => latest.has(id))).toEqual([]);
    expect([...common, ...latest].sort()).toEqual([...stateIds].sort());
    expect(s.common_state_ids.length + latest.size).toBe(stateIds.length);
    // The state is A's current state.
    const current = (await alice.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state`)).map((e: any) => e.event_id);
    expect([...stateIds].sort()).toEqual([...current].sort());
    expect((s.state as any[]).some((p) => p.type === 'm.room.create' && p.state_key === '')).toBe(true);

    // Room version 10 PDUs: no event_id field, hashes and A's signature check out.
    const { keyId, key } = await keyOfA();
    const all = [s.latest_event, ...s.state, ...s.auth_chain, ...s.events];
    for (const pdu of all) {
      expect(pdu).not.toHaveProperty('event_id');
      expect(pdu.room_id).toBe(roomId);
      expect(checkContentHash(pdu)).toBe(true);
      expect(verifyPduSignature(pdu, A.name, keyId, key)).toBe(true);
    }
    // The auth chain closes over the state's auth events.
    const known = new Set([...stateIds, ...(s.auth_chain as any[]).map((p) => eventIdForPdu(p))]);
    for (const pdu of [...s.state, ...s.auth_chain]) for (const id of pdu.auth_events) expect(known.has(id)).toBe(true);
    // `events` (current draft) carries the state and the latest event.
    const eventIds = new Set((s.events as any[]).map((p) => eventIdForPdu(p)));
    for (const id of [...stateIds, newest]) expect(eventIds.has(id)).toBe(true);

    // When the newest event is a state event, it is the latest event's own state.
    const topic = await alice.setState(roomId, 'm.room.topic', { topic: 'changed' });
    const r2 = await F.send(A.name, 'PUT', peekPath(roomId, 'snap2'), {});
    expect(eventIdForPdu(r2.body.latest_event)).toBe(topic);
    expect(r2.body.latest_event_state_ids).toEqual({ [topic]: [topic] });
    expect(r2.body.common_state_ids).not.toContain(topic);
    const ids2 = (r2.body.state as any[]).map((p) => eventIdForPdu(p)).sort();
    expect([...r2.body.common_state_ids, ...r2.body.latest_event_state_ids[topic]].sort()).toEqual(ids2);
  });

  it('renews through a repeated PUT (full snapshot again) and through /renew, with exactly the configured interval', async () => {
    const roomId = await worldReadableRoom();
    const first = await F.send(A.name, 'PUT', peekPath(roomId, 'rep'), {});
    expect(first.status).toBe(200);
    const again = await F.send(A.name, 'PUT', peekPath(roomId, 'rep'), {});
    expect(again.status).toBe(200);
    expect(again.body.renewal_interval).toBe(RENEWAL_MS);
    expect(eventIdForPdu(again.body.latest_event)).toBe(eventIdForPdu(first.body.latest_event));
    expect(again.body.state.length).toBe(first.body.state.length);
    const renew = await F.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(roomId)}/rep/renew`, {});
    expect(renew.status).toBe(200);
    expect(renew.body).toEqual({ renewal_interval: RENEWAL_MS });
    const audit = await auditRows(A, roomId);
    expect(audit.map((a) => a.eventType)).toEqual(['PeekStarted', 'PeekRenewed', 'PeekRenewed']);
    expect(await inboundPeeks(A, roomId)).toHaveLength(1);

    // Renewed in time, the peek outlives two intervals.
    const stop = F.keepRenewing(A.name, roomId, 'rep', 600);
    try {
      await holdsFor('the renewed peek stays', async () => (await inboundPeeks(A, roomId)).length === 1, 2 * RENEWAL_MS + 500, 250);
    } finally {
      await stop();
    }
    const del = await F.send(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(roomId)}/rep`);
    expect(del.status).toBe(200);
    expect(del.body).toEqual({});
    expect(await inboundPeeks(A, roomId)).toEqual([]);
    expect((await auditRows(A, roomId)).at(-1)).toMatchObject({ eventType: 'PeekExpired', reason: 'remote_deleted', serverName: F.name, peekId: 'rep' });
    // Gone: renew and DELETE are 404 now.
    const renewGone = await F.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(roomId)}/rep/renew`, {});
    expect(renewGone.status).toBe(404);
    expect(renewGone.body.errcode).toBe('M_NOT_FOUND');
    const delGone = await F.send(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(roomId)}/rep`);
    expect(delGone.status).toBe(404);
    expect(delGone.body.errcode).toBe('M_NOT_FOUND');
  });

  it('accepts the room ID as the peek ID (as Dendrite sends it)', async () => {
    const roomId = await worldReadableRoom();
    const r = await F.send(A.name, 'PUT', peekPath(roomId, roomId), {});
    expect(r.status).toBe(200);
    expect((await inboundPeeks(A, roomId)).map((p) => p.peekId)).toEqual([roomId]);
    expect((await F.send(A.name, 'DELETE', peekPath(roomId, roomId, []))).status).toBe(200);
  });

  it('answers every error MATRIX.md lists, writing nothing', async () => {
    const open = await worldReadableRoom();
    // 403: not world_readable.
    const shared = (await alice.createRoom({ preset: 'public_chat' })).room_id;
    const r403 = await F.send(A.name, 'PUT', peekPath(shared, 'p1'), {});
    expect([r403.status, r403.body.errcode]).toEqual([403, 'M_FORBIDDEN']);
    await untouched(shared);
    // 403: encrypted.
    const encrypted = await worldReadableRoom();
    await alice.setState(encrypted, 'm.room.encryption', { algorithm: 'm.megolm.v1.aes-sha2' });
    const rEnc = await F.send(A.name, 'PUT', peekPath(encrypted, 'p1'), {});
    expect([rEnc.status, rEnc.body.errcode]).toEqual([403, 'M_FORBIDDEN']);
    await untouched(encrypted);
    // 404: unknown room, and a room this server does not host.
    const r404 = await F.send(A.name, 'PUT', peekPath(`!unknown:${A.name}`, 'p1'), {});
    expect([r404.status, r404.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    const elsewhere = await F.send(A.name, 'PUT', peekPath(`!room:${G.name}`, 'p1'), {});
    expect([elsewhere.status, elsewhere.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    // 400 M_UNRECOGNIZED: bad peek IDs, on every peek endpoint.
    for (const bad of ['ninechars', 'bad!id', 'sp ace']) {
      const p = await F.send(A.name, 'PUT', peekPath(open, bad), {});
      expect([p.status, p.body.errcode]).toEqual([400, 'M_UNRECOGNIZED']);
      const rn = await F.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(open)}/${enc(bad)}/renew`, {});
      expect([rn.status, rn.body.errcode]).toEqual([400, 'M_UNRECOGNIZED']);
      const d = await F.send(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(open)}/${enc(bad)}`);
      expect([d.status, d.body.errcode]).toEqual([400, 'M_UNRECOGNIZED']);
    }
    // 400 M_INCOMPATIBLE_ROOM_VERSION: no matching ver; no ver at all means only version 1.
    const wrongVer = await F.send(A.name, 'PUT', peekPath(open, 'p1', ['1', '2', '9']), {});
    expect([wrongVer.status, wrongVer.body.errcode]).toEqual([400, 'M_INCOMPATIBLE_ROOM_VERSION']);
    const noVer = await F.send(A.name, 'PUT', peekPath(open, 'p1', []), {});
    expect([noVer.status, noVer.body.errcode]).toEqual([400, 'M_INCOMPATIBLE_ROOM_VERSION']);
    // 404 for renew and DELETE of a peek that does not exist.
    const rn = await F.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(open)}/nope/renew`, {});
    expect([rn.status, rn.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    const d = await F.send(A.name, 'DELETE', `/_matrix/federation/v1/peek/${enc(open)}/nope`);
    expect([d.status, d.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    await untouched(open);
  });

  it("forbids a server the room's ACL denies, and lets others in", async () => {
    const roomId = await worldReadableRoom();
    await alice.setState(roomId, 'm.room.server_acl', { allow: ['*'], deny: [F.name.replace(/^fake\d+/, 'fake*').replace(/:\d+$/, '')], allow_ip_literals: true });
    const denied = await F.send(A.name, 'PUT', peekPath(roomId, 'acl'), {});
    expect([denied.status, denied.body.errcode]).toEqual([403, 'M_FORBIDDEN']);
    await untouched(roomId);
    // G's name matches the deny glob too (every fake is named fake<n>-…): allow only G by name.
    await alice.setState(roomId, 'm.room.server_acl', { allow: [G.name], deny: [], allow_ip_literals: false });
    expect((await F.send(A.name, 'PUT', peekPath(roomId, 'acl'), {})).status).toBe(403);
    const allowed = await G.send(A.name, 'PUT', peekPath(roomId, 'acl'), {});
    expect(allowed.status).toBe(200);
    // Renewal is refused once the ACL shuts G out.
    await alice.setState(roomId, 'm.room.server_acl', { allow: [F.name], deny: [] });
    const renew = await G.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(roomId)}/acl/renew`, {});
    expect([renew.status, renew.body.errcode]).toEqual([403, 'M_FORBIDDEN']);
  });

  it('caps live peeks per remote server with 429, counting only live ones', async () => {
    const rooms = [await worldReadableRoom(), await worldReadableRoom()];
    const ids = ['c1', 'c2', 'c3'];
    expect((await H.send(A.name, 'PUT', peekPath(rooms[0]!, 'c1'), {})).status).toBe(200);
    expect((await H.send(A.name, 'PUT', peekPath(rooms[0]!, 'c2'), {})).status).toBe(200);
    expect((await H.send(A.name, 'PUT', peekPath(rooms[1]!, 'c3'), {})).status).toBe(200);
    const over = await H.send(A.name, 'PUT', peekPath(rooms[1]!, 'c4'), {});
    expect(over.status).toBe(429);
    expect(over.body.errcode).toBe('M_LIMIT_EXCEEDED');
    expect(typeof over.body.retry_after_ms).toBe('number');
    expect((await inboundPeeks(A, rooms[1]!)).map((p) => p.peekId)).toEqual(['c3']);
    // Renewing one it holds is fine; another server is not affected.
    expect((await H.send(A.name, 'PUT', peekPath(rooms[0]!, 'c1'), {})).status).toBe(200);
    expect((await G.send(A.name, 'PUT', peekPath(rooms[1]!, 'c4'), {})).status).toBe(200);
    // Once one ends, there is room for another.
    expect((await H.send(A.name, 'DELETE', peekPath(rooms[0]!, 'c2', []))).status).toBe(200);
    expect((await H.send(A.name, 'PUT', peekPath(rooms[1]!, 'c4'), {})).status).toBe(200);
    for (const [roomId, id] of [
      [rooms[0]!, 'c1'],
      [rooms[1]!, 'c3'],
      [rooms[1]!, 'c4'],
    ] as const)
      await H.send(A.name, 'DELETE', peekPath(roomId, id, []));
    await G.send(A.name, 'DELETE', peekPath(rooms[1]!, 'c4', []));
    void ids;
  });

  it('sends new PDUs while the peek lives, expires it when not renewed, and tells the peer in expired_peeks', async () => {
    const roomId = await worldReadableRoom();
    const put = await F.send(A.name, 'PUT', peekPath(roomId, 'exp'), {});
    expect(put.status).toBe(200);
    const [row] = await inboundPeeks(A, roomId);
    const msg = await alice.send(roomId, 'while live');
    await waitFor('F receives the message', () => F.pdus(A.name).some((p) => p.room_id === roomId && eventIdForPdu(p) === msg), 5_000);
    const txn = F.transactions(A.name).find((t) => (t.body.pdus as any[]).some((p) => p.room_id === roomId))!;
    expect(txn.body).toMatchObject({ origin: A.name, origin_server_ts: expect.any(Number), edus: [] });

    // Not renewed: gone within two intervals of its last renewal, reason timed_out.
    await waitFor('A expires the peek', async () => (await inboundPeeks(A, roomId)).length === 0, 3 * RENEWAL_MS);
    const expiry = (await waitFor('the expiry in the audit', async () => (await auditRows(A, roomId)).find((r) => r.eventType === 'PeekExpired'), 5_000))!;
    expect(expiry).toMatchObject({ eventType: 'PeekExpired', reason: 'timed_out', serverName: F.name, peekId: 'exp' });
    expect(expiry.at - row!.renewedAt).toBeLessThanOrEqual(2 * RENEWAL_MS);
    expect(expiry.at - row!.renewedAt).toBeGreaterThanOrEqual(RENEWAL_MS);
    // The next transaction to F carries expired_peeks, once.
    await waitFor('F is told', () => F.transactions(A.name).some((t) => (t.body.expired_peeks ?? []).some((e: any) => e.room_id === roomId)), 5_000);
    const told = F.transactions(A.name)
      .flatMap((t) => (t.body.expired_peeks ?? []) as any[])
      .filter((e) => e.room_id === roomId);
    expect(told).toEqual([{ room_id: roomId, peek_id: 'exp' }]);
    // Renewing now is too late, and A sends nothing more.
    const late = await F.send(A.name, 'POST', `/_matrix/federation/v1/peek/${enc(roomId)}/exp/renew`, {});
    expect([late.status, late.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    const after = await alice.send(roomId, 'after expiry');
    await holdsFor('nothing more reaches F', () => !F.pdus(A.name).some((p) => p.room_id === roomId && eventIdForPdu(p) === after), 1_500);
  });

  it('resolves a local alias for a signed peer only', async () => {
    const room = await alice.createWorldReadableRoom({ room_alias_name: `dir${++n}` });
    const alias = `#dir${n}:${A.name}`;
    const path = `/_matrix/federation/v1/query/directory?room_alias=${enc(alias)}`;
    const ok = await F.send(A.name, 'GET', path);
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ room_id: room.room_id, servers: [A.name] });
    const unsigned = await F.send(A.name, 'GET', path, undefined, { authorization: null });
    expect([unsigned.status, unsigned.body.errcode]).toEqual([401, 'M_UNAUTHORIZED']);
    const missing = await F.send(A.name, 'GET', `/_matrix/federation/v1/query/directory?room_alias=${enc(`#missing:${A.name}`)}`);
    expect([missing.status, missing.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
  });
});

describe('keys as a peer checks them', () => {
  it('serves a self-signed key response that our crypto module verifies', async () => {
    const r = await request(A.url, 'GET', '/_matrix/key/v2/server');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.body.server_name).toBe(A.name);
    const ids = Object.keys(r.body.verify_keys);
    expect(ids).toHaveLength(1);
    expect(ids[0]).toMatch(/^ed25519:[a-zA-Z0-9_]+$/);
    const key = decodeBase64(r.body.verify_keys[ids[0]!].key);
    expect(verifyJsonSignature(r.body, A.name, ids[0]!, key)).toBe(true);
    expect(r.body.valid_until_ts).toBeGreaterThan(Date.now());
    expect(r.body.valid_until_ts).toBeLessThanOrEqual(Date.now() + 7 * 86_400_000);
    expect(r.body.old_verify_keys).toEqual({});
  });
});
