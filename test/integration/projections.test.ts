// The peek projections against a real JetStream log and a real database: a clean run, a
// runner stopped mid-stream and resumed, a crash inside a batch, a batch applied twice,
// and a rebuild from sequence 1 — each compared row for row with tables computed here,
// independently, from the generated events.
import { randomUUID } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { asc, inArray, sql, type SQL } from 'drizzle-orm';
import type { PgColumn } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referencePeekTables, roomHistory, DEVICE_REASONS, INBOUND_REASONS, OUTBOUND_REASONS, type PeekTables } from '../helpers/peekLog.ts';
import { encodeEnvelope, position, seqOfPosition, throughSeq } from '../../src/events/envelope.ts';
import { encodePeekEvent, PEEK_END_REASONS, type PeekEvent, type PeekRef } from '../../src/events/peekEvents.ts';
import type { Naming } from '../../src/events/subjects.ts';
import { EventLog } from '../../src/nats/eventLog.ts';
import { auditProjection } from '../../src/projections/audit.ts';
import { federationPeeksProjection } from '../../src/projections/federationPeeks.ts';
import type { PeekProjection, Projected } from '../../src/projections/projection.ts';
import { ProjectionRunner, readCheckpoint } from '../../src/projections/runner.ts';
import { syncPeeksProjection } from '../../src/projections/syncPeeks.ts';
import type { Database, Db, Tx } from '../../src/store/db.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks, peekAudit, projectionCheckpoints, syncapiPeeks } from '../../src/store/schema.ts';
import { createTestDatabase, createTestStreams, type TestDatabase, type TestStreams } from '../helpers/services.ts';

const PROJECTIONS: PeekProjection[] = [syncPeeksProjection, federationPeeksProjection, auditProjection];
const T0 = 1_700_000_000_000;
const HOUR = 3_600_000;

// --- the log: generated events, placed at the sequences JetStream gave them --------------

/** A message on PEEKS: a v1 peek event, or a shape this reader does not know (`event: null`). */
interface Placed {
  seq: number;
  roomId: string;
  shard: number;
  event: PeekEvent | null;
}

