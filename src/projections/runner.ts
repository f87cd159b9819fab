// Runs one projection: reads its stream from checkpoint + 1 with an ordered consumer,
// applies batches, and writes rows and checkpoint in one Postgres transaction, so a
// crash loses nothing and redelivery doubles nothing.
import { DeliverPolicy, jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { and, eq, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Naming } from '../events/subjects';
import type { Db, Tx } from '../store/db';
import { projectionCheckpoints } from '../store/schema';
import type { Projected, Projection } from './projection';

export interface RunnerOptions {
  batchSize?: number;
  /** Called after each committed batch (wake-ups, metrics). */
  onCommitted?: (lastSeq: number, batch: Projected<unknown>[]) => void;
  logger?: Logger;
  /** Tables to write to instead of the live ones (replay into shadow tables). */
  checkpointName?: string;
}

export async function readCheckpoint(db: Db | Tx, projection: string, stream: string): Promise<number> {
  const rows = await db
    .select({ seq: projectionCheckpoints.seq })
    .from(projectionCheckpoints)
    .where(and(eq(projectionCheckpoints.projection, projection), eq(projectionCheckpoints.stream, stream)));
  return rows[0]?.seq ?? 0;
}

export async function writeCheckpoint(tx: Tx, projection: string, stream: string, seq: number): Promise<void> {
  await tx
    .insert(projectionCheckpoints)
    .values({ projection, stream, seq })
    .onConflictDoUpdate({ target: [projectionCheckpoints.projection, projectionCheckpoints.stream], set: { seq: sql`excluded.seq` } });
}

export class ProjectionRunner<E = unknown> {
  private position = 0;
  private stopped = false;
  private loop?: Promise<void>;
  private closeCurrent?: () => Promise<void>;
  private waiters: { seq: number; resolve: () => void }[] = [];
  private readonly js: JetStreamClient;
  private readonly batchSize: number;
  private readonly checkpointName: string;

  constructor(
    private readonly db: Db,
    nc: NatsConnection,
    private readonly naming: Naming,
    readonly projection: Projection<E>,
    private readonly options: RunnerOptions = {},
  ) {
    this.js = jetstream(nc);
    this.batchSize = options.batchSize ?? 500;
    this.checkpointName = options.checkpointName ?? projection.name;
  }

  /** The last stream sequence whose effects are committed. */
  get committed(): number {
    return this.position;
  }

  async start(): Promise<void> {
    this.position = await readCheckpoint(this.db, this.checkpointName, this.projection.stream);
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
        backoffMs = Math.min(backoffMs * 2, 5000);
        this.position = await readCheckpoint(this.db, this.checkpointName, this.projection.stream).catch(() => this.position);
      }
    }
  }

  private async consumeOnce(): Promise<void> {
    const { projection, naming } = this;
    const start = this.position + 1;
    const consumer = await this.js.consumers.get(naming.streamName(projection.stream), {
      filter_subjects: naming.allSubjects(projection.stream),
      deliver_policy: start > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(start > 1 ? { opt_start_seq: start } : {}),
    });
    const messages = await consumer.consume({ max_messages: this.batchSize * 2 });
    this.closeCurrent = async () => {
      await messages.close();
    };
    if (this.stopped) await messages.close();
    let batch: Projected<E>[] = [];
    let lastSeq = this.position;
    for await (const m of messages) {
      if (m.seq <= this.position) continue;
      lastSeq = m.seq;
      const parsed = naming.parseRoomSubject(m.subject);
      const event = projection.decode(m.data);
      if (parsed && event !== null) batch.push({ seq: m.seq, roomId: parsed.roomId, shard: parsed.shard, event });
      if (batch.length >= this.batchSize || m.info.pending === 0) {
        await this.commit(batch, lastSeq);
        batch = [];
      }
      if (this.stopped) break;
    }
  }

  private async commit(batch: Projected<E>[], lastSeq: number): Promise<void> {
    if (lastSeq <= this.position) return;
    await this.db.transaction(async (tx) => {
      if (batch.length > 0) await this.projection.apply(tx, batch);
      await writeCheckpoint(tx, this.checkpointName, this.projection.stream, lastSeq);
    });
    this.position = lastSeq;
    this.options.onCommitted?.(lastSeq, batch as Projected<unknown>[]);
    if (this.waiters.length > 0) {
      const ready = this.waiters.filter((w) => w.seq <= lastSeq);
      this.waiters = this.waiters.filter((w) => w.seq > lastSeq);
      for (const w of ready) w.resolve();
    }
  }
}
