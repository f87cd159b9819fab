// Replay and verify against a real peekd (its own database and streams):
//   - a replay of more than 100,000 events while the live runners keep projecting events
//     appended concurrently; readers never see a half-built table, and the swapped-in
//     tables equal a reference computed here from the events; a verify then passes;
//   - verify names the rows an operator changed by hand, and a replay repairs them.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandResult } from '../../src/actors/roomActor';
import type { StoredRoomEvent } from '../../src/events/roomEvents';
import { readModels } from '../../src/projections/index';
import { replayProjection, verifyProjection, type RebuildDeps, type VerifyResult } from '../../src/projections/rebuild';
import { readCheckpoint } from '../../src/projections/runner';
import { rowsOf, type Db } from '../../src/store/db';
import { startTestPeekd } from '../helpers/peekd';
import {
  appendHistories,
  createRoomCommand,
  HOUR,
  ManualClock,
  readPeekTables,
  readRoomTables,
  referencePeekTables,
  referenceRoomTables,
  roomHistory,
  T0,
  type Placed,
} from '../helpers/peekLog';

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
async function startQuietPeekd(): Promise<{ t: TestPeekd; clock: ManualClock }> {
  const clock = new ManualClock(T0 - DAY);
  const t = await startTestPeekd({ clock, env: { PEEKD_ROLES: 'http,rooms,projections', PEEKD_ADMIN_TOKEN: TOKEN } });
  return { t, clock };
}

/** Real rooms through the room actors: their PDUs go to ROOMS, device peeks to PEEKS. */
class ActorTraffic {
  readonly roomEvents: StoredRoomEvent[] = [];
  readonly peeks: Placed[] = [];
  private readonly peeking = new Set<string>();
  private n = 0;

  constructor(
    private readonly t: TestPeekd,
    readonly rooms: string[],
  ) {}

  private record(roomId: string, r: CommandResult): void {
    this.roomEvents.push(...r.roomEvents);
    for (const e of r.peekEvents) this.peeks.push({ seq: e.seq, roomId, shard: this.t.peekd.naming.shardOf(roomId), event: e.event });
  }

  async createRooms(): Promise<void> {
    for (const roomId of this.rooms) this.record(roomId, await this.t.peekd.bus.send(createRoomCommand(roomId, `@owner:${this.t.serverName}`)));
  }

  /** One step: a few messages in a room, and a device peek there started or ended. */
  async step(): Promise<void> {
    const n = this.n++;
    const roomId = this.rooms[n % this.rooms.length]!;
    const owner = `@owner:${this.t.serverName}`;
    const messages = Array.from({ length: 3 }, (_, i) => ({ type: 'm.room.message', sender: owner, content: { msgtype: 'm.text', body: `message ${n}.${i}` } }));
    this.record(roomId, await this.t.peekd.bus.send({ type: 'SendEvents', roomId, events: messages }));
    const userId = `@watcher${n % 7}:${this.t.serverName}`;
    const key = `${roomId}|${userId}`;
    if (this.peeking.delete(key)) {
      this.record(roomId, await this.t.peekd.bus.send({ type: 'StopDevicePeek', roomId, userId, deviceId: 'DEV', reason: 'unpeeked' }));
    } else {
      this.peeking.add(key);
      this.record(roomId, await this.t.peekd.bus.send({ type: 'StartDevicePeek', roomId, userId, deviceId: 'DEV' }));
    }
  }

  lastSeq(kind: 'peeks' | 'rooms'): number {
    return Math.max(0, ...(kind === 'peeks' ? this.peeks : this.roomEvents).map((e) => e.seq));
  }
}

