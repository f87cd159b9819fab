// An independent oracle for everything peekd signs, hashes and names: two real peekd
// instances (A, B) and a fake peer F on loopback produce a varied room (non-ASCII, astral
// and control characters, escapes, nested content, the largest safe integers, state with
// empty and non-empty keys, power levels, join rules with `allow`, member events with display
// names and join_authorised_via_users_server, invite/ban/kick, an m.room.redaction, and a
// signing key rotated half-way so that older events verify only through old_verify_keys);
// F collects, over real signed HTTP, every federation answer holding PDUs (/event, /state,
// /state_ids, /backfill, /get_missing_events, /event_auth, the MSC2444 peek snapshot), the
// key responses, and every request A and B send it (/send transactions, the directory query,
// PUT/renew/DELETE of a peek, /backfill, /get_missing_events) with their X-Matrix headers.
// All of it, as the raw bytes peekd sent, goes to test/oracle/matrix_oracle.py, which
// checks it with matrix.org's own signedjson and canonicaljson (Debian's python3 packages),
// never with peekd's code. Negative controls prove the oracle can fail.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateSigningKeyFile } from '../../src/crypto/signingKey.ts';
import { rotateSigningKey } from '../../src/federation/ownKeys.ts';
import { FakeRoom, outboundPeeks, startFederation, waitFor, type FakeServer, type Federation, type FedServer, type RecordedRequest } from '../helpers/federation.ts';
import { enc, TestUser } from '../helpers/matrix.ts';

/** Debian's Python (`python3` on PATH may be another one without the Debian packages); PEEKD_ORACLE_PYTHON overrides it. */
const PYTHON = process.env.PEEKD_ORACLE_PYTHON || '/usr/bin/python3';
const ORACLE = fileURLToPath(new URL('../oracle/matrix_oracle.py', import.meta.url));
const INSTALL = 'apt-get install python3-signedjson python3-canonicaljson (or set PEEKD_ORACLE_PYTHON to a Python 3 that has them)';
/** The renewal interval F grants A's peek of F's room (the shortest A accepts), so A renews within the test. */
const FAKE_RENEWAL_MS = 1_000;
const v1 = (path: string) => `/_matrix/federation/v1${path}`;

interface Artifacts {
  key_responses: { source: string; server: string; body: string }[];
  key_queries: { source: string; notary: string; body: string }[];
  responses: { source: string; kind: string; server: string; body: string; event_id?: string; anchor?: string }[];
  requests: { source: string; origin?: string; destination: string; method: string; uri: string; authorization?: string; content_type?: string; body: string }[];
  claimed_event_ids: { event_id: string; label: string }[];
}

interface OracleRun {
  code: number | null;
  report: any;
  stdout: string;
  stderr: string;
}

/** Fails (never skips) when the oracle's interpreter or matrix.org's libraries are missing. */
function requireOracleRuntime(): void {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing; the signing oracle needs Debian's Python with matrix.org's libraries: ${INSTALL}`);
  const probe = spawnSync(PYTHON, ['-c', 'import signedjson.sign, signedjson.key, canonicaljson, unpaddedbase64, nacl.signing'], { encoding: 'utf8' });
  if (probe.status !== 0) throw new Error(`${PYTHON} lacks matrix.org's signedjson/canonicaljson (${(probe.stderr || probe.error?.message || '').trim()}): ${INSTALL}`);
}

function runOracle(doc: Artifacts): Promise<OracleRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [ORACLE], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString('utf8');
      let report: any;
      try {
        report = JSON.parse(stdout);
      } catch {
        report = undefined;
      }
      resolve({ code, report, stdout, stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.end(JSON.stringify(doc));
  });
}

let fed: Federation;
let A: FedServer;
let B: FedServer;
let F: FakeServer;
const doc: Artifacts = { key_responses: [], key_queries: [], responses: [], requests: [], claimed_event_ids: [] };
/** What F could not reach (endpoints peekd does not serve, events hidden from other servers), for the summary. */
const unreached: string[] = [];
let roomId: string;
let roomB: string;
let fakeRoom: FakeRoom;
let fakeAlias: string;

/** A request F signs, sent with fetch; the answer's raw text (the oracle parses it, not JS). */
async function signedRaw(to: FedServer, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { authorization: F.authorization(to.name, method, path, body) };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(to.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, text: await res.text() };
}

