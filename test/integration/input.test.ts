// Malformed and oversized input, met at the edge: each answers the Matrix error the
// specification names, with a Matrix body and `Content-Type: application/json` exactly,
// and writes nothing.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '../../src/http/jsonBody.ts';
import { MAX_PDU_BYTES, pduSize } from '../../src/matrix/pduFactory.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, registerGuest, request, TestUser, type MatrixResponse } from '../helpers/matrix.ts';

const ADMIN = 'input-test-admin-token';
let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let roomId: string;

beforeAll(async () => {
  hs = await startTestPeekd({ env: { PEEKD_MAX_FILTERS_PER_USER: '3', PEEKD_ADMIN_TOKEN: ADMIN } });
  alice = await TestUser.register(hs.url, 'alice');
  roomId = (await alice.createWorldReadableRoom()).room_id;
}, 60_000);
afterAll(() => hs?.dropAll());

const v3 = (p: string) => `/_matrix/client/v3${p}`;

function expectMatrixError(r: MatrixResponse, status: number, errcode: string) {
  expect({ status: r.status, errcode: r.body?.errcode }).toEqual({ status, errcode });
  expect(typeof r.body.error).toBe('string');
  expect(r.headers.get('content-type')).toBe('application/json');
}

/** Sends raw bytes as a request body. */
async function rawRequest(method: string, path: string, bytes: Uint8Array, token?: string): Promise<MatrixResponse> {
  const res = await fetch(hs.url + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: bytes,
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text), headers: res.headers };
}

/** One HTTP/1.1 exchange over a raw socket (for requests fetch would refuse to send). */
function rawHttp(head: string): Promise<{ status: number; headers: string; body: string }> {
  const { hostname, port } = new URL(hs.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(head));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => (data += d));
    socket.on('error', reject);
    socket.on('close', () => {
      const [headers = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(headers.split(' ')[1]), headers, body });
    });
  });
}

