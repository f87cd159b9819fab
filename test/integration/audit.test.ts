// The audit answers against a running peekd: for every filter (room, user, user + device,
// server, since/until windows and their combinations) the admin endpoint, paged with small
// limits, and the operator command return exactly the peek events that were appended for
// it — generated histories appended to the log, and events the room actors wrote.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandResult } from '../../src/actors/roomActor.ts';
import type { RoomCommand } from '../../src/actors/commands.ts';
import type { PeekEvent } from '../../src/events/peekEvents.ts';
import { formatAuditTable, runAudit } from '../../src/operator/commands.ts';
import { MAX_AUDIT_PAGE, type AuditEntry, type AuditQuery } from '../../src/projections/auditQuery.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { appendHistories, auditEntryOf, createRoomCommand, HOUR, ManualClock, roomHistory, T0, type Peekers, type Placed } from '../helpers/peekLog.ts';

const TOKEN = 'audit-test-admin-token';
const ANN = '@ann:example.org';
const BO = '@bo:example.org';
const CY = '@cy:other.example';
const PEEKERS: Peekers = {
  users: [ANN, BO, CY],
  devices: ['PHONE', 'LAPTOP'],
  // both.example peeks rooms here (inbound) and hosts rooms we peek (outbound).
  inboundServers: ['peer.example', 'both.example', '[::1]:8449'],
  outboundServers: ['both.example', 'remote.example'],
};

type Known = Placed & { event: PeekEvent };

/** What a query must answer, derived from the appended events alone. */
function expected(events: Known[], q: Omit<AuditQuery, 'limit'>): AuditEntry[] {
  return events
    .filter(({ roomId, event: { peek: p, at } }) => {
      if (q.roomId !== undefined && roomId !== q.roomId) return false;
      if (q.userId !== undefined && (p.kind !== 'device' || p.userId !== q.userId)) return false;
      if (q.deviceId !== undefined && (p.kind !== 'device' || p.deviceId !== q.deviceId)) return false;
      if (q.serverName !== undefined && (p.kind === 'device' || p.server !== q.serverName)) return false;
      if (q.since !== undefined && at < q.since) return false;
      if (q.until !== undefined && at > q.until) return false;
      return true;
    })
    .sort((a, b) => a.seq - b.seq)
    .map(auditEntryOf);
}

