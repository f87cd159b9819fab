// The rebuild scenario's work, run in the bench's client-side process: fill a fresh
// PEEKS/ROOMS pair with realistic events, measure the raw ceilings (ordered-consumer
// read rate, batched multi-row INSERT rate into copies of the projection tables), then
// replay the projections with peekd's own replayProjection.
import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { position } from '../src/events/envelope.ts';
import { encodePeekEvent, type PeekEvent } from '../src/events/peekEvents.ts';
import { encodeRoomEvent, type RoomEvent } from '../src/events/roomEvents.ts';
import { Naming, type StreamKind } from '../src/events/subjects.ts';
import { connectNats } from '../src/nats/connection.ts';
import { deleteStreams, ensureStreams } from '../src/nats/streams.ts';
import { federationPeeksProjection } from '../src/projections/federationPeeks.ts';
import type { Projection } from '../src/projections/projection.ts';
import { replayProjection } from '../src/projections/rebuild.ts';
import { syncPeeksProjection } from '../src/projections/syncPeeks.ts';
import { syncRoomsProjection } from '../src/projections/syncRooms.ts';
import { openDatabase, rowsOf, type Database } from '../src/store/db.ts';
import { sql } from 'drizzle-orm';

const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
const b64url = (n: number) => randomBytes(n).toString('base64url');

/**
 * The rows a projection's main table gets, one per event, for the raw INSERT ceiling: every
 * NOT NULL column of the live table, with the values the projection writes (sequences are
 * positions, as in the projections; nullable columns left out are NULL, as for a fresh row).
 */
type RawRow = Record<string, unknown>;

interface Generated {
  naming: Naming;
  nc: NatsConnection;
  database: Database;
  roomEvents: number;
  peekEvents: number;
  rows: { syncapi_room_events: RawRow[]; syncapi_peeks: RawRow[]; federationsender_inbound_peeks: RawRow[] };
}

let current: Generated | undefined;

export interface GenerateArgs {
  natsUrl: string;
  databaseUrl?: string;
  dataDir: string;
  prefix: string;
  rooms: number;
  roomEvents: number;
  peekEvents: number;
}

/** Publishes with at most `window` acks outstanding (a bulk load, not what is measured). */
async function bulkPublish(nc: NatsConnection, items: { subject: string; data: Uint8Array }[], window = 512): Promise<void> {
  const js = jetstream(nc);
  let next = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        await js.publish(items[i]!.subject, items[i]!.data);
      }
    }),
  );
}