const FIXTURE_ROOM = '!fixture.room.v1:example.org';
const BOB_PHONE: PeekRef = { kind: 'device', userId: '@bob:example.org', deviceId: 'PHONE' };
const CAROL_LAPTOP: PeekRef = { kind: 'device', userId: '@carol:example.org', deviceId: 'LAPTOP' };
const DAN_TAB: PeekRef = { kind: 'device', userId: '@dan:example.org', deviceId: 'TAB' };
const IN_P1: PeekRef = { kind: 'inbound', server: 'peer.org', peekId: 'p1' };
const IN_P2: PeekRef = { kind: 'inbound', server: 'peer.org', peekId: 'p2' };
const OUT_O1: PeekRef = { kind: 'outbound', server: 'remote.org', peekId: 'o1' };
const OUT_O2: PeekRef = { kind: 'outbound', server: 'remote.org', peekId: 'o2' };
function fixtureHistory(): object[] {
  const r = FIXTURE_ROOM;
  return [
    /* 0 */ { type: 'PeekStarted', v: 1, roomId: r, peek: BOB_PHONE, at: T0, expiresAt: T0 + HOUR, roomSeq: 7 },
    /* 1 */ { type: 'PeekRenewed', v: 1, roomId: r, peek: BOB_PHONE, at: T0 + 10, expiresAt: T0 + 10 + HOUR },
    /* 2 */ { type: 'PeekStarted', v: 1, roomId: r, peek: IN_P1, at: T0 + 20, expiresAt: T0 + 20 + 90_000, renewalIntervalMs: 60_000, roomSeq: 9 },
    /* 3 */ { type: 'PeekStarted', v: 1, roomId: r, peek: OUT_O1, at: T0 + 30, expiresAt: T0 + 30 + 120_000, renewalIntervalMs: 120_000 },
    /* 4 */ { type: 'PeekStarted', v: 1, roomId: r, peek: CAROL_LAPTOP, at: T0 + 40 },
    /* 5 */ { type: 'PeekExpired', v: 1, roomId: r, peek: BOB_PHONE, at: T0 + 50, reason: 'joined' },
    /* 6 */ { type: 'PeekRenewed', v: 1, roomId: r, peek: IN_P1, at: T0 + 60 },
    /* 7 */ { type: 'PeekStarted', v: 1, roomId: r, peek: IN_P2, at: T0 + 70, renewalIntervalMs: 60_000 },
    /* 8 */ { type: 'PeekExpired', v: 1, roomId: r, peek: IN_P2, at: T0 + 80, reason: 'remote_deleted' },
    /* 9 */ { type: 'PeekExpired', v: 1, roomId: r, peek: OUT_O1, at: T0 + 90, reason: 'no_active_peekers' },
    /* 10 */ { type: 'PeekStarted', v: 1, roomId: r, peek: OUT_O2, at: T0 + 100, expiresAt: T0 + 100 + 60_000, renewalIntervalMs: 60_000 },
    /* 11 */ { type: 'PeekStarted', v: 2, roomId: r, peek: DAN_TAB, at: T0 + 110 },
    /* 12 */ { type: 'PeekStarted', v: 1, roomId: r, peek: DAN_TAB, at: T0 + 120, expiresAt: T0 + 120 + HOUR, roomSeq: 11 },
    /* 13 */ { type: 'PeekExpired', v: 1, roomId: r, peek: DAN_TAB, at: T0 + 130, reason: 'timed_out' },
    /* 14 */ { type: 'PeekStarted', v: 1, roomId: r, peek: DAN_TAB, at: T0 + 140, expiresAt: T0 + 140 + HOUR, roomSeq: 12 },
    /* 15 */ { type: 'PeekRenewed', v: 1, roomId: r, peek: OUT_O2, at: T0 + 150, renewalIntervalMs: 90_000, expiresAt: T0 + 150 + 90_000 },
  ];
}

function isKnown(value: object): value is PeekEvent {
  const v = value as { v?: unknown; type?: unknown };
  return v.v === 1 && (v.type === 'PeekStarted' || v.type === 'PeekRenewed' || v.type === 'PeekExpired');
}

/** A bare (pre-envelope) event as readers see it: its raw `roomSeq` read as a position. */
function legacy(e: PeekEvent): PeekEvent {
  return e.type !== 'PeekRenewed' && e.roomSeq ? { ...e, roomSeq: position(e.roomSeq, 0) } : e;
}

/** Appends every room's history (rooms in parallel, so the stream interleaves them). */
async function appendHistories(log: EventLog, naming: Naming, histories: Map<string, object[]>): Promise<Placed[]> {
  const placed: Placed[] = [];
  await Promise.all(
    [...histories].map(async ([roomId, events]) => {
      // The whole history as one envelope (unknown shapes keep their index), but for the
      // first event, which goes bare as a pre-envelope writer stored it: readers take both.
      let expected = await log.lastSeq('peeks', roomId);
      const [first, ...rest] = events;
      const bare = await log.append('peeks', roomId, isKnown(first!) ? encodePeekEvent(first) : Buffer.from(JSON.stringify(first), 'utf8'), expected, `gen:${randomUUID()}`);
      placed.push({ seq: position(bare.seq, 0), roomId, shard: naming.shardOf(roomId), event: isKnown(first!) ? legacy(first) : null });
      expected = bare.seq;
      if (rest.length === 0) return;
      const { seq } = await log.append('peeks', roomId, encodeEnvelope(`gen:${randomUUID()}`, rest), expected, `gen:${randomUUID()}`);
      rest.forEach((e, i) => placed.push({ seq: position(seq, i), roomId, shard: naming.shardOf(roomId), event: isKnown(e) ? e : null }));
    }),
  );
  return placed.sort((a, b) => a.seq - b.seq);
}