/** A federation answer holding PDUs, kept for the oracle. */
async function collect(kind: string, to: FedServer, method: string, path: string, body?: unknown, extra: { event_id?: string; anchor?: string } = {}): Promise<any> {
  const r = await signedRaw(to, method, path, body);
  expect(r.status, `${method} ${path} at ${to.name}: ${r.text.slice(0, 500)}`).toBe(200);
  doc.responses.push({ source: `${to.name}: ${method} ${path}`, kind, server: to.name, body: r.text, ...extra });
  return JSON.parse(r.text);
}

async function collectKeys(s: FedServer): Promise<void> {
  const r = await fetch(`${s.url}/_matrix/key/v2/server`);
  const text = await r.text();
  expect(r.status).toBe(200);
  doc.key_responses.push({ source: `${s.name}: GET /_matrix/key/v2/server`, server: s.name, body: text });
  for (const keyId of Object.keys(JSON.parse(text).verify_keys ?? {})) {
    const path = `/_matrix/key/v2/server/${enc(keyId)}`;
    const byId = await fetch(s.url + path);
    expect(byId.status).toBe(200);
    doc.key_responses.push({ source: `${s.name}: GET ${path}`, server: s.name, body: await byId.text() });
  }
  // The notary API (/_matrix/key/v2/query): checked when served, reported when not.
  const probes: [string, string, unknown?][] = [
    ['GET', `/_matrix/key/v2/query/${enc(s.name)}`],
    ['POST', '/_matrix/key/v2/query', { server_keys: { [s.name]: {} } }],
  ];
  for (const [method, path, body] of probes) {
    const q = await fetch(s.url + path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
    const qText = await q.text();
    if (q.status === 200) doc.key_queries.push({ source: `${s.name}: ${method} ${path}`, notary: s.name, body: qText });
    else unreached.push(`${s.name}: ${method} ${path} → ${q.status} ${qText.slice(0, 120)}`);
  }
}

/** The newest event of a room as a member sees it. */
async function lastEventId(user: TestUser, room: string): Promise<string> {
  return (await user.messages(room, 1))[0].event_id;
}

/** Every event of a room, oldest first, as a member sees it (/messages). */
async function eventsOf(user: TestUser, room: string): Promise<any[]> {
  return (await user.messages(room, 1000)).reverse();
}

/**
 * Collects /event for each event (those a stranger may not see answer 403), /state and
 * /state_ids at two events, /backfill, /get_missing_events and /event_auth; and claims the
 * event ID a member's /messages gave for each event a stranger can reach (visible, or in
 * the state or auth chain served). The others are reported as unreachable.
 */
async function collectHistory(to: FedServer, room: string, events: any[], authOf: string[]): Promise<void> {
  const visible: string[] = [];
  const hidden: any[] = [];
  for (const e of events) {
    const path = v1(`/event/${enc(e.event_id)}`);
    const r = await signedRaw(to, 'GET', path);
    expect([200, 403], `${path}: ${r.text.slice(0, 300)}`).toContain(r.status);
    if (r.status !== 200) {
      hidden.push(e);
      continue;
    }
    visible.push(e.event_id);
    doc.responses.push({ source: `${to.name}: GET ${path}`, kind: 'event', server: to.name, body: r.text, event_id: e.event_id });
  }
  expect(visible.length).toBeGreaterThan(0);
  const latest = visible.at(-1)!;
  const inState = new Set<string>();
  for (const anchor of [latest, visible[Math.floor(visible.length / 2)]!]) {
    await collect('state', to, 'GET', v1(`/state/${enc(room)}?event_id=${enc(anchor)}`), undefined, { anchor });
    const ids = await collect('state_ids', to, 'GET', v1(`/state_ids/${enc(room)}?event_id=${enc(anchor)}`), undefined, { anchor });
    for (const id of [...ids.pdu_ids, ...ids.auth_chain_ids]) inState.add(id);
  }
  await collect('backfill', to, 'GET', v1(`/backfill/${enc(room)}?v=${enc(latest)}&limit=100`));
  await collect('get_missing_events', to, 'POST', v1(`/get_missing_events/${enc(room)}`), { earliest_events: [visible[0]], latest_events: [latest], limit: 100, min_depth: 0 });
  for (const id of authOf) await collect('event_auth', to, 'GET', v1(`/event_auth/${enc(room)}/${enc(id)}`));
  for (const e of events) {
    const reachable = !hidden.includes(e) || inState.has(e.event_id);
    if (reachable) doc.claimed_event_ids.push({ event_id: e.event_id, label: `${to.name} gave a member ${e.event_id} (/messages, ${e.type})` });
    else unreached.push(`${to.name}: ${e.type} ${e.event_id} (${JSON.stringify(e.content)}) is hidden from other servers (sent before the room was world_readable) and is in no state served`);
  }
}

const deep = (n: number): unknown => (n === 0 ? { end: 'bottom ✓', list: [0, -0, 1] } : { d: deep(n - 1), n });

/** Message contents chosen to stress canonical JSON (no U+0000: peekd refuses it with 400 M_BAD_JSON). */
const CONTENTS: Record<string, unknown>[] = [
  { msgtype: 'm.text', body: 'héllo wörld — ☃ ü ß 日本語 Ελληνικά עברית' },
  { msgtype: 'm.text', body: 'astral 😀 𝄞 𠜎 🏳️‍🌈 👩🏽‍💻 \u{10FFFF}' },
  { msgtype: 'm.text', body: 'controls [\u0001\u0007\u0008\u0009\u000a\u000b\u000c\u000d\u001b\u001f\u007f\u0080\u009f] end' },
  { msgtype: 'm.text', body: 'escapes "double" \'single\' \\ back \\\\ two / solidus </script> [\u2028] [\u2029] [\ufeff] [\ufffd] \\u0041 %41' },
  {
    msgtype: 'm.text',
    body: 'numbers',
    n: { max: 9007199254740991, min: -9007199254740991, zero: 0, negZero: -0, neg: -1, big: 1e15, exp: 1e3, fromFloat: 10.0 },
    flags: [true, false, null],
  },
  {
    msgtype: 'm.text',
    body: 'nested',
    format: 'org.matrix.custom.html',
    formatted_body: '<b>bold</b> &amp; <i>“quotes”</i>',
    nest: deep(24),
    arr: [[[]], {}, [{}], '', [[1, [2, [3]]]]],
    keys: { b: 1, a: 2, B: 3, é: 4, '\ue000': 5, '😀': 6, '\uffff': 7, '\ud7ff': 8, '': 9, ' ': 10, '10': 11, '9': 12, '\u0001k': 13, 'a\u001f': 14, 'ü😀\n"': 15, constructor: 16, toString: 17 },
  },
];

beforeAll(async () => {
  requireOracleRuntime();
  fed = await startFederation({ servers: 2, fakes: 1 });
  [A, B] = fed.servers as [FedServer, FedServer];
  [F] = fed.fakes as [FakeServer];

  // --- F hosts a room that a user of A peeks through an alias: A's outbound requests --------
  fakeRoom = new FakeRoom(F);
  for (let i = 0; i < 5; i++) fakeRoom.add('m.room.message', { msgtype: 'm.text', body: `fake history ${i}` });
  fakeAlias = `#oracle'é😀-${Date.now().toString(36)}:${F.name}`;
  F.handler = (r: RecordedRequest) => {
    const url = new URL(r.uri, 'http://x');
    if (url.pathname === v1('/query/directory')) {
      return url.searchParams.get('room_alias') === fakeAlias
        ? { status: 200, body: { room_id: fakeRoom.roomId, servers: [F.name] } }
        : { status: 404, body: { errcode: 'M_NOT_FOUND', error: 'no alias' } };
    }
    const peek = url.pathname.match(/^\/_matrix\/federation\/v1\/peek\/([^/]+)\/([^/]+)(\/renew)?$/);
    if (peek && decodeURIComponent(peek[1]!) === fakeRoom.roomId) {
      if (peek[3]) return { status: 200, body: { renewal_interval: FAKE_RENEWAL_MS } };
      return { status: 200, body: r.method === 'PUT' ? fakeRoom.snapshot(FAKE_RENEWAL_MS) : {} };
    }
    if (url.pathname === v1(`/backfill/${enc(fakeRoom.roomId)}`)) {
      return {
        status: 200,
        body: {
          origin: F.name,
          origin_server_ts: Date.now(),
          pdus: fakeRoom.events
            .slice(0, -1)
            .reverse()
            .slice(0, 10)
            .map((e) => e.pdu),
        },
      };
    }
    if (url.pathname === v1(`/get_missing_events/${enc(fakeRoom.roomId)}`)) {
      const wanted = new Set<string>(r.body?.latest_events ?? []);
      const at = fakeRoom.events.findIndex((e) => wanted.has(e.id));
      return { status: 200, body: { events: at > 0 ? [fakeRoom.events[at - 1]!.pdu] : [] } };
    }
    return undefined;
  };
  // --- A hosts a world_readable room F peeks (MSC2444) while it fills up --------------------
  const alice = await TestUser.register(A.url, 'alice');
  const carol = await TestUser.register(A.url, 'carol');
  const claim = (eventId: string, label: string) => doc.claimed_event_ids.push({ event_id: eventId, label: `A gave a client ${eventId} (${label})` });
  await alice.ok('PUT', `/_matrix/client/v3/profile/${enc(alice.userId)}/displayname`, { displayname: 'Ålice 🦊 "the" \\ oracle' });
  const created = await alice.createRoom({
    preset: 'public_chat',
    name: 'Oracle ✓ 𝄞',
    topic: 'signing "oracle" \\ test\nsecond line\u0001',
    room_alias_name: `oracle${Date.now().toString(36)}`,
    creation_content: { 'm.federate': true },
    power_level_content_override: { events: { 'org.example.keyed': 0 } },
    initial_state: [
      { type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } },
      { type: 'org.example.empty', state_key: '', content: { v: 'initial', ü: ['😀'] } },
    ],
  });
  roomId = created.room_id;
  await carol.ok('PUT', `/_matrix/client/v3/profile/${enc(carol.userId)}/displayname`, { displayname: 'Cärol 🐈 \u200b zero-width' });
  expect((await carol.join(roomId)).status).toBe(200);
  const sent: string[] = [];
  const sendContent = async (i: number) => {
    const id = await alice.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/c${i}`, CONTENTS[i]);
    sent.push(id.event_id);
    claim(id.event_id, `message ${i}`);
  };
  for (let i = 0; i < 2; i++) await sendContent(i);

  // --- A rotates its signing key (`peekd keys rotate` while stopped): what came before is
  // signed by a key that is now under old_verify_keys, what comes after by the new one.
  await A.stop();
  const keyPath = join(A.dataDir, 'signing.key');
  await rotateSigningKey(keyPath, (await loadOrCreateSigningKeyFile(keyPath)).key, Date.now());
  await A.start();

  const peekPath = (peekId: string) => v1(`/peek/${enc(roomId)}/${peekId}?ver=10&ver=9`);
  await collect('peek', A, 'PUT', peekPath('oracle1'), {});
  const dave = await TestUser.register(A.url, 'dave');
  await dave.sync();
  const peeked = await dave.peek(fakeAlias);
  expect(peeked.status, JSON.stringify(peeked.body)).toBe(200);
  expect(peeked.body.room_id).toBe(fakeRoom.roomId);
  const peekStartedAt = Date.now();

  for (let i = 2; i < CONTENTS.length; i++) await sendContent(i);
  const custom = await carol.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/${enc('org.example.ünicode😀')}/u1`, {
    'm.relates_to': { rel_type: 'org.example', event_id: sent[0] },
    data: { ok: true },
  });
  claim(custom.event_id, 'custom event type');
  claim(await alice.setState(roomId, 'org.example.keyed', { value: 'keyed ✓' }, 'k€y/😀 "quoted" \\ #?&'), 'state with a non-empty key');
  claim(await alice.setState(roomId, 'org.example.keyed', { value: 'other key' }, alice.userId), 'state keyed by the sender’s user ID');
  claim(await alice.setState(roomId, 'org.example.empty', { v: 'changed', nested: { deeper: [1, 2, { x: 'y' }] } }), 'state with an empty key');
  claim(
    await alice.setState(roomId, 'm.room.power_levels', {
      ban: 50,
      kick: 50,
      redact: 50,
      invite: 0,
      events_default: 0,
      state_default: 50,
      users_default: 0,
      users: { [alice.userId]: 100, [carol.userId]: 50 },
      events: { 'm.room.name': 50, 'm.room.power_levels': 100, 'org.example.keyed': 0 },
      notifications: { room: 50 },
    }),
    'power levels',
  );
  claim(await alice.setState(roomId, 'm.room.join_rules', { join_rule: 'public', allow: [{ type: 'm.room_membership', room_id: roomId }] }), 'join rules with allow');
  claim(await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'world_readable', 'org.example.extra': 'dropped by redaction' }), 'history visibility');
  claim(
    await carol.setState(roomId, 'm.room.member', { membership: 'join', displayname: 'Cärol 🐈 (restricted)', join_authorised_via_users_server: alice.userId }, carol.userId),
    'member event with join_authorised_via_users_server',
  );
  claim(await alice.setState(roomId, 'm.room.topic', { topic: 'ⓣⓞⓟⓘⓒ \t tab' }), 'topic');
  const redaction = await alice.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.redaction/r1`, { redacts: sent[1], reason: 'oracle ✂' });
  claim(redaction.event_id, 'redaction');
  // Member events peekd makes itself: a display name change reflected into the room, an
  // invite, a ban and a kick, each with a reason.
  await alice.ok('PUT', `/_matrix/client/v3/profile/${enc(alice.userId)}/displayname`, { displayname: 'Ålice², renamed ✎' });
  claim(await alice.ok('POST', `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: dave.userId, reason: 'come and see 👀' }).then(() => lastEventId(alice, roomId)), 'invite');
  claim(await alice.ok('POST', `/_matrix/client/v3/rooms/${enc(roomId)}/ban`, { user_id: '@mallory:elsewhere.example', reason: 'spam ✂ "quoted"' }).then(() => lastEventId(alice, roomId)), 'ban');
  claim(await alice.ok('POST', `/_matrix/client/v3/rooms/${enc(roomId)}/kick`, { user_id: carol.userId, reason: 'bye 👋' }).then(() => lastEventId(alice, roomId)), 'kick');

  // A pushes all of it to F (the peek is live): wait for the last one, carol's kick.
  await waitFor(
    'carol’s kick in a transaction A pushed to F',
    () => F.pdus(A.name).some((p) => p.type === 'm.room.member' && p.state_key === carol.userId && p.content?.membership === 'leave'),
    10_000,
  );

  // --- B hosts a room too; F peeks it, so B pushes to F --------------------------------------
  const bob = await TestUser.register(B.url, 'bob');
  roomB = (await bob.createWorldReadableRoom({ name: 'B’s room ✓' })).room_id;
  claim(await bob.send(roomB, 'from B: ünïcödé 😀'), 'B message');
  await collect('peek', B, 'PUT', v1(`/peek/${enc(roomB)}/oracleB?ver=10`), {});
  claim(await bob.send(roomB, 'after F’s peek 𝄞'), 'B message after the peek');
  await waitFor('B’s message in a transaction B pushed to F', () => F.pdus(B.name).some((p) => p.content?.body === 'after F’s peek 𝄞'), 10_000);

  // --- A's other outbound requests to F --------------------------------------------------------
  const fromA = (pred: (r: RecordedRequest) => boolean) => F.requests.some((r) => r.headers.authorization?.includes(`origin="${A.name}"`) && pred(r));
  await waitFor('A renews its peek of F’s room', () => fromA((r) => r.method === 'POST' && r.uri.includes('/renew')), 10_000);
  // dave scrolls back past what A holds: A backfills from F.
  await dave.req('GET', `/_matrix/client/v3/rooms/${enc(fakeRoom.roomId)}/messages?dir=b&limit=50`);
  await waitFor('A’s /backfill to F', () => fromA((r) => r.method === 'GET' && r.uri.startsWith(v1('/backfill/'))), 10_000);
  // F sends A an event whose prev_event A lacks: A asks get_missing_events.
  fakeRoom.add('m.room.message', { msgtype: 'm.text', body: 'the gap' });
  const after = fakeRoom.add('m.room.message', { msgtype: 'm.text', body: 'after the gap' });
  const pushed = await F.send(A.name, 'PUT', v1(`/send/gap${Date.now()}`), { origin: F.name, origin_server_ts: Date.now(), pdus: [after.pdu], edus: [] });
  expect(pushed.status).toBe(200);
  await waitFor('A’s get_missing_events to F', () => fromA((r) => r.method === 'POST' && r.uri.startsWith(v1('/get_missing_events/'))), 10_000);
  // dave unpeeks: A DELETEs its peek (not before its first few seconds: the start grace).
  await waitFor('the outbound peek recorded at A', async () => (await outboundPeeks(A, fakeRoom.roomId))[0]);
  expect((await dave.unpeek(fakeRoom.roomId)).status).toBe(200);

  // --- what F reads of A's and B's rooms over signed federation GETs ---------------------------
  await collectKeys(A);
  await collectKeys(B);
  const eventsA = await eventsOf(alice, roomId);
  const carolJoin = eventsA.find((e) => e.type === 'm.room.member' && e.state_key === carol.userId && e.content?.membership === 'join')!;
  await collectHistory(A, roomId, eventsA, [eventsA.at(-1)!.event_id, carolJoin.event_id, sent[4]!]);
  const eventsB = await eventsOf(bob, roomB);
  await collectHistory(B, roomB, eventsB, [eventsB.at(-1)!.event_id]);
  // The peek again, now live: the full snapshot of the finished room.
  await collect('peek', A, 'PUT', peekPath('oracle1'), {});
  await collect('peek', A, 'PUT', peekPath('oracle2'), {});

  await waitFor('A’s DELETE of its peek of F’s room', () => fromA((r) => r.method === 'DELETE'), Math.max(1_000, peekStartedAt + 15_000 - Date.now()));

  // Every request A and B sent F, as F received it.
  for (const r of F.requests) {
    const origin = /origin="?([^",]+)/.exec(r.headers.authorization ?? '')?.[1];
    doc.requests.push({
      source: `${origin ?? 'unsigned'} → F: ${r.method} ${r.uri}`,
      ...(origin !== undefined ? { origin } : {}),
      destination: F.name,
      method: r.method,
      uri: r.uri,
      ...(r.headers.authorization !== undefined ? { authorization: r.headers.authorization } : {}),
      ...(r.headers['content-type'] !== undefined ? { content_type: r.headers['content-type'] } : {}),
      body: r.text,
    });
  }
}, 60_000);

