// Runs one projection: reads its stream from checkpoint + 1 with an ordered consumer,
// applies batches, and writes rows and checkpoint in one Postgres transaction, so a
// crash loses nothing and redelivery doubles nothing. The checkpoint is re-read (locked)
// in every transaction: a batch never re-applies what another writer (a replay's swap,
// a second process) has already committed.
//
// Nothing stalls silently: a failed transaction is retried promptly (a short backoff,
// whether or not more events arrive); a message that cannot be decoded is quarantined
// (a row, a log line, a metric) in the transaction that moves past it; a wait for a
// position ends, at the latest after its timeout, in a retryable ServiceUnavailableError.
import { DeliverPolicy, jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { and, eq, sql } from 'drizzle-orm';
import { createLogger, type Logger } from '../logger';
import { seqOfPosition, throughSeq } from '../events/envelope';
import type { Naming } from '../events/subjects';
import { projectionQuarantinedTotal } from '../metrics';
import { ServiceUnavailableError } from '../nats/errors';
import type { Db, Tx } from '../store/db';
import { projectionCheckpoints, projectionQuarantine } from '../store/schema';
import { decodeMessage, type Projected, type Projection, type Quarantined } from './projection';

export interface RunnerOptions {
  batchSize?: number;
  /** Called after each committed batch (wake-ups, metrics, progress). */
  onCommitted?: (lastSeq: number, batch: Projected<unknown>[]) => void;
  logger?: Logger;
  /** Postgres schema holding the tables to write (a replay's shadow tables); default: the live ones. */
  schema?: string;
  /** Longest `waitFor` waits unless told otherwise (default DEFAULT_WAIT_TIMEOUT_MS). */
  waitTimeoutMs?: number;
}

/** A `waitFor` without a timeout of its own gives up after this long. */
export const DEFAULT_WAIT_TIMEOUT_MS = 120_000;
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
 */
export async function commitBatch<E>(
  tx: Tx,
  projection: Projection<E>,
  batch: Projected<E>[],
  lastSeq: number,
  schema?: string,
  quarantined: Quarantined[] = [],
): Promise<CommitResult> {
  await useSchema(tx, schema);
  // One statement reads the checkpoint and locks its row (creating it if need be): a
  // conflicting upsert takes the row lock, so concurrent writers of it go one at a time.
  const [locked] = await tx
    .insert(projectionCheckpoints)
    .values({ projection: projection.name, stream: projection.stream, seq: 0 })
    .onConflictDoUpdate({ target: [projectionCheckpoints.projection, projectionCheckpoints.stream], set: { seq: sql`${projectionCheckpoints.seq}` } })
    .returning({ seq: projectionCheckpoints.seq });
  const done = locked?.seq ?? 0;
  if (lastSeq <= done) return { seq: done, quarantined: [] };
  const fresh = batch.filter((b) => b.seq > done);
  if (fresh.length > 0) await projection.apply(tx, fresh);
  const recorded = await recordQuarantined(tx, projection, quarantined.filter((q) => q.seq > done && q.seq <= lastSeq));
  await writeCheckpoint(tx, projection.name, projection.stream, lastSeq);
  return { seq: lastSeq, quarantined: recorded };
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
  private readonly js: JetStreamClient;
  private readonly batchSize: number;
  private readonly logger: Logger;

  constructor(
    private readonly db: Db,
    nc: NatsConnection,
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

  async start(): Promise<void> {
    this.position = await this.readPosition();
    this.stopped = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.endRetryDelay?.();
    await this.closeCurrent?.();
    await this.loop;
  }

  /**
   * Resolves once every event up to `seq` is committed; rejects with ProjectionBehindError
   * (retryable) if that has not happened within `timeoutMs`.
   */
  waitFor(seq: number, timeoutMs = this.options.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS): Promise<void> {
    if (this.position >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: PositionWaiter = {
        seq,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new ProjectionBehindError(this.projection.name, seq, this.position, timeoutMs));
      }, Math.max(0, timeoutMs));
      this.waiters.push(waiter);
    });
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
    let pendingQuarantine: Quarantined[] = [];
    let pendingLast = this.position;
    let committing: Promise<void> | undefined;
    let failure: unknown;
    const drain = async () => {
      while (pendingLast > this.position && failure === undefined) {
        const take = pending.length > this.batchSize ? pending.splice(0, this.batchSize) : pending.splice(0);
        // A cut inside an envelope commits up to the last event taken; the rest follows.
        const last = pending.length > 0 ? take.at(-1)!.seq : pendingLast;
        const quarantine = pendingQuarantine.filter((q) => q.seq <= last);
        pendingQuarantine = pendingQuarantine.filter((q) => q.seq > last);
        await this.commit(take, last, quarantine);
      }
    };
    const kick = () => {
      committing ??= drain()
        .catch((err) => {
          failure = err;
          // Stop reading now: on a quiet stream no next message would come to notice it.
          void messages.close().catch(() => undefined);
        })
        .finally(() => {
          committing = undefined;
        });
    };
    try {
      for await (const m of messages) {
        if (failure !== undefined) break;
        if (throughSeq(m.seq) <= pendingLast) continue;
        const { events, quarantined } = decodeMessage(projection, naming, m);
        for (const p of events) if (p.seq > pendingLast) pending.push(p);
        if (quarantined) pendingQuarantine.push(quarantined);
        pendingLast = throughSeq(m.seq);
        kick();
        // Back-pressure: do not read far ahead of what is committed.
        if (pending.length + pendingQuarantine.length >= this.batchSize * 4) await committing;
        if (this.stopped || failure !== undefined) break;
      }
    } finally {
      await committing;
    }
    if (failure !== undefined) throw failure;
  }

  private async commit(batch: Projected<E>[], lastSeq: number, quarantined: Quarantined[]): Promise<void> {
    if (lastSeq <= this.position) return;
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
