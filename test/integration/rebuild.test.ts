// Replay and verify against a real log and database:
//   - a replay of more than 100,000 events while live runners keep projecting events that
//     a writer appends meanwhile (directly, and through room actors); readers never see a
//     half-built or half-swapped table; the swapped-in tables equal a reference computed
//     here from the events, keep their index names, and a verify then passes;
//   - on a running peekd: verify names the rows an operator changed by hand (also through
//     the admin API), and a replay repairs them.
import { seqOfPosition, throughSeq } from '../../src/events/envelope.ts';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActorHost } from '../../src/actors/actorHost.ts';
import type { CommandResult } from '../../src/actors/roomActor.ts';
import type { RoomCommand } from '../../src/actors/commands.ts';
import { generateSigningKey } from '../../src/crypto/index.ts';
import type { StoredRoomEvent } from '../../src/events/roomEvents.ts';
import type { Naming } from '../../src/events/subjects.ts';
import { SigningPduFactory } from '../../src/matrix/pduFactory.ts';
import { EventLog } from '../../src/nats/eventLog.ts';
import { federationPeeksProjection } from '../../src/projections/federationPeeks.ts';
import { readModels } from '../../src/projections/index.ts';
import type { Projection } from '../../src/projections/projection.ts';
import { replayProjection, verifyProjection, type RebuildDeps, type VerifyResult } from '../../src/projections/rebuild.ts';
import { CHECKPOINT_LAG_MS, ProjectionRunner, readCheckpoint } from '../../src/projections/runner.ts';
import { syncPeeksProjection } from '../../src/projections/syncPeeks.ts';
import { syncRoomsProjection } from '../../src/projections/syncRooms.ts';
import { rowsOf, type Database, type Db } from '../../src/store/db.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { createTestDatabase, createTestStreams, type TestDatabase, type TestStreams } from '../helpers/services.ts';
import { until } from '../helpers/until.ts';
import { appendHistories, createRoomCommand, HOUR, ManualClock, readPeekTables, readRoomTables, referencePeekTables, referenceRoomTables, roomHistory, T0, type Placed } from '../helpers/peekLog.ts';

const DAY = 24 * HOUR;
const TOKEN = 'rebuild-test-admin-token';
type TestPeekd = Awaited<ReturnType<typeof startTestPeekd>>;

/** Room IDs of every shape the subjects must carry: dots, ports, upper case. */
function generatedRoomId(i: number, label: string): string {
  return i % 3 === 0 ? `!${label}${i}.with.dots:example.org` : i % 3 === 1 ? `!${label}${i}:matrix.example.org:8448` : `!${label.toUpperCase()}${i}xyz:example.org`;
}

/** Indexes and constraints of the live tables: a swap must keep their names (later migrations use them). */
async function liveIndexes(db: Db, tables: string[]): Promise<string[]> {
  const rows = rowsOf<{ tablename: string; indexname: string; indexdef: string }>(
    await db.execute(sql`select tablename, indexname, indexdef from pg_indexes where schemaname = 'public' and tablename in ${tables} order by indexname`),
  );
  return rows.map((r) => `${r.tablename} ${r.indexname} ${r.indexdef}`);
}

/** A peekd whose clock stands a day before every generated deadline: the scheduler never fires. */
async function startQuietPeekd(): Promise<TestPeekd> {
  return startTestPeekd({ clock: new ManualClock(T0 - DAY), env: { PEEKD_ROLES: 'http,rooms,projections', PEEKD_ADMIN_TOKEN: TOKEN } });
}

/** Real rooms through the room actors: their PDUs go to ROOMS, device peeks to PEEKS. */
class ActorTraffic {
  readonly roomEvents: StoredRoomEvent[] = [];
  readonly peeks: Placed[] = [];
  private readonly peeking = new Set<string>();
  private n = 0;

  constructor(
    private readonly send: (command: RoomCommand) => Promise<CommandResult>,
    private readonly naming: Naming,
    private readonly serverName: string,
    readonly rooms: string[],
  ) {}

