// Replay and verify. Both rebuild a projection from sequence 1 into shadow tables (a
// schema of their own, same table names): `replay` catches the shadow up with the live
// stream and swaps it in atomically; `verify` compares it with the live tables.
// Undecodable messages are quarantined as the live runner does: into the shadow's own
// projection_quarantine, merged into the live one (this projection's rows) at the swap.
import { randomBytes } from 'node:crypto';
import { DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type FetchOptions, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';
import { is as isEntity, sql } from 'drizzle-orm';
import { InvalidInputError } from '../actors/errors.ts';
import { retryTransient } from '../nats/errors.ts';
import { MAX_EVENTS_PER_ENVELOPE, seqOfPosition, throughSeq } from '../events/envelope.ts';
import type { Naming, StreamKind } from '../events/subjects.ts';
import { rowsOf, type Db, type Tx } from '../store/db.ts';
import { pipelined } from '../store/sqlHelpers.ts';
import * as schema from '../store/schema.ts';
import { readModels } from './index.ts';
import type { Logger } from '../logger.ts';
import { CommitPipeline } from './pipeline.ts';
import { decodeMessage, takeMessage, type DecodedMessage, type Projection } from './projection.ts';
import { commitBatch, defaultProjectionLogger, readCheckpoint, reportQuarantined, useSchema } from './runner.ts';

const LIVE = 'public';
/** Shared by every projection; each rebuild copies and merges only its own rows. */
const QUARANTINE = 'projection_quarantine';

const is =
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- any constructor
  <T>(cls: new (...args: any[]) => T) =>
    (v: unknown): v is T =>
      isEntity(v, cls as never);

/** drizzle table objects by SQL name. */
const TABLES: Map<string, PgTable> = new Map((Object.values(schema) as unknown[]).filter(is(PgTable)).map((t) => [getTableConfig(t).name, t]));

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
  /** `projection`: which one, where several are rebuilt together. */
  (doneSeq: number, totalSeq: number, projection: string): void;
}

export interface RebuildDeps {
  db: Db;
  nc: NatsConnection;
  naming: Naming;
  /** Where a replay reports the messages it newly quarantined (default: a warn-level logger). */
  logger?: Logger;
}

/** How long a replay's read of the stream keeps trying again after transient NATS failures. */
const READ_RETRY_MS = 60_000;

/** The position through the stream's last envelope (what a caught-up projection's checkpoint reads). */
export async function streamLastSeq(nc: NatsConnection, naming: Naming, kind: 'peeks' | 'rooms'): Promise<number> {
  return retryTransient(async () => {
    const jsm = await jetstreamManager(nc);
    return throughSeq((await jsm.streams.info(naming.streamName(kind))).state.last_seq);
  }, READ_RETRY_MS);
}

/**
 * A schema holding empty copies of the projection's tables. Constraints and indexes keep
 * the live tables' names (names are per schema), so a swapped-in table is exactly what
 * the migrations made and later migrations can still name its indexes. Unique indexes
 * exist from the start (ON CONFLICT in `apply` relies on them); the other indexes are
 * returned, to be built once over the loaded rows rather than row by row.
 */
