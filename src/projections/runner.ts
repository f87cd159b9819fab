// Runs one projection: reads its stream from checkpoint + 1 with an ordered consumer,
// applies batches, and writes rows and checkpoint in one Postgres transaction, so a
// crash loses nothing and redelivery doubles nothing. The checkpoint is re-read (locked)
// in every transaction: a batch never re-applies what another writer (a replay's swap,
// a second process) has already committed.
import { DeliverPolicy, jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { and, eq, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import { seqOfPosition, throughSeq } from '../events/envelope';
import type { Naming } from '../events/subjects';
import type { Db, Tx } from '../store/db';
import { projectionCheckpoints } from '../store/schema';
import { projectedOf, type Projected, type Projection } from './projection';

export interface RunnerOptions {
  batchSize?: number;
  /** Called after each committed batch (wake-ups, metrics, progress). */
  onCommitted?: (lastSeq: number, batch: Projected<unknown>[]) => void;
  logger?: Logger;
  /** Postgres schema holding the tables to write (a replay's shadow tables); default: the live ones. */
  schema?: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Points unqualified table names at `schema` for the rest of the transaction. */
export async function useSchema(tx: Tx, schema: string | undefined): Promise<void> {
  if (!schema) return;
  if (!SCHEMA_NAME.test(schema)) throw new Error(`bad schema name ${schema}`);
  await tx.execute(sql.raw(`SET LOCAL search_path TO ${schema}`));
}

export async function readCheckpoint(db: Db | Tx, projection: string, stream: string, forUpdate = false): Promise<number> {
  const q = db
    .select({ seq: projectionCheckpoints.seq })
    .from(projectionCheckpoints)
    .where(and(eq(projectionCheckpoints.projection, projection), eq(projectionCheckpoints.stream, stream)));
  const rows = forUpdate ? await q.for('update') : await q;
  return rows[0]?.seq ?? 0;
}

export async function writeCheckpoint(tx: Tx, projection: string, stream: string, seq: number): Promise<void> {
  await tx
    .insert(projectionCheckpoints)
    .values({ projection, stream, seq })
    // Never backwards, whoever else writes it (a replay's swap, another process).
    .onConflictDoUpdate({
      target: [projectionCheckpoints.projection, projectionCheckpoints.stream],
      set: { seq: sql`greatest(excluded.seq, ${projectionCheckpoints.seq})` },
    });
}

/**
 * Applies `batch` (events up to `lastSeq`) and advances the checkpoint, in one transaction,
 * skipping what the checkpoint already covers. Returns the checkpoint after it.
 */
export async function commitBatch<E>(tx: Tx, projection: Projection<E>, batch: Projected<E>[], lastSeq: number, schema?: string): Promise<number> {
  await useSchema(tx, schema);
  // One statement reads the checkpoint and locks its row (creating it if need be): a
  // conflicting upsert takes the row lock, so concurrent writers of it go one at a time.
  const [locked] = await tx
    .insert(projectionCheckpoints)
    .values({ projection: projection.name, stream: projection.stream, seq: 0 })
    .onConflictDoUpdate({ target: [projectionCheckpoints.projection, projectionCheckpoints.stream], set: { seq: sql`${projectionCheckpoints.seq}` } })
    .returning({ seq: projectionCheckpoints.seq });
  const done = locked?.seq ?? 0;
  if (lastSeq <= done) return done;
  const fresh = batch.filter((b) => b.seq > done);
  if (fresh.length > 0) await projection.apply(tx, fresh);
  await writeCheckpoint(tx, projection.name, projection.stream, lastSeq);
  return lastSeq;
}

export class ProjectionRunner<E = unknown> {
  private position = 0;
  private stopped = false;
  private loop?: Promise<void>;
  private closeCurrent?: () => Promise<void>;
  private waiters: { seq: number; resolve: () => void }[] = [];
  private readonly js: JetStreamClient;
  private readonly batchSize: number;

  constructor(
    private readonly db: Db,
    nc: NatsConnection,
    private readonly naming: Naming,
    readonly projection: Projection<E>,
    private readonly options: RunnerOptions = {},
  ) {
    this.js = jetstream(nc);
    this.batchSize = options.batchSize ?? 500;
  }

  /** The position (envelope.ts) up to which every event's effects are committed. */
  get committed(): number {
    return this.position;
  }

  async start(): Promise<void> {
    this.position = await this.readPosition();
    this.stopped = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.closeCurrent?.();
    await this.loop;
  }

  /** Resolves once every event up to `seq` is committed. */
  waitFor(seq: number): Promise<void> {
    if (this.position >= seq) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  private readPosition(): Promise<number> {
    return this.db.transaction(async (tx) => {
      await useSchema(tx, this.options.schema);
      return readCheckpoint(tx, this.projection.name, this.projection.stream);
    });
  }

  private async run(): Promise<void> {
    let backoffMs = 100;
    while (!this.stopped) {
      try {
        await this.consumeOnce();
        backoffMs = 100;
      } catch (err) {
        if (this.stopped) break;
        this.options.logger?.error({ err, projection: this.projection.name }, 'projection failed; resuming from its checkpoint');
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 2000);
        this.position = await this.readPosition().catch(() => this.position);
      }
    }
  }

  /**
   * Reads the stream and commits in groups: while one transaction is in flight, what
   * arrives meanwhile gathers into the next one, so a busy stream makes big batches and a
   * quiet one commits each event at once.
   */
  private async consumeOnce(): Promise<void> {
    const { projection, naming } = this;
    // The envelope holding the first event not yet committed (a batch may end inside one).
    const start = seqOfPosition(this.position + 1);
    const consumer = await this.js.consumers.get(naming.streamName(projection.stream), {
      filter_subjects: naming.allSubjects(projection.stream),
      deliver_policy: start > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(start > 1 ? { opt_start_seq: start } : {}),
    });
    // Short pulls with heartbeats: a consumer lost with a NATS node is noticed and made
    // again within seconds (ordered consumers reset themselves on missed heartbeats).
    const messages = await consumer.consume({ max_messages: this.batchSize * 2, expires: 2_000 });
    this.closeCurrent = async () => {
      await messages.close();
    };
    if (this.stopped) await messages.close();
    let pending: Projected<E>[] = [];
    let pendingLast = this.position;
    let committing: Promise<void> | undefined;
    let failure: unknown;
    const drain = async () => {
      while (pendingLast > this.position && failure === undefined) {
        const take = pending.length > this.batchSize ? pending.splice(0, this.batchSize) : pending.splice(0);
        // A cut inside an envelope commits up to the last event taken; the rest follows.
        const last = pending.length > 0 ? take.at(-1)!.seq : pendingLast;
        await this.commit(take, last);
      }
    };
    const kick = () => {
      committing ??= drain()
        .catch((err) => {
          failure = err;
        })
        .finally(() => {
          committing = undefined;
        });
    };
    try {
      for await (const m of messages) {
        if (failure !== undefined) throw failure;
        if (throughSeq(m.seq) <= pendingLast) continue;
        for (const p of projectedOf(projection, naming, m)) if (p.seq > pendingLast) pending.push(p);
        pendingLast = throughSeq(m.seq);
        kick();
        // Back-pressure: do not read far ahead of what is committed.
        if (pending.length >= this.batchSize * 4) await committing;
        if (this.stopped) break;
      }
    } finally {
      await committing;
    }
    if (failure !== undefined) throw failure;
  }

  private async commit(batch: Projected<E>[], lastSeq: number): Promise<void> {
    if (lastSeq <= this.position) return;
    const committed = await this.db.transaction((tx) => commitBatch(tx, this.projection, batch, lastSeq, this.options.schema));
    this.position = Math.max(this.position, committed);
    this.options.onCommitted?.(this.position, batch as Projected<unknown>[]);
    if (this.waiters.length > 0) {
      const ready = this.waiters.filter((w) => w.seq <= this.position);
      this.waiters = this.waiters.filter((w) => w.seq > this.position);
      for (const w of ready) w.resolve();
    }
  }
}