  private record(roomId: string, r: CommandResult): void {
    this.roomEvents.push(...r.roomEvents);
    for (const e of r.peekEvents) this.peeks.push({ seq: e.seq, roomId, shard: this.naming.shardOf(roomId), event: e.event });
  }

  async createRooms(): Promise<void> {
    for (const roomId of this.rooms) this.record(roomId, await this.send(createRoomCommand(roomId, `@owner:${this.serverName}`)));
  }

  /** One step: a few messages in a room, and a device peek there started or ended. */
  async step(): Promise<void> {
    const n = this.n++;
    const roomId = this.rooms[n % this.rooms.length]!;
    const owner = `@owner:${this.serverName}`;
    const messages = Array.from({ length: 3 }, (_, i) => ({ type: 'm.room.message', sender: owner, content: { msgtype: 'm.text', body: `message ${n}.${i}` } }));
    this.record(roomId, await this.send({ type: 'SendEvents', roomId, events: messages }));
    const userId = `@watcher${n % 7}:${this.serverName}`;
    const key = `${roomId}|${userId}`;
    if (this.peeking.delete(key)) {
      this.record(roomId, await this.send({ type: 'StopDevicePeek', roomId, userId, deviceId: 'DEV', reason: 'unpeeked' }));
    } else {
      this.peeking.add(key);
      this.record(roomId, await this.send({ type: 'StartDevicePeek', roomId, userId, deviceId: 'DEV' }));
    }
  }

  lastSeq(kind: 'peeks' | 'rooms'): number {
    return Math.max(0, ...(kind === 'peeks' ? this.peeks : this.roomEvents).map((e) => e.seq));
  }
}

/**
 * What readers may see at a checkpoint, walked once over the log: rows of syncapi_peeks
 * (device peeks ever started), of federationsender_inbound_peeks (live inbound peeks) and
 * of syncapi_room_events.
 */
function expectedCounts(peeks: Placed[], roomEvents: StoredRoomEvent[], peekSeqs: number[], roomSeqs: number[]) {
  const devices = new Set<string>();
  const inbound = new Set<string>();
  const atPeekSeq = new Map<number, { devices: number; inbound: number }>();
  const sortedSeqs = [...new Set(peekSeqs)].sort((a, b) => a - b);
  let i = 0;
  for (const target of sortedSeqs) {
    for (; i < peeks.length && peeks[i]!.seq <= target; i++) {
      const { roomId, event: e } = peeks[i]!;
      if (!e) continue;
      const p = e.peek;
      if (p.kind === 'device' && e.type === 'PeekStarted') devices.add(`${roomId}|${p.userId}|${p.deviceId}`);
      if (p.kind === 'inbound') {
        const k = `${roomId}|${p.server}|${p.peekId}`;
        if (e.type === 'PeekStarted') inbound.add(k);
        if (e.type === 'PeekExpired') inbound.delete(k);
      }
    }
    atPeekSeq.set(target, { devices: devices.size, inbound: inbound.size });
  }
  const roomsAt = new Map(roomSeqs.map((seq) => [seq, roomEvents.filter((e) => e.seq <= seq).length]));
  return { atPeekSeq, roomsAt };
}