export async function generate(args: GenerateArgs): Promise<{ roomEvents: number; peekEvents: number; roomBytes: number; peekBytes: number; ms: number }> {
  const t0 = Date.now();
  const nc = await connectNats(args.natsUrl, 'peekd-bench-rebuild');
  const naming = new Naming(args.prefix, 64);
  await ensureStreams(nc, naming);
  const database = await openDatabase({ url: args.databaseUrl, dataDir: args.dataDir, maxConnections: 10 });
  const server = 'origin.bench';
  const roomIds = Array.from({ length: args.rooms }, () => `!${b64url(9)}:${server}`);
  const users = Array.from({ length: 200 }, (_, i) => `@user${i}:${server}`);
  const now = Date.now();
  const rows: Generated['rows'] = { syncapi_room_events: [], syncapi_peeks: [], federationsender_inbound_peeks: [] };

  // ROOMS: interleaved rooms; one event in ten is a state event (a membership).
  const roomItems: { subject: string; data: Uint8Array }[] = [];
  const depth = new Map<string, number>();
  const prev = new Map<string, string>();
  let roomBytes = 0;
  for (let i = 0; i < args.roomEvents; i++) {
    const roomId = roomIds[i % roomIds.length]!;
    const sender = users[i % users.length]!;
    const d = (depth.get(roomId) ?? 0) + 1;
    depth.set(roomId, d);
    const eventId = `$${b64url(32)}`;
    const isState = i % 10 === 0;
    const pdu = {
      type: isState ? 'm.room.member' : 'm.room.message',
      room_id: roomId,
      sender,
      content: isState ? { membership: 'join', displayname: `User ${i % users.length}` } : { msgtype: 'm.text', body: `bench message ${i}: ${'lorem ipsum '.repeat(6)}` },
      ...(isState ? { state_key: sender } : {}),
      origin_server_ts: now + i,
      depth: d,
      prev_events: prev.has(roomId) ? [prev.get(roomId)!] : [],
      auth_events: [`$${b64url(32)}`, `$${b64url(32)}`, `$${b64url(32)}`],
      hashes: { sha256: b64(32) },
      signatures: { [server]: { 'ed25519:a_bench': b64(64) } },
    };
    prev.set(roomId, eventId);
    const event: RoomEvent = { type: 'RoomPdu', v: 1, roomId, eventId, roomVersion: '10', pdu, origin: 'federation' };
    const data = encodeRoomEvent(event);
    roomBytes += data.length;
    roomItems.push({ subject: naming.roomSubject('rooms', roomId), data });
    rows.syncapi_room_events.push({
      seq: position(i + 1, 0),
      room_id: roomId,
      event_id: eventId,
      type: pdu.type,
      state_key: isState ? sender : null,
      sender,
      origin_server_ts: pdu.origin_server_ts,
      pdu: JSON.stringify(pdu),
      txn_device_id: null,
      txn_id: null,
      depth: d,
      backfilled: false,
    });
  }

  // PEEKS: device peeks (70%) and inbound federation peeks (30%), each started, renewed, ended.
  const peekItems: { subject: string; data: Uint8Array }[] = [];
  let peekBytes = 0;
  for (let i = 0; peekItems.length < args.peekEvents; i++) {
    const roomId = roomIds[i % roomIds.length]!;
    const device = i % 10 < 7;
    const peek = device
      ? ({ kind: 'device', userId: users[i % users.length]!, deviceId: `DEV${i}` } as const)
      : ({ kind: 'inbound', server: `peer${i % 50}.bench`, peekId: b64url(6).slice(0, 8) } as const);
    const at = now + i;
    const lifecycle: PeekEvent[] = [
      { type: 'PeekStarted', v: 1, roomId, peek, at, expiresAt: at + 3_600_000, ...(device ? {} : { renewalIntervalMs: 3_600_000 }), roomSeq: i },
      { type: 'PeekRenewed', v: 1, roomId, peek, at: at + 1, expiresAt: at + 3_600_001, ...(device ? {} : { renewalIntervalMs: 3_600_000 }) },
      { type: 'PeekExpired', v: 1, roomId, peek, at: at + 2, reason: device ? 'unpeeked' : 'remote_deleted' },
    ];
    for (const event of lifecycle) {
      if (peekItems.length >= args.peekEvents) break;
      const data = encodePeekEvent(event);
      peekBytes += data.length;
      peekItems.push({ subject: naming.roomSubject('peeks', roomId), data });
      const seq = peekItems.length;
      const pos = position(seq, 0);
      // A bare event's roomSeq (a raw ROOMS sequence) is read as that message's position.
      const roomSeq = position(i, 0);
      const shard = naming.shardOf(roomId);
      // Distinct keys: the raw ceiling is plain INSERTs of one row per event.
      if (peek.kind === 'device') {
        rows.syncapi_peeks.push({
          room_id: roomId,
          user_id: peek.userId,
          device_id: `${peek.deviceId}_${seq}`,
          shard,
          started_seq: pos,
          started_at: at,
          renewed_at: at,
          expires_at: at + 3_600_000,
          room_seq: roomSeq,
          updated_seq: pos,
        });
      } else {
        rows.federationsender_inbound_peeks.push({
          room_id: roomId,
          server_name: peek.server,
          peek_id: `${seq}`,
          shard,
          created_at: at,
          renewed_at: at,
          renewal_interval_ms: 3_600_000,
          expires_at: at + 3_600_000,
          room_seq: roomSeq,
          started_seq: pos,
        });
      }
    }
  }
  await bulkPublish(nc, roomItems);
  await bulkPublish(nc, peekItems);
  current = { naming, nc, database, roomEvents: roomItems.length, peekEvents: peekItems.length, rows };
  return { roomEvents: roomItems.length, peekEvents: peekItems.length, roomBytes, peekBytes, ms: Date.now() - t0 };
}

function need(): Generated {
  if (!current) throw new Error('generate first');
  return current;
}