async function createShadow(db: Db, shadow: string, projection: Projection<unknown>): Promise<string[]> {
  const tables = [...projection.tables, 'projection_checkpoints', QUARANTINE];
  const [constraints, indexes] = await Promise.all([
    db.execute(sql`
      select r.relname as table, c.conname as name, pg_get_constraintdef(c.oid) as def
      from pg_constraint c join pg_class r on r.oid = c.conrelid join pg_namespace n on n.oid = r.relnamespace
      where n.nspname = ${LIVE} and r.relname in ${tables} and c.contype in ('p', 'u', 'x')
      order by c.conname`),
    db.execute(sql`
      select r.relname as table, pg_get_indexdef(ix.indexrelid) as def, ix.indisunique as unique
      from pg_index ix join pg_class r on r.oid = ix.indrelid join pg_namespace n on n.oid = r.relnamespace
      where n.nspname = ${LIVE} and r.relname in ${tables}
        and not exists (select 1 from pg_constraint c where c.conindid = ix.indexrelid)
      order by ix.indexrelid`),
  ]);
  const ddl = [`DROP SCHEMA IF EXISTS ${shadow} CASCADE`, `CREATE SCHEMA ${shadow}`];
  const deferred: string[] = [];
  for (const t of tables) {
    ddl.push(`CREATE TABLE ${shadow}."${t}" (LIKE ${LIVE}."${t}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)`);
    for (const c of rowsOf<{ table: string; name: string; def: string }>(constraints)) {
      if (c.table === t) ddl.push(`ALTER TABLE ${shadow}."${t}" ADD CONSTRAINT "${c.name}" ${c.def}`);
    }
    for (const { table, def, unique } of rowsOf<{ table: string; def: string; unique: boolean }>(indexes)) {
      if (table !== t) continue;
      const on = ` ON ${LIVE}.`;
      if (!def.includes(on)) throw new Error(`cannot copy index of ${t}: ${def}`);
      const shadowDef = def.replace(on, ` ON ${shadow}.`);
      if (unique) ddl.push(shadowDef);
      else deferred.push(shadowDef);
    }
  }
  await runDdl(db, ddl);
  return deferred;
}

/** Runs DDL statements in order, in one transaction, sent together (one round trip, not one each). */
async function runDdl(db: Db, statements: string[]): Promise<void> {
  if (statements.length === 0) return;
  await db.transaction((tx) => pipelined(statements.map((s) => tx.execute(sql.raw(s)))));
}

async function dropShadow(db: Db, shadow: string): Promise<void> {
  await db.execute(sql.raw(`DROP SCHEMA IF EXISTS ${shadow} CASCADE`));
}

/** One projection a catch-up brings up to `toSeq`, in the tables of schema `target`. */
export interface CatchUpTarget {
  projection: Projection<unknown>;
  target: string;
  toSeq: number;
  /** The target's checkpoint, where the caller knows it (a shadow it alone writes): not read again. */
  from?: number;
}

export interface CatchUpOptions {
  /** Apply everything inside this transaction (one commit after another) instead of one transaction per batch. */
  tx?: Tx;
  /** The target's checkpoint, where known (see CatchUpTarget). */
  from?: number;
  batchSize?: number;
  onProgress?: Progress;
  /** What progress counts towards (default each target's `toSeq`). */
  total?: number;
}

/** Events per catch-up transaction: big enough that per-transaction costs vanish, small enough to stay bounded. */
export const CATCH_UP_BATCH = 5000;

/**
 * Applies the stream's events after the shadow's checkpoint up to `toSeq` to the tables in
 * `target`, in batches (each its own transaction, or all inside `tx` when given).
 */
export async function catchUp(deps: RebuildDeps, projection: Projection<unknown>, target: string, toSeq: number, options: CatchUpOptions = {}): Promise<number> {
  const [done] = await catchUpAll(deps, [{ projection, target, toSeq, from: options.from }], options);
  return done!;
}

/**
 * Brings each target up to its `toSeq` (through the whole envelope holding it) from its own
 * checkpoint, all of one stream, from one read of it: each message is fetched and decoded
 * once for every target that reads it (once per decode function). Pipelined: while a batch
 * commits, the next is read and decoded. No pull (half a batch) goes out while a target holds
 * a batch and a half not yet committing, so none holds more than two batches besides the one
 * in its commit. Returns the checkpoint each target reached.
 */