// --- the reference tables, computed without the projection code: test/helpers/peekLog.ts

const referenceTables = referencePeekTables;
type Tables = PeekTables;

// --- reading the tables ------------------------------------------------------------------

/** Byte order, as the JS comparison above (identifiers here are ASCII). */
const c = (col: PgColumn): SQL => sql`${col} collate "C"`;

async function readTables(db: Db | Tx): Promise<Tables> {
  const s = syncapiPeeks;
  const i = federationsenderInboundPeeks;
  const o = federationsenderOutboundPeeks;
  return {
    syncapi_peeks: await db.select().from(s).orderBy(c(s.roomId), c(s.userId), c(s.deviceId)),
    federationsender_inbound_peeks: await db.select().from(i).orderBy(c(i.roomId), c(i.serverName), c(i.peekId)),
    federationsender_outbound_peeks: await db.select().from(o).orderBy(c(o.roomId), c(o.serverName)),
    peek_audit: await db.select().from(peekAudit).orderBy(asc(peekAudit.seq)),
  };
}

function only(t: Tables, names: readonly string[]): Partial<Tables> {
  return Object.fromEntries(Object.entries(t).filter(([k]) => names.includes(k)));
}

async function checkpoints(db: Db): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const p of PROJECTIONS) out[p.name] = await readCheckpoint(db, p.name, p.stream);
  return out;
}

async function truncateAll(db: Db): Promise<void> {
  const tables = PROJECTIONS.flatMap((p) => p.tables);
  await db.execute(sql.raw(`TRUNCATE ${tables.map((t) => `"${t}"`).join(', ')}`));
  await db.delete(projectionCheckpoints).where(
    inArray(
      projectionCheckpoints.projection,
      PROJECTIONS.map((p) => p.name),
    ),
  );
}

// --- the tests ---------------------------------------------------------------------------

