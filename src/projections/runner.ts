// Runs one projection: reads its stream from checkpoint + 1 with an ordered consumer (the
// process's one shared read of the stream wherever that misses nothing, see feed.ts),
// applies batches, and writes rows and checkpoint in one Postgres transaction, so a
// crash loses nothing and redelivery doubles nothing. The checkpoint is re-read (locked)
// in every transaction: a batch never re-applies what another writer (a replay's swap,
// a second process) has already committed.
//
// Nothing stalls silently: a failed transaction is retried promptly (a short backoff,
// whether or not more events arrive); a message that cannot be decoded is quarantined
// (a row, a log line, a metric) in the transaction that moves past it; a wait for a
// position ends, at the latest after its timeout, in a retryable ServiceUnavailableError.
import { waitWithTimeout } from './positionWait.ts';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { and, eq, sql, type SQL } from 'drizzle-orm';
import { createLogger, type Logger } from '../logger.ts';
import { throughSeq } from '../events/envelope.ts';
import type { Naming } from '../events/subjects.ts';
import { projectionQuarantinedTotal } from '../metrics.ts';
import { ServiceUnavailableError } from '../nats/errors.ts';
import { rowsOf, type Db, type Tx } from '../store/db.ts';
import { pipelined } from '../store/sqlHelpers.ts';
import { projectionCheckpoints, projectionQuarantine } from '../store/schema.ts';
import { openStream, sharedFeed, watchRead, type FeedEnd, type FeedMember, type FeedMembership, type SharedFeed } from './feed.ts';
import { CommitPipeline, readSlices } from './pipeline.ts';
import { decodeMessage, takeMessage, type Projected, type Projection, type Quarantined } from './projection.ts';

export interface RunnerOptions {
  batchSize?: number;
  /** Called after each committed batch (wake-ups, metrics, progress). */
  onCommitted?: (lastSeq: number, batch: Projected<unknown>[]) => void;
  logger?: Logger;
  /** Postgres schema holding the tables to write (a replay's shadow tables); default: the live ones. */
  schema?: string;
  /** Longest `waitFor` waits unless told otherwise (default DEFAULT_WAIT_TIMEOUT_MS). */
  waitTimeoutMs?: number;
  /**
   * Group commit: while nobody waits for a position (`waitFor`), at most one transaction per
   * this many ms (CommitPipeline's lingerMs). Default 0: every batch at once.
   */
  lingerMs?: number;
}

/** A `waitFor` without a timeout of its own gives up after this long. */
export const DEFAULT_WAIT_TIMEOUT_MS = 120_000;
/**
 * How long a checkpoint may lag the position of a runner whose last batches touched nothing
 * (Projection.touches): it is written with the next batch that does, or after this long.
 */
export const CHECKPOINT_LAG_MS = 1_000;
/** Retry delays after a failure (a transaction refused, NATS gone): doubling from the first to the last. */
export const RETRY_MIN_MS = 50;
export const RETRY_MAX_MS = 2_000;
/** How much of an undecodable message the quarantine keeps (the log keeps it all). */
export const QUARANTINE_PAYLOAD_MAX_BYTES = 16 * 1024;
const QUARANTINE_ERROR_MAX_CHARS = 2_000;

/**
 * A projection has not committed a position within the wait's timeout. Retryable (HTTP 503
 * with Retry-After): what was written is in the log and shows once the projection catches up.
 */
