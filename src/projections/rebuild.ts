// Replay and verify. Both rebuild a projection from sequence 1 into shadow tables (a
// schema of their own, same table names): `replay` catches the shadow up with the live
// stream and swaps it in atomically; `verify` compares it with the live tables.
// Undecodable messages are quarantined as the live runner does: into the shadow's own
// projection_quarantine, merged into the live one (this projection's rows) at the swap.
import { randomBytes } from 'node:crypto';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';
import { is as isEntity, sql } from 'drizzle-orm';
import { InvalidInputError } from '../actors/errors';
import { MAX_EVENTS_PER_ENVELOPE, seqOfPosition, throughSeq } from '../events/envelope';
import type { Naming } from '../events/subjects';
import { rowsOf, type Db, type Tx } from '../store/db';
import * as schema from '../store/schema';
import { readModels } from './index';
import type { Logger } from '../logger';
import { decodeMessage, type Projected, type Projection, type Quarantined } from './projection';
import { commitBatch, defaultProjectionLogger, readCheckpoint, reportQuarantined, useSchema } from './runner';

const LIVE = 'public';
/** Shared by every projection; each rebuild copies and merges only its own rows. */
const QUARANTINE = 'projection_quarantine';

const is =
  <T>(cls: new (...args: any[]) => T) =>
  (v: unknown): v is T =>
    isEntity(v, cls as never);

/** drizzle table objects by SQL name. */
const TABLES: Map<string, PgTable> = new Map(
  (Object.values(schema) as unknown[]).filter(is(PgTable)).map((t) => [getTableConfig(t).name, t]),
);

export function primaryKeyOf(table: string): string[] {
  const t = TABLES.get(table);
  if (!t) throw new Error(`unknown table ${table}`);
  const cfg = getTableConfig(t);
  const composite = cfg.primaryKeys[0]?.columns.map((c) => c.name);
  return composite ?? cfg.columns.filter((c) => c.primary).map((c) => c.name);
}

/** The read models `name` selects (one projection, or `all` / none for every one). */
export function selectReadModels(name: string | undefined): Projection<unknown>[] {
  const all = readModels('all');
  if (name && name !== 'all' && !all.some((p) => p.name === name)) {
    throw new InvalidInputError(`unknown projection ${name}; one of: ${all.map((p) => p.name).join(', ')}, all`);
  }
  return readModels(name);
}

export interface Progress {
  (doneSeq: number, totalSeq: number): void;
}

export interface RebuildDeps {
  db: Db;
  nc: NatsConnection;
  naming: Naming;
  /** Where a replay reports the messages it newly quarantined (default: a warn-level logger). */
  logger?: Logger;
}

/** The position through the stream's last envelope (what a caught-up projection's checkpoint reads). */
export async function streamLastSeq(nc: NatsConnection, naming: Naming, kind: 'peeks' | 'rooms'): Promise<number> {
  const jsm = await jetstreamManager(nc);
  return throughSeq((await jsm.streams.info(naming.streamName(kind))).state.last_seq);
}

/**
 * A schema holding empty copies of the projection's tables. Constraints and indexes keep
 * the live tables' names (names are per schema), so a swapped-in table is exactly what
 * the migrations made and later migrations can still name its indexes. Unique indexes
 * exist from the start (ON CONFLICT in `apply` relies on them); the other indexes are
 * returned, to be built once over the loaded rows rather than row by row.
 */
async function createShadow(db: Db, shadow: string, projection: Projection<unknown>): Promise<string[]> {
  await db.execute(sql.raw(`DROP SCHEMA IF EXISTS ${shadow} CASCADE`));
  await db.execute(sql.raw(`CREATE SCHEMA ${shadow}`));
  const deferred: string[] = [];
  for (const t of [...projection.tables, 'projection_checkpoints', QUARANTINE]) {
    await db.execute(
      sql.raw(
        `CREATE TABLE ${shadow}."${t}" (LIKE ${LIVE}."${t}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)`,
      ),
    );
    const constraints = rowsOf<{ name: string; def: string }>(
      await db.execute(sql`
        select c.conname as name, pg_get_constraintdef(c.oid) as def
        from pg_constraint c join pg_class r on r.oid = c.conrelid join pg_namespace n on n.oid = r.relnamespace
        where n.nspname = ${LIVE} and r.relname = ${t} and c.contype in ('p', 'u', 'x')
        order by c.conname`),
    );
    for (const c of constraints) await db.execute(sql.raw(`ALTER TABLE ${shadow}."${t}" ADD CONSTRAINT "${c.name}" ${c.def}`));
    const indexes = rowsOf<{ def: string; unique: boolean }>(
      await db.execute(sql`
        select pg_get_indexdef(ix.indexrelid) as def, ix.indisunique as unique
        from pg_index ix join pg_class r on r.oid = ix.indrelid join pg_namespace n on n.oid = r.relnamespace
        where n.nspname = ${LIVE} and r.relname = ${t}
          and not exists (select 1 from pg_constraint c where c.conindid = ix.indexrelid)
        order by ix.indexrelid`),
    );
    for (const { def, unique } of indexes) {
      const on = ` ON ${LIVE}.`;
      if (!def.includes(on)) throw new Error(`cannot copy index of ${t}: ${def}`);
      const shadowDef = def.replace(on, ` ON ${shadow}.`);
      if (unique) await db.execute(sql.raw(shadowDef));
      else deferred.push(shadowDef);
    }
  }
  return deferred;
}