async function timelineLength(): Promise<number> {
  const r = await alice.ok('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&limit=1000`));
  return r.chunk.length;
}

describe('bodies', () => {
  const invalidUtf8 = [
    Uint8Array.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), // {"a":"\xC3("}
    Uint8Array.from([0x7b, 0x7d, 0xff]),
    Uint8Array.from([0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x3a, 0x31, 0x7d]), // a CESU-encoded lone surrogate as a key
  ];

  it('answers M_NOT_JSON to a body that is not valid UTF-8, on /peek and /register alike', async () => {
    for (const bytes of invalidUtf8) {
      expectMatrixError(await rawRequest('POST', v3(`/peek/${enc(roomId)}`), bytes, alice.token), 400, 'M_NOT_JSON');
      expectMatrixError(await rawRequest('POST', v3('/register'), bytes), 400, 'M_NOT_JSON');
      expectMatrixError(await rawRequest('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/utf8-${bytes[bytes.length - 1]}`), bytes, alice.token), 400, 'M_NOT_JSON');
    }
    // Nothing was peeked: an unpeek finds no peek of this device.
    expectMatrixError(await alice.req('POST', v3(`/rooms/${enc(roomId)}/unpeek`), {}), 400, 'M_BAD_STATE');
  });

  it('checks the body shape before the state: /unpeek without a peek and with a non-object body is M_BAD_JSON', async () => {
    for (const body of ['[]', '"x"', '42', 'null', 'true']) {
      const r = await request(hs.url, 'POST', v3(`/rooms/${enc(roomId)}/unpeek`), { token: alice.token, rawBody: body });
      expectMatrixError(r, 400, 'M_BAD_JSON');
    }
    const r = await request(hs.url, 'POST', v3(`/rooms/${enc(roomId)}/unpeek`), { token: alice.token, rawBody: '{"a":' });
    expectMatrixError(r, 400, 'M_NOT_JSON');
  });

  it('checks the access token before the body (as Synapse): no or an unknown token is 401 whatever the body, a valid one hears of its body', async () => {
    for (const body of ['{"a":', '[]', '{"servers": 5}', '{"a":"\u0000"}']) {
      const path = v3(`/peek/${enc(roomId)}`);
      expectMatrixError(await request(hs.url, 'POST', path, { rawBody: body }), 401, 'M_MISSING_TOKEN');
      expectMatrixError(await request(hs.url, 'POST', path, { token: 'not-a-token', rawBody: body }), 401, 'M_UNKNOWN_TOKEN');
      const r = await request(hs.url, 'POST', path, { token: alice.token, rawBody: body });
      expect(r.status).toBe(400);
      expect(['M_NOT_JSON', 'M_BAD_JSON', 'M_INVALID_PARAM']).toContain(r.body.errcode);
    }
    // Routes open to anyone still judge the body first.
    expectMatrixError(await request(hs.url, 'POST', v3('/login'), { rawBody: '{"a":' }), 400, 'M_NOT_JSON');
  });

  it('limits nesting depth: deeper content is M_BAD_JSON and creates no room; content at the limit is fine', async () => {
    // As text: JSON.stringify itself cannot write 10,000 levels.
    const nested = (depth: number) => '{"k":'.repeat(depth) + '"leaf"' + '}'.repeat(depth);
    const before = (await alice.ok('GET', v3('/joined_rooms'))).joined_rooms.length;
    for (const depth of [MAX_JSON_DEPTH, 1_000, 10_000]) {
      const r = await request(hs.url, 'POST', v3('/createRoom'), { token: alice.token, rawBody: `{"creation_content":${nested(depth)}}` });
      expectMatrixError(r, 400, 'M_BAD_JSON');
    }
    expect((await alice.ok('GET', v3('/joined_rooms'))).joined_rooms.length).toBe(before);
    // A body of exactly MAX_JSON_DEPTH levels is accepted (and signed, and stored).
    const ok = await request(hs.url, 'PUT', v3(`/rooms/${enc(roomId)}/send/org.example.deep/deep-ok`), { token: alice.token, rawBody: nested(MAX_JSON_DEPTH) });
    expect(ok.status).toBe(200);
  });

  it('refuses events over 65,536 bytes with 413 M_TOO_LARGE, counting the canonical form, and writes nothing', async () => {
    const count = await timelineLength();
    const big = await alice.req('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/big`), { msgtype: 'm.text', body: 'x'.repeat(70_000) });
    expectMatrixError(big, 413, 'M_TOO_LARGE');
    // The body itself is under the limit; the signed PDU around it is not.
    const content = { msgtype: 'm.text', body: 'y'.repeat(MAX_PDU_BYTES - 200) };
    expect(Buffer.byteLength(JSON.stringify(content))).toBeLessThan(MAX_PDU_BYTES);
    const near = await alice.req('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/near`), content);
    expectMatrixError(near, 413, 'M_TOO_LARGE');
    // Characters outside ASCII count as their UTF-8 bytes (and \u escapes as their canonical form).
    const wide = await alice.req('PUT', v3(`/rooms/${enc(roomId)}/state/org.example.wide/`), { v: '\u00e9'.repeat(33_000) });
    expectMatrixError(wide, 413, 'M_TOO_LARGE');
    expect(await timelineLength()).toBe(count);
    // Just under: accepted, and what was stored is within the limit.
    const fits = await alice.ok('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/fits`), { msgtype: 'm.text', body: 'z'.repeat(MAX_PDU_BYTES - 2_000) });
    await hs.peekd.client!.barrier.forReads();
    const stored = await hs.peekd.client!.rooms.eventById(fits.event_id);
    expect(pduSize(stored!.pdu)).toBeLessThanOrEqual(MAX_PDU_BYTES);
    expect(await timelineLength()).toBe(count + 1);
  });

  it('answers 413 M_TOO_LARGE to a body over the client limit', async () => {
    const r = await alice.req('PUT', v3(`/rooms/${enc(roomId)}/send/m.room.message/huge`), { body: 'x'.repeat(hs.peekd.config.maxClientBodyBytes + 10) });
    expectMatrixError(r, 413, 'M_TOO_LARGE');
  });
});

describe('URLs and headers', () => {
  it('answers an over-long ID in a path with 400 M_INVALID_PARAM, as a malformed ID', async () => {
    const longId = `!${'a'.repeat(3_000)}:x`;
    const r = await alice.req('GET', v3(`/rooms/${enc(longId)}/messages`));
    expectMatrixError(r, 400, 'M_INVALID_PARAM');
    expectMatrixError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/event/%E0%A4%A`)), 400, 'M_INVALID_PARAM');
  });

  it('answers a request line or headers past the limit with 431 and a Matrix error body', async () => {
    const longId = `!${'a'.repeat(20_000)}:x`;
    const line = await rawHttp(`GET ${v3(`/rooms/${enc(longId)}/messages`)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(line.status).toBe(431);
    expect(line.headers).toMatch(/\r\ncontent-type: application\/json\r\n/i);
    expect(JSON.parse(line.body)).toMatchObject({ errcode: 'M_TOO_LARGE', error: expect.any(String) });
    const header = await rawHttp(`GET ${v3('/versions')} HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(40_000)}\r\n\r\n`);
    expect(header.status).toBe(431);
    expect(JSON.parse(header.body).errcode).toBe('M_TOO_LARGE');
  });

  it('answers exactly application/json, on success and on error', async () => {
    const ok = await request(hs.url, 'GET', v3('/versions'));
    expect(ok.headers.get('content-type')).toBe('application/json');
    const whoami = await alice.req('GET', v3('/account/whoami'));
    expect(whoami.headers.get('content-type')).toBe('application/json');
    const missing = await request(hs.url, 'GET', '/_matrix/client/v3/nothing-here');
    expectMatrixError(missing, 404, 'M_UNRECOGNIZED');
  });
});

describe('query strings', () => {
  it('refuses U+0000 in a query value with 400 M_INVALID_PARAM, guests and the admin API included', async () => {
    const guest = await registerGuest(hs.url);
    for (const filter of ['%00', 'closed%00', 'timeout%00', '%7B%7D%00']) {
      expectMatrixError(await guest.req('GET', v3(`/sync?filter=${filter}`)), 400, 'M_INVALID_PARAM');
      expectMatrixError(await alice.req('GET', v3(`/sync?filter=${filter}`)), 400, 'M_INVALID_PARAM');
    }
    expectMatrixError(await alice.req('GET', v3(`/sync?since=s1%00`)), 400, 'M_INVALID_PARAM');
    expectMatrixError(await alice.req('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b&from=%00`)), 400, 'M_INVALID_PARAM');
    const audit = (query: string) => request(hs.url, 'GET', `/_peekd/admin/v1/audit?${query}`, { token: ADMIN });
    expectMatrixError(await audit('user_id=@a:b&device_id=%00'), 400, 'M_INVALID_PARAM');
    expectMatrixError(await audit('user_id=@a:b&device_id=closed%00'), 400, 'M_INVALID_PARAM');
    expectMatrixError(await audit(`room_id=${enc(roomId)}&until=%00`), 400, 'M_INVALID_PARAM');
    // A query parameter's name likewise.
    expectMatrixError(await alice.req('GET', v3('/sync?%00=1')), 400, 'M_INVALID_PARAM');
    // A device ID the audit could never hold.
    expectMatrixError(await audit(`user_id=@a:b&device_id=${'d'.repeat(300)}`), 400, 'M_INVALID_PARAM');
    expectMatrixError(await audit('user_id=@a:b&device_id=a%20b'), 400, 'M_INVALID_PARAM');
    // Still served without one.
    expect((await guest.req('GET', v3('/sync'))).status).toBe(200);
    expect((await audit('user_id=@a:b&device_id=DEV')).status).toBe(200);
  });

  it('refuses an inline /sync filter whose escapes spell U+0000 or a lone surrogate with M_BAD_JSON, as a stored one', async () => {
    for (const filter of [{ room: { timeline: { types: ['\u0000'] } } }, { room: { timeline: { senders: ['\ud800'] } } }, { room: { state: { not_types: ['a\u0000'] } } }]) {
      expectMatrixError(await alice.req('GET', v3(`/sync?filter=${enc(JSON.stringify(filter))}`)), 400, 'M_BAD_JSON');
      expectMatrixError(await alice.req('POST', v3(`/user/${enc(alice.userId)}/filter`), filter), 400, 'M_BAD_JSON');
    }
    // Text that only spells the escape is a type like any other.
    const spelled = await alice.req('GET', v3(`/sync?filter=${enc(JSON.stringify({ room: { timeline: { types: ['\\u0000'] } } }))}`));
    expect(spelled.status).toBe(200);
  });
});

describe('methods', () => {
  it('answers 405 M_UNRECOGNIZED to a known endpoint asked with a method it does not take, 404 to an unknown one', async () => {
    for (const [method, path] of [
      ['PUT', v3('/login')],
      ['DELETE', v3('/sync')],
      ['PATCH', v3('/register')],
      ['GET', v3(`/rooms/${enc(roomId)}/send/m.room.message/t1`)],
      ['POST', '/_matrix/client/r0/account/whoami'],
      ['GET', '/_matrix/federation/v1/send/txn1'],
      ['POST', `/_matrix/federation/v1/peek/${enc(roomId)}/abc`],
      ['PUT', '/_matrix/key/v2/server'],
      ['POST', '/_peekd/admin/v1/audit'],
    ] as const) {
      const r = await alice.req(method, path, method === 'GET' ? undefined : {});
      expect([method, path, r.status]).toEqual([method, path, 405]);
      expectMatrixError(r, 405, 'M_UNRECOGNIZED');
    }
    for (const [method, path] of [
      ['GET', v3('/nothing-here')],
      ['PUT', v3('/nothing-here')],
      ['POST', '/_matrix/federation/v1/nothing'],
      ['DELETE', '/_peekd/admin/v1/nothing'],
      ['GET', '/elsewhere'],
    ] as const) {
      expectMatrixError(await alice.req(method, path, method === 'GET' ? undefined : {}), 404, 'M_UNRECOGNIZED');
    }
    // CORS preflight still answers on every path, known or not.
    for (const path of [v3('/login'), v3('/nothing-here')]) {
      const r = await fetch(hs.url + path, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'PUT' } });
      expect([r.status, r.headers.get('access-control-allow-origin')]).toEqual([204, '*']);
      expect(r.headers.get('access-control-allow-methods')).toContain('PUT');
    }
    // Also an OPTIONS that is not a browser's preflight (no Origin, no method asked for).
    const bare = await fetch(hs.url + v3('/nothing-here'), { method: 'OPTIONS' });
    expect([bare.status, bare.headers.get('access-control-allow-origin')]).toEqual([204, '*']);
  });
});

describe('filters', () => {
  it('caps stored filters per user; an identical filter answers its ID again', async () => {
    const bob = await TestUser.register(hs.url, 'bob-filters');
    const path = v3(`/user/${enc(bob.userId)}/filter`);
    const ids = [];
    for (let i = 1; i <= 3; i++) ids.push((await bob.ok('POST', path, { room: { timeline: { limit: i } } })).filter_id);
    expect(new Set(ids).size).toBe(3);
    // The same filter again (keys in another order): the same ID, nothing new stored.
    const again = await bob.ok('POST', path, { room: { timeline: { limit: 2 } } });
    expect(again.filter_id).toBe(ids[1]);
    expectMatrixError(await bob.req('POST', path, { room: { timeline: { limit: 4 } } }), 403, 'M_RESOURCE_LIMIT_EXCEEDED');
    // Each stored filter still reads back.
    expect(await bob.ok('GET', `${path}/${ids[2]}`)).toEqual({ room: { timeline: { limit: 3 } } });
    // Another user's cap is their own.
    const carol = await TestUser.register(hs.url, 'carol-filters');
    expect((await carol.req('POST', v3(`/user/${enc(carol.userId)}/filter`), { room: { timeline: { limit: 4 } } })).status).toBe(200);
  });
});

describe('the admin API', () => {
  it('takes its token from the Authorization header only', async () => {
    const inQuery = await request(hs.url, 'GET', `/_peekd/admin/v1/audit?room_id=${enc(roomId)}&access_token=${ADMIN}`);
    expectMatrixError(inQuery, 401, 'M_MISSING_TOKEN');
    expect(JSON.stringify(inQuery.body)).not.toContain(ADMIN);
    const wrong = await request(hs.url, 'GET', `/_peekd/admin/v1/audit?room_id=${enc(roomId)}`, { token: 'not-the-token' });
    expectMatrixError(wrong, 401, 'M_UNKNOWN_TOKEN');
    const ok = await request(hs.url, 'GET', `/_peekd/admin/v1/audit?room_id=${enc(roomId)}`, { token: ADMIN });
    expect(ok.status).toBe(200);
  });
});