export async function catchUpAll(deps: RebuildDeps, targets: CatchUpTarget[], options: CatchUpOptions = {}): Promise<number[]> {
  const { db, nc, naming } = deps;
  const stream = targets[0]?.projection.stream;
  if (stream === undefined) return [];
  if (targets.some((t) => t.projection.stream !== stream)) throw new Error('catchUpAll: every target must read the same stream');
  const { tx } = options;
  const batchSize = options.batchSize ?? CATCH_UP_BATCH;
  // Inside one transaction the commits take turns (each sets its own search_path).
  let turn: Promise<unknown> = Promise.resolve();
  const run = <T>(fn: (tx: Tx) => Promise<T>): Promise<T> => {
    if (!tx) return db.transaction(fn);
    const mine = turn.then(() => fn(tx));
    turn = mine.catch(() => undefined);
    return mine;
  };

  interface Reader {
    target: CatchUpTarget;
    done: number;
    /** The last envelope it takes: the one holding `toSeq`. */
    toEnvelope: number;
    pipeline?: CommitPipeline<unknown>;
    finished: boolean;
  }
  const readers: Reader[] = [];
  for (const t of targets) {
    const done =
      t.from ??
      (await run(async (tx) => {
        await useSchema(tx, t.target);
        const seq = await readCheckpoint(tx, t.projection.name, t.projection.stream);
        if (options.tx) await useSchema(tx, LIVE);
        return seq;
      }));
    readers.push({ target: t, done, toEnvelope: seqOfPosition(t.toSeq), finished: done >= t.toSeq });
  }
  const active = readers.filter((r) => !r.finished);
  if (active.length === 0) return readers.map((r) => r.done);

  let failed: { error: unknown } | undefined;
  for (const r of active) {
    const { projection, target } = r.target;
    r.pipeline = new CommitPipeline<unknown>(
      r.done,
      async (batch, lastSeq, quarantined) => {
        const result = await run(async (tx) => {
          const committed = await commitBatch(tx, projection, batch, lastSeq, target, quarantined);
          if (options.tx) await useSchema(tx, LIVE);
          return committed;
        });
        r.done = result.seq;
        options.onProgress?.(r.done, options.total ?? r.target.toSeq, projection.name);
      },
      { batchSize, mode: 'full', limit: Math.ceil(batchSize * 1.5), onFailure: (error) => (failed ??= { error }) },
    );
  }

  const js = jetstream(nc);
  const lastEnvelope = Math.max(...active.map((r) => r.toEnvelope));
  /** Position through the last message taken in (by every reader that wanted it). */
  let read = Math.min(...active.map((r) => r.done));
  // One decoding per decode function, shared by the readers that use it.
  const decodes = [...new Set(active.map((r) => r.target.projection.decode))];
  const decodeOf = active.map((r) => decodes.indexOf(r.target.projection.decode));
  const decoded: (DecodedMessage<unknown> | undefined)[] = decodes.map(() => undefined);
  const finishing: Promise<void>[] = [];
  const finish = (r: Reader) => {
    r.finished = true;
    const flushed = r.pipeline!.flush();
    flushed.catch(() => undefined); // awaited below; a failure meanwhile is not "unhandled"
    finishing.push(flushed);
  };
  /** What to wait for before reading on: a pipeline that holds as much as it may. */
  const backpressure = (): Promise<void> | undefined => {
    for (const r of active) {
      const wait = r.finished ? undefined : r.pipeline!.backpressure;
      if (wait) return wait;
    }
    return undefined;
  };
  /** Takes one message in, synchronously; returns whether to stop reading (the end, or a failed commit). */
  const take = (m: JsMsg): boolean => {
    const seq = m.seq;
    if (seq > lastEnvelope) return true;
    const through = throughSeq(seq);
    if (through <= read) return false;
    const atEnd = seq >= lastEnvelope || m.info.pending === 0;
    decoded.fill(undefined);
    let open = 0;
    for (let i = 0; i < active.length; i++) {
      const r = active[i]!;
      if (r.finished) continue;
      if (seq <= r.toEnvelope)
        r.pipeline!.add(
          through,
          takeMessage(r.target.projection, m.data, () => (decoded[decodeOf[i]!] ??= decodeMessage(r.target.projection, naming, m))),
        );
      if (seq >= r.toEnvelope || atEnd) finish(r);
      else open++;
    }
    read = through;
    return atEnd || open === 0 || failed !== undefined;
  };
  try {
    // A NATS request that times out (a busy server, or this process's event loop held up by
    // its own commits so the answer is read too late) is read again from what was taken in.
    await retryTransient(() => readUntil(js, naming, stream, read, Math.ceil(batchSize / 2), take, backpressure), READ_RETRY_MS);
    // A gap in the sequences (deleted messages) can end the read with a batch not yet written.
    for (const r of active) if (!r.finished) finish(r);
    await Promise.allSettled(finishing);
  } catch (err) {
    failed ??= { error: err };
    await Promise.allSettled(finishing);
  }
  if (failed) throw failed.error;
  await Promise.all(finishing);
  return readers.map((r) => r.done);
}