describe('peek projections over a generated log', () => {
  let streams: TestStreams;
  let log: EventLog;
  let placed: Placed[];
  let lastSeq: number;
  let reference: Tables;
  const fixtureSeqs: number[] = [];
  const databases: TestDatabase[] = [];
  const opened: Database[] = [];

  async function freshDb(): Promise<Db> {
    const t = await createTestDatabase();
    databases.push(t);
    const d = await t.open();
    opened.push(d);
    return d.db;
  }

  async function runToEnd(db: Db, projections: PeekProjection[], opts: { batchSize?: number; until?: number } = {}) {
    const runners = projections.map((p) => new ProjectionRunner(db, streams.nc, streams.naming, p, { batchSize: opts.batchSize }));
    try {
      await Promise.all(runners.map((r) => r.start()));
      await Promise.all(runners.map((r) => r.waitFor(opts.until ?? lastSeq)));
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
    }
    return runners;
  }

  beforeAll(async () => {
    streams = await createTestStreams(8);
    log = await EventLog.open(streams.nc, streams.naming);
    const histories = new Map<string, object[]>();
    for (let i = 0; i < 50; i++) {
      const roomId = i % 3 === 0 ? `!gen${i}.with.dots:example.org` : i % 3 === 1 ? `!gen${i}:matrix.example.org:8448` : `!Gen${i}xyz:example.org`;
      histories.set(roomId, roomHistory(roomId, 70 + (i % 7) * 5, i + 1));
    }
    histories.set(FIXTURE_ROOM, fixtureHistory());
    placed = await appendHistories(log, streams.naming, histories);
    // The stream ends with a message this reader cannot decode: the checkpoint must still reach it.
    const tail = await log.append(
      'peeks',
      FIXTURE_ROOM,
      Buffer.from(JSON.stringify({ type: 'PeekStarted', v: 3, roomId: FIXTURE_ROOM })),
      seqOfPosition(placed.filter((p) => p.roomId === FIXTURE_ROOM).at(-1)!.seq),
      'gen-tail',
    );
    placed.push({ seq: position(tail.seq, 0), roomId: FIXTURE_ROOM, shard: streams.naming.shardOf(FIXTURE_ROOM), event: null });
    fixtureSeqs.push(...placed.filter((p) => p.roomId === FIXTURE_ROOM).map((p) => p.seq));
    lastSeq = throughSeq(tail.seq);
    reference = referenceTables(placed);

    const info = await (await jetstreamManager(streams.nc)).streams.info(streams.naming.streamName('peeks'));
    expect(throughSeq(info.state.last_seq)).toBe(lastSeq);
    expect(info.state.messages).toBe(new Set(placed.map((p) => seqOfPosition(p.seq))).size);
  });

  afterAll(async () => {
    for (const d of opened) await d.close().catch(() => undefined);
    for (const t of databases) await t.drop().catch(() => undefined);
    await streams?.cleanup();
  });

  it('generates a realistic log: thousands of events of every kind, type and end reason', () => {
    const known = placed.filter((p): p is Placed & { event: PeekEvent } => p.event !== null);
    expect(known.length).toBeGreaterThan(3000);
    expect(new Set(placed.map((p) => p.roomId)).size).toBe(51);
    expect(placed.length - known.length).toBeGreaterThan(5); // unknown shapes
    const combos = new Set(known.map((p) => `${p.event.peek.kind}:${p.event.type}`));
    for (const kind of ['device', 'inbound', 'outbound']) {
      for (const type of ['PeekStarted', 'PeekRenewed', 'PeekExpired']) expect(combos).toContain(`${kind}:${type}`);
    }
    const reasons = new Set(known.flatMap((p) => (p.event.type === 'PeekExpired' ? [p.event.reason] : [])));
    for (const r of [...DEVICE_REASONS, ...INBOUND_REASONS, ...OUTBOUND_REASONS]) expect(PEEK_END_REASONS).toContain(r);
    expect(reasons.size).toBe(new Set([...DEVICE_REASONS, ...INBOUND_REASONS, ...OUTBOUND_REASONS]).size);
    // The rooms interleave in the stream: the ~100 envelopes (about two per room) change room
    // far more often than the 50 times rooms appended one after another would. (Not "more
    // than 100": that needed all but two boundaries to change room, which timing decides.)
    const switches = placed.filter((p, i) => i > 0 && p.roomId !== placed[i - 1]!.roomId).length;
    expect(switches).toBeGreaterThan(new Set(placed.map((p) => p.roomId)).size + 20);
    // Non-trivial reference tables.
    expect(reference.syncapi_peeks.length).toBeGreaterThan(200);
    expect(reference.syncapi_peeks.some((r) => r.endedSeq !== null)).toBe(true);
    expect(reference.syncapi_peeks.some((r) => r.endedSeq === null)).toBe(true);
    expect(reference.federationsender_inbound_peeks.length).toBeGreaterThan(20);
    expect(reference.federationsender_outbound_peeks.length).toBeGreaterThan(10);
    expect(reference.peek_audit).toHaveLength(known.length);
  });

  it('(a) a clean run of all three projections gives the reference tables', async () => {
    const db = await freshDb();
    const commits: Record<string, { lastSeq: number; seqs: number[] }[]> = {};
    const runners = PROJECTIONS.map((p) => {
      commits[p.name] = [];
      return new ProjectionRunner(db, streams.nc, streams.naming, p, {
        onCommitted: (seq, batch) => commits[p.name]!.push({ lastSeq: seq, seqs: batch.map((b) => b.seq) }),
      });
    });
    try {
      await Promise.all(runners.map((r) => r.start()));
      await Promise.all(runners.map((r) => r.waitFor(lastSeq)));
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
    }
    for (const r of runners) expect(r.committed).toBe(lastSeq);
    expect(await checkpoints(db)).toEqual({ sync_peeks: lastSeq, federation_peeks: lastSeq, audit: lastSeq });
    // Commits move forward, each batch within (previous checkpoint, its checkpoint].
    for (const list of Object.values(commits)) {
      let prev = 0;
      for (const { lastSeq: seq, seqs } of list) {
        expect(seq).toBeGreaterThan(prev);
        for (const s of seqs) expect(s > prev && s <= seq).toBe(true);
        prev = seq;
      }
      expect(prev).toBe(lastSeq);
    }

    const tables = await readTables(db);
    expect(tables).toEqual(reference);

    // Rows spelled out by hand for the fixture room.
    const s = fixtureSeqs;
    const shard = streams.naming.shardOf(FIXTURE_ROOM);
    const mine = <R extends { roomId: string }>(rows: R[]) => rows.filter((r) => r.roomId === FIXTURE_ROOM);
    expect(mine(tables.syncapi_peeks)).toEqual([
      {
        roomId: FIXTURE_ROOM,
        userId: '@bob:example.org',
        deviceId: 'PHONE',
        shard,
        startedSeq: s[0],
        startedAt: T0,
        renewedAt: T0 + 10,
        expiresAt: T0 + 10 + HOUR,
        roomSeq: position(7, 0), // bare: a raw sequence read as a position
        updatedSeq: s[5],
        endedSeq: s[5],
        endedAt: T0 + 50,
        endReason: 'joined',
        endedRoomSeq: null,
        prevStartedSeq: null,
        prevEndedSeq: null,
      },
      {
        roomId: FIXTURE_ROOM,
        userId: '@carol:example.org',
        deviceId: 'LAPTOP',
        shard,
        startedSeq: s[4],
        startedAt: T0 + 40,
        renewedAt: T0 + 40,
        expiresAt: null,
        roomSeq: 0,
        updatedSeq: s[4],
        endedSeq: null,
        endedAt: null,
        endReason: null,
        endedRoomSeq: null,
        prevStartedSeq: null,
        prevEndedSeq: null,
      },
      {
        // Started, timed out, started again: the row is the new peek (the v2 message is
        // skipped) and remembers the one it replaced.
        roomId: FIXTURE_ROOM,
        userId: '@dan:example.org',
        deviceId: 'TAB',
        shard,
        startedSeq: s[14],
        startedAt: T0 + 140,
        renewedAt: T0 + 140,
        expiresAt: T0 + 140 + HOUR,
        roomSeq: 12,
        updatedSeq: s[14],
        endedSeq: null,
        endedAt: null,
        endReason: null,
        endedRoomSeq: null,
        prevStartedSeq: s[12],
        prevEndedSeq: s[13],
      },
    ]);
    expect(mine(tables.federationsender_inbound_peeks)).toEqual([
      {
        // Renewed without interval or deadline: keeps its interval, deadline = renewal + interval.
        roomId: FIXTURE_ROOM,
        serverName: 'peer.org',
        peekId: 'p1',
        shard,
        createdAt: T0 + 20,
        renewedAt: T0 + 60,
        renewalIntervalMs: 60_000,
        expiresAt: T0 + 60 + 60_000,
        roomSeq: 9,
        startedSeq: s[2],
      },
    ]);
    expect(mine(tables.federationsender_outbound_peeks)).toEqual([
      {
        // o1 ended; o2 is the room's one outbound peek on remote.org.
        roomId: FIXTURE_ROOM,
        serverName: 'remote.org',
        peekId: 'o2',
        shard,
        createdAt: T0 + 100,
        renewedAt: T0 + 150,
        renewalIntervalMs: 90_000,
        expiresAt: T0 + 150 + 90_000,
        startedSeq: s[10],
      },
    ]);
    const audit = mine(tables.peek_audit);
    expect(audit.map((a) => a.seq)).toEqual(s.filter((_, i) => i !== 11 && i !== 16)); // not the v2 and v3 messages
    expect(audit[0]).toEqual({
      seq: s[0],
      roomId: FIXTURE_ROOM,
      shard,
      eventType: 'PeekStarted',
      kind: 'device',
      userId: '@bob:example.org',
      deviceId: 'PHONE',
      serverName: null,
      peekId: null,
      at: T0,
      expiresAt: T0 + HOUR,
      renewalIntervalMs: null,
      reason: null,
    });
    expect(audit.find((a) => a.seq === s[8])).toEqual({
      seq: s[8],
      roomId: FIXTURE_ROOM,
      shard,
      eventType: 'PeekExpired',
      kind: 'inbound',
      userId: null,
      deviceId: null,
      serverName: 'peer.org',
      peekId: 'p2',
      at: T0 + 80,
      expiresAt: null,
      renewalIntervalMs: null,
      reason: 'remote_deleted',
    });
    expect(audit.find((a) => a.seq === s[15])).toMatchObject({ eventType: 'PeekRenewed', kind: 'outbound', peekId: 'o2', renewalIntervalMs: 90_000, expiresAt: T0 + 150 + 90_000 });
  });

  it('(b) a runner stopped mid-stream resumes where it committed: nothing lost, nothing doubled', async () => {
    const db = await freshDb();
    const third = Math.floor(lastSeq / 3);
    const stops: Promise<void>[] = [];
    const runners = PROJECTIONS.map((p) => {
      let stopping = false;
      const runner: ProjectionRunner<PeekEvent> = new ProjectionRunner(db, streams.nc, streams.naming, p, {
        batchSize: 37,
        onCommitted: (seq) => {
          if (!stopping && seq >= third) {
            stopping = true;
            stops.push(runner.stop()); // the "kill": no more batches after this one
          }
        },
      });
      return runner;
    });
    try {
      await Promise.all(runners.map((r) => r.start()));
      // onCommitted runs before waiters are woken: once every runner reached `third`, every
      // runner has been told to stop.
      await Promise.all(runners.map((r) => r.waitFor(third)));
      expect(stops).toHaveLength(runners.length);
      await Promise.all(stops);
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
    }

    // Stopped part way; what is committed is exactly the stream up to each checkpoint.
    const partial = await checkpoints(db);
    const tables = await readTables(db);
    for (const p of PROJECTIONS) {
      const cp = partial[p.name]!;
      expect(cp).toBeGreaterThanOrEqual(third);
      expect(cp).toBeLessThan(lastSeq);
      expect(only(tables, p.tables), `${p.name} at checkpoint ${cp}`).toEqual(only(referenceTables(placed, cp), p.tables));
    }

    // A new runner on the same database picks up from the checkpoints.
    const resumed = await runToEnd(db, PROJECTIONS);
    for (const r of resumed) expect(r.committed).toBe(lastSeq);
    expect(await readTables(db)).toEqual(reference);
    expect(await checkpoints(db)).toEqual({ sync_peeks: lastSeq, federation_peeks: lastSeq, audit: lastSeq });
  });

  it('(c) a crash inside a batch rolls back, and the runner retries from its checkpoint', async () => {
    const db = await freshDb();
    const FAIL_ON = 3;
    interface CrashLog {
      failed?: number[];
      retried?: number[];
      checkpointAtRetry?: number;
      tablesAtRetry?: Partial<Tables>;
      calls: number;
    }
    const crashes = new Map<string, CrashLog>();
    const crashing = (p: PeekProjection): PeekProjection => {
      const c: CrashLog = { calls: 0 };
      crashes.set(p.name, c);
      return {
        ...p,
        async apply(tx: Tx, batch: Projected<PeekEvent>[]) {
          c.calls++;
          if (c.calls === FAIL_ON + 1) {
            // The first attempt after the crash, in its own transaction, before it writes:
            // what is committed is exactly the stream up to the checkpoint.
            c.retried = batch.map((b) => b.seq);
            c.checkpointAtRetry = await readCheckpoint(tx, p.name, p.stream);
            c.tablesAtRetry = only(await readTables(tx), p.tables);
          }
          await p.apply(tx, batch); // writes rows inside the transaction…
          if (c.calls === FAIL_ON) {
            c.failed = batch.map((b) => b.seq);
            throw new Error(`injected crash in ${p.name}`); // …then dies before the commit
          }
        },
      };
    };
    const runners = await runToEnd(db, PROJECTIONS.map(crashing), { batchSize: 211 });
    for (const r of runners) expect(r.committed).toBe(lastSeq);

    for (const p of PROJECTIONS) {
      const c = crashes.get(p.name)!;
      expect(c.failed, `${p.name} crashed`).toBeDefined();
      // It resumes where the failed batch began (batches group what has arrived, so the
      // retry's batch may be shorter or longer than the failed one); a first batch with
      // nothing this projection writes is passed over without a transaction (touches), so
      // the first apply after the crash may begin later, but never past an event it writes.
      expect(c.retried![0]).toBeGreaterThanOrEqual(c.failed![0]!);
      const passedOver = placed.filter((x) => x.seq >= c.failed![0]! && x.seq < c.retried![0]! && x.event !== null && (!p.touches || p.touches(x.event)));
      expect(passedOver).toEqual([]);
      const cp = c.checkpointAtRetry!;
      expect(cp).toBeLessThan(c.failed![0]!);
      // Nothing this projection writes lies between its checkpoint and the failed batch. (A
      // stretch it does not touch moves its position without a transaction, and the stored
      // checkpoint follows within CHECKPOINT_LAG_MS: a crash soon after such a stretch
      // finds the checkpoint before it, and the retry reads it again, writing nothing.)
      expect(placed.filter((x) => x.seq > cp && x.seq < c.failed![0]! && x.event !== null && (!p.touches || p.touches(x.event)))).toEqual([]);
      expect(c.tablesAtRetry).toEqual(only(referenceTables(placed, cp), p.tables));
    }
    expect(await readTables(db)).toEqual(reference);
    expect(await checkpoints(db)).toEqual({ sync_peeks: lastSeq, federation_peeks: lastSeq, audit: lastSeq });
  });

  it('(d) applying the same batch twice changes nothing', async () => {
    const db = await freshDb();
    const batch: Projected<PeekEvent>[] = placed.flatMap((p) => (p.event ? [{ seq: p.seq, roomId: p.roomId, shard: p.shard, event: p.event }] : []));
    const cuts = [0, Math.floor(batch.length / 3), Math.floor((2 * batch.length) / 3), batch.length];
    const parts = [0, 1, 2].map((i) => batch.slice(cuts[i], cuts[i + 1]));
    const applyAll = async (part: Projected<PeekEvent>[]) => {
      for (const p of PROJECTIONS) await db.transaction((tx) => p.apply(tx, part));
    };

    for (const [i, part] of parts.entries()) {
      await applyAll(part);
      const once = await readTables(db);
      expect(once).toEqual(referenceTables(placed, part.at(-1)!.seq));
      await applyAll(part);
      expect(await readTables(db), `part ${i} applied twice`).toEqual(once);
    }
    expect(await readTables(db)).toEqual(reference);

    // The whole log as one batch, twice, into empty tables.
    await truncateAll(db);
    await applyAll(batch);
    expect(await readTables(db)).toEqual(reference);
    await applyAll(batch);
    expect(await readTables(db)).toEqual(reference);
  });

  // BUG (minor; the actors always send expiresAt with a renewal, so only other writers or
  // older events hit it): a PeekRenewed that changes renewalIntervalMs but names no
  // expiresAt gets its deadline from the OLD interval, while the row records the new one.
  // Fix, in both applyInbound and applyOutbound of src/projections/federationPeeks.ts:
  //   expiresAt: event.expiresAt ?? event.at + (event.renewalIntervalMs ?? row.renewalIntervalMs),
  it('a renewal with a new interval and no deadline expires one new interval after it', async () => {
    const db = await freshDb();
    const roomId = '!renew:example.org';
    const shard = streams.naming.shardOf(roomId);
    const events: Projected<PeekEvent>[] = [
      { seq: 1, roomId, shard, event: { type: 'PeekStarted', v: 1, roomId, peek: OUT_O1, at: T0, renewalIntervalMs: 60_000 } },
      { seq: 2, roomId, shard, event: { type: 'PeekStarted', v: 1, roomId, peek: IN_P1, at: T0, renewalIntervalMs: 60_000 } },
      { seq: 3, roomId, shard, event: { type: 'PeekRenewed', v: 1, roomId, peek: OUT_O1, at: T0 + 10, renewalIntervalMs: 90_000 } },
      { seq: 4, roomId, shard, event: { type: 'PeekRenewed', v: 1, roomId, peek: IN_P1, at: T0 + 10, renewalIntervalMs: 90_000 } },
    ];
    await db.transaction((tx) => federationPeeksProjection.apply(tx, events));
    const tables = await readTables(db);
    expect(tables.federationsender_outbound_peeks.map((r) => [r.renewalIntervalMs, r.expiresAt])).toEqual([[90_000, T0 + 10 + 90_000]]);
    expect(tables.federationsender_inbound_peeks.map((r) => [r.renewalIntervalMs, r.expiresAt])).toEqual([[90_000, T0 + 10 + 90_000]]);
  });

  it('(e) a rebuild from sequence 1 equals the live tables row for row', async () => {
    // Its own log, appended while the runners tail it live.
    const own = await createTestStreams(8);
    const db = await freshDb();
    const ownLog = await EventLog.open(own.nc, own.naming);
    const runners = PROJECTIONS.map((p) => new ProjectionRunner(db, own.nc, own.naming, p, { batchSize: 64 }));
    try {
      await Promise.all(runners.map((r) => r.start()));
      const ownPlaced: Placed[] = [];
      for (let wave = 0; wave < 3; wave++) {
        const histories = new Map<string, object[]>();
        for (let i = 0; i < 12; i++) {
          const roomId = `!live${i}.w:example.org`;
          // Each wave continues the room with a fresh generator on disjoint peekers.
          const events = roomHistory(roomId, 40, 1000 + wave * 100 + i).map((e) => retag(e as PeekEvent, wave));
          histories.set(roomId, events);
        }
        ownPlaced.push(...(await appendHistories(ownLog, own.naming, histories)));
        await Promise.all(runners.map((r) => r.waitFor(Math.max(...ownPlaced.map((p) => p.seq)))));
      }
      ownPlaced.sort((a, b) => a.seq - b.seq);
      const ownLast = ownPlaced.at(-1)!.seq;
      await Promise.all(runners.map((r) => r.stop()));

      const live = await readTables(db);
      expect(live).toEqual(referenceTables(ownPlaced));

      await truncateAll(db);
      expect(await checkpoints(db)).toEqual({ sync_peeks: 0, federation_peeks: 0, audit: 0 });
      expect((await readTables(db)).peek_audit).toEqual([]);
      const rebuilt = PROJECTIONS.map((p) => new ProjectionRunner(db, own.nc, own.naming, p));
      try {
        await Promise.all(rebuilt.map((r) => r.start()));
        await Promise.all(rebuilt.map((r) => r.waitFor(ownLast)));
      } finally {
        await Promise.all(rebuilt.map((r) => r.stop()));
      }
      expect(await readTables(db)).toEqual(live);
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
      await own.cleanup();
    }
  });
});

/** Renames a generated event's peekers so that each wave of (e) uses its own. */
function retag(e: PeekEvent | object, wave: number): object {
  const ev = e as { peek?: PeekRef };
  if (!ev.peek) return e;
  const p = ev.peek;
  const peek: PeekRef = p.kind === 'device' ? { ...p, deviceId: `${p.deviceId}w${wave}` } : p.kind === 'inbound' ? { ...p, peekId: `${p.peekId}w${wave}` } : { ...p, server: `w${wave}.${p.server}` };
  return { ...(e as object), peek };
}