export class ProjectionBehindError extends ServiceUnavailableError {
  override readonly name = 'ProjectionBehindError';
  constructor(
    readonly projection: string,
    readonly seq: number,
    readonly committed: number,
    readonly timeoutMs: number,
  ) {
    super(`projection ${projection} has not reached position ${seq} within ${timeoutMs} ms (at ${committed}); the change is stored and will show`);
  }
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

/** What one commit did: the checkpoint after it, and the messages it newly quarantined. */
export interface CommitResult {
  seq: number;
  quarantined: Quarantined[];
}

/**
 * Applies `batch` (events up to `lastSeq`) and advances the checkpoint, in one transaction,
 * skipping what the checkpoint already covers. The `quarantined` messages the checkpoint
 * moves past are recorded in the same transaction (a message recorded before is not again).
 *
 * Round trips, not rows, are what a commit mostly waits for: the checkpoint statements name
 * their schema, so the lock goes out with the search_path and the new position with the
 * rows (pipelined: one round trip each time, not two).
 */
export async function commitBatch<E>(tx: Tx, projection: Projection<E>, batch: Projected<E>[], lastSeq: number, schema?: string, quarantined: Quarantined[] = []): Promise<CommitResult> {
  const checkpoints = checkpointsIn(schema);
  // One statement reads the checkpoint and locks its row (creating it if need be): a
  // conflicting upsert takes the row lock, so concurrent writers of it go one at a time.
  const lock = tx.execute(sql`
    insert into ${checkpoints} as c (projection, stream, seq) values (${projection.name}, ${projection.stream}, 0)
    on conflict (projection, stream) do update set seq = c.seq
    returning c.seq`);
  const [, locked] = await pipelined<unknown>([useSchema(tx, schema), lock]);
  const done = Number(rowsOf<{ seq: string | number }>(locked)[0]?.seq ?? 0);
  if (lastSeq <= done) return { seq: done, quarantined: [] };
  const fresh = batch.filter((b) => b.seq > done);
  // The row is locked: writing the new position before the rows changes nothing but the wait.
  const advance = tx.execute(sql`update ${checkpoints} set seq = greatest(seq, ${lastSeq}) where projection = ${projection.name} and stream = ${projection.stream}`);
  const recorded = recordQuarantined(
    tx,
    projection,
    quarantined.filter((q) => q.seq > done && q.seq <= lastSeq),
  );
  await pipelined<unknown>([advance, recorded, ...(fresh.length > 0 ? [projection.apply(tx, fresh)] : [])]);
  return { seq: lastSeq, quarantined: await recorded };
}

/** The checkpoint table of `schema` (unqualified: the search_path's, for the live tables). */
function checkpointsIn(schema: string | undefined): SQL {
  if (!schema) return sql.raw('projection_checkpoints');
  if (!SCHEMA_NAME.test(schema)) throw new Error(`bad schema name ${schema}`);
  return sql.raw(`${schema}.projection_checkpoints`);
}

/** Inserts quarantine rows; returns those not recorded before. */
async function recordQuarantined<E>(tx: Tx, projection: Projection<E>, items: Quarantined[]): Promise<Quarantined[]> {
  const fresh = new Set<number>();
  // In slices: a flood of bad messages must not exceed a statement's parameter limit.
  for (let i = 0; i < items.length; i += 500) {
    const inserted = await tx
      .insert(projectionQuarantine)
      .values(
        items.slice(i, i + 500).map((q) => ({
          projection: projection.name,
          stream: q.stream,
          streamSeq: q.streamSeq,
          subject: q.subject,
          payload: Buffer.from(q.payload.subarray(0, QUARANTINE_PAYLOAD_MAX_BYTES)),
          payloadBytes: q.payload.length,
          error: q.reason.slice(0, QUARANTINE_ERROR_MAX_CHARS),
          quarantinedAt: Date.now(),
        })),
      )
      .onConflictDoNothing()
      .returning({ streamSeq: projectionQuarantine.streamSeq });
    for (const r of inserted) fresh.add(Number(r.streamSeq));
  }
  return items.filter((q) => fresh.has(q.streamSeq));
}

/** After the commit that recorded them: a log line per quarantined message, and the metric. */
export function reportQuarantined(logger: Logger, projection: string, items: readonly Pick<Quarantined, 'stream' | 'streamSeq' | 'subject' | 'reason'>[]): void {
  for (const q of items) {
    logger.warn(
      { projection, stream: q.stream, seq: q.streamSeq, subject: q.subject, reason: q.reason },
      'projection quarantined a message it cannot decode and moved past it (see projection_quarantine)',
    );
  }
  if (items.length > 0) projectionQuarantinedTotal.inc({ projection }, items.length);
}

let fallbackLogger: Logger | undefined;
/** Where runners given no logger report (quarantines and failures are never silent). */
export function defaultProjectionLogger(): Logger {
  return (fallbackLogger ??= createLogger('warn', 'peekd-projections'));
}

interface PositionWaiter {
  seq: number;
  resolve(): void;
}

export class ProjectionRunner<E = unknown> {
  private position = 0;
  private stopped = false;
  private loop?: Promise<void>;
  private closeCurrent?: () => Promise<void>;
  private waiters: PositionWaiter[] = [];
  private retryDelayMs = RETRY_MIN_MS;
  private endRetryDelay?: () => void;
  /** The first read after start(): it may join the shared read a little behind it. */
  private starting = false;
  /** Set while the position is past the stored checkpoint (batches that touched nothing). */
  private unsaved?: NodeJS.Timeout;
  private saving?: Promise<void>;
  /** The current read's pipeline (a waiter hurries its lingering commit). */
  private pipeline?: CommitPipeline<E>;
  private readonly js: JetStreamClient;
  private readonly batchSize: number;
  private readonly logger: Logger;