describe('replay of more than 100,000 events while peekd serves', () => {
  let t: TestPeekd;
  let actors: ActorTraffic;
  const generated: Placed[] = [];
  let baseLastSeq = 0;

  const allPeeks = () => [...generated, ...actors.peeks].sort((a, b) => a.seq - b.seq);
  const deps = (): RebuildDeps => ({ db: t.peekd.database.db, nc: t.peekd.nc, naming: t.peekd.naming });

  beforeAll(async () => {
    ({ t } = await startQuietPeekd());
    actors = new ActorTraffic(t, [0, 1, 2, 3].map((i) => `!real${i}.room:${t.serverName}`));
    await actors.createRooms();
    for (let i = 0; i < 40; i++) await actors.step();

    // 400 rooms × 256 messages, 48 rooms in flight, 128 messages per append call.
    const histories = new Map<string, object[]>();
    for (let i = 0; i < 400; i++) {
      const roomId = generatedRoomId(i, 'gen');
      histories.set(roomId, roomHistory(roomId, 256, i + 1));
    }
    const started = performance.now();
    generated.push(...(await appendHistories(t.peekd.log, t.peekd.naming, histories, { concurrency: 48, chunk: 128 })));
    const secs = (performance.now() - started) / 1000;
    console.log(`appended ${generated.length} peek events in ${secs.toFixed(1)} s (${Math.round(generated.length / secs)}/s)`);
    baseLastSeq = allPeeks().at(-1)!.seq;
    await t.peekd.waitForProjections('peeks', baseLastSeq);
    await t.peekd.waitForProjections('rooms', actors.lastSeq('rooms'));
    console.log(`live runners caught up ${((performance.now() - started) / 1000).toFixed(1)} s after the first append`);
  }, 120_000);

  afterAll(async () => {
    await t?.dropAll();
  });

  it('rebuilds every read model into shadow tables, swaps them in while events keep arriving, and ends equal to the reference', async () => {
    const known = generated.filter((p) => p.event !== null).length;
    expect(known).toBeGreaterThan(100_000);
    const db = t.peekd.database.db;
    const models = readModels('all');
    expect(models.map((m) => m.name).sort()).toEqual(['audit', 'federation_peeks', 'sync_peeks', 'sync_rooms']);
    const tables = models.flatMap((m) => m.tables);
    const indexesBefore = await liveIndexes(db, tables);

    // Traffic during the replay: new rooms' histories appended directly, and actor
    // commands; each step waits until the live runners have projected it.
    let replaying = true;
    let during = 0;
    const writer = (async () => {
      for (let n = 0; replaying; n++) {
        const roomId = generatedRoomId(n, 'during');
        const placed = await appendHistories(t.peekd.log, t.peekd.naming, new Map([[roomId, roomHistory(roomId, 40, 900_000 + n)]]), { chunk: 20 });
        generated.push(...placed);
        await actors.step();
        during += placed.length;
        await t.peekd.waitForProjections('peeks', Math.max(placed.at(-1)!.seq, actors.lastSeq('peeks')));
        await t.peekd.waitForProjections('rooms', actors.lastSeq('rooms'));
      }
    })();
    // Readers during the replay: one statement reads a checkpoint and its table's row
    // count. A half-built or half-swapped table would show fewer rows than its checkpoint says.
    const samples: { auditSeq: number; auditRows: number; roomsSeq: number; roomRows: number }[] = [];
    const probe = (async () => {
      while (replaying) {
        const [row] = rowsOf<Record<string, string | number>>(
          await db.execute(sql`select
            (select seq from projection_checkpoints where projection = 'audit' and stream = 'peeks') as audit_seq,
            (select count(*) from peek_audit) as audit_rows,
            (select seq from projection_checkpoints where projection = 'sync_rooms' and stream = 'rooms') as rooms_seq,
            (select count(*) from syncapi_room_events) as room_rows`),
        );
        samples.push({ auditSeq: Number(row!.audit_seq), auditRows: Number(row!.audit_rows), roomsSeq: Number(row!.rooms_seq), roomRows: Number(row!.room_rows) });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    const replays: { name: string; seq: number; ms: number; appendedDuring: number; liveBefore: number; liveAfter: number; progress: [number, number][] }[] = [];
    try {
      for (const p of models) {
        const runner = t.peekd.projections.get(p.name)!;
        const liveBefore = runner.committed;
        const duringBefore = during;
        const progress: [number, number][] = [];
        const r = await replayProjection(deps(), p, (done, total) => progress.push([done, total]));
        replays.push({ name: p.name, seq: r.seq, ms: r.durationMs, appendedDuring: during - duringBefore, liveBefore, liveAfter: runner.committed, progress });
      }
    } finally {
      replaying = false;
      await writer;
      await probe;
    }
    for (const r of replays) {
      console.log(`replay ${r.name}: up to sequence ${r.seq} in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.seq / (r.ms / 1000))} ev/s); ${r.appendedDuring} events appended meanwhile`);
    }

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
    expect(during).toBeGreaterThan(0);

    // Everything appended is projected; the swapped-in tables equal the reference.
    const peeks = allPeeks();
    const lastPeek = peeks.at(-1)!.seq;
    await t.peekd.waitForProjections('peeks', lastPeek);
    await t.peekd.waitForProjections('rooms', actors.lastSeq('rooms'));
    expect(await readPeekTables(db)).toEqual(referencePeekTables(peeks));
    expect(await readRoomTables(db)).toEqual(referenceRoomTables(actors.roomEvents));
    for (const p of models) {
      expect(await readCheckpoint(db, p.name, p.stream)).toBe(p.stream === 'peeks' ? lastPeek : actors.lastSeq('rooms'));
    }
    expect(await liveIndexes(db, tables)).toEqual(indexesBefore);
    expect(await db.execute(sql`select nspname from pg_namespace where nspname like 'peekd_%'`)).toHaveLength(0);

    // No reader ever saw a table that disagreed with its checkpoint.
    expect(samples.length).toBeGreaterThan(20);
    const knownUpTo = (seq: number) => peeks.filter((p) => p.event !== null && p.seq <= seq).length;
    const roomsUpTo = (seq: number) => actors.roomEvents.filter((e) => e.seq <= seq).length;
    for (const s of samples) {
      expect(s.auditRows, `peek_audit at checkpoint ${s.auditSeq}`).toBe(knownUpTo(s.auditSeq));
      expect(s.roomRows, `syncapi_room_events at checkpoint ${s.roomsSeq}`).toBe(roomsUpTo(s.roomsSeq));
    }

    // And a verify agrees.
    const started = performance.now();
    const verified: VerifyResult[] = [];
    for (const p of models) verified.push(await verifyProjection(deps(), p));
    console.log(`verify of every read model: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    for (const v of verified) {
      expect(v.equal, v.projection).toBe(true);
      for (const tc of v.tables) {
        expect(tc.liveRows).toBe(tc.rebuiltRows);
        expect(tc.liveHash).toBe(tc.rebuiltHash);
        expect(tc.differences).toEqual([]);
      }
    }
    const audit = verified.find((v) => v.projection === 'audit')!;
    expect(audit.tables[0]!.liveRows).toBe(knownUpTo(lastPeek));
  }, 120_000);
});

describe('verify against rows changed by hand', () => {
  let t: TestPeekd;
  let actors: ActorTraffic;
  let generated: Placed[];
  const deps = (): RebuildDeps => ({ db: t.peekd.database.db, nc: t.peekd.nc, naming: t.peekd.naming });
  const allPeeks = () => [...generated, ...actors.peeks].sort((a, b) => a.seq - b.seq);
  const admin = (path: string, init: RequestInit = {}) =>
    fetch(`${t.url}/_peekd/admin/v1/${path}`, { method: 'POST', ...init, headers: { authorization: `Bearer ${TOKEN}`, ...init.headers } });

  beforeAll(async () => {
    ({ t } = await startQuietPeekd());
    actors = new ActorTraffic(t, ['!tamper.a:' + t.serverName, '!tamper.b:' + t.serverName]);
    await actors.createRooms();
    for (let i = 0; i < 12; i++) await actors.step();
    const histories = new Map<string, object[]>();
    for (let i = 0; i < 30; i++) histories.set(generatedRoomId(i, 'small'), roomHistory(generatedRoomId(i, 'small'), 80, 5000 + i));
    generated = await appendHistories(t.peekd.log, t.peekd.naming, histories);
    await t.peekd.waitForProjections('peeks', allPeeks().at(-1)!.seq);
    await t.peekd.waitForProjections('rooms', actors.lastSeq('rooms'));
  }, 60_000);

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

    // A replay (through the admin API for one, directly for the rest) repairs every table.
    const replayed = await admin('replay?projection=audit');
    expect(replayed.status).toBe(200);
    expect(((await replayed.json()) as { replayed: { projection: string; seq: number }[] }).replayed).toEqual([
      expect.objectContaining({ projection: 'audit', seq: allPeeks().at(-1)!.seq }),
    ]);
    for (const name of ['sync_peeks', 'federation_peeks', 'sync_rooms']) await replayProjection(deps(), readModels(name)[0]!);
    for (const r of Object.values(await verifyAll())) expect(r.equal, r.projection).toBe(true);
    expect(await readPeekTables(db)).toEqual(reference);
    expect(await readRoomTables(db)).toEqual(referenceRoomTables(actors.roomEvents));
  });

  it('refuses to replay or verify a delivery queue', async () => {
    const { federationOutboxProjection } = await import('../../src/projections/federationOutbox');
    await expect(replayProjection(deps(), federationOutboxProjection as never)).rejects.toThrow(/delivery queue/);
    expect(() => readModels('federation_outbox')).toThrow(/unknown projection/);
  });
});