async function dropShadow(db: Db, shadow: string): Promise<void> {
  await db.execute(sql.raw(`DROP SCHEMA IF EXISTS ${shadow} CASCADE`));
}

/**
 * Applies the stream's events after the shadow's checkpoint up to `toSeq` to the tables in
 * `target`, in batches (each its own transaction, or all inside `tx` when given).
 */
export async function catchUp(
  deps: RebuildDeps,
  projection: Projection<unknown>,
  target: string,
  toSeq: number,
  options: { tx?: Tx; batchSize?: number; onProgress?: Progress; total?: number } = {},
): Promise<number> {
  const { db, nc, naming } = deps;
  const run = <T>(fn: (tx: Tx) => Promise<T>) => (options.tx ? fn(options.tx) : db.transaction(fn));
  let done = await run(async (tx) => {
    await useSchema(tx, target);
    return readCheckpoint(tx, projection.name, projection.stream);
  });
  if (done >= toSeq) return done;
  const js = jetstream(nc);
  const consumer = await js.consumers.get(naming.streamName(projection.stream), {
    filter_subjects: naming.allSubjects(projection.stream),
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, seqOfPosition(done + 1)),
  });
  const toEnvelope = seqOfPosition(toSeq);
  const batchSize = options.batchSize ?? 1000;
  const messages = await consumer.consume({ max_messages: batchSize * 2 });
  let batch: Projected<unknown>[] = [];
  let quarantined: Quarantined[] = [];
  let last = done;
  const flush = async () => {
    const items = batch;
    const quarantine = quarantined;
    batch = [];
    quarantined = [];
    done = (await run((tx) => commitBatch(tx, projection, items, last, target, quarantine))).seq;
    if (options.tx) await useSchema(options.tx, LIVE);
    options.onProgress?.(done, options.total ?? toSeq);
  };
  try {
    for await (const m of messages) {
      if (m.seq > toEnvelope) break;
      last = throughSeq(m.seq);
      const decoded = decodeMessage(projection, naming, m);
      for (const p of decoded.events) if (p.seq > done) batch.push(p);
      if (decoded.quarantined) quarantined.push(decoded.quarantined);
      if (batch.length + quarantined.length >= batchSize || m.seq >= toEnvelope || m.info.pending === 0) await flush();
      if (m.seq >= toEnvelope || m.info.pending === 0) break;
    }
    // A gap in the sequences (deleted messages) can end the loop with a batch not yet written.
    if (last > done) await flush();
  } finally {
    await messages.close();
  }
  return done;
}

export interface ReplayResult {
  projection: string;
  /** Stream sequence the swapped-in tables reflect. */
  seq: number;
  durationMs: number;
}

/**
 * Rebuilds `projection` from sequence 1 into shadow tables while the live runner keeps
 * going, then swaps them in atomically (one transaction: lock, final catch-up, rename).
 */