describe('replay of more than 100,000 events while live runners project new ones', () => {
  // The read models whose tables a 100,000-event log makes interesting for a swap: the
  // stateful ones (rows updated event after event). peek_audit (one insert per event) is
  // replayed and verified on a running peekd below and by the CLI test.
  const MODELS = [syncRoomsProjection, syncPeeksProjection, federationPeeksProjection] as Projection<unknown>[];
  let streams: TestStreams;
  let database: TestDatabase;
  let opened: Database;
  let db: Db;
  let log: EventLog;
  let host: ActorHost;
  let actors: ActorTraffic;
  const runners = new Map<string, ProjectionRunner>();
  const generated: Placed[] = [];
  let baseLastSeq = 0;

  const allPeeks = () => [...generated, ...actors.peeks].sort((a, b) => a.seq - b.seq);
  const deps = (): RebuildDeps => ({ db, nc: streams.nc, naming: streams.naming });
  const projected = async () => {
    await Promise.all([...runners.values()].map((r) => r.waitFor(r.projection.stream === 'peeks' ? Math.max(generated.at(-1)?.seq ?? 0, actors.lastSeq('peeks')) : actors.lastSeq('rooms'))));
  };

  beforeAll(async () => {
    streams = await createTestStreams(8);
    database = await createTestDatabase();
    opened = await database.open();
    db = opened.db;
    // The bulk load below keeps 72 appends of 128 events in flight: on a loaded two-core
    // machine (the whole suite, nats-server and PGlite on the same cores) their
    // acknowledgements, and the direct gets of the traffic during the replay (a room's last
    // sequence, an actor's freshness check), can queue past the 5 s a client waits by
    // default (seen once on the fallback path: a TimeoutError from the writer below). This
    // test is about replay and swap, not about NATS timeouts (appendAcks.test.ts).
    log = await EventLog.open(streams.nc, streams.naming, undefined, { ackTimeoutMs: 60_000, apiTimeoutMs: 60_000 });

    // Room actors (a day before every generated deadline) for real rooms and device peeks.
    const serverName = 'rebuild.test';
    host = new ActorHost({
      log,
      clock: new ManualClock(T0 - DAY),
      pduFactory: new SigningPduFactory(serverName, generateSigningKey()),
      settings: { serverName, peekLifetimeMs: HOUR, inboundRenewalIntervalMs: HOUR, maxConflictRetries: 16 },
    });
    actors = new ActorTraffic(
      (c) => host.send(c),
      streams.naming,
      serverName,
      [0, 1, 2, 3].map((i) => `!real${i}.room:${serverName}`),
    );
    for (const p of MODELS) {
      const runner = new ProjectionRunner(db, streams.nc, streams.naming, p);
      runners.set(p.name, runner);
      await runner.start();
    }

    // The live runners tail the log while it grows: 72 long-lived rooms × 1,400 messages
    // (four peekers a room: the stateful tables fold many events into few rows, which
    // keeps the row-writing cost, not the point here, small), every room in flight at
    // once, 128 messages per append call; and the actors' rooms.
    const peekers = { users: ['@ann:example.org'], devices: ['PHONE'], inboundServers: ['peer2.example:8448'], outboundServers: ['remote.example'] };
    const histories = new Map<string, object[]>();
    for (let i = 0; i < 72; i++) {
      const roomId = generatedRoomId(i, 'gen');
      histories.set(roomId, roomHistory(roomId, 1400, i + 1, { unknownShare: 0.005, peekers }));
    }
    const started = performance.now();
    const [placed] = await Promise.all([
      appendHistories(log, streams.naming, histories, { concurrency: 72, chunk: 128, bulk: true }),
      (async () => {
        await actors.createRooms();
        for (let i = 0; i < 40; i++) await actors.step();
      })(),
    ]);
    generated.push(...placed);
    const secs = (performance.now() - started) / 1000;
    console.log(`appended ${generated.length} peek events in ${secs.toFixed(1)} s (${Math.round(generated.length / secs)}/s)`);
    baseLastSeq = allPeeks().at(-1)!.seq;
    await projected();
    console.log(`live runners caught up ${((performance.now() - started) / 1000).toFixed(1)} s after the first append`);
  });

  afterAll(async () => {
    for (const r of runners.values()) await r.stop().catch(() => undefined);
    await host?.stop();
    await opened?.close();
    await database?.drop();
    await streams?.cleanup();
  });

  it('rebuilds into shadow tables and swaps them in while events keep arriving; the tables equal the reference and a verify agrees', async () => {
    expect(generated.filter((p) => p.event !== null).length).toBeGreaterThan(100_000);
    const tables = MODELS.flatMap((m) => m.tables);
    const indexesBefore = await liveIndexes(db, tables);

    // Traffic during replay and verify: new rooms' histories appended directly, and actor
    // commands; each step waits until the live runners have projected it.
    let replaying = true; // the writer and the readers run until replay and verify are done
    let during = 0;
    const writer = (async () => {
      for (let n = 0; replaying; n++) {
        const roomId = generatedRoomId(n, 'during');
        const placed = await appendHistories(log, streams.naming, new Map([[roomId, roomHistory(roomId, 40, 900_000 + n)]]), { chunk: 20 });
        generated.push(...placed);
        await actors.step();
        during += placed.length;
        await projected();
      }
    })();
    // Readers meanwhile: one statement reads checkpoints and row counts. A
    // half-built or half-swapped table would disagree with its checkpoint.
    const samples: { peeksSeq: number; deviceRows: number; fedSeq: number; inboundRows: number; roomsSeq: number; roomRows: number }[] = [];
    const probe = (async () => {
      const cp = (name: string) => sql`(select seq from projection_checkpoints where projection = ${name})`;
      while (replaying) {
        const [row] = rowsOf<Record<string, string | number>>(
          await db.execute(sql`select
            ${cp('sync_peeks')} as peeks_seq, (select count(*) from syncapi_peeks) as device_rows,
            ${cp('federation_peeks')} as fed_seq, (select count(*) from federationsender_inbound_peeks) as inbound_rows,
            ${cp('sync_rooms')} as rooms_seq, (select count(*) from syncapi_room_events) as room_rows`),
        );
        const n = (k: string) => Number(row![k]);
        samples.push({ peeksSeq: n('peeks_seq'), deviceRows: n('device_rows'), fedSeq: n('fed_seq'), inboundRows: n('inbound_rows'), roomsSeq: n('rooms_seq'), roomRows: n('room_rows') });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    // Every read model at once (`peekd replay` goes one by one; at once is the harder
    // case for the swaps, and the quicker one on a small machine); then a verify, with the
    // traffic still going.
    const started = performance.now();
    let replays: { name: string; seq: number; ms: number; appendedDuring: number; liveBefore: number; liveAfter: number; progress: [number, number][] }[];
    let verified: VerifyResult[];
    let verifySecs: number;
    try {
      replays = await Promise.all(
        MODELS.map(async (p) => {
          const runner = runners.get(p.name)!;
          const liveBefore = runner.committed;
          const duringBefore = during;
          const progress: [number, number][] = [];
          const r = await replayProjection(deps(), p, (done, total) => progress.push([done, total]));
          return { name: p.name, seq: r.seq, ms: r.durationMs, appendedDuring: during - duringBefore, liveBefore, liveAfter: runner.committed, progress };
        }),
      );
      const verifyStarted = performance.now();
      const duringBefore = during;
      verified = await Promise.all(MODELS.map((p) => verifyProjection(deps(), p)));
      verifySecs = (performance.now() - verifyStarted) / 1000;
      expect(during, 'events appended during the verify').toBeGreaterThan(duringBefore);
    } finally {
      replaying = false;
      await writer;
      await probe;
    }
    const secs = (performance.now() - started) / 1000 - verifySecs;
    const replayed = replays.filter((r) => r.name !== 'sync_rooms').reduce((n, r) => n + r.seq, 0);
    console.log(`replayed ${replayed} peek events (2 read models at once) in ${secs.toFixed(1)} s: ${Math.round(replayed / secs)} ev/s`);
    for (const r of replays) {
      console.log(`  ${r.name}: up to sequence ${r.seq} in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.seq / (r.ms / 1000))} ev/s); ${r.appendedDuring} events appended meanwhile`);
    }
    console.log(`verify: ${verifySecs.toFixed(1)} s`);

    // The peek read models replayed the whole log while the live runners kept committing.
    for (const r of replays.filter((x) => x.name !== 'sync_rooms')) {
      expect(r.seq, r.name).toBeGreaterThanOrEqual(baseLastSeq);
      expect(r.appendedDuring, `${r.name}: events appended during its replay`).toBeGreaterThan(0);
      expect(r.liveAfter, `${r.name}: the live runner kept projecting`).toBeGreaterThan(r.liveBefore);
      // Progress only moves forward and reaches the log as it was when the replay began.
      const dones = r.progress.map(([d]) => d);
      expect(dones.length).toBeGreaterThan(10);
      expect([...dones].sort((a, b) => a - b)).toEqual(dones);
      expect(dones.at(-1)!).toBeGreaterThanOrEqual(baseLastSeq);
      for (const [d, total] of r.progress) expect(d).toBeLessThanOrEqual(total);
    }

    // Everything appended is projected; the swapped-in tables equal the reference.
    await projected();
    const peeks = allPeeks();
    const lastPeek = peeks.at(-1)!.seq;
    const reference = referencePeekTables(peeks);
    const live = await readPeekTables(db);
    expect(live.syncapi_peeks).toEqual(reference.syncapi_peeks);
    expect(live.federationsender_inbound_peeks).toEqual(reference.federationsender_inbound_peeks);
    expect(live.federationsender_outbound_peeks).toEqual(reference.federationsender_outbound_peeks);
    expect(await readRoomTables(db)).toEqual(referenceRoomTables(actors.roomEvents));
    for (const p of MODELS) {
      // A last stretch that touched nothing of a projection is stored within CHECKPOINT_LAG_MS.
      const want = throughSeq(seqOfPosition(p.stream === 'peeks' ? lastPeek : actors.lastSeq('rooms')));
      await until(`${p.name}'s checkpoint stored`, async () => (await readCheckpoint(db, p.name, p.stream)) >= want, CHECKPOINT_LAG_MS + 10_000, 20);
      expect(await readCheckpoint(db, p.name, p.stream)).toBe(want);
    }
    expect(await liveIndexes(db, tables)).toEqual(indexesBefore);
    expect(rowsOf(await db.execute(sql`select nspname from pg_namespace where nspname like 'peekd_%'`))).toHaveLength(0);

    // No reader ever saw a table that disagreed with its checkpoint.
    expect(samples.length).toBeGreaterThan(20);
    const { atPeekSeq, roomsAt } = expectedCounts(
      peeks,
      actors.roomEvents,
      samples.flatMap((s) => [s.peeksSeq, s.fedSeq]),
      samples.map((s) => s.roomsSeq),
    );
    for (const s of samples) {
      expect(s.deviceRows, `syncapi_peeks at checkpoint ${s.peeksSeq}`).toBe(atPeekSeq.get(s.peeksSeq)!.devices);
      expect(s.inboundRows, `federationsender_inbound_peeks at checkpoint ${s.fedSeq}`).toBe(atPeekSeq.get(s.fedSeq)!.inbound);
      expect(s.roomRows, `syncapi_room_events at checkpoint ${s.roomsSeq}`).toBe(roomsAt.get(s.roomsSeq));
    }

    // And the verify, at its own checkpoint, found the live tables equal to a rebuild.
    for (const v of verified) {
      expect(v.equal, v.projection).toBe(true);
      for (const tc of v.tables) {
        expect(tc.liveRows, tc.table).toBe(tc.rebuiltRows);
        expect(tc.liveHash, tc.table).toBe(tc.rebuiltHash);
        expect(tc.differences).toEqual([]);
      }
    }
    // The checkpoint it compared at: a rebuild of the log up to there.
    const atVerify = verified.find((v) => v.projection === 'sync_peeks')!;
    expect(atVerify.seq).toBeGreaterThan(baseLastSeq);
    expect(atVerify.tables[0]!.liveRows).toBe(referencePeekTables(peeks, atVerify.seq).syncapi_peeks.length);
  }, 180_000); // about 25 s on a quiet machine; room for a busy one
});

describe('verify against rows changed by hand', () => {
  let t: TestPeekd;
  let actors: ActorTraffic;
  let generated: Placed[];
  const deps = (): RebuildDeps => ({ db: t.peekd.database.db, nc: t.peekd.nc, naming: t.peekd.naming });
  const allPeeks = () => [...generated, ...actors.peeks].sort((a, b) => a.seq - b.seq);
  const admin = (path: string, init: RequestInit = {}) => fetch(`${t.url}/_peekd/admin/v1/${path}`, { method: 'POST', ...init, headers: { authorization: `Bearer ${TOKEN}`, ...init.headers } });

  beforeAll(async () => {
    t = await startQuietPeekd();
    actors = new ActorTraffic((c) => t.peekd.bus.send(c), t.peekd.naming, t.serverName, [`!tamper.a:${t.serverName}`, `!tamper.b:${t.serverName}`]);
    await actors.createRooms();
    for (let i = 0; i < 12; i++) await actors.step();
    const histories = new Map<string, object[]>();
    for (let i = 0; i < 30; i++) histories.set(generatedRoomId(i, 'small'), roomHistory(generatedRoomId(i, 'small'), 80, 5000 + i));
    generated = await appendHistories(t.peekd.log, t.peekd.naming, histories);
    await t.peekd.waitForProjections('peeks', allPeeks().at(-1)!.seq);
    await t.peekd.waitForProjections('rooms', actors.lastSeq('rooms'));
  });

  afterAll(async () => {
    await t?.dropAll();
  });

  const verifyAll = async () => Object.fromEntries(await Promise.all(readModels('all').map(async (p) => [p.name, await verifyProjection(deps(), p)] as const)));

  it('passes on untouched tables, with equal counts and hashes', async () => {
    const results = await verifyAll();
    for (const r of Object.values(results)) {
      expect(r.equal, r.projection).toBe(true);
      for (const tc of r.tables) {
        expect(tc.liveRows, tc.table).toBeGreaterThan(0);
        expect(tc.liveHash).toMatch(/^[0-9a-f]{32}$/);
      }
    }
  });

  it('names the changed, deleted and added rows, and a replay repairs them', async () => {
    const db = t.peekd.database.db;
    const reference = referencePeekTables(allPeeks());
    // An operator "fixes" three rows by hand, and adds one.
    const peek = reference.syncapi_peeks.find((r) => r.endedSeq === null)!;
    await db.execute(sql`update syncapi_peeks set end_reason = 'tampered', ended_seq = 1 where room_id = ${peek.roomId} and user_id = ${peek.userId} and device_id = ${peek.deviceId}`);
    const auditRow = reference.peek_audit[Math.floor(reference.peek_audit.length / 2)]!;
    await db.execute(sql`delete from peek_audit where seq = ${auditRow.seq}`);
    await db.execute(sql`insert into federationsender_inbound_peeks (room_id, server_name, peek_id, shard, created_at, renewed_at, renewal_interval_ms, expires_at, room_seq, started_seq)
      values ('!ghost:example.org', 'ghost.example', 'g1', 0, 1, 1, 1, 1, 0, 1)`);
    const stateRoom = actors.rooms[0]!;
    await db.execute(sql`update syncapi_current_state set content = '{"join_rule":"invite"}'::jsonb where room_id = ${stateRoom} and type = 'm.room.join_rules'`);

    const results = await verifyAll();
    expect(results.federation_peeks!.equal).toBe(false);
    expect(results.sync_peeks!.equal).toBe(false);
    expect(results.audit!.equal).toBe(false);
    expect(results.sync_rooms!.equal).toBe(false);
    const table = (r: VerifyResult, name: string) => r.tables.find((x) => x.table === name)!;

    // A changed row: its live version and its rebuilt version, both named.
    const changed = table(results.sync_peeks!, 'syncapi_peeks');
    expect(changed.liveRows).toBe(changed.rebuiltRows);
    expect(changed.liveHash).not.toBe(changed.rebuiltHash);
    expect(changed.differences.map((d) => d.side)).toEqual(['live', 'rebuilt']);
    for (const d of changed.differences) expect(d.row).toContain(peek.deviceId);
    expect(changed.differences[0]!.row).toContain('tampered');
    expect(changed.differences[1]!.row).not.toContain('tampered');

    // A deleted row: only in the rebuild.
    const deleted = table(results.audit!, 'peek_audit');
    expect(deleted.liveRows).toBe(deleted.rebuiltRows - 1);
    expect(deleted.differences).toEqual([{ side: 'rebuilt', row: expect.stringMatching(new RegExp(`^\\(${auditRow.seq},`)) }]);

    // An added row: only live. The untouched table of the same projection is equal.
    const added = table(results.federation_peeks!, 'federationsender_inbound_peeks');
    expect(added.liveRows).toBe(added.rebuiltRows + 1);
    expect(added.differences).toEqual([{ side: 'live', row: expect.stringContaining('ghost.example') }]);
    const outbound = table(results.federation_peeks!, 'federationsender_outbound_peeks');
    expect(outbound.equal).toBe(true);
    expect(outbound.liveHash).toBe(outbound.rebuiltHash);

    const state = table(results.sync_rooms!, 'syncapi_current_state');
    expect(state.differences.map((d) => d.side)).toEqual(['live', 'rebuilt']);
    expect(state.differences[0]!.row).toContain('invite');
    expect(state.differences[1]!.row).toContain('public');
    expect(table(results.sync_rooms!, 'syncapi_room_events').equal).toBe(true);

    // The admin API says the same; it needs the token and a known projection.
    expect((await fetch(`${t.url}/_peekd/admin/v1/verify?projection=audit`, { method: 'POST' })).status).toBe(401);
    const bad = await admin('verify?projection=nope');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ errcode: 'M_INVALID_PARAM' });
    const viaHttp = await admin('verify?projection=audit');
    expect(viaHttp.status).toBe(200);
    const body = (await viaHttp.json()) as { equal: boolean; projections: VerifyResult[] };
    expect(body.equal).toBe(false);
    expect(body.projections.map((p) => p.projection)).toEqual(['audit']);
    expect(body.projections[0]!.tables[0]!.differences).toEqual(deleted.differences);
    // Every read model at once (each stream read once): the same findings, in readModels order.
    const viaHttpAll = await admin('verify');
    expect(viaHttpAll.status).toBe(200);
    const bodyAll = (await viaHttpAll.json()) as { equal: boolean; projections: VerifyResult[] };
    expect(bodyAll.equal).toBe(false);
    expect(bodyAll.projections.map((p) => p.projection)).toEqual(readModels('all').map((p) => p.name));
    for (const r of bodyAll.projections) {
      expect(r.equal, r.projection).toBe(results[r.projection]!.equal);
      expect(
        r.tables.map((x) => x.differences),
        r.projection,
      ).toEqual(results[r.projection]!.tables.map((x) => x.differences));
    }

    // A replay (through the admin API for one, directly for the rest) repairs every table.
    const replayed = await admin('replay?projection=audit');
    expect(replayed.status).toBe(200);
    expect(((await replayed.json()) as { replayed: { projection: string; seq: number }[] }).replayed).toEqual([
      expect.objectContaining({ projection: 'audit', seq: throughSeq(seqOfPosition(allPeeks().at(-1)!.seq)) }),
    ]);
    for (const name of ['sync_peeks', 'federation_peeks', 'sync_rooms']) await replayProjection(deps(), readModels(name)[0]!);
    for (const r of Object.values(await verifyAll())) expect(r.equal, r.projection).toBe(true);
    // All at once through the admin API: one answer per read model, in readModels order; still equal.
    const replayedAll = await admin('replay');
    expect(replayedAll.status).toBe(200);
    const lastPeeks = throughSeq(seqOfPosition(allPeeks().at(-1)!.seq));
    expect(((await replayedAll.json()) as { replayed: { projection: string; seq: number }[] }).replayed).toEqual(
      readModels('all').map((p) => expect.objectContaining({ projection: p.name, ...(p.stream === 'peeks' ? { seq: lastPeeks } : {}) })),
    );
    const verifiedAll = await admin('verify?projection=all');
    expect(((await verifiedAll.json()) as { equal: boolean }).equal).toBe(true);
    expect(await readPeekTables(db)).toEqual(reference);
    expect(await readRoomTables(db)).toEqual(referenceRoomTables(actors.roomEvents));
  });

  it('refuses to replay or verify a delivery queue', async () => {
    const { federationOutboxProjection } = await import('../../src/projections/federationOutbox.ts');
    await expect(replayProjection(deps(), federationOutboxProjection as never)).rejects.toThrow(/delivery queue/);
    expect(() => readModels('federation_outbox')).toThrow(/unknown projection/);
  });
});