  constructor(
    private readonly db: Db,
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    readonly projection: Projection<E>,
    private readonly options: RunnerOptions = {},
  ) {
    this.js = jetstream(nc);
    this.batchSize = options.batchSize ?? 500;
    this.logger = options.logger ?? defaultProjectionLogger();
  }

  /** The position (envelope.ts) up to which every event's effects are committed. */
  get committed(): number {
    return this.position;
  }

  /** How many callers wait for a position this runner has not committed yet. */
  get waiting(): number {
    return this.waiters.length;
  }

  async start(): Promise<void> {
    this.position = await this.readPosition();
    this.stopped = false;
    this.starting = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.endRetryDelay?.();
    await this.closeCurrent?.();
    await this.loop;
    // A restart reads the checkpoint: let it not go back behind what this run reached.
    await this.saveCheckpoint();
  }

  /** Writes the in-memory position as the checkpoint if batches that touched nothing moved it. */
  private saveCheckpoint(): Promise<void> {
    if (!this.unsaved) return this.saving ?? Promise.resolve();
    clearTimeout(this.unsaved);
    this.unsaved = undefined;
    const seq = this.position;
    const save = (this.saving ?? Promise.resolve())
      .then(() => this.db.transaction((tx) => commitBatch(tx, this.projection, [], seq, this.options.schema)))
      .then(() => undefined)
      .catch((err: unknown) => this.logger.warn({ err, projection: this.projection.name, position: seq }, 'could not store the checkpoint; the next batch stores it'))
      .finally(() => {
        if (this.saving === save) this.saving = undefined;
      });
    this.saving = save;
    return save;
  }

  /**
   * Resolves once every event up to `seq` is committed; rejects with ProjectionBehindError
   * (retryable) if that has not happened within `timeoutMs`.
   */
  waitFor(seq: number, timeoutMs = this.options.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS): Promise<void> {
    if (this.position >= seq) return Promise.resolve();
    return waitWithTimeout<PositionWaiter>(
      (resolve) => ({ seq, resolve }),
      (waiter) => {
        this.waiters.push(waiter);
        this.pipeline?.hurry();
      },
      (waiter) => (this.waiters = this.waiters.filter((w) => w !== waiter)),
      timeoutMs,
      () => new ProjectionBehindError(this.projection.name, seq, this.position, timeoutMs),
    );
  }

  private readPosition(): Promise<number> {
    return this.db.transaction(async (tx) => {
      await useSchema(tx, this.options.schema);
      return readCheckpoint(tx, this.projection.name, this.projection.stream);
    });
  }