/** Reads a whole stream with an ordered consumer, as the projection runners do; msgs/s. */
export async function rawRead({ kind }: { kind: 'rooms' | 'peeks' }): Promise<{ messages: number; bytes: number; seconds: number; perSecond: number }> {
  const g = need();
  const js = jetstream(g.nc);
  const t0 = process.hrtime.bigint();
  const consumer = await js.consumers.get(g.naming.streamName(kind), { filter_subjects: g.naming.allSubjects(kind) });
  const messages = await consumer.consume({ max_messages: 2000 });
  let n = 0;
  let bytes = 0;
  for await (const m of messages) {
    n++;
    bytes += m.data.length;
    if (m.info.pending === 0) break;
  }
  await messages.close();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { messages: n, bytes, seconds, perSecond: n / seconds };
}

interface Column {
  name: string;
  type: string;
  nullable: boolean;
}

type RawClient = {
  unsafe?: (text: string, params: unknown[]) => Promise<unknown>;
  begin?: (fn: (tx: { unsafe(text: string, params: unknown[]): Promise<unknown> }) => Promise<unknown>) => Promise<unknown>;
  query?: (text: string, params: unknown[]) => Promise<unknown>;
  transaction?: (fn: (tx: { query(text: string, params: unknown[]): Promise<unknown> }) => Promise<unknown>) => Promise<unknown>;
};

/** The driver under drizzle: postgres.js or PGlite; one parameterised statement per transaction. */
async function rawTransaction(database: Database, text: string, params: unknown[]): Promise<void> {
  const client = (database.db as unknown as { $client: RawClient }).$client;
  if (database.kind === 'postgres') await client.begin!((tx) => tx.unsafe(text, params));
  else await client.transaction!((tx) => tx.query(text, params));
}

/** Whether `v` is a value of the column's SQL type, as the projections write it (JSON as text here). */
function fits(c: Column, v: unknown): boolean {
  if (v === null) return c.nullable;
  switch (c.type) {
    case 'bigint':
    case 'integer':
    case 'smallint':
      return Number.isSafeInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'text':
    case 'character varying':
      return typeof v === 'string';
    case 'jsonb':
    case 'json':
      return typeof v === 'string';
    default:
      return false;
  }
}

/**
 * Fails unless every row has exactly the live table's shape: no column the table lacks,
 * every NOT NULL column given, each value of its column's type. A migration that adds a
 * column then shows up here, not as a ceiling measured on something else.
 */
function checkShape(table: string, cols: Column[], rows: RawRow[]): void {
  if (cols.length === 0) throw new Error(`rawInsert: no table public.${table}`);
  const names = new Set(cols.map((c) => c.name));
  for (const row of rows) {
    for (const k of Object.keys(row)) if (!names.has(k)) throw new Error(`rawInsert: ${table} has no column ${k}`);
    for (const c of cols) {
      if (!c.nullable && !(c.name in row)) throw new Error(`rawInsert: the rows for ${table} lack NOT NULL column ${c.name} (${c.type})`);
      const v = row[c.name] ?? null;
      if (!fits(c, v)) throw new Error(`rawInsert: ${table}.${c.name} is ${c.type}${c.nullable ? '' : ' not null'}, the rows give ${JSON.stringify(v)}`);
    }
  }
}

/**
 * The raw batched INSERT rate into a copy of `table` (same columns and indexes): one row
 * per event, one statement and one transaction per `batch` rows (as a replay batch), by
 * two raw methods — multi-row VALUES with one parameter per value, and one jsonb
 * parameter unpacked by jsonb_to_recordset — on up to `sample` rows each. The ceiling is
 * the faster of the two; `seconds` is what inserting every row at that rate would take.
 */