describe('audit', () => {
  let t: Awaited<ReturnType<typeof startTestPeekd>>;
  const clock = new ManualClock(T0 - 24 * HOUR);
  const events: Known[] = [];
  const rooms: string[] = [];
  const BIG_ROOM = '!big.room:example.org';
  const TWELVE = '!twelve:example.org';

  /** GET /_peekd/admin/v1/audit with these parameters (and the token, unless given other headers). */
  const get = (params: Record<string, string>, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) =>
    fetch(`${t.url}/_peekd/admin/v1/audit?${new URLSearchParams(params)}`, { headers });

  /** Every page of an answer, following next_batch. */
  async function pages(params: Record<string, string>): Promise<{ events: AuditEntry[]; next_batch?: string }[]> {
    const out: { events: AuditEntry[]; next_batch?: string }[] = [];
    let from: string | undefined;
    for (;;) {
      const res = await get({ ...params, ...(from ? { from } : {}) });
      expect(res.status, JSON.stringify(params)).toBe(200);
      const page = (await res.json()) as { events: AuditEntry[]; next_batch?: string };
      out.push(page);
      if (!page.next_batch) return out;
      expect(out.length).toBeLessThan(1000);
      from = page.next_batch;
    }
  }
  const all = async (params: Record<string, string>) => (await pages(params)).flatMap((p) => p.events);

  beforeAll(async () => {
    t = await startTestPeekd({ clock, env: { PEEKD_ROLES: 'http,rooms,projections', PEEKD_ADMIN_TOKEN: TOKEN } });
    const { naming } = t.peekd;
    const send = async (command: RoomCommand): Promise<CommandResult> => {
      clock.t += 1000;
      const r = await t.peekd.bus.send(command);
      for (const e of r.peekEvents) events.push({ seq: e.seq, roomId: command.roomId, shard: naming.shardOf(command.roomId), event: e.event });
      return r;
    };

    // Generated histories: rooms of every ID shape, a room larger than one page can hold,
    // and a room of exactly twelve events.
    const histories = new Map<string, object[]>();
    for (let i = 0; i < 12; i++) {
      const roomId = i % 3 === 0 ? `!audit${i}.with.dots:example.org` : i % 3 === 1 ? `!audit${i}:matrix.example.org:8448` : `!AUDIT${i}:example.org`;
      histories.set(roomId, roomHistory(roomId, 80, 300 + i, { peekers: PEEKERS }));
    }
    histories.set(BIG_ROOM, roomHistory(BIG_ROOM, 1300, 77, { peekers: PEEKERS }));
    histories.set(TWELVE, roomHistory(TWELVE, 12, 78, { peekers: PEEKERS, unknownShare: 0 }));
    const placed = await appendHistories(t.peekd.log, naming, histories);
    events.push(...placed.filter((p): p is Known => p.event !== null));
    rooms.push(...histories.keys());

    // Events the actors wrote: a local device's peeks, and an inbound peek of both.example.
    const owner = `@owner:${t.serverName}`;
    const zed = `@zed:${t.serverName}`;
    for (const i of [1, 2]) {
      const roomId = `!hosted${i}:${t.serverName}`;
      rooms.push(roomId);
      await send(createRoomCommand(roomId, owner));
      await send({ type: 'StartDevicePeek', roomId, userId: zed, deviceId: 'TABLET' });
      await send({ type: 'StartInboundPeek', roomId, server: 'both.example', peekId: `in${i}`, roomVersions: ['10'] });
    }
    await send({ type: 'StopDevicePeek', roomId: `!hosted1:${t.serverName}`, userId: zed, deviceId: 'TABLET', reason: 'unpeeked' });
    await send({ type: 'DeleteInboundPeek', roomId: `!hosted2:${t.serverName}`, server: 'both.example', peekId: 'in2' });
    events.sort((a, b) => a.seq - b.seq);
    await t.peekd.waitForProjections('peeks', events.at(-1)!.seq, 'all'); // audit included, not only what /sync reads
  });

  afterAll(async () => {
    await t?.dropAll();
  });

  it('has events of every kind for every filter to find', () => {
    expect(events.length).toBeGreaterThan(2000);
    expect(expected(events, { roomId: BIG_ROOM }).length).toBeGreaterThan(MAX_AUDIT_PAGE);
    expect(expected(events, { roomId: TWELVE })).toHaveLength(12);
    const both = expected(events, { serverName: 'both.example' });
    expect(new Set(both.map((e) => e.kind))).toEqual(new Set(['inbound', 'outbound']));
    const zed = expected(events, { userId: `@zed:${t.serverName}` });
    expect(zed.map((e) => e.event)).toEqual(['PeekStarted', 'PeekStarted', 'PeekExpired']);
  });

  it('answers a room filter with exactly the events appended to that room', async () => {
    for (const roomId of rooms) {
      expect(await all({ room_id: roomId }), roomId).toEqual(expected(events, { roomId }));
    }
    expect(await all({ room_id: '!never.peeked:example.org' })).toEqual([]);
  });

  it('answers user and user + device filters', async () => {
    for (const userId of [...PEEKERS.users, `@zed:${t.serverName}`]) {
      expect(await all({ user_id: userId, limit: '250' }), userId).toEqual(expected(events, { userId }));
      for (const deviceId of [...PEEKERS.devices, 'TABLET']) {
        expect(await all({ user_id: userId, device_id: deviceId, limit: '250' }), `${userId} ${deviceId}`).toEqual(expected(events, { userId, deviceId }));
      }
    }
    // A user with this device never peeked.
    expect(await all({ user_id: CY, device_id: 'TABLET' })).toEqual([]);
  });

  it('answers server filters with inbound and outbound peeks alike', async () => {
    for (const serverName of ['peer.example', 'both.example', '[::1]:8449', 'remote.example']) {
      const answer = await all({ server_name: serverName, limit: '250' });
      expect(answer, serverName).toEqual(expected(events, { serverName }));
      expect(answer.length).toBeGreaterThan(0);
    }
    expect(await all({ server_name: 'nobody.example' })).toEqual([]);
  });

  it('answers since/until windows, both ends included, in ms or ISO 8601', async () => {
    const times = [...new Set(events.filter((e) => e.roomId === BIG_ROOM).map((e) => e.event.at))].sort((a, b) => a - b);
    const [a, b] = [times[Math.floor(times.length / 4)]!, times[Math.floor((3 * times.length) / 4)]!];
    // Windows that start and end exactly at an event's time.
    expect(expected(events, { roomId: BIG_ROOM, since: a, until: b }).some((e) => e.at === a || e.at === b)).toBe(true);
    const cases: [Record<string, string>, Omit<AuditQuery, 'limit'>][] = [
      [
        { room_id: BIG_ROOM, since: String(a) },
        { roomId: BIG_ROOM, since: a },
      ],
      [
        { room_id: BIG_ROOM, until: String(b) },
        { roomId: BIG_ROOM, until: b },
      ],
      [
        { room_id: BIG_ROOM, since: String(a), until: String(b) },
        { roomId: BIG_ROOM, since: a, until: b },
      ],
      [
        { user_id: ANN, since: new Date(a).toISOString(), until: new Date(b).toISOString() },
        { userId: ANN, since: a, until: b },
      ],
      [
        { user_id: BO, device_id: 'PHONE', since: String(a) },
        { userId: BO, deviceId: 'PHONE', since: a },
      ],
      [
        { server_name: 'both.example', until: String(b) },
        { serverName: 'both.example', until: b },
      ],
      [
        { server_name: 'peer.example', since: String(b), until: String(a) },
        { serverName: 'peer.example', since: b, until: a },
      ],
      // One instant: exactly the events at that time.
      [
        { room_id: BIG_ROOM, since: String(a), until: String(a) },
        { roomId: BIG_ROOM, since: a, until: a },
      ],
      // The actors' events, a day earlier than the generated ones.
      [
        { server_name: 'both.example', until: String(T0 - 1) },
        { serverName: 'both.example', until: T0 - 1 },
      ],
    ];
    for (const [params, q] of cases) {
      const want = expected(events, q);
      expect(await all({ ...params, limit: '300' }), JSON.stringify(params)).toEqual(want);
    }
    expect(expected(events, { roomId: BIG_ROOM, since: a, until: a }).length).toBeGreaterThan(0);
    expect(expected(events, { serverName: 'both.example', until: T0 - 1 })).toHaveLength(3);
    // Combined with a room: the room's events of that user in that window.
    expect(await all({ room_id: BIG_ROOM, user_id: ANN, since: String(a), until: String(b) })).toEqual(expected(events, { roomId: BIG_ROOM, userId: ANN, since: a, until: b }));
  });

  it('pages large answers: small limits, next_batch until the end, and at most 1000 a page', async () => {
    const want = expected(events, { serverName: 'both.example' });
    const small = await pages({ server_name: 'both.example', limit: '7' });
    expect(small.length).toBe(Math.ceil(want.length / 7));
    for (const p of small.slice(0, -1)) {
      expect(p.events).toHaveLength(7);
      expect(p.next_batch).toBe(String(p.events.at(-1)!.seq));
    }
    expect(small.at(-1)!.next_batch).toBeUndefined();
    expect(small.flatMap((p) => p.events)).toEqual(want);

    // An answer that fills its last page exactly: no empty page after it.
    const twelve = await pages({ room_id: TWELVE, limit: '4' });
    expect(twelve.map((p) => p.events.length)).toEqual([4, 4, 4]);
    expect(twelve.at(-1)!.next_batch).toBeUndefined();
    expect(twelve.flatMap((p) => p.events)).toEqual(expected(events, { roomId: TWELVE }));

    // A limit above the maximum is cut to it.
    const big = expected(events, { roomId: BIG_ROOM });
    const capped = await pages({ room_id: BIG_ROOM, limit: '5000' });
    expect(capped.map((p) => p.events.length)).toEqual([MAX_AUDIT_PAGE, big.length - MAX_AUDIT_PAGE]);
    expect(capped.flatMap((p) => p.events)).toEqual(big);
    // The default page is 100.
    const defaults = await pages({ room_id: BIG_ROOM });
    expect(defaults[0]!.events).toHaveLength(100);
    expect(defaults.flatMap((p) => p.events)).toEqual(big);
  });

  it('refuses requests without the admin token, and malformed filters', async () => {
    const noToken = await get({ room_id: TWELVE }, {});
    expect(noToken.status).toBe(401);
    expect(await noToken.json()).toMatchObject({ errcode: 'M_MISSING_TOKEN' });
    const wrong = await get({ room_id: TWELVE }, { authorization: 'Bearer not-the-token' });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN' });
    // The token in the query string is refused: proxies log URLs.
    const inQuery = await get({ room_id: TWELVE, access_token: TOKEN }, {});
    expect(inQuery.status).toBe(401);
    expect(await inQuery.json()).toMatchObject({ errcode: 'M_MISSING_TOKEN' });

    const malformed: Record<string, string>[] = [
      {},
      { since: String(T0) },
      { device_id: 'PHONE' },
      { room_id: 'not-a-room' },
      { user_id: 'ann' },
      { server_name: 'bad server' },
      { room_id: TWELVE, since: 'yesterday' },
      { room_id: TWELVE, until: '2023-13-45T99:00:00Z' },
      { room_id: TWELVE, limit: '0' },
      { room_id: TWELVE, limit: 'ten' },
      { room_id: TWELVE, from: 'abc' },
    ];
    for (const params of malformed) {
      const res = await get(params);
      expect(res.status, JSON.stringify(params)).toBe(400);
      expect(await res.json()).toMatchObject({ errcode: 'M_INVALID_PARAM' });
    }
  });

  it('the operator command writes every page as jsonl or as a table', async () => {
    const collect = () => {
      const chunks: string[] = [];
      const out = new Writable({
        write(chunk, _enc, done) {
          chunks.push(String(chunk));
          done();
        },
      });
      return { out, text: () => chunks.join('') };
    };
    // Pages of 1000 (as the CLI asks) over a room larger than one page.
    const jsonl = collect();
    const count = await runAudit(t.peekd.config, { roomId: BIG_ROOM, limit: MAX_AUDIT_PAGE }, 'jsonl', jsonl.out);
    const want = expected(events, { roomId: BIG_ROOM });
    expect(count).toBe(want.length);
    expect(
      jsonl
        .text()
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l)),
    ).toEqual(want);

    const table = collect();
    const q = { serverName: 'both.example', until: T0 - 1 };
    await runAudit(t.peekd.config, { ...q, limit: 2 }, 'table', table.out);
    const rows = expected(events, q);
    expect(table.text()).toBe(`${formatAuditTable(rows)}\n`);
    const lines = table.text().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^seq\s+time\s+room\s+event\s+kind\s+who\s+reason\s+expires$/);
    expect(lines).toHaveLength(1 + rows.length);
    for (const [i, e] of rows.entries()) {
      expect(lines[i + 1]).toContain(String(e.seq));
      expect(lines[i + 1]).toContain(new Date(e.at).toISOString());
      expect(lines[i + 1]).toContain(e.room_id);
      expect(lines[i + 1]).toContain(`both.example ${e.peek_id}`);
      if (e.reason) expect(lines[i + 1]).toContain(e.reason);
    }
  });
});