export async function replayProjection(deps: RebuildDeps, projection: Projection<unknown>, onProgress?: Progress): Promise<ReplayResult> {
  if (projection.delivery) throw new Error(`${projection.name} is a delivery queue, not a read model: it is never replayed`);
  const started = Date.now();
  // A schema of its own per run: two replays at once never share (or destroy) a shadow.
  const shadow = `peekd_replay_${projection.name}_${randomBytes(4).toString('hex')}`;
  const { db } = deps;
  let merged: QuarantineRow[] = [];
  // The swap holds the live runner still by locking its checkpoint row; a runner that has
  // not committed yet has none, and a missing row locks nothing.
  await db.execute(sql`
    insert into ${sql.raw(LIVE)}.projection_checkpoints (projection, stream, seq) values (${projection.name}, ${projection.stream}, 0)
    on conflict (projection, stream) do nothing`);
  const deferredIndexes = await createShadow(db, shadow, projection);
  try {
    // Catch up with a moving target until the gap is small.
    const total = await streamLastSeq(deps.nc, deps.naming, projection.stream);
    let target = Math.max(total, await readCheckpoint(db, projection.name, projection.stream));
    for (let round = 0; round < 10; round++) {
      const reached = await catchUp(deps, projection, shadow, target, { onProgress, total: target });
      const live = await readCheckpoint(db, projection.name, projection.stream);
      if (live - reached < 1000) break;
      target = live;
    }
    for (const def of deferredIndexes) await db.execute(sql.raw(def));
    const seq = await db.transaction(async (tx) => {
      // Same lock order as a runner's commit (checkpoint row, then tables): no deadlock.
      const [liveRow] = rowsOf<{ seq: string | number }>(
        await tx.execute(sql`select seq from ${sql.raw(LIVE)}.projection_checkpoints where projection = ${projection.name} and stream = ${projection.stream} for update`),
      );
      for (const t of projection.tables) await tx.execute(sql.raw(`LOCK TABLE ${LIVE}."${t}" IN ACCESS EXCLUSIVE MODE`));
      const live = Number(liveRow?.seq ?? 0);
      const reached = await catchUp(deps, projection, shadow, live, { tx });
      await useSchema(tx, LIVE);
      for (const t of projection.tables) {
        await tx.execute(sql.raw(`DROP TABLE ${LIVE}."${t}"`));
        await tx.execute(sql.raw(`ALTER TABLE ${shadow}."${t}" SET SCHEMA ${LIVE}`));
      }
      const seq = Math.max(live, reached);
      await tx.execute(sql`
        insert into ${sql.raw(LIVE)}.projection_checkpoints (projection, stream, seq) values (${projection.name}, ${projection.stream}, ${seq})
        on conflict (projection, stream) do update set seq = excluded.seq`);
      merged = await mergeQuarantine(tx, projection.name, shadow);
      return seq;
    });
    reportQuarantined(deps.logger ?? defaultProjectionLogger(), projection.name, merged);
    return { projection: projection.name, seq, durationMs: Date.now() - started };
  } finally {
    await dropShadow(db, shadow);
  }
}

interface QuarantineRow {
  stream: string;
  streamSeq: number;
  subject: string;
  reason: string;
}

const QUARANTINE_COLUMNS = 'projection, stream, stream_seq, subject, payload, payload_bytes, error, quarantined_at';

/**
 * Makes the projection's live quarantine what the rebuild found: rows it no longer
 * quarantines go (a newer version reads them), new ones come; rows in both keep their
 * first time. Returns the rows new to the live table.
 */
async function mergeQuarantine(tx: Tx, projection: string, shadow: string): Promise<QuarantineRow[]> {
  const live = sql.raw(`${LIVE}.${QUARANTINE}`);
  const rebuilt = sql.raw(`${shadow}.${QUARANTINE}`);
  await tx.execute(sql`
    delete from ${live} l where l.projection = ${projection}
      and not exists (select 1 from ${rebuilt} r where r.projection = l.projection and r.stream = l.stream and r.stream_seq = l.stream_seq)`);
  const added = rowsOf<{ stream: string; stream_seq: string | number; subject: string; error: string }>(
    await tx.execute(sql`
      insert into ${live} (${sql.raw(QUARANTINE_COLUMNS)})
      select ${sql.raw(QUARANTINE_COLUMNS)} from ${rebuilt} where projection = ${projection}
      order by stream, stream_seq
      on conflict do nothing
      returning stream, stream_seq, subject, error`),
  );
  return added.map((r) => ({ stream: r.stream, streamSeq: Number(r.stream_seq), subject: r.subject, reason: r.error }));
}

export interface TableComparison {
  table: string;
  liveRows: number;
  rebuiltRows: number;
  liveHash: string;
  rebuiltHash: string;
  equal: boolean;
  /** The first differing rows, as text: only in live (`-`) or only in the rebuild (`+`). */
  differences: { side: 'live' | 'rebuilt'; row: string }[];
}

/** The messages the live projection quarantined against those a rebuild quarantines. */
export interface QuarantineComparison {
  liveRows: number;
  rebuiltRows: number;
  equal: boolean;
  /** The first messages quarantined on one side only. */
  differences: { side: 'live' | 'rebuilt'; stream: string; streamSeq: number }[];
}

export interface VerifyResult {
  projection: string;
  seq: number;
  tables: TableComparison[];
  quarantine: QuarantineComparison;
  /** Every table and the quarantine equal. */
  equal: boolean;
}