/**
 * Reads the stream after `after` (a position) with one ordered consumer, in pulls of
 * `pullMessages`, handing each message to `take` as it arrives, until `take` says stop. Before
 * each pull it waits for `ready` (the pipelines have room): that bounds what is held. Each pull
 * costs a round trip before its first message, so pulls are big (half a batch).
 */
async function readUntil(
  js: JetStreamClient,
  naming: Naming,
  stream: StreamKind,
  after: number,
  pullMessages: number,
  take: (m: JsMsg) => boolean,
  ready: () => Promise<void> | undefined,
): Promise<void> {
  const consumer = await js.consumers.get(naming.streamName(stream), {
    filter_subjects: naming.allSubjects(stream),
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, seqOfPosition(after + 1)),
  });
  let stopped = false;
  try {
    while (!stopped) {
      const wait = ready();
      if (wait) {
        await wait;
        continue;
      }
      let pulled: ConsumerMessages | undefined;
      let taken = 0;
      // A callback rather than an iterator: less work per message, and nothing queues up in
      // front of the I/O (the answers to commits) while messages are being taken in. nats.js
      // (3.4, pinned) takes `callback` in fetch as in consume, though only consume's type says
      // so; were it ever ignored, the empty-pull check below fails the read loudly.
      const callback = (m: JsMsg) => {
        if (stopped) return;
        taken++;
        if (take(m)) {
          stopped = true;
          void pulled?.close().catch(() => undefined);
        }
      };
      pulled = await consumer.fetch({ max_messages: pullMessages, expires: 5_000, callback } as FetchOptions);
      if (stopped) void pulled.close().catch(() => undefined);
      const err = await pulled.closed();
      if (err instanceof Error) throw err;
      if (taken === 0 && !stopped) {
        // An empty pull: nothing more in the stream (its last messages were deleted), which the
        // consumer confirms; never a read cut short in silence.
        const pending = (await consumer.info()).num_pending;
        if (pending > 0) throw new Error(`catch-up: a pull of ${naming.streamName(stream)} delivered nothing while ${pending} messages are pending`);
        stopped = true;
      }
    }
  } finally {
    // Its server side would linger (unused) until it times out.
    void consumer.delete().catch(() => undefined);
  }
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
  const [result] = await replayProjections(deps, [projection], onProgress);
  return result!;
}

/** The projections by stream, in the order given: each group is rebuilt from one read of its stream. */
export function byStream(projections: Projection<unknown>[]): Projection<unknown>[][] {
  const groups = new Map<string, Projection<unknown>[]>();
  for (const p of projections) {
    const group = groups.get(p.stream);
    if (group) group.push(p);
    else groups.set(p.stream, [p]);
  }
  return [...groups.values()];
}

/**
 * Replays several projections as `replayProjection` does each, those of one stream together:
 * one read and one decoding of the stream feeds all their shadows; each is then swapped in
 * by a transaction of its own.
 */