export async function rawInsert({
  table,
  batch = 1000,
  sample = 20_000,
}: {
  table: keyof Generated['rows'];
  batch?: number;
  sample?: number;
}): Promise<{ rows: number; seconds: number; perSecond: number; methods: Record<string, number> }> {
  const g = need();
  const db = g.database.db;
  const cols = rowsOf<{ column_name: string; data_type: string; is_nullable: string }>(
    await db.execute(sql`select column_name, data_type, is_nullable from information_schema.columns where table_schema = 'public' and table_name = ${table} order by ordinal_position`),
  ).map((c) => ({ name: c.column_name, type: c.data_type, nullable: c.is_nullable === 'YES' }));
  const all = g.rows[table];
  checkShape(table, cols, all);
  const rows = all.slice(0, sample);
  const valueOf = (row: RawRow, c: Column) => row[c.name] ?? null;
  const fresh = async () => {
    await db.execute(sql.raw('drop schema if exists bench_raw cascade'));
    await db.execute(sql.raw('create schema bench_raw'));
    await db.execute(sql.raw(`create table bench_raw."${table}" (like public."${table}" including all)`));
  };
  const colList = cols.map((c) => `"${c.name}"`).join(', ');
  const time = async (statement: (part: RawRow[]) => { text: string; params: unknown[] }) => {
    await fresh();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < rows.length; i += batch) {
      const { text, params } = statement(rows.slice(i, i + batch));
      await rawTransaction(g.database, text, params);
    }
    return rows.length / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  // Each parameter typed as its column (a parameter's type, not a conversion of a value).
  const casts = cols.map((c) => `::${c.type}`);
  const methods: Record<string, number> = {};
  methods.values = await time((part) => {
    const params: unknown[] = [];
    const tuples: string[] = [];
    for (const row of part) {
      const ph: string[] = [];
      for (const [j, c] of cols.entries()) {
        const v = valueOf(row, c);
        params.push(v === null ? null : String(v));
        ph.push(`$${params.length}${casts[j]}`);
      }
      tuples.push(`(${ph.join(', ')})`);
    }
    return { text: `insert into bench_raw."${table}" (${colList}) values ${tuples.join(', ')}`, params };
  });
  const recordType = cols.map((c) => `"${c.name}" ${c.type}`).join(', ');
  methods.jsonb_to_recordset = await time((part) => {
    const json = part.map((row) => {
      const o: Record<string, unknown> = {};
      for (const c of cols) {
        const v = valueOf(row, c);
        o[c.name] = c.type === 'jsonb' && typeof v === 'string' ? JSON.parse(v) : v;
      }
      return o;
    });
    return { text: `insert into bench_raw."${table}" (${colList}) select * from jsonb_to_recordset($1::jsonb) as x(${recordType})`, params: [JSON.stringify(json)] };
  });
  await db.execute(sql.raw('drop schema if exists bench_raw cascade'));
  const best = Math.max(...Object.values(methods));
  return { rows: all.length, seconds: all.length / best, perSecond: best, methods };
}

const PROJECTIONS: Record<string, Projection<unknown>> = {
  sync_rooms: syncRoomsProjection as Projection<unknown>,
  sync_peeks: syncPeeksProjection as Projection<unknown>,
  federation_peeks: federationPeeksProjection as Projection<unknown>,
};

/**
 * The events in a stream the bench generated: one bare event per message, so its message
 * count. (Not its last sequence, nor a position: a position is sequence × 1000 + index.)
 */
async function streamEvents(g: Generated, kind: StreamKind): Promise<number> {
  const jsm = await jetstreamManager(g.nc);
  const { messages } = (await jsm.streams.info(g.naming.streamName(kind))).state;
  const generated = kind === 'rooms' ? g.roomEvents : g.peekEvents;
  if (messages !== generated) throw new Error(`rebuild: ${g.naming.streamName(kind)} holds ${messages} messages, ${generated} events were written`);
  return messages;
}

/** peekd's replay (shadow tables, catch-up, atomic swap) of one projection from sequence 1; `events` is how many it replayed. */
export async function replay({ projection }: { projection: string }): Promise<{ events: number; seconds: number; perSecond: number; rows: number }> {
  const g = need();
  const p = PROJECTIONS[projection];
  if (!p) throw new Error(`unknown projection ${projection}`);
  const events = await streamEvents(g, p.stream);
  const t0 = process.hrtime.bigint();
  await replayProjection({ db: g.database.db, nc: g.nc, naming: g.naming }, p);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const [row] = rowsOf<{ n: string | number }>(await g.database.db.execute(sql.raw(`select count(*) as n from public."${p.tables[0]}"`)));
  return { events, seconds, perSecond: events / seconds, rows: Number(row?.n ?? 0) };
}

export async function cleanup(): Promise<void> {
  const g = current;
  current = undefined;
  if (!g) return;
  await deleteStreams(g.nc, g.naming).catch(() => undefined);
  await g.nc.drain().catch(() => undefined);
  await g.database.close().catch(() => undefined);
}