afterAll(async () => {
  await fed?.cleanup();
});

const PDU_SOURCES = ['event', 'state', 'backfill', 'get_missing_events', 'event_auth', 'peek', 'transaction'];
const ROUTES = [
  'PUT /_matrix/federation/v1/send',
  'GET /_matrix/federation/v1/query',
  'PUT /_matrix/federation/v1/peek',
  'POST /_matrix/federation/v1/peek/renew',
  'DELETE /_matrix/federation/v1/peek',
  'GET /_matrix/federation/v1/backfill',
  'POST /_matrix/federation/v1/get_missing_events',
];

describe('matrix.org’s signedjson and canonicaljson on what peekd produced', () => {
  it('verifies every key, PDU hash, PDU signature, event ID and X-Matrix signature', async () => {
    expect(new Set(doc.requests.map((r) => r.origin))).toEqual(new Set([A.name, B.name]));
    const run = await runOracle(doc);
    expect(run.report, `the oracle printed no report: ${run.stderr}\n${run.stdout.slice(0, 2000)}`).toBeDefined();
    const { report } = run;
    console.log(
      `signing oracle: ${report.checks_run} checks (${Object.entries(report.categories)
        .map(([k, n]) => `${k} ${n}`)
        .join(
          ', ',
        )}); ${report.distinct_event_ids} distinct events; PDUs by source ${JSON.stringify(report.pdus_by_source_kind)}; PDU signatures by key ${JSON.stringify(report.pdu_signatures_by_key)}; requests ${JSON.stringify(report.requests_by_route)}; ${report.failures.length} failures` +
        (unreached.length ? `; not served: ${unreached.join(' | ')}` : '') +
        (report.notes.length ? `; notes: ${report.notes.join(' | ')}` : ''),
    );
    expect(report.failures, JSON.stringify(report.failures, null, 2).slice(0, 8000)).toEqual([]);
    expect(run.code, run.stderr).toBe(0);
    expect(report.ok).toBe(true);

    // Not vacuous: every category ran, on every kind of source.
    const c = report.checks;
    expect(c['key.self_signature']).toBeGreaterThanOrEqual(4);
    expect(c['key.valid_until_ts']).toBeGreaterThanOrEqual(4);
    expect(c['key.key_id']).toBeGreaterThanOrEqual(4);
    expect(c['pdu.content_hash']).toBeGreaterThanOrEqual(200);
    expect(c['pdu.signature']).toBeGreaterThanOrEqual(200);
    expect(c['pdu.event_id']).toBeGreaterThanOrEqual(200);
    expect(c['json.strict']).toBeGreaterThanOrEqual(50);
    expect(c['canonical.bytes']).toBeGreaterThanOrEqual(10);
    expect(c['xmatrix.signature']).toBeGreaterThanOrEqual(10);
    expect(c['xmatrix.params']).toBeGreaterThanOrEqual(40);
    expect(c['ids.claimed']).toBeGreaterThanOrEqual(50);
    expect(c['ids.state_ids']).toBeGreaterThanOrEqual(8);
    expect(c['ids.peek_state']).toBeGreaterThanOrEqual(4);
    expect(c['txn.origin']).toBeGreaterThanOrEqual(4);
    for (const kind of PDU_SOURCES) expect(report.pdus_by_source_kind[kind] ?? 0, `PDUs checked from ${kind}`).toBeGreaterThan(0);
    for (const route of ROUTES) expect(report.requests_by_route[route] ?? 0, `requests checked: ${route}`).toBeGreaterThan(0);
    expect(report.distinct_event_ids).toBeGreaterThanOrEqual(30);
    expect(Object.values(report.room_versions)).toEqual(Object.values(report.room_versions).map(() => '10'));
    expect(Object.keys(report.keys).sort()).toEqual([A.name, B.name].sort());
    // A's rotated key: events from before the rotation verified with its old key, the rest with the new one.
    expect(report.keys[A.name]).toHaveLength(2);
    const byKey = Object.entries<number>(report.pdu_signatures_by_key);
    expect(byKey.filter(([k]) => k.startsWith(`${A.name} `) && k.endsWith(' (old)')).map(([, n]) => n)[0]).toBeGreaterThanOrEqual(20);
    expect(byKey.filter(([k]) => k.startsWith(`${A.name} `) && !k.endsWith(' (old)')).map(([, n]) => n)[0]).toBeGreaterThanOrEqual(50);
  });
});