export async function replayProjections(deps: RebuildDeps, projections: Projection<unknown>[], onProgress?: Progress): Promise<ReplayResult[]> {
  for (const p of projections) {
    if (p.delivery) throw new Error(`${p.name} is a delivery queue, not a read model: it is never replayed`);
  }
  const results = new Map<string, ReplayResult>();
  for (const group of byStream(projections)) {
    for (const r of await replayGroup(deps, group, onProgress)) results.set(r.projection, r);
  }
  return projections.map((p) => results.get(p.name)!);
}

async function replayGroup(deps: RebuildDeps, projections: Projection<unknown>[], onProgress?: Progress): Promise<ReplayResult[]> {
  const started = Date.now();
  const { db } = deps;
  const stream = projections[0]!.stream;
  // A schema of its own per run: two replays at once never share (or destroy) a shadow.
  const shadows = projections.map((projection) => ({
    projection,
    target: `peekd_replay_${projection.name}_${randomBytes(4).toString('hex')}`,
    toSeq: 0,
    /** The shadow's checkpoint: this replay alone writes it. */
    from: 0,
    deferredIndexes: [] as string[],
  }));
  try {
    const streamEnd = streamLastSeq(deps.nc, deps.naming, stream);
    streamEnd.catch(() => undefined); // awaited below, after the shadows
    for (const s of shadows) {
      // The swap holds the live runner still by locking its checkpoint row; a runner that has
      // not committed yet has none, and a missing row locks nothing.
      await db.execute(sql`
        insert into ${sql.raw(LIVE)}.projection_checkpoints (projection, stream, seq) values (${s.projection.name}, ${s.projection.stream}, 0)
        on conflict (projection, stream) do nothing`);
      s.deferredIndexes = await createShadow(db, s.target, s.projection);
    }
    // Catch up with a moving target until the gap is small.
    const total = await streamEnd;
    for (const s of shadows) s.toSeq = Math.max(total, await readCheckpoint(db, s.projection.name, s.projection.stream));
    let behind = shadows;
    for (let round = 0; round < 10 && behind.length > 0; round++) {
      const reached = await catchUpAll(deps, behind, { onProgress });
      const next: typeof shadows = [];
      for (const [i, s] of behind.entries()) {
        s.from = reached[i]!;
        const live = await readCheckpoint(db, s.projection.name, s.projection.stream);
        if (live - s.from < 1000) continue;
        s.toSeq = live;
        next.push(s);
      }
      behind = next;
    }
    const results: ReplayResult[] = [];
    for (const s of shadows) {
      const { projection, target: shadow } = s;
      await runDdl(db, s.deferredIndexes);
      let merged: QuarantineRow[] = [];
      const seq = await db.transaction(async (tx) => {
        // Same lock order as a runner's commit (checkpoint row, then tables): no deadlock.
        const [liveRow] = rowsOf<{ seq: string | number }>(
          await tx.execute(sql`select seq from ${sql.raw(LIVE)}.projection_checkpoints where projection = ${projection.name} and stream = ${projection.stream} for update`),
        );
        await pipelined(projection.tables.map((t) => tx.execute(sql.raw(`LOCK TABLE ${LIVE}."${t}" IN ACCESS EXCLUSIVE MODE`))));
        const live = Number(liveRow?.seq ?? 0);
        const reached = live > s.from ? await catchUp(deps, projection, shadow, live, { tx, from: s.from }) : s.from;
        const seq = Math.max(live, reached);
        // Every name qualified, so sent together (in this order): swap the tables, set the checkpoint, merge the quarantine.
        const swapped = pipelined([
          useSchema(tx, LIVE),
          ...projection.tables.flatMap((t) => [tx.execute(sql.raw(`DROP TABLE ${LIVE}."${t}"`)), tx.execute(sql.raw(`ALTER TABLE ${shadow}."${t}" SET SCHEMA ${LIVE}`))]),
          tx.execute(sql`
            insert into ${sql.raw(LIVE)}.projection_checkpoints (projection, stream, seq) values (${projection.name}, ${projection.stream}, ${seq})
            on conflict (projection, stream) do update set seq = excluded.seq`),
        ]);
        const merging = mergeQuarantine(tx, projection.name, shadow);
        await pipelined<unknown>([swapped, merging]);
        merged = await merging;
        return seq;
      });
      reportQuarantined(deps.logger ?? defaultProjectionLogger(), projection.name, merged);
      results.push({ projection: projection.name, seq, durationMs: Date.now() - started });
    }
    return results;
  } finally {
    for (const s of shadows) await dropShadow(db, s.target);
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
  // The delete takes only rows the rebuild lacks, the insert only rows it has: either order, sent together.
  const [, inserted] = await pipelined<unknown>([
    tx.execute(sql`
      delete from ${live} l where l.projection = ${projection}
        and not exists (select 1 from ${rebuilt} r where r.projection = l.projection and r.stream = l.stream and r.stream_seq = l.stream_seq)`),
    tx.execute(sql`
      insert into ${live} (${sql.raw(QUARANTINE_COLUMNS)})
      select ${sql.raw(QUARANTINE_COLUMNS)} from ${rebuilt} where projection = ${projection}
      order by stream, stream_seq
      on conflict do nothing
      returning stream, stream_seq, subject, error`),
  ]);
  const added = rowsOf<{ stream: string; stream_seq: string | number; subject: string; error: string }>(inserted);
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
  const pk = primaryKeyOf(table)
    .map((c) => `"${c}"`)
    .join(', ');
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
  const [result] = await verifyProjections(deps, [projection], onProgress);
  return result!;
}

/** Verifies several projections as `verifyProjection` does each, those of one stream from one read of it. */
export async function verifyProjections(deps: RebuildDeps, projections: Projection<unknown>[], onProgress?: Progress): Promise<VerifyResult[]> {
  for (const p of projections) {
    if (p.delivery) throw new Error(`${p.name} is a delivery queue, not a read model: it is never verified`);
  }
  const results = new Map<string, VerifyResult>();
  for (const group of byStream(projections)) {
    for (const r of await verifyGroup(deps, group, onProgress)) results.set(r.projection, r);
  }
  return projections.map((p) => results.get(p.name)!);
}

async function verifyGroup(deps: RebuildDeps, projections: Projection<unknown>[], onProgress?: Progress): Promise<VerifyResult[]> {
  const { db } = deps;
  const shadows = projections.map((projection) => ({ projection, target: `peekd_verify_${projection.name}_${randomBytes(4).toString('hex')}`, toSeq: 0, from: 0 }));
  try {
    for (const s of shadows) {
      await createShadow(db, s.target, s.projection); // comparing needs no secondary indexes
      s.toSeq = await readCheckpoint(db, s.projection.name, s.projection.stream);
    }
    const reached = await catchUpAll(deps, shadows, { onProgress });
    const results: VerifyResult[] = [];
    for (const [i, { projection, target: shadow }] of shadows.entries()) {
      results.push(
        await db.transaction(async (tx) => {
          // Hold the live runner still at one checkpoint while comparing.
          const [liveRow] = rowsOf<{ seq: string | number }>(
            await tx.execute(sql`select seq from ${sql.raw(LIVE)}.projection_checkpoints where projection = ${projection.name} and stream = ${projection.stream} for update`),
          );
          await pipelined(projection.tables.map((t) => tx.execute(sql.raw(`LOCK TABLE ${LIVE}."${t}" IN SHARE MODE`))));
          const live = Number(liveRow?.seq ?? 0);
          if (live > reached[i]!) await catchUp(deps, projection, shadow, live, { tx, from: reached[i] });
          await useSchema(tx, LIVE);
          const tables: TableComparison[] = [];
          for (const t of projection.tables) tables.push(await compareTable(tx, t, shadow));
          const quarantine = await compareQuarantine(tx, projection.name, shadow, live);
          return { projection: projection.name, seq: live, tables, quarantine, equal: tables.every((t) => t.equal) && quarantine.equal };
        }),
      );
    }
    return results;
  } finally {
    for (const s of shadows) await dropShadow(db, s.target);
  }
}