async function compareTable(tx: Tx, table: string, shadow: string): Promise<TableComparison> {
  const pk = primaryKeyOf(table).map((c) => `"${c}"`).join(', ');
  const stats = async (s: string) => {
    const [row] = rowsOf<{ n: string | number; h: string | null }>(
      await tx.execute(sql.raw(`select count(*) as n, md5(coalesce(string_agg(md5(t::text), '' order by ${pk}), '')) as h from ${s}."${table}" t`)),
    );
    return { n: Number(row?.n ?? 0), h: row?.h ?? '' };
  };
  const live = await stats(LIVE);
  const rebuilt = await stats(shadow);
  const equal = live.n === rebuilt.n && live.h === rebuilt.h;
  let differences: TableComparison['differences'] = [];
  if (!equal) {
    const diff = rowsOf<{ side: 'live' | 'rebuilt'; row: string }>(
      await tx.execute(
        sql.raw(`
        select * from (
          (select 'live' as side, t::text as row, ${pk} from (select * from ${LIVE}."${table}" except select * from ${shadow}."${table}") t)
          union all
          (select 'rebuilt' as side, t::text as row, ${pk} from (select * from ${shadow}."${table}" except select * from ${LIVE}."${table}") t)
        ) d order by ${pk}, side limit 10`),
      ),
    );
    differences = diff.map((d) => ({ side: d.side, row: d.row }));
  }
  return { table, liveRows: live.n, rebuiltRows: rebuilt.n, liveHash: live.h, rebuiltHash: rebuilt.h, equal, differences };
}

/** Compares the messages quarantined in live and rebuilt, among those both have passed (through `live`). */
async function compareQuarantine(tx: Tx, projection: string, shadow: string, live: number): Promise<QuarantineComparison> {
  // A message counts once the checkpoint is past all of it (its quarantine row is written then).
  const passed = sql`stream_seq * ${MAX_EVENTS_PER_ENVELOPE} + ${MAX_EVENTS_PER_ENVELOPE - 1} <= ${live}`;
  const keys = (s: string) => sql`select stream, stream_seq from ${sql.raw(`${s}.${QUARANTINE}`)} where projection = ${projection} and ${passed}`;
  const count = async (s: string) => Number(rowsOf<{ n: string | number }>(await tx.execute(sql`select count(*) as n from (${keys(s)}) k`))[0]?.n ?? 0);
  const liveRows = await count(LIVE);
  const rebuiltRows = await count(shadow);
  const diff = rowsOf<{ side: 'live' | 'rebuilt'; stream: string; stream_seq: string | number }>(
    await tx.execute(sql`
      select * from (
        (select 'live' as side, * from (${keys(LIVE)} except ${keys(shadow)}) a)
        union all
        (select 'rebuilt' as side, * from (${keys(shadow)} except ${keys(LIVE)}) b)
      ) d order by stream, stream_seq, side limit 10`),
  );
  const differences = diff.map((d) => ({ side: d.side, stream: d.stream, streamSeq: Number(d.stream_seq) }));
  return { liveRows, rebuiltRows, equal: differences.length === 0, differences };
}

/** Rebuilds into a scratch schema and compares with the live tables at one checkpoint. */
export async function verifyProjection(deps: RebuildDeps, projection: Projection<unknown>, onProgress?: Progress): Promise<VerifyResult> {
  if (projection.delivery) throw new Error(`${projection.name} is a delivery queue, not a read model: it is never verified`);
  const shadow = `peekd_verify_${projection.name}_${randomBytes(4).toString('hex')}`;
  const { db } = deps;
  await createShadow(db, shadow, projection); // comparing needs no secondary indexes
  try {
    const target = await readCheckpoint(db, projection.name, projection.stream);
    await catchUp(deps, projection, shadow, target, { onProgress, total: target });
    return await db.transaction(async (tx) => {
      // Hold the live runner still at one checkpoint while comparing.
      const [liveRow] = rowsOf<{ seq: string | number }>(
        await tx.execute(sql`select seq from ${sql.raw(LIVE)}.projection_checkpoints where projection = ${projection.name} and stream = ${projection.stream} for update`),
      );
      for (const t of projection.tables) await tx.execute(sql.raw(`LOCK TABLE ${LIVE}."${t}" IN SHARE MODE`));
      const live = Number(liveRow?.seq ?? 0);
      await catchUp(deps, projection, shadow, live, { tx });
      await useSchema(tx, LIVE);
      const tables: TableComparison[] = [];
      for (const t of projection.tables) tables.push(await compareTable(tx, t, shadow));
      const quarantine = await compareQuarantine(tx, projection.name, shadow, live);
      return { projection: projection.name, seq: live, tables, quarantine, equal: tables.every((t) => t.equal) && quarantine.equal };
    });
  } finally {
    await dropShadow(db, shadow);
  }
}