describe('negative controls: the oracle can fail', () => {
  /** A copy of the artifacts with the first /event answer of an m.room.message changed by `tamper`. */
  function tamperedEvent(tamper: (pdu: any) => void): { doc: Artifacts; source: string; eventId: string } {
    const copy: Artifacts = structuredClone(doc);
    const art = copy.responses.find((r) => r.kind === 'event' && JSON.parse(r.body).pdus[0]?.type === 'm.room.message' && r.server === A.name)!;
    const body = JSON.parse(art.body);
    tamper(body.pdus[0]);
    art.body = JSON.stringify(body);
    return { doc: copy, source: art.source, eventId: art.event_id! };
  }

  const flipFirst = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1);

  it('reports exactly the content hash of a PDU whose content changed after signing', async () => {
    const t = tamperedEvent((pdu) => (pdu.content.body += ' (tampered)'));
    const run = await runOracle(t.doc);
    expect(run.code).toBe(1);
    expect(run.report.failures).toEqual([{ check: 'pdu.content_hash', source: t.source, where: 'pdus[0]', event_id: t.eventId, detail: expect.stringContaining('canonicaljson gives') }]);
  });

  it('reports exactly the signature of a PDU whose signature was altered', async () => {
    const t = tamperedEvent((pdu) => {
      const byKey = pdu.signatures[A.name];
      const keyId = Object.keys(byKey)[0]!;
      byKey[keyId] = flipFirst(byKey[keyId]);
    });
    const run = await runOracle(t.doc);
    expect(run.code).toBe(1);
    expect(run.report.failures).toEqual([{ check: 'pdu.signature', source: t.source, where: 'pdus[0]', event_id: t.eventId, detail: expect.stringContaining('Unable to verify signature') }]);
  });

  it('reports exactly the X-Matrix signature of a request whose sig was altered', async () => {
    const copy: Artifacts = structuredClone(doc);
    const req = copy.requests.find((r) => r.method === 'GET' && r.uri.startsWith(v1('/backfill/')))!;
    req.authorization = req.authorization!.replace(/sig="([^"]+)"/, (_m, sig: string) => `sig="${flipFirst(sig)}"`);
    const run = await runOracle(copy);
    expect(run.code).toBe(1);
    expect(run.report.failures).toEqual([{ check: 'xmatrix.signature', source: req.source, detail: expect.stringContaining('Unable to verify signature') }]);
  });
});