  /**
   * Consumes until stopped. A failure (a transaction refused, NATS gone) ends the current
   * read at once; after a short, doubling delay it starts again from the committed
   * checkpoint, so a failed last batch of a quiet stream is retried without waiting for
   * another event.
   */
  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.consumeOnce();
      } catch (err) {
        if (this.stopped) break;
        const delayMs = this.retryDelayMs;
        this.retryDelayMs = Math.min(delayMs * 2, RETRY_MAX_MS);
        this.logger.error({ err, projection: this.projection.name, position: this.position, retryInMs: delayMs }, 'projection failed; resuming from its checkpoint');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          this.endRetryDelay = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.endRetryDelay = undefined;
        if (this.stopped) break;
        this.position = Math.max(this.position, await this.readPosition().catch(() => this.position));
        this.wakeWaiters();
      }
    }
  }

  /**
   * Reads the stream and commits in groups: while one transaction is in flight, what
   * arrives meanwhile gathers into the next one, so a busy stream makes big batches and a
   * quiet one commits each event at once. The messages come from the process's shared read
   * of the stream (feed.ts: fetched and decoded once for every runner of it), or, while this
   * runner is behind that read, from a consumer of its own until it has caught up.
   */
  private async consumeOnce(): Promise<void> {
    let stopReading = () => {};
    const pipeline = new CommitPipeline<E>(this.position, (batch, lastSeq, quarantined) => this.commit(batch, lastSeq, quarantined), {
      batchSize: this.batchSize,
      mode: 'eager',
      // Back-pressure: do not read far ahead of what is committed.
      limit: this.batchSize * 4,
      // Stop reading now: on a quiet stream no next message would come to notice it.
      onFailure: () => stopReading(),
      lingerMs: this.options.lingerMs ?? 0,
      urgent: () => this.waiters.length > 0,
    });
    this.pipeline = pipeline;
    const feed = sharedFeed(this.nc, this.naming, this.projection, this.batchSize);
    const member: FeedMember<E> = {
      offer: (through, decoded) => {
        // The feed decodes for every member. A message this projection passes over
        // (mayTouch) holds no event it would take, so only its quarantine must go.
        pipeline.add(through, decoded.quarantined ? takeMessage(this.projection, decoded.quarantined.payload, () => decoded) : decoded);
        return pipeline.backpressure;
      },
    };
    // Runners that start together share the read from the start (a short re-read at most).
    let rewind = this.starting;
    this.starting = false;
    // Let go for holding the others back: read alone, at this runner's pace, until caught up.
    let alone = false;
    try {
      while (!this.stopped && !pipeline.failed) {
        const membership: FeedMembership | undefined = alone ? undefined : feed.join(pipeline.last, member, rewind);
        rewind = false;
        if (membership) {
          stopReading = () => membership.leave();
          this.closeCurrent = async () => membership.leave();
          if (this.stopped) membership.leave();
          const end: FeedEnd = await membership.ended;
          if (end.reason === 'failed') throw end.error;
          // Left (stopping, or a failed commit), or let go.
          alone = end.reason === 'stalled';
        } else {
          alone = false;
          await this.readAlone(pipeline, feed, (close) => (stopReading = close));
        }
      }
    } finally {
      await pipeline.idle();
      if (this.pipeline === pipeline) this.pipeline = undefined;
    }
    if (pipeline.failed) throw pipeline.failure;
  }

  /** Reads with a consumer of its own, until the shared read can be joined without a gap. */
  private async readAlone(pipeline: CommitPipeline<E>, feed: SharedFeed<E>, onClose: (close: () => void) => void): Promise<void> {
    const messages = await openStream(this.js, this.naming, this.projection.stream, pipeline.last, this.batchSize);
    const close = () => void messages.close().catch(() => undefined);
    onClose(close);
    this.closeCurrent = async () => {
      await messages.close();
    };
    if (this.stopped || pipeline.failed) close();
    const nextSlice = readSlices();
    let waiting = false;
    const stopWatching = watchRead(
      this.nc,
      this.naming,
      this.projection.stream,
      messages,
      () => pipeline.last,
      () => waiting,
    );
    try {
      for await (const m of messages) {
        if (this.stopped || pipeline.failed) break;
        const through = throughSeq(m.seq);
        if (through <= pipeline.last) continue;
        pipeline.add(
          through,
          takeMessage(this.projection, m.data, () => decodeMessage(this.projection, this.naming, m)),
        );
        const wait = pipeline.backpressure ?? nextSlice();
        waiting = true;
        if (wait) await wait;
        waiting = false;
        if (this.stopped || pipeline.failed || feed.canJoinAt(pipeline.last)) break;
      }
    } finally {
      stopWatching();
      await messages.close().catch(() => undefined);
    }
  }

  private async commit(batch: Projected<E>[], lastSeq: number, quarantined: Quarantined[] = []): Promise<void> {
    if (lastSeq <= this.position) return;
    const touches = this.projection.touches;
    if (touches && quarantined.length === 0 && !batch.some((p) => p.event !== null && touches(p.event))) {
      // Nothing to write: the tables already are what they would be after these events.
      this.position = lastSeq;
      this.unsaved ??= setTimeout(() => void this.saveCheckpoint(), CHECKPOINT_LAG_MS);
      this.unsaved.unref?.();
      this.options.onCommitted?.(this.position, batch as Projected<unknown>[]);
      this.wakeWaiters();
      return;
    }
    if (this.unsaved) {
      // This transaction stores the checkpoint anyway.
      clearTimeout(this.unsaved);
      this.unsaved = undefined;
    }
    const result = await this.db.transaction((tx) => commitBatch(tx, this.projection, batch, lastSeq, this.options.schema, quarantined));
    this.retryDelayMs = RETRY_MIN_MS;
    this.position = Math.max(this.position, result.seq);
    reportQuarantined(this.logger, this.projection.name, result.quarantined);
    this.options.onCommitted?.(this.position, batch as Projected<unknown>[]);
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((w) => w.seq <= this.position);
    this.waiters = this.waiters.filter((w) => w.seq > this.position);
    for (const w of ready) w.resolve();
  }
}
